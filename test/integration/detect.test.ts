import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { formatBytes } from '../../src/format.js';
import { createCluster, createLoopVolume, mkdirOwned, scratchDir, serverUser, teardownAll, type LoopVolume, type TestCluster } from '../helpers/testbed.js';
import { cliRunnableBy, parseJson, runCli } from '../helpers/cli.js';
import type { DetectReport, DetectedCluster } from '../../src/detect.js';
import { isRoot } from '../../src/runner.js';

after(teardownAll);

const detectOne = async (c: { pgdata: string; bindir: string }): Promise<DetectedCluster> => {
  const res = await runCli(['detect', '--json', '--pgdata', c.pgdata, '--bindir', c.bindir]);
  assert.equal(res.code, 0, res.stderr);
  const report = parseJson<DetectReport>(res);
  assert.equal(report.clusters.length, 1);
  return report.clusters[0]!;
};

describe('pgscale detect on real 16 and 17 clusters', { skip: !isRoot() && 'loop volumes need root' }, () => {
  let running16: TestCluster;
  let stopped17: TestCluster;
  let split17: TestCluster;
  let etc16: TestCluster;
  let walVolume: LoopVolume;
  let tablespaceVolume: LoopVolume;

  before(async () => {
    walVolume = createLoopVolume(64);
    tablespaceVolume = createLoopVolume(32);
    [running16, stopped17, etc16] = await Promise.all([
      createCluster({ version: 16, checksums: true }),
      createCluster({ version: 17, checksums: false, start: false }),
      createCluster({ version: 16, checksums: false, configOutside: true }),
    ]);
    const waldir = mkdirOwned(join(walVolume.mountPoint, 'pg_wal'));
    split17 = await createCluster({ version: 17, checksums: true, waldir });
    const tsdir = mkdirOwned(join(tablespaceVolume.mountPoint, 'ts'));
    await split17.sql(`create tablespace cold location '${tsdir}'; create table archived (id int) tablespace cold;`);
  });

  test('a running 16 cluster: version, state, port, checksums, encoding, WAL in the data dir', async () => {
    const c = await detectOne(running16);
    assert.equal(c.major, 16);
    assert.match(c.serverVersion ?? '', /^16\.\d+/);
    assert.equal(c.state, 'running');
    assert.equal(c.port, running16.port);
    assert.equal(c.checksums, true);
    assert.equal(c.role, 'primary');
    assert.equal(c.encoding, 'UTF8');
    assert.equal(c.sizeSource, 'pg_database_size');
    assert.ok(c.sizeBytes > 1_000_000);
    assert.equal(c.wal.symlink, false);
    assert.equal(c.wal.path, join(running16.pgdata, 'pg_wal'));
    assert.equal(c.storage.length, 1);
    assert.equal(c.storage[0]!.role, 'data');
    assert.notEqual(c.storage[0]!.storage?.storageClass, undefined);
  });

  test('a stopped 17 cluster: stopped, port from postgresql.conf, checksums from pg_controldata', async () => {
    const c = await detectOne(stopped17);
    assert.equal(c.major, 17);
    assert.equal(c.state, 'stopped');
    assert.equal(c.pid, undefined);
    assert.equal(c.port, stopped17.port);
    assert.equal(c.checksums, false);
    assert.equal(c.controlState, 'shut down');
    assert.match(c.systemIdentifier ?? '', /^\d+$/);
    assert.ok(c.notes.some((n) => /not running/.test(n)));
  });

  test('WAL on a loop-mounted volume and a tablespace on another: locations and their devices', async () => {
    const c = await detectOne(split17);
    assert.equal(c.wal.symlink, true);
    assert.equal(c.wal.path, join(walVolume.mountPoint, 'pg_wal'));
    assert.equal(c.tablespaces.length, 1);
    assert.equal(c.tablespaces[0]!.name, 'cold');
    assert.equal(c.tablespaces[0]!.location, join(tablespaceVolume.mountPoint, 'ts'));
    const byRole = new Map(c.storage.map((s) => [s.role, s]));
    const wal = byRole.get('wal')!.storage!;
    const ts = byRole.get('tablespace')!.storage!;
    const data = byRole.get('data')!.storage!;
    assert.equal(wal.mount.mountPoint, walVolume.mountPoint);
    assert.equal(wal.mount.fsType, 'ext4');
    assert.equal(ts.mount.mountPoint, tablespaceVolume.mountPoint);
    assert.ok(wal.stack[0]!.startsWith('loop'), `WAL stack ${wal.stack.join(' → ')} starts at a loop device`);
    assert.ok(ts.stack[0]!.startsWith('loop'));
    assert.notEqual(wal.mount.device, ts.mount.device);
    assert.notEqual(wal.mount.device, data.mount.device);
  });

  test('a running cluster started with -c config_file=… outside its data directory: that file is read', async () => {
    const c = await detectOne(etc16);
    assert.equal(c.configFile, etc16.configFile);
    assert.notEqual(c.configFile, join(etc16.pgdata, 'postgresql.conf'));
    assert.deepEqual(
      c.notes.filter((n) => /configuration not read/.test(n)),
      [],
    );
    // stopped, the command line it last ran with (postmaster.opts) still names it
    await etc16.stop();
    try {
      const stopped = await detectOne(etc16);
      assert.equal(stopped.state, 'stopped');
      assert.equal(stopped.configFile, etc16.configFile);
      assert.equal(stopped.port, etc16.port, 'the port comes from the outside postgresql.conf');
    } finally {
      await etc16.start();
    }
  });

  test('started from its parent directory with a relative -c config_file=etc/postgresql.conf: the file the server reads', async () => {
    const c = await createCluster({ version: 17, checksums: false, configOutside: true, start: false });
    const parent = dirname(c.pgdata);
    // as an init script may: pg_ctl run from the parent, the server resolves the name against the directory it started in
    const started = spawnSync(
      'runuser',
      [
        '-u',
        serverUser.name,
        '--',
        join(c.bindir, 'pg_ctl'),
        '-D',
        c.pgdata,
        '-w',
        '-l',
        join(parent, 'server.log'),
        '-o',
        `-c config_file=etc/postgresql.conf`,
        'start',
      ],
      { cwd: parent, encoding: 'utf8' },
    );
    assert.equal(started.status, 0, started.stderr);
    try {
      const found = await detectOne(c);
      assert.equal(found.state, 'running');
      assert.equal(found.configFile, c.configFile, 'the absolute path the server answers, not a name relative to where pgscale runs');
      assert.deepEqual(
        found.notes.filter((n) => /configuration not read/.test(n)),
        [],
      );
    } finally {
      await c.stop();
    }
  });

  test('size, used and free of every volume that matters, as df -B1 counts them; the text says them in the one unit style', async () => {
    const c = await detectOne(split17);
    const df = (path: string) => {
      const [, line] = execFileSync('df', ['-B1', '--output=size,used,avail,target,fstype', path], { encoding: 'utf8' }).trim().split('\n');
      const [size, used, avail, target, fstype] = line!.trim().split(/\s+/);
      return { sizeBytes: Number(size), usedBytes: Number(used), freeBytes: Number(avail), target, fstype };
    };
    assert.deepEqual(
      c.storage.map((s) => s.role),
      ['data', 'wal', 'tablespace'],
    );
    for (const s of c.storage) {
      const want = df(s.path);
      assert.ok(s.space, `${s.role}: space measured`);
      assert.equal(s.storage!.mount.mountPoint, want.target, `${s.role}: mount point`);
      assert.equal(s.storage!.mount.fsType, want.fstype, `${s.role}: filesystem type`);
      assert.equal(s.space.sizeBytes, want.sizeBytes, `${s.role}: size`);
      // the data directory's filesystem is shared with everything else on this host: it moves meanwhile
      const slack = s.role === 'data' ? 64 * 1024 * 1024 : 0;
      assert.ok(Math.abs(s.space.usedBytes - want.usedBytes) <= slack, `${s.role}: used ${s.space.usedBytes} vs df ${want.usedBytes}`);
      assert.ok(Math.abs(s.space.freeBytes - want.freeBytes) <= slack, `${s.role}: free ${s.space.freeBytes} vs df ${want.freeBytes}`);
    }
    const wal = c.storage.find((s) => s.role === 'wal')!.space!;
    assert.ok(wal.sizeBytes > 50 * 1024 * 1024 && wal.sizeBytes <= 64 * 1024 * 1024, `a 64 MiB volume: ${wal.sizeBytes}`);
    assert.ok(wal.usedBytes + wal.freeBytes <= wal.sizeBytes);

    const text = await runCli(['detect', '--pgdata', split17.pgdata, '--bindir', split17.bindir]);
    assert.equal(text.code, 0, text.stderr);
    const walLine = new RegExp(
      `^ {4}storage wal {8}${walVolume.mountPoint} \\(ext4\\): ${formatBytes(wal.sizeBytes).replace('.', '\\.')}, [\\d.]+ [kMG]?B used, [\\d.]+ [kMG]?B free; `,
      'm',
    );
    assert.match(text.stdout, walLine);
    assert.match(text.stdout, /^ {2}memory {2}\d+(\.\d)? [kMGT]B/m, 'memory in the same style as tune prints it');
  });

  test('without --pgdata, running postmasters are found', async () => {
    const res = await runCli(['detect', '--json'], { env: { PGDATA: '' } });
    assert.equal(res.code, 0, res.stderr);
    const report = parseJson<DetectReport>(res);
    const dirs = report.clusters.map((c) => c.dataDir);
    assert.ok(dirs.includes(running16.pgdata), `found ${dirs.join(', ')}`);
    assert.ok(report.clusters.find((c) => c.dataDir === split17.pgdata)?.foundBy.includes('postmaster'));
  });

  test('a postmaster.pid left by a dead server is reported stale, not running', async () => {
    const copy = join(scratchDir(), 'data');
    cpSync(stopped17.pgdata, copy, { recursive: true });
    // a pid that cannot be a live postmaster: beyond pid_max on Linux
    writeFileSync(join(copy, 'postmaster.pid'), `4194304\n${copy}\n1700000000\n${stopped17.port}\n/tmp\n\n  0  0\nready\n`);
    const before = snapshot(copy);
    const c = await detectOne({ pgdata: copy, bindir: stopped17.bindir });
    assert.equal(c.state, 'stale');
    assert.ok(c.notes.some((n) => /stale/.test(n)));
    assert.deepEqual(snapshot(copy), before, 'detect changed nothing');
  });
});

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else out[p] = `${st.size}:${st.mtimeMs}:${st.mode}`;
    }
  };
  walk(dir);
  return out;
}

const nobody = { name: 'nobody', uid: 65534, gid: 65534, home: '/' };

describe('pgscale detect: bad input is refused with a clear message and exit code 2', () => {
  test('nonexistent --pgdata', async () => {
    const res = await runCli(['detect', '--pgdata', '/nonexistent/pgdata']);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /data directory \/nonexistent\/pgdata does not exist/);
  });

  test('a directory that is not a cluster', async () => {
    const dir = scratchDir();
    mkdirSync(join(dir, 'x'));
    const res = await runCli(['detect', '--pgdata', join(dir, 'x')]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /is not a PostgreSQL data directory \(no PG_VERSION file\)/);
  });

  test(
    'an unreadable data directory',
    { skip: (!isRoot() && 'needs root to run as another user') || (!cliRunnableBy(nobody) && 'this checkout is not reachable by the nobody account') },
    async () => {
      const dir = scratchDir();
      const pgdata = join(dir, 'locked');
      mkdirSync(pgdata, { mode: 0o700 });
      writeFileSync(join(pgdata, 'PG_VERSION'), '16\n');
      const res = await runCli(['detect', '--pgdata', pgdata, '--json'], { asUser: nobody, env: { HOME: '/tmp' } });
      assert.equal(res.code, 2, res.stdout + res.stderr);
      const err = parseJson<{ error: { message: string; exitCode: number; kind: string } }>(res);
      assert.match(err.error.message, /not readable/);
      assert.equal(err.error.kind, 'bad-input');
    },
  );

  test('--bindir without postgres', async () => {
    const dir = scratchDir();
    const res = await runCli(['detect', '--bindir', dir]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /has no executable "postgres" program/);
  });

  test('--pgdata of a regular file', async () => {
    const dir = scratchDir();
    writeFileSync(join(dir, 'f'), '');
    const res = await runCli(['detect', '--pgdata', join(dir, 'f')]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /is not a directory/);
  });
});
