/**
 * Per-major catalogs of server settings, read from the JSON that test/testbed/gen-guc-catalog.sh
 * generated from each version's pg_settings (src/gucCatalog/data/pgV.json).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { badInput } from '../errors.js';
import { BUILD_OPTIONAL_VALUES } from './buildOptional.js';
import { packageRoot } from './packageRoot.js';
import type { BuildFeature, GucCatalog, GucContext, GucDefinition, GucType } from './types.js';
import { isMemoryUnit, isTimeUnit } from './units.js';

/** Major versions with a generated catalog, oldest first. */
export const KNOWN_MAJORS: readonly number[] = [13, 14, 15, 16, 17, 18];

const catalogDataDir = join(packageRoot, 'src', 'gucCatalog', 'data');

/** One line of pgV.json, as the generator's query writes it. */
interface RawSetting {
  name: string;
  type: GucType;
  context: GucContext;
  unit?: string;
  min?: number;
  max?: number;
  enumValues?: string[];
  default?: boolean | number | string;
}

export interface RawCatalog {
  version: string;
  build: string;
  settings: RawSetting[];
}

/** The generated file as written, without build-optional values merged in. */
export function readRawCatalog(major: number): RawCatalog {
  return JSON.parse(readFileSync(join(catalogDataDir, `pg${major}.json`), 'utf8')) as RawCatalog;
}

function definitionOf(raw: RawSetting, major: number): GucDefinition {
  const { unit, ...rest } = raw;
  if (unit !== undefined && !isMemoryUnit(unit) && !isTimeUnit(unit)) {
    throw new Error(`catalog pg${major}: ${raw.name} has unknown unit "${unit}"; teach src/gucCatalog/units.ts about it`);
  }
  const def: GucDefinition = { ...rest, ...(unit !== undefined && { unit: unit }) };
  const optional = BUILD_OPTIONAL_VALUES.filter((o) => o.setting === raw.name && major >= o.since);
  if (optional.length > 0 && def.enumValues) {
    def.enumValues = [...def.enumValues, ...optional.map((o) => o.value).filter((v) => !def.enumValues!.includes(v))];
    def.buildOptionalValues = Object.fromEntries(optional.map((o): [string, BuildFeature] => [o.value, o.feature]));
  }
  return def;
}

const loaded = new Map<number, GucCatalog>();

const knownRange = () => `${KNOWN_MAJORS[0]}–${KNOWN_MAJORS[KNOWN_MAJORS.length - 1]}`;

/** The catalog of a major version; an unknown version is the user's --pg-version mistake. */
export function loadCatalog(major: number | string): GucCatalog {
  const n = typeof major === 'number' ? major : Number(String(major).trim());
  if (!KNOWN_MAJORS.includes(n)) {
    throw badInput(`unknown --pg-version ${major}; known: ${knownRange()}`, `pass a major version between ${knownRange()}`);
  }
  let catalog = loaded.get(n);
  if (!catalog) {
    const raw = readRawCatalog(n);
    catalog = {
      major: n,
      serverVersion: raw.version,
      build: raw.build,
      settings: new Map(raw.settings.map((s) => [s.name.toLowerCase(), definitionOf(s, n)])),
    };
    loaded.set(n, catalog);
  }
  return catalog;
}

/** A setting by name, in any case (the server's names are case-insensitive). */
export function findSetting(catalog: GucCatalog, name: string): GucDefinition | undefined {
  return catalog.settings.get(name.toLowerCase());
}

/** A change to the setting takes effect only after a server restart. */
export const needsRestart = (def: GucDefinition): boolean => def.context === 'postmaster';

/** The setting cannot be changed in a configuration file at all (compile-time or initdb-time values). */
export const isReadOnly = (def: GucDefinition): boolean => def.context === 'internal';
