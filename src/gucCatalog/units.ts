/**
 * The units PostgreSQL settings are counted and written in. Memory units are binary (kB = 1024 B,
 * as the server reads them); "8kB" is the block-sized base unit of shared_buffers and friends and is
 * never written in a file. Time units are those guc.c accepts.
 */
import { badInput } from '../errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

export type MemoryUnit = 'B' | 'kB' | '8kB' | 'MB' | 'GB' | 'TB';
export type TimeUnit = 'us' | 'ms' | 's' | 'min' | 'h' | 'd';
export type Unit = MemoryUnit | TimeUnit;

const bytesPer: Record<MemoryUnit, number> = { B: 1, kB: KiB, '8kB': 8 * KiB, MB: MiB, GB: GiB, TB: TiB };
const msPer: Record<TimeUnit, number> = { us: 0.001, ms: 1, s: 1000, min: 60_000, h: 3_600_000, d: 86_400_000 };

export const isMemoryUnit = (unit: string): unit is MemoryUnit => Object.hasOwn(bytesPer, unit);
export const isTimeUnit = (unit: string): unit is TimeUnit => Object.hasOwn(msPer, unit);

/** Bytes in one `unit`. */
export const bytesPerUnit = (unit: MemoryUnit): number => bytesPer[unit];
/** Milliseconds in one `unit`. */
export const msPerUnit = (unit: TimeUnit): number => msPer[unit];

/** `amount` of `from` expressed in `to`, e.g. (2, 'GB', '8kB') → 262144. Both must measure the same thing. */
export function convertUnits(amount: number, from: Unit, to: Unit): number {
  if (isMemoryUnit(from) && isMemoryUnit(to)) return (amount * bytesPer[from]) / bytesPer[to];
  if (isTimeUnit(from) && isTimeUnit(to)) return (amount * msPer[from]) / msPer[to];
  throw new Error(`cannot convert ${from} to ${to}`);
}

// Largest first: a value is written in the biggest unit that holds it exactly.
const memoryWritten: readonly MemoryUnit[] = ['TB', 'GB', 'MB', 'kB'];
const timeWritten: readonly TimeUnit[] = ['d', 'h', 'min', 's', 'ms'];

/** A byte count as postgresql.conf spells it: "16GB", "256MB", "64kB"; bytes only when not whole kB. */
export function formatMemory(bytes: number): string {
  const whole = Math.round(bytes);
  if (whole === 0) return '0';
  const unit = memoryWritten.find((u) => whole % bytesPer[u] === 0);
  return unit ? `${whole / bytesPer[unit]}${unit}` : `${whole}B`;
}

/** A duration as postgresql.conf spells it: "15min", "30s", "2ms"; fractional milliseconds stay in ms. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  if (!Number.isInteger(ms)) return `${formatNumber(ms)}ms`;
  const unit = timeWritten.find((u) => ms % msPer[u] === 0)!;
  return `${ms / msPer[unit]}${unit}`;
}

/** A plain number without float noise: 1.1, not 1.1000000000000001. */
export function formatNumber(n: number): string {
  return String(Number.parseFloat(n.toPrecision(12)));
}

const quantityPattern = /^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)\s*$/;

/**
 * Parses "128MB", "0.5GB", "15min" or a bare number (taken in `baseUnit`, as the server does) into
 * an amount of `baseUnit`. Unit names are case-sensitive, like the server's.
 */
export function parseQuantity(text: string, baseUnit: Unit): number {
  const m = quantityPattern.exec(text);
  if (!m) throw badInput(`"${text}" is not a number with an optional unit`);
  const amount = Number(m[1]);
  const unit = m[2]!;
  if (unit === '') return amount;
  const memory = isMemoryUnit(baseUnit);
  if (memory ? isMemoryUnit(unit) && unit !== '8kB' : isTimeUnit(unit)) return convertUnits(amount, unit as Unit, baseUnit);
  throw badInput(`"${text}": unknown unit "${unit}" (valid units here: ${memory ? 'B, kB, MB, GB, TB' : 'us, ms, s, min, h, d'})`);
}
