/** Settings that follow from the workload itself rather than the hardware. */
import type { GucCatalog } from '../../gucCatalog/types.js';
import { boolValue, durationValue, numberValue } from '../../gucCatalog/values.js';
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

export function recommendProfile(p: SystemProfile, _catalog: GucCatalog): AreaResult {
  switch (p.workload) {
    case 'oltp':
    case 'web':
      return onlyProposals([
        { name: 'jit', value: boolValue(false), reason: 'JIT compilation costs more than short queries save, and misestimated plans trigger it on them' },
      ]);
    case 'dw':
      return onlyProposals([
        { name: 'default_statistics_target', value: numberValue(500), reason: 'finer statistics for large, skewed tables; ANALYZE takes longer' },
      ]);
    case 'read-replica':
      return onlyProposals(readReplica());
    case 'mixed':
    case 'desktop':
      return onlyProposals([]);
  }
}
