/**
 * A throwaway cluster for proofs (restoring a dump to count its rows): initdb in a private dir,
 * started on a free port with its socket inside that dir, no TCP, always stopped and removed.
 */
import { mkdirSync, rmSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { PgscaleError, ExitCode } from '../errors.js';
import { freePort } from '../net.js';
import { describeFailure, isRoot, type Invocation, type OsUser, type Runner } from '../runner.js';
import type { ClusterAccess } from './access.js';
import { PostgresServer } from '../server/postgres.js';

export async function withScratchCluster<T>(runner: Runner, bindir: string, dir: string, owner: OsUser, use: (access: ClusterAccess) => Promise<T>): Promise<T> {
  const pgdata = join(dir, 'data');
  const socket = join(dir, 'socket');
  mkdirSync(socket, { recursive: true, mode: 0o700 });
  if (isRoot()) {
    chownSync(dir, owner.uid, owner.gid);
    chownSync(socket, owner.uid, owner.gid);
  }
  const must = async (inv: Invocation) => {
    const res = await runner.run(inv);
    if (res.exitCode !== 0) throw new PgscaleError(`scratch cluster: ${describeFailure(inv, res)}`, ExitCode.FailedAfterChange);
  };
  const pg = (program: string, args: string[]): Invocation => ({ program: join(bindir, program), args, runAs: owner });
  let server: PostgresServer | undefined;
  try {
    await must(pg('initdb', ['-D', pgdata, '-U', owner.name, '-E', 'UTF8', '--locale=C', '--auth-local=peer', '--auth-host=reject']));
    const port = await freePort();
    server = new PostgresServer(
      {
        bindir,
        dataDir: pgdata,
        configFile: null,
        options: ['-p', String(port), '-c', `unix_socket_directories=${socket}`, '-c', 'listen_addresses=', '-c', 'fsync=off'],
        port,
        socketDirs: [socket],
        listenAddresses: '',
        owner: owner.name,
        log: join(dir, 'server.log'),
        origins: { port: 'command line', sockets: 'command line', listen: 'command line' },
      },
      runner,
    );
    await server.start({ timeoutSeconds: 120 });
    return await use({ host: socket, port, user: owner.name, database: 'postgres', passfile: null, bindir, runAs: owner.name });
  } finally {
    // a throwaway with fsync=off: immediate is right, nothing in it must survive
    if (server) await runner.run(server.stopInvocation('immediate', 60));
    rmSync(dir, { recursive: true, force: true });
  }
}
