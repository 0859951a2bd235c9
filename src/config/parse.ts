/**
 * postgresql.conf syntax, as guc-file.l reads it: `name = value` or `name value`, `#` comments,
 * single-quoted strings with '' and backslash escapes, and include / include_if_exists /
 * include_dir directives. Errors carry the file and line, like the server's own.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { badInput } from '../errors.js';

export interface ConfigEntry {
  name: string;
  value: string;
  file: string;
  line: number;
}

export interface ConfigLine {
  line: number;
  name: string;
  value: string;
}

const namePattern = /^[A-Za-z_][A-Za-z0-9_.\-]*/;

/** Parses one file's text; `file` is only used in error messages. */
export function parseConfigText(text: string, file: string): ConfigLine[] {
  const out: ConfigLine[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    const fail = (why: string) => badInput(`syntax error in ${file} line ${line}: ${why}`, 'fix the line, or run the server once to see its own message');
    let rest = raw.replace(/\r$/, '').trimStart();
    if (rest === '' || rest.startsWith('#')) return;
    const m = namePattern.exec(rest);
    if (!m) throw fail(`expected a parameter name near "${rest.slice(0, 20)}"`);
    const name = m[0];
    rest = rest.slice(name.length).trimStart();
    if (rest.startsWith('=')) rest = rest.slice(1).trimStart();
    let value: string;
    if (rest.startsWith("'")) {
      let i2 = 1;
      value = '';
      for (;;) {
        if (i2 >= rest.length) throw fail('unterminated quoted string');
        const c = rest[i2]!;
        if (c === "'" && rest[i2 + 1] === "'") {
          value += "'";
          i2 += 2;
          continue;
        }
        if (c === "'") {
          i2++;
          break;
        }
        if (c === '\\' && i2 + 1 < rest.length) {
          const n = rest[i2 + 1]!;
          value += ({ b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' } as Record<string, string>)[n] ?? n;
          i2 += 2;
          continue;
        }
        value += c;
        i2++;
      }
      rest = rest.slice(i2);
    } else {
      const v = /^[^\s#']+/.exec(rest);
      if (!v) throw fail(`missing value for "${name}"`);
      value = v[0];
      rest = rest.slice(value.length);
    }
    rest = rest.trimStart();
    if (rest !== '' && !rest.startsWith('#')) throw fail(`unexpected text after the value of "${name}": "${rest.slice(0, 20)}"`);
    out.push({ line, name: name.toLowerCase(), value });
  });
  return out;
}

function readConfigFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw badInput(`cannot read configuration file ${path}: ${code === 'EACCES' ? 'permission denied' : code === 'ENOENT' ? 'no such file' : String(e)}`);
  }
}

/**
 * Every setting in a file and the files it includes, in the order the server applies them (a later
 * entry wins). Include depth is capped like the server's (10) to stop include loops.
 */
export function readConfigTree(path: string, depth = 0): ConfigEntry[] {
  if (depth > 10) throw badInput(`could not open configuration file ${path}: maximum nesting depth exceeded`);
  const file = resolve(path);
  const out: ConfigEntry[] = [];
  const rel = (p: string) => (isAbsolute(p) ? p : join(dirname(file), p));
  for (const entry of parseConfigText(readConfigFile(file), file)) {
    if (entry.name === 'include') out.push(...readConfigTree(rel(entry.value), depth + 1));
    else if (entry.name === 'include_if_exists') {
      const target = rel(entry.value);
      if (statSafe(target)) out.push(...readConfigTree(target, depth + 1));
    } else if (entry.name === 'include_dir') {
      const dir = rel(entry.value);
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch (e) {
        throw badInput(`could not open configuration directory ${dir} (included from ${file} line ${entry.line}): ${(e as NodeJS.ErrnoException).code}`);
      }
      // the server reads *.conf files in C-locale name order and skips names starting with '.'
      for (const n of names.filter((n) => n.endsWith('.conf') && !n.startsWith('.')).sort()) {
        out.push(...readConfigTree(join(dir, n), depth + 1));
      }
    } else out.push({ name: entry.name, value: entry.value, file, line: entry.line });
  }
  return out;
}

function statSafe(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}

/** The last value of each setting: the server's own rule when the same name appears twice. */
export function lastValues(entries: readonly ConfigEntry[]): Map<string, ConfigEntry> {
  const m = new Map<string, ConfigEntry>();
  for (const e of entries) m.set(e.name, e);
  return m;
}
