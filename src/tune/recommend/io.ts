/** Planner I/O costs, prefetch depth, I/O size and (18) asynchronous I/O, from the storage measured or its class. */
import { findSetting } from '../../gucCatalog/catalog.js';
import type { GucCatalog } from '../../gucCatalog/types.js';
import { KiB } from '../../gucCatalog/units.js';
import { enumValue, memoryValue, numberValue } from '../../gucCatalog/values.js';
import type { AreaResult, Proposal, StorageClass, SystemProfile } from '../types.js';
import { onlyProposals } from './area.js';
import { currentNumber, ioConcurrencyFromProbe, randomPageCostFromProbe, type Decided } from './measured.js';

interface StorageIo {
  randomPageCost?: Decided<number>;
  ioConcurrency?: Decided<number>;
}

/** Nothing is proposed where the storage gives nothing to go on (loop, unknown, network filesystems). */
const STORAGE_IO: Record<StorageClass, StorageIo> = {
  'local-nvme': {
    randomPageCost: { value: 1.1, reason: 'NVMe flash reads randomly almost as fast as sequentially; 1.1 keeps a slight preference for sequential scans' },
    ioConcurrency: {
      value: 200,
      reason: 'NVMe queues are deep; prefetching beyond ~200 requests gains nothing measurable (1000 only lengthens the prefetch distance)',
    },
  },
  ssd: {
    randomPageCost: { value: 1.1, reason: 'flash reads randomly almost as fast as sequentially' },
    ioConcurrency: { value: 200, reason: 'flash serves many requests at once; 200 keeps device and RAID queues full' },
  },
  'network-block': {
    randomPageCost: {
      value: 1.5,
      reason: 'every random 8kB read pays a network round trip and an IOPS credit, while sequential reads travel in large requests',
    },
    ioConcurrency: { value: 300, reason: 'network block storage has ~0.5–2 ms latency: only deep queues reach its provisioned throughput' },
  },
  'virtual-disk': {
    randomPageCost: { value: 2, reason: 'a hypervisor disk whose backing storage is hidden: between flash (1.1) and spinning disks (4)' },
    ioConcurrency: { value: 64, reason: 'a hypervisor disk usually sits on shared flash: a moderate queue' },
  },
  hdd: {
    randomPageCost: { value: 4, reason: 'the default, calibrated for spinning disks where a seek costs several sequential reads' },
    ioConcurrency: { value: 2, reason: 'a couple of requests let the disk reorder seeks; more only thrash the heads' },
  },
  tmpfs: {
    randomPageCost: { value: 1, reason: 'data in memory: a random read costs what a sequential one does' },
  },
  'network-fs': {},
  loop: {},
  unknown: {},
};

/** Storage where fewer, larger requests pay: per-request IOPS accounting or seek time. */
const largeIoStorage: ReadonlySet<StorageClass> = new Set(['network-block', 'hdd']);
const LARGE_IO_BYTES = 256 * KiB;

function ioMethod(p: SystemProfile): Proposal[] {
  const local = p.storage === 'local-nvme' || p.storage === 'ssd';
  if (p.buildFeatures.includes('liburing') && local && !p.memoryIsCgroupLimit) {
    return [
      {
        name: 'io_method',
        value: enumValue('io_uring'),
        reason: 'io_uring (built in) submits I/O with less overhead than worker processes on fast local storage',
      },
    ];
  }
  const why = !p.buildFeatures.includes('liburing')
    ? 'io_uring is not in this build as far as pgscale could ask it (pg_config --configure, postgres -C)'
    : p.memoryIsCgroupLimit
      ? 'container runtimes often block io_uring system calls'
      : 'I/O workers hide network latency as well as io_uring does';
  const perWorkerCpus = p.storage === 'network-block' ? 2 : 4;
  const workers = Math.min(32, Math.max(3, Math.ceil(p.vcpus / perWorkerCpus)));
  return [
    { name: 'io_method', value: enumValue('worker'), reason: `the default: ${why}` },
    {
      name: 'io_workers',
      value: numberValue(workers),
      reason: `one I/O worker per ${perWorkerCpus} vCPUs, at least the default 3${perWorkerCpus === 2 ? ': high-latency storage needs more requests in flight' : ''}`,
    },
  ];
}

const numericDefault = (catalog: GucCatalog, name: string): number | undefined => {
  const d = findSetting(catalog, name)?.default;
  return typeof d === 'number' ? d : undefined;
};

/** A prefetch depth never below the version's default without saying why: 18 raised both to 16 for its read streams. */
function notBelowDefault(catalog: GucCatalog, name: string, wanted: Decided<number>): Decided<number> {
  const d = numericDefault(catalog, name);
  if (d === undefined || wanted.value >= d) return wanted;
  return {
    value: d,
    reason: `PostgreSQL ${catalog.major}'s default ${d}, not the ${wanted.value} this storage alone would suggest: the server's read streams are built for it (${wanted.reason})`,
    ...(wanted.held ? { held: true } : {}),
  };
}

export function recommendIo(p: SystemProfile, catalog: GucCatalog): AreaResult {
  const io = STORAGE_IO[p.storage];
  const probe = p.storageMeasured?.randomRead;
  const proposals: Proposal[] = [];
  const current = (name: 'random_page_cost' | 'effective_io_concurrency') => currentNumber(p.currentMeasured, name);
  const randomPageCost = probe ? randomPageCostFromProbe(probe, current('random_page_cost')) : io.randomPageCost;
  if (randomPageCost)
    proposals.push({ name: 'random_page_cost', value: numberValue(randomPageCost.value), reason: randomPageCost.reason, held: randomPageCost.held });
  const wanted = probe
    ? ioConcurrencyFromProbe(probe, current('effective_io_concurrency'), numericDefault(catalog, 'effective_io_concurrency'))
    : io.ioConcurrency;
  if (wanted) {
    const eic = notBelowDefault(catalog, 'effective_io_concurrency', wanted);
    proposals.push({ name: 'effective_io_concurrency', value: numberValue(eic.value), reason: eic.reason, held: eic.held });
    // VACUUM, CREATE INDEX and recovery prefetch read the same storage: never shallower than queries, never below the default
    const maintenanceDefault = numericDefault(catalog, 'maintenance_io_concurrency') ?? 10;
    if (eic.value > maintenanceDefault) {
      proposals.push({
        name: 'maintenance_io_concurrency',
        value: numberValue(eic.value),
        reason: `as effective_io_concurrency: maintenance and recovery prefetch read the same storage as queries`,
      });
    }
  }
  if (largeIoStorage.has(p.storage)) {
    const reason = p.storage === 'hdd' ? 'larger reads mean fewer seeks' : 'block storage counts up to 256kB as one operation: fewer IOPS for the same data';
    proposals.push({ name: 'io_combine_limit', value: memoryValue(LARGE_IO_BYTES), reason });
    // 18 caps io_combine_limit at this server-start setting
    proposals.push({ name: 'io_max_combine_limit', value: memoryValue(LARGE_IO_BYTES), reason: `lets io_combine_limit reach 256kB` });
  }
  proposals.push(...ioMethod(p));
  return onlyProposals(proposals);
}
