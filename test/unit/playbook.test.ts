import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parsePlaybook, readPlaybook, stepArgv } from '../../src/playbook/playbook.js';
import { ExitCode, PgscaleError } from '../../src/errors.js';
import { repoRoot } from '../helpers/paths.js';

test('shipped playbooks are valid', () => {
  const dir = join(repoRoot, 'playbooks');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 2);
  for (const f of files) assert.ok(readPlaybook(join(dir, f)).steps.length > 0, f);
});

test('a playbook becomes command lines: cluster flags, step flags, booleans', () => {
  const pb = parsePlaybook(
    'version: 1\nname: w\ncluster: { pgdata: /pg/16 }\nsteps:\n  - backup: { to: /b, level: 5 }\n  - upgrade: { to-version: 17, no-backup: true, force: false }\n  - detect:\n',
    'w.yaml',
  );
  assert.deepEqual(
    pb.steps.map((s) => stepArgv(s, pb.cluster, ['--yes'])),
    [
      ['backup', '--pgdata', '/pg/16', '--to', '/b', '--level', '5', '--yes'],
      ['upgrade', '--pgdata', '/pg/16', '--to-version', '17', '--no-backup', '--yes'],
      ['detect', '--pgdata', '/pg/16', '--yes'],
    ],
  );
  assert.notEqual(pb.digest, parsePlaybook('version: 1\nname: w\nsteps:\n  - detect:\n', 'w.yaml').digest);
});

test('bad playbooks are refused with the reason and exit code 2', () => {
  const bad = (text: string, why: RegExp) =>
    assert.throws(
      () => parsePlaybook(text, 'p.yaml'),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.BadInput && why.test(e.message),
    );
  bad('version: 1\nname: x\nsteps:\n  - drop-database: {}\n', /does not match the playbook schema/);
  bad('version: 2\nname: x\nsteps:\n  - detect:\n', /version/);
  bad('version: 1\nname: x\nsteps: []\n', /fewer than 1 items/);
  bad('version: 1\nname: x\nsteps:\n  - backup: { to: [1, 2] }\n', /schema/);
  bad('version: 1\nname: x\nsteps:\n  - backup: {to: /b}\n   bad indent: [\n', /not valid YAML/);
});
