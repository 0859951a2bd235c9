/**
 * A cluster's *effective* configuration, as the server itself resolves it: postgresql.conf with
 * its include, include_if_exists and include_dir files in the order the server reads them, then
 * postgresql.auto.conf (ALTER SYSTEM), which is read last and so wins; a later line always beats
 * an earlier one. When the server runs, pg_settings adds what no file shows: values given on the
 * server's command line or in its environment (which beat every file), built-in and computed
 * defaults, and changes waiting for a reload or restart (pending_restart).
 *
 * The reader takes its files through a FileSource, so a planned change can be checked by reading
 * the configuration as it *will* be (the planned contents laid over the real files).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parseConfigText, type ConfigEntry } from '../config/parse.js';
import { badInput } from '../errors.js';
import { findSetting } from '../gucCatalog/catalog.js';
import type { GucCatalog, GucDefinition } from '../gucCatalog/types.js';
import { formatValue, fromBaseUnits, parseSetting, valueKindOf, type GucValue } from '../gucCatalog/values.js';
import type { SettingRow } from '../sql.js';

/** Reads configuration files: the real filesystem, or planned contents laid over it. */
export interface FileSource {
  /** The file's text, or undefined when it does not exist. Other errors throw. */
  read(path: string): string | undefined;
  /** Names in a directory, or undefined when it does not exist. */
  list(dir: string): string[] | undefined;
}

const notFound = (e: unknown) => ['ENOENT', 'ENOTDIR'].includes((e as NodeJS.ErrnoException).code ?? '');

/** Config files are read as latin1: every byte maps to one character, so nothing is lost whatever the encoding. */
export const realFiles: FileSource = {
  read(path) {
    try {
      return readFileSync(path, 'latin1');
    } catch (e) {
      if (notFound(e)) return undefined;
      const code = (e as NodeJS.ErrnoException).code;
      throw badInput(`cannot read configuration file ${path}: ${code === 'EACCES' ? 'permission denied' : String(code ?? e)}`);
    }
  },
  list(dir) {
    try {
      return readdirSync(dir);
    } catch (e) {
      if (notFound(e)) return undefined;
      throw badInput(`cannot read configuration directory ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  },
};

/** Planned file contents (path → text, or null for "deleted") over another source. */
export function overlayFiles(base: FileSource, planned: ReadonlyMap<string, string | null>): FileSource {
  return {
    read: (path) => {
      const p = resolve(path);
      return planned.has(p) ? (planned.get(p) ?? undefined) : base.read(p);
    },
    list: (dir) => {
      const d = resolve(dir);
      const names = new Set(base.list(d) ?? []);
      let exists = base.list(d) !== undefined;
      for (const [p, text] of planned) {
        if (dirname(p) !== d) continue;
        exists = true;
        if (text === null) names.delete(p.slice(d.length + 1));
        else names.add(p.slice(d.length + 1));
      }
      return exists ? [...names] : undefined;
    },
  };
}

/**
 * Every setting line of a file and what it includes, in the server's order (guc-file.l): relative
 * includes resolve against the including file's directory, include_dir reads *.conf files not
 * starting with "." in name order, and nesting stops at depth 10. `files` collects every file read.
 */
export function readConfigFiles(path: string, source: FileSource, files: string[] = [], depth = 0): ConfigEntry[] {
  const file = resolve(path);
  if (depth > 10) throw badInput(`could not open configuration file ${file}: maximum nesting depth exceeded`);
  const text = source.read(file);
  if (text === undefined) throw badInput(`configuration file ${file} does not exist`);
  files.push(file);
  const rel = (p: string) => (isAbsolute(p) ? p : join(dirname(file), p));
  const out: ConfigEntry[] = [];
  for (const entry of parseConfigText(text, file)) {
    if (entry.name === 'include') {
      const target = rel(entry.value);
      if (source.read(target) === undefined)
        throw badInput(`could not open configuration file ${target} (included from ${file} line ${entry.line}): no such file`);
      out.push(...readConfigFiles(target, source, files, depth + 1));
    } else if (entry.name === 'include_if_exists') {
      const target = rel(entry.value);
      if (source.read(target) !== undefined) out.push(...readConfigFiles(target, source, files, depth + 1));
    } else if (entry.name === 'include_dir') {
      const dir = rel(entry.value);
      const names = source.list(dir);
      if (names === undefined) throw badInput(`could not open configuration directory ${dir} (included from ${file} line ${entry.line}): no such directory`);
      for (const n of names.filter((n) => n.endsWith('.conf') && !n.startsWith('.')).sort()) {
        out.push(...readConfigFiles(join(dir, n), source, files, depth + 1));
      }
    } else out.push({ name: entry.name, value: entry.value, file, line: entry.line });
  }
  return out;
}

/** A row of pg_settings as src/sql.ts `allSettings` returns it (boot_val may be absent where a test or fixture builds one). */
export type ServerSetting = Omit<SettingRow, 'boot_val'> & Partial<Pick<SettingRow, 'boot_val'>>;

/**
 * Where a setting's effective value comes from:
 * - file: a line of postgresql.conf or a file it includes;
 * - auto: postgresql.auto.conf (ALTER SYSTEM), read after every other file;
 * - command-line: the server was started with it (-c, PGOPTIONS of the postmaster, environment):
 *   no file can change it until the server is started differently;
 * - default: no file sets it: the built-in (or computed) value.
 */
export type SettingOrigin = 'file' | 'auto' | 'command-line' | 'default';

export interface EffectiveSetting {
  /** Lower case, as the catalog keys names. */
  name: string;
  /** As written in the file, or the server's value with its unit ("16384 8kB" → "128MB"). */
  text: string;
  /** Typed, when the catalog knows the setting and the text is a valid value of it. */
  value: GucValue | undefined;
  origin: SettingOrigin;
  file?: string;
  line?: number;
  /** Earlier lines the winning one overrides (same name), oldest first. */
  overrides: { file: string; line: number; text: string }[];
  /** What the running server uses now, when that is not what the files say (waiting for a reload or restart). */
  running?: { text: string; value: GucValue | undefined; pendingRestart: boolean };
  /** The text is not a value the server accepts (a reload would reject it). */
  invalid?: string;
}

export interface EffectiveConfig {
  configFile: string;
  autoConfFile: string;
  /** Every configuration file read, in the server's order, postgresql.auto.conf last (when it exists). */
  files: string[];
  /** Every setting line, in the server's order: a later line wins. */
  entries: ConfigEntry[];
  settings: Map<string, EffectiveSetting>;
  /** pg_settings was read: the server runs. */
  fromServer: boolean;
  warnings: string[];
}

/** pg_settings.source values meaning "not from a configuration file, and a file cannot override it". */
const COMMAND_LINE_SOURCES = new Set(['command line', 'environment variable']);
/** pg_settings.source values of a session's own settings (ALTER ROLE / DATABASE … SET, the client): not the server's. */
export const SESSION_SOURCES = new Set(['database', 'user', 'database user', 'client', 'session', 'interactive']);

function typed(def: GucDefinition | undefined, text: string): { value: GucValue | undefined; invalid?: string } {
  if (!def || valueKindOf(def) === undefined) return { value: undefined };
  try {
    return { value: parseSetting(def, text) };
  } catch (e) {
    return { value: undefined, invalid: (e as Error).message };
  }
}

/** A pg_settings value (base units, unit in its own column) as typed value and readable text. */
export function serverValue(def: GucDefinition | undefined, row: Pick<ServerSetting, 'setting' | 'unit'>): { text: string; value: GucValue | undefined } {
  const setting = row.setting ?? '';
  if (!def || valueKindOf(def) === undefined) return { text: setting, value: undefined };
  const { value } = typed(def, setting);
  if (!value) return { text: setting, value: undefined };
  // -1 and friends are sentinels ("use another setting"), not sizes: shown as the server shows them
  if (/^\s*-/.test(setting)) return { text: setting.trim(), value };
  return { text: formatTyped(value), value };
}

const formatTyped = (value: GucValue): string => formatValue(value);

/** The catalog's boot value of a setting, typed (the value when nothing sets it and no server says otherwise). */
export function catalogDefault(def: GucDefinition): { text: string; value: GucValue | undefined } {
  const d = def.default;
  if (d === undefined) return { text: '', value: undefined };
  const kind = valueKindOf(def);
  if (kind === undefined) return { text: String(d), value: undefined };
  if (typeof d === 'number' && (kind === 'memory' || kind === 'duration' || kind === 'number')) {
    const value = fromBaseUnits(def, d);
    return { text: d < 0 ? String(d) : formatTyped(value), value };
  }
  const { value } = typed(def, String(d));
  return { text: value ? formatTyped(value) : String(d), value };
}

export interface ReadEffectiveOptions {
  configFile: string;
  dataDir: string;
  catalog: GucCatalog;
  /** pg_settings of the running server; absent when it is stopped or unreachable. */
  server?: readonly ServerSetting[];
  source?: FileSource;
}

/**
 * The effective configuration. Without files (a server reached only over the network) pass a
 * configFile of "" and the server's rows: pg_settings then says everything there is to know.
 */
export function readEffectiveConfig(opts: ReadEffectiveOptions): EffectiveConfig {
  const source = opts.source ?? realFiles;
  const files: string[] = [];
  const autoConfFile = opts.dataDir ? join(resolve(opts.dataDir), 'postgresql.auto.conf') : '';
  const entries: ConfigEntry[] = [];
  if (opts.configFile) {
    entries.push(...readConfigFiles(opts.configFile, source, files));
    if (autoConfFile && source.read(autoConfFile) !== undefined) entries.push(...readConfigFiles(autoConfFile, source, files));
  }
  const warnings: string[] = [];
  const settings = new Map<string, EffectiveSetting>();
  for (const e of entries) {
    const prev = settings.get(e.name);
    const def = findSetting(opts.catalog, e.name);
    const t = typed(def, e.value);
    const overrides = prev ? [...prev.overrides, { file: prev.file!, line: prev.line!, text: prev.text }] : [];
    settings.set(e.name, {
      name: e.name,
      text: e.value,
      value: t.value,
      origin: e.file === autoConfFile ? 'auto' : 'file',
      file: e.file,
      line: e.line,
      overrides,
      ...(t.invalid ? { invalid: t.invalid } : {}),
    });
  }
  for (const s of settings.values()) {
    if (s.invalid) warnings.push(`${s.file}:${s.line}: ${s.invalid}; the server ignores the line on reload and refuses to start with it`);
    else if (!findSetting(opts.catalog, s.name) && !s.name.includes('.'))
      warnings.push(`${s.file}:${s.line}: "${s.name}" is not a setting of PostgreSQL ${opts.catalog.major}`);
  }

  for (const row of opts.server ?? []) {
    const name = row.name.toLowerCase();
    // our own session's ALTER ROLE / DATABASE value says nothing about the server's
    if (SESSION_SOURCES.has(row.source)) continue;
    const def = findSetting(opts.catalog, name);
    const live = serverValue(def, row);
    const fromFile = settings.get(name);
    if (COMMAND_LINE_SOURCES.has(row.source)) {
      settings.set(name, {
        name,
        text: live.text,
        value: live.value,
        origin: 'command-line',
        overrides: fromFile ? [...fromFile.overrides, { file: fromFile.file!, line: fromFile.line!, text: fromFile.text }] : [],
      });
      continue;
    }
    if (fromFile) {
      // the files say one thing; the server runs another until it reloads (or restarts)
      const same = fromFile.value && live.value ? JSON.stringify(fromFile.value) === JSON.stringify(live.value) : fromFile.text === live.text;
      if (!same || row.pending_restart) fromFile.running = { text: live.text, value: live.value, pendingRestart: row.pending_restart };
      continue;
    }
    if (!opts.configFile && row.sourcefile) {
      // no files to read (a remote server): pg_settings names the file and line
      const auto = row.sourcefile.endsWith('/postgresql.auto.conf');
      settings.set(name, {
        name,
        text: live.text,
        value: live.value,
        origin: auto ? 'auto' : 'file',
        file: row.sourcefile,
        line: row.sourceline ?? 0,
        overrides: [],
      });
      continue;
    }
    // nothing in the files: the built-in or computed default (wal_buffers from shared_buffers…); a value
    // still running from a line since removed (or waiting for a restart) falls back to the boot value
    const stale = row.pending_restart || row.source === 'configuration file';
    const value = stale && row.boot_val != null ? serverValue(def, { setting: row.boot_val, unit: row.unit }) : live;
    settings.set(name, {
      name,
      text: value.text,
      value: value.value,
      origin: 'default',
      overrides: [],
      ...(stale ? { running: { ...live, pendingRestart: row.pending_restart } } : {}),
    });
  }
  return { configFile: opts.configFile ? resolve(opts.configFile) : '', autoConfFile, files, entries, settings, fromServer: Boolean(opts.server), warnings };
}

/**
 * A setting's effective value: from the configuration, else (no server to ask) the catalog's
 * built-in default.
 */
export function effectiveSetting(config: EffectiveConfig, catalog: GucCatalog, name: string): EffectiveSetting | undefined {
  const s = config.settings.get(name.toLowerCase());
  if (s) return s;
  const def = findSetting(catalog, name);
  if (!def) return undefined;
  const d = catalogDefault(def);
  return { name: def.name, text: d.text, value: d.value, origin: 'default', overrides: [] };
}

/** Where a setting's value comes from, for people: "postgresql.conf:64", "postgresql.auto.conf:3 (ALTER SYSTEM)", "server command line", "default". */
export function describeOrigin(s: EffectiveSetting, relativeTo?: string): string {
  const short = (f: string) => (relativeTo && f.startsWith(relativeTo + '/') ? f.slice(relativeTo.length + 1) : f);
  switch (s.origin) {
    case 'file':
      return `${short(s.file!)}:${s.line}`;
    case 'auto':
      return `${short(s.file!)}:${s.line} (ALTER SYSTEM)`;
    case 'command-line':
      return 'server command line';
    case 'default':
      return 'default';
  }
}
