/**
 * Pure rules of the upgrade: what the plan judges from gathered facts (binaries' versions, paths,
 * writability, databases pg_upgrade refuses), how the new server's identity follows the old one's,
 * and the pg_hba.conf block that keeps clients out while the old cluster is stopped. No I/O here:
 * the steps gather, these judge, unit tests cover them.
 */
import { isInside as inside } from '../files.js';
import { check, type CheckResult } from '../pipeline/step.js';
import { optionValue, type ServerIdentity } from '../server/postgres.js';

/** Settings that name the old cluster's files: the carried configuration says where the new ones are. */
const fileSettings = ['config_file', 'data_directory', 'hba_file', 'ident_file', 'external_pid_file'];

/** Drops `-c name=value` / `--name=value` options for these settings from a postmaster command line. */
export function withoutSettings(options: readonly string[], names: readonly string[]): string[] {
  const out: string[] = [];
  const named = (setting: string) => names.some((n) => setting.startsWith(`${n}=`) || setting.startsWith(`${n.replace(/_/g, '-')}=`));
  for (let i = 0; i < options.length; i++) {
    const a = options[i]!;
    if ((a === '-c' || a === '--c') && named(options[i + 1] ?? '')) {
      i++;
      continue;
    }
    if ((a.startsWith('-c') && a.length > 2 && named(a.slice(2))) || (a.startsWith('--') && named(a.slice(2)))) continue;
    out.push(a);
  }
  return out;
}

/**
 * The new server's identity: the old one's options (port, sockets, listen_addresses and anything
 * else on its command line, PGPORT made explicit), without the options naming the old cluster's
 * files: the new cluster reads the configuration carried into its own data directory, or into its
 * own /etc/postgresql/V/NAME (postgresql-common), and is run by its own manager.
 */
export function carriedIdentity(old: ServerIdentity, n: Pick<ServerIdentity, 'bindir' | 'dataDir' | 'log' | 'configFile' | 'manager'>): ServerIdentity {
  const options = withoutSettings(old.options, fileSettings);
  if (old.origins.port === 'environment (PGPORT)' && optionValue(options, 'port') === undefined) options.push('-p', String(old.port));
  return { ...old, ...n, configDir: null, options };
}

/** Where the new server will listen and why, for the plan. */
export function listeningOrigin(id: ServerIdentity): string {
  return `port ${id.port} from ${id.origins.port}, sockets ${id.socketDirs.join(', ') || 'none'} from ${id.origins.sockets}, listen_addresses '${id.listenAddresses}' from ${id.origins.listen}`;
}

export const blockMarker = '# pgscale-upgrade: connection block';

/**
 * pg_hba.conf with new connections refused, pgscale's own first: rules are matched top-down, so
 * the lines go first. Existing sessions are not affected (they are terminated next).
 */
export function blockedHba(original: string, own: { user: string; local: boolean; peer: boolean }): string {
  const user = `"${own.user.replace(/"/g, '')}"`;
  const lines = [
    own.local
      ? `local all ${user} ${own.peer ? 'peer' : 'scram-sha-256'}\t${blockMarker} (pgscale itself)`
      : `host all ${user} all scram-sha-256\t${blockMarker} (pgscale itself)`,
    `local all all reject\t${blockMarker}`,
    `host all all all reject\t${blockMarker}`,
  ];
  return `${lines.join('\n')}\n${withoutBlock(original)}`;
}

/** The file without pgscale's block lines (a block left by a killed run is never carried over). */
export function withoutBlock(text: string): string {
  return text
    .split('\n')
    .filter((l) => !l.includes(blockMarker))
    .join('\n');
}

/** Facts gathered before any change; judged by planChecks. */
export interface PlanFacts {
  oldDataDir: string;
  pgVersion: string;
  oldMajor: number;
  newMajor: number;
  newDataDir: string;
  waldir: string | null;
  tablespaces: readonly string[];
  /** `postgres -V` majors of the two bindirs (undefined: no answer). */
  oldBinaryMajor: number | undefined;
  newBinaryMajor: number | undefined;
  /** The nearest existing directory of the new data directory, and whether the owner may create entries there. */
  newParent: { path: string; ownerCanWrite: boolean; willBeCreatedByPgscale: boolean };
  owner: string;
  /** Databases other than template0 with datallowconn = false. */
  refusingConnections: readonly string[];
  /** Columns of reg* types in user tables that pg_upgrade refuses (schema.table.column type). */
  regColumns: readonly string[];
}

export function planChecks(f: PlanFacts): CheckResult[] {
  const out: CheckResult[] = [];
  const pgVersion = Number(f.pgVersion);
  if (f.oldBinaryMajor === undefined) out.push(check.fail('old binaries version', "the old bindir's postgres -V gave no version"));
  else if (f.oldBinaryMajor !== pgVersion)
    out.push(
      check.fail(
        'old binaries version',
        `the old bindir holds PostgreSQL ${f.oldBinaryMajor}, but ${f.oldDataDir}/PG_VERSION says ${f.pgVersion}: pass the --old-bindir of PostgreSQL ${f.pgVersion}`,
      ),
    );
  else out.push(check.pass('old binaries version', `PostgreSQL ${f.oldBinaryMajor}, as PG_VERSION`));
  if (f.newBinaryMajor === undefined) out.push(check.fail('new binaries version', "the new bindir's postgres -V gave no version"));
  else if (f.newBinaryMajor !== f.newMajor)
    out.push(check.fail('new binaries version', `the new bindir holds PostgreSQL ${f.newBinaryMajor}, not ${f.newMajor}`));
  else out.push(check.pass('new binaries version', `PostgreSQL ${f.newBinaryMajor}`));

  const containment: string[] = [];
  if (inside(f.newDataDir, f.oldDataDir)) containment.push(`the new data directory ${f.newDataDir} is inside the old one ${f.oldDataDir}`);
  if (inside(f.oldDataDir, f.newDataDir)) containment.push(`the old data directory ${f.oldDataDir} is inside the new one ${f.newDataDir}`);
  for (const ts of f.tablespaces) if (inside(f.newDataDir, ts)) containment.push(`the new data directory is inside the tablespace ${ts}`);
  if (f.waldir) {
    for (const [what, dir] of [
      ['old', f.oldDataDir],
      ['new', f.newDataDir],
    ] as const) {
      if (inside(f.waldir, dir) || inside(dir, f.waldir)) containment.push(`the WAL directory ${f.waldir} and the ${what} data directory ${dir} overlap`);
    }
  }
  out.push(
    containment.length
      ? check.fail('separate directories', `${containment.join('; ')}: choose a directory beside the old data directory`)
      : check.pass('separate directories', 'the new data directory, WAL directory and old cluster do not contain one another'),
  );

  const np = f.newParent;
  out.push(
    np.ownerCanWrite || np.willBeCreatedByPgscale
      ? check.pass(
          'new data directory writable',
          np.willBeCreatedByPgscale
            ? `pgscale creates the missing directories under ${np.path} for ${f.owner}`
            : `${f.owner} may create ${f.newDataDir} in ${np.path}`,
        )
      : check.fail(
          'new data directory writable',
          `${f.owner} (the cluster owner, who runs initdb) cannot create entries in ${np.path}: make it writable for ${f.owner}, or choose another --new-pgdata`,
        ),
  );

  out.push(
    f.refusingConnections.length
      ? check.fail(
          'databases allow connections',
          `${f.refusingConnections.join(', ')} ${f.refusingConnections.length === 1 ? 'has' : 'have'} datallowconn = false, which pg_upgrade refuses: ALTER DATABASE … WITH ALLOW_CONNECTIONS true (set it back afterwards), or drop ${f.refusingConnections.length === 1 ? 'it' : 'them'}`,
        )
      : check.pass('databases allow connections', 'every database but template0 allows connections'),
  );
  out.push(
    f.regColumns.length
      ? check.fail(
          'reg* columns',
          `${f.regColumns.slice(0, 5).join(', ')}${f.regColumns.length > 5 ? ` and ${f.regColumns.length - 5} more` : ''}: pg_upgrade cannot carry columns of these OID-referencing types; change them to text or oid first`,
        )
      : check.pass('reg* columns', 'no user table stores OID-referencing reg* types'),
  );
  return out;
}

/** Catalog facts per database: relation → "kind relfilenode main fsm vm init". */
export interface CatalogFacts {
  [db: string]: Record<string, string>;
}

/** The differences between two catalog snapshots, for a message (empty when they match). */
export function catalogDifferences(before: CatalogFacts, after: CatalogFacts): string[] {
  const diffs: string[] = [];
  for (const [dbname, rels] of Object.entries(before)) {
    const now = after[dbname];
    if (!now) {
      diffs.push(`database ${dbname} is missing`);
      continue;
    }
    for (const [rel, fact] of Object.entries(rels))
      if (now[rel] !== fact) diffs.push(`${dbname}.${rel}: ${fact} before, ${now[rel] ?? 'missing'} after (kind relfilenode main fsm vm init)`);
    for (const rel of Object.keys(now)) if (!(rel in rels)) diffs.push(`${dbname}.${rel}: new`);
  }
  return diffs;
}

/** A WAL location ("16/B374D848") as bytes since 0/0, and back. */
export const lsnBytes = (lsn: string): bigint => {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
};
export const lsnOf = (bytes: bigint): string => `${(bytes >> 32n).toString(16).toUpperCase()}/${(bytes & 0xffffffffn).toString(16).toUpperCase()}`;

/** When the new cluster let clients in, and its WAL position then (absent when a kill came before it was read). */
export interface OpenedFacts {
  at: string;
  walBytesAtOpen?: string;
}

/**
 * What rolling back loses once the new cluster has served clients: every write it acknowledged
 * since it opened, said plainly with the WAL written since (its position now: undefined when it
 * cannot be read). The new data directory is kept (moved aside), never deleted.
 */
export function writesSinceOpen(opened: OpenedFacts, walBytesNow: bigint | undefined, n: { major: number; oldMajor: number; keptAs: string }): string {
  const atOpen = opened.walBytesAtOpen === undefined ? undefined : BigInt(opened.walBytesAtOpen);
  const wal =
    atOpen === undefined
      ? `WAL position at open not recorded${walBytesNow === undefined ? '' : `; now ${lsnOf(walBytesNow)}`}`
      : walBytesNow === undefined
        ? `WAL position at open ${lsnOf(atOpen)}; the current one could not be read`
        : `WAL at open ${lsnOf(atOpen)}, now ${lsnOf(walBytesNow)}: ${walBytesNow - atOpen} bytes written since`;
  return (
    `the new ${n.major} cluster has been open to clients since ${opened.at} (${wal}): writes made on it since it opened are NOT in the old ${n.oldMajor} cluster, ` +
    `and clients that wrote there will find them gone. Its data directory is kept, moved aside to ${n.keptAs}-<time> (0700), not deleted`
  );
}

/** The postgresql.conf a start of this server reads: its configuration directory's, its config_file, else its data directory's. */
export const restartConfigFile = (id: ServerIdentity): string =>
  id.configDir ? `${id.configDir}/postgresql.conf` : (id.configFile ?? `${id.dataDir}/postgresql.conf`);

/**
 * The old server is started again by pg_upgrade and by a rollback exactly as pgscale knows it ran:
 * when that start would find no postgresql.conf (a relative -D naming a configuration directory, a
 * config_file pgscale cannot see), it would fail in downtime; the plan refuses it instead.
 */
export function restartConfigCheck(id: ServerIdentity, file: string, exists: boolean): CheckResult {
  return exists
    ? check.pass(
        'old server configuration',
        `started again (pg_upgrade, rollback) with ${file}${id.configDir ? ` (-D ${id.configDir}, its configuration directory)` : ''}`,
      )
    : check.fail(
        'old server configuration',
        `a start of the old server with what pgscale knows of it (-D ${id.configDir ?? id.dataDir}${id.configFile && !id.configDir ? `, config_file ${id.configFile}` : ''}) would find no ${file}: pg_upgrade and a rollback would fail during downtime`,
        'restart the old server with an absolute -D (its configuration directory) or -c config_file=ABSOLUTE_PATH, then plan again',
      );
}
