import { detect, type DetectReport } from '../src/detect.js';
import { detectText } from '../src/detectText.js';
import { PgscaleCommand } from '../src/command.js';

export default class Detect extends PgscaleCommand<typeof Detect> {
  static override summary = 'Show what pgscale sees on this host: compute, storage and PostgreSQL clusters.';
  static override description = `vCPUs and memory as PostgreSQL gets them (cgroup v1/v2 limits honoured), the storage class, mount point, filesystem type, size, used and free space (as df counts them; bytes in --json) behind the data directory, pg_wal and every tablespace, and every installation and cluster found (Debian and RHEL layouts, PGDATA, --pgdata, running postmasters).`;
  static override examples = ['<%= config.bin %> detect', '<%= config.bin %> detect --pgdata /var/lib/postgresql/16/main --json'];

  async run(): Promise<DetectReport> {
    const report = await detect({
      runner: this.runner,
      hostRoot: this.hostRoot,
      audit: this.audit,
      pgdata: this.flags.pgdata,
      bindir: this.flags.bindir,
      connection: this.flags.dsn ? this.connection() : undefined,
    });
    this.log(detectText(report));
    return report;
  }
}
