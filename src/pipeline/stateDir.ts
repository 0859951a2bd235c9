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
