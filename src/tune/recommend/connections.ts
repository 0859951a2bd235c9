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
  return onlyProposals([{ name: 'max_connections', value: numberValue(connections.value), reason: why + standby }]);
}
