/**
 * The one module that controls PostgreSQL servers: start, stop, restart, reload, status,
 * readiness, pg_controldata and the server log — always with the server's whole identity (bindir,
 * data and config locations, the options it was started with, port, sockets, owner), so a server
 * pgscale stops comes back exactly where clients found it. Modelled on patroni's `Postgresql`.
 *
 * Every program runs through a Runner: a local one, or one that reaches another host over ssh.
 */
import { existsSync, readFileSync, readdirSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { ExitCode, PgscaleError } from '../errors.js';
import { lastValues, readConfigTree } from '../config/parse.js';
import { serverLogPath } from '../cluster/serverLog.js';
import { userByName } from '../osUser.js';
import { describeFailure, isRoot, shellQuote, type Invocation, type OsUser, type Runner } from '../runner.js';
import { parseControlData, type ControlData } from '../cluster/controlData.js';
import { parsePostmasterPid, type PostmasterPid } from '../cluster/postmasterPid.js';
import type { JsonObject } from '../pipeline/step.js';

/** Where a listening setting came from, for the plan ("port 5433 from the server command line"). */
export type SettingOrigin = 'command line' | 'environment (PGPORT)' | 'configuration' | 'default' | 'postmaster.pid';

/**
 * Who starts and stops the server: pg_ctl itself, or postgresql-common's pg_ctlcluster for a
 * cluster configured in /etc/postgresql/VERSION/CLUSTER (it goes through systemd where systemd
 * runs, and keeps the log where the DBA's pg_ctl.conf and start-up put it).
 */
export type ServerManager = { kind: 'pg_ctl' } | { kind: 'pg_ctlcluster'; version: number; cluster: string };

/** Where postgresql-common's pg_ctlcluster lives: Debian and Ubuntu install it there. */
export const PG_CTLCLUSTER = '/usr/bin/pg_ctlcluster';

/**
 * The manager a config_file implies: /etc/postgresql/V/NAME/postgresql.conf is a postgresql-common
 * cluster when pg_ctlcluster is installed and V is the data directory's major; anything else is pg_ctl's.
 */
export function managerFor(configFile: string | null, major: number | undefined, pgCtlClusterInstalled: boolean): ServerManager {
  const m = configFile ? /^\/etc\/postgresql\/(\d+)\/([^/\s'"]+)\/postgresql\.conf$/.exec(configFile) : null;
  return m && pgCtlClusterInstalled && Number(m[1]) === major ? { kind: 'pg_ctlcluster', version: Number(m[1]), cluster: m[2]! } : { kind: 'pg_ctl' };
}

/** Everything it takes to stop a server and start it again exactly as it ran. Plain data: plans carry it. */
export interface ServerIdentity extends JsonObject {
  bindir: string;
  dataDir: string;
  /** config_file when it lives outside the data directory (Debian's /etc/postgresql), else null. */
  configFile: string | null;
  /**
   * The directory -D named when it is not the data directory: a configuration directory whose
   * postgresql.conf sets data_directory (PostgreSQL's "File Locations"; its pg_hba.conf and
   * pg_ident.conf are found there by default). The server is started with -D this directory, as
   * it ran; null when -D is the data directory.
   */
  configDir: string | null;
  /** The postmaster's options after the program, -D DIR removed: given again at every start. */
  options: string[];
  port: number;
  socketDirs: string[];
  /** listen_addresses; '' means sockets only. */
  listenAddresses: string;
  /** The OS account that owns the data directory: every server program runs as it. */
  owner: string;
  /** pg_ctl -l: where the server's stderr goes when pgscale starts it. */
  log: string;
  origins: { port: SettingOrigin; sockets: SettingOrigin; listen: SettingOrigin };
  manager: ServerManager;
}

export type ServerState = 'running' | 'stopped' | 'stale';

export interface ServerStatus {
  state: ServerState;
  pid: number | undefined;
  /** postmaster.pid's status line: starting, stopping, ready, standby. */
  pmStatus: string | undefined;
}

/** How to stop: fast with a timeout; immediate afterwards only with consent (it needs crash recovery). */
export interface StopOptions {
  timeoutSeconds?: number;
  immediateAfterTimeout?: boolean;
}

/** A start that differs from the identity only where asked: another socket, no TCP, another port. */
export interface StartOptions {
  timeoutSeconds?: number;
  /** Reachable only through this socket directory (no TCP): verification before clients return. */
  privateSocketDir?: string;
  /** Extra `-c name=value` settings, after the identity's own (the last one wins). */
  settings?: Record<string, string>;
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT = 300;

/** The programs of a bindir that server control runs. */
const SERVER_PROGRAMS = ['postgres', 'pg_ctl', 'pg_controldata', 'pg_isready'];

/** Server programs missing from a bindir ('' or null: every one). */
export function missingServerPrograms(bindir: string | null): string[] {
  return SERVER_PROGRAMS.filter((n) => !bindir || !existsSync(join(bindir, n)));
}

/** The quoted arguments of postmaster.opts: `/usr/lib/postgresql/16/bin/postgres "-D" "/data" "-p" "5433"`. */
export function parsePostmasterOpts(text: string): string[] {
  return [...text.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!);
}

/** The options without -D DIR / --pgdata (the data directory is always given separately). */
export function withoutDataDir(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-D' || a === '--pgdata') i++;
    else if ((a.startsWith('-D') && a.length > 2) || a.startsWith('--pgdata=')) continue;
    else out.push(a);
  }
  return out;
}

/**
 * The bindir of a running postmaster: its executable (/proc/PID/exe) names it, wherever it is
 * installed — when the client programs pgscale runs (psql, pg_controldata) are there too.
 */
export function bindirOfPostmaster(pid: number | undefined): string | undefined {
  if (!pid) return undefined;
  const dir = readOr(() => dirname(readlinkSync(`/proc/${pid}/exe`)), undefined);
  return dir && ['psql', 'pg_controldata'].every((p) => existsSync(join(dir, p))) ? dir : undefined;
}

/** The data directory named on a postmaster command line (-D DIR, -DDIR, --pgdata[=]DIR), if any. */
export function dataDirArg(args: readonly string[]): string | undefined {
  let dir: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-D' || a === '--pgdata') dir = args[++i];
    else if (a.startsWith('-D') && a.length > 2) dir = a.slice(2);
    else if (a.startsWith('--pgdata=')) dir = a.slice('--pgdata='.length);
  }
  return dir;
}

/** A setting on a postmaster command line: its name, its value and the arguments that give it. */
interface OptionSetting {
  name: string;
  value: string;
  /** The arguments from `start` up to (not including) `end`. */
  start: number;
  end: number;
}

const shortSettings: Record<string, string> = { '-p': 'port', '-k': 'unix_socket_directories', '-h': 'listen_addresses' };

/**
 * The settings of a postmaster command line in every spelling PostgreSQL accepts: `-c name=value`,
 * `--name=value`, and the short forms -p (port), -k (sockets), -h (listen_addresses), -i (listen on
 * all, obsolete). Names come with underscores, as pg_settings spells them.
 */
function optionSettings(options: readonly string[]): OptionSetting[] {
  const out: OptionSetting[] = [];
  for (let i = 0; i < options.length; i++) {
    const a = options[i]!;
    const start = i;
    const setting = a === '-c' || a === '--c' ? options[++i] : a.startsWith('-c') && a.length > 2 ? a.slice(2) : a.startsWith('--') ? a.slice(2) : undefined;
    if (setting !== undefined) {
      const eq = setting.indexOf('=');
      if (eq > 0) out.push({ name: setting.slice(0, eq).replace(/-/g, '_'), value: setting.slice(eq + 1), start, end: i + 1 });
      continue;
    }
    const short = shortSettings[a.slice(0, 2)];
    if (a === '-i') out.push({ name: 'listen_addresses', value: '*', start, end: i + 1 });
    else if (short && a.length === 2 && i + 1 < options.length) out.push({ name: short, value: options[++i]!, start, end: i + 1 });
    else if (short && a.length > 2) out.push({ name: short, value: a.slice(2), start, end: i + 1 });
  }
  return out;
}

/** The value a setting has on a postmaster command line, the last occurrence winning as in PostgreSQL. */
export function optionValue(options: readonly string[], name: string): string | undefined {
  return optionSettings(options)
    .filter((s) => s.name === name)
    .at(-1)?.value;
}

/**
 * The options with each setting given once: its last occurrence, the one PostgreSQL uses, stays
 * where it is; earlier ones (in any spelling) go. What a start overrides then shows once in ps and
 * postmaster.opts, not beside the value it replaces.
 */
export function onePerSetting(options: readonly string[]): string[] {
  const settings = optionSettings(options);
  const last = new Map(settings.map((s) => [s.name, s]));
  const dropped = new Set(settings.filter((s) => last.get(s.name) !== s).flatMap((s) => Array.from({ length: s.end - s.start }, (_, k) => s.start + k)));
  return options.filter((_, i) => !dropped.has(i));
}

/** Quotes each option for the shell pg_ctl hands -o to (pg_ctl runs `exec postgres … OPTIONS` through /bin/sh). */
export function pgCtlOptionString(options: readonly string[]): string {
  return options.map(shellQuote).join(' ');
}

/** The options a start passes: the identity's, then the overrides of this start, which replace what they override. */
export function startOptions(id: ServerIdentity, opts: StartOptions = {}): string[] {
  const out = [...id.options];
  // a port taken from PGPORT in the server's environment would not survive a start from pgscale's
  if (id.origins.port === 'environment (PGPORT)' && optionValue(out, 'port') === undefined) out.push('-p', String(id.port));
  // a configuration directory given as -D names its postgresql.conf itself
  if (id.configFile && !id.configDir && optionValue(out, 'config_file') === undefined) out.push('-c', `config_file=${id.configFile}`);
  if (opts.privateSocketDir) out.push('-c', 'listen_addresses=', '-c', `unix_socket_directories=${opts.privateSocketDir}`);
  for (const [k, v] of Object.entries(opts.settings ?? {})) out.push('-c', `${k}=${v}`);
  return onePerSetting(out);
}

export class PostgresServer {
  constructor(
    readonly id: ServerIdentity,
    private readonly runner: Runner,
    /** The owner's account when the server is on another host (its runner is an ssh one): not looked up here. */
    private readonly account?: OsUser,
  ) {}

  private get ownerAccount(): OsUser {
    if (this.account) return this.account;
    const u = userByName(this.id.owner);
    if (!u) throw new PgscaleError(`OS user ${this.id.owner} (owner of ${this.id.dataDir}) does not exist`, ExitCode.BadInput);
    return u;
  }

  private program(name: string): string {
    return join(this.id.bindir, name);
  }

  /** A server program as the data directory's owner, messages in English for parsing. */
  invocation(program: string, args: string[], extra: Partial<Invocation> = {}): Invocation {
    return { program: this.program(program), args, runAs: this.ownerAccount, cwd: '/', ...extra, env: { LC_ALL: 'C', ...extra.env } };
  }

  /**
   * pg_ctlcluster as pgscale runs (as root it switches to the owner itself and, where systemd runs,
   * hands start and stop to postgresql@V-NAME); as anyone else, as the owner.
   */
  private clusterInvocation(args: string[], signal?: AbortSignal): Invocation {
    return { program: PG_CTLCLUSTER, args, runAs: isRoot() ? undefined : this.ownerAccount, cwd: '/', env: { LC_ALL: 'C' }, signal };
  }

  startInvocation(opts: StartOptions = {}): Invocation {
    const m = this.id.manager;
    // a private start listens elsewhere than the cluster's files say, and pg_ctlcluster waits for the configured socket: pg_ctl runs it
    if (m.kind === 'pg_ctlcluster' && !opts.privateSocketDir) {
      // extra -o options make pg_ctlcluster bypass systemd, so they are given only when a start asks for settings
      const settings = Object.entries(opts.settings ?? {}).flatMap(([k, v]) => ['-o', pgCtlOptionString(['-c', `${k}=${v}`])]);
      return this.clusterInvocation([...settings, String(m.version), m.cluster, 'start'], opts.signal);
    }
    const args = ['start', '-D', this.id.configDir ?? this.id.dataDir, '-w', '-t', String(opts.timeoutSeconds ?? DEFAULT_TIMEOUT), '-l', this.id.log];
    const options = startOptions(this.id, opts);
    if (options.length) args.push('-o', pgCtlOptionString(options));
    return this.invocation('pg_ctl', args, { signal: opts.signal });
  }

  /** pg_ctlcluster waits as long as pg_ctl does by default (60 s): a `-- -t N` would make it bypass systemd. */
  stopInvocation(mode: 'fast' | 'immediate' | 'smart' = 'fast', timeoutSeconds = DEFAULT_TIMEOUT): Invocation {
    const m = this.id.manager;
    if (m.kind === 'pg_ctlcluster') return this.clusterInvocation(['-m', mode, String(m.version), m.cluster, 'stop']);
    return this.invocation('pg_ctl', ['stop', '-D', this.id.dataDir, '-m', mode, '-w', '-t', String(timeoutSeconds)]);
  }

  /** Where to look when a start fails. */
  private get logHint(): string {
    const m = this.id.manager;
    return m.kind === 'pg_ctlcluster' ? `pg_lsclusters names the log of ${m.version}/${m.cluster}` : `the server log is ${this.id.log}`;
  }

  reloadInvocation(): Invocation {
    return this.invocation('pg_ctl', ['reload', '-D', this.id.dataDir]);
  }

  statusInvocation(): Invocation {
    return this.invocation('pg_ctl', ['status', '-D', this.id.dataDir]);
  }

  private async must(inv: Invocation, what: string, code: ExitCode): Promise<string> {
    const res = await this.runner.run(inv);
    if (res.exitCode !== 0) throw new PgscaleError(`${what}: ${describeFailure(inv, res)}`, code, this.logHint);
    return res.stdout;
  }

  /** Whether the postmaster of this data directory runs: postmaster.pid names a live process (pg_ctl's own test). */
  async status(): Promise<ServerStatus> {
    const res = await this.runner.run({ program: 'cat', args: [join(this.id.dataDir, 'postmaster.pid')], runAs: this.ownerAccount, cwd: '/' });
    const pidFile = res.exitCode === 0 ? parsePostmasterPid(res.stdout) : undefined;
    if (!pidFile) return { state: 'stopped', pid: undefined, pmStatus: undefined };
    const st = await this.runner.run(this.statusInvocation());
    // pg_ctl status: 0 running, 3 not running (a stale pid file), 4 no accessible data directory
    return st.exitCode === 0
      ? { state: 'running', pid: pidFile.pid, pmStatus: pidFile.status }
      : { state: 'stale', pid: pidFile.pid, pmStatus: pidFile.status };
  }

  async isRunning(): Promise<boolean> {
    return (await this.status()).state === 'running';
  }

  /** Starts the server as it ran (or with this start's overrides); a no-op when it already runs. */
  async start(opts: StartOptions = {}, code: ExitCode = ExitCode.FailedAfterChange): Promise<void> {
    if (await this.isRunning()) return;
    const inv = this.startInvocation(opts);
    // pg_ctl -l opens the log through the shell: its directory must exist (a state directory may not yet)
    if (inv.args.includes('-l'))
      await this.runner.run({ program: 'mkdir', args: ['-p', '-m', '0700', dirname(this.id.log)], runAs: this.ownerAccount, cwd: '/' });
    await this.must(inv, `starting the server of ${this.id.dataDir}`, code);
  }

  /**
   * Stops the server: fast shutdown within the timeout; then, only when the caller has consent,
   * immediate (crash recovery at the next start). A server that is not running is left alone.
   */
  async stop(opts: StopOptions = {}, code: ExitCode = ExitCode.FailedAfterChange): Promise<void> {
    if (!(await this.isRunning())) return;
    const res = await this.runner.run(this.stopInvocation('fast', opts.timeoutSeconds));
    if (res.exitCode === 0 || !(await this.isRunning())) return;
    if (!opts.immediateAfterTimeout) {
      throw new PgscaleError(
        `stopping the server of ${this.id.dataDir}: ${describeFailure(this.stopInvocation('fast'), res)}`,
        code,
        'a session may be stuck; stop it yourself (pg_ctl stop -m immediate after checking), then resume',
      );
    }
    await this.must(this.stopInvocation('immediate', 60), `stopping the server of ${this.id.dataDir} (immediate)`, code);
  }

  /** Stop then start with the identity's options (pg_ctl restart would reuse postmaster.opts, which pg_upgrade rewrites). */
  async restart(stop: StopOptions = {}, start: StartOptions = {}): Promise<void> {
    await this.stop(stop);
    await this.start(start);
  }

  async reload(): Promise<void> {
    await this.must(this.reloadInvocation(), `reloading the configuration of ${this.id.dataDir}`, ExitCode.FailedAfterChange);
  }

  /** pg_isready against a socket directory (default: the identity's first). */
  async ready(socketDir?: string, port?: number): Promise<boolean> {
    const host =
      socketDir ??
      this.id.socketDirs[0] ??
      (this.id.listenAddresses.split(',')[0]?.trim() === '*' ? 'localhost' : this.id.listenAddresses.split(',')[0]?.trim() || '/tmp');
    const res = await this.runner.run(this.invocation('pg_isready', ['-q', '-h', host, '-p', String(port ?? this.id.port), '-t', '5']));
    return res.exitCode === 0;
  }

  async controlData(): Promise<ControlData | undefined> {
    const res = await this.runner.run(this.invocation('pg_controldata', ['-D', this.id.dataDir]));
    return res.exitCode === 0 ? parseControlData(res.stdout) : undefined;
  }
}

/** What a running (or last) postmaster tells about how it was started. */
interface StartFacts {
  argv: string[] | undefined;
  env: Map<string, string>;
  pidFile: PostmasterPid | undefined;
  /** postmaster.pid names a live postmaster of this data directory. */
  served: boolean;
}

function readOr<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch {
    return fallback;
  }
}

/** A live postmaster's argv and environment from /proc; otherwise the postmaster.opts it left. */
function startFacts(dataDir: string): StartFacts {
  const pidFile = readOr(() => parsePostmasterPid(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8')), undefined);
  const served = pidFile !== undefined && postmasterServes(pidFile.pid, dataDir);
  if (served) {
    const argv = readOr(
      () =>
        readFileSync(`/proc/${pidFile.pid}/cmdline`, 'utf8')
          .split('\0')
          .filter((a, i, all) => a !== '' || i < all.length - 1),
      undefined,
    );
    const env = new Map(
      readOr(() => readFileSync(`/proc/${pidFile.pid}/environ`, 'utf8').split('\0'), [] as string[])
        .filter((e) => e.includes('='))
        .map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)] as [string, string]),
    );
    if (argv?.length) return { argv, env, pidFile, served };
  }
  // postmaster.opts: the program unquoted, then every argument quoted; argv keeps the program first as /proc does
  const text = readOr(() => readFileSync(join(dataDir, 'postmaster.opts'), 'utf8'), undefined);
  const program = text?.split(' "')[0]?.trim();
  return { argv: text === undefined ? undefined : [program ?? '', ...parsePostmasterOpts(text)], env: new Map(), pidFile, served };
}

/**
 * Where a running server listens and what it was started with, now (postmaster.pid and /proc):
 * part of the fingerprint of plans that restart it, so a plan made before the DBA moved the server
 * to another port or socket is refused rather than putting it back where it was. null when stopped.
 */
export function listeningNow(dataDir: string): { port: number | null; socketDir: string | null; listenAddress: string | null; options: string[] } | null {
  const facts = startFacts(dataDir);
  const pid = facts.served ? facts.pidFile : undefined;
  if (!pid) return null;
  return {
    port: pid.port ?? null,
    socketDir: pid.socketDir ?? null,
    listenAddress: pid.listenAddress ?? null,
    options: withoutDataDir((facts.argv ?? []).slice(1)),
  };
}

/**
 * The configuration directory a postmaster was started with (-D DIR, DIR not the data directory,
 * DIR/postgresql.conf present); undefined when -D named the data directory. A relative -D cannot
 * be placed (it was relative to its starter's directory): taken as the data directory.
 */
function configDirArg(dataDir: string, argv: readonly string[] | undefined): string | undefined {
  const dir = dataDirArg((argv ?? []).slice(1));
  if (!dir || !isAbsolute(dir)) return undefined;
  const real = (d: string) => readOr(() => realpathSync(d), resolve(d));
  return real(dir) !== real(dataDir) && existsSync(join(dir, 'postgresql.conf')) ? resolve(dir) : undefined;
}

/** The configuration directory a data directory's postmaster was started with (see configDirArg), if any. */
export const startedConfigDir = (dataDir: string): string | undefined => configDirArg(dataDir, startFacts(dataDir).argv);

/**
 * The regular file a data directory's running postmaster writes its standard error to (pg_ctl -l
 * FILE), from /proc; null when it is not running or writes to a terminal, pipe or /dev/null.
 */
export function runningServerLog(dataDir: string): string | null {
  const facts = startFacts(dataDir);
  const pid = facts.served ? facts.pidFile : undefined;
  if (!pid) return null;
  const target = readOr(() => readlinkSync(`/proc/${pid.pid}/fd/2`), undefined);
  if (!target || !isAbsolute(target) || target.endsWith(' (deleted)')) return null;
  return readOr(() => statSync(target).isFile(), false) ? target : null;
}

/** A pid is this data directory's postmaster: a postgres process whose cwd is the data directory. */
export function postmasterServes(pid: number, dataDir: string): boolean {
  const comm = readOr(() => readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), undefined);
  if (comm !== 'postgres' && comm !== 'postmaster') return false;
  if (readOr(() => /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')), true)) return false;
  return readOr(() => realpathSync(`/proc/${pid}/cwd`) === realpathSync(dataDir), true);
}

export interface GatherIdentityInput {
  dataDir: string;
  bindir: string;
  owner: string;
  /** The configuration as read from the files: port, unix_socket_directories, listen_addresses (last values). */
  configured: { port?: string; unix_socket_directories?: string; listen_addresses?: string };
  /** config_file when known from the layout (Debian) and not on the command line. */
  configFile: string | null;
  log: string;
}

/** The data directory's major version (PG_VERSION), undefined when unreadable. */
const majorOf = (dataDir: string) => readOr(() => Number(readFileSync(join(dataDir, 'PG_VERSION'), 'utf8').trim()), undefined);

/**
 * The identity of a local server, gathered while planning: the running postmaster's own argv and
 * environment (/proc), else postmaster.opts — captured now, because pg_upgrade rewrites
 * postmaster.opts when it starts the old server in binary-upgrade mode.
 */
export function gatherIdentity(input: GatherIdentityInput): ServerIdentity {
  const facts = startFacts(input.dataDir);
  const options = withoutDataDir((facts.argv ?? []).slice(1));
  const judged = judgeListening({ options, env: facts.env, configured: input.configured, running: facts.pidFile && facts.argv ? facts.pidFile : undefined });
  const configDir = configDirArg(input.dataDir, facts.argv);
  const configFile = optionValue(options, 'config_file') ?? (configDir ? join(configDir, 'postgresql.conf') : input.configFile);
  return {
    bindir: input.bindir,
    dataDir: input.dataDir,
    configFile,
    configDir: configDir ?? null,
    options,
    port: judged.port,
    socketDirs: judged.socketDirs,
    listenAddresses: judged.listenAddresses,
    owner: input.owner,
    log: input.log,
    origins: judged.origins,
    manager: managerFor(configFile, majorOf(input.dataDir), existsSync(PG_CTLCLUSTER)),
  };
}

/**
 * Where a server listens and why, by PostgreSQL's own precedence: the command line over the
 * environment (PGPORT) over the configuration files over the compiled-in default. A running
 * server's postmaster.pid has the effective port and first socket directory: it wins for values.
 */
export function judgeListening(f: {
  options: readonly string[];
  env: ReadonlyMap<string, string>;
  configured: GatherIdentityInput['configured'];
  running: PostmasterPid | undefined;
}): Pick<ServerIdentity, 'port' | 'socketDirs' | 'listenAddresses' | 'origins'> {
  const pick = (name: 'port' | 'unix_socket_directories' | 'listen_addresses', envName?: string): { value: string | undefined; origin: SettingOrigin } => {
    const cmd = optionValue(f.options, name);
    if (cmd !== undefined) return { value: cmd, origin: 'command line' };
    const env = envName ? f.env.get(envName) : undefined;
    if (env !== undefined && f.configured[name] === undefined) return { value: env, origin: 'environment (PGPORT)' };
    if (f.configured[name] !== undefined) return { value: f.configured[name], origin: 'configuration' };
    return { value: undefined, origin: 'default' };
  };
  const port = pick('port', 'PGPORT');
  const sockets = pick('unix_socket_directories');
  const listen = pick('listen_addresses');
  const portNumber = f.running?.port ?? Number(port.value ?? 5432);
  const socketDirs = (sockets.value ?? '/tmp')
    .split(',')
    .map((s) => s.trim().replace(/^'|'$/g, ''))
    .filter(Boolean);
  return {
    port: portNumber,
    socketDirs: socketDirs.length ? socketDirs : f.running?.socketDir ? [f.running.socketDir] : [],
    listenAddresses: (listen.value ?? 'localhost').replace(/^'|'$/g, ''),
    origins: { port: port.origin, sockets: sockets.origin, listen: listen.origin },
  };
}

/** One line for a plan: where the server listens and where each value comes from. */
export function describeListening(id: ServerIdentity): string {
  const tcp = id.listenAddresses === '' ? 'no TCP' : `TCP on ${id.listenAddresses}`;
  return `port ${id.port} (${id.origins.port}), sockets in ${id.socketDirs.join(', ') || 'none'} (${id.origins.sockets}), ${tcp} (${id.origins.listen})`;
}

/** For a plan: where the server listens (and why), the options it is started with, its config_file. */
export function describeStart(id: ServerIdentity): string {
  const managed = id.manager.kind === 'pg_ctlcluster' ? `; started and stopped with pg_ctlcluster ${id.manager.version} ${id.manager.cluster}` : '';
  const config = id.configDir ? `; -D ${id.configDir} (configuration directory)` : id.configFile ? `; config_file ${id.configFile}` : '';
  return `${describeListening(id)}; options ${id.options.join(' ') || '(none besides -D)'}${config}${managed}`;
}

/** A postmaster found running on a data directory, however it was started (pg_ctl detaches servers). */
export interface RunningPostmaster {
  pid: number;
  dataDir: string;
  argv: string[];
  /** Started with fsync=off (pg_upgrade's servers are): never to be left running. */
  unsafe: boolean;
}

/**
 * Every postmaster serving one of these data directories, from /proc (not process groups: pg_ctl
 * puts the servers it starts in their own session, outside any group pgscale tracks).
 */
export function postmastersOn(dataDirs: readonly string[]): RunningPostmaster[] {
  const real = (d: string) => readOr(() => realpathSync(d), d);
  const wanted = new Set(dataDirs.map(real));
  // a postmaster still starting has not moved into its data directory yet (its cwd is its
  // starter's): the -D it was given names the directory it is about to lock
  const named = (pm: RunningPostmaster) => {
    const dir = dataDirArg(pm.argv.slice(1));
    return (
      dir !== undefined &&
      wanted.has(
        real(
          resolve(
            readOr(() => readlinkSync(`/proc/${pm.pid}/cwd`), '/'),
            dir,
          ),
        ),
      )
    );
  };
  return runningPostmasters().filter((pm) => wanted.has(pm.dataDir) || named(pm));
}

/** Every postmaster running on this host (a postgres whose parent is not one), with its data directory (its cwd). */
export function runningPostmasters(): RunningPostmaster[] {
  const out: RunningPostmaster[] = [];
  for (const name of readOr(() => readdirSync('/proc'), [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const stat = readOr(() => readFileSync(`/proc/${pid}/stat`, 'utf8'), '');
    const m = /^\d+ \((.*)\) (\S) (\d+)/.exec(stat);
    if (!m || (m[1] !== 'postgres' && m[1] !== 'postmaster') || m[2] === 'Z') continue;
    // a postmaster's parent is not a postgres (its children's parent is the postmaster)
    const parentComm = readOr(() => readFileSync(`/proc/${m[3]}/comm`, 'utf8').trim(), '');
    if (parentComm === 'postgres' || parentComm === 'postmaster') continue;
    const cwd = readOr(() => readlinkSync(`/proc/${pid}/cwd`), '');
    if (!cwd) continue;
    const argv = readOr(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean), [] as string[]);
    out.push({ pid, dataDir: cwd, argv, unsafe: optionValue(argv.slice(1), 'fsync') === 'off' || optionValue(argv.slice(1), 'fsync') === 'false' });
  }
  return out;
}

/** A zombie (exited, not yet reaped) counts as gone. */
export const processAlive = (pid: number) => readOr(() => !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')), false);

/**
 * Stops postmasters left behind by a killed run: SIGINT (fast shutdown), then SIGQUIT (immediate)
 * after the timeout. Returns what was found, for the journal and the message.
 */
export async function stopLeftoverPostmasters(dataDirs: readonly string[], timeoutMs = 60_000): Promise<RunningPostmaster[]> {
  const found = postmastersOn(dataDirs);
  const signal = (pid: number, sig: NodeJS.Signals) => readOr(() => process.kill(pid, sig), undefined);
  for (const pm of found) signal(pm.pid, 'SIGINT');
  const deadline = Date.now() + timeoutMs;
  while (found.some((pm) => processAlive(pm.pid)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const pm of found.filter((p) => processAlive(p.pid))) signal(pm.pid, 'SIGQUIT');
  while (found.some((pm) => processAlive(pm.pid)) && Date.now() < deadline + 10_000) await new Promise((r) => setTimeout(r, 100));
  return found;
}

/** The options a data directory's postmaster was started with (its live argv, else postmaster.opts), -D removed. */
export function startedOptions(dataDir: string): string[] {
  return withoutDataDir((startFacts(dataDir).argv ?? []).slice(1));
}

/**
 * The configuration file a data directory's server reads: config_file on the command line it runs
 * (or last ran) with, else `layoutConfigFile`, where the packaging keeps it. detect, tune and wal
 * move all ask here.
 */
export function startedConfigFile(dataDir: string, layoutConfigFile: string): string {
  return optionValue(startedOptions(dataDir), 'config_file') ?? layoutConfigFile;
}

/** The last value of every setting in the configuration files: postgresql.conf with its includes, then postgresql.auto.conf. */
function configuredSettings(configFile: string, dataDir: string): Map<string, string> {
  try {
    const auto = join(dataDir, 'postgresql.auto.conf');
    return new Map([...lastValues([...readConfigTree(configFile), ...(existsSync(auto) ? readConfigTree(auto) : [])])].map(([k, v]) => [k, v.value]));
  } catch {
    return new Map(); // unreadable files: the command line and postmaster.pid still tell
  }
}

/** Why a server has no log (identity.log ''), for the check that refuses to start it. */
export const noServerLog = (id: ServerIdentity): string =>
  `no place for the server log: ${id.owner} cannot write beside ${id.dataDir}, logging_collector is off, and pgscale's state directory is not ${id.owner}'s — turn logging_collector on, let ${id.owner} write ${dirname(id.dataDir)}, or run pgscale as ${id.owner}`;

/** A cluster on this host as planning knows it. */
export interface LocalCluster {
  dataDir: string;
  bindir: string;
  owner: OsUser;
  /** Where the layout puts postgresql.conf (Debian: /etc/postgresql/…): a config_file on the command line wins. */
  configFile: string;
  /** pgscale's state directory: the server log's last resort. */
  stateDir: string;
}

/**
 * A local cluster's whole identity, gathered when a run is planned: config_file from its command
 * line (else the layout's), port, sockets and listen addresses from the command line, PGPORT or the
 * files it reads (includes, postgresql.auto.conf), and a server log outside the data directory
 * — '' when the owner can write none: the checks of operations that start the server refuse that
 * (noServerLog says why).
 */
export async function gatherClusterIdentity(c: LocalCluster, runner: Runner): Promise<ServerIdentity> {
  const options = startedOptions(c.dataDir);
  const configFile = startedConfigFile(c.dataDir, c.configFile);
  const files = configuredSettings(configFile, c.dataDir);
  const setting = (name: string) => optionValue(options, name) ?? files.get(name);
  const log = await serverLogPath(runner, { dataDir: c.dataDir, owner: c.owner, setting, stateDir: c.stateDir, currentLog: runningServerLog(c.dataDir) });
  return gatherIdentity({
    dataDir: c.dataDir,
    bindir: c.bindir,
    owner: c.owner.name,
    configured: { port: files.get('port'), unix_socket_directories: files.get('unix_socket_directories'), listen_addresses: files.get('listen_addresses') },
    configFile: configFile === join(c.dataDir, 'postgresql.conf') ? null : configFile,
    log: log?.path ?? '',
  });
}
