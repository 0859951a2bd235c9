/**
 * Placement decisions, pure: which tier goes to which volume and tablespace, what each tablespace's
 * planner settings are, and which relations move where by which method. The command gathers the
 * facts (volumes, storage classes, the temperature report); the steps carry out what is decided here.
 */
import { badInput } from '../errors.js';
import type { StorageClass } from '../host/types.js';
import type { RelationStatsRow } from '../sql.js';
import type { RelationTemperature } from './snapshot.js';
import { isTier, tiers, type Tier } from './temperature.js';

export interface VolumeArg {
  path: string;
  /** Declared with PATH=TIER; absent: from the detected storage class. */
  tier?: Tier;
}

/** --volume PATH=hot|warm|cold, or --volume PATH for the tier of the detected storage class. */
export function parseVolumeArg(arg: string): VolumeArg {
  const eq = arg.lastIndexOf('=');
  if (eq < 0) {
    if (!arg.startsWith('/'))
      throw badInput(`--volume ${arg}: not an absolute path`, 'pass --volume /mnt/cold=cold (or --volume /mnt/cold to take the tier from its storage class)');
    return { path: arg };
  }
  const path = arg.slice(0, eq);
  const tier = arg.slice(eq + 1);
  if (!isTier(tier)) throw badInput(`--volume ${arg}: unknown tier "${tier}"`, `the tiers are ${tiers.join(', ')}`);
  if (!path.startsWith('/')) throw badInput(`--volume ${arg}: "${path}" is not an absolute path`);
  return { path, tier };
}

/** The tier a storage class serves when the DBA did not declare one. */
export function tierForStorageClass(c: StorageClass): Tier {
  if (c === 'local-nvme' || c === 'ssd') return 'hot';
  if (c === 'hdd' || c === 'network-fs') return 'cold';
  return 'warm';
}

export interface TablespaceOptions {
  [key: string]: number;
  random_page_cost: number;
  effective_io_concurrency: number;
  maintenance_io_concurrency: number;
}

/**
 * Planner settings per storage class: flash reads randomly almost as fast as sequentially and
 * takes deep queues; spinning disks and network file systems do not. Unknown media get the tier's.
 */
export function tablespaceOptionsFor(c: StorageClass, tier: Tier): TablespaceOptions {
  switch (c) {
    case 'local-nvme':
      return { random_page_cost: 1.1, effective_io_concurrency: 256, maintenance_io_concurrency: 256 };
    case 'ssd':
      return { random_page_cost: 1.1, effective_io_concurrency: 200, maintenance_io_concurrency: 200 };
    case 'network-block':
      return { random_page_cost: 1.5, effective_io_concurrency: 64, maintenance_io_concurrency: 64 };
    case 'hdd':
    case 'network-fs':
      return { random_page_cost: 4, effective_io_concurrency: 2, maintenance_io_concurrency: 10 };
    default:
      return tier === 'hot'
        ? { random_page_cost: 1.1, effective_io_concurrency: 200, maintenance_io_concurrency: 200 }
        : tier === 'warm'
          ? { random_page_cost: 2, effective_io_concurrency: 32, maintenance_io_concurrency: 32 }
          : { random_page_cost: 4, effective_io_concurrency: 2, maintenance_io_concurrency: 10 };
  }
}

export const tablespaceName = (tier: Tier) => `pgscale_${tier}`;

/**
 * Where a tier's relations go: its declared volume's tablespace, else '' (the database default) for
 * the data directory's tier. Relations already on a tablespace of their tier stay (decidePlacement).
 */
export function tierTablespaces(declared: readonly Tier[], dataDirTier: Tier): Partial<Record<Tier, string>> {
  const out: Partial<Record<Tier, string>> = {};
  for (const t of tiers) {
    if (declared.includes(t)) out[t] = tablespaceName(t);
    else if (t === dataDirTier) out[t] = '';
  }
  return out;
}

export type IndexMethod = 'reindex-concurrently' | 'alter-index';
/** pg_repack copies the heap and rebuilds its indexes online (a key needed); ALTER TABLE holds ACCESS EXCLUSIVE for the copy. */
export type TableMethod = 'pg_repack' | 'alter-table';

/** What was found of pg_repack: the program next to the other clients and the extension in the database. */
export interface RepackFacts {
  /** false: declined with --no-repack. */
  wanted: boolean;
  serverMajor: number;
  bindir: string;
  /** `pg_repack --version` of BINDIR/pg_repack and the major of the PostgreSQL installation there (null: no postgres there); null when absent. */
  client: { version: string; bindirMajor: number | null } | null;
  /** From pg_available_extensions; null when the server has no pg_repack files. */
  extension: { defaultVersion: string; installedVersion: string | null } | null;
  /** The role the moves run as: pg_repack (and creating its extension) needs a superuser. */
  role: { name: string; superuser: boolean };
}

export interface RepackDecision {
  [key: string]: string | boolean;
  usable: boolean;
  /** pgscale creates the extension (and a rollback drops it). */
  createExtension: boolean;
  why: string;
}

/**
 * Whether tables can move with pg_repack: as a superuser (pg_repack refuses any other role, at run
 * time), the program built for the server's major and the same version as the extension in the
 * database (pg_repack itself refuses a mismatch). Otherwise tables move by ALTER TABLE, as with
 * --no-repack.
 */
export function judgeRepack(f: RepackFacts): RepackDecision {
  const no = (why: string): RepackDecision => ({ usable: false, createExtension: false, why });
  if (!f.wanted) return no('pg_repack declined with --no-repack');
  if (!f.role.superuser) return no(`pg_repack needs a superuser and role ${f.role.name} is not one (connect as a superuser to move tables online)`);
  if (!f.client) return no(`no pg_repack program in ${f.bindir}`);
  if (f.client.bindirMajor === null) return no(`${f.bindir} holds no postgres program: which PostgreSQL its pg_repack was built for is unknown`);
  if (f.client.bindirMajor !== f.serverMajor)
    return no(`the pg_repack in ${f.bindir} belongs to PostgreSQL ${f.client.bindirMajor}, the server is ${f.serverMajor}`);
  if (!f.extension) return no(`the server has no pg_repack extension files (postgresql-${f.serverMajor}-repack is not installed)`);
  const inDb = f.extension.installedVersion ?? f.extension.defaultVersion;
  if (inDb !== f.client.version)
    return no(
      `the pg_repack program is ${f.client.version}, the extension ${f.extension.installedVersion ? 'in the database' : 'the server offers'} is ${inDb}`,
    );
  return f.extension.installedVersion
    ? { usable: true, createExtension: false, why: `pg_repack ${inDb} is installed in the database` }
    : { usable: true, createExtension: true, why: `pg_repack ${inDb} is available: the run creates the extension (a rollback drops it)` };
}

export interface IndexMove {
  [key: string]: string | number;
  schema: string;
  name: string;
  bytes: number;
  from: string;
  method: IndexMethod;
}

/** One relation's move: its heap (TOAST follows) and every index, to one tablespace ('' = default). */
export interface RelationMove {
  [key: string]: string | number | boolean | IndexMove[] | null;
  schema: string;
  name: string;
  parent: string | null;
  tier: Tier;
  reason: string;
  from: string;
  to: string;
  heapBytes: number;
  /** Whole relation: heap, TOAST and indexes (what the target volume must hold). */
  totalBytes: number;
  method: TableMethod;
  /** Why this method (a key for pg_repack, or why pg_repack cannot be used). */
  methodWhy: string;
  /** The heap moves under ACCESS EXCLUSIVE (readers and writers wait for the copy). */
  blocking: boolean;
  indexes: IndexMove[];
}

export interface ParentDefault {
  [key: string]: string | null;
  schema: string;
  name: string;
  from: string;
  to: string;
  why: string;
}

export interface PlacementOptions {
  dataDirTier: Tier;
  declaredTiers: Tier[];
  serverVersionNum: number;
  /** A heap larger than this is not moved by a blocking rewrite unless allowBlocking. */
  blockingLimitBytes: number;
  allowBlocking: boolean;
  repack: RepackDecision;
}

export interface Placement {
  moves: RelationMove[];
  parents: ParentDefault[];
  /** Relations that would move but are refused (too big for a blocking move). */
  refused: { relation: string; why: string }[];
  /** Relations that stay, and why (already on their tier, no volume for the tier, not a pgscale tablespace). */
  staying: { relation: string; tier: Tier; why: string }[];
}

const show = (ts: string) => (ts === '' ? 'the default tablespace' : ts);

/** Decides every move from the classified relations and the snapshot they were judged on. */
export function decidePlacement(temps: readonly RelationTemperature[], stats: readonly RelationStatsRow[], o: PlacementOptions): Placement {
  const targets = tierTablespaces(o.declaredTiers, o.dataDirTier);
  const byKey = new Map(stats.map((r) => [`${r.schema}.${r.name}`, r]));
  const out: Placement = { moves: [], parents: [], refused: [], staying: [] };
  for (const t of temps) {
    const to = targets[t.tier];
    if (t.currentTier === null) {
      out.staying.push({ relation: t.relation, tier: t.tier, why: `in tablespace ${t.tablespace}, which pgscale does not manage` });
      continue;
    }
    if (t.currentTier === t.tier) {
      out.staying.push({ relation: t.relation, tier: t.tier, why: `already on the ${t.tier} tier (${show(t.tablespace)})` });
      continue;
    }
    if (to === undefined) {
      out.staying.push({ relation: t.relation, tier: t.tier, why: `no volume for the ${t.tier} tier (pass --volume PATH=${t.tier})` });
      continue;
    }
    const r = byKey.get(t.relation)!;
    const method: TableMethod = o.repack.usable && r.has_key ? 'pg_repack' : 'alter-table';
    const methodWhy = !o.repack.usable
      ? o.repack.why
      : r.has_key
        ? 'it has a primary key or a NOT NULL unique index'
        : 'pg_repack needs a primary key or a NOT NULL unique index, it has none';
    const blocking = method === 'alter-table' && r.heap_bytes > o.blockingLimitBytes;
    if (blocking && !o.allowBlocking) {
      out.refused.push({
        relation: t.relation,
        why: `its heap is ${r.heap_bytes} bytes, above the ${o.blockingLimitBytes}-byte limit for a move that blocks the table (ALTER TABLE … SET TABLESPACE holds ACCESS EXCLUSIVE for the copy), and pg_repack cannot move it online: ${methodWhy}`,
      });
      continue;
    }
    out.moves.push({
      schema: t.schema,
      name: t.name,
      parent: t.parent,
      tier: t.tier,
      reason: t.reason,
      from: r.tablespace,
      to,
      heapBytes: r.heap_bytes,
      totalBytes: r.total_bytes,
      method,
      methodWhy,
      blocking,
      indexes: r.indexes.map((i) => ({
        schema: i.schema,
        name: i.name,
        bytes: i.bytes,
        from: i.tablespace,
        // REINDEX … TABLESPACE CONCURRENTLY is 14+, and refuses exclusion-constraint indexes
        method: o.serverVersionNum >= 140000 && !i.exclusion ? 'reindex-concurrently' : 'alter-index',
      })),
    });
  }
  // a partitioned parent's default follows its hottest leaf: new partitions are where the writes go
  const leavesByParent = new Map<string, RelationTemperature[]>();
  for (const t of temps) if (t.parent) leavesByParent.set(t.parent, [...(leavesByParent.get(t.parent) ?? []), t]);
  for (const [parent, leaves] of leavesByParent) {
    const p = byKey.get(parent);
    if (!p || p.kind !== 'p') continue;
    const hottest = [...leaves].sort((a, b) => b.perMinute - a.perMinute)[0]!;
    const to = targets[hottest.tier];
    if (to === undefined || to === p.tablespace) continue;
    out.parents.push({
      schema: p.schema,
      name: p.name,
      from: p.tablespace,
      to,
      why: `its hottest partition ${hottest.relation} is ${hottest.tier}: new partitions are created in ${show(to)}`,
    });
  }
  return out;
}

/** Bytes each target tablespace receives ('' = the data directory's). */
export function bytesByTarget(moves: readonly RelationMove[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of moves) out.set(m.to, (out.get(m.to) ?? 0) + m.totalBytes);
  return out;
}

/**
 * The bytes a move copies, weighted by how often they are touched: the heap is copied (read twice
 * more when ALTER TABLE counts rows, once under the lock; pg_repack also writes its change log and
 * replays it); indexes are read and rebuilt.
 */
export function moveWorkBytes(m: Pick<RelationMove, 'heapBytes' | 'indexes' | 'method'>, countRows: boolean): number {
  const indexBytes = m.indexes.reduce((a, i) => a + i.bytes, 0);
  const heapFactor = m.method === 'pg_repack' ? 1.2 : countRows ? 1.5 : 1;
  return m.heapBytes * heapFactor + indexBytes * 2;
}

/** Seconds for a move at a copy rate (bytes of moveWorkBytes per second), plus a second of start-up. */
export function estimateMoveSeconds(m: Pick<RelationMove, 'heapBytes' | 'indexes' | 'method'>, copyBytesPerSecond: number, countRows: boolean): number {
  return 1 + moveWorkBytes(m, countRows) / copyBytesPerSecond;
}

/** A move journaled by an earlier run: its work (moveWorkBytes) and how long its step took. */
export interface JournaledMove {
  workBytes: number;
  seconds: number;
}

/** Moves smaller than this are mostly start-up and lock waits: they say little about the copy rate. */
const rateSampleMinBytes = 16 * 1024 ** 2;

/**
 * The copy rate measured on the last moves journaled for this cluster (at most `last`, large enough
 * to mean something): their work over their time. Null when there is none to measure.
 */
export function measuredCopyRate(moves: readonly JournaledMove[], last = 10): { bytesPerSecond: number; moves: number } | null {
  const usable = moves.filter((m) => m.workBytes >= rateSampleMinBytes && m.seconds > 0).slice(-last);
  if (usable.length === 0) return null;
  const work = usable.reduce((a, m) => a + m.workBytes, 0);
  const seconds = usable.reduce((a, m) => a + m.seconds, 0);
  return { bytesPerSecond: work / seconds, moves: usable.length };
}
