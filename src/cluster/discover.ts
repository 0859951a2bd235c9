/** Finds clusters: explicit --pgdata, PGDATA, Debian and RHEL layouts, and running postmasters. */
import { readdir, readFile, readlink, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { lastValues, readConfigTree } from '../config/parse.js';
import type { ClusterLayout } from './inspect.js';
import { defaultUnitDirs, rhelServices } from './rhel.js';

export interface ClusterCandidate {
  dataDir: string;
  foundBy: string;
  layout?: ClusterLayout;
}

export interface DiscoveryRoots {
  debianConf: string;
  debianData: string;
  rhelData: string;
  /** systemd unit directories, highest precedence first (RHEL/PGDG postgresql-N.service). */
  unitDirs: readonly string[];
  proc: string;
}

export const defaultDiscoveryRoots: DiscoveryRoots = {
  debianConf: '/etc/postgresql',
  debianData: '/var/lib/postgresql',
  rhelData: '/var/lib/pgsql',
  unitDirs: defaultUnitDirs,
  proc: '/proc',
};

const list = (dir: string) => readdir(dir).catch(() => [] as string[]);

async function debianClusters(roots: DiscoveryRoots): Promise<ClusterCandidate[]> {
  const out: ClusterCandidate[] = [];
  for (const version of await list(roots.debianConf)) {
    if (!/^\d+$/.test(version)) continue;
    for (const name of await list(join(roots.debianConf, version))) {
      const confDir = join(roots.debianConf, version, name);
      let dataDir = join(roots.debianData, version, name);
      try {
        const dd = lastValues(readConfigTree(join(confDir, 'postgresql.conf'))).get('data_directory');
        if (dd) dataDir = dd.value;
      } catch {
        continue; // not a cluster config directory
      }
      const startMode = (await readFile(join(confDir, 'start.conf'), 'utf8').catch(() => ''))
        .split('\n')
        .map((l) => l.replace(/#.*/, '').trim())
        .find(Boolean);
      out.push({ dataDir, foundBy: 'debian', layout: { kind: 'debian', version: Number(version), name, confDir, startMode } });
    }
  }
  return out;
}

/** Data directories named by postgresql-N.service units, and the PGDG default /var/lib/pgsql/N/data. */
async function rhelClusters(roots: DiscoveryRoots): Promise<ClusterCandidate[]> {
  const out: ClusterCandidate[] = [];
  for (const s of await rhelServices(roots.unitDirs)) {
    out.push({ dataDir: s.dataDir, foundBy: 'rhel', layout: { kind: 'rhel', version: s.version, service: s.service, unitFiles: s.unitFiles } });
  }
  for (const version of await list(roots.rhelData)) {
    const dataDir = join(roots.rhelData, version, 'data');
    if (/^\d+$/.test(version) && !out.some((c) => c.dataDir === dataDir)) {
      out.push({ dataDir, foundBy: 'rhel', layout: { kind: 'rhel', version: Number(version), service: undefined, unitFiles: [] } });
    }
  }
  return out;
}

/** Postmasters are postgres processes whose parent is not postgres; the postmaster's cwd is its data dir. */
async function runningPostmasters(roots: DiscoveryRoots): Promise<ClusterCandidate[]> {
  const out: ClusterCandidate[] = [];
  for (const pid of await list(roots.proc)) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = await readFile(join(roots.proc, pid, 'stat'), 'utf8').catch(() => '');
    const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(stat);
    if (!m || (m[1] !== 'postgres' && m[1] !== 'postmaster')) continue;
    const parent = await readFile(join(roots.proc, m[2]!, 'comm'), 'utf8').catch(() => '');
    if (parent.trim() === 'postgres' || parent.trim() === 'postmaster') continue;
    const cwd = await readlink(join(roots.proc, pid, 'cwd')).catch(() => undefined);
    if (cwd) out.push({ dataDir: cwd, foundBy: 'postmaster' });
  }
  return out;
}

/** The port every postgresql-common cluster is configured for (5432 when its files set none). */
export async function debianClusterPorts(roots = defaultDiscoveryRoots): Promise<number[]> {
  return (await debianClusters(roots)).map((c) => {
    try {
      const confDir = c.layout?.kind === 'debian' ? c.layout.confDir : '';
      return Number(lastValues(readConfigTree(join(confDir, 'postgresql.conf'))).get('port')?.value ?? 5432);
    } catch {
      return 5432;
    }
  });
}

/** The packaging layout (Debian, RHEL/PGDG) a data directory given by path belongs to, if any. */
export async function layoutOf(dataDir: string, roots = defaultDiscoveryRoots): Promise<ClusterLayout | undefined> {
  const real = (p: string) => realpath(p).catch(() => p.replace(/\/+$/, ''));
  const target = await real(dataDir);
  for (const c of [...(await debianClusters(roots)), ...(await rhelClusters(roots))]) {
    if ((await real(c.dataDir)) === target) return c.layout;
  }
  return undefined;
}

/** Every candidate once (by data dir), keeping each way it was found. */
export async function discoverClusters(
  explicit: readonly string[],
  env: NodeJS.ProcessEnv,
  roots = defaultDiscoveryRoots,
): Promise<{ candidate: ClusterCandidate; foundBy: string[] }[]> {
  const all: ClusterCandidate[] = [
    ...explicit.map((dataDir) => ({ dataDir, foundBy: 'flag' })),
    ...(env.PGDATA ? [{ dataDir: env.PGDATA, foundBy: 'PGDATA' }] : []),
    ...(await debianClusters(roots)),
    ...(await rhelClusters(roots)),
    ...(await runningPostmasters(roots)),
  ];
  const byDir = new Map<string, { candidate: ClusterCandidate; foundBy: string[] }>();
  for (const c of all) {
    const key = c.dataDir.replace(/\/+$/, '');
    const seen = byDir.get(key);
    if (seen) {
      seen.foundBy.push(c.foundBy);
      seen.candidate.layout ??= c.layout;
    } else byDir.set(key, { candidate: { ...c, dataDir: key }, foundBy: [c.foundBy] });
  }
  return [...byDir.values()];
}
