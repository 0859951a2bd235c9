/**
 * The one module that holds SQL. Statements are named values; a Db runs them over `pg` (network or
 * socket with credentials) or, when pgscale is root on the database host, through psql run as the
 * data directory's owner so peer authentication works as it does for the DBA.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { AuditSink } from './audit.js';
import { redact } from './audit.js';
import { currentUser } from './osUser.js';
import { describeConnection, libpqEnvironment, type ConnectionSettings } from './connection.js';
import { PgscaleError, ExitCode } from './errors.js';
import type { OsUser, RunResult, Runner, StreamingRun } from './runner.js';

/** A statement and the row type it returns (`void` for commands). */
export interface Statement<Row> {
  readonly name: string;
  readonly text: string;
  readonly params: readonly (string | number | boolean | null)[];
  readonly returnsRows: boolean;
  /** Phantom field carrying the row type. */
  readonly _row?: Row;
}

const rows = <Row>(name: string, text: string, params: Statement<Row>['params'] = []): Statement<Row> => ({ name, text, params, returnsRows: true });
const command = (name: string, text: string): Statement<void> => ({ name, text, params: [], returnsRows: false });

export interface ServerFacts {
  server_version: string;
  server_version_num: number;
  in_recovery: boolean;
  data_checksums: string;
  server_encoding: string;
  lc_collate: string;
  lc_ctype: string;
  locale_provider: string;
  data_directory: string;
  config_file: string;
  port: number;
  total_bytes: string;
}

const REPLICATION_SETTINGS = `select current_setting('wal_level') as wal_level,
              current_setting('max_wal_senders')::int as max_wal_senders,
              (select count(*) from pg_stat_replication)::int as senders_in_use,
              current_setting('max_replication_slots')::int as max_replication_slots,
              (select count(*) from pg_replication_slots)::int as slots_in_use,
              case when current_setting('max_slot_wal_keep_size') = '-1' then -1
                   else pg_size_bytes(current_setting('max_slot_wal_keep_size')) end::text as max_slot_wal_keep_size_bytes,
              pg_size_bytes(current_setting('max_wal_size'))::text as max_wal_size_bytes,
              current_setting('listen_addresses') as listen_addresses,
              current_setting('hba_file') as hba_file,
              current_setting('config_file') as config_file,
              current_setting('data_directory') as data_directory,
              current_setting('server_version') as server_version,
              current_setting('server_version_num')::int as server_version_num,
              pg_is_in_recovery() as in_recovery,
              (select sum(pg_database_size(oid)) from pg_database)::text as database_bytes`;

/** A row of pg_settings as `allSettings` reads it. */
export interface SettingRow {
  name: string;
  setting: string | null;
  unit: string | null;
  source: string;
  sourcefile: string | null;
  sourceline: number | null;
  pending_restart: boolean;
  context: string;
  boot_val: string | null;
}

/** The first key of pgscale's advisory locks ('pgsc'): no other application's locks are mistaken for them. */
export const CLUSTER_LOCK_NAMESPACE = 0x70677363;

/** Client sessions other than this one and pgscale's own lock session (which a stop ends anyway). */
const otherClientSessions = `pid <> pg_backend_pid() and backend_type = 'client backend'
  and pid not in (select pid from pg_locks where locktype = 'advisory' and classid = ${CLUSTER_LOCK_NAMESPACE}::oid)`;

export const statements = {
  serverFacts: () =>
    rows<ServerFacts>(
      'server facts',
      `select current_setting('server_version') as server_version,
              current_setting('server_version_num')::int as server_version_num,
              pg_is_in_recovery() as in_recovery,
              current_setting('data_checksums') as data_checksums,
              current_setting('server_encoding') as server_encoding,
              d.datcollate as lc_collate, d.datctype as lc_ctype,
              -- datlocprovider exists from 15 on; before that every database used libc ('c')
              coalesce(to_jsonb(d)->>'datlocprovider', 'c') as locale_provider,
              current_setting('data_directory') as data_directory,
              current_setting('config_file') as config_file,
              current_setting('port')::int as port,
              (select sum(pg_database_size(oid)) from pg_database where datallowconn)::text as total_bytes
         from pg_database d where d.datname = 'template1'`,
    ),
  tablespaces: () =>
    rows<{ name: string; location: string; bytes: string | null }>(
      'tablespaces',
      `select spcname as name, pg_tablespace_location(oid) as location,
              pg_tablespace_size(oid)::text as bytes
         from pg_tablespace where spcname not in ('pg_default', 'pg_global') order by spcname`,
    ),
  databases: () =>
    rows<{ name: string; bytes: string; encoding: string }>(
      'databases',
      `select datname as name, pg_database_size(oid)::text as bytes, pg_encoding_to_char(encoding) as encoding
         from pg_database where datallowconn order by datname`,
    ),
  /**
   * Every database a backup must account for (template0 aside, which is never dumped), including
   * those that refuse connections: pg_dumpall silently skips those.
   */
  clusterDatabases: () =>
    rows<{ name: string; bytes: string; encoding: string; allow_connections: boolean }>(
      'cluster databases',
      `select datname as name, pg_database_size(oid)::text as bytes, pg_encoding_to_char(encoding) as encoding, datallowconn as allow_connections
         from pg_database where datname <> 'template0' order by datname`,
    ),
  /**
   * What pg_basebackup -X stream needs of the server, from the connection it will make (same
   * libpq settings): free walsenders, a role that may replicate, and where it connects from (null:
   * the Unix socket) for judging pg_hba.
   */
  baseBackupFacts: () =>
    rows<{
      max_wal_senders: number;
      senders_in_use: number;
      role: string;
      superuser: boolean;
      replication: boolean;
      client_addr: string | null;
      hba_readable: boolean;
    }>(
      'base backup facts',
      `select current_setting('max_wal_senders')::int as max_wal_senders,
              (select count(*) from pg_stat_replication)::int as senders_in_use,
              current_user as role, r.rolsuper as superuser, r.rolreplication as replication,
              host(inet_client_addr()) as client_addr,
              has_table_privilege('pg_catalog.pg_hba_file_rules', 'select')
                and has_function_privilege('pg_catalog.pg_hba_file_rules()', 'execute') as hba_readable
         from pg_roles r where r.rolname = current_user`,
    ),
  /** Database names of a restore target that are not there after initdb (a non-empty target). */
  userDatabases: () =>
    rows<{ name: string }>('user databases', `select datname as name from pg_database where datname not in ('postgres', 'template0', 'template1') order by 1`),
  /** Whether the connected database holds user tables (a non-empty restore target). */
  userTableCount: () =>
    rows<{ count: number }>(
      'user tables',
      `select count(*)::int as count from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p', 'm') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'`,
    ),
  /** Drops a database a restore created (rolling the restore back); the name is quoted as an identifier. */
  dropDatabase: (name: string) => command('drop database', `drop database if exists "${name.replace(/"/g, '""')}" with (force)`),
  checkpoint: () => command('checkpoint', 'checkpoint'),
  /** Exact row counts of every user table of the connected database. */
  tableRowCounts: () =>
    rows<{ table_name: string; row_count: string }>(
      'table row counts',
      `select format('%I.%I', table_schema, table_name) as table_name,
              (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', table_schema, table_name), false, true, '')))[1]::text as row_count
         from information_schema.tables
        where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')
        order by 1`,
    ),
  extensions: () => rows<{ name: string; version: string }>('extensions', `select extname as name, extversion as version from pg_extension order by 1`),
  preparedTransactions: () => rows<{ count: number }>('prepared transactions', 'select count(*)::int as count from pg_prepared_xacts'),
  oldestTransactionSeconds: () =>
    rows<{ seconds: number }>(
      'oldest transaction',
      `select coalesce(max(extract(epoch from now() - xact_start)), 0)::float8 as seconds
         from pg_stat_activity where xact_start is not null and pid <> pg_backend_pid() and backend_type = 'client backend'`,
    ),
  replicationSlots: () =>
    rows<{ slot_name: string; slot_type: string; plugin: string | null; database: string | null; active: boolean }>(
      'replication slots',
      'select slot_name, slot_type, plugin, database, active from pg_replication_slots order by slot_name',
    ),
  subscriptions: () =>
    rows<{ name: string; database: string; enabled: boolean }>(
      'subscriptions',
      'select s.subname as name, d.datname as database, s.subenabled as enabled from pg_subscription s join pg_database d on d.oid = s.subdbid order by 1',
    ),
  standbys: () =>
    rows<{ application_name: string; client_addr: string | null; state: string; sync_state: string }>(
      'physical standbys',
      'select application_name, client_addr::text as client_addr, state, sync_state from pg_stat_replication order by 1',
    ),
  settings: (names: readonly string[]) =>
    rows<{ name: string; setting: string; unit: string | null }>(
      'settings',
      'select name, setting, unit from pg_settings where name = any($1::text[]) order by name',
      [`{${names.join(',')}}`],
    ),
  /** Every server setting as the server runs it, with where its value came from (tune's effective configuration). */
  allSettings: () =>
    rows<SettingRow>(
      'all settings',
      'select name, setting, unit, source, sourcefile, sourceline, pending_restart, context, boot_val from pg_settings order by name',
    ),
  /** Lines of the configuration files the server could not apply at the last reload (bad values, unknown names). */
  configFileErrors: () =>
    rows<{ sourcefile: string | null; sourceline: number | null; name: string | null; error: string }>(
      'configuration file errors',
      'select sourcefile, sourceline, name, error from pg_file_settings where error is not null order by seqno',
    ),
  /** Settings made with ALTER DATABASE / ALTER ROLE … SET: they win over the files for those sessions. */
  dbRoleSettings: () =>
    rows<{ database: string | null; role: string | null; settings: string[] }>(
      'database and role settings',
      `select d.datname as database, r.rolname as role, s.setconfig as settings
         from pg_db_role_setting s left join pg_database d on d.oid = s.setdatabase left join pg_roles r on r.oid = s.setrole
        order by 1, 2`,
    ),
  /** Whether this session may run ALTER SYSTEM (superuser, and from 17 allow_alter_system). */
  alterSystemAllowed: () =>
    rows<{ superuser: boolean; allowed: boolean }>(
      'alter system allowed',
      `select current_setting('is_superuser') = 'on' as superuser, coalesce(current_setting('allow_alter_system', true), 'on') = 'on' as allowed`,
    ),
  /**
   * ALTER SYSTEM takes no bind parameters: the name must be a plain setting name and the value is
   * written as a literal; both are checked here so nothing else reaches the statement text.
   */
  alterSystemSet: (name: string, value: string) => {
    if (!/^[a-z_][a-z0-9_.]*$/.test(name)) throw new Error(`not a setting name: ${JSON.stringify(name)}`);
    if (!/^[A-Za-z0-9_.\-:/ ,]*$/.test(value))
      throw new Error(`value for ${name} has characters pgscale does not write through ALTER SYSTEM: ${JSON.stringify(value)}`);
    return command('alter system', `ALTER SYSTEM SET ${name} = '${value}'`);
  },
  reloadConf: () => rows<{ reloaded: boolean }>('reload configuration', 'select pg_reload_conf() as reloaded'),
  bootstrapSuperuser: () => rows<{ rolname: string }>('bootstrap superuser', 'select rolname from pg_authid where oid = 10'),
  /** template0 carries the locale initdb was run with; datlocale is 17+, daticulocale 15–16. */
  clusterLocale: () =>
    rows<{ encoding: string; collate: string; ctype: string; provider: string; icu_locale: string | null }>(
      'cluster locale',
      `select pg_encoding_to_char(encoding) as encoding, datcollate as collate, datctype as ctype,
              coalesce(to_jsonb(d)->>'datlocprovider', 'c') as provider,
              coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale') as icu_locale
         from pg_database d where datname = 'template0'`,
    ),
  /** Up to $1 of the largest user tables with their exact row counts (verification sample). */
  sampleRowCounts: (limit: number) =>
    rows<{ table_name: string; row_count: string }>(
      'sample row counts',
      `select format('%I.%I', n.nspname, c.relname) as table_name,
              (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', n.nspname, c.relname), false, true, '')))[1]::text as row_count
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
        order by c.relpages desc, 1 limit $1`,
      [limit],
    ),
  /** Every client session but this one and pgscale's lock session (the stop that follows ends that one). */
  terminateOtherSessions: () =>
    rows<{ terminated: number }>(
      'terminate other sessions',
      `select count(pg_terminate_backend(pid))::int as terminated from pg_stat_activity where ${otherClientSessions}`,
    ),
  /**
   * pgscale's lock on a cluster, held by a session for the length of a run: (namespace, key) in
   * the postgres database (advisory locks are per database: every pgscale meets in that one).
   */
  takeClusterLock: (key: number) =>
    rows<{ taken: boolean; backend_pid: number }>(
      'take the cluster lock',
      'select pg_try_advisory_lock($1::int, $2::int) as taken, pg_backend_pid() as backend_pid',
      [CLUSTER_LOCK_NAMESPACE, key],
    ),
  releaseClusterLocks: () => command('release the cluster lock', 'select pg_advisory_unlock_all()'),
  /** Who holds pgscale's lock on this cluster (application_name names the run), from any database. */
  clusterLockHolders: (key: number) =>
    rows<{ pid: number; application_name: string; client_addr: string | null; since: string | null }>(
      'cluster lock holders',
      `select l.pid, coalesce(a.application_name, '') as application_name, a.client_addr::text as client_addr,
              to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') as since
         from pg_locks l left join pg_stat_activity a on a.pid = l.pid
        where l.locktype = 'advisory' and l.granted and l.objsubid = 2
          and l.classid = $1::int::oid and l.objid = $2::int::oid
          and l.database = (select oid from pg_database where datname = 'postgres')
        order by 1`,
      [CLUSTER_LOCK_NAMESPACE, key],
    ),
  /** A write that must reach disk: proves the upgraded cluster accepts writes. */
  writeProbe: () =>
    command(
      'write probe',
      `create table if not exists pgscale_write_probe (at timestamptz); insert into pgscale_write_probe values (now()); drop table pgscale_write_probe`,
    ),
  outdatedExtensions: () =>
    rows<{ name: string; installed: string; available: string }>(
      'outdated extensions',
      `select name, installed_version as installed, default_version as available from pg_available_extensions
        where installed_version is not null and installed_version <> default_version order by 1`,
    ),
  /** Settings with where the running server took them from (command line, environment variable, configuration file, default). */
  settingSources: (names: readonly string[]) =>
    rows<{ name: string; setting: string; source: string }>(
      'setting sources',
      'select name, setting, source from pg_settings where name = any($1::text[]) order by name',
      [`{${names.join(',')}}`],
    ),
  /** Databases pg_upgrade refuses: every database but template0 must allow connections. */
  databasesRefusingConnections: () =>
    rows<{ name: string }>(
      'databases refusing connections',
      `select datname as name from pg_database where not datallowconn and datname <> 'template0' order by 1`,
    ),
  /** User columns of the reg* types pg_upgrade cannot carry (their OIDs are not preserved). */
  regTypeColumns: () =>
    rows<{ column_name: string }>(
      'reg* columns',
      `select format('%I.%I.%I (%s)', n.nspname, c.relname, a.attname, format_type(a.atttypid, null)) as column_name
         from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'm') and not a.attisdropped and a.attnum > 0
          and n.nspname not in ('pg_catalog', 'information_schema')
          and format_type(a.atttypid, null) in ('regcollation', 'regconfig', 'regdictionary', 'regnamespace', 'regoper', 'regoperator', 'regproc', 'regprocedure')
        order by 1`,
    ),
  /**
   * Every user relation with storage: its relfilenode and the size of each fork. O(catalog): sizes
   * come from the files' metadata, no row is read. pg_upgrade keeps OIDs and relfilenodes (15+)
   * and carries the files, so these match before and after.
   */
  catalogFacts: () =>
    rows<{ relation: string; kind: string; relfilenode: string; main: string; fsm: string; vm: string; init: string }>(
      'catalog facts',
      `select format('%I.%I', n.nspname, c.relname) as relation, c.relkind::text as kind, c.relfilenode::text as relfilenode,
              pg_relation_size(c.oid, 'main')::text as main, pg_relation_size(c.oid, 'fsm')::text as fsm,
              pg_relation_size(c.oid, 'vm')::text as vm, pg_relation_size(c.oid, 'init')::text as init
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.oid >= 16384 and c.relkind in ('r', 'i', 't', 'm', 'S') and c.relpersistence <> 't'
        order by 1`,
    ),
  /** Exact row count of one table (deep verification, after service is back). */
  tableRowCount: (qualifiedName: string) =>
    rows<{ row_count: string }>(
      'table row count',
      `select (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %s', $1::regclass), false, true, '')))[1]::text as row_count`,
      [qualifiedName],
    ),
  /** Whether amcheck is installed in the connected database. */
  amcheckInstalled: () =>
    rows<{ installed: boolean }>('amcheck installed', `select exists (select 1 from pg_extension where extname = 'amcheck') as installed`),
  /** The valid btree indexes of these tables (deep verification checks them with amcheck). */
  btreeIndexesOf: (tables: readonly string[]) =>
    rows<{ index_name: string }>(
      'btree indexes',
      `select i.indexrelid::regclass::text as index_name
         from pg_index i join pg_class ic on ic.oid = i.indexrelid join pg_am am on am.oid = ic.relam
        where am.amname = 'btree' and i.indisvalid and i.indrelid = any($1::regclass[]) order by 1`,
      [`{${tables.map((t) => `"${t.replace(/"/g, '""')}"`).join(',')}}`],
    ),
  /** amcheck's btree check of one index: raises an error on corruption. */
  btIndexCheck: (indexName: string) => rows<{ checked: boolean }>('bt_index_check', 'select true as checked from bt_index_check($1::regclass)', [indexName]),
  /** The scratch write of the pre-service verification: a table written, checkpointed, dropped. */
  scratchWrite: () =>
    command(
      'scratch write',
      `create table pgscale_upgrade_probe (at timestamptz); insert into pgscale_upgrade_probe values (now()); checkpoint; drop table pgscale_upgrade_probe`,
    ),
  /** Client sessions other than this one (after a termination they take a moment to go). */
  otherSessions: () => rows<{ count: number }>('other sessions', `select count(*)::int as count from pg_stat_activity where ${otherClientSessions}`),
  /** Rules of pg_hba.conf the server could not parse (a reload keeps the old rules then). */
  hbaErrors: () => rows<{ line_number: number; error: string }>('pg_hba errors', 'select line_number, error from pg_hba_file_rules where error is not null'),
  /** Where the server keeps its data directory (superuser or pg_read_all_settings), and whose pg_control it is. */
  dataDirectory: () =>
    rows<{ data_directory: string; system_identifier: string }>(
      'data directory',
      "select current_setting('data_directory') as data_directory, (select system_identifier::text from pg_control_system()) as system_identifier",
    ),
  systemIdentifier: () =>
    rows<{ system_identifier: string }>('system identifier', 'select system_identifier::text as system_identifier from pg_control_system()'),
  serverVersionNum: () =>
    rows<{ server_version_num: number; server_version: string }>(
      'server version',
      `select current_setting('server_version_num')::int as server_version_num, current_setting('server_version') as server_version`,
    ),
  /** max_wal_size in bytes, and whether the server is a standby: what a WAL volume must hold. */
  walSizing: () =>
    rows<{ max_wal_size_bytes: string; in_recovery: boolean }>(
      'wal sizing',
      `select pg_size_bytes(current_setting('max_wal_size'))::text as max_wal_size_bytes, pg_is_in_recovery() as in_recovery`,
    ),
  /** The WAL file being written; null on a standby, which has no insert position. */
  currentWalFile: () =>
    rows<{ in_recovery: boolean; wal_file: string | null }>(
      'current wal file',
      `select pg_is_in_recovery() as in_recovery,
              case when pg_is_in_recovery() then null else pg_walfile_name(pg_current_wal_lsn()) end as wal_file`,
    ),
  /** A WAL record that touches no table, so that the next switch is not a no-op. */
  walMarker: () => rows<{ lsn: string }>('wal marker', `select pg_logical_emit_message(false, 'pgscale', 'wal location check')::text as lsn`),
  /** Switches to a new WAL file; returns the name of the file just completed. */
  walSwitch: () => rows<{ wal_file: string }>('wal switch', 'select pg_walfile_name(pg_switch_wal()) as wal_file'),
  /** Bytes of WAL written since the cluster began (the insert position), with the server's clock; null on a standby. */
  walPosition: () =>
    rows<{ wal_bytes: string | null; at_epoch: number }>(
      'wal position',
      `select case when pg_is_in_recovery() then null else pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text end as wal_bytes,
              extract(epoch from clock_timestamp())::float8 as at_epoch`,
    ),
  /** WAL written since pg_stat_wal was last reset (14+), and over how many seconds. */
  walSinceStatsReset: () =>
    rows<{ wal_bytes: string; seconds: number }>(
      'wal since stats reset',
      `select wal_bytes::text as wal_bytes, extract(epoch from now() - stats_reset)::float8 as seconds from pg_stat_wal`,
    ),
  /** Partitions of the largest partition tree in this database, and how many partitioned tables it has. */
  partitionTrees: () =>
    rows<{ largest: number; partitioned_tables: number }>(
      'partition trees',
      `select coalesce(max((select count(*) from pg_partition_tree(c.oid) t where t.isleaf)), 0)::int as largest,
              count(*)::int as partitioned_tables
         from pg_class c where c.relkind = 'p' and not c.relispartition`,
    ),

  // ---- replicas (src/replica/*): streaming replication, slots, the replication role --------------
  /** What a new streaming replica needs from the primary: WAL level, free senders and slots, where pg_hba is. */
  replicationSettings: () => rows<ReplicationSettings>('replication settings', REPLICATION_SETTINGS),
  /** The role replicas connect as: whether it may replicate and has a SCRAM verifier (needs a superuser to read pg_authid). */
  replicationRole: (role: string) =>
    rows<{ rolname: string; rolreplication: boolean; rolcanlogin: boolean; scram: boolean }>(
      'replication role',
      `select rolname, rolreplication, rolcanlogin, coalesce(rolpassword like 'SCRAM-SHA-256$%', false) as scram
         from pg_authid where rolname = $1`,
      [role],
    ),
  /**
   * Creates the replication role from a SCRAM verifier computed here (the password itself never
   * reaches the server or a log); the values travel as session settings, not in the statement text.
   */
  createReplicationRole: (role: string, verifier: string) =>
    ({
      name: 'create replication role',
      text: `select set_config('pgscale.replication_role', $1, false), set_config('pgscale.replication_verifier', $2, false);
do $pgscale$ begin
  execute format('create role %I with login replication password %L', current_setting('pgscale.replication_role'), current_setting('pgscale.replication_verifier'));
end $pgscale$`,
      params: [role, verifier],
      returnsRows: false,
    }) satisfies Statement<void>,
  /** Undoes createReplicationRole (the role did not exist before the run). */
  dropRole: (role: string) =>
    ({
      name: 'drop role',
      text: `select set_config('pgscale.replication_role', $1, false);
do $pgscale$ begin execute format('drop role if exists %I', current_setting('pgscale.replication_role')); end $pgscale$`,
      params: [role],
      returnsRows: false,
    }) satisfies Statement<void>,
  /**
   * Everything a replica's checks need from the primary in one round trip (as root each statement
   * is a psql process): settings, the role, the slot, the pg_hba rules and the tablespaces.
   */
  replicaFacts: (role: string, slot: string) =>
    rows<{
      settings: ReplicationSettings;
      role: { rolname: string; rolreplication: boolean; rolcanlogin: boolean; scram: boolean } | null;
      slot_exists: boolean;
      hba_rules: HbaRuleRow[];
      tablespaces: { name: string; location: string; bytes: string | null }[];
    }>(
      'replica facts',
      `select (select to_jsonb(s) from (${REPLICATION_SETTINGS}) s) as settings,
              (select to_jsonb(r) from (select rolname, rolreplication, rolcanlogin, coalesce(rolpassword like 'SCRAM-SHA-256$%', false) as scram from pg_authid where rolname = $1) r) as role,
              exists (select 1 from pg_replication_slots where slot_name = $2) as slot_exists,
              (select coalesce(jsonb_agg(to_jsonb(h) order by h.line_number), '[]') from (select line_number, type, database, user_name, address, netmask, auth_method, error from pg_hba_file_rules) h) as hba_rules,
              (select coalesce(jsonb_agg(to_jsonb(t)), '[]') from (select spcname as name, pg_tablespace_location(oid) as location, pg_tablespace_size(oid)::text as bytes from pg_tablespace where spcname not in ('pg_default', 'pg_global')) t) as tablespaces`,
      [role, slot],
    ),
  /** pg_hba rules as the server reads them from the file now (errors included). */
  hbaRules: () =>
    rows<HbaRuleRow>(
      'pg_hba rules',
      `select line_number, type, database, user_name, address, netmask, auth_method, error from pg_hba_file_rules order by line_number`,
    ),
  reloadConfiguration: () => rows<{ ok: boolean }>('reload configuration', 'select pg_reload_conf() as ok'),
  slot: (slot: string) =>
    rows<{ slot_name: string; slot_type: string; active: boolean; restart_lsn: string | null; wal_status: string | null }>(
      'replication slot',
      `select slot_name, slot_type, active, restart_lsn::text, wal_status from pg_replication_slots where slot_name = $1`,
      [slot],
    ),
  /** A physical slot that reserves WAL now, before the copy starts (immediately_reserve). */
  createPhysicalSlot: (slot: string) =>
    rows<{ slot_name: string }>('create physical slot', `select slot_name from pg_create_physical_replication_slot($1, true)`, [slot]),
  dropSlot: (slot: string) => rows<{ dropped: boolean }>('drop slot', `select true as dropped from pg_drop_replication_slot($1)`, [slot]),
  /** Ends the walsender holding a slot (a killed pg_basebackup's may linger until its socket times out). */
  terminateSlotHolder: (slot: string) =>
    rows<{ terminated: boolean }>(
      'terminate slot holder',
      `select pg_terminate_backend(active_pid) as terminated from pg_replication_slots where slot_name = $1 and active_pid is not null`,
      [slot],
    ),
  /** One standby seen from the primary through its slot. */
  standbyOnSlot: (slot: string) =>
    rows<{ state: string | null; client_addr: string | null; lag_bytes: string | null; replay_lag_seconds: number | null }>(
      'standby on slot',
      `select r.state, host(r.client_addr) as client_addr,
              pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::text as lag_bytes,
              extract(epoch from r.replay_lag)::float8 as replay_lag_seconds
         from pg_replication_slots s join pg_stat_replication r on r.pid = s.active_pid
        where s.slot_name = $1`,
      [slot],
    ),
  /** Walsenders for a role from an address: a pg_hba rule still in use by another standby. */
  sendersFrom: (role: string, address: string) =>
    rows<{ n: number }>('senders from address', `select count(*)::int as n from pg_stat_replication where usename = $1 and host(client_addr) = $2`, [
      role,
      address,
    ]),
  /** Every slot and every walsender, joined: `replica list`. */
  replicationOverview: () =>
    rows<ReplicationOverviewRow>(
      'replication overview',
      `select s.slot_name, s.slot_type, s.active, s.wal_status,
              s.safe_wal_size::text as safe_wal_size,
              case when s.restart_lsn is null then null else pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn) end::text as retained_bytes,
              r.pid, r.application_name, host(r.client_addr) as client_addr, r.state, r.sync_state,
              case when r.replay_lsn is null then null else pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn) end::text as lag_bytes,
              extract(epoch from r.replay_lag)::float8 as replay_lag_seconds
         from pg_replication_slots s
         full join (select * from pg_stat_replication) r on r.pid = s.active_pid
        order by coalesce(s.slot_name, r.application_name)`,
    ),
  probeTableCreate: () => command('create replica probe table', 'create table if not exists pgscale_replica_probe (token text not null)'),
  // a command, not rows: psql wraps row statements in a subquery, where an INSERT cannot stand
  probeWrite: (token: string) =>
    ({
      name: 'write replica probe',
      text: 'insert into pgscale_replica_probe (token) values ($1)',
      params: [token],
      returnsRows: false,
    }) satisfies Statement<void>,
  probeRead: (token: string) => rows<{ token: string }>('read replica probe', 'select token from pgscale_replica_probe where token = $1', [token]),
  probeTableDrop: () => command('drop replica probe table', 'drop table if exists pgscale_replica_probe'),
  inRecovery: () => rows<{ in_recovery: boolean }>('in recovery', 'select pg_is_in_recovery() as in_recovery'),
  /** A standby's replay position against a primary's LSN (the shutdown checkpoint it must have received). */
  replayedUpTo: (lsn: string) =>
    rows<{ replayed: string | null; reached: boolean | null }>(
      'replayed up to',
      'select pg_last_wal_replay_lsn()::text as replayed, pg_last_wal_replay_lsn() >= $1::pg_lsn as reached',
      [lsn],
    ),
};

// ---------------------------------------------------------------- tablespaces (pgscale tablespaces)

/** A name as a quoted SQL identifier ("a""b"): the only way a relation or tablespace name reaches statement text. */
export const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;
/** schema.name, both quoted. */
export const qualified = (schema: string, name: string): string => `${quoteIdent(schema)}.${quoteIdent(name)}`;
const quoteLiteral = (text: string): string => `'${text.replace(/'/g, "''")}'`;

/** One index of a table as the tablespaces snapshot records it. */
export interface IndexStatsRow {
  schema: string;
  name: string;
  bytes: number;
  /** '' is the database's default tablespace. */
  tablespace: string;
  idx_scan: number | null;
  idx_blks_read: number | null;
  idx_blks_hit: number | null;
  /** An exclusion-constraint index: REINDEX CONCURRENTLY refuses it. */
  exclusion: boolean;
}

/** One table or partition (relkind r) or partitioned parent (relkind p) with its counters. */
export interface RelationStatsRow {
  schema: string;
  name: string;
  kind: 'r' | 'p';
  tablespace: string;
  heap_bytes: number;
  total_bytes: number;
  row_estimate: number;
  is_partition: boolean;
  parent_schema: string | null;
  parent_name: string | null;
  partition_bound: string | null;
  seq_scan: number | null;
  seq_tup_read: number | null;
  idx_scan: number | null;
  idx_tup_fetch: number | null;
  n_tup_ins: number | null;
  n_tup_upd: number | null;
  n_tup_del: number | null;
  /** From 16 on; null before. */
  last_seq_scan: string | null;
  last_idx_scan: string | null;
  heap_blks_read: number | null;
  heap_blks_hit: number | null;
  idx_blks_read: number | null;
  idx_blks_hit: number | null;
  toast_blks_read: number | null;
  toast_blks_hit: number | null;
  /** A primary key or a unique, valid, total index on NOT NULL columns: what pg_repack needs. */
  has_key: boolean;
  indexes: IndexStatsRow[];
}

/** How a lock_timeout-bounded ALTER TABLE … SET TABLESPACE reports that it gave up waiting. */
export const isLockTimeout = (e: unknown): boolean =>
  /lock timeout|55P03/.test(e instanceof Error ? `${e.message} ${(e as { code?: string }).code ?? ''}` : String(e));

const doTag = '$pgscale$';

/**
 * One DO block whose lock_timeout is local to its transaction: the bound holds for every lock it
 * waits for and never leaks into the session (a pooled connection, a later REINDEX CONCURRENTLY).
 */
function underLockTimeout(name: string, lockTimeoutMs: number, body: string[], declare = ''): Statement<void> {
  const text = body.join('\n');
  if (text.includes(doTag)) throw new Error(`${name}: statement contains ${doTag}`);
  return command(
    name,
    [
      `DO ${doTag}`,
      ...(declare ? [`DECLARE ${declare}`] : []),
      'BEGIN',
      `  PERFORM set_config('lock_timeout', '${Math.round(lockTimeoutMs)}ms', true);`,
      ...body.map((l) => `  ${l}`),
      `END ${doTag}`,
    ].join('\n'),
  );
}

export const tablespaceStatements = {
  /** The database, its counters' reset time and the server's clock (ISO 8601): the frame of a snapshot. */
  statsFrame: () =>
    rows<{
      database: string;
      taken_at: string;
      stats_reset: string | null;
      postmaster_start: string;
      server_version_num: number;
      system_identifier: string;
      default_tablespace: string;
    }>(
      'tablespaces: statistics frame',
      `select current_database() as database, to_json(now())#>>'{}' as taken_at,
              (select to_json(stats_reset)#>>'{}' from pg_stat_database where datname = current_database()) as stats_reset,
              to_json(pg_postmaster_start_time())#>>'{}' as postmaster_start,
              current_setting('server_version_num')::int as server_version_num,
              (select system_identifier::text from pg_control_system()) as system_identifier,
              (select spcname from pg_tablespace t join pg_database d on d.dattablespace = t.oid where d.datname = current_database()) as default_tablespace`,
    ),
  /** Every user table, partition and partitioned parent with sizes, access counters and indexes. */
  relationStats: () =>
    rows<RelationStatsRow>(
      'tablespaces: relation statistics',
      `select n.nspname as schema, c.relname as name, c.relkind::text as kind, coalesce(t.spcname, '') as tablespace,
              pg_relation_size(c.oid)::float8 as heap_bytes, pg_total_relation_size(c.oid)::float8 as total_bytes,
              greatest(c.reltuples, 0)::float8 as row_estimate, c.relispartition as is_partition,
              pn.nspname as parent_schema, pc.relname as parent_name, pg_get_expr(c.relpartbound, c.oid) as partition_bound,
              s.seq_scan::float8 as seq_scan, s.seq_tup_read::float8 as seq_tup_read, s.idx_scan::float8 as idx_scan,
              s.idx_tup_fetch::float8 as idx_tup_fetch, s.n_tup_ins::float8 as n_tup_ins, s.n_tup_upd::float8 as n_tup_upd,
              s.n_tup_del::float8 as n_tup_del,
              -- last_seq_scan / last_idx_scan exist from 16 on
              to_jsonb(s)->>'last_seq_scan' as last_seq_scan, to_jsonb(s)->>'last_idx_scan' as last_idx_scan,
              io.heap_blks_read::float8 as heap_blks_read, io.heap_blks_hit::float8 as heap_blks_hit,
              io.idx_blks_read::float8 as idx_blks_read, io.idx_blks_hit::float8 as idx_blks_hit,
              io.toast_blks_read::float8 as toast_blks_read, io.toast_blks_hit::float8 as toast_blks_hit,
              (select coalesce(json_agg(json_build_object(
                        'schema', n.nspname, 'name', ic.relname, 'bytes', pg_relation_size(ic.oid)::float8,
                        'tablespace', coalesce(it.spcname, ''), 'idx_scan', si.idx_scan::float8,
                        'idx_blks_read', sio.idx_blks_read::float8, 'idx_blks_hit', sio.idx_blks_hit::float8,
                        'exclusion', exists (select 1 from pg_constraint k where k.conindid = ic.oid and k.contype = 'x'))
                      order by ic.relname), '[]'::json)
                 from pg_index x join pg_class ic on ic.oid = x.indexrelid
                 left join pg_tablespace it on it.oid = ic.reltablespace
                 left join pg_stat_user_indexes si on si.indexrelid = ic.oid
                 left join pg_statio_user_indexes sio on sio.indexrelid = ic.oid
                where x.indrelid = c.oid and ic.relkind = 'i') as indexes,
              exists (select 1 from pg_index x
                       where x.indrelid = c.oid and x.indisunique and x.indisvalid and x.indimmediate
                         and x.indpred is null and x.indexprs is null
                         and not exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attnum = any (x.indkey) and not a.attnotnull)) as has_key
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         left join pg_tablespace t on t.oid = c.reltablespace
         left join pg_inherits i on i.inhrelid = c.oid and c.relispartition
         left join pg_class pc on pc.oid = i.inhparent
         left join pg_namespace pn on pn.oid = pc.relnamespace
         left join pg_stat_user_tables s on s.relid = c.oid
         left join pg_statio_user_tables io on io.relid = c.oid
        where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp)'
        order by 1, 2`,
    ),
  /** Where a table, its TOAST table and its indexes live now ('' is the database default). */
  placementOf: (schema: string, name: string) =>
    rows<{ relation: string; kind: string; tablespace: string }>(
      'tablespaces: placement of a table',
      `with r as (select c.oid, c.reltoastrelid from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2)
       select c.relname as relation, case when c.oid = r.oid then 'table' when c.relkind = 't' then 'toast' else 'index' end as kind,
              coalesce(t.spcname, '') as tablespace
         from r join pg_class c on c.oid = r.oid or c.oid = r.reltoastrelid
                                or c.oid in (select indexrelid from pg_index where indrelid = r.oid)
         left join pg_tablespace t on t.oid = c.reltablespace
        where c.relkind <> 'i' or c.oid in (select indexrelid from pg_index where indrelid = r.oid)
        order by 2, 1`,
      [schema, name],
    ),
  /** Indexes REINDEX CONCURRENTLY left invalid when it was interrupted (name_ccnew…, or name_ccold… after the swap). */
  leftoverConcurrentIndexes: (schema: string, table: string) =>
    rows<{ name: string }>(
      'tablespaces: leftover concurrent reindex',
      `select ic.relname as name from pg_index x join pg_class ic on ic.oid = x.indexrelid
         join pg_class c on c.oid = x.indrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = $1 and c.relname = $2 and not x.indisvalid and ic.relname ~ '_cc(new|old)[0-9]*$'`,
      [schema, table],
    ),
  dropIndexConcurrently: (schema: string, name: string) =>
    command('tablespaces: drop leftover index', `DROP INDEX CONCURRENTLY IF EXISTS ${qualified(schema, name)}`),
  rowCount: (schema: string, name: string) =>
    rows<{ count: number }>('tablespaces: row count', `select count(*)::float8 as count from ${qualified(schema, name)}`),
  tablespaceList: () =>
    rows<{ name: string; location: string; options: string[] | null; owner: string }>(
      'tablespaces: list',
      `select spcname as name, pg_tablespace_location(oid) as location, spcoptions as options, pg_get_userbyid(spcowner) as owner
         from pg_tablespace order by 1`,
    ),
  createTablespace: (name: string, location: string) =>
    command('tablespaces: create', `CREATE TABLESPACE ${quoteIdent(name)} LOCATION ${quoteLiteral(location)}`),
  dropTablespace: (name: string) => command('tablespaces: drop', `DROP TABLESPACE IF EXISTS ${quoteIdent(name)}`),
  /** Planner and prefetch settings of a tablespace; names are checked so nothing else reaches the text. */
  setTablespaceOptions: (name: string, options: Record<string, number>) => {
    const list = Object.entries(options).map(([k, v]) => {
      if (!/^[a-z_]+$/.test(k) || !Number.isFinite(v)) throw new Error(`not a tablespace option: ${k}=${v}`);
      return `${k} = ${v}`;
    });
    return command('tablespaces: options', `ALTER TABLESPACE ${quoteIdent(name)} SET (${list.join(', ')})`);
  },
  resetTablespaceOptions: (name: string, options: readonly string[]) =>
    command('tablespaces: reset options', `ALTER TABLESPACE ${quoteIdent(name)} RESET (${options.filter((o) => /^[a-z_]+$/.test(o)).join(', ')})`),
  /**
   * Moves a table's heap (its TOAST follows) under a short lock_timeout. With `countRows`, a
   * REPEATABLE READ transaction counts the rows before taking the lock and again after the rewrite,
   * both with its one snapshot: rows committed meanwhile are invisible to both counts, so any
   * difference is a row the copy lost, and it undoes the move. One scan more under the lock.
   * Naming the database's default tablespace stores it as "the default" (reltablespace 0).
   */
  moveTable: (schema: string, name: string, ts: string, lockTimeoutMs: number, countRows: boolean) => {
    const rel = qualified(schema, name);
    const move = `ALTER TABLE ${rel} SET TABLESPACE ${quoteIdent(ts)};`;
    if (!countRows) return underLockTimeout('tablespaces: move table', lockTimeoutMs, [move]);
    const counted = underLockTimeout(
      'tablespaces: move table, rows counted',
      lockTimeoutMs,
      [
        `SELECT count(*) INTO before FROM ${rel};`,
        `LOCK TABLE ${rel} IN ACCESS EXCLUSIVE MODE;`,
        move,
        `SELECT count(*) INTO after FROM ${rel};`,
        `IF before <> after THEN RAISE EXCEPTION 'row count changed by the move: % before, % after', before, after; END IF;`,
      ],
      'before bigint; after bigint;',
    );
    return { ...counted, text: `BEGIN ISOLATION LEVEL REPEATABLE READ;\n${counted.text};\nCOMMIT` };
  },
  /** Ends a transaction a failed multi-statement text left open (a warning, no error, when there is none). */
  rollback: () => command('tablespaces: rollback', 'ROLLBACK'),
  /** An index rebuilt in another tablespace without blocking writes (14+). */
  reindexConcurrently: (schema: string, name: string, ts: string) =>
    command('tablespaces: reindex concurrently', `REINDEX (TABLESPACE ${quoteIdent(ts)}) INDEX CONCURRENTLY ${qualified(schema, name)}`),
  /** An index moved by rewrite (blocks writes to its table): before 14, and for exclusion-constraint indexes. */
  moveIndex: (schema: string, name: string, ts: string, lockTimeoutMs: number) =>
    underLockTimeout('tablespaces: move index', lockTimeoutMs, [`ALTER INDEX ${qualified(schema, name)} SET TABLESPACE ${quoteIdent(ts)};`]),
  /** A partitioned parent's (or partitioned index's) default for new partitions: catalog only, no data moves. */
  setPartitionedDefault: (kind: 'TABLE' | 'INDEX', schema: string, name: string, ts: string, lockTimeoutMs: number) =>
    underLockTimeout('tablespaces: partitioned default', lockTimeoutMs, [`ALTER ${kind} ${qualified(schema, name)} SET TABLESPACE ${quoteIdent(ts)};`]),
  partitionedDefault: (schema: string, name: string) =>
    rows<{ tablespace: string; indexes: { schema: string; name: string; tablespace: string }[] }>(
      'tablespaces: partitioned default',
      `select coalesce(t.spcname, '') as tablespace,
              (select coalesce(json_agg(json_build_object('schema', n.nspname, 'name', ic.relname, 'tablespace', coalesce(it.spcname, ''))), '[]'::json)
                 from pg_index x join pg_class ic on ic.oid = x.indexrelid left join pg_tablespace it on it.oid = ic.reltablespace
                where x.indrelid = c.oid) as indexes
         from pg_class c join pg_namespace n on n.oid = c.relnamespace left join pg_tablespace t on t.oid = c.reltablespace
        where n.nspname = $1 and c.relname = $2`,
      [schema, name],
    ),
  /** The role this session runs as, and whether it is a superuser (pg_repack works only as one). */
  sessionRole: () =>
    rows<{ name: string; superuser: boolean }>('tablespaces: session role', `select current_user as name, current_setting('is_superuser') = 'on' as superuser`),
  /** pg_repack as the server offers it: the version its files install, and the installed one (null: not created). */
  repackExtension: () =>
    rows<{ default_version: string; installed_version: string | null }>(
      'tablespaces: pg_repack extension',
      `select default_version, installed_version from pg_available_extensions where name = 'pg_repack'`,
    ),
  /**
   * What pg_repack made for a table and did not remove (it was killed, or its own cleanup was not
   * granted its lock): the trigger logging every write, its log table, the copy (with the indexes
   * built on it, in the target tablespace), the key type, an index it built on the table itself.
   */
  repackLeftovers: (schema: string, name: string) =>
    rows<{ oid: number; objects: string[] }>(
      'tablespaces: pg_repack leftovers',
      `select c.oid::int8::float8 as oid, array_remove(array[
                case when exists (select 1 from pg_trigger g where g.tgrelid = c.oid and g.tgname = 'repack_trigger') then 'trigger repack_trigger' end,
                case when to_regclass('repack.log_' || c.oid) is not null then 'table repack.log_' || c.oid end,
                case when to_regclass('repack.table_' || c.oid) is not null then 'table repack.table_' || c.oid end,
                case when to_regtype('repack.pk_' || c.oid) is not null then 'type repack.pk_' || c.oid end]
              || array(select 'invalid index ' || i.relname from pg_index x join pg_class i on i.oid = x.indexrelid
                        where x.indrelid = c.oid and not x.indisvalid and i.relname ~ '^index_[0-9]+$' order by 1), null) as objects
         from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2`,
      [schema, name],
    ),
  /** Every table of the database pg_repack left something for (its trigger, log table, copy or key type). */
  repackLeftoverTables: () =>
    rows<{ schema: string; name: string }>(
      'tablespaces: tables with pg_repack leftovers',
      `with o as (select tgrelid as oid from pg_trigger where tgname = 'repack_trigger'
                  union select substring(c.relname from '^(?:log|table)_([0-9]+)$')::oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
                   where n.nspname = 'repack' and c.relname ~ '^(log|table)_[0-9]+$'
                  union select substring(t.typname from '^pk_([0-9]+)$')::oid from pg_type t join pg_namespace n on n.oid = t.typnamespace
                   where n.nspname = 'repack' and t.typname ~ '^pk_[0-9]+$')
       select n.nspname as schema, c.relname as name from o join pg_class c on c.oid = o.oid join pg_namespace n on n.oid = c.relnamespace order by 1, 2`,
    ),
  /** Sessions of a pg_repack pgscale did not start: what they made is theirs, not a leftover. */
  foreignRepackSessions: () =>
    rows<{ pid: number }>(
      'tablespaces: other pg_repack sessions',
      `select pid from pg_stat_activity where application_name = 'pg_repack' and datname = current_database() and pid <> pg_backend_pid()`,
    ),
  /**
   * Ends the sessions of a pg_repack that pgscale started and whose program is gone (a killed run:
   * its backend copies on until it notices); returns how many are left. The run lock keeps any
   * other pgscale run off the cluster, so none of these belongs to a live run. Termination is
   * asynchronous: orphanRepackSessions tells when they are gone.
   */
  endOrphanRepackSessions: () =>
    rows<{ ended: boolean }>(
      'tablespaces: end orphaned pg_repack sessions',
      `select pg_terminate_backend(pid) as ended from pg_stat_activity where application_name = 'pgscale-pg_repack'`,
    ),
  orphanRepackSessions: () =>
    rows<{ count: number }>(
      'tablespaces: orphaned pg_repack sessions',
      `select count(*)::float8 as count from pg_stat_activity where application_name = 'pgscale-pg_repack'`,
    ),
  /** pg_repack's own cleanup of what it created for a table (log table, key type, copy, trigger). */
  repackDrop: (oid: number, lockTimeoutMs: number) =>
    underLockTimeout('tablespaces: drop pg_repack leftover', lockTimeoutMs, [`PERFORM repack.repack_drop(${Math.trunc(oid)}::oid, 4);`]),
  createRepackExtension: () => command('tablespaces: create pg_repack', 'CREATE EXTENSION IF NOT EXISTS pg_repack'),
  dropRepackExtension: () => command('tablespaces: drop pg_repack', 'DROP EXTENSION IF EXISTS pg_repack'),
  tempTablespaces: () =>
    rows<{ setting: string; source: string }>('tablespaces: temp_tablespaces', `select setting, source from pg_settings where name = 'temp_tablespaces'`),
  resetTempTablespaces: () => command('tablespaces: reset temp_tablespaces', 'ALTER SYSTEM RESET temp_tablespaces'),
};

export interface ReplicationSettings {
  wal_level: string;
  max_wal_senders: number;
  senders_in_use: number;
  max_replication_slots: number;
  slots_in_use: number;
  max_slot_wal_keep_size_bytes: string;
  max_wal_size_bytes: string;
  listen_addresses: string;
  hba_file: string;
  config_file: string;
  data_directory: string;
  server_version: string;
  server_version_num: number;
  in_recovery: boolean;
  database_bytes: string;
}

export interface HbaRuleRow {
  line_number: number;
  type: string | null;
  database: string[] | null;
  user_name: string[] | null;
  address: string | null;
  netmask: string | null;
  auth_method: string | null;
  error: string | null;
}

export interface ReplicationOverviewRow {
  slot_name: string | null;
  slot_type: string | null;
  active: boolean | null;
  wal_status: string | null;
  safe_wal_size: string | null;
  retained_bytes: string | null;
  pid: number | null;
  application_name: string | null;
  client_addr: string | null;
  state: string | null;
  sync_state: string | null;
  lag_bytes: string | null;
  replay_lag_seconds: number | null;
}

export interface Db {
  /** Where it is connected, for messages and the audit log. */
  readonly target: string;
  query<Row>(statement: Statement<Row>): Promise<Row[]>;
  close(): Promise<void>;
}

function connectionError(target: string, err: unknown): PgscaleError {
  const msg = redact(err instanceof Error ? err.message : String(err));
  // node-postgres' words when the server asks for a password and none was given
  if (/client password must be a string/.test(msg))
    return new PgscaleError(
      `cannot connect to PostgreSQL at ${target}: the server asks for a password and none was given`,
      ExitCode.FailedNoChange,
      'put it in a password file (PGPASSFILE or ~/.pgpass, mode 0600) or PGPASSWORD',
    );
  return new PgscaleError(`cannot connect to PostgreSQL at ${target}: ${msg}`, ExitCode.FailedNoChange, 'check the port, the user and PGPASSFILE / ~/.pgpass');
}

async function audited<T>(audit: AuditSink | undefined, target: string, st: Statement<unknown>, run: () => Promise<T[]>): Promise<T[]> {
  const started = performance.now();
  try {
    const result = await run();
    audit?.record({ kind: 'sql', target, sql: st.text, params: st.params.length, rows: result.length, durationMs: Math.round(performance.now() - started) });
    return result;
  } catch (e) {
    audit?.record({
      kind: 'sql',
      target,
      sql: st.text,
      params: st.params.length,
      error: redact(String(e)),
      durationMs: Math.round(performance.now() - started),
    });
    throw e;
  }
}

/** `pg` is loaded on first use: commands that never connect (help, detect of a stopped cluster) start faster. */
const loadPg = async (): Promise<typeof pg> => (await import('pg')).default;

/**
 * libpq's password file (PGPASSFILE or ~/.pgpass), looked up for a connection without a password:
 * `pg` still does this itself but warns on stderr that it will stop (pg 9), so the lookup is ours.
 */
async function passwordFromPassfile(params?: unknown): Promise<string | undefined> {
  const { default: lookup } = await import('pgpass');
  return new Promise((resolve) => lookup(params, resolve));
}

/** A `pg` client connection. */
export class PgDb implements Db {
  private constructor(
    private readonly client: pg.Client,
    readonly target: string,
    private readonly audit?: AuditSink,
  ) {}

  static async connect(settings: ConnectionSettings, audit?: AuditSink): Promise<PgDb> {
    const target = describeConnection(settings);
    const { Client } = await loadPg();
    const client = new Client({
      host: settings.host,
      port: settings.port,
      // libpq's default role is the effective OS user, not $USER (which may be unset or another user's under su/setpriv)
      user: settings.user ?? currentUser().name,
      database: settings.database ?? 'postgres',
      // pg calls it with its connection parameters; undefined means no password (its types omit that)
      password: settings.password ?? (passwordFromPassfile as () => Promise<string>),
      application_name: 'pgscale',
      connectionTimeoutMillis: 10_000,
    });
    if (settings.passfile) process.env.PGPASSFILE = settings.passfile;
    try {
      await client.connect();
    } catch (e) {
      await client.end().catch(() => undefined);
      throw connectionError(target, e);
    }
    return new PgDb(client, target, audit);
  }

  async query<Row>(st: Statement<Row>): Promise<Row[]> {
    return audited(this.audit, this.target, st, async () => (await this.client.query(st.text, [...st.params])).rows as Row[]);
  }

  async close(): Promise<void> {
    await this.client.end();
  }
}

/** psql reading statements from stdin, unaligned and tuples only, stopping at the first error. */
export const psqlArgs = ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1'] as const;

/** Our statements use $n only as parameters, never inside literals. */
async function inline(st: Statement<unknown>): Promise<string> {
  const { escapeLiteral } = await loadPg();
  return st.text.replace(/\$(\d+)/g, (_, n: string) => {
    const v = st.params[Number(n) - 1];
    if (v === null || v === undefined) return 'null';
    return typeof v === 'string' ? escapeLiteral(v) : String(v);
  });
}

/** A statement as psql input whose output is one JSON array (rows) or nothing (commands). */
async function psqlText(st: Statement<unknown>): Promise<string> {
  const body = await inline(st);
  return st.returnsRows ? `select coalesce(json_agg(q), '[]'::json) from (${body}) q` : body;
}

/** What a failed psql said, as pgscale reports it: a connection failure or the statement's error. */
function psqlFailure(target: string, st: Statement<unknown>, stderr: string): Error {
  const msg = stderr.trim();
  if (/could not connect|connection to server/.test(msg)) return connectionError(target, msg);
  return new Error(`${st.name} failed: ${redact(msg)}`);
}

/** psql run as the cluster owner over the local socket: the root-on-the-host path (peer auth). */
export class PsqlDb implements Db {
  readonly target: string;

  constructor(
    private readonly runner: Runner,
    private readonly psql: string,
    private readonly settings: ConnectionSettings,
    private readonly owner: OsUser,
    private readonly audit?: AuditSink,
  ) {
    this.target = describeConnection(settings) + ` (psql as ${owner.name})`;
  }

  async query<Row>(st: Statement<Row>): Promise<Row[]> {
    const text = await psqlText(st);
    return audited(this.audit, this.target, st, async () => {
      const res = await this.runner.run({
        program: this.psql,
        args: [...psqlArgs, '-f', '-'],
        env: { ...libpqEnvironment(this.settings), PGDATABASE: this.settings.database ?? 'postgres', PGAPPNAME: 'pgscale' },
        runAs: this.owner,
        input: text,
      });
      if (res.exitCode !== 0) throw psqlFailure(this.target, st, res.stderr);
      return st.returnsRows ? (JSON.parse(res.stdout.trim() || '[]') as Row[]) : [];
    });
  }

  async close(): Promise<void> {}
}

/**
 * One psql session kept open (its stdin stays open) for statements sent one at a time: for what
 * must outlast a statement, a session-level advisory lock above all. It ends when its input ends,
 * so a pgscale that dies, however, ends it too. A statement that fails ends it (ON_ERROR_STOP).
 */
export class PsqlSession {
  private output = '';
  private wake: () => void = () => undefined;
  private exited: RunResult | undefined;
  /** Follows each statement: its output is everything before this line. */
  private readonly marker = `pgscale-end-${randomBytes(6).toString('hex')}`;

  constructor(
    private readonly process: StreamingRun,
    readonly target: string,
    private readonly audit?: AuditSink,
  ) {
    process.stdout.setEncoding('utf8');
    process.stdout.on('data', (d: string) => {
      this.output += d;
      this.wake();
    });
    process.stdin.on('error', () => undefined); // psql gone: its exit tells why
    void process.result.then((r) => {
      this.exited = r;
      this.wake();
    });
  }

  get open(): boolean {
    return !this.exited;
  }

  async query<Row>(st: Statement<Row>): Promise<Row[]> {
    const text = await psqlText(st);
    return audited(this.audit, this.target, st, async () => {
      if (this.exited) throw psqlFailure(this.target, st, this.exited.stderr || 'the session has ended');
      this.output = '';
      this.process.stdin.write(`${text};\n\\echo ${this.marker}\n`);
      for (;;) {
        const end = this.output.indexOf(`${this.marker}\n`);
        if (end >= 0) {
          const out = this.output.slice(0, end).trim();
          return st.returnsRows ? (JSON.parse(out || '[]') as Row[]) : [];
        }
        const exited = this.exited as RunResult | undefined; // set by the exit handler meanwhile
        if (exited) throw psqlFailure(this.target, st, exited.stderr);
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    });
  }

  /** Ends the session (and what it holds) and waits for psql to exit. */
  async end(): Promise<void> {
    this.process.stdin.end();
    await this.process.result;
  }
}
