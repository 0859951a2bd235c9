/**
 * RHEL/PGDG clusters: `postgresqlN-server` installs /usr/pgsql-N/bin and the unit
 * postgresql-N.service, whose `Environment=PGDATA=` (default /var/lib/pgsql/N/data/, often moved by
 * a drop-in made with `systemctl edit`) names the data directory. Found by reading unit files as
 * systemd would: a unit in /etc replaces one of the same name under /usr/lib, drop-ins
 * (NAME.service.d/*.conf, all directories, in file-name order) come after it, the last assignment wins.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface RhelClusterLayout {
  kind: 'rhel';
  version: number;
  /** The systemd unit that runs the cluster, e.g. postgresql-16.service; undefined when no unit names its data directory. */
  service: string | undefined;
  /** The unit file and drop-ins that set its PGDATA, in the order read. */
  unitFiles: string[];
}

/** The unit directories, highest precedence first. */
export const defaultUnitDirs = ['/etc/systemd/system', '/run/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system'];

const list = (dir: string) => readdir(dir).catch(() => [] as string[]);
const read = (path: string) => readFile(path, 'utf8').catch(() => undefined);

/** Splits an Environment= value into its assignments, honouring double and single quotes. */
export function environmentAssignments(value: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of value.matchAll(/(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+))/g)) {
    const word = m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3]!);
    const eq = word.indexOf('=');
    if (eq > 0) out.set(word.slice(0, eq), word.slice(eq + 1));
  }
  return out;
}

/**
 * PGDATA as a sequence of unit file texts sets it (main unit first, then drop-ins): the last
 * `Environment=` assignment in a [Service] section wins; an empty `Environment=` resets the list.
 */
export function pgdataFromUnitTexts(texts: readonly string[]): string | undefined {
  let pgdata: string | undefined;
  for (const text of texts) {
    let section = '';
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line.startsWith('[')) section = line;
      if (section !== '[Service]' || line.startsWith('#') || line.startsWith(';')) continue;
      const m = /^Environment\s*=\s*(.*)$/.exec(line);
      if (!m) continue;
      if (m[1]!.trim() === '') pgdata = undefined;
      else pgdata = environmentAssignments(m[1]!).get('PGDATA') ?? pgdata;
    }
  }
  return pgdata;
}

export interface RhelService {
  version: number;
  service: string;
  dataDir: string;
  unitFiles: string[];
}

/** Every postgresql-N.service whose unit files set PGDATA. */
export async function rhelServices(unitDirs: readonly string[] = defaultUnitDirs): Promise<RhelService[]> {
  const out: RhelService[] = [];
  const seen = new Set<string>();
  for (const dir of unitDirs) {
    for (const file of (await list(dir)).sort()) {
      const m = /^postgresql-(\d+)\.service$/.exec(file);
      if (!m || seen.has(file)) continue;
      seen.add(file); // the first directory holding it wins
      const unitFiles = [join(dir, file)];
      const dropIns = new Map<string, string>();
      for (const d of [...unitDirs].reverse()) {
        for (const conf of await list(join(d, `${file}.d`))) if (conf.endsWith('.conf')) dropIns.set(conf, join(d, `${file}.d`, conf));
      }
      unitFiles.push(...[...dropIns.keys()].sort().map((k) => dropIns.get(k)!));
      const texts = (await Promise.all(unitFiles.map(read))).filter((t): t is string => t !== undefined);
      const dataDir = pgdataFromUnitTexts(texts);
      if (dataDir) out.push({ version: Number(m[1]), service: file, dataDir: dataDir.replace(/(.)\/+$/, '$1'), unitFiles });
    }
  }
  return out;
}

/** The default data directory of the PGDG unit for a major version. */
export const pgdgDataDir = (major: number) => `/var/lib/pgsql/${major}/data`;

/**
 * What a DBA does with systemd after pgscale upgraded a RHEL/PGDG cluster: pgscale starts the new
 * server with pg_ctl, so systemd has to be handed the new cluster and told to leave the old one.
 */
export function rhelUpgradeNextSteps(old: RhelClusterLayout, next: { major: number; dataDir: string; bindir: string }): string[] {
  const unit = `postgresql-${next.major}.service`;
  return [
    ...(old.service ? [`systemctl disable ${old.service} (it would start the old cluster at the next boot)`] : []),
    next.dataDir.replace(/\/+$/, '') === pgdgDataDir(next.major)
      ? `${unit} (package postgresql${next.major}-server) already points at ${next.dataDir}`
      : `point ${unit} (package postgresql${next.major}-server) at the new data directory: systemctl edit ${unit}, then under [Service] Environment=PGDATA=${next.dataDir}`,
    `hand the new cluster to systemd: ${next.bindir}/pg_ctl -D ${next.dataDir} stop (as the owner), then systemctl enable --now ${unit}`,
  ];
}
