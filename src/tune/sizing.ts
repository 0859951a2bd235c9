/**
 * The numbers the areas share, computed once from the profile in dependency order: shared_buffers
 * and the fixed memory consumers first, then parallel workers, then how many connections fit, then
 * the work_mem that keeps the worst case inside the memory budget.
 */
import { findSetting } from '../gucCatalog/catalog.js';
import type { GucCatalog } from '../gucCatalog/types.js';
import { GiB, KiB, MiB } from '../gucCatalog/units.js';
import { BACKEND_OVERHEAD_BYTES, memoryHeadroom } from './budget.js';
import type { SystemProfile, WorkloadProfile } from './types.js';

/** Rounds down to the 5 leading binary digits (≤ 6.25 % off): stable, readable sizes like 20GB, 3584MB. */
export function roundDownSize(bytes: number): number {
  if (bytes < KiB) return Math.max(0, Math.floor(bytes));
  const step = Math.max(KiB, 2 ** (Math.floor(Math.log2(bytes)) - 4));
  return Math.floor(bytes / step) * step;
}

/** The same, rounding up: for sizes that must hold at least `bytes`. */
export function roundUpSize(bytes: number): number {
  if (bytes < KiB) return Math.ceil(bytes);
  const step = Math.max(KiB, 2 ** (Math.floor(Math.log2(bytes)) - 4));
  return Math.ceil(bytes / step) * step;
}

const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, n));

/** pgtune's defaults: OLTP and web sites run many short sessions; analytics few long ones. */
export const WORKLOAD_CONNECTIONS: Record<WorkloadProfile, number> = {
  oltp: 300,
  web: 200,
  mixed: 100,
  dw: 40,
  desktop: 20,
  'read-replica': 200,
};

/** Below this many connections a server is hard to administer (superuser reserve, monitoring, maintenance). */
export const MIN_CONNECTIONS = 20;

/**
 * work_mem the connection count is sized for, and its floor: PostgreSQL's default (4MB in 13–18),
 * below which every sort and hash spills to disk early. When the budget cannot hold it for the
 * connections, pgscale says so and asks for fewer connections instead of starving every query.
 */
export const WORK_MEM_TARGET = 4 * MiB;

/** Sort/hash nodes a typical query of the workload runs at once. */
export const NODES_PER_QUERY: Record<WorkloadProfile, number> = {
  oltp: 2,
  web: 2,
  desktop: 2,
  mixed: 3,
  'read-replica': 3,
  dw: 3,
};

/** Beyond these a single sort gains little and a misestimated plan risks a lot. */
const WORK_MEM_CAP: Record<WorkloadProfile, number> = {
  oltp: 64 * MiB,
  web: 64 * MiB,
  desktop: 32 * MiB,
  mixed: 256 * MiB,
  'read-replica': 256 * MiB,
  dw: 1 * GiB,
};

/** Parallel workers per Gather: short queries gain little, analytics scale to about 8. */
export const PER_GATHER_CAP: Record<WorkloadProfile, number> = {
  oltp: 2,
  web: 2,
  desktop: 2,
  mixed: 4,
  'read-replica': 4,
  dw: 8,
};

/** Parallel CREATE INDEX / VACUUM workers: little gain beyond 4, except for analytics' big indexes. */
export const MAINTENANCE_WORKERS_CAP: Record<WorkloadProfile, number> = {
  oltp: 4,
  web: 4,
  desktop: 4,
  mixed: 4,
  'read-replica': 4,
  dw: 8,
};

/** Logical replication launcher + the default 4 apply/sync workers, all taken from max_worker_processes. */
export const LOGICAL_REPLICATION_WORKERS = 5;

/** VACUUM cannot use more than 1 GB for dead tuples before 17; 17's TID store has no such limit. */
const VACUUM_MEMORY_CAP = 1 * GiB;
/** Major from which VACUUM's dead-tuple memory is no longer capped at 1GB. */
export const VACUUM_UNCAPPED_FROM = 17;

export interface ParallelSizing {
  maxParallelWorkers: number;
  perGather: number;
  maintenance: number;
  maxWorkerProcesses: number;
}

export interface ConnectionSizing {
  value: number;
  /** Where the number came from: the user, the workload's default, or the memory it would need. */
  source: 'user' | 'workload' | 'memory';
  workloadDefault: number;
  /** Connections the budget holds with work_mem at WORK_MEM_TARGET (may be below the value when MIN_CONNECTIONS wins). */
  fitAtTarget: number;
}

export interface Sizing {
  sharedBuffersBytes: number;
  effectiveCacheBytes: number;
  walBuffersBytes: number;
  maintenanceWorkMemBytes: number;
  autovacuumMaxWorkers: number;
  autovacuumWorkMemBytes: number;
  parallel: ParallelSizing;
  connections: ConnectionSizing;
  workMemBytes: number;
  /** What the budget alone would allow per sort/hash node, before the WORK_MEM_TARGET floor. */
  workMemBudgetBytes: number;
  hashMemMultiplier: number;
  nodesPerQuery: number;
}

function sharedBuffersFor(p: SystemProfile): number {
  // 25 % leaves the rest to the page cache, which PostgreSQL relies on too; a desktop shares the machine
  return roundDownSize(p.workload === 'desktop' ? p.memoryBytes / 16 : p.memoryBytes / 4);
}

function walBuffersFor(p: SystemProfile, sharedBuffersBytes: number): number {
  // the server's own -1 rule is shared_buffers/32 capped at one 16MB segment; many concurrent
  // writers on a big machine wait on WAL insertion less with 64MB
  const writeHeavy = p.workload === 'oltp' || p.workload === 'mixed' || p.workload === 'dw';
  if (writeHeavy && sharedBuffersBytes >= 8 * GiB) return 64 * MiB;
  return clamp(roundDownSize(sharedBuffersBytes / 32), 64 * KiB, 16 * MiB);
}

/** maintenance_work_mem = memory / divisor, at most cap: analytics builds bigger indexes more often. */
export const MAINTENANCE_WORK_MEM_RULE: Record<WorkloadProfile, { divisor: number; cap: number }> = {
  oltp: { divisor: 16, cap: 2 * GiB },
  web: { divisor: 16, cap: 2 * GiB },
  mixed: { divisor: 16, cap: 2 * GiB },
  'read-replica': { divisor: 16, cap: 2 * GiB },
  dw: { divisor: 8, cap: 4 * GiB },
  desktop: { divisor: 16, cap: 256 * MiB },
};

function maintenanceWorkMemFor(p: SystemProfile): number {
  const rule = MAINTENANCE_WORK_MEM_RULE[p.workload];
  // never below the server's 64MB default
  return roundDownSize(clamp(p.memoryBytes / rule.divisor, 64 * MiB, rule.cap));
}

export function autovacuumMaxWorkersFor(p: SystemProfile): number {
  // one worker per 4 vCPUs keeps many busy tables vacuumed; more only dilutes the shared cost limit
  return clamp(Math.floor(p.vcpus / 4), 3, 8);
}

function autovacuumWorkMemFor(p: SystemProfile, maintenanceWorkMemBytes: number, workers: number): number {
  // every worker may hold it at once: together at most 1/8 of memory
  const cap = p.pgMajor < VACUUM_UNCAPPED_FROM ? VACUUM_MEMORY_CAP : Infinity;
  return roundDownSize(clamp(Math.min(maintenanceWorkMemBytes, p.memoryBytes / (8 * workers)), 16 * MiB, cap));
}

export function parallelFor(p: SystemProfile): ParallelSizing {
  const maxParallelWorkers = p.vcpus;
  const half = Math.ceil(p.vcpus / 2);
  const perGather = p.vcpus < 2 ? 0 : Math.min(PER_GATHER_CAP[p.workload], half);
  const maintenance = p.vcpus < 2 ? 0 : Math.min(MAINTENANCE_WORKERS_CAP[p.workload], half);
  const maxWorkerProcesses = Math.max(8, maxParallelWorkers + p.extensionBackgroundWorkers + LOGICAL_REPLICATION_WORKERS);
  return { maxParallelWorkers, perGather, maintenance, maxWorkerProcesses };
}

/** The version's built-in hash_mem_multiplier (1 in 13–14, 2 from 15), which pgscale leaves alone. */
export const hashMemMultiplierOf = (catalog: GucCatalog): number => {
  const d = findSetting(catalog, 'hash_mem_multiplier')?.default;
  return typeof d === 'number' ? d : 1;
};

export function sizeFor(p: SystemProfile, catalog: GucCatalog): Sizing {
  const sharedBuffersBytes = sharedBuffersFor(p);
  const walBuffersBytes = walBuffersFor(p, sharedBuffersBytes);
  const maintenanceWorkMemBytes = maintenanceWorkMemFor(p);
  const autovacuumMaxWorkers = autovacuumMaxWorkersFor(p);
  const autovacuumWorkMemBytes = autovacuumWorkMemFor(p, maintenanceWorkMemBytes, autovacuumMaxWorkers);
  const parallel = parallelFor(p);
  const hashMemMultiplier = hashMemMultiplierOf(catalog);
  const nodesPerQuery = NODES_PER_QUERY[p.workload];

  // memory left for backends once the fixed consumers are counted
  const available =
    p.memoryBytes -
    memoryHeadroom(p.memoryBytes) -
    sharedBuffersBytes -
    walBuffersBytes -
    maintenanceWorkMemBytes -
    autovacuumMaxWorkers * (autovacuumWorkMemBytes + BACKEND_OVERHEAD_BYTES);
  const perProcessAt = (workMem: number) => BACKEND_OVERHEAD_BYTES + workMem * hashMemMultiplier * nodesPerQuery;

  const workloadDefault = WORKLOAD_CONNECTIONS[p.workload];
  const fitAtTarget = Math.max(0, Math.floor(available / perProcessAt(WORK_MEM_TARGET)) - parallel.maxParallelWorkers);
  let connections: ConnectionSizing;
  if (p.maxConnections !== undefined) {
    connections = { value: p.maxConnections, source: 'user', workloadDefault, fitAtTarget };
  } else {
    const capped = Math.max(MIN_CONNECTIONS, Math.floor(fitAtTarget / 10) * 10);
    connections =
      capped < workloadDefault
        ? { value: capped, source: 'memory', workloadDefault, fitAtTarget }
        : { value: workloadDefault, source: 'workload', workloadDefault, fitAtTarget };
  }

  const processes = connections.value + parallel.maxParallelWorkers;
  const perProcess = (available - processes * BACKEND_OVERHEAD_BYTES) / (processes * hashMemMultiplier * nodesPerQuery);
  const workMemBudgetBytes = Math.max(0, roundDownSize(perProcess));
  // never below the server's default: a budget that cannot hold it is reported, with fewer connections to set
  const workMemBytes = Math.max(WORK_MEM_TARGET, Math.min(workMemBudgetBytes, WORK_MEM_CAP[p.workload]));

  return {
    sharedBuffersBytes,
    effectiveCacheBytes: roundDownSize(p.workload === 'desktop' ? p.memoryBytes / 4 : (p.memoryBytes * 3) / 4),
    walBuffersBytes,
    maintenanceWorkMemBytes,
    autovacuumMaxWorkers,
    autovacuumWorkMemBytes,
    parallel,
    connections,
    workMemBytes,
    workMemBudgetBytes,
    hashMemMultiplier,
    nodesPerQuery,
  };
}
