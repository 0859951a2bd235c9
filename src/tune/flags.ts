/** The CLI's --storage and --profile words, mapped onto the types recommendations are computed from. */
import { badInput } from '../errors.js';
import { GiB, KiB, MiB, TiB } from '../gucCatalog/units.js';
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

const SIZE_UNITS: Record<string, number> = { b: 1, k: KiB, kb: KiB, kib: KiB, m: MiB, mb: MiB, mib: MiB, g: GiB, gb: GiB, gib: GiB, t: TiB, tb: TiB, tib: TiB };

/** A positive `what` with a unit ("64GB", "512MB", "1.5TB"; binary units, as PostgreSQL counts), for `flag`; `per` is "/s" for a rate. */
export function parseSizeFlag(flag: string, what: string, text: string, per: '' | '/s' = '', example = `${flag} 64MB${per}`): number {
  const body = per ? text.replace(/\s*\/\s*s(ec(ond)?)?\s*$/i, '') : text;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(body);
  if (!m) throw badInput(`${flag} ${text}: not a size`, `write it like ${example} or ${flag} 1.5GB${per}`);
  if (!(Number(m[1]) > 0)) throw badInput(`${flag} ${text}: ${what} must be more than 0`, `e.g. ${example}`);
  const unit = m[2]!.toLowerCase();
  if (unit === '') throw badInput(`${flag} ${text}: give a unit`, `e.g. ${flag} ${m[1]}GB${per} or ${flag} ${m[1]}MB${per}`);
  const bytesPer = Object.hasOwn(SIZE_UNITS, unit) ? SIZE_UNITS[unit] : undefined;
  if (bytesPer === undefined) throw badInput(`${flag} ${text}: unknown unit "${m[2]}"`, `use B, kB, MB, GB or TB, e.g. ${example}`);
  return Math.floor(Number(m[1]) * bytesPer);
}

/** --wal-rate: WAL written per second at peak, e.g. 20MB/s (the "/s" may be left out). */
export const parseWalRateFlag = (text: string): number => parseSizeFlag('--wal-rate', 'the WAL rate', text, '/s');
