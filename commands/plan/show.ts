import * as Args from '@oclif/core/args';
import { PgscaleCommand } from '../../src/command.js';
import type { Plan } from '../../src/pipeline/plan.js';
import { assertUnedited, readPlanFile } from '../../src/pipeline/planFile.js';
import { planMarkdown } from '../../src/pipeline/render.js';
import '../../src/operations.js';

export default class PlanShow extends PgscaleCommand<typeof PlanShow> {
  static override summary = 'Render a plan file as markdown for a change review.';
  static override description =
    'What is shown is what `pgscale apply` would run: an edited plan (its seal broken, or steps, titles or summary that no longer follow from its parameters) is refused (exit 3) instead of shown. A plan sealed on another host or by another user is shown with a warning; `apply` refuses it. `apply` also re-plans against the cluster and refuses any difference.';
  static override args = { file: Args.file({ description: 'Plan file written with --plan-out.', required: true, exists: true }) };

  async run(): Promise<Plan> {
    const { args } = await this.parse(PlanShow);
    const plan = readPlanFile(args.file);
    const warning = assertUnedited(args.file, plan, 'show');
    if (warning) this.warn(warning);
    this.log(planMarkdown(plan));
    return plan;
  }
}
