import { Args } from '@oclif/core';
import { resolve } from 'node:path';
import { PgscaleCommand } from '../../src/command.js';
import { checkArchive, readManifest, type ArchiveCheck } from '../../src/backup/archive.js';
import { ExitCode, PgscaleError, badInput } from '../../src/errors.js';
import { existsSync } from 'node:fs';
import { formatBytes } from '../../src/format.js';

export default class BackupVerify extends PgscaleCommand<typeof BackupVerify> {
  static override summary = 'Re-check an existing backup: decompress it in full and compare its checksums with the manifest.';
  static override args = { dir: Args.directory({ description: 'Backup directory (holding manifest.json).', required: true }) };

  async run(): Promise<ArchiveCheck & { dir: string }> {
    const { args } = await this.parse(BackupVerify);
    const dir = resolve(args.dir);
    if (!existsSync(dir)) throw badInput(`no backup directory ${dir}`);
    const manifest = readManifest(dir);
    const result = await checkArchive(dir, manifest, this.runner);
    if (!result.ok) throw new PgscaleError(`backup ${dir} is damaged: ${result.problems.join('; ')}`, ExitCode.Refused);
    this.log(`ok: ${dir}: ${manifest.dumpFile} ${formatBytes(result.compressedBytes)} → ${formatBytes(result.uncompressedBytes)}, sha256 match, dump complete (PostgreSQL ${manifest.serverVersion}, ${manifest.databases.length} databases)`);
    return { dir, ...result };
  }
}
