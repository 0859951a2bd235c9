import { PgscaleCommand } from '../../src/command.js';
import { playbookSchema } from '../../src/playbook/playbook.js';

export default class PlaybookSchema extends PgscaleCommand<typeof PlaybookSchema> {
  static override summary = 'Print the JSON schema of playbooks.';

  async run(): Promise<typeof playbookSchema> {
    await this.parse(PlaybookSchema);
    this.log(JSON.stringify(playbookSchema, null, 2));
    return playbookSchema;
  }
}
