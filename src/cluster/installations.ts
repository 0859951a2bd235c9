/** PostgreSQL installations (bindirs) on this host: Debian, RHEL/PGDG, and explicit --bindir. */
import { accessSync, constants, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { badInput } from '../errors.js';
import type { Runner } from '../runner.js';
import { versionLookup } from './versionCache.js';

export type InstallationLayout = 'debian' | 'rhel' | 'explicit';

export interface Installation {
  /** Major version: 16, 17… */
  major: number;
  /** As `postgres -V` prints it, e.g. "17.6 (Debian 17.6-1.pgdg120+1)". */
  version: string;
  bindir: string;
  layout: InstallationLayout;
}

export interface InstallationRoots {
  /** Debian: DIR/N/bin (default /usr/lib/postgresql). */
  debian: string;
  /** RHEL/PGDG: PREFIX-N/bin (default /usr/pgsql). */
  rhelPrefix: string;
}

export const defaultInstallationRoots: InstallationRoots = { debian: '/usr/lib/postgresql', rhelPrefix: '/usr/pgsql' };

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** Parses "postgres (PostgreSQL) 17.6 (Debian …)" into its major and full version. */
export function parsePostgresVersion(output: string): { major: number; version: string } | undefined {
  const m = /\(PostgreSQL\)\s+((\d+)(?:\.\d+)?[^\n]*)/.exec(output);
  if (!m) return undefined;
  return { major: Number(m[2]), version: m[1]!.trim() };
}

export async function probeBindir(runner: Runner, bindir: string, layout: InstallationLayout): Promise<Installation> {
  const postgres = join(bindir, 'postgres');
  if (!isExecutable(postgres)) {
    throw badInput(`bindir ${bindir} has no executable "postgres" program`, 'point the bindir flag at the directory holding postgres, pg_ctl and initdb');
  }
  const versions = versionLookup(postgres);
  const known = versions.cached === undefined ? undefined : parsePostgresVersion(versions.cached);
  if (known) return { ...known, bindir, layout };
  const res = await runner.run({ program: postgres, args: ['-V'] });
  const parsed = res.exitCode === 0 ? parsePostgresVersion(res.stdout) : undefined;
  if (!parsed) throw badInput(`${postgres} -V did not print a PostgreSQL version: ${(res.stderr || res.stdout).trim().slice(0, 200)}`);
  versions.remember(res.stdout);
  return { ...parsed, bindir, layout };
}

function candidateBindirs(roots: InstallationRoots): { bindir: string; layout: InstallationLayout }[] {
  const out: { bindir: string; layout: InstallationLayout }[] = [];
  try {
    for (const v of readdirSync(roots.debian)) if (/^\d+(\.\d+)?$/.test(v)) out.push({ bindir: join(roots.debian, v, 'bin'), layout: 'debian' });
  } catch {
    /* no Debian layout */
  }
  const slash = roots.rhelPrefix.lastIndexOf('/');
  const parent = roots.rhelPrefix.slice(0, slash) || '/';
  const stem = roots.rhelPrefix.slice(slash + 1);
  try {
    for (const d of readdirSync(parent)) if (new RegExp(`^${stem}-\\d+$`).test(d)) out.push({ bindir: join(parent, d, 'bin'), layout: 'rhel' });
  } catch {
    /* no RHEL layout */
  }
  return out.filter((c) => isExecutable(join(c.bindir, 'postgres')));
}

/** Every installation found, newest major first; explicit bindirs first within a major. */
export async function findInstallations(runner: Runner, explicit: readonly string[] = [], roots = defaultInstallationRoots): Promise<Installation[]> {
  const candidates = [
    ...explicit.map((bindir) => ({ bindir, layout: 'explicit' as const })),
    ...candidateBindirs(roots).filter((c) => !explicit.includes(c.bindir)),
  ];
  const found = await Promise.all(candidates.map((c) => probeBindir(runner, c.bindir, c.layout)));
  return found.sort((a, b) => b.major - a.major);
}
