/**
 * What `postgres -V` printed for each installation, remembered between runs: running it was ~37 ms
 * of detect's ~219 ms, and detect (and most commands' start) probes every installation on the host.
 * An answer is used only while the binary is the same file: its realpath, and the device, inode,
 * size, mtime and ctime of what is there (a package upgrade changes them all). The cache is a
 * convenience, never a source of truth: missing, unreadable, corrupt or not the user's own, it is
 * ignored, and failing to write it changes nothing.
 */
import { closeSync, fstatSync, openSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { cacheDir, privateCacheDir } from '../pipeline/stateDir.js';

type Entries = Record<string, { key: string; output: string }>;

export const versionCacheFile = (): string => join(cacheDir(), 'postgres-versions.json');

/** The file a binary path leads to, and what identifies its contents now; undefined when it cannot be looked at. */
function identify(binary: string): { path: string; key: string } | undefined {
  try {
    const path = realpathSync(binary);
    const st = statSync(path, { bigint: true });
    return { path, key: `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` };
  } catch {
    return undefined;
  }
}

/** The cache's entries; none when it is absent, corrupt, or could have been written by someone else. */
function load(file: string): Entries {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== process.geteuid?.() || (st.mode & 0o022) !== 0) return {};
    const parsed: unknown = JSON.parse(readFileSync(fd, 'utf8'));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return {};
    const entries: Entries = {};
    for (const [path, e] of Object.entries(parsed as Record<string, unknown>)) {
      const { key, output } = (e ?? {}) as Record<string, unknown>;
      if (typeof key === 'string' && typeof output === 'string') entries[path] = { key, output };
    }
    return entries;
  } catch {
    return {};
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Writes the entries atomically (0600 in a 0700 directory); any failure leaves the cache as it was. */
function save(file: string, entries: Entries): void {
  if (!privateCacheDir(dirname(file))) return;
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    rmSync(tmp, { force: true }); // one a killed pgscale of the same pid left: its mode would be kept
    writeFileSync(tmp, `${JSON.stringify(entries)}\n`, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, file);
  } catch {
    /* a cache that cannot be written costs the probe next time, nothing else */
  }
}

/**
 * The cached `-V` output of a binary, when the same file answered before; remember() stores the
 * output of a probe under the identity taken here, before the probe ran (a binary replaced
 * meanwhile is then looked at again next time, never paired with the old answer).
 */
export function versionLookup(binary: string, file = versionCacheFile()): { cached?: string; remember(output: string): void } {
  const id = identify(binary);
  if (!id) return { remember: () => undefined };
  const hit = load(file)[id.path];
  return {
    cached: hit?.key === id.key ? hit.output : undefined,
    remember(output) {
      // read again: other probes of this process (or another pgscale) may have written meanwhile
      const entries = load(file);
      for (const path of Object.keys(entries)) if (!identify(path)) delete entries[path]; // binaries since removed
      entries[id.path] = { key: id.key, output };
      save(file, entries);
    },
  };
}
