/** Settings catalogs per major version: lookup, typed values, units, and version differences. */
export type { BuildFeature, GucCatalog, GucContext, GucDefinition, GucType } from './types.js';
export { KNOWN_MAJORS, loadCatalog, findSetting, needsRestart, isReadOnly } from './catalog.js';
export { BUILD_OPTIONAL_VALUES, type BuildOptionalValue } from './buildOptional.js';
export { RENAMES, REMOVALS, DISTRIBUTION_SETTINGS, removedSettings, type GucRename, type GucRemoval, type RemovedSetting } from './changes.js';
export {
  type GucValue,
  type GucValueKind,
  type Validity,
  type Clamped,
  boolValue,
  numberValue,
  memoryValue,
  durationValue,
  enumValue,
  valueKindOf,
  formatValue,
  toBaseUnits,
  fromBaseUnits,
  parseSetting,
  validateValue,
  clampValue,
  isCloseEnough,
  CLOSE_ENOUGH_TOLERANCE,
} from './values.js';
export { KiB, MiB, GiB, TiB, type MemoryUnit, type TimeUnit, type Unit, convertUnits, formatMemory, formatDuration, parseQuantity } from './units.js';
