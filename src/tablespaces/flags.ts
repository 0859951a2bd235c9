/** Flags shared by `pgscale tablespaces show` and `place`: the database and the temperature thresholds. */
import * as Flags from '@oclif/core/flags';
import { badInput } from '../errors.js';
import { defaultThresholds, tiers, type Thresholds } from './temperature.js';

export const databaseFlag = {
  database: Flags.string({ summary: "The database whose relations are sampled and placed (default: the connection's, else postgres)." }),
};

export const temperatureFlags = {
  ...databaseFlag,
  'hot-per-minute': Flags.string({ summary: `Scans plus row writes per minute from which a relation is hot (default ${defaultThresholds.hotPerMinute}).` }),
  'cold-per-minute': Flags.string({ summary: `Scans plus row writes per minute up to which a relation is cold (default ${defaultThresholds.coldPerMinute}).` }),
  'cold-partition-days': Flags.string({
    summary: `A time-range partition that ended more than this many days ago is cold unless hot (default ${defaultThresholds.coldPartitionAgeDays}).`,
  }),
  margin: Flags.string({
    summary: `Hysteresis: the fraction by which a relation must pass a threshold to leave its current tier (default ${defaultThresholds.margin}).`,
  }),
  'data-dir-tier': Flags.string({
    summary: "The tier the data directory's storage counts as: relations in the default tablespace are on it.",
    options: [...tiers],
    default: 'hot',
  }),
};

function nonNegative(flag: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw badInput(`--${flag} ${v}: not a number ≥ 0`);
  return n;
}

export function thresholdsFrom(f: { 'hot-per-minute'?: string; 'cold-per-minute'?: string; 'cold-partition-days'?: string; margin?: string }): Thresholds {
  const t: Thresholds = {
    hotPerMinute: nonNegative('hot-per-minute', f['hot-per-minute'], defaultThresholds.hotPerMinute),
    coldPerMinute: nonNegative('cold-per-minute', f['cold-per-minute'], defaultThresholds.coldPerMinute),
    coldPartitionAgeDays: nonNegative('cold-partition-days', f['cold-partition-days'], defaultThresholds.coldPartitionAgeDays),
    margin: nonNegative('margin', f.margin, defaultThresholds.margin),
  };
  if (t.margin >= 1) throw badInput(`--margin ${t.margin}: must be below 1`);
  if (t.coldPerMinute >= t.hotPerMinute) throw badInput(`--cold-per-minute ${t.coldPerMinute} must be below --hot-per-minute ${t.hotPerMinute}`);
  return t;
}
