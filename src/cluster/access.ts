/**
 * How pgscale reaches a cluster, as plain data that a plan file can carry: connection settings
 * (never a password), the client bindir, and the OS account to run clients as when pgscale is root
 * on the database host (peer authentication over the socket, like `sudo -u postgres`).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditSink } from '../audit.js';
import { libpqEnvironment, resolveConnection, type ConnectionSettings } from '../connection.js';
import { badInput, refused } from '../errors.js';
import { userByName } from '../osUser.js';
import { isRoot, type Invocation, type OsUser, type Runner } from '../runner.js';
import { PgDb, PsqlDb, type Db } from '../sql.js';
import { layoutOf } from './discover.js';
import { findInstallations } from './installations.js';
import { inspectCluster, type ClusterInfo } from './inspect.js';

export interface ClusterAccess {
  [key: string]: string | number | null;
  host: string | null;
  port: number | null;
  user: string | null;
  database: string | null;
  passfile: string | null;
  /** Client programs (psql, pg_dumpall…) come from here. */
  bindir: string;
  /** OS account the clients run as, or null to run them as ourselves. */
  runAs: string | null;
}

export function osUserOf(access: ClusterAccess): OsUser | undefined {
  if (!access.runAs) return undefined;
  const u = userByName(access.runAs);
  if (!u)
    throw badInput(
      `OS user ${access.runAs} does not exist`,
      "the data directory's owner must be an account in /etc/passwd: fix the ownership or create the account",
    );
  return u;
}

export function settingsOf(access: ClusterAccess): ConnectionSettings {
  const s: ConnectionSettings = {};
  if (access.host) s.host = access.host;
  if (access.port) s.port = access.port;
  if (access.user) s.user = access.user;
  if (access.database) s.database = access.database;
  if (access.passfile) s.passfile = access.passfile;
  // a password may only come from the environment at run time: it is never stored in a plan
  if (process.env.PGPASSWORD) s.password = process.env.PGPASSWORD;
  return s;
}

/** An invocation of a client program with the connection in the environment, never in argv. */
export function clientInvocation(access: ClusterAccess, program: string, args: string[], extra: Partial<Invocation> = {}): Invocation {
  return {
    program: join(access.bindir, program),
    args,
    env: { ...libpqEnvironment(settingsOf(access)), PGAPPNAME: 'pgscale', ...extra.env },
    runAs: osUserOf(access),
    ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'env')),
  };
}

export async function openDb(access: ClusterAccess, runner: Runner, audit?: AuditSink, database?: string): Promise<Db> {
  const settings = { ...settingsOf(access), ...(database ? { database } : {}) };
  const owner = osUserOf(access);
  if (owner && isRoot()) return new PsqlDb(runner, join(access.bindir, 'psql'), settings, owner, audit);
  return PgDb.connect(settings, audit);
}

/** Runs `use` on a connection that is always closed afterwards. */
export async function withDb<T>(ctx: { runner: Runner; audit?: AuditSink }, access: ClusterAccess, use: (db: Db) => Promise<T>, database?: string): Promise<T> {
  const db = await openDb(access, ctx.runner, ctx.audit, database);
  try {
    return await use(db);
  } finally {
    await db.close();
  }
}

export interface ResolvedTarget {
  access: ClusterAccess;
  /** Present when the cluster's data directory is on this host and known. */
  cluster: ClusterInfo | undefined;
  /** Identifies the cluster for the run lock. */
  lockKey: string;
}

/**
 * From --pgdata / --bindir / --dsn / PG* to a cluster to work on. With a data directory the socket
 * and port come from postmaster.pid; as root the clients run as the data directory's owner.
 */
export async function resolveTarget(opts: {
  pgdata?: string;
  bindir?: string;
  dsn?: string;
  runner: Runner;
  audit?: AuditSink;
  requireRunning?: boolean;
}): Promise<ResolvedTarget> {
  const conn = resolveConnection(opts.dsn);
  const installations = await findInstallations(opts.runner, opts.bindir ? [opts.bindir] : []);
  const pgdata = opts.pgdata ?? (opts.dsn || conn.host ? undefined : process.env.PGDATA);
  if (pgdata) {
    // its packaging layout too: a postgresql-common cluster is configured in /etc/postgresql and run by pg_ctlcluster
    const layout = await layoutOf(pgdata);
    const cluster = await inspectCluster(pgdata, { runner: opts.runner, installations, audit: opts.audit, connection: conn, foundBy: ['flag'], layout });
    // pg_upgrade --link renames global/pg_control so that the old cluster, whose files the new one shares, never starts again
    if (
      cluster.state !== 'running' &&
      existsSync(join(cluster.dataDir, 'global', 'pg_control.old')) &&
      !existsSync(join(cluster.dataDir, 'global', 'pg_control'))
    ) {
      throw refused(
        `${cluster.dataDir} was retired by a link-mode pg_upgrade: its files are shared with the upgraded cluster, and it must never be started again`,
        'work on the upgraded cluster (its data directory is in the upgrade report); remove this one once you are confident',
      );
    }
    if (opts.requireRunning && cluster.state !== 'running') {
      throw refused(`the cluster in ${cluster.dataDir} is not running (${cluster.state})`, 'start it first: this operation needs a running server');
    }
    const bindir = opts.bindir ?? cluster.bindir ?? installations[0]?.bindir;
    if (!bindir) throw badInput('no PostgreSQL installation found for the client programs', 'pass --bindir');
    const host = conn.host ?? cluster.socketDir?.split(',')[0]?.trim() ?? 'localhost';
    const peerAsOwner = isRoot() && host.startsWith('/') && !conn.user && !conn.password;
    return {
      cluster,
      lockKey: `cluster:${cluster.dataDir}`,
      access: {
        host,
        port: conn.port ?? cluster.port,
        user: conn.user ?? (peerAsOwner ? cluster.owner : null),
        database: conn.database ?? 'postgres',
        passfile: conn.passfile ?? null,
        bindir,
        runAs: peerAsOwner ? cluster.owner : null,
      },
    };
  }
  const bindir = opts.bindir ?? installations[0]?.bindir;
  if (!bindir) throw badInput('no PostgreSQL installation found for the client programs', 'pass --bindir');
  if (!conn.host && !conn.port && !opts.dsn)
    throw badInput(
      'which cluster? no --pgdata, --dsn, PGDATA, PGHOST or PGPORT',
      'pass --pgdata DIR for a cluster on this host, or --dsn (`pgscale detect` lists the clusters it finds)',
    );
  return {
    cluster: undefined,
    lockKey: `server:${conn.host ?? 'localhost'}:${conn.port ?? 5432}`,
    access: {
      host: conn.host ?? null,
      port: conn.port ?? null,
      user: conn.user ?? null,
      database: conn.database ?? 'postgres',
      passfile: conn.passfile ?? null,
      bindir,
      runAs: null,
    },
  };
}
