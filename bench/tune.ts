/**
 * bench/tune — pgbench TPS with four configurations of the same cluster on this machine:
 * PostgreSQL's defaults, pgtune's formulas, timescaledb-tune's formulas and pgscale's
 * recommendations, all computed for the same hardware (detected here), in one run.
 *
 *   npx tsc -p . && node dist/bench/tune.js          (as root: servers run as `postgres`)
 *
 * Environment: PGSCALE_BENCH_VERSION (default 17), PGSCALE_BENCH_SCALE (default 50, ~750 MB: larger
 * than the default 128MB shared_buffers, well within RAM), PGSCALE_BENCH_SECONDS (default 20),
 * PGSCALE_BENCH_REPEATS (default 5), PGSCALE_BENCH_CLIENTS (default 4), PGSCALE_BENCH_JOBS (default 2),
 * PGSCALE_BENCH_PROFILE (default oltp).
 *
 * pgscale is given what `pgscale tune` measures on a cluster: pg_test_fsync on the WAL volume and the
 * random-read probe on the data volume (src/tune/measure.ts), and the WAL rate of a 10 s TPC-B run
 * (insert-position delta). The anchors are timescaledb-tune 0.19 and pgtune as in src/tune/anchors.ts.
 * The fsync figure is printed: where one flush takes milliseconds, TPC-B is bound by the disk's flush
 * rate whatever the configuration.
 *
 * Method: one cluster (fsync on, as in production). Each configuration is written to an include file
 * read last, the server restarted (a shutdown checkpoint, then empty shared buffers) and pg_settings
 * checked; then the pgbench tables are created afresh (`pgbench -i -s SCALE`, not measured) so that
 * every measurement starts from the same data — TPC-B runs bloat and age the tables, which otherwise
 * favours whichever configuration runs first — followed by a CHECKPOINT, a 5 s select-only warm-up
 * (not measured), a TPC-B-like run and a select-only run (pgbench -c CLIENTS -j JOBS -T SECONDS). The
 * repeats rotate the order of the configurations. The table reports the median of the repeats (and
 * every run) and the ratio to the defaults, then whether the goal holds: pgscale ≥ the best anchor on
 * both, and ≥ 1.2× the defaults. Other load on the machine shows up as spread between repeats.
 */
import { loadavg } from 'node:os';
import { statfsSync, writeFileSync, chownSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { loadCatalog, findSetting } from '../src/gucCatalog/catalog.js';
import { formatBytes } from '../src/format.js';
import { formatValue, isCloseEnough, parseSetting, type GucValue } from '../src/gucCatalog/values.js';
import { detectCompute } from '../src/host/compute.js';
import { HostRoot } from '../src/host/hostRoot.js';
import { detectStorage } from '../src/host/storage.js';
import { anchorsFor } from '../src/tune/anchors.js';
import { confValue } from '../src/tune/edits.js';
import { recommend } from '../src/tune/recommend.js';
import { fsyncOnWalVolume, randomReadsOnDataVolume, walRateFrom } from '../src/tune/measure.js';
import { statements } from '../src/sql.js';
import { workloadFromFlag } from '../src/tune/flags.js';
import type { SystemProfile } from '../src/tune/types.js';
import { bindir, createCluster, runner, serverUser, teardownAll, type TestCluster } from '../test/helpers/testbed.js';
import { isRoot, type Invocation } from '../src/runner.js';

const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const VERSION = env('PGSCALE_BENCH_VERSION', 17);
const SCALE = env('PGSCALE_BENCH_SCALE', 50);
const SECONDS = env('PGSCALE_BENCH_SECONDS', 20);
const REPEATS = env('PGSCALE_BENCH_REPEATS', 5);
const CLIENTS = env('PGSCALE_BENCH_CLIENTS', 4);
const JOBS = env('PGSCALE_BENCH_JOBS', 2);
const WORKLOAD = workloadFromFlag(process.env.PGSCALE_BENCH_PROFILE ?? 'oltp');
const MAX_CONNECTIONS = 100;

const log = (text: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${text}\n`);

async function must(inv: Invocation, what: string): Promise<string> {
  const res = await runner.run({ cwd: '/', ...inv });
  if (res.exitCode !== 0) throw new Error(`${what}: ${res.stderr.trim().slice(-2000)}`);
  return res.stdout;
}

type Settings = Readonly<Record<string, GucValue>>;

interface Config {
  name: string;
  settings: Settings;
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function profileHere(dataDir: string, buildFeatures: SystemProfile['buildFeatures']): Promise<SystemProfile> {
  const root = new HostRoot('/');
  const compute = await detectCompute(root);
  const storage = await detectStorage(root, dataDir);
  const fs = statfsSync(realpathSync(join(dataDir, 'pg_wal')));
  return {
    memoryBytes: compute.effective.memoryBytes,
    memoryIsCgroupLimit: compute.limits.memory !== null,
    vcpus: compute.effective.cpus,
    storage: storage.storageClass,
    walVolumeBytes: fs.blocks * fs.bsize,
    pgMajor: VERSION,
    maxConnections: MAX_CONNECTIONS,
    workload: WORKLOAD,
    buildFeatures,
    extensionBackgroundWorkers: 0,
  };
}

async function buildFeaturesOf(bin: string): Promise<SystemProfile['buildFeatures']> {
  const res = await runner.run({ program: join(bin, 'pg_config'), args: ['--configure'] });
  if (res.exitCode !== 0) return [];
  return (['lz4', 'zstd', 'liburing'] as const).filter((f) => res.stdout.includes(`--with-${f}`));
}

/** Writes the configuration into the include file, restarts, and checks pg_settings took every value. */
async function applyConfig(c: TestCluster, config: Config): Promise<void> {
  const file = join(c.pgdata, 'bench.conf');
  const lines = Object.entries(config.settings).map(([name, v]) => `${name} = ${confValue(formatValue(v))}`);
  writeFileSync(file, `# bench/tune: ${config.name}\n${lines.join('\n')}\n`);
  chownSync(file, serverUser.uid, serverUser.gid);
  await c.server.restart({ timeoutSeconds: 300 }, { timeoutSeconds: 300 });
  const catalog = loadCatalog(VERSION);
  const rows = new Map((await c.sql(`select name || '|' || setting from pg_settings`)).split('\n').map((l) => l.split('|') as [string, string]));
  for (const [name, v] of Object.entries(config.settings)) {
    const def = findSetting(catalog, name);
    const now = rows.get(name);
    if (!def || now === undefined) throw new Error(`${config.name}: ${name} is not a setting of PostgreSQL ${VERSION}`);
    if (!isCloseEnough(parseSetting(def, now), v)) throw new Error(`${config.name}: ${name} is ${now}, not ${formatValue(v)}`);
  }
}

async function pgbench(c: TestCluster, args: string[]): Promise<number> {
  const out = await must(
    { program: join(c.bindir, 'pgbench'), args: ['-h', c.socketDir, '-p', String(c.port), '-U', serverUser.name, ...args, 'postgres'], runAs: serverUser },
    `pgbench ${args.join(' ')}`,
  );
  const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(out) ?? /tps = ([\d.]+)/.exec(out);
  if (!m) throw new Error(`no tps in pgbench output:\n${out}`);
  return Number(m[1]);
}

const KEY_SETTINGS = [
  'shared_buffers',
  'effective_cache_size',
  'work_mem',
  'maintenance_work_mem',
  'wal_buffers',
  'max_wal_size',
  'min_wal_size',
  'checkpoint_timeout',
  'checkpoint_completion_target',
  'wal_compression',
  'wal_sync_method',
  'commit_delay',
  'commit_siblings',
  'random_page_cost',
  'effective_io_concurrency',
  'max_worker_processes',
  'max_parallel_workers_per_gather',
  'jit',
  'huge_pages',
  'autovacuum_vacuum_cost_limit',
];

async function main(): Promise<void> {
  if (!isRoot()) throw new Error('run as root: the bench cluster runs as the postgres account');
  const bin = bindir(VERSION);
  log(`PostgreSQL ${VERSION} from ${bin}; creating the cluster`);
  const c = await createCluster({ version: VERSION, start: false, conf: ["include_if_exists = 'bench.conf'"] });
  await c.start();
  const detected = await profileHere(c.pgdata, await buildFeaturesOf(bin));
  log('measuring the volumes as `pgscale tune` does: pg_test_fsync -s 1 on pg_wal, the random-read probe on the data directory');
  const fsync = await fsyncOnWalVolume(runner, c.bindir, realpathSync(join(c.pgdata, 'pg_wal')), serverUser);
  const reads = await randomReadsOnDataVolume(runner, c.pgdata, serverUser);
  if (typeof fsync === 'string') log(fsync);
  if (typeof reads === 'string') log(reads);
  const initTables = () =>
    must(
      {
        program: join(c.bindir, 'pgbench'),
        args: ['-i', '-s', String(SCALE), '-q', '-h', c.socketDir, '-p', String(c.port), '-U', serverUser.name, 'postgres'],
        runAs: serverUser,
      },
      'pgbench -i',
    );
  log(`pgbench -i -s ${SCALE} (about ${Math.round(SCALE * 15)} MB, done again before every measurement) and a 10 s TPC-B run to measure the WAL rate`);
  await initTables();
  const position = async () => {
    const [bytes, at] = (await c.sql(statements.walPosition().text)).split('|');
    return { bytes: Number(bytes), at: Number(at) };
  };
  const p0 = await position();
  await pgbench(c, ['-c', String(CLIENTS), '-j', String(JOBS), '-T', '10']);
  const p1 = await position();
  const walRate = walRateFrom({ bytes: p1.bytes - p0.bytes, seconds: p1.at - p0.at }, undefined);
  const profile: SystemProfile = {
    ...detected,
    storageMeasured: { ...(typeof fsync === 'string' ? {} : { fsync }), ...(typeof reads === 'string' ? {} : { randomRead: reads }) },
    ...(walRate ? { walWriteBytesPerSecond: walRate.bytesPerSecond, walWriteRateSource: walRate.source } : {}),
  };
  const catalog = loadCatalog(VERSION);
  const set = recommend(profile, catalog);
  const anchors = anchorsFor(profile);
  const configs: Config[] = [
    { name: 'defaults', settings: {} },
    { name: 'pgtune', settings: anchors.pgtune },
    { name: 'timescaledb-tune', settings: anchors.timescaledbTune },
    {
      name: 'pgscale',
      settings: Object.fromEntries(
        Object.values(set.areas)
          .flat()
          .map((r) => [r.name, r.value]),
      ),
    },
  ];
  log(
    `hardware: ${formatBytes(profile.memoryBytes)}${profile.memoryIsCgroupLimit ? ' (cgroup limit)' : ''}, ${profile.vcpus} vCPUs, ${profile.storage} storage, WAL volume ${formatBytes(profile.walVolumeBytes ?? 0)}, build ${profile.buildFeatures.join(', ') || '-'}; profile ${WORKLOAD}, max_connections ${MAX_CONNECTIONS}`,
  );

  const dbSize = await c.sql(`select pg_size_pretty(pg_database_size('postgres'))`);
  log(`database size ${dbSize}`);

  const results = new Map(configs.map((cf) => [cf.name, { tpcb: [] as number[], select: [] as number[] }]));
  const run = ['-c', String(CLIENTS), '-j', String(JOBS), '-T', String(SECONDS)];
  const loads: number[] = [];
  for (let rep = 0; rep < REPEATS; rep++) {
    const order = configs.map((_, i) => configs[(i + rep) % configs.length]!);
    for (const config of order) {
      await applyConfig(c, config);
      await initTables();
      await c.sql('checkpoint');
      await pgbench(c, ['-S', '-c', String(CLIENTS), '-j', String(JOBS), '-T', '5']);
      const tpcb = await pgbench(c, run);
      const select = await pgbench(c, ['-S', ...run]);
      loads.push(loadavg()[0]!);
      results.get(config.name)!.tpcb.push(tpcb);
      results.get(config.name)!.select.push(select);
      log(
        `repeat ${rep + 1}/${REPEATS} ${config.name.padEnd(16)} (load ${loadavg()[0]!.toFixed(1)}) TPC-B ${tpcb.toFixed(0).padStart(7)} tps   select-only ${select.toFixed(0).padStart(7)} tps`,
      );
    }
  }

  const med = (name: string) => ({ tpcb: median(results.get(name)!.tpcb), select: median(results.get(name)!.select) });
  const base = med('defaults');
  const lines: string[] = [];
  lines.push(`bench/tune: PostgreSQL ${VERSION}, pgbench scale ${SCALE} (${dbSize}), -c ${CLIENTS} -j ${JOBS} -T ${SECONDS}, median of ${REPEATS}`);
  lines.push(
    `hardware: ${formatBytes(profile.memoryBytes)} RAM, ${profile.vcpus} vCPUs, ${profile.storage}; profile ${WORKLOAD}, max_connections ${MAX_CONNECTIONS}`,
  );
  const f = profile.storageMeasured?.fsync;
  const r = profile.storageMeasured?.randomRead;
  lines.push(
    `WAL flush (pg_test_fsync -s 1, one 8kB write): ${
      f
        ? Object.entries(f.opsPerSecond)
            .map(([k, v]) => `${k} ${v.toFixed(0)}/s (${(1e6 / v).toFixed(0)} µs)`)
            .join(', ')
        : 'not measured'
    }`,
  );
  lines.push(
    `random 8kB reads (O_DIRECT probe): ${r ? `${r.serialIops.toFixed(0)}/s one at a time, ${r.parallelIops.toFixed(0)}/s ${r.depth} at once` : 'not measured'}`,
  );
  lines.push(`WAL rate of TPC-B here: ${profile.walWriteBytesPerSecond ? `${formatBytes(profile.walWriteBytesPerSecond)}/s` : 'not measured'}`);
  lines.push(
    `1-minute load average after the runs: ${Math.min(...loads).toFixed(1)} to ${Math.max(...loads).toFixed(1)} (pgbench itself adds about ${CLIENTS + JOBS / 2})`,
  );
  lines.push('');
  lines.push(`| configuration    | TPC-B tps | × defaults | select-only tps | × defaults | TPC-B runs | select-only runs |`);
  lines.push(`|------------------|----------:|-----------:|----------------:|-----------:|------------|------------------|`);
  for (const cf of configs) {
    const m = med(cf.name);
    const r = results.get(cf.name)!;
    lines.push(
      `| ${cf.name.padEnd(16)} | ${m.tpcb.toFixed(0).padStart(9)} | ${(m.tpcb / base.tpcb).toFixed(2).padStart(10)} | ${m.select.toFixed(0).padStart(15)} | ${(m.select / base.select).toFixed(2).padStart(10)} | ${r.tpcb.map((x) => x.toFixed(0)).join(', ')} | ${r.select.map((x) => x.toFixed(0)).join(', ')} |`,
    );
  }
  const ours = med('pgscale');
  const bestTpcb = Math.max(med('pgtune').tpcb, med('timescaledb-tune').tpcb);
  const bestSelect = Math.max(med('pgtune').select, med('timescaledb-tune').select);
  const yes = (b: boolean) => (b ? 'met' : 'NOT met');
  lines.push('');
  lines.push(
    `goal pgscale ≥ best anchor: TPC-B ${yes(ours.tpcb >= bestTpcb)} (${(ours.tpcb / bestTpcb).toFixed(3)}×), select-only ${yes(ours.select >= bestSelect)} (${(ours.select / bestSelect).toFixed(3)}×)`,
  );
  lines.push(
    `goal pgscale ≥ 1.2× defaults: TPC-B ${yes(ours.tpcb >= 1.2 * base.tpcb)} (${(ours.tpcb / base.tpcb).toFixed(2)}×), select-only ${yes(ours.select >= 1.2 * base.select)} (${(ours.select / base.select).toFixed(2)}×)`,
  );
  lines.push('');
  lines.push('settings that differ between the configurations (— = the server default):');
  const names = [...new Set([...KEY_SETTINGS, ...configs.flatMap((cf) => Object.keys(cf.settings))])].filter((n) => configs.some((cf) => n in cf.settings));
  lines.push(`| setting | ${configs.map((cf) => cf.name).join(' | ')} |`);
  lines.push(`|---|${configs.map(() => '---').join('|')}|`);
  for (const n of names) lines.push(`| ${n} | ${configs.map((cf) => (cf.settings[n] ? formatValue(cf.settings[n]) : '—')).join(' | ')} |`);
  process.stdout.write(lines.join('\n') + '\n');
}

main()
  .catch((e: unknown) => {
    process.stderr.write(`bench/tune failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  })
  .finally(teardownAll);
