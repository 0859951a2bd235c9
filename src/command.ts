/**
 * The base of every pgscale command: the shared flags, the error-to-exit-code mapping, and the
 * rule that nothing prompts without a TTY or under --json/--yes.
 */
import { Command } from '@oclif/core/command';
import * as Flags from '@oclif/core/flags';
import type { Interfaces } from '@oclif/core';
import { FileAuditLog, redact, type AuditEvent, type AuditSink } from './audit.js';
import { resolveConnection, type ConnectionSettings } from './connection.js';
import { ExitCode, PlanDrift, PlanRefused, asPgscaleError, exitCodeName, parseFailure } from './errors.js';
import { HostRoot } from './host/hostRoot.js';
import { ZxRunner, type Runner } from './runner.js';

// oclif's own bounds for parse(): any flag and argument values
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type FlagOutput = { [name: string]: any };
type ArgOutput = FlagOutput;

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof PgscaleCommand)['baseFlags'] & T['flags']>;

/** Echoes what runs to stderr under --verbose, and forwards to the run's audit log if any. */
class AuditFanout implements AuditSink {
  readonly sinks: AuditSink[] = [];
  constructor(private readonly verbose: (line: string) => void) {}
  record(event: AuditEvent): void {
    if (event.kind === 'run')
      this.verbose(
        `$ ${[event.host ? `[on ${event.host}]` : '', event.runAs ? `[as ${event.runAs}]` : '', event.program, ...event.args].filter(Boolean).join(' ')}  → ${event.exitCode ?? event.signal} (${event.durationMs} ms)`,
      );
    else if (event.kind === 'sql')
      this.verbose(`sql ${event.target}: ${event.sql.replace(/\s+/g, ' ').slice(0, 160)}${event.error ? `  → ${event.error}` : ''} (${event.durationMs} ms)`);
    for (const s of this.sinks) s.record(event);
  }
}

export abstract class PgscaleCommand<T extends typeof Command> extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    pgdata: Flags.string({ char: 'D', summary: 'Data directory of the cluster (default: PGDATA, or detected).', helpGroup: 'CLUSTER' }),
    bindir: Flags.string({ summary: 'Directory holding postgres, pg_ctl, initdb… for that cluster.', helpGroup: 'CLUSTER' }),
    dsn: Flags.string({
      summary:
        'libpq connection string or URI (or PGSCALE_DSN); PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSFILE and PGSERVICE are honoured too. A password here is used, but ps shows it: prefer PGPASSFILE.',
      env: 'PGSCALE_DSN',
      helpGroup: 'CLUSTER',
    }),
    'host-root': Flags.directory({
      summary: 'Read host facts (/proc, /sys, cgroups) under this root instead of /.',
      default: '/',
      exists: true,
      helpGroup: 'GLOBAL',
      hidden: false,
    }),
    yes: Flags.boolean({ char: 'y', summary: 'Answer yes to every confirmation; never prompt.', default: false, helpGroup: 'GLOBAL' }),
    'dry-run': Flags.boolean({ summary: 'Show what would be done and change nothing.', default: false, helpGroup: 'GLOBAL' }),
    verbose: Flags.boolean({ char: 'v', summary: 'Print every program run and SQL statement to stderr.', default: false, helpGroup: 'GLOBAL' }),
  };

  protected flags!: BaseFlags<T>;
  protected audit!: AuditFanout;
  protected runner!: Runner;

  public override async init(): Promise<void> {
    await super.init();
    const ctor = this.ctor as typeof PgscaleCommand;
    const { flags } = await this.parse({
      flags: ctor.flags,
      baseFlags: ctor.baseFlags,
      args: ctor.args,
      strict: ctor.strict,
      enableJsonFlag: ctor.enableJsonFlag,
    });
    this.flags = flags as BaseFlags<T>;
    try {
      // learns the --dsn password (if any) now, so that no later message can carry it
      const { password } = resolveConnection(this.flags.dsn);
      // every connection of the run (ours and the programs') then has it, through the environment:
      // plans never hold it, argv of the programs never carries it
      if (password && this.flags.dsn && process.env.PGPASSWORD === undefined) {
        process.env.PGPASSWORD = password;
        this.warn('a password in --dsn is visible to every user of this host (ps): put it in a password file (PGPASSFILE, mode 0600) instead');
      }
    } catch {
      /* an invalid --dsn is reported by the command that needs it */
    }
    this.audit = new AuditFanout((line) => {
      if (this.flags.verbose) process.stderr.write(redact(line) + '\n');
    });
    this.runner = new ZxRunner(this.audit);
  }

  /** Starts writing the audit log of a run to a file (0600), in addition to --verbose. */
  protected auditTo(path: string): void {
    this.audit.sinks.push(new FileAuditLog(path));
  }

  protected get hostRoot(): HostRoot {
    return new HostRoot(this.flags['host-root']);
  }

  protected connection(): ConnectionSettings {
    return resolveConnection(this.flags.dsn);
  }

  /** Prompts are allowed only for a person at a terminal who did not ask for --yes or --json. */
  protected get canPrompt(): boolean {
    return Boolean(process.stdin.isTTY && process.stdout.isTTY) && !this.flags.yes && !this.jsonEnabled();
  }

  /** Every parse failure (unknown flag, bad value, missing file argument) is bad input: exit 2, nothing attempted. */
  protected override async parse<F extends FlagOutput, B extends FlagOutput, A extends ArgOutput>(
    options?: Interfaces.Input<F, B, A>,
    argv?: string[],
  ): Promise<Interfaces.ParserOutput<F, B, A>> {
    try {
      return await super.parse(options, argv);
    } catch (e) {
      throw parseFailure(e as Error, this.id ?? '');
    }
  }

  protected override async catch(thrown: Error & { exitCode?: number }): Promise<unknown> {
    const err = asPgscaleError(thrown);
    process.exitCode = err.exitCode;
    const message = redact(err.message);
    const hint = redact(err.hint ?? '');
    if (this.jsonEnabled()) {
      const error = { message, hint, exitCode: err.exitCode, kind: exitCodeName[err.exitCode] };
      // one document: a dry run's plan (when one was made) and why it is blocked; otherwise the error alone
      this.logJson(thrown instanceof PlanRefused ? { plan: thrown.plan, error } : thrown instanceof PlanDrift ? { drift: thrown.drift, error } : { error });
      return undefined;
    }
    process.stderr.write(`pgscale: error: ${message}\n${hint ? `hint: ${hint}\n` : ''}`);
    if (err.exitCode === ExitCode.InternalError && this.flags?.verbose && thrown.stack) process.stderr.write(redact(thrown.stack) + '\n');
    return this.exit(err.exitCode);
  }
}
