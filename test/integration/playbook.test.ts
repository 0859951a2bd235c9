import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bindir, createCluster, scratchDir, teardownAll } from '../helpers/testbed.js';
import { runCli, startCli, type CliResult } from '../helpers/cli.js';
import { holdTableLock, lockWaiters, waitFor } from '../helpers/snapshot.js';

after(teardownAll);

test('a playbook runs backup then upgrade without a TTY; killed mid-way, running it again resumes', async () => {
  const cluster = await createCluster({ version: 16, checksums: true });
  await cluster.sql('create table kept as select g from generate_series(1, 20000) g');
  const work = scratchDir();
  const state = join(work, 'state');
  const file = join(work, 'window.yaml');
  writeFileSync(
    file,
    [
      'version: 1',
      'name: window',
      'cluster:',
      `  pgdata: ${cluster.pgdata}`,
      'steps:',
      '  - backup:',
      `      to: ${join(work, 'backup')}`,
      `      bindir: ${bindir(17)}`,
      '  - upgrade:',
      `      old-bindir: ${cluster.bindir}`,
      `      new-bindir: ${bindir(17)}`,
      '      to-version: 17',
      '      no-backup: true',
      '',
    ].join('\n'),
  );
  const dry = await runCli(['playbook', 'run', file, '--state-dir', state, '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /# pgscale plan: backup/);
  assert.match(dry.stdout, /# pgscale plan: upgrade/);
  assert.equal(existsSync(join(work, 'backup')), false, 'dry-run made no backup');

  // the upgrade is killed right after pg_upgrade, as a power cut would
  const killed = await runCli(['playbook', 'run', file, '--state-dir', state, '--yes'], { env: { PGSCALE_FAILPOINT: 'pg_upgrade:done' } });
  assert.notEqual(killed.code, 0);
  assert.match(killed.stderr, /stopped at step 2 \(upgrade\)/);
  assert.ok(existsSync(join(work, 'backup', 'manifest.json')), 'step 1 finished');

  const again = await runCli(['playbook', 'run', file, '--state-dir', state, '--yes']);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /step 1\/2: backup: already done/);
  assert.match(again.stderr, /step 2\/2: upgrade: pgscale resume /);
  assert.match(await cluster.sql("select current_setting('server_version_num')::int / 10000 || ':' || count(*) from kept"), /^17:20000$/);
});

test('a playbook whose stopped run was finished by hand (`pgscale resume`, as its hint offers) continues after it, on the upgraded cluster', async () => {
  const cluster = await createCluster({ version: 16, checksums: true });
  const work = scratchDir();
  const state = join(work, 'state');
  const newData = join(work, 'data-17');
  const file = join(work, 'window.yaml');
  writeFileSync(
    file,
    [
      'version: 1',
      'name: by-hand',
      'cluster:',
      `  pgdata: ${cluster.pgdata}`,
      'steps:',
      '  - upgrade:',
      `      old-bindir: ${cluster.bindir}`,
      `      new-bindir: ${bindir(17)}`,
      `      new-pgdata: ${newData}`,
      '      to-version: 17',
      '      no-backup: true',
      '  - detect:',
      '',
    ].join('\n'),
  );
  const killed = await runCli(['playbook', 'run', file, '--state-dir', state, '--yes'], { env: { PGSCALE_FAILPOINT: 'pg_upgrade:done' } });
  assert.match(killed.stderr, /stopped at step 1 \(upgrade\)/);
  const resumed = await runCli(['resume', '--state-dir', state, '--yes']);
  assert.equal(resumed.code, 0, resumed.stderr);
  const again = await runCli(['playbook', 'run', file, '--state-dir', state, '--yes']);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /step 1\/2: upgrade: already done \(run \S+ completed\)/);
  assert.match(again.stderr, new RegExp(`step 2/2: detect: pgscale detect --pgdata ${newData}`));
});

test('Ctrl-C during a playbook: its step is sent SIGINT too, both report SIGINT (not SIGTERM), exit 130', async () => {
  const cluster = await createCluster({ version: 17 });
  await cluster.sql('create table t (id int primary key)');
  const work = scratchDir();
  const file = join(work, 'window.yaml');
  writeFileSync(
    file,
    ['version: 1', 'name: ctrl-c', 'cluster:', `  pgdata: ${cluster.pgdata}`, 'steps:', '  - backup:', `      to: ${join(work, 'backup')}`, ''].join('\n'),
  );
  const held = await holdTableLock(cluster, 'postgres', 't');
  try {
    const run = startCli(['playbook', 'run', file, '--state-dir', join(work, 'state'), '--yes']);
    let ended: CliResult | undefined;
    void run.done.then((r) => (ended = r));
    await waitFor(
      'the backup step to wait at the table lock',
      async () => {
        if (ended) throw new Error(`the playbook ended early: ${ended.stderr}`);
        return (await lockWaiters(cluster)) > 0;
      },
      60_000,
    );
    run.kill('SIGINT');
    const res = await run.done;
    assert.equal(res.code, 130, res.stderr);
    assert.equal(res.stderr.match(/SIGINT: stopping at the next safe point/g)?.length, 2, `the playbook and its step: ${res.stderr}`);
    assert.doesNotMatch(res.stdout + res.stderr, /SIGTERM/);
    assert.match(res.stderr, /stopped at step 1 \(backup\), exit code 130/);
  } finally {
    await held.release();
  }
});
