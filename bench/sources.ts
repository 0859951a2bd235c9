/**
 * What the benches share (the upgrade benches most of it): a stopped 16 source built once per data point (loaded with
 * fsync=off, then durability back on, checkpoint, stop), running copies of it made with cp -a
 * outside any measured window, and the small helpers their timing code uses.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  bindir,
  createCluster,
  freePort,
  mkdirOwned,
  runner,
  scratchDir,
  serverUser,
  stopAtTeardown,
  teardownAll,
  TestCluster,
} from '../test/helpers/testbed.js';
import { describeFailure, effectiveArgv, type Invocation } from '../src/runner.js';
import type { StampedEvent } from '../src/pipeline/journal.js';

export const B16 = bindir(16);
export const B17 = bindir(17);
export const jobs = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());

export const log = (m: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${m}\n`);
export const fmt = (n: number, digits = 2) => n.toFixed(digits);
export const now = () => performance.now() / 1000;

export async function must(inv: Invocation, what = inv.program): Promise<string> {
  const res = await runner.run(inv);
  if (res.exitCode !== 0) throw new Error(`${what}: ${describeFailure(inv, res)}\n${res.stdout.slice(-2000)}`);
  return res.stdout;
}
export const asServer = (program: string, args: string[], extra: Partial<Invocation> = {}): Invocation => ({
  program,
  args,
  runAs: serverUser,
  cwd: '/tmp',
  ...extra,
});

/** asServer as an argv, for a program a bench spawns itself (to time, stream or kill it): setpriv as the server account, as the runner does it. */
export function asServerArgv(program: string, args: string[]): [string, string[]] {
  const [first, ...rest] = effectiveArgv(asServer(program, args));
  return [first!, rest];
}

export interface Point {
  label: string;
  source: TestCluster;
  bytes: number;
  relations: number;
}

/** A stopped 16 source: pgbench at a scale, or a catalog of many small tables. */
export async function buildSource(label: string, load: (c: TestCluster) => Promise<void>): Promise<Point> {
  const source = await createCluster({
    version: 16,
    listenOn: 'command-line',
    conf: ['fsync = off', 'synchronous_commit = off', 'full_page_writes = off', 'max_wal_size = 4GB', 'max_locks_per_transaction = 1024'],
  });
  await source.sql('create database bench');
  const t = now();
  await load(source);
  log(`  ${label}: loaded in ${fmt(now() - t, 1)} s`);
  appendFileSync(join(source.pgdata, 'postgresql.conf'), '\n# measurement\nfsync = on\nfull_page_writes = on\nsynchronous_commit = on\n');
  await source.stop();
  await source.start();
  const bytes = Number(await source.sql('select sum(pg_database_size(oid)) from pg_database'));
  const relations = Number(await source.sql(`select count(*) from pg_class where oid >= 16384`, 'bench'));
  await source.sql('checkpoint');
  await source.stop();
  return { label, source, bytes, relations };
}

export const pgbench = (scale: number) => (c: TestCluster) =>
  must(
    asServer(join(B17, 'pgbench'), ['-i', '-q', '-s', String(scale), '-I', 'dtGvp', '-h', c.socketDir, '-p', String(c.port), '-U', c.superuser, 'bench']),
    'pgbench -i',
  ).then(() => undefined);

/**
 * A running copy of the source on its own port and socket, options on its command line (outside any
 * measured window); `listen`: its listen_addresses. Stopped and removed at teardown if still there.
 */
export async function copyOf(p: Point, variant: string, listen = ''): Promise<{ old: TestCluster; dir: string }> {
  const dir = scratchDir(`pgscale-bench-${variant}-`);
  const pgdata = join(dir, 'data');
  execFileSync('cp', ['-a', p.source.pgdata, pgdata]);
  stopAtTeardown(B16, pgdata);
  const sock = mkdirOwned(join(dir, 'sock'));
  const port = await freePort();
  const old = new TestCluster(16, B16, pgdata, port, sock, join(dir, 'old.log'), ['-p', String(port), '-k', sock, '-c', `listen_addresses=${listen}`]);
  await old.start();
  return { old, dir };
}

/** Runs a bench's main: its error on stderr and exit 1; everything it made removed in any case. */
export function runBench(main: () => Promise<void>): void {
  main()
    .catch((e: Error) => {
      process.stderr.write(`bench: ${e.message}\n`);
      process.exitCode = 1;
    })
    .finally(teardownAll);
}

/** Each step a pgscale run started, in order, with its seconds from the run's journal. */
export function stepSeconds(runDir: string): (readonly [string, number])[] {
  const events = readFileSync(join(runDir, 'journal.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as StampedEvent);
  const at = (type: string, step: string) => Date.parse(events.find((e) => e.type === type && 'step' in e && e.step === step)?.at ?? '');
  return [...new Set(events.flatMap((e) => (e.type === 'step-started' ? [e.step] : [])))].map(
    (s) => [s, (at('step-done', s) - at('step-started', s)) / 1000] as const,
  );
}

/** `pgscale upgrade` of a 16 copy to 17 in link mode without a backup, as the benches run it; `extra` before --no-backup. */
export const pgscaleUpgradeArgs = (pgdata: string, newData: string, stateDir: string, extra: string[] = []): string[] => [
  'upgrade',
  ...['--pgdata', pgdata, '--old-bindir', B16, '--new-bindir', B17, '--to-version', '17', '--new-pgdata', newData],
  ...['--mode', 'link', '--jobs', String(jobs), ...extra, '--no-backup', '--yes', '--json', '--state-dir', stateDir],
];
