/**
 * The one module that starts processes. Everything pgscale runs goes through a Runner, so tests
 * swap the Runner (never mock modules) and every run lands in the audit log.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import type { ProcessOutput } from 'zx';
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
  /**
   * The program is pgscale itself (a playbook's step): an abort sends its group the signal pgscale
   * received (SIGINT for a Ctrl-C), which it reports and acts on as its own, instead of SIGTERM.
   */
  forwardInterrupt?: boolean;
  /**
   * A program that cleans up after itself only on one signal (pg_repack: SIGINT, its SIGTERM is the
   * default, fatal one): an abort sends it that signal, then SIGKILL if it is still there after graceMs.
   */
  abortWith?: { signal: NodeJS.Signals; graceMs: number };
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

/**
 * Every program gets its own process group (detached): a Ctrl-C at the terminal reaches pgscale
 * only, which then decides where to stop, and an abort kills the whole group, pipes included.
 */
function killGroup(pgid: number, signal: NodeJS.Signals = 'SIGTERM'): void {
  if (!pgid) return; // never started; and kill(-0) would signal pgscale's own process group
  try {
    process.kill(-pgid, signal);
  } catch {
    /* already gone */
  }
}

/** The signal an abort sends: the one pgscale received (the abort's reason) when forwarded, else SIGTERM. */
export function abortKillSignal(inv: Pick<Invocation, 'signal' | 'forwardInterrupt' | 'abortWith'>): NodeJS.Signals {
  if (inv.abortWith) return inv.abortWith.signal;
  const reason: unknown = inv.signal?.reason;
  return inv.forwardInterrupt && (reason === 'SIGINT' || reason === 'SIGTERM') ? reason : 'SIGTERM';
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
   * A shell pipeline through zx, which quotes every interpolated value (arrays element by element):
   * no shell string is assembled by hand. Its own process group, like every program (see start).
   */
  private async shellPipeline(
    pieces: readonly string[],
    values: unknown[],
    opts: { env: NodeJS.ProcessEnv; cwd: string; signal?: AbortSignal; onStart?: (pgid: number) => void },
  ): Promise<RunResult> {
    const started = performance.now();
    const template = Object.assign([...pieces], { raw: [...pieces] }) as unknown as TemplateStringsArray;
    // loaded on first use: zx is a large share of pgscale's start-up time
    const { $ } = await import('zx');
    const proc = $({ cwd: opts.cwd, env: opts.env, quiet: true, nothrow: true, detached: true })(template, ...values);
    const pgid = proc.child?.pid ?? 0;
    if (pgid) opts.onStart?.(pgid);
    const kill = () => killGroup(pgid);
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

  /**
   * Spawns from an argv (never a shell) in its own process group, which the invocation's abort
   * signal and timeout kill as a whole.
   */
  private start(inv: Invocation): {
    child: ChildProcessWithoutNullStreams;
    pgid: number;
    started: number;
    done: Promise<{ code: number | null; signal: string | null; error?: Error }>;
  } {
    const [program, ...args] = effectiveArgv(inv);
    const started = performance.now();
    const child = spawn(program!, args, { cwd: this.cwdFor(inv), env: this.environment(inv), detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    const pgid = child.pid ?? 0;
    if (pgid) inv.onStart?.(pgid);
    let lastResort: NodeJS.Timeout | undefined;
    const kill = () => {
      killGroup(pgid, abortKillSignal(inv));
      if (inv.abortWith) lastResort = setTimeout(() => killGroup(pgid, 'SIGKILL'), inv.abortWith.graceMs);
    };
    inv.signal?.addEventListener('abort', kill, { once: true });
    // aborted before it started (Ctrl-C during a step's preparations): the listener above never fires
    if (inv.signal?.aborted) kill();
    const timer = inv.timeoutMs === undefined ? undefined : setTimeout(() => killGroup(pgid), inv.timeoutMs);
    const done = new Promise<{ code: number | null; signal: string | null; error?: Error }>((resolve) => {
      let error: Error | undefined;
      child.on('error', (e) => {
        error = e;
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        clearTimeout(lastResort);
        inv.signal?.removeEventListener('abort', kill);
        resolve({ code, signal, error });
      });
    });
    return { child, pgid, started, done };
  }

  /** A program that could not be started fails the way a shell reports it: 127 not found, 126 not executable. */
  private static spawnFailure(program: string, error: Error): { exitCode: number; message: string } {
    const code = (error as NodeJS.ErrnoException).code;
    return { exitCode: code === 'ENOENT' ? 127 : 126, message: `${program}: ${error.message}\n` };
  }

  async run(inv: Invocation): Promise<RunResult> {
    const { child, started, done } = this.start(inv);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => stdout.push(d));
    child.stderr.on('data', (d: Buffer) => stderr.push(d));
    // end of input right away when there is none: a program never waits on pgscale's own stdin
    child.stdin.on('error', () => undefined); // the program may exit without reading its input: its exit code tells
    child.stdin.end(inv.input);
    const { code, signal, error } = await done;
    const failed = error ? ZxRunner.spawnFailure(inv.program, error) : undefined;
    const result: RunResult = {
      exitCode: failed?.exitCode ?? code,
      signal,
      stdout: Buffer.concat(stdout).toString(),
      stderr: Buffer.concat(stderr).toString() + (failed?.message ?? ''),
      durationMs: Math.round(performance.now() - started),
    };
    this.record(inv, result);
    return result;
  }

  /**
   * zx keeps every byte of output in memory, which a multi-gigabyte dump cannot afford: streams
   * are read by the caller, and only stderr's tail is kept.
   */
  stream(inv: Invocation): StreamingRun {
    const { child, pgid, started, done } = this.start(inv);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      inv.onStderr?.(d.toString());
      stderr = (stderr + d.toString()).slice(-64 * 1024);
    });
    const result = done.then(({ code, signal, error }) => {
      const r: RunResult = {
        exitCode: code,
        signal,
        stdout: '',
        stderr: stderr + (error ? String(error) : ''),
        durationMs: Math.round(performance.now() - started),
      };
      this.record(inv, r);
      return r;
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
    const result = await this.shellPipeline(pieces, [...p.stages.map(effectiveArgv), p.outFile], {
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
