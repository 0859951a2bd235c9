/**
 * Benchmark: downtime of a 16 → 17 major upgrade of a ≥ 2 GB cluster, in one run on one machine:
 *
 *   - bare:        what a DBA types by hand: pg_ctl stop; initdb; (port in postgresql.conf);
 *                  pg_upgrade --link; pg_ctl start; one write
 *   - pgscale link: `pgscale upgrade --mode link --no-backup --yes`
 *   - pgscale copy: `pgscale upgrade --mode copy --no-backup --yes`
 *   - dump/restore: pg_dumpall | psql into a new 17 cluster made beforehand, then the old one
 *                  stopped and the new one restarted on the old port, one write
 *
 * Run (as root: the test bed runs servers as `postgres`), after `npx tsc -p .`:
 *
 *     node_modules/.bin/node dist/bench/upgrade.js
 *
 * Environment: PGSCALE_BENCH_SCALE (pgbench scale, default 140 ≈ 2.1 GB), PGSCALE_BENCH_ROUNDS
 * (default 3; bare and pgscale link run that many times, in alternating order, median shown).
 *
 * The source is built once (pgbench -i with the 17 bindir's pgbench against the 16 server, loaded
 * with fsync=off, then fsync/full_page_writes/synchronous_commit back on, restart, checkpoint,
 * stop) and copied with cp -a for every variant, outside the timed window (each link-mode run
 * consumes its source). Copies leave the source in the page cache for every variant alike.
 *
 * Downtime is measured the same way for all: from the moment the old server's stop begins (pg_ctl
 * stop issued; for pgscale from its audit log: the pg_ctl stop's completion time minus its
 * duration) to the first successful write on the new cluster on the old port (pgscale: start-new's
 * acceptingWritesAt). For dump/restore the window opens when the dump starts (writes must stop
 * then). pgscale cuts clients off earlier than its pg_ctl stop (it terminates sessions, samples row
 * counts and checkpoints first): that window is shown too, as is pgscale's own report (old stopped
 * → new accepting writes). Everything
 * is removed at the end. Prints a markdown table with ratios to the bare sequence; goal ≤ 1.1×.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { bindir, createCluster, freePort, mkdirOwned, runner, scratchDir, serverUser, teardownAll, TestCluster } from '../test/helpers/testbed.js';
import { cliEntry } from '../test/helpers/paths.js';
import { describeFailure, isRoot, type Invocation } from '../src/runner.js';
import type { RunReport } from '../src/pipeline/execute.js';
import type { UpgradeReport } from '../src/upgrade/report.js';

const scale = Number(process.env.PGSCALE_BENCH_SCALE ?? 140);
const rounds = Math.max(1, Number(process.env.PGSCALE_BENCH_ROUNDS ?? 3));
const B16 = bindir(16);
const B17 = bindir(17);
const jobs = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());

const log = (m: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${m}\n`);
const fmt = (n: number, digits = 1) => n.toFixed(digits);
const now = () => performance.now() / 1000;

async function must(inv: Invocation, what = inv.program): Promise<string> {
  const res = await runner.run(inv);
  if (res.exitCode !== 0) throw new Error(`${what}: ${describeFailure(inv, res)}\n${res.stdout.slice(-2000)}`);
  return res.stdout;
}
const asServer = (program: string, args: string[], extra: Partial<Invocation> = {}): Invocation => ({ program, args, runAs: serverUser, cwd: '/tmp', ...extra });

interface Measured {
  /** Old stop begins → first write on the new cluster on the old port. */
  downtime: number;
  /** Clients cut off (pgscale terminates sessions before sampling, checkpoint and stop) → first write. */
  cutOff?: number;
  /** pgscale's own report: old stopped → new accepting writes. */
  reported?: number;
  /** Phases inside the window, for the breakdown. */
  phases: Record<string, number>;
}

/** The source cluster, stopped: 16, pgbench scale N, fsync on. */
async function buildSource(): Promise<{ source: TestCluster; bytes: number }> {
  const source = await createCluster({
    version: 16,
    conf: ['fsync = off', 'synchronous_commit = off', 'full_page_writes = off', 'max_wal_size = 8GB', 'checkpoint_timeout = 1h', 'maintenance_work_mem = 512MB'],
  });
  await source.sql('create database bench');
  log(`pgbench -i -s ${scale} (17's pgbench against the 16 server, server-side generation)…`);
  const t = now();
  await must(asServer(join(B17, 'pgbench'), ['-i', '-q', '-s', String(scale), '-I', 'dtGvp', '-h', source.socketDir, '-p', String(source.port), '-U', source.superuser, 'bench']), 'pgbench -i');
  log(`  loaded in ${fmt(now() - t)} s`);
  // measured with durability on: the later lines win
  appendFileSync(join(source.pgdata, 'postgresql.conf'), '\n# measurement\nfsync = on\nfull_page_writes = on\nsynchronous_commit = on\n');
  await source.stop();
  await source.start();
  const bytes = Number(await source.sql('select sum(pg_database_size(oid)) from pg_database'));
  await source.sql('checkpoint');
  await source.stop();
  return { source, bytes };
}

interface Copy {
  old: TestCluster;
  dir: string;
}

/** A running copy of the source on its own port and socket (made outside any timed window). */
async function copyOfSource(source: TestCluster, label: string): Promise<Copy> {
  const dir = scratchDir(`pgscale-bench-${label}-`);
  const pgdata = join(dir, 'data');
  const t = now();
  execFileSync('cp', ['-a', source.pgdata, pgdata]);
  log(`  ${label}: cp -a of the source in ${fmt(now() - t)} s`);
  const sock = mkdirOwned(join(dir, 'sock'));
  const port = await freePort();
  appendFileSync(join(pgdata, 'postgresql.conf'), `\n# this copy\nport = ${port}\nunix_socket_directories = '${sock}'\n`);
  const old = new TestCluster(16, B16, pgdata, port, sock, join(dir, 'old.log'));
  await old.start();
  await old.sql('select count(*) from pgbench_branches', 'bench');
  return { old, dir };
}

/** Stops what a variant left running and frees its disk space at once (2 GB per copy). */
async function dispose(c: Copy, ...running: string[]): Promise<void> {
  for (const d of running) await runner.run(asServer(join(B17, 'pg_ctl'), ['-D', d, '-m', 'immediate', '-w', 'stop']));
  rmSync(c.dir, { recursive: true, force: true });
}

const write = (c: TestCluster) => c.sql(`create table if not exists after_upgrade (at timestamptz); insert into after_upgrade values (now())`, 'bench');

/** The hand-typed sequence; with initdbFirst the new cluster is made before the stop, as pgscale does. */
async function bare(source: TestCluster, initdbFirst = false): Promise<Measured> {
  const c = await copyOfSource(source, initdbFirst ? 'bare-initdb-first' : 'bare');
  const newData = join(c.dir, 'data-17');
  const work = mkdirOwned(join(c.dir, 'work'));
  const phases: Record<string, number> = {};
  const phase = async (name: string, run: () => Promise<unknown>) => {
    const t = now();
    await run();
    phases[name] = now() - t;
  };
  const initdb = async () => {
    await must(asServer(join(B17, 'initdb'), ['-D', newData, '-U', serverUser.name, '--no-locale', '-E', 'UTF8', '--auth-local=peer', '--auth-host=scram-sha-256']));
    appendFileSync(join(newData, 'postgresql.conf'), `\nport = ${c.old.port}\nunix_socket_directories = '${c.old.socketDir}'\nlisten_addresses = ''\n`);
  };
  if (initdbFirst) await initdb();
  const t0 = now();
  await phase('pg_ctl stop', () => must(asServer(join(B16, 'pg_ctl'), ['-D', c.old.pgdata, '-m', 'fast', '-w', 'stop'])));
  if (!initdbFirst) await phase('initdb', initdb);
  await phase('pg_upgrade --link', async () =>
    must(asServer(join(B17, 'pg_upgrade'), ['-b', B16, '-B', B17, '-d', c.old.pgdata, '-D', newData, '-p', String(c.old.port), '-P', String(await freePort()), '-s', c.old.socketDir, '-U', serverUser.name, '-j', String(jobs), '--link'], { cwd: work })),
  );
  const next = new TestCluster(17, B17, newData, c.old.port, c.old.socketDir, join(c.dir, 'new.log'));
  await phase('pg_ctl start', () => next.start());
  await phase('first write', () => write(next));
  const downtime = now() - t0;
  await dispose(c, newData);
  return { downtime, phases };
}

async function pgscale(source: TestCluster, mode: 'link' | 'copy'): Promise<Measured> {
  const c = await copyOfSource(source, `pgscale-${mode}`);
  const newData = join(c.dir, 'data-17');
  const res = await runner.run({
    program: process.execPath,
    args: [cliEntry, 'upgrade', '--pgdata', c.old.pgdata, '--old-bindir', B16, '--new-bindir', B17, '--to-version', '17', '--new-pgdata', newData, '--mode', mode, '--jobs', String(jobs), '--no-backup', '--yes', '--json', '--state-dir', join(c.dir, 'state')],
    env: { NO_COLOR: '1' },
  });
  if (res.exitCode !== 0) throw new Error(`pgscale upgrade --mode ${mode} failed (exit ${res.exitCode}):\n${res.stdout.slice(-3000)}\n${res.stderr.slice(-2000)}`);
  const out = JSON.parse(res.stdout) as { run: RunReport; report: UpgradeReport };
  const back = Date.parse(String(out.run.outputs['start-new']?.acceptingWritesAt)) / 1000;
  // the old server's stop began when pg_ctl stop was issued: its audit line's time minus its duration
  const audit = readFileSync(join(out.run.runDir, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { time: string; kind: string; program?: string; args?: string[]; sql?: string; durationMs: number });
  const stop = audit.find((e) => e.kind === 'run' && e.program?.endsWith('/pg_ctl') && e.args?.includes('stop') && e.args.includes(c.old.pgdata));
  if (!stop) throw new Error('no pg_ctl stop of the old cluster in the audit log');
  const stopBegan = Date.parse(stop.time) / 1000 - stop.durationMs / 1000;
  const journal = readFileSync(join(out.run.runDir, 'journal.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { at: string; type: string; step?: string });
  const at = (type: string, step: string) => Date.parse(journal.find((e) => e.type === type && e.step === step)?.at ?? '') / 1000;
  const program = (name: string, arg: string) => audit.find((e) => e.kind === 'run' && e.program?.endsWith(`/${name}`) && e.args?.includes(arg));
  const upgrade = program('pg_upgrade', `--${mode}`);
  const start = program('pg_ctl', 'start');
  const inside = {
    'pg_ctl stop': stop.durationMs / 1000,
    [`pg_upgrade --${mode}`]: (upgrade?.durationMs ?? NaN) / 1000,
    'pg_ctl start': (start?.durationMs ?? NaN) / 1000,
  };
  const terminate = audit.find((e) => e.kind === 'sql' && e.sql?.includes('pg_terminate_backend'));
  const cutOff = terminate ? Date.parse(terminate.time) / 1000 - terminate.durationMs / 1000 : at('step-started', 'stop-old');
  const phases: Record<string, number> = {
    ...inside,
    'pgscale itself (journal, verifications, the write probe)': back - stopBegan - Object.values(inside).reduce((a, b) => a + b, 0),
    'before the window, clients already cut off: sample row counts, checkpoint': stopBegan - cutOff,
  };
  await dispose(c, newData);
  return { downtime: back - stopBegan, cutOff: back - cutOff, reported: out.report.downtimeSeconds ?? undefined, phases };
}

async function dumpRestore(source: TestCluster): Promise<Measured> {
  const c = await copyOfSource(source, 'dump');
  const newData = join(c.dir, 'data-17');
  const newSock = mkdirOwned(join(c.dir, 'sock17'));
  const tempPort = await freePort();
  // made beforehand, outside the window, as a DBA would
  await must(asServer(join(B17, 'initdb'), ['-D', newData, '-U', serverUser.name, '--no-locale', '-E', 'UTF8', '--auth-local=peer', '--auth-host=scram-sha-256']));
  appendFileSync(join(newData, 'postgresql.conf'), `\nport = ${tempPort}\nunix_socket_directories = '${newSock}'\nlisten_addresses = ''\n`);
  const fresh = new TestCluster(17, B17, newData, tempPort, newSock, join(c.dir, 'new.log'));
  await fresh.start();
  const phases: Record<string, number> = {};
  const t0 = now();
  const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const pipeline = `set -o pipefail; ${sh(join(B17, 'pg_dumpall'))} -h ${sh(c.old.socketDir)} -p ${c.old.port} -U ${serverUser.name} | ${sh(join(B17, 'psql'))} -X -q -h ${sh(newSock)} -p ${tempPort} -U ${serverUser.name} -d postgres >/dev/null`;
  // psql goes on past "role postgres already exists" (the only expected error): the exit status is pg_dumpall's
  await must(asServer('bash', ['-c', pipeline]), 'pg_dumpall | psql');
  phases['pg_dumpall | psql'] = now() - t0;
  let t = now();
  await c.old.stop();
  appendFileSync(join(newData, 'postgresql.conf'), `\nport = ${c.old.port}\nunix_socket_directories = '${c.old.socketDir}'\n`);
  await fresh.stop();
  const next = new TestCluster(17, B17, newData, c.old.port, c.old.socketDir, join(c.dir, 'new.log'));
  await next.start();
  phases['stop old, restart new on the old port'] = now() - t;
  t = now();
  await write(next);
  phases['first write'] = now() - t;
  const downtime = now() - t0;
  const rows = await next.sql('select count(*) from pgbench_accounts', 'bench');
  if (Number(rows) !== scale * 100_000) throw new Error(`restore incomplete: ${rows} accounts`);
  await dispose(c, newData);
  return { downtime, phases };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

async function main(): Promise<void> {
  if (!isRoot()) throw new Error('run as root: the test bed runs servers as postgres');
  const { source, bytes } = await buildSource();
  log(`source: PostgreSQL 16, ${fmt(bytes / 1e9, 2)} GB (pgbench scale ${scale}); ${jobs} CPUs; pg_upgrade --jobs ${jobs} for all`);

  const bareRuns: Measured[] = [];
  const linkRuns: Measured[] = [];
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? ['bare', 'link'] : ['link', 'bare'];
    for (const v of order) {
      log(`round ${r + 1}: ${v}`);
      if (v === 'bare') bareRuns.push(await bare(source));
      else linkRuns.push(await pgscale(source, 'link'));
    }
  }
  log('bare, initdb before the stop');
  const bareInitdbFirst = await bare(source, true);
  log('pgscale copy');
  const copy = await pgscale(source, 'copy');
  log('dump and restore');
  const dump = await dumpRestore(source);

  const bareDowntime = median(bareRuns.map((m) => m.downtime));
  const link = linkRuns.find((m) => m.downtime === median(linkRuns.map((x) => x.downtime)))!;
  const bareOne = bareRuns.find((m) => m.downtime === bareDowntime)!;
  const rows: [string, Measured][] = [
    ['bare: pg_ctl stop; initdb; pg_upgrade --link; pg_ctl start; write', bareOne],
    ['bare, initdb before the stop (as pgscale does)', bareInitdbFirst],
    ['pgscale upgrade --mode link --no-backup --yes', link],
    ['pgscale upgrade --mode copy --no-backup --yes', copy],
    ['dump/restore: pg_dumpall \\| psql into a new 17 cluster; restart on the old port; write', dump],
  ];
  const lines = [
    '',
    `PostgreSQL 16 → 17, ${fmt(bytes / 1e9, 2)} GB (pgbench scale ${scale}), ${jobs} CPUs, one run${rounds > 1 ? ` (bare and pgscale link: median of ${rounds})` : ''}`,
    '',
    '| variant | downtime s (stop begins → first write) | × bare | clients cut off → first write s | × bare | pgscale report s (stopped → accepting writes) |',
    '|---|---:|---:|---:|---:|---:|',
    ...rows.map(([name, m]) => {
      const cut = m.cutOff ?? m.downtime; // pg_ctl stop -m fast is where the others cut clients off
      return `| ${name} | ${fmt(m.downtime, 2)} | ${fmt(m.downtime / bareDowntime, 2)} | ${fmt(cut, 2)} | ${fmt(cut / bareDowntime, 2)} | ${m.reported === undefined ? '-' : fmt(m.reported, 2)} |`;
    }),
    '',
    'inside the window:',
    ...rows.map(([name, m]) => `- ${name.split(/[:(]/)[0]!.trim()}: ${Object.entries(m.phases).map(([k, v]) => `${k} ${fmt(v, 2)} s`).join(', ')}`),
    '',
    `pgscale link ÷ bare = ${fmt(link.downtime / bareDowntime, 2)}× (goal ≤ 1.10×): ${link.downtime / bareDowntime <= 1.1 ? 'met' : 'NOT met'}; counting from when pgscale cuts clients off: ${fmt(link.cutOff! / bareDowntime, 2)}× (${link.cutOff! / bareDowntime <= 1.1 ? 'met' : 'NOT met'})`,
  ];
  if (rounds > 1) lines.push(`all rounds — bare: ${bareRuns.map((m) => fmt(m.downtime, 2)).join(', ')}; pgscale link: ${linkRuns.map((m) => fmt(m.downtime, 2)).join(', ')}`);
  process.stdout.write(lines.join('\n') + '\n');
}

main()
  .catch((e: Error) => {
    process.stderr.write(`bench: ${e.message}\n`);
    process.exitCode = 1;
  })
  .finally(teardownAll);
