import * as Args from '@oclif/core/args';
import { join, resolve } from 'node:path';
import { PgscaleCommand } from '../../src/command.js';
import { checkArchive, methodOf, readManifest, type ArchiveCheck } from '../../src/backup/archive.js';
import { findInstallations } from '../../src/cluster/installations.js';
import { ExitCode, PgscaleError, badInput } from '../../src/errors.js';
import { existsSync, statSync } from 'node:fs';
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
  static override summary =
    "Re-check an existing backup: every file against the manifest, the dump decompressed in full, and the method's own check (pg_restore --list, pg_verifybackup).";
  static override args = { dir: Args.string({ description: 'Backup directory (holding manifest.json).', required: true }) };

  async run(): Promise<ArchiveCheck & { dir: string }> {
    const { args } = await this.parse(BackupVerify);
    const dir = resolve(args.dir);
    const kind = pathKind(dir);
    if (kind === 'absent')
      throw badInput(
        `no backup directory ${dir}`,
        existsSync(`${dir}.partial`)
          ? `${dir}.partial is an unfinished backup (never verified, not restorable): take a new backup`
          : 'pass the directory that `pgscale backup --to` created',
      );
    if (kind !== 'directory')
      throw badInput(
        `${dir} is a file, not a backup directory`,
        'pass the directory that `pgscale backup --to` created (it holds manifest.json and the dump), not a file in it',
      );
    if (!existsSync(join(dir, 'manifest.json'))) {
      throw badInput(
        `${dir} is not a pgscale backup: it holds no manifest.json`,
        dir.endsWith('.partial')
          ? 'a .partial directory is a backup that never finished: take a new backup'
          : 'pass the directory that `pgscale backup --to` created (it holds manifest.json and the dump)',
      );
    }
    const manifest = readManifest(dir);
    const installations = await findInstallations(this.runner, this.flags.bindir ? [this.flags.bindir] : []);
    const major = Math.floor(manifest.serverVersionNum / 10000);
    const tools = {
      restoreBindir: installations.find((i) => i.major >= major)?.bindir,
      // pg_verifybackup reads a physical backup of its own major; from 18 on, any later one reads its tars too
      verifyBindir: installations.find((i) => i.major === major || (major >= 18 && i.major >= major))?.bindir,
    };
    // a missing program says nothing about the backup: bad input, never "damaged"
    const method = methodOf(manifest);
    if (method === 'parallel' && !tools.restoreBindir)
      throw badInput(
        `no pg_restore of PostgreSQL ${major} or later found to read ${dir} with`,
        'pass --bindir DIR (the bindir of PostgreSQL ' + major + ' or later)',
      );
    if (method === 'physical' && !tools.verifyBindir)
      throw badInput(`no pg_verifybackup of PostgreSQL ${major} found to check ${dir} with`, `pass --bindir DIR (the bindir of PostgreSQL ${major})`);
    const result = await checkArchive(dir, manifest, this.runner, undefined, tools);
    if (!result.ok)
      throw new PgscaleError(
        `backup ${dir} is damaged: ${result.problems.join('; ')}`,
        ExitCode.Refused,
        'do not restore from it: take a new backup (and keep this one for inspection)',
      );
    const held = manifest.databases.filter((d) => d.dumped !== false);
    this.log(
      `ok: ${dir}: ${methodOf(manifest)} backup, ${formatBytes(result.compressedBytes)}${result.uncompressedBytes ? ` (dump ${formatBytes(result.uncompressedBytes)} decompressed)` : ''}, every checksum matches (PostgreSQL ${manifest.serverVersion}, ${held.length} of ${manifest.databases.length} databases held)`,
    );
    return { dir, ...result };
  }
}
