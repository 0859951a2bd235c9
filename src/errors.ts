/**
 * Every failure pgscale reports on purpose carries one of these exit codes (README: "Exit codes").
 * Anything else that escapes is a bug and exits with InternalError.
 */
export const ExitCode = {
  Ok: 0,
  InternalError: 1,
  /** Bad flags or input: nothing was attempted. */
  BadInput: 2,
  /** A check refused the operation (precondition, drift, lock): nothing was changed. */
  Refused: 3,
  /** An operation failed before it changed anything. */
  FailedNoChange: 4,
  /** An operation failed after it changed something: `pgscale resume` or `pgscale rollback`. */
  FailedAfterChange: 5,
  /** Stopped by SIGINT/SIGTERM at a safe point. */
  Interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export const exitCodeName: Record<ExitCode, string> = {
  0: 'ok',
  1: 'internal-error',
  2: 'bad-input',
  3: 'refused',
  4: 'failed-no-change',
  5: 'failed-after-change',
  130: 'interrupted',
};

export class PgscaleError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    /** What the user can do about it, one sentence. */
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'PgscaleError';
  }
}

/**
 * A plan refused by its own checks under --dry-run: the plan exists, so --json prints it beside
 * the error (each check with its outcome), for a reviewer to see what is blocked and why.
 */
export class PlanRefused extends PgscaleError {
  constructor(
    message: string,
    hint: string,
    readonly plan: object,
  ) {
    super(message, ExitCode.Refused, hint);
  }
}

/** `apply` refused because the cluster changed since the plan: --json prints what changed as data beside the error. */
export class PlanDrift extends PgscaleError {
  constructor(
    message: string,
    hint: string,
    readonly drift: object,
  ) {
    super(message, ExitCode.Refused, hint);
  }
}

export const badInput = (message: string, hint?: string) => new PgscaleError(message, ExitCode.BadInput, hint);
export const refused = (message: string, hint?: string) => new PgscaleError(message, ExitCode.Refused, hint);

/** oclif's parse errors end with a generic pointer to --help; the hint names the command's help instead. */
export function parseFailure(e: Error, commandId: string): PgscaleError {
  if (e instanceof PgscaleError) return e;
  const message = e.message
    .replace(/\nSee more help with --help\s*$/, '')
    .replace(/^The following errors? occurred:\s*/, '')
    .trim()
    .replace(/\s*\n\s*/g, ': ');
  return badInput(message, `see \`pgscale ${commandId.replace(/:/g, ' ')} --help\` for the flags and arguments it takes`);
}

/** The hint of an error that names none: what to do next for its exit code. */
export const defaultHint: Record<ExitCode, string> = {
  0: '',
  1: 'this is a bug in pgscale: please report it with the output of the same command run with --verbose',
  2: 'nothing was attempted: correct the input named above (each command documents its flags under --help)',
  3: 'nothing was changed: fix what the message names and run again (the same command with --dry-run shows the whole plan)',
  4: 'nothing was changed: fix the cause named above and run again (--verbose shows every program run and statement)',
  5: 'see `pgscale runs`: fix the cause, then resume the run, or roll it back',
  130: 'see `pgscale runs`: resume the run or roll it back',
};

/** What reaches the user: a PgscaleError as it is; anything else is a bug (exit 1) with what to do about it. */
export function asPgscaleError(e: Error & { exitCode?: number }): PgscaleError {
  if (e instanceof PgscaleError) {
    const code = e.exitCode === ExitCode.Ok ? ExitCode.InternalError : e.exitCode;
    return new PgscaleError(e.message, code, e.hint ?? defaultHint[code]);
  }
  return new PgscaleError(e.message || String(e), ExitCode.InternalError, defaultHint[ExitCode.InternalError]);
}
