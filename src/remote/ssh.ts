/**
 * The one module that runs commands on other hosts: through the system OpenSSH client, so users
 * keep their ~/.ssh/config, agent, jump hosts and known_hosts. BatchMode (never a prompt), a
 * connect timeout, one multiplexed connection per host per run in a private 0700 directory, and
 * host key checking left as the user configured it (never turned off).
 *
 * An SshRunner is a Runner: the same Invocation (argv, env, cwd, runAs, input) runs remotely. The
 * argv is quoted for the remote shell by shellQuote (src/runner.ts), the only quoting function;
 * the local `ssh` process is started by the local runner, so src/runner.ts stays the one module
 * that starts processes. Every remote command is recorded in the audit log with its host.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { redact, redactEnv, type AuditSink } from '../audit.js';
import { badInput } from '../errors.js';
import type { JsonObject } from '../pipeline/step.js';
import { ZxRunner, shellQuote, type Invocation, type OsUser, type Pipeline, type RunResult, type Runner, type StreamingRun } from '../runner.js';

/** Where a host is: an ssh destination (`user@db2`, an alias of ~/.ssh/config) or `local`. */
export interface HostSpec extends JsonObject {
  destination: string;
  /** ssh -F: a client configuration other than ~/.ssh/config (null: ssh's own default). */
  sshConfig: string | null;
}

export const isLocal = (h: HostSpec): boolean => h.destination === 'local';

/** Exit status ssh itself uses for its own failures (connection, authentication, host key). */
export const SSH_FAILURE = 255;

/** Refuses a destination that ssh could read as an option or that names nothing. */
export function validateDestination(destination: string): string {
  if (!destination || destination.startsWith('-') || /[\s\0]/.test(destination))
    throw badInput(`"${destination}" is not an ssh destination`, 'pass --host user@host, an alias from ~/.ssh/config, or local');
  return destination;
}

/** An OS account on another host: only its name travels (uids differ between machines). */
export const remoteAccount = (name: string): OsUser => ({ name, uid: -1, gid: -1, home: '' });

/** Environment variables that must never reach a remote command line (ps on the remote shows it). */
const secretEnv = new Set(['PGPASSWORD']);

/**
 * The remote command line: `[runuser -u USER --] env [-C DIR] K=V… PROGRAM ARGS…`, each word
 * single-quoted by shellQuote. `env` keeps the variables out of the shell's reach; runuser drops
 * root to the account (PostgreSQL refuses root) and sets HOME/USER/LOGNAME for it.
 */
export function remoteCommand(inv: Invocation, remoteUser: string): string {
  const argv: string[] = [];
  if (inv.runAs && inv.runAs.name !== remoteUser) {
    if (remoteUser === 'root') argv.push('runuser', '-u', inv.runAs.name, '--');
    else argv.push('sudo', '-n', '-u', inv.runAs.name, '--');
  }
  argv.push('env');
  if (inv.cwd) argv.push('-C', inv.cwd);
  for (const [k, v] of Object.entries(inv.env ?? {})) {
    if (v === undefined) continue;
    if (secretEnv.has(k)) throw new Error(`${k} cannot be sent to a remote command (it would be visible in its argv): use a passfile`);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`invalid environment variable name "${k}"`);
    argv.push(`${k}=${v}`);
  }
  argv.push(inv.program, ...inv.args);
  return argv.map(shellQuote).join(' ');
}

/** ssh's options: non-interactive, bounded connect, one multiplexed connection per host per run. */
export function sshOptions(host: HostSpec, controlDir: string, connectTimeoutSeconds = 10): string[] {
  const opts: string[] = [];
  if (host.sshConfig) opts.push('-F', host.sshConfig);
  opts.push(
    '-o',
    'BatchMode=yes',
    '-o',
    `ConnectTimeout=${connectTimeoutSeconds}`,
    '-o',
    'ControlMaster=auto',
    '-o',
    `ControlPath=${join(controlDir, '%C')}`,
    '-o',
    'ControlPersist=30',
    // stdin/stdout carry data (passfiles, progress): no pseudo-terminal
    '-T',
  );
  return opts;
}

/** What ssh's own failure (exit 255) means, in one sentence, from its stderr. */
export function describeSshFailure(destination: string, stderr: string): string {
  const s = stderr.trim();
  if (/Host key verification failed|No .* host key is known|REMOTE HOST IDENTIFICATION HAS CHANGED/i.test(s))
    return `the host key of ${destination} is not known (or changed): check its fingerprint and add it to known_hosts (pgscale never turns host key checking off)`;
  if (/Permission denied/i.test(s)) return `ssh to ${destination} was refused (no usable key; BatchMode allows no password prompt): set up key authentication`;
  if (/Could not resolve hostname/i.test(s)) return `the host name of ${destination} does not resolve`;
  if (/timed out|No route to host|Connection refused|Network is unreachable/i.test(s)) return `${destination} is unreachable: ${s.split('\n').pop()}`;
  return `ssh to ${destination} failed: ${s.split('\n').slice(-2).join(' ')}`;
}

export class SshRunner implements Runner {
  private readonly controlDir: string;
  private user: Promise<string> | undefined;
  private resolvedUser: string | undefined;

  /** `local` runs ssh; it must not have an audit sink of its own (this one records the remote command). */
  constructor(
    readonly host: HostSpec,
    private readonly local: Runner,
    private readonly audit?: AuditSink,
  ) {
    validateDestination(host.destination);
    this.controlDir = mkdtempSync(join(tmpdir(), 'pgscale-ssh-'));
  }

  private sshInvocation(inv: Invocation, remoteUser: string): Invocation {
    return {
      program: 'ssh',
      args: [...sshOptions(this.host, this.controlDir), '--', this.host.destination, remoteCommand(inv, remoteUser)],
      input: inv.input,
      timeoutMs: inv.timeoutMs,
      signal: inv.signal,
      onStart: inv.onStart,
      onStderr: inv.onStderr,
    };
  }

  /** The account ssh logs in as there: decides between runuser (root) and sudo. */
  remoteUser(): Promise<string> {
    this.user ??= this.local.run(this.sshInvocation({ program: 'id', args: ['-un'] }, '')).then((r) => {
      if (r.exitCode !== 0) {
        this.user = undefined;
        throw new Error(describeSshFailure(this.host.destination, r.stderr));
      }
      this.resolvedUser = r.stdout.trim();
      return this.resolvedUser;
    });
    return this.user;
  }

  private record(inv: Invocation, result: RunResult): void {
    this.audit?.record({
      kind: 'run',
      host: this.host.destination,
      program: inv.program,
      args: inv.args.map(redact),
      cwd: inv.cwd,
      runAs: inv.runAs?.name,
      env: redactEnv(inv.env),
      exitCode: result.exitCode,
      signal: result.signal,
      durationMs: result.durationMs,
    });
  }

  /** ssh failing to connect is a result too: exit 255, stderr saying why. */
  async run(inv: Invocation): Promise<RunResult> {
    let user: string;
    try {
      user = await this.remoteUser();
    } catch (e) {
      const r: RunResult = { exitCode: SSH_FAILURE, signal: null, stdout: '', stderr: (e as Error).message, durationMs: 0 };
      this.record(inv, r);
      return r;
    }
    const result = await this.local.run(this.sshInvocation(inv, user));
    this.record(inv, result);
    return result;
  }

  /** Needs the remote account known: after any run(), or await remoteUser() first. */
  stream(inv: Invocation): StreamingRun {
    if (this.resolvedUser === undefined) throw new Error(`the account on ${this.host.destination} is not known yet: await remoteUser() first`);
    const s = this.local.stream(this.sshInvocation(inv, this.resolvedUser));
    return { ...s, result: s.result.then((r) => (this.record(inv, r), r)) };
  }

  /** The ssh command line for a program that opens its own connection (rsync -e): this runner's options, each word quoted by shellQuote. */
  transportCommand(): string {
    return ['ssh', ...sshOptions(this.host, this.controlDir)].map(shellQuote).join(' ');
  }

  runPipeline(_p: Pipeline): Promise<RunResult> {
    return Promise.reject(new Error('pipelines run on this host only'));
  }

  /** Ends the multiplexed connection and removes its private directory. */
  async close(): Promise<void> {
    if (this.user) {
      await this.local
        .run({ program: 'ssh', args: [...sshOptions(this.host, this.controlDir), '-O', 'exit', '--', this.host.destination] })
        .catch(() => undefined);
    }
    this.removeControlDir();
  }

  removeControlDir(): void {
    rmSync(this.controlDir, { recursive: true, force: true });
  }
}

const open = new Map<string, SshRunner>();
process.on('exit', () => {
  // a ControlPersist master exits on its own once idle; its private directory goes now
  for (const r of open.values()) r.removeControlDir();
});

/**
 * The runner for a host: the local one for `local`, else one multiplexed ssh connection per host
 * for the whole process (checks, steps, resume and rollback share it).
 */
export function runnerFor(host: HostSpec, ctx: { runner: Runner; audit?: AuditSink }): Runner {
  if (isLocal(host)) return ctx.runner;
  const key = JSON.stringify([host.destination, host.sshConfig]);
  let r = open.get(key);
  if (!r) {
    r = new SshRunner(host, new ZxRunner(), ctx.audit);
    open.set(key, r);
  }
  return r;
}

/** Closes every connection runnerFor opened. */
export async function closeRemoteRunners(): Promise<void> {
  const all = [...open.values()];
  open.clear();
  await Promise.all(all.map((r) => r.close()));
}
