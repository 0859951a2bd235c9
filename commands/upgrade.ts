import * as Flags from '@oclif/core/flags';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Plan } from '../src/pipeline/plan.js';
import { findInstallations } from '../src/cluster/installations.js';
import { upgradeTarget } from '../src/upgrade/decide.js';
import { detect } from '../src/detect.js';
import { OperationCommand, type OperationResult, planOutFlag } from '../src/operationCommand.js';
import '../src/operations.js';
import { decideUpgrade, type UpgradeChoices } from '../src/upgrade/decide.js';
import { askUpgradeChoices } from '../src/upgrade/wizard.js';
import { badInput } from '../src/errors.js';
import { closeRemoteRunners, validateDestination } from '../src/remote/ssh.js';
import { decideStandbys } from '../src/upgrade/standbys.js';
import { parseReplicaFlag } from '../src/upgrade/standbyRules.js';
import { resolve } from 'node:path';

export default class Upgrade extends OperationCommand<typeof Upgrade> {
  static override summary = 'Major upgrade with pg_upgrade, checked, journaled and reversible until the new cluster starts.';
  static override description = `Detects the cluster and installed versions (at a terminal it asks what it does not know), checks everything before downtime, backs up with pg_dumpall, creates the new cluster like the old one (encoding, locale, checksums), carries the configuration over (removed settings commented out with the reason, renamed ones renamed), runs pg_upgrade --check against the live cluster, then stops it, upgrades, starts the new cluster on the old port, updates extensions, verifies and analyzes.`;
  static override examples = [
    '<%= config.bin %> upgrade',
    '<%= config.bin %> upgrade --pgdata /var/lib/postgresql/16/main --to-version 17 --dry-run',
    '<%= config.bin %> upgrade --pgdata /srv/pg16 --to-version 17 --mode link --waldir /wal/pg17 --backup-to /backups/pre17 --yes',
  ];

  static override flags = {
    'to-version': Flags.integer({ summary: 'Target major version (default: the next installed one, 17 for a 16 cluster).', min: 10 }),
    'old-bindir': Flags.string({ summary: 'Bindir of the old version (default: detected).' }),
    'new-bindir': Flags.string({ summary: 'Bindir of the new version (default: detected).' }),
    'new-pgdata': Flags.string({ summary: 'Data directory of the new cluster (default: the version swapped in the old path, or DATA-N beside it).' }),
    mode: Flags.option({
      options: ['link', 'clone', 'copy', 'copy-file-range'] as const,
      summary: 'pg_upgrade transfer mode (default: link when old and new are on one filesystem, else copy).',
    })(),
    jobs: Flags.integer({ summary: 'pg_upgrade --jobs (default: the vCPUs PostgreSQL gets).', min: 1 }),
    waldir: Flags.string({ summary: "Put the new cluster's WAL here (a dedicated volume: empty or absent, on another device)." }),
    'backup-to': Flags.string({ summary: 'Directory for the pg_dumpall backup taken first (default: under the state directory).', exclusive: ['no-backup'] }),
    'no-backup': Flags.boolean({ summary: 'Skip the backup (not advised: past the point of no return only a backup restores the old data).', default: false }),
    force: Flags.boolean({ summary: 'Accept WAL on the data device.', default: false }),
    'max-transaction-age': Flags.integer({
      summary: 'Refuse to stop the old cluster while a transaction is older than this (seconds, 0 or more).',
      default: 300,
      min: 0,
    }),
    'plan-out': planOutFlag,
    replicas: Flags.option({
      options: ['rsync', 'rebuild', 'leave'] as const,
      summary:
        'What happens to the physical standbys: rsync (link mode, before the new primary starts), rebuild (pg_basebackup from the new primary), leave (default: rsync when every standby passes its checks, else rebuild).',
    })(),
    replica: Flags.string({
      summary:
        'A standby to upgrade with the primary, HOST:PGDATA (HOST an ssh destination or local; repeatable). Standbys pgscale created are found on their own.',
      multiple: true,
    }),
    'ssh-config': Flags.string({ summary: "ssh -F FILE for the standbys' hosts." }),
    'max-lag': Flags.integer({ summary: 'A standby lagging more than this (bytes of replay) refuses the run before downtime.', default: 16 * 1024 * 1024 }),
  };

  async run(): Promise<OperationResult> {
    try {
      return await this.upgrade();
    } finally {
      await closeRemoteRunners();
    }
  }

  private async upgrade(): Promise<OperationResult> {
    const f = this.flags;
    const named = (f.replica ?? []).map((v) => {
      const r = parseReplicaFlag(v);
      if (!r) throw badInput(`--replica ${v}: expected HOST:/absolute/pgdata`, 'HOST is an ssh destination (user@db2, an alias) or local');
      if (r.destination !== 'local') validateDestination(r.destination);
      return r;
    });
    let choices: UpgradeChoices = {
      pgdata: f.pgdata,
      dsn: f.dsn,
      oldBindir: f['old-bindir'] ?? f.bindir,
      newBindir: f['new-bindir'],
      toVersion: f['to-version'],
      newPgdata: f['new-pgdata'],
      mode: f.mode,
      jobs: f.jobs,
      waldir: f.waldir,
      backupTo: f['backup-to'],
      noBackup: f['no-backup'],
      force: f.force,
      maxTransactionSeconds: f['max-transaction-age'],
      stateDir: this.stateDir,
    };
    if (this.canPrompt) {
      // what was given is validated before any question: a stopped cluster or a standby fails now, not after four answers
      if (f.pgdata) await upgradeTarget({ pgdata: f.pgdata, bindir: choices.oldBindir, dsn: f.dsn, runner: this.runner, audit: this.audit });
      const found = await detect({ runner: this.runner, hostRoot: this.hostRoot, audit: this.audit, pgdata: f.pgdata, bindir: choices.oldBindir });
      const installations = await findInstallations(
        this.runner,
        [choices.oldBindir, choices.newBindir].filter((b): b is string => Boolean(b)),
      );
      choices = await askUpgradeChoices(choices, { clusters: found.clusters, installations });
    }
    if (choices.noBackup && !this.jsonEnabled())
      this.logToStderr('warning: --no-backup: past the point of no return only your own backup can restore the old data');
    const params = await decideUpgrade(choices, { runner: this.runner, audit: this.audit, hostRoot: this.hostRoot });
    params.replicas = await decideStandbys(
      { method: f.replicas, named, sshConfig: f['ssh-config'] ? resolve(f['ssh-config']) : null, maxLagBytes: f['max-lag'], stateDir: this.stateDir },
      params,
      { runner: this.runner, audit: this.audit },
    );
    // the default backup location lives in the state directory, which a run creates anyway (a dry run creates nothing)
    if (params.backup && !choices.backupTo && !f['dry-run']) mkdirSync(dirname(params.backup.dest), { recursive: true, mode: 0o700 });
    const plan = await this.planOperation('upgrade', params);
    if (this.canPrompt && !this.jsonEnabled()) this.logToStderr(configurationDiff(plan));
    return this.runPlan(plan, f['plan-out']);
  }
}

/** The configuration carried to the new version, shown before anything is confirmed. */
function configurationDiff(plan: Plan): string {
  const config = plan.steps.find((s) => s.id === 'config');
  const files = (config?.actions ?? []).filter((a) => a.kind === 'file');
  const diffs = files.map((a) => (a.kind === 'file' && a.diff ? a.diff : '')).filter(Boolean);
  const notes = files.map((a) => (a.kind === 'file' ? `  ${a.path}: ${a.note ?? ''}` : ''));
  return ['Configuration for the new version:', ...notes, ...diffs].join('\n');
}
