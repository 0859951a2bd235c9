/**
 * Connection settings by libpq's conventions: --dsn, then PG* environment variables, then the
 * service file entry (PGSERVICE), then defaults. Passwords never travel in argv: they come from
 * PGPASSWORD or a password file (PGPASSFILE / ~/.pgpass), which `pg` and libpq both read.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseDsn } from 'pg-connection-string';
import { badInput } from './errors.js';
import { registerSecret } from './audit.js';

export interface ConnectionSettings {
  host?: string;
  port?: number;
  user?: string;
  database?: string;
  /** Only ever from the environment or a DSN; never logged, never put in argv. */
  password?: string;
  passfile?: string;
  sslmode?: string;
  service?: string;
}

const libpqEnv: Record<string, keyof ConnectionSettings> = {
  PGHOST: 'host',
  PGPORT: 'port',
  PGUSER: 'user',
  PGDATABASE: 'database',
  PGPASSWORD: 'password',
  PGPASSFILE: 'passfile',
  PGSSLMODE: 'sslmode',
  PGSERVICE: 'service',
};

function toPort(value: string, source: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw badInput(`invalid port "${value}" in ${source}`, `give a port from 1 to 65535 in ${source}`);
  return port;
}

/** Entries of one [service] section in the pg_service.conf files libpq reads. */
export function readServiceEntries(service: string, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const files = [env.PGSERVICEFILE ?? join(homedir(), '.pg_service.conf'), join(env.PGSYSCONFDIR ?? '/etc/postgresql-common', 'pg_service.conf')];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    let inSection = false;
    const found: Record<string, string> = {};
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#')) continue;
      const section = /^\[(.+)\]$/.exec(line);
      if (section) {
        if (inSection) return found;
        inSection = section[1] === service;
        continue;
      }
      const eq = line.indexOf('=');
      if (inSection && eq > 0) found[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
    }
    if (inSection) return found;
  }
  throw badInput(`definition of service "${service}" not found`, 'check PGSERVICEFILE or ~/.pg_service.conf');
}

/** libpq's keyword = value connection string: values bare or single-quoted, backslash escapes. */
function parseKeywordValue(dsn: string): ReturnType<typeof parseDsn> {
  const out: Record<string, string> = {};
  const re = /\s*([A-Za-z_][\w]*)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|((?:[^\s'\\]|\\.)*))/y;
  let pos = 0;
  while (dsn.slice(pos).trim() !== '') {
    re.lastIndex = pos;
    const m = re.exec(dsn);
    if (!m) throw new Error(`syntax error at "${dsn.slice(pos, pos + 20)}"`);
    out[m[1]!] = (m[2] ?? m[3] ?? '').replace(/\\(.)/g, '$1');
    pos = re.lastIndex;
  }
  const { dbname, ...rest } = out;
  return { ...rest, ...(dbname !== undefined ? { database: dbname } : {}) } as ReturnType<typeof parseDsn>;
}

export function resolveConnection(dsn: string | undefined, env: NodeJS.ProcessEnv = process.env): ConnectionSettings {
  const fromEnv: ConnectionSettings = {};
  for (const [name, key] of Object.entries(libpqEnv)) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    if (key === 'port') fromEnv.port = toPort(v, name);
    else (fromEnv as Record<string, string>)[key] = v;
  }
  const fromDsn: ConnectionSettings = {};
  if (dsn) {
    let parsed: ReturnType<typeof parseDsn>;
    try {
      // pg-connection-string reads URIs only; libpq's keyword/value form ("host=/run/postgresql port=5433") is read here
      parsed = /^postgres(ql)?:\/\//i.test(dsn.trim()) ? parseDsn(dsn) : parseKeywordValue(dsn);
    } catch {
      throw badInput(
        '--dsn is not a valid connection string or URI',
        'write it as "host=/run/postgresql port=5432 dbname=postgres" or postgresql://user@host:port/db (the password in PGPASSFILE, never in --dsn)',
      );
    }
    if (parsed.host) fromDsn.host = parsed.host;
    if (parsed.port) fromDsn.port = toPort(String(parsed.port), '--dsn');
    if (parsed.user) fromDsn.user = parsed.user;
    if (parsed.database) fromDsn.database = parsed.database;
    if (parsed.password) {
      fromDsn.password = parsed.password;
      registerSecret(parsed.password);
    }
    const extra = parsed as Record<string, unknown>;
    if (typeof extra.sslmode === 'string') fromDsn.sslmode = extra.sslmode;
    if (typeof extra.service === 'string') fromDsn.service = extra.service;
    if (typeof extra.passfile === 'string') fromDsn.passfile = extra.passfile;
  }
  const service = fromDsn.service ?? fromEnv.service;
  const fromService: ConnectionSettings = {};
  if (service) {
    const s = readServiceEntries(service, env);
    if (s.host) fromService.host = s.host;
    if (s.port) fromService.port = toPort(s.port, `service ${service}`);
    if (s.user) fromService.user = s.user;
    if (s.dbname) fromService.database = s.dbname;
    if (s.sslmode) fromService.sslmode = s.sslmode;
  }
  return { ...fromService, ...fromEnv, ...fromDsn };
}

/** The settings as libpq environment variables, for programs pgscale runs (pg_dumpall, psql…). */
export function libpqEnvironment(c: ConnectionSettings): Record<string, string> {
  const env: Record<string, string> = {};
  if (c.host) env.PGHOST = c.host;
  if (c.port) env.PGPORT = String(c.port);
  if (c.user) env.PGUSER = c.user;
  if (c.database) env.PGDATABASE = c.database;
  if (c.password) env.PGPASSWORD = c.password;
  if (c.passfile) env.PGPASSFILE = c.passfile;
  if (c.sslmode) env.PGSSLMODE = c.sslmode;
  return env;
}

/** host:port/db as shown to people and written to logs (never the password). */
export function describeConnection(c: ConnectionSettings): string {
  return `${c.user ? c.user + '@' : ''}${c.host ?? 'localhost'}:${c.port ?? 5432}/${c.database ?? c.user ?? 'postgres'}`;
}
