/**
 * The real-PostgreSQL test bed: bindirs provisioned by test/testbed/provision.sh (cached), clusters
 * on free ports with sockets in temp dirs, loop-mounted volumes, and teardown that always runs.
 * Servers run as the unprivileged `postgres` account when the tests run as root.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync, appendFileSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, ZxRunner, describeFailure, type Invocation, type OsUser, type RunResult } from '../../src/runner.js';
import { currentUser, userByName } from '../../src/osUser.js';
import { repoRoot } from './paths.js';
import { freePort } from '../../src/net.js';
import { PostgresServer, processAlive, runningPostmasters, type ServerIdentity } from '../../src/server/postgres.js';
import { lockDir } from '../../src/pipeline/journal.js';

export { freePort };

export const runner = new ZxRunner();

/** The account servers run as: `postgres` when root (PostgreSQL refuses root), else ourselves. */
export const serverUser: OsUser = isRoot()
  ? (userByName('postgres') ??
    (() => {
      throw new Error('tests as root need a "postgres" OS account');
    })())
  : currentUser();

const bindirs = new Map<number, string>();

/** A real bindir of that major version (provisioned on first use, then cached). */
export function bindir(version: number): string {
  let dir = bindirs.get(version);
  if (!dir) {
    const out = execFileSync('bash', [join(repoRoot, 'test/testbed/provision.sh'), String(version)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    dir = out.trim().split(' ')[1]!;
    bindirs.set(version, dir);
  }
  return dir;
}

export type Teardown = { label: string; run: () => void };
const teardowns: Teardown[] = [];

/** Registers an undo, newest first; also run on process exit so a crashed test leaves nothing running. */
export function onTeardown(label: string, run: () => void): Teardown {
  const t = { label, run };
  teardowns.push(t);
  return t;
}

export function runTeardown(t: Teardown): void {
  const i = teardowns.indexOf(t);
  if (i < 0) return;
  teardowns.splice(i, 1);
  try {
    t.run();
  } catch (e) {
    process.stderr.write(`teardown ${t.label} failed: ${String(e)}\n`);
  }
}

/** Stops every server, unmounts every volume and removes every temp dir this process made. */
export function teardownAll(): void {
  while (teardowns.length) runTeardown(teardowns[teardowns.length - 1]!);
}
process.on('exit', teardownAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    teardownAll();
    process.exit(130);
  });

/** Whether a data directory lives under `dir` or keeps WAL or a tablespace there. */
function dataDirUses(dataDir: string, dir: string): boolean {
  const under = (p: string) => p === dir || p.startsWith(dir + '/');
  if (under(dataDir)) return true;
  const links = [join(dataDir, 'pg_wal'), ...readdirSync(join(dataDir, 'pg_tblspc'), { withFileTypes: true }).map((e) => join(dataDir, 'pg_tblspc', e.name))];
  return links.some((l) => {
    try {
      return under(readlinkSync(l));
    } catch {
      return false;
    }
  });
}

/**
 * Stops (SIGQUIT: immediate shutdown) every server that uses a directory about to go: servers
 * pgscale itself started (an upgraded cluster, a moved one) are not registered anywhere else.
 */
function stopServersUsing(dir: string): void {
  for (const pm of runningPostmasters()) {
    let uses: boolean;
    try {
      uses = dataDirUses(pm.dataDir, dir);
    } catch {
      uses = pm.dataDir.startsWith(dir + '/');
    }
    if (!uses) continue;
    try {
      process.kill(pm.pid, 'SIGQUIT');
    } catch {
      continue;
    }
    for (let i = 0; i < 100 && processAlive(pm.pid); i++) spawnSync('sleep', ['0.1']);
  }
}

/**
 * Removes the host-wide run locks held by runs whose state directory lived under `dir`: a case
 * that failed leaves its run's lock, keyed by the cluster's system identifier, and a later case on
 * a copy of the same cluster must not meet it.
 */
function releaseLocksUnder(dir: string): void {
  const locks = lockDir();
  for (const name of existsSync(locks) ? readdirSync(locks) : []) {
    try {
      const { stateDir } = JSON.parse(readFileSync(join(locks, name), 'utf8')) as { stateDir?: string };
      if (stateDir === dir || stateDir?.startsWith(dir + '/')) rmSync(join(locks, name), { force: true });
    } catch {
      /* another process's lock, gone or being written */
    }
  }
}

/**
 * A `pgscale upgrade` command line for a test cluster: its data directory and bindir, the new
 * version's bindir (the --to-version's, else 17's, unless given), then the test's own flags in
 * order: `true` for a flag without a value, `undefined` or `false` to leave one out.
 */
export function upgradeCommand(
  old: { pgdata: string; bindir: string },
  flags: Record<string, string | number | boolean | undefined> = {},
  newBindir = bindir(Number(flags['to-version'] ?? 17)),
): string[] {
  const rest = Object.entries(flags).flatMap(([name, value]) =>
    value === undefined || value === false ? [] : value === true ? [`--${name}`] : [`--${name}`, String(value)],
  );
  return ['upgrade', '--pgdata', old.pgdata, '--old-bindir', old.bindir, '--new-bindir', newBindir, ...rest];
}

const scratchTeardowns = new Map<string, Teardown>();

/** Tears a scratch dir down now (servers using it stopped, its runs' locks released, removed) instead of at exit. */
export function removeScratchDir(dir: string): void {
  const t = scratchTeardowns.get(dir);
  scratchTeardowns.delete(dir);
  if (t) runTeardown(t);
}

/** A temp dir owned by the server account (so a cluster or a pgscale state dir can live in it). */
export function scratchDir(prefix = 'pgscale-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (isRoot()) chownSync(dir, serverUser.uid, serverUser.gid);
  scratchTeardowns.set(
    dir,
    onTeardown(`rm ${dir}`, () => {
      stopServersUsing(dir);
      releaseLocksUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    }),
  );
  return dir;
}

export function mkdirOwned(path: string): string {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  if (isRoot()) chownSync(path, serverUser.uid, serverUser.gid);
  return path;
}

async function must(inv: Invocation): Promise<RunResult> {
  const res = await runner.run(inv);
  if (res.exitCode !== 0) throw new Error(describeFailure(inv, res) + '\n' + res.stdout.slice(-2000));
  return res;
}

export interface ClusterOptions {
  version: number;
  checksums?: boolean;
  /** initdb --waldir: WAL on another directory (e.g. a loop volume). */
  waldir?: string;
  /** Lines appended to postgresql.conf. */
  conf?: string[];
  start?: boolean;
  /** Parent directory (default: a new scratch dir). */
  parent?: string;
  /**
   * Where port, socket directory and listen_addresses are set: postgresql.conf (default), or the
   * server's command line (`pg_ctl -o "-p … -k … -c listen_addresses="`) as init scripts, service
   * files and containers do.
   */
  listenOn?: 'config' | 'command-line';
  /** Keep postgresql.conf, pg_hba.conf and pg_ident.conf outside the data directory, as Debian does. */
  configOutside?: boolean;
}

export class TestCluster {
  constructor(
    readonly version: number,
    readonly bindir: string,
    readonly pgdata: string,
    readonly port: number,
    readonly socketDir: string,
    readonly logFile: string,
    /** Options the server is started with (pg_ctl -o), as production servers often are. */
    readonly options: string[] = [],
    /** config_file when it lives outside the data directory. */
    readonly configFile: string | null = null,
  ) {}

  get superuser(): string {
    return serverUser.name;
  }

  /** The server-control module's view of this cluster: tests start and stop it the way pgscale does. */
  get server(): PostgresServer {
    const identity: ServerIdentity = {
      bindir: this.bindir,
      dataDir: this.pgdata,
      configFile: this.configFile,
      configDir: null,
      options: this.options,
      port: this.port,
      socketDirs: [this.socketDir],
      listenAddresses: '',
      owner: serverUser.name,
      log: this.logFile,
      origins: this.options.length
        ? { port: 'command line', sockets: 'command line', listen: 'command line' }
        : { port: 'configuration', sockets: 'configuration', listen: 'configuration' },
      manager: { kind: 'pg_ctl' },
    };
    return new PostgresServer(identity, runner);
  }

  /** Where the configuration lives (postgresql.conf). */
  get configPath(): string {
    return this.configFile ?? join(this.pgdata, 'postgresql.conf');
  }

  private inv(program: string, args: string[], input?: string): Invocation {
    return { program: join(this.bindir, program), args, runAs: serverUser, input };
  }

  async start(): Promise<void> {
    await this.server.start({ timeoutSeconds: 60 });
  }

  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await must(this.server.stopInvocation(mode, 60));
  }

  /** Runs SQL through psql as the server account (peer auth); returns unaligned tuples-only output. */
  async sql(sql: string, db = 'postgres'): Promise<string> {
    const res = await must(
      this.inv(
        'psql',
        ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', this.socketDir, '-p', String(this.port), '-U', this.superuser, '-d', db, '-f', '-'],
        sql,
      ),
    );
    return res.stdout.trim();
  }
}

/** setpriv's argv running a program as the server account (for spawn outside the runner: teardowns, held sessions). */
export const setprivArgs = (program: string, args: string[]): string[] => [
  '--reuid',
  String(serverUser.uid),
  '--regid',
  String(serverUser.gid),
  '--init-groups',
  program,
  ...args,
];

/** Stops (immediate) whatever server runs on a data directory at teardown (runTeardown: now): servers pgscale or a bench starts. */
export function stopAtTeardown(bin: string, dataDir: string): Teardown {
  return onTeardown(`stop ${dataDir}`, () => {
    if (!existsSync(join(dataDir, 'postmaster.pid'))) return;
    spawnSync('setpriv', setprivArgs(join(bin, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop']), { stdio: 'ignore', cwd: '/' });
  });
}

export async function createCluster(opts: ClusterOptions): Promise<TestCluster> {
  const parent = opts.parent ?? scratchDir(`pgscale-pg${opts.version}-`);
  const bin = bindir(opts.version);
  const pgdata = join(parent, 'data');
  const socketDir = mkdirOwned(join(parent, 'sock'));
  const port = await freePort();
  const initdb = ['-D', pgdata, '-U', serverUser.name, '--no-locale', '-E', 'UTF8', '--auth-local=peer', '--auth-host=scram-sha-256'];
  if (opts.checksums) initdb.push('--data-checksums');
  else if (opts.version >= 18) initdb.push('--no-data-checksums');
  if (opts.waldir) initdb.push('--waldir', opts.waldir);
  await must({ program: join(bin, 'initdb'), args: initdb, runAs: serverUser });
  const listening = [`port = ${port}`, `unix_socket_directories = '${socketDir}'`, `listen_addresses = ''`];
  const options = opts.listenOn === 'command-line' ? ['-p', String(port), '-k', socketDir, '-c', 'listen_addresses='] : [];
  let configFile: string | null = null;
  const conf = [...(opts.listenOn === 'command-line' ? [] : listening), ...(opts.conf ?? [])];
  if (opts.configOutside) {
    const etc = mkdirOwned(join(parent, 'etc'));
    for (const f of ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf']) renameSync(join(pgdata, f), join(etc, f));
    configFile = join(etc, 'postgresql.conf');
    conf.unshift(`data_directory = '${pgdata}'`, `hba_file = '${join(etc, 'pg_hba.conf')}'`, `ident_file = '${join(etc, 'pg_ident.conf')}'`);
    options.push('-c', `config_file=${configFile}`);
  }
  appendFileSync(configFile ?? join(pgdata, 'postgresql.conf'), '\n# test bed\n' + conf.join('\n') + '\n');
  const cluster = new TestCluster(opts.version, bin, pgdata, port, socketDir, join(parent, 'server.log'), options, configFile);
  stopAtTeardown(bin, pgdata);
  if (opts.start !== false) await cluster.start();
  return cluster;
}

export interface LoopVolume {
  mountPoint: string;
  image: string;
  unmount(): void;
}

/** A real separate filesystem: an image file formatted and loop-mounted (root only). */
export function createLoopVolume(sizeMiB = 64, fsType: 'ext4' | 'xfs' = 'ext4'): LoopVolume {
  if (!isRoot()) throw new Error('loop volumes need root');
  const base = mkdtempSync(join(tmpdir(), 'pgscale-vol-'));
  chmodSync(base, 0o755); // the server account must reach the mount point
  onTeardown(`rm ${base}`, () => rmSync(base, { recursive: true, force: true }));
  const image = join(base, 'volume.img');
  const mountPoint = join(base, 'mnt');
  mkdirSync(mountPoint);
  execFileSync('truncate', ['-s', `${sizeMiB}M`, image]);
  execFileSync(fsType === 'xfs' ? 'mkfs.xfs' : 'mkfs.ext4', fsType === 'xfs' ? ['-q', image] : ['-q', '-F', image]);
  execFileSync('mount', ['-o', 'loop', image, mountPoint]);
  const t = onTeardown(`umount ${mountPoint}`, () => {
    // a server with WAL or a tablespace here keeps the mount busy: stop it first
    stopServersUsing(mountPoint);
    const res = spawnSync('umount', ['-d', mountPoint], { encoding: 'utf8' });
    if (res.status !== 0) throw new Error(`umount ${mountPoint}: ${res.stderr.trim()}`);
  });
  chownSync(mountPoint, serverUser.uid, serverUser.gid);
  return { mountPoint, image, unmount: () => runTeardown(t) };
}
