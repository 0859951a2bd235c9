import { OperationCommand } from '../src/operationCommand.js';
import type { RunReport } from '../src/pipeline/execute.js';
import { newestUnfinishedRun, runArg } from '../src/runsCommand.js';
import '../src/operations.js';

export default class Resume extends OperationCommand<typeof Resume> {
  static override summary = 'Continue a failed, interrupted or killed run: finished steps stay finished, the rest verify then apply.';
  static override args = runArg;

  async run(): Promise<RunReport> {
    const { args } = await this.parse(Resume);
    return this.resume(args.run ?? newestUnfinishedRun(this.stateDir));
  }
}
