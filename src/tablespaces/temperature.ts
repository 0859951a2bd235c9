/**
 * Temperature of a relation from its access statistics: the rates between two snapshots (or since
 * the counters were reset, with one), judged against thresholds with hysteresis. Pure: the
 * snapshots are gathered elsewhere (snapshot.ts); this only judges, so it is unit-tested directly.
 */
import type { RelationStatsRow } from '../sql.js';

export const tiers = ['hot', 'warm', 'cold'] as const;
export type Tier = (typeof tiers)[number];

export const isTier = (s: string): s is Tier => (tiers as readonly string[]).includes(s);

export interface Thresholds {
  /** Scans plus row writes per minute at or above which a relation is hot. */
  hotPerMinute: number;
  /** Scans plus row writes per minute at or below which a relation is cold. */
  coldPerMinute: number;
  /** A time-range partition whose upper bound is older than this many days is cold unless it is hot. */
  coldPartitionAgeDays: number;
  /**
   * Hysteresis: a relation already on a tier keeps it until it misses that tier's threshold by
   * this fraction, and one on another tier must pass a threshold by it to change (0.25 = 25 %).
   */
  margin: number;
}

export const defaultThresholds: Thresholds = { hotPerMinute: 60, coldPerMinute: 0.5, coldPartitionAgeDays: 30, margin: 0.25 };

/** What one relation did in the measured interval. */
export interface Activity {
  seconds: number;
  scans: number;
  tuplesRead: number;
  writes: number;
  blocksRead: number;
  blocksHit: number;
  /** Counters went backwards (a statistics reset inside the interval): the rates count from zero. */
  counterReset: boolean;
}

export interface Classified {
  tier: Tier;
  reason: string;
  perMinute: number;
}

const n = (v: number | null | undefined) => v ?? 0;
const scansOf = (r: RelationStatsRow) => n(r.seq_scan) + n(r.idx_scan);
const tuplesOf = (r: RelationStatsRow) => n(r.seq_tup_read) + n(r.idx_tup_fetch);
const writesOf = (r: RelationStatsRow) => n(r.n_tup_ins) + n(r.n_tup_upd) + n(r.n_tup_del);
const blocksReadOf = (r: RelationStatsRow) => n(r.heap_blks_read) + n(r.idx_blks_read) + n(r.toast_blks_read);
const blocksHitOf = (r: RelationStatsRow) => n(r.heap_blks_hit) + n(r.idx_blks_hit) + n(r.toast_blks_hit);

/** The counters' change from `before` (absent: since the reset) to `now` over `seconds`. */
export function activityBetween(before: RelationStatsRow | undefined, now: RelationStatsRow, seconds: number): Activity {
  const counters = [scansOf, tuplesOf, writesOf, blocksReadOf, blocksHitOf];
  const reset = before !== undefined && counters.some((f) => f(now) < f(before));
  const delta = (f: (r: RelationStatsRow) => number) => (before && !reset ? f(now) - f(before) : f(now));
  return {
    seconds: Math.max(seconds, 1),
    scans: delta(scansOf),
    tuplesRead: delta(tuplesOf),
    writes: delta(writesOf),
    blocksRead: delta(blocksReadOf),
    blocksHit: delta(blocksHitOf),
    counterReset: reset,
  };
}

/** The upper bound of a RANGE partition on a date or timestamp, e.g. FOR VALUES FROM ('2024-01-01') TO ('2024-02-01'). */
export function partitionUpperBound(bound: string | null): Date | undefined {
  const m = bound && /\bTO \('(\d{4}-\d{2}-\d{2}(?:[ T][\d:.]+)?(?:[+-]\d{2}(?::?\d{2})?)?)'\)/.exec(bound);
  if (!m) return undefined;
  // PostgreSQL writes "2024-02-01 00:00:00+00": JavaScript wants a T and a minutes part in the offset
  const d = new Date(m[1]!.replace(' ', 'T').replace(/(T[\d:.]+[+-]\d{2})$/, '$1:00'));
  return Number.isNaN(d.getTime()) ? undefined : d;
}

const fmt = (v: number) => (v >= 10 ? String(Math.round(v)) : v.toFixed(v >= 1 ? 1 : 2));

/**
 * Judges one relation. `current` is the tier it sits on now (undefined when its tablespace maps to
 * no tier), which is what the hysteresis margin is about.
 */
export function classify(a: Activity, t: Thresholds, current: Tier | undefined, opts: { partitionEnds?: Date; now: Date }): Classified {
  const perMinute = ((a.scans + a.writes) * 60) / a.seconds;
  const over = `${fmt(a.seconds / 60)} min`;
  const what = `${fmt(perMinute)} scans+writes/min over ${over} (${a.scans} scans, ${a.writes} row writes, ${a.blocksRead + a.blocksHit} blocks touched)${a.counterReset ? ', counters reset in between' : ''}`;
  // staying on the current tier is easier than entering it
  const hotLine = current === 'hot' ? t.hotPerMinute * (1 - t.margin) : current ? t.hotPerMinute * (1 + t.margin) : t.hotPerMinute;
  const coldLine = current === 'cold' ? t.coldPerMinute * (1 + t.margin) : current ? t.coldPerMinute * (1 - t.margin) : t.coldPerMinute;
  // what placement does with it: it stays on its tier or moves to its class's (a tablespace of no tier is left alone)
  const fate = (tier: Tier) =>
    current === tier ? `, stays ${tier} (margin ${Math.round(t.margin * 100)} %)` : current ? `, due to move from ${current} to ${tier}` : '';
  if (perMinute >= hotLine) return { tier: 'hot', perMinute, reason: `${what} ≥ ${fmt(hotLine)}${fate('hot')}` };
  if (opts.partitionEnds) {
    const ageDays = (opts.now.getTime() - opts.partitionEnds.getTime()) / 86_400_000;
    if (ageDays > t.coldPartitionAgeDays) {
      return {
        tier: 'cold',
        perMinute,
        reason: `time-range partition ended ${Math.floor(ageDays)} days ago (> ${t.coldPartitionAgeDays}) and not hot: ${what}${fate('cold')}`,
      };
    }
  }
  if (perMinute <= coldLine) return { tier: 'cold', perMinute, reason: `${what} ≤ ${fmt(coldLine)}${fate('cold')}` };
  return { tier: 'warm', perMinute, reason: `${what}: between ${fmt(coldLine)} and ${fmt(hotLine)}${fate('warm')}` };
}
