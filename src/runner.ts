/**
 * The one module that starts processes. Everything pgscale runs goes through a Runner, so tests
 * swap the Runner (never mock modules) and every run lands in the audit log.
 */
import { $, type ProcessOutput } from 'zx';
import { redact, redactEnv, type AuditSink } from './audit.js';

/** An OS account to run a program as (PostgreSQL refuses to run as root). */
export interface OsUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface Invocation {
  program: string;
  args: readonly string[];
  /** Added to (not replacing) the inherited environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** When pgscale is root, the program runs as this user (setpriv); otherwise ignored. */
  runAs?: OsUser;
  input?: string;
  timeoutMs?: number;
}

export interface RunResult {
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface Runner {
  /** Runs to completion; a non-zero exit is a result, not an exception. */
  run(invocation: Invocation): Promise<RunResult>;
}

export const isRoot = (): boolean => process.getuid?.() === 0;

/** The argv that actually executes, with the privilege drop made explicit (and audited). */
export function effectiveArgv(inv: Invocation): string[] {
  if (inv.runAs && isRoot() && inv.runAs.uid !== 0) {
    const { uid, gid } = inv.runAs;
    return ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', inv.program, ...inv.args];
  }
  return [inv.program, ...inv.args];
}

export class ZxRunner implements Runner {
  constructor(private readonly audit?: AuditSink) {}

  async run(inv: Invocation): Promise<RunResult> {
    const argv = effectiveArgv(inv);
    const dropping = argv[0] === 'setpriv';
    const env: NodeJS.ProcessEnv = { ...process.env, ...inv.env };
    if (dropping && inv.runAs) {
      env.HOME = inv.runAs.home;
      env.USER = env.LOGNAME = inv.runAs.name;
    }
    const started = performance.now();
    // zx quotes every element of an interpolated array: no shell string is ever assembled by hand.
    const proc = $({
      cwd: inv.cwd ?? (dropping ? '/' : process.cwd()),
      env,
      quiet: true,
      nothrow: true,
      input: inv.input,
      timeout: inv.timeoutMs,
    })`${argv}`;
    const out: ProcessOutput = await proc;
    const result: RunResult = {
      exitCode: out.exitCode,
      signal: out.signal,
      stdout: out.stdout,
      stderr: out.stderr,
      durationMs: Math.round(performance.now() - started),
    };
    this.audit?.record({
      kind: 'run',
      program: inv.program,
      args: inv.args.map(redact),
      cwd: inv.cwd,
      runAs: dropping ? inv.runAs?.name : undefined,
      env: redactEnv(inv.env),
      exitCode: result.exitCode,
      signal: result.signal,
      durationMs: result.durationMs,
    });
    return result;
  }
}

/** One line summary of a failed run for error messages: the program and its last stderr lines. */
export function describeFailure(inv: Invocation, res: RunResult): string {
  const tail = res.stderr.trim().split('\n').slice(-5).join('\n');
  const how = res.signal ? `killed by ${res.signal}` : `exit code ${res.exitCode}`;
  return `${inv.program} failed (${how})${tail ? `:\n${redact(tail)}` : ''}`;
}
