/** Runs the built CLI (bin/run.js) as a subprocess, as a user would. */
import { spawn, spawnSync } from 'node:child_process';
import { cliEntry, repoRoot } from './paths.js';
import type { OsUser } from '../../src/runner.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  /** Run as another OS user (root only), e.g. to test an unreadable data directory. */
  asUser?: OsUser;
  input?: string;
  timeoutMs?: number;
  /** A program that runs the CLI (its argv, node and the CLI's appended), e.g. unshare for a host of its own. */
  wrapper?: string[];
}

export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const [program, ...argv] = [...(opts.wrapper ?? []), process.execPath, cliEntry, ...args];
    const child = spawn(program!, argv, {
      cwd: repoRoot,
      env: { ...process.env, NO_COLOR: '1', ...opts.env },
      uid: opts.asUser?.uid,
      gid: opts.asUser?.gid,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 120_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

export interface StartedCli {
  pid: number;
  kill(signal: NodeJS.Signals): void;
  done: Promise<CliResult & { signal: NodeJS.Signals | null }>;
}

/** Like runCli, but the process is ours to signal while it runs. */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): StartedCli {
  const child = spawn(process.execPath, [cliEntry, ...args], {
    cwd: repoRoot,
    env: { ...process.env, NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliResult & { signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { pid: child.pid!, kill: (s) => child.kill(s), done };
}

/**
 * Whether another OS user can run the CLI from this checkout: a clone under a 0700 directory (as
 * mktemp -d makes) is out of its reach, and a test running pgscale as that user cannot mean anything.
 */
export function cliRunnableBy(user: { uid: number; gid: number }): boolean {
  const probe = (flag: string, path: string) =>
    spawnSync('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', 'test', flag, path]).status === 0;
  return probe('-x', process.execPath) && probe('-r', cliEntry);
}

/** Parses --json output, failing the test with the raw text when it is not JSON. */
export function parseJson<T>(res: CliResult): T {
  try {
    return JSON.parse(res.stdout) as T;
  } catch {
    throw new Error(`stdout is not JSON (exit ${res.code}):\n${res.stdout}\nstderr:\n${res.stderr}`);
  }
}
