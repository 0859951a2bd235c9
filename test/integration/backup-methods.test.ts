/**
 * The three backup methods and `backup restore`, against one real PostgreSQL 17 cluster holding
 * several databases (one whose name needs quoting), a tablespace, large objects, and a database
 * that refuses connections: each method backs it up, verifies, and restores into a new data
 * directory with identical per-table checksums. A database with datallowconn = false is refused
 * by logical methods unless excluded by name (a restore names it as not restored); a physical
 * backup is refused in the plan when walsenders run out or pg_hba has no replication rule; the
 * reports give the whole backup's size; a verified backup survives every undo and goes only
 * through `backup remove`; SIGKILL in the middle of each method is resumed to a backup that verifies.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, freePort, mkdirOwned, runner, scratchDir, setprivArgs, teardownAll, TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli, startCli } from '../helpers/cli.js';
import { holdTableLock, lockWaiters, waitFor } from '../helpers/snapshot.js';
import { datasetDb, loadDataset, smallDataset, tableChecksums, type Checksums } from '../helpers/dataset.js';
import { isRoot } from '../../src/runner.js';
import type { OperationResult } from '../../src/operationCommand.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import type { BackupManifest } from '../../src/backup/archive.js';
import { formatBytes } from '../../src/format.js';

after(teardownAll);

/** A database name that needs quoting everywhere: a double quote, a space, an equals sign, unicode. */
const oddDb = 'we"ird db=ü';
const closedDb = 'closed';
/** psql reads a -d value holding "=" as a connection string: the odd name goes in one. */
const dbArg = (name: string) => (name.includes('=') ? `dbname='${name.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'` : name);
const databases = [datasetDb, oddDb, 'aux'];

describe('backup methods and restore', { skip: !isRoot() && 'the test bed runs servers as postgres: needs root' }, () => {
  let pg: TestCluster;
  let work: string;
  let state: string;
  const before_: Record<string, Checksums> = {};

  const backup = (dest: string, args: string[], env: NodeJS.ProcessEnv = {}) =>
    runCli(['backup', '--pgdata', pg.pgdata, '--bindir', pg.bindir, '--state-dir', state, '--to', dest, ...args], { env });

  /** Starts a restored data directory on a free port and a socket of its own (the test, not pgscale). */
  async function startRestored(pgdata: string, parent: string): Promise<TestCluster> {
    const port = await freePort();
    const sock = mkdirOwned(join(parent, `sock-${port}`));
    appendFileSync(join(pgdata, 'postgresql.auto.conf'), `port = ${port}\nunix_socket_directories = '${sock}'\nlisten_addresses = ''\n`);
    const c = new TestCluster(17, pg.bindir, pgdata, port, sock, join(parent, `restored-${port}.log`));
    await c.start();
    return c;
  }

  async function assertSameData(restored: TestCluster): Promise<void> {
    for (const db of databases) assert.deepEqual(await tableChecksums(restored, dbArg(db)), before_[db], `database ${JSON.stringify(db)} restored identically`);
    assert.equal(await restored.sql(`select count(*) from pg_tablespace where spcname = 'cold'`), '1');
  }

  before(async () => {
    work = scratchDir('pgscale-backup-methods-');
    state = join(work, 'state');
    pg = await createCluster({ version: 17, conf: ['fsync = off', 'max_wal_senders = 4'] });
    await loadDataset(pg, { ...smallDataset, extensions: false, tablespaceDir: mkdirOwned(join(work, 'cold')) });
    await pg.sql(`create database "${oddDb.replace(/"/g, '""')}"; create database aux;`);
    await pg.sql(
      `create table "odd ""table""" (id int primary key, v text); insert into "odd ""table""" select g, md5(g::text) from generate_series(1, 500) g; select lo_from_bytea(777, 'second large object');`,
      dbArg(oddDb),
    );
    await pg.sql(`create table t (id int, v text) tablespace cold; insert into t select g, repeat('x', g % 50) from generate_series(1, 3000) g;`, 'aux');
    for (const db of databases) before_[db] = await tableChecksums(pg, dbArg(db));
    await pg.sql(`create database ${closedDb}; alter database ${closedDb} allow_connections false;`);
  });

  test('a database that refuses connections: logical methods refuse before the dump (exit 3) with the fix; excluded by name, the manifest says so', async () => {
    for (const method of ['dumpall', 'parallel'] as const) {
      const dest = join(work, `refused-${method}`);
      const res = await backup(dest, ['--method', method]);
      assert.equal(res.code, 3, res.stderr);
      assert.match(res.stderr, /every database backed up: "closed" refuses connections \(datallowconn = false\)/);
      assert.match(
        res.stderr,
        /hint: nothing was changed; allow connections \(ALTER DATABASE "closed" ALLOW_CONNECTIONS true\), or leave it out by name: --exclude-database closed/,
      );
      assert.equal(existsSync(dest), false);
      assert.equal(existsSync(`${dest}.partial`), false);
    }
    const json = await backup(join(work, 'refused-json'), ['--json']);
    assert.equal(json.code, 3);
    assert.match(parseJson<{ error: { hint: string } }>(json).error.hint, /--exclude-database closed/);

    const typo = await backup(join(work, 'typo'), ['--exclude-database', 'closd']);
    assert.equal(typo.code, 3, typo.stderr);
    assert.match(typo.stderr, /excluded databases exist: --exclude-database names no database of the cluster: "closd"/);

    const dest = join(work, 'excluded');
    const ok = await backup(dest, ['--exclude-database', closedDb]);
    assert.equal(ok.code, 0, ok.stderr);
    const m = JSON.parse(readFileSync(join(dest, 'manifest.json'), 'utf8')) as BackupManifest;
    assert.deepEqual(
      m.databases.map((d) => [d.name, d.allowConnections, d.dumped]).sort(),
      [
        ['aux', true, true],
        [datasetDb, true, true],
        [closedDb, false, false],
        ['postgres', true, true],
        ['template1', true, true],
        [oddDb, true, true],
      ].sort(),
    );
    for (const d of m.databases) assert.ok(d.bytes > 1_000_000, `${d.name} has its size`);
    assert.deepEqual(m.excludedDatabases, [closedDb]);
  });

  test('physical: refused in the plan (exit 3, nothing created) when walsenders run out or pg_hba has no replication rule', async () => {
    const dest = join(work, 'refused-physical');
    // three idle replication connections hold three of the four walsenders: pg_basebackup -X stream needs two
    const senders = [1, 2, 3].map(() =>
      spawn(
        'setpriv',
        setprivArgs(join(pg.bindir, 'psql'), [
          '-X',
          '-q',
          '-h',
          pg.socketDir,
          '-p',
          String(pg.port),
          '-U',
          pg.superuser,
          '-d',
          'dbname=postgres replication=database',
        ]),
        { cwd: '/', stdio: ['pipe', 'ignore', 'ignore'] },
      ),
    );
    try {
      await waitFor('three walsenders', async () => (await pg.sql('select count(*) from pg_stat_replication')) === '3');
      const res = await backup(dest, ['--method', 'physical']);
      assert.equal(res.code, 3, res.stdout + res.stderr);
      assert.match(
        res.stderr,
        /max_wal_senders: 3 of 4 walsenders in use: pg_basebackup -X stream needs 2 free \(one sends the files, one streams the WAL\), only 1 is/,
      );
      assert.match(res.stderr, /raise max_wal_senders to at least 5 \(a restart\)/);
      assert.equal(existsSync(dest) || existsSync(`${dest}.partial`), false);
    } finally {
      await Promise.all(senders.map((p) => new Promise((r) => (p.on('close', r), p.stdin.end()))));
    }
    const hba = join(pg.pgdata, 'pg_hba.conf');
    const rules = readFileSync(hba, 'utf8');
    writeFileSync(hba, rules.replace(/^(\w+\s+replication\s)/gm, '# $1'));
    await pg.sql('select pg_reload_conf()');
    try {
      const res = await backup(dest, ['--method', 'physical']);
      assert.equal(res.code, 3, res.stdout + res.stderr);
      assert.match(
        res.stderr,
        new RegExp(`pg_hba allows replication: no pg_hba.conf line lets ${pg.superuser} make a replication connection over the Unix socket`),
      );
      assert.match(res.stderr, new RegExp(`add "local replication ${pg.superuser} peer" to pg_hba.conf and reload`));
      assert.equal(existsSync(dest) || existsSync(`${dest}.partial`), false);
    } finally {
      writeFileSync(hba, rules);
      await pg.sql('select pg_reload_conf()');
    }
  });

  for (const method of ['dumpall', 'parallel', 'physical'] as const) {
    test(`${method}: backup (0700/0600, manifest), backup verify, restore --to a new data directory with identical checksums`, async () => {
      const dest = join(work, `b-${method}`);
      const res = await backup(dest, [
        '--method',
        method,
        ...(method === 'physical' ? [] : ['--exclude-database', closedDb]),
        ...(method === 'parallel' ? ['--jobs', '2'] : []),
        '--json',
      ]);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.equal(parseJson<OperationResult>(res).run?.status, 'completed');
      assert.equal(statSync(dest).mode & 0o777, 0o700);
      const walk = (dir: string): void => {
        for (const e of readdirSync(dir, { withFileTypes: true })) {
          const p = join(dir, e.name);
          assert.equal(statSync(p).mode & 0o777, e.isDirectory() ? 0o700 : 0o600, `${p} mode`);
          assert.equal(statSync(p).uid, 0, `${p} belongs to the user who ran pgscale`);
          if (e.isDirectory()) walk(p);
        }
      };
      walk(dest);
      const m = JSON.parse(readFileSync(join(dest, 'manifest.json'), 'utf8')) as BackupManifest;
      assert.equal(m.method, method);
      assert.deepEqual(m.compression, { compressor: 'zstd', level: method === 'physical' ? 1 : 3 }, 'physical defaults to zstd 1 (measured faster)');
      assert.equal(m.databases.find((d) => d.name === closedDb)?.dumped, method === 'physical');
      assert.equal(
        m.databases.filter((d) => d.name !== closedDb).every((d) => d.dumped),
        true,
      );
      assert.deepEqual(
        m.shape?.tablespaces.map((t) => t.name),
        ['cold'],
      );
      if (method !== 'dumpall') assert.ok((m.files?.length ?? 0) > 3, `${m.files?.length} files listed with their sha256`);
      if (method === 'parallel')
        assert.ok(
          m.files!.some((f) => f.path.endsWith('.dat.zst')),
          'pg_dump compressed with zstd',
        );
      if (method === 'physical')
        assert.ok(
          m.files!.some((f) => f.path === 'base/base.tar.zst') && m.files!.some((f) => f.path === 'base/backup_manifest'),
          'server-side zstd tar with its backup_manifest',
        );

      // every program that ran, asked of the very path it ran by (the bindir may link to another version's)
      assert.deepEqual(
        m.programs?.map((r) => r.program),
        { dumpall: ['pg_dumpall'], parallel: ['pg_dumpall', 'pg_dump'], physical: ['pg_basebackup'] }[method],
      );
      for (const r of m.programs) {
        assert.equal(r.path, join(pg.bindir, r.program));
        assert.equal(r.resolvedPath, realpathSync(r.path));
        const v = await runner.run({ program: r.resolvedPath, args: ['--version'] });
        assert.ok(v.stdout.includes(`(PostgreSQL) ${r.version}`), `${r.program}: ${v.stdout} holds ${r.version}`);
      }

      const verified = await runCli(['backup', 'verify', dest, '--bindir', pg.bindir]);
      assert.equal(verified.code, 0, verified.stderr);
      assert.match(verified.stdout, new RegExp(`^ok: .*${method} backup`));
      // the whole backup: every file the manifest lists, and the databases it holds
      const held = m.databases.filter((d) => d.dumped);
      const files = (m.files?.length ?? 0) + (m.dumpFile ? 1 : 0);
      const size = `${formatBytes(m.compressedBytes + (m.files ?? []).reduce((a, f) => a + f.bytes, 0))} in ${files} file${files === 1 ? '' : 's'}`;
      const whole = `${size}${method === 'dumpall' ? `, dump ${formatBytes(m.uncompressedBytes)} decompressed` : ''}; ${held.length} databases of ${formatBytes(held.reduce((a, d) => a + d.bytes, 0))} backed up`;
      assert.ok(verified.stdout.includes(`${method} backup, ${whole}; every checksum matches`), verified.stdout);
      const run = parseJson<OperationResult>(res).run!;
      assert.equal(run.outputs.dump?.detail, whole);
      assert.ok(String(run.outputs.verify?.detail).startsWith(`checksums match (${whole})`), String(run.outputs.verify?.detail));

      const parent = scratchDir(`pgscale-restore-${method}-`);
      const pgdata = join(parent, 'data');
      const restored = await runCli(['backup', 'restore', dest, '--to', pgdata, '--bindir', pg.bindir, '--state-dir', state, '--jobs', '2', '--json']);
      assert.equal(restored.code, 0, restored.stdout + restored.stderr);
      const report = parseJson<OperationResult>(restored).run!;
      assert.equal(report.status, 'completed');
      assert.match(String(report.outputs.verify?.detail), /tables in \d+ databases, every one restored; row counts match the manifest/);
      const notRestored = 'not in the backup, so not restored: "closed" (left out by --exclude-database)';
      assert.equal(String(report.outputs.load?.detail).endsWith(notRestored), method !== 'physical', String(report.outputs.load?.detail));
      assert.equal(existsSync(join(pgdata, 'postmaster.pid')), false, 'the restored cluster is left stopped');
      const c = await startRestored(pgdata, parent);
      try {
        await assertSameData(c);
        if (method === 'physical')
          assert.equal(await c.sql(`select datallowconn from pg_database where datname = '${closedDb}'`), 'f', 'the closed database came along');
        const location = await c.sql(`select pg_tablespace_location(oid) from pg_tablespace where spcname = 'cold'`);
        assert.ok(location.startsWith(`${pgdata}.tablespaces/`), `tablespace relocated: ${location}`);
      } finally {
        await c.stop('immediate');
      }
    });
  }

  test('restore refuses a target that is not empty (exit 3) and touches nothing', async () => {
    const parent = scratchDir('pgscale-restore-busy-');
    const pgdata = join(parent, 'data');
    mkdirSync(pgdata);
    writeFileSync(join(pgdata, 'keep'), 'x');
    const res = await runCli(['backup', 'restore', join(work, 'b-dumpall'), '--to', pgdata, '--bindir', pg.bindir, '--state-dir', state]);
    assert.equal(res.code, 3, res.stderr);
    assert.match(res.stderr, /target empty: .* is not empty: a restore never writes over anything/);
    assert.deepEqual(readdirSync(pgdata), ['keep']);
    const server = await runCli(['backup', 'restore', join(work, 'b-dumpall'), '--pgdata', pg.pgdata, '--bindir', pg.bindir, '--state-dir', state]);
    assert.equal(server.code, 3, server.stderr);
    assert.match(server.stderr, /target empty: the server holds databases "app", "aux", "closed", "we\\"ird db=ü": a restore never writes over anything/);
    const physicalToServer = await runCli(['backup', 'restore', join(work, 'b-physical'), '--pgdata', pg.pgdata, '--bindir', pg.bindir, '--state-dir', state]);
    assert.equal(physicalToServer.code, 3, physicalToServer.stderr);
    assert.match(physicalToServer.stderr, /a physical backup restores into a new data directory only/);
  });

  test('parallel restore into a running server that holds no data yet (--pgdata, peer authentication): identical checksums; rollback drops what it created', async () => {
    const empty = await createCluster({ version: 17, conf: ['fsync = off'] });
    await empty.sql(`create tablespace cold location '${mkdirOwned(join(work, 'cold-2'))}'`);
    const res = await runCli(['backup', 'restore', join(work, 'b-parallel'), '--pgdata', empty.pgdata, '--bindir', pg.bindir, '--state-dir', state, '--json']);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    const report = parseJson<OperationResult>(res).run!;
    assert.match(String(report.outputs.verify?.detail), /row counts match the manifest/);
    for (const db of databases) assert.deepEqual(await tableChecksums(empty, dbArg(db)), before_[db], `database ${JSON.stringify(db)} restored identically`);
    // dropping restored databases loses what was written to them since: not without a yes
    const unasked = await runCli(['rollback', report.runId, '--state-dir', state]);
    assert.equal(unasked.code, 3, unasked.stdout + unasked.stderr);
    assert.match(unasked.stderr, /are dropped: whatever was written to them since the restore is lost/);
    assert.notEqual(
      await empty.sql(`select string_agg(datname, ',' order by datname) from pg_database`),
      'postgres,template0,template1',
      'nothing was dropped',
    );
    const rolled = await runCli(['rollback', report.runId, '--state-dir', state, '--yes', '--json']);
    assert.equal(rolled.code, 0, rolled.stdout + rolled.stderr);
    assert.equal(await empty.sql(`select string_agg(datname, ',' order by datname) from pg_database`), 'postgres,template0,template1');
  });

  test('undo never removes a verified backup: rollback of a completed backup keeps it; `backup remove` asks, then removes', async () => {
    const dest = join(work, 'kept');
    const made = await backup(dest, ['--exclude-database', closedDb, '--json']);
    assert.equal(made.code, 0, made.stderr);
    const runId = parseJson<OperationResult>(made).run!.runId;
    const rolled = await runCli(['rollback', runId, '--state-dir', state, '--json']);
    assert.equal(rolled.code, 0, rolled.stderr);
    assert.equal(parseJson<RunReport>(rolled).status, 'rolled-back');
    assert.equal((await runCli(['backup', 'verify', dest])).code, 0, 'the verified backup is still there and verifies');

    const noTty = await runCli(['backup', 'remove', dest]);
    assert.equal(noTty.code, 3, noTty.stderr);
    assert.match(noTty.stderr, /removing the dumpall backup .* needs confirmation/);
    assert.match(noTty.stderr, /hint: run it at a terminal, or pass --yes/);
    const dry = await runCli(['backup', 'remove', dest, '--dry-run', '--yes']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would remove the dumpall backup/);
    assert.ok(existsSync(join(dest, 'manifest.json')));
    const notBackup = await runCli(['backup', 'remove', work, '--yes']);
    assert.equal(notBackup.code, 2, notBackup.stderr);
    assert.match(notBackup.stderr, /is not a complete pgscale backup: no manifest\.json\nhint: pass the directory that `pgscale backup --to` created/);
    assert.ok(existsSync(state), 'nothing removed');
    const gone = await runCli(['backup', 'remove', dest, '--yes', '--json']);
    assert.equal(gone.code, 0, gone.stderr);
    assert.equal(parseJson<{ removed: boolean }>(gone).removed, true);
    assert.equal(existsSync(dest), false);
  });

  // one after another: one cluster takes one run at a time (the host-wide lock)
  describe('SIGKILL in the middle of each method, then resume', () => {
    test('parallel: killed while a database waits at a lock; the databases already dumped are kept; resume completes', async () => {
      const dest = join(work, 'kill-parallel');
      const killState = join(work, 'state-kill-parallel');
      // one job: databases go largest first (app, then aux); the lock is taken once the row counts are done
      const run = startCli([
        'backup',
        '--pgdata',
        pg.pgdata,
        '--bindir',
        pg.bindir,
        '--state-dir',
        killState,
        '--to',
        dest,
        '--method',
        'parallel',
        '--jobs',
        '1',
        '--exclude-database',
        closedDb,
      ]);
      await waitFor('the globals dump to start', () => existsSync(join(`${dest}.partial`, 'globals.sql.zst')), 60_000, 5);
      const lock = await holdTableLock(pg, 'aux', 't');
      try {
        await waitFor(
          'app dumped while aux waits at the lock',
          async () => existsSync(join(`${dest}.partial`, 'db-0.done')) && (await lockWaiters(pg)) > 0,
          60_000,
        );
        run.kill('SIGKILL');
        assert.equal((await run.done).signal, 'SIGKILL');
        assert.equal(existsSync(dest), false);
        // databases are numbered in name order: app is db-0, aux db-1
        assert.deepEqual(
          readdirSync(`${dest}.partial`).filter((f) => f.endsWith('.done')),
          ['db-0.done'],
          'app finished; aux did not',
        );
        const appDumpedAt = statSync(join(`${dest}.partial`, 'db-0.done')).mtimeMs;
        await lock.release();
        const resumed = await runCli(['resume', '--state-dir', killState, '--json']);
        assert.equal(resumed.code, 0, resumed.stdout + resumed.stderr);
        assert.equal(parseJson<RunReport>(resumed).status, 'completed');
        assert.equal(statSync(join(dest, 'db-0.done')).mtimeMs, appDumpedAt, 'app was not dumped again');
        assert.equal((await runCli(['backup', 'verify', dest, '--bindir', pg.bindir])).code, 0);
      } finally {
        await lock.release();
      }
    });

    test('physical: killed while pg_basebackup copies (no dump marker yet); resume starts the copy over and completes a backup that verifies', async () => {
      const dest = join(work, 'kill-physical-mid-copy');
      const killState = join(work, 'state-kill-physical-mid-copy');
      const run = startCli(['backup', '--pgdata', pg.pgdata, '--bindir', pg.bindir, '--state-dir', killState, '--to', dest, '--method', 'physical']);
      // pg_basebackup makes its output directory when it starts, and the dump is done when pgscale writes its marker
      await waitFor('pg_basebackup to start', () => existsSync(join(`${dest}.partial`, 'base')), 60_000, 2);
      run.kill('SIGKILL');
      assert.equal((await run.done).signal, 'SIGKILL');
      assert.equal(existsSync(join(`${dest}.partial`, 'dump.done.json')), false, 'killed during the copy, not after it');
      assert.equal(existsSync(dest), false, 'nothing is presented as a backup');
      const resumed = await runCli(['resume', '--state-dir', killState, '--json']);
      assert.equal(resumed.code, 0, resumed.stdout + resumed.stderr);
      assert.equal(parseJson<RunReport>(resumed).status, 'completed');
      assert.equal((await runCli(['backup', 'verify', dest])).code, 0);
    });

    // dumpall is killed at every step boundary in backup-faults.test.ts
    for (const [method, at] of [
      ['physical', 'dump:started'],
      ['physical', 'verify:started'],
    ] as const) {
      test(`${method}: SIGKILL at ${at}, resume completes a backup that verifies`, async () => {
        const dest = join(work, `kill-${method}-${at.replace(':', '-')}`);
        const killState = join(work, `state-kill-${method}-${at.replace(':', '-')}`);
        const args = [
          'backup',
          '--pgdata',
          pg.pgdata,
          '--bindir',
          pg.bindir,
          '--state-dir',
          killState,
          '--to',
          dest,
          '--method',
          method,
          ...(method === 'physical' ? [] : ['--exclude-database', closedDb]),
        ];
        const killed = await startCli(args, { PGSCALE_FAILPOINT: at }).done;
        assert.equal(killed.signal, 'SIGKILL', killed.stderr);
        assert.equal(existsSync(dest), false);
        const resumed = await runCli(['resume', '--state-dir', killState, '--json']);
        assert.equal(resumed.code, 0, resumed.stderr);
        assert.equal(parseJson<RunReport>(resumed).status, 'completed');
        assert.equal((await runCli(['backup', 'verify', dest, '--bindir', pg.bindir])).code, 0);
      });
    }
  });
});
