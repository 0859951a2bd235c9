/**
 * Upgrading a postgresql-common cluster as pg_upgradecluster does: the new major's cluster of the
 * same name in /etc/postgresql/NEW/NAME (data under /var/lib/postgresql/NEW/NAME), the old port
 * handed to it, the old cluster moved to a free port with start.conf manual, so `pg_lsclusters`,
 * pg_ctlcluster and the boot scripts see the truth. Pure rules: the steps gather and write.
 */
import { join } from 'node:path';
import { parseConfigText } from '../config/parse.js';
import type { JsonObject } from '../pipeline/step.js';
import type { SettingOrigin } from '../server/postgres.js';
import { applyEdits } from '../tune/edits.js';

export const DEBIAN_CONF_ROOT = '/etc/postgresql';
export const DEBIAN_DATA_ROOT = '/var/lib/postgresql';

/** The files of a cluster directory besides the configuration, carried to the new cluster as they are. */
export const CLUSTER_FILES = ['start.conf', 'pg_ctl.conf', 'environment'];

/** What the upgrade of a postgresql-common cluster does besides the data: plain data in the plan. */
export interface DebianUpgrade extends JsonObject {
  cluster: string;
  oldVersion: number;
  newVersion: number;
  oldConfDir: string;
  newConfDir: string;
  /** The port the new cluster takes: the old one's. */
  port: number;
  /** The port the old cluster moves to. */
  oldClusterPort: number;
}

/** Where the new major's cluster of the same name lives: /etc/postgresql/17/main and /var/lib/postgresql/17/main. */
export function newClusterPaths(cluster: string, newVersion: number, roots = { conf: DEBIAN_CONF_ROOT, data: DEBIAN_DATA_ROOT }) {
  return { confDir: join(roots.conf, String(newVersion), cluster), dataDir: join(roots.data, String(newVersion), cluster) };
}

/** The lowest port from `from` up that is not taken (pg_createcluster's rule: no cluster configured for it, nothing listening). */
export function nextFreePort(taken: ReadonlySet<number>, from = 5432): number {
  let port = from;
  while (taken.has(port)) port++;
  if (port > 65535) throw new Error(`no free port from ${from} up`);
  return port;
}

/** postgresql.conf with `port` set: its last active port line rewritten (earlier ones win nothing), else appended. */
export function withPort(text: string, file: string, port: number, comment: string): string {
  const lines = parseConfigText(text, file).filter((l) => l.name === 'port');
  const last = lines[lines.length - 1];
  const out = applyEdits(file, Buffer.from(text, 'utf8'), [{ kind: 'set', name: 'port', value: String(port), line: last?.line ?? null, comment }], () => {
    throw new Error('no backup is read');
  });
  return out!.toString('utf8');
}

/**
 * Why setting the port in the old cluster's postgresql.conf would not move it, if it would not: a
 * port from postgresql.auto.conf (ALTER SYSTEM) or from the command line (pg_ctl.conf) wins over it.
 */
export function portHandOverBlocker(f: { portOrigin: SettingOrigin; autoConfPort: string | undefined }): string | undefined {
  if (f.autoConfPort !== undefined)
    return `postgresql.auto.conf sets port = ${f.autoConfPort} (ALTER SYSTEM), which wins over postgresql.conf: ALTER SYSTEM RESET port, then plan again`;
  if (f.portOrigin === 'command line' || f.portOrigin === 'environment (PGPORT)')
    return `the port comes from the ${f.portOrigin} (pg_ctl.conf or environment), which the hand-over does not change: set it in postgresql.conf instead, then plan again`;
  return undefined;
}

/** start.conf saying `manual`, its comments kept: the first word that is not a comment is the mode. */
export function manualStartConf(text: string): string {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.replace(/#.*/, '').trim() !== '');
  if (i < 0) return `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}manual\n`;
  lines[i] = 'manual';
  return lines.join('\n');
}

/** The mode a start.conf sets (auto when absent, as postgresql-common reads it). */
export function startMode(text: string | undefined): string {
  return (
    text
      ?.split('\n')
      .map((l) => l.replace(/#.*/, '').trim())
      .find(Boolean) ?? 'auto'
  );
}

/**
 * A setting's value in the new cluster's postgresql.conf when postgresql-common's layout names it:
 * undefined when the line carries over as it is. The pid file and cluster name follow the new
 * version; the port is always written out, so the carried file does not depend on the old
 * cluster's own port, which the upgrade changes.
 */
export function layoutValue(d: Pick<DebianUpgrade, 'cluster' | 'oldVersion' | 'newVersion' | 'port'>, name: string, value: string): string | undefined {
  if (name === 'port') return String(d.port);
  if (name === 'cluster_name' && value === `${d.oldVersion}/${d.cluster}`) return `${d.newVersion}/${d.cluster}`;
  if (name === 'external_pid_file') {
    const m = /^(\/var)?\/run\/postgresql\/(.+)\.pid$/.exec(value);
    if (m && m[2] === `${d.oldVersion}-${d.cluster}`) return value.replace(`${d.oldVersion}-${d.cluster}.pid`, `${d.newVersion}-${d.cluster}.pid`);
  }
  return undefined;
}
