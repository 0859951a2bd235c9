import * as Args from '@oclif/core/args';
import * as Flags from '@oclif/core/flags';
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { resolveTarget } from '../../src/cluster/access.js';
import { probeBindir } from '../../src/cluster/installations.js';
import { badInput } from '../../src/errors.js';
import { currentUser, userByName } from '../../src/osUser.js';
import { OperationCommand, type OperationResult, planOutFlag } from '../../src/operationCommand.js';
import { isRoot, type Runner } from '../../src/runner.js';
import '../../src/operations.js';
import { backupBindirs, methodOf, readManifest, type BackupManifest } from '../../src/backup/archive.js';
import { availableCores } from '../../src/backup/methods.js';
import { newRestoreToken, type RestoreParams } from '../../src/backup/restore.js';

/**
 * The installation a --to restore runs: --bindir as given (the checks judge its version), else the
 * first of the backup's bindirs (the manifest's, then those installed: the discovery `backup
 * verify` uses) whose server fits the backup.
 */
async function restoreBindir(runner: Runner, manifest: BackupManifest, explicit: string | undefined): Promise<{ bindir: string }> {
  if (explicit) return { bindir: explicit };
  const sourceMajor = Math.floor(manifest.serverVersionNum / 10000);
  const physical = methodOf(manifest) === 'physical';
  const tried: string[] = [];
  for (const c of await backupBindirs(runner, manifest, undefined)) {
    if (tried.includes(c.bindir)) continue;
    tried.push(c.bindir);
    const install = await probeBindir(runner, c.bindir, 'explicit').catch(() => undefined);
    if (install && (physical ? install.major === sourceMajor : install.major >= sourceMajor)) return install;
  }
  throw badInput(
    `no PostgreSQL ${sourceMajor}${physical ? '' : ' or newer'} installation to restore into (tried ${tried.length ? tried.join(', ') : 'no bindir: none is installed in a standard place'})`,
    'pass --bindir',
  );
}

export default class BackupRestore extends OperationCommand<typeof BackupRestore> {
  static override summary = 'Restore a backup (any method) into a new data directory, or (dumpall, parallel) into a running server that holds no data yet.';
  static override description = `--to NEWPGDATA: initdb with the manifest's encoding, locale and superuser (a physical backup is unpacked instead), started on a private socket, loaded (psql, pg_restore -j), checked, and left stopped; tablespaces are recreated under --tablespace-dir, never at the source's paths. --pgdata or --dsn of a running server: loads into it. Either way every table's row count is compared with the manifest, and a target that is not empty is refused.`;
  static override args = { dir: Args.string({ description: 'Backup directory (holding manifest.json).', required: true }) };
  static override examples = [
    '<%= config.bin %> backup restore /backups/pre-upgrade --to /var/lib/postgresql/16/restored --jobs 8',
    '<%= config.bin %> backup restore /backups/nightly --dsn "host=/run/postgresql port=5434" --dry-run',
  ];

  static override flags = {
    to: Flags.string({ summary: 'New data directory (absent or empty) to restore into.', exclusive: ['dsn'] }),
    jobs: Flags.integer({ summary: 'pg_restore jobs (default: the CPUs available).', min: 1, max: 256 }),
    'tablespace-dir': Flags.string({ summary: 'With --to: where tablespaces are recreated (default NEWPGDATA.tablespaces; absent or empty).' }),
    owner: Flags.string({ summary: 'With --to, as root: the OS account that owns and runs the new cluster (default postgres).' }),
    'plan-out': planOutFlag,
  };

  async run(): Promise<OperationResult> {
    const { args } = await this.parse(BackupRestore);
    const f = this.flags;
    const source = resolve(args.dir);
    if (!existsSync(source)) throw badInput(`no backup directory ${source}`);
    if (!statSync(source).isDirectory()) throw badInput(`${source} is a file, not a backup directory`, 'pass the directory that holds manifest.json');
    if (!f.to && !f.dsn && !f.pgdata) throw badInput('restore where? pass --to NEWPGDATA, or --pgdata / --dsn of a running server');
    if (f.to && f.pgdata) throw badInput('--to names a new data directory; --pgdata a running server to restore into: pass one');
    const manifest = readManifest(source);
    const method = methodOf(manifest);
    let target: RestoreParams['target'];
    if (f.to) {
      const pgdata = resolve(f.to);
      const install = await restoreBindir(this.runner, manifest, f.bindir);
      const ownerName = f.owner ?? (isRoot() ? 'postgres' : currentUser().name);
      if (!userByName(ownerName)) throw badInput(`OS user ${ownerName} does not exist`, 'pass --owner');
      target = { kind: 'pgdata', pgdata, bindir: install.bindir, owner: ownerName, tablespaceDir: resolve(f['tablespace-dir'] ?? `${pgdata}.tablespaces`) };
    } else {
      if (f['tablespace-dir'] || f.owner) throw badInput('--tablespace-dir and --owner apply to --to only');
      const resolved = await resolveTarget({ pgdata: f.pgdata, dsn: f.dsn, bindir: f.bindir, runner: this.runner, audit: this.audit, requireRunning: true });
      target = { kind: 'server', access: resolved.access };
    }
    const params: RestoreParams = {
      source,
      method,
      backupToken: manifest.token,
      target,
      jobs: f.jobs ?? availableCores(),
      databaseBytes: manifest.databases.filter((d) => d.dumped !== false).reduce((a, d) => a + d.bytes, 0),
      token: newRestoreToken(),
    };
    return this.runPlan(await this.planOperation('restore', params), f['plan-out']);
  }
}
