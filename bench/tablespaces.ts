/**
 * Benchmark: moving the pgbench tables to a tablespace on another volume while pgbench runs,
 * `pgscale tablespaces place` with pg_repack (tables with a key: pgbench_accounts, _branches,
 * _tellers; pgbench_history has none and moves by ALTER TABLE) and with --no-repack (heaps under a
 * 200 ms lock_timeout with backed-off retries, indexes by REINDEX CONCURRENTLY) against the plain
 * statements a DBA would type (ALTER TABLE … SET TABLESPACE and ALTER INDEX … SET TABLESPACE,
 * waiting for their locks as long as it takes), in one run on one machine. Figures: the longest client stall (the largest per-transaction latency of
 * pgbench, from its -l log, over transactions that overlap the move) and the TPS during the move
 * (transactions completed inside the move window), side by side as ratios.
 *
 * Run (as root: the test bed runs the server as `postgres`), after `npx tsc -p .`:
 *
 *     node_modules/.bin/node dist/bench/tablespaces.js
 *
 * Environment: PGSCALE_BENCH_SCALE (pgbench scale, default 70 ≈ 1 GB of pgbench_accounts),
 * PGSCALE_BENCH_CLIENTS (default 4). The cluster, the volume and the logs are removed at the end.
 * pgscale needs every table judged cold to move them all: the bench passes thresholds that make
 * everything cold, and --allow-blocking when pgbench_accounts is above the 1 GB default limit.
 * pgscale runs twice, each run rolled back after: as shipped (pg_repack, which the test bed's 17
 * has) and with --no-repack (ALTER TABLE, rows counted before and after under each heap's lock). The window of pgscale's moves includes
 * its start-up, planning and checks (about a second): TPS during a longer window is not a loss.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, createLoopVolume, mkdirOwned, scratchDir, teardownAll, type TestCluster } from '../test/helpers/testbed.js';
import { runCli } from '../test/helpers/cli.js';
import { isRoot } from '../src/runner.js';
import type { OperationResult } from '../src/operationCommand.js';
import { asServerArgv } from './sources.js';

const scale = Number(process.env.PGSCALE_BENCH_SCALE ?? 70);
const clients = Number(process.env.PGSCALE_BENCH_CLIENTS ?? 4);
const fmt = (n: number, d = 1) => n.toFixed(d);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function run(program: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

interface Figures {
  name: string;
  seconds: number;
  stallMs: number;
  /** When the longest stall began, seconds after the move started. */
  stallAt: number;
  tps: number;
  baselineTps: number;
  errors: number;
}

/** pgbench -l lines: client transaction latency_us script epoch_s epoch_us. */
function readLog(dir: string): { end: number; latency: number }[] {
  const out: { end: number; latency: number }[] = [];
  for (const f of readdirSync(dir).filter((n) => n.startsWith('pgbench_log'))) {
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      const p = line.trim().split(/\s+/);
      if (p.length < 6) continue;
      out.push({ latency: Number(p[2]) / 1000, end: Number(p[4]) * 1000 + Number(p[5]) / 1000 });
    }
  }
  return out;
}

/** Runs pgbench around `move`: 5 s of baseline, the move, 3 s after; figures from its transaction log. */
async function underLoad(c: TestCluster, name: string, move: () => Promise<void>): Promise<Figures> {
  const logDir = mkdirOwned(join(scratchDir('pgscale-bench-log-'), 'log'));
  const [prog, args] = asServerArgv(join(c.bindir, 'pgbench'), [
    '-c',
    String(clients),
    '-j',
    '2',
    '-T',
    '3600',
    '-l',
    `--log-prefix=${join(logDir, 'pgbench_log')}`,
    '-h',
    c.socketDir,
    '-p',
    String(c.port),
    '-U',
    c.superuser,
    'bench',
  ]);
  let stderr = '';
  const bench: ChildProcess = spawn(prog, args, { cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] });
  bench.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => bench.on('close', () => r()));
  await sleep(5000);
  const start = Date.now();
  await move();
  const end = Date.now();
  await sleep(3000);
  // pgbench writes its log as it goes; SIGINT ends it (the last buffered lines, after the window, may be lost)
  bench.kill('SIGINT');
  await exited;
  const log = readLog(logDir);
  const overlapping = log.filter((t) => t.end >= start && t.end - t.latency <= end);
  const worst = [...overlapping].sort((a, b) => b.latency - a.latency)[0];
  const before = log.filter((t) => t.end >= start - 4000 && t.end < start);
  return {
    name,
    seconds: (end - start) / 1000,
    stallMs: worst?.latency ?? 0,
    stallAt: worst ? (worst.end - worst.latency - start) / 1000 : 0,
    tps: log.filter((t) => t.end >= start && t.end <= end).length / ((end - start) / 1000),
    baselineTps: before.length / 4,
    errors: (stderr.match(/ERROR|aborted/g) ?? []).length,
  };
}

const tables = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];
const indexes = ['pgbench_accounts_pkey', 'pgbench_branches_pkey', 'pgbench_tellers_pkey'];

async function main(): Promise<void> {
  if (!isRoot()) throw new Error('run as root: the test bed runs the server as postgres');
  const c = await createCluster({
    version: 17,
    conf: ['max_wal_size = 4GB', 'checkpoint_timeout = 30min', 'shared_buffers = 256MB', 'maintenance_work_mem = 256MB'],
  });
  await c.sql('create database bench');
  process.stderr.write(`pgbench -i -s ${scale}…\n`);
  const [p, a] = asServerArgv(join(c.bindir, 'pgbench'), [
    '-i',
    '-q',
    '-s',
    String(scale),
    '-I',
    'dtGvp',
    '-h',
    c.socketDir,
    '-p',
    String(c.port),
    '-U',
    c.superuser,
    'bench',
  ]);
  const init = await run(p, a);
  if (init.code !== 0) throw new Error(`pgbench -i: ${init.stderr}`);
  await c.sql('checkpoint');
  const bytes = Number(await c.sql(`select sum(pg_total_relation_size(c.oid)) from pg_class c where relname like 'pgbench_%' and relkind = 'r'`, 'bench'));
  const accounts = Number(await c.sql(`select pg_relation_size('pgbench_accounts')`, 'bench'));
  const vol = createLoopVolume(Math.ceil((bytes * 2.5) / 1024 ** 2) + 256);
  const state = scratchDir('pgscale-bench-state-');
  const rows: Figures[] = [];

  const pgscale = (args: string[]) =>
    runCli(['tablespaces', ...args, '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', state, '--database', 'bench'], { timeoutMs: 3_600_000 });
  if ((await pgscale(['sample'])).code !== 0) throw new Error('pgscale tablespaces sample failed');
  await c.sql('checkpoint');
  // pgscale as shipped (pg_repack), then with --no-repack (ALTER TABLE under lock_timeout); each rolled back after
  for (const [label, extra] of [
    ['pgscale place (pg_repack)', []],
    ['pgscale place --no-repack', ['--no-repack']],
  ] as const) {
    let runId = '';
    rows.push(
      await underLoad(c, label, async () => {
        const res = await pgscale([
          'place',
          '--yes',
          '--json',
          '--volume',
          `${vol.mountPoint}=cold`,
          '--hot-per-minute',
          '1e15',
          '--cold-per-minute',
          '1e14',
          ...extra,
          ...(accounts > 1024 ** 3 ? ['--allow-blocking'] : []),
        ]);
        if (res.code !== 0) throw new Error(`pgscale place: ${res.stderr}${res.stdout}`);
        const out = JSON.parse(res.stdout) as OperationResult;
        runId = out.run!.runId;
        const moved = out.plan.steps.filter((s) => s.kind === 'tablespaces.move');
        if (moved.length !== tables.length) throw new Error(`pgscale moved ${moved.length} tables, not ${tables.length}`);
        const repacked = moved.filter((s) => s.title.endsWith('by pg_repack')).length;
        if (repacked !== (extra.length ? 0 : 3)) throw new Error(`${label}: ${repacked} tables moved by pg_repack`);
      }),
    );
    const back = await runCli(['rollback', runId, '--state-dir', state, '--yes'], { timeoutMs: 3_600_000 });
    if (back.code !== 0) throw new Error(`rollback: ${back.stderr}`);
    await c.sql('checkpoint');
  }

  const plainDir = mkdirOwned(join(vol.mountPoint, 'plain'));
  await c.sql(`create tablespace plain_cold location '${plainDir}'`);
  rows.push(
    await underLoad(c, 'plain ALTER TABLE/INDEX … SET TABLESPACE', async () => {
      await c.sql(
        [...tables.map((t) => `alter table ${t} set tablespace plain_cold;`), ...indexes.map((i) => `alter index ${i} set tablespace plain_cold;`)].join('\n'),
        'bench',
      );
    }),
  );

  const [repacked, altered, plain] = rows as [Figures, Figures, Figures];
  const head = ['method', 'move s', 'longest stall ms', 'stall began at s', 'TPS during', 'TPS before', 'client errors'];
  const body = rows.map((r) => [r.name, fmt(r.seconds), fmt(r.stallMs, 0), fmt(r.stallAt), fmt(r.tps, 0), fmt(r.baselineTps, 0), String(r.errors)]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((x, i) => (i === 0 ? x.padEnd(w[i]!) : x.padStart(w[i]!))).join(' | ')} |`;
  process.stdout.write(
    `\npgscale tablespaces benchmark: pgbench scale ${scale} (${fmt(bytes / 1024 ** 2, 0)} MB of pgbench tables, accounts heap ${fmt(accounts / 1024 ** 2, 0)} MB), ${clients} clients, PostgreSQL 17\n\n`,
  );
  process.stdout.write([line(head), `|${w.map((x, i) => '-'.repeat(x + 2 - (i ? 1 : 0)) + (i ? ':' : '')).join('|')}|`, ...body.map(line)].join('\n') + '\n');
  for (const r of [repacked, altered]) {
    const ratio = plain.stallMs / Math.max(r.stallMs, 1);
    process.stdout.write(
      `\n${r.name}: longest stall plain ÷ pgscale = ${fmt(ratio, 2)}× (goal ≥ 10×: ${ratio >= 10 ? 'met' : 'NOT met'}); TPS during the move pgscale ÷ plain = ${fmt(r.tps / Math.max(plain.tps, 1e-9), 2)}×; move time pgscale ÷ plain = ${fmt(r.seconds / plain.seconds, 2)}×`,
    );
  }
  process.stdout.write('\n');
}

try {
  await main();
} catch (e) {
  process.stderr.write(`bench: ${(e as Error).message}\n`);
  process.exitCode = 1;
} finally {
  teardownAll();
}
