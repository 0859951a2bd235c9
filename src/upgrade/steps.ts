/**
 * `pgscale upgrade`: initdb of the new cluster like the old one, the configuration carried over,
 * `pg_upgrade --check` against the live old cluster, then (downtime) stop old, pg_upgrade, start
 * new on the old port, extension updates, verification and analyze after service is back.
 */
import { chownSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { clientInvocation, osUserOf, withDb } from '../cluster/access.js';
import { parseControlData } from '../cluster/controlData.js';
import { ExitCode, PgscaleError } from '../errors.js';
import { formatBytes, formatDuration } from '../format.js';
import { loadCatalog } from '../gucCatalog/index.js';
import { freePort } from '../net.js';
import { writeFileAtomic } from '../pipeline/journal.js';
import { defineOperation } from '../pipeline/plan.js';
import { check, defineStep, type CheckResult, type PlannedAction, type StepContext, type StepData } from '../pipeline/step.js';
import { describeFailure, isRoot, type Invocation } from '../runner.js';
import { statements } from '../sql.js';
import { backupOperation } from '../backup/steps.js';
import { migrateConfig } from './configMigration.js';
import type { UpgradeParams } from './params.js';


const owner = (p: UpgradeParams) => osUserOf({ ...p.access, runAs: p.old.owner })!;
const bin = (dir: string, program: string) => join(dir, program);
const asOwner = (p: UpgradeParams, program: string, args: string[], extra: Partial<Invocation> = {}): Invocation => ({ program, args, runAs: owner(p), ...extra });
const serverLog = (dataDir: string) => join(dirname(dataDir), `${dataDir.split('/').pop()}.pgscale-server.log`);
const pgCtl = (p: UpgradeParams, side: 'old' | 'new', action: 'start' | 'stop'): Invocation => {
  const c = p[side];
  const args = ['-D', c.dataDir, '-w', '-t', '300'];
  if (c.configDir !== c.dataDir) args.push('-o', `-c config_file=${join(c.configDir, 'postgresql.conf')}`);
  return asOwner(p, bin(c.bindir, 'pg_ctl'), action === 'start' ? [...args, '-l', serverLog(c.dataDir), 'start'] : [...args, '-m', 'fast', 'stop']);
};

async function must(ctx: StepContext, inv: Invocation, what: string): Promise<string> {
  const res = await ctx.runner.run(inv);
  if (res.exitCode !== 0) throw new PgscaleError(`${what}: ${describeFailure(inv, res)}`, ExitCode.FailedAfterChange);
  return res.stdout;
}

async function databases(ctx: StepContext, p: UpgradeParams): Promise<string[]> {
  return (await withDb(ctx, p.access, (db) => db.query(statements.databases()))).map((d) => d.name).filter((n) => n !== 'template1');
}

async function controlState(ctx: StepContext, p: UpgradeParams, side: 'old' | 'new'): Promise<string | undefined> {
  const c = p[side];
  if (!existsSync(join(c.dataDir, 'global', 'pg_control'))) return undefined;
  const res = await ctx.runner.run(asOwner(p, bin(c.bindir, 'pg_controldata'), ['-D', c.dataDir], { env: { LC_ALL: 'C' } }));
  return res.exitCode === 0 ? parseControlData(res.stdout).state : undefined;
}

const running = (dataDir: string) => existsSync(join(dataDir, 'postmaster.pid'));

/** Tablespace subdirectories the new version would create: PG_17_<catversion>. */
function newVersionTablespaceDirs(p: UpgradeParams): string[] {
  return p.old.tablespaces.flatMap((loc) => {
    try {
      return readdirSync(loc).filter((n) => n.startsWith(`PG_${p.new.major}_`)).map((n) => join(loc, n));
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

/** The nearest existing ancestor: where a directory to be created will live. */
function existingAncestor(path: string): string {
  let p = path;
  while (!existsSync(p)) p = dirname(p);
  return p;
}

function treeBytes(dir: string): number {
  let total = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, e.name);
      if (e.isDirectory()) walk(path);
      else if (e.isFile()) total += statSync(path).size;
    }
  };
  try {
    walk(dir);
  } catch {
    /* unreadable parts count as zero; the space check says "about" */
  }
  return total;
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

export async function upgradeChecks(ctx: StepContext, p: UpgradeParams): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const [side, program] of [['old', 'postgres'], ['old', 'pg_controldata'], ['new', 'postgres'], ['new', 'initdb'], ['new', 'pg_upgrade'], ['new', 'pg_ctl']] as const) {
    if (!existsSync(bin(p[side].bindir, program))) out.push(check.fail(`${side} binaries`, `${bin(p[side].bindir, program)} is missing`));
  }
  if (p.new.major <= p.old.major) out.push(check.fail('target version', `target ${p.new.major} is not newer than the cluster's ${p.old.major}`));
  else out.push(check.pass('target version', `${p.old.major} → ${p.new.major}`));
  const oldVersion = readFileSync(join(p.old.dataDir, 'PG_VERSION'), 'utf8').trim();
  out.push(oldVersion === String(p.old.major) ? check.pass('old data directory version', `PG_VERSION ${oldVersion}`) : check.fail('old data directory version', `PG_VERSION says ${oldVersion}, expected ${p.old.major}`));

  if (running(p.new.dataDir)) out.push(check.fail('new data directory', `${p.new.dataDir} belongs to a running cluster`));
  else out.push(dirEmptyOrAbsent(p.new.dataDir) ? check.pass('new data directory', `${p.new.dataDir} is empty or absent`) : check.fail('new data directory', `${p.new.dataDir} is not empty`));
  if (p.new.waldir) {
    const mountRoot = existsSync(join(p.new.waldir, 'lost+found'));
    out.push(dirEmptyOrAbsent(p.new.waldir) ? check.pass('WAL directory', `${p.new.waldir} is empty or absent`) : check.fail('WAL directory', `${p.new.waldir} is not empty${mountRoot ? ' (a filesystem root: use a subdirectory such as ' + join(p.new.waldir, 'pg_wal') + ')' : ''}`));
    const sameDevice = statSync(existingAncestor(p.new.waldir)).dev === statSync(existingAncestor(p.new.dataDir)).dev;
    if (sameDevice) out.push(p.force ? check.warn('WAL on its own device', `${p.new.waldir} is on the data directory's device (accepted with --force)`) : check.fail('WAL on its own device', `${p.new.waldir} is on the same device as ${p.new.dataDir}: a dedicated WAL volume must be another device (--force to accept)`));
    else out.push(check.pass('WAL on its own device', `${p.new.waldir} is on another device than the data`));
  }
  const stale = newVersionTablespaceDirs(p);
  out.push(stale.length ? check.fail('tablespace directories', `already present for ${p.new.major}: ${stale.join(', ')}`) : check.pass('tablespace directories', `no PG_${p.new.major}_* directories in ${p.old.tablespaces.length} tablespaces`));

  // space: copy needs the data again on the new data directory's filesystem; link/clone only catalogs and WAL
  const target = existingAncestor(p.new.dataDir);
  const fs = statfsSync(target);
  const free = fs.bavail * fs.bsize;
  const dataBytes = treeBytes(p.old.dataDir);
  const need = p.mode === 'copy' || p.mode === 'copy-file-range' ? dataBytes * 1.1 : Math.max(256 * 1024 ** 2, dataBytes * 0.05);
  out.push(free >= need ? check.pass('disk space', `${formatBytes(free)} free at ${target}; ${p.mode} mode needs about ${formatBytes(need)}`) : check.fail('disk space', `only ${formatBytes(free)} free at ${target}; ${p.mode} mode needs about ${formatBytes(need)}`));
  if (p.mode === 'link' || p.mode === 'clone') {
    const same = statSync(p.old.dataDir).dev === statSync(target).dev;
    out.push(same ? check.pass(`${p.mode} mode filesystem`, 'old and new data directories are on one filesystem') : check.fail(`${p.mode} mode filesystem`, `${p.new.dataDir} is on another filesystem than ${p.old.dataDir}: ${p.mode} mode needs one filesystem; use --mode copy or a new data directory beside the old one`));
  }

  try {
    await withDb(ctx, p.access, async (db) => {
      const [facts] = await db.query(statements.serverFacts());
      if (facts?.in_recovery) out.push(check.fail('primary', 'the old cluster is a standby: upgrade the primary, then rebuild standbys'));
      else out.push(check.pass('primary', 'the old cluster is a primary'));
      const [prepared] = await db.query(statements.preparedTransactions());
      out.push(prepared?.count ? check.fail('prepared transactions', `${prepared.count} prepared transactions: commit or roll them back first`) : check.pass('prepared transactions', 'none'));
      const settings = new Map((await db.query(statements.settings(['wal_level', 'max_slot_wal_keep_size', 'shared_preload_libraries']))).map((s) => [s.name, s.setting]));
      const standbys = await db.query(statements.standbys());
      if (standbys.length) {
        out.push(check.warn('physical standbys', `${standbys.map((s) => `${s.application_name}${s.client_addr ? '@' + s.client_addr : ''} (${s.state})`).join(', ')}: after the upgrade each is rebuilt with pg_basebackup from the new primary (reclone); they cannot follow a pg_upgrade`));
        if (settings.get('wal_level') === 'minimal') out.push(check.fail('wal_level', 'wal_level is minimal but standbys exist'));
      } else out.push(check.info('physical standbys', 'none'));
      const slots = await db.query(statements.replicationSlots());
      const logical = slots.filter((s) => s.slot_type === 'logical');
      if (logical.length && p.old.major < 17) out.push(check.warn('logical replication slots', `${logical.map((s) => `${s.slot_name} (${s.plugin}, ${s.database})`).join(', ')}: not carried over from ${p.old.major}; recreate them on the new cluster after the upgrade with pg_create_logical_replication_slot and resynchronise their consumers`));
      else out.push(check.info('logical replication slots', logical.length ? `${logical.length}, carried over by pg_upgrade (17+ source)` : 'none'));
      const subs = await db.query(statements.subscriptions());
      if (subs.length) out.push(check.warn('subscriptions', `${subs.map((s) => `${s.name} in ${s.database}`).join(', ')}: ${p.old.major < 17 ? 'their replication origins are not carried over: after the upgrade, ALTER SUBSCRIPTION … REFRESH PUBLICATION / copy_data decides how they resume' : 'carried over; they restart from their origins'}`));
      const preload = (settings.get('shared_preload_libraries') ?? '').split(',').map((s) => s.trim().replace(/^"|"$/g, '')).filter(Boolean);
      const libs = await libraryDirs(ctx, p);
      for (const lib of preload) {
        const found = libs.some((d) => existsSync(join(d.lib, `${lib.replace(/^\$libdir\//, '')}.so`)));
        out.push(found ? check.pass(`preload library ${lib}`, `present for ${p.new.major}`) : check.fail(`preload library ${lib}`, `${lib}.so is not installed for PostgreSQL ${p.new.major}`));
      }
      const maxSlot = settings.get('max_slot_wal_keep_size');
      if (p.new.major === 17 && maxSlot !== undefined && maxSlot !== '-1') {
        const res = await ctx.runner.run({ program: bin(p.new.bindir, 'postgres'), args: ['-V'] });
        const minor = Number(/17\.(\d+)/.exec(res.stdout)?.[1] ?? 99);
        if (minor <= 5) out.push(check.warn('max_slot_wal_keep_size', `new binaries are 17.${minor}: pg_upgrade needs max_slot_wal_keep_size = -1 during the upgrade (17.0–17.5); pg_upgrade sets it for its own servers, keep the old value in the config`));
      }
    });
    const libs = await libraryDirs(ctx, p);
    for (const dbname of await databases(ctx, p)) {
      const exts = await withDb(ctx, p.access, (db) => db.query(statements.extensions()), dbname);
      for (const e of exts.filter((x) => x.name !== 'plpgsql')) {
        const ok = libs.some((d) => existsSync(join(d.share, 'extension', `${e.name}.control`)));
        out.push(ok ? check.pass(`extension ${e.name} (${dbname})`, `available for ${p.new.major}`) : check.fail(`extension ${e.name} (${dbname})`, `${e.name} ${e.version} is installed in ${dbname} but not available for PostgreSQL ${p.new.major}`));
      }
    }
  } catch (e) {
    out.push(check.fail('old cluster reachable', `${(e as Error).message} (the old cluster must be running for the checks and the backup)`));
  }
  out.push(check.info('statistics', p.new.major >= 18 ? 'carried over by pg_upgrade (18+); vacuumdb --analyze-in-stages --missing-stats-only fills the rest' : `not carried over before 18: vacuumdb --analyze-in-stages runs after the new cluster is back (about ${formatDuration(Math.max(5, dataBytes / (200 * 1024 ** 2)))})`));
  return out;
}

const initdbStep = defineStep<UpgradeParams>({
  kind: 'upgrade.initdb',
  title: (p) => `Create the PostgreSQL ${p.new.major} cluster in ${p.new.dataDir}${p.new.waldir ? ` with WAL in ${p.new.waldir}` : ''}`,
  check: upgradeChecks,
  async plan(_ctx, p) {
    return [{ kind: 'command', argv: [bin(p.new.bindir, 'initdb'), ...p.initdbArgs], runAs: p.old.owner, note: 'encoding, locale, provider and checksum setting copied from the old cluster' }];
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
  async rollback(_ctx, p) {
    rmSync(p.new.dataDir, { recursive: true, force: true });
    if (p.new.waldir) rmSync(p.new.waldir, { recursive: true, force: true });
    rmSync(p.workDir, { recursive: true, force: true });
  },
  rollbackNote: (p) => `remove ${p.new.dataDir}${p.new.waldir ? ` and ${p.new.waldir}` : ''}`,
  estimateSeconds: () => 5,
});

function migration(p: UpgradeParams) {
  return migrateConfig({
    oldConfigDir: p.old.configDir,
    newConfigDir: p.new.configDir,
    oldDataDir: p.old.dataDir,
    newDataDir: p.new.dataDir,
    oldCatalog: loadCatalog(p.old.major),
    newCatalog: loadCatalog(p.new.major),
    walSegmentBytes: p.old.walSegmentBytes,
  });
}

const configStep = defineStep<UpgradeParams>({
  kind: 'upgrade.config',
  title: (p) => `Carry the configuration to ${p.new.major} (postgresql.conf and includes, postgresql.auto.conf, pg_hba.conf, pg_ident.conf)`,
  async check(_ctx, p) {
    const m = migration(p);
    const notes = m.files.flatMap((f) => f.notes);
    return [...m.blockers.map((b) => check.fail('configuration for the new version', b)), check.info('configuration migration', notes.length ? notes.join('; ') : 'every setting carries over unchanged')];
  },
  async plan(_ctx, p) {
    const m = migration(p);
    return m.files.map((f): PlannedAction => ({ kind: 'file', path: f.to, change: 'create', mode: '0600', note: `from ${f.from}${f.notes.length ? `: ${f.notes.join('; ')}` : ', unchanged'}`, diff: f.before !== f.after ? m.diff.split(/(?=^Index: |^===)/m).find((d) => d.includes(f.to)) ?? undefined : undefined }));
  },
  async apply(_ctx, p) {
    const m = migration(p);
    for (const f of m.files) {
      mkdirSync(dirname(f.to), { recursive: true, mode: 0o700 });
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
    return res.exitCode === 0 ? { ok: true, detail: `${m.files.length} files carried; postgres ${p.new.major} accepts them` } : { ok: false, detail: `postgres ${p.new.major} rejects the configuration: ${res.stderr.trim()}` };
  },
  async rollback() {
    /* the files live in the new cluster, which the initdb step's rollback removes */
  },
  rollbackNote: () => 'nothing of its own: the new cluster is removed by the initdb rollback',
});

function pgUpgradeArgs(p: UpgradeParams, newPort: number, check: boolean, socketDir: string): string[] {
  const args = ['-b', p.old.bindir, '-B', p.new.bindir, '-d', p.old.dataDir, '-D', p.new.dataDir, '-p', String(p.old.port), '-P', String(newPort), '-s', socketDir, '-U', p.superuser, '-j', String(p.jobs)];
  if (p.old.configDir !== p.old.dataDir) args.push('-o', `-c config_file=${join(p.old.configDir, 'postgresql.conf')}`);
  if (p.new.configDir !== p.new.dataDir) args.push('-O', `-c config_file=${join(p.new.configDir, 'postgresql.conf')}`);
  return [...args, check ? '--check' : `--${p.mode}`];
}

function ensureWorkDir(p: UpgradeParams): void {
  mkdirSync(p.workDir, { recursive: true, mode: 0o700 });
  if (isRoot()) chownSync(p.workDir, owner(p).uid, owner(p).gid);
}

const socketOf = (p: UpgradeParams) => (p.access.host?.startsWith('/') ? p.access.host : p.workDir);

/** pg_upgrade prints its failure on stdout and leaves details in the new cluster's pg_upgrade_output.d. */
function pgUpgradeFailure(p: UpgradeParams, res: { stdout: string }): string {
  const tail = res.stdout.trim().split('\n').slice(-15).join('\n');
  const logs = join(p.new.dataDir, 'pg_upgrade_output.d');
  return `${tail}${existsSync(logs) ? `\nlogs: ${logs}` : ''}`;
}

const precheckStep = defineStep<UpgradeParams>({
  kind: 'upgrade.precheck',
  title: () => 'pg_upgrade --check against the live old cluster',
  check: async () => [],
  async plan(_ctx, p) {
    return [{ kind: 'command', argv: [bin(p.new.bindir, 'pg_upgrade'), ...pgUpgradeArgs(p, 0, true, socketOf(p)).map((a, i, all) => (all[i - 1] === '-P' ? 'FREE_PORT' : a))], runAs: p.old.owner, note: 'the old cluster keeps running; nothing is changed' }];
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
    return existsSync(join(p.workDir, 'check-passed')) ? { ok: true, detail: 'clusters are compatible' } : { ok: false, detail: 'pg_upgrade --check has not passed' };
  },
  async rollback(_ctx, p) {
    rmSync(join(p.workDir, 'check-passed'), { force: true });
  },
  rollbackNote: () => 'nothing to undo (read-only check)',
  estimateSeconds: () => 10,
});

interface RowSample {
  [db: string]: Record<string, number>;
}

async function sampleRows(ctx: StepContext, p: UpgradeParams): Promise<RowSample> {
  const out: RowSample = {};
  for (const dbname of await databases(ctx, p)) {
    out[dbname] = Object.fromEntries((await withDb(ctx, p.access, (db) => db.query(statements.sampleRowCounts(p.sampleTables)), dbname)).map((r) => [r.table_name, Number(r.row_count)]));
  }
  return out;
}

const stopOldStep = defineStep<UpgradeParams>({
  kind: 'upgrade.stop-old',
  title: (p) => `Stop the old ${p.old.major} cluster cleanly (downtime starts)`,
  downtime: true,
  check: async () => [],
  async plan(_ctx, p) {
    return [
      { kind: 'sql', target: 'old cluster', sql: `-- refuse if a transaction is older than ${p.maxTransactionSeconds} s\n${statements.oldestTransactionSeconds().text}`, note: 'then other sessions are terminated and a sample of row counts taken' },
      { kind: 'sql', target: 'old cluster', sql: statements.sampleRowCounts(p.sampleTables).text },
      { kind: 'command', argv: [pgCtl(p, 'old', 'stop').program, ...pgCtl(p, 'old', 'stop').args], runAs: p.old.owner },
    ];
  },
  async apply(ctx, p) {
    if (running(p.old.dataDir)) {
      const [oldest] = await withDb(ctx, p.access, (db) => db.query(statements.oldestTransactionSeconds()));
      if ((oldest?.seconds ?? 0) > p.maxTransactionSeconds) {
        throw new PgscaleError(`a transaction has been open for ${Math.round(oldest!.seconds)} s (limit ${p.maxTransactionSeconds} s): not stopping the old cluster`, ExitCode.FailedNoChange, 'end it, then `pgscale resume`');
      }
      await withDb(ctx, p.access, (db) => db.query(statements.terminateOtherSessions()));
      const before = await sampleRows(ctx, p);
      writeFileAtomic(join(p.workDir, 'rows-before.json'), JSON.stringify(before));
      await withDb(ctx, p.access, (db) => db.query(statements.checkpoint()));
      await must(ctx, pgCtl(p, 'old', 'stop'), 'stopping the old cluster');
    }
    return { stoppedAt: new Date().toISOString() };
  },
  async verify(ctx, p) {
    const state = await controlState(ctx, p, 'old');
    return !running(p.old.dataDir) && state === 'shut down' && existsSync(join(p.workDir, 'rows-before.json')) ? { ok: true, detail: 'old cluster shut down cleanly' } : { ok: false, detail: `old cluster ${running(p.old.dataDir) ? 'running' : state ?? 'unknown'}` };
  },
  async rollback(ctx, p) {
    if (!running(p.old.dataDir)) await must(ctx, pgCtl(p, 'old', 'start'), 'restarting the old cluster');
  },
  rollbackNote: (p) => `start the old ${p.old.major} cluster again`,
  estimateSeconds: () => 5,
});

/**
 * pg_upgrade starts the old cluster (binary-upgrade mode, its own socket and port) and the new one
 * while it works; pg_ctl detaches them, so they outlive a pg_upgrade that was killed. A retry or a
 * rollback stops them first.
 */
async function stopServersLeftByPgUpgrade(ctx: StepContext, p: UpgradeParams): Promise<void> {
  for (const side of ['new', 'old'] as const) {
    if (!running(p[side].dataDir)) continue;
    const inv = asOwner(p, bin(p[side].bindir, 'pg_ctl'), ['-D', p[side].dataDir, '-m', 'fast', '-w', '-t', '300', 'stop']);
    const res = await ctx.runner.run(inv);
    // a stale postmaster.pid (no such process) is not a running server
    if (res.exitCode !== 0 && !/No such process/.test(res.stderr)) throw new PgscaleError(`stopping the ${side} cluster pg_upgrade left running: ${describeFailure(inv, res)}`, ExitCode.FailedAfterChange);
  }
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
    return [{ kind: 'command', argv: [bin(p.new.bindir, 'pg_upgrade'), ...pgUpgradeArgs(p, 0, false, socketOf(p)).map((a, i, all) => (all[i - 1] === '-P' ? 'FREE_PORT' : a))], runAs: p.old.owner, note: p.mode === 'link' ? 'hard links: the old cluster stays restorable until the new one starts (global/pg_control.old is renamed back on rollback)' : 'the old cluster is left intact' }];
  },
  async apply(ctx, p) {
    ensureWorkDir(p);
    const marker = join(p.workDir, 'pg_upgrade-started');
    if (existsSync(marker)) {
      // an earlier attempt was cut off: pg_upgrade cannot continue into a half-upgraded cluster,
      // so the new cluster is made again from scratch (the old one is untouched until start)
      await stopServersLeftByPgUpgrade(ctx, p);
      restoreOldControlFile(p);
      await initdbStep.apply(ctx, p);
      await configStep.apply(ctx, p);
    }
    writeFileAtomic(marker, new Date().toISOString());
    const inv = asOwner(p, bin(p.new.bindir, 'pg_upgrade'), pgUpgradeArgs(p, await freePort(), false, socketOf(p)), { cwd: p.workDir, signal: ctx.signal, onStart: ctx.trackProcess });
    ctx.progress.message(`pg_upgrade --${p.mode} running`);
    const res = await ctx.runner.run(inv);
    if (res.exitCode !== 0) throw new PgscaleError(`pg_upgrade failed:\n${pgUpgradeFailure(p, res)}`, ExitCode.FailedAfterChange, '`pgscale rollback` restores the old cluster');
    writeFileAtomic(join(p.workDir, 'pg_upgrade-done'), new Date().toISOString());
    return { seconds: Math.round(res.durationMs / 100) / 10, extensionScript: existsSync(join(p.workDir, 'update_extensions.sql')) };
  },
  async verify(ctx, p) {
    const state = await controlState(ctx, p, 'new');
    return existsSync(join(p.workDir, 'pg_upgrade-done')) && state ? { ok: true, detail: `upgraded (${p.mode} mode)` } : { ok: false, detail: 'pg_upgrade has not completed' };
  },
  async rollback(ctx, p) {
    if (existsSync(join(p.workDir, 'pg_upgrade-started'))) await stopServersLeftByPgUpgrade(ctx, p);
    restoreOldControlFile(p);
    rmSync(join(p.workDir, 'pg_upgrade-started'), { force: true });
    rmSync(join(p.workDir, 'pg_upgrade-done'), { force: true });
  },
  rollbackNote: (p) => (p.mode === 'link' ? 'rename the old global/pg_control.old back (the new cluster has never started, so the shared files are unchanged)' : 'nothing: copy mode leaves the old cluster intact'),
  estimateSeconds: (p) => (p.mode === 'link' || p.mode === 'clone' ? 20 : 60),
});

const startNewStep = defineStep<UpgradeParams>({
  kind: 'upgrade.start-new',
  title: (p) => `Start PostgreSQL ${p.new.major} on port ${p.old.port} (downtime ends)`,
  downtime: true,
  pointOfNoReturn: (p) => p.mode === 'link' || p.mode === 'clone',
  check: async () => [],
  async plan(_ctx, p) {
    return [
      { kind: 'command', argv: [pgCtl(p, 'new', 'start').program, ...pgCtl(p, 'new', 'start').args], runAs: p.old.owner },
      { kind: 'sql', target: `new cluster, port ${p.old.port}`, sql: statements.writeProbe().text, note: 'downtime ends when this write succeeds' },
    ];
  },
  async apply(ctx, p) {
    if (!running(p.new.dataDir)) await must(ctx, pgCtl(p, 'new', 'start'), 'starting the new cluster');
    await withDb(ctx, p.access, (db) => db.query(statements.writeProbe()));
    return { acceptingWritesAt: new Date().toISOString() };
  },
  async verify(ctx, p) {
    if (!running(p.new.dataDir)) return { ok: false, detail: 'new cluster not running' };
    try {
      const [v] = await withDb(ctx, p.access, (db) => db.query(statements.serverVersionNum()));
      const major = Math.floor((v?.server_version_num ?? 0) / 10000);
      return major === p.new.major ? { ok: true, detail: `PostgreSQL ${v!.server_version} accepts connections and writes` } : { ok: false, detail: `port ${p.old.port} answers with ${v?.server_version}` };
    } catch (e) {
      return { ok: false, detail: (e as Error).message };
    }
  },
  async rollback(ctx, p) {
    if (running(p.new.dataDir)) await must(ctx, pgCtl(p, 'new', 'stop'), 'stopping the new cluster');
  },
  rollbackNote: (p) =>
    p.mode === 'link' || p.mode === 'clone'
      ? `past this point the old cluster's files are shared with the running new one: rollback is refused; restore from the backup${p.backup ? ` in ${p.backup.dest} (initdb a ${p.old.major} cluster, psql -f the decompressed dumpall.sql)` : ' (none was taken: --no-backup)'}`
      : 'stop the new cluster (copy mode: the old cluster is intact and starts again)',
  estimateSeconds: () => 3,
});

const extensionsStep = defineStep<UpgradeParams>({
  kind: 'upgrade.extensions',
  title: () => 'Update extensions (the script pg_upgrade generated)',
  check: async () => [],
  async plan(_ctx, p) {
    return [{ kind: 'command', argv: [bin(p.new.bindir, 'psql'), '-X', '-v', 'ON_ERROR_STOP=1', '-d', 'postgres', '-f', join(p.workDir, 'update_extensions.sql')], runAs: p.old.owner, note: 'only if pg_upgrade wrote the script' }];
  },
  async apply(ctx, p) {
    const script = join(p.workDir, 'update_extensions.sql');
    if (!existsSync(script)) return { updated: false };
    await must(ctx, clientInvocation({ ...p.access, bindir: p.new.bindir }, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'postgres', '-f', script]), 'updating extensions');
    return { updated: true };
  },
  async verify(ctx, p) {
    const outdated: string[] = [];
    for (const dbname of await databases(ctx, p)) {
      for (const e of await withDb(ctx, p.access, (db) => db.query(statements.outdatedExtensions()), dbname)) outdated.push(`${e.name} ${e.installed}→${e.available} in ${dbname}`);
    }
    // only what pg_upgrade's script covers must be current; others are the DBA's choice to update
    if (existsSync(join(p.workDir, 'update_extensions.sql')) && outdated.length) {
      const script = readFileSync(join(p.workDir, 'update_extensions.sql'), 'utf8');
      const missed = outdated.filter((o) => script.includes(`"${o.split(' ')[0]}"`) || script.includes(` ${o.split(' ')[0]};`));
      if (missed.length) return { ok: false, detail: `still outdated: ${missed.join(', ')}` };
    }
    return { ok: true, detail: outdated.length ? `extensions updated where needed; newer versions available: ${outdated.join(', ')}` : 'every extension is at its default version' };
  },
  rollbackNote: () => 'not undone (extension updates are part of the new cluster)',
});

const verifyStep = defineStep<UpgradeParams>({
  kind: 'upgrade.verify',
  title: () => 'Verify: server version, row counts of a table sample against before, a write and a checkpoint',
  check: async () => [],
  async plan(_ctx, p) {
    return [
      { kind: 'sql', target: 'new cluster', sql: statements.sampleRowCounts(p.sampleTables).text, note: `compared with the counts taken before the stop (${p.sampleTables} largest tables per database)` },
      { kind: 'sql', target: 'new cluster', sql: `${statements.writeProbe().text};\ncheckpoint` },
    ];
  },
  async apply(ctx, p) {
    const before = JSON.parse(readFileSync(join(p.workDir, 'rows-before.json'), 'utf8')) as RowSample;
    const after = await sampleRows(ctx, p);
    const diffs: string[] = [];
    for (const [dbname, tables] of Object.entries(before)) {
      for (const [t, n] of Object.entries(tables)) if (after[dbname]?.[t] !== n) diffs.push(`${dbname}.${t}: ${n} before, ${after[dbname]?.[t] ?? 'missing'} after`);
    }
    if (diffs.length) throw new PgscaleError(`row counts differ after the upgrade: ${diffs.slice(0, 10).join('; ')}`, ExitCode.FailedAfterChange);
    await withDb(ctx, p.access, async (db) => {
      await db.query(statements.writeProbe());
      await db.query(statements.checkpoint());
    });
    const tables = Object.values(before).reduce((a, t) => a + Object.keys(t).length, 0);
    writeFileAtomic(join(p.workDir, 'verified'), String(tables));
    return { tablesCompared: tables };
  },
  async verify(_ctx, p) {
    const marker = join(p.workDir, 'verified');
    return existsSync(marker) ? { ok: true, detail: `${readFileSync(marker, 'utf8')} tables match; write and checkpoint ok` } : { ok: false, detail: 'not verified yet' };
  },
  rollbackNote: () => 'nothing to undo (read-only apart from a probe table it drops)',
});

const analyzeStep = defineStep<UpgradeParams>({
  kind: 'upgrade.analyze',
  title: (p) => (p.new.major >= 18 ? 'vacuumdb --analyze-in-stages --missing-stats-only (service is back)' : 'vacuumdb --analyze-in-stages (service is back; statistics are not carried before 18)'),
  check: async () => [],
  async plan(_ctx, p) {
    return [{ kind: 'command', argv: [bin(p.new.bindir, 'vacuumdb'), ...analyzeArgs(p)], runAs: p.access.runAs ?? undefined, env: ['PGHOST', 'PGPORT', 'PGUSER'] }];
  },
  async apply(ctx, p) {
    ctx.progress.message('analyzing in stages');
    await must(ctx, clientInvocation({ ...p.access, bindir: p.new.bindir }, 'vacuumdb', analyzeArgs(p), { signal: ctx.signal, onStart: ctx.trackProcess }), 'vacuumdb');
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

const upgradeSteps = [initdbStep, configStep, precheckStep, stopOldStep, pgUpgradeStep, startNewStep, extensionsStep, verifyStep, analyzeStep];
const stepIds = ['initdb', 'config', 'precheck', 'stop-old', 'pg_upgrade', 'start-new', 'extensions', 'verify', 'analyze'];

function configFingerprint(p: UpgradeParams): string {
  const h = createHash('sha256');
  for (const f of migration(p).files) h.update(f.from).update(f.before);
  return h.digest('hex').slice(0, 16);
}

export const upgradeOperation = defineOperation<UpgradeParams>({
  name: 'upgrade',
  describeTarget: (p) => ({ description: `${p.old.dataDir} (PostgreSQL ${p.old.major}, port ${p.old.port})`, lockKey: `cluster:${p.old.dataDir}` }),
  summary: (p) => `Upgrade ${p.old.dataDir} from PostgreSQL ${p.old.major} to ${p.new.major} into ${p.new.dataDir} (--${p.mode}, ${p.jobs} jobs${p.new.waldir ? `, WAL on ${p.new.waldir}` : ''}${p.backup ? `, backup to ${p.backup.dest} first` : ', NO backup'})`,
  steps: (p) => [
    ...(p.backup ? backupOperation.steps(p.backup).map((s): StepData => ({ ...s, id: `backup-${s.id}` })) : []),
    ...upgradeSteps.map((s, i): StepData => ({ id: stepIds[i]!, kind: s.kind, params: p })),
  ],
  async fingerprint(ctx, p) {
    const identity = await withDb(ctx, p.access, async (db) => ({
      systemIdentifier: (await db.query(statements.systemIdentifier()))[0]?.system_identifier ?? null,
      serverVersion: (await db.query(statements.serverVersionNum()))[0]?.server_version ?? null,
      databases: (await db.query(statements.databases())).map((d) => d.name),
    }));
    return { ...identity, oldMajor: p.old.major, oldDataDir: p.old.dataDir, port: p.old.port, newDataDir: p.new.dataDir, configuration: configFingerprint(p) };
  },
});
