/**
 * The one module that holds SQL. Statements are named values; a Db runs them over `pg` (network or
 * socket with credentials) or, when pgscale is root on the database host, through psql run as the
 * data directory's owner so peer authentication works as it does for the DBA.
 */
import pg from 'pg';
import type { AuditSink } from './audit.js';
import { redact } from './audit.js';
import { describeConnection, libpqEnvironment, type ConnectionSettings } from './connection.js';
import { PgscaleError, ExitCode } from './errors.js';
import type { OsUser, Runner } from './runner.js';

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
  port: number;
  total_bytes: string;
}

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
    rows<{ name: string; setting: string; unit: string | null }>('settings', 'select name, setting, unit from pg_settings where name = any($1::text[]) order by name', [`{${names.join(',')}}`]),
  /** Every server setting as the server runs it, with where its value came from (tune's effective configuration). */
  allSettings: () =>
    rows<{ name: string; setting: string | null; unit: string | null; source: string; sourcefile: string | null; sourceline: number | null; pending_restart: boolean; context: string; boot_val: string | null }>(
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
    if (!/^[A-Za-z0-9_.\-:/ ,]*$/.test(value)) throw new Error(`value for ${name} has characters pgscale does not write through ALTER SYSTEM: ${JSON.stringify(value)}`);
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
  terminateOtherSessions: () =>
    rows<{ terminated: number }>(
      'terminate other sessions',
      `select count(pg_terminate_backend(pid))::int as terminated from pg_stat_activity
        where pid <> pg_backend_pid() and backend_type = 'client backend'`,
    ),
  /** A write that must reach disk: proves the upgraded cluster accepts writes. */
  writeProbe: () =>
    command('write probe', `create table if not exists pgscale_write_probe (at timestamptz); insert into pgscale_write_probe values (now()); drop table pgscale_write_probe`),
  outdatedExtensions: () =>
    rows<{ name: string; installed: string; available: string }>(
      'outdated extensions',
      `select name, installed_version as installed, default_version as available from pg_available_extensions
        where installed_version is not null and installed_version <> default_version order by 1`,
    ),
  /** Settings with where the running server took them from (command line, environment variable, configuration file, default). */
  settingSources: (names: readonly string[]) =>
    rows<{ name: string; setting: string; source: string }>('setting sources', 'select name, setting, source from pg_settings where name = any($1::text[]) order by name', [`{${names.join(',')}}`]),
  /** Databases pg_upgrade refuses: every database but template0 must allow connections. */
  databasesRefusingConnections: () =>
    rows<{ name: string }>('databases refusing connections', `select datname as name from pg_database where not datallowconn and datname <> 'template0' order by 1`),
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
    rows<{ row_count: string }>('table row count', `select (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %s', $1::regclass), false, true, '')))[1]::text as row_count`, [qualifiedName]),
  /** Whether amcheck is installed in the connected database. */
  amcheckInstalled: () => rows<{ installed: boolean }>('amcheck installed', `select exists (select 1 from pg_extension where extname = 'amcheck') as installed`),
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
    command('scratch write', `create table pgscale_upgrade_probe (at timestamptz); insert into pgscale_upgrade_probe values (now()); checkpoint; drop table pgscale_upgrade_probe`),
  /** Client sessions other than this one (after a termination they take a moment to go). */
  otherSessions: () => rows<{ count: number }>('other sessions', `select count(*)::int as count from pg_stat_activity where pid <> pg_backend_pid() and backend_type = 'client backend'`),
  /** Rules of pg_hba.conf the server could not parse (a reload keeps the old rules then). */
  hbaErrors: () => rows<{ line_number: number; error: string }>('pg_hba errors', 'select line_number, error from pg_hba_file_rules where error is not null'),
  systemIdentifier: () => rows<{ system_identifier: string }>('system identifier', 'select system_identifier::text as system_identifier from pg_control_system()'),
  serverVersionNum: () => rows<{ server_version_num: number; server_version: string }>('server version', `select current_setting('server_version_num')::int as server_version_num, current_setting('server_version') as server_version`),
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
};

export interface Db {
  /** Where it is connected, for messages and the audit log. */
  readonly target: string;
  query<Row>(statement: Statement<Row>): Promise<Row[]>;
  close(): Promise<void>;
}

function connectionError(target: string, err: unknown): PgscaleError {
  const msg = redact(err instanceof Error ? err.message : String(err));
  return new PgscaleError(`cannot connect to PostgreSQL at ${target}: ${msg}`, ExitCode.FailedNoChange, 'check the port, the user and PGPASSFILE / ~/.pgpass');
}

async function audited<T>(audit: AuditSink | undefined, target: string, st: Statement<unknown>, run: () => Promise<T[]>): Promise<T[]> {
  const started = performance.now();
  try {
    const result = await run();
    audit?.record({ kind: 'sql', target, sql: st.text, params: st.params.length, rows: result.length, durationMs: Math.round(performance.now() - started) });
    return result;
  } catch (e) {
    audit?.record({ kind: 'sql', target, sql: st.text, params: st.params.length, error: redact(String(e)), durationMs: Math.round(performance.now() - started) });
    throw e;
  }
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
    const client = new pg.Client({
      host: settings.host,
      port: settings.port,
      user: settings.user,
      database: settings.database ?? 'postgres',
      password: settings.password,
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

/** psql run as the cluster owner over the local socket: the root-on-the-host path (peer auth). */
export class PsqlDb implements Db {
  readonly target: string;
  private readonly literal = new pg.Client();

  constructor(
    private readonly runner: Runner,
    private readonly psql: string,
    private readonly settings: ConnectionSettings,
    private readonly owner: OsUser,
    private readonly audit?: AuditSink,
  ) {
    this.target = describeConnection(settings) + ` (psql as ${owner.name})`;
  }

  /** Our statements use $n only as parameters, never inside literals. */
  private inline(st: Statement<unknown>): string {
    return st.text.replace(/\$(\d+)/g, (_, n: string) => {
      const v = st.params[Number(n) - 1];
      if (v === null || v === undefined) return 'null';
      return typeof v === 'string' ? this.literal.escapeLiteral(v) : String(v);
    });
  }

  async query<Row>(st: Statement<Row>): Promise<Row[]> {
    const body = this.inline(st);
    const text = st.returnsRows ? `select coalesce(json_agg(q), '[]'::json) from (${body}) q` : body;
    return audited(this.audit, this.target, st, async () => {
      const res = await this.runner.run({
        program: this.psql,
        args: ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-f', '-'],
        env: { ...libpqEnvironment(this.settings), PGDATABASE: this.settings.database ?? 'postgres', PGAPPNAME: 'pgscale' },
        runAs: this.owner,
        input: text,
      });
      if (res.exitCode !== 0) {
        const msg = res.stderr.trim();
        if (/could not connect|connection to server/.test(msg)) throw connectionError(this.target, msg);
        throw new Error(`${st.name} failed: ${redact(msg)}`);
      }
      return st.returnsRows ? (JSON.parse(res.stdout.trim() || '[]') as Row[]) : [];
    });
  }

  async close(): Promise<void> {}
}
