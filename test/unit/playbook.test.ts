import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePlaybook, readPlaybook, stepInvocation } from '../../src/playbook/playbook.js';
import { clusterForStep, runPlaybook } from '../../src/playbook/run.js';
import type { Runner } from '../../src/runner.js';
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

test('a step whose run stopped while being rolled back: the playbook refuses to go on and names the rollback that does, with what it undoes', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'pgscale-pb-'));
  try {
    const pb = parsePlaybook('version: 1\nname: place\ncluster: { pgdata: /pg/17 }\nsteps:\n  - tablespaces place: { database: app }\n', 'place.yaml');
    const runId = '20260101T000000-tablespaces-place-abcdef';
    const runDir = join(stateDir, 'runs', runId);
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
    const step = (id: string, title: string) => ({ id, kind: 'k', title, params: {}, rollback: '', downtime: false, pointOfNoReturn: false });
    const plan = {
      operation: 'tablespaces-place',
      target: { description: 'd', lockKey: `test:${runId}` },
      steps: [
        step('prepare', 'Create tablespace pgscale_warm'),
        step('pg_repack-extension', 'Create the pg_repack extension'),
        step('move-a', 'Move public.a'),
      ],
    };
    writeFileSync(join(runDir, 'plan.json'), JSON.stringify(plan));
    const events = [
      { type: 'run-started', pid: 1 },
      ...['prepare', 'pg_repack-extension'].flatMap((s) => [
        { type: 'step-started', step: s },
        { type: 'step-done', step: s, outputs: {}, verified: '' },
      ]),
      { type: 'step-started', step: 'move-a' },
      { type: 'run-interrupted', step: 'move-a' },
      { type: 'rollback-started', pid: 1 },
      { type: 'step-rolled-back', step: 'move-a' },
      { type: 'rollback-failed', step: 'pg_repack-extension', error: 'cannot drop extension pg_repack' },
    ];
    writeFileSync(join(runDir, 'journal.jsonl'), events.map((e) => JSON.stringify({ at: '2026-01-01T00:00:00Z', ...e })).join('\n') + '\n');
    mkdirSync(join(stateDir, 'playbooks'));
    writeFileSync(join(stateDir, 'playbooks', 'place.json'), JSON.stringify({ digest: pb.digest, done: [], runs: { 0: runId } }));
    const started: string[] = [];
    const runner = {
      stream: (inv: { args: readonly string[] }) => {
        started.push(inv.args.join(' '));
        throw new Error('no step may start');
      },
    } as unknown as Runner;
    await assert.rejects(
      runPlaybook(pb, { runner, cli: 'pgscale', stateDir, yes: true, dryRun: false, json: false, log: () => undefined, signal: new AbortController().signal }),
      (e: unknown) => {
        assert.ok(e instanceof PgscaleError);
        assert.equal(e.exitCode, ExitCode.Refused);
        assert.match(e.message, /run 20260101T000000-tablespaces-place-abcdef is being rolled back/);
        assert.match(e.hint ?? '', new RegExp(`^\`pgscale rollback ${runId} --state-dir ${stateDir}\` finishes undoing step 1's run \\(rollback-failed\\)`));
        assert.match(e.hint ?? '', /undoes "Create the pg_repack extension", "Create tablespace pgscale_warm"/);
        assert.doesNotMatch(e.hint ?? '', /resumed/);
        return true;
      },
    );
    assert.deepEqual(started, [], 'neither a resume (refused) nor a new run is started');
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
});
