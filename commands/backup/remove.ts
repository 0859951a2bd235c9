import * as Args from '@oclif/core/args';
import { existsSync, rmSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { PgscaleCommand } from '../../src/command.js';
import { filesUnder, methodOf, readManifest } from '../../src/backup/archive.js';
import { badInput, refused } from '../../src/errors.js';
import { formatBytes } from '../../src/format.js';
import { askToContinue } from '../../src/pipeline/session.js';

export interface RemoveResult {
  dir: string;
  removed: boolean;
  bytes: number;
}

export default class BackupRemove extends PgscaleCommand<typeof BackupRemove> {
  static override summary = 'Remove a pgscale backup, on purpose: the only way a verified backup is ever deleted (no undo removes one).';
  static override description =
    'Refuses a directory that is not a pgscale backup (no readable manifest.json). Asks first at a terminal; without one, needs --yes. --dry-run names what would go.';
  static override args = { dir: Args.string({ description: 'Backup directory (holding manifest.json).', required: true }) };
  static override examples = ['<%= config.bin %> backup remove /backups/pre-upgrade --yes'];

  async run(): Promise<RemoveResult> {
    const { args } = await this.parse(BackupRemove);
    const dir = resolve(args.dir);
    if (!existsSync(dir)) throw badInput(`no backup directory ${dir}`);
    if (!statSync(dir).isDirectory()) throw badInput(`${dir} is a file, not a backup directory`, 'pass the directory that holds manifest.json');
    const manifest = readManifest(dir);
    const bytes = filesUnder(dir).reduce((a, f) => a + statSync(resolve(dir, f)).size, 0);
    const what = `${methodOf(manifest)} backup ${dir} of PostgreSQL ${manifest.serverVersion} (${manifest.databases.filter((d) => d.dumped !== false).length} databases, ${formatBytes(bytes)}, made ${manifest.finishedAt})`;
    if (this.flags['dry-run']) {
      this.log(`would remove the ${what}`);
      return { dir, removed: false, bytes };
    }
    if (!this.flags.yes) {
      if (!this.canPrompt) throw refused(`removing the ${what} needs confirmation`, 'run it at a terminal, or pass --yes');
      if (!(await askToContinue(`Remove the ${what}? It cannot be undone.`))) throw refused('not confirmed: the backup is kept');
    }
    rmSync(dir, { recursive: true, force: true });
    this.log(`removed the ${what}`);
    return { dir, removed: true, bytes };
  }
}
