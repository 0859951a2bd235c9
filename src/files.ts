/** Small file-system facts and durability helpers shared by the steps. */
import { closeSync, existsSync, fsyncSync, openSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';

/** fsync a file, or a directory so that a rename or a new entry in it survives a crash. */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Resolves symlinks of the deepest existing ancestor, so a not-yet-created path compares right. */
export function realish(path: string): string {
  let p = resolve(path);
  const rest: string[] = [];
  while (!existsSync(p) && dirname(p) !== p) {
    rest.unshift(p.slice(dirname(p).length + 1));
    p = dirname(p);
  }
  return join(realpathSync(p), ...rest);
}

/** Whether `child` is `parent` or lies below it (paths as given: resolve symlinks first with realish). */
export function isInside(child: string, parent: string): boolean {
  return (resolve(child) + sep).startsWith(resolve(parent) + sep);
}

/** The nearest existing ancestor: where a directory to be created will live. */
export function existingAncestor(path: string): string {
  let p = resolve(path);
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

/** The bytes of the regular files under `dir` (unreadable parts count as zero: callers say "about"). */
export function treeBytes(dir: string): number {
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
    /* see above */
  }
  return total;
}
