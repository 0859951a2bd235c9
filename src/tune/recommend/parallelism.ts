/** Worker processes and parallel query, leaving room for extensions' and logical replication's workers. */
import type { GucCatalog } from '../../gucCatalog/types.js';
import { numberValue } from '../../gucCatalog/values.js';
import { LOGICAL_REPLICATION_WORKERS, MAINTENANCE_WORKERS_CAP, PER_GATHER_CAP, parallelFor } from '../sizing.js';
import type { AreaResult, SystemProfile } from '../types.js';
import { onlyProposals } from './area.js';

export function recommendParallelism(p: SystemProfile, _catalog: GucCatalog): AreaResult {
  const w = parallelFor(p);
  const tooFewCpus = p.vcpus < 2 ? 'one vCPU gains nothing from parallel plans' : '';
  return onlyProposals([
    {
      name: 'max_worker_processes',
      value: numberValue(w.maxWorkerProcesses),
      reason:
        `${w.maxParallelWorkers} parallel workers + ${p.extensionBackgroundWorkers} extension background workers + ` +
        `${LOGICAL_REPLICATION_WORKERS} for logical replication (launcher and apply workers), at least the default 8`,
    },
    { name: 'max_parallel_workers', value: numberValue(w.maxParallelWorkers), reason: `one per vCPU (${p.vcpus})` },
    {
      name: 'max_parallel_workers_per_gather',
      value: numberValue(w.perGather),
      reason: tooFewCpus || `half the vCPUs, at most ${PER_GATHER_CAP[p.workload]} for ${p.workload}: concurrent queries need the other cores`,
    },
    {
      name: 'max_parallel_maintenance_workers',
      value: numberValue(w.maintenance),
      reason: tooFewCpus || `half the vCPUs, at most ${MAINTENANCE_WORKERS_CAP[p.workload]}: CREATE INDEX and VACUUM scale little beyond`,
    },
  ]);
}
