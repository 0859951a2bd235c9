/**
 * The questions `pgscale upgrade` asks at a terminal. It only asks: the answers become
 * UpgradeChoices, and deciding, planning and confirming happen elsewhere.
 */
import { confirm, input, select } from '@inquirer/prompts';
import type { ClusterInfo } from '../cluster/inspect.js';
import type { Installation } from '../cluster/installations.js';
import type { UpgradeMode } from './params.js';
import { defaultNewDataDir, defaultTargetVersion, type UpgradeChoices } from './decide.js';

export interface WizardFacts {
  clusters: readonly ClusterInfo[];
  installations: readonly Installation[];
}

export async function askUpgradeChoices(given: UpgradeChoices, facts: WizardFacts): Promise<UpgradeChoices> {
  const choices = { ...given };
  if (!choices.pgdata) {
    // only what can be upgraded is offered: running primaries (the checks and the backup need the server)
    const candidates = facts.clusters.filter((c) => c.role === 'primary' && c.state === 'running');
    if (candidates.length === 0) return choices; // decide() explains what is missing
    choices.pgdata = await select({
      message: 'Which cluster?',
      choices: candidates.map((c) => ({ name: `${c.dataDir}  (PostgreSQL ${c.serverVersion ?? c.major}, ${c.state}, port ${c.port})`, value: c.dataDir })),
    });
  }
  const cluster = facts.clusters.find((c) => c.dataDir === choices.pgdata);
  const major = cluster?.major;
  if (!choices.toVersion && major) {
    const targets = [...new Set(facts.installations.map((i) => i.major).filter((m) => m > major))].sort((a, b) => a - b);
    if (targets.length) {
      choices.toVersion = await select({
        message: 'Target version?',
        default: defaultTargetVersion(major, facts.installations),
        choices: targets.map((m) => ({ name: String(m), value: m })),
      });
    }
  }
  if (!choices.newPgdata && cluster && choices.toVersion) {
    choices.newPgdata = await input({ message: 'New data directory?', default: defaultNewDataDir(cluster.dataDir, cluster.major, choices.toVersion) });
  }
  if (!choices.mode) {
    choices.mode = await select<UpgradeMode>({
      message: 'Upgrade mode?',
      default: 'link',
      choices: [
        { name: 'link — hard links, fastest, old cluster unusable once the new one starts', value: 'link' },
        { name: 'copy — copies every file, old cluster stays intact', value: 'copy' },
        { name: 'clone — reflinks (XFS, Btrfs), fast and keeps the old cluster', value: 'clone' },
        { name: 'copy-file-range — kernel copy, may share blocks on some filesystems', value: 'copy-file-range' },
      ],
    });
  }
  if (choices.waldir === undefined && (await confirm({ message: 'Put WAL on a dedicated volume?', default: false }))) {
    choices.waldir = await input({
      message: 'WAL directory (empty or absent, on another device):',
      validate: (v) => (v.startsWith('/') ? true : 'an absolute path'),
    });
  }
  if (!choices.noBackup && !choices.backupTo) {
    if (await confirm({ message: 'Take a pg_dumpall backup first? (strongly advised)', default: true })) {
      const dest = await input({ message: 'Backup directory (new; empty for the default under the state directory):', default: '' });
      if (dest) choices.backupTo = dest;
    } else choices.noBackup = true;
  }
  return choices;
}
