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

export const badInput = (message: string, hint?: string) => new PgscaleError(message, ExitCode.BadInput, hint);
export const refused = (message: string, hint?: string) => new PgscaleError(message, ExitCode.Refused, hint);
