/** The CLI's --storage and --profile words, mapped onto the types recommendations are computed from. */
import { badInput } from '../errors.js';
import { WORKLOAD_PROFILES, type StorageClass, type WorkloadProfile } from './types.js';

/** --storage: what a user can say about a disk they are planning for, not what detection distinguishes. */
export const STORAGE_FLAGS: Readonly<Record<string, StorageClass>> = {
  nvme: 'local-nvme',
  'network-ssd': 'network-block',
  ssd: 'ssd',
  hdd: 'hdd',
};

export function storageClassFromFlag(flag: string): StorageClass {
  const storage = Object.hasOwn(STORAGE_FLAGS, flag) ? STORAGE_FLAGS[flag] : undefined;
  if (!storage) throw badInput(`unknown --storage ${flag}; known: ${Object.keys(STORAGE_FLAGS).join(', ')}`);
  return storage;
}

export function workloadFromFlag(flag: string): WorkloadProfile {
  const workload = WORKLOAD_PROFILES.find((w) => w === flag);
  if (!workload) throw badInput(`unknown --profile ${flag}; known: ${WORKLOAD_PROFILES.join(', ')}`);
  return workload;
}
