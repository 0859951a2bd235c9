import { Args } from '@oclif/core';
import { refused } from '../src/errors.js';
import { OperationCommand, type OperationResult } from '../src/operationCommand.js';
import { actionDrift, buildPlan, failedChecks, fingerprintDrift, operation } from '../src/pipeline/plan.js';
import { readPlanFile } from '../src/pipeline/planFile.js';
import { startRun } from '../src/pipeline/execute.js';
import '../src/operations.js';

export default class Apply extends OperationCommand<typeof Apply> {
  static override summary = 'Execute exactly a reviewed plan file; refuse if the cluster changed since it was made.';
  static override args = { file: Args.file({ description: 'Plan file written with --plan-out.', required: true, exists: true }) };

  async run(): Promise<OperationResult> {
    const { args } = await this.parse(Apply);
    const reviewed = readPlanFile(args.file);
    const now = await buildPlan(operation(reviewed.operation), reviewed.params, this.planningContext());
    const drift = [...fingerprintDrift(reviewed.fingerprint, now.fingerprint), ...actionDrift(reviewed, now)];
    if (drift.length) throw refused(`the cluster changed since the plan was made:\n${drift.map((d) => `  - ${d}`).join('\n')}`, 'make and review a new plan');
    const blockers = failedChecks(now);
    if (blockers.length) throw refused(`checks fail now:\n${blockers.map((c) => `  - ${c.name}: ${c.detail}`).join('\n')}`);
    if (this.flags['dry-run']) return { plan: reviewed, applied: false, planFile: args.file };
    const run = await this.withInterrupts((opts) => startRun(reviewed, opts));
    return { plan: reviewed, applied: true, planFile: args.file, run };
  }
}
