/**
 * A shared rich dataset for upgrade and move tests, and the checks that say nothing was lost:
 * per-table checksums of ordered contents (plus sequence, materialized view, large object, enum
 * and tablespace placement), and amcheck (bt_index_check with heapallindexed on every btree
 * index, verify_heapam on every table) on the result.
 *
 * Everything is deterministic (generate_series and md5, fixed timestamps), so a dataset loaded
 * twice checksums the same; the comparison that matters is before/after on one cluster.
 */
import type { TestCluster } from './testbed.js';

/** The database the dataset lives in (a second database besides postgres: upgrades carry every database). */
export const datasetDb = 'app';

/** Large-object oid the dataset creates (fixed, so it can be compared by oid). */
export const datasetLargeObject = 424242;

/**
 * postgresql.conf lines for a cluster of `version` that will be upgraded: pg_stat_statements
 * preloaded, plus settings a later major removed or renamed (the new server would refuse to
 * start with them), so the config migration has real work.
 */
export function datasetConf(version: number): string[] {
  const lines = ["shared_preload_libraries = 'pg_stat_statements'"];
  if (version <= 16) lines.push('old_snapshot_threshold = -1'); // removed in 17
  if (version <= 15) lines.push('vacuum_defer_cleanup_age = 0', "promote_trigger_file = ''"); // removed in 16
  if (version === 17) lines.push("extension_destdir = ''", "ssl_ecdh_curve = 'prime256v1'"); // Debian-only in 17 (gone in 18's build); renamed ssl_groups in 18
  return lines;
}

/** The settings of datasetConf(version) the new major no longer has, and what happens to each. */
export function removedInConf(oldVersion: number, newVersion: number): { name: string; fate: 'commented' | 'renamed'; newName?: string }[] {
  const out: { name: string; fate: 'commented' | 'renamed'; newName?: string }[] = [];
  if (oldVersion <= 16 && newVersion >= 17) out.push({ name: 'old_snapshot_threshold', fate: 'commented' });
  if (oldVersion <= 15 && newVersion >= 16)
    out.push({ name: 'vacuum_defer_cleanup_age', fate: 'commented' }, { name: 'promote_trigger_file', fate: 'commented' });
  if (oldVersion === 17 && newVersion >= 18)
    out.push({ name: 'extension_destdir', fate: 'commented' }, { name: 'ssl_ecdh_curve', fate: 'renamed', newName: 'ssl_groups' });
  return out;
}

export interface DatasetOptions {
  /** Rows in the main table (default 20 000). */
  rows?: number;
  /** Rows with ~24 kB of incompressible text each: stored out of line in TOAST (default 200). */
  toastRows?: number;
  /** A directory (owned by the server account, e.g. on a loop volume) for a user tablespace. */
  tablespaceDir?: string;
  /** pgcrypto and pg_stat_statements (the latter needs datasetConf's preload line). Default true. */
  extensions?: boolean;
}

/** Loads the dataset into database `app` (created here). */
export async function loadDataset(c: TestCluster, o: DatasetOptions = {}): Promise<void> {
  const rows = o.rows ?? 20_000;
  const toastRows = o.toastRows ?? 200;
  const extensions = o.extensions ?? true;
  await c.sql(`create database ${datasetDb}`);
  if (o.tablespaceDir) await c.sql(`create tablespace cold location '${o.tablespaceDir}'`);
  await c.sql(
    `
    ${extensions ? 'create extension pgcrypto; create extension pg_stat_statements;' : ''}
    create type mood as enum ('sad', 'ok', 'happy');
    create sequence order_no;
    select setval('order_no', 123456, true);

    create table items (
      id bigint primary key,
      name text not null,
      price numeric(12,2),
      created timestamptz not null,
      day date,
      tags text[],
      attrs jsonb,
      status mood,
      flag boolean,
      ratio double precision,
      uid uuid,
      payload bytea
    );
    insert into items
    select g,
           'item-' || md5(g::text),
           (g % 10000) / 7.0,
           timestamptz '2024-01-01 00:00:00+00' + g * interval '37 seconds',
           date '2020-01-01' + (g % 1500),
           array['t' || (g % 13), 't' || (g % 7)],
           jsonb_build_object('k', g % 100, 'name', md5(g::text), 'nested', jsonb_build_object('a', g % 3)),
           (array['sad','ok','happy']::mood[])[1 + g % 3],
           g % 2 = 0,
           g / 3.0,
           md5(g::text)::uuid,
           ${extensions ? "digest(g::text, 'sha256')" : "decode(md5(g::text), 'hex')"}
      from generate_series(1, ${rows}) g;
    create index items_created on items (created);
    create index items_name on items (name);
    create index items_status_day on items (status, day);
    create index items_attrs on items using gin (attrs);
    create index items_tags on items using gin (tags);

    -- large incompressible values: out of line in the TOAST table
    create table docs (id int primary key, title text, body text);
    alter table docs alter column body set storage external;
    insert into docs
    select g, 'doc ' || g, (select string_agg(md5(g::text || ':' || i), '') from generate_series(1, 750) i)
      from generate_series(1, ${toastRows}) g;
    create index docs_title on docs (title);

    create table orders (id bigint primary key default nextval('order_no'), item_id bigint references items, qty int, note text);
    insert into orders (item_id, qty, note) select 1 + (g * 7) % ${rows}, g % 5 + 1, case when g % 4 = 0 then null else 'n' || g end from generate_series(1, ${Math.max(100, Math.floor(rows / 4))}) g;

    create materialized view item_summary as
      select status, count(*) as n, sum(price) as total, min(created) as first from items group by status;
    create unique index item_summary_status on item_summary (status);

    select lo_from_bytea(${datasetLargeObject}, convert_to(repeat('large object payload ', 5000), 'UTF8'));
    ${
      o.tablespaceDir
        ? `create table archive (id int primary key using index tablespace cold, note text) tablespace cold;
    insert into archive select g, repeat(md5(g::text), 4) from generate_series(1, ${Math.max(100, Math.floor(rows / 10))}) g;
    create index archive_note on archive (note) tablespace cold;`
        : ''
    }
    analyze;
  `,
    datasetDb,
  );
}

/** A small dataset (fast to load and to upgrade): same shape, fewer rows, no tablespace. */
export const smallDataset: DatasetOptions = { rows: 2000, toastRows: 20 };

export type Checksums = Record<string, string>;

/**
 * What must be identical before and after: md5 of every user table's and materialized view's rows
 * in a fixed order, sequence state, large object contents, enum labels in order, and which
 * relations live in which tablespace.
 */
export async function tableChecksums(c: TestCluster, db = datasetDb): Promise<Checksums> {
  const relations = (
    await c.sql(
      `select format('%I.%I', n.nspname, r.relname) || '|' || r.relkind::text
       from pg_class r join pg_namespace n on n.oid = r.relnamespace
      where r.relkind in ('r', 'm') and r.relpersistence = 'p'
        and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'
        and r.relname <> 'pgscale_write_probe'
      order by 1`,
      db,
    )
  )
    .split('\n')
    .filter(Boolean);
  const out: Checksums = {};
  const queries = relations.map((line) => {
    const [name, kind] = line.split('|') as [string, string];
    return `select '${kind === 'm' ? 'matview' : 'table'}:${name}' || '=' || count(*) || ':' || md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from ${name} t`;
  });
  queries.push(
    `select 'sequence:' || sequencename || '=' || coalesce(last_value::text, 'null') from pg_sequences where schemaname not in ('pg_catalog', 'information_schema')`,
    `select 'largeobject:' || oid || '=' || md5(lo_get(oid)) from pg_largeobject_metadata`,
    `select 'enum:' || t.typname || '=' || string_agg(e.enumlabel, ',' order by e.enumsortorder) from pg_enum e join pg_type t on t.oid = e.enumtypid group by t.typname`,
    `select 'tablespace:' || c.relname || '=' || coalesce(ts.spcname, 'default') from pg_class c join pg_namespace n on n.oid = c.relnamespace left join pg_tablespace ts on ts.oid = c.reltablespace
      where n.nspname = 'public' and c.relkind in ('r', 'i', 'm')`,
    `select 'extension:' || extname || '=present' from pg_extension where extname <> 'amcheck'`,
  );
  const lines = (await c.sql(queries.join(';\n') + ';', db)).split('\n').filter(Boolean);
  for (const l of lines) {
    const i = l.indexOf('=');
    out[l.slice(0, i)] = l.slice(i + 1);
  }
  return out;
}

export interface AmcheckResult {
  btreeIndexes: number;
  relations: number;
  errors: string[];
}

/** amcheck on every btree index (heapallindexed) and verify_heapam on every table, toast table and matview. */
export async function amcheckClean(c: TestCluster, db = datasetDb): Promise<AmcheckResult> {
  await c.sql('create extension if not exists amcheck', db);
  const indexes = Number(
    await c.sql(
      `select count(*) from pg_index i join pg_class c on c.oid = i.indexrelid join pg_am am on am.oid = c.relam
      where am.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid and i.indisready`,
      db,
    ),
  );
  // one psql session: a temporary function turns each failing check into a row
  const report = await c.sql(
    `create function pg_temp.index_check(idx regclass) returns text language plpgsql as $$
     begin
       perform bt_index_check(idx, true);
       return null;
     exception when others then
       return idx::text || ': ' || sqlerrm;
     end $$;
     select 'index|' || e from (
       select pg_temp.index_check(c.oid) as e
         from pg_index i join pg_class c on c.oid = i.indexrelid join pg_am am on am.oid = c.relam
        where am.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid and i.indisready
     ) x where e is not null;
     select 'heap|' || c.relname || ' block ' || v.blkno || ': ' || v.msg
       from pg_class c cross join lateral verify_heapam(c.oid, on_error_stop => false) v
      where c.relkind in ('r', 'm', 't') and c.relpersistence <> 't';`,
    db,
  );
  const relations = Number(await c.sql(`select count(*) from pg_class where relkind in ('r', 'm', 't') and relpersistence <> 't'`, db));
  const errors = report.split('\n').filter(Boolean);
  return { btreeIndexes: indexes, relations, errors };
}
