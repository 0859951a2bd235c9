/**
 * Statistics snapshots of one database (pg_stat_user_tables, pg_statio_user_tables, index counters,
 * sizes, partitions) kept in the state directory — tablespaces/SYSTEM_ID-DATABASE/*.json, the
 * directories 0700 and the files 0600 — and the temperature report built from the newest two.
 */
import { readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { withDb, type ClusterAccess } from '../cluster/access.js';
import { refused } from '../errors.js';
import { fsyncPath } from '../files.js';
import { ensurePrivateDir } from '../pipeline/stateDir.js';
import type { Runner } from '../runner.js';
import type { AuditSink } from '../audit.js';
import { tablespaceStatements, type RelationStatsRow } from '../sql.js';
import { activityBetween, classify, partitionUpperBound, type Thresholds, type Tier } from './temperature.js';

export interface Snapshot {
  format: 'pgscale-stats/1';
  database: string;
  systemIdentifier: string;
  serverVersionNum: number;
  takenAt: string;
  /** pg_stat_database.stats_reset; null when the counters were never reset (then they count from the server's start). */
  statsReset: string | null;
  postmasterStart: string;
  defaultTablespace: string;
  relations: RelationStatsRow[];
}

export async function takeSnapshot(ctx: { runner: Runner; audit?: AuditSink }, access: ClusterAccess, database: string): Promise<Snapshot> {
  return withDb(
    ctx,
    access,
    async (db) => {
      const [frame] = await db.query(tablespaceStatements.statsFrame());
      const relations = await db.query(tablespaceStatements.relationStats());
      return {
        format: 'pgscale-stats/1',
        database: frame!.database,
        systemIdentifier: frame!.system_identifier,
        serverVersionNum: frame!.server_version_num,
        takenAt: new Date(frame!.taken_at).toISOString(),
        statsReset: frame!.stats_reset ? new Date(frame!.stats_reset).toISOString() : null,
        postmasterStart: new Date(frame!.postmaster_start).toISOString(),
        defaultTablespace: frame!.default_tablespace,
        relations,
      };
    },
    database,
  );
}

const snapshotDir = (stateDir: string, systemIdentifier: string, database: string) =>
  join(stateDir, 'tablespaces', `${systemIdentifier}-${database.replace(/[^A-Za-z0-9_.-]/g, '_')}`);

/** Writes a snapshot (0600, written then renamed, fsynced); returns its path. */
export function saveSnapshot(stateDir: string, s: Snapshot): string {
  const dir = snapshotDir(stateDir, s.systemIdentifier, s.database);
  ensurePrivateDir(join(stateDir, 'tablespaces'));
  ensurePrivateDir(dir);
  const file = join(dir, `${s.takenAt.replace(/[:.]/g, '-')}.json`);
  writeFileSync(`${file}.tmp`, JSON.stringify(s), { mode: 0o600 });
  fsyncPath(`${file}.tmp`);
  renameSync(`${file}.tmp`, file);
  fsyncPath(dir);
  return file;
}

/** The newest `count` snapshots of a database, oldest first. */
export function loadSnapshots(stateDir: string, systemIdentifier: string, database: string, count = 2): Snapshot[] {
  const dir = snapshotDir(stateDir, systemIdentifier, database);
  let names: string[];
  try {
    names = readdirSync(dir)
      .filter((n) => n.endsWith('.json'))
      .sort();
  } catch {
    names = [];
  }
  return names.slice(-count).map((n) => JSON.parse(readFileSync(join(dir, n), 'utf8')) as Snapshot);
}

export interface RelationTemperature {
  relation: string;
  schema: string;
  name: string;
  /** A partition's parent ("schema.name"), or null. */
  parent: string | null;
  tablespace: string;
  currentTier: Tier | null;
  totalBytes: number;
  tier: Tier;
  perMinute: number;
  reason: string;
}

export interface TemperatureReport {
  database: string;
  from: string;
  to: string;
  basis: 'two snapshots' | 'since stats_reset' | 'since server start';
  thresholds: Thresholds;
  relations: RelationTemperature[];
}

/** The tier a tablespace stands for: pgscale_hot/warm/cold, and the database default for the data directory's tier. */
export function tierOfTablespace(tablespace: string, dataDirTier: Tier): Tier | null {
  if (tablespace === '') return dataDirTier;
  const m = /^pgscale_(hot|warm|cold)$/.exec(tablespace);
  return m ? (m[1] as Tier) : null;
}

/** Judges every table and partition (not partitioned parents: they hold no rows) of the newest snapshot. */
export function temperatureReport(snaps: readonly Snapshot[], t: Thresholds, dataDirTier: Tier): TemperatureReport {
  if (snaps.length === 0)
    throw refused('no statistics snapshot of this database yet', 'take one with `pgscale tablespaces sample`, let the workload run, then take another');
  const now = snaps[snaps.length - 1]!;
  const before = snaps.length > 1 ? snaps[snaps.length - 2] : undefined;
  const origin = before?.takenAt ?? now.statsReset ?? now.postmasterStart;
  const seconds = (Date.parse(now.takenAt) - Date.parse(origin)) / 1000;
  const previous = new Map((before?.relations ?? []).map((r) => [`${r.schema}.${r.name}`, r]));
  const relations: RelationTemperature[] = now.relations
    .filter((r) => r.kind === 'r')
    .map((r) => {
      const key = `${r.schema}.${r.name}`;
      const current = tierOfTablespace(r.tablespace, dataDirTier);
      // a relation created since the older snapshot counts from zero
      const c = classify(activityBetween(before ? (previous.get(key) ?? zeroCounters(r)) : undefined, r, seconds), t, current ?? undefined, {
        partitionEnds: partitionUpperBound(r.partition_bound),
        now: new Date(now.takenAt),
      });
      return {
        relation: key,
        schema: r.schema,
        name: r.name,
        parent: r.parent_name ? `${r.parent_schema}.${r.parent_name}` : null,
        tablespace: r.tablespace,
        currentTier: current,
        totalBytes: r.total_bytes,
        ...c,
      };
    });
  return {
    database: now.database,
    from: origin,
    to: now.takenAt,
    basis: before ? 'two snapshots' : now.statsReset ? 'since stats_reset' : 'since server start',
    thresholds: t,
    relations,
  };
}

function zeroCounters(r: RelationStatsRow): RelationStatsRow {
  const counters = [
    'seq_scan',
    'seq_tup_read',
    'idx_scan',
    'idx_tup_fetch',
    'n_tup_ins',
    'n_tup_upd',
    'n_tup_del',
    'heap_blks_read',
    'heap_blks_hit',
    'idx_blks_read',
    'idx_blks_hit',
    'toast_blks_read',
    'toast_blks_hit',
  ] as const;
  return { ...r, ...Object.fromEntries(counters.map((k) => [k, 0])) };
}
