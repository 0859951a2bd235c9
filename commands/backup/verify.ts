import { Args } from '@oclif/core';
import { resolve } from 'node:path';
import { PgscaleCommand } from '../../src/command.js';
import { checkArchive, methodOf, readManifest, type ArchiveCheck } from '../../src/backup/archive.js';
import { findInstallations } from '../../src/cluster/installations.js';
import { ExitCode, PgscaleError, badInput } from '../../src/errors.js';
import { existsSync, statSync } from 'node:fs';
import { formatBytes } from '../../src/format.js';

export default class BackupVerify extends PgscaleCommand<typeof BackupVerify> {
  static override summary =
    "Re-check an existing backup: every file against the manifest, the dump decompressed in full, and the method's own check (pg_restore --list, pg_verifybackup).";
  static override args = { dir: Args.string({ description: 'Backup directory (holding manifest.json).', required: true }) };

  async run(): Promise<ArchiveCheck & { dir: string }> {
    const { args } = await this.parse(BackupVerify);
    const dir = resolve(args.dir);
    if (!existsSync(dir)) throw badInput(`no backup directory ${dir}`);
    if (!statSync(dir).isDirectory()) throw badInput(`${dir} is a file, not a backup directory`, 'pass the directory that holds manifest.json');
    const manifest = readManifest(dir);
    const installations = await findInstallations(this.runner, this.flags.bindir ? [this.flags.bindir] : []);
    const major = Math.floor(manifest.serverVersionNum / 10000);
    const result = await checkArchive(dir, manifest, this.runner, undefined, {
      restoreBindir: installations.find((i) => i.major >= major)?.bindir,
      // pg_verifybackup reads a physical backup of its own major; from 18 on, any later one reads its tars too
      verifyBindir: installations.find((i) => i.major === major || (major >= 18 && i.major >= major))?.bindir,
    });
    if (!result.ok) throw new PgscaleError(`backup ${dir} is damaged: ${result.problems.join('; ')}`, ExitCode.Refused);
    const held = manifest.databases.filter((d) => d.dumped !== false);
    this.log(
      `ok: ${dir}: ${methodOf(manifest)} backup, ${formatBytes(result.compressedBytes)}${result.uncompressedBytes ? ` (dump ${formatBytes(result.uncompressedBytes)} decompressed)` : ''}, every checksum matches (PostgreSQL ${manifest.serverVersion}, ${held.length} of ${manifest.databases.length} databases held)`,
    );
    return { dir, ...result };
  }
}
