/** Autovacuum workers, their pace and how early tables qualify. */
import type { GucCatalog } from '../../gucCatalog/types.js';
import { formatNumber } from '../../gucCatalog/units.js';
import { durationValue, numberValue } from '../../gucCatalog/values.js';
import { autovacuumMaxWorkersFor } from '../sizing.js';
import type { AreaResult, Proposal, StorageClass, SystemProfile, WorkloadProfile } from '../types.js';
import { onlyProposals } from './area.js';

/**
 * Total vacuum cost per 2ms delay, shared by all running workers. The default 200 reads ~400MB/s
 * from cache but dirties only ~40MB/s: a trickle for flash.
 */
const COST_LIMIT: Partial<Record<StorageClass, number>> = {
  'local-nvme': 2000,
  ssd: 1000,
  'network-block': 800,
  'virtual-disk': 400,
};

/** Fraction of a table changed before it is vacuumed / analyzed (defaults 0.2 / 0.1 let big tables bloat). */
const SCALE_FACTORS: Partial<Record<WorkloadProfile, { vacuum: number; analyze: number; insert: number }>> = {
  oltp: { vacuum: 0.05, analyze: 0.02, insert: 0.1 },
  web: { vacuum: 0.05, analyze: 0.02, insert: 0.1 },
  mixed: { vacuum: 0.05, analyze: 0.02, insert: 0.1 },
  'read-replica': { vacuum: 0.05, analyze: 0.02, insert: 0.1 },
  dw: { vacuum: 0.1, analyze: 0.05, insert: 0.05 },
};

/** Busy OLTP databases produce dead rows fast: look twice a minute instead of once. */
const frequentNaptime: ReadonlySet<WorkloadProfile> = new Set(['oltp', 'web', 'mixed']);

export function recommendAutovacuum(p: SystemProfile, _catalog: GucCatalog): AreaResult {
  const workers = autovacuumMaxWorkersFor(p);
  const proposals: Proposal[] = [
    { name: 'autovacuum_max_workers', value: numberValue(workers), reason: `one per 4 vCPUs, 3 to 8: more workers only share the same cost limit` },
    frequentNaptime.has(p.workload)
      ? { name: 'autovacuum_naptime', value: durationValue(30_000), reason: `${p.workload} tables churn fast: check each database twice a minute` }
      : { name: 'autovacuum_naptime', value: durationValue(60_000), reason: 'the default: once a minute per database' },
  ];
  const costLimit = COST_LIMIT[p.storage];
  if (costLimit !== undefined) {
    proposals.push({
      name: 'autovacuum_vacuum_cost_limit',
      value: numberValue(costLimit),
      reason: `${p.storage} storage absorbs vacuum I/O far faster than the default 200 allows; shared by all workers`,
    });
  }
  const scale = SCALE_FACTORS[p.workload];
  if (scale) {
    const replica = p.workload === 'read-replica' ? ' (takes effect after promotion: a standby does not vacuum)' : '';
    proposals.push(
      {
        name: 'autovacuum_vacuum_scale_factor',
        value: numberValue(scale.vacuum),
        reason: `vacuum once ${formatNumber(scale.vacuum * 100)} % of a table is dead: big tables do not wait for 20 %${replica}`,
      },
      {
        name: 'autovacuum_analyze_scale_factor',
        value: numberValue(scale.analyze),
        reason: `fresh statistics after ${formatNumber(scale.analyze * 100)} % of a table changed${replica}`,
      },
      {
        name: 'autovacuum_vacuum_insert_scale_factor',
        value: numberValue(scale.insert),
        reason: `append-mostly tables get frozen and their visibility map set after ${formatNumber(scale.insert * 100)} % new rows${replica}`,
      },
    );
  }
  return onlyProposals(proposals);
}
