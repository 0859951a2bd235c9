/**
 * A step is data (a kind and JSON params) plus check / plan / apply / verify / rollback. Plans are
 * lists of step data, so a reviewed plan file rebuilds exactly the same steps on `pgscale apply`.
 */
import type { AuditSink } from '../audit.js';
import type { Runner } from '../runner.js';

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** What a step will do, exactly, for the plan (markdown/JSON) and for review. */
export type PlannedAction =
  | { kind: 'command'; argv: string[]; runAs?: string; env?: string[]; output?: string; note?: string }
  | { kind: 'sql'; target: string; sql: string; note?: string }
  | {
      kind: 'file';
      path: string;
      change: 'create' | 'modify' | 'delete' | 'rename' | 'mkdir' | 'symlink';
      to?: string;
      mode?: string;
      diff?: string;
      note?: string;
    }
  | { kind: 'service'; action: 'start' | 'stop' | 'restart' | 'reload'; target: string; note?: string };

export type CheckSeverity = 'error' | 'warning' | 'info';

export interface CheckResult {
  name: string;
  severity: CheckSeverity;
  /** A passed check is recorded too: the plan names every check with its result. */
  passed: boolean;
  detail: string;
  /** For a failed check: what the user can do about it (the refusal's hint). */
  fix?: string;
}

/** Check results by outcome: a blocking failure, a warning, a pass, or information. */
export const check = {
  pass: (name: string, detail: string): CheckResult => ({ name, severity: 'error', passed: true, detail }),
  fail: (name: string, detail: string, fix?: string): CheckResult => ({ name, severity: 'error', passed: false, detail, ...(fix ? { fix } : {}) }),
  warn: (name: string, detail: string): CheckResult => ({ name, severity: 'warning', passed: false, detail }),
  info: (name: string, detail: string): CheckResult => ({ name, severity: 'info', passed: true, detail }),
};

export interface VerifyResult {
  ok: boolean;
  detail: string;
}

export interface Progress {
  /** A one-line status ("12.3 GB of ~40 GB"). */
  message(text: string): void;
  /** Bytes done of an estimated total, for an ETA bar. */
  bytes(done: number, total: number | undefined): void;
}

export interface StepContext {
  runner: Runner;
  audit: AuditSink;
  /** Aborted on Ctrl-C / SIGTERM: long steps stop their programs and throw. */
  signal: AbortSignal;
  progress: Progress;
  /** Outputs recorded by earlier steps of this run, by step id. */
  outputs: ReadonlyMap<string, JsonObject>;
  /** This run's private directory (0700) under the state dir. */
  runDir: string;
  /** Journals a process group so that a resume can stop what a killed run left behind. */
  trackProcess: (pgid: number) => void;
}

export interface StepDefinition<P extends JsonObject = JsonObject> {
  kind: string;
  title(params: P): string;
  /** The cluster is unavailable while this step runs. */
  downtime?: boolean | ((params: P) => boolean);
  /** After this step completes, rollback cannot restore the previous state (only a backup can). */
  pointOfNoReturn?: boolean | ((params: P) => boolean);
  /** Preconditions, before anything changes. Never has side effects. */
  check(ctx: StepContext, params: P): Promise<CheckResult[]>;
  /** The exact commands, SQL and file changes apply() will make. Never has side effects. */
  plan(ctx: StepContext, params: P): Promise<PlannedAction[]>;
  /** Makes the change; returns outputs journaled for later steps and for resume. */
  apply(ctx: StepContext, params: P): Promise<JsonObject | void>;
  /** Postcondition. If it already holds, the step is skipped (this is what makes resume safe). */
  verify(ctx: StepContext, params: P): Promise<VerifyResult>;
  /** Why undoing this step now would do harm (checked for every step before a rollback changes anything); undefined when it may be undone. */
  refusesRollback?(ctx: StepContext, params: P): Promise<string | undefined>;
  /**
   * What undoing this step now would lose (writes the cluster acknowledged since it opened), in
   * plain words with the facts: shown in the rollback's plan and at its prompt, and it makes the
   * rollback need a "yes". Undefined when nothing would be lost.
   */
  rollbackLoses?(ctx: StepContext, params: P): Promise<string | undefined>;
  /** Undo; absent when a step cannot be undone. Returns what it kept instead of deleting, and where (for the report). */
  rollback?(ctx: StepContext, params: P): Promise<string | void>;
  /** How the step is undone, in words, for the plan. */
  rollbackNote(params: P): string;
  /** Expected duration in seconds, for the plan's downtime estimate. */
  estimateSeconds?(params: P): number;
}

/** A step as data: what the plan file holds. */
export interface StepData {
  id: string;
  kind: string;
  params: JsonObject;
}

const registry = new Map<string, StepDefinition<JsonObject>>();

export function defineStep<P extends JsonObject>(def: StepDefinition<P>): StepDefinition<P> {
  if (registry.has(def.kind)) throw new Error(`step kind ${def.kind} defined twice`);
  registry.set(def.kind, def as unknown as StepDefinition<JsonObject>);
  return def;
}

export function stepDefinition(kind: string): StepDefinition<JsonObject> {
  const def = registry.get(kind);
  if (!def) throw new Error(`unknown step kind "${kind}"`);
  return def;
}

export const flag = <P>(v: boolean | ((p: P) => boolean) | undefined, p: P): boolean => (typeof v === 'function' ? v(p) : Boolean(v));
