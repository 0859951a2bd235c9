/**
 * A throwaway cluster for proofs (restoring a dump to count its rows): initdb in a private dir,
 * started on a free port with its socket inside that dir, no TCP, always stopped and removed.
 */
import { mkdirSync, rmSync, writeFileSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { PgscaleError, ExitCode } from '../errors.js';
import { freePort } from '../net.js';
import { describeFailure, isRoot, type Invocation, type OsUser, type Runner } from '../runner.js';
import type { ClusterAccess } from './access.js';

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
  let started = false;
  try {
    await must(pg('initdb', ['-D', pgdata, '-U', owner.name, '-E', 'UTF8', '--locale=C', '--auth-local=peer', '--auth-host=reject']));
    const port = await freePort();
    writeFileSync(join(pgdata, 'postgresql.auto.conf'), `port = ${port}\nunix_socket_directories = '${socket}'\nlisten_addresses = ''\nfsync = off\n`);
    await must(pg('pg_ctl', ['-D', pgdata, '-l', join(dir, 'server.log'), '-w', '-t', '120', 'start']));
    started = true;
    return await use({ host: socket, port, user: owner.name, database: 'postgres', passfile: null, bindir, runAs: owner.name });
  } finally {
    if (started) await runner.run(pg('pg_ctl', ['-D', pgdata, '-m', 'immediate', '-w', 'stop']));
    rmSync(dir, { recursive: true, force: true });
  }
}
