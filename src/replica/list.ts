/** `replica list`: every slot and every walsender of a primary, judged (pure, unit-tested). */
import type { ReplicationOverviewRow } from '../sql.js';

export interface ReplicaEntry {
  slot: string | null;
  /** streaming, catchup, startup… from pg_stat_replication; `inactive` for a slot nobody uses. */
  state: string;
  clientAddress: string | null;
  applicationName: string | null;
  lagBytes: number | null;
  lagSeconds: number | null;
  walStatus: string | null;
  safeWalSize: number | null;
  retainedBytes: number | null;
  /** What the DBA should do about it, if anything. */
  advice: string | null;
}

const num = (v: string | null) => (v === null ? null : Number(v));

export function judgeReplicas(rows: readonly ReplicationOverviewRow[], pgdata: string): ReplicaEntry[] {
  return rows.map((r) => {
    let advice: string | null = null;
    if (r.wal_status === 'lost')
      advice = `slot ${r.slot_name} lost WAL the replica needs: the replica must be rebuilt — pgscale replica remove --pgdata ${pgdata} --host HOST --replica-pgdata DIR --slot ${r.slot_name}, then pgscale replica add --pgdata ${pgdata} --host HOST --replica-pgdata DIR --slot ${r.slot_name}`;
    else if (r.wal_status === 'unreserved') advice = `slot ${r.slot_name} is about to lose WAL (past max_slot_wal_keep_size): bring its replica back now`;
    else if (r.slot_name && !r.active) advice = `inactive slot ${r.slot_name} retains WAL: start its replica, or remove it (pgscale replica remove)`;
    else if (!r.slot_name) advice = 'a standby without a slot: the primary may recycle WAL it still needs';
    // safe_wal_size is null for a slot that is not lost only when max_slot_wal_keep_size = -1
    const unlimited =
      r.slot_name && r.slot_type === 'physical' && r.safe_wal_size === null && r.wal_status !== 'lost'
        ? `max_slot_wal_keep_size = -1: slot ${r.slot_name} retains WAL without limit while its replica is away, until the WAL volume fills and the primary stops — set max_slot_wal_keep_size (a reload; pgscale tune proposes a value)`
        : null;
    if (unlimited) advice = advice ? `${advice}; ${unlimited}` : unlimited;
    return {
      slot: r.slot_name,
      state: r.state ?? (r.slot_name && !r.active ? 'inactive' : 'unknown'),
      clientAddress: r.client_addr,
      applicationName: r.application_name,
      lagBytes: num(r.lag_bytes),
      lagSeconds: r.replay_lag_seconds,
      walStatus: r.wal_status,
      safeWalSize: num(r.safe_wal_size),
      retainedBytes: num(r.retained_bytes),
      advice,
    };
  });
}
