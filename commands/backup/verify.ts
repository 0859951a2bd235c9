import { Args } from '@oclif/core';
import { resolve } from 'node:path';
import { PgscaleCommand } from '../../src/command.js';
import { checkArchive, readManifest, type ArchiveCheck } from '../../src/backup/archive.js';
import { ExitCode, PgscaleError, badInput } from '../../src/errors.js';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { formatBytes } from '../../src/format.js';

/** What a path is, without following a missing target into an exception. */
function pathKind(path: string): 'absent' | 'directory' | 'other' {
  try {
    return statSync(path).isDirectory() ? 'directory' : 'other';
  } catch {
    return 'absent';
  }
}

export default class BackupVerify extends PgscaleCommand<typeof BackupVerify> {
  static override summary = 'Re-check an existing backup: decompress it in full and compare its checksums with the manifest.';
  static override args = { dir: Args.directory({ description: 'Backup directory (holding manifest.json).', required: true }) };

  async run(): Promise<ArchiveCheck & { dir: string }> {
    const { args } = await this.parse(BackupVerify);
    const dir = resolve(args.dir);
    const kind = pathKind(dir);
    if (kind === 'absent') throw badInput(`no backup directory ${dir}`, existsSync(`${dir}.partial`) ? `${dir}.partial is an unfinished backup (never verified, not restorable): take a new backup` : 'pass the directory that `pgscale backup --to` created');
    if (kind !== 'directory') throw badInput(`${dir} is a file, not a backup directory`, 'pass the directory that `pgscale backup --to` created (it holds manifest.json and the dump), not a file in it');
    if (!existsSync(join(dir, 'manifest.json'))) {
      throw badInput(`${dir} is not a pgscale backup: it holds no manifest.json`, dir.endsWith('.partial') ? 'a .partial directory is a backup that never finished: take a new backup' : 'pass the directory that `pgscale backup --to` created (it holds manifest.json and the dump)');
    }
    const manifest = readManifest(dir);
    const result = await checkArchive(dir, manifest, this.runner);
    if (!result.ok) throw new PgscaleError(`backup ${dir} is damaged: ${result.problems.join('; ')}`, ExitCode.Refused, 'do not restore from it: take a new backup (and keep this one for inspection)');
    this.log(`ok: ${dir}: ${manifest.dumpFile} ${formatBytes(result.compressedBytes)} → ${formatBytes(result.uncompressedBytes)}, sha256 match, dump complete (PostgreSQL ${manifest.serverVersion}, ${manifest.databases.length} databases)`);
    return { dir, ...result };
  }
}
