/**
 * Typed setting values: what a recommendation proposes and what a cluster currently has, checked
 * against a version's catalog and written the way postgresql.conf and ALTER SYSTEM expect.
 */
import { badInput } from '../errors.js';
import type { GucDefinition } from './types.js';
import {
  bytesPerUnit,
  formatDuration,
  formatMemory,
  formatNumber,
  isMemoryUnit,
  isTimeUnit,
  msPerUnit,
  parseQuantity,
  type MemoryUnit,
  type TimeUnit,
} from './units.js';

/** Memory is held in bytes and durations in milliseconds whatever the setting's base unit. */
export type GucValue =
  | { kind: 'bool'; value: boolean }
  | { kind: 'number'; value: number }
  | { kind: 'memory'; bytes: number }
  | { kind: 'duration'; ms: number }
  | { kind: 'enum'; value: string };

export type GucValueKind = GucValue['kind'];

export const boolValue = (value: boolean): GucValue => ({ kind: 'bool', value });
export const numberValue = (value: number): GucValue => ({ kind: 'number', value });
export const memoryValue = (bytes: number): GucValue => ({ kind: 'memory', bytes });
export const durationValue = (ms: number): GucValue => ({ kind: 'duration', ms });
export const enumValue = (value: string): GucValue => ({ kind: 'enum', value });

/** The kind of value a setting takes; undefined for free-text (string) settings, which are never tuned. */
export function valueKindOf(def: GucDefinition): GucValueKind | undefined {
  switch (def.type) {
    case 'bool':
      return 'bool';
    case 'enum':
      return 'enum';
    case 'string':
      return undefined;
    case 'integer':
    case 'real':
      if (def.unit && isMemoryUnit(def.unit)) return 'memory';
      if (def.unit && isTimeUnit(def.unit)) return 'duration';
      return 'number';
  }
}

/** How the value reads in postgresql.conf or ALTER SYSTEM (unquoted): "16GB", "15min", "on", "lz4", "1.1". */
export function formatValue(value: GucValue): string {
  switch (value.kind) {
    case 'bool':
      return value.value ? 'on' : 'off';
    case 'number':
      return formatNumber(value.value);
    case 'memory':
      return formatMemory(value.bytes);
    case 'duration':
      return formatDuration(value.ms);
    case 'enum':
      return value.value;
  }
}

function requireKind(def: GucDefinition, value: GucValue): void {
  const kind = valueKindOf(def);
  if (kind !== value.kind) throw new Error(`${def.name} takes a ${kind ?? 'string'} value, not ${value.kind}`);
}

/** Real settings keep fractions; integer ones are rounded the way the server rounds (rint). */
function roundForType(def: GucDefinition, n: number): number {
  return def.type === 'integer' ? Math.round(n) : n;
}

/** The value as a count of the setting's base unit (what pg_settings.setting and min/max use), or the enum/bool itself. */
export function toBaseUnits(def: GucDefinition, value: GucValue): number | string | boolean {
  requireKind(def, value);
  switch (value.kind) {
    case 'memory':
      return roundForType(def, value.bytes / bytesPerUnit(def.unit as MemoryUnit));
    case 'duration':
      return roundForType(def, value.ms / msPerUnit(def.unit as TimeUnit));
    case 'number':
      return roundForType(def, value.value);
    case 'bool':
    case 'enum':
      return value.value;
  }
}

/** A count of the setting's base unit as a typed value, e.g. shared_buffers 16384 → 128MB. */
export function fromBaseUnits(def: GucDefinition, amount: number): GucValue {
  const kind = valueKindOf(def);
  if (kind === 'memory') return memoryValue(amount * bytesPerUnit(def.unit as MemoryUnit));
  if (kind === 'duration') return durationValue(amount * msPerUnit(def.unit as TimeUnit));
  if (kind === 'number') return numberValue(amount);
  throw new Error(`${def.name} is not numeric`);
}

// guc.c parse_bool: a prefix of true/false/yes/no, "on", "of(f)", 1 or 0, in any case
function parseBool(text: string): boolean | undefined {
  const t = text.trim().toLowerCase();
  if (t === '') return undefined;
  const prefixOf = (word: string) => word.startsWith(t);
  if (prefixOf('true') || prefixOf('yes') || t === '1' || (t.length >= 2 && prefixOf('on'))) return true;
  if (prefixOf('false') || prefixOf('no') || t === '0' || (t.length >= 2 && prefixOf('off'))) return false;
  return undefined;
}

/**
 * A setting's text as found in pg_settings.setting (base units), SHOW, or a configuration file
 * ("128MB", "on", "'lz4'" already unquoted) as a typed value. Invalid text is bad input.
 */
export function parseSetting(def: GucDefinition, text: string): GucValue {
  const kind = valueKindOf(def);
  const fail = (why: string) => badInput(`invalid value for ${def.name}: "${text}" (${why})`);
  switch (kind) {
    case 'bool': {
      const b = parseBool(text);
      if (b === undefined) throw fail('expected on or off');
      return boolValue(b);
    }
    case 'enum': {
      const v = text.trim().toLowerCase();
      // enum spellings the server accepts but pg_settings hides (true/false aliases): map through bool
      const known = def.enumValues?.find((e) => e.toLowerCase() === v);
      if (known) return enumValue(known);
      const b = parseBool(v);
      if (b !== undefined && def.enumValues?.includes(b ? 'on' : 'off')) return enumValue(b ? 'on' : 'off');
      throw fail(`expected one of ${def.enumValues?.join(', ')}`);
    }
    case 'memory':
    case 'duration':
    case 'number': {
      const amount = def.unit ? parseQuantity(text, def.unit) : Number(text.trim());
      if (!Number.isFinite(amount)) throw fail('not a number');
      return fromBaseUnits(def, roundForType(def, amount));
    }
    case undefined:
      throw new Error(`${def.name} is a string setting: pgscale does not type its values`);
  }
}

export type Validity = { valid: true } | { valid: false; reason: string };

const boundText = (def: GucDefinition, amount: number): string => {
  const kind = valueKindOf(def);
  return kind === 'number' ? formatNumber(amount) : formatValue(fromBaseUnits(def, amount));
};

/** Whether the server would accept `value` for the setting, and why not. */
export function validateValue(def: GucDefinition, value: GucValue): Validity {
  const kind = valueKindOf(def);
  if (kind !== value.kind) return { valid: false, reason: `${def.name} takes a ${kind ?? 'string'} value, not ${value.kind}` };
  if (value.kind === 'enum') {
    return def.enumValues?.includes(value.value)
      ? { valid: true }
      : { valid: false, reason: `${def.name} accepts ${def.enumValues?.join(', ')}; not "${value.value}"` };
  }
  if (value.kind === 'bool') return { valid: true };
  const amount = toBaseUnits(def, value) as number;
  if (!Number.isFinite(amount)) return { valid: false, reason: `${def.name}: ${amount} is not a finite number` };
  if (def.min !== undefined && amount < def.min) return { valid: false, reason: `${def.name} must be at least ${boundText(def, def.min)}` };
  if (def.max !== undefined && amount > def.max) return { valid: false, reason: `${def.name} must be at most ${boundText(def, def.max)}` };
  return { valid: true };
}

export interface Clamped {
  value: GucValue;
  /** Set when the value had to be moved to a bound; `limit` is the bound as written in a file. */
  clamped?: { bound: 'min' | 'max'; limit: string };
}

/** Moves a numeric value into the setting's bounds (other kinds pass through unchanged). */
export function clampValue(def: GucDefinition, value: GucValue): Clamped {
  if (value.kind === 'bool' || value.kind === 'enum') return { value };
  const amount = toBaseUnits(def, value) as number;
  if (def.min !== undefined && amount < def.min) return { value: fromBaseUnits(def, def.min), clamped: { bound: 'min', limit: boundText(def, def.min) } };
  if (def.max !== undefined && amount > def.max) return { value: fromBaseUnits(def, def.max), clamped: { bound: 'max', limit: boundText(def, def.max) } };
  return { value };
}

/** Relative difference under which two sizes, durations or counts count as the same setting. */
export const CLOSE_ENOUGH_TOLERANCE = 0.1;

function magnitude(value: GucValue): number | undefined {
  switch (value.kind) {
    case 'number':
      return value.value;
    case 'memory':
      return value.bytes;
    case 'duration':
      return value.ms;
    default:
      return undefined;
  }
}

/**
 * The no-churn rule: true when `current` is near enough `recommended` that changing it is not worth
 * a reload or restart. Sizes, durations and counts within 10 % of the recommendation; zero and
 * negative values are sentinels (-1 = "use another setting", 0 = "off") and must match exactly;
 * enums and booleans must be equal.
 */
export function isCloseEnough(current: GucValue, recommended: GucValue): boolean {
  if (current.kind !== recommended.kind) return false;
  if (current.kind === 'bool' || current.kind === 'enum') return current.value === (recommended as typeof current).value;
  const c = magnitude(current)!;
  const r = magnitude(recommended)!;
  if (c === r) return true;
  if (c <= 0 || r <= 0) return false;
  return Math.abs(c - r) <= CLOSE_ENOUGH_TOLERANCE * r;
}
