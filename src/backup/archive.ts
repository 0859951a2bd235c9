/**
 * The backup directory's files and the checks on them, shared by the backup steps and by
 * `pgscale backup verify`: manifest.json, the compressed dump, and the decompress-and-checksum pass.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { refused } from '../errors.js';
import type { Runner } from '../runner.js';
import { compressedSuffix, decompressArgv, type CompressionSpec } from './compression.js';

export const manifestName = 'manifest.json';
export const dumpBaseName = 'dumpall.sql';
export const dumpTrailer = '-- PostgreSQL database cluster dump complete';

export const dumpFileName = (c: CompressionSpec) => dumpBaseName + compressedSuffix[c.compressor];

export interface BackupManifest {
  format: 'pgscale-backup/1';
  /** Random token of the plan that made it: rollback only ever removes its own backup. */
  token: string;
  serverVersion: string;
  serverVersionNum: number;
  pgDumpallVersion: string;
  databases: { name: string; bytes: number; encoding: string }[];
  compression: CompressionSpec;
  dumpFile: string;
  compressedBytes: number;
  compressedSha256: string;
  uncompressedBytes: number;
  uncompressedSha256: string;
  startedAt: string;
  finishedAt: string;
  options: { pgDumpallArgs: string[] };
  /** Per-database, per-table row counts taken just before the dump (for --verify restore). */
  rowCounts?: Record<string, Record<string, number>>;
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
  if (!existsSync(path)) throw refused(`${dir} is not a complete pgscale backup: no ${manifestName}`);
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
  compressedBytes: number;
  uncompressedBytes: number;
}

/** Re-reads the compressed file and decompresses it in full, comparing both digests and the trailer. */
export async function checkArchive(dir: string, manifest: BackupManifest, runner: Runner, signal?: AbortSignal): Promise<ArchiveCheck> {
  const problems: string[] = [];
  const file = join(dir, manifest.dumpFile);
  if (!existsSync(file)) return { ok: false, problems: [`${manifest.dumpFile} is missing`], compressedBytes: 0, uncompressedBytes: 0 };
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) problems.push(`${manifest.dumpFile} is readable by others (mode ${mode.toString(8)}); backups must be 0600`);
  const compressed = await sha256File(file);
  if (compressed.sha256 !== manifest.compressedSha256) problems.push(`compressed sha256 ${compressed.sha256} differs from the manifest's ${manifest.compressedSha256}`);
  const dec = decompressArgv(manifest.compression, file);
  const proc = runner.stream({ ...dec, args: dec.args, signal });
  proc.stdin.end();
  const digest = new Digest();
  await pipeline(proc.stdout, digest, async function* (source) {
    for await (const _ of source);
  });
  const res = await proc.result;
  if (res.exitCode !== 0) problems.push(`${dec.program} could not decompress ${manifest.dumpFile}: ${res.stderr.trim() || res.signal}`);
  const sha = digest.sha256();
  if (sha !== manifest.uncompressedSha256) problems.push(`decompressed sha256 ${sha} differs from the manifest's ${manifest.uncompressedSha256}`);
  if (digest.bytes !== manifest.uncompressedBytes) problems.push(`decompressed ${digest.bytes} bytes, the manifest says ${manifest.uncompressedBytes}`);
  if (!digest.complete()) problems.push('the dump does not end with pg_dumpall\'s completion trailer');
  return { ok: problems.length === 0, problems, compressedBytes: compressed.bytes, uncompressedBytes: digest.bytes };
}
