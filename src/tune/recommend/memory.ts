/** shared_buffers, effective_cache_size, work_mem, maintenance and autovacuum memory, huge pages. */
import type { GucCatalog } from '../../gucCatalog/types.js';
import { GiB, MiB, formatMemory } from '../../gucCatalog/units.js';
import { formatBytes } from '../../format.js';
import { enumValue, memoryValue } from '../../gucCatalog/values.js';
import { memoryHeadroom } from '../budget.js';
import { MAINTENANCE_WORK_MEM_RULE, VACUUM_UNCAPPED_FROM, WORK_MEM_TARGET, sizeFor, type Sizing } from '../sizing.js';
import type { AreaResult, KernelAdvisory, Proposal, SystemProfile } from '../types.js';

const DEFAULT_HUGE_PAGE_BYTES = 2 * MiB;
/** Below this the TLB savings do not repay reserving memory the rest of the system cannot use. */
const HUGE_PAGES_FROM_BYTES = 2 * GiB;

/** The whole shared memory segment: buffers, their descriptors and mapping (~3 %), WAL buffers, locks and the rest. */
const estimateSharedMemoryBytes = (sharedBuffersBytes: number, walBuffersBytes: number): number => sharedBuffersBytes * 1.03 + walBuffersBytes + 64 * MiB;

function workMemReason(p: SystemProfile, s: Sizing): string {
  const worstCase = `${s.connections.value} connections + ${s.parallel.maxParallelWorkers} parallel workers × ${s.nodesPerQuery} sort/hash nodes × hash_mem_multiplier ${s.hashMemMultiplier}`;
  const budget = `${formatBytes(p.memoryBytes - memoryHeadroom(p.memoryBytes))} (${memorySource(p)} less ${formatBytes(memoryHeadroom(p.memoryBytes))} headroom)`;
  if (s.workMemBudgetBytes < WORK_MEM_TARGET) {
    return (
      `PostgreSQL's default ${formatMemory(WORK_MEM_TARGET)}, kept as the floor: below it sorts and hashes spill to disk; ` +
      `the worst case ${worstCase} would need work_mem of ${formatMemory(s.workMemBudgetBytes)} to fit in ${budget}, so the memory budget does not fit — see the warning for fewer connections`
    );
  }
  return `worst case ${worstCase} fits with shared_buffers, maintenance and autovacuum memory in ${budget}`;
}

const memorySource = (p: SystemProfile) => `${formatBytes(p.memoryBytes)} ${p.memoryIsCgroupLimit ? 'cgroup memory limit' : 'of RAM'}`;

export function recommendMemory(p: SystemProfile, catalog: GucCatalog): AreaResult {
  const s = sizeFor(p, catalog);
  const desktop = p.workload === 'desktop';
  const maintenanceRule = MAINTENANCE_WORK_MEM_RULE[p.workload];
  const proposals: Proposal[] = [
    {
      name: 'shared_buffers',
      value: memoryValue(s.sharedBuffersBytes),
      reason: desktop
        ? `1/16 of the ${memorySource(p)}: a desktop shares memory with other programs`
        : `25 % of the ${memorySource(p)}; the rest serves the page cache, which PostgreSQL reads through as well`,
    },
    {
      name: 'effective_cache_size',
      value: memoryValue(s.effectiveCacheBytes),
      reason: `${desktop ? '1/4' : '3/4'} of the ${memorySource(p)}: what shared_buffers and the page cache together can hold (a planner hint, nothing is allocated)${p.memoryIsCgroupLimit ? '; the page cache is charged to the cgroup, so the limit bounds it' : ''}`,
    },
    {
      name: 'work_mem',
      value: memoryValue(s.workMemBytes),
      reason: workMemReason(p, s),
    },
    {
      name: 'maintenance_work_mem',
      value: memoryValue(s.maintenanceWorkMemBytes),
      reason: `1/${maintenanceRule.divisor} of memory, at least 64MB and at most ${formatMemory(maintenanceRule.cap)}: faster CREATE INDEX and manual VACUUM, of which few run at once`,
    },
    {
      name: 'autovacuum_work_mem',
      value: memoryValue(s.autovacuumWorkMemBytes),
      reason:
        `each of the ${s.autovacuumMaxWorkers} autovacuum workers may hold it at once: together at most 1/8 of memory` +
        (p.pgMajor < VACUUM_UNCAPPED_FROM
          ? `, and VACUUM uses no more than 1GB before PostgreSQL ${VACUUM_UNCAPPED_FROM}`
          : `, at most maintenance_work_mem (PostgreSQL ${p.pgMajor} has no 1GB VACUUM limit)`),
    },
  ];
  const advisories: KernelAdvisory[] = [];
  if (s.sharedBuffersBytes >= HUGE_PAGES_FROM_BYTES) {
    const pageBytes = p.hugePageBytes ?? DEFAULT_HUGE_PAGE_BYTES;
    const sharedMemoryBytes = estimateSharedMemoryBytes(s.sharedBuffersBytes, s.walBuffersBytes);
    proposals.push({
      name: 'huge_pages',
      value: enumValue('try'),
      reason: `shared_buffers ${formatMemory(s.sharedBuffersBytes)} in ${formatMemory(pageBytes)} pages cuts page-table memory and TLB misses; "try" still starts if the pages are not reserved`,
    });
    advisories.push({
      sysctl: 'vm.nr_hugepages',
      value: Math.ceil(sharedMemoryBytes / pageBytes),
      reason:
        `estimated shared memory ${formatBytes(sharedMemoryBytes)} in ${formatMemory(pageBytes)} pages; ` +
        `on PostgreSQL 15+ \`postgres -D DATADIR -C shared_memory_size_in_huge_pages\` gives the exact count` +
        (p.memoryIsCgroupLimit ? '; huge pages are reserved host-wide and charged to the hugetlb controller, not the memory limit' : ''),
    });
  }
  return { proposals, advisories, warnings: [] };
}
