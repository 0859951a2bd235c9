import { OperationCommand } from '../src/operationCommand.js';
import { listRuns } from '../src/pipeline/journal.js';

interface RunSummary {
  id: string;
  operation: string;
  target: string;
  status: string;
  started: string | undefined;
  steps: string;
}

export default class Runs extends OperationCommand<typeof Runs> {
  static override summary = 'List runs in the state directory with their status.';

  async run(): Promise<RunSummary[]> {
    await this.parse(Runs);
    const runs = listRuns(this.stateDir).map((r) => ({
      id: r.id,
      operation: r.plan.operation,
      target: r.plan.target.description,
      status: r.status,
      started: r.events[0]?.at,
      steps: `${[...r.steps.values()].filter((s) => s === 'done' || s === 'skipped').length}/${r.plan.steps.length}`,
    }));
    for (const r of runs) this.log(`${r.id}  ${r.status.padEnd(12)} ${r.steps.padStart(5)}  ${r.operation} ${r.target}`);
    if (runs.length === 0) this.log(`no runs in ${this.stateDir}`);
    return runs;
  }
}
