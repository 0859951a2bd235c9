/**
 * `pgscale backup` end to end against real clusters: dry run, plan files and apply, a 16 → 17
 * restore-verified backup with its manifest, `backup verify` on a damaged copy, two runs on one
 * cluster, and every kind of bad input (each refused with its documented exit code, nothing left
 * behind). Everything runs the built CLI as a subprocess, as a DBA would.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  statfsSync,
  writeFileSync,
  openSync,
  writeSync,
  closeSync,
  fstatSync,
  readSync,
} from 'node:fs';
import { join } from 'node:path';
import { bindir, createCluster, createLoopVolume, scratchDir, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { cliRunnableBy, parseJson, runCli, type CliOptions, type CliResult } from '../helpers/cli.js';
import { clusterSnapshot, filesContaining, holdTableLock, lockWaiters, sizeOf, treeSnapshot, waitFor } from '../helpers/snapshot.js';
import { isRoot } from '../../src/runner.js';
import { userByName } from '../../src/osUser.js';
import type { Plan } from '../../src/pipeline/plan.js';
import type { OperationResult } from '../../src/operationCommand.js';
import type { BackupManifest } from '../../src/backup/archive.js';

after(teardownAll);

const MiB = 1024 * 1024;
/** A literal string inside a RegExp. */
const lit = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const password = 'S3cret-Pa55-backup-test';
const wrongPassword = 'Wr0ng-Pa55-zq7';

/** Both the staging and the final directory are absent: nothing of the backup was left behind. */
function assertNothingLeft(dest: string, res: CliResult): void {
  assert.equal(existsSync(dest), false, `${dest} must not exist\n${res.stderr}`);
  assert.equal(existsSync(`${dest}.partial`), false, `${dest}.partial must not exist\n${res.stderr}`);
}

const nobodyAccount = userByName('nobody') ?? { name: 'nobody', uid: 65534, gid: 65534, home: '/' };

describe('pgscale backup', { skip: !isRoot() && 'the test bed runs servers as postgres and mounts loop volumes: needs root' }, () => {
  /** 16 with TCP on 127.0.0.1 (for password auth), small data: most tests. */
  let pg16: TestCluster;
  /** 17 with ~60 MB of incompressible data: the full-destination tests. */
  let big: TestCluster;
  /** 15, never started. */
  let stopped: TestCluster;
  let work: string;
  let state: string;
  const bigRandomBytes = 60 * MiB;

  const backup = (cluster: TestCluster, args: string[], opts?: CliOptions) =>
    runCli(['backup', '--bindir', cluster.bindir, '--pgdata', cluster.pgdata, '--state-dir', state, ...args], opts);

  before(async () => {
    work = scratchDir('pgscale-backup-test-');
    state = join(work, 'state');
    [pg16, big, stopped] = await Promise.all([
      createCluster({ version: 16, conf: ["listen_addresses = '127.0.0.1'", 'fsync = off'] }),
      createCluster({ version: 17, conf: ['fsync = off'] }),
      createCluster({ version: 15, start: false }),
    ]);
    await pg16.sql(`create database app; create role u login superuser password '${password}';`);
    await pg16.sql(
      `create table t (id int primary key, v text);
       insert into t select g, md5(g::text) from generate_series(1, 1000) g;
       create table items (id int, t_id int references t);
       insert into items select g, g % 1000 + 1 from generate_series(1, 250) g;`,
      'app',
    );
    await big.sql('create database rnd');
    // sha256 of a counter: incompressible bytes, stored uncompressed, ~1 MiB a row
    await big.sql(
      `create table r (id int, b bytea);
       alter table r alter b set storage external;
       insert into r select g / 32768, string_agg(sha256(int4send(g)), ''::bytea) from generate_series(0, ${bigRandomBytes / 32} - 1) g group by g / 32768;`,
      'rnd',
    );
  });

  test('--dry-run changes nothing and shows every step, the checks, downtime, point of no return and rollback', async () => {
    const parent = scratchDir('pgscale-dry-');
    const dest = join(parent, 'backup');
    const freshState = join(parent, 'state-new');
    const existingState = join(parent, 'state-old');
    mkdirSync(existingState, { mode: 0o700 });
    writeFileSync(join(existingState, 'keep'), 'x');
    const clusterBefore = await clusterSnapshot(pg16);
    const treeBefore = treeSnapshot(parent);

    const md = await runCli(['backup', '--bindir', pg16.bindir, '--pgdata', pg16.pgdata, '--to', dest, '--state-dir', freshState, '--dry-run']);
    assert.equal(md.code, 0, md.stderr);
    for (const id of ['dump', 'manifest', 'verify', 'publish'])
      assert.match(md.stdout, new RegExp(`^### \\d\\. .*\\(\`${id}\`\\)`, 'm'), `step ${id} in the markdown`);
    assert.match(md.stdout, /^## Checks$/m);
    assert.match(md.stdout, /^\| check \| result \| detail \|$/m);
    for (const check of [
      'destination absent',
      'no leftover staging directory',
      'not inside the cluster',
      'destination writable',
      'free space',
      'compressor installed',
      'server reachable',
      'pg_dumpall version',
    ]) {
      assert.match(md.stdout, new RegExp(`^\\| ${check} \\| pass \\|`, 'm'), `check "${check}" passed in the table`);
    }
    assert.match(md.stdout, /expected downtime: none/);
    assert.match(md.stdout, /point of no return: none/);
    assert.match(md.stdout, /^## How to roll back$/m);
    assert.match(md.stdout, /pg_dumpall --no-password/);
    assert.ok(md.stdout.includes(`${dest}.partial`), 'the staging directory is named');
    // missing parents are created by the run (as the upgrade's default location under a fresh state dir): not a failed check
    const nested = await runCli([
      'backup',
      '--bindir',
      pg16.bindir,
      '--pgdata',
      pg16.pgdata,
      '--to',
      join(parent, 'a', 'b', 'backup'),
      '--state-dir',
      freshState,
      '--dry-run',
    ]);
    assert.equal(nested.code, 0, nested.stderr);
    assert.match(nested.stdout, new RegExp(`^\\| destination writable \\| pass \\| ${lit(parent)} is writable \\(a/b is created under it\\)`, 'm'));

    const js = await runCli(['backup', '--bindir', pg16.bindir, '--pgdata', pg16.pgdata, '--to', dest, '--state-dir', existingState, '--dry-run', '--json']);
    assert.equal(js.code, 0, js.stderr);
    const out = parseJson<OperationResult>(js);
    assert.equal(out.applied, false);
    assert.equal(out.plan.operation, 'backup');
    assert.deepEqual(
      out.plan.steps.map((s) => s.id),
      ['dump', 'manifest', 'verify', 'publish'],
    );
    for (const s of out.plan.steps) assert.ok(s.actions.length > 0, `step ${s.id} has actions`);
    assert.ok(out.plan.steps[0]!.actions.some((a) => a.kind === 'command' && a.argv[0] === 'pg_dumpall'));
    assert.ok(out.plan.steps[3]!.actions.some((a) => a.kind === 'file' && a.change === 'rename' && a.to === dest));
    assert.equal(out.plan.downtimeSeconds, 0);
    assert.equal(out.plan.pointOfNoReturn, null);

    assert.deepEqual(treeSnapshot(parent), treeBefore, 'destination parent and state dirs are untouched');
    assert.equal(existsSync(freshState), false, 'a dry run does not even create the state directory');
    assert.deepEqual(await clusterSnapshot(pg16), clusterBefore, 'databases, tables and row counts are unchanged');
  });

  test('a plan file: 0600, rendered by `plan show`, executed by `apply`; refused after drift', async () => {
    const planFile = join(work, 'backup-plan.json');
    const dest = join(work, 'planned');
    const made = await backup(pg16, ['--to', dest, '--dry-run', '--plan-out', planFile]);
    assert.equal(made.code, 0, made.stderr);
    assert.equal(statSync(planFile).mode & 0o777, 0o600);
    assert.equal(existsSync(dest), false);
    const plan = JSON.parse(readFileSync(planFile, 'utf8')) as Plan;
    assert.equal(plan.format, 'pgscale-plan/1');
    assert.deepEqual((plan.fingerprint.databases as string[]).sort(), ['app', 'postgres', 'template1']);
    assert.equal(JSON.stringify(plan).includes(password), false);

    const shown = await runCli(['plan', 'show', planFile]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^# pgscale plan: backup$/m);
    for (const s of plan.steps) assert.ok(shown.stdout.includes(s.title), `plan show names "${s.title}"`);
    assert.match(shown.stdout, /^## Fingerprint$/m);

    const applied = await runCli(['apply', planFile, '--state-dir', state, '--json']);
    assert.equal(applied.code, 0, applied.stderr);
    const result = parseJson<OperationResult>(applied);
    assert.equal(result.applied, true);
    assert.equal(result.run?.status, 'completed');
    assert.equal(statSync(dest).mode & 0o777, 0o700);
    assert.ok(existsSync(join(dest, 'manifest.json')));
    assert.equal(existsSync(`${dest}.partial`), false);
    for (const f of readdirSync(dest)) assert.equal(statSync(join(dest, f)).mode & 0o777, 0o600, `${f} is 0600`);
    const verified = await runCli(['backup', 'verify', dest]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /^ok: /);

    // drift: a database appears between review and apply
    const planFile2 = join(work, 'backup-plan-2.json');
    const dest2 = join(work, 'planned-2');
    assert.equal((await backup(pg16, ['--to', dest2, '--dry-run', '--plan-out', planFile2])).code, 0);
    await pg16.sql('create database drift_db');
    try {
      const refused = await runCli(['apply', planFile2, '--state-dir', state]);
      assert.equal(refused.code, 3, refused.stderr);
      assert.match(refused.stderr, /changed since the plan was made/);
      assert.match(refused.stderr, /databases changed since the plan .*drift_db/);
      assertNothingLeft(dest2, refused);
    } finally {
      await pg16.sql('drop database drift_db');
    }
  });

  test('a 16 cluster dumped by pg_dumpall 17 and restore-verified into 17; the manifest; `backup verify` catches a flipped byte', async () => {
    const dest = join(work, 'restored');
    const res = await backup(pg16, ['--to', dest, '--verify', 'restore', '--restore-bindir', bindir(17), '--json']);
    assert.equal(res.code, 0, res.stderr);
    const out = parseJson<OperationResult>(res);
    assert.equal(out.run?.status, 'completed');
    assert.match(String(out.run?.outputs.verify?.detail), /restored, \d+ tables' row counts match/);
    assert.equal(existsSync(`${dest}.restore-check`), false, 'the scratch cluster is gone');

    const m = JSON.parse(readFileSync(join(dest, 'manifest.json'), 'utf8')) as BackupManifest;
    assert.match(m.serverVersion, /^16\.\d+/);
    assert.equal(Math.floor(m.serverVersionNum / 10000), 16);
    assert.match(m.pgDumpallVersion, /^17\.\d+/);
    assert.deepEqual(m.databases.map((d) => d.name).sort(), ['app', 'postgres', 'template1']);
    for (const d of m.databases) assert.ok(d.bytes > 1_000_000 && d.encoding === 'UTF8', `${d.name}: ${d.bytes} bytes, ${d.encoding}`);
    assert.deepEqual(m.compression, { compressor: 'zstd', level: 3 });
    const dump = readFileSync(join(dest, m.dumpFile!));
    assert.equal(m.compressedBytes, dump.length);
    assert.equal(m.compressedSha256, createHash('sha256').update(dump).digest('hex'));
    assert.ok(m.uncompressedBytes > m.compressedBytes, `${m.uncompressedBytes} > ${m.compressedBytes}`);
    assert.match(m.uncompressedSha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(m.rowCounts?.app, { 'public.items': 250, 'public.t': 1000 });
    assert.ok(Date.parse(m.startedAt) <= Date.parse(m.finishedAt));

    // one byte flipped in the middle of the compressed dump (a copy, so the original stays good)
    const damaged = join(work, 'restored-damaged');
    cpSync(dest, damaged, { recursive: true });
    const fd = openSync(join(damaged, m.dumpFile!), 'r+');
    try {
      const at = Math.floor(fstatSync(fd).size / 2);
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, at);
      b[0] = b[0]! ^ 0xff;
      writeSync(fd, b, 0, 1, at);
    } finally {
      closeSync(fd);
    }
    const bad = await runCli(['backup', 'verify', damaged]);
    assert.notEqual(bad.code, 0);
    assert.equal(bad.code, 3, bad.stderr);
    assert.match(bad.stderr, /is damaged: .*compressed sha256 [0-9a-f]+ differs from the manifest's/);
    const badJson = await runCli(['backup', 'verify', damaged, '--json']);
    assert.equal(parseJson<{ error: { kind: string } }>(badJson).error.kind, 'refused');
    assert.equal((await runCli(['backup', 'verify', dest])).code, 0, 'the original still verifies');
  });

  test('two runs on one cluster: the second is refused while the first dumps', async () => {
    const first = join(work, 'first');
    const second = join(work, 'second');
    // pg_dump waits on this lock: the first run stays mid-dump until it is released
    const lock = await holdTableLock(pg16, 'app', 't');
    let running: Promise<CliResult> | undefined;
    try {
      running = backup(pg16, ['--to', first]);
      await waitFor('the first run to wait inside its dump', async () => existsSync(`${first}.partial`) && (await lockWaiters(pg16)) > 0);
      const refused = await backup(pg16, ['--to', second]);
      assert.equal(refused.code, 3, refused.stderr);
      assert.match(refused.stderr, /another pgscale run \(\S+, pid \d+\) is working on this cluster \(system:\d+\)/);
      assertNothingLeft(second, refused);
      assert.ok(existsSync(`${first}.partial`), 'the first run is untouched');
    } finally {
      await lock.release();
    }
    const done = await running;
    assert.equal(done.code, 0, done.stderr);
    assert.equal((await runCli(['backup', 'verify', first])).code, 0);
  });

  describe('bad input: a clear message, the documented exit code, nothing left behind', () => {
    test('the destination already exists (exit 3); its contents are untouched', async () => {
      const dest = join(work, 'exists');
      mkdirSync(dest);
      writeFileSync(join(dest, 'precious'), 'keep me');
      const before = treeSnapshot(dest);
      const res = await backup(pg16, ['--to', dest]);
      assert.equal(res.code, 3, res.stderr);
      assert.match(res.stderr, /destination absent: .*exists; pgscale never overwrites a backup/);
      assert.deepEqual(treeSnapshot(dest), before);
      assert.equal(existsSync(`${dest}.partial`), false);
    });

    test('the destination is inside PGDATA (exit 3)', async () => {
      const dest = join(pg16.pgdata, 'backup');
      const res = await backup(pg16, ['--to', dest]);
      assert.equal(res.code, 3, res.stderr);
      assert.match(res.stderr, /not inside the cluster: .* is inside .*data: a backup there would be copied into itself/);
      assertNothingLeft(dest, res);
    });

    test(
      'the destination is not writable by the user running pgscale (nobody; exit 3)',
      { skip: !cliRunnableBy(nobodyAccount) && 'this checkout is not reachable by the nobody account' },
      async () => {
        const nobody = userByName('nobody');
        assert.ok(nobody, 'the nobody account exists');
        const rootOnly = scratchDir('pgscale-rootonly-');
        chownSync(rootOnly, 0, 0);
        chmodSync(rootOnly, 0o755);
        const nobodyState = scratchDir('pgscale-nobody-state-');
        chownSync(nobodyState, nobody.uid, nobody.gid);
        const dest = join(rootOnly, 'backup');
        // nobody cannot use the postgres account's socket: it connects over TCP with a password
        const res = await runCli(
          ['backup', '--bindir', pg16.bindir, '--dsn', `host=127.0.0.1 port=${pg16.port} user=u`, '--to', dest, '--state-dir', nobodyState],
          {
            asUser: nobody,
            env: { PGPASSWORD: password, HOME: '/' },
          },
        );
        assert.equal(res.code, 3, res.stderr);
        assert.match(res.stderr, new RegExp(`destination writable: cannot create ${lit(dest)}: ${lit(rootOnly)} is not writable`));
        assertNothingLeft(dest, res);
      },
    );

    test('wrong port (exit 4: cannot connect, nothing attempted)', async () => {
      const dest = join(work, 'wrong-port');
      const res = await runCli(['backup', '--bindir', pg16.bindir, '--dsn', `host=${pg16.socketDir} port=1`, '--to', dest, '--state-dir', state]);
      assert.equal(res.code, 4, res.stderr);
      assert.match(res.stderr, new RegExp(`cannot connect to PostgreSQL at ${lit(pg16.socketDir)}:1/`));
      assert.match(res.stderr, /hint: check the port/);
      assertNothingLeft(dest, res);
    });

    test('bad password (exit 4); no password, wrong or right, appears in any output or state file', async () => {
      const pwState = scratchDir('pgscale-pw-state-');
      const dsn = `host=127.0.0.1 port=${pg16.port} user=u`;
      const dest = join(work, 'bad-password');
      const bad = await runCli(['backup', '--bindir', pg16.bindir, '--dsn', dsn, '--to', dest, '--state-dir', pwState, '--verbose'], {
        env: { PGPASSWORD: wrongPassword },
      });
      assert.equal(bad.code, 4, bad.stderr);
      assert.match(bad.stderr, /cannot connect to PostgreSQL at u@127\.0\.0\.1:\d+\/postgres: password authentication failed for user "u"/);
      assertNothingLeft(dest, bad);
      for (const text of [bad.stdout, bad.stderr]) assert.equal(text.includes(wrongPassword), false, 'the password is not echoed');
      assert.deepEqual(filesContaining(pwState, wrongPassword), []);

      // the right password over TCP: a complete backup, and still the password is nowhere
      const good = join(work, 'good-password');
      const ok = await runCli(['backup', '--bindir', pg16.bindir, '--dsn', dsn, '--to', good, '--state-dir', pwState, '--verbose'], {
        env: { PGPASSWORD: password },
      });
      assert.equal(ok.code, 0, ok.stderr);
      assert.ok(existsSync(join(good, 'manifest.json')));
      for (const text of [ok.stdout, ok.stderr]) assert.equal(text.includes(password), false, 'the password is not echoed');
      assert.ok(readdirSync(join(pwState, 'runs')).length >= 1, 'the run was journaled');
      assert.deepEqual(filesContaining(pwState, password), [], 'no state file (plan, journal, audit log) holds the password');
      assert.deepEqual(filesContaining(good, password), []);

      // the password inside a keyword --dsn (a trial met "client password must be a string" in the
      // dump step): every connection of the run has it, with a warning, and it is still nowhere
      const inDsn = join(work, 'dsn-password');
      const viaDsn = await runCli(['backup', '--bindir', pg16.bindir, '--dsn', `${dsn} password=${password}`, '--to', inDsn, '--state-dir', pwState]);
      assert.equal(viaDsn.code, 0, viaDsn.stderr);
      assert.match(viaDsn.stderr, /a password in --dsn is visible to every user of this host \(ps\)/);
      assert.ok(existsSync(join(inDsn, 'manifest.json')));
      for (const text of [viaDsn.stdout, viaDsn.stderr]) assert.equal(text.includes(password), false, 'the password is not echoed');
      assert.deepEqual(filesContaining(pwState, password), []);
      assert.deepEqual(filesContaining(inDsn, password), []);
    });

    test('the server is not running (exit 3)', async () => {
      const dest = join(work, 'not-running');
      const res = await backup(stopped, ['--to', dest]);
      assert.equal(res.code, 3, res.stderr);
      assert.match(res.stderr, new RegExp(`the cluster in ${lit(stopped.pgdata)} is not running`));
      assert.match(res.stderr, /hint: start it first/);
      assertNothingLeft(dest, res);
    });

    test('the destination is too small: refused by the free-space check (exit 3)', async () => {
      const vol = createLoopVolume(8);
      const dest = join(vol.mountPoint, 'backup');
      const dbBytes = Number(await big.sql('select sum(pg_database_size(oid)) from pg_database'));
      assert.ok(dbBytes > 8 * MiB * 4, `the cluster (${dbBytes} bytes) is far bigger than the volume`);
      const res = await backup(big, ['--to', dest]);
      assert.equal(res.code, 3, res.stderr);
      assert.match(res.stderr, /free space: only [\d.]+ [kM]B free at .*; the dump needs about [\d.]+ MB/);
      assertNothingLeft(dest, res);
      assert.deepEqual(readdirSync(vol.mountPoint), ['lost+found']);
      vol.unmount();
    });

    const fullVolumeFailure = {
      dumpall: /the destination filled up during the dump: cannot write .*dumpall\.sql\.zst: ENOSPC: no space left on device/,
      parallel: /the destination filled up during the dump: database "rnd": .*pg_dump failed .*No space left on device/s,
    };
    for (const [method, failure] of Object.entries(fullVolumeFailure))
      test(`${method}: the estimate passes but the destination fills up mid-dump (exit 4, nothing left)`, async () => {
        const vol = createLoopVolume(72);
        const dest = join(vol.mountPoint, 'backup');
        // what pgscale will estimate (half the databases' size, at least 16 MiB): leave just a little more than that free
        const dbBytes = Number(await big.sql('select sum(pg_database_size(oid)) from pg_database'));
        const estimate = Math.max(16 * MiB, Math.round(dbBytes * 0.5));
        const target = estimate + 3 * MiB;
        const fs = statfsSync(vol.mountPoint);
        const free = fs.bavail * fs.bsize;
        assert.ok(free > target, `the volume has ${free} bytes free, need more than ${target}`);
        const filler = join(vol.mountPoint, 'filler');
        writeFileSync(filler, Buffer.alloc(free - target));
        const nowFree = statfsSync(vol.mountPoint).bavail * fs.bsize;
        // the compressed dump is at least the incompressible bytes; root may also use the reserved 5 %
        const reserved = (fs.bfree - fs.bavail) * fs.bsize;
        assert.ok(
          nowFree >= estimate && nowFree + reserved < bigRandomBytes - 4 * MiB,
          `free ${nowFree} (+${reserved} reserved) lies between the estimate ${estimate} and the dump (> ${bigRandomBytes})`,
        );

        const res = await backup(big, ['--to', dest, '--method', method]);
        assert.equal(res.code, 4, res.stderr);
        assert.match(res.stderr, failure);
        assertNothingLeft(dest, res);
        assert.deepEqual(readdirSync(vol.mountPoint).sort(), ['filler', 'lost+found']);
        assert.equal(sizeOf(filler), free - target);
        vol.unmount();
      });

    test('physical: the volume fills up while pg_basebackup copies (exit 4, nothing left)', async () => {
      // the physical estimate (twice the cluster: before 18 the tars are checked unpacked beside them) passes with room to spare
      const vol = createLoopVolume(512);
      const dest = join(vol.mountPoint, 'backup');
      const run = backup(big, ['--to', dest, '--method', 'physical']);
      // once pg_basebackup (as postgres, which cannot use the blocks reserved for root) has made its directory, another writer takes all but 8 MiB
      await waitFor('pg_basebackup to start', () => existsSync(join(`${dest}.partial`, 'base')), 60_000, 2);
      const fs = statfsSync(vol.mountPoint);
      const filler = join(vol.mountPoint, 'filler');
      execFileSync('fallocate', ['-l', String(fs.bavail * fs.bsize - 8 * MiB), filler]);
      const res = await run;
      assert.equal(res.code, 4, res.stderr);
      assert.match(res.stderr, /the destination filled up during the dump: .*pg_basebackup failed .*No space left on device/s);
      assertNothingLeft(dest, res);
      assert.deepEqual(readdirSync(vol.mountPoint).sort(), ['filler', 'lost+found']);
      vol.unmount();
    });
  });
});
