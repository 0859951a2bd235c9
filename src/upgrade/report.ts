/** What a DBA reads at the end of an upgrade: measured downtime, what happened to each standby, and what to do next. */
import { formatDuration } from '../format.js';
import type { RunReport } from '../pipeline/execute.js';
import type { ClosingReport } from '../pipeline/plan.js';
import type { UpgradeParams } from './params.js';
import { commandFor, readRecord, type StandbyRecord } from './standbys.js';

export interface UpgradeReport extends ClosingReport {
  downtimeSeconds: number | null;
  nextSteps: string[];
}

export function upgradeReport(run: RunReport, p: UpgradeParams): UpgradeReport {
  // clients are turned away from the moment the connection block is in place until the new server takes a write
  const stopped = run.outputs['stop-old']?.blockedAt ?? run.outputs['stop-old']?.stoppedAt;
  const back = run.outputs.open?.acceptingWritesAt;
  const downtimeSeconds = typeof stopped === 'string' && typeof back === 'string' ? (Date.parse(back) - Date.parse(stopped)) / 1000 : null;
  const nextSteps = [
    p.debian
      ? `${p.debian.newVersion}/${p.debian.cluster} runs on port ${p.debian.port} under pg_ctlcluster (systemd: postgresql@${p.debian.newVersion}-${p.debian.cluster}); ${p.debian.oldVersion}/${p.debian.cluster} is on port ${p.debian.oldClusterPort} with start.conf manual (pg_lsclusters shows both)`
      : `point your service manager at PostgreSQL ${p.new.major}: data directory ${p.new.dataDir}, binaries ${p.new.bindir}`,
    p.debian && p.mode === 'link'
      ? `${p.debian.oldVersion}/${p.debian.cluster} now shares files with the new cluster: never start it; pg_dropcluster ${p.debian.oldVersion} ${p.debian.cluster} once you are confident`
      : p.mode === 'link'
        ? `the old data directory ${p.old.dataDir} now shares files with the new cluster: never start it; remove it once you are confident (pg_upgrade's delete_old_cluster.sh is in ${p.workDir})`
        : `the old cluster in ${p.old.dataDir} is intact and stopped: remove it once you are confident`,
    ...standbyOutcomes(
      p,
      (p.replicas?.standbys ?? []).map((s) => readRecord(p, s)),
    ),
    'recreate the logical slots the checks listed, if any (pg_upgrade does not carry them)',
    ...(p.backup ? [`the pre-upgrade backup is in ${p.backup.dest} (pgscale backup verify checks it)`] : []),
    ...findings(run).map((f) => `look into: ${f}`),
  ];
  const text = [
    `PostgreSQL ${p.old.major} → ${p.new.major}: ${run.status} in ${formatDuration(run.durationSeconds)}${downtimeSeconds !== null ? `, downtime ${formatDuration(downtimeSeconds)} (connections blocked → new accepting writes)` : ''}`,
    'next:',
    ...nextSteps.map((s) => `  - ${s}`),
  ].join('\n');
  return { downtimeSeconds, nextSteps, text };
}

/** What the verifications past the point of no return found: reported, never a failed run. */
function findings(run: RunReport): string[] {
  const text = (d: unknown) => (typeof d === 'string' ? d : JSON.stringify(d));
  const catalog = run.outputs['start-new']?.catalogDifferences;
  const deep = run.outputs.verify?.findings;
  return [
    ...(Array.isArray(catalog) ? catalog.map((d) => `catalog facts differ: ${text(d)}`) : []),
    ...(Array.isArray(deep) ? deep.map((d) => `deep verification: ${text(d)}`) : []),
  ];
}

/** A line per standby: how it was carried to the new version (its record in the work directory), or what is left to do. */
export function standbyOutcomes(p: UpgradeParams, records: readonly (StandbyRecord | undefined)[]): string[] {
  const r = p.replicas;
  if (!r) return [];
  return r.standbys.map((s, i) => {
    const rec = records[i];
    const byHand = s.replica ? commandFor(s) : `pgscale replica add … --replica-pgdata ${s.oldDataDir}`;
    if (r.method === 'leave')
      return `standby ${s.name}: left on PostgreSQL ${p.old.major} (--replicas leave); it cannot follow the new primary: rebuild it with: ${byHand}`;
    if (rec?.state === 'failed') return `standby ${s.name} FAILED (${rec.detail}): rebuild it with: ${rec.command ?? byHand}`;
    if (rec?.state !== 'rebuilt') return `standby ${s.name}: not finished (${rec?.state ?? 'not started'}): \`pgscale resume\` continues it`;
    const old =
      r.method === 'rsync'
        ? `its old data directory ${s.oldDataDir} shares files with the new one: never start it; remove it once you are confident`
        : `its old data directory ${s.oldDataDir} is stopped: remove it once you are confident`;
    return `standby ${s.name}: ${r.method === 'rsync' ? 'upgraded by rsync --hard-links with the primary' : 'rebuilt from the new primary by pg_basebackup'}; ${rec.detail}; ${old}`;
  });
}
