import { OperationCommand } from '../src/operationCommand.js';
import { runCommandLine } from '../src/pipeline/execute.js';
import { listRunEntries, type RunState } from '../src/pipeline/journal.js';

interface RunSummary {
  id: string;
  operation: string | null;
  target: string | null;
  status: string;
  started: string | undefined;
  steps: string | null;
  /** What to do next, as commands; empty for a finished run. */
  next: string[];
  /** Why the run cannot be read, or journal lines that are not JSON. */
  problem?: string;
}

/** The way out of every unfinished state: a run never sits without one. */
function nextCommands(r: RunState, stateDir: string): string[] {
  const resume = runCommandLine('resume', r.id, stateDir);
  const rollback = runCommandLine('rollback', r.id, stateDir);
  switch (r.status) {
    case 'completed':
    case 'rolled-back':
      return [];
    case 'running':
      return ['wait: it is running'];
    case 'rolling-back':
    case 'rollback-failed':
      return [rollback];
    default:
      return [resume, rollback];
  }
}

export default class Runs extends OperationCommand<typeof Runs> {
  static override summary = 'List runs in the state directory with their status and what to do next.';

  async run(): Promise<RunSummary[]> {
    await this.parse(Runs);
    const stateDir = this.stateDir;
    const runs = listRunEntries(stateDir).map((e): RunSummary => {
      if (!e.run)
        return {
          id: e.id,
          operation: null,
          target: null,
          status: 'damaged',
          started: undefined,
          steps: null,
          next: [`check the cluster, then remove ${e.dir}`],
          problem: e.problem,
        };
      const r = e.run;
      return {
        id: r.id,
        operation: r.plan.operation,
        target: r.plan.target.description,
        status: r.status,
        started: r.events[0]?.at,
        steps: `${[...r.steps.values()].filter((s) => s === 'done' || s === 'skipped').length}/${r.plan.steps.length}`,
        next: nextCommands(r, stateDir),
        ...(r.corruptLines.length
          ? {
              problem: `journal line${r.corruptLines.length > 1 ? 's' : ''} ${r.corruptLines.join(', ')} of ${r.dir}/journal.jsonl ${r.corruptLines.length > 1 ? 'are' : 'is'} not JSON (ignored)`,
            }
          : {}),
      };
    });
    for (const r of runs) {
      this.log(`${r.id}  ${r.status.padEnd(15)} ${(r.steps ?? '-').padStart(5)}  ${r.operation ?? ''} ${r.target ?? ''}`.trimEnd());
      if (r.problem) this.log(`    problem: ${r.problem}`);
      for (const n of r.next) this.log(`    next: ${n}`);
    }
    if (runs.length === 0) this.log(`no runs in ${stateDir}`);
    return runs;
  }
}
