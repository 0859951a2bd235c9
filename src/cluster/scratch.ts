/**
 * Servers pgscale starts for itself: a throwaway cluster for proofs (restoring a dump to count its
 * rows), and a restored data directory started privately to load and check it. Either runs on a
 * free port with its socket in a 0700 directory of the owner's, no TCP, trust only on that socket,
 * and is always stopped. The overrides are command-line options of that start only: nothing in the
 * data directory's own configuration is touched.
 */
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PgscaleError, ExitCode } from '../errors.js';
import { freePort } from '../net.js';
import { describeFailure, isRoot, type OsUser, type Runner } from '../runner.js';
import { PostgresServer } from '../server/postgres.js';
import type { ClusterAccess } from './access.js';

export interface PrivateServer {
  access: ClusterAccess;
  stop(): Promise<void>;
}

/** A 0700 directory owned by `owner` (the server account must create files in it). */
export function ownedDir(path: string, owner: OsUser): string {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  if (isRoot()) chownSync(path, owner.uid, owner.gid);
  return path;
}

/** The server of `pgdata`, as pgscale starts it privately (port and socket chosen per start). */
function privateServer(runner: Runner, bindir: string, pgdata: string, privateDir: string, owner: OsUser, port: number): PostgresServer {
  const socket = join(privateDir, 'socket');
  return new PostgresServer(
    {
      bindir,
      dataDir: pgdata,
      configFile: null,
      configDir: null,
      options: [],
      port,
      socketDirs: [socket],
      listenAddresses: '',
      owner: owner.name,
      log: join(privateDir, 'server.log'),
      origins: { port: 'command line', sockets: 'command line', listen: 'command line' },
      manager: { kind: 'pg_ctl' },
    },
    runner,
  );
}

/**
 * Starts the server of `pgdata` privately: its own settings stay in force except port, sockets,
 * TCP, authentication (trust on the private socket only) and archiving (a restored copy must
 * never archive into the source's archive).
 */
export async function startPrivateServer(
  runner: Runner,
  bindir: string,
  pgdata: string,
  privateDir: string,
  owner: OsUser,
  superuser: string,
): Promise<PrivateServer> {
  const socket = ownedDir(join(privateDir, 'socket'), owner);
  const hba = join(privateDir, 'pg_hba.conf');
  writeFileSync(hba, 'local all all trust\n', { mode: 0o600 });
  if (isRoot()) chownSync(hba, owner.uid, owner.gid);
  const port = await freePort();
  const server = privateServer(runner, bindir, pgdata, privateDir, owner, port);
  try {
    await server.start({ timeoutSeconds: 600, privateSocketDir: socket, settings: { port: String(port), hba_file: hba, archive_mode: 'off', fsync: 'off' } });
  } catch (e) {
    const log = server.id.log;
    throw new PgscaleError(
      `private server: ${(e as Error).message}${existsSync(log) ? `\n${readFileSync(log, 'utf8').split('\n').slice(-8).join('\n')}` : ''}`,
      ExitCode.FailedAfterChange,
    );
  }
  return {
    access: { host: socket, port, user: superuser, database: 'postgres', passfile: null, bindir, runAs: owner.name },
    // fsync was off: a clean shutdown checkpoint is what makes the restored files durable
    stop: () => server.stop({ timeoutSeconds: 600 }),
  };
}

/** Stops a private server that a killed run left running in `pgdata` (a retry or a rollback follows). */
export async function stopLeftoverServer(runner: Runner, bindir: string, pgdata: string, owner: OsUser): Promise<void> {
  const server = privateServer(runner, bindir, pgdata, pgdata, owner, 0);
  if (await server.isRunning()) await runner.run(server.stopInvocation('immediate', 60));
}

export async function initdb(runner: Runner, bindir: string, pgdata: string, owner: OsUser, args: string[]): Promise<void> {
  const inv = { program: join(bindir, 'initdb'), args: ['-D', pgdata, ...args], runAs: owner };
  const res = await runner.run(inv);
  if (res.exitCode !== 0) throw new PgscaleError(`initdb: ${describeFailure(inv, res)}`, ExitCode.FailedAfterChange);
}

export async function withScratchCluster<T>(
  runner: Runner,
  bindir: string,
  dir: string,
  owner: OsUser,
  use: (access: ClusterAccess) => Promise<T>,
): Promise<T> {
  const pgdata = join(dir, 'data');
  ownedDir(dir, owner);
  let server: PrivateServer | undefined;
  try {
    await initdb(runner, bindir, pgdata, owner, ['-U', owner.name, '-E', 'UTF8', '--locale=C', '--auth-local=peer', '--auth-host=reject']);
    server = await startPrivateServer(runner, bindir, pgdata, dir, owner, owner.name);
    return await use(server.access);
  } finally {
    // a throwaway with fsync=off: immediate is right, nothing in it must survive
    if (server) await stopLeftoverServer(runner, bindir, pgdata, owner);
    rmSync(dir, { recursive: true, force: true });
  }
}
