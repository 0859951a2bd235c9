/**
 * The backup directory's files and the checks on them, shared by the backup steps and by
 * `pgscale backup verify`: manifest.json, the compressed dump, and the decompress-and-checksum pass.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ExitCode, PgscaleError, badInput, refused } from '../errors.js';
import { describeFailure, type OsUser, type Runner } from '../runner.js';
import { findInstallations } from '../cluster/installations.js';
import { compressedSuffix, decompressArgv, type CompressionSpec } from './compression.js';
import { programVersion, type ProgramRun } from './methods.js';
import { formatBytes } from '../format.js';

export const manifestName = 'manifest.json';
export const dumpBaseName = 'dumpall.sql';
export const dumpTrailer = '-- PostgreSQL database cluster dump complete';

export const dumpFileName = (c: CompressionSpec) => dumpBaseName + compressedSuffix[c.compressor];

/**
 * dumpall: one pg_dumpall stream (restores into any newer major); parallel: pg_dumpall
 * --globals-only plus pg_dump -Fd per database (pg_restore -j); physical: pg_basebackup tar with
 * its backup_manifest (same major only).
 */
export type BackupMethod = 'dumpall' | 'parallel' | 'physical';
export const backupMethods = ['dumpall', 'parallel', 'physical'] as const;

/** Every database of pg_database but template0, and whether this backup holds it. */
export interface DatabaseEntry {
  [key: string]: string | number | boolean;
  name: string;
  bytes: number;
  encoding: string;
  allowConnections: boolean;
  dumped: boolean;
}

/** A file of a parallel or physical backup, relative to the backup directory. */
export interface FileEntry {
  [key: string]: string | number;
  path: string;
  bytes: number;
  sha256: string;
}

/** What a restore needs to recreate the cluster around the data. */
export interface ClusterShape {
  [key: string]: string | null | { name: string; location: string }[];
  encoding: string;
  collate: string;
  ctype: string;
  provider: string;
  icuLocale: string | null;
  superuser: string;
  tablespaces: { name: string; location: string }[];
}

export interface BackupManifest {
  format: 'pgscale-backup/1';
  /** Absent in manifests written before methods existed: dumpall. */
  method?: BackupMethod;
  /** Random token of the plan that made it. */
  token: string;
  serverVersion: string;
  serverVersionNum: number;
  /**
   * Version of pg_dumpall (dumpall, parallel) or pg_basebackup (physical). Manifests written
   * before `programs` existed hold pg_dump's version here for a parallel backup.
   */
  pgDumpallVersion: string;
  /** Every client program the backup ran: the path invoked, the binary it resolved to, its version (absent in older manifests). */
  programs?: ProgramRun[];
  /** Their bindir (absent in manifests written before it was recorded): where `backup verify` looks first. */
  clientBindir?: string;
  databases: DatabaseEntry[];
  /** Databases left out by name (--exclude-database). */
  excludedDatabases?: string[];
  shape?: ClusterShape;
  compression: CompressionSpec;
  /** The pg_dumpall stream (dumpall: the whole cluster; parallel: the globals); physical: none. */
  dumpFile: string | null;
  compressedBytes: number;
  compressedSha256: string;
  uncompressedBytes: number;
  uncompressedSha256: string;
  startedAt: string;
  finishedAt: string;
  options: { pgDumpallArgs: string[]; jobs?: number };
  /** Every other file, with its digest (parallel: the pg_dump directories; physical: the tars). */
  files?: FileEntry[];
  /** Per-database, per-table row counts taken right after the dump (restores are checked against them). */
  rowCounts?: Record<string, Record<string, number>>;
}

export const methodOf = (m: BackupManifest): BackupMethod => m.method ?? 'dumpall';

/** Every file under dir (recursively), relative to it, sorted. */
export function filesUnder(dir: string, base = dir): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name), base) : [relative(base, join(dir, e.name))]))
    .sort();
}

export async function fileEntries(dir: string, paths: readonly string[]): Promise<FileEntry[]> {
  const out: FileEntry[] = [];
  for (const path of paths) out.push({ path, ...(await sha256File(join(dir, path))) });
  return out;
}

/** Counts and hashes bytes flowing through, keeping the last few for the completeness trailer. */
export class Digest extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');
  private tail = Buffer.alloc(0);

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    this.tail = Buffer.concat([this.tail, chunk]).subarray(-256);
    done(null, chunk);
  }

  sha256(): string {
    return this.hash.digest('hex');
  }

  /** pg_dumpall writes its trailer last: without it the dump is incomplete. */
  complete(): boolean {
    return this.tail.toString('utf8').includes(dumpTrailer);
  }
}

export async function sha256File(path: string): Promise<{ sha256: string; bytes: number }> {
  const d = new Digest();
  await pipeline(createReadStream(path), d, async function* (source) {
    for await (const _ of source);
  });
  return { sha256: d.sha256(), bytes: d.bytes };
}

export function readManifest(dir: string): BackupManifest {
  const path = join(dir, manifestName);
  if (!existsSync(path))
    throw badInput(
      `${dir} is not a complete pgscale backup: no ${manifestName}`,
      dir.endsWith('.partial')
        ? 'a .partial directory is a backup that never finished: take a new backup'
        : 'pass the directory that `pgscale backup --to` created (it holds manifest.json)',
    );
  try {
    const m = JSON.parse(readFileSync(path, 'utf8')) as BackupManifest;
    if (m.format !== 'pgscale-backup/1') throw new Error(`unknown format ${String(m.format)}`);
    return m;
  } catch (e) {
    throw refused(`${path} is not a valid backup manifest: ${(e as Error).message}`);
  }
}

export interface ArchiveCheck {
  ok: boolean;
  problems: string[];
  /** Every file of the backup as stored (compressed). */
  compressedBytes: number;
  /** The dumpall stream decompressed; null where the backup is not one stream (parallel, physical). */
  uncompressedBytes: number | null;
  files: number;
  /** Size of the databases the backup holds (pg_database_size when it was made). */
  databaseBytes: number;
}

/** How big a backup is, in the words every report uses: the whole of it, never one file's size. */
export interface BackupSize {
  method: BackupMethod;
  compressedBytes: number;
  files: number;
  /** The dumpall stream decompressed (dumpall only). */
  uncompressedBytes: number | null;
  databases: number;
  databaseBytes: number;
}

export function describeSize(s: BackupSize): string {
  const dump = s.method === 'dumpall' && s.uncompressedBytes !== null ? `, dump ${formatBytes(s.uncompressedBytes)} decompressed` : '';
  return `${formatBytes(s.compressedBytes)} in ${s.files} file${s.files === 1 ? '' : 's'}${dump}; ${s.databases} database${s.databases === 1 ? '' : 's'} of ${formatBytes(s.databaseBytes)} backed up`;
}

/** The databases a backup holds, and their size when it was made. */
export function heldSize(databases: readonly DatabaseEntry[]): { databases: number; databaseBytes: number } {
  const held = databases.filter((d) => d.dumped !== false);
  return { databases: held.length, databaseBytes: held.reduce((a, d) => a + d.bytes, 0) };
}

/** How a backup's method-specific proof is run: pg_restore --list per database, pg_verifybackup. */
export interface ArchiveTools {
  /** A bindir whose pg_restore reads the dump (parallel). */
  restoreBindir?: string;
  /** A bindir whose pg_verifybackup checks physical backups (the backup's major; 18+ reads tars in place). */
  verifyBindir?: string;
}

/** A bindir that may hold the client program a check needs, and why it is a candidate. */
export interface ToolCandidate {
  bindir: string;
  from: '--bindir' | 'the manifest' | 'installed';
}

/** A client program found to check a backup with. */
export interface ChosenTool {
  [key: string]: string | number;
  path: string;
  version: string;
  major: number;
  from: ToolCandidate['from'];
}

/** The program a backup's method-specific check runs, if any. */
export const checkProgram = (m: BackupManifest): 'pg_restore' | 'pg_verifybackup' | undefined =>
  methodOf(m) === 'parallel' ? 'pg_restore' : methodOf(m) === 'physical' ? 'pg_verifybackup' : undefined;

/** The version of pg_dump that wrote a parallel backup's databases (older manifests record it as pgDumpallVersion). */
export const pgDumpVersion = (m: BackupManifest): string => m.programs?.find((r) => r.program === 'pg_dump')?.version ?? m.pgDumpallVersion;

/**
 * Which versions of the check program read this backup: pg_restore at least as new as the pg_dump
 * that wrote it; pg_verifybackup of the server's major (from 18 on, any later one reads its tars too).
 */
export function toolFits(m: BackupManifest, major: number): boolean {
  const serverMajor = Math.floor(m.serverVersionNum / 10000);
  if (methodOf(m) === 'parallel') return major >= Number(/^(\d+)/.exec(pgDumpVersion(m))?.[1] ?? serverMajor);
  return major === serverMajor || (serverMajor >= 18 && major >= serverMajor);
}

/** What the check program must be, in words (for the error when none is found). */
export function toolNeed(m: BackupManifest): string {
  const serverMajor = Math.floor(m.serverVersionNum / 10000);
  if (methodOf(m) === 'parallel') return `pg_restore of PostgreSQL ${/^(\d+)/.exec(pgDumpVersion(m))?.[1] ?? serverMajor} or later`;
  return `pg_verifybackup of PostgreSQL ${serverMajor}${serverMajor >= 18 ? ' or later' : ''}`;
}

/**
 * Where to look for the programs that read or restore a backup, in order: --bindir, the bindir the
 * manifest records as the one that made it, then every installation found (newest first).
 */
export async function backupBindirs(runner: Runner, m: BackupManifest, explicit: string | undefined): Promise<ToolCandidate[]> {
  return [
    ...(explicit ? [{ bindir: explicit, from: '--bindir' as const }] : []),
    ...(m.clientBindir ? [{ bindir: m.clientBindir, from: 'the manifest' as const }] : []),
    ...(await findInstallations(runner)).map((i) => ({ bindir: i.bindir, from: 'installed' as const })),
  ];
}

/**
 * Finds the client program a backup's check needs: --bindir first, then the bindir the manifest
 * records as the one that made it, then every installation found (installations.ts, newest first);
 * the first whose version fits is used. Undefined when the method needs none.
 */
export async function findCheckTool(runner: Runner, m: BackupManifest, explicit: string | undefined): Promise<ChosenTool | undefined> {
  const program = checkProgram(m);
  if (!program) return undefined;
  const candidates = await backupBindirs(runner, m, explicit);
  const tried: string[] = [];
  for (const c of candidates) {
    const path = join(c.bindir, program);
    if (tried.includes(path)) continue;
    tried.push(path);
    const v = await programVersion(runner, path);
    if (v && toolFits(m, v.major)) return { path, version: v.version, major: v.major, from: c.from };
  }
  throw badInput(
    `no ${toolNeed(m)} found to check the ${methodOf(m)} backup with (tried ${tried.length ? tried.join(', ') : 'no bindir: none is installed in a standard place'})`,
    `pass --bindir DIR (the bindir of ${toolNeed(m).replace(/^\S+ of /, '')})`,
  );
}

function modeProblem(dir: string, path: string): string | undefined {
  const mode = statSync(join(dir, path)).mode & 0o777;
  return mode & 0o077 ? `${path} is readable by others (mode ${mode.toString(8)}); backups must be 0600` : undefined;
}

/**
 * Re-reads every file of the backup: the pg_dumpall stream decompressed in full (both digests and
 * the trailer), every other file's sha256; then the method's own proof — pg_restore --list of
 * each database's dump, or pg_verifybackup of a physical backup.
 */
export async function checkArchive(
  dir: string,
  manifest: BackupManifest,
  runner: Runner,
  signal?: AbortSignal,
  tools: ArchiveTools = {},
): Promise<ArchiveCheck> {
  const problems: string[] = [];
  let compressedBytes = 0;
  let uncompressedBytes: number | null = null;
  if (manifest.dumpFile) {
    const stream = await checkStream(dir, manifest, runner, signal);
    problems.push(...stream.problems);
    compressedBytes += stream.compressedBytes;
    // parallel's stream is the globals only: its size says nothing of the backup's
    if (methodOf(manifest) === 'dumpall') uncompressedBytes = stream.uncompressedBytes;
  }
  for (const f of manifest.files ?? []) {
    if (!existsSync(join(dir, f.path))) {
      problems.push(`${f.path} is missing`);
      continue;
    }
    const mode = modeProblem(dir, f.path);
    if (mode) problems.push(mode);
    const got = await sha256File(join(dir, f.path));
    compressedBytes += got.bytes;
    if (got.sha256 !== f.sha256) problems.push(`${f.path}: sha256 ${got.sha256} differs from the manifest's ${f.sha256}`);
  }
  if (problems.length === 0) problems.push(...(await methodProof(dir, manifest, runner, signal, tools)));
  const files = (manifest.files?.length ?? 0) + (manifest.dumpFile ? 1 : 0);
  return { ok: problems.length === 0, problems, compressedBytes, uncompressedBytes, files, databaseBytes: heldSize(manifest.databases).databaseBytes };
}

/** The parallel dump directory of a database (named by position: database names may hold anything). */
export const databaseDumpDir = (index: number) => `db-${index}`;

async function methodProof(dir: string, manifest: BackupManifest, runner: Runner, signal: AbortSignal | undefined, tools: ArchiveTools): Promise<string[]> {
  const problems: string[] = [];
  if (methodOf(manifest) === 'parallel') {
    if (!tools.restoreBindir) return ['no pg_restore to read the dumps with'];
    for (const [i, d] of manifest.databases.entries()) {
      if (!d.dumped) continue;
      const inv = { program: join(tools.restoreBindir, 'pg_restore'), args: ['--list', join(dir, databaseDumpDir(i))], signal };
      const res = await runner.run(inv);
      if (res.exitCode !== 0) problems.push(`the dump of database ${JSON.stringify(d.name)} cannot be read: ${describeFailure(inv, res)}`);
    }
  } else if (methodOf(manifest) === 'physical') {
    if (!tools.verifyBindir) return ["no pg_verifybackup of the backup's major version to check it with"];
    problems.push(...(await verifyPhysical(dir, runner, signal, tools.verifyBindir)));
  }
  return problems;
}

/**
 * pg_verifybackup checks the tars in place from 18 on (their WAL cannot be parsed there: the WAL
 * tar is checked against the manifest like every file). Before 18 it reads only a plain copy: the
 * tars are unpacked beside the backup, checked with WAL parsing, and the copy removed.
 */
async function verifyPhysical(dir: string, runner: Runner, signal: AbortSignal | undefined, bindir: string): Promise<string[]> {
  const major = (await programVersion(runner, join(bindir, 'pg_verifybackup')))?.major ?? 0;
  const base = join(dir, physicalDir);
  let target = base;
  const copy = `${dir}.verify-copy`;
  const args = ['--quiet'];
  if (major >= 18) args.push('--no-parse-wal');
  else {
    rmSync(copy, { recursive: true, force: true });
    mkdirSync(copy, { mode: 0o700 });
    for (const tar of readdirSync(base).filter((f) => /\.tar(\.\w+)?$/.test(f))) {
      const oid = /^(\d+)\.tar/.exec(tar)?.[1];
      const into = tar.startsWith('pg_wal.tar') ? join(copy, 'pg_wal') : oid ? join(copy, 'pg_tblspc', oid) : copy;
      mkdirSync(into, { recursive: true, mode: 0o700 });
      await untar(runner, { signal, trackProcess: () => undefined }, join(base, tar), into);
    }
    copyFileSync(join(base, 'backup_manifest'), join(copy, 'backup_manifest'));
    target = copy;
  }
  try {
    const inv = { program: join(bindir, 'pg_verifybackup'), args: [...args, target], signal };
    const res = await runner.run(inv);
    return res.exitCode === 0 ? [] : [`pg_verifybackup: ${describeFailure(inv, res)}`];
  } finally {
    if (target === copy) rmSync(copy, { recursive: true, force: true });
  }
}

/**
 * Unpacks one tar of a physical backup into dir: read (and decompressed) by pgscale, which alone
 * may read the 0700 backup, and written by tar as `owner` when given (a restored data directory).
 */
export async function untar(
  runner: Runner,
  ctx: { signal?: AbortSignal; trackProcess: (pgid: number) => void },
  file: string,
  dir: string,
  owner?: OsUser,
): Promise<void> {
  const reader = file.endsWith('.zst')
    ? { program: 'zstd', args: ['-q', '-d', '-c', file] }
    : file.endsWith('.gz')
      ? { program: 'gzip', args: ['-d', '-c', file] }
      : file.endsWith('.lz4')
        ? { program: 'lz4', args: ['-q', '-d', '-c', file] }
        : { program: 'cat', args: [file] };
  const read = runner.stream({ ...reader, signal: ctx.signal, onStart: ctx.trackProcess });
  read.stdin.end();
  const tar = runner.stream({ program: 'tar', args: ['-x', '-f', '-', '-C', dir], runAs: owner, signal: ctx.signal, onStart: ctx.trackProcess });
  await Promise.all([
    pipeline(read.stdout, tar.stdin),
    pipeline(tar.stdout, async function* (s) {
      for await (const _ of s);
    }),
  ]).catch(() => undefined);
  const [rr, tr] = await Promise.all([read.result, tar.result]);
  if (ctx.signal?.aborted) throw new PgscaleError('interrupted', ExitCode.Interrupted);
  if (rr.exitCode !== 0 || tr.exitCode !== 0)
    throw new PgscaleError(`unpacking ${file}: ${(rr.exitCode !== 0 ? rr : tr).stderr.trim() || 'failed'}`, ExitCode.FailedAfterChange);
}

/** Where a physical backup's pg_basebackup output lives inside the backup directory. */
export const physicalDir = 'base';

async function checkStream(
  dir: string,
  manifest: BackupManifest,
  runner: Runner,
  signal?: AbortSignal,
): Promise<{ problems: string[]; compressedBytes: number; uncompressedBytes: number }> {
  const problems: string[] = [];
  const dumpFile = manifest.dumpFile!;
  const file = join(dir, dumpFile);
  if (!existsSync(file)) return { problems: [`${dumpFile} is missing`], compressedBytes: 0, uncompressedBytes: 0 };
  const mode = modeProblem(dir, dumpFile);
  if (mode) problems.push(mode);
  const compressed = await sha256File(file);
  if (compressed.sha256 !== manifest.compressedSha256)
    problems.push(`compressed sha256 ${compressed.sha256} differs from the manifest's ${manifest.compressedSha256}`);
  const dec = decompressArgv(manifest.compression, file);
  const proc = runner.stream({ ...dec, args: dec.args, signal });
  proc.stdin.end();
  const digest = new Digest();
  await pipeline(proc.stdout, digest, async function* (source) {
    for await (const _ of source);
  });
  const res = await proc.result;
  if (res.exitCode !== 0) problems.push(`${dec.program} could not decompress ${dumpFile}: ${res.stderr.trim() || res.signal}`);
  const sha = digest.sha256();
  if (sha !== manifest.uncompressedSha256) problems.push(`decompressed sha256 ${sha} differs from the manifest's ${manifest.uncompressedSha256}`);
  if (digest.bytes !== manifest.uncompressedBytes) problems.push(`decompressed ${digest.bytes} bytes, the manifest says ${manifest.uncompressedBytes}`);
  if (!digest.complete()) problems.push("the dump does not end with pg_dumpall's completion trailer");
  return { problems, compressedBytes: compressed.bytes, uncompressedBytes: digest.bytes };
}
