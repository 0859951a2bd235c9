import * as Args from '@oclif/core/args';
import { join } from 'node:path';
import { OperationCommand } from '../../src/operationCommand.js';
import { readPlaybook } from '../../src/playbook/playbook.js';
import { runPlaybook, type PlaybookResult } from '../../src/playbook/run.js';
import { interruptSignal } from '../../src/pipeline/session.js';

export default class PlaybookRun extends OperationCommand<typeof PlaybookRun> {
  static override summary = 'Run a YAML playbook (a maintenance window): its steps in order, resumable by running it again.';
  static override description =
    "Every step runs as its own pgscale command with the playbook's cluster flags and its own; progress is kept in the state directory. Without a TTY every confirmation needs --yes.";
  static override examples = [
    '<%= config.bin %> playbook run playbooks/upgrade-16-to-17.yaml --yes',
    '<%= config.bin %> playbook run playbooks/upgrade-16-to-17.yaml --dry-run',
  ];
  static override args = { file: Args.string({ description: 'Playbook (YAML).', required: true }) };

  async run(): Promise<PlaybookResult> {
    const { args } = await this.parse(PlaybookRun);
    const playbook = readPlaybook(args.file);
    const interrupt = interruptSignal((m) => process.stderr.write(`\n${m}\n`));
    try {
      return await runPlaybook(playbook, {
        runner: this.runner,
        cli: join(this.config.root, 'bin', 'run.js'),
        stateDir: this.stateDir,
        yes: this.flags.yes,
        dryRun: this.flags['dry-run'],
        json: this.jsonEnabled(),
        log: (line) => this.logToStderr(line),
        signal: interrupt.signal,
      });
    } finally {
      interrupt.dispose();
    }
  }
}
