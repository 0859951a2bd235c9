import { appendFileSync, mkdirSync, openSync, closeSync } from 'node:fs';
import { dirname } from 'node:path';

/** One line of the audit log: a program run or an SQL statement, never a secret. */
export type AuditEvent =
  | {
      kind: 'run';
      /** The ssh destination when the program ran on another host (src/remote/ssh.ts). */
      host?: string;
      program: string;
      args: string[];
      cwd?: string;
      runAs?: string;
      env?: Record<string, string>;
      exitCode: number | null;
      signal?: string | null;
      durationMs: number;
    }
  | { kind: 'sql'; target: string; sql: string; params?: number; rows?: number; error?: string; durationMs: number }
  | { kind: 'step'; run: string; step: string; event: string; detail?: string };

export interface AuditSink {
  record(event: AuditEvent): void;
}

const secretInText = /(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi;
const secretInUri = /(postgres(?:ql)?:\/\/[^:/@\s]*:)[^@\s]*@/gi;

/** Passwords seen this process (PGPASSWORD, a --dsn's): removed wherever they appear, whatever the syntax around them. */
const knownSecrets = new Set<string>();

export function registerSecret(value: string | undefined): void {
  if (value) knownSecrets.add(value);
}

/** Removes passwords from a DSN, an argument, a statement or a message before it is written anywhere. */
export function redact(text: string): string {
  let out = text.replace(secretInUri, '$1***@').replace(secretInText, '$1***');
  const env = process.env.PGPASSWORD;
  for (const secret of env ? [env, ...knownSecrets] : knownSecrets) out = out.split(secret).join('***');
  return out;
}

/** Environment variables worth recording; values of anything else (PGPASSWORD above all) are never written. */
const recordableEnv = new Set(['PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGDATA', 'PGSERVICE', 'PGPASSFILE', 'PGOPTIONS', 'LC_ALL', 'LANG', 'TZ']);

export function redactEnv(env: Record<string, string | undefined> | undefined): Record<string, string> | undefined {
  if (!env) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    out[k] = recordableEnv.has(k) ? redact(v) : '***';
  }
  return out;
}

/** Appends JSON lines to a file created 0600; a write failure must not break the operation it records. */
export class FileAuditLog implements AuditSink {
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    closeSync(openSync(path, 'a', 0o600));
  }

  record(event: AuditEvent): void {
    const line = JSON.stringify({ time: new Date().toISOString(), ...event });
    appendFileSync(this.path, line + '\n', { mode: 0o600 });
  }
}

/** Keeps events in memory: for tests and for attaching a run's commands to its journal. */
export class MemoryAuditLog implements AuditSink {
  readonly events: AuditEvent[] = [];
  record(event: AuditEvent): void {
    this.events.push(event);
  }
}
