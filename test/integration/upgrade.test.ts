/**
 * `pgscale upgrade` on real clusters: 16→17 (link with WAL on a dedicated volume through a
 * reviewed plan file, and copy), 15→17 (link), 17→18 (link and copy). Each run loads the shared
 * dataset (TOAST, enum, sequence, GIN and btree indexes, materialized view, large object, a
 * tablespace on a loop volume, pgcrypto and pg_stat_statements) and asserts identical checksums,
 * a clean amcheck, writes and a restart on the old port, the migrated configuration and what
 * `pgscale detect` reports. Then bad input: each refused with its exit code, nothing changed.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  bindir,
  upgradeCommand,
  createCluster,
  createLoopVolume,
  freePort,
  mkdirOwned,
  runner,
  scratchDir,
  serverUser,
  teardownAll,
  TestCluster,
} from '../helpers/testbed.js';
import { parseJson, runCli, type CliResult } from '../helpers/cli.js';
import { amcheckClean, datasetConf, datasetDb, loadDataset, removedInConf, smallDataset, tableChecksums } from '../helpers/dataset.js';
import { isRoot } from '../../src/runner.js';
import type { DetectReport } from '../../src/detect.js';
import type { UpgradeReport } from '../../src/upgrade/report.js';
import type { RunReport } from '../../src/pipeline/execute.js';

after(teardownAll);

const UPGRADE_TIMEOUT = 300_000;

interface UpgradeJson {
  applied: boolean;
  run?: RunReport;
  report?: UpgradeReport;
}

const fail = (what: string, r: CliResult) => `${what}: exit ${r.code}\nstdout:\n${r.stdout.slice(-4000)}\nstderr:\n${r.stderr.slice(-4000)}`;

/** The new cluster as a TestCluster: pgscale starts it on the old port and socket directory. */
function newClusterOf(old: TestCluster, version: number, dataDir: string): TestCluster {
  return new TestCluster(version, bindir(version), dataDir, old.port, old.socketDir, join(dirname(dataDir), `new-${version}.log`));
}

function running(dataDir: string): boolean {
  return existsSync(join(dataDir, 'postmaster.pid'));
}

interface Case {
  from: number;
  to: number;
  mode: 'link' | 'copy';
  checksums: boolean;
  /** initdb --waldir onto a dedicated loop volume (a subdirectory of the mount). */
  waldir?: boolean;
  /** Plan with --dry-run --plan-out, review the markdown, then `pgscale apply FILE` (with a backup). */
  viaPlanFile?: boolean;
}

/**
 * The test bed's Debian 17.12 build stores a column option, pg_attver, on every column (with a
 * `composite_type_mismatch` setting); the 18.6 build does not know the option, so pg_upgrade's
 * schema restore fails on the first user table — after `pg_upgrade --check` passed, in downtime.
 * Returns the reason when this pair of binaries has that incompatibility.
 */
async function schemaRestoreIncompatibility(old: TestCluster, to: number): Promise<string | undefined> {
  const tagged = Number(
    await old.sql(
      `select count(*) from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
       cross join lateral pg_options_to_table(a.attoptions) o
      where n.nspname = 'public' and o.option_name = 'pg_attver'`,
      datasetDb,
    ),
  );
  if (tagged === 0) return undefined;
  const newSettings = spawnSync(join(bindir(to), 'postgres'), ['--describe-config'], { encoding: 'utf8' }).stdout;
  if (newSettings.includes('composite_type_mismatch')) return undefined;
  return `${old.version}'s build sets the column option pg_attver on ${tagged} user columns; the ${to} build does not know it, so pg_upgrade cannot restore the schema`;
}

/**
 * When the binaries cannot upgrade (see schemaRestoreIncompatibility): pgscale fails in pg_upgrade
 * with exit 5 and pg_upgrade's log named, and `pgscale rollback` gives the old cluster back running
 * with identical data and the new data directory removed.
 */
async function failedUpgradeRollsBack(
  t: TestContext,
  k: Case,
  old: TestCluster,
  before: Record<string, string>,
  args: string[],
  stateDir: string,
  newDataDir: string,
  reason: string,
): Promise<void> {
  t.diagnostic(`${k.from} → ${k.to} cannot succeed with the test bed's binaries: ${reason}; asserting failure in downtime and rollback instead`);
  const res = await runCli([...args, '--yes', '--json'], { timeoutMs: UPGRADE_TIMEOUT });
  assert.equal(res.code, 5, fail('upgrade', res));
  const err = parseJson<{ error: { message: string; hint: string; kind: string } }>(res).error;
  assert.equal(err.kind, 'failed-after-change');
  assert.match(err.message, /^pg_upgrade failed:[\s\S]*Restoring database schemas in the new cluster[\s\S]*logs: .*pg_upgrade_output\.d/);
  assert.match(err.hint, /pgscale rollback \S+/);
  const logs = spawnSync('grep', ['-rh', 'unrecognized parameter', join(newDataDir, 'pg_upgrade_output.d')], { encoding: 'utf8' }).stdout;
  assert.match(logs, /unrecognized parameter "pg_attver"/);
  assert.equal(running(old.pgdata), false, 'the old cluster was stopped for pg_upgrade');
  const rb = await runCli(['rollback', '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: UPGRADE_TIMEOUT });
  assert.equal(rb.code, 0, fail('rollback', rb));
  assert.equal(parseJson<RunReport>(rb).status, 'rolled-back');
  assert.ok(running(old.pgdata), 'the old cluster runs again');
  assert.equal(Math.floor(Number(await old.sql('show server_version_num')) / 10000), k.from);
  assert.deepEqual(await tableChecksums(old), before);
  assert.deepEqual((await amcheckClean(old)).errors, []);
  assert.equal(existsSync(newDataDir), false, 'the new data directory is removed');
  assert.ok(existsSync(join(old.pgdata, 'global', 'pg_control')));
}

async function upgradeCase(t: TestContext, k: Case): Promise<void> {
  const tsVolume = createLoopVolume(96);
  const walVolume = k.waldir ? createLoopVolume(160) : undefined;
  const work = scratchDir(`pgscale-up${k.from}${k.to}-`);
  const old = await createCluster({ version: k.from, checksums: k.checksums, conf: datasetConf(k.from) });
  await loadDataset(old, { tablespaceDir: mkdirOwned(join(tsVolume.mountPoint, 'ts')) });
  const before = await tableChecksums(old);
  assert.ok(Object.keys(before).length > 20, 'the dataset is loaded');
  // a clean source, checked with the old version's amcheck (also carried through the upgrade as an extension)
  assert.deepEqual((await amcheckClean(old)).errors, []);
  const rows = Number(await old.sql('select count(*) from items', datasetDb));
  const newDataDir = join(dirname(old.pgdata), `data-${k.to}`);
  const waldir = walVolume ? join(walVolume.mountPoint, 'pg_wal') : undefined;
  const stateDir = join(work, 'state');
  const args = upgradeCommand(old, {
    'to-version': k.to,
    mode: k.mode,
    'state-dir': stateDir,
    waldir,
    'backup-to': k.viaPlanFile ? join(work, 'backup') : undefined,
    'no-backup': !k.viaPlanFile,
  });

  const incompatible = await schemaRestoreIncompatibility(old, k.to);
  if (incompatible) return failedUpgradeRollsBack(t, k, old, before, args, stateDir, newDataDir, incompatible);

  let run: RunReport;
  if (k.viaPlanFile) {
    const planFile = join(work, 'upgrade.plan.json');
    const dry = await runCli([...args, '--dry-run', '--plan-out', planFile], { timeoutMs: UPGRADE_TIMEOUT });
    assert.equal(dry.code, 0, fail('dry-run', dry));
    const md = dry.stdout;
    assert.match(md, /^# pgscale plan: upgrade/m);
    assert.match(md, /expected downtime: \d/);
    assert.match(md, /point of no return: after step `start-new`/);
    assert.match(md, /## Checks/);
    // what each backup method would cost here, and which one this run takes (its restore is the way back)
    assert.match(md, /dumpall \(taken\): backup ~[^,]+, restore ~[^,]+, into any version as new or newer; parallel: .*; physical: .*into the same major only/);
    for (const check of [
      'target version',
      'new data directory',
      'WAL directory',
      'WAL on its own device',
      'disk space',
      'link mode filesystem',
      'primary',
      'preload library pg_stat_statements',
      `extension pgcrypto (${datasetDb})`,
      `extension pg_stat_statements (${datasetDb})`,
    ]) {
      assert.match(md, new RegExp(`^\\| ${check.replace(/[()]/g, '\\$&')} \\| pass \\|`, 'm'), `check "${check}" passed in the plan`);
    }
    // the configuration diff: the removed setting goes out, commented with the reason
    assert.match(md, /```diff[\s\S]*^-old_snapshot_threshold = -1$[\s\S]*^\+#old_snapshot_threshold = -1\t# pgscale: commented out, removed in 17/m);
    assert.equal(existsSync(newDataDir), false, 'a dry run creates nothing');
    assert.equal(existsSync(stateDir), false, 'a dry run leaves no state');
    assert.equal(statSync(planFile).mode & 0o777, 0o600);
    const applied = await runCli(['apply', planFile, '--yes', '--json', '--state-dir', stateDir], { timeoutMs: UPGRADE_TIMEOUT });
    assert.equal(applied.code, 0, fail('apply', applied));
    const out = parseJson<UpgradeJson>(applied);
    assert.equal(out.applied, true);
    run = out.run!;
    assert.ok(out.report && typeof out.report.downtimeSeconds === 'number' && out.report.downtimeSeconds > 0, 'apply closes with the report too');
    assert.ok(existsSync(join(work, 'backup')), 'the backup was taken first');
    // past the point of no return the way back is the backup, by a command that exists and accepts it
    const refusedRollback = await runCli(['rollback', run.runId, '--state-dir', stateDir]);
    assert.equal(refusedRollback.code, 3, fail('rollback after link', refusedRollback));
    const restore = /`(pgscale backup restore \S+ --to NEW_PGDATA --bindir \S+)`/.exec(refusedRollback.stderr)?.[1];
    assert.ok(restore, `the hint names \`pgscale backup restore\`: ${refusedRollback.stderr}`);
    const restoreArgs = restore
      .split(' ')
      .slice(1)
      .map((a) => (a === 'NEW_PGDATA' ? join(work, 'restored') : a));
    const dryRestore = await runCli([...restoreArgs, '--dry-run', '--state-dir', stateDir], { timeoutMs: UPGRADE_TIMEOUT });
    assert.equal(dryRestore.code, 0, fail('the hinted restore, --dry-run', dryRestore));
  } else {
    const res = await runCli([...args, '--yes', '--json'], { timeoutMs: UPGRADE_TIMEOUT });
    assert.equal(res.code, 0, fail('upgrade', res));
    const out = parseJson<UpgradeJson>(res);
    run = out.run!;
    assert.ok(out.report && typeof out.report.downtimeSeconds === 'number' && out.report.downtimeSeconds > 0, 'the report measures downtime');
  }
  assert.equal(run.status, 'completed');
  assert.deepEqual(
    run.steps.filter((s) => s.state !== 'done').map((s) => s.id),
    [],
  );
  assert.ok(Date.parse(String(run.outputs.open?.acceptingWritesAt)) > Date.parse(String(run.outputs['stop-old']?.stoppedAt)));
  // verified before clients came back: every relation's relfilenode and fork sizes as before the stop
  assert.deepEqual(run.outputs['start-new']?.catalogDifferences, []);
  assert.ok(Number(run.outputs['start-new']?.relationsCompared) >= 20, `${run.outputs['start-new']?.relationsCompared} relations compared`);
  assert.deepEqual(run.outputs.verify?.findings, [], 'deep verification found nothing');

  const next = newClusterOf(old, k.to, newDataDir);
  // the new major answers on the old port, with the old checksum setting
  assert.equal(Math.floor(Number(await next.sql('show server_version_num')) / 10000), k.to);
  assert.equal(await next.sql('show port'), String(old.port));
  assert.equal(await next.sql('show data_checksums'), k.checksums ? 'on' : 'off');
  assert.equal(running(old.pgdata), false, 'the old cluster is stopped');
  if (k.mode === 'link') assert.ok(existsSync(join(old.pgdata, 'global', 'pg_control.old')), 'link mode disables the old cluster');
  else assert.ok(existsSync(join(old.pgdata, 'global', 'pg_control')), 'copy mode leaves the old cluster intact');

  // extensions: pg_upgrade's update script ran (pg_stat_statements and amcheck have newer versions in the new major)
  assert.equal(run.outputs.extensions?.updated, true, 'update_extensions.sql was applied');
  assert.equal(
    await next.sql(
      `select string_agg(name || ' ' || installed_version || ' < ' || default_version, ', ') from pg_available_extensions where installed_version <> default_version`,
      datasetDb,
    ),
    '',
  );

  // nothing lost, nothing corrupt
  assert.deepEqual(await tableChecksums(next), before);
  const check = await amcheckClean(next);
  assert.deepEqual(check.errors, []);
  assert.ok(check.btreeIndexes > 100 && check.relations > 50, `amcheck covered ${check.btreeIndexes} indexes and ${check.relations} relations`);
  const tsDirs = readdirSync(join(tsVolume.mountPoint, 'ts'));
  assert.ok(
    tsDirs.some((d) => d.startsWith(`PG_${k.to}_`)),
    `tablespace has a PG_${k.to} directory: ${tsDirs.join(', ')}`,
  );

  // writes, then a restart through pg_ctl, and the write is still there
  await next.sql(
    `insert into items (id, name, created) values (${rows + 1}, 'after upgrade', now()); insert into archive values (-1, 'after'); select nextval('order_no'); refresh materialized view item_summary`,
    datasetDb,
  );
  await next.stop();
  assert.equal(running(newDataDir), false);
  await next.start();
  assert.equal(await next.sql('select count(*) from items', datasetDb), String(rows + 1));
  assert.equal(await next.sql(`select name from items where id = ${rows + 1}`, datasetDb), 'after upgrade');
  assert.equal(await next.sql(`select note from archive where id = -1`, datasetDb), 'after');

  // the configuration: what the new major removed is commented out with the reason
  const conf = readFileSync(join(newDataDir, 'postgresql.conf'), 'utf8');
  for (const r of removedInConf(k.from, k.to)) {
    assert.doesNotMatch(conf, new RegExp(`^${r.name}\\s*=`, 'm'), `${r.name} is no longer set`);
    if (r.fate === 'commented')
      assert.match(conf, new RegExp(`^#${r.name} = .*\\t# pgscale: commented out, (removed in \\d+: .{20,}|a Debian/PGDG packaging patch.*)$`, 'm'));
    else {
      assert.match(conf, new RegExp(`^${r.newName} = .*\\t# pgscale: renamed to ${r.newName} in ${k.to}: .+; was: ${r.name} = `, 'm'));
      assert.equal(await next.sql(`show ${r.newName}`), 'prime256v1');
    }
  }
  assert.ok(removedInConf(k.from, k.to).length > 0, 'the case exercises the config migration');
  assert.match(conf, /^shared_preload_libraries = 'pg_stat_statements'/m);
  assert.equal(await next.sql(`select count(*) > 0 from pg_stat_statements`, datasetDb), 't', 'pg_stat_statements is preloaded and works');

  // detect sees the new major
  const det = await runCli(['detect', '--json', '--pgdata', newDataDir, '--bindir', bindir(k.to)]);
  assert.equal(det.code, 0, fail('detect', det));
  const cluster = parseJson<DetectReport>(det).clusters[0]!;
  assert.equal(cluster.major, k.to);
  assert.equal(cluster.state, 'running');
  assert.equal(cluster.port, old.port);

  if (walVolume) {
    const link = join(newDataDir, 'pg_wal');
    assert.ok(lstatSync(link).isSymbolicLink(), 'pg_wal is a symlink');
    assert.equal(readlinkSync(link), waldir);
    assert.equal(statSync(realpathSync(link)).dev, statSync(walVolume.mountPoint).dev, 'WAL is on the dedicated volume');
    assert.notEqual(statSync(walVolume.mountPoint).dev, statSync(newDataDir).dev);
    assert.ok(
      readdirSync(waldir!).some((f) => /^[0-9A-F]{24}$/.test(f)),
      'WAL segments are written there',
    );
  }
}

describe('pgscale upgrade: real major upgrades', { skip: !isRoot() && 'loop volumes need root' }, () => {
  test('16 → 17, link mode, WAL on a dedicated volume, through a reviewed plan file and `pgscale apply`', { timeout: 600_000 }, (t) =>
    upgradeCase(t, { from: 16, to: 17, mode: 'link', checksums: true, waldir: true, viaPlanFile: true }),
  );
  test('16 → 17, copy mode', { timeout: 600_000 }, (t) => upgradeCase(t, { from: 16, to: 17, mode: 'copy', checksums: false }));
  test('15 → 17, link mode', { timeout: 600_000 }, (t) => upgradeCase(t, { from: 15, to: 17, mode: 'link', checksums: false }));
  test('17 → 18, link mode, no checksums (18 would enable them by default)', { timeout: 600_000 }, (t) =>
    upgradeCase(t, { from: 17, to: 18, mode: 'link', checksums: false }),
  );
  test('17 → 18, copy mode, with checksums', { timeout: 600_000 }, (t) => upgradeCase(t, { from: 17, to: 18, mode: 'copy', checksums: true }));
});

describe('pgscale upgrade: bad input is refused and nothing changes', { skip: !isRoot() && 'loop volumes need root' }, () => {
  let old: TestCluster;
  let work: string;
  let newDataDir: string;
  let stateDir: string;
  let baseline: Record<string, string>;

  before(async () => {
    work = scratchDir('pgscale-upbad-');
    old = await createCluster({ version: 16, checksums: true, conf: datasetConf(16) });
    await loadDataset(old, smallDataset);
    baseline = await tableChecksums(old);
    newDataDir = join(dirname(old.pgdata), 'data-17');
    stateDir = join(work, 'state');
  });

  const base = (extra: string[], o: { newDataDir?: string } = {}) => [
    ...upgradeCommand(old, { 'new-pgdata': o.newDataDir ?? newDataDir, 'state-dir': stateDir, 'no-backup': true, yes: true }),
    ...extra,
  ];

  /** Exit code and message, then: the old cluster still runs; no new data directory, no work directory, no run. */
  async function assertNothingChanged(
    r: CliResult,
    code: number,
    message: RegExp,
    o: { newDataDir?: string; newDataDirExisted?: boolean } = {},
  ): Promise<void> {
    assert.equal(r.code, code, fail('expected a refusal', r));
    assert.match(r.stderr, /^pgscale: error: /m);
    assert.match(r.stderr, message);
    await assertUntouched(o);
  }

  async function assertUntouched(o: { newDataDir?: string; newDataDirExisted?: boolean } = {}): Promise<void> {
    assert.ok(running(old.pgdata), 'the old cluster is still running');
    assert.equal(await old.sql('select 1'), '1');
    assert.ok(existsSync(join(old.pgdata, 'global', 'pg_control')));
    const dir = o.newDataDir ?? newDataDir;
    if (!o.newDataDirExisted) assert.equal(existsSync(dir), false, `${dir} was not created`);
    assert.equal(existsSync(join(dirname(dir), `.${dir.split('/').pop()}.pgscale-upgrade`)), false, 'no pg_upgrade work directory');
    assert.equal(existsSync(join(stateDir, 'runs')) && readdirSync(join(stateDir, 'runs')).length > 0, false, 'no run was started');
  }

  after(async () => {
    if (old && running(old.pgdata)) assert.deepEqual(await tableChecksums(old), baseline, 'the refused attempts changed no data');
  });

  test("a target version lower than or equal to the cluster's: bad input (2)", async () => {
    let r = await runCli(base(['--to-version', '16']));
    await assertNothingChanged(r, 2, /--to-version 16 is not newer than the cluster's version 16/);
    r = await runCli(base(['--to-version', '15']));
    await assertNothingChanged(r, 2, /--to-version 15 is not newer than the cluster's version 16/);
  });

  test('a --new-bindir that does not exist: bad input (2)', async () => {
    const r = await runCli(
      upgradeCommand(old, { 'to-version': 17, 'new-pgdata': newDataDir, 'state-dir': stateDir, 'no-backup': true, yes: true }, '/nonexistent/pg17/bin'),
    );
    await assertNothingChanged(r, 2, /\/nonexistent\/pg17\/bin has no executable "postgres"/);
  });

  test('a running cluster as the new data directory: refused (3)', async () => {
    const other = await createCluster({ version: 17 });
    const r = await runCli(base(['--to-version', '17'], { newDataDir: other.pgdata }));
    await assertNothingChanged(r, 3, /new data directory: .* belongs to a running cluster/, { newDataDir: other.pgdata, newDataDirExisted: true });
    assert.ok(running(other.pgdata), 'the other cluster still runs');
    assert.equal(await other.sql('select 1'), '1');
  });

  test('a non-empty new data directory: refused (3), its contents untouched', async () => {
    const dir = mkdirOwned(join(work, 'occupied'));
    writeFileSync(join(dir, 'keep.txt'), 'precious');
    const r = await runCli(base(['--to-version', '17'], { newDataDir: dir }));
    await assertNothingChanged(r, 3, /new data directory: .*occupied is not empty/, { newDataDir: dir, newDataDirExisted: true });
    assert.deepEqual(readdirSync(dir), ['keep.txt']);
    assert.equal(readFileSync(join(dir, 'keep.txt'), 'utf8'), 'precious');
  });

  test('a non-empty WAL target: refused (3), naming the mount root trap', async () => {
    const vol = createLoopVolume(32);
    // the root of a fresh ext4 volume holds lost+found: not empty
    const r = await runCli(base(['--to-version', '17', '--waldir', vol.mountPoint]));
    await assertNothingChanged(r, 3, /WAL directory: .* is not empty \(a filesystem root: use a subdirectory/);
    assert.deepEqual(readdirSync(vol.mountPoint), ['lost+found']);
  });

  test("a WAL target on the data directory's device without --force: refused (3)", async () => {
    const waldir = join(work, 'wal-same-device');
    const r = await runCli(base(['--to-version', '17', '--waldir', waldir]));
    await assertNothingChanged(r, 3, /WAL on its own device: .* is on the same device as .*--force to accept/);
    assert.equal(existsSync(waldir), false);
  });

  test("not enough space for copy mode on the new data directory's volume: refused (3)", async () => {
    const tiny = createLoopVolume(16);
    const dir = join(tiny.mountPoint, 'data-17');
    const r = await runCli(base(['--to-version', '17', '--mode', 'copy'], { newDataDir: dir }));
    await assertNothingChanged(r, 3, /disk space: only .* free at .*; copy mode needs about/, { newDataDir: dir });
  });

  test('link mode across filesystems: refused (3), naming link mode', async () => {
    const vol = createLoopVolume(64);
    const dir = join(vol.mountPoint, 'data-17');
    const r = await runCli(base(['--to-version', '17', '--mode', 'link'], { newDataDir: dir }));
    await assertNothingChanged(r, 3, /link mode filesystem: .* is on another filesystem than .*: link mode needs one filesystem; use --mode copy/, {
      newDataDir: dir,
    });
    assert.deepEqual(readdirSync(vol.mountPoint), ['lost+found']);
  });

  test('an extension the new version does not have (adminpack, removed in 17): refused (3)', async () => {
    assert.ok(existsSync(join(bindir(16), '..', 'share', 'postgresql', 'extension', 'adminpack.control')), '16 has adminpack');
    await old.sql('create extension adminpack', datasetDb);
    try {
      const r = await runCli(base(['--to-version', '17']));
      await assertNothingChanged(
        r,
        3,
        new RegExp(`extension adminpack \\(${datasetDb}\\): adminpack [\\d.]+ is installed in ${datasetDb} but not available for PostgreSQL 17`),
      );
    } finally {
      await old.sql('drop extension adminpack', datasetDb);
    }
  });

  test('a standby as the old cluster: refused (3)', async () => {
    const parent = scratchDir('pgscale-upstandby-');
    const standbyDir = join(parent, 'data');
    const sock = mkdirOwned(join(parent, 'sock'));
    const port = await freePort();
    const bb = await runner.run({
      program: join(bindir(17), 'pg_basebackup'),
      args: ['-h', old.socketDir, '-p', String(old.port), '-U', old.superuser, '-D', standbyDir, '-R', '-X', 'stream', '-c', 'fast'],
      runAs: serverUser,
    });
    assert.equal(bb.exitCode, 0, bb.stderr);
    writeFileSync(
      join(standbyDir, 'postgresql.conf'),
      `${readFileSync(join(standbyDir, 'postgresql.conf'), 'utf8')}\n# standby\nport = ${port}\nunix_socket_directories = '${sock}'\n`,
    );
    const standby = new TestCluster(16, old.bindir, standbyDir, port, sock, join(parent, 'server.log'));
    await standby.start();
    assert.equal(await standby.sql('select pg_is_in_recovery()'), 't');
    const standbyNew = join(parent, 'data-17');
    const r = await runCli(
      upgradeCommand(
        { pgdata: standbyDir, bindir: old.bindir },
        { 'to-version': 17, 'new-pgdata': standbyNew, 'state-dir': stateDir, 'no-backup': true, yes: true },
      ),
    );
    assert.equal(r.code, 3, fail('standby', r));
    assert.match(r.stderr, /is a standby: upgrade the primary, then rebuild the standbys from it/);
    assert.ok(running(standbyDir));
    assert.equal(await standby.sql('select pg_is_in_recovery()'), 't', 'the standby still runs and replays');
    assert.equal(existsSync(standbyNew), false);
    await standby.stop();
  });

  test('the plan of a dry run shows the config diff, downtime, point of no return and checks; changes nothing', async () => {
    const r = await runCli(base(['--to-version', '17', '--dry-run']));
    assert.equal(r.code, 0, fail('dry-run', r));
    assert.match(r.stdout, /```diff\n[\s\S]*\+#old_snapshot_threshold = -1\t# pgscale: commented out, removed in 17/);
    assert.match(r.stdout, /- expected downtime: \d.* \(steps: stop-old, pg_upgrade, start-new, open\)/);
    assert.match(r.stdout, /- point of no return: after step `start-new`/);
    assert.match(r.stdout, /- checks: \d+ passed, 0 blocking/);
    for (const check of ['disk space', 'link mode filesystem', 'new data directory', 'prepared transactions', 'preload library pg_stat_statements'])
      assert.match(r.stdout, new RegExp(`^\\| ${check} \\| pass \\|`, 'm'));
    await assertUntouched();
  });
});
