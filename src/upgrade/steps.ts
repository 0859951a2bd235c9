/**
 * `pgscale upgrade`: initdb of the new cluster like the old one, the configuration carried over,
 * `pg_upgrade --check` against the live old cluster, then (downtime) stop old, pg_upgrade, start
 * new on the old port, extension updates, verification and analyze after service is back.
 */
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  statfsSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { createTwoFilesPatch } from 'diff';
import { lastValues, readConfigTree } from '../config/parse.js';
import { dirname, join } from 'node:path';
import { clientInvocation, osUserOf, withDb } from '../cluster/access.js';
import { existingAncestor, isInside, realish, treeBytes } from '../files.js';
import { listeningNow, PG_CTLCLUSTER, PostgresServer, postmastersOn, stopLeftoverPostmasters, type RunningPostmaster } from '../server/postgres.js';
import { ExitCode, PgscaleError } from '../errors.js';
import { formatBytes, formatDuration } from '../format.js';
import { loadCatalog } from '../gucCatalog/index.js';
import { freePort, portAvailable } from '../net.js';
import { writeFileAtomic } from '../pipeline/journal.js';
import { defineOperation } from '../pipeline/plan.js';
import { check, defineStep, type CheckResult, type PlannedAction, type StepContext, type StepData } from '../pipeline/step.js';
import { describeFailure, isRoot, type Invocation } from '../runner.js';
import { statements } from '../sql.js';
import { backupOperation, backupTimes } from '../backup/steps.js';
import { migrateConfig } from './configMigration.js';
import { upgradeReport } from './report.js';
import { CLUSTER_FILES, manualStartConf, portHandOverBlocker, startMode, withPort, type DebianUpgrade } from './debianLayout.js';
import type { UpgradeParams } from './params.js';
import { rebuildStandbysStep, standbysCheckStep } from './standbys.js';
import { rsyncStepsAfter } from './standbysRsync.js';
import {
  blockedHba,
  catalogDifferences,
  listeningOrigin,
  lsnBytes,
  lsnOf,
  planChecks,
  restartConfigCheck,
  restartConfigFile,
  withoutBlock,
  writesSinceOpen,
  type CatalogFacts,
  type OpenedFacts,
} from './rules.js';

const owner = (p: UpgradeParams) => osUserOf({ ...p.access, runAs: p.old.owner })!;
const bin = (dir: string, program: string) => join(dir, program);
const asOwner = (p: UpgradeParams, program: string, args: string[], extra: Partial<Invocation> = {}): Invocation => ({
  program,
  args,
  runAs: owner(p),
  ...extra,
});
/** The old or the new server, with the identity captured when the run was planned. */
const serverOf = (ctx: StepContext, p: UpgradeParams, side: 'old' | 'new') => new PostgresServer(p[side].server, ctx.runner);
/** A socket directory only pgscale uses: pg_upgrade's servers and the new server's first start listen there, no TCP. */
const privateSocketDir = (p: UpgradeParams) => join(p.workDir, 'sock');
const privateAccess = (p: UpgradeParams) => ({ ...p.access, host: privateSocketDir(p), port: p.new.server.port, bindir: p.new.bindir });
const startArgv = (inv: Invocation) => [inv.program, ...inv.args];

async function must(ctx: StepContext, inv: Invocation, what: string): Promise<string> {
  const res = await ctx.runner.run(inv);
  if (res.exitCode !== 0) throw new PgscaleError(`${what}: ${describeFailure(inv, res)}`, ExitCode.FailedAfterChange);
  return res.stdout;
}

async function databases(ctx: StepContext, p: UpgradeParams): Promise<string[]> {
  return (await withDb(ctx, p.access, (db) => db.query(statements.databases()))).map((d) => d.name).filter((n) => n !== 'template1');
}

async function controlState(ctx: StepContext, p: UpgradeParams, side: 'old' | 'new'): Promise<string | undefined> {
  if (!existsSync(join(p[side].dataDir, 'global', 'pg_control'))) return undefined;
  return (await serverOf(ctx, p, side).controlData())?.state;
}

/** Tablespace subdirectories the new version would create: PG_17_<catversion>. */
function newVersionTablespaceDirs(p: UpgradeParams): string[] {
  return p.old.tablespaces.flatMap((loc) => {
    try {
      return readdirSync(loc)
        .filter((n) => n.startsWith(`PG_${p.new.major}_`))
        .map((n) => join(loc, n));
    } catch {
      return [];
    }
  });
}

function dirEmptyOrAbsent(path: string): boolean {
  try {
    return readdirSync(path).length === 0;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** Where the new version keeps extension control files and libraries: pg_config's answer, else the usual layouts. */
async function libraryDirs(ctx: StepContext, p: UpgradeParams): Promise<{ share: string; lib: string }[]> {
  const pgConfig = bin(p.new.bindir, 'pg_config');
  if (existsSync(pgConfig)) {
    const res = await ctx.runner.run({ program: pgConfig, args: ['--sharedir', '--pkglibdir'] });
    const [share, lib] = res.stdout.trim().split('\n');
    if (res.exitCode === 0 && share && lib) return [{ share, lib }];
  }
  const root = dirname(realpathSync(p.new.bindir));
  return [
    { share: join(dirname(dirname(dirname(root))), 'share', 'postgresql', String(p.new.major)), lib: join(root, 'lib') }, // Debian
    { share: join(root, 'share', 'postgresql'), lib: join(root, 'lib', 'postgresql') }, // relocatable builds
    { share: join(root, 'share'), lib: join(root, 'lib') },
  ].filter((d) => existsSync(join(d.share, 'extension')));
}

async function binaryMajor(ctx: StepContext, bindir: string): Promise<number | undefined> {
  if (!existsSync(bin(bindir, 'postgres'))) return undefined;
  const res = await ctx.runner.run({ program: bin(bindir, 'postgres'), args: ['-V'] });
  const m = /\(PostgreSQL\)\s+(\d+)/.exec(res.stdout);
  return res.exitCode === 0 && m ? Number(m[1]) : undefined;
}

/** Everything the plan judges that needs a look at the host or the old server. */
async function gatherPlanFacts(ctx: StepContext, p: UpgradeParams, pgVersion: string) {
  const parent = existingAncestor(dirname(p.new.dataDir));
  const probe = await ctx.runner.run({ program: 'test', args: ['-w', parent, '-a', '-x', parent], runAs: owner(p), cwd: '/' });
  let refusingConnections: string[] = [];
  const regColumns: string[] = [];
  try {
    refusingConnections = (await withDb(ctx, p.access, (db) => db.query(statements.databasesRefusingConnections()))).map((r) => r.name);
    for (const dbname of await databases(ctx, p))
      regColumns.push(...(await withDb(ctx, p.access, (db) => db.query(statements.regTypeColumns()), dbname)).map((r) => `${dbname}: ${r.column_name}`));
  } catch {
    /* unreachable: the "old cluster reachable" check says so */
  }
  return {
    oldDataDir: realish(p.old.dataDir),
    pgVersion,
    oldMajor: p.old.major,
    newMajor: p.new.major,
    newDataDir: realish(p.new.dataDir),
    waldir: p.new.waldir ? realish(p.new.waldir) : null,
    tablespaces: p.old.tablespaces.map(realish),
    oldBinaryMajor: await binaryMajor(ctx, p.old.bindir),
    newBinaryMajor: await binaryMajor(ctx, p.new.bindir),
    // as root pgscale creates missing directories for the owner (initdb step); an existing parent must be the owner's to write
    newParent: { path: parent, ownerCanWrite: probe.exitCode === 0, willBeCreatedByPgscale: isRoot() && parent !== dirname(p.new.dataDir) },
    owner: p.old.owner,
    refusingConnections,
    regColumns,
  };
}

function describeConfigFile(p: UpgradeParams): string {
  return p.old.server.configFile
    ? `configuration carried from ${p.old.server.configFile} into ${join(p.new.configDir, 'postgresql.conf')}`
    : 'configuration carried into the new data directory';
}

export async function upgradeChecks(ctx: StepContext, p: UpgradeParams): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const [side, program] of [
    ['old', 'postgres'],
    ['old', 'pg_controldata'],
    ['new', 'postgres'],
    ['new', 'initdb'],
    ['new', 'pg_upgrade'],
    ['new', 'pg_ctl'],
  ] as const) {
    if (!existsSync(bin(p[side].bindir, program))) out.push(check.fail(`${side} binaries`, `${bin(p[side].bindir, program)} is missing`));
  }
  if (p.new.major <= p.old.major) out.push(check.fail('target version', `target ${p.new.major} is not newer than the cluster's ${p.old.major}`));
  else out.push(check.pass('target version', `${p.old.major} → ${p.new.major}`));
  const oldVersion = readFileSync(join(p.old.dataDir, 'PG_VERSION'), 'utf8').trim();
  out.push(
    oldVersion === String(p.old.major)
      ? check.pass('old data directory version', `PG_VERSION ${oldVersion}`)
      : check.fail('old data directory version', `PG_VERSION says ${oldVersion}, expected ${p.old.major}`),
  );
  out.push(...planChecks(await gatherPlanFacts(ctx, p, oldVersion)));
  const restartConfig = restartConfigFile(p.old.server);
  out.push(restartConfigCheck(p.old.server, restartConfig, existsSync(restartConfig)));
  out.push(check.info('where the new server listens', `${listeningOrigin(p.new.server)}: as the old server (${describeConfigFile(p)})`));

  if (postmastersOn([p.new.dataDir]).length) out.push(check.fail('new data directory', `${p.new.dataDir} belongs to a running cluster`));
  else
    out.push(
      dirEmptyOrAbsent(p.new.dataDir)
        ? check.pass('new data directory', `${p.new.dataDir} is empty or absent`)
        : check.fail('new data directory', `${p.new.dataDir} is not empty`),
    );
  if (p.new.waldir) {
    const mountRoot = existsSync(join(p.new.waldir, 'lost+found'));
    out.push(
      dirEmptyOrAbsent(p.new.waldir)
        ? check.pass('WAL directory', `${p.new.waldir} is empty or absent`)
        : check.fail(
            'WAL directory',
            `${p.new.waldir} is not empty${mountRoot ? ' (a filesystem root: use a subdirectory such as ' + join(p.new.waldir, 'pg_wal') + ')' : ''}`,
          ),
    );
    const sameDevice = statSync(existingAncestor(p.new.waldir)).dev === statSync(existingAncestor(p.new.dataDir)).dev;
    if (sameDevice)
      out.push(
        p.force
          ? check.warn('WAL on its own device', `${p.new.waldir} is on the data directory's device (accepted with --force)`)
          : check.fail(
              'WAL on its own device',
              `${p.new.waldir} is on the same device as ${p.new.dataDir}: a dedicated WAL volume must be another device (--force to accept)`,
            ),
      );
    else out.push(check.pass('WAL on its own device', `${p.new.waldir} is on another device than the data`));
  }
  if (p.new.configDir !== p.new.dataDir)
    out.push(
      dirEmptyOrAbsent(p.new.configDir)
        ? check.pass('new configuration directory', `${p.new.configDir} is empty or absent`)
        : check.fail(
            'new configuration directory',
            `${p.new.configDir} is not empty: a cluster ${p.debian ? `${p.debian.newVersion}/${p.debian.cluster} ` : ''}is configured there`,
          ),
    );
  if (p.debian) out.push(...(await debianChecks(p)));
  const stale = newVersionTablespaceDirs(p);
  out.push(
    stale.length
      ? check.fail('tablespace directories', `already present for ${p.new.major}: ${stale.join(', ')}`)
      : check.pass('tablespace directories', `no PG_${p.new.major}_* directories in ${p.old.tablespaces.length} tablespaces`),
  );

  // space: copy needs the data again on the new data directory's filesystem; link/clone only catalogs and WAL
  const target = existingAncestor(p.new.dataDir);
  const fs = statfsSync(target);
  const free = fs.bavail * fs.bsize;
  const dataBytes = treeBytes(p.old.dataDir);
  const need = p.mode === 'copy' || p.mode === 'copy-file-range' ? dataBytes * 1.1 : Math.max(256 * 1024 ** 2, dataBytes * 0.05);
  out.push(
    free >= need
      ? check.pass('disk space', `${formatBytes(free)} free at ${target}; ${p.mode} mode needs about ${formatBytes(need)}`)
      : check.fail('disk space', `only ${formatBytes(free)} free at ${target}; ${p.mode} mode needs about ${formatBytes(need)}`),
  );
  if (p.mode === 'link' || p.mode === 'clone') {
    const same = statSync(p.old.dataDir).dev === statSync(target).dev;
    out.push(
      same
        ? check.pass(`${p.mode} mode filesystem`, 'old and new data directories are on one filesystem')
        : check.fail(
            `${p.mode} mode filesystem`,
            `${p.new.dataDir} is on another filesystem than ${p.old.dataDir}: ${p.mode} mode needs one filesystem; use --mode copy or a new data directory beside the old one`,
          ),
    );
  }

  try {
    await withDb(ctx, p.access, async (db) => {
      const [facts] = await db.query(statements.serverFacts());
      if (facts?.in_recovery) out.push(check.fail('primary', 'the old cluster is a standby: upgrade the primary, then rebuild standbys'));
      else out.push(check.pass('primary', 'the old cluster is a primary'));
      const [prepared] = await db.query(statements.preparedTransactions());
      out.push(
        prepared?.count
          ? check.fail('prepared transactions', `${prepared.count} prepared transactions: commit or roll them back first`)
          : check.pass('prepared transactions', 'none'),
      );
      const settings = new Map(
        (await db.query(statements.settings(['wal_level', 'max_slot_wal_keep_size', 'shared_preload_libraries']))).map((s) => [s.name, s.setting]),
      );
      const standbys = await db.query(statements.standbys());
      if (standbys.length && p.replicas && p.replicas.method !== 'leave')
        out.push(check.info('physical standbys', `${standbys.length} streaming: handled by the standbys checks below (--replicas ${p.replicas.method})`));
      else if (standbys.length) {
        out.push(
          check.warn(
            'physical standbys',
            `${standbys.map((s) => `${s.application_name}${s.client_addr ? '@' + s.client_addr : ''} (${s.state})`).join(', ')}: after the upgrade each is rebuilt with pg_basebackup from the new primary (reclone); they cannot follow a pg_upgrade`,
          ),
        );
        if (settings.get('wal_level') === 'minimal') out.push(check.fail('wal_level', 'wal_level is minimal but standbys exist'));
      } else out.push(check.info('physical standbys', 'none'));
      const slots = await db.query(statements.replicationSlots());
      const logical = slots.filter((s) => s.slot_type === 'logical');
      if (logical.length && p.old.major < 17)
        out.push(
          check.warn(
            'logical replication slots',
            `${logical.map((s) => `${s.slot_name} (${s.plugin}, ${s.database})`).join(', ')}: not carried over from ${p.old.major}; recreate them on the new cluster after the upgrade with pg_create_logical_replication_slot and resynchronise their consumers`,
          ),
        );
      else out.push(check.info('logical replication slots', logical.length ? `${logical.length}, carried over by pg_upgrade (17+ source)` : 'none'));
      const subs = await db.query(statements.subscriptions());
      if (subs.length)
        out.push(
          check.warn(
            'subscriptions',
            `${subs.map((s) => `${s.name} in ${s.database}`).join(', ')}: ${p.old.major < 17 ? 'their replication origins are not carried over: after the upgrade, ALTER SUBSCRIPTION … REFRESH PUBLICATION / copy_data decides how they resume' : 'carried over; they restart from their origins'}`,
          ),
        );
      const preload = (settings.get('shared_preload_libraries') ?? '')
        .split(',')
        .map((s) => s.trim().replace(/^"|"$/g, ''))
        .filter(Boolean);
      const libs = await libraryDirs(ctx, p);
      for (const lib of preload) {
        const found = libs.some((d) => existsSync(join(d.lib, `${lib.replace(/^\$libdir\//, '')}.so`)));
        out.push(
          found
            ? check.pass(`preload library ${lib}`, `present for ${p.new.major}`)
            : check.fail(`preload library ${lib}`, `${lib}.so is not installed for PostgreSQL ${p.new.major}`),
        );
      }
      const maxSlot = settings.get('max_slot_wal_keep_size');
      if (p.new.major === 17 && maxSlot !== undefined && maxSlot !== '-1') {
        const res = await ctx.runner.run({ program: bin(p.new.bindir, 'postgres'), args: ['-V'] });
        const minor = Number(/17\.(\d+)/.exec(res.stdout)?.[1] ?? 99);
        if (minor <= 5)
          out.push(
            check.warn(
              'max_slot_wal_keep_size',
              `new binaries are 17.${minor}: pg_upgrade needs max_slot_wal_keep_size = -1 during the upgrade (17.0–17.5); pg_upgrade sets it for its own servers, keep the old value in the config`,
            ),
          );
      }
    });
    const libs = await libraryDirs(ctx, p);
    for (const dbname of await databases(ctx, p)) {
      const exts = await withDb(ctx, p.access, (db) => db.query(statements.extensions()), dbname);
      for (const e of exts.filter((x) => x.name !== 'plpgsql')) {
        const ok = libs.some((d) => existsSync(join(d.share, 'extension', `${e.name}.control`)));
        out.push(
          ok
            ? check.pass(`extension ${e.name} (${dbname})`, `available for ${p.new.major}`)
            : check.fail(`extension ${e.name} (${dbname})`, `${e.name} ${e.version} is installed in ${dbname} but not available for PostgreSQL ${p.new.major}`),
        );
      }
    }
  } catch (e) {
    out.push(check.fail('old cluster reachable', `${(e as Error).message} (the old cluster must be running for the checks and the backup)`));
  }
  out.push(
    check.info(
      'statistics',
      p.new.major >= 18
        ? 'carried over by pg_upgrade (18+); vacuumdb --analyze-in-stages --missing-stats-only fills the rest'
        : `not carried over before 18: vacuumdb --analyze-in-stages runs after the new cluster is back (about ${formatDuration(Math.max(5, dataBytes / (200 * 1024 ** 2)))})`,
    ),
  );
  out.push(check.info('backup methods', backupMethodsNote(p, dataBytes)));
  return out;
}

/** Each method's expected backup and restore time for this cluster, and which one the run takes: past the point of no return, restore time is what counts. */
function backupMethodsNote(p: UpgradeParams, dataBytes: number): string {
  const taken = p.backup ? (p.backup.method ?? 'dumpall') : null;
  const estimates = backupTimes(dataBytes, p.jobs)
    .map(
      (e) =>
        `${e.method}${e.method === taken ? ' (taken)' : ''}: backup ~${formatDuration(e.backupSeconds)}, restore ~${formatDuration(e.restoreSeconds)}, into ${e.restoresInto}`,
    )
    .join('; ');
  return `${taken ? '' : 'none taken (--no-backup); '}${estimates} (rates assumed, not measured on this host)`;
}

const initdbStep = defineStep<UpgradeParams>({
  kind: 'upgrade.initdb',
  title: (p) => `Create the PostgreSQL ${p.new.major} cluster in ${p.new.dataDir}${p.new.waldir ? ` with WAL in ${p.new.waldir}` : ''}`,
  check: upgradeChecks,
  async plan(_ctx, p) {
    return [
      {
        kind: 'command',
        argv: [bin(p.new.bindir, 'initdb'), ...p.initdbArgs],
        runAs: p.old.owner,
        note: 'encoding, locale, provider and checksum setting copied from the old cluster',
      },
    ];
  },
  async apply(ctx, p) {
    rmSync(p.new.dataDir, { recursive: true, force: true });
    if (p.new.waldir) rmSync(p.new.waldir, { recursive: true, force: true });
    for (const dir of [dirname(p.new.dataDir), ...(p.new.waldir ? [p.new.waldir] : [])]) {
      const first = mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (!isRoot()) continue;
      // initdb runs as the owner: every directory made here (parents too) is the owner's, or initdb cannot reach it
      const made: string[] = first ? [] : dir === p.new.waldir ? [dir] : [];
      if (first) for (let d = dir; d.startsWith(first); d = dirname(d)) made.push(d);
      for (const d of made) chownSync(d, owner(p).uid, owner(p).gid);
    }
    await must(ctx, asOwner(p, bin(p.new.bindir, 'initdb'), p.initdbArgs), 'initdb');
  },
  async verify(ctx, p) {
    const version = existsSync(join(p.new.dataDir, 'PG_VERSION')) ? readFileSync(join(p.new.dataDir, 'PG_VERSION'), 'utf8').trim() : undefined;
    if (version !== String(p.new.major)) return { ok: false, detail: `no ${p.new.major} cluster in ${p.new.dataDir}` };
    const state = await controlState(ctx, p, 'new');
    return state ? { ok: true, detail: `PostgreSQL ${version} cluster created (${state})` } : { ok: false, detail: 'pg_control unreadable' };
  },
  async rollback(ctx, p) {
    await serverOf(ctx, p, 'new').stop();
    if (postmastersOn([p.new.dataDir]).length) await stopLeftovers(ctx, p);
    const kept = existsSync(openedMarker(p)) ? keepAside(p) : undefined;
    if (!kept) {
      rmSync(p.new.dataDir, { recursive: true, force: true });
      if (p.new.waldir) rmSync(p.new.waldir, { recursive: true, force: true });
    }
    rmSync(p.workDir, { recursive: true, force: true });
    return kept;
  },
  rollbackNote: (p) =>
    `remove ${p.new.dataDir}${p.new.waldir ? ` and ${p.new.waldir}` : ''}; once clients could reach the new cluster, it is moved aside to ${p.new.dataDir}.rolled-back-<time> instead (its acknowledged writes stay recoverable)`,
  estimateSeconds: () => 5,
});

/** Set when the new cluster is about to let clients in: from then on, a rollback keeps its data (moved aside), never deletes it. */
const openedMarker = (p: UpgradeParams) => join(p.workDir, 'opened.json');
const readOpened = (p: UpgradeParams): OpenedFacts | undefined =>
  existsSync(openedMarker(p)) ? (JSON.parse(readFileSync(openedMarker(p), 'utf8')) as OpenedFacts) : undefined;

/**
 * Moves the data directory of a new cluster that has served clients aside, 0700, so that the writes
 * it acknowledged stay recoverable; a WAL directory of its own stays where it is (the moved
 * directory's pg_wal link still names it). Returns what was kept, and where, for the report.
 */
function keepAside(p: UpgradeParams): string {
  const aside = `${p.new.dataDir}.rolled-back-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  renameSync(p.new.dataDir, aside);
  chmodSync(aside, 0o700);
  return `the ${p.new.major} cluster served clients: its data directory is moved aside to ${aside} (0700), not deleted${p.new.waldir ? `; its WAL stays in ${p.new.waldir}` : ''}; writes made there since it opened are recoverable from it`;
}

/** postgresql-common's tools must be there to run both clusters, and the old cluster's new port free. */
async function debianChecks(p: UpgradeParams): Promise<CheckResult[]> {
  const d = p.debian!;
  const free = await portAvailable(d.oldClusterPort);
  const auto = join(p.old.dataDir, 'postgresql.auto.conf');
  const blocker = portHandOverBlocker({
    portOrigin: p.old.server.origins.port,
    autoConfPort: existsSync(auto) ? lastValues(readConfigTree(auto)).get('port')?.value : undefined,
  });
  return [
    blocker
      ? check.fail('port hand-over', blocker)
      : check.pass(
          'port hand-over',
          `the port is set in ${join(d.oldConfDir, 'postgresql.conf')} (or by default): changing it there moves ${d.oldVersion}/${d.cluster}`,
        ),
    existsSync(PG_CTLCLUSTER)
      ? check.pass('postgresql-common', `${PG_CTLCLUSTER} starts and stops ${d.oldVersion}/${d.cluster} and ${d.newVersion}/${d.cluster}`)
      : check.fail('postgresql-common', `${PG_CTLCLUSTER} is missing: the clusters in /etc/postgresql cannot be run as their layout wants`),
    free
      ? check.pass(
          'port for the old cluster',
          `${d.oldVersion}/${d.cluster} moves to port ${d.oldClusterPort}, free now; ${d.newVersion}/${d.cluster} takes port ${d.port}`,
        )
      : check.fail('port for the old cluster', `port ${d.oldClusterPort} is in use now: plan again to pick another`),
  ];
}

function migration(p: UpgradeParams) {
  return migrateConfig({
    oldConfigDir: p.old.configDir,
    newConfigDir: p.new.configDir,
    oldDataDir: p.old.dataDir,
    newDataDir: p.new.dataDir,
    oldCatalog: loadCatalog(p.old.major),
    newCatalog: loadCatalog(p.new.major),
    walSegmentBytes: p.old.walSegmentBytes,
    debian: p.debian,
  });
}

/**
 * Makes a directory of the new cluster with its missing parents, all the owner's (as root): 0700
 * inside the data directory, 0755 in a configuration tree of its own (postgresql-common's
 * /etc/postgresql/17/main, which pg_lsclusters reads as any user).
 */
function makeClusterDir(p: UpgradeParams, dir: string): void {
  const first = mkdirSync(dir, { recursive: true, mode: isInside(dir, p.new.dataDir) ? 0o700 : 0o755 });
  if (!first || !isRoot()) return;
  for (let d = dir; d.startsWith(first); d = dirname(d)) chownSync(d, owner(p).uid, owner(p).gid);
}

const configStep = defineStep<UpgradeParams>({
  kind: 'upgrade.config',
  title: (p) =>
    `Carry the configuration to ${p.new.major} (postgresql.conf and includes, postgresql.auto.conf, pg_hba.conf, pg_ident.conf${p.debian ? `, ${CLUSTER_FILES.join(', ')} into ${p.debian.newConfDir}` : ''})`,
  async check(_ctx, p) {
    const m = migration(p);
    const notes = m.files.flatMap((f) => f.notes);
    return [
      ...m.blockers.map((b) => check.fail('configuration for the new version', b)),
      check.info('configuration migration', notes.length ? notes.join('; ') : 'every setting carries over unchanged'),
    ];
  },
  async plan(_ctx, p) {
    const m = migration(p);
    return m.files.map((f): PlannedAction => ({
      kind: 'file',
      path: f.to,
      change: 'create',
      mode: '0600',
      note: `from ${f.from}${f.notes.length ? `: ${f.notes.join('; ')}` : ', unchanged'}`,
      diff: f.before !== f.after ? (m.diff.split(/(?=^Index: |^===)/m).find((d) => d.includes(f.to)) ?? undefined) : undefined,
    }));
  },
  async apply(_ctx, p) {
    const m = migration(p);
    for (const f of m.files) {
      makeClusterDir(p, dirname(f.to));
      writeFileSync(f.to, f.after, { mode: 0o600 });
      if (isRoot()) chownSync(f.to, owner(p).uid, owner(p).gid);
    }
    return { files: m.files.length, changed: m.files.filter((f) => f.before !== f.after).length };
  },
  async verify(ctx, p) {
    const m = migration(p);
    const differing = m.files.filter((f) => !existsSync(f.to) || readFileSync(f.to, 'utf8') !== f.after);
    if (differing.length) return { ok: false, detail: `not yet written: ${differing.map((f) => f.to).join(', ')}` };
    // the new server itself must accept the carried configuration
    const args = ['-D', p.new.dataDir, '-C', 'shared_preload_libraries'];
    if (p.new.configDir !== p.new.dataDir) args.push('-c', `config_file=${join(p.new.configDir, 'postgresql.conf')}`);
    const res = await ctx.runner.run(asOwner(p, bin(p.new.bindir, 'postgres'), args));
    return res.exitCode === 0
      ? { ok: true, detail: `${m.files.length} files carried; postgres ${p.new.major} accepts them` }
      : { ok: false, detail: `postgres ${p.new.major} rejects the configuration: ${res.stderr.trim()}` };
  },
  async rollback(ctx, p) {
    // files in the new data directory go with it (the initdb step's rollback); a configuration directory of its own goes here
    if (p.new.configDir === p.new.dataDir) return;
    await serverOf(ctx, p, 'new').stop(); // pg_ctlcluster reads the configuration to stop the server
    rmSync(p.new.configDir, { recursive: true, force: true });
    if (dirEmptyOrAbsent(dirname(p.new.configDir))) rmdirSync(dirname(p.new.configDir));
  },
  rollbackNote: (p) =>
    p.new.configDir === p.new.dataDir ? 'nothing of its own: the new cluster is removed by the initdb rollback' : `remove ${p.new.configDir}`,
});

function pgUpgradeArgs(p: UpgradeParams, newPort: number, check: boolean, socketDir: string): string[] {
  const args = [
    '-b',
    p.old.bindir,
    '-B',
    p.new.bindir,
    '-d',
    // a configuration directory the old server runs from: pg_upgrade finds data_directory there itself (postgres -C)
    p.old.server.configDir ?? p.old.dataDir,
    '-D',
    p.new.dataDir,
    '-p',
    String(p.old.port),
    '-P',
    String(newPort),
    '-s',
    socketDir,
    '-U',
    p.superuser,
    '-j',
    String(p.jobs),
  ];
  // the old server's other options (port, sockets) are pg_upgrade's own choice while it runs
  if (p.old.server.configFile && !p.old.server.configDir) args.push('-o', `-c config_file=${p.old.server.configFile}`);
  if (p.new.configDir !== p.new.dataDir) args.push('-O', `-c config_file=${join(p.new.configDir, 'postgresql.conf')}`);
  return [...args, check ? '--check' : `--${p.mode}`];
}

function ensureWorkDir(p: UpgradeParams): void {
  mkdirSync(p.workDir, { recursive: true, mode: 0o700 });
  if (isRoot()) chownSync(p.workDir, owner(p).uid, owner(p).gid);
}

const socketOf = (p: UpgradeParams) => (p.access.host?.startsWith('/') ? p.access.host : p.workDir);

/** pg_upgrade prints its failure on stdout and leaves details in the new cluster's pg_upgrade_output.d. */
function pgUpgradeFailure(p: UpgradeParams, res: { stdout: string; stderr: string }): string {
  // pg_upgrade reports a failed helper program (pg_resetwal, pg_ctl) on stderr, its progress on stdout
  const tail = [res.stdout, res.stderr]
    .map((s) => s.trim())
    .filter(Boolean)
    .join('\n')
    .split('\n')
    .slice(-15)
    .join('\n');
  const logs = join(p.new.dataDir, 'pg_upgrade_output.d');
  return `${tail}${existsSync(logs) ? `\nlogs: ${logs}` : ''}`;
}

const precheckStep = defineStep<UpgradeParams>({
  kind: 'upgrade.precheck',
  title: () => 'pg_upgrade --check against the live old cluster',
  check: async () => [],
  async plan(_ctx, p) {
    return [
      {
        kind: 'command',
        argv: [bin(p.new.bindir, 'pg_upgrade'), ...pgUpgradeArgs(p, 0, true, socketOf(p)).map((a, i, all) => (all[i - 1] === '-P' ? 'FREE_PORT' : a))],
        runAs: p.old.owner,
        note: 'the old cluster keeps running; nothing is changed',
      },
    ];
  },
  async apply(ctx, p) {
    ensureWorkDir(p);
    const inv = asOwner(p, bin(p.new.bindir, 'pg_upgrade'), pgUpgradeArgs(p, await freePort(), true, socketOf(p)), { cwd: p.workDir });
    const res = await ctx.runner.run(inv);
    if (res.exitCode !== 0) throw new PgscaleError(`pg_upgrade --check failed:\n${pgUpgradeFailure(p, res)}`, ExitCode.FailedAfterChange);
    writeFileAtomic(join(p.workDir, 'check-passed'), new Date().toISOString());
    return { output: res.stdout.split('\n').filter((l) => /ok$|Clusters are compatible/.test(l.trim())).length };
  },
  async verify(_ctx, p) {
    return existsSync(join(p.workDir, 'check-passed'))
      ? { ok: true, detail: 'clusters are compatible' }
      : { ok: false, detail: 'pg_upgrade --check has not passed' };
  },
  async rollback(_ctx, p) {
    rmSync(join(p.workDir, 'check-passed'), { force: true });
  },
  rollbackNote: () => 'nothing to undo (read-only check)',
  estimateSeconds: () => 10,
});

async function catalogFacts(ctx: StepContext, access: UpgradeParams['access'], dbnames: readonly string[]): Promise<CatalogFacts> {
  const out: CatalogFacts = {};
  for (const dbname of dbnames) {
    out[dbname] = Object.fromEntries(
      (await withDb(ctx, access, (db) => db.query(statements.catalogFacts()), dbname)).map((r) => [
        r.relation,
        `${r.kind} ${r.relfilenode} ${r.main} ${r.fsm} ${r.vm} ${r.init}`,
      ]),
    );
  }
  return out;
}

const factsFile = (p: UpgradeParams) => join(p.workDir, 'catalog-before.json');
const savedHba = (p: UpgradeParams) => join(p.workDir, 'pg_hba.conf.before-block');

/** Writes a file in place of another atomically, keeping its owner and mode (the server must still read it). */
function replaceKeepingOwner(path: string, text: string): void {
  const st = statSync(path);
  const tmp = `${path}.pgscale-${process.pid}`;
  writeFileSync(tmp, text, { mode: st.mode & 0o7777 });
  chmodSync(tmp, st.mode & 0o7777);
  if (isRoot()) chownSync(tmp, st.uid, st.gid);
  renameSync(tmp, path);
}

/** Refuses new connections to the old server (existing sessions are terminated next); the original is kept in the work directory. */
async function blockConnections(ctx: StepContext, p: UpgradeParams): Promise<void> {
  const current = readFileSync(p.old.hbaFile, 'utf8');
  if (!existsSync(savedHba(p))) writeFileAtomic(savedHba(p), withoutBlock(current));
  const own = { user: p.access.user ?? p.superuser, local: (p.access.host ?? '/').startsWith('/'), peer: Boolean(p.access.runAs) };
  replaceKeepingOwner(p.old.hbaFile, blockedHba(current, own));
  await serverOf(ctx, p, 'old').reload();
  const errors = await withDb(ctx, p.access, (db) => db.query(statements.hbaErrors()));
  if (errors.length)
    throw new PgscaleError(
      `the blocked pg_hba.conf does not parse: ${errors.map((e) => `line ${e.line_number}: ${e.error}`).join('; ')}`,
      ExitCode.FailedAfterChange,
    );
}

/** Gives the old pg_hba.conf back (and the old server its rules, when it runs). */
async function liftBlock(ctx: StepContext, p: UpgradeParams): Promise<boolean> {
  if (!existsSync(savedHba(p))) return false;
  replaceKeepingOwner(p.old.hbaFile, readFileSync(savedHba(p), 'utf8'));
  rmSync(savedHba(p), { force: true });
  const old = serverOf(ctx, p, 'old');
  if (await old.isRunning()) await old.reload();
  return true;
}

const stopOldStep = defineStep<UpgradeParams>({
  kind: 'upgrade.stop-old',
  title: (p) => `Block new connections, stop the old ${p.old.major} cluster cleanly (downtime starts)`,
  downtime: true,
  check: async () => [],
  async plan(ctx, p) {
    const stop = serverOf(ctx, p, 'old').stopInvocation('fast');
    return [
      {
        kind: 'sql',
        target: 'old cluster',
        sql: `-- refuse if a transaction is older than ${p.maxTransactionSeconds} s\n${statements.oldestTransactionSeconds().text}`,
      },
      { kind: 'sql', target: 'old cluster', sql: 'checkpoint', note: 'while clients still work: the stop then has little left to write' },
      {
        kind: 'file',
        path: p.old.hbaFile,
        change: 'modify',
        note: `reject rules for every other client at the top (pgscale's own connection first); the original is kept in ${savedHba(p)} and restored when the new cluster opens or on rollback`,
      },
      { kind: 'service', action: 'reload', target: `old cluster (${p.old.dataDir})` },
      {
        kind: 'sql',
        target: 'old cluster',
        sql: `${statements.terminateOtherSessions().text};\ncheckpoint`,
        note: 'then, per database, the catalog facts below (O(catalog): no row is read)',
      },
      { kind: 'sql', target: 'old cluster, every database', sql: statements.catalogFacts().text },
      { kind: 'command', argv: startArgv(stop), runAs: p.old.owner, note: 'fast shutdown; immediate is never used without your consent' },
    ];
  },
  async apply(ctx, p) {
    ensureWorkDir(p);
    const old = serverOf(ctx, p, 'old');
    let blockedAt = new Date().toISOString();
    if (await old.isRunning()) {
      const [oldest] = await withDb(ctx, p.access, (db) => db.query(statements.oldestTransactionSeconds()));
      if ((oldest?.seconds ?? 0) > p.maxTransactionSeconds) {
        await liftBlock(ctx, p);
        throw new PgscaleError(
          `a transaction has been open for ${Math.round(oldest!.seconds)} s (limit ${p.maxTransactionSeconds} s): not stopping the old cluster`,
          ExitCode.FailedNoChange,
          'end it (or raise --max-transaction-age), then run the upgrade again: this run undoes what it prepared',
        );
      }
      // dirty buffers are written while clients still work: the checkpoints inside the window then have little to write
      await withDb(ctx, p.access, (db) => db.query(statements.checkpoint()));
      await blockConnections(ctx, p);
      blockedAt = new Date().toISOString();
      // sessions take a moment to go after pg_terminate_backend: the snapshot must see none writing
      for (let i = 0; i < 50; i++) {
        await withDb(ctx, p.access, (db) => db.query(statements.terminateOtherSessions()));
        const [left] = await withDb(ctx, p.access, (db) => db.query(statements.otherSessions()));
        if (!left?.count) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await withDb(ctx, p.access, (db) => db.query(statements.checkpoint()));
      writeFileAtomic(factsFile(p), JSON.stringify(await catalogFacts(ctx, p.access, await databases(ctx, p))));
      await old.stop({ timeoutSeconds: 120 });
    }
    return { blockedAt, stoppedAt: new Date().toISOString() };
  },
  async verify(ctx, p) {
    const old = serverOf(ctx, p, 'old');
    const state = await controlState(ctx, p, 'old');
    const running = await old.isRunning();
    return !running && state === 'shut down' && existsSync(factsFile(p))
      ? { ok: true, detail: 'connections blocked, old cluster shut down cleanly' }
      : { ok: false, detail: `old cluster ${running ? 'running' : (state ?? 'unknown')}` };
  },
  async rollback(ctx, p) {
    // what pg_upgrade left running was stopped by its own step's rollback, which runs first
    await liftBlock(ctx, p);
    await serverOf(ctx, p, 'old').start();
    rmSync(factsFile(p), { force: true });
  },
  rollbackNote: (p) => `restore ${p.old.hbaFile}, start the old ${p.old.major} cluster again as it ran (${listeningOrigin(p.old.server)})`,
  estimateSeconds: () => 5,
});

/** The old cluster's files the port hand-over changes, each with its change (applied to the original, so a repeat is harmless). */
function portHandOver(d: DebianUpgrade): { path: string; saved: string; change: (text: string) => string; note: string }[] {
  const conf = join(d.oldConfDir, 'postgresql.conf');
  return [
    {
      path: conf,
      saved: 'postgresql.conf',
      change: (text) => withPort(text, conf, d.oldClusterPort, `pgscale upgrade: ${d.newVersion}/${d.cluster} took port ${d.port}`),
      note: `port ${d.oldClusterPort}: ${d.newVersion}/${d.cluster} takes port ${d.port}`,
    },
    { path: join(d.oldConfDir, 'start.conf'), saved: 'start.conf', change: manualStartConf, note: 'manual: the old cluster no longer starts at boot' },
  ];
}

/** The original of a file the hand-over changes, kept in the work directory: null when it did not exist. */
const savedOriginal = (p: UpgradeParams, name: string) => join(p.workDir, `old-${name}.before-port-handover.json`);

const debianPortsStep = defineStep<UpgradeParams>({
  kind: 'upgrade.debian-ports',
  title: (p) =>
    `Hand port ${p.debian!.port} to ${p.debian!.newVersion}/${p.debian!.cluster}: ${p.debian!.oldVersion}/${p.debian!.cluster} moves to port ${p.debian!.oldClusterPort}, start.conf manual (as pg_upgradecluster does)`,
  downtime: true,
  check: async () => [],
  async plan(_ctx, p) {
    return portHandOver(p.debian!).map((f): PlannedAction => {
      const before = existsSync(f.path) ? readFileSync(f.path, 'utf8') : '';
      return {
        kind: 'file',
        path: f.path,
        change: 'modify',
        note: `${f.note}; the original is kept in ${savedOriginal(p, f.saved)} and put back on rollback`,
        diff: createTwoFilesPatch(f.path, f.path, before, f.change(before)),
      };
    });
  },
  async apply(_ctx, p) {
    ensureWorkDir(p);
    for (const f of portHandOver(p.debian!)) {
      if (!existsSync(savedOriginal(p, f.saved)))
        writeFileAtomic(savedOriginal(p, f.saved), JSON.stringify({ text: existsSync(f.path) ? readFileSync(f.path, 'utf8') : null }));
      const original = (JSON.parse(readFileSync(savedOriginal(p, f.saved), 'utf8')) as { text: string | null }).text;
      if (original === null) writeOwned(p, f.path, f.change(''));
      else replaceKeepingOwner(f.path, f.change(original));
    }
    return { oldClusterPort: p.debian!.oldClusterPort };
  },
  async verify(_ctx, p) {
    const d = p.debian!;
    const port = lastValues(readConfigTree(join(d.oldConfDir, 'postgresql.conf'))).get('port')?.value;
    const mode = startMode(existsSync(join(d.oldConfDir, 'start.conf')) ? readFileSync(join(d.oldConfDir, 'start.conf'), 'utf8') : undefined);
    return port === String(d.oldClusterPort) && mode === 'manual'
      ? { ok: true, detail: `${d.oldVersion}/${d.cluster} is configured for port ${port}, start.conf manual` }
      : { ok: false, detail: `${d.oldVersion}/${d.cluster} has port ${port ?? '5432 (default)'}, start.conf ${mode}` };
  },
  async rollback(_ctx, p) {
    for (const f of portHandOver(p.debian!)) {
      if (!existsSync(savedOriginal(p, f.saved))) continue;
      const original = (JSON.parse(readFileSync(savedOriginal(p, f.saved), 'utf8')) as { text: string | null }).text;
      if (original === null) rmSync(f.path, { force: true });
      else replaceKeepingOwner(f.path, original);
      rmSync(savedOriginal(p, f.saved), { force: true });
    }
  },
  rollbackNote: (p) => `put back ${p.debian!.oldVersion}/${p.debian!.cluster}'s postgresql.conf (port ${p.debian!.port}) and start.conf`,
  estimateSeconds: () => 1,
});

/** A new file of the old cluster's, the owner's as its neighbours are. */
function writeOwned(p: UpgradeParams, path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o644 });
  if (isRoot()) chownSync(path, owner(p).uid, owner(p).gid);
}

/**
 * pg_upgrade and the pg_ctl it runs, working on this run's data directories (orphans of a killed
 * run). A pg_ctl still starting a server must be waited for too: until that postmaster has moved
 * into its data directory, /proc does not show it as that directory's server.
 */
function pgUpgradeProcesses(p: UpgradeParams): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      const program = argv[0]?.split('/').pop();
      const onOurs = argv.includes(p.new.dataDir) || (program === 'pg_ctl' && argv.includes(p.old.dataDir));
      if ((program === 'pg_upgrade' || program === 'pg_ctl') && onOurs) out.push(Number(name));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/**
 * What a killed run may have left on the run's data directories: a pg_upgrade still at work (given
 * 30 s to finish, then stopped) and the servers it started (pg_ctl detaches them; the new one runs
 * with fsync=off). Found from postmaster.pid and /proc, not process groups; every one is stopped.
 */
async function stopLeftovers(ctx: StepContext, p: UpgradeParams): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (pgUpgradeProcesses(p).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  for (const pid of pgUpgradeProcesses(p)) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone meanwhile */
    }
  }
  while (pgUpgradeProcesses(p).length && Date.now() < deadline + 10_000) await new Promise((r) => setTimeout(r, 100));
  // a server whose pg_ctl was killed (a resume's orphan cleanup kills pg_upgrade's process group)
  // may still be coming up: scan until two scans half a second apart find none
  const found: RunningPostmaster[] = [];
  for (let quiet = 0; quiet < 2 && Date.now() < deadline + 40_000;) {
    const stopped = await stopLeftoverPostmasters([p.old.dataDir, p.new.dataDir]);
    found.push(...stopped);
    quiet = stopped.length ? 0 : quiet + 1;
    if (quiet < 2) await new Promise((r) => setTimeout(r, 500));
  }
  if (found.length) ctx.progress.message(`stopped ${found.map((pm) => `${pm.dataDir} (pid ${pm.pid}${pm.unsafe ? ', fsync=off' : ''})`).join(', ')}`);
  const still = postmastersOn([p.old.dataDir, p.new.dataDir]);
  if (still.length)
    throw new PgscaleError(
      `servers still running on ${still.map((pm) => `${pm.dataDir} (pid ${pm.pid})`).join(', ')}`,
      ExitCode.FailedAfterChange,
      'stop them (pg_ctl stop -m immediate after checking), then retry',
    );
}

/** Link mode disables the old cluster by renaming global/pg_control: undoing that is the rollback. */
function restoreOldControlFile(p: UpgradeParams): boolean {
  const control = join(p.old.dataDir, 'global', 'pg_control');
  if (!existsSync(control) && existsSync(`${control}.old`)) {
    renameSync(`${control}.old`, control);
    return true;
  }
  return false;
}

const pgUpgradeStep = defineStep<UpgradeParams>({
  kind: 'upgrade.pg_upgrade',
  title: (p) => `pg_upgrade --${p.mode} with ${p.jobs} jobs`,
  downtime: true,
  check: async () => [],
  async plan(_ctx, p) {
    return [
      {
        kind: 'command',
        argv: [bin(p.new.bindir, 'pg_upgrade'), ...pgUpgradeArgs(p, 0, false, privateSocketDir(p)).map((a, i, all) => (all[i - 1] === '-P' ? 'FREE_PORT' : a))],
        runAs: p.old.owner,
        note: `its servers listen only in ${privateSocketDir(p)}; ${p.mode === 'link' ? 'hard links: the old cluster stays restorable until the new one starts (global/pg_control.old is renamed back on rollback)' : 'the old cluster is left intact'}`,
      },
    ];
  },
  async apply(ctx, p) {
    ensureWorkDir(p);
    const marker = join(p.workDir, 'pg_upgrade-started');
    if (existsSync(marker)) {
      // an earlier attempt was cut off: pg_upgrade cannot continue into a half-upgraded cluster,
      // so the new cluster is made again from scratch (the old one is untouched until start)
      await stopLeftovers(ctx, p);
      restoreOldControlFile(p);
      await initdbStep.apply(ctx, p);
      await configStep.apply(ctx, p);
    }
    ensurePrivateSocketDir(p);
    writeFileAtomic(marker, new Date().toISOString());
    const inv = asOwner(p, bin(p.new.bindir, 'pg_upgrade'), pgUpgradeArgs(p, await freePort(), false, privateSocketDir(p)), {
      cwd: p.workDir,
      signal: ctx.signal,
      onStart: ctx.trackProcess,
    });
    ctx.progress.message(`pg_upgrade --${p.mode} running`);
    const res = await ctx.runner.run(inv);
    if (res.exitCode !== 0) {
      await stopLeftovers(ctx, p);
      throw new PgscaleError(`pg_upgrade failed:\n${pgUpgradeFailure(p, res)}`, ExitCode.FailedAfterChange, '`pgscale rollback` restores the old cluster');
    }
    writeFileAtomic(join(p.workDir, 'pg_upgrade-done'), new Date().toISOString());
    return { seconds: Math.round(res.durationMs / 100) / 10, extensionScript: existsSync(join(p.workDir, 'update_extensions.sql')) };
  },
  async verify(ctx, p) {
    const state = await controlState(ctx, p, 'new');
    return existsSync(join(p.workDir, 'pg_upgrade-done')) && state
      ? { ok: true, detail: `upgraded (${p.mode} mode)` }
      : { ok: false, detail: 'pg_upgrade has not completed' };
  },
  async rollback(ctx, p) {
    await stopLeftovers(ctx, p);
    restoreOldControlFile(p);
    rmSync(join(p.workDir, 'pg_upgrade-started'), { force: true });
    rmSync(join(p.workDir, 'pg_upgrade-done'), { force: true });
  },
  rollbackNote: (p) =>
    p.mode === 'link'
      ? 'stop what pg_upgrade left running, rename the old global/pg_control.old back (the new cluster has never started, so the shared files are unchanged)'
      : 'stop what pg_upgrade left running; copy mode leaves the old cluster intact',
  estimateSeconds: (p) => (p.mode === 'link' || p.mode === 'clone' ? 20 : 60),
});

function ensurePrivateSocketDir(p: UpgradeParams): void {
  mkdirSync(privateSocketDir(p), { recursive: true, mode: 0o700 });
  if (isRoot()) chownSync(privateSocketDir(p), owner(p).uid, owner(p).gid);
}

const sharesFiles = (p: UpgradeParams) => p.mode === 'link' || p.mode === 'clone';
const startedMarker = (p: UpgradeParams) => join(p.workDir, 'new-started');
const verifiedPrivately = (p: UpgradeParams) => join(p.workDir, 'verified-privately.json');

async function newMajorAnswering(ctx: StepContext, access: UpgradeParams['access']): Promise<{ major: number; version: string }> {
  const [v] = await withDb(ctx, access, (db) => db.query(statements.serverVersionNum()));
  return { major: Math.floor((v?.server_version_num ?? 0) / 10000), version: v?.server_version ?? 'unknown' };
}

const startNewStep = defineStep<UpgradeParams>({
  kind: 'upgrade.start-new',
  title: (p) => `Start PostgreSQL ${p.new.major} on a private socket and verify it`,
  downtime: true,
  pointOfNoReturn: sharesFiles,
  check: async () => [],
  async plan(ctx, p) {
    return [
      {
        kind: 'command',
        argv: startArgv(serverOf(ctx, p, 'new').startInvocation({ privateSocketDir: privateSocketDir(p) })),
        runAs: p.old.owner,
        note: `socket in ${privateSocketDir(p)}, no TCP: no client can reach it yet`,
      },
      {
        kind: 'sql',
        target: 'new cluster (private socket), every database',
        sql: statements.catalogFacts().text,
        note: 'compared with the facts taken before the stop: same relations, relfilenodes and fork sizes',
      },
      { kind: 'sql', target: 'new cluster (private socket)', sql: statements.scratchWrite().text },
    ];
  },
  async apply(ctx, p) {
    const server = serverOf(ctx, p, 'new');
    ensurePrivateSocketDir(p);
    if (!existsSync(startedMarker(p))) writeFileAtomic(startedMarker(p), new Date().toISOString());
    if (!(await server.isRunning())) await server.start({ privateSocketDir: privateSocketDir(p) });
    // a resumed run may find it already on its real sockets: verify wherever it answers
    const access = (await server.ready(privateSocketDir(p))) ? privateAccess(p) : p.access;
    const answer = await newMajorAnswering(ctx, access);
    if (answer.major !== p.new.major) throw new PgscaleError(`the new server answers with ${answer.version}, not ${p.new.major}`, ExitCode.FailedAfterChange);
    const before = JSON.parse(readFileSync(factsFile(p), 'utf8')) as CatalogFacts;
    const after = await catalogFacts(ctx, access, Object.keys(before));
    const diffs = catalogDifferences(before, after);
    // before the point of no return (copy mode) a difference stops the run: the old cluster is intact.
    // Past it (link/clone) nothing can go back: the difference is reported, never a dead end.
    if (diffs.length && !sharesFiles(p))
      throw new PgscaleError(
        `catalog facts differ after pg_upgrade: ${diffs.slice(0, 10).join('; ')}`,
        ExitCode.FailedAfterChange,
        '`pgscale rollback` gives the old cluster back (copy mode left it intact)',
      );
    await withDb(ctx, access, (db) => db.query(statements.scratchWrite()));
    const relations = Object.values(before).reduce((a, r) => a + Object.keys(r).length, 0);
    writeFileAtomic(verifiedPrivately(p), JSON.stringify({ relations, differences: diffs.slice(0, 50) }));
    return { version: answer.version, relationsCompared: relations, catalogDifferences: diffs.slice(0, 50) };
  },
  async verify(ctx, p) {
    if (!existsSync(verifiedPrivately(p))) return { ok: false, detail: 'not verified yet' };
    if (!(await serverOf(ctx, p, 'new').isRunning())) return { ok: false, detail: 'new cluster not running' };
    const v = JSON.parse(readFileSync(verifiedPrivately(p), 'utf8')) as { relations: number; differences: string[] };
    return {
      ok: true,
      detail: `${v.relations} relations ${v.differences.length ? `compared, ${v.differences.length} DIFFER (reported; past the point of no return)` : 'match (relfilenodes and fork sizes)'}; a write and a checkpoint succeeded`,
    };
  },
  async refusesRollback(_ctx, p) {
    return sharesFiles(p) && existsSync(startedMarker(p))
      ? `the new cluster has started on files it shares with the old one (${p.mode} mode): the old cluster can no longer start`
      : undefined;
  },
  async rollback(ctx, p) {
    await serverOf(ctx, p, 'new').stop();
    rmSync(verifiedPrivately(p), { force: true });
    rmSync(startedMarker(p), { force: true });
  },
  rollbackNote: (p) =>
    sharesFiles(p)
      ? `past this point the old cluster's files are shared with the new one: rollback is refused; to go back, restore from the backup${p.backup ? `: \`pgscale backup restore ${p.backup.dest} --to NEW_PGDATA --bindir ${p.old.bindir}\` makes a ${p.old.major} cluster of it` : ' (none was taken: --no-backup)'}`
      : 'stop the new cluster (copy mode: the old cluster is intact and starts again)',
  estimateSeconds: () => 3,
});

const openStep = defineStep<UpgradeParams>({
  kind: 'upgrade.open',
  title: (p) => `Restart PostgreSQL ${p.new.major} where the old one listened (port ${p.new.server.port}) and let clients in (downtime ends)`,
  downtime: true,
  check: async () => [],
  async plan(ctx, p) {
    const server = serverOf(ctx, p, 'new');
    return [
      { kind: 'command', argv: startArgv(server.stopInvocation('fast')), runAs: p.old.owner, note: 'the private start ends' },
      { kind: 'file', path: p.old.hbaFile, change: 'modify', note: `the connection block is lifted: the original from ${savedHba(p)} is put back` },
      { kind: 'command', argv: startArgv(server.startInvocation()), runAs: p.old.owner, note: listeningOrigin(p.new.server) },
      { kind: 'sql', target: `new cluster, port ${p.new.server.port}`, sql: statements.writeProbe().text, note: 'downtime ends when this write succeeds' },
    ];
  },
  async apply(ctx, p) {
    const server = serverOf(ctx, p, 'new');
    // from here clients may write to the new cluster: a rollback must keep what they wrote
    if (!existsSync(openedMarker(p))) writeFileAtomic(openedMarker(p), JSON.stringify({ at: new Date().toISOString() } satisfies OpenedFacts));
    if (!(await server.ready())) {
      await server.stop();
      await liftBlock(ctx, p);
      await server.start();
    }
    await liftBlock(ctx, p);
    await withDb(ctx, p.access, (db) => db.query(statements.writeProbe()));
    const opened = readOpened(p)!;
    if (opened.walBytesAtOpen === undefined) {
      const [wal] = await withDb(ctx, p.access, (db) => db.query(statements.walPosition()));
      if (wal?.wal_bytes) writeFileAtomic(openedMarker(p), JSON.stringify({ ...opened, walBytesAtOpen: wal.wal_bytes } satisfies OpenedFacts));
    }
    const atOpen = readOpened(p)!.walBytesAtOpen;
    return { acceptingWritesAt: new Date().toISOString(), openedAt: opened.at, ...(atOpen ? { lsnAtOpen: lsnOf(BigInt(atOpen)) } : {}) };
  },
  async verify(ctx, p) {
    if (!(await serverOf(ctx, p, 'new').isRunning())) return { ok: false, detail: 'new cluster not running' };
    if (existsSync(savedHba(p))) return { ok: false, detail: 'the connection block is still in place' };
    try {
      const answer = await newMajorAnswering(ctx, p.access);
      return answer.major === p.new.major
        ? { ok: true, detail: `PostgreSQL ${answer.version} accepts connections and writes where the old one listened` }
        : { ok: false, detail: `port ${p.new.server.port} answers with ${answer.version}` };
    } catch (e) {
      return { ok: false, detail: (e as Error).message };
    }
  },
  async rollbackLoses(ctx, p) {
    const opened = readOpened(p);
    if (!opened) return undefined;
    return writesSinceOpen(opened, await newWalPosition(ctx, p), { major: p.new.major, oldMajor: p.old.major, keptAs: `${p.new.dataDir}.rolled-back` });
  },
  async rollback(ctx, p) {
    await serverOf(ctx, p, 'new').stop();
  },
  rollbackNote: (p) =>
    sharesFiles(p)
      ? 'not reached by a rollback (past the point of no return)'
      : 'stop the new cluster (copy mode: the old cluster is intact and starts again); writes made on it since it opened are not in the old cluster',
  estimateSeconds: () => 3,
});

/** The new cluster's WAL position: asked of it while it runs, else its last checkpoint from pg_control; undefined when neither answers. */
async function newWalPosition(ctx: StepContext, p: UpgradeParams): Promise<bigint | undefined> {
  try {
    if (await serverOf(ctx, p, 'new').isRunning()) {
      const [wal] = await withDb(ctx, p.access, (db) => db.query(statements.walPosition()));
      return wal?.wal_bytes ? BigInt(wal.wal_bytes) : undefined;
    }
    const control = await serverOf(ctx, p, 'new').controlData();
    return control ? lsnBytes(control.latestCheckpoint) : undefined;
  } catch {
    return undefined;
  }
}

const extensionsStep = defineStep<UpgradeParams>({
  kind: 'upgrade.extensions',
  title: () => 'Update extensions (the script pg_upgrade generated)',
  check: async () => [],
  async plan(_ctx, p) {
    return [
      {
        kind: 'command',
        argv: [bin(p.new.bindir, 'psql'), '-X', '-v', 'ON_ERROR_STOP=1', '-d', 'postgres', '-f', join(p.workDir, 'update_extensions.sql')],
        runAs: p.old.owner,
        note: 'only if pg_upgrade wrote the script',
      },
    ];
  },
  async apply(ctx, p) {
    const script = join(p.workDir, 'update_extensions.sql');
    if (!existsSync(script)) return { updated: false };
    await must(
      ctx,
      clientInvocation({ ...p.access, bindir: p.new.bindir }, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'postgres', '-f', script]),
      'updating extensions',
    );
    return { updated: true };
  },
  async verify(ctx, p) {
    const outdated: string[] = [];
    for (const dbname of await databases(ctx, p)) {
      for (const e of await withDb(ctx, p.access, (db) => db.query(statements.outdatedExtensions()), dbname))
        outdated.push(`${e.name} ${e.installed}→${e.available} in ${dbname}`);
    }
    // only what pg_upgrade's script covers must be current; others are the DBA's choice to update
    if (existsSync(join(p.workDir, 'update_extensions.sql')) && outdated.length) {
      const script = readFileSync(join(p.workDir, 'update_extensions.sql'), 'utf8');
      const missed = outdated.filter((o) => script.includes(`"${o.split(' ')[0]}"`) || script.includes(` ${o.split(' ')[0]};`));
      if (missed.length) return { ok: false, detail: `still outdated: ${missed.join(', ')}` };
    }
    return {
      ok: true,
      detail: outdated.length
        ? `extensions updated where needed; newer versions available: ${outdated.join(', ')}`
        : 'every extension is at its default version',
    };
  },
  rollbackNote: () => 'not undone (extension updates are part of the new cluster)',
});

/**
 * Deep verification, online: every row of a sample of the largest tables is read (exact counts)
 * and, where amcheck is installed, their btree indexes are checked. It runs after clients are back
 * and past the point of no return, so what it finds is reported, never a failed run.
 */
const verifyStep = defineStep<UpgradeParams>({
  kind: 'upgrade.verify',
  title: (p) =>
    `Deep verification while service is back: exact row counts of the ${p.sampleTables} largest tables per database, amcheck of their indexes where installed (reported)`,
  check: async () => [],
  async plan(_ctx, p) {
    return [
      { kind: 'sql', target: 'new cluster, every database', sql: statements.sampleRowCounts(p.sampleTables).text },
      {
        kind: 'sql',
        target: 'new cluster, databases with amcheck',
        sql: statements.btIndexCheck('INDEX').text,
        note: 'for each btree index of the sampled tables',
      },
    ];
  },
  async apply(ctx, p) {
    const findings: string[] = [];
    let tables = 0;
    let rows = 0;
    let indexes = 0;
    for (const dbname of await databases(ctx, p)) {
      try {
        await withDb(
          ctx,
          p.access,
          async (db) => {
            const sample = await db.query(statements.sampleRowCounts(p.sampleTables));
            tables += sample.length;
            rows += sample.reduce((a, r) => a + Number(r.row_count), 0);
            if (!(await db.query(statements.amcheckInstalled()))[0]?.installed || sample.length === 0) return;
            for (const { index_name } of await db.query(statements.btreeIndexesOf(sample.map((r) => r.table_name)))) {
              try {
                await db.query(statements.btIndexCheck(index_name));
                indexes++;
              } catch (e) {
                findings.push(`${dbname}.${index_name}: ${(e as Error).message}`);
              }
            }
          },
          dbname,
        );
      } catch (e) {
        findings.push(`${dbname}: ${(e as Error).message}`);
      }
    }
    const result = { tables, rows, indexesChecked: indexes, findings };
    writeFileAtomic(join(p.workDir, 'verified'), JSON.stringify(result));
    return result;
  },
  async verify(_ctx, p) {
    const marker = join(p.workDir, 'verified');
    if (!existsSync(marker)) return { ok: false, detail: 'not verified yet' };
    const v = JSON.parse(readFileSync(marker, 'utf8')) as { tables: number; rows: number; indexesChecked: number; findings: string[] };
    return {
      ok: true,
      detail: `${v.tables} tables read in full (${v.rows} rows), ${v.indexesChecked} indexes checked with amcheck; ${v.findings.length ? `FINDINGS: ${v.findings.slice(0, 5).join('; ')}` : 'no findings'}`,
    };
  },
  rollbackNote: () => 'nothing to undo (read-only)',
});

const analyzeStep = defineStep<UpgradeParams>({
  kind: 'upgrade.analyze',
  title: (p) =>
    p.new.major >= 18
      ? 'vacuumdb --analyze-in-stages --missing-stats-only (service is back)'
      : 'vacuumdb --analyze-in-stages (service is back; statistics are not carried before 18)',
  check: async () => [],
  async plan(_ctx, p) {
    return [
      { kind: 'command', argv: [bin(p.new.bindir, 'vacuumdb'), ...analyzeArgs(p)], runAs: p.access.runAs ?? undefined, env: ['PGHOST', 'PGPORT', 'PGUSER'] },
    ];
  },
  async apply(ctx, p) {
    ctx.progress.message('analyzing in stages');
    await must(
      ctx,
      clientInvocation({ ...p.access, bindir: p.new.bindir }, 'vacuumdb', analyzeArgs(p), { signal: ctx.signal, onStart: ctx.trackProcess }),
      'vacuumdb',
    );
    writeFileAtomic(join(p.workDir, 'analyzed'), new Date().toISOString());
  },
  async verify(_ctx, p) {
    return existsSync(join(p.workDir, 'analyzed')) ? { ok: true, detail: 'statistics rebuilt' } : { ok: false, detail: 'not analyzed yet' };
  },
  rollbackNote: () => 'nothing to undo',
  estimateSeconds: () => 30,
});

function analyzeArgs(p: UpgradeParams): string[] {
  return ['--all', '--analyze-in-stages', '--jobs', String(p.jobs), ...(p.new.major >= 18 ? ['--missing-stats-only'] : [])];
}

const upgradeSteps = [initdbStep, configStep, precheckStep, stopOldStep, pgUpgradeStep, startNewStep, openStep, extensionsStep, verifyStep, analyzeStep];
const stepIds = ['initdb', 'config', 'precheck', 'stop-old', 'pg_upgrade', 'start-new', 'open', 'extensions', 'verify', 'analyze'];

function configFingerprint(p: UpgradeParams): string {
  const h = createHash('sha256');
  for (const f of migration(p).files) h.update(f.from).update(f.before);
  return h.digest('hex').slice(0, 16);
}

export const upgradeOperation = defineOperation<UpgradeParams>({
  name: 'upgrade',
  closingReport: upgradeReport,
  // the old server, and the new one on the same socket and port once it is open
  serverAccess: (p) => p.access,
  describeTarget: (p) => ({ description: `${p.old.dataDir} (PostgreSQL ${p.old.major}, port ${p.old.port})`, lockKey: `cluster:${p.old.dataDir}` }),
  summary: (p) =>
    `Upgrade ${p.old.dataDir} from PostgreSQL ${p.old.major} to ${p.new.major} into ${p.new.dataDir} (--${p.mode}, ${p.jobs} jobs${p.new.waldir ? `, WAL on ${p.new.waldir}` : ''}${p.backup ? `, backup to ${p.backup.dest} first` : ', NO backup'})`,
  steps: (p) => [
    ...(p.backup ? backupOperation.steps(p.backup).map((s): StepData => ({ ...s, id: `backup-${s.id}` })) : []),
    ...upgradeSteps.flatMap((s, i): StepData[] => [
      // the standbys are checked again right before the stop, and rebuilt once the new primary accepts writes
      ...(p.replicas && stepIds[i] === 'stop-old' ? [{ id: 'standbys', kind: standbysCheckStep.kind, params: p }] : []),
      { id: stepIds[i]!, kind: s.kind, params: p },
      // the old cluster hands its port over while it is down, before pg_upgrade: its rollback comes before the old cluster starts again
      ...(p.debian && stepIds[i] === 'stop-old' ? [{ id: 'debian-ports', kind: debianPortsStep.kind, params: p }] : []),
      ...(p.replicas?.method === 'rebuild' && stepIds[i] === 'open' ? [{ id: 'standbys-rebuild', kind: rebuildStandbysStep.kind, params: p }] : []),
      ...(p.replicas?.method === 'rsync' ? rsyncStepsAfter(stepIds[i]!).map((s) => ({ id: s.id, kind: s.kind, params: p })) : []),
    ]),
  ],
  async fingerprint(ctx, p) {
    const identity = await withDb(ctx, p.access, async (db) => ({
      systemIdentifier: (await db.query(statements.systemIdentifier()))[0]?.system_identifier ?? null,
      serverVersion: (await db.query(statements.serverVersionNum()))[0]?.server_version ?? null,
      databases: (await db.query(statements.databases())).map((d) => d.name),
    }));
    return {
      ...identity,
      oldMajor: p.old.major,
      oldDataDir: p.old.dataDir,
      port: p.old.port,
      newDataDir: p.new.dataDir,
      configuration: configFingerprint(p),
      listening: listeningOrigin(p.old.server),
      listeningNow: listeningNow(p.old.dataDir),
    };
  },
});
