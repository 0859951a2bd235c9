/**
 * Carries a cluster's configuration to a new major version: postgresql.conf with the files it
 * includes from its own directory, postgresql.auto.conf, pg_hba.conf and pg_ident.conf. Settings the
 * new version renamed are rewritten (value converted where the meaning changed); settings it
 * removed are commented out with the reason. Pure: texts in, texts and notes out.
 */
import { createTwoFilesPatch } from 'diff';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { withoutBlock } from './rules.js';
import { CLUSTER_FILES, layoutValue, type DebianUpgrade } from './debianLayout.js';
import { isInside } from '../files.js';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { parseConfigText } from '../config/parse.js';
import { findSetting, formatValue, parseSetting, removedSettings, type GucCatalog, type RemovedSetting } from '../gucCatalog/index.js';

export interface MigratedFile {
  /** Where the old cluster has it. */
  from: string;
  /** Where the new cluster gets it. */
  to: string;
  before: string;
  after: string;
  notes: string[];
}

export interface ConfigMigration {
  files: MigratedFile[];
  /** Settings in files outside the old config directory that the new version rejects: the DBA must fix them. */
  blockers: string[];
  /** A unified diff of every file that changes. */
  diff: string;
}

export interface MigrationInput {
  oldConfigDir: string;
  newConfigDir: string;
  oldDataDir: string;
  newDataDir: string;
  oldCatalog: GucCatalog;
  newCatalog: GucCatalog;
  walSegmentBytes: number;
  /** A postgresql-common cluster: its settings and files follow the layout (debianLayout.ts). */
  debian?: DebianUpgrade | null;
}

const pathSettings = ['data_directory', 'hba_file', 'ident_file', 'external_pid_file'];

/**
 * Why a file setting is left out of a new configuration that lives inside its own data directory:
 * the server finds that file there by itself, and every physical copy of the cluster (a replica, a
 * restored backup) carries the configuration along, so a path written here would send the copy to
 * the original's files. data_directory is never needed there; hba_file and ident_file only when
 * they name another place. Undefined when the setting must be written.
 */
export function impliedByLocation(name: string, newValue: string, input: Pick<MigrationInput, 'newConfigDir' | 'newDataDir'>): string | undefined {
  if (resolve(input.newConfigDir) !== resolve(input.newDataDir)) return undefined;
  if (name === 'data_directory')
    return 'the configuration lives in the data directory: a physical copy (replica, restored backup) must not be sent to this one';
  const defaults: Record<string, string> = { hba_file: 'pg_hba.conf', ident_file: 'pg_ident.conf' };
  const standard = defaults[name];
  return standard && resolve(newValue) === join(resolve(input.newDataDir), standard)
    ? `${standard} in the data directory is where the server looks by default (a physical copy reads its own)`
    : undefined;
}

/** Rewrites one file's text; returns the new text, notes, and relative includes to carry along. */
export interface IncludeRef {
  kind: 'file' | 'dir';
  path: string;
}

export function migrateConfigText(
  text: string,
  file: string,
  input: MigrationInput,
  removed: readonly RemovedSetting[],
): { text: string; notes: string[]; includes: IncludeRef[] } {
  const lines = text.split('\n');
  const notes: string[] = [];
  const includes: IncludeRef[] = [];
  const byName = new Map(removed.map((r) => [r.name, r]));
  for (const entry of parseConfigText(text, file)) {
    const i = entry.line - 1;
    const original = lines[i]!;
    if (entry.name === 'include' || entry.name === 'include_if_exists' || entry.name === 'include_dir') {
      includes.push({ kind: entry.name === 'include_dir' ? 'dir' : 'file', path: entry.value });
      continue;
    }
    const path = pathSettings.includes(entry.name) ? resolve(input.oldConfigDir, entry.value) : undefined;
    // hba_file and friends in a configuration directory of their own (/etc/postgresql/16/main) go to the new one
    const moved =
      path === undefined
        ? undefined
        : path.startsWith(resolve(input.oldDataDir))
          ? { to: join(input.newDataDir, relative(input.oldDataDir, path)), was: 'old data directory' }
          : input.oldConfigDir !== input.oldDataDir && isInside(path, input.oldConfigDir)
            ? { to: join(input.newConfigDir, relative(input.oldConfigDir, path)), was: 'old configuration directory' }
            : undefined;
    const implied = moved ? impliedByLocation(entry.name, moved.to, input) : undefined;
    if (implied) {
      lines[i] = `#${original}\t# pgscale: not carried, ${implied}`;
      notes.push(`${entry.name} not carried: ${implied}`);
      continue;
    }
    if (moved) {
      lines[i] = `${entry.name} = '${moved.to}'\t# pgscale: was '${entry.value}' (${moved.was})`;
      notes.push(`${entry.name}: now ${moved.to}`);
      continue;
    }
    const layout = input.debian ? layoutValue(input.debian, entry.name, entry.value) : undefined;
    if (layout !== undefined) {
      // the port line never names the old value: the old cluster's own port changes during the upgrade
      lines[i] =
        entry.name === 'port'
          ? `port = ${layout}\t# pgscale: the port of ${input.debian!.oldVersion}/${input.debian!.cluster}, which moves to another`
          : `${entry.name} = '${layout}'\t# pgscale: was '${entry.value}' (postgresql-common layout)`;
      notes.push(`${entry.name}: ${layout}`);
      continue;
    }
    const gone = byName.get(entry.name);
    if (!gone) continue;
    if (gone.rename) {
      const r = gone.rename;
      let value = entry.value;
      if (r.convertValue) {
        const oldDef = findSetting(input.oldCatalog, entry.name);
        if (oldDef) value = formatValue(r.convertValue(parseSetting(oldDef, entry.value), { walSegmentBytes: input.walSegmentBytes }));
      }
      lines[i] = `${r.newName} = '${value.replace(/'/g, "''")}'\t# pgscale: ${gone.reason}; was: ${original.trim()}`;
      notes.push(`${entry.name} → ${r.newName} = ${value} (${file}:${entry.line})`);
    } else {
      lines[i] = `#${original}\t# pgscale: commented out, ${gone.reason}`;
      notes.push(`${entry.name} commented out (${file}:${entry.line}): ${gone.reason}`);
    }
  }
  return { text: lines.join('\n'), notes, includes };
}

/** The files include_dir reads: *.conf, not hidden, in name order. */
function confFilesIn(dir: string): string[] {
  try {
    return readdirSync(dir)
      .filter((n) => n.endsWith('.conf') && !n.startsWith('.'))
      .sort()
      .map((n) => join(dir, n));
  } catch {
    return [];
  }
}

function readIfExists(path: string): string | undefined {
  return existsSync(path) ? readFileSync(path, 'utf8') : undefined;
}

/** Settings the new version rejects, in a file the migration does not carry (an absolute include). */
function rejectedIn(path: string, removed: readonly RemovedSetting[], newMajor: number): string[] {
  const text = readIfExists(path);
  if (text === undefined) return [];
  const names = new Set(removed.map((r) => r.name));
  return parseConfigText(text, path)
    .filter((e) => names.has(e.name))
    .map((e) => `${path}:${e.line} sets ${e.name}, which PostgreSQL ${newMajor} rejects: edit that shared file first`);
}

export function migrateConfig(input: MigrationInput): ConfigMigration {
  const removed = removedSettings(input.oldCatalog, input.newCatalog);
  const files: MigratedFile[] = [];
  const blockers: string[] = [];
  const seen = new Set<string>();
  const carry = (rel: string, kind: 'settings' | 'verbatim') => {
    const from = join(input.oldConfigDir, rel);
    if (seen.has(from)) return;
    seen.add(from);
    const before = readIfExists(from);
    if (before === undefined) return;
    const to = join(input.newConfigDir, rel);
    if (kind === 'verbatim') {
      // a connection block left in pg_hba.conf by an interrupted upgrade is never carried over
      const text = rel === 'pg_hba.conf' ? withoutBlock(before) : before;
      files.push({ from, to, before: text, after: text, notes: [] });
      return;
    }
    const m = migrateConfigText(before, from, input, removed);
    files.push({ from, to, before, after: m.text, notes: m.notes });
    for (const inc of m.includes) {
      if (isAbsolute(inc.path)) {
        // shared files outside the config directory are not copied, but the new server must accept them
        const paths = inc.kind === 'dir' ? confFilesIn(inc.path) : [inc.path];
        for (const p of paths) blockers.push(...rejectedIn(p, removed, input.newCatalog.major));
        continue;
      }
      const target = join(dirname(rel), inc.path);
      if (inc.kind === 'dir') for (const f of confFilesIn(join(input.oldConfigDir, target))) carry(join(target, basename(f)), 'settings');
      else carry(target, 'settings');
    }
  };
  carry('postgresql.conf', 'settings');
  const auto = join(input.oldDataDir, 'postgresql.auto.conf');
  const autoText = readIfExists(auto);
  if (autoText !== undefined) {
    const m = migrateConfigText(autoText, auto, input, removed);
    files.push({ from: auto, to: join(input.newDataDir, 'postgresql.auto.conf'), before: autoText, after: m.text, notes: m.notes });
  }
  carry('pg_hba.conf', 'verbatim');
  carry('pg_ident.conf', 'verbatim');
  if (input.debian) for (const f of CLUSTER_FILES) carry(f, 'verbatim');
  const diff = files
    .filter((f) => f.before !== f.after)
    .map((f) => createTwoFilesPatch(f.from, f.to, f.before, f.after, `PostgreSQL ${input.oldCatalog.major}`, `PostgreSQL ${input.newCatalog.major}`))
    .join('\n');
  return { files, blockers, diff };
}
