/**
 * Deciding what `pgscale tune` does, before anything is planned or asked: the flags checked, the
 * system profile (detected, or the overrides), the cluster's effective configuration, the
 * recommendations and what they change; then the parameters of the `tune` (or `tune-restore`)
 * operation for the areas the DBA accepted.
 */
import { existsSync, readFileSync, readdirSync, realpathSync, statfsSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import type { AuditSink } from '../audit.js';
import { openDb, resolveTarget, type ClusterAccess } from '../cluster/access.js';
import { findInstallations } from '../cluster/installations.js';
import type { ClusterInfo } from '../cluster/inspect.js';
import { parseConfigText } from '../config/parse.js';
import { badInput, refused } from '../errors.js';
import { BUILD_OPTIONAL_VALUES } from '../gucCatalog/buildOptional.js';
import { KNOWN_MAJORS, findSetting, loadCatalog, needsRestart } from '../gucCatalog/catalog.js';
import type { BuildFeature, GucCatalog } from '../gucCatalog/types.js';
import { KiB, MiB } from '../gucCatalog/units.js';
import { formatBytes } from '../format.js';
import { isCloseEnough, parseSetting, type GucValue } from '../gucCatalog/values.js';
import { detectCompute } from '../host/compute.js';
import type { HostRoot } from '../host/hostRoot.js';
import { detectStorage } from '../host/storage.js';
import { userByName } from '../osUser.js';
import { listRuns } from '../pipeline/journal.js';
import { readSystemIdentifier } from '../pipeline/plan.js';
import type { Runner, OsUser } from '../runner.js';
import { gatherClusterIdentity, type ServerIdentity } from '../server/postgres.js';
import { statements } from '../sql.js';
import { allChanges, planChanges, precedenceNotes, type AreaChanges, type SettingChange, type TuneTarget } from './diff.js';
import { applyEdits, readLastThroughIncludeDir, sha256, type FileEdit } from './edits.js';
import { effectiveSetting, overlayFiles, readEffectiveConfig, realFiles, type EffectiveConfig, type ServerSetting } from './effective.js';
import { parseSizeFlag, parseWalRateFlag, storageClassFromFlag, workloadFromFlag } from './flags.js';
import { measureCluster } from './measure.js';
import { MEASURED_SETTINGS } from './recommend/measured.js';
import { recommend } from './recommend.js';
import { render } from './render.js';
import { fileState, postgresCArgs, readBackupManifest, type ExpectedSetting, type PlannedFile, type TuneParams } from './steps.js';
import type { Recommendation, RecommendationSet, StorageClass, SystemProfile, TuneArea, WorkloadProfile } from './types.js';
import { TUNE_AREAS } from './types.js';

// ---------------------------------------------------------------- flags

/** --memory: a positive size with a unit ("64GB", "512MB", "1.5TB"; binary units, as PostgreSQL counts). */
export function parseMemoryFlag(text: string): number {
  const bytes = parseSizeFlag('--memory', 'memory', text, '', '--memory 64GB');
  if (bytes < 256 * MiB) throw badInput(`--memory ${text}: PostgreSQL needs at least 256MB to be tuned for`, 'pass --memory 256MB or more');
  return bytes;
}

export interface TuneFlags {
  profile?: string;
  memory?: string;
  cpus?: number;
  storage?: string;
  maxConnections?: number;
  pgVersion?: string;
  /** --wal-rate: peak WAL written per second, e.g. 20MB/s. */
  walRate?: string;
  /** false (--no-measure): no WAL-rate sample, pg_test_fsync or read probe. */
  measure?: boolean;
}

export interface TuneInputs {
  workload: WorkloadProfile;
  memoryBytes?: number;
  cpus?: number;
  storage?: StorageClass;
  maxConnections?: number;
  pgMajor?: number;
  walWriteBytesPerSecond?: number;
  measure?: boolean;
}

/** Every flag checked before anything is read: bad input is refused with nothing touched. */
export function checkTuneFlags(f: TuneFlags): TuneInputs {
  const workload = workloadFromFlag(f.profile ?? 'mixed');
  const memoryBytes = f.memory === undefined ? undefined : parseMemoryFlag(f.memory);
  if (f.cpus !== undefined && !(Number.isInteger(f.cpus) && f.cpus >= 1)) throw badInput(`--cpus ${f.cpus}: a whole number of at least 1`);
  const storage = f.storage === undefined ? undefined : storageClassFromFlag(f.storage);
  if (f.maxConnections !== undefined && !(Number.isInteger(f.maxConnections) && f.maxConnections >= 1))
    throw badInput(`--max-connections ${f.maxConnections}: a whole number of at least 1`);
  let pgMajor: number | undefined;
  if (f.pgVersion !== undefined) {
    if (!/^\s*\d+\s*$/.test(f.pgVersion))
      throw badInput(`unknown --pg-version ${f.pgVersion}; known: ${KNOWN_MAJORS.join(', ')}`, 'pass a major version, e.g. --pg-version 17');
    pgMajor = loadCatalog(f.pgVersion).major;
  }
  const walWriteBytesPerSecond = f.walRate === undefined ? undefined : parseWalRateFlag(f.walRate);
  return {
    workload,
    memoryBytes,
    cpus: f.cpus,
    storage,
    maxConnections: f.maxConnections,
    pgMajor,
    ...(walWriteBytesPerSecond !== undefined ? { walWriteBytesPerSecond } : {}),
    ...(f.measure === false ? { measure: false } : {}),
  };
}

// ---------------------------------------------------------------- the cluster

export interface TuneCluster {
  info: ClusterInfo | undefined;
  access: ClusterAccess;
  lockKey: string;
  major: number;
  /** Local data directory; null for a server reached only over the network. */
  dataDir: string | null;
  configFile: string;
  owner: OsUser | null;
  /** postgres and pg_ctl of the cluster's major version, when installed here. */
  serverBindir: string | null;
  running: boolean;
  /** The local server as it runs (options, port, sockets, listen addresses, config file, log): restarts repeat it. */
  identity: ServerIdentity | null;
  server: ServerSetting[] | undefined;
  /** ALTER SYSTEM may be used (running, superuser, allow_alter_system). */
  alterSystem: boolean;
  /** How the data directory was found when only a connection was given: the plan says so. */
  dataDirSource: string | null;
  notes: string[];
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1']);

/**
 * The data directory of a server reached over a local connection (a socket, a loopback address),
 * when this host holds it: the server names it (SHOW data_directory, for a superuser or
 * pg_read_all_settings), and its pg_control must carry the server's system identifier.
 */
export async function localDataDirectory(
  access: ClusterAccess,
  runner: Runner,
  audit?: AuditSink,
): Promise<{ dataDir: string; source: string } | { dataDir: null; reason: string }> {
  const host = access.host ?? process.env.PGHOST ?? '/';
  if (!host.startsWith('/') && !LOOPBACK.has(host)) return { dataDir: null, reason: `${host} is not this host` };
  let row: { data_directory: string; system_identifier: string } | undefined;
  try {
    const db = await openDb(access, runner, audit);
    try {
      [row] = await db.query(statements.dataDirectory());
    } finally {
      await db.close();
    }
  } catch (e) {
    return { dataDir: null, reason: `the server did not name its data directory (${(e as Error).message})` };
  }
  if (!row) return { dataDir: null, reason: 'the server did not name its data directory' };
  const onDisk = readSystemIdentifier(row.data_directory);
  if (onDisk === undefined) return { dataDir: null, reason: `its data directory ${row.data_directory} is not readable on this host` };
  if (onDisk !== row.system_identifier)
    return {
      dataDir: null,
      reason: `${row.data_directory} on this host is another cluster (system identifier ${onDisk}, the server's is ${row.system_identifier})`,
    };
  return {
    dataDir: row.data_directory,
    source: `${row.data_directory}, as the server names it (SHOW data_directory), whose pg_control carries the server's system identifier ${onDisk}`,
  };
}

export async function readTuneCluster(opts: {
  pgdata?: string;
  bindir?: string;
  dsn?: string;
  runner: Runner;
  audit?: AuditSink;
  stateDir: string;
}): Promise<TuneCluster> {
  let resolved = await resolveTarget({ pgdata: opts.pgdata, bindir: opts.bindir, dsn: opts.dsn, runner: opts.runner, audit: opts.audit });
  const notes: string[] = [];
  let dataDirSource: string | null = null;
  if (!resolved.cluster) {
    // a connection alone: on the database host, the server's own data directory makes the files reachable
    const local = await localDataDirectory(resolved.access, opts.runner, opts.audit);
    if (local.dataDir !== null) {
      resolved = await resolveTarget({ pgdata: local.dataDir, bindir: opts.bindir, dsn: opts.dsn, runner: opts.runner, audit: opts.audit });
      dataDirSource = local.source;
      notes.push(`data directory ${local.source}`);
    } else notes.push(`no local data directory: ${local.reason}`);
  }
  const info = resolved.cluster;
  let server: ServerSetting[] | undefined;
  let alterSystem = false;
  const running = info ? info.state === 'running' : true;
  if (running) {
    try {
      const db = await openDb(resolved.access, opts.runner, opts.audit);
      try {
        server = await db.query(statements.allSettings());
        const [a] = await db.query(statements.alterSystemAllowed());
        alterSystem = Boolean(a?.superuser && a.allowed);
        for (const r of await db.query(statements.dbRoleSettings())) {
          for (const s of r.settings ?? []) {
            notes.push(
              `${s.split('=')[0]} is also set for ${r.role ? `role ${r.role}` : 'every role'}${r.database ? ` in database ${r.database}` : ''} (ALTER ${r.role ? 'ROLE' : 'DATABASE'} … SET), which wins over the files for those sessions`,
            );
          }
        }
      } finally {
        await db.close();
      }
    } catch (e) {
      if (!info) throw e;
      notes.push(`pg_settings not read (${(e as Error).message}): the effective configuration comes from the files alone`);
    }
  }
  const versionNum = server?.find((s) => s.name === 'server_version_num')?.setting;
  const major = info?.major ?? (versionNum ? Math.floor(Number(versionNum) / 10000) : NaN);
  if (!KNOWN_MAJORS.includes(major)) throw badInput(`PostgreSQL ${major} has no settings catalog in pgscale; known: ${KNOWN_MAJORS.join(', ')}`);
  let configFile = '';
  // a stopped server's config_file comes from the command line it last ran with
  if (info) configFile = server?.find((s) => s.name === 'config_file')?.setting ?? info.configFile;
  const owner = info ? (userByName(info.owner) ?? null) : null;
  let serverBindir: string | null = info?.bindir ?? null;
  if (opts.bindir && info && !serverBindir) {
    const inst = (await findInstallations(opts.runner, [opts.bindir])).find((i) => i.bindir === opts.bindir);
    if (inst?.major === info.major) serverBindir = opts.bindir;
  }
  const identity =
    info && owner && serverBindir
      ? await gatherClusterIdentity({ dataDir: info.dataDir, bindir: serverBindir, owner, configFile, stateDir: opts.stateDir }, opts.runner)
      : null;
  return {
    info,
    access: resolved.access,
    lockKey: resolved.lockKey,
    major,
    dataDir: info?.dataDir ?? null,
    configFile,
    owner,
    serverBindir,
    running,
    identity,
    server,
    alterSystem,
    dataDirSource,
    notes,
  };
}

// ---------------------------------------------------------------- the system profile

/** Background workers that common extensions register (they share max_worker_processes with parallel query). */
const EXTENSION_WORKERS: Record<string, number> = {
  timescaledb: 8,
  pg_cron: 1,
  pg_partman_bgw: 1,
  pglogical: 2,
  citus: 2,
  pg_squeeze: 1,
  pg_prewarm: 1,
  pg_wait_sampling: 1,
};

export function extensionWorkers(sharedPreloadLibraries: string | undefined): { count: number; libraries: string[] } {
  const libs = (sharedPreloadLibraries ?? '')
    .split(',')
    .map((l) =>
      l
        .trim()
        .replace(/^['"]|['"]$/g, '')
        .replace(/^.*\//, '')
        .replace(/\.so$/, ''),
    )
    .filter(Boolean);
  return { count: libs.reduce((a, l) => a + (EXTENSION_WORKERS[l] ?? 0), 0), libraries: libs.filter((l) => EXTENSION_WORKERS[l] !== undefined) };
}

/** Which build-optional libraries the server has: `postgres -C` accepts their enum values only when built in. */
async function probeBuildFeatures(runner: Runner, c: TuneCluster): Promise<BuildFeature[] | undefined> {
  if (!c.dataDir || !c.serverBindir || !c.owner) return undefined;
  const features: BuildFeature[] = [];
  const byFeature = new Map<BuildFeature, (typeof BUILD_OPTIONAL_VALUES)[number]>();
  for (const o of BUILD_OPTIONAL_VALUES) if (c.major >= o.since && !byFeature.has(o.feature)) byFeature.set(o.feature, o);
  for (const [feature, o] of byFeature) {
    const args = [...postgresCArgs({ dataDir: c.dataDir, configFile: c.configFile }, o.setting), '-c', `${o.setting}=${o.value}`];
    const res = await runner.run({ program: join(c.serverBindir, 'postgres'), args, runAs: c.owner, cwd: '/' });
    if (res.exitCode === 0 && res.stdout.trim() === o.value) features.push(feature);
  }
  return features;
}

/** pg_config --configure of an installation of that major, for a config planned without a cluster. */
async function installedBuildFeatures(runner: Runner, major: number): Promise<BuildFeature[] | undefined> {
  let installations;
  try {
    installations = await findInstallations(runner);
  } catch {
    return undefined;
  }
  for (const inst of installations.filter((i) => i.major === major)) {
    const pgConfig = join(inst.bindir, 'pg_config');
    if (!existsSync(pgConfig)) continue;
    const res = await runner.run({ program: pgConfig, args: ['--configure'] });
    if (res.exitCode !== 0) continue;
    return (['lz4', 'zstd', 'liburing'] as const).filter((f) => res.stdout.includes(`--with-${f}`));
  }
  return undefined;
}

async function hugePageBytes(hostRoot: HostRoot): Promise<number | undefined> {
  const m = /^Hugepagesize:\s+(\d+)\s*kB/m.exec((await hostRoot.read('/proc/meminfo')) ?? '');
  return m ? Number(m[1]) * KiB : undefined;
}

export interface ProfileResult {
  profile: SystemProfile;
  notes: string[];
}

export async function systemProfile(
  inputs: TuneInputs,
  ctx: { runner: Runner; hostRoot: HostRoot; cluster?: TuneCluster; effective?: EffectiveConfig; catalog: GucCatalog },
): Promise<ProfileResult> {
  const notes: string[] = [];
  const c = ctx.cluster;
  let memoryBytes = inputs.memoryBytes;
  let memoryIsCgroupLimit = false;
  let vcpus = inputs.cpus;
  if (memoryBytes === undefined || vcpus === undefined) {
    const compute = await detectCompute(ctx.hostRoot);
    if (memoryBytes === undefined) {
      memoryBytes = compute.effective.memoryBytes;
      memoryIsCgroupLimit = compute.limits.memory !== null && compute.limits.memory.bytes <= compute.host.memoryBytes;
      notes.push(
        `memory ${formatBytes(memoryBytes)}: ${memoryIsCgroupLimit ? `the cgroup limit (${compute.limits.memory!.source})` : 'detected RAM'} (--memory overrides)`,
      );
    }
    if (vcpus === undefined) {
      vcpus = compute.effective.cpus;
      notes.push(`${vcpus} vCPUs detected${compute.limits.cpuQuota || compute.limits.cpuset ? ' (cgroup limit)' : ''} (--cpus overrides)`);
    }
  }
  let storage = inputs.storage;
  const storagePath = c?.dataDir ?? '/';
  if (!storage) {
    try {
      const s = await detectStorage(ctx.hostRoot, storagePath);
      storage = s.storageClass;
      notes.push(`storage ${storage} under ${storagePath} (${s.confidence} confidence; --storage overrides)`);
    } catch (e) {
      storage = 'unknown';
      notes.push(`storage under ${storagePath} not detected (${(e as Error).message}); pass --storage`);
    }
  }
  if (c && !c.dataDir && (inputs.memoryBytes === undefined || inputs.cpus === undefined || inputs.storage === undefined)) {
    notes.push("the server was reached over the network: the hardware detected is this host's; pass --memory, --cpus and --storage for the database host");
  }
  let walVolumeBytes: number | undefined;
  if (c?.info) {
    try {
      const fs = statfsSync(realpathSync(c.info.wal.path));
      walVolumeBytes = fs.blocks * fs.bsize;
    } catch {
      /* unknown: max_wal_size from the workload */
    }
  }
  const pgMajor = c?.major ?? inputs.pgMajor!;
  let buildFeatures = c ? await probeBuildFeatures(ctx.runner, c) : await installedBuildFeatures(ctx.runner, pgMajor);
  if (!buildFeatures) {
    // PGDG packages are built with lz4 and zstd, and from 18 on with liburing
    const pgdg: BuildFeature[] = pgMajor >= 18 ? ['lz4', 'zstd', 'liburing'] : ['lz4', 'zstd'];
    buildFeatures = c ? [] : pgdg;
    notes.push(
      c
        ? 'build features not probed (no local server programs): lz4, zstd and io_uring are not assumed'
        : `no PostgreSQL ${pgMajor} installed here to ask: assuming a PGDG build (${pgdg.join(', ')})`,
    );
  } else notes.push(`build: ${buildFeatures.length ? buildFeatures.join(', ') : 'no lz4, zstd or io_uring'}`);
  const preload = ctx.effective ? effectiveSetting(ctx.effective, ctx.catalog, 'shared_preload_libraries')?.text : undefined;
  const ext = extensionWorkers(preload);
  if (ext.libraries.length) notes.push(`background workers reserved for ${ext.libraries.join(', ')}: ${ext.count}`);
  let maxConnections = inputs.maxConnections;
  if (maxConnections === undefined && ctx.effective) {
    const cur = effectiveSetting(ctx.effective, ctx.catalog, 'max_connections')?.value;
    if (cur?.kind === 'number') {
      maxConnections = cur.value;
      notes.push(`max_connections ${maxConnections} kept: how many clients connect is the application's decision (--max-connections changes it)`);
    }
  }
  let walRate = inputs.walWriteBytesPerSecond !== undefined ? { bytesPerSecond: inputs.walWriteBytesPerSecond, source: 'given with --wal-rate' } : undefined;
  let measured: Awaited<ReturnType<typeof measureCluster>> | undefined;
  if (c && inputs.measure !== false) {
    measured = await measureCluster({
      runner: ctx.runner,
      access: c.access,
      running: c.running,
      dataDir: c.dataDir,
      walDir: c.info?.wal.path ?? null,
      owner: c.owner,
      bindir: c.serverBindir,
      measureWalRate: walRate === undefined,
      probeReads: inputs.storage === undefined,
    });
    walRate ??= measured.walRate;
    notes.push(...measured.notes);
  } else if (c) notes.push('nothing measured (--no-measure): storage from its class, max_wal_size from the profile unless --wal-rate');
  const hp = await hugePageBytes(ctx.hostRoot);
  const storageMeasured = measured && (measured.storage.fsync || measured.storage.randomRead) ? measured.storage : undefined;
  // what the cluster has now: a figure near a class boundary keeps it (recommend/measured.ts)
  const currentMeasured: Partial<Record<string, GucValue>> = {};
  if (storageMeasured && ctx.effective)
    for (const name of MEASURED_SETTINGS) {
      const value = effectiveSetting(ctx.effective, ctx.catalog, name)?.value;
      if (value) currentMeasured[name] = value;
    }
  return {
    profile: {
      memoryBytes,
      memoryIsCgroupLimit,
      vcpus,
      storage,
      ...(walVolumeBytes !== undefined ? { walVolumeBytes } : {}),
      ...(walRate ? { walWriteBytesPerSecond: walRate.bytesPerSecond, walWriteRateSource: walRate.source } : {}),
      ...(storageMeasured ? { storageMeasured, currentMeasured } : {}),
      ...(measured?.largestPartitionTree !== undefined ? { largestPartitionTree: measured.largestPartitionTree } : {}),
      pgMajor,
      ...(maxConnections !== undefined ? { maxConnections } : {}),
      workload: inputs.workload,
      buildFeatures,
      extensionBackgroundWorkers: ext.count,
      ...(hp !== undefined ? { hugePageBytes: hp } : {}),
    },
    notes,
  };
}

// ---------------------------------------------------------------- the decision

export interface TuneDecision {
  cluster: TuneCluster;
  catalog: GucCatalog;
  effective: EffectiveConfig;
  set: RecommendationSet;
  areas: AreaChanges[];
  target: TuneTarget;
  /** Facts and warnings to show with the diff. */
  notes: string[];
  warnings: string[];
}

export async function decideTune(
  inputs: TuneInputs,
  target: TuneTarget,
  cluster: TuneCluster,
  ctx: { runner: Runner; hostRoot: HostRoot },
): Promise<TuneDecision> {
  if (inputs.pgMajor !== undefined && inputs.pgMajor !== cluster.major) {
    throw badInput(
      `--pg-version ${inputs.pgMajor} does not match the cluster, which runs PostgreSQL ${cluster.major}`,
      'leave --pg-version out when tuning a cluster',
    );
  }
  const catalog = loadCatalog(cluster.major);
  // a syntax error anywhere in the files is the DBA's to fix first: reported with file and line
  const effective = readEffectiveConfig({ configFile: cluster.configFile, dataDir: cluster.dataDir ?? '', catalog, server: cluster.server });
  const { profile, notes } = await systemProfile(inputs, { ...ctx, cluster, effective, catalog });
  const set = recommend(profile, catalog);
  const areas = planChanges(set, effective, catalog, target);
  const warnings = [...cluster.notes, ...effective.warnings, ...set.warnings, ...precedenceNotes(areas, target, cluster.dataDir ?? undefined)];
  const pending = pendingNotOwn(
    (cluster.server ?? []).filter((s) => s.pending_restart).map((s) => s.name),
    areas,
  );
  if (pending.length) warnings.push(`already waiting for a restart before pgscale changes anything: ${pending.join(', ')}`);
  return { cluster, catalog, effective, set, areas, target, notes, warnings };
}

// ---------------------------------------------------------------- operation parameters

export const INCLUDE_FILE = 'pgscale.conf';
export const INCLUDE_DIR = 'conf.d';
const INCLUDE_LINE = `include_if_exists = '${INCLUDE_DIR}/${INCLUDE_FILE}'\t# added by pgscale tune: read last, so its settings win over the lines above (postgresql.auto.conf still wins over it)`;

const KEPT_REASON = 'unchanged: written by an earlier pgscale tune run';

/** pgscale.conf's new text: the changes, and every earlier pgscale value that still stands. */
function includeFileText(d: TuneDecision, changes: readonly SettingChange[], existing: string | undefined, path: string): string {
  const old = new Map(existing === undefined ? [] : parseConfigText(existing, path).map((l) => [l.name, l.value]));
  const changed = new Map(changes.map((c) => [c.name, c]));
  const recommended = new Set(
    Object.values(d.set.areas)
      .flat()
      .map((r) => r.name),
  );
  const areas = {} as Record<TuneArea, Recommendation[]>;
  for (const area of TUNE_AREAS) {
    areas[area] = d.set.areas[area].flatMap((r): Recommendation[] => {
      if (changed.has(r.name)) return [r];
      const text = old.get(r.name);
      if (text === undefined) return [];
      const def = findSetting(d.catalog, r.name)!;
      try {
        return [{ ...r, value: parseSetting(def, text), reason: KEPT_REASON }];
      } catch {
        return [];
      }
    });
  }
  let text = render({ ...d.set, areas, dropped: [] }, 'include');
  const leftovers = [...old].filter(([name]) => !recommended.has(name));
  if (leftovers.length) {
    text += `\n\n# kept from an earlier pgscale tune run (not recommended for this profile; remove by hand if unwanted)\n${leftovers.map(([n, v]) => `${n} = '${v.replace(/'/g, "''")}'`).join('\n')}`;
  }
  return text.endsWith('\n') ? text : text + '\n';
}

/** A file to change: its state now, the edits, and its state after them. */
function plannedFile(path: string, role: string, edits: FileEdit[]): { file: PlannedFile; text: string | null } {
  const before = fileState(path);
  const current = existsSync(path) ? readFileSync(path) : undefined;
  const after = applyEdits(path, current, edits, (from) => readFileSync(from));
  return {
    file: { path, role, before, edits, after: { exists: after !== null, sha256: after ? sha256(after) : null } },
    text: after ? after.toString('latin1') : null,
  };
}

function requireLocal(c: TuneCluster): { dataDir: string; owner: OsUser; bindir: string; identity: ServerIdentity } {
  if (!c.dataDir || !c.owner) {
    throw badInput(
      "applying needs the cluster's data directory on this host (--pgdata): pgscale backs up, edits and validates its files",
      'run pgscale on the database host, or use --format sql and apply the statements yourself',
    );
  }
  if (!c.serverBindir || !c.identity)
    throw badInput(`no PostgreSQL ${c.major} server programs (postgres, pg_ctl) found to validate the configuration with`, 'pass --bindir');
  return { dataDir: c.dataDir, owner: c.owner, bindir: c.serverBindir, identity: c.identity };
}

/** What every tune, restart and restore plan says of its cluster: which one, and how it runs now. */
type ClusterFields = Pick<TuneParams, 'dataDir' | 'configFile' | 'owner' | 'bindir' | 'major' | 'access' | 'running' | 'pendingBefore' | 'server'>;

function clusterFields(c: TuneCluster): ClusterFields {
  const { dataDir, owner, bindir, identity } = requireLocal(c);
  return {
    dataDir,
    configFile: c.configFile,
    owner: owner.name,
    bindir,
    major: c.major,
    access: c.access,
    running: c.running,
    pendingBefore: (c.server ?? []).filter((s) => s.pending_restart).map((s) => s.name),
    server: identity,
  };
}

export interface Accepted {
  areas: ReadonlySet<TuneArea>;
  restart: boolean;
}

/** The `tune` operation's parameters for the accepted areas. */
export function tuneParams(d: TuneDecision, accepted: Accepted): TuneParams {
  const c = d.cluster;
  const cluster = clusterFields(c);
  const { dataDir } = cluster;
  const changes = allChanges(d.areas).filter((s) => accepted.areas.has(s.area));
  if (changes.length === 0) throw refused('no change accepted: nothing to apply');
  const configDir = dirname(c.configFile);
  const autoConf = join(dataDir, 'postgresql.auto.conf');
  const main = changes.filter((s) => s.via === 'main');
  const auto = changes.filter((s) => s.via === 'auto');
  const planned: { file: PlannedFile; text: string | null }[] = [];
  const createDirs: string[] = [];

  if (main.length && d.target === 'include') {
    const includeDir = join(configDir, INCLUDE_DIR);
    const includePath = join(includeDir, INCLUDE_FILE);
    if (!existsSync(includeDir)) createDirs.push(includeDir);
    const existing = existsSync(includePath) ? readFileSync(includePath, 'utf8') : undefined;
    planned.push(plannedFile(includePath, `${relative(configDir, includePath)}`, [{ kind: 'content', text: includeFileText(d, main, existing, includePath) }]));
    // postgresql-common's postgresql.conf ends with include_dir = 'conf.d': pgscale.conf there is read last without an include line
    const configText = readFileSync(c.configFile, 'latin1');
    const dirFiles = existsSync(includeDir) ? readdirSync(includeDir) : [];
    if (!readLastThroughIncludeDir(c.configFile, configText, includeDir, INCLUDE_FILE, dirFiles))
      planned.push(plannedFile(c.configFile, 'postgresql.conf', [{ kind: 'include-last', target: includePath, line: INCLUDE_LINE }]));
  } else if (main.length && d.target === 'conf') {
    const edits: FileEdit[] = main.map((s) => ({
      kind: 'set',
      name: s.name,
      value: s.text,
      line: s.current?.origin === 'file' && s.current.file === c.configFile ? s.current.line! : null,
      comment: `pgscale tune${s.current?.origin === 'file' && s.current.file === c.configFile ? ` (was ${s.current.text})` : ''}: ${s.recommended.reason}`,
    }));
    // replacements first (they keep line numbers), then the appended lines
    edits.sort((a, b) => Number((a as { line: number | null }).line === null) - Number((b as { line: number | null }).line === null));
    planned.push(plannedFile(c.configFile, 'postgresql.conf', edits));
  }
  const alterSystem: { name: string; value: string }[] = [];
  if (auto.length) {
    if (c.running && c.alterSystem) {
      alterSystem.push(...auto.map((s) => ({ name: s.name, value: s.text })));
      // the server rewrites postgresql.auto.conf: backed up, and its new content checked by value
      planned.push({ file: { path: autoConf, role: 'postgresql.auto.conf', before: fileState(autoConf), edits: [], after: null }, text: null });
    } else {
      planned.push(
        plannedFile(
          autoConf,
          'postgresql.auto.conf',
          auto.map((s) => ({ kind: 'set-auto', name: s.name, value: s.text })),
        ),
      );
    }
  }

  // read the configuration as it will be: every change must win where it is written
  const overlay = new Map<string, string | null>();
  for (const p of planned) if (p.file.after) overlay.set(p.file.path, p.text);
  if (alterSystem.length) {
    const cur = existsSync(autoConf) ? readFileSync(autoConf) : undefined;
    const next = applyEdits(
      autoConf,
      cur,
      alterSystem.map((a) => ({ kind: 'set-auto', ...a })),
      () => Buffer.alloc(0),
    );
    overlay.set(autoConf, next ? next.toString('latin1') : null);
  }
  const after = readEffectiveConfig({ configFile: c.configFile, dataDir, catalog: d.catalog, source: overlayFiles(realFiles, overlay) });
  for (const s of changes) {
    const now = after.settings.get(s.name);
    if (!now?.value || !isCloseEnough(now.value, s.recommended.value)) {
      throw new Error(`planned ${s.name} = ${s.text} would not take effect: ${now ? `${now.file}:${now.line} sets ${now.text}` : 'no file sets it'}`);
    }
  }

  const expect: ExpectedSetting[] = changes.map((s) => ({ name: s.name, value: s.text, restart: s.recommended.restart }));
  const restartNeeded = changes.some((s) => s.recommended.restart);
  const restart = c.running && restartNeeded && accepted.restart;
  const where = d.target === 'include' ? `${INCLUDE_DIR}/${INCLUDE_FILE}` : d.target === 'conf' ? 'postgresql.conf' : 'postgresql.auto.conf (ALTER SYSTEM)';
  const restartText = !restartNeeded
    ? 'no restart needed'
    : !c.running
      ? 'take effect when the server starts'
      : restart
        ? 'the server is restarted'
        : `a restart is left pending (${changes
            .filter((s) => s.recommended.restart)
            .map((s) => s.name)
            .join(', ')})`;
  return {
    operation: 'tune',
    ...cluster,
    files: planned.map((p) => p.file),
    createDirs,
    removeDirs: [],
    alterSystem,
    expect,
    restart,
    watch: d.effective.files,
    restoredRun: null,
    summary: `pgscale tune of ${dataDir}${c.dataDirSource ? ` (data directory ${c.dataDirSource})` : ''} (PostgreSQL ${c.major}, ${d.set.profile.workload}): ${changes.length} setting(s) in ${[...new Set(changes.map((s) => s.area))].join(', ')} written to ${where}${auto.length && d.target !== 'sql' ? ` (${auto.length} through postgresql.auto.conf, which would override them)` : ''}; ${restartText}`,
  };
}

/**
 * Restart-context settings the files already hold at pgscale's recommendation while the server
 * still waits for a restart to use them — what `--apply` without consent left pending. Nothing is
 * left to write for them, only the restart to complete.
 */
export function pendingOwnRestarts(areas: readonly AreaChanges[]): SettingChange[] {
  return areas
    .flatMap((a) => a.settings)
    .filter((s) => s.status === 'keep' && s.recommended.restart && s.current?.origin !== 'command-line' && s.current?.running?.pendingRestart === true);
}

/** Settings the server waits to restart for that are not pgscale's own pending restarts: those are reported, and completed, on their own. */
export function pendingNotOwn(serverPending: readonly string[], areas: readonly AreaChanges[]): string[] {
  const own = new Set(pendingOwnRestarts(areas).map((s) => s.name));
  return serverPending.filter((name) => !own.has(name));
}

/** The `tune` operation that only completes a pending restart of pgscale's settings (consent given): nothing is written. */
export function restartParams(d: TuneDecision): TuneParams {
  const c = d.cluster;
  const cluster = clusterFields(c);
  const pending = pendingOwnRestarts(d.areas);
  if (!c.running || pending.length === 0) throw refused("no restart of pgscale's settings is pending");
  return {
    operation: 'tune',
    ...cluster,
    files: [],
    createDirs: [],
    removeDirs: [],
    alterSystem: [],
    expect: pending.map((s) => ({ name: s.name, value: s.text, restart: true })),
    restart: true,
    watch: d.effective.files,
    restoredRun: null,
    summary: `complete the restart an earlier pgscale tune run of ${cluster.dataDir} left pending: ${pending.map((s) => `${s.name} = ${s.text}`).join(', ')} (already in the files; nothing is written)`,
  };
}

// ---------------------------------------------------------------- --restore

export interface RestoreDecision {
  params: TuneParams;
  /** The run whose backup is put back. */
  runId: string;
  warnings: string[];
  restartNeeded: string[];
}

/**
 * The newest completed tune run of the cluster that wrote files and that no restore has put back
 * yet. A run that only completed a pending restart wrote nothing (it has no backup): the files to
 * put back are those of the run before it.
 */
function runToRestore(stateDir: string, dataDir: string): { id: string; dir: string; params: TuneParams } {
  const runs = listRuns(stateDir);
  const restored = new Set(
    runs.filter((r) => r.plan.operation === 'tune-restore' && r.status === 'completed').map((r) => (r.plan.params as TuneParams).restoredRun),
  );
  const candidates = runs.filter(
    (r) =>
      r.plan.operation === 'tune' &&
      r.status === 'completed' &&
      r.plan.target.lockKey === `cluster:${dataDir}` &&
      !restored.has(r.id) &&
      readBackupManifest(r.dir) !== undefined,
  );
  const last = candidates[candidates.length - 1];
  if (!last) {
    const open = runs.find(
      (r) => r.plan.operation === 'tune' && r.plan.target.lockKey === `cluster:${dataDir}` && !['completed', 'rolled-back'].includes(r.status),
    );
    throw refused(
      `no completed pgscale tune run of ${dataDir} to restore in ${stateDir}`,
      open ? `run ${open.id} did not finish: undo it with \`pgscale rollback ${open.id}\`` : 'see `pgscale runs` (and --state-dir)',
    );
  }
  return { id: last.id, dir: last.dir, params: last.plan.params as TuneParams };
}

export function decideRestore(cluster: TuneCluster, stateDir: string, restartConsent: boolean): RestoreDecision {
  const fields = clusterFields(cluster);
  const { dataDir } = fields;
  const run = runToRestore(stateDir, dataDir);
  const manifest = readBackupManifest(run.dir);
  if (!manifest) throw refused(`run ${run.id} has no backup manifest in ${join(run.dir, 'backup')}`);
  const warnings: string[] = [];
  const files: PlannedFile[] = [];
  const overlay = new Map<string, string | null>();
  for (const m of manifest.files) {
    const edits: FileEdit[] = m.existed && m.copy ? [{ kind: 'restore', from: join(run.dir, 'backup', m.copy), sha256: m.sha256! }] : [{ kind: 'delete' }];
    const tuned = run.params.files.find((f) => f.path === m.path)?.after;
    const now = fileState(m.path);
    if (tuned && now.sha256 !== tuned.sha256)
      warnings.push(`${m.path} changed since run ${run.id} tuned it: restoring discards those edits (this run backs them up first)`);
    const role = run.params.files.find((f) => f.path === m.path)?.role ?? m.path;
    const p = plannedFile(m.path, role, edits);
    files.push(p.file);
    overlay.set(m.path, p.text);
  }
  const catalog = loadCatalog(cluster.major);
  const restoredConfig = readEffectiveConfig({ configFile: cluster.configFile, dataDir, catalog, source: overlayFiles(realFiles, overlay) });
  const live = new Map((cluster.server ?? []).map((s) => [s.name.toLowerCase(), s]));
  const expect: ExpectedSetting[] = run.params.expect.map((e) => {
    const s = restoredConfig.settings.get(e.name);
    const def = findSetting(catalog, e.name);
    return { name: e.name, value: s ? s.text : null, restart: def ? needsRestart(def) : e.restart };
  });
  // restart-context settings whose restored value is not what the server runs now
  const restartNeeded = expect
    .filter((e) => e.restart)
    .filter((e) => {
      const def = findSetting(catalog, e.name);
      const row = live.get(e.name);
      if (!def || !row || !cluster.running) return false;
      const want = e.value ?? row.boot_val;
      if (want == null) return false;
      try {
        return !isCloseEnough(parseSetting(def, row.setting ?? ''), parseSetting(def, want));
      } catch {
        return true;
      }
    })
    .map((e) => e.name);
  const restart = cluster.running && restartNeeded.length > 0 && restartConsent;
  const params: TuneParams = {
    operation: 'tune-restore',
    ...fields,
    files,
    createDirs: [],
    removeDirs: manifest.createdDirs,
    alterSystem: [],
    expect,
    restart,
    watch: readEffectiveConfig({ configFile: cluster.configFile, dataDir, catalog }).files,
    restoredRun: run.id,
    summary:
      `restore the configuration files of ${dataDir} as they were before pgscale tune run ${run.id}, byte for byte` +
      (restartNeeded.length === 0 ? '' : restart ? '; the server is restarted' : `; a restart is left pending (${restartNeeded.join(', ')})`),
  };
  return { params, runId: run.id, warnings, restartNeeded };
}
