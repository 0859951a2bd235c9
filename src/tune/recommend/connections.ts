/** max_connections: the workload's count, cut to what the memory budget can carry. */
import type { GucCatalog } from '../../gucCatalog/types.js';
import { formatMemory } from '../../gucCatalog/units.js';
import { numberValue } from '../../gucCatalog/values.js';
import { MIN_CONNECTIONS, WORK_MEM_TARGET, sizeFor } from '../sizing.js';
import type { AreaResult, SystemProfile } from '../types.js';
import { onlyProposals } from './area.js';

export function recommendConnections(p: SystemProfile, catalog: GucCatalog): AreaResult {
  const { connections } = sizeFor(p, catalog);
  const why = {
    user: 'as asked',
    workload: `the ${p.workload} profile's usual count; put a connection pooler in front for more clients`,
    memory:
      connections.fitAtTarget >= connections.value
        ? `the ${p.workload} profile would want ${connections.workloadDefault}, but only ${connections.value} fit in memory with ` +
          `work_mem ${formatMemory(WORK_MEM_TARGET)} each; put a connection pooler in front for more clients`
        : `the ${p.workload} profile would want ${connections.workloadDefault}, but with work_mem ${formatMemory(WORK_MEM_TARGET)} the memory budget holds only ` +
          `${connections.fitAtTarget}; ${MIN_CONNECTIONS} is the least a server can be administered with, so it is set and the budget does not fit (see the warning)`,
  }[connections.source];
  const standby =
    p.workload === 'read-replica'
      ? '; a hot standby refuses to start with fewer than its primary has (likewise max_worker_processes, max_wal_senders, max_prepared_transactions, max_locks_per_transaction)'
      : '';
  const proposals = [{ name: 'max_connections', value: numberValue(connections.value), reason: why + standby }];
  const locks = locksForPartitions(p.largestPartitionTree);
  if (locks) proposals.push(locks);
  return onlyProposals(proposals);
}

/** The lock table is sized for max_locks_per_transaction on average per transaction: 64 by default. */
const DEFAULT_LOCKS_PER_TRANSACTION = 64;
/** Locks per partition a query that is not pruned takes: the partition and (about) one index. */
const LOCKS_PER_PARTITION = 2;
/** Each slot costs ~270 bytes of shared memory per connection: beyond this, partition pruning is the fix. */
const MAX_LOCKS_CAP = 1024;

/** max_locks_per_transaction for a schema whose largest partition tree has `partitions` leaves (unknown without a cluster). */
export function locksForPartitions(partitions: number | undefined): { name: string; value: ReturnType<typeof numberValue>; reason: string } | undefined {
  if (partitions === undefined) return undefined;
  const needed = partitions * LOCKS_PER_PARTITION;
  if (needed <= DEFAULT_LOCKS_PER_TRANSACTION) return undefined;
  const value = Math.min(MAX_LOCKS_CAP, 2 ** Math.ceil(Math.log2(needed)));
  return {
    name: 'max_locks_per_transaction',
    value: numberValue(value),
    reason:
      `the largest partition tree has ${partitions} partitions: a query not pruned to a few locks each with its indexes (~${needed} locks), ` +
      `beyond the default ${DEFAULT_LOCKS_PER_TRANSACTION} per transaction the shared lock table is sized for ("out of shared memory")` +
      (value < needed ? `; capped at ${MAX_LOCKS_CAP}: make sure queries prune partitions` : ''),
  };
}
