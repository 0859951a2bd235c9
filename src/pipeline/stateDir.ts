import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { isRoot } from '../runner.js';
import { badInput } from '../errors.js';

/** /var/lib/pgscale for root, $XDG_STATE_HOME/pgscale otherwise; --state-dir overrides. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (isRoot()) return '/var/lib/pgscale';
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'pgscale');
}

/** Creates (or tightens) a private directory: runs, journals and backups of config files live here. */
export function ensurePrivateDir(path: string): string {
  try {
    mkdirSync(path, { recursive: true, mode: 0o700 });
    if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o700);
  } catch (e) {
    throw badInput(`cannot use state directory ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, 'pass --state-dir with a directory you can write');
  }
  return path;
}

/** pgscale's caches, each harmless to lose: in the default state directory, whatever --state-dir says. */
export const cacheDir = (): string => join(defaultStateDir(), 'cache');

/**
 * Makes (or tightens) a cache directory: 0700 and the user's own. False when it cannot be: the
 * cache is then not used, never a reason to fail.
 */
export function privateCacheDir(path: string): boolean {
  try {
    mkdirSync(path, { recursive: true, mode: 0o700 });
    const st = statSync(path);
    if (st.uid !== process.geteuid?.()) return false;
    if ((st.mode & 0o077) !== 0) chmodSync(path, 0o700);
    return true;
  } catch {
    return false;
  }
}
