/**
 * `pgscale wal move`: pg_wal of a cluster that stays on its version moves to a dedicated volume
 * (pg_wal becomes a symlink to the new directory) or back into the data directory (pg_wal becomes
 * a plain directory again). The server is stopped cleanly, the WAL copied with every file fsynced
 * and compared by sha256, pg_wal swapped by two renames, the server started again and seen
 * writing its WAL at the new place; only then is the old copy removed (the point of no return).
 *
 * Names inside the data directory while a move is under way:
 *   pg_wal                the live WAL (the old one until the swap, the new one after)
 *   pg_wal.pgscale-new    the new pg_wal, staged: a symlink to the target, or (back into the data
 *                         directory) the copied directory itself
 *   pg_wal.pgscale-old    the old pg_wal after the swap, kept until the cleanup step
 * At every instant one of them is complete WAL the server can start from, so a crash anywhere
 * leaves a state that `pgscale resume` finishes and `pgscale rollback` undoes.
 */
import {
  accessSync,
  constants,
  existsSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  statfsSync,
  symlinkSync,
  lchownSync,
  unlinkSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { type ClusterAccess, withDb } from '../cluster/access.js';
import { lastValues, readConfigTree } from '../config/parse.js';
import { ExitCode, PgscaleError } from '../errors.js';
import { formatBytes } from '../format.js';
import { HostRoot } from '../host/hostRoot.js';
import { detectStorage } from '../host/storage.js';
import { currentUser, userByName } from '../osUser.js';
import { defineOperation } from '../pipeline/plan.js';
import { check, defineStep, type CheckResult, type JsonObject, type PlannedAction, type StepContext, type StepData } from '../pipeline/step.js';
import { isRoot, type Invocation, type OsUser, type Runner } from '../runner.js';
import { describeListening, describeStart, listeningNow, missingServerPrograms, noServerLog, PostgresServer, type ServerIdentity } from '../server/postgres.js';
import { statements } from '../sql.js';
import { compareTrees, copyTree, directoryBytes, emptyDirectory, ensureDirectory, isMountPoint, lexists, lstatOrUndefined, mirrorTree } from './files.js';
import { fsyncPath, isInside } from '../files.js';

export type WalDestination = 'volume' | 'data-dir';

export interface WalMoveParams extends JsonObject {
  /** The data directory, symlinks resolved. */
  dataDir: string;
  major: number;
  /**
   * The server as it runs (bindir — '' when no installation of its major is found —, options,
   * port, sockets, listen addresses, config file, log), gathered when the plan was made: it is
   * started again exactly so.
   */
  server: ServerIdentity;
  /** The data directory's owner: programs run as it, the new WAL directory belongs to it. */
  owner: string;
  /** How to reach the server over SQL once it runs (socket and port from its configuration). */
  access: ClusterAccess;
  destination: WalDestination;
  /** Where the WAL lives afterwards: the --to directory, or DATADIR/pg_wal. */
  target: string;
  /** Where the WAL lives now (pg_wal, or the directory its symlink points to). */
  source: string;
  /** The target directory existed (empty) when the plan was made: rollback empties it, never removes it. */
  targetExisted: boolean;
  /** The server ran when the plan was made: it is stopped for the move and started again after. */
  wasRunning: boolean;
  role: 'primary' | 'standby';
  /** Accept a --to directory on the data directory's device. */
  force: boolean;
  /** The postgresql.conf the server reads (for max_wal_size when it is stopped). */
  configFile: string;
  /** Size of the WAL when the plan was made, for the estimates. */
  walBytes: number;
}

const pgWal = (p: WalMoveParams) => join(p.dataDir, 'pg_wal');
const oldWal = (p: WalMoveParams) => join(p.dataDir, 'pg_wal.pgscale-old');
const newWal = (p: WalMoveParams) => join(p.dataDir, 'pg_wal.pgscale-new');
/** Where the copy is written: the target itself, or (back into the data directory) the staged directory. */
const staging = (p: WalMoveParams) => (p.destination === 'volume' ? p.target : newWal(p));
const where = (p: WalMoveParams) => (p.destination === 'volume' ? p.target : `the data directory (${pgWal(p)})`);

/** Free space required at the target: the larger of the WAL now and max_wal_size, plus a margin. */
export function requiredBytes(walBytes: number, maxWalSize: number): number {
  const base = Math.max(walBytes, maxWalSize);
  return base + Math.max(64 * 1024 ** 2, Math.round(base * 0.1));
}

const copyBytesPerSecond = 150 * 1024 ** 2;

function ownerOf(p: WalMoveParams): OsUser {
  const u = userByName(p.owner);
  if (!u) throw new PgscaleError(`OS user ${p.owner} (owner of ${p.dataDir}) does not exist`, ExitCode.FailedAfterChange);
  return u;
}

/** Whom to give new files: the owner when we are root; nobody (files are already ours) when we are the owner. */
const chownTo = (p: WalMoveParams): OsUser | undefined => (isRoot() ? ownerOf(p) : undefined);

const asOwner = (p: WalMoveParams, prog: string, args: string[], extra: Partial<Invocation> = {}): Invocation => ({
  program: prog,
  args,
  runAs: ownerOf(p),
  env: { LC_ALL: 'C' },
  ...extra,
});

const STOP_SECONDS = 600;
const serverOf = (runner: Runner, p: WalMoveParams) => new PostgresServer(p.server, runner);
const serverRunning = (runner: Runner, p: WalMoveParams) => serverOf(runner, p).isRunning();

async function controlData(runner: Runner, p: WalMoveParams) {
  if (!p.server.bindir || !existsSync(join(p.dataDir, 'global', 'pg_control'))) return undefined;
  return serverOf(runner, p).controlData();
}

const cleanlyShutDown = (state: string | undefined) => state === 'shut down' || state === 'shut down in recovery';

/** Fast shutdown; no immediate one: nobody consented to a crash recovery. */
async function stopServer(ctx: StepContext, p: WalMoveParams): Promise<void> {
  await serverOf(ctx.runner, p).stop({ timeoutSeconds: STOP_SECONDS });
}

/** Starts the server as it ran when the plan was made: same options, port, sockets, listen addresses, config file. */
async function startServer(ctx: StepContext, p: WalMoveParams): Promise<void> {
  await serverOf(ctx.runner, p).start({ timeoutSeconds: STOP_SECONDS, signal: ctx.signal });
}

/** Refuses to touch WAL files under a running server. */
async function assertStopped(ctx: StepContext, p: WalMoveParams): Promise<void> {
  if (await serverRunning(ctx.runner, p)) {
    throw new PgscaleError(
      `the server of ${p.dataDir} is running again: WAL files cannot be moved under it`,
      ExitCode.FailedAfterChange,
      `stop it (pg_ctl stop -D ${p.dataDir} -m fast), then resume`,
    );
  }
}

/** pg_wal is already the new one: a symlink to the target, or a plain directory when moving back. */
function swapped(p: WalMoveParams): boolean {
  const st = lstatOrUndefined(pgWal(p));
  if (!st) return false;
  if (p.destination === 'volume') return st.isSymbolicLink() && readlinkSync(pgWal(p)) === p.target;
  return st.isDirectory();
}

/** The directory holding the old WAL after the swap (pg_wal.pgscale-old itself, or where its symlink points). */
function oldWalDirectory(p: WalMoveParams): string | undefined {
  const st = lstatOrUndefined(oldWal(p));
  if (!st) return undefined;
  if (!st.isSymbolicLink()) return oldWal(p);
  try {
    return realpathSync(oldWal(p));
  } catch {
    return undefined; // its directory is already gone
  }
}

async function maxWalSize(ctx: StepContext, p: WalMoveParams, running: boolean): Promise<{ bytes: number; from: string }> {
  if (running) {
    try {
      const [row] = await withDb(ctx, p.access, (db) => db.query(statements.walSizing()));
      if (row) return { bytes: Number(row.max_wal_size_bytes), from: 'the running server' };
    } catch {
      /* fall back to the files */
    }
  }
  try {
    const entries = readConfigTree(p.configFile);
    const auto = join(p.dataDir, 'postgresql.auto.conf');
    const value = lastValues([...entries, ...(existsSync(auto) ? readConfigTree(auto) : [])]).get('max_wal_size');
    if (value) {
      const m = /^(\d+)\s*(kB|MB|GB|TB)?$/.exec(value.value.trim());
      if (m)
        return {
          bytes: Number(m[1]) * { kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 }[(m[2] ?? 'MB') as 'kB'],
          from: `${value.file} line ${value.line}`,
        };
    }
  } catch {
    /* unreadable configuration: the default */
  }
  return { bytes: 1024 ** 3, from: 'the default' };
}

async function describeDevice(path: string): Promise<string> {
  try {
    const s = await detectStorage(new HostRoot('/'), path);
    return `${s.mount.mountPoint} (${s.mount.fsType} on ${s.mount.source}, ${s.storageClass})`;
  } catch {
    return `device ${statSync(path).dev}`;
  }
}

/** Every precondition, before anything changes: the first step's check(). */
export async function walMoveChecks(ctx: StepContext, p: WalMoveParams): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  out.push(
    existsSync(join(p.dataDir, 'PG_VERSION'))
      ? check.pass('cluster', `PostgreSQL ${p.major} cluster in ${p.dataDir}, owned by ${p.owner}`)
      : check.fail('cluster', `${p.dataDir} is no longer a data directory`),
  );
  if (p.major < 10) out.push(check.fail('version', `PostgreSQL ${p.major} keeps its WAL in pg_xlog: pgscale moves pg_wal (10 and later)`));
  const missing = missingServerPrograms(p.server.bindir);
  if (missing.length) {
    out.push(
      check.fail(
        'server programs',
        p.server.bindir
          ? `${missing.join(', ')} missing from ${p.server.bindir}`
          : `no PostgreSQL ${p.major} installation found (${missing.join(', ')}): pass --bindir`,
      ),
    );
    return out;
  }
  out.push(check.pass('server programs', `pg_ctl and pg_controldata of ${p.major} in ${p.server.bindir}`));

  // the server: running or cleanly stopped, primary or standby
  const running = await serverRunning(ctx.runner, p);
  const control = await controlData(ctx.runner, p);
  if (running) out.push(check.info('server state', `running: it is stopped (pg_ctl stop -m fast) for the copy and started again after it — downtime`));
  else if (existsSync(join(p.dataDir, 'postmaster.pid')))
    out.push(
      check.fail(
        'server state',
        `not running, but ${join(p.dataDir, 'postmaster.pid')} is left from a server that did not shut down: start the cluster once so it recovers, then retry`,
      ),
    );
  else if (!cleanlyShutDown(control?.state))
    out.push(
      check.fail(
        'server state',
        `stopped, but not cleanly (pg_control says "${control?.state ?? 'unreadable'}"): start it once so it recovers and stop it, then retry`,
      ),
    );
  else out.push(check.info('server state', `stopped cleanly (${control.state}): it stays stopped`));
  if (running !== p.wasRunning)
    out.push(
      check.fail(
        'server state unchanged',
        `the server ${running ? 'runs' : 'is stopped'} now but ${p.wasRunning ? 'ran' : 'was stopped'} when the plan was made: make a new plan`,
      ),
    );
  out.push(check.info('role', p.role === 'standby' ? 'a standby: its WAL moves the same way; it resumes replay from the new location' : 'a primary'));

  // where the WAL is and where it goes
  const walNow = lexists(pgWal(p)) ? realpathSync(pgWal(p)) : undefined;
  if (!walNow) out.push(check.fail('WAL location', `${pgWal(p)} is missing`));
  else if (p.destination === 'volume' && walNow === p.target) out.push(check.fail('WAL location', `the WAL is already in ${p.target}`));
  else if (p.destination === 'data-dir' && !lstatOrUndefined(pgWal(p))!.isSymbolicLink())
    out.push(check.fail('WAL location', `the WAL is already in the data directory (${pgWal(p)} is a directory)`));
  else if (walNow !== p.source) out.push(check.fail('WAL location', `the WAL is in ${walNow} now, not in ${p.source} as planned: make a new plan`));
  else out.push(check.pass('WAL location', `now in ${p.source}; moves to ${where(p)}`));
  const leftovers = [oldWal(p), newWal(p)].filter(lexists);
  out.push(
    leftovers.length
      ? check.fail(
          'no unfinished move',
          `${leftovers.join(' and ')} exist: an earlier move did not finish — \`pgscale resume\` or \`pgscale rollback\` it (see \`pgscale runs\`), or remove them`,
        )
      : check.pass('no unfinished move', 'no pg_wal.pgscale-old / pg_wal.pgscale-new in the data directory'),
  );

  let walBytes = 0;
  try {
    walBytes = directoryBytes(p.source);
    out.push(check.pass('WAL contents', `${formatBytes(walBytes)} of segments, history files and status directories in ${p.source}`));
  } catch (e) {
    out.push(check.fail('WAL contents', (e as Error).message));
  }
  const maxWal = await maxWalSize(ctx, p, running);
  const need = requiredBytes(walBytes, maxWal.bytes);
  const me = isRoot() ? undefined : currentUser();
  const canOwn = isRoot() || me?.name === p.owner;

  if (p.destination === 'volume') {
    const parent = dirname(p.target);
    if (isInside(p.target, p.dataDir))
      out.push(
        check.fail('target outside the data directory', `${p.target} is inside ${p.dataDir}: to bring the WAL back into the data directory use --to-data-dir`),
      );
    if (isInside(p.target, p.source) || isInside(p.source, p.target))
      out.push(check.fail('target apart from the WAL', `${p.target} and the current WAL directory ${p.source} contain one another`));
    const pst = lstatOrUndefined(parent);
    if (!pst || !statSync(parent).isDirectory()) {
      out.push(check.fail('target parent exists', `${parent} does not exist: create it (or mount the WAL volume) first`));
      return out;
    }
    out.push(check.pass('target parent exists', `${parent}`));
    const tst = lstatOrUndefined(p.target);
    if (!tst) out.push(check.pass('target empty or absent', `${p.target} does not exist: it is created 0700, owned by ${p.owner}`));
    else if (!tst.isDirectory()) out.push(check.fail('target empty or absent', `${p.target} exists and is not a directory`));
    else {
      const entries = readdirSync(p.target);
      if (entries.length === 0) out.push(check.pass('target empty or absent', `${p.target} is an empty directory`));
      else {
        const mountRoot = entries.includes('lost+found')
          ? ` — it holds lost+found, so it is a filesystem's root: use a subdirectory such as ${join(p.target, 'pg_wal')}`
          : '';
        out.push(
          check.fail(
            'target empty or absent',
            `${p.target} is not empty (${entries.length} entries: ${entries.slice(0, 5).join(', ')}${entries.length > 5 ? ', …' : ''})${mountRoot}`,
          ),
        );
      }
    }
    const existing = tst ? p.target : parent;
    const dataDev = statSync(p.dataDir).dev;
    const targetDev = statSync(existing).dev;
    const devices = `${p.target} is on ${await describeDevice(existing)}; the data directory on ${await describeDevice(p.dataDir)}`;
    if (targetDev !== dataDev) out.push(check.pass('separate device', devices));
    else if (p.force) out.push(check.warn('separate device', `${devices}: the same device, accepted with --force (no I/O is separated)`));
    else out.push(check.fail('separate device', `${devices}: the same device — a dedicated WAL volume must be another device (--force to accept)`));
    try {
      accessSync(existing, constants.W_OK | constants.X_OK);
      out.push(check.pass('target writable', `${existing} is writable`));
    } catch (e) {
      out.push(check.fail('target writable', `cannot ${tst ? 'write into' : 'create a directory in'} ${existing}: ${(e as NodeJS.ErrnoException).code}`));
    }
    // the server must reach the directory: every ancestor searchable by the owner
    const reach = await ctx.runner.run(asOwner(p, 'test', ['-x', parent]));
    out.push(
      reach.exitCode === 0
        ? check.pass('owner reaches the target', `${p.owner} can search ${parent}`)
        : check.fail(
            'owner reaches the target',
            `${p.owner} cannot reach ${parent} (a parent directory is not searchable by it): the server could not open its WAL there`,
          ),
    );
    if (tst && !canOwn && tst.uid !== me?.uid)
      out.push(check.fail('target owner and mode', `${p.target} belongs to uid ${tst.uid}: only root can give it to ${p.owner}`));
    else
      out.push(
        canOwn
          ? check.pass('target owner and mode', `${p.target} will be owned by ${p.owner}, mode 0700`)
          : check.fail('target owner and mode', `pgscale runs as ${me?.name}: only root or ${p.owner} can create ${p.owner}'s WAL directory`),
      );
    const fs = statfsSync(existing);
    const free = fs.bavail * fs.bsize;
    const detail = `${formatBytes(free)} free at ${existing}; needs ${formatBytes(need)} (WAL now ${formatBytes(walBytes)}, max_wal_size ${formatBytes(maxWal.bytes)} from ${maxWal.from}, plus a margin)`;
    out.push(free >= need ? check.pass('free space', detail) : check.fail('free space', `not enough: ${detail}`));
  } else {
    out.push(
      check.info(
        'device',
        `the WAL leaves ${p.source} on ${await describeDevice(p.source)} for the data directory's device, ${await describeDevice(p.dataDir)}`,
      ),
    );
    try {
      accessSync(p.dataDir, constants.W_OK | constants.X_OK);
      out.push(
        canOwn
          ? check.pass('data directory writable', `${pgWal(p)} will be a directory owned by ${p.owner}, mode 0700`)
          : check.fail('data directory writable', `only root or ${p.owner} can create ${p.owner}'s WAL directory`),
      );
    } catch (e) {
      out.push(check.fail('data directory writable', `cannot write into ${p.dataDir}: ${(e as NodeJS.ErrnoException).code}`));
    }
    const fs = statfsSync(p.dataDir);
    const free = fs.bavail * fs.bsize;
    const detail = `${formatBytes(free)} free at ${p.dataDir}; needs ${formatBytes(need)} (WAL now ${formatBytes(walBytes)}, max_wal_size ${formatBytes(maxWal.bytes)} from ${maxWal.from}, plus a margin)`;
    out.push(free >= need ? check.pass('free space', detail) : check.fail('free space', `not enough: ${detail}`));
  }
  if (p.wasRunning) {
    out.push(check.info('started as it runs', describeStart(p.server)));
    const logDir = dirname(p.server.log);
    if (!p.server.log) out.push(check.fail('server log', noServerLog(p.server)));
    else out.push(check.info('server log', `pgscale starts the server with pg_ctl -l ${p.server.log}${existsSync(logDir) ? '' : ` (${logDir} is created)`}`));
  }
  return out;
}

const downtime = (p: WalMoveParams) => p.wasRunning;

export const stopStep = defineStep<WalMoveParams>({
  kind: 'wal.stop',
  title: (p) => (p.wasRunning ? 'Stop the server (pg_ctl stop -m fast): downtime starts' : 'Confirm the server is stopped cleanly'),
  downtime,
  check: walMoveChecks,
  async plan(ctx, p) {
    const server = serverOf(ctx.runner, p);
    if (!p.wasRunning) {
      const inv = server.invocation('pg_controldata', ['-D', p.dataDir]);
      return [{ kind: 'command', argv: [inv.program, ...inv.args], runAs: p.owner, note: 'checks the cluster state is "shut down"; nothing is changed' }];
    }
    const inv = server.stopInvocation('fast', STOP_SECONDS);
    return [
      { kind: 'command', argv: [inv.program, ...inv.args], runAs: p.owner, note: 'a fast shutdown: sessions are ended, a shutdown checkpoint is written' },
    ];
  },
  async apply(ctx, p) {
    if (await serverRunning(ctx.runner, p)) {
      try {
        await stopServer(ctx, p);
      } catch (e) {
        // still running: nothing was changed
        if (await serverRunning(ctx.runner, p)) throw new PgscaleError((e as Error).message, ExitCode.FailedNoChange);
        throw e;
      }
    }
    const control = await controlData(ctx.runner, p);
    return { controlState: control?.state ?? null, checkpoint: control?.latestCheckpoint ?? null };
  },
  async verify(ctx, p) {
    if (await serverRunning(ctx.runner, p)) return { ok: false, detail: 'the server is running' };
    const control = await controlData(ctx.runner, p);
    return cleanlyShutDown(control?.state)
      ? { ok: true, detail: `server stopped (${control.state})` }
      : { ok: false, detail: `pg_control says "${control?.state ?? 'unreadable'}", not shut down` };
  },
  async rollback(ctx, p) {
    if (p.wasRunning && !(await serverRunning(ctx.runner, p))) await startServer(ctx, p);
  },
  rollbackNote: (p) => (p.wasRunning ? `start the server again as it ran: ${describeListening(p.server)}` : 'nothing: the server stays stopped'),
  estimateSeconds: (p) => (p.wasRunning ? 10 : 1),
});

export const copyStep = defineStep<WalMoveParams>({
  kind: 'wal.copy',
  title: (p) => `Copy the WAL from ${p.source} into ${staging(p)} (fsynced, compared by sha256)`,
  downtime,
  check: async () => [],
  async plan(_ctx, p) {
    const actions: PlannedAction[] = [];
    if (p.destination === 'volume')
      actions.push({ kind: 'file', path: p.target, change: p.targetExisted ? 'modify' : 'mkdir', mode: '0700', note: `owned by ${p.owner}` });
    else actions.push({ kind: 'file', path: newWal(p), change: 'mkdir', mode: '0700', note: `owned by ${p.owner}; becomes pg_wal at the swap` });
    actions.push({
      kind: 'file',
      path: staging(p),
      change: 'create',
      note: `every file and directory of ${p.source} (about ${formatBytes(p.walBytes)}), owner ${p.owner}, modes and times kept, each file fsynced, then the directories; afterwards names, sizes and the sha256 of every file are compared with the source`,
    });
    return actions;
  },
  async apply(ctx, p) {
    await assertStopped(ctx, p);
    if (lexists(oldWal(p))) throw new PgscaleError(`${oldWal(p)} exists: the swap has begun, the copy cannot be redone`, ExitCode.FailedAfterChange);
    const dir = staging(p);
    // the directory was empty or absent when the plan was checked: anything in it now is a partial copy of ours
    if (lexists(dir)) emptyDirectory(dir);
    ensureDirectory(dir, chownTo(p), 0o700);
    fsyncPath(dirname(dir));
    const total = directoryBytes(p.source);
    const res = await copyTree(p.source, dir, { owner: chownTo(p), signal: ctx.signal, onBytes: (done) => ctx.progress.bytes(done, total) });
    return { files: res.files, bytes: res.bytes };
  },
  async verify(ctx, p) {
    const dir = staging(p);
    const st = lstatOrUndefined(dir);
    if (!st || !st.isDirectory()) return { ok: false, detail: `${dir} does not exist` };
    if ((st.mode & 0o777) !== 0o700 || st.uid !== ownerOf(p).uid) return { ok: false, detail: `${dir} is not 0700 owned by ${p.owner}` };
    const cmp = await compareTrees(p.source, dir, ctx.signal);
    return cmp.same
      ? { ok: true, detail: `${cmp.files} file${cmp.files === 1 ? '' : 's'}, ${formatBytes(cmp.bytes)}, identical by name, size and sha256` }
      : { ok: false, detail: `the copy differs: ${cmp.differences.join('; ')}` };
  },
  async rollback(_ctx, p) {
    const dir = staging(p);
    if (!lexists(dir)) return;
    if (lexists(pgWal(p)) && realpathSync(pgWal(p)) === realpathSync(dir))
      throw new PgscaleError(`${dir} is the live WAL (pg_wal leads to it): not removed`, ExitCode.FailedAfterChange);
    if (p.destination === 'volume' && p.targetExisted) emptyDirectory(dir);
    else {
      rmSync(dir, { recursive: true, force: true });
      fsyncPath(dirname(dir));
    }
  },
  rollbackNote: (p) => (p.destination === 'volume' && p.targetExisted ? `empty ${p.target} (it existed before, empty)` : `remove ${staging(p)}`),
  estimateSeconds: (p) => 1 + (2 * p.walBytes) / copyBytesPerSecond,
});

export const swapStep = defineStep<WalMoveParams>({
  kind: 'wal.swap',
  title: (p) => (p.destination === 'volume' ? `Swap: pg_wal becomes a symlink to ${p.target}` : 'Swap: pg_wal becomes a directory in the data directory again'),
  downtime,
  check: async () => [],
  async plan(_ctx, p) {
    const actions: PlannedAction[] = [];
    if (p.destination === 'volume') actions.push({ kind: 'file', path: newWal(p), change: 'symlink', to: p.target });
    actions.push(
      { kind: 'file', path: pgWal(p), change: 'rename', to: oldWal(p), note: 'the old WAL is kept until the cleanup step' },
      { kind: 'file', path: newWal(p), change: 'rename', to: pgWal(p), note: 'then the data directory is fsynced' },
    );
    return actions;
  },
  async apply(ctx, p) {
    await assertStopped(ctx, p);
    if (swapped(p)) return { pgWal: p.destination === 'volume' ? p.target : pgWal(p) };
    if (p.destination === 'volume' && !lexists(newWal(p))) {
      symlinkSync(p.target, newWal(p));
      // initdb's own pg_wal link belongs to the cluster owner: so does this one
      const to = chownTo(p);
      if (to) lchownSync(newWal(p), to.uid, to.gid);
    }
    const staged = lstatOrUndefined(newWal(p));
    if (!staged || (p.destination === 'volume' ? !staged.isSymbolicLink() || readlinkSync(newWal(p)) !== p.target : !staged.isDirectory())) {
      throw new PgscaleError(`${newWal(p)} is not the staged new pg_wal`, ExitCode.FailedAfterChange);
    }
    if (!lexists(oldWal(p))) renameSync(pgWal(p), oldWal(p));
    else if (lexists(pgWal(p)))
      throw new PgscaleError(`both ${pgWal(p)} and ${oldWal(p)} exist and pg_wal is not the new one: resolve by hand`, ExitCode.FailedAfterChange);
    fsyncPath(p.dataDir);
    renameSync(newWal(p), pgWal(p));
    fsyncPath(p.dataDir);
    return { pgWal: p.destination === 'volume' ? p.target : pgWal(p) };
  },
  async verify(_ctx, p) {
    if (!swapped(p))
      return { ok: false, detail: p.destination === 'volume' ? `${pgWal(p)} is not a symlink to ${p.target}` : `${pgWal(p)} is not a directory` };
    return { ok: true, detail: p.destination === 'volume' ? `pg_wal → ${p.target}` : 'pg_wal is a directory in the data directory' };
  },
  async rollback(ctx, p) {
    if (await serverRunning(ctx.runner, p)) await stopServer(ctx, p);
    if (!lexists(oldWal(p))) {
      // the renames never happened: only the staged symlink may exist
      if (p.destination === 'volume' && lstatOrUndefined(newWal(p))?.isSymbolicLink()) unlinkSync(newWal(p));
      fsyncPath(p.dataDir);
      return;
    }
    if (lexists(pgWal(p))) {
      if (!swapped(p))
        throw new PgscaleError(`both ${pgWal(p)} and ${oldWal(p)} exist and pg_wal is not the new one: resolve by hand`, ExitCode.FailedAfterChange);
      // the server may have run on the new WAL: that is now the true WAL, so the old directory gets its contents
      const oldDir = oldWalDirectory(p);
      if (!oldDir) throw new PgscaleError(`${oldWal(p)} points to a directory that no longer exists`, ExitCode.FailedAfterChange);
      await mirrorTree(realpathSync(pgWal(p)), oldDir, { owner: chownTo(p), signal: ctx.signal });
      if (p.destination === 'volume') unlinkSync(pgWal(p));
      else renameSync(pgWal(p), newWal(p)); // the copy step's rollback removes it
      fsyncPath(p.dataDir);
    }
    renameSync(oldWal(p), pgWal(p));
    if (p.destination === 'volume' && lstatOrUndefined(newWal(p))?.isSymbolicLink()) unlinkSync(newWal(p));
    fsyncPath(p.dataDir);
  },
  rollbackNote: () =>
    'stop the server if it runs, copy back any WAL written at the new location since the swap (sha256-compared), and put the old pg_wal back in place',
  estimateSeconds: () => 1,
});

/** The server writes its WAL at the target: a record, a switch to a new file, a checkpoint, then both files are there. */
async function proveWalAtTarget(ctx: StepContext, p: WalMoveParams): Promise<JsonObject> {
  return withDb(ctx, p.access, async (db): Promise<JsonObject> => {
    const [pos] = await db.query(statements.currentWalFile());
    if (!pos || pos.in_recovery || !pos.wal_file) return { inRecovery: true };
    const before = pos.wal_file;
    await db.query(statements.walMarker());
    const [sw] = await db.query(statements.walSwitch());
    const switched = sw!.wal_file;
    if (!existsSync(join(p.target, switched)))
      throw new PgscaleError(`after pg_switch_wal() the completed WAL file ${switched} is not in ${p.target}`, ExitCode.FailedAfterChange);
    await db.query(statements.checkpoint());
    const [now] = await db.query(statements.currentWalFile());
    const current = now!.wal_file!;
    if (current === switched)
      throw new PgscaleError(`pg_switch_wal() did not move the server to a new WAL file (still ${current})`, ExitCode.FailedAfterChange);
    if (!existsSync(join(p.target, current))) throw new PgscaleError(`the server writes ${current}, which is not in ${p.target}`, ExitCode.FailedAfterChange);
    return { before, switched, current };
  });
}

export const startStep = defineStep<WalMoveParams>({
  kind: 'wal.start',
  title: () => 'Start the server and see it write WAL at the new location: downtime ends',
  downtime: true,
  check: async () => [],
  async plan(ctx, p) {
    const inv = serverOf(ctx.runner, p).startInvocation({ timeoutSeconds: STOP_SECONDS });
    const actions: PlannedAction[] = [
      { kind: 'command', argv: [inv.program, ...inv.args], runAs: p.owner, note: `started as it ran when planned: ${describeListening(p.server)}` },
    ];
    if (p.role === 'primary') {
      for (const st of [statements.walMarker(), statements.walSwitch(), statements.checkpoint(), statements.currentWalFile()])
        actions.push({ kind: 'sql', target: `${p.access.host}:${p.access.port}`, sql: st.text });
      actions[1]!.note = `a WAL record, a switch to a new WAL file and a checkpoint: the completed and the new WAL file must both be in ${p.target}`;
    }
    return actions;
  },
  async apply(ctx, p) {
    if (!swapped(p)) throw new PgscaleError(`${pgWal(p)} is not the new WAL location: not starting the server`, ExitCode.FailedAfterChange);
    if (!(await serverRunning(ctx.runner, p))) await startServer(ctx, p);
    try {
      return await proveWalAtTarget(ctx, p);
    } catch (e) {
      // the server runs now: whatever fails here (a connection error says "no change") fails after a change
      throw new PgscaleError(`the server runs again, but: ${(e as Error).message}`, ExitCode.FailedAfterChange, e instanceof PgscaleError ? e.hint : undefined);
    }
  },
  async verify(ctx, p) {
    if (!(await serverRunning(ctx.runner, p))) return { ok: false, detail: 'the server is not running' };
    if (!swapped(p) || realpathSync(pgWal(p)) !== p.target) return { ok: false, detail: `pg_wal does not lead to ${p.target}` };
    try {
      const [pos] = await withDb(ctx, p.access, (db) => db.query(statements.currentWalFile()));
      if (pos?.in_recovery) return { ok: true, detail: 'the standby runs and accepts connections, its pg_wal in the new location' };
      const file = pos?.wal_file ?? '';
      return existsSync(join(p.target, file))
        ? { ok: true, detail: `the server runs and writes ${file} in ${p.target}` }
        : { ok: false, detail: `the current WAL file ${file} is not in ${p.target}` };
    } catch (e) {
      return { ok: false, detail: `the server does not accept connections: ${(e as Error).message}` };
    }
  },
  async rollback(ctx, p) {
    if (await serverRunning(ctx.runner, p)) await stopServer(ctx, p);
  },
  rollbackNote: () => 'stop the server (fast) so that the swap can be undone',
  estimateSeconds: () => 10,
});

/** Removes an old WAL directory: its contents, and the directory itself unless it is a mount point. */
function removeWalDirectory(dir: string): void {
  if (!existsSync(dir)) return;
  if (isMountPoint(dir)) emptyDirectory(dir);
  else {
    rmSync(dir, { recursive: true, force: true });
    fsyncPath(dirname(dir));
  }
}

export const cleanupStep = defineStep<WalMoveParams>({
  kind: 'wal.cleanup',
  title: (p) =>
    p.source === pgWal(p)
      ? `Remove the old WAL (${oldWal(p)}, the former pg_wal directory)`
      : `Remove the old WAL directory ${p.source} and the symlink ${oldWal(p)}`,
  pointOfNoReturn: true,
  check: async () => [],
  async plan(_ctx, p) {
    const actions: PlannedAction[] = [];
    if (p.source !== pgWal(p))
      actions.push({ kind: 'file', path: p.source, change: 'delete', note: 'the old WAL directory (only emptied if it is a mount point)' });
    actions.push({ kind: 'file', path: oldWal(p), change: 'delete', note: p.source === pgWal(p) ? 'the old WAL directory' : 'the old symlink' });
    return actions;
  },
  async apply(_ctx, p) {
    if (!swapped(p)) throw new PgscaleError(`${pgWal(p)} is not the new WAL location: the old WAL is kept`, ExitCode.FailedAfterChange);
    const st = lstatOrUndefined(oldWal(p));
    if (st?.isSymbolicLink()) {
      // the directory first, the symlink last: until the symlink goes, a resume still finds the directory
      const dir = oldWalDirectory(p);
      if (dir && dir !== realpathSync(pgWal(p)) && !isInside(realpathSync(pgWal(p)), dir)) removeWalDirectory(dir);
      unlinkSync(oldWal(p));
    } else if (st) rmSync(oldWal(p), { recursive: true, force: true });
    fsyncPath(p.dataDir);
    return { removed: p.source };
  },
  async verify(_ctx, p) {
    if (lexists(oldWal(p))) return { ok: false, detail: `${oldWal(p)} still exists` };
    return swapped(p)
      ? { ok: true, detail: `the old WAL is removed; WAL lives in ${where(p)}` }
      : { ok: false, detail: `${pgWal(p)} is not the new WAL location` };
  },
  rollbackNote: (p) =>
    `none: the old WAL is gone. To put the WAL back, run \`pgscale wal move\` again (${p.destination === 'volume' ? '--to-data-dir' : `--to ${p.source}`})`,
  estimateSeconds: (p) => 1 + p.walBytes / 1024 ** 3,
});

export const walMoveOperation = defineOperation<WalMoveParams>({
  name: 'wal-move',
  serverAccess: (p) => p.access,
  describeTarget: (p) => ({ description: `cluster ${p.dataDir}`, lockKey: `cluster:${p.dataDir}` }),
  summary: (p) =>
    `Move the WAL of the PostgreSQL ${p.major} cluster in ${p.dataDir} from ${p.source} to ${where(p)}${p.wasRunning ? ' (the server is stopped during the copy)' : ' (the server stays stopped)'}`,
  steps: (p) => {
    const steps: StepData[] = [
      { id: 'stop', kind: stopStep.kind, params: p },
      { id: 'copy', kind: copyStep.kind, params: p },
      { id: 'swap', kind: swapStep.kind, params: p },
    ];
    if (p.wasRunning) steps.push({ id: 'start', kind: startStep.kind, params: p });
    steps.push({ id: 'cleanup', kind: cleanupStep.kind, params: p });
    return steps;
  },
  async fingerprint(ctx, p) {
    const control = await controlData(ctx.runner, p);
    const tst = lstatOrUndefined(p.target);
    return {
      dataDir: p.dataDir,
      systemIdentifier: control?.systemIdentifier ?? null,
      walLocation: lexists(pgWal(p)) ? realpathSync(pgWal(p)) : null,
      walIsSymlink: lstatOrUndefined(pgWal(p))?.isSymbolicLink() ?? false,
      running: p.server.bindir ? await serverRunning(ctx.runner, p) : null,
      listening: listeningNow(p.dataDir),
      target:
        p.destination === 'data-dir' ? 'data directory' : !tst ? 'absent' : tst.isDirectory() && readdirSync(p.target).length === 0 ? 'empty' : 'not empty',
    };
  },
});
