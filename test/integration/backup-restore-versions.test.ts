/**
 * Restores across major versions and restores that fail part-way, with real PostgreSQL 16, 17 and
 * 18: a logical backup of 17 is refused by 16 (a new data directory and a running server), a
 * physical one by 16 and 18, before anything changes; a restore in which any statement fails (a
 * 16 backup holding adminpack, which 17 no longer ships) fails and is undone instead of exiting 0;
 * `backup verify` and `backup restore --to` without --bindir find the programs of the test bed
 * (outside the standard locations) through the manifest; the manifest names the programs that ran
 * (16's bindir links its clients to 17's).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bindir, createCluster, runner, scratchDir, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli } from '../helpers/cli.js';
import { isRoot } from '../../src/runner.js';
import { findInstallations } from '../../src/cluster/installations.js';
import type { BackupManifest } from '../../src/backup/archive.js';
import type { OperationResult } from '../../src/operationCommand.js';

after(teardownAll);

const lit = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('backup restore across versions, and failed statements', { skip: !isRoot() && 'the test bed runs servers as postgres: needs root' }, () => {
  let pg16: TestCluster;
  let pg17: TestCluster;
  let work: string;
  let state: string;

  const backup = (pg: TestCluster, dest: string, method: string) =>
    runCli([
      'backup',
      '--pgdata',
      pg.pgdata,
      '--bindir',
      pg.bindir,
      '--state-dir',
      state,
      '--to',
      dest,
      '--method',
      method,
      ...(method === 'parallel' ? ['--jobs', '2'] : []),
    ]);
  const restoreTo = (dir: string, pgdata: string, bin: string) =>
    runCli(['backup', 'restore', dir, '--to', pgdata, '--bindir', bin, '--state-dir', state, '--jobs', '2']);

  before(async () => {
    work = scratchDir('pgscale-restore-versions-');
    state = join(work, 'state');
    [pg16, pg17] = await Promise.all([createCluster({ version: 16, conf: ['fsync = off'] }), createCluster({ version: 17, conf: ['fsync = off'] })]);
    for (const pg of [pg16, pg17]) {
      await pg.sql('create database app');
      await pg.sql('create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 2000) g;', 'app');
    }
    // what pgscale's upgrade once wrote for a configuration kept outside PGDATA: a copy must not start on the source's files
    appendFileSync(pg17.configPath, `data_directory = '${pg17.pgdata}'\nhba_file = '${join(pg17.pgdata, 'pg_hba.conf')}'\n`);
    // adminpack is gone from 17: a 16 backup holding it cannot be restored into 17 without a failed statement
    await pg16.sql('create extension adminpack', 'app');
    // one run at a time per cluster (its lock); the two clusters side by side
    await Promise.all(
      [
        [pg17, ['parallel', 'physical']],
        [pg16, ['parallel', 'dumpall']],
      ].map(async ([pg, methods]) => {
        for (const method of methods as string[]) {
          const res = await backup(pg as TestCluster, join(work, `b${(pg as TestCluster).version}-${method}`), method);
          assert.equal(res.code, 0, res.stdout + res.stderr);
        }
      }),
    );
  });

  test('a logical backup of 17 into 16 is refused in the plan (exit 3): both versions named, a hint, nothing created', async () => {
    const pgdata = join(scratchDir('pgscale-restore-older-'), 'data');
    const res = await restoreTo(join(work, 'b17-parallel'), pgdata, bindir(16));
    assert.equal(res.code, 3, res.stdout + res.stderr);
    assert.match(
      res.stderr,
      new RegExp(
        `server version: a parallel backup of PostgreSQL 17\\.\\d+ cannot be restored into PostgreSQL 16\\.\\d+ \\(postgres -V of ${lit(bindir(16))}\\): a logical dump restores into the same or a newer major version only`,
      ),
    );
    assert.match(res.stderr, /restore into PostgreSQL 17 or newer/);
    assert.equal(existsSync(pgdata), false);

    // a running 16 server: its server_version says what it is, whatever the client bindir
    const server = await runCli(['backup', 'restore', join(work, 'b17-parallel'), '--pgdata', pg16.pgdata, '--bindir', bindir(17), '--state-dir', state]);
    assert.equal(server.code, 3, server.stdout + server.stderr);
    assert.match(server.stderr, /server version: a parallel backup of PostgreSQL 17\.\d+ cannot be restored into PostgreSQL 16\.\d+ \(server_version of /);
    assert.equal(await pg16.sql(`select count(*) from pg_database`), '4', 'nothing created in the server');
  });

  test('a physical backup of 17 is refused by 16 and by 18 (exit 3), before anything is unpacked', async () => {
    for (const version of [16, 18]) {
      const pgdata = join(scratchDir(`pgscale-restore-physical-${version}-`), 'data');
      const res = await restoreTo(join(work, 'b17-physical'), pgdata, bindir(version));
      assert.equal(res.code, 3, res.stdout + res.stderr);
      assert.match(
        res.stderr,
        new RegExp(
          `a physical backup of PostgreSQL 17\\.\\d+ cannot be restored into PostgreSQL ${version}\\.\\d+ \\(postgres -V of ${lit(bindir(version))}\\): a physical copy restores into the same major version only`,
        ),
      );
      assert.match(res.stderr, /restore into PostgreSQL 17 \(--bindir of a 17 installation\)/);
      assert.equal(existsSync(pgdata), false);
    }
  });

  for (const method of ['parallel', 'dumpall'] as const)
    test(`${method}: a statement that fails in a restore --to fails it (exit 4, count and the error named) and the new data directory is removed`, async () => {
      const pgdata = join(scratchDir(`pgscale-restore-failing-${method}-`), 'data');
      const res = await restoreTo(join(work, `b16-${method}`), pgdata, bindir(17));
      assert.equal(res.code, 4, res.stdout + res.stderr);
      assert.match(res.stderr, /the restore reported [1-9]\d* failed statements?/);
      assert.match(res.stderr, /adminpack/);
      assert.match(res.stderr, /failed before any downtime: what the run had done is undone/);
      assert.equal(existsSync(pgdata), false, 'the half-restored data directory is gone');
      assert.equal(existsSync(`${pgdata}.tablespaces`), false);
    });

  test('a statement that fails in a restore into a running server fails it (exit 4); the databases it created are dropped', async () => {
    const empty = await createCluster({ version: 17, conf: ['fsync = off'] });
    const res = await runCli(['backup', 'restore', join(work, 'b16-parallel'), '--pgdata', empty.pgdata, '--bindir', bindir(17), '--state-dir', state]);
    assert.equal(res.code, 4, res.stdout + res.stderr);
    assert.match(res.stderr, /the restore reported [1-9]\d* failed statements?.*\n.*adminpack/);
    assert.equal(await empty.sql(`select string_agg(datname, ',' order by datname) from pg_database`), 'postgres,template0,template1');
  });

  test("the manifest records the programs that ran: 16's bindir links pg_dumpall and pg_dump to 17's, and 17 is what it names", async () => {
    const m = JSON.parse(readFileSync(join(work, 'b16-parallel', 'manifest.json'), 'utf8')) as BackupManifest;
    assert.deepEqual(
      m.programs?.map((r) => [r.program, r.path, r.resolvedPath]),
      ['pg_dumpall', 'pg_dump'].map((p) => [p, join(bindir(16), p), realpathSync(join(bindir(16), p))]),
    );
    for (const r of m.programs) {
      const printed = (await runner.run({ program: r.path, args: ['--version'] })).stdout;
      assert.ok(printed.includes(`(PostgreSQL) ${r.version}`), `${r.program}: ${printed} holds ${r.version}`);
    }
    assert.equal(m.pgDumpallVersion, m.programs[0]!.version);
  });

  test('restore --to without --bindir runs the server the manifest records, and makes no tablespace directory for a backup without tablespaces', async () => {
    const pgdata = join(scratchDir('pgscale-restore-manifest-bindir-'), 'data');
    const res = await runCli(['backup', 'restore', join(work, 'b17-physical'), '--to', pgdata, '--state-dir', state, '--json']);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    const report = parseJson<OperationResult>(res).run!;
    assert.equal(report.status, 'completed');
    assert.match(res.stdout, new RegExp(`"bindir":\\s*"${lit(bindir(17))}"`), 'the bindir the manifest records');
    assert.ok(existsSync(join(pgdata, 'PG_VERSION')));
    assert.equal(existsSync(`${pgdata}.tablespaces`), false, 'no tablespace, no tablespace directory');
    // the source's data_directory and hba_file are commented out in the copy: its private server started on its own files
    const conf = readFileSync(join(pgdata, 'postgresql.conf'), 'utf8');
    assert.match(conf, /^# data_directory = .*# pgscale: commented out/m);
    assert.match(conf, /^# hba_file = .*# pgscale: commented out/m);
  });

  test('backup verify without --bindir finds the client programs the manifest records (the test bed is outside the standard locations) and says which', async () => {
    // (pg_verifybackup of a physical backup is found the same way: backup-methods verifies one without --bindir)
    const dir = join(work, 'b17-parallel');
    const manifestPath = join(dir, 'manifest.json');
    const recorded = JSON.parse(readFileSync(manifestPath, 'utf8')) as BackupManifest;
    assert.equal(recorded.clientBindir, bindir(17), 'the manifest records the client bindir');
    const res = await runCli(['backup', 'verify', dir]);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, new RegExp(`^ok: .*; read with ${lit(join(bindir(17), 'pg_restore'))} 17\\.\\d+ \\(from the manifest\\)$`, 'm'));

    // the recorded bindir gone, and no 17 or later installed in a standard place: bad input with the fix
    const standard = await findInstallations(runner);
    if (standard.some((i) => i.major >= 17)) return;
    writeFileSync(manifestPath, JSON.stringify({ ...recorded, clientBindir: join(work, 'gone') }));
    try {
      const missing = await runCli(['backup', 'verify', dir]);
      assert.equal(missing.code, 2, missing.stdout + missing.stderr);
      assert.match(
        missing.stderr,
        new RegExp(`no pg_restore of PostgreSQL 17 or later found to check the parallel backup with \\(tried ${lit(join(work, 'gone'))}/pg_restore`),
      );
      assert.match(missing.stderr, /hint: pass --bindir DIR \(the bindir of PostgreSQL 17 or later\)/);
      const given = await runCli(['backup', 'verify', dir, '--bindir', bindir(18), '--json']);
      assert.equal(given.code, 0, given.stdout + given.stderr);
      assert.equal(parseJson<{ checkedWith: { from: string } }>(given).checkedWith.from, '--bindir');
    } finally {
      writeFileSync(manifestPath, JSON.stringify(recorded, null, 2) + '\n');
    }
  });
});
