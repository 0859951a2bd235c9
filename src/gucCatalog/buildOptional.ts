/**
 * Enum values a version has in its source but only under a configure switch (#ifdef USE_LZ4 etc.),
 * so a catalog generated from a build without the library lacks them (the v16 test-bed build has
 * no lz4/zstd). Merged into every catalog from `since` on; whether a given server can use them is
 * the SystemProfile's build features, not the catalog's business.
 */
import type { BuildFeature } from './types.js';

export interface BuildOptionalValue {
  setting: string;
  value: string;
  feature: BuildFeature;
  /** First major version with the value. */
  since: number;
}

export const BUILD_OPTIONAL_VALUES: readonly BuildOptionalValue[] = [
  { setting: 'default_toast_compression', value: 'lz4', feature: 'lz4', since: 14 },
  { setting: 'wal_compression', value: 'lz4', feature: 'lz4', since: 15 },
  { setting: 'wal_compression', value: 'zstd', feature: 'zstd', since: 15 },
  { setting: 'io_method', value: 'io_uring', feature: 'liburing', since: 18 },
];
