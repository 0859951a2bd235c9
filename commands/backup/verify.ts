import * as Args from '@oclif/core/args';
import { dirname, join, resolve } from 'node:path';
import { PgscaleCommand } from '../../src/command.js';
import { checkArchive, describeSize, findCheckTool, heldSize, methodOf, readManifest, type ArchiveCheck, type ChosenTool } from '../../src/backup/archive.js';
import { ExitCode, PgscaleError, badInput } from '../../src/errors.js';
import { existsSync, statSync } from 'node:fs';

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

  async run(): Promise<ArchiveCheck & { dir: string; checkedWith: ChosenTool | null }> {
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
    // a missing program says nothing about the backup: bad input (with the fix), never "damaged"
    const tool = await findCheckTool(this.runner, manifest, this.flags.bindir);
    const method = methodOf(manifest);
    const tools = tool ? (method === 'parallel' ? { restoreBindir: dirname(tool.path) } : { verifyBindir: dirname(tool.path) }) : {};
    const result = await checkArchive(dir, manifest, this.runner, undefined, tools);
    if (!result.ok)
      throw new PgscaleError(
        `backup ${dir} is damaged: ${result.problems.join('; ')}`,
        ExitCode.Refused,
        'do not restore from it: take a new backup (and keep this one for inspection)',
      );
    const held = heldSize(manifest.databases);
    this.log(
      `ok: ${dir}: ${method} backup, ${describeSize({ method, ...result, ...held })}; every checksum matches (PostgreSQL ${manifest.serverVersion}, ${held.databases} of ${manifest.databases.length} databases held)${tool ? `; read with ${tool.path} ${tool.version} (${tool.from === 'installed' ? 'an installation found' : `from ${tool.from}`})` : ''}`,
    );
    return { dir, ...result, checkedWith: tool ?? null };
  }
}
