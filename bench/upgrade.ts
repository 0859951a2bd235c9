/**
 * Benchmark: downtime of a 16 → 17 link-mode upgrade as a client sees it — the longest gap between
 * acknowledged writes of a writer inserting a row every 50 ms (and reconnecting) — in one run on
 * one machine, side by side:
 *
 *   - expert:  the bare sequence a DBA types, with the work that is not downtime done first:
 *              initdb and pg_upgrade --check against the live cluster; then pg_ctl stop;
 *              pg_upgrade --link; pg_ctl start with the old server's options; (the writer's write)
 *   - pgscale: `pgscale upgrade --mode link --no-backup --yes` (connection block, O(catalog)
 *              snapshot, private-socket start and verification, restart onto the old socket)
 *
 * at two data sizes at least 10× apart (pgbench scales PGSCALE_BENCH_SMALL, default 1, and
 * PGSCALE_BENCH_BIG, default 50) and at a catalog of PGSCALE_BENCH_TABLES tables (default 10 000,
 * each with a primary key). Goals: big ÷ small ≤ 1.2 (flat in data size) and pgscale ≤ 1.1×
 * expert. Every acknowledged write must be present afterwards (checked for every run).
 *
 * Run as root (the test bed runs servers as `postgres`), after `npx tsc -p .`:
 *
 *     node_modules/.bin/node dist/bench/upgrade.js
 *
 * Sources are built once per point (loaded with fsync=off, then durability back on, checkpoint,
 * stop) and copied with cp -a for every variant, outside the measured window. Servers run with
 * port, socket and listen_addresses on their command line. Everything is removed at the end.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, mkdirOwned, runner, serverUser, TestCluster } from '../test/helpers/testbed.js';
import { startWriter, missingWrites, type WriterReport } from '../test/helpers/writer.js';
import { cliEntry } from '../test/helpers/paths.js';
import { isRoot } from '../src/runner.js';
import type { UpgradeReport } from '../src/upgrade/report.js';
import { asServer, B16, B17, buildSource, copyOf, fmt, jobs, log, must, pgbench, pgscaleUpgradeArgs, runBench, type Point } from './sources.js';

const small = Number(process.env.PGSCALE_BENCH_SMALL ?? 1);
const big = Number(process.env.PGSCALE_BENCH_BIG ?? 50);
const tables = Number(process.env.PGSCALE_BENCH_TABLES ?? 10_000);

const manyTables = (n: number) => async (c: TestCluster) => {
  for (let from = 0; from < n; from += 1000) {
    await c.sql(
      `do $$ begin for i in ${from}..${Math.min(n, from + 1000) - 1} loop execute format('create table t%s (id int primary key, v int)', i); end loop; end $$`,
      'bench',
    );
  }
};

interface Measured {
  gapMs: number;
  writes: number;
  /** pgscale's own report (connections blocked → new accepting writes), seconds. */
  reported?: number;
}

/** Runs a variant with the writer going; checks every acknowledged write is on the new cluster. */
async function measured(
  p: Point,
  variant: string,
  upgrade: (old: TestCluster, newData: string, dir: string) => Promise<number | undefined>,
): Promise<Measured> {
  const { old, dir } = await copyOf(p, variant);
  const newData = join(dir, 'data-17');
  const writer = await startWriter(old, { reader: true });
  await new Promise((r) => setTimeout(r, 1000));
  const reported = await upgrade(old, newData, dir);
  await new Promise((r) => setTimeout(r, 1000));
  const report: WriterReport = await writer.stop();
  const next = new TestCluster(17, B17, newData, old.port, old.socketDir, join(dir, 'new.log'), old.options);
  const missing = await missingWrites(next, report);
  if (missing.length) throw new Error(`${variant}: ${missing.length} acknowledged writes missing`);
  await runner.run(next.server.stopInvocation('immediate', 60));
  rmSync(dir, { recursive: true, force: true });
  return { gapMs: report.longestGapMs, writes: report.acknowledged.length, reported };
}

/** The expert's sequence: initdb and pg_upgrade --check while the old cluster serves, then the downtime. */
async function expert(old: TestCluster, newData: string, dir: string): Promise<undefined> {
  const work = mkdirOwned(join(dir, 'work'));
  const sock = mkdirOwned(join(dir, 'upgrade-sock'));
  await must(
    asServer(join(B17, 'initdb'), ['-D', newData, '-U', serverUser.name, '--no-locale', '-E', 'UTF8', '--auth-local=peer', '--auth-host=scram-sha-256']),
  );
  const upgradeArgs = (check: boolean, s: string) => [
    '-b',
    B16,
    '-B',
    B17,
    '-d',
    old.pgdata,
    '-D',
    newData,
    '-p',
    String(old.port),
    '-s',
    s,
    '-U',
    serverUser.name,
    '-j',
    String(jobs),
    check ? '--check' : '--link',
  ];
  await must(asServer(join(B17, 'pg_upgrade'), [...upgradeArgs(true, old.socketDir), '-P', String(await freePort())], { cwd: work }), 'pg_upgrade --check');
  // downtime
  await must(old.server.stopInvocation('fast', 120));
  await must(asServer(join(B17, 'pg_upgrade'), [...upgradeArgs(false, sock), '-P', String(await freePort())], { cwd: work }), 'pg_upgrade --link');
  await new TestCluster(17, B17, newData, old.port, old.socketDir, join(dir, 'new.log'), old.options).start();
  return undefined;
}

async function pgscale(old: TestCluster, newData: string, dir: string): Promise<number | undefined> {
  const res = await runner.run({
    program: process.execPath,
    args: [cliEntry, ...pgscaleUpgradeArgs(old.pgdata, newData, join(dir, 'state'))],
    env: { NO_COLOR: '1' },
  });
  if (res.exitCode !== 0) throw new Error(`pgscale upgrade failed (exit ${res.exitCode}):\n${res.stdout.slice(-3000)}\n${res.stderr.slice(-2000)}`);
  return (JSON.parse(res.stdout) as { report: UpgradeReport }).report.downtimeSeconds ?? undefined;
}

async function main(): Promise<void> {
  if (!isRoot()) throw new Error('run as root: the test bed runs servers as postgres');
  const points: Point[] = [];
  log(`building sources: pgbench scale ${small} and ${big}, ${tables} tables`);
  points.push(await buildSource(`pgbench scale ${small}`, pgbench(small)));
  points.push(await buildSource(`pgbench scale ${big}`, pgbench(big)));
  if (tables > 0) points.push(await buildSource(`${tables} tables`, manyTables(tables)));
  const results: { p: Point; expert: Measured; pgscale: Measured }[] = [];
  for (const p of points) {
    log(`${p.label}: expert`);
    const e = await measured(p, 'expert', expert);
    log(`${p.label}: pgscale`);
    const g = await measured(p, 'pgscale', pgscale);
    results.push({ p, expert: e, pgscale: g });
    rmSync(p.source.pgdata, { recursive: true, force: true });
  }
  const [s, b] = results;
  const lines = [
    '',
    `PostgreSQL 16 → 17, link mode, ${jobs} CPUs, one run; downtime = longest gap between acknowledged writes of a client writing every 50 ms`,
    '',
    '| point | data | user relations | expert s | pgscale s | pgscale ÷ expert | pgscale report s |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...results.map(
      (r) =>
        `| ${r.p.label} | ${fmt(r.p.bytes / 1e6, 0)} MB | ${r.p.relations} | ${fmt(r.expert.gapMs / 1000)} | ${fmt(r.pgscale.gapMs / 1000)} | ${fmt(r.pgscale.gapMs / r.expert.gapMs)} | ${r.pgscale.reported === undefined ? '-' : fmt(r.pgscale.reported)} |`,
    ),
    '',
    `data ${fmt(b!.p.bytes / s!.p.bytes, 1)}× bigger: pgscale big ÷ small = ${fmt(b!.pgscale.gapMs / s!.pgscale.gapMs)} (goal ≤ 1.20: ${b!.pgscale.gapMs / s!.pgscale.gapMs <= 1.2 ? 'met' : 'NOT met'}); expert big ÷ small = ${fmt(b!.expert.gapMs / s!.expert.gapMs)}`,
    ...results.map(
      (r) =>
        `${r.p.label}: pgscale ÷ expert = ${fmt(r.pgscale.gapMs / r.expert.gapMs)} (goal ≤ 1.10: ${r.pgscale.gapMs / r.expert.gapMs <= 1.1 ? 'met' : 'NOT met'})`,
    ),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

runBench(main);
