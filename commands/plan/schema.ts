import { PgscaleCommand } from '../../src/command.js';
import { planSchema } from '../../src/pipeline/planFile.js';

export default class PlanSchema extends PgscaleCommand<typeof PlanSchema> {
  static override summary = 'Print the JSON schema of plan files.';

  async run(): Promise<typeof planSchema> {
    await this.parse(PlanSchema);
    this.log(JSON.stringify(planSchema, null, 2));
    return planSchema;
  }
}
