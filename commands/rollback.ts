import { OperationCommand } from '../src/operationCommand.js';
import type { RunReport } from '../src/pipeline/execute.js';
import { newestUnfinishedRun, runArg } from '../src/runsCommand.js';
import '../src/operations.js';

export default class Rollback extends OperationCommand<typeof Rollback> {
  static override summary = 'Undo what a run did, newest step first; refused past its point of no return.';
  static override args = runArg;

  async run(): Promise<RunReport> {
    const { args } = await this.parse(Rollback);
    return this.rollback(args.run ?? newestUnfinishedRun(this.stateDir));
  }
}
