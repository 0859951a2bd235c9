import * as Args from '@oclif/core/args';
import { PlanDrift, refused } from '../src/errors.js';
import { OperationCommand, type OperationResult } from '../src/operationCommand.js';
import { actionDrift, buildPlan, describeDrift, failedChecks, fingerprintDrift, operation } from '../src/pipeline/plan.js';
import { assertTrustedPlanFile, assertUnedited, readPlanFile } from '../src/pipeline/planFile.js';
import '../src/operations.js';

export default class Apply extends OperationCommand<typeof Apply> {
  static override summary = 'Execute exactly a reviewed plan file; refuse if the cluster changed since it was made.';
  static override description =
    "Refused (exit 3, nothing changed): a plan file writable by group or others, or owned by another user (as ssh refuses a loose key); a plan edited after it was made (its seal, an HMAC with a key of this host's pgscale user, is broken) or sealed elsewhere; a cluster that changed since (its fingerprint, any step's commands, its identity); a check that fails now. --dry-run shows the plan and makes the same checks.";
  static override args = { file: Args.file({ description: 'Plan file written with --plan-out.', required: true, exists: true }) };

  async run(): Promise<OperationResult> {
    const { args } = await this.parse(Apply);
    const reviewed = readPlanFile(args.file);
    assertTrustedPlanFile(args.file);
    assertUnedited(args.file, reviewed, 'apply');
    const now = await buildPlan(operation(reviewed.operation), reviewed.params, this.planningContext());
    const facts = fingerprintDrift(reviewed.fingerprint, now.fingerprint);
    const steps = actionDrift(reviewed, now);
    const identity =
      (reviewed.target.systemIdentifier ?? null) === (now.target.systemIdentifier ?? null)
        ? []
        : [`cluster identity: planned ${reviewed.target.systemIdentifier ?? '(unknown)'}, now ${now.target.systemIdentifier ?? '(unknown)'}`];
    const lines = [...facts.map(describeDrift), ...steps, ...identity];
    if (lines.length)
      throw new PlanDrift(`the cluster changed since the plan was made:\n${lines.map((d) => `  - ${d}`).join('\n')}`, 'make and review a new plan', {
        facts,
        steps,
        identity: identity.length ? { planned: reviewed.target.systemIdentifier ?? null, now: now.target.systemIdentifier ?? null } : null,
      });
    const blockers = failedChecks(now);
    if (blockers.length)
      throw refused(
        `checks fail now:\n${blockers.map((c) => `  - ${c.name}: ${c.detail}`).join('\n')}`,
        'fix what the checks name, then make and review a new plan',
      );
    return this.executePlan(reviewed, args.file);
  }
}
