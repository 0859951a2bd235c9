/**
 * The worst-case memory budget: everything PostgreSQL may hold at once when every connection and
 * worker uses its full allowance must fit in the effective memory (host RAM or cgroup limit) minus
 * a headroom for the kernel, page cache and other processes. Exceeding it is how the OOM killer
 * (or a cgroup's memory.max) ends a postmaster.
 */
import { MiB } from '../gucCatalog/units.js';
import type { MemoryBudget } from './types.js';

/** Private memory of a backend before any work_mem: catalog and plan caches, stack, libpq buffers. */
export const BACKEND_OVERHEAD_BYTES = 4 * MiB;

const HEADROOM_FRACTION = 0.1;
/** Small hosts keep more than 10 % (the kernel and system daemons need a few hundred MB whatever the size), */
const SMALL_HOST_HEADROOM_BYTES = 256 * MiB;
/** but never a fixed amount that would take half of a 512MB host. */
const SMALL_HOST_HEADROOM_FRACTION = 0.2;

/** What the kernel and everything else keep: 10 % of memory, and on small hosts 256MB but at most 20 %. */
export const memoryHeadroom = (effectiveMemoryBytes: number): number =>
  Math.floor(Math.max(effectiveMemoryBytes * HEADROOM_FRACTION, Math.min(SMALL_HOST_HEADROOM_BYTES, effectiveMemoryBytes * SMALL_HOST_HEADROOM_FRACTION)));

export interface MemoryBudgetInput {
  effectiveMemoryBytes: number;
  sharedBuffersBytes: number;
  walBuffersBytes: number;
  maxConnections: number;
  maxParallelWorkers: number;
  workMemBytes: number;
  hashMemMultiplier: number;
  /** Sort and hash nodes one query may run at once (each gets work_mem, hashes × hash_mem_multiplier). */
  nodesPerQuery: number;
  maintenanceWorkMemBytes: number;
  autovacuumMaxWorkers: number;
  autovacuumWorkMemBytes: number;
}

const queryProcessBytes = (input: Omit<MemoryBudgetInput, 'maxConnections'>): number =>
  BACKEND_OVERHEAD_BYTES + input.workMemBytes * input.hashMemMultiplier * input.nodesPerQuery;

/**
 * Shared buffers and WAL buffers, plus a backend's overhead for every connection, parallel worker and
 * autovacuum worker, plus work_mem × hash_mem_multiplier × nodesPerQuery for every connection and
 * parallel worker, plus one manual maintenance operation (CREATE INDEX, VACUUM: parallel workers
 * share its maintenance_work_mem), plus every autovacuum worker's autovacuum_work_mem.
 */
export function memoryBudget(input: MemoryBudgetInput): MemoryBudget {
  const queryProcesses = input.maxConnections + input.maxParallelWorkers;
  const components = {
    sharedMemory: input.sharedBuffersBytes + input.walBuffersBytes,
    backendOverhead: (queryProcesses + input.autovacuumMaxWorkers) * BACKEND_OVERHEAD_BYTES,
    queryMemory: queryProcesses * (queryProcessBytes(input) - BACKEND_OVERHEAD_BYTES),
    maintenance: input.maintenanceWorkMemBytes,
    autovacuum: input.autovacuumMaxWorkers * input.autovacuumWorkMemBytes,
  };
  const headroomBytes = memoryHeadroom(input.effectiveMemoryBytes);
  const limitBytes = input.effectiveMemoryBytes - headroomBytes;
  const totalBytes = Object.values(components).reduce((a, b) => a + b, 0);
  return { effectiveMemoryBytes: input.effectiveMemoryBytes, headroomBytes, limitBytes, components, totalBytes, fits: totalBytes <= limitBytes };
}

/** How many connections the budget holds with everything else as given (0 when not even one does). */
export function connectionsThatFit(input: Omit<MemoryBudgetInput, 'maxConnections'>): number {
  const without = memoryBudget({ ...input, maxConnections: 0 });
  const room = without.limitBytes - without.totalBytes;
  return Math.max(0, Math.floor(room / queryProcessBytes(input)));
}
