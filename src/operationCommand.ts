/**
 * Commands that change a cluster: decide (parameters), plan (checks + exact actions), show
 * (markdown, or the plan as JSON), confirm, apply through the journaled executor.
 */
import { Command } from '@oclif/core/command';
import * as Flags from '@oclif/core/flags';
import { join } from 'node:path';
import { PgscaleCommand } from './command.js';
import { ExitCode, PgscaleError, PlanRefused, refused } from './errors.js';
import { startRun, resumeRun, rollbackRun, type ExecuteOptions, type RunReport } from './pipeline/execute.js';
import { buildPlan, failedChecks, operation, type ClosingReport, type Plan } from './pipeline/plan.js';
import { writePlanFile } from './pipeline/planFile.js';
import { planMarkdown } from './pipeline/render.js';
import { askToContinue, interruptSignal, progressMode } from './pipeline/session.js';
import { defaultStateDir } from './pipeline/stateDir.js';
import type { JsonObject, StepContext } from './pipeline/step.js';

export interface OperationResult {
  plan: Plan;
  applied: boolean;
  planFile?: string;
  run?: RunReport;
  /** The operation's closing report of the run (upgrade: downtime as clients saw it, next steps). */
  report?: ClosingReport;
}

/** --plan-out of every command that plans: a plan for review, nothing changed (init makes it a dry run). */
export const planOutFlag = Flags.string({
  summary: 'Write the plan (JSON, 0600) for review and change nothing (implies --dry-run); apply it later with `pgscale apply FILE`.',
});

export abstract class OperationCommand<T extends typeof Command> extends PgscaleCommand<T> {
  static override baseFlags = {
    ...PgscaleCommand.baseFlags,
    'state-dir': Flags.string({
      summary:
        'Where runs, journals and audit logs live (default /var/lib/pgscale as root, else $XDG_STATE_HOME/pgscale; or PGSCALE_STATE_DIR). Cluster locks are host-wide whatever this says.',
      env: 'PGSCALE_STATE_DIR',
      helpGroup: 'GLOBAL',
    }),
  };

  public override async init(): Promise<void> {
    await super.init();
    // writing a plan for review is planning: nothing runs until `pgscale apply FILE`
    if (this.planOut) this.flags['dry-run'] = true;
  }

  /** --plan-out, for the commands that take it. */
  private get planOut(): string | undefined {
    return (this.flags as { 'plan-out'?: string })['plan-out'];
  }

  /** The state directory's path. Nothing creates it but a run that starts (refusals and --dry-run leave no trace). */
  protected get stateDir(): string {
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
      runDir: this.stateDir,
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
      dryRun: this.flags['dry-run'],
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

  /** Shows, saves (--plan-out, a dry run) and, unless --dry-run, executes a plan. */
  protected async runPlan(plan: Plan, planOut: string | undefined): Promise<OperationResult> {
    if (planOut) writePlanFile(planOut, plan);
    const result = await this.executePlan(plan, planOut);
    if (planOut && !this.jsonEnabled()) this.logToStderr(`plan written to ${planOut}; nothing was changed; apply it with \`pgscale apply ${planOut}\``);
    return result;
  }

  /** Executes a plan; under --dry-run shows it and checks that it could start (checks, lock) without changing anything. */
  protected async executePlan(plan: Plan, planFile: string | undefined): Promise<OperationResult> {
    const blockers = failedChecks(plan);
    if (this.flags['dry-run'] && !this.jsonEnabled()) this.log(planMarkdown(plan));
    if (blockers.length) {
      const fixes = [...new Set(blockers.flatMap((c) => (c.fix ? [c.fix] : [])))];
      const message = `checks failed:\n${blockers.map((c) => `  - ${c.name}: ${c.detail}`).join('\n')}`;
      const fix = `nothing was changed; ${fixes.length ? fixes.join('; ') : 'fix what the checks name'}`;
      // under --dry-run too a plan that would be refused is an error (exit 3); --json shows the plan with it
      if (this.flags['dry-run']) throw new PlanRefused(message, `${fix} (the whole plan is shown ${this.jsonEnabled() ? 'with this error' : 'above'})`, plan);
      throw refused(message, `${fix} (the whole plan: the same command with --dry-run)`);
    }
    if (this.flags['dry-run']) {
      // the executor's dry run: refused if another run holds the cluster, otherwise nothing happens
      await this.withInterrupts((opts) => startRun(plan, opts));
      return { plan, applied: false, planFile };
    }
    if (!this.jsonEnabled()) {
      this.logToStderr(
        `${plan.summary}\n${plan.steps.map((s, i) => `  ${i + 1}. ${s.title}${s.downtime ? ' [downtime]' : ''}${s.pointOfNoReturn ? ' [point of no return]' : ''}`).join('\n')}`,
      );
      for (const w of plan.risks) this.logToStderr(`  ${w}`);
    }
    const run = await this.withInterrupts((opts) => startRun(plan, opts));
    // `upgrade` and `apply` of its plan file alike: the report closes the run's output
    const report = operation(plan.operation).closingReport?.(run, plan.params);
    if (report && !this.jsonEnabled()) this.log(report.text);
    return { plan, applied: true, planFile, run, ...(report ? { report } : {}) };
  }

  protected resume(runId: string): Promise<RunReport> {
    return this.showDryRun(
      this.withInterrupts((opts) => resumeRun(runId, opts)),
      'resume',
    );
  }

  protected rollback(runId: string): Promise<RunReport> {
    return this.showDryRun(
      this.withInterrupts((opts) => rollbackRun(runId, opts)),
      'rollback',
    );
  }

  /** A dry run of resume or rollback, for people: the steps it would take, in order. */
  private async showDryRun(pending: Promise<RunReport>, verb: string): Promise<RunReport> {
    const report = await pending;
    if (report.dryRun && !this.jsonEnabled()) {
      this.log(`dry run: \`pgscale ${verb} ${report.runId}\` (${report.operation}, ${report.status}) would:`);
      for (const [i, s] of report.dryRun.entries()) this.log(`  ${i + 1}. ${s.title} (${s.id}): ${s.action}`);
      if (report.dryRun.length === 0) this.log('  nothing: no step of this run changed anything');
      for (const w of report.warnings ?? []) this.log(w);
      this.log('nothing was changed');
    } else if (!this.jsonEnabled()) {
      for (const w of report.warnings ?? []) this.log(w);
      for (const k of report.kept ?? []) this.log(`kept: ${k}`);
    }
    return report;
  }
}

export function assertCompleted(report: RunReport): RunReport {
  if (report.status !== 'completed' && report.status !== 'rolled-back')
    throw new PgscaleError(`run ${report.runId} ended ${report.status}`, ExitCode.FailedAfterChange);
  return report;
}
