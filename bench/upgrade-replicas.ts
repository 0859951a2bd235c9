/**
 * Benchmark: how long the read replicas are gone through a 16 → 17 upgrade — from the moment the
 * old primary is down until every standby streams from the new primary again — for a primary with
 * two standbys (one on this host, one on a namespace host over ssh, both made by `pgscale replica
 * add`), in one run, side by side:
 *
 *   - rsync:   `pgscale upgrade --mode link --replicas rsync` (standbys brought level by rsync
 *              --hard-links before the new primary starts, then started on new slots)
 *   - rebuild: `pgscale upgrade --mode link --replicas rebuild` (pg_basebackup per standby from the
 *              new primary, two at a time)
 *   - seed:    the procedure users tell of, typed by hand: pg_ctl stop; pg_upgrade in copy mode;
 *              start the new primary; then for each standby in turn pg_basebackup -C -S -R and
 *              pg_ctl start
 *
 * at each pgbench scale of PGSCALE_BENCH_SCALES (default "30,140": about 0.45 and 2.1 GB). The end
 * is seen from outside, alike for all three: psql on the new primary polls every 250 ms until
 * pg_stat_replication shows both standbys streaming and reporting replay (a pg_basebackup's own WAL
 * stream does not count), polling from the moment the old primary is down (
 * so that it never meets pgscale's connection block). The start is the old primary's stop: pgscale's
 * `stop-old` output `stoppedAt`, or the return of the seed's pg_ctl stop. Also shown: how long the
 * primary itself was down (pgscale's report, or the seed's stop → new primary started). Goals:
 * rsync ≤ 0.2× rebuild, and rsync flat with data size.
 *
 * Run as root (namespace host, servers as postgres), after `npx tsc -p .`:
 *
 *     node_modules/.bin/node dist/bench/upgrade-replicas.js
 *
 * Each variant works on its own cp -a copy of the source (made outside the measured window) and
 * removes its servers and directories before the next; an interrupted run is cleaned up by the test
 * bed's teardowns (servers, namespace host and its sshd, directories).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, mkdirOwned, runner, runTeardown, serverUser, stopAtTeardown, TestCluster, type Teardown } from '../test/helpers/testbed.js';
import { createHost, type TestHost } from '../test/helpers/hosts.js';
import { runCli } from '../test/helpers/cli.js';
import { isRoot, shellQuote } from '../src/runner.js';
import type { RunReport } from '../src/pipeline/execute.js';
import type { UpgradeReport } from '../src/upgrade/report.js';
import { replicaPassfile } from '../src/replica/steps.js';
import { asServer, B16, B17, buildSource, copyOf, fmt, jobs, log, must, pgbench, pgscaleUpgradeArgs, runBench, stepSeconds, type Point } from './sources.js';

const scales = (process.env.PGSCALE_BENCH_SCALES ?? '30,140').split(',').map(Number);
const cliTimeoutMs = 3_600_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Method = 'rsync' | 'rebuild' | 'seed';
const methods: Method[] = ['rsync', 'rebuild', 'seed'];

interface Standby {
  dir: string;
  port: number;
  socketDir: string;
  /** listen_addresses for its new version ('' on this host). */
  listen: string;
  host: TestHost | null;
}

interface Setup {
  old: TestCluster;
  dir: string;
  stateDir: string;
  newData: string;
  standbys: Standby[];
  stops: Teardown[];
  hostDir: string;
}

interface Measured {
  /** Old primary down → both standbys streaming from the new one. */
  standbysSeconds: number;
  primarySeconds: number;
  /** pgscale's steps from the old primary's stop on, with their seconds. */
  steps?: string;
}

/** A copy of the source serving as primary, with a local and a namespace standby made by `pgscale replica add`. */
async function setup(p: Point, host: TestHost, variant: string): Promise<Setup> {
  const { old, dir } = await copyOf(p, variant, `127.0.0.1,${host.localAddress}`);
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir, { mode: 0o700 });
  const passfile = join(dir, 'pgpass');
  writeFileSync(passfile, '*:*:replication:replicator:bench secret\n', { mode: 0o600 });
  const hostDir = mkdirOwned(join(host.root, variant));
  const local: Standby = { dir: join(dir, 'local'), port: await freePort(), socketDir: mkdirOwned(join(dir, 'local-sock')), listen: '', host: null };
  const remote: Standby = { dir: join(hostDir, 'data'), port: old.port, socketDir: host.socketDir, listen: host.address, host };
  const newData = join(dir, 'data-17');
  const stops = [newData, ...[local, remote].flatMap((s) => [s.dir, `${s.dir}-17`])].map((d) => stopAtTeardown(d.endsWith('-17') ? B17 : B16, d));
  for (const s of [local, remote]) {
    const where = s.host ? ['--host', s.host.name, '--ssh-config', s.host.sshConfig] : ['--host', 'local'];
    const res = await runCli(
      [
        'replica',
        'add',
        '--pgdata',
        old.pgdata,
        '--bindir',
        B16,
        '--state-dir',
        stateDir,
        ...where,
        '--replica-pgdata',
        s.dir,
        '--replica-port',
        String(s.port),
        '--replica-socket-dir',
        s.socketDir,
        '--yes',
        '--json',
      ],
      { env: { PGPASSFILE: passfile }, timeoutMs: cliTimeoutMs },
    );
    if (res.code !== 0) throw new Error(`replica add ${s.dir}: exit ${res.code}\n${res.stdout.slice(-3000)}\n${res.stderr.slice(-2000)}`);
    if (!existsSync(replicaPassfile(s.dir))) throw new Error(`replica add left no password file ${replicaPassfile(s.dir)}`);
  }
  // neither variant pays for the copy's dirty pages
  await old.sql('checkpoint');
  await must({ program: 'sync', args: [] });
  return { old, dir, stateDir, newData, standbys: [local, remote], stops, hostDir };
}

function cleanup(s: Setup): void {
  for (const t of s.stops) runTeardown(t);
  runTeardown(stopAtTeardown(B16, s.old.pgdata));
  rmSync(s.dir, { recursive: true, force: true });
  rmSync(s.hostDir, { recursive: true, force: true });
}

/** Resolves with the wall-clock time (ms) at which the new primary shows both standbys streaming; polling starts once the old primary is down. */
async function streamingAgain(s: Setup, failed: () => Error | null): Promise<number> {
  const pid = join(s.old.pgdata, 'postmaster.pid');
  // pg_basebackup's WAL stream is a walsender streaming too: it reports no replay position and names itself
  const sql =
    "select current_setting('server_version_num')::int >= 170000 and count(*) = 2 from pg_stat_replication where state = 'streaming' and replay_lsn is not null and application_name <> 'pg_basebackup'";
  const deadline = Date.now() + cliTimeoutMs;
  for (;;) {
    const e = failed();
    if (e) throw e;
    if (Date.now() > deadline) throw new Error('the standbys did not stream again in time');
    if (!existsSync(pid)) {
      const res = await runner.run(asServer(join(B17, 'psql'), ['-X', '-At', '-h', s.old.socketDir, '-p', String(s.old.port), '-d', 'postgres', '-c', sql]));
      if (res.exitCode === 0 && res.stdout.trim() === 't') return Date.now();
    }
    await sleep(250);
  }
}

async function viaPgscale(s: Setup, method: 'rsync' | 'rebuild'): Promise<Measured> {
  let failure: Error | null = null;
  const cli = runCli(pgscaleUpgradeArgs(s.old.pgdata, s.newData, s.stateDir, ['--replicas', method]), { timeoutMs: cliTimeoutMs }).then((res) => {
    if (res.code !== 0) failure = new Error(`pgscale upgrade --replicas ${method}: exit ${res.code}\n${res.stdout.slice(-4000)}\n${res.stderr.slice(-2000)}`);
    return res;
  });
  // the poller stops at a failed run (failure set); a run that ended well is read once it is done
  const back = await streamingAgain(s, () => failure);
  const res = await cli;
  if (res.code !== 0) throw new Error(`pgscale upgrade --replicas ${method}: exit ${res.code}`);
  const out = JSON.parse(res.stdout) as { run: RunReport; report: UpgradeReport };
  const stoppedAt = out.run.outputs['stop-old']?.stoppedAt;
  if (typeof stoppedAt !== 'string') throw new Error('no stop-old stoppedAt in the run');
  const steps = stepSeconds(out.run.runDir);
  const fromStop = steps.slice(steps.findIndex(([id]) => id === 'stop-old'));
  return {
    standbysSeconds: (back - Date.parse(stoppedAt)) / 1000,
    primarySeconds: out.report.downtimeSeconds ?? NaN,
    steps: fromStop.map(([id, n]) => `${id} ${fmt(n, 1)}`).join(', '),
  };
}

/** The seed's procedure: work that is no downtime first (initdb, pg_hba.conf, pg_upgrade --check), then the timed part. */
async function seed(s: Setup): Promise<Measured> {
  const { old, newData } = s;
  const work = mkdirOwned(join(s.dir, 'work'));
  await must(
    asServer(join(B17, 'initdb'), ['-D', newData, '-U', serverUser.name, '--no-locale', '-E', 'UTF8', '--auth-local=peer', '--auth-host=scram-sha-256']),
  );
  // the replication rules `replica add` wrote, copied by hand as a DBA does
  writeFileSync(join(newData, 'pg_hba.conf'), readFileSync(join(old.pgdata, 'pg_hba.conf')));
  const newPort = await freePort();
  const upgradeArgs = (check: boolean) => [
    ...['-b', B16, '-B', B17, '-d', old.pgdata, '-D', newData, '-p', String(old.port), '-P', String(newPort)],
    ...['-s', check ? old.socketDir : mkdirOwned(join(s.dir, 'upgrade-sock')), '-U', serverUser.name, '-j', String(jobs)],
    ...(check ? ['--check'] : ['--copy']),
  ];
  await must(asServer(join(B17, 'pg_upgrade'), upgradeArgs(true), { cwd: work }), 'pg_upgrade --check');

  await must(old.server.stopInvocation('fast', 120));
  const t0 = Date.now();
  let failure: Error | null = null;
  const back = streamingAgain(s, () => failure);
  const timed = (async () => {
    for (const sb of s.standbys) await must(asServer(join(B16, 'pg_ctl'), ['stop', '-w', '-m', 'fast', '-D', sb.dir]));
    await must(asServer(join(B17, 'pg_upgrade'), upgradeArgs(false), { cwd: work }), 'pg_upgrade --copy');
    await new TestCluster(17, B17, newData, old.port, old.socketDir, join(s.dir, 'new.log'), old.options).start();
    const primaryUp = Date.now();
    for (const [i, sb] of s.standbys.entries()) {
      const dir = `${sb.dir}-17`;
      const conninfo = `host=${sb.host ? sb.host.localAddress : '127.0.0.1'} port=${old.port} user=replicator passfile=${replicaPassfile(sb.dir)}`;
      const basebackup = [join(B17, 'pg_basebackup'), '-d', conninfo, '-D', dir, '-C', '-S', `seed_${i}`, '-R', '-X', 'stream', '-c', 'fast'];
      const start = [
        join(B17, 'pg_ctl'),
        'start',
        '-w',
        '-D',
        dir,
        '-l',
        `${dir}.log`,
        '-o',
        `-p ${sb.port} -k ${sb.socketDir} -c listen_addresses=${sb.listen}`,
      ];
      for (const argv of [basebackup, start]) {
        if (!sb.host) await must(asServer(argv[0]!, argv.slice(1)), argv[0]);
        else
          await must(
            { program: 'ssh', args: ['-F', sb.host.sshConfig, sb.host.name, ['runuser', '-u', serverUser.name, '--', ...argv].map(shellQuote).join(' ')] },
            argv[0],
          );
      }
    }
    return primaryUp;
  })().catch((e: Error) => {
    failure = e;
    throw e;
  });
  const [primaryUp, streaming] = await Promise.all([timed, back]);
  return { standbysSeconds: (streaming - t0) / 1000, primarySeconds: (primaryUp - t0) / 1000 };
}

async function main(): Promise<void> {
  if (!isRoot()) throw new Error('run as root: namespace hosts and servers as postgres');
  const host = createHost('ubench', 252);
  const results: { p: Point; m: Record<Method, Measured> }[] = [];
  for (const scale of scales) {
    log(`building the source: pgbench scale ${scale}`);
    const p = await buildSource(`pgbench scale ${scale}`, async (c) => {
      await pgbench(scale)(c);
      await c.sql("create role replicator login replication password 'bench secret'");
    });
    const m = {} as Record<Method, Measured>;
    for (const method of methods) {
      log(`${p.label}: ${method}: primary and two standbys`);
      const s = await setup(p, host, `${method}-${scale}`);
      log(`${p.label}: ${method}: upgrading`);
      try {
        m[method] = method === 'seed' ? await seed(s) : await viaPgscale(s, method);
      } finally {
        cleanup(s);
      }
      log(`${p.label}: ${method}: standbys back after ${fmt(m[method].standbysSeconds, 1)} s`);
    }
    results.push({ p, m });
    rmSync(p.source.pgdata, { recursive: true, force: true });
  }
  const lines = [
    '',
    `PostgreSQL 16 → 17, a primary with two standbys (one local, one on a namespace host over ssh), ${jobs} CPUs, one run`,
    'standbys back = old primary down → both standbys streaming from the new primary; primary down = its own downtime',
    '',
    '| point | data | method | standbys back s | ÷ rebuild | ÷ seed | primary down s |',
    '|---|---:|---|---:|---:|---:|---:|',
    ...results.flatMap(({ p, m }) =>
      methods.map(
        (k) =>
          `| ${p.label} | ${fmt(p.bytes / 1e9)} GB | ${k === 'seed' ? 'seed (copy mode + pg_basebackup each)' : `pgscale --replicas ${k}`} | ${fmt(m[k].standbysSeconds, 1)} | ${fmt(m[k].standbysSeconds / m.rebuild.standbysSeconds)} | ${fmt(m[k].standbysSeconds / m.seed.standbysSeconds)} | ${fmt(m[k].primarySeconds, 1)} |`,
      ),
    ),
    '',
    ...results.map(
      ({ p, m }) =>
        `${p.label}: rsync ÷ rebuild = ${fmt(m.rsync.standbysSeconds / m.rebuild.standbysSeconds)} (goal ≤ 0.20: ${m.rsync.standbysSeconds / m.rebuild.standbysSeconds <= 0.2 ? 'met' : 'NOT met'})`,
    ),
  ];
  for (const { p, m } of results)
    for (const k of ['rsync', 'rebuild'] as const) lines.push(`${p.label}, --replicas ${k}: seconds by step from the stop: ${m[k].steps}`);
  if (results.length > 1) {
    const [a, b] = [results[0]!, results[results.length - 1]!];
    lines.push(
      `data ${fmt(b.p.bytes / a.p.bytes, 1)}× bigger: rsync ${fmt(b.m.rsync.standbysSeconds / a.m.rsync.standbysSeconds)}×, rebuild ${fmt(b.m.rebuild.standbysSeconds / a.m.rebuild.standbysSeconds)}×, seed ${fmt(b.m.seed.standbysSeconds / a.m.seed.standbysSeconds)}×`,
    );
  }
  process.stdout.write(lines.join('\n') + '\n');
}

runBench(main);
