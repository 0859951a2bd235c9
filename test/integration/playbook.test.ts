import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bindir, createCluster, scratchDir, teardownAll } from '../helpers/testbed.js';
import { runCli } from '../helpers/cli.js';

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
