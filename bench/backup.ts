/**
 * Benchmark: `pgscale backup` against the seed's `pg_dumpall | gzip > file`, on one pgbench
 * database of about 1 GB, in one run and on one machine, with the same pg_dumpall (the test bed's
 * 17) and the same connection environment. Also zstd levels 1 and 3 and gzip through pgscale, so
 * the default compressor is chosen by measurement.
 *
 * Run (as root: the test bed runs the server as `postgres`), after `npx tsc -p .`:
 *
 *     node_modules/.bin/node dist/bench/backup.js
 *
 * Environment: PGSCALE_BENCH_SCALE (pgbench scale, default 70 ≈ 1.05 GB), PGSCALE_BENCH_VERSION
 * (default 17), PGSCALE_BENCH_ROUNDS (default 3: each method runs once per round, in rotated
 * order, and the median is shown). Prints a table; exits 1 if the cluster cannot be set up. The
 * cluster and every output are removed at the end.
 *
 * Wall time is the whole command (pgscale: plan, checks, dump, manifest, full decompress-and-
 * checksum verify, publish; the seed: the pipeline only). The "dump step" column is pgscale's dump
 * step alone, from its journal. Database bytes/s uses the sum of pg_database_size; dump bytes/s
 * the uncompressed pg_dumpall output.
 */
import { spawn } from 'node:child_process';
import { createReadStream, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { createCluster, scratchDir, serverUser, teardownAll, type TestCluster } from '../test/helpers/testbed.js';
import { cliEntry, repoRoot } from '../test/helpers/paths.js';
import { isRoot } from '../src/runner.js';
import type { OperationResult } from '../src/operationCommand.js';
import type { StampedEvent } from '../src/pipeline/journal.js';

const scale = Number(process.env.PGSCALE_BENCH_SCALE ?? 70);
const version = Number(process.env.PGSCALE_BENCH_VERSION ?? 17);
const reps = Math.max(1, Number(process.env.PGSCALE_BENCH_ROUNDS ?? 3));

interface Timed {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

function run(program: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd = repoRoot): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(program, args, { cwd, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, seconds: (performance.now() - started) / 1000 }));
  });
}

async function must(what: string, p: Promise<Timed>): Promise<Timed> {
  const r = await p;
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.stderr.slice(-2000)}`);
  return r;
}

const asServer = (program: string, args: string[]) => ['setpriv', ['--reuid', String(serverUser.uid), '--regid', String(serverUser.gid), '--init-groups', program, ...args]] as const;

/** Bytes a gzip file decompresses to. */
async function gunzippedBytes(file: string): Promise<number> {
  let n = 0;
  const gunzip = createReadStream(file).pipe(createGunzip());
  for await (const chunk of gunzip) n += (chunk as Buffer).length;
  return n;
}

interface Row {
  name: string;
  seconds: number;
  dumpStepSeconds?: number;
  outputBytes: number;
  dumpBytes: number;
}

const MB = 1e6;
const fmt = (n: number, digits = 1) => n.toFixed(digits);

function table(rows: Row[], dbBytes: number, baseline: Row): string {
  const head = ['method', 'wall s', 'dump step s', 'DB MB/s', 'dump MB/s', 'output MB', 'throughput ×seed', 'size ×seed'];
  const body = rows.map((r) => [
    r.name,
    fmt(r.seconds),
    r.dumpStepSeconds === undefined ? '-' : fmt(r.dumpStepSeconds),
    fmt(dbBytes / r.seconds / MB),
    fmt(r.dumpBytes / r.seconds / MB),
    r.outputBytes ? fmt(r.outputBytes / MB) : '-',
    fmt(baseline.seconds / r.seconds, 2),
    r.outputBytes ? fmt(r.outputBytes / baseline.outputBytes, 2) : '-',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  return [line(head), `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 1) + '-' : '-'.repeat(w + 1) + ':')).join('|')}|`, ...body.map(line)].join('\n');
}

async function setUp(): Promise<{ cluster: TestCluster; dbBytes: number }> {
  if (!isRoot()) throw new Error('run as root: the test bed runs the server as postgres');
  const cluster = await createCluster({
    version,
    conf: ['fsync = off', 'synchronous_commit = off', 'full_page_writes = off', 'max_wal_size = 8GB', 'checkpoint_timeout = 1h', 'shared_buffers = 256MB', 'maintenance_work_mem = 512MB'],
  });
  await cluster.sql('create database bench');
  process.stderr.write(`pgbench -i -s ${scale} (server-side generation)…\n`);
  const [prog, args] = asServer(join(cluster.bindir, 'pgbench'), ['-i', '-q', '-s', String(scale), '-I', 'dtGvp', '-h', cluster.socketDir, '-p', String(cluster.port), '-U', cluster.superuser, 'bench']);
  const init = await must('pgbench -i', run(prog, [...args], {}, '/'));
  process.stderr.write(`  loaded in ${fmt(init.seconds)} s\n`);
  await cluster.sql('checkpoint');
  const dbBytes = Number(await cluster.sql('select sum(pg_database_size(oid)) from pg_database'));
  return { cluster, dbBytes };
}

async function main(): Promise<void> {
  let cluster: TestCluster;
  let dbBytes: number;
  try {
    ({ cluster, dbBytes } = await setUp());
  } catch (e) {
    process.stderr.write(`bench: cannot set up the cluster: ${(e as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  const out = scratchDir('pgscale-bench-');
  const env = { PGHOST: cluster.socketDir, PGPORT: String(cluster.port), PGUSER: cluster.superuser, PGDATABASE: 'postgres' };
  const dumpall = join(cluster.bindir, 'pg_dumpall');
  const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const dumpallAsServer = `setpriv --reuid=${serverUser.uid} --regid=${serverUser.gid} --init-groups ${shq(dumpall)}`;

  process.stderr.write(`database: ${fmt(dbBytes / MB)} MB (pgbench scale ${scale}, PostgreSQL ${version}); ${reps} rounds\n`);
  // warms the page cache, and gives the uncompressed size of the dump
  const dumpBytes = Number((await must('pg_dumpall | wc -c', run('bash', ['-c', `set -o pipefail; ${dumpallAsServer} | wc -c`], env, '/'))).stdout.trim());

  type Method = { name: string; measure: () => Promise<Row> };
  const pgscale = (name: string, args: string[]): Method => ({
    name,
    async measure() {
      const dest = join(out, 'backup');
      const r = await must(name, run(process.execPath, [cliEntry, 'backup', '--bindir', cluster.bindir, '--pgdata', cluster.pgdata, '--to', dest, '--state-dir', join(out, 'state'), '--json', ...args]));
      const result = JSON.parse(r.stdout) as OperationResult;
      const events = readFileSync(join(result.run!.runDir, 'journal.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as StampedEvent);
      const at = (type: string) => Date.parse(events.find((e) => e.type === type && 'step' in e && e.step === 'dump')!.at);
      const dump = result.run!.outputs.dump as { uncompressedBytes: number; compressedBytes: number };
      rmSync(dest, { recursive: true, force: true });
      return { name, seconds: r.seconds, dumpStepSeconds: (at('step-done') - at('step-started')) / 1000, outputBytes: dump.compressedBytes, dumpBytes: dump.uncompressedBytes };
    },
  });
  const methods: Method[] = [
    {
      name: 'seed: pg_dumpall \\| gzip (-6)',
      async measure() {
        const file = join(out, 'seed.sql.gz');
        const r = await must('seed pipeline', run('bash', ['-c', `set -o pipefail; ${dumpallAsServer} | gzip > ${shq(file)}`], env, '/'));
        const row = { name: this.name, seconds: r.seconds, outputBytes: statSync(file).size, dumpBytes: await gunzippedBytes(file) };
        rmSync(file);
        return row;
      },
    },
    pgscale('pgscale backup (default: zstd -3 -T0)', []),
    pgscale('pgscale --level 1 (zstd -1 -T0)', ['--level', '1']),
    pgscale('pgscale --compress gzip (gzip -3)', ['--compress', 'gzip']),
    pgscale('pgscale --compress gzip --level 6', ['--compress', 'gzip', '--level', '6']),
    {
      name: 'pg_dumpall > /dev/null (ceiling)',
      async measure() {
        const r = await must('pg_dumpall > /dev/null', run('bash', ['-c', `set -o pipefail; ${dumpallAsServer} > /dev/null`], env, '/'));
        return { name: this.name, seconds: r.seconds, outputBytes: 0, dumpBytes };
      },
    },
  ];
  // every method once per round, the order rotated each round; the median round counts
  const samples = new Map<string, Row[]>(methods.map((m) => [m.name, []]));
  for (let round = 0; round < reps; round++) {
    for (let k = 0; k < methods.length; k++) {
      const m = methods[(k + round) % methods.length]!;
      const row = await m.measure();
      process.stderr.write(`  round ${round + 1}: ${m.name}: ${fmt(row.seconds)} s\n`);
      samples.get(m.name)!.push(row);
    }
  }
  const median = (rows: Row[]): Row => [...rows].sort((a, b) => a.seconds - b.seconds)[Math.floor(rows.length / 2)]!;
  const rows = methods.map((m) => median(samples.get(m.name)!));
  const seedRow = rows[0]!;

  const cpus = readFileSync('/proc/cpuinfo', 'utf8').split('\n').filter((l) => l.startsWith('processor')).length;
  process.stdout.write(`\npgscale backup benchmark: pgbench scale ${scale}, ${fmt(dbBytes / MB)} MB in databases, ${fmt(dumpBytes / MB)} MB of pg_dumpall output, PostgreSQL ${version}, ${cpus} CPUs\n\n`);
  process.stdout.write(table(rows, dbBytes, seedRow) + '\n');
  const def = rows[1]!;
  const speedup = seedRow.seconds / def.seconds;
  const sizeRatio = def.outputBytes / seedRow.outputBytes;
  process.stdout.write(`\ndefault vs seed: ${fmt(speedup, 2)}× the throughput (whole command), ${fmt(seedRow.seconds / def.dumpStepSeconds!, 2)}× (dump step), ${fmt(sizeRatio, 2)}× the size — goal ≥ 3× at ≤ 1×: ${speedup >= 3 && sizeRatio <= 1 ? 'met' : 'NOT met'}\n`);
}

try {
  await main();
} finally {
  teardownAll();
}
