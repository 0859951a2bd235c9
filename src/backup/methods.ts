/**
 * The programs behind each backup method and how they are invoked: client versions, the
 * compression each version supports, pg_dump -Fd per database run side by side within a job
 * budget, and pg_basebackup in tar format. The steps (steps.ts) decide when; this says how.
 */
import { chmodSync, chownSync, lstatSync, readdirSync, realpathSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { clientInvocation, type ClusterAccess } from '../cluster/access.js';
import { isRoot, type Invocation, type OsUser, type RunResult, type Runner } from '../runner.js';
import type { CompressionSpec } from './compression.js';

export interface ClientVersion {
  version: string;
  major: number;
}

/** `PROGRAM --version` of the client bindir, or undefined when it does not run. */
export async function clientVersion(runner: Runner, access: ClusterAccess, program: string): Promise<ClientVersion | undefined> {
  return parseClientVersion(await runner.run(clientInvocation(access, program, ['--version'])));
}

/** A client program a backup ran, as invoked and as it resolved (a bindir may hold symlinks to another version's). */
export interface ProgramRun {
  [key: string]: string;
  program: string;
  /** The path invoked (the client bindir's). */
  path: string;
  /** Where that path leads once symlinks are followed: the binary that ran. */
  resolvedPath: string;
  version: string;
}

/** The version of each program a method runs, asked of the very path it is run by. */
export async function programRuns(runner: Runner, access: ClusterAccess, programs: readonly string[]): Promise<ProgramRun[]> {
  const out: ProgramRun[] = [];
  for (const program of programs) {
    const inv = clientInvocation(access, program, ['--version']);
    const v = parseClientVersion(await runner.run(inv));
    let resolvedPath = inv.program;
    try {
      resolvedPath = realpathSync(inv.program);
    } catch {
      // a missing program reports no version below; the path stays as invoked
    }
    out.push({ program, path: inv.program, resolvedPath, version: v?.version ?? 'unknown' });
  }
  return out;
}

/** `PATH --version` of a client program outside any connection (pg_restore, pg_verifybackup of some bindir), or undefined. */
export async function programVersion(runner: Runner, path: string): Promise<ClientVersion | undefined> {
  return parseClientVersion(await runner.run({ program: path, args: ['--version'] }));
}

function parseClientVersion(res: RunResult): ClientVersion | undefined {
  const m = /\(PostgreSQL\) (\d+)(?:\.\d+)?\S*/.exec(res.stdout);
  return res.exitCode === 0 && m ? { version: m[0].replace('(PostgreSQL) ', ''), major: Number(m[1]) } : undefined;
}

/** pg_dump's -Z: zstd and named methods from 16 on; before that only gzip levels. */
export function pgDumpCompression(clientMajor: number, c: CompressionSpec): string {
  if (clientMajor >= 16) return `${c.compressor}:${c.compressor === 'gzip' ? Math.min(9, c.level) : c.level}`;
  return String(Math.min(9, c.level));
}

/**
 * pg_basebackup's --compress: on the server (its cores, less data on the wire) when both sides are
 * 15+, else gzip on the client.
 */
export function baseBackupCompression(clientMajor: number, serverMajor: number, c: CompressionSpec): string {
  if (clientMajor >= 15 && serverMajor >= 15) return `server-${c.compressor}:${c.compressor === 'gzip' ? Math.min(9, c.level) : c.level}`;
  return `client-gzip:${Math.min(9, c.level)}`;
}

/** A database name as a pg_dumpall --exclude-database pattern that matches it and only it. */
export const exactPattern = (name: string) => `"${name.replace(/"/g, '""')}"`;

export function pgDumpInvocation(
  access: ClusterAccess,
  database: string,
  out: string,
  jobs: number,
  compression: string,
  extra: Partial<Invocation>,
): Invocation {
  // the database name travels in PGDATABASE: as an argument, one containing "=" would be read as a connection string
  return clientInvocation({ ...access, database }, 'pg_dump', ['--no-password', '-Fd', '-j', String(jobs), '-Z', compression, '-f', out], extra);
}

export function baseBackupInvocation(access: ClusterAccess, out: string, compression: string, extra: Partial<Invocation>): Invocation {
  return clientInvocation(
    access,
    'pg_basebackup',
    ['--no-password', '-D', out, '-Ft', '-X', 'stream', '--checkpoint=fast', `--compress=${compression}`, '--manifest-checksums=CRC32C'],
    extra,
  );
}

/**
 * How many of the job budget each database's pg_dump gets: in proportion to its size, at least 1;
 * the largest start first, and the rest run beside them while jobs are free.
 */
export function jobShares(databases: readonly { bytes: number }[], jobs: number): number[] {
  const total = databases.reduce((a, d) => a + d.bytes, 0) || 1;
  return databases.map((d) => Math.max(1, Math.min(jobs, Math.round((jobs * d.bytes) / total))));
}

/**
 * Runs tasks that each need `weight` of `capacity` slots, as many at once as fit, in the given
 * order; after a failure no further task starts, and the first error is thrown once all have ended.
 */
export async function runWeighted(capacity: number, tasks: readonly { weight: number; run: () => Promise<void> }[], signal: AbortSignal): Promise<void> {
  let free = capacity;
  let failure: { error: unknown } | undefined;
  let waiting: (() => void) | undefined;
  const running: Promise<void>[] = [];
  for (const task of tasks) {
    const need = Math.min(task.weight, capacity);
    while (free < need && !failure && !signal.aborted) await new Promise<void>((r) => (waiting = r));
    if (failure || signal.aborted) break;
    free -= need;
    running.push(
      task
        .run()
        .then(
          () => undefined,
          (error: unknown) => {
            failure ??= { error };
          },
        )
        .finally(() => {
          free += need;
          waiting?.();
        }),
    );
  }
  await Promise.all(running);
  if (failure) throw failure.error;
}

/**
 * The server account writes pg_dump's and pg_basebackup's files itself: as root, the staging
 * directory is lent to it for the dump, then every file is taken back (0600, directories 0700).
 */
export function lendTo(dir: string, owner: OsUser | undefined): void {
  if (owner && isRoot()) chownSync(dir, owner.uid, owner.gid);
}

export function takeBack(dir: string): void {
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  const walk = (path: string) => {
    const st = lstatSync(path);
    if (isRoot() && uid !== undefined && gid !== undefined && (st.uid !== uid || st.gid !== gid)) chownSync(path, uid, gid);
    if (st.isDirectory()) {
      chmodSync(path, 0o700);
      for (const e of readdirSync(path)) walk(join(path, e));
    } else if (st.isFile()) chmodSync(path, 0o600);
  };
  walk(dir);
}

/** CPUs this process may use (cgroup or affinity limits included): the default job budget. */
export const availableCores = (): number => Math.max(1, availableParallelism());
