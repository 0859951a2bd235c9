/**
 * "Nothing changed" evidence for the backup tests: a file tree snapshot (paths, types, sizes,
 * modes, mtimes) and a cluster snapshot over SQL (roles, databases, tables with row counts). Plus
 * the two tools those tests use to hold a cluster still and wait for it: a table lock held by an
 * open transaction (pg_dump waits on it, so a dump can be caught mid-way deterministically) and a
 * polling wait.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { setprivArgs, type TestCluster } from './testbed.js';

/** One line per entry under root (root included): "path type size mode mtime". Sorted. */
export function treeSnapshot(root: string): string[] {
  const out: string[] = [];
  const walk = (path: string) => {
    const st = lstatSync(path);
    const type = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFile() ? 'f' : 'o';
    // a directory's size is file-system bookkeeping; its mtime changes when entries come or go
    out.push(`${relative(root, path) || '.'} ${type} ${type === 'd' ? '-' : st.size} ${(st.mode & 0o7777).toString(8)} ${st.mtimeMs}`);
    if (type === 'd') for (const name of readdirSync(path).sort()) walk(join(path, name));
  };
  if (existsSync(root)) walk(root);
  return out.sort();
}

/** Every regular file under root (recursively), for greps. */
export function filesUnder(root: string): string[] {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  const walk = (path: string) => {
    const st = lstatSync(path);
    if (st.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
    else if (st.isFile()) out.push(path);
  };
  walk(root);
  return out;
}

/** Files under root whose bytes contain needle. */
export function filesContaining(root: string, needle: string): string[] {
  const bytes = Buffer.from(needle);
  return filesUnder(root).filter((f) => readFileSync(f).includes(bytes));
}

export interface ClusterSnapshot {
  roles: string[];
  databases: string[];
  /** database → "schema.table rows" lines */
  tables: Record<string, string[]>;
}

/** Roles, databases, and every user table's exact row count, through psql as the superuser. */
export async function clusterSnapshot(cluster: TestCluster): Promise<ClusterSnapshot> {
  const lines = (s: string) => s.split('\n').filter(Boolean);
  const roles = lines(await cluster.sql('select rolname from pg_roles order by 1'));
  const databases = lines(await cluster.sql('select datname from pg_database order by 1'));
  const tables: Record<string, string[]> = {};
  for (const db of databases.filter((d) => d !== 'template0')) {
    tables[db] = lines(
      await cluster.sql(
        `select format('%I.%I', n.nspname, c.relname) || ' ' ||
                (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'
          order by 1`,
        db,
      ),
    );
  }
  return { roles, databases, tables };
}

/** Polls until check() returns a truthy value; fails with what it was waiting for after timeoutMs. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 30_000, everyMs = 100): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface HeldLock {
  /** Ends the transaction (psql sees end of input), releasing the lock; idempotent. */
  release(): Promise<void>;
}

/**
 * Takes ACCESS EXCLUSIVE on a table in an open transaction and keeps it until release(): pg_dump
 * (which takes ACCESS SHARE on every table) waits there, mid-dump, for as long as the test wants.
 */
export async function holdTableLock(cluster: TestCluster, database: string, table: string): Promise<HeldLock> {
  const psql: ChildProcessWithoutNullStreams = spawn(
    'setpriv',
    setprivArgs(join(cluster.bindir, 'psql'), [
      '-X',
      '-q',
      '-At',
      '-v',
      'ON_ERROR_STOP=1',
      '-h',
      cluster.socketDir,
      '-p',
      String(cluster.port),
      '-U',
      cluster.superuser,
      '-d',
      database,
    ]),
    { cwd: '/', stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  psql.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  psql.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const closed = new Promise<void>((resolve) => psql.on('close', () => resolve()));
  psql.stdin.write(`begin;\nlock table ${table} in access exclusive mode;\nselect 'locked';\n`);
  let exited = false;
  void closed.then(() => (exited = true));
  try {
    await waitFor(
      `the lock on ${database}.${table}`,
      () => {
        if (exited && !stdout.includes('locked')) throw new Error(`psql holding the lock exited: ${stderr}`);
        return stdout.includes('locked');
      },
      20_000,
      20,
    );
  } catch (e) {
    psql.kill('SIGKILL');
    throw e;
  }
  let released: Promise<void> | undefined;
  return {
    release() {
      released ??= (psql.stdin.end(), closed);
      return released;
    },
  };
}

/** How many sessions wait for a lock right now (a dump stopped at a held table lock shows here). */
export async function lockWaiters(cluster: TestCluster): Promise<number> {
  return Number(await cluster.sql('select count(*) from pg_locks where not granted'));
}

/** The size of a file, or -1 when it does not exist. */
export function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return -1;
  }
}
