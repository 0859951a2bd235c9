/**
 * Settings that changed name or disappeared between major versions 12 and 18: hand-kept (release
 * notes), each with its reason, and checked against the generated catalogs by
 * test/unit/guc-catalog.test.ts. An upgrade's configuration migration uses removedSettings() to
 * rewrite or drop what the new server would refuse to start with.
 */
import { findSetting } from './catalog.js';
import type { GucCatalog } from './types.js';
import { memoryValue, type GucValue } from './values.js';

export interface GucRename {
  oldName: string;
  newName: string;
  /** First major version with the new name. */
  major: number;
  reason: string;
  /** The new server still takes the old name as an alias (so a file keeps working, but should be updated). */
  oldNameStillAccepted: boolean;
  /** Translates an old value when the meaning changed, not just the name. */
  convertValue?: (old: GucValue, cluster: { walSegmentBytes: number }) => GucValue;
}

export interface GucRemoval {
  name: string;
  /** First major version without the setting. */
  major: number;
  reason: string;
}

export const RENAMES: readonly GucRename[] = [
  {
    oldName: 'wal_keep_segments',
    newName: 'wal_keep_size',
    major: 13,
    reason: 'WAL kept for standbys is a size now, not a count of segments: size = segments × wal_segment_size',
    oldNameStillAccepted: false,
    convertValue: (old, cluster) => {
      if (old.kind !== 'number') throw new Error(`wal_keep_segments is a count, not ${old.kind}`);
      return memoryValue(old.value * cluster.walSegmentBytes);
    },
  },
  {
    oldName: 'force_parallel_mode',
    newName: 'debug_parallel_query',
    major: 16,
    reason: 'renamed to say it is a developer option: it forces parallel plans for testing and never speeds queries up',
    oldNameStillAccepted: false,
  },
  {
    oldName: 'ssl_ecdh_curve',
    newName: 'ssl_groups',
    major: 18,
    reason: 'takes a colon-separated list of TLS key-exchange groups instead of a single curve',
    oldNameStillAccepted: true,
  },
];

export const REMOVALS: readonly GucRemoval[] = [
  { name: 'operator_precedence_warning', major: 14, reason: 'the 9.5 operator-precedence change it warned about is long settled' },
  { name: 'vacuum_cleanup_index_scale_factor', major: 14, reason: 'B-tree VACUUM no longer uses it to decide whether to scan an index at cleanup' },
  { name: 'stats_temp_directory', major: 15, reason: 'cumulative statistics live in shared memory now: there are no temporary stats files' },
  { name: 'promote_trigger_file', major: 16, reason: 'promote a standby with pg_ctl promote or SELECT pg_promote() instead' },
  { name: 'vacuum_defer_cleanup_age', major: 16, reason: 'it did not protect standby queries reliably: use hot_standby_feedback or a replication slot' },
  { name: 'lc_collate', major: 16, reason: 'it only reported the database collation (read-only); see pg_database.datcollate' },
  { name: 'lc_ctype', major: 16, reason: 'it only reported the database character classification (read-only); see pg_database.datctype' },
  { name: 'old_snapshot_threshold', major: 17, reason: 'the "snapshot too old" feature was removed: it gave wrong answers in edge cases and slowed scans' },
  { name: 'db_user_namespace', major: 17, reason: 'per-database user names were rarely used and never worked with SCRAM authentication' },
  { name: 'trace_recovery_messages', major: 17, reason: 'recovery debugging messages follow log_min_messages like all others' },
];

/**
 * Settings added by distribution patches rather than upstream: their absence from a catalog says
 * which build the catalog came from, not what the target version supports.
 */
export const DISTRIBUTION_SETTINGS: ReadonlyMap<string, string> = new Map([
  ['extension_destdir', 'a Debian/PGDG packaging patch up to 17, present only where the target build carries it (18 has extension_control_path)'],
]);

export interface RemovedSetting {
  name: string;
  reason: string;
  /** The setting lives on under another name in the target version. */
  rename?: GucRename;
}

/** Settings of `from` that `to` does not have, each with why and, for renames, the new name. */
export function removedSettings(from: GucCatalog, to: GucCatalog): RemovedSetting[] {
  const crossed = (major: number) => from.major < major && major <= to.major;
  return [...from.settings.values()]
    .filter((def) => !findSetting(to, def.name))
    .map((def): RemovedSetting => {
      const rename = RENAMES.find((r) => r.oldName === def.name && crossed(r.major));
      if (rename) return { name: def.name, reason: `renamed to ${rename.newName} in ${rename.major}: ${rename.reason}`, rename };
      const removal = REMOVALS.find((r) => r.name === def.name && crossed(r.major));
      if (removal) return { name: def.name, reason: `removed in ${removal.major}: ${removal.reason}` };
      const patch = DISTRIBUTION_SETTINGS.get(def.name);
      if (patch) return { name: def.name, reason: patch };
      return { name: def.name, reason: `not a setting of PostgreSQL ${to.serverVersion}` };
    });
}
