/** The upgrade's parameters: plain data, so a reviewed plan file rebuilds exactly the same steps. */
import type { BackupParams } from '../backup/steps.js';
import type { ClusterAccess } from '../cluster/access.js';
import type { JsonObject } from '../pipeline/step.js';
import type { ServerIdentity } from '../server/postgres.js';
import type { DebianUpgrade } from './debianLayout.js';
import type { UpgradeReplicas } from './standbys.js';

export type UpgradeMode = 'link' | 'clone' | 'copy' | 'copy-file-range';

export interface OldCluster extends JsonObject {
  dataDir: string;
  /** Where postgresql.conf lives: the data directory, or /etc/postgresql/N/NAME on Debian. */
  configDir: string;
  bindir: string;
  major: number;
  port: number;
  owner: string;
  walSegmentBytes: number;
  tablespaces: string[];
  /**
   * How the old server ran, captured while planning (pg_upgrade rewrites postmaster.opts): it is
   * stopped and, on rollback, started again exactly so, and the new server listens where it did.
   */
  server: ServerIdentity;
  /** The pg_hba.conf the old server reads (hba_file: may be outside PGDATA): new connections are blocked there during downtime. */
  hbaFile: string;
}

export interface NewCluster extends JsonObject {
  dataDir: string;
  configDir: string;
  bindir: string;
  major: number;
  /** initdb --waldir: WAL on a dedicated volume; null keeps it in the data directory. */
  waldir: string | null;
  /** The old server's identity carried over: same port, sockets and listen_addresses, the new bindir, data directory and configuration. */
  server: ServerIdentity;
}

export interface UpgradeParams extends JsonObject {
  old: OldCluster;
  new: NewCluster;
  /** How to reach the old cluster now, and the new one later (same socket and port). */
  access: ClusterAccess;
  mode: UpgradeMode;
  jobs: number;
  /** initdb options that reproduce the old cluster: encoding, locale, provider, checksums, superuser. */
  initdbArgs: string[];
  superuser: string;
  /** Refuse to stop the old cluster while a transaction older than this is open. */
  maxTransactionSeconds: number;
  /** Tables per database whose row counts are compared before and after. */
  sampleTables: number;
  /** Accept WAL on the data device for --waldir (otherwise refused). */
  force: boolean;
  /** pg_upgrade's working directory (update_extensions.sql is written there). */
  workDir: string;
  backup: BackupParams | null;
  /** The physical standbys and what happens to them (null: none to handle). */
  replicas: UpgradeReplicas | null;
  /** A postgresql-common cluster: the new one is made in the same layout and the ports are swapped (null: any other layout). */
  debian: DebianUpgrade | null;
}
