/**
 * A plan: the ordered steps of an operation, each with its checks and exact actions, plus a
 * fingerprint of the state it was made from. `--plan-out` writes it; `pgscale apply` re-checks
 * the fingerprint and re-plans every step, refusing if anything differs from what was reviewed.
 */
import { readFileSync } from 'node:fs';
import type { ClusterAccess } from '../cluster/access.js';
import { join } from 'node:path';
import type { RunReport } from './execute.js';
import { flag, stepDefinition, type CheckResult, type Json, type JsonObject, type PlannedAction, type StepContext, type StepData } from './step.js';

export const planFormat = 'pgscale-plan/1';

export type Fingerprint = Record<string, Json>;

export interface PlannedStep extends StepData {
  title: string;
  downtime: boolean;
  pointOfNoReturn: boolean;
  actions: PlannedAction[];
  checks: CheckResult[];
  rollback: string;
  estimateSeconds: number;
}

export interface Plan {
  format: typeof planFormat;
  operation: string;
  /** The operation's own parameters: what `apply` needs to fingerprint the target again. */
  params: JsonObject;
  /** systemIdentifier: the cluster's own identity (pg_control), whatever path or DSN reached it; the run lock is keyed by it. */
  target: { description: string; lockKey: string; systemIdentifier?: string };
  createdAt: string;
  fingerprint: Fingerprint;
  summary: string;
  steps: PlannedStep[];
  /** Seconds the cluster is unavailable, summed over downtime steps. */
  downtimeSeconds: number;
  /** Id of the step after which rollback cannot restore the old state, if any. */
  pointOfNoReturn: string | null;
  risks: string[];
}

/** An operation (backup, upgrade…): how to turn its parameters into steps and a fingerprint. */
export interface Operation<P extends JsonObject = JsonObject> {
  name: string;
  describeTarget(params: P): { description: string; lockKey: string };
  /** How to reach the cluster's server for the run's server-side lock (absent: the lock file alone). */
  serverAccess?(params: P): ClusterAccess;
  summary(params: P): string;
  steps(params: P): StepData[];
  fingerprint(ctx: StepContext, params: P): Promise<Fingerprint>;
  /** What a person reads once a run of it ends (text), with the same facts as data for --json: printed after the run, however it was started. */
  closingReport?(run: RunReport, params: P): ClosingReport;
}

export interface ClosingReport extends JsonObject {
  text: string;
}

const operations = new Map<string, Operation>();

export function defineOperation<P extends JsonObject>(op: Operation<P>): Operation<P> {
  operations.set(op.name, op);
  return op;
}

export function operation(name: string): Operation {
  const op = operations.get(name);
  if (!op) throw new Error(`unknown operation "${name}"`);
  return op;
}

/**
 * The system identifier of a cluster: the first 8 bytes of global/pg_control (uint64, host byte
 * order), readable whether the server runs or not; undefined when the file cannot be read.
 */
export function readSystemIdentifier(dataDir: string): string | undefined {
  try {
    const control = readFileSync(join(dataDir, 'global', 'pg_control'));
    return control.length >= 8 ? control.readBigUInt64LE(0).toString() : undefined;
  } catch {
    return undefined;
  }
}

/** The target's system identifier: from the fingerprint (asked of the server), else from a local data directory's pg_control. */
function targetIdentity(target: { lockKey: string }, fingerprint: Fingerprint): string | undefined {
  if (typeof fingerprint.systemIdentifier === 'string' && fingerprint.systemIdentifier) return fingerprint.systemIdentifier;
  return target.lockKey.startsWith('cluster:') ? readSystemIdentifier(target.lockKey.slice('cluster:'.length)) : undefined;
}

/** Runs every check and plan function: no side effects, so --dry-run is this and nothing more. */
export async function buildPlan(op: Operation, params: JsonObject, ctx: StepContext): Promise<Plan> {
  const steps: PlannedStep[] = [];
  for (const data of op.steps(params)) {
    const def = stepDefinition(data.kind);
    steps.push({
      ...data,
      title: def.title(data.params),
      downtime: flag(def.downtime, data.params),
      pointOfNoReturn: flag(def.pointOfNoReturn, data.params),
      checks: await def.check(ctx, data.params),
      actions: await def.plan(ctx, data.params),
      rollback: def.rollbackNote(data.params),
      estimateSeconds: Math.round(def.estimateSeconds?.(data.params) ?? 0),
    });
  }
  const checks = steps.flatMap((s) => s.checks);
  const fingerprint = await op.fingerprint(ctx, params);
  const target = op.describeTarget(params);
  const systemIdentifier = targetIdentity(target, fingerprint);
  return {
    format: planFormat,
    operation: op.name,
    params,
    target: systemIdentifier ? { ...target, systemIdentifier } : target,
    createdAt: new Date().toISOString(),
    fingerprint,
    summary: op.summary(params),
    steps,
    downtimeSeconds: steps.filter((s) => s.downtime).reduce((a, s) => a + s.estimateSeconds, 0),
    pointOfNoReturn: steps.find((s) => s.pointOfNoReturn)?.id ?? null,
    risks: checks.filter((c) => !c.passed && c.severity !== 'info').map((c) => `${c.severity === 'error' ? 'BLOCKER' : 'warning'}: ${c.name}: ${c.detail}`),
  };
}

export const failedChecks = (plan: Plan): CheckResult[] => plan.steps.flatMap((s) => s.checks).filter((c) => !c.passed && c.severity === 'error');

/** One fact of a fingerprint that differs from the reviewed plan's: where it sits (keys from the top), and both values. */
export interface FactDrift {
  fact: string[];
  planned: Json | undefined;
  now: Json | undefined;
}

const isObject = (v: Json | undefined): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The facts that differ, down to the leaf: one file's hash out of a map of them, not the whole map. */
export function fingerprintDrift(reviewed: Fingerprint, now: Fingerprint, at: string[] = []): FactDrift[] {
  const keys = [...new Set([...Object.keys(reviewed), ...Object.keys(now)])].sort();
  return keys.flatMap((k) => {
    const [a, b] = [reviewed[k], now[k]];
    if (JSON.stringify(a) === JSON.stringify(b)) return [];
    if (isObject(a) && isObject(b)) return fingerprintDrift(a, b, [...at, k]);
    return [{ fact: [...at, k], planned: a, now: b }];
  });
}

const SHA256 = /^[0-9a-f]{64}$/;
const describeValue = (v: Json | undefined) =>
  v === undefined ? '(absent)' : typeof v === 'string' && SHA256.test(v) ? `sha256 ${v.slice(0, 8)}…` : JSON.stringify(v);

/** One line for people: a file by its path ("… changed since the plan (sha256 a1b2… → c3d4…)"), another fact by its keys. */
export function describeDrift(d: FactDrift): string {
  const leaf = d.fact.at(-1)!;
  const name = leaf.startsWith('/') ? leaf : d.fact.join('.');
  if (d.planned === undefined || d.planned === null) return `${name} appeared since the plan (now ${describeValue(d.now)})`;
  if (d.now === undefined || d.now === null) return `${name} is gone since the plan (was ${describeValue(d.planned)})`;
  return `${name} changed since the plan (${describeValue(d.planned)} → ${describeValue(d.now)})`;
}

/** Steps whose exact actions would differ from the reviewed plan's. */
export function actionDrift(reviewed: Plan, now: Plan): string[] {
  const out: string[] = [];
  const nowById = new Map(now.steps.map((s) => [s.id, s]));
  for (const s of reviewed.steps) {
    const n = nowById.get(s.id);
    if (!n) out.push(`step ${s.id}: no longer part of the plan`);
    else if (JSON.stringify(n.actions) !== JSON.stringify(s.actions))
      out.push(`step ${s.id} (${s.title}): its commands or file changes differ from the reviewed plan`);
  }
  for (const n of now.steps) if (!reviewed.steps.some((s) => s.id === n.id)) out.push(`step ${n.id}: new since the plan was reviewed`);
  return out;
}
