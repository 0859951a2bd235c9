import { Flags } from '@oclif/core';
import { resolve } from 'node:path';
import { resolveTarget } from '../../src/cluster/access.js';
import { findInstallations } from '../../src/cluster/installations.js';
import { badInput } from '../../src/errors.js';
import { OperationCommand, type OperationResult } from '../../src/operationCommand.js';
import '../../src/operations.js';
import { estimateBackupBytes, newBackupToken, type BackupParams } from '../../src/backup/steps.js';

export default class Backup extends OperationCommand<typeof Backup> {
  static override summary = 'pg_dumpall backup of a running cluster, compressed, checksummed and verified.';
  static override description = `Dumps into DIR.partial (0700, files 0600), writes a manifest, decompresses and checksums the dump (and with --verify restore, restores it into a scratch cluster and compares row counts), and only then renames it to DIR.`;
  static override examples = [
    '<%= config.bin %> backup --pgdata /var/lib/postgresql/16/main --to /backups/pre-upgrade',
    '<%= config.bin %> backup --dsn "host=/run/postgresql port=5433" --to /backups/b1 --verify restore --dry-run',
  ];

  static override flags = {
    to: Flags.string({ summary: 'New directory for the backup (must not exist).', required: true }),
    compress: Flags.option({ options: ['zstd', 'gzip'] as const, summary: 'Compressor (zstd -T0 by default; gzip where zstd is missing).', default: 'zstd' })(),
    level: Flags.integer({ summary: 'Compression level (zstd 1-19, gzip 1-9).', default: 3, min: 1, max: 19 }),
    verify: Flags.option({ options: ['checksum', 'restore'] as const, summary: 'checksum: decompress and compare digests; restore: also restore into a scratch cluster and compare row counts.', default: 'checksum' })(),
    'restore-bindir': Flags.string({ summary: 'Bindir of the PostgreSQL version to restore into for --verify restore (default: the newest installed).' }),
    'plan-out': Flags.string({ summary: 'Write the plan (JSON, 0600) for review; apply it later with `pgscale apply FILE`.' }),
  };

  async run(): Promise<OperationResult> {
    const f = this.flags;
    if (f.compress === 'gzip' && f.level > 9) throw badInput(`--level ${f.level}: gzip levels are 1 to 9`, 'pass --level 1 to 9 with --compress gzip (zstd takes 1 to 19)');
    const target = await resolveTarget({ pgdata: f.pgdata, bindir: f.bindir, dsn: f.dsn, runner: this.runner, audit: this.audit, requireRunning: true });
    let restoreBindir: string | null = null;
    if (f.verify === 'restore') {
      restoreBindir = f['restore-bindir'] ?? (await findInstallations(this.runner))[0]?.bindir ?? null;
      if (!restoreBindir) throw badInput('--verify restore needs a PostgreSQL installation to restore into', 'pass --restore-bindir');
    }
    const params: BackupParams = {
      access: target.access,
      dest: resolve(f.to),
      protectedPaths: target.cluster ? [target.cluster.dataDir, ...target.cluster.tablespaces.map((t) => t.location), ...(target.cluster.wal.symlink ? [target.cluster.wal.path] : [])] : [],
      compression: { compressor: f.compress, level: f.level },
      estimateBytes: await estimateBackupBytes(this.runner, target.access),
      restoreBindir,
      token: newBackupToken(),
    };
    return this.runPlan(await this.planOperation('backup', params), f['plan-out']);
  }
}
