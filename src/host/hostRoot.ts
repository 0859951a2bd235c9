/**
 * Host facts (/proc, /sys, the cgroup filesystem, /etc) are read through one root, so tests point
 * detection at fixture trees captured from other machines. Absolute symlinks inside the tree are
 * re-rooted; relative ones resolve as on the real host.
 */
import { readFile, readlink, readdir, lstat, stat } from 'node:fs/promises';
import { posix } from 'node:path';

export class HostRoot {
  constructor(readonly root: string = '/') {}

  /** The real filesystem path for a host path like "/sys/block/vda". */
  real(hostPath: string): string {
    return this.root === '/' ? hostPath : posix.join(this.root, hostPath);
  }

  /** File contents, or undefined when the file does not exist or cannot be read. */
  async read(hostPath: string): Promise<string | undefined> {
    try {
      return await readFile(this.real(hostPath), 'utf8');
    } catch {
      return undefined;
    }
  }

  /** First line, trimmed, or undefined. */
  async readLine(hostPath: string): Promise<string | undefined> {
    const text = await this.read(hostPath);
    return text === undefined ? undefined : (text.split('\n')[0] ?? '').trim();
  }

  async exists(hostPath: string): Promise<boolean> {
    try {
      await lstat(this.real(hostPath));
      return true;
    } catch {
      return false;
    }
  }

  async isDirectory(hostPath: string): Promise<boolean> {
    try {
      return (await stat(this.real(hostPath))).isDirectory();
    } catch {
      return false;
    }
  }

  async list(hostPath: string): Promise<string[]> {
    try {
      return (await readdir(this.real(hostPath))).sort();
    } catch {
      return [];
    }
  }

  /** Resolves every symlink component of a host path, staying inside the root. */
  async resolve(hostPath: string): Promise<string> {
    const parts = posix.normalize(hostPath).split('/').filter(Boolean);
    let current = '/';
    for (let i = 0, hops = 0; i < parts.length; i++) {
      const next = posix.join(current, parts[i]!);
      let target: string | undefined;
      try {
        target = await readlink(this.real(next));
      } catch {
        target = undefined;
      }
      if (target === undefined) {
        current = next;
        continue;
      }
      if (++hops > 40) throw new Error(`too many symlinks resolving ${hostPath}`);
      const absolute = posix.isAbsolute(target) ? target : posix.join(current, target);
      parts.splice(0, i + 1, ...posix.normalize(absolute).split('/').filter(Boolean));
      current = '/';
      i = -1;
    }
    return current;
  }
}
