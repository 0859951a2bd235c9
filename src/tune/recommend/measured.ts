/**
 * Settings decided from the storage as measured (pg_test_fsync on the WAL volume, a random-read
 * probe on the data volume) rather than from its class: a virtio disk's rotational flag says
 * nothing, a measurement does. Pure: the figures come in SystemProfile.storageMeasured, the
 * cluster's current values in SystemProfile.currentMeasured (a figure near a class boundary keeps them).
 */
import { formatNumber } from '../../gucCatalog/units.js';
import type { FsyncMeasurement, RandomReadMeasurement, SystemProfile, WalSyncMethod, WorkloadProfile } from '../types.js';

export interface Decided<T> {
  value: T;
  reason: string;
  /** The current value kept: the figure is near a class boundary. */
  held?: boolean;
}

const us = (iops: number) => `${formatNumber(Math.round(1e6 / iops))}µs`;
const perSecond = (ops: number) => `${formatNumber(Math.round(ops))}/s`;

/**
 * A figure this close to a class boundary (as a fraction of the boundary) does not move a setting
 * off the class of its current value: back-to-back runs of pg_test_fsync -s 1 and of the 1.5 s read
 * probe differ by this much on a busy virtual disk, and each flip would be a change (some a restart).
 */
export const HYSTERESIS_BAND = 0.25;

/** Classes of a figure in rising order of it: a class holds figures below its `below` and at or above the one before. */
interface FigureClass<T> {
  below: number;
  value: T;
}

/**
 * The class a figure falls in, unless the class the current value belongs to, widened by the band
 * at both ends, still holds the figure: then that class, and the boundary the figure is close to.
 */
function classOf<T>(figure: number, classes: readonly FigureClass<T>[], currentClass: number): { index: number; nearBoundary?: number } {
  const measured = classes.findIndex((c) => figure < c.below);
  if (currentClass < 0 || currentClass === measured) return { index: measured };
  const lower = currentClass === 0 ? 0 : classes[currentClass - 1]!.below;
  const upper = classes[currentClass]!.below;
  if (figure >= lower / (1 + HYSTERESIS_BAND) && figure < upper * (1 + HYSTERESIS_BAND))
    return { index: currentClass, nearBoundary: figure < lower ? lower : upper };
  return { index: measured };
}

const band = `${formatNumber(HYSTERESIS_BAND * 100)} %`;
const keptNear = (boundary: string, current: string) =>
  `within ${band} of the ${boundary} boundary, so the current ${current} stays: a re-measurement on a noisy disk is no reason to change it`;

/** Latency of one 8kB random read (µs) below which random_page_cost is the value: flash, network flash, virtualised, spinning. */
const RANDOM_PAGE_COST_BY_LATENCY: readonly (FigureClass<number> & { what: string })[] = [
  { below: 250, value: 1.1, what: 'flash-fast: a random read costs about what a sequential one does' },
  { below: 1000, value: 1.5, what: 'network- or controller-bound flash: random reads pay a round trip sequential read-ahead hides' },
  { below: 4000, value: 2, what: 'slower than flash, faster than a seek' },
  { below: Infinity, value: 4, what: 'seek-bound, as on spinning disks (the default)' },
];

export function randomPageCostFromProbe(m: RandomReadMeasurement, current?: number): Decided<number> {
  const latencyUs = 1e6 / m.serialIops;
  const c = classOf(
    latencyUs,
    RANDOM_PAGE_COST_BY_LATENCY,
    RANDOM_PAGE_COST_BY_LATENCY.findIndex((s) => s.value === current),
  );
  const step = RANDOM_PAGE_COST_BY_LATENCY[c.index]!;
  const figures = `measured ${us(m.serialIops)} per random 8kB read on the data volume (${perSecond(m.serialIops)} one at a time)`;
  if (c.nearBoundary === undefined) return { value: step.value, reason: `${figures}: ${step.what}` };
  return { value: step.value, reason: `${figures}: ${keptNear(`${formatNumber(c.nearBoundary)}µs`, String(step.value))}`, held: true };
}

/**
 * How much more a device serves with many reads in flight than with one: what prefetching can use.
 * `floor` is the version's default the caller will not go below, so a current value at it belongs to the classes below it.
 */
export function ioConcurrencyFromProbe(m: RandomReadMeasurement, current?: number, floor = 0): Decided<number> {
  const scaling = m.parallelIops / m.serialIops;
  const classes = [
    { below: 3, value: 2, what: 'more reads in flight do not make it faster, deep prefetching only queues' },
    { below: m.depth / 2, value: 64, what: 'the device serves several reads at once but saturates early' },
    { below: Infinity, value: 200, what: 'the device keeps scaling with queue depth, so deep prefetching pays' },
  ];
  const c = classOf(
    scaling,
    classes,
    classes.findIndex((s) => Math.max(s.value, floor) === current),
  );
  const step = classes[c.index]!;
  const figures = `measured ${perSecond(m.serialIops)} random 8kB reads one at a time, ${perSecond(m.parallelIops)} with ${m.depth} in flight (×${formatNumber(Math.round(scaling * 10) / 10)})`;
  if (c.nearBoundary === undefined) return { value: step.value, reason: `${figures}: ${step.what}` };
  return { value: step.value, reason: `${figures}: ${keptNear(`×${formatNumber(c.nearBoundary)}`, String(current))}`, held: true };
}

/** Methods safe on Linux that pgscale chooses between; fsync and open_sync flush more than WAL needs. */
const LINUX_DEFAULT_SYNC: WalSyncMethod = 'fdatasync';
const ALTERNATIVE_SYNC: WalSyncMethod = 'open_datasync';
/** The alternative must beat the default by this much before it is worth leaving it. */
const SYNC_METHOD_MARGIN = 1.25;

export function walSyncMethodFromFsync(m: FsyncMeasurement, current?: string): Decided<WalSyncMethod> | undefined {
  const base = m.opsPerSecond[LINUX_DEFAULT_SYNC];
  if (base === undefined) return undefined;
  const alternative = m.opsPerSecond[ALTERNATIVE_SYNC];
  const figures = `pg_test_fsync on the WAL volume: ${LINUX_DEFAULT_SYNC} ${perSecond(base)}${alternative === undefined ? '' : `, ${ALTERNATIVE_SYNC} ${perSecond(alternative)}`} (8kB write + flush)`;
  if (alternative === undefined) return { value: LINUX_DEFAULT_SYNC, reason: `${figures}: the Linux default` };
  const classes = [
    { below: SYNC_METHOD_MARGIN, value: LINUX_DEFAULT_SYNC },
    { below: Infinity, value: ALTERNATIVE_SYNC },
  ];
  const c = classOf(
    alternative / base,
    classes,
    classes.findIndex((s) => s.value === current),
  );
  const value = classes[c.index]!.value;
  if (c.nearBoundary !== undefined)
    return { value, reason: `${figures}: ${ALTERNATIVE_SYNC}/${LINUX_DEFAULT_SYNC} ${keptNear(`×${formatNumber(SYNC_METHOD_MARGIN)}`, value)}`, held: true };
  if (value === ALTERNATIVE_SYNC) return { value, reason: `${figures}: ${ALTERNATIVE_SYNC} is at least ${formatNumber(SYNC_METHOD_MARGIN)}× faster` };
  return { value, reason: `${figures}: the Linux default is as fast as any` };
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
 * lone committer from ever waiting). A current delay within the band of that half stays.
 */
export function groupCommitFromFsync(
  flushUs: number,
  workload: WorkloadProfile,
  currentDelayUs?: number,
): { delayUs: number; siblings: number; reason: string; held?: boolean } | undefined {
  if (!commitHeavy.has(workload)) return undefined;
  const flush = `${formatNumber(Math.round(flushUs))}µs`;
  const classes = [
    { below: GROUP_COMMIT_FROM_US, value: 'no delay' },
    { below: Infinity, value: 'half a flush' },
  ];
  const c = classOf(flushUs, classes, currentDelayUs === undefined ? -1 : currentDelayUs === 0 ? 0 : 1);
  const boundary = `${formatNumber(GROUP_COMMIT_FROM_US)}µs`;
  if (c.index === 0) {
    const why = c.nearBoundary === undefined ? 'too fast for waiting on other commits to pay (the default)' : keptNear(boundary, 'commit_delay 0');
    return { delayUs: 0, siblings: 5, reason: `a WAL flush takes ${flush} (pg_test_fsync): ${why}`, ...(c.nearBoundary === undefined ? {} : { held: true }) };
  }
  const half = Math.min(COMMIT_DELAY_MAX_US, Math.round(flushUs / 2));
  const reason = `half of the ${flush} one WAL flush takes (pg_test_fsync): concurrent commits share a flush instead of queueing for the disk`;
  if (currentDelayUs !== undefined && currentDelayUs > 0 && currentDelayUs !== half && Math.abs(currentDelayUs - half) <= HYSTERESIS_BAND * half)
    return {
      delayUs: currentDelayUs,
      siblings: 5,
      reason: `${reason}; the current ${formatNumber(currentDelayUs)}µs is within ${band} of ${formatNumber(half)}µs and stays: flush times vary that much between runs`,
      held: true,
    };
  return {
    delayUs: half,
    siblings: 5,
    reason: c.nearBoundary === undefined ? reason : `${reason}; the flush is ${keptNear(boundary, 'grouping')}`,
  };
}

/** The settings decided from measurements, whose current values SystemProfile.currentMeasured carries for the hysteresis. */
export const MEASURED_SETTINGS = ['random_page_cost', 'effective_io_concurrency', 'wal_sync_method', 'commit_delay'] as const;
export type MeasuredSetting = (typeof MEASURED_SETTINGS)[number];

export function currentNumber(current: SystemProfile['currentMeasured'], name: MeasuredSetting): number | undefined {
  const v = current?.[name];
  return v?.kind === 'number' ? v.value : undefined;
}
