/**
 * `pgscale backup restore`: any backup method into a new data directory (initdb with the
 * manifest's encoding and locale, or the physical copy unpacked, started on a private socket) or,
 * for logical methods, into a running server that holds no user data yet. Two journaled steps:
 * load (redone from scratch on resume: what it made is wiped first) and verify (every table's row
 * count against the manifest).
 */
import { randomBytes } from 'node:crypto';
import { chownSync, copyFileSync, existsSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { redact } from '../audit.js';
import { clientInvocation, withDb, type ClusterAccess } from '../cluster/access.js';
import { probeBindir } from '../cluster/installations.js';
import { initdb, ownedDir, startPrivateServer, stopLeftoverServer, type PrivateServer } from '../cluster/scratch.js';
import { selfContainedCopyEdits } from '../config/copiedCluster.js';
import { parseConfigText } from '../config/parse.js';
import { ExitCode, PgscaleError } from '../errors.js';
import { fsyncPath, isInside, realish } from '../files.js';
import { formatBytes } from '../format.js';
import { userByName } from '../osUser.js';
import { writeFileAtomic } from '../pipeline/journal.js';
import { defineOperation } from '../pipeline/plan.js';
import { check, defineStep, type CheckResult, type JsonObject, type PlannedAction, type StepContext } from '../pipeline/step.js';
import { describeFailure, isRoot, type Invocation, type OsUser } from '../runner.js';
import { statements } from '../sql.js';
import { initdbArguments } from '../upgrade/decide.js';
import { databaseDumpDir, methodOf, pgDumpVersion, physicalDir, readManifest, untar, type BackupManifest, type BackupMethod } from './archive.js';
import { decompressArgv } from './compression.js';
import { programVersion } from './methods.js';
import { compareRowCounts, estimateBackupSeconds, tableRowCounts } from './steps.js';

/** A new data directory, created and loaded here, left stopped. */
export interface DataDirTarget extends JsonObject {
  kind: 'pgdata';
  pgdata: string;
  bindir: string;
  owner: string;
  /** Tablespaces are recreated below this directory (one per tablespace), never at the source's paths. */
  tablespaceDir: string;
}

/** A running server holding no user data yet (logical methods only). */
export interface ServerTarget extends JsonObject {
  kind: 'server';
  access: ClusterAccess;
}

export interface RestoreParams extends JsonObject {
  source: string;
  method: BackupMethod;
  /** The manifest's token: the backup restored is the one reviewed. */
  backupToken: string;
  target: DataDirTarget | ServerTarget;
  jobs: number;
  /** Bytes of the databases the backup holds (for the estimate). */
  databaseBytes: number;
  token: string;
}

const markerPath = (ctx: StepContext, name: string) => join(ctx.runDir, name);
const loadedMarker = 'restore.loaded.json';
const verifiedMarker = 'restore.verified.json';
const ownerOf = (t: DataDirTarget): OsUser => {
  const u = userByName(t.owner);
  if (!u) throw new PgscaleError(`OS user ${t.owner} does not exist`, ExitCode.BadInput);
  return u;
};
const describeTarget = (t: RestoreParams['target']) => (t.kind === 'pgdata' ? t.pgdata : `${t.access.host ?? 'localhost'}:${t.access.port ?? 5432}`);

/** Database names of a restore, in manifest order (template1 and postgres exist in any target). */
const heldDatabases = (m: BackupManifest) => m.databases.map((d, index) => ({ ...d, index })).filter((d) => d.dumped !== false);

/**
 * The databases the manifest says the backup does not hold, and why: a restore cannot bring them
 * back, and its plan and report say so rather than let their absence pass unnoticed.
 */
export function notBackedUp(m: Pick<BackupManifest, 'databases' | 'excludedDatabases'>): string | undefined {
  const left = m.databases.filter((d) => d.dumped === false);
  if (!left.length) return undefined;
  const why = (d: (typeof left)[number]) =>
    m.excludedDatabases?.includes(d.name) ? 'left out by --exclude-database' : d.allowConnections ? 'not dumped' : 'refuses connections';
  return `not in the backup, so not restored: ${left.map((d) => `${JSON.stringify(d.name)} (${why(d)})`).join(', ')}`;
}

/** Socket, log and access rules of the private server: beside the data directory, reachable by its owner, removed after. */
const privateDir = (t: DataDirTarget) => join(dirname(t.pgdata), `.${basename(t.pgdata)}.pgscale-restore`);

const hasTablespaces = (m: BackupManifest) => (m.shape?.tablespaces.length ?? 0) > 0;

/** Tablespace k of the manifest goes to DIR/ts-k (names may hold anything; positions are stable). */
const relocatedTablespace = (t: DataDirTarget, k: number) => join(t.tablespaceDir, `ts-${k}`);

/** A PostgreSQL version as a restore sees it: its major and the version string shown. */
export interface VersionFact {
  major: number;
  version: string;
}

/**
 * Which targets a backup restores into: a logical dump (dumpall, parallel) into its own major or a
 * newer one (pg_dump's output is not meant for older servers: statements fail); a physical copy
 * into its own major only (the data files are of that major).
 */
export function judgeRestoreVersion(method: BackupMethod, source: VersionFact, target: VersionFact & { what: string }): CheckResult {
  const fits = method === 'physical' ? target.major === source.major : target.major >= source.major;
  if (fits) return check.pass('server version', `PostgreSQL ${target.version} (${target.what}) for a backup of PostgreSQL ${source.version}`);
  const why =
    method === 'physical'
      ? 'a physical copy restores into the same major version only'
      : 'a logical dump restores into the same or a newer major version only (into an older one, statements fail)';
  return check.fail(
    'server version',
    `a ${method} backup of PostgreSQL ${source.version} cannot be restored into PostgreSQL ${target.version} (${target.what}): ${why}`,
    method === 'physical'
      ? `restore into PostgreSQL ${source.major} (--bindir of a ${source.major} installation), or take a logical backup to move to another major`
      : `restore into PostgreSQL ${source.major} or newer (--bindir of such an installation, or a server of that version)`,
  );
}

/**
 * The client program that reads a parallel dump (pg_restore) must be at least as new as the
 * pg_dump that wrote it: an older one cannot read the archive's format.
 */
export function judgeRestoreClient(program: string, dumpedWith: VersionFact, client: (VersionFact & { path: string }) | undefined): CheckResult {
  if (!client) return check.fail(`${program} version`, `no working ${program}`, 'pass --bindir of an installation with the client programs');
  return client.major >= dumpedWith.major
    ? check.pass(`${program} version`, `${client.path} ${client.version} reads a dump of pg_dump ${dumpedWith.version}`)
    : check.fail(
        `${program} version`,
        `${client.path} ${client.version} cannot read a dump written by pg_dump ${dumpedWith.version}`,
        `pass --bindir of PostgreSQL ${dumpedWith.major} or newer`,
      );
}

/** "17.6" of "17.6 (Debian 17.6-1.pgdg120+1)": the packager's suffix says nothing a restore needs. */
const shortVersion = (version: string) => version.split(' ')[0]!;

/** How many of the failed statements' lines an error shows. */
const shownFailures = 3;

/**
 * Any statement psql or pg_restore reports as failed fails the load: a restore that lost a table,
 * an extension or a grant is not one to count on. The error names how many failed and the first
 * few error lines (redacted; pg_restore's "Command was:" lines, which may quote a password, never).
 */
export function failedStatements(errors: readonly string[]): PgscaleError | undefined {
  if (errors.length === 0) return undefined;
  const shown = errors.slice(0, shownFailures).map((l) => redact(l.trim()));
  return new PgscaleError(
    `the restore reported ${errors.length} failed statement${errors.length === 1 ? '' : 's'}${errors.length > shown.length ? ` (the first ${shown.length})` : ''}:\n  ${shown.join('\n  ')}`,
    ExitCode.FailedAfterChange,
    'fix the cause (a target of another major version, a missing extension, an object the target already held) and restore again',
  );
}

/** Error lines of psql's or pg_restore's stderr (never the "Command was:" lines that follow them). */
export const errorLines = (stderr: string): string[] => stderr.split('\n').filter((l) => /\berror:/i.test(l) && !/^\s*Command was:/.test(l));

function isEmptyOrAbsent(path: string): boolean {
  return !existsSync(path) || (statSync(path).isDirectory() && readdirSync(path).length === 0);
}

/**
 * Rewrites the LOCATION of pg_dumpall's CREATE TABLESPACE lines (they come before the first
 * \connect; everything after passes through untouched), so a restore next to the source never
 * reaches for the source's tablespace directories.
 */
export class TablespaceRelocation extends Transform {
  private pending = '';
  private passthrough = false;

  constructor(private readonly locations: ReadonlyMap<string, string>) {
    super();
  }

  static literal(text: string): string | undefined {
    const m = /^(E?)'((?:[^']|'')*)'$/.exec(text);
    if (!m) return undefined;
    const body = m[2]!.replace(/''/g, "'");
    return m[1] ? body.replace(/\\(.)/g, '$1') : body;
  }

  relocate(line: string): string {
    const m = /^(CREATE TABLESPACE .* LOCATION )(E?'(?:[^']|'')*')(;.*)$/.exec(line);
    if (!m) return line;
    const to = this.locations.get(TablespaceRelocation.literal(m[2]!) ?? '');
    return to === undefined ? line : `${m[1]}'${to.replace(/'/g, "''")}'${m[3]}`;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.passthrough) return done(null, chunk);
    this.pending += chunk.toString('utf8');
    const lines = this.pending.split('\n');
    this.pending = lines.pop()!;
    const out: string[] = [];
    for (const [i, line] of lines.entries()) {
      if (line.startsWith('\\connect')) {
        this.passthrough = true;
        out.push(...lines.slice(i));
        break;
      }
      out.push(this.relocate(line));
    }
    let text = out.map((l) => l + '\n').join('');
    if (this.passthrough) {
      text += this.pending;
      this.pending = '';
    }
    done(null, Buffer.from(text, 'utf8'));
  }

  override _flush(done: TransformCallback): void {
    done(null, this.pending ? Buffer.from(this.passthrough ? this.pending : this.relocate(this.pending), 'utf8') : undefined);
  }
}

/**
 * psql -f - fed by a reader pgscale runs itself (it alone may read the 0700 backup): the
 * decompressed pg_dumpall stream (tablespaces relocated), or pg_restore's script output.
 */
async function feedPsql(
  ctx: StepContext,
  access: ClusterAccess,
  reader: Invocation,
  database: string,
  manifest: BackupManifest,
  runningServer: boolean,
  relocation?: Map<string, string>,
): Promise<string[]> {
  const read = ctx.runner.stream({ ...reader, signal: ctx.signal, onStart: ctx.trackProcess });
  read.stdin.end();
  const psql = ctx.runner.stream(
    clientInvocation({ ...access, database }, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=0', '-f', '-'], { signal: ctx.signal, onStart: ctx.trackProcess }),
  );
  const feed = relocation ? pipeline(read.stdout, new TablespaceRelocation(relocation), psql.stdin) : pipeline(read.stdout, psql.stdin);
  await Promise.all([
    feed,
    pipeline(psql.stdout, async function* (s) {
      for await (const _ of s);
    }),
  ]);
  const [rr, pr] = await Promise.all([read.result, psql.result]);
  if (ctx.signal.aborted) throw new PgscaleError('interrupted', ExitCode.Interrupted);
  if (rr.exitCode !== 0) throw new PgscaleError(`${basename(reader.program)} failed: ${rr.stderr.trim().slice(-500)}`, ExitCode.FailedAfterChange);
  if (pr.exitCode !== 0) throw new PgscaleError(`psql failed: ${pr.stderr.trim().slice(-500)}`, ExitCode.FailedAfterChange);
  return errorLines(pr.stderr).filter((l) => !isExpectedFailure(l, manifest, runningServer));
}

/**
 * The statements of a dump that fail harmlessly: the bootstrap superuser's CREATE ROLE (it exists
 * in any target; its ALTER ROLE follows) and, in a running server (where locations are not
 * relocated), the CREATE TABLESPACE of a tablespace the DBA created there beforehand.
 */
export function isExpectedFailure(line: string, manifest: Pick<BackupManifest, 'shape'>, runningServer: boolean): boolean {
  // the server quotes names without escaping: a name may hold a double quote
  const m = /ERROR: {2}(role|tablespace) "(.*)" already exists$/.exec(line);
  if (!m) return false;
  const name = m[2]!;
  return m[1] === 'role' ? name === manifest.shape?.superuser : runningServer && (manifest.shape?.tablespaces ?? []).some((t) => t.name === name);
}

/**
 * Each database dumped by the parallel method: databases other than postgres and template1 are
 * created by the dump itself (-C: owner, settings, grants come along). pg_restore -j connects as
 * pgscale, which works on the private server (trust on its 0700 socket) and with a password or
 * passfile; a server reached by peer authentication as its owner gets pg_restore's script through psql.
 */
async function loadParallel(ctx: StepContext, access: ClusterAccess, p: RestoreParams, manifest: BackupManifest, peer: boolean): Promise<string[]> {
  const errors: string[] = [];
  const dbs = heldDatabases(manifest);
  for (const [k, d] of dbs.entries()) {
    const create = d.name !== 'postgres' && d.name !== 'template1';
    const dir = join(p.source, databaseDumpDir(d.index));
    ctx.progress.message(`database ${k + 1} of ${dbs.length}: ${d.name}`);
    if (peer) {
      const script = clientInvocation({ ...access, runAs: null }, 'pg_restore', [...(create ? ['-C'] : []), '-f', '-', dir]);
      errors.push(...(await feedPsql(ctx, access, script, create ? 'postgres' : d.name, manifest, true)).map((l) => `${d.name}: ${l}`));
      continue;
    }
    // with -C the dump creates its database (connecting first to postgres); otherwise the name is postgres or template1
    const inv = clientInvocation(
      { ...access, runAs: null },
      'pg_restore',
      ['--no-password', '-j', String(p.jobs), ...(create ? ['-C', '-d', 'postgres'] : ['-d', d.name]), dir],
      { signal: ctx.signal, onStart: ctx.trackProcess },
    );
    const res = await ctx.runner.run(inv);
    if (ctx.signal.aborted) throw new PgscaleError('interrupted', ExitCode.Interrupted);
    if (res.exitCode !== 0) {
      const lines = errorLines(res.stderr);
      // pg_restore failing without an error line (killed, a crash) is a failure all the same
      errors.push(...(lines.length ? lines : [describeFailure(inv, res)]).map((l) => `${d.name}: ${l}`));
    }
  }
  return errors;
}

/**
 * The restored copy's postgresql.conf made its own: a data_directory, hba_file, ident_file or
 * external_pid_file naming the source (pgscale's upgrade wrote such lines for configurations kept
 * outside PGDATA) would start the copy on the source's files. The source is the data_directory the
 * copy names, else the copy itself (paths elsewhere are copied in when present here).
 */
function ownConfiguration(pgdata: string, owner: OsUser): void {
  const conf = join(pgdata, 'postgresql.conf');
  if (!existsSync(conf)) return;
  const text = readFileSync(conf, 'utf8');
  const named = parseConfigText(text, conf).findLast((e) => e.name === 'data_directory')?.value;
  const own = selfContainedCopyEdits(text, named && named.startsWith('/') ? named : pgdata, pgdata);
  if (own.edits.length) writeFileSync(conf, own.text);
  for (const f of own.copyFiles)
    if (existsSync(f.from) && !existsSync(f.to)) {
      copyFileSync(f.from, f.to);
      if (isRoot()) chownSync(f.to, owner.uid, owner.gid);
    }
}

/** The physical copy unpacked: base, WAL, and each tablespace into its new directory (tablespace_map rewritten). */
async function unpackPhysical(ctx: StepContext, t: DataDirTarget, p: RestoreParams): Promise<void> {
  const owner = ownerOf(t);
  const base = join(p.source, physicalDir);
  const tars = readdirSync(base).filter((f) => /\.tar(\.\w+)?$/.test(f));
  const baseTar = tars.find((f) => f.startsWith('base.tar'));
  if (!baseTar) throw new PgscaleError(`${base} holds no base.tar`, ExitCode.FailedAfterChange);
  ctx.progress.message(`unpacking ${baseTar}`);
  await untar(ctx.runner, ctx, join(base, baseTar), t.pgdata, owner);
  ownConfiguration(t.pgdata, owner);
  const walTar = tars.find((f) => f.startsWith('pg_wal.tar'));
  if (walTar) await untar(ctx.runner, ctx, join(base, walTar), ownedDir(join(t.pgdata, 'pg_wal'), owner), owner);
  const mapFile = join(t.pgdata, 'tablespace_map');
  if (!existsSync(mapFile)) return;
  const lines = readFileSync(mapFile, 'utf8').split('\n').filter(Boolean);
  const rewritten: string[] = [];
  for (const line of lines) {
    const oid = line.slice(0, line.indexOf(' '));
    const tar = tars.find((f) => f.startsWith(`${oid}.tar`));
    if (!tar) throw new PgscaleError(`tablespace ${oid} has no ${oid}.tar in ${base}`, ExitCode.FailedAfterChange);
    const to = ownedDir(join(t.tablespaceDir, oid), owner);
    ctx.progress.message(`unpacking tablespace ${oid}`);
    await untar(ctx.runner, ctx, join(base, tar), to, owner);
    rewritten.push(`${oid} ${to}`);
  }
  writeFileSync(mapFile, rewritten.join('\n') + '\n');
}

/** What the target needs before a load or a re-load: a fresh data directory, or nothing of ours in the server. */
async function prepareDataDir(ctx: StepContext, t: DataDirTarget, p: RestoreParams, manifest: BackupManifest): Promise<void> {
  const owner = ownerOf(t);
  await stopLeftoverServer(ctx.runner, t.bindir, t.pgdata, owner);
  // a re-load starts over: only what this run made is removed (the checks found the target empty)
  if (existsSync(t.pgdata)) for (const e of readdirSync(t.pgdata)) rmSync(join(t.pgdata, e), { recursive: true, force: true });
  if (hasTablespaces(manifest) && existsSync(t.tablespaceDir))
    for (const e of readdirSync(t.tablespaceDir)) rmSync(join(t.tablespaceDir, e), { recursive: true, force: true });
  ownedDir(t.pgdata, owner);
  // the server reaches each tablespace through this directory, so its owner owns it; made only when there is one
  if (hasTablespaces(manifest)) ownedDir(t.tablespaceDir, owner);
  if (p.method === 'physical') return unpackPhysical(ctx, t, p);
  ctx.progress.message('initdb');
  await initdb(ctx.runner, t.bindir, t.pgdata, owner, await initdbArgs(ctx, t, manifest));
  manifest.shape!.tablespaces.forEach((_, k) => ownedDir(relocatedTablespace(t, k), owner));
}

/** initdb's arguments after -D: the manifest's encoding, locale and bootstrap superuser; checksums on. */
async function initdbArgs(ctx: StepContext, t: DataDirTarget, manifest: BackupManifest): Promise<string[]> {
  const shape = manifest.shape;
  if (!shape) throw new PgscaleError('the manifest predates restore support (no encoding and locale recorded)', ExitCode.FailedAfterChange);
  const { major } = await probeBindir(ctx.runner, t.bindir, 'explicit');
  const args = initdbArguments({
    dataDir: t.pgdata,
    superuser: shape.superuser,
    encoding: shape.encoding,
    collate: shape.collate,
    ctype: shape.ctype,
    provider: shape.provider,
    icuLocale: shape.icuLocale,
    checksums: true,
    newMajor: major,
    waldir: null,
  }).slice(2);
  return [...args, '--auth-local=peer', '--auth-host=scram-sha-256'];
}

async function withTarget<T>(ctx: StepContext, p: RestoreParams, manifest: BackupManifest, use: (access: ClusterAccess) => Promise<T>): Promise<T> {
  if (p.target.kind === 'server') return use(p.target.access);
  const t = p.target;
  const owner = ownerOf(t);
  const superuser = manifest.shape?.superuser ?? owner.name;
  const dir = ownedDir(privateDir(t), owner);
  const server: PrivateServer = await startPrivateServer(ctx.runner, t.bindir, t.pgdata, dir, owner, superuser);
  try {
    return await use(server.access);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export const restoreLoadStep = defineStep<RestoreParams>({
  kind: 'restore.load',
  title: (p) => `Restore the ${p.method} backup ${p.source} into ${describeTarget(p.target)}`,
  async check(ctx, p) {
    const out: CheckResult[] = [];
    let manifest: BackupManifest;
    try {
      manifest = readManifest(p.source);
    } catch (e) {
      return [check.fail('backup readable', (e as Error).message)];
    }
    out.push(
      manifest.token === p.backupToken
        ? check.pass('backup readable', `${methodOf(manifest)} backup of PostgreSQL ${manifest.serverVersion}, ${heldDatabases(manifest).length} databases`)
        : check.fail('backup readable', `${p.source} holds another backup than the one planned`),
    );
    const missing = notBackedUp(manifest);
    if (missing) out.push(check.info('databases not in the backup', missing));
    out.push(
      existsSync(join(p.source, 'verified.json'))
        ? check.pass('backup verified', 'verified when it was made')
        : check.fail('backup verified', `${p.source} was never verified`, `check it with \`pgscale backup verify ${p.source}\``),
    );
    const source: VersionFact = { major: Math.floor(manifest.serverVersionNum / 10000), version: shortVersion(manifest.serverVersion) };
    if (p.method === 'parallel') {
      // the dump is read by pg_restore of the target's bindir (--to) or of the client bindir (a running server)
      const bindir = p.target.kind === 'pgdata' ? p.target.bindir : p.target.access.bindir;
      const client = await programVersion(ctx.runner, join(bindir, 'pg_restore'));
      const dumpVersion = pgDumpVersion(manifest);
      const dumpedWith = /^(\d+)/.exec(dumpVersion);
      out.push(
        judgeRestoreClient(
          'pg_restore',
          dumpedWith ? { major: Number(dumpedWith[1]), version: dumpVersion } : source,
          client && { ...client, path: join(bindir, 'pg_restore') },
        ),
      );
    }
    if (p.target.kind === 'pgdata') {
      const t = p.target;
      for (const dir of hasTablespaces(manifest) ? [t.pgdata, t.tablespaceDir] : [t.pgdata]) {
        out.push(
          isEmptyOrAbsent(dir)
            ? check.pass(`target empty: ${dir}`, `${dir} is ${existsSync(dir) ? 'empty' : 'absent'}`)
            : check.fail(`target empty: ${dir}`, `${dir} is not empty: a restore never writes over anything`, 'name a new or empty directory'),
        );
      }
      if (isInside(realish(t.pgdata), realish(p.source)) || isInside(realish(p.source), realish(t.pgdata)))
        out.push(check.fail('target apart from the backup', `${t.pgdata} and ${p.source} overlap`));
      // the new cluster is made by this bindir's initdb and run by its postgres: `postgres -V` is its version
      const target = await probeBindir(ctx.runner, t.bindir, 'explicit').catch(() => undefined);
      out.push(
        target
          ? judgeRestoreVersion(p.method, source, { major: target.major, version: shortVersion(target.version), what: `postgres -V of ${t.bindir}` })
          : check.fail('server version', `no working postgres in ${t.bindir}`, 'pass --bindir'),
      );
      const parent = realish(dirname(t.pgdata));
      let probe = parent;
      while (!existsSync(probe)) probe = dirname(probe);
      const fs = statfsSync(probe);
      const need = manifest.databases.filter((d) => d.dumped !== false).reduce((a, d) => a + d.bytes, 0);
      out.push(
        fs.bavail * fs.bsize >= need
          ? check.pass('free space', `${formatBytes(fs.bavail * fs.bsize)} free at ${probe}; the databases took ${formatBytes(need)}`)
          : check.fail('free space', `only ${formatBytes(fs.bavail * fs.bsize)} free at ${probe}; the databases took ${formatBytes(need)}`),
      );
    } else {
      if (p.method === 'physical') out.push(check.fail('logical backup', 'a physical backup restores into a new data directory only', 'use --to NEWPGDATA'));
      try {
        const [dbs, tables, version] = await withDb(
          ctx,
          p.target.access,
          async (db) =>
            [await db.query(statements.userDatabases()), await db.query(statements.userTableCount()), await db.query(statements.serverVersionNum())] as const,
        );
        out.push(
          dbs.length === 0 && tables[0]!.count === 0
            ? check.pass('target empty', 'no user databases, no tables in postgres')
            : check.fail(
                'target empty',
                `the server holds ${dbs.length ? `databases ${dbs.map((d) => JSON.stringify(d.name)).join(', ')}` : `${tables[0]!.count} tables in postgres`}: a restore never writes over anything`,
                'restore into a new cluster (--to NEWPGDATA) or an empty server',
              ),
        );
        // the running server says what it is: server_version_num, whatever the client bindir
        out.push(
          judgeRestoreVersion(p.method, source, {
            major: Math.floor(version[0]!.server_version_num / 10000),
            version: shortVersion(version[0]!.server_version),
            what: `server_version of ${describeTarget(p.target)}`,
          }),
        );
      } catch (e) {
        out.push(check.fail('server reachable', (e as Error).message));
      }
    }
    return out;
  },
  async plan(ctx, p) {
    const actions: PlannedAction[] = [];
    const manifest = readManifest(p.source);
    if (p.target.kind === 'pgdata') {
      const t = p.target;
      actions.push({ kind: 'file', path: t.pgdata, change: 'mkdir', mode: '0700', note: `owned by ${t.owner}` });
      if (hasTablespaces(manifest))
        actions.push({ kind: 'file', path: t.tablespaceDir, change: 'mkdir', mode: '0700', note: `owned by ${t.owner}; one directory per tablespace` });
      if (p.method === 'physical')
        actions.push({
          kind: 'command',
          argv: ['tar', '-x', '-f', join(p.source, physicalDir, 'base.tar.*'), '-C', t.pgdata],
          runAs: t.owner,
          note: `postgresql.conf's data_directory, hba_file, ident_file and external_pid_file made the copy's own where they name the source; then pg_wal.tar into pg_wal${hasTablespaces(manifest) ? ` and each tablespace's tar into ${t.tablespaceDir}/OID (tablespace_map rewritten to match)` : ''}`,
        });
      else
        actions.push({
          kind: 'command',
          argv: [join(t.bindir, 'initdb'), '-D', t.pgdata, ...(await initdbArgs(ctx, t, manifest))],
          runAs: t.owner,
          note: 'encoding, locale and bootstrap superuser from the manifest',
        });
      actions.push({
        kind: 'service',
        action: 'start',
        target: t.pgdata,
        note: 'on a private socket (no TCP), archiving off; postgresql.auto.conf put back when it stops',
      });
    }
    if (p.method === 'dumpall')
      actions.push({
        kind: 'command',
        argv: ['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=0', '-f', '-'],
        note: "fed the decompressed dump; CREATE TABLESPACE locations relocated; any statement that fails (but the bootstrap superuser's CREATE ROLE) fails the step",
      });
    if (p.method === 'parallel') {
      actions.push({
        kind: 'command',
        argv: ['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=0', '-f', '-'],
        note: 'fed the decompressed globals (roles, tablespaces relocated)',
      });
      actions.push({
        kind: 'command',
        argv: ['pg_restore', '-j', String(p.jobs), '-C', '-d', 'postgres', join(p.source, 'db-I')],
        note: 'once per database (postgres and template1 restored into themselves, without -C); any statement pg_restore reports as failed fails the step',
      });
    }
    if (p.target.kind === 'pgdata') actions.push({ kind: 'service', action: 'stop', target: p.target.pgdata });
    return actions;
  },
  async apply(ctx, p) {
    rmSync(markerPath(ctx, loadedMarker), { force: true });
    const manifest = readManifest(p.source);
    if (p.target.kind === 'server' && existsSync(markerPath(ctx, 'restore.started'))) {
      throw new PgscaleError(
        'an interrupted restore into a running server cannot be continued in place',
        ExitCode.Refused,
        'roll this run back (it drops the databases it created), then restore again',
      );
    }
    writeFileAtomic(markerPath(ctx, 'restore.started'), new Date().toISOString());
    if (p.target.kind === 'pgdata') await prepareDataDir(ctx, p.target, p, manifest);
    const t = p.target;
    const relocation = new Map<string, string>(
      t.kind === 'pgdata' ? (manifest.shape?.tablespaces ?? []).map((ts, k) => [ts.location, relocatedTablespace(t, k)]) : [],
    );
    const errors = await withTarget(ctx, p, manifest, async (access) => {
      if (p.method === 'physical') return [];
      const found = await feedPsql(
        ctx,
        access,
        decompressArgv(manifest.compression, join(p.source, manifest.dumpFile!)),
        'postgres',
        manifest,
        p.target.kind === 'server',
        relocation,
      );
      if (p.method === 'parallel') found.push(...(await loadParallel(ctx, access, p, manifest, p.target.kind === 'server' && Boolean(access.runAs))));
      return found;
    });
    const failure = failedStatements(errors);
    if (failure) throw failure;
    if (p.target.kind === 'pgdata') fsyncPath(p.target.pgdata);
    const missing = notBackedUp(manifest);
    const detail = `${heldDatabases(manifest).length} databases restored, no statement failed${missing ? `; ${missing}` : ''}`;
    writeFileAtomic(markerPath(ctx, loadedMarker), JSON.stringify({ token: p.token, detail }));
    return { detail };
  },
  async verify(ctx) {
    const m = markerPath(ctx, loadedMarker);
    return existsSync(m) ? { ok: true, detail: (JSON.parse(readFileSync(m, 'utf8')) as { detail: string }).detail } : { ok: false, detail: 'not restored yet' };
  },
  async rollbackLoses(ctx, p) {
    // once loaded, the restored cluster or databases are the DBA's to use: undoing throws away what was written since
    if (!existsSync(markerPath(ctx, loadedMarker))) return undefined;
    if (p.target.kind === 'pgdata') return `the restored data directory ${p.target.pgdata} is removed: whatever was written to it since the restore is lost`;
    const names = heldDatabases(readManifest(p.source))
      .map((d) => d.name)
      .filter((n) => n !== 'postgres' && n !== 'template1');
    return `the databases this run restored into ${describeTarget(p.target)} (${names.join(', ')}) are dropped: whatever was written to them since the restore is lost`;
  },
  async rollback(ctx, p) {
    if (!existsSync(markerPath(ctx, 'restore.started'))) return;
    if (p.target.kind === 'pgdata') {
      const t = p.target;
      await stopLeftoverServer(ctx.runner, t.bindir, t.pgdata, ownerOf(t));
      rmSync(t.pgdata, { recursive: true, force: true });
      // without tablespaces the run never made (nor checked) it: whatever is there is not ours
      if (hasTablespaces(readManifest(p.source))) rmSync(t.tablespaceDir, { recursive: true, force: true });
      rmSync(privateDir(t), { recursive: true, force: true });
    } else {
      const manifest = readManifest(p.source);
      const access = p.target.access;
      for (const d of heldDatabases(manifest)) {
        if (d.name === 'postgres' || d.name === 'template1') continue;
        await withDb(ctx, access, (db) => db.query(statements.dropDatabase(d.name)));
      }
    }
    rmSync(markerPath(ctx, 'restore.started'), { force: true });
    rmSync(markerPath(ctx, loadedMarker), { force: true });
  },
  rollbackNote: (p) =>
    p.target.kind === 'pgdata'
      ? `remove ${p.target.pgdata} and, if the backup has tablespaces, ${p.target.tablespaceDir} (they were empty or absent before)`
      : 'drop the databases the restore created (the server held none before)',
  estimateSeconds: (p) => estimateBackupSeconds(p.method, p.databaseBytes, p.jobs, 'restore'),
});

export const restoreVerifyStep = defineStep<RestoreParams>({
  kind: 'restore.verify',
  title: () => "Verify: every table's row count against the manifest",
  check: async () => [],
  async plan(_ctx, p) {
    return [
      {
        kind: 'sql',
        target: describeTarget(p.target),
        sql: statements.tableRowCounts().text,
        note: 'in every restored database; compared with the counts the manifest took right after the dump',
      },
    ];
  },
  async apply(ctx, p) {
    const manifest = readManifest(p.source);
    const expected = manifest.rowCounts ?? {};
    const restored = await withTarget(ctx, p, manifest, (access) => tableRowCounts(ctx, access, Object.keys(expected)));
    const { missing, differing } = compareRowCounts(expected, restored);
    if (missing.length)
      throw new PgscaleError(
        `restore verification failed: ${missing.slice(0, 10).join('; ')}`,
        ExitCode.FailedAfterChange,
        'a table the backup held is not in the restore: do not use this restore; `pgscale backup verify` checks the backup itself',
      );
    const tables = Object.values(expected).reduce((a, t) => a + Object.keys(t).length, 0);
    // counts were taken after the dump, outside its snapshot: tables written meanwhile differ, and that is reported
    const written = differing.length
      ? `; ${differing.length} differ from the counts taken after the dump (written while the backup ran): ${differing.slice(0, 5).join('; ')}`
      : '';
    const detail = `${tables} tables in ${Object.keys(expected).length} databases, every one restored; ${differing.length ? `${tables - differing.length} row counts match the manifest${written}` : 'row counts match the manifest'}`;
    writeFileAtomic(markerPath(ctx, verifiedMarker), JSON.stringify({ token: p.token, detail }));
    return { detail, tables };
  },
  async verify(ctx) {
    const m = markerPath(ctx, verifiedMarker);
    return existsSync(m) ? { ok: true, detail: (JSON.parse(readFileSync(m, 'utf8')) as { detail: string }).detail } : { ok: false, detail: 'not verified yet' };
  },
  async rollback() {},
  rollbackNote: () => 'nothing to undo (read only)',
});

export const restoreOperation = defineOperation<RestoreParams>({
  name: 'restore',
  describeTarget: (p) => ({
    description: describeTarget(p.target),
    lockKey: p.target.kind === 'pgdata' ? `restore:${p.target.pgdata}` : `server:${p.target.access.host ?? 'localhost'}:${p.target.access.port ?? 5432}`,
  }),
  summary: (p) =>
    `Restore the ${p.method} backup ${p.source} into ${p.target.kind === 'pgdata' ? `a new data directory ${p.target.pgdata}` : `the running server ${describeTarget(p.target)}`} (${p.jobs} jobs)`,
  steps: (p) => [
    { id: 'load', kind: restoreLoadStep.kind, params: p },
    { id: 'verify', kind: restoreVerifyStep.kind, params: p },
  ],
  async fingerprint(_ctx, p) {
    const m = readManifest(p.source);
    return {
      backupToken: m.token,
      target: describeTarget(p.target),
      targetEmpty: p.target.kind === 'pgdata' ? isEmptyOrAbsent(p.target.pgdata) && (!hasTablespaces(m) || isEmptyOrAbsent(p.target.tablespaceDir)) : null,
    };
  },
});

export const newRestoreToken = () => randomBytes(8).toString('hex');
