import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parsePlaybook, readPlaybook, stepInvocation } from '../../src/playbook/playbook.js';
import { clusterForStep } from '../../src/playbook/run.js';
import { ExitCode, PgscaleError } from '../../src/errors.js';
import { repoRoot } from '../helpers/paths.js';

test('shipped playbooks are valid', () => {
  const dir = join(repoRoot, 'playbooks');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 2);
  for (const f of files) assert.ok(readPlaybook(join(dir, f)).steps.length > 0, f);
});

test('a playbook becomes command lines: cluster flags, step flags, booleans; state dir and DSN in the environment', () => {
  const pb = parsePlaybook(
    "version: 1\nname: w\ncluster: { pgdata: /pg/16, dsn: 'postgresql://u:s3cret@h/db' }\nsteps:\n  - backup: { to: /b, level: 5 }\n  - upgrade: { to-version: 17, no-backup: true, force: false }\n  - detect:\n",
    'w.yaml',
  );
  const runs = pb.steps.map((s) => stepInvocation(s, pb.cluster, ['--yes'], '/state'));
  assert.deepEqual(
    runs.map((r) => r.argv),
    [
      ['backup', '--pgdata', '/pg/16', '--to', '/b', '--level', '5', '--yes'],
      ['upgrade', '--pgdata', '/pg/16', '--to-version', '17', '--no-backup', '--yes'],
      ['detect', '--pgdata', '/pg/16', '--yes'],
    ],
  );
  // detect takes no --state-dir: every step gets the state directory from the environment instead
  for (const r of runs) assert.deepEqual(r.env, { PGSCALE_STATE_DIR: '/state', PGSCALE_DSN: 'postgresql://u:s3cret@h/db' });
  assert.ok(
    runs.every((r) => !r.argv.join(' ').includes('s3cret')),
    'a DSN never travels in argv',
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

test('after an upgrade step, later steps work on the upgraded cluster, never the retired one', () => {
  const pb = parsePlaybook(
    'version: 1\nname: w\ncluster: { pgdata: /pg/16, bindir: /usr/lib/postgresql/16/bin }\nsteps:\n  - backup: { to: /b }\n  - upgrade: { to-version: 17 }\n  - tune: { apply: true }\n',
    'w.yaml',
  );
  const upgraded = (id: string) => (id === 'run-upgrade' ? { dataDir: '/pg/17', bindir: '/usr/lib/postgresql/17/bin' } : undefined);
  const runs = { 0: 'run-backup', 1: 'run-upgrade' };
  assert.deepEqual(
    clusterForStep(pb, 1, upgraded, runs),
    { pgdata: '/pg/16', bindir: '/usr/lib/postgresql/16/bin' },
    'the upgrade itself starts from the old cluster',
  );
  assert.deepEqual(clusterForStep(pb, 2, upgraded, runs), { pgdata: '/pg/17', bindir: '/usr/lib/postgresql/17/bin' });
  // an upgrade that did not complete leaves the cluster as it was
  assert.deepEqual(
    clusterForStep(pb, 2, () => undefined, runs),
    pb.cluster,
  );
});
