/** Small file-system facts and durability helpers shared by the steps. */
import { closeSync, existsSync, fsyncSync, openSync, realpathSync } from 'node:fs';
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
