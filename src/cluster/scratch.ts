/**
 * Servers pgscale starts for itself: a throwaway cluster for proofs (restoring a dump to count its
 * rows), and a restored data directory started privately to load and check it. Either runs on a
 * free port with its socket in a 0700 directory of the owner's, no TCP, trust only on that socket,
 * and is always stopped; the data directory's own settings are put back afterwards.
 */
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PgscaleError, ExitCode } from '../errors.js';
import { freePort } from '../net.js';
import { describeFailure, isRoot, type Invocation, type OsUser, type Runner } from '../runner.js';
import type { ClusterAccess } from './access.js';

export interface PrivateServer {
  access: ClusterAccess;
  stop(): Promise<void>;
}

const pgProgram = (bindir: string, owner: OsUser, program: string, args: string[]): Invocation => ({ program: join(bindir, program), args, runAs: owner });

async function must(runner: Runner, inv: Invocation, what: string): Promise<void> {
  const res = await runner.run(inv);
  if (res.exitCode !== 0) throw new PgscaleError(`${what}: ${describeFailure(inv, res)}`, ExitCode.FailedAfterChange);
}

/** A 0700 directory owned by `owner` (the server account must create files in it). */
export function ownedDir(path: string, owner: OsUser): string {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  if (isRoot()) chownSync(path, owner.uid, owner.gid);
  return path;
}

/**
 * Starts the server of `pgdata` privately: its own settings stay in force except port, sockets,
 * TCP, authentication (trust on the private socket only) and archiving (a restored copy must
 * never archive into the source's archive). postgresql.auto.conf is restored when it stops.
 */
export async function startPrivateServer(runner: Runner, bindir: string, pgdata: string, privateDir: string, owner: OsUser, superuser: string): Promise<PrivateServer> {
  const socket = ownedDir(join(privateDir, 'socket'), owner);
  const hba = join(privateDir, 'pg_hba.conf');
  writeFileSync(hba, 'local all all trust\n', { mode: 0o600 });
  if (isRoot()) chownSync(hba, owner.uid, owner.gid);
  const autoConf = join(pgdata, 'postgresql.auto.conf');
  const original = existsSync(autoConf) ? readFileSync(autoConf, 'utf8') : null;
  const port = await freePort();
  const overrides = [`port = ${port}`, `unix_socket_directories = '${socket}'`, "listen_addresses = ''", `hba_file = '${hba}'`, "archive_mode = 'off'", 'fsync = off'];
  writeFileSync(autoConf, `${original ?? ''}\n# pgscale: private start (removed when it stops)\n${overrides.join('\n')}\n`, { mode: 0o600 });
  if (isRoot()) chownSync(autoConf, owner.uid, owner.gid);
  const putBack = () => {
    if (original === null) rmSync(autoConf, { force: true });
    else writeFileSync(autoConf, original);
  };
  try {
    await must(runner, pgProgram(bindir, owner, 'pg_ctl', ['-D', pgdata, '-l', join(privateDir, 'server.log'), '-w', '-t', '600', 'start']), 'private server');
  } catch (e) {
    putBack();
    const log = join(privateDir, 'server.log');
    throw new PgscaleError(`${(e as Error).message}${existsSync(log) ? `\n${readFileSync(log, 'utf8').split('\n').slice(-8).join('\n')}` : ''}`, ExitCode.FailedAfterChange);
  }
  return {
    access: { host: socket, port, user: superuser, database: 'postgres', passfile: null, bindir, runAs: owner.name },
    async stop() {
      await must(runner, pgProgram(bindir, owner, 'pg_ctl', ['-D', pgdata, '-m', 'fast', '-w', '-t', '600', 'stop']), 'stopping the private server');
      putBack();
    },
  };
}

/** Stops a private server that a killed run left running in `pgdata` (a retry or a rollback follows). */
export async function stopLeftoverServer(runner: Runner, bindir: string, pgdata: string, owner: OsUser): Promise<void> {
  if (existsSync(join(pgdata, 'postmaster.pid'))) await runner.run(pgProgram(bindir, owner, 'pg_ctl', ['-D', pgdata, '-m', 'immediate', '-w', 'stop']));
}

export async function initdb(runner: Runner, bindir: string, pgdata: string, owner: OsUser, args: string[]): Promise<void> {
  await must(runner, pgProgram(bindir, owner, 'initdb', ['-D', pgdata, ...args]), 'initdb');
}

export async function withScratchCluster<T>(runner: Runner, bindir: string, dir: string, owner: OsUser, use: (access: ClusterAccess) => Promise<T>): Promise<T> {
  const pgdata = join(dir, 'data');
  ownedDir(dir, owner);
  let server: PrivateServer | undefined;
  try {
    await initdb(runner, bindir, pgdata, owner, ['-U', owner.name, '-E', 'UTF8', '--locale=C', '--auth-local=peer', '--auth-host=reject']);
    server = await startPrivateServer(runner, bindir, pgdata, dir, owner, owner.name);
    return await use(server.access);
  } finally {
    if (server) await runner.run(pgProgram(bindir, owner, 'pg_ctl', ['-D', pgdata, '-m', 'immediate', '-w', 'stop']));
    rmSync(dir, { recursive: true, force: true });
  }
}
