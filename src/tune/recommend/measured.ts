/**
 * Settings decided from the storage as measured (pg_test_fsync on the WAL volume, a random-read
 * probe on the data volume) rather than from its class: a virtio disk's rotational flag says
 * nothing, a measurement does. Pure: the figures come in SystemProfile.storageMeasured.
 */
import { formatNumber } from '../../gucCatalog/units.js';
import type { FsyncMeasurement, RandomReadMeasurement, WalSyncMethod, WorkloadProfile } from '../types.js';

export interface Decided<T> {
  value: T;
  reason: string;
}

const us = (iops: number) => `${formatNumber(Math.round(1e6 / iops))}µs`;
const perSecond = (ops: number) => `${formatNumber(Math.round(ops))}/s`;

/** Latency of one 8kB random read (µs) up to which random_page_cost is the value: flash, network flash, virtualised, spinning. */
const RANDOM_PAGE_COST_BY_LATENCY: readonly { upToUs: number; cost: number; what: string }[] = [
  { upToUs: 250, cost: 1.1, what: 'flash-fast: a random read costs about what a sequential one does' },
  { upToUs: 1000, cost: 1.5, what: 'network- or controller-bound flash: random reads pay a round trip sequential read-ahead hides' },
  { upToUs: 4000, cost: 2, what: 'slower than flash, faster than a seek' },
  { upToUs: Infinity, cost: 4, what: 'seek-bound, as on spinning disks (the default)' },
];

export function randomPageCostFromProbe(m: RandomReadMeasurement): Decided<number> | undefined {
  if (!m.direct) return undefined;
  const latencyUs = 1e6 / m.serialIops;
  const step = RANDOM_PAGE_COST_BY_LATENCY.find((s) => latencyUs <= s.upToUs)!;
  return {
    value: step.cost,
    reason: `measured ${us(m.serialIops)} per random 8kB read on the data volume (${perSecond(m.serialIops)} one at a time): ${step.what}`,
  };
}

/** How much more a device serves with many reads in flight than with one: what prefetching can use. */
export function ioConcurrencyFromProbe(m: RandomReadMeasurement): Decided<number> | undefined {
  if (!m.direct) return undefined;
  const scaling = m.parallelIops / m.serialIops;
  const figures = `measured ${perSecond(m.serialIops)} random 8kB reads one at a time, ${perSecond(m.parallelIops)} with ${m.depth} in flight (×${formatNumber(Math.round(scaling * 10) / 10)})`;
  if (scaling >= m.depth / 2) return { value: 200, reason: `${figures}: the device keeps scaling with queue depth, so deep prefetching pays` };
  if (scaling >= 3) return { value: 64, reason: `${figures}: the device serves several reads at once but saturates early` };
  return { value: 2, reason: `${figures}: more reads in flight do not make it faster, deep prefetching only queues` };
}

/** Methods safe on Linux that pgscale chooses between; fsync and open_sync flush more than WAL needs. */
const WAL_SYNC_CANDIDATES: readonly WalSyncMethod[] = ['fdatasync', 'open_datasync'];
const LINUX_DEFAULT_SYNC: WalSyncMethod = 'fdatasync';
/** Another method must beat the default by this much before it is worth leaving it. */
const SYNC_METHOD_MARGIN = 1.25;

export function walSyncMethodFromFsync(m: FsyncMeasurement): Decided<WalSyncMethod> | undefined {
  const base = m.opsPerSecond[LINUX_DEFAULT_SYNC];
  if (base === undefined) return undefined;
  const figures = WAL_SYNC_CANDIDATES.filter((c) => m.opsPerSecond[c] !== undefined)
    .map((c) => `${c} ${perSecond(m.opsPerSecond[c]!)}`)
    .join(', ');
  const best = WAL_SYNC_CANDIDATES.filter((c) => c !== LINUX_DEFAULT_SYNC && (m.opsPerSecond[c] ?? 0) >= base * SYNC_METHOD_MARGIN).sort(
    (a, b) => m.opsPerSecond[b]! - m.opsPerSecond[a]!,
  )[0];
  if (best)
    return {
      value: best,
      reason: `pg_test_fsync on the WAL volume: ${figures} (8kB write + flush): ${best} is at least ${formatNumber(SYNC_METHOD_MARGIN)}× faster`,
    };
  return { value: LINUX_DEFAULT_SYNC, reason: `pg_test_fsync on the WAL volume: ${figures} (8kB write + flush): the Linux default is as fast as any` };
}

/** The flush time of the method chosen, in µs. */
export function flushMicroseconds(m: FsyncMeasurement, method: WalSyncMethod): number | undefined {
  const ops = m.opsPerSecond[method];
  return ops ? 1e6 / ops : undefined;
}

/** Below this flush time waiting for other committers costs more than the flush it saves. */
const GROUP_COMMIT_FROM_US = 500;
/** commit_delay's maximum (µs). */
const COMMIT_DELAY_MAX_US = 100_000;
/** Workloads with many small concurrent commits, which grouping serves. */
const commitHeavy: ReadonlySet<WorkloadProfile> = new Set(['oltp', 'web', 'mixed']);

/**
 * The documentation's starting point: commit_delay half of one 8kB write-and-flush as pg_test_fsync
 * reports it, when flushes are slow enough for grouping commits to pay (commit_siblings keeps a
 * lone committer from ever waiting).
 */
export function groupCommitFromFsync(flushUs: number, workload: WorkloadProfile): { delayUs: number; siblings: number; reason: string } | undefined {
  if (!commitHeavy.has(workload)) return undefined;
  const flush = `${formatNumber(Math.round(flushUs))}µs`;
  if (flushUs < GROUP_COMMIT_FROM_US)
    return { delayUs: 0, siblings: 5, reason: `a WAL flush takes ${flush} (pg_test_fsync): too fast for waiting on other commits to pay (the default)` };
  const delayUs = Math.min(COMMIT_DELAY_MAX_US, Math.round(flushUs / 2));
  return {
    delayUs,
    siblings: 5,
    reason: `half of the ${flush} one WAL flush takes (pg_test_fsync): concurrent commits share a flush instead of queueing for the disk`,
  };
}
