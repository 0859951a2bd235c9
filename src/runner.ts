/**
 * The one module that starts processes. Everything pgscale runs goes through a Runner, so tests
 * swap the Runner (never mock modules) and every run lands in the audit log.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
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
  /** Aborting kills the program's whole process group. */
  signal?: AbortSignal;
  /** Told the process group id once started: the journal keeps it so a resume can reap orphans. */
  onStart?: (pgid: number) => void;
  /** stream() only: stderr as it arrives (pg_basebackup -P reports progress there). */
  onStderr?: (chunk: string) => void;
}

/** A running program whose stdin/stdout the caller streams (dumps and restores are far larger than memory). */
export interface StreamingRun {
  stdin: Writable;
  stdout: Readable;
  pgid: number;
  /** Settles when the program exits; stdout is not captured in it, stderr's tail is. */
  result: Promise<RunResult>;
}

/** Stages joined by pipes, the last one's output written to a file (created 0600). */
export interface Pipeline {
  stages: readonly Invocation[];
  outFile: string;
  signal?: AbortSignal;
  onStart?: (pgid: number) => void;
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
  /** Runs `a | b | … > outFile`; the exit code is the first failing stage's (pipefail). */
  runPipeline(pipeline: Pipeline): Promise<RunResult>;
  /** Starts a program with streamed stdin/stdout. */
  stream(invocation: Invocation): StreamingRun;
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

  private environment(inv: Invocation): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, ...inv.env };
    if (inv.runAs && effectiveArgv(inv)[0] === 'setpriv') {
      env.HOME = inv.runAs.home;
      env.USER = env.LOGNAME = inv.runAs.name;
    }
    return env;
  }

  /**
   * Every program gets its own process group (detached): a Ctrl-C at the terminal reaches pgscale
   * only, which then decides where to stop, and an abort kills the whole group, pipes included.
   */
  private async execute(
    pieces: readonly string[],
    values: unknown[],
    opts: { env: NodeJS.ProcessEnv; cwd: string; input?: string; timeoutMs?: number; signal?: AbortSignal; onStart?: (pgid: number) => void },
  ): Promise<RunResult> {
    const started = performance.now();
    const template = Object.assign([...pieces], { raw: [...pieces] }) as unknown as TemplateStringsArray;
    // zx quotes every interpolated value (arrays element by element): no shell string is assembled by hand.
    const proc = $({ cwd: opts.cwd, env: opts.env, quiet: true, nothrow: true, input: opts.input, timeout: opts.timeoutMs, detached: true })(
      template,
      ...values,
    );
    const pgid = proc.child?.pid;
    if (pgid) opts.onStart?.(pgid);
    const kill = () => {
      if (pgid) {
        try {
          process.kill(-pgid, 'SIGTERM');
        } catch {
          /* already gone */
        }
      }
    };
    if (opts.signal?.aborted) kill();
    opts.signal?.addEventListener('abort', kill, { once: true });
    try {
      const out: ProcessOutput = await proc;
      return { exitCode: out.exitCode, signal: out.signal, stdout: out.stdout, stderr: out.stderr, durationMs: Math.round(performance.now() - started) };
    } finally {
      opts.signal?.removeEventListener('abort', kill);
    }
  }

  private record(inv: Invocation, result: RunResult): void {
    const dropping = effectiveArgv(inv)[0] === 'setpriv';
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
  }

  private cwdFor(inv: Invocation): string {
    return inv.cwd ?? (effectiveArgv(inv)[0] === 'setpriv' ? '/' : process.cwd());
  }

  async run(inv: Invocation): Promise<RunResult> {
    const result = await this.execute(['', ''], [effectiveArgv(inv)], {
      env: this.environment(inv),
      cwd: this.cwdFor(inv),
      input: inv.input,
      timeoutMs: inv.timeoutMs,
      signal: inv.signal,
      onStart: inv.onStart,
    });
    this.record(inv, result);
    return result;
  }

  /**
   * zx keeps every byte of output in memory, which a multi-gigabyte dump cannot afford: streams
   * use child_process directly, still from an argv array and never through a shell.
   */
  stream(inv: Invocation): StreamingRun {
    const [program, ...args] = effectiveArgv(inv);
    const started = performance.now();
    const child = spawn(program!, args, { cwd: this.cwdFor(inv), env: this.environment(inv), detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    const pgid = child.pid ?? 0;
    if (pgid) inv.onStart?.(pgid);
    const kill = () => {
      if (!pgid) return; // never started; and kill(-0) would signal pgscale's own process group
      try {
        process.kill(-pgid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    };
    inv.signal?.addEventListener('abort', kill, { once: true });
    // aborted before it started (Ctrl-C during a step's preparations): the listener above never fires
    if (inv.signal?.aborted) kill();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      inv.onStderr?.(d.toString());
      stderr = (stderr + d.toString()).slice(-64 * 1024);
    });
    const result = new Promise<RunResult>((resolve) => {
      child.on('error', (e) => {
        stderr += String(e);
      });
      child.on('close', (code, signal) => {
        inv.signal?.removeEventListener('abort', kill);
        const r: RunResult = { exitCode: code, signal, stdout: '', stderr, durationMs: Math.round(performance.now() - started) };
        this.record(inv, r);
        resolve(r);
      });
    });
    return { stdin: child.stdin, stdout: child.stdout, pgid, result };
  }

  async runPipeline(p: Pipeline): Promise<RunResult> {
    if (p.stages.length === 0) throw new Error('empty pipeline');
    // pieces hold only the operators; every program, argument and the file name is a quoted value
    const pieces = ['', ...p.stages.slice(1).map(() => ' | '), ' > ', ''];
    const env = p.stages.reduce<NodeJS.ProcessEnv>((acc, st) => ({ ...acc, ...this.environment(st) }), {});
    const first = p.stages[0]!;
    // the shell's redirection keeps an existing file's mode: create it 0600 first
    closeSync(openSync(p.outFile, 'w', 0o600));
    const result = await this.execute(pieces, [...p.stages.map(effectiveArgv), p.outFile], {
      env,
      cwd: this.cwdFor(first),
      signal: p.signal,
      onStart: p.onStart,
    });
    for (const st of p.stages) this.record(st, result);
    return result;
  }
}

/**
 * The one way pgscale turns an argument into shell text, for the two places a shell is unavoidable:
 * pg_ctl -o (pg_ctl runs `exec postgres … OPTIONS` through /bin/sh, dash on Debian) and a command
 * sent over ssh (the remote side always runs it through the user's shell). POSIX single quotes:
 * nothing inside them is special, and a quote is written as '\''.
 */
export function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** One line summary of a failed run for error messages: the program and its last stderr lines. */
export function describeFailure(inv: Invocation, res: RunResult): string {
  const tail = res.stderr.trim().split('\n').slice(-5).join('\n');
  const how = res.signal ? `killed by ${res.signal}` : `exit code ${res.exitCode}`;
  return `${inv.program} failed (${how})${tail ? `:\n${redact(tail)}` : ''}`;
}
