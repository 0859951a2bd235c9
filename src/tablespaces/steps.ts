/**
 * `pgscale tablespaces place` as steps: prepare (every check, then the missing tablespaces with
 * their planner settings), the pg_repack extension when the run creates it, one journaled step per
 * relation (pg_repack for a table with a key; else the heap under a short lock_timeout with bounded
 * backed-off retries and the indexes rebuilt concurrently), the partitioned parents' defaults,
 * temp_tablespaces. A resume continues with the next relation; a rollback moves them back.
 */
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync, statfsSync, chownSync } from 'node:fs';
import { dirname } from 'node:path';
import { clientInvocation, withDb, type ClusterAccess } from '../cluster/access.js';
import { ExitCode, PgscaleError } from '../errors.js';
import { formatBytes } from '../format.js';
import { fsyncPath, isInside, realish } from '../files.js';
import { userByName } from '../osUser.js';
import { defineOperation } from '../pipeline/plan.js';
import { check, defineStep, type CheckResult, type JsonObject, type PlannedAction, type StepContext, type StepData } from '../pipeline/step.js';
import { describeFailure, isRoot, type Invocation } from '../runner.js';
import { isLockTimeout, qualified, statements, tablespaceStatements as ts, type Db, type Statement } from '../sql.js';
import {
  bytesByTarget,
  estimateMoveSeconds,
  type IndexMove,
  type ParentDefault,
  type RelationMove,
  type RepackDecision,
  type TablespaceOptions,
} from './placement.js';
import type { Tier } from './temperature.js';

export interface TierVolume {
  [key: string]: string | boolean | string[] | TablespaceOptions;
  tier: Tier;
  /** The --volume directory. */
  volume: string;
  /** The tablespace directory: VOLUME/pgscale_TIER. */
  location: string;
  tablespace: string;
  storageClass: string;
  options: TablespaceOptions;
  /** The tablespace existed (at this location) when the plan was made: rollback keeps it. */
  existed: boolean;
  /** Its options then ("random_page_cost=2"…): rollback puts them back. */
  previousOptions: string[];
}

/** How each relation move waits for its lock. */
export interface LockPolicy {
  [key: string]: number;
  /** lock_timeout of every attempt: no attempt waits longer. */
  lockTimeoutMs: number;
  /** Attempts after the first; the pauses between them double from backoffMs, at most 10 s. */
  retries: number;
  backoffMs: number;
}

export interface PlaceParams extends JsonObject {
  access: ClusterAccess;
  database: string;
  dataDir: string;
  walDir: string;
  owner: string;
  serverVersionNum: number;
  /** The database's default tablespace: '' in a move means this one. */
  defaultTablespace: string;
  volumes: TierVolume[];
  moves: RelationMove[];
  parents: ParentDefault[];
  refused: { relation: string; why: string }[];
  staying: { relation: string; tier: Tier; why: string }[];
  /** temp_tablespaces after the run, and before it (null: left alone). */
  tempTablespaces: string | null;
  previousTempTablespaces: string;
  force: boolean;
  lock: LockPolicy;
  /** Whether tables with a key move with pg_repack, and whether the run creates its extension. */
  repack: RepackDecision;
  /** Count the rows of each heap in one snapshot before its lock and after its rewrite. */
  countRows: boolean;
  copyBytesPerSecond: number;
  /** Where the copy rate comes from (measured, told, assumed): the plan says it. */
  copyRateSource: string;
  maxWalBytes: number;
}

interface MoveParams extends JsonObject {
  access: ClusterAccess;
  database: string;
  defaultTablespace: string;
  lock: LockPolicy;
  countRows: boolean;
  copyBytesPerSecond: number;
  move: RelationMove;
}

interface ParentParams extends JsonObject {
  access: ClusterAccess;
  database: string;
  defaultTablespace: string;
  lock: LockPolicy;
  parent: ParentDefault;
}

interface ExtensionParams extends JsonObject {
  access: ClusterAccess;
  database: string;
  why: string;
  /** How the undo waits for the lock that removing an interrupted pg_repack's trigger takes. */
  lock: LockPolicy;
}

interface TempParams extends JsonObject {
  access: ClusterAccess;
  to: string;
  previous: string;
}

const onDb = <T>(ctx: StepContext, p: { access: ClusterAccess; database?: string }, use: (db: Db) => Promise<T>) => withDb(ctx, p.access, use, p.database);
const target = (p: { access: ClusterAccess }) => `${p.access.host}:${p.access.port}`;
const name = (ts: string, dflt: string) => ts || dflt;
const shown = (ts: string) => ts || 'the default tablespace';

/** Runs a lock-taking statement with bounded attempts: each waits at most lock_timeout, the pauses double. */
async function withLockRetries(ctx: StepContext, db: Db, lock: LockPolicy, what: string, statement: () => Statement<void>): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    try {
      await db.query(statement());
      return attempt;
    } catch (e) {
      // on a pg connection a failed BEGIN … COMMIT text leaves its transaction open and aborted
      await db.query(ts.rollback()).catch(() => undefined); // a broken connection: the original error tells
      if (!isLockTimeout(e)) throw e;
      if (attempt >= lock.retries) {
        throw new PgscaleError(
          `${what}: the lock was not granted within ${lock.lockTimeoutMs} ms in ${attempt + 1} attempts (sessions hold it)`,
          ExitCode.FailedAfterChange,
          'see pg_locks / pg_stat_activity for the holder; `pgscale resume` tries again',
        );
      }
      const pause = Math.min(lock.backoffMs * 2 ** attempt, 10_000);
      ctx.progress.message(`${what}: lock not granted, attempt ${attempt + 2} of ${lock.retries + 1} in ${pause} ms`);
      await new Promise((r) => setTimeout(r, pause));
      if (ctx.signal.aborted) throw new PgscaleError('interrupted', ExitCode.Interrupted);
    }
  }
}

// ---------------------------------------------------------------- prepare: checks, tablespaces

function freeBytes(path: string): number {
  const s = statfsSync(path);
  return s.bavail * s.bsize;
}

async function ownerCanWrite(ctx: StepContext, owner: string, path: string): Promise<boolean> {
  const u = userByName(owner);
  if (!u) return false;
  const res = await ctx.runner.run({ program: 'test', args: ['-w', path, '-a', '-x', path], runAs: u });
  return res.exitCode === 0;
}

/** Every check before anything changes: volumes, collisions, space, WAL, sizes, standbys. */
export async function placeChecks(ctx: StepContext, p: PlaceParams): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const existing = await onDb(ctx, p, (db) => db.query(ts.tablespaceList()));
  const byTarget = bytesByTarget(p.moves);
  const dataDev = statSync(p.dataDir).dev;
  for (const v of p.volumes) {
    const label = `${v.tier} volume ${v.volume}`;
    if (isInside(realish(v.location), p.dataDir)) {
      out.push(
        check.fail(
          `${label}: outside the data directory`,
          `${v.location} is inside ${p.dataDir}: a tablespace there would be copied into itself by pg_basebackup and break upgrades`,
        ),
      );
      continue;
    }
    if (!existsSync(v.volume) || !statSync(v.volume).isDirectory()) {
      out.push(check.fail(`${label}: exists`, `${v.volume} is not a directory: mount the volume (or create the directory) first`));
      continue;
    }
    const same = existing.find((t) => t.name === v.tablespace);
    const atLocation = existing.find((t) => t.location === v.location);
    if (same && same.location !== v.location)
      out.push(
        check.fail(
          `${label}: tablespace name`,
          `a tablespace named ${v.tablespace} already exists at ${same.location || 'the data directory'}, not at ${v.location}`,
        ),
      );
    else if (atLocation && atLocation.name !== v.tablespace)
      out.push(check.fail(`${label}: tablespace name`, `${v.location} is already the location of tablespace ${atLocation.name}`));
    else if (same) out.push(check.pass(`${label}: tablespace name`, `${v.tablespace} exists at ${v.location}: used as it is`));
    else if (existsSync(v.location) && readdirSync(v.location).length > 0)
      out.push(check.fail(`${label}: tablespace directory`, `${v.location} exists and is not empty`));
    else out.push(check.pass(`${label}: tablespace name`, `${v.tablespace} is created at ${v.location} (0700, owned by ${p.owner})`));
    if (!same) {
      out.push(
        (await ownerCanWrite(ctx, p.owner, v.volume))
          ? check.pass(`${label}: writable by ${p.owner}`, `${p.owner} can create ${v.location}`)
          : check.fail(`${label}: writable by ${p.owner}`, `${p.owner} (the cluster owner) cannot write to ${v.volume}`),
      );
    }
    if (statSync(v.volume).dev === dataDev) {
      const detail = `${v.volume} is on the data directory's device: the ${v.tier} tier would gain nothing`;
      out.push(
        p.force
          ? check.warn(`${label}: separate device`, `${detail} (accepted with --force)`)
          : check.fail(`${label}: separate device`, `${detail}; pass --force to accept it`),
      );
    } else out.push(check.pass(`${label}: separate device`, `${v.storageClass} storage, apart from the data directory`));
    const need = byTarget.get(v.tablespace) ?? 0;
    const want = need === 0 ? 0 : Math.round(need * 1.1) + 16 * 1024 ** 2;
    const free = freeBytes(v.volume);
    out.push(
      free >= want
        ? check.pass(`${label}: free space`, `${formatBytes(free)} free for ${formatBytes(need)} moving there`)
        : check.fail(`${label}: free space`, `not enough: ${formatBytes(need)} moves there (with margin ${formatBytes(want)}), ${formatBytes(free)} free`),
    );
  }
  // a moved relation is written to the WAL in full (wal_level above minimal); checkpoints recycle it between moves
  const largest = Math.max(0, ...p.moves.map((m) => m.totalBytes));
  if (largest > 0) {
    const need = largest + p.maxWalBytes;
    const free = freeBytes(p.walDir);
    out.push(
      free >= need
        ? check.pass('WAL space', `${formatBytes(free)} free in ${p.walDir} for up to ${formatBytes(largest)} of WAL per move plus max_wal_size`)
        : check.fail(
            'WAL space',
            `${formatBytes(free)} free in ${p.walDir}: the largest move writes ${formatBytes(largest)} of WAL on top of max_wal_size (${formatBytes(p.maxWalBytes)})`,
          ),
    );
  }
  for (const r of p.refused) out.push(check.fail(`size limit: ${r.relation}`, `${r.why}; pass --allow-blocking to move it anyway`));
  for (const m of p.moves.filter((m) => m.blocking))
    out.push(
      check.warn(
        `blocking move: ${m.schema}.${m.name}`,
        `${formatBytes(m.heapBytes)} heap: readers and writers wait for its copy (allowed with --allow-blocking)`,
      ),
    );
  const slow = p.moves.flatMap((m) => m.indexes.filter((i) => i.method === 'alter-index').map((i) => `${i.schema}.${i.name}`));
  if (slow.length)
    out.push(
      check.warn(
        'indexes moved by rewrite',
        `${slow.join(', ')} move with ALTER INDEX (blocks writes to the table): ${p.serverVersionNum < 140000 ? 'REINDEX CONCURRENTLY … TABLESPACE needs 14+' : 'exclusion-constraint indexes cannot be rebuilt concurrently'}`,
      ),
    );
  const standbys = await onDb(ctx, p, (db) => db.query(statements.standbys()));
  if (standbys.length && p.volumes.some((v) => !existing.some((t) => t.name === v.tablespace))) {
    out.push(
      check.warn(
        'standbys',
        `${standbys.map((s) => s.application_name).join(', ')} replay CREATE TABLESPACE with the same path: ${p.volumes.map((v) => v.location).join(', ')} must be creatable there by the server account`,
      ),
    );
  }
  if (p.moves.length) {
    out.push(check.info('online table method', p.repack.why));
    out.push(check.info('duration estimate', `copy rate ${p.copyRateSource}`));
  }
  if (p.staying.length) out.push(check.info('staying', p.staying.map((s) => `${s.relation} (${s.tier}): ${s.why}`).join('; ')));
  out.push(
    p.moves.length
      ? check.info('moves', `${p.moves.length} relation${p.moves.length === 1 ? '' : 's'}, ${formatBytes(p.moves.reduce((a, m) => a + m.totalBytes, 0))}`)
      : check.info('moves', 'every relation is on its tier already'),
  );
  return out;
}

export const prepareStep = defineStep<PlaceParams>({
  kind: 'tablespaces.prepare',
  title: (p) => {
    const created = p.volumes.filter((v) => !v.existed);
    const one = created.length === 1;
    return created.length
      ? `Create tablespace${one ? '' : 's'} ${created.map((v) => `${v.tablespace} (${v.location})`).join(', ')} with ${one ? 'its' : 'their'} planner settings`
      : 'Set the planner settings of the existing tablespaces';
  },
  check: placeChecks,
  async plan(_ctx, p) {
    const actions: PlannedAction[] = [];
    for (const v of p.volumes) {
      if (!v.existed) {
        actions.push({ kind: 'file', path: v.location, change: 'mkdir', mode: '0700', note: `owned by ${p.owner}` });
        actions.push({ kind: 'sql', target: target(p), sql: ts.createTablespace(v.tablespace, v.location).text });
      }
      actions.push({
        kind: 'sql',
        target: target(p),
        sql: ts.setTablespaceOptions(v.tablespace, v.options).text,
        note: `${v.storageClass} storage on the ${v.tier} tier`,
      });
    }
    return actions;
  },
  async apply(ctx, p) {
    const owner = userByName(p.owner);
    for (const v of p.volumes) {
      if (!v.existed && !existsSync(v.location)) {
        mkdirSync(v.location, { mode: 0o700 });
        if (isRoot() && owner) chownSync(v.location, owner.uid, owner.gid);
        fsyncPath(dirname(v.location));
      }
    }
    await onDb(ctx, p, async (db) => {
      const existing = await db.query(ts.tablespaceList());
      for (const v of p.volumes) {
        if (!existing.some((t) => t.name === v.tablespace)) await db.query(ts.createTablespace(v.tablespace, v.location));
        await db.query(ts.setTablespaceOptions(v.tablespace, v.options));
      }
    });
    return { tablespaces: p.volumes.map((v) => v.tablespace) };
  },
  async verify(ctx, p) {
    const existing = await onDb(ctx, p, (db) => db.query(ts.tablespaceList()));
    for (const v of p.volumes) {
      const t = existing.find((e) => e.name === v.tablespace);
      if (!t || t.location !== v.location) return { ok: false, detail: `tablespace ${v.tablespace} is not at ${v.location}` };
      const opts = new Set(t.options ?? []);
      const missing = Object.entries(v.options).filter(([k, val]) => !opts.has(`${k}=${val}`));
      if (missing.length) return { ok: false, detail: `${v.tablespace} lacks ${missing.map(([k, val]) => `${k}=${val}`).join(', ')}` };
    }
    return { ok: true, detail: p.volumes.map((v) => `${v.tablespace} at ${v.location}`).join(', ') };
  },
  async rollback(ctx, p) {
    await onDb(ctx, p, async (db) => {
      for (const v of p.volumes) {
        if (!v.existed) {
          await db.query(ts.dropTablespace(v.tablespace));
          continue;
        }
        await db.query(ts.resetTablespaceOptions(v.tablespace, Object.keys(v.options)));
        const previous = Object.fromEntries(v.previousOptions.map((o) => o.split('=') as [string, string]).map(([k, val]) => [k, Number(val)]));
        if (Object.keys(previous).length) await db.query(ts.setTablespaceOptions(v.tablespace, previous));
      }
    });
    for (const v of p.volumes.filter((v) => !v.existed && existsSync(v.location))) {
      rmdirSync(v.location);
      fsyncPath(dirname(v.location));
    }
  },
  rollbackNote: (p) =>
    `drop the tablespaces this run created (${
      p.volumes
        .filter((v) => !v.existed)
        .map((v) => v.tablespace)
        .join(', ') || 'none'
    }) and their directories; put back the settings of those it found`,
  estimateSeconds: (p) => 1 + p.volumes.length,
});

// ---------------------------------------------------------------- one relation

const relation = (m: RelationMove) => `${m.schema}.${m.name}`;

/** Seconds pg_repack waits for its locks: what the lock policy allows ALTER TABLE in all its attempts. */
function lockBudgetSeconds(lock: LockPolicy): number {
  let ms = lock.lockTimeoutMs * (lock.retries + 1);
  for (let a = 0; a < lock.retries; a++) ms += Math.min(lock.backoffMs * 2 ** a, 10_000);
  return Math.max(1, Math.ceil(ms / 1000));
}

/**
 * pg_repack copies the table into `to` while a trigger logs concurrent changes, rebuilds the indexes
 * there (--moveidx) and swaps under a brief lock; it gives up rather than cancel sessions holding a
 * lock (--no-kill-backend). The connection comes from the environment, never argv.
 */
function repackInvocation(ctx: StepContext, p: MoveParams, to: string): Invocation {
  const m = p.move;
  return clientInvocation(
    p.access,
    'pg_repack',
    [
      '--no-order',
      '--no-kill-backend',
      '--wait-timeout',
      String(lockBudgetSeconds(p.lock)),
      '--tablespace',
      to,
      '--moveidx',
      '--table',
      qualified(m.schema, m.name),
    ],
    {
      env: { PGDATABASE: p.database, PGAPPNAME: 'pgscale-pg_repack' },
      signal: ctx.signal,
      onStart: ctx.trackProcess,
      // pg_repack drops its trigger, log table and copy on SIGINT only (pgut's handler), after waiting
      // up to --wait-timeout for its lock; SIGTERM would end it on the spot and leave them
      abortWith: { signal: 'SIGINT', graceMs: (lockBudgetSeconds(p.lock) + 30) * 1000 },
    },
  );
}

/**
 * Removes what pg_repack left for one table, then checks nothing is left. A killed run's pg_repack
 * session may still be copying: it is ended first (the run lock keeps any other pgscale run off the
 * cluster, so no live run owns it). pg_repack cleans up only on SIGINT, and then needs an exclusive
 * lock it gives up on (--no-kill-backend); killed any other way it leaves its trigger logging every
 * write: the same cleanup (repack.repack_drop) runs here under the run's lock policy.
 */
async function clearRepackLeftovers(ctx: StepContext, db: Db, lock: LockPolicy, schema: string, table: string): Promise<void> {
  const what = `${schema}.${table}`;
  await db.query(ts.endOrphanRepackSessions());
  for (let i = 0; i < 100 && (await db.query(ts.orphanRepackSessions()))[0]!.count > 0; i++) await new Promise((r) => setTimeout(r, 100));
  let [left] = await db.query(ts.repackLeftovers(schema, table));
  if (!left?.objects.length) return;
  const others = await db.query(ts.foreignRepackSessions());
  if (others.length)
    throw new PgscaleError(
      `${what}: pg_repack left ${left.objects.join(', ')}, and a pg_repack pgscale did not start is connected (pid ${others.map((o) => o.pid).join(', ')}): they may be its own`,
      ExitCode.FailedAfterChange,
      'wait for that pg_repack to finish (see pg_stat_activity), then `pgscale rollback` or `pgscale resume` goes on',
    );
  ctx.progress.message(`${what}: removing what pg_repack left (${left.objects.join(', ')})`);
  if (left.objects.some((o) => !o.startsWith('invalid index ')))
    await withLockRetries(ctx, db, lock, `removing pg_repack's leftovers on ${what}`, () => ts.repackDrop(left!.oid, lock.lockTimeoutMs));
  for (const o of left.objects.filter((o) => o.startsWith('invalid index ')))
    await db.query(ts.dropIndexConcurrently(schema, o.slice('invalid index '.length)));
  [left] = await db.query(ts.repackLeftovers(schema, table));
  if (left?.objects.length)
    throw new PgscaleError(
      `${what}: pg_repack's ${left.objects.join(', ')} could not be removed`,
      ExitCode.FailedAfterChange,
      'see the server log, then `pgscale rollback` tries again',
    );
}

/** `to` as placement reports it: '' is the database's default tablespace. */
async function repackTable(ctx: StepContext, db: Db, p: MoveParams, to: string): Promise<void> {
  const m = p.move;
  // pg_repack refuses a table whose trigger and log table a killed pg_repack left
  await clearRepackLeftovers(ctx, db, p.lock, m.schema, m.name);
  const inv = repackInvocation(ctx, p, name(to, p.defaultTablespace));
  const res = await ctx.runner.run(inv);
  // interrupted (SIGINT, on which pg_repack tries its own cleanup) or failed: the table has not been
  // swapped, and nothing of the copy may stay behind, whether pg_repack's cleanup was granted its lock or not
  if (ctx.signal.aborted || res.exitCode !== 0) await clearRepackLeftovers(ctx, db, p.lock, m.schema, m.name);
  if (ctx.signal.aborted) throw new PgscaleError('interrupted', ExitCode.Interrupted);
  if (res.exitCode !== 0)
    throw new PgscaleError(
      `moving ${relation(m)} with pg_repack: ${describeFailure(inv, res)}`,
      ExitCode.FailedAfterChange,
      'the table stays where it was (pg_repack swaps only at the end); fix the cause, then `pgscale resume` or `pgscale rollback`',
    );
  // pg_repack skips a table whose lock it was not granted and still exits 0
  const heap = (await db.query(ts.placementOf(m.schema, m.name))).find((r) => r.kind === 'table');
  if (heap?.tablespace !== to)
    throw new PgscaleError(
      `moving ${relation(m)} with pg_repack: the table is still in ${shown(heap?.tablespace ?? '')} (${res.stderr.trim().split('\n').slice(-2).join(' ')})`,
      ExitCode.FailedAfterChange,
      'pg_repack was not granted its lock in time: see pg_locks for the holder, then `pgscale resume`',
    );
}

/** Puts a relation's heap and indexes where `heapTo` / `indexTo` say; parts already there are left alone. */
async function placeRelation(ctx: StepContext, p: MoveParams, heapTo: string, indexTo: (i: IndexMove) => string): Promise<JsonObject> {
  const m = p.move;
  return onDb(ctx, p, async (db) => {
    // an interrupted REINDEX CONCURRENTLY leaves an invalid copy behind: it goes first
    for (const left of await db.query(ts.leftoverConcurrentIndexes(m.schema, m.name))) await db.query(ts.dropIndexConcurrently(m.schema, left.name));
    const now = await db.query(ts.placementOf(m.schema, m.name));
    if (now.length === 0) throw new PgscaleError(`${relation(m)} no longer exists`, ExitCode.FailedAfterChange);
    // an interrupted pg_repack leaves the table where it was, but its trigger logging every write
    if (m.method === 'pg_repack') await clearRepackLeftovers(ctx, db, p.lock, m.schema, m.name);
    const heapNow = now.find((r) => r.kind === 'table')!.tablespace;
    let retries = 0;
    if (heapNow !== heapTo) {
      ctx.progress.message(`${relation(m)}: heap → ${shown(heapTo)} (${m.method})`);
      if (m.method === 'pg_repack') await repackTable(ctx, db, p, heapTo);
      else
        retries = await withLockRetries(ctx, db, p.lock, `moving ${relation(m)}`, () =>
          ts.moveTable(m.schema, m.name, name(heapTo, p.defaultTablespace), p.lock.lockTimeoutMs, p.countRows),
        );
    }
    // pg_repack --moveidx put the indexes with the heap: those already in place are skipped
    const after = m.method === 'pg_repack' ? await db.query(ts.placementOf(m.schema, m.name)) : now;
    const moved: string[] = [];
    for (const i of m.indexes) {
      const to = indexTo(i);
      if (after.find((r) => r.kind === 'index' && r.relation === i.name)?.tablespace === to) continue;
      ctx.progress.message(`${i.schema}.${i.name} → ${shown(to)}`);
      if (i.method === 'reindex-concurrently') await db.query(ts.reindexConcurrently(i.schema, i.name, name(to, p.defaultTablespace)));
      else
        await withLockRetries(ctx, db, p.lock, `moving ${i.schema}.${i.name}`, () =>
          ts.moveIndex(i.schema, i.name, name(to, p.defaultTablespace), p.lock.lockTimeoutMs),
        );
      moved.push(i.name);
    }
    return { heapMoved: heapNow !== heapTo, method: m.method, lockRetries: retries, indexesMoved: moved };
  });
}

export const moveStep = defineStep<MoveParams>({
  kind: 'tablespaces.move',
  title: (p) =>
    `Move ${relation(p.move)} (${formatBytes(p.move.totalBytes)}, ${p.move.tier}) from ${shown(p.move.from)} to ${shown(p.move.to)}${p.move.indexes.length ? ` with its ${p.move.indexes.length} index${p.move.indexes.length === 1 ? '' : 'es'}` : ''} by ${p.move.method === 'pg_repack' ? 'pg_repack' : 'ALTER TABLE'}`,
  check: async () => [],
  async plan(ctx, p) {
    const m = p.move;
    const to = name(m.to, p.defaultTablespace);
    if (m.method === 'pg_repack') {
      const inv = repackInvocation(ctx, p, to);
      return [
        {
          kind: 'command',
          argv: [inv.program, ...inv.args],
          runAs: p.access.runAs ?? undefined,
          env: ['PGDATABASE', 'PGHOST', 'PGPORT', 'PGUSER'],
          note: `${m.reason}. Method pg_repack (${m.methodWhy}): the table and its TOAST are copied online, its ${m.indexes.length} index${m.indexes.length === 1 ? ' is' : 'es are'} rebuilt there (--moveidx); ACCESS EXCLUSIVE only for the start and the swap, waited for at most ${lockBudgetSeconds(p.lock)} s; an index found elsewhere afterwards (a resumed run) is rebuilt with REINDEX CONCURRENTLY`,
        },
      ];
    }
    const actions: PlannedAction[] = [
      {
        kind: 'sql',
        target: target(p),
        sql: ts.moveTable(m.schema, m.name, to, p.lock.lockTimeoutMs, p.countRows).text,
        note: `${m.reason}. Method ALTER TABLE (${m.methodWhy}): the heap and its TOAST are rewritten under ACCESS EXCLUSIVE${m.blocking ? ' (a blocking move, allowed by --allow-blocking)' : ''}; the lock is waited for at most ${p.lock.lockTimeoutMs} ms, ${p.lock.retries + 1} attempts, pauses from ${p.lock.backoffMs} ms doubling${p.countRows ? '; rows counted in one REPEATABLE READ snapshot before the lock and after the rewrite (a difference undoes the move)' : ''}`,
      },
    ];
    for (const i of m.indexes) {
      const st = i.method === 'reindex-concurrently' ? ts.reindexConcurrently(i.schema, i.name, to) : ts.moveIndex(i.schema, i.name, to, p.lock.lockTimeoutMs);
      actions.push({
        kind: 'sql',
        target: target(p),
        sql: st.text,
        note: i.method === 'reindex-concurrently' ? `${formatBytes(i.bytes)}, rebuilt online` : `${formatBytes(i.bytes)}, rewritten under lock`,
      });
    }
    return actions;
  },
  apply: (ctx, p) => placeRelation(ctx, p, p.move.to, () => p.move.to),
  async verify(ctx, p) {
    const m = p.move;
    return onDb(ctx, p, async (db) => {
      const now = await db.query(ts.placementOf(m.schema, m.name));
      const wrong = now.filter((r) => r.tablespace !== m.to);
      if (now.length === 0) return { ok: false, detail: `${relation(m)} does not exist` };
      if (wrong.length) return { ok: false, detail: `${wrong.map((r) => `${r.relation} (${r.kind})`).join(', ')} not in ${shown(m.to)}` };
      const [count] = await db.query(ts.rowCount(m.schema, m.name));
      return { ok: true, detail: `table, TOAST and ${now.filter((r) => r.kind === 'index').length} indexes in ${shown(m.to)}; ${count!.count} rows readable` };
    });
  },
  async rollback(ctx, p) {
    const m = p.move;
    await placeRelation(ctx, p, m.from, (i) => i.from);
    // undone only when it is: everything back where it was, and nothing of pg_repack left on the table
    await onDb(ctx, p, async (db) => {
      const now = await db.query(ts.placementOf(m.schema, m.name));
      const expected = (r: { relation: string; kind: string; tablespace: string }) =>
        r.kind === 'index' ? (m.indexes.find((i) => i.name === r.relation)?.from ?? r.tablespace) : m.from;
      const wrong = now.filter((r) => r.tablespace !== expected(r));
      const [left] = await db.query(ts.repackLeftovers(m.schema, m.name));
      const problems = [...wrong.map((r) => `${r.relation} (${r.kind}) is in ${shown(r.tablespace)}, not ${shown(expected(r))}`), ...(left?.objects ?? [])];
      if (problems.length)
        throw new PgscaleError(`${relation(m)} is not back as it was: ${problems.join(', ')}`, ExitCode.FailedAfterChange, '`pgscale rollback` tries again');
    });
  },
  rollbackNote: (p) =>
    `move ${relation(p.move)} and its indexes back to ${shown(p.move.from)} the same way${p.move.method === 'pg_repack' ? ', removing anything an interrupted pg_repack left (its trigger, log table, copy)' : ''}`,
  estimateSeconds: (p) => estimateMoveSeconds(p.move, p.copyBytesPerSecond, p.countRows),
});

// ---------------------------------------------------------------- the pg_repack extension

export const repackExtensionStep = defineStep<ExtensionParams>({
  kind: 'tablespaces.repack-extension',
  title: (p) => `Create the pg_repack extension in database ${p.database}`,
  check: async () => [],
  async plan(_ctx, p) {
    return [{ kind: 'sql', target: target(p), sql: ts.createRepackExtension().text, note: p.why }];
  },
  apply: async (ctx, p) => {
    await onDb(ctx, p, (db) => db.query(ts.createRepackExtension()));
  },
  async verify(ctx, p) {
    const [row] = await onDb(ctx, p, (db) => db.query(ts.repackExtension()));
    return row?.installed_version
      ? { ok: true, detail: `pg_repack ${row.installed_version} in ${p.database}` }
      : { ok: false, detail: `pg_repack is not installed in ${p.database}` };
  },
  async rollback(ctx, p) {
    await onDb(ctx, p, async (db) => {
      // what an interrupted pg_repack left depends on the extension: removed table by table, never by CASCADE
      for (const t of await db.query(ts.repackLeftoverTables())) await clearRepackLeftovers(ctx, db, p.lock, t.schema, t.name);
      await db.query(ts.dropRepackExtension());
    });
  },
  rollbackNote: () => 'DROP EXTENSION pg_repack (this run created it), after removing anything an interrupted pg_repack left',
  estimateSeconds: () => 1,
});

// ---------------------------------------------------------------- partitioned parents

async function setParentDefault(ctx: StepContext, p: ParentParams, to: string): Promise<void> {
  const { schema, name: parent } = p.parent;
  await onDb(ctx, p, async (db) => {
    const [now] = await db.query(ts.partitionedDefault(schema, parent));
    if (!now) throw new PgscaleError(`${schema}.${parent} no longer exists`, ExitCode.FailedAfterChange);
    if (now.tablespace !== to)
      await withLockRetries(ctx, db, p.lock, `default of ${schema}.${parent}`, () =>
        ts.setPartitionedDefault('TABLE', schema, parent, name(to, p.defaultTablespace), p.lock.lockTimeoutMs),
      );
    for (const i of now.indexes.filter((i) => i.tablespace !== to)) {
      await withLockRetries(ctx, db, p.lock, `default of ${i.schema}.${i.name}`, () =>
        ts.setPartitionedDefault('INDEX', i.schema, i.name, name(to, p.defaultTablespace), p.lock.lockTimeoutMs),
      );
    }
  });
}

export const parentStep = defineStep<ParentParams>({
  kind: 'tablespaces.parent-default',
  title: (p) => `Set the default tablespace of partitioned ${p.parent.schema}.${p.parent.name} (and its partitioned indexes) to ${shown(p.parent.to)}`,
  check: async () => [],
  async plan(_ctx, p) {
    return [
      {
        kind: 'sql',
        target: target(p),
        sql: ts.setPartitionedDefault('TABLE', p.parent.schema, p.parent.name, name(p.parent.to, p.defaultTablespace), p.lock.lockTimeoutMs).text,
        note: `${p.parent.why}; catalog only, no data moves; its partitioned indexes get the same default`,
      },
    ];
  },
  apply: async (ctx, p) => {
    await setParentDefault(ctx, p, p.parent.to);
  },
  async verify(ctx, p) {
    const [now] = await onDb(ctx, p, (db) => db.query(ts.partitionedDefault(p.parent.schema, p.parent.name)));
    if (!now) return { ok: false, detail: 'the table no longer exists' };
    const wrong = [now.tablespace, ...now.indexes.map((i) => i.tablespace)].filter((t) => t !== p.parent.to);
    return wrong.length ? { ok: false, detail: `default is ${shown(now.tablespace)}` } : { ok: true, detail: `new partitions go to ${shown(p.parent.to)}` };
  },
  async rollback(ctx, p) {
    await setParentDefault(ctx, p, p.parent.from);
  },
  rollbackNote: (p) => `set the default back to ${shown(p.parent.from)}`,
  estimateSeconds: () => 1,
});

// ---------------------------------------------------------------- temp_tablespaces

async function setTemp(ctx: StepContext, p: TempParams, value: string): Promise<void> {
  await withDb(ctx, p.access, async (db) => {
    await db.query(value === '' ? ts.resetTempTablespaces() : statements.alterSystemSet('temp_tablespaces', value));
    await db.query(statements.reloadConf());
  });
}

export const tempStep = defineStep<TempParams>({
  kind: 'tablespaces.temp',
  title: (p) => `Sorts and hashes that spill go to the fastest tier: temp_tablespaces = ${p.to}`,
  check: async () => [],
  async plan(_ctx, p) {
    return [
      { kind: 'sql', target: target(p), sql: statements.alterSystemSet('temp_tablespaces', p.to).text, note: `was "${p.previous}"` },
      { kind: 'sql', target: target(p), sql: statements.reloadConf().text },
    ];
  },
  apply: async (ctx, p) => {
    await setTemp(ctx, p, p.to);
  },
  async verify(ctx, p) {
    const [row] = await withDb(ctx, p.access, (db) => db.query(ts.tempTablespaces()));
    return row?.setting === p.to
      ? { ok: true, detail: `temp_tablespaces = ${row.setting}` }
      : { ok: false, detail: `temp_tablespaces is "${row?.setting ?? ''}"` };
  },
  async rollback(ctx, p) {
    await setTemp(ctx, p, p.previous);
  },
  rollbackNote: (p) => (p.previous ? `ALTER SYSTEM SET temp_tablespaces = '${p.previous}' and reload` : 'ALTER SYSTEM RESET temp_tablespaces and reload'),
  estimateSeconds: () => 1,
});

// ---------------------------------------------------------------- the operation

const safeId = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '_');

export const placeOperation = defineOperation<PlaceParams>({
  name: 'tablespaces-place',
  serverAccess: (p) => p.access,
  describeTarget: (p) => ({ description: `database ${p.database} of the cluster ${p.dataDir}`, lockKey: `cluster:${p.dataDir}` }),
  summary: (p) =>
    `Place the relations of database ${p.database} by temperature: ${p.moves.length} move${p.moves.length === 1 ? '' : 's'} (${formatBytes(p.moves.reduce((a, m) => a + m.totalBytes, 0))}), tiers ${p.volumes.map((v) => `${v.tier} → ${v.location}`).join(', ') || 'none declared'}; the cluster stays available, each heap is locked only for its own copy`,
  steps: (p) => {
    const common = { access: p.access, database: p.database, defaultTablespace: p.defaultTablespace, lock: p.lock };
    const steps: StepData[] = [{ id: 'prepare', kind: prepareStep.kind, params: p }];
    if (p.repack.createExtension && p.moves.some((m) => m.method === 'pg_repack'))
      steps.push({
        id: 'pg_repack-extension',
        kind: repackExtensionStep.kind,
        params: { access: p.access, database: p.database, why: p.repack.why, lock: p.lock },
      });
    for (const m of p.moves)
      steps.push({
        id: `move-${safeId(relation(m))}`,
        kind: moveStep.kind,
        params: { ...common, countRows: p.countRows, copyBytesPerSecond: p.copyBytesPerSecond, move: m },
      });
    for (const parent of p.parents)
      steps.push({ id: `default-${safeId(`${parent.schema}.${parent.name}`)}`, kind: parentStep.kind, params: { ...common, parent } });
    if (p.tempTablespaces !== null)
      steps.push({ id: 'temp-tablespaces', kind: tempStep.kind, params: { access: p.access, to: p.tempTablespaces, previous: p.previousTempTablespaces } });
    return steps;
  },
  async fingerprint(ctx, p) {
    return onDb(ctx, p, async (db) => {
      const [sys] = await db.query(statements.systemIdentifier());
      const spaces = await db.query(ts.tablespaceList());
      const placed: Record<string, string> = {};
      for (const m of p.moves) for (const r of await db.query(ts.placementOf(m.schema, m.name))) placed[`${m.schema}.${r.relation}`] = r.tablespace;
      return { systemIdentifier: sys?.system_identifier ?? null, tablespaces: spaces.map((t) => `${t.name}@${t.location}`), placement: placed };
    });
  },
});
