/**
 * What pgscale knows about one cluster: read from the data directory (PG_VERSION, postmaster.pid,
 * pg_wal, pg_tblspc, config files), pg_controldata, and SQL when the server runs.
 */
import { constants, lstatSync, readdirSync } from 'node:fs';
import { access, lstat, opendir, readFile, readlink, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditSink } from '../audit.js';
import { lastValues, readConfigTree } from '../config/parse.js';
import type { ConnectionSettings } from '../connection.js';
import { badInput } from '../errors.js';
import { ownerOf } from '../osUser.js';
import { isRoot, type OsUser, type Runner } from '../runner.js';
import { PgDb, PsqlDb, statements, type Db, type ServerFacts } from '../sql.js';
import { parseControlData, type ControlData } from './controlData.js';
import type { Installation } from './installations.js';
import type { RhelClusterLayout } from './rhel.js';
import { parsePostmasterPid, type PostmasterPid } from './postmasterPid.js';
import { bindirOfPostmaster, startedConfigDir, startedConfigFile } from '../server/postgres.js';

export type ClusterState = 'running' | 'stopped' | 'stale';

export interface DebianClusterLayout {
  kind: 'debian';
  version: number;
  name: string;
  confDir: string;
  /** start.conf: auto, manual or disabled. */
  startMode: string | undefined;
}

/** How the host's packaging lays the cluster out; plain: a data directory holding its own configuration. */
export type ClusterLayout = DebianClusterLayout | RhelClusterLayout;

export interface Tablespace {
  oid: number;
  name: string | undefined;
  location: string;
}

export interface ClusterInfo {
  dataDir: string;
  /** How it was found: flag, PGDATA, debian, rhel, postmaster. */
  foundBy: string[];
  layout: ClusterLayout | { kind: 'plain' };
  configFile: string;
  owner: string;
  major: number;
  /** Full server version when the server answered SQL. */
  serverVersion: string | undefined;
  bindir: string | undefined;
  state: ClusterState;
  pid: number | undefined;
  port: number;
  socketDir: string | undefined;
  role: 'primary' | 'standby';
  checksums: boolean | undefined;
  encoding: string | undefined;
  lcCollate: string | undefined;
  lcCtype: string | undefined;
  localeProvider: string | undefined;
  sizeBytes: number;
  sizeSource: 'pg_database_size' | 'filesystem';
  systemIdentifier: string | undefined;
  controlState: string | undefined;
  wal: { path: string; symlink: boolean };
  tablespaces: Tablespace[];
  /** Facts that could not be read, and why. */
  notes: string[];
}

export interface InspectContext {
  runner: Runner;
  installations: readonly Installation[];
  audit?: AuditSink;
  /** Connection overrides (--dsn, PG*); the socket and port come from postmaster.pid otherwise. */
  connection?: ConnectionSettings;
  layout?: ClusterLayout;
  foundBy?: string[];
}

/** Fails with a clear bad-input error unless `dir` is a readable PostgreSQL data directory. */
export async function assertDataDirectory(dir: string): Promise<void> {
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw badInput(
        `data directory ${dir} does not exist`,
        'pass --pgdata with the directory holding PG_VERSION (`pgscale detect` lists the clusters it finds)',
      );
    if (code === 'EACCES') throw badInput(`data directory ${dir} is not readable by this user`, 'run pgscale as the cluster owner or as root');
    throw badInput(
      `cannot read data directory ${dir}: ${code === 'EACCES' ? 'permission denied' : code}`,
      "run pgscale as root or as the data directory's owner",
    );
  }
  if (!st.isDirectory()) throw badInput(`${dir} is not a directory`, 'pass --pgdata with the data directory (the one holding PG_VERSION)');
  try {
    await access(dir, constants.R_OK | constants.X_OK);
  } catch {
    throw badInput(`data directory ${dir} is not readable by this user`, 'run pgscale as the cluster owner or as root');
  }
  try {
    await access(join(dir, 'PG_VERSION'), constants.R_OK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EACCES')
      throw badInput(`data directory ${dir} is not readable by this user`, 'run pgscale as the cluster owner or as root');
    throw badInput(`${dir} is not a PostgreSQL data directory (no PG_VERSION file)`, 'point --pgdata at the directory initdb created');
  }
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** A pid is our postmaster only if the process exists and is a postgres whose cwd is the data dir. */
async function postmasterAlive(pidFile: PostmasterPid, dataDir: string): Promise<boolean> {
  try {
    process.kill(pidFile.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const comm = (await readText(`/proc/${pidFile.pid}/comm`))?.trim();
  if (comm !== undefined && comm !== 'postgres' && comm !== 'postmaster') return false;
  try {
    return (await realpath(`/proc/${pidFile.pid}/cwd`)) === (await realpath(dataDir));
  } catch {
    return comm !== undefined; // cwd unreadable (another user): trust the name
  }
}

/** Bytes of the files under dir. Synchronous on purpose: a promise per file costs far more CPU than the lstat. */
function directorySize(dir: string): number {
  let total = 0;
  const walk = (d: string): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.isFile()) {
        try {
          total += lstatSync(p).size;
        } catch {
          /* removed meanwhile */
        }
      }
    }
  };
  walk(dir);
  return total;
}

async function readTablespaces(dataDir: string): Promise<Tablespace[]> {
  const out: Tablespace[] = [];
  let handle;
  try {
    handle = await opendir(join(dataDir, 'pg_tblspc'));
  } catch {
    return out;
  }
  for await (const entry of handle) {
    if (!/^\d+$/.test(entry.name)) continue;
    const link = join(dataDir, 'pg_tblspc', entry.name);
    const location = await readlink(link).catch(() => link); // 15+ may hold in-place tablespaces as directories
    out.push({ oid: Number(entry.name), name: undefined, location });
  }
  return out.sort((a, b) => a.oid - b.oid);
}

async function controlData(ctx: InspectContext, bindir: string | undefined, dataDir: string, owner: OsUser, notes: string[]): Promise<ControlData | undefined> {
  if (!bindir) {
    notes.push('no installation of this major version found: pg_controldata not run (give --bindir)');
    return undefined;
  }
  const res = await ctx.runner.run({ program: join(bindir, 'pg_controldata'), args: ['-D', dataDir], env: { LC_ALL: 'C' }, runAs: owner });
  if (res.exitCode !== 0) {
    notes.push(`pg_controldata failed: ${res.stderr.trim()}`);
    return undefined;
  }
  return parseControlData(res.stdout);
}

function connectToRunning(ctx: InspectContext, bindir: string | undefined, pid: PostmasterPid, owner: OsUser): Promise<Db> {
  const socket = pid.socketDir?.split(',')[0]?.trim();
  const host = ctx.connection?.host ?? socket ?? (pid.listenAddress === '*' ? 'localhost' : pid.listenAddress);
  const settings: ConnectionSettings = { ...ctx.connection, host, port: ctx.connection?.port ?? pid.port, database: ctx.connection?.database ?? 'postgres' };
  // root on the database host talks as the owner through the socket, as `sudo -u postgres psql` would
  if (isRoot() && bindir && host?.startsWith('/') && !ctx.connection?.user && !ctx.connection?.password) {
    return Promise.resolve(new PsqlDb(ctx.runner, join(bindir, 'psql'), { ...settings, user: owner.name }, owner, ctx.audit));
  }
  return PgDb.connect({ ...settings, user: settings.user ?? owner.name }, ctx.audit);
}

/** What a running server tells over SQL; undefined (and a note) when it does not answer. */
async function sqlFacts(
  ctx: InspectContext,
  bindir: string | undefined,
  pidFile: PostmasterPid,
  owner: OsUser,
  notes: string[],
): Promise<{ facts: ServerFacts; tablespaceNames: Map<string, string> } | undefined> {
  let db: Db | undefined;
  try {
    db = await connectToRunning(ctx, bindir, pidFile, owner);
    const [facts] = await db.query(statements.serverFacts());
    if (!facts) return undefined;
    const tablespaceNames = new Map((await db.query(statements.tablespaces())).map((t) => [t.location, t.name]));
    return { facts, tablespaceNames };
  } catch (e) {
    notes.push(`SQL facts not read: ${(e as Error).message}`);
    return undefined;
  } finally {
    await db?.close();
  }
}

export async function inspectCluster(dataDirArg: string, ctx: InspectContext): Promise<ClusterInfo> {
  await assertDataDirectory(dataDirArg);
  const dataDir = await realpath(dataDirArg);
  const notes: string[] = [];
  const major = Number((await readText(join(dataDir, 'PG_VERSION')))?.trim());
  if (!Number.isInteger(major) || major < 9)
    throw badInput(
      `${dataDir}/PG_VERSION does not hold a major version`,
      "this is not an intact data directory: pass --pgdata with the cluster's data directory",
    );
  const owner = ownerOf(dataDir);
  const pidText = await readText(join(dataDir, 'postmaster.pid'));
  const pidFile = pidText === undefined ? undefined : parsePostmasterPid(pidText);
  let state: ClusterState = 'stopped';
  if (pidFile) state = (await postmasterAlive(pidFile, dataDir)) ? 'running' : 'stale';
  if (state === 'stale') notes.push(`postmaster.pid names pid ${pidFile!.pid}, which is not a running postmaster for this data directory: the file is stale`);
  // the binaries that run the server, wherever they are installed; else an installation of its major
  const bindir = (state === 'running' ? bindirOfPostmaster(pidFile?.pid) : undefined) ?? ctx.installations.find((i) => i.major === major)?.bindir;

  // a server started with -D CONFDIR reads CONFDIR/postgresql.conf; else the layout's place
  const configDir = startedConfigDir(dataDir);
  const layoutConfigFile = configDir
    ? join(configDir, 'postgresql.conf')
    : ctx.layout?.kind === 'debian'
      ? join(ctx.layout.confDir, 'postgresql.conf')
      : join(dataDir, 'postgresql.conf');
  // what a running server answers wins (config_file is absolute there); else its command line, else the above
  const sql = state === 'running' && pidFile ? await sqlFacts(ctx, bindir, pidFile, owner, notes) : undefined;
  const configFile = sql?.facts.config_file ?? startedConfigFile(dataDir, layoutConfigFile);
  let settings = new Map<string, string>();
  try {
    const entries = readConfigTree(configFile);
    const auto = join(dataDir, 'postgresql.auto.conf');
    const autoEntries = (await readText(auto)) === undefined ? [] : readConfigTree(auto);
    settings = new Map([...lastValues([...entries, ...autoEntries])].map(([k, v]) => [k, v.value]));
  } catch (e) {
    notes.push(`configuration not read: ${(e as Error).message}`);
  }

  const configuredPort = Number(settings.get('port') ?? 5432);

  const control = await controlData(ctx, bindir, dataDir, owner, notes);
  const standbySignal = (await readText(join(dataDir, 'standby.signal'))) !== undefined || (await readText(join(dataDir, 'recovery.conf'))) !== undefined;

  const walPath = join(dataDir, major >= 10 ? 'pg_wal' : 'pg_xlog');
  const walIsLink = (await lstat(walPath).catch(() => undefined))?.isSymbolicLink() ?? false;
  const info: ClusterInfo = {
    dataDir,
    foundBy: ctx.foundBy ?? [],
    layout: ctx.layout ?? { kind: 'plain' },
    configFile,
    owner: owner.name,
    major,
    serverVersion: undefined,
    bindir,
    state,
    pid: state === 'running' ? pidFile?.pid : undefined,
    port: state === 'running' && pidFile?.port ? pidFile.port : configuredPort,
    socketDir: state === 'running' ? pidFile?.socketDir : settings.get('unix_socket_directories')?.split(',')[0]?.trim(),
    role: standbySignal || control?.state === 'in archive recovery' ? 'standby' : 'primary',
    checksums: control ? control.checksumVersion > 0 : undefined,
    encoding: undefined,
    lcCollate: undefined,
    lcCtype: undefined,
    localeProvider: undefined,
    sizeBytes: 0,
    sizeSource: 'filesystem',
    systemIdentifier: control?.systemIdentifier,
    controlState: control?.state,
    wal: { path: walIsLink ? await realpath(walPath) : walPath, symlink: walIsLink },
    tablespaces: await readTablespaces(dataDir),
    notes,
  };

  if (sql) {
    const facts = sql.facts;
    info.serverVersion = facts.server_version;
    info.role = facts.in_recovery ? 'standby' : 'primary';
    info.checksums = facts.data_checksums === 'on';
    info.encoding = facts.server_encoding;
    info.lcCollate = facts.lc_collate;
    info.lcCtype = facts.lc_ctype;
    info.localeProvider = { c: 'libc', i: 'icu', b: 'builtin' }[facts.locale_provider] ?? facts.locale_provider;
    info.sizeBytes = Number(facts.total_bytes);
    info.sizeSource = 'pg_database_size';
    for (const t of info.tablespaces) t.name = sql.tablespaceNames.get(t.location);
  } else if (state !== 'running') {
    notes.push('server not running: encoding and locale are read only from a running server');
  }
  if (info.sizeSource === 'filesystem') info.sizeBytes = directorySize(dataDir);
  return info;
}
