/**
 * Commands that change a cluster: decide (parameters), plan (checks + exact actions), show
 * (markdown, or the plan as JSON), confirm, apply through the journaled executor.
 */
import { Command, Flags } from '@oclif/core';
import { join } from 'node:path';
import { PgscaleCommand } from './command.js';
import { ExitCode, PgscaleError, refused } from './errors.js';
import { startRun, resumeRun, rollbackRun, type ExecuteOptions, type RunReport } from './pipeline/execute.js';
import { buildPlan, failedChecks, operation, type Plan } from './pipeline/plan.js';
import { writePlanFile } from './pipeline/planFile.js';
import { planMarkdown } from './pipeline/render.js';
import { askToContinue, interruptSignal, progressMode } from './pipeline/session.js';
import { defaultStateDir, ensurePrivateDir } from './pipeline/stateDir.js';
import type { JsonObject, StepContext } from './pipeline/step.js';

export interface OperationResult {
  plan: Plan;
  applied: boolean;
  planFile?: string;
  run?: RunReport;
}

export abstract class OperationCommand<T extends typeof Command> extends PgscaleCommand<T> {
  static override baseFlags = {
    ...PgscaleCommand.baseFlags,
    'state-dir': Flags.string({
      summary: 'Where runs, journals and audit logs live (default /var/lib/pgscale as root, else $XDG_STATE_HOME/pgscale).',
      helpGroup: 'GLOBAL',
    }),
  };

  protected get stateDir(): string {
    return ensurePrivateDir(this.stateDirPath);
  }

  /** The state directory's path, not created: planning and --dry-run leave no trace. */
  protected get stateDirPath(): string {
    return (this.flags as { 'state-dir'?: string })['state-dir'] ?? defaultStateDir();
  }

  /** A context for check() and plan(): they have no side effects, so nothing here can change anything. */
  protected planningContext(): StepContext {
    return {
      runner: this.runner,
      audit: this.audit,
      signal: new AbortController().signal,
      progress: { message: () => undefined, bytes: () => undefined },
      outputs: new Map(),
      runDir: this.stateDirPath,
      trackProcess: () => undefined,
    };
  }

  protected executeOptions(signal: AbortSignal): ExecuteOptions {
    return {
      stateDir: this.stateDir,
      runner: this.runner,
      audit: this.audit,
      progress: progressMode(this.jsonEnabled()),
      signal,
      confirm: this.canPrompt ? askToContinue : undefined,
      assumeYes: this.flags.yes,
      onRunDir: (dir) => this.auditTo(join(dir, 'audit.jsonl')),
    };
  }

  /** Runs an executor entry point with Ctrl-C handled. */
  protected async withInterrupts<R>(run: (opts: ExecuteOptions) => Promise<R>): Promise<R> {
    const interrupt = interruptSignal((m) => process.stderr.write(`\n${m}\n`));
    try {
      return await run(this.executeOptions(interrupt.signal));
    } finally {
      interrupt.dispose();
    }
  }

  protected async planOperation(name: string, params: JsonObject): Promise<Plan> {
    return buildPlan(operation(name), params, this.planningContext());
  }

  /** Shows, saves and (unless --dry-run) executes a plan. */
  protected async runPlan(plan: Plan, planOut: string | undefined): Promise<OperationResult> {
    if (planOut) writePlanFile(planOut, plan);
    const blockers = failedChecks(plan);
    if (this.flags['dry-run']) {
      if (!this.jsonEnabled()) this.log(planMarkdown(plan));
      if (blockers.length) process.exitCode = ExitCode.Refused;
      return { plan, applied: false, planFile: planOut };
    }
    if (blockers.length) {
      const fixes = [...new Set(blockers.flatMap((c) => (c.fix ? [c.fix] : [])))];
      throw refused(
        `checks failed:\n${blockers.map((c) => `  - ${c.name}: ${c.detail}`).join('\n')}`,
        `nothing was changed; ${fixes.length ? fixes.join('; ') : 'see the plan with --dry-run'}`,
      );
    }
    if (!this.jsonEnabled()) {
      this.logToStderr(
        `${plan.summary}\n${plan.steps.map((s, i) => `  ${i + 1}. ${s.title}${s.downtime ? ' [downtime]' : ''}${s.pointOfNoReturn ? ' [point of no return]' : ''}`).join('\n')}`,
      );
      for (const w of plan.risks) this.logToStderr(`  ${w}`);
    }
    const run = await this.withInterrupts((opts) => startRun(plan, opts));
    return { plan, applied: true, planFile: planOut, run };
  }

  protected resume(runId: string): Promise<RunReport> {
    return this.withInterrupts((opts) => resumeRun(runId, opts));
  }

  protected rollback(runId: string): Promise<RunReport> {
    return this.withInterrupts((opts) => rollbackRun(runId, opts));
  }
}

export function assertCompleted(report: RunReport): RunReport {
  if (report.status !== 'completed' && report.status !== 'rolled-back')
    throw new PgscaleError(`run ${report.runId} ended ${report.status}`, ExitCode.FailedAfterChange);
  return report;
}
