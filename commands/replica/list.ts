import { resolveTarget, withDb } from '../../src/cluster/access.js';
import { PgscaleCommand } from '../../src/command.js';
import { formatBytes } from '../../src/format.js';
import { judgeReplicas, type ReplicaEntry } from '../../src/replica/list.js';
import { statements } from '../../src/sql.js';

export default class ReplicaList extends PgscaleCommand<typeof ReplicaList> {
  static override summary =
    'Show every standby and replication slot of a primary: state, lag, wal_status, safe_wal_size, retained WAL; what to do about lost or inactive slots.';

  async run(): Promise<{ primary: string; replicas: ReplicaEntry[] }> {
    const f = this.flags;
    const resolved = await resolveTarget({ pgdata: f.pgdata, bindir: f.bindir, dsn: f.dsn, runner: this.runner, audit: this.audit, requireRunning: true });
    const primary = resolved.cluster?.dataDir ?? resolved.lockKey;
    const rows = await withDb({ runner: this.runner, audit: this.audit }, resolved.access, (db) => db.query(statements.replicationOverview()));
    const replicas = judgeReplicas(rows, resolved.cluster?.dataDir ?? 'PGDATA');
    if (!this.jsonEnabled()) {
      if (!replicas.length) this.log('no replication slots and no standbys');
      for (const r of replicas) {
        const b = (n: number | null) => (n === null ? '-' : formatBytes(n));
        this.log(
          `${r.slot ?? '(no slot)'}  ${r.state}  from ${r.clientAddress ?? '-'}  lag ${b(r.lagBytes)}${r.lagSeconds !== null ? ` / ${r.lagSeconds.toFixed(1)} s` : ''}  wal_status ${r.walStatus ?? '-'}  safe_wal_size ${b(r.safeWalSize)}  retained ${b(r.retainedBytes)}`,
        );
        if (r.advice) this.log(`  → ${r.advice}`);
      }
    }
    return { primary, replicas };
  }
}
