/** WAL buffers, checkpoint spacing and WAL size, WAL compression. */
import { findSetting } from '../../gucCatalog/catalog.js';
import type { GucCatalog } from '../../gucCatalog/types.js';
import { GiB, MiB, formatDuration, formatMemory } from '../../gucCatalog/units.js';
import { boolValue, durationValue, enumValue, memoryValue, numberValue } from '../../gucCatalog/values.js';
import { roundDownSize, roundUpSize, sizeFor } from '../sizing.js';
import type { AreaResult, Proposal, StorageClass, SystemProfile, WorkloadProfile } from '../types.js';
import { currentNumber, flushMicroseconds, groupCommitFromFsync, walSyncMethodFromFsync } from './measured.js';

/** pgtune's WAL between checkpoints per workload, used when the write rate is unknown. */
const WORKLOAD_MAX_WAL: Record<WorkloadProfile, number> = {
  web: 4 * GiB,
  oltp: 8 * GiB,
  mixed: 4 * GiB,
  dw: 16 * GiB,
  desktop: 2 * GiB,
  'read-replica': 4 * GiB,
};

/** Longer than the 5min default: fewer full-page images after each checkpoint, at the price of longer crash recovery. */
const CHECKPOINT_TIMEOUT_MS = 15 * 60_000;
const DESKTOP_CHECKPOINT_TIMEOUT_MS = 5 * 60_000;
const COMPLETION_TARGET = 0.9;
/** The WAL volume also holds WAL kept for slots, wal_keep_size and archiving lag: max_wal_size gets half. */
const WAL_VOLUME_SHARE = 0.5;
const MIN_WAL_FLOOR = 80 * MiB;

/** Storage where WAL bandwidth is scarce enough that even pglz's CPU cost pays off. */
const slowWalStorage: ReadonlySet<StorageClass> = new Set(['hdd', 'network-block', 'virtual-disk', 'network-fs']);

function walCompression(p: SystemProfile, catalog: GucCatalog): Proposal | undefined {
  const def = findSetting(catalog, 'wal_compression');
  if (!def) return undefined;
  const slow = slowWalStorage.has(p.storage);
  if (def.type === 'bool') {
    // 13 and 14 only have pglz
    return slow
      ? { name: def.name, value: boolValue(true), reason: 'full-page images compressed with pglz: less WAL to write on slow storage, for some CPU' }
      : undefined;
  }
  const fast = (['lz4', 'zstd'] as const).find((algo) => def.enumValues?.includes(algo) && p.buildFeatures.includes(algo));
  if (fast) {
    return { name: def.name, value: enumValue(fast), reason: `full-page images compressed with ${fast} (built in): much less WAL for little CPU` };
  }
  return slow ? { name: def.name, value: enumValue('pglz'), reason: 'no lz4/zstd in this build; pglz still pays off on slow WAL storage' } : undefined;
}

function maxWalSize(p: SystemProfile, timeoutMs: number): { bytes: number; reason: string; warnings: string[] } {
  let bytes: number;
  let reason: string;
  if (p.walWriteBytesPerSecond !== undefined) {
    // a checkpoint is forced once WAL since the last one exceeds max_wal_size / (1 + completion target)
    bytes = Math.max(1 * GiB, roundUpSize(p.walWriteBytesPerSecond * (timeoutMs / 1000) * (1 + COMPLETION_TARGET)));
    reason =
      `${formatMemory(roundUpSize(p.walWriteBytesPerSecond))}/s of WAL${p.walWriteRateSource ? ` (${p.walWriteRateSource})` : ''} over checkpoint_timeout ${formatDuration(timeoutMs)} × (1 + ${COMPLETION_TARGET}): ` +
      `checkpoints come on time, not forced by WAL volume${bytes === 1 * GiB ? '; at least 1GB, the default' : ''}`;
  } else {
    bytes = WORKLOAD_MAX_WAL[p.workload];
    reason = `the ${p.workload} profile's usual WAL between checkpoints: the WAL write rate is unknown (tune a running cluster to measure it, or pass --wal-rate)`;
  }
  const warnings: string[] = [];
  if (p.walVolumeBytes !== undefined) {
    const cap = roundDownSize(p.walVolumeBytes * WAL_VOLUME_SHARE);
    if (bytes > cap) {
      if (p.walWriteBytesPerSecond !== undefined) {
        warnings.push(
          `the ${formatMemory(p.walVolumeBytes)} WAL volume is too small for the write rate: checkpoints will be forced by WAL volume more often than every ${formatDuration(timeoutMs)}`,
        );
      }
      bytes = cap;
      reason += `; cut to half the ${formatMemory(p.walVolumeBytes)} WAL volume, which also holds WAL kept for slots and archiving`;
    }
  }
  return { bytes, reason, warnings };
}

/** wal_sync_method and group commit from pg_test_fsync on the WAL volume, when it was measured. */
function fromFsync(p: SystemProfile): Proposal[] {
  const fsync = p.storageMeasured?.fsync;
  if (!fsync) return [];
  const currentMethod = p.currentMeasured?.wal_sync_method;
  const method = walSyncMethodFromFsync(fsync, currentMethod?.kind === 'enum' ? currentMethod.value : undefined);
  if (!method) return [];
  const out: Proposal[] = [{ name: 'wal_sync_method', value: enumValue(method.value), reason: method.reason, held: method.held }];
  const flushUs = flushMicroseconds(fsync, method.value);
  const group = flushUs === undefined ? undefined : groupCommitFromFsync(flushUs, p.workload, currentNumber(p.currentMeasured, 'commit_delay'));
  if (group) {
    out.push({ name: 'commit_delay', value: numberValue(group.delayUs), reason: group.reason, held: group.held });
    if (group.delayUs > 0) {
      out.push({
        name: 'commit_siblings',
        value: numberValue(group.siblings),
        reason: `the default: commits wait only when ${group.siblings} other transactions are active, so a lone committer never does`,
      });
    }
  }
  return out;
}

export function recommendWal(p: SystemProfile, catalog: GucCatalog): AreaResult {
  const { walBuffersBytes, sharedBuffersBytes } = sizeFor(p, catalog);
  const timeoutMs = p.workload === 'desktop' ? DESKTOP_CHECKPOINT_TIMEOUT_MS : CHECKPOINT_TIMEOUT_MS;
  const maxWal = maxWalSize(p, timeoutMs);
  const minWalBytes = Math.min(maxWal.bytes, Math.max(MIN_WAL_FLOOR, roundDownSize(maxWal.bytes / 4)));
  const proposals: Proposal[] = [
    {
      name: 'wal_buffers',
      value: memoryValue(walBuffersBytes),
      reason:
        walBuffersBytes > 16 * MiB
          ? `shared_buffers ${formatMemory(sharedBuffersBytes)} with many concurrent writers: less waiting to insert WAL than with one 16MB segment`
          : 'shared_buffers/32, at most one 16MB WAL segment (what -1 would pick)',
    },
    { name: 'max_wal_size', value: memoryValue(maxWal.bytes), reason: maxWal.reason },
    {
      name: 'min_wal_size',
      value: memoryValue(minWalBytes),
      reason: 'a quarter of max_wal_size stays preallocated so bursts reuse segments instead of creating them',
    },
    {
      name: 'checkpoint_timeout',
      value: durationValue(timeoutMs),
      reason:
        timeoutMs === CHECKPOINT_TIMEOUT_MS
          ? 'fewer checkpoints write fewer full-page images; crash recovery may take a few minutes longer'
          : 'the default: a desktop favours quick crash recovery',
    },
    {
      name: 'checkpoint_completion_target',
      value: numberValue(COMPLETION_TARGET),
      reason: 'spread checkpoint writes over 90 % of the interval (the default from 14 on)',
    },
  ];
  const compression = walCompression(p, catalog);
  if (compression) proposals.push(compression);
  proposals.push(...fromFsync(p));
  return { proposals, advisories: [], warnings: maxWal.warnings };
}
