import { resolveTarget } from '../../src/cluster/access.js';
import { OperationCommand } from '../../src/operationCommand.js';
import { databaseFlag } from '../../src/tablespaces/flags.js';
import { saveSnapshot, takeSnapshot } from '../../src/tablespaces/snapshot.js';

export interface SampleResult {
  file: string | null;
  database: string;
  takenAt: string;
  statsReset: string | null;
  relations: number;
}

export default class TablespacesSample extends OperationCommand<typeof TablespacesSample> {
  static override summary = 'Take a statistics snapshot of a database (table and index access counters, sizes, partitions) into the state directory.';
  static override description = `Reads pg_stat_user_tables, pg_statio_user_tables, pg_stat_user_indexes / pg_statio_user_indexes, relation sizes and partition bounds of every user table, and keeps them under STATE_DIR/tablespaces (directories 0700, files 0600). \`pgscale tablespaces show\` and \`place\` judge temperature from the rates between the two newest snapshots (with one, since stats_reset). Take one, let the usual workload run for a while, take another. With --dry-run nothing is written.`;
  static override examples = ['<%= config.bin %> tablespaces sample --pgdata /var/lib/postgresql/17/main --database app'];
  static override flags = { ...databaseFlag };

  async run(): Promise<SampleResult> {
    const resolved = await resolveTarget({
      pgdata: this.flags.pgdata,
      bindir: this.flags.bindir,
      dsn: this.flags.dsn,
      runner: this.runner,
      audit: this.audit,
      requireRunning: true,
    });
    const snap = await takeSnapshot({ runner: this.runner, audit: this.audit }, resolved.access, this.flags.database ?? resolved.access.database ?? 'postgres');
    const file = this.flags['dry-run'] ? null : saveSnapshot(this.stateDir, snap);
    this.log(
      `${file ? `snapshot ${file}` : 'dry run: snapshot not written'}: ${snap.relations.length} relations of ${snap.database} at ${snap.takenAt}${snap.statsReset ? ` (counters since ${snap.statsReset})` : ''}`,
    );
    return { file, database: snap.database, takenAt: snap.takenAt, statsReset: snap.statsReset, relations: snap.relations.length };
  }
}
