/**
 * Measuring what `pgscale tune` decides from, briefly and safely, on a cluster of this host:
 * - the WAL write rate: the insert position sampled over a short window, and pg_stat_wal's bytes
 *   since its last reset (14+); the higher is used;
 * - WAL flushes: `pg_test_fsync -s 1` of the cluster's own installation, in a temporary file on the
 *   WAL volume (pg_test_fsync removes it; so does pgscale);
 * - random reads: 8kB reads of a temporary file on the data volume with O_DIRECT, one at a time and
 *   many at once, for a second or two each (src/tune/randomReads.ts; file removed after);
 * - the largest partition tree in any database, for max_locks_per_transaction.
 * Nothing is measured on a nearly full volume. The figures are decided on elsewhere (recommend/measured.ts).
 */
import { existsSync, realpathSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { openDb, type ClusterAccess } from '../cluster/access.js';
import { formatNumber, GiB, MiB } from '../gucCatalog/units.js';
import { formatBytes } from '../format.js';
import type { OsUser, Runner } from '../runner.js';
import type { Db } from '../sql.js';
import { statements } from '../sql.js';
import { probeRandomReads } from './randomReads.js';
import type { FsyncMeasurement, RandomReadMeasurement, StorageMeasurement, WalSyncMethod } from './types.js';

/** How long the WAL insert position is sampled. */
export const WAL_RATE_WINDOW_MS = 5_000;
/** pg_test_fsync seconds per test: some 16 tests, so about 16 s. */
const FSYNC_SECONDS = 1;
const PROBE_FILE_BYTES = 128 * MiB;
const PROBE_SECONDS = 1.5;
const PROBE_DEPTH = 16;
/** A volume with less free than this is left alone. */
const MIN_FREE_FRACTION = 0.1;
const MIN_FREE_BYTES = 1 * GiB;

// ---------------------------------------------------------------- pure parsing and judging

/** Reason not to write a test file on a volume, or undefined when there is room. */
export function fullVolumeReason(freeBytes: number, totalBytes: number, what: string): string | undefined {
  if (freeBytes < MIN_FREE_BYTES || freeBytes < totalBytes * MIN_FREE_FRACTION) {
    return `${what} not measured: only ${formatBytes(freeBytes)} of ${formatBytes(totalBytes)} free (a test file needs at least ${formatBytes(MIN_FREE_BYTES)} and 10 % free)`;
  }
  return undefined;
}

const SYNC_METHODS: readonly WalSyncMethod[] = ['open_datasync', 'fdatasync', 'fsync', 'open_sync'];

/** pg_test_fsync's first section ("one 8kB write"): ops/s per method it could run. */
export function parseFsyncOutput(text: string): Partial<Record<WalSyncMethod, number>> {
  const start = text.search(/using one 8kB write/i);
  if (start < 0) return {};
  const rest = text.slice(start);
  const end = rest.search(/\n\s*\n\S|using two 8kB writes/i);
  const section = end < 0 ? rest : rest.slice(0, end);
  const out: Partial<Record<WalSyncMethod, number>> = {};
  for (const m of section.matchAll(/^\s*(open_datasync|fdatasync|fsync|open_sync)\s+([\d.]+)\s+ops\/sec/gm)) {
    out[m[1] as WalSyncMethod] = Number(m[2]);
  }
  return Object.fromEntries(SYNC_METHODS.filter((k) => out[k] !== undefined).map((k) => [k, out[k]]));
}

/** The WAL rate from an insert-position window and pg_stat_wal's average since reset: the higher, with both figures. */
export function walRateFrom(
  window: { bytes: number; seconds: number } | undefined,
  sinceReset: { bytes: number; seconds: number } | undefined,
): { bytesPerSecond: number; source: string } | undefined {
  const rate = (s: { bytes: number; seconds: number }) => (s.seconds > 0 ? s.bytes / s.seconds : 0);
  const parts: string[] = [];
  if (window) parts.push(`${formatBytes(window.bytes)} in a ${formatNumber(Math.round(window.seconds))}s sample`);
  if (sinceReset) parts.push(`${formatBytes(sinceReset.bytes)} in ${formatNumber(Math.round(sinceReset.seconds / 3600))}h since pg_stat_wal was reset`);
  const best = Math.max(window ? rate(window) : 0, sinceReset ? rate(sinceReset) : 0);
  if (!parts.length || best <= 0) return undefined;
  return { bytesPerSecond: best, source: `measured on the cluster: ${parts.join(', ')}; the higher rate is used` };
}

// ---------------------------------------------------------------- gathering

async function walRateOf(db: Db, windowMs: number): Promise<{ bytesPerSecond: number; source: string } | string> {
  const [a] = await db.query(statements.walPosition());
  if (!a?.wal_bytes) return 'WAL rate not measured: the server is a standby (no insert position); pass --wal-rate';
  await sleep(windowMs);
  const [b] = await db.query(statements.walPosition());
  const window = { bytes: Number(b!.wal_bytes) - Number(a.wal_bytes), seconds: b!.at_epoch - a.at_epoch };
  let sinceReset: { bytes: number; seconds: number } | undefined;
  try {
    const [s] = await db.query(statements.walSinceStatsReset());
    if (s && s.seconds > 0) sinceReset = { bytes: Number(s.wal_bytes), seconds: s.seconds };
  } catch {
    /* pg_stat_wal is 14+ */
  }
  return (
    walRateFrom(window, sinceReset) ?? 'WAL rate not measured: no WAL written during the sample and no pg_stat_wal history; pass --wal-rate for the peak rate'
  );
}

async function largestPartitionTree(access: ClusterAccess, runner: Runner, db: Db): Promise<number> {
  let largest = 0;
  for (const d of await db.query(statements.databases())) {
    const other = await openDb(access, runner, undefined, d.name);
    try {
      const [t] = await other.query(statements.partitionTrees());
      largest = Math.max(largest, t?.largest ?? 0);
    } finally {
      await other.close();
    }
  }
  return largest;
}

function volumeCheck(dir: string, what: string): string | undefined {
  const fs = statfsSync(dir);
  return fullVolumeReason(fs.bavail * fs.bsize, fs.blocks * fs.bsize, what);
}

export async function fsyncOnWalVolume(runner: Runner, bindir: string, walDir: string, owner: OsUser): Promise<FsyncMeasurement | string> {
  const program = join(bindir, 'pg_test_fsync');
  if (!existsSync(program)) return `WAL flushes not measured: no ${program}`;
  const full = volumeCheck(walDir, 'WAL flushes');
  if (full) return full;
  // pg_test_fsync unlinks its file when done; a name no WAL tool takes for a segment
  const file = join(walDir, `pgscale-fsync-probe.${process.pid}.tmp`);
  const res = await runner.run({ program, args: ['-s', String(FSYNC_SECONDS), '-f', file], runAs: owner, cwd: '/', timeoutMs: 120_000 });
  await runner.run({ program: 'rm', args: ['-f', file], runAs: owner, cwd: '/' });
  const opsPerSecond = parseFsyncOutput(res.stdout);
  if (res.exitCode !== 0 || Object.keys(opsPerSecond).length === 0)
    return `WAL flushes not measured: pg_test_fsync failed (${(res.stderr || res.stdout).trim().split('\n').pop()})`;
  return { path: walDir, seconds: FSYNC_SECONDS, opsPerSecond };
}

/** Writes the probe file as the data directory's owner, reads it back at random with O_DIRECT, removes it. */
export async function randomReadsOnDataVolume(runner: Runner, dataDir: string, owner: OsUser): Promise<RandomReadMeasurement | string> {
  const full = volumeCheck(dataDir, 'random reads');
  if (full) return full;
  // base/pgsql_tmp is the server's own temporary-file directory: skipped by base backups, emptied at start
  const tmpDir = join(dataDir, 'base', 'pgsql_tmp');
  await runner.run({ program: 'mkdir', args: ['-p', '-m', '0700', tmpDir], runAs: owner, cwd: '/' });
  const file = join(tmpDir, `pgscale-read-probe.${process.pid}.tmp`);
  try {
    // random bytes: a compressing or deduplicating volume would not store zeros, and reads of them would not reach the disk
    const write = await runner.run({
      program: 'dd',
      args: ['if=/dev/urandom', `of=${file}`, 'bs=1M', `count=${PROBE_FILE_BYTES / MiB}`, 'conv=excl,fsync', 'status=none'],
      runAs: owner,
      cwd: '/',
      timeoutMs: 60_000,
    });
    if (write.exitCode !== 0) return `random reads not measured: writing the probe file failed (${write.stderr.trim().split('\n').pop()})`;
    const reads = await probeRandomReads(file, PROBE_FILE_BYTES, PROBE_SECONDS, PROBE_DEPTH).catch((e: Error) => `a probe read failed: ${e.message}`);
    // no figures rather than reads through the page cache, which say nothing about the disk
    if (typeof reads === 'string') return `random reads not measured: ${reads}`;
    return { path: dataDir, ...reads, depth: PROBE_DEPTH, fileBytes: PROBE_FILE_BYTES, seconds: PROBE_SECONDS };
  } finally {
    await runner.run({ program: 'rm', args: ['-f', file], runAs: owner, cwd: '/' });
  }
}

export interface Measurements {
  walRate?: { bytesPerSecond: number; source: string };
  storage: StorageMeasurement;
  largestPartitionTree?: number;
  notes: string[];
}

/** Every measurement that the cluster allows: SQL ones when it runs, storage ones when its volumes are local. */
export async function measureCluster(ctx: {
  runner: Runner;
  access: ClusterAccess;
  running: boolean;
  dataDir: string | null;
  walDir: string | null;
  owner: OsUser | null;
  bindir: string | null;
  measureWalRate: boolean;
  /** false when --storage was given: the DBA's word on the data volume wins over a probe. */
  probeReads: boolean;
}): Promise<Measurements> {
  const notes: string[] = [];
  const out: Measurements = { storage: {}, notes };
  if (ctx.running) {
    try {
      const db = await openDb(ctx.access, ctx.runner);
      try {
        if (ctx.measureWalRate) {
          const rate = await walRateOf(db, WAL_RATE_WINDOW_MS);
          if (typeof rate === 'string') notes.push(rate);
          else {
            out.walRate = rate;
            notes.push(`WAL written at ${formatBytes(rate.bytesPerSecond)}/s (${rate.source})`);
          }
        }
        out.largestPartitionTree = await largestPartitionTree(ctx.access, ctx.runner, db);
        notes.push(`largest partition tree: ${out.largestPartitionTree} partitions`);
      } finally {
        await db.close();
      }
    } catch (e) {
      notes.push(`WAL rate and partitions not measured: ${(e as Error).message}`);
    }
  }
  if (ctx.dataDir && ctx.owner && ctx.walDir) {
    const walDir = realpathSync(ctx.walDir);
    const fsync = ctx.bindir
      ? await fsyncOnWalVolume(ctx.runner, ctx.bindir, walDir, ctx.owner)
      : "WAL flushes not measured: no server programs of the cluster's version here";
    if (typeof fsync === 'string') notes.push(fsync);
    else {
      out.storage.fsync = fsync;
      notes.push(
        `WAL flushes measured (pg_test_fsync -s ${fsync.seconds}, ${walDir}): ${Object.entries(fsync.opsPerSecond)
          .map(([k, v]) => `${k} ${formatNumber(Math.round(v))}/s`)
          .join(', ')}`,
      );
    }
    const reads = ctx.probeReads ? await randomReadsOnDataVolume(ctx.runner, ctx.dataDir, ctx.owner) : 'random reads not measured: --storage given';
    if (typeof reads === 'string') notes.push(reads);
    else {
      out.storage.randomRead = reads;
      notes.push(
        `random 8kB reads measured on the data volume (${formatBytes(reads.fileBytes)} file, O_DIRECT): ` +
          `${formatNumber(Math.round(reads.serialIops))}/s one at a time, ${formatNumber(Math.round(reads.parallelIops))}/s with ${reads.depth} in flight`,
      );
    }
  }
  return out;
}
