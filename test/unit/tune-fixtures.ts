/** Machines the tune tests recommend for, across every workload and catalog version. */
import { GiB } from '../../src/gucCatalog/units.js';
import type { SystemProfile } from '../../src/tune/types.js';

export type Hardware = Omit<SystemProfile, 'workload' | 'pgMajor'>;

export const HARDWARE: Readonly<Record<string, Hardware>> = {
  '64GB/16 vCPU local NVMe': {
    memoryBytes: 64 * GiB,
    memoryIsCgroupLimit: false,
    vcpus: 16,
    storage: 'local-nvme',
    buildFeatures: ['lz4', 'zstd', 'liburing'],
    extensionBackgroundWorkers: 2,
  },
  '8GB/2 vCPU network SSD': {
    memoryBytes: 8 * GiB,
    memoryIsCgroupLimit: false,
    vcpus: 2,
    storage: 'network-block',
    buildFeatures: ['lz4', 'zstd'],
    extensionBackgroundWorkers: 0,
    walVolumeBytes: 20 * GiB,
  },
  // the host has 256GB; detection hands tune the 4GB cgroup limit
  '4GB/2 vCPU container on a 256GB host': {
    memoryBytes: 4 * GiB,
    memoryIsCgroupLimit: true,
    vcpus: 2,
    storage: 'ssd',
    buildFeatures: ['lz4', 'zstd', 'liburing'],
    extensionBackgroundWorkers: 0,
  },
  '16GB/4 vCPU HDD': {
    memoryBytes: 16 * GiB,
    memoryIsCgroupLimit: false,
    vcpus: 4,
    storage: 'hdd',
    buildFeatures: [],
    extensionBackgroundWorkers: 0,
    walWriteBytesPerSecond: 8 * 1024 * 1024,
  },
  '1GB/1 vCPU tiny VM': {
    memoryBytes: 1 * GiB,
    memoryIsCgroupLimit: false,
    vcpus: 1,
    storage: 'virtual-disk',
    buildFeatures: [],
    extensionBackgroundWorkers: 0,
  },
};
