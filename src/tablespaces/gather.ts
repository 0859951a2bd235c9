/**
 * Facts `show` and `place` judge: the saved snapshots (the rates) and a live read of the database
 * (where every relation is and how big it is now), merged into a temperature report.
 */
import { resolveTarget, type ResolvedTarget } from '../cluster/access.js';
import type { AuditSink } from '../audit.js';
import type { Runner } from '../runner.js';
import { listRuns } from '../pipeline/journal.js';
import { thresholdsFrom } from './flags.js';
import { moveWorkBytes, type JournaledMove, type RelationMove } from './placement.js';
import { loadSnapshots, takeSnapshot, temperatureReport, type Snapshot, type TemperatureReport } from './snapshot.js';
import { moveStep } from './steps.js';
import type { Tier } from './temperature.js';

export interface TemperatureFacts {
  resolved: ResolvedTarget;
  live: Snapshot;
  dataDirTier: Tier;
  report: TemperatureReport;
}

type Flags = {
  pgdata?: string;
  bindir?: string;
  dsn?: string;
  database?: string;
  'data-dir-tier': string;
  'hot-per-minute'?: string;
  'cold-per-minute'?: string;
  'cold-partition-days'?: string;
  margin?: string;
};

export async function gatherTemperature(cmd: { runner: Runner; audit: AuditSink }, f: Flags, stateDir: string): Promise<TemperatureFacts> {
  const thresholds = thresholdsFrom(f);
  const dataDirTier = f['data-dir-tier'] as Tier; // oclif accepts only the tiers
  const resolved = await resolveTarget({ pgdata: f.pgdata, bindir: f.bindir, dsn: f.dsn, runner: cmd.runner, audit: cmd.audit, requireRunning: true });
  const live = await takeSnapshot(cmd, resolved.access, f.database ?? resolved.access.database ?? 'postgres');
  const saved = loadSnapshots(stateDir, live.systemIdentifier, live.database);
  // rates from the saved snapshots; where each relation is and its size from now
  const now = new Map(live.relations.map((r) => [`${r.schema}.${r.name}`, r]));
  const merged = saved.map((s, i) =>
    i < saved.length - 1
      ? s
      : {
          ...s,
          relations: s.relations.flatMap((r) => {
            const l = now.get(`${r.schema}.${r.name}`);
            return l
              ? [
                  {
                    ...r,
                    tablespace: l.tablespace,
                    heap_bytes: l.heap_bytes,
                    total_bytes: l.total_bytes,
                    indexes: l.indexes,
                    parent_schema: l.parent_schema,
                    parent_name: l.parent_name,
                  },
                ]
              : [];
          }),
        },
  );
  return { resolved, live, dataDirTier, report: temperatureReport(merged, thresholds, dataDirTier) };
}

/**
 * The moves earlier `tablespaces place` runs journaled for this cluster, oldest first: each step's
 * time from its (last) start to its end, for the ones that copied a heap. Rollbacks journal no start.
 */
export function journaledMoves(stateDir: string, systemIdentifier: string): JournaledMove[] {
  const out: { at: number; move: JournaledMove }[] = [];
  for (const run of listRuns(stateDir)) {
    if (run.plan.operation !== 'tablespaces-place' || run.plan.target.systemIdentifier !== systemIdentifier) continue;
    const started = new Map<string, number>();
    for (const e of run.events) {
      if (e.type === 'step-started') started.set(e.step, Date.parse(e.at));
      if (e.type !== 'step-done' || e.outputs.heapMoved !== true || !started.has(e.step)) continue;
      const step = run.plan.steps.find((s) => s.id === e.step);
      if (step?.kind !== moveStep.kind) continue;
      const p = step.params as { move: RelationMove; countRows: boolean };
      const end = Date.parse(e.at);
      out.push({ at: end, move: { workBytes: moveWorkBytes(p.move, p.countRows), seconds: (end - started.get(e.step)!) / 1000 } });
    }
  }
  return out.sort((a, b) => a.at - b.at).map((x) => x.move);
}
