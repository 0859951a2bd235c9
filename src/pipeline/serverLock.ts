/**
 * The server side of "one lock per cluster": a session-level advisory lock held by a psql session
 * that lasts the run. The host-wide lock file (journal.ts) stops a second pgscale on this host; this
 * stops one on another host, or in another mount namespace, that reaches the same server.
 *
 * A server that is down has no session and needs none (nobody can work on it through the server):
 * the lock file alone holds it then. A server pgscale itself restarted ended the session: the lock
 * is taken again at the next step boundary, and if someone else took it meanwhile the run stops.
 */
import { createHash } from 'node:crypto';
import type { AuditSink } from '../audit.js';
import { clientInvocation, withDb, type ClusterAccess } from '../cluster/access.js';
import { ExitCode, PgscaleError } from '../errors.js';
import type { Runner } from '../runner.js';
import { CLUSTER_LOCK_NAMESPACE, PsqlSession, psqlArgs, statements } from '../sql.js';

/** The advisory lock's second key: from the run lock key (the cluster's system identifier), 31 bits. */
export function serverLockKey(runLockKey: string): number {
  return createHash('sha256').update(runLockKey).digest().readUInt32BE(0) & 0x7fffffff;
}

/** psql's words for a server that is not there to hold a lock (stopped, starting, stopping). */
const serverDown =
  /No such file or directory|Connection refused|the database system is (starting up|shutting down|not yet accepting connections|not accepting connections)|server closed the connection|connection to server was lost|terminating connection due to administrator command/;

type Holder = { pid: number; application_name: string; client_addr: string | null; since: string | null };

/** Thrown when another session holds the cluster: a run never proceeds past it. */
export class ServerLockHeld extends PgscaleError {
  constructor(key: number, holders: readonly Holder[]) {
    const who = holders.length
      ? holders
          .map(
            (h) =>
              `"${h.application_name || '(no application_name)'}" (backend pid ${h.pid}, ${h.client_addr ? `from ${h.client_addr}` : 'over the local socket'}${h.since ? `, connected since ${h.since}` : ''})`,
          )
          .join(', ')
      : 'a session that has just ended';
    super(
      `another pgscale holds this cluster on its server: ${who} has pgscale's lock (advisory lock ${CLUSTER_LOCK_NAMESPACE}, ${key} in database postgres)`,
      ExitCode.Refused,
      `it runs on another host or with another lock directory: wait for it to finish (pg_stat_activity and pg_locks on the server show it); two runs on one cluster are never allowed`,
    );
    this.name = 'ServerLockHeld';
  }
}

export class ServerLock {
  private session: PsqlSession | undefined;
  private pid: number | undefined;
  readonly key: number;

  constructor(
    private readonly ctx: { runner: Runner; audit: AuditSink },
    private readonly access: ClusterAccess,
    runLockKey: string,
    private readonly runId: string,
  ) {
    this.key = serverLockKey(runLockKey);
  }

  /**
   * Holds the lock if the server runs: the backend pid of a session that has just taken it, or
   * undefined when the lock is still held or the server is down. Throws ServerLockHeld when another
   * session holds it.
   */
  async hold(): Promise<number | undefined> {
    if (this.session?.open) {
      try {
        await this.session.query(statements.takeClusterLock(this.key)); // re-entrant: the lock is ours as long as the session lasts
        return undefined;
      } catch (e) {
        if (!serverDown.test((e as Error).message)) throw e;
      }
    }
    this.session = undefined;
    const session = new PsqlSession(
      this.ctx.runner.stream(
        // the run id in application_name: pg_stat_activity names the holder to whoever is refused
        clientInvocation(this.access, 'psql', [...psqlArgs], { env: { PGDATABASE: 'postgres', PGAPPNAME: `pgscale ${this.runId}` } }),
      ),
      `${this.access.host ?? 'localhost'}:${this.access.port ?? 5432}/postgres`,
      this.ctx.audit,
    );
    let taken: { taken: boolean; backend_pid: number } | undefined;
    try {
      [taken] = await session.query(statements.takeClusterLock(this.key));
    } catch (e) {
      if (serverDown.test((e as Error).message)) return undefined;
      throw e;
    }
    if (!taken?.taken) {
      const holders = await session.query(statements.clusterLockHolders(this.key)).catch(() => []);
      await session.end();
      throw new ServerLockHeld(this.key, holders);
    }
    this.session = session;
    this.pid = taken.backend_pid;
    return taken.backend_pid;
  }

  /** The backend of the session holding the lock now, if any. */
  get backendPid(): number | undefined {
    return this.session?.open ? this.pid : undefined;
  }

  /** Releases the lock, then ends the session: the lock is free when this returns, not when the backend exits. */
  async release(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    if (!session) return;
    await session.query(statements.releaseClusterLocks()).catch(() => undefined); // a session the server ended holds nothing
    await session.end();
  }
}

/** For --dry-run: who holds the cluster on its server now, if anyone (a server that is down: nobody). */
export async function serverLockConflict(
  ctx: { runner: Runner; audit: AuditSink },
  access: ClusterAccess,
  runLockKey: string,
): Promise<ServerLockHeld | undefined> {
  const key = serverLockKey(runLockKey);
  let holders: Holder[];
  try {
    holders = await withDb(ctx, access, (db) => db.query(statements.clusterLockHolders(key)));
  } catch {
    return undefined; // down, or unreachable: the real run decides, before it changes anything
  }
  return holders.length ? new ServerLockHeld(key, holders) : undefined;
}
