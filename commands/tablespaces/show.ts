import { OperationCommand } from '../../src/operationCommand.js';
import { formatBytes } from '../../src/format.js';
import { temperatureFlags } from '../../src/tablespaces/flags.js';
import { gatherTemperature } from '../../src/tablespaces/gather.js';
import type { TemperatureReport } from '../../src/tablespaces/snapshot.js';

export default class TablespacesShow extends OperationCommand<typeof TablespacesShow> {
  static override summary = 'Show every table and partition with its temperature (hot, warm, cold), size, tablespace and the reason.';
  static override description = `Temperature comes from the scans and row writes per minute between the two newest snapshots of \`pgscale tablespaces sample\` (with one snapshot, since stats_reset or the server's start), a time-range partition's age, and hysteresis: a relation already on a tier (pgscale_hot/warm/cold, or the default tablespace for --data-dir-tier) keeps it until it misses the threshold by --margin. Sizes and tablespaces are read live. Changes nothing.`;
  static override examples = ['<%= config.bin %> tablespaces show --pgdata /var/lib/postgresql/17/main --database app --json'];
  static override flags = { ...temperatureFlags };

  async run(): Promise<TemperatureReport> {
    const { report } = await gatherTemperature({ runner: this.runner, audit: this.audit }, this.flags, this.stateDirPath);
    const w = Math.max(8, ...report.relations.map((r) => r.relation.length));
    this.log(`${report.database}: ${report.basis}, ${report.from} → ${report.to}`);
    for (const r of report.relations) {
      this.log(
        `${r.tier.padEnd(4)}  ${r.relation.padEnd(w)}  ${formatBytes(r.totalBytes).padStart(8)}  ${(r.tablespace || '(default)').padEnd(14)}  ${r.reason}`,
      );
    }
    return report;
  }
}
