/** What `pgscale tune` knows about the machine and the workload, and what it recommends. */
import type { BuildFeature } from '../gucCatalog/types.js';
import type { GucValue } from '../gucCatalog/values.js';
import type { StorageClass } from '../host/types.js';

export type { StorageClass };

export type WorkloadProfile = 'oltp' | 'web' | 'dw' | 'mixed' | 'desktop' | 'read-replica';
export const WORKLOAD_PROFILES: readonly WorkloadProfile[] = ['oltp', 'web', 'dw', 'mixed', 'desktop', 'read-replica'];

/** The resources and facts recommendations are computed from: detected, or given as flags for capacity planning. */
export interface SystemProfile {
  /** Memory PostgreSQL may use: the host's RAM, or the cgroup limit when that is lower. */
  memoryBytes: number;
  /** memoryBytes is a cgroup (container) limit: the page cache is charged against it too. */
  memoryIsCgroupLimit: boolean;
  /** Whole vCPUs available to PostgreSQL (after a CPU quota). */
  vcpus: number;
  /** Storage under the data directory. */
  storage: StorageClass;
  /** Size of the filesystem holding pg_wal, when known. */
  walVolumeBytes?: number;
  /** WAL generated per second at peak, when known (pg_stat_wal or pg_current_wal_lsn sampling, or --wal-rate). */
  walWriteBytesPerSecond?: number;
  /** Where walWriteBytesPerSecond came from, for the reason (e.g. "measured: 12MB over 10s on the cluster"). */
  walWriteRateSource?: string;
  /** The storage as measured (pg_test_fsync, a random-read probe); it wins over the storage class where present. */
  storageMeasured?: StorageMeasurement;
  /** The cluster's current values of the settings decided from storageMeasured (MEASURED_SETTINGS): a figure near a class boundary keeps them. */
  currentMeasured?: Readonly<Partial<Record<string, GucValue>>>;
  /** Leaf partitions of the largest partition tree in any database, when the cluster was read. */
  largestPartitionTree?: number;
  pgMajor: number;
  /** max_connections the user asked for; otherwise the workload decides. */
  maxConnections?: number;
  workload: WorkloadProfile;
  /** Optional libraries the server's build has (pg_config --configure, or probed). */
  buildFeatures: readonly BuildFeature[];
  /** Background workers registered by extensions (TimescaleDB, pg_cron, ...); they share max_worker_processes. */
  extensionBackgroundWorkers: number;
  /** Default huge page size of the kernel (Hugepagesize in /proc/meminfo); 2 MiB when unknown. */
  hugePageBytes?: number;
}

/** pg_test_fsync on the WAL volume: one 8kB write then a flush, per wal_sync_method it could run. */
export interface FsyncMeasurement {
  /** Directory the test file was written in. */
  path: string;
  /** Seconds per method (pg_test_fsync -s). */
  seconds: number;
  opsPerSecond: Partial<Record<WalSyncMethod, number>>;
}

export type WalSyncMethod = 'open_datasync' | 'fdatasync' | 'fsync' | 'open_sync';

/** 8kB random reads (O_DIRECT, past the page cache) of a temporary file on the data volume, one at a time and `depth` at once. */
export interface RandomReadMeasurement {
  path: string;
  /** Reads per second with one read in flight: 1e6 / this is the latency in µs. */
  serialIops: number;
  /** Reads per second with `depth` reads in flight. */
  parallelIops: number;
  depth: number;
  fileBytes: number;
  seconds: number;
}

export interface StorageMeasurement {
  fsync?: FsyncMeasurement;
  randomRead?: RandomReadMeasurement;
}

/** The areas recommendations are grouped by, in the order they are shown. */
export type TuneArea = 'memory' | 'connections' | 'parallelism' | 'wal' | 'io' | 'autovacuum' | 'profile';
export const TUNE_AREAS: readonly TuneArea[] = ['memory', 'connections', 'parallelism', 'wal', 'io', 'autovacuum', 'profile'];

/** What an area's recommender proposes, before it is checked against the version's catalog. */
export interface Proposal {
  name: string;
  value: GucValue;
  reason: string;
  /** The cluster's current value, kept: a measurement near a class boundary is no reason to change it (the reason says so). */
  held?: boolean;
}

/** A kernel setting the recommendations depend on; pgscale advises it, never applies it. */
export interface KernelAdvisory {
  sysctl: string;
  value: number;
  reason: string;
}

export interface AreaResult {
  proposals: Proposal[];
  advisories: KernelAdvisory[];
  /** Things the user should know that are not a setting (e.g. a budget that does not fit). */
  warnings: string[];
}

/** A proposal checked against the catalog: known to the version and inside its bounds. */
export interface Recommendation extends Proposal {
  /** The change needs a server restart (postmaster context); otherwise a reload is enough. */
  restart: boolean;
}

export interface DroppedProposal {
  area: TuneArea;
  name: string;
  reason: string;
}

/** Memory that can be in use at once when every connection and worker uses its allowance. */
export interface MemoryBudget {
  effectiveMemoryBytes: number;
  /** Left to the kernel, page cache and other processes. */
  headroomBytes: number;
  /** effectiveMemoryBytes − headroomBytes: the total must stay at or below this. */
  limitBytes: number;
  components: {
    sharedMemory: number;
    backendOverhead: number;
    queryMemory: number;
    maintenance: number;
    autovacuum: number;
  };
  totalBytes: number;
  fits: boolean;
}

export interface RecommendationSet {
  pgMajor: number;
  /** server_version of the catalog checked against. */
  catalogVersion: string;
  profile: SystemProfile;
  areas: Record<TuneArea, Recommendation[]>;
  advisories: KernelAdvisory[];
  /** Proposals the version does not have (or a value it cannot take), with why. */
  dropped: DroppedProposal[];
  warnings: string[];
  memoryBudget: MemoryBudget;
}
