import { Args } from '@oclif/core';
import { PgscaleCommand } from '../../src/command.js';
import type { Plan } from '../../src/pipeline/plan.js';
import { readPlanFile } from '../../src/pipeline/planFile.js';
import { planMarkdown } from '../../src/pipeline/render.js';

export default class PlanShow extends PgscaleCommand<typeof PlanShow> {
  static override summary = 'Render a plan file as markdown for a change review.';
  static override args = { file: Args.file({ description: 'Plan file written with --plan-out.', required: true, exists: true }) };

  async run(): Promise<Plan> {
    const { args } = await this.parse(PlanShow);
    const plan = readPlanFile(args.file);
    this.log(planMarkdown(plan));
    return plan;
  }
}
