/**
 * The file work of moving pg_wal: listing a WAL directory, copying it durably (every file and
 * directory fsynced, owner and mode set, never following a symlink), comparing two copies by
 * names, sizes and sha256, and making one copy the exact mirror of another.
 *
 * pgscale runs this as root on directories the cluster owner controls, so files are created with
 * O_EXCL | O_NOFOLLOW and changed through their descriptors: a symlink planted in the target can
 * never redirect a write.
 */
import {
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  fchownSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
  type Stats,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncPath } from '../files.js';
import { sha256File } from '../backup/archive.js';
import { ExitCode, PgscaleError } from '../errors.js';
import type { OsUser } from '../runner.js';

export interface TreeEntry {
  /** Path relative to the tree's root, '/'-separated. */
  rel: string;
  type: 'dir' | 'file';
  size: number;
  mode: number;
}

/** lstat that answers undefined for a missing path. */
export function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export const lexists = (path: string): boolean => lstatOrUndefined(path) !== undefined;

/** A filesystem's lost+found, when a WAL directory is the root of a mount: never WAL, never copied or removed. */
const lostAndFound = 'lost+found';

/**
 * Every directory and regular file below `root`, sorted; anything else (symlinks, sockets) is an
 * error. A top-level lost+found is left out: PostgreSQL never creates one.
 */
export function listTree(root: string): TreeEntry[] {
  const out: TreeEntry[] = [];
  const walk = (dir: string, prefix: string) => {
    for (const name of readdirSync(dir).sort()) {
      if (!prefix && name === lostAndFound) continue;
      const path = join(dir, name);
      const rel = prefix ? `${prefix}/${name}` : name;
      const st = lstatSync(path);
      if (st.isDirectory()) {
        out.push({ rel, type: 'dir', size: 0, mode: st.mode & 0o7777 });
        walk(path, rel);
      } else if (st.isFile()) out.push({ rel, type: 'file', size: st.size, mode: st.mode & 0o7777 });
      else
        throw new PgscaleError(
          `${path} is neither a regular file nor a directory: a WAL directory holds only segments, history files and status directories`,
          ExitCode.FailedAfterChange,
        );
    }
  };
  walk(root, '');
  return out;
}

export const treeBytes = (entries: readonly TreeEntry[]): number => entries.reduce((a, e) => a + e.size, 0);

/** Bytes below a directory, 0 if it is missing. */
export function directoryBytes(dir: string): number {
  return existsSync(dir) ? treeBytes(listTree(dir)) : 0;
}

/** fsync a file or directory by path (a directory so the names in it survive a crash). */
/** Sets owner and mode of a directory through its descriptor (never through a symlink). */
export function claimDirectory(path: string, owner: OsUser | undefined, mode: number): void {
  const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    if (owner) fchownSync(fd, owner.uid, owner.gid);
    fchmodSync(fd, mode);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Creates a directory (or takes over an existing one), owned by `owner` with `mode`. */
export function ensureDirectory(path: string, owner: OsUser | undefined, mode: number): void {
  const st = lstatOrUndefined(path);
  if (!st) mkdirSync(path, { mode });
  else if (!st.isDirectory()) throw new PgscaleError(`${path} exists and is not a directory`, ExitCode.FailedAfterChange);
  claimDirectory(path, owner, mode);
}

const chunk = 1024 * 1024;

/** Copies one regular file to a new path: O_EXCL|O_NOFOLLOW, owner, mode and times of the source, fsynced. */
async function copyFileDurably(src: string, dst: string, st: Stats, owner: OsUser | undefined, onBytes: (n: number) => void): Promise<void> {
  const input = await open(src, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const output = await open(dst, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      const buf = Buffer.allocUnsafe(chunk);
      for (;;) {
        const { bytesRead } = await input.read(buf, 0, chunk, null);
        if (bytesRead === 0) break;
        let written = 0;
        while (written < bytesRead) written += (await output.write(buf, written, bytesRead - written)).bytesWritten;
        onBytes(bytesRead);
      }
      if (owner) await output.chown(owner.uid, owner.gid);
      await output.chmod(st.mode & 0o7777);
      await output.utimes(st.atime, st.mtime);
      await output.sync();
    } finally {
      await output.close();
    }
  } finally {
    await input.close();
  }
}

export interface CopyOptions {
  owner: OsUser | undefined;
  signal: AbortSignal;
  onBytes?: (done: number) => void;
}

function interrupted(): PgscaleError {
  return new PgscaleError('interrupted', ExitCode.Interrupted);
}

/**
 * Copies the contents of `src` into the existing, empty directory `dst`. Directories keep the
 * source's mode; every file and directory is fsynced before this returns.
 */
export async function copyTree(src: string, dst: string, opts: CopyOptions): Promise<{ files: number; bytes: number }> {
  let bytes = 0;
  let files = 0;
  const dirs: string[] = [dst];
  for (const e of listTree(src)) {
    if (opts.signal.aborted) throw interrupted();
    const from = join(src, e.rel);
    const to = join(dst, e.rel);
    if (e.type === 'dir') {
      mkdirSync(to, { mode: 0o700 });
      claimDirectory(to, opts.owner, e.mode);
      dirs.push(to);
    } else {
      await copyFileDurably(from, to, lstatSync(from), opts.owner, (n) => {
        bytes += n;
        opts.onBytes?.(bytes);
      });
      files++;
    }
  }
  // children first, then their parents: a name is durable once its directory is
  for (const d of dirs.reverse()) fsyncPath(d);
  return { files, bytes };
}

/** Removes everything inside a directory, keeping the directory itself (and a mount root's lost+found). */
export function emptyDirectory(dir: string): void {
  const keep = isMountPoint(dir) ? [lostAndFound] : [];
  for (const name of readdirSync(dir)) if (!keep.includes(name)) rmSync(join(dir, name), { recursive: true, force: true });
  fsyncPath(dir);
}

export interface TreeComparison {
  same: boolean;
  files: number;
  bytes: number;
  differences: string[];
}

/**
 * Compares two trees: the same names and types, the same sizes, and the same sha256 for every
 * regular file. Stops collecting after a handful of differences.
 */
export async function compareTrees(a: string, b: string, signal?: AbortSignal): Promise<TreeComparison> {
  const ta = listTree(a);
  const tb = new Map(listTree(b).map((e) => [e.rel, e]));
  const differences: string[] = [];
  const note = (d: string) => {
    if (differences.length < 10) differences.push(d);
  };
  let files = 0;
  for (const e of ta) {
    if (signal?.aborted) throw interrupted();
    const other = tb.get(e.rel);
    tb.delete(e.rel);
    if (!other) {
      note(`${e.rel} is missing from ${b}`);
      continue;
    }
    if (other.type !== e.type) {
      note(`${e.rel} is a ${e.type} in ${a} but a ${other.type} in ${b}`);
      continue;
    }
    if (e.type === 'dir') continue;
    files++;
    if (other.size !== e.size) {
      note(`${e.rel}: ${e.size} bytes in ${a}, ${other.size} in ${b}`);
      continue;
    }
    const [ha, hb] = await Promise.all([sha256File(join(a, e.rel)), sha256File(join(b, e.rel))]);
    if (ha.sha256 !== hb.sha256) note(`${e.rel}: sha256 differs`);
  }
  for (const rel of tb.keys()) note(`${rel} exists only in ${b}`);
  return { same: differences.length === 0 && tb.size === 0, files, bytes: treeBytes(ta), differences };
}

/**
 * Makes `dst` an exact copy of `src`: what is only in `dst` goes, what differs (type, size or
 * sha256) is copied again. Used to carry WAL written at the new location back to the old one.
 */
export async function mirrorTree(src: string, dst: string, opts: CopyOptions): Promise<{ copied: number; removed: number }> {
  const wanted = new Map(listTree(src).map((e) => [e.rel, e]));
  let removed = 0;
  let copied = 0;
  // deepest first, so a directory's removal never races its children
  for (const e of listTree(dst).reverse()) {
    const w = wanted.get(e.rel);
    if (!w || w.type !== e.type) {
      rmSync(join(dst, e.rel), { recursive: true, force: true });
      removed++;
    }
  }
  const dirs: string[] = [dst];
  for (const e of wanted.values()) {
    if (opts.signal.aborted) throw interrupted();
    const from = join(src, e.rel);
    const to = join(dst, e.rel);
    const have = lstatOrUndefined(to);
    if (e.type === 'dir') {
      if (!have) mkdirSync(to, { mode: 0o700 });
      claimDirectory(to, opts.owner, e.mode);
      dirs.push(to);
      continue;
    }
    if (have && have.isFile() && have.size === e.size && (await sha256File(from)).sha256 === (await sha256File(to)).sha256) continue;
    if (have) rmSync(to, { force: true });
    await copyFileDurably(from, to, lstatSync(from), opts.owner, () => undefined);
    copied++;
  }
  for (const d of dirs.reverse()) fsyncPath(d);
  return { copied, removed };
}

/** True when `dir` is the root of a mounted filesystem (its device differs from its parent's). */
export function isMountPoint(dir: string): boolean {
  const parent = dirname(dir);
  return parent !== dir && statSync(dir).dev !== statSync(parent).dev;
}
