/** Settings that follow from the workload itself rather than the hardware. */
import type { GucCatalog } from '../../gucCatalog/types.js';
import { boolValue, durationValue, enumValue, numberValue } from '../../gucCatalog/values.js';
import type { AreaResult, Proposal, SystemProfile } from '../types.js';
import { onlyProposals } from './area.js';

/** How long replay may wait for conflicting standby queries: most reports finish, lag stays bounded. */
const STANDBY_DELAY_MS = 2 * 60_000;

function readReplica(): Proposal[] {
  return [
    { name: 'hot_standby', value: boolValue(true), reason: 'serve read-only queries during recovery' },
    {
      name: 'hot_standby_feedback',
      value: boolValue(true),
      reason: 'the primary keeps rows standby queries still need, so VACUUM on it stops cancelling them (at the cost of some bloat there)',
    },
    {
      name: 'max_standby_streaming_delay',
      value: durationValue(STANDBY_DELAY_MS),
      reason: 'let conflicting queries run up to 2min before replay cancels them; -1 only for an analytics replica allowed to lag without bound',
    },
    { name: 'max_standby_archive_delay', value: durationValue(STANDBY_DELAY_MS), reason: 'the same grace while replaying archived WAL' },
  ];
}

function jit(p: SystemProfile): Proposal {
  switch (p.workload) {
    case 'oltp':
    case 'web':
    case 'mixed':
    case 'desktop':
      return {
        name: 'jit',
        value: boolValue(false),
        reason: `off for ${p.workload}: compiling takes tens of milliseconds that short queries never win back, and a misestimated cost (jit_above_cost) triggers it on them; analytical sessions can SET jit = on`,
      };
    case 'dw':
    case 'read-replica':
      return {
        name: 'jit',
        value: boolValue(true),
        reason: `on (the default) for ${p.workload}: long scans and aggregations over many rows repay the compile time`,
      };
  }
}

/** lz4 is in 14+ when built with it (dropped, with why, otherwise). */
const LZ4_TOAST_FROM = 14;

export function recommendProfile(p: SystemProfile, _catalog: GucCatalog): AreaResult {
  const proposals: Proposal[] = [jit(p)];
  if (p.pgMajor >= LZ4_TOAST_FROM) {
    proposals.push({
      name: 'default_toast_compression',
      value: enumValue('lz4'),
      reason:
        "large values compress and decompress several times faster than with pglz at a similar ratio (only values stored from now on; pg_dump/restore keeps each column's method)",
    });
  }
  if (p.workload === 'dw') {
    proposals.push({ name: 'default_statistics_target', value: numberValue(500), reason: 'finer statistics for large, skewed tables; ANALYZE takes longer' });
  }
  if (p.workload === 'read-replica') proposals.push(...readReplica());
  return onlyProposals(proposals);
}
