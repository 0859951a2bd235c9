/**
 * From the DBA's answers (flags or the wizard) and what detection found, the upgrade's exact
 * parameters. Decides; never prompts, never changes anything.
 */
import { statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { AuditSink } from '../audit.js';
import { estimateBackupBytes, newBackupToken } from '../backup/steps.js';
import { openDb, resolveTarget } from '../cluster/access.js';
import { findInstallations, type Installation } from '../cluster/installations.js';
import { badInput, refused } from '../errors.js';
import { detectCompute } from '../host/compute.js';
import type { HostRoot } from '../host/hostRoot.js';
import type { Runner } from '../runner.js';
import { statements } from '../sql.js';
import { serverLogPath } from '../cluster/serverLog.js';
import { userByName } from '../osUser.js';
import { gatherIdentity, runningServerLog } from '../server/postgres.js';
import { existingAncestor } from '../files.js';
import { carriedIdentity } from './rules.js';
import { newClusterPaths, nextFreePort } from './debianLayout.js';
import { debianClusterPorts } from '../cluster/discover.js';
import { portAvailable } from '../net.js';
import type { UpgradeMode, UpgradeParams } from './params.js';

export interface UpgradeChoices {
  pgdata?: string;
  dsn?: string;
  oldBindir?: string;
  newBindir?: string;
  toVersion?: number;
  newPgdata?: string;
  mode?: UpgradeMode;
  jobs?: number;
  waldir?: string;
  backupTo?: string;
  noBackup: boolean;
  force: boolean;
  maxTransactionSeconds: number;
  stateDir: string;
}

/** The default target: the next installed major after the source (17 for a 16 cluster). */
export function defaultTargetVersion(sourceMajor: number, installations: readonly Installation[]): number | undefined {
  return installations
    .map((i) => i.major)
    .filter((m) => m > sourceMajor)
    .sort((a, b) => a - b)[0];
}

/** /var/lib/postgresql/16/main → /var/lib/postgresql/17/main; otherwise DATA-17 beside it. */
export function defaultNewDataDir(oldDataDir: string, oldMajor: number, newMajor: number): string {
  const parts = oldDataDir.split('/');
  const i = parts.lastIndexOf(String(oldMajor));
  if (i > 0) return [...parts.slice(0, i), String(newMajor), ...parts.slice(i + 1)].join('/');
  return join(dirname(oldDataDir), `${basename(oldDataDir)}-${newMajor}`);
}

/** The port the old postgresql-common cluster moves to: the first from 5432 up no cluster is configured for and nothing listens on. */
async function freeClusterPort(oldPort: number): Promise<number> {
  const taken = new Set([oldPort, ...(await debianClusterPorts())]);
  for (;;) {
    const port = nextFreePort(taken);
    if (await portAvailable(port)) return port;
    taken.add(port);
  }
}

/** initdb options reproducing the old cluster's encoding, locale, provider and checksum setting. */
export function initdbArguments(o: {
  dataDir: string;
  superuser: string;
  encoding: string;
  collate: string;
  ctype: string;
  provider: string;
  icuLocale: string | null;
  checksums: boolean;
  newMajor: number;
  waldir: string | null;
}): string[] {
  const args = ['-D', o.dataDir, '-U', o.superuser, '-E', o.encoding, `--lc-collate=${o.collate}`, `--lc-ctype=${o.ctype}`];
  if (o.provider === 'i') args.push('--locale-provider=icu', `--icu-locale=${o.icuLocale}`);
  else if (o.provider === 'b') args.push('--locale-provider=builtin', `--builtin-locale=${o.icuLocale}`);
  if (o.checksums) args.push('--data-checksums');
  else if (o.newMajor >= 18) args.push('--no-data-checksums'); // 18 enables them by default: pg_upgrade needs both sides alike
  if (o.waldir) args.push('--waldir', o.waldir);
  return args;
}

/** The cluster to upgrade, checked first: running, a primary. The wizard calls it before it asks anything. */
export async function upgradeTarget(o: { pgdata?: string; bindir?: string; dsn?: string; runner: Runner; audit?: AuditSink }) {
  const target = await resolveTarget({ ...o, requireRunning: true });
  if (target.cluster?.role === 'standby') throw refused(`${target.cluster.dataDir} is a standby: upgrade the primary, then rebuild the standbys from it`);
  return target;
}

export async function decideUpgrade(c: UpgradeChoices, ctx: { runner: Runner; audit?: AuditSink; hostRoot: HostRoot }): Promise<UpgradeParams> {
  const target = await upgradeTarget({ pgdata: c.pgdata, bindir: c.oldBindir, dsn: c.dsn, runner: ctx.runner, audit: ctx.audit });
  const old = target.cluster;
  if (!old) throw badInput("pgscale upgrade needs the old cluster's data directory: pass --pgdata");
  const installations = await findInstallations(
    ctx.runner,
    [c.oldBindir, c.newBindir].filter((b): b is string => Boolean(b)),
  );
  const oldBindir = c.oldBindir ?? old.bindir;
  if (!oldBindir) throw badInput(`no PostgreSQL ${old.major} installation found for ${old.dataDir}`, 'pass --old-bindir');
  const newMajor = c.toVersion ?? (c.newBindir ? installations.find((i) => i.bindir === c.newBindir)?.major : defaultTargetVersion(old.major, installations));
  if (!newMajor) throw badInput(`no PostgreSQL newer than ${old.major} is installed`, 'install the target version, or pass --new-bindir');
  if (newMajor <= old.major) throw badInput(`--to-version ${newMajor} is not newer than the cluster's version ${old.major}`);
  const newBindir = c.newBindir ?? installations.find((i) => i.major === newMajor)?.bindir;
  if (!newBindir) throw badInput(`PostgreSQL ${newMajor} is not installed`, 'install it, or pass --new-bindir');
  const newInstall = installations.find((i) => i.bindir === newBindir);
  if (newInstall && newInstall.major !== newMajor) throw badInput(`--new-bindir ${newBindir} holds PostgreSQL ${newInstall.major}, not ${newMajor}`);

  // a postgresql-common cluster gets its successor of the same name; anything else a directory beside it
  const debianNew = old.layout.kind === 'debian' ? newClusterPaths(old.layout.name, newMajor) : undefined;
  const newDataDir = resolve(c.newPgdata ?? debianNew?.dataDir ?? defaultNewDataDir(old.dataDir, old.major, newMajor));
  const sameFs = statSync(old.dataDir).dev === statSync(existingAncestor(dirname(newDataDir))).dev;
  const mode: UpgradeMode = c.mode ?? (sameFs ? 'link' : 'copy');
  const compute = await detectCompute(ctx.hostRoot);

  const db = await openDb(target.access, ctx.runner, ctx.audit);
  let locale, superuser, walSegment, listening;
  try {
    [locale] = await db.query(statements.clusterLocale());
    [superuser] = await db.query(statements.bootstrapSuperuser());
    [walSegment] = await db.query(statements.settings(['wal_segment_size']));
    listening = new Map(
      (
        await db.query(statements.settingSources(['port', 'unix_socket_directories', 'listen_addresses', 'hba_file', 'logging_collector', 'log_directory']))
      ).map((r) => [r.name, r]),
    );
  } finally {
    await db.close();
  }
  if (!locale || !superuser) throw refused("could not read the old cluster's locale and bootstrap superuser");
  const waldir = c.waldir ? resolve(c.waldir) : null;
  const backupDest = c.noBackup
    ? null
    : resolve(
        c.backupTo ?? join(c.stateDir, 'backups', `${basename(old.dataDir)}-${old.major}-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`),
      );
  const access = target.access;
  const ownerAccount = userByName(old.owner);
  if (!ownerAccount) throw badInput(`OS user ${old.owner} (owner of ${old.dataDir}) does not exist`);
  const serverLog = await serverLogPath(ctx.runner, {
    dataDir: old.dataDir,
    owner: ownerAccount,
    setting: (name) => listening.get(name)?.setting,
    stateDir: c.stateDir,
    currentLog: runningServerLog(old.dataDir),
  });
  if (!serverLog)
    throw refused(
      `the owner ${old.owner} can write neither beside ${old.dataDir} nor in the state directory: pgscale has no place for the server's start-up log`,
      "make the data directory's parent writable by its owner, or run pgscale as the owner with a --state-dir it can write",
    );
  // captured now: pg_upgrade rewrites postmaster.opts when it starts the old server in binary-upgrade mode
  const fromConfig = (name: string) => (listening.get(name)?.source === 'configuration file' ? listening.get(name)?.setting : undefined);
  const oldServer = gatherIdentity({
    dataDir: old.dataDir,
    bindir: oldBindir,
    owner: old.owner,
    configured: { port: fromConfig('port'), unix_socket_directories: fromConfig('unix_socket_directories'), listen_addresses: fromConfig('listen_addresses') },
    configFile: old.layout.kind === 'debian' ? old.configFile : null,
    log: serverLog.path,
  });
  const hbaFile = listening.get('hba_file')?.setting;
  if (!hbaFile) throw refused("could not read the old server's hba_file");
  const debian =
    old.layout.kind === 'debian' && debianNew && oldServer.manager.kind === 'pg_ctlcluster'
      ? {
          cluster: old.layout.name,
          oldVersion: old.major,
          newVersion: newMajor,
          oldConfDir: old.layout.confDir,
          newConfDir: debianNew.confDir,
          port: oldServer.port,
          oldClusterPort: await freeClusterPort(oldServer.port),
        }
      : null;
  const newConfigFile = debian ? join(debian.newConfDir, 'postgresql.conf') : null;
  const newServer = carriedIdentity(oldServer, {
    bindir: newBindir,
    dataDir: newDataDir,
    log: join(dirname(newDataDir), `${basename(newDataDir)}.pgscale-server.log`),
    configFile: newConfigFile,
    manager: debian ? { kind: 'pg_ctlcluster', version: newMajor, cluster: debian.cluster } : { kind: 'pg_ctl' },
  });
  return {
    old: {
      dataDir: old.dataDir,
      configDir: oldServer.configFile ? dirname(oldServer.configFile) : old.dataDir,
      bindir: oldBindir,
      major: old.major,
      port: old.port,
      owner: old.owner,
      walSegmentBytes: Number(walSegment?.setting ?? 16 * 1024 * 1024), // pg_settings reports it in bytes (11+)
      tablespaces: old.tablespaces.map((t) => t.location),
      server: oldServer,
      hbaFile,
    },
    new: { dataDir: newDataDir, configDir: debian?.newConfDir ?? newDataDir, bindir: newBindir, major: newMajor, waldir, server: newServer },
    access,
    mode,
    jobs: c.jobs ?? Math.max(1, compute.effective.cpus),
    initdbArgs: initdbArguments({
      dataDir: newDataDir,
      superuser: superuser.rolname,
      encoding: locale.encoding,
      collate: locale.collate,
      ctype: locale.ctype,
      provider: locale.provider,
      icuLocale: locale.icu_locale,
      checksums: old.checksums === true,
      newMajor,
      waldir,
    }),
    superuser: superuser.rolname,
    maxTransactionSeconds: c.maxTransactionSeconds,
    sampleTables: 20,
    force: c.force,
    replicas: null, // decided by decideStandbys (src/upgrade/standbys.ts) when the caller handles standbys
    debian,
    workDir: join(dirname(newDataDir), `.${basename(newDataDir)}.pgscale-upgrade`),
    backup: backupDest
      ? {
          access: { ...access, bindir: newBindir },
          dest: backupDest,
          protectedPaths: [old.dataDir, ...old.tablespaces.map((t) => t.location), ...(old.wal.symlink ? [old.wal.path] : [])],
          compression: { compressor: 'zstd', level: 3 },
          estimateBytes: await estimateBackupBytes(ctx.runner, access),
          restoreBindir: null,
          token: newBackupToken(),
        }
      : null,
  };
}
