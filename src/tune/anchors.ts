/**
 * The formulas of two widely used tuners, as pure functions, so a benchmark can compare pgscale's
 * recommendations with them on the same machines. Transcribed from their sources (Linux paths only):
 * - pgtune, the web tool (le0pard/pgtune, src/features/configuration/configurationSlice.js, the
 *   release covering PostgreSQL 10–18 with nvme storage and 18's io_method);
 * - timescaledb-tune 0.19 (timescale/timescaledb-tune, pkg/pgtune: memory.go, wal.go, parallel.go,
 *   misc.go; core settings only — timescaledb.max_background_workers, 16 by default, is left out,
 *   but its workers are counted in max_worker_processes as the tool does).
 */
import { GiB, KiB, MiB } from '../gucCatalog/units.js';
import { boolValue, durationValue, enumValue, memoryValue, numberValue, type GucValue } from '../gucCatalog/values.js';
import type { StorageClass, SystemProfile, WorkloadProfile } from './types.js';

export type AnchorSettings = Readonly<Record<string, GucValue>>;

export type PgtuneWorkload = 'web' | 'oltp' | 'dw' | 'desktop' | 'mixed';
export type PgtuneStorage = 'hdd' | 'ssd' | 'san' | 'nvme';

export interface PgtuneInput {
  memoryBytes: number;
  vcpus: number;
  workload: PgtuneWorkload;
  storage: PgtuneStorage;
  maxConnections?: number;
  pgMajor: number;
}

const kB = (kilobytes: number): GucValue => memoryValue(Math.floor(kilobytes) * KiB);

/** pgtune: shared_buffers RAM/4, effective_cache_size 3/4 RAM, work_mem (RAM − shared_buffers) / ((connections + max_worker_processes) × 3). */
export function pgtune(input: PgtuneInput): AnchorSettings {
  const { workload, storage, vcpus, pgMajor } = input;
  const ramKb = input.memoryBytes / KiB;
  const out: Record<string, GucValue> = {};
  const maxConnections = input.maxConnections ?? { web: 200, oltp: 300, dw: 40, desktop: 20, mixed: 100 }[workload];
  out.max_connections = numberValue(maxConnections);

  const sharedBuffersKb = Math.floor(workload === 'desktop' ? ramKb / 16 : ramKb / 4);
  out.shared_buffers = kB(sharedBuffersKb);
  out.huge_pages = enumValue(sharedBuffersKb >= (2 * GiB) / KiB ? 'try' : 'off');
  out.effective_cache_size = kB(workload === 'desktop' ? ramKb / 4 : (ramKb * 3) / 4);
  const maintenanceKb = Math.min(Math.floor(workload === 'dw' ? ramKb / 8 : ramKb / 16), (8 * GiB) / KiB);
  out.maintenance_work_mem = kB(maintenanceKb);

  const walSizes = { web: [1024, 4096], oltp: [2048, 8192], dw: [4096, 16384], desktop: [100, 2048], mixed: [1024, 4096] }[workload];
  out.min_wal_size = memoryValue(walSizes[0]! * MiB);
  out.max_wal_size = memoryValue(walSizes[1]! * MiB);
  out.checkpoint_completion_target = numberValue(0.9);

  // 3 % of shared_buffers, at most 16MB, rounded up to 16MB from 14MB, at least 32kB
  let walBuffersKb = Math.min(Math.floor((3 * sharedBuffersKb) / 100), 16 * 1024);
  if (walBuffersKb > 14 * 1024 && walBuffersKb < 16 * 1024) walBuffersKb = 16 * 1024;
  out.wal_buffers = kB(Math.max(walBuffersKb, 32));
  out.default_statistics_target = numberValue(workload === 'dw' ? 500 : 100);
  out.random_page_cost = numberValue(storage === 'hdd' || workload === 'dw' ? 4 : 1.1);
  out.effective_io_concurrency = numberValue({ hdd: 2, ssd: 200, san: 300, nvme: 1000 }[storage]);

  let maxWorkerProcesses = 8; // the server default pgtune assumes when it sets no parallel settings
  if (vcpus >= 4) {
    maxWorkerProcesses = vcpus;
    out.max_worker_processes = numberValue(vcpus);
    const half = Math.ceil(vcpus / 2);
    out.max_parallel_workers_per_gather = numberValue(workload === 'dw' ? half : Math.min(half, 4));
    out.max_parallel_workers = numberValue(vcpus);
    out.max_parallel_maintenance_workers = numberValue(Math.min(half, 4));
  }

  const workMemKb = (ramKb - sharedBuffersKb) / ((maxConnections + maxWorkerProcesses) * 3);
  const divisor = { web: 1, oltp: 1, dw: 2, desktop: 6, mixed: 2 }[workload];
  out.work_mem = kB(Math.max(Math.floor(workMemKb / divisor), 4 * 1024));

  if (workload === 'desktop') {
    out.wal_level = enumValue('minimal');
    out.max_wal_senders = numberValue(0);
  }
  if (workload === 'web' || workload === 'oltp' || workload === 'mixed') out.jit = boolValue(false);
  out.wal_compression = pgMajor >= 15 ? enumValue('lz4') : boolValue(true);
  if (vcpus >= 16) out.autovacuum_max_workers = numberValue(vcpus >= 32 ? 5 : 4);
  if (maintenanceKb >= (2 * GiB) / KiB) out.autovacuum_work_mem = memoryValue(2 * GiB);
  if (pgMajor >= 18) {
    const ioWorkers = Math.min(32, Math.max(3, Math.floor(vcpus / 4)));
    if (ioWorkers > 3) out.io_workers = numberValue(ioWorkers);
    out.io_method = enumValue('io_uring');
  }
  return out;
}

export interface TimescaledbTuneInput {
  memoryBytes: number;
  vcpus: number;
  maxConnections?: number;
  walVolumeBytes?: number;
}

/** timescaledb-tune 0.19's max_connections when none is given: a step function of memory (misc.go getMaxConns). */
export function timescaledbTuneConnections(memoryBytes: number): number {
  if (memoryBytes <= 2 * GiB) return 25;
  if (memoryBytes <= 4 * GiB) return 50;
  if (memoryBytes <= 6 * GiB) return 75;
  return 100;
}

/** timescaledb.max_background_workers' default, which max_worker_processes makes room for. */
const TIMESCALEDB_BACKGROUND_WORKERS = 16;

/**
 * timescaledb-tune 0.19: shared_buffers RAM/4, effective_cache_size 3/4 RAM, work_mem 6.4MB per GB per
 * 20 connections (the given count, else 100 — not the memory-based max_connections) per 2 vCPUs.
 */
export function timescaledbTune(input: TimescaledbTuneInput): AnchorSettings {
  const { memoryBytes, vcpus } = input;
  const gigs = memoryBytes / GiB;
  const out: Record<string, GucValue> = {};
  out.shared_buffers = memoryValue(Math.floor(memoryBytes / 4));
  out.effective_cache_size = memoryValue(Math.floor((memoryBytes * 3) / 4));
  out.maintenance_work_mem = memoryValue(Math.floor(Math.min(gigs * 128 * MiB, 2047 * MiB)));
  const cpuFactor = Math.round(vcpus / 2);
  const workMemConnections = input.maxConnections ?? 100;
  out.work_mem = memoryValue(Math.floor((gigs * ((6.4 * 20 * MiB) / workMemConnections)) / cpuFactor));

  out.wal_buffers = memoryValue(memoryBytes < 2 * GiB ? Math.floor(gigs * 7864 * KiB) : 16 * MiB);
  // 60 % of the WAL disk rounded up to a 16MB segment, or 1GB
  const segment = 16 * MiB;
  const maxWal = input.walVolumeBytes ? Math.ceil(Math.floor((input.walVolumeBytes * 60) / 100) / segment) * segment : 1 * GiB;
  out.max_wal_size = memoryValue(maxWal);
  out.min_wal_size = memoryValue(Math.floor(maxWal / 2));

  if (vcpus > 1) {
    // 3 built-in processes + TimescaleDB's background workers + one parallel worker per CPU
    out.max_worker_processes = numberValue(3 + TIMESCALEDB_BACKGROUND_WORKERS + vcpus);
    out.max_parallel_workers = numberValue(vcpus);
    out.max_parallel_workers_per_gather = numberValue(Math.round(vcpus / 2));
  }
  out.checkpoint_completion_target = numberValue(0.9);
  out.default_statistics_target = numberValue(100);
  out.max_connections = numberValue(input.maxConnections ?? timescaledbTuneConnections(memoryBytes));
  out.random_page_cost = numberValue(1.1);
  out.max_locks_per_transaction = numberValue(gigs >= 32 ? 1024 : gigs >= 16 ? 512 : gigs >= 8 ? 256 : 128);
  out.autovacuum_max_workers = numberValue(10);
  out.autovacuum_naptime = durationValue(10_000);
  out.effective_io_concurrency = numberValue(256);
  return out;
}

const pgtuneStorage: Record<StorageClass, PgtuneStorage> = {
  'local-nvme': 'nvme',
  'network-block': 'san',
  ssd: 'ssd',
  hdd: 'hdd',
  'virtual-disk': 'ssd',
  'network-fs': 'san',
  tmpfs: 'ssd',
  loop: 'ssd',
  unknown: 'ssd',
};

// pgtune has no read-replica type; a reporting replica serves web-like traffic
const pgtuneWorkload: Record<WorkloadProfile, PgtuneWorkload> = {
  oltp: 'oltp',
  web: 'web',
  dw: 'dw',
  mixed: 'mixed',
  desktop: 'desktop',
  'read-replica': 'web',
};

/** Both anchors' settings for the machine a SystemProfile describes. */
export function anchorsFor(p: SystemProfile): { pgtune: AnchorSettings; timescaledbTune: AnchorSettings } {
  return {
    pgtune: pgtune({
      memoryBytes: p.memoryBytes,
      vcpus: p.vcpus,
      workload: pgtuneWorkload[p.workload],
      storage: pgtuneStorage[p.storage],
      maxConnections: p.maxConnections,
      pgMajor: p.pgMajor,
    }),
    timescaledbTune: timescaledbTune({ memoryBytes: p.memoryBytes, vcpus: p.vcpus, maxConnections: p.maxConnections, walVolumeBytes: p.walVolumeBytes }),
  };
}
