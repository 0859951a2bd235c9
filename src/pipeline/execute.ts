/**
 * Runs a plan's steps with a journal: start, resume and rollback. Progress is a listr2 task list
 * (live on a TTY, timestamped lines without one, nothing under --json). Ctrl-C stops at the next
 * safe point with the journal consistent.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { Listr, PRESET_TIMER, PRESET_TIMESTAMP, type ListrRendererValue } from 'listr2';
import type { AuditSink } from '../audit.js';
import { ExitCode, PgscaleError, refused } from '../errors.js';
import { formatBytes, formatDuration } from '../format.js';
import type { Runner } from '../runner.js';
import {
  acquireLock,
  appendEvent,
  lockConflict,
  newRun,
  newRunId,
  processGroupAlive,
  readRun,
  releaseLock,
  runLockKey,
  type RunState,
  type RunStatus,
  type StepState,
} from './journal.js';
import { defaultStateDir } from './stateDir.js';
import { operation, type Plan, type PlannedStep } from './plan.js';
import { ServerLock, ServerLockHeld, serverLockConflict } from './serverLock.js';
import { stepDefinition, type JsonObject, type Progress, type StepContext } from './step.js';

export type ProgressMode = 'tty' | 'plain' | 'silent';

export interface ExecuteOptions {
  stateDir: string;
  runner: Runner;
  audit: AuditSink;
  progress: ProgressMode;
  signal: AbortSignal;
  /** Asks a person; absent when nobody can be asked (no TTY, --json, --yes). */
  confirm?: (question: string) => Promise<boolean>;
  /** --yes: confirmations count as given. */
  assumeYes: boolean;
  /** Called once the run directory exists (the command attaches the run's audit log there). */
  onRunDir?: (dir: string) => void;
  /**
   * --dry-run: every entry point makes its refusal checks, then reports what it would do and
   * returns. Nothing is written, no lock is taken, no program is started: this is the one place
   * where --dry-run is enforced for start, resume and rollback.
   */
  dryRun: boolean;
}

/** What a dry run would do, step by step. */
export interface DryRunStep {
  id: string;
  title: string;
  /** "run", "verify, then run if needed" (resume), "undo" (rollback), "keep" (already done). */
  action: string;
}

export interface RunReport {
  runId: string;
  runDir: string;
  operation: string;
  status: RunStatus;
  steps: { id: string; title: string; state: StepState }[];
  outputs: Record<string, JsonObject>;
  durationSeconds: number;
  /** Present only for --dry-run: what the run would do; nothing was done. */
  dryRun?: DryRunStep[];
  /** A rollback's warnings: what undoing would lose (writes acknowledged by a cluster it stops). */
  warnings?: string[];
  /** What a rollback kept instead of deleting, and where. */
  kept?: string[];
}

/** The command that continues or undoes a run, with --state-dir when the run is not in the default one. */
export function runCommandLine(verb: 'resume' | 'rollback', runId: string, stateDir: string): string {
  return `pgscale ${verb} ${runId}${stateDir === defaultStateDir() ? '' : ` --state-dir ${stateDir}`}`;
}

function report(
  state: Pick<RunState, 'id' | 'dir' | 'plan' | 'status' | 'steps' | 'outputs'> & { kept?: string[] },
  started: number,
  dryRun?: DryRunStep[],
  warnings: string[] = [],
): RunReport {
  return {
    runId: state.id,
    runDir: state.dir,
    operation: state.plan.operation,
    status: state.status,
    steps: state.plan.steps.map((s) => ({ id: s.id, title: s.title, state: state.steps.get(s.id) ?? 'pending' })),
    outputs: Object.fromEntries(state.outputs),
    durationSeconds: Math.round((performance.now() - started) / 100) / 10,
    ...(dryRun ? { dryRun } : {}),
    ...(warnings.length ? { warnings } : {}),
    ...(state.kept?.length ? { kept: state.kept } : {}),
  };
}

/** The part of a listr2 task wrapper that steps see. */
type OutputTarget = { output: string };
type TaskView = OutputTarget & { title: string; skip(message?: string): void };

/** Runs tasks in order under the renderer the output mode calls for. */
async function runTaskList(tasks: { title: string; run: (task: TaskView) => Promise<void> }[], mode: ProgressMode): Promise<void> {
  const list = new Listr<unknown, ListrRendererValue, ListrRendererValue>(
    tasks.map((t) => ({ title: t.title, task: (_ctx: unknown, wrapper: TaskView) => t.run(wrapper) })),
    {
      concurrent: false,
      exitOnError: true,
      // Ctrl-C is ours (session.ts): listr2's own handler would exit 127 before the journal records the interruption
      registerSignalListeners: false,
      renderer: mode === 'tty' ? 'default' : mode === 'plain' ? 'simple' : 'silent',
      fallbackRenderer: 'simple',
      rendererOptions: { timer: PRESET_TIMER, timestamp: mode === 'plain' ? PRESET_TIMESTAMP : undefined, outputBar: 1, persistentOutput: false },
      fallbackRendererOptions: { timer: PRESET_TIMER, timestamp: PRESET_TIMESTAMP },
    },
  );
  await list.run();
}

/** Throttled progress: a live bar on a TTY, a line every few seconds in a log. */
function progressFor(task: OutputTarget, mode: ProgressMode): Progress {
  let last = Number.NEGATIVE_INFINITY; // the first message always shows, however young the process
  const started = performance.now();
  const every = mode === 'tty' ? 200 : 5000;
  const show = (text: string) => {
    const now = performance.now();
    if (now - last < every) return;
    last = now;
    task.output = text;
  };
  return {
    message: show,
    bytes(done, total) {
      const secs = (performance.now() - started) / 1000;
      const rate = secs > 0 ? done / secs : 0;
      const eta = total && rate > 0 && total > done ? `, ETA ${formatDuration((total - done) / rate)}` : '';
      const pct = total ? ` (${Math.min(100, Math.round((100 * done) / total))} %)` : '';
      const bar = mode === 'tty' && total ? `[${'#'.repeat(Math.min(20, Math.round((20 * done) / total))).padEnd(20, '.')}] ` : '';
      show(`${bar}${formatBytes(done)}${total ? ` of ~${formatBytes(total)}` : ''}${pct}, ${formatBytes(rate)}/s${eta}`);
    },
  };
}

/**
 * Crash-safety failpoints for tests: PGSCALE_FAILPOINT=STEP:started|applied|done kills pgscale
 * with SIGKILL at that boundary, exactly as a power cut or an OOM kill would; STEP:WHERE:SIGINT
 * is a person's Ctrl-C there (what follows runs once the handler has seen it, as it would), and
 * STEP:WHERE:SIGSTOP pauses pgscale there until SIGCONT (a test looks at what it holds meanwhile).
 */
async function failpoint(stepId: string, where: 'started' | 'applied' | 'done', signal: AbortSignal): Promise<void> {
  const at = process.env.PGSCALE_FAILPOINT;
  if (at === `${stepId}:${where}`) process.kill(process.pid, 'SIGKILL');
  if (at === `${stepId}:${where}:SIGSTOP`) process.kill(process.pid, 'SIGSTOP');
  if (at === `${stepId}:${where}:SIGINT`) {
    process.kill(process.pid, 'SIGINT');
    // a pending timer keeps node running until the handler has run (a signal handler alone does not)
    await delay(10_000, undefined, { signal }).catch(() => undefined);
  }
}

/**
 * Stops the programs a killed run left behind and waits until their process groups are gone: what
 * follows (a retry, a rollback) must not race a dying pg_upgrade. SIGKILL after 10 s.
 */
async function killOrphans(pgids: readonly number[]): Promise<void> {
  const signalled: number[] = [];
  for (const pgid of pgids) {
    if (!processGroupAlive(pgid)) continue;
    try {
      process.kill(-pgid, 'SIGTERM');
      signalled.push(pgid);
    } catch {
      /* gone meanwhile */
    }
  }
  const deadline = Date.now() + 10_000;
  while (signalled.some(processGroupAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const pgid of signalled.filter(processGroupAlive)) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      /* gone meanwhile */
    }
  }
}

/**
 * The one step a person is asked about: the first that takes the cluster down or passes the point
 * of no return. Asking there, before downtime begins, keeps the wait for an answer out of the
 * downtime; the question names the point of no return when it comes later. Segments start at that
 * step, so the prompt never overlaps the live task list.
 */
function confirmationStep(steps: readonly PlannedStep[]): PlannedStep | undefined {
  return steps.find((s) => s.downtime || s.pointOfNoReturn);
}

function segments(steps: readonly PlannedStep[], askAt: PlannedStep | undefined): PlannedStep[][] {
  const out: PlannedStep[][] = [];
  for (const s of steps) {
    if (out.length === 0 || s === askAt) out.push([]);
    out[out.length - 1]!.push(s);
  }
  return out;
}

/**
 * The rule every entry point (start, resume, rollback) answers to, as the README states it: what
 * takes a cluster down, passes a point of no return or discards anything needs a "yes" at a
 * terminal or --yes; with neither it is refused before anything changes (exit 3).
 */
function refuseUnconfirmable(subject: string, opts: ExecuteOptions, why = ''): void {
  if (!opts.assumeYes && !opts.confirm)
    throw refused(`${subject} needs confirmation and nobody can be asked: nothing was done${why ? `\n${why}` : ''}`, 'run it at a terminal, or pass --yes');
}

async function confirmStep(step: PlannedStep, steps: readonly PlannedStep[], opts: ExecuteOptions): Promise<void> {
  if (opts.assumeYes) return;
  const pnr = steps.find((s) => s.pointOfNoReturn);
  const why = [
    step.downtime ? 'the cluster will be unavailable' : '',
    pnr === step ? 'it is the point of no return' : pnr ? `"${pnr.title}" after it is the point of no return` : '',
  ]
    .filter(Boolean)
    .join('; ');
  if (!opts.confirm) throw refused(`"${step.title}" needs confirmation (${why})`, 'run it at a terminal, or pass --yes');
  if (!(await opts.confirm(`Next: ${step.title} — ${why}. Continue?`)))
    throw refused('not confirmed: stopped before this step; nothing more was changed', 'run it again and answer yes when you are ready');
}

async function runSteps(state: RunState, opts: ExecuteOptions, resuming: boolean, holdServer: () => Promise<void>): Promise<void> {
  const finished = (id: string) => ['done', 'skipped'].includes(state.steps.get(id) ?? 'pending');
  const context = (step: PlannedStep, progress: Progress): StepContext => ({
    runner: opts.runner,
    audit: opts.audit,
    signal: opts.signal,
    progress,
    outputs: state.outputs,
    runDir: state.dir,
    trackProcess: (pgid) => appendEvent(state.dir, { type: 'process', step: step.id, pgid }),
  });
  const runOne = async (step: PlannedStep, task: TaskView) => {
    if (opts.signal.aborted) throw new PgscaleError('interrupted', ExitCode.Interrupted);
    // every step boundary: the server lock again after a restart, and no step while another holds it
    await holdServer();
    const def = stepDefinition(step.kind);
    const ctx = context(step, progressFor(task, opts.progress));
    if (resuming) {
      const held = await def.verify(ctx, step.params);
      // a step the interrupted run started whose change is there now (its program finished after the
      // kill) made that change: done, so that a rollback undoes it; a skip would leave it behind
      if (held.ok && ['running', 'failed'].includes(state.steps.get(step.id) ?? 'pending')) {
        appendEvent(state.dir, { type: 'step-done', step: step.id, outputs: {}, verified: held.detail });
        state.steps.set(step.id, 'done');
        state.outputs.set(step.id, {});
        task.skip(`${step.title} — done by the interrupted run: ${held.detail}`);
        return;
      }
      if (held.ok) {
        appendEvent(state.dir, { type: 'step-skipped', step: step.id, reason: held.detail });
        state.steps.set(step.id, 'skipped');
        task.skip(`${step.title} — already done: ${held.detail}`);
        return;
      }
    }
    appendEvent(state.dir, { type: 'step-started', step: step.id });
    state.steps.set(step.id, 'running');
    await failpoint(step.id, 'started', opts.signal);
    let applied = false;
    try {
      // stopped right after the step was journaled: it never began, nothing of it to undo
      if (opts.signal.aborted) throw new PgscaleError('interrupted', ExitCode.FailedNoChange);
      const outputs = (await def.apply(ctx, step.params)) ?? {};
      applied = true;
      await failpoint(step.id, 'applied', opts.signal);
      const verified = await def.verify(ctx, step.params);
      if (!verified.ok) throw new PgscaleError(`verification failed after "${step.title}": ${verified.detail}`, ExitCode.FailedAfterChange);
      appendEvent(state.dir, { type: 'step-done', step: step.id, outputs, verified: verified.detail });
      state.steps.set(step.id, 'done');
      state.outputs.set(step.id, outputs);
      await failpoint(step.id, 'done', opts.signal);
      task.title = `${step.title} — ${verified.detail}`;
    } catch (e) {
      const interrupted = opts.signal.aborted;
      // a step that failed with "no change" has cleaned up after itself: nothing of it remains. Once
      // apply returned, the change is made (a server started): a failing verify, e.g. a connection
      // error (exit 4 from sql.ts), never makes the step clean
      const clean = !applied && e instanceof PgscaleError && e.exitCode === ExitCode.FailedNoChange;
      appendEvent(state.dir, { type: 'step-failed', step: step.id, error: interrupted ? 'interrupted' : (e as Error).message, clean });
      state.steps.set(step.id, clean ? 'pending' : 'failed');
      if (interrupted) throw new PgscaleError('interrupted', ExitCode.Interrupted);
      throw e;
    }
  };
  // a resume is a decision of its own: asked again at the first downtime or point-of-no-return step still to run
  const askAt = confirmationStep(state.plan.steps.filter((s) => !finished(s.id)));
  for (const segment of segments(state.plan.steps, askAt)) {
    const pending = segment.filter((s) => !finished(s.id));
    if (pending.length === 0) continue;
    if (askAt && segment[0] === askAt && !finished(askAt.id)) await confirmStep(askAt, state.plan.steps, opts);
    await runTaskList(
      pending.map((step) => ({ title: step.title, run: (task) => runOne(step, task) })),
      opts.progress,
    );
  }
}

function changedAnything(state: RunState): boolean {
  return [...state.steps.values()].some((s) => s !== 'pending');
}

/** The server-side lock of a run: for an operation that reaches its cluster's server, on a cluster whose identity is known. */
function serverLockFor(plan: Plan, runId: string, opts: ExecuteOptions): ServerLock | undefined {
  const access = operation(plan.operation).serverAccess?.(plan.params);
  if (!access || !plan.target.systemIdentifier) return undefined;
  return new ServerLock(opts, access, runLockKey(plan), runId);
}

/**
 * Takes the run's locks before anything changes: the host-wide lock file, then the server's
 * advisory lock. Refused by either, it holds neither.
 */
async function takeLocks(plan: Plan, runId: string, opts: ExecuteOptions, takeOverFrom?: string): Promise<ServerLock | undefined> {
  acquireLock(opts.stateDir, runLockKey(plan), runId, takeOverFrom);
  const serverLock = serverLockFor(plan, runId, opts);
  try {
    await serverLock?.hold();
  } catch (e) {
    await serverLock?.release();
    // a refused resume or rollback keeps the lock file its run held: that run is still open
    if (!takeOverFrom) releaseLock(runLockKey(plan), runId);
    throw e;
  }
  return serverLock;
}

/** Holds the server lock at a step boundary; a session taken anew is journaled (its backend pid). */
const serverHolder = (state: RunState, serverLock: ServerLock | undefined) => async (): Promise<void> => {
  const backendPid = await serverLock?.hold();
  if (backendPid) appendEvent(state.dir, { type: 'server-lock', backendPid });
};

async function drive(state: RunState, opts: ExecuteOptions, resuming: boolean, serverLock: ServerLock | undefined): Promise<RunReport> {
  const started = performance.now();
  const key = runLockKey(state.plan);
  const holdServer = serverHolder(state, serverLock);
  // the server's lock first: once the lock file is gone, another pgscale on this host may start
  const unlock = async () => {
    await serverLock?.release();
    releaseLock(key, state.id);
  };
  appendEvent(state.dir, { type: 'run-started', pid: process.pid, resumed: resuming || undefined });
  if (serverLock?.backendPid) appendEvent(state.dir, { type: 'server-lock', backendPid: serverLock.backendPid });
  try {
    await runSteps(state, opts, resuming, holdServer);
  } catch (e) {
    await stopped(e);
  } finally {
    // a run that stops keeps its lock file (only its resume or rollback may go on), never a session
    await serverLock?.release();
  }
  appendEvent(state.dir, { type: 'run-done' });
  await unlock();
  return report(readRun(opts.stateDir, state.id), started);

  async function stopped(e: unknown): Promise<never> {
    const err = e instanceof PgscaleError ? e : new PgscaleError((e as Error).message, ExitCode.FailedAfterChange);
    if (e instanceof ServerLockHeld) {
      // someone else took the cluster after pgscale restarted its server: nothing more is done to it, not even an undo
      appendEvent(state.dir, { type: 'run-failed', error: err.message });
      if (!changedAnything(state)) {
        releaseLock(key, state.id);
        throw e;
      }
      throw new PgscaleError(
        `${err.message}\nrun ${state.id} stopped before its next step; what it had done is kept (nothing is undone while another holds the cluster)`,
        ExitCode.FailedAfterChange,
        `wait for that run to end, then ${await wayOut(state, opts)}`,
      );
    }
    if (err.exitCode === ExitCode.Interrupted || opts.signal.aborted) {
      appendEvent(state.dir, { type: 'run-interrupted', step: [...state.steps].find(([, s]) => s === 'failed')?.[0] });
      if (beforeDowntime(state)) {
        // nothing was unavailable yet: Ctrl-C undoes the run, as a failure there does. The undo is not
        // itself interrupted by that Ctrl-C; a second one leaves at once and `pgscale rollback` finishes it
        try {
          await undoSteps(state, [...touchedSteps(state)].reverse(), { ...opts, signal: new AbortController().signal }, holdServer);
        } catch (undoError) {
          throw new PgscaleError(
            `interrupted; undoing what run ${state.id} had done failed: ${(undoError as Error).message}`,
            ExitCode.FailedAfterChange,
            `fix the cause, then \`${runCommandLine('rollback', state.id, opts.stateDir)}\` finishes the undo`,
          );
        }
        await unlock();
        throw new PgscaleError(
          `interrupted before any downtime: what run ${state.id} had done is undone, nothing is left changed; a verified backup is kept`,
          ExitCode.Interrupted,
          'run the same command again when ready',
        );
      }
      throw new PgscaleError(`interrupted; the journal of run ${state.id} is consistent`, ExitCode.Interrupted, await wayOut(state, opts));
    }
    appendEvent(state.dir, { type: 'run-failed', error: err.message });
    if (!changedAnything(state)) {
      await unlock();
      throw new PgscaleError(err.message, err.exitCode === ExitCode.Refused ? ExitCode.Refused : ExitCode.FailedNoChange, err.hint);
    }
    if (beforeDowntime(state)) {
      // nothing was unavailable yet: what the run prepared (a new cluster, its configuration) is
      // undone here, so a failed check or a declined confirmation leaves nothing and no lock
      try {
        await undoSteps(state, [...touchedSteps(state)].reverse(), opts, holdServer);
      } catch (undoError) {
        throw new PgscaleError(
          `${err.message}\nundoing what the run had done failed too: ${(undoError as Error).message}`,
          ExitCode.FailedAfterChange,
          `fix the cause, then \`${runCommandLine('rollback', state.id, opts.stateDir)}\` finishes the undo`,
        );
      }
      await unlock();
      const declined = err.exitCode === ExitCode.Refused;
      // the step's own hint speaks of an open run (resume, rollback): there is none any more
      throw new PgscaleError(
        `${err.message}\n(${declined ? 'declined' : 'failed'} before any downtime: what the run had done is undone, nothing is left changed; a verified backup is kept)`,
        declined ? ExitCode.Refused : ExitCode.FailedNoChange,
        declined ? 'run the same command again when ready' : 'fix the cause named above and run the same command again',
      );
    }
    // the lock stays: nothing else may touch this cluster until the run is resumed or rolled back
    if (err.exitCode === ExitCode.Refused) {
      // a confirmation declined after the steps that need none: refused (README: "not confirmed"), and what ran is kept
      throw new PgscaleError(
        err.message,
        ExitCode.Refused,
        `the steps before it are done and kept: \`${runCommandLine('resume', state.id, opts.stateDir)}\` asks again, \`${runCommandLine('rollback', state.id, opts.stateDir)}\` undoes them`,
      );
    }
    throw new PgscaleError(err.message, ExitCode.FailedAfterChange, `fix the cause, then ${await wayOut(state, opts)}`);
  }
}

/** No step the run started or finished takes the cluster down or passes a point of no return (an operation without such steps is always before downtime). */
const beforeDowntime = (state: RunState): boolean => !touchedSteps(state).some((s) => s.downtime || s.pointOfNoReturn);

/** A confirmation nobody can give (no TTY, no --yes) is known before the first step: refuse then, not after work that must be undone. */
function assertConfirmable(steps: readonly PlannedStep[], pending: (s: PlannedStep) => boolean, opts: ExecuteOptions): void {
  const askAt = confirmationStep(steps.filter(pending));
  if (askAt) refuseUnconfirmable(`"${askAt.title}"`, opts);
}

/** Another pgscale holding the plan's cluster on its server, for a dry run (which takes no lock). */
async function serverConflict(plan: Plan, opts: ExecuteOptions): Promise<Error | undefined> {
  const access = operation(plan.operation).serverAccess?.(plan.params);
  return access && plan.target.systemIdentifier ? serverLockConflict(opts, access, runLockKey(plan)) : undefined;
}

/** Starts a new run of a plan whose checks passed. */
export async function startRun(plan: Plan, opts: ExecuteOptions): Promise<RunReport> {
  if (opts.dryRun) {
    const conflict = lockConflict(runLockKey(plan)) ?? (await serverConflict(plan, opts));
    if (conflict) throw conflict;
    const steps = new Map(plan.steps.map((s): [string, StepState] => [s.id, 'pending']));
    return report(
      { id: '(dry run)', dir: '', plan, status: 'running', steps, outputs: new Map() },
      performance.now(),
      plan.steps.map((s) => ({ id: s.id, title: s.title, action: 'run' })),
    );
  }
  assertConfirmable(plan.steps, () => true, opts);
  const id = newRunId(plan);
  const serverLock = await takeLocks(plan, id, opts);
  try {
    newRun(opts.stateDir, plan, id);
  } catch (e) {
    await serverLock?.release();
    releaseLock(runLockKey(plan), id);
    throw e;
  }
  const state = readRun(opts.stateDir, id);
  opts.onRunDir?.(state.dir);
  return drive(state, opts, false, serverLock);
}

/** Continues a failed, interrupted or killed run: done steps stay done, the rest verify-then-apply. */
export async function resumeRun(runId: string, opts: ExecuteOptions): Promise<RunReport> {
  const state = readRun(opts.stateDir, runId);
  const rollback = `\`${runCommandLine('rollback', runId, opts.stateDir)}\``;
  if (state.status === 'completed') throw refused(`run ${runId} already completed`, 'nothing to resume: make a new plan for a new change (see `pgscale runs`)');
  if (state.status === 'rolled-back') throw refused(`run ${runId} was rolled back`, 'nothing to resume: make a new plan');
  if (state.status === 'rolling-back' || state.status === 'rollback-failed')
    throw refused(`run ${runId} is being rolled back (${state.status})`, `finish undoing it: ${rollback}`);
  if (state.status === 'running') throw refused(`run ${runId} is still running`, 'wait for it to finish (see `pgscale runs`)');
  if (opts.dryRun) {
    const conflict = lockConflict(runLockKey(state.plan), runId) ?? (await serverConflict(state.plan, opts));
    if (conflict) throw conflict;
    const finished = (id: string) => ['done', 'skipped'].includes(state.steps.get(id) ?? 'pending');
    return report(
      state,
      performance.now(),
      state.plan.steps.map((s) => ({ id: s.id, title: s.title, action: finished(s.id) ? 'keep (done)' : 'verify, then run if needed' })),
    );
  }
  assertConfirmable(state.plan.steps, (s) => !['done', 'skipped'].includes(state.steps.get(s.id) ?? 'pending'), opts);
  const serverLock = await takeLocks(state.plan, runId, opts, runId);
  await killOrphans(state.orphans);
  opts.onRunDir?.(state.dir);
  return drive(state, opts, true, serverLock);
}

/** The steps a run started or finished (what an undo must reverse), in plan order. */
const touchedSteps = (state: RunState) => state.plan.steps.filter((s) => ['done', 'failed', 'running'].includes(state.steps.get(s.id) ?? 'pending'));

/** Runs the undo of each step in the order given, journaled; a failing undo stops there (a retry continues from it). */
async function undoSteps(state: RunState, undo: readonly PlannedStep[], opts: ExecuteOptions, holdServer: () => Promise<void>): Promise<void> {
  appendEvent(state.dir, { type: 'rollback-started', pid: process.pid });
  await runTaskList(
    undo.map((step) => ({
      title: `undo: ${step.title}`,
      run: async (task) => {
        // Ctrl-C stops an undo between its steps: `pgscale rollback` goes on from there
        if (opts.signal.aborted) throw new PgscaleError('interrupted', ExitCode.Interrupted);
        await holdServer();
        const def = stepDefinition(step.kind);
        let kept: string | void;
        try {
          kept = await def.rollback?.(
            {
              runner: opts.runner,
              audit: opts.audit,
              signal: opts.signal,
              progress: progressFor(task, opts.progress),
              outputs: state.outputs,
              runDir: state.dir,
              trackProcess: () => undefined,
            },
            step.params,
          );
        } catch (e) {
          appendEvent(state.dir, { type: 'rollback-failed', step: step.id, error: (e as Error).message });
          throw new PgscaleError(`rollback of "${step.title}" failed: ${(e as Error).message}`, ExitCode.FailedAfterChange, step.rollback);
        }
        appendEvent(state.dir, { type: 'step-rolled-back', step: step.id, ...(kept ? { kept } : {}) });
        state.steps.set(step.id, 'rolled-back');
        if (kept) task.title = `undo: ${step.title} — ${kept}`;
      },
    })),
    opts.progress,
  );
  appendEvent(state.dir, { type: 'rollback-done' });
}

/** A context for the read-only questions asked of a run's steps before a rollback (refusal, losses). */
const probeContext = (state: RunState, opts: ExecuteOptions): StepContext => ({
  runner: opts.runner,
  audit: opts.audit,
  signal: opts.signal,
  progress: { message: () => undefined, bytes: () => undefined },
  outputs: state.outputs,
  runDir: state.dir,
  trackProcess: () => undefined,
});

/** What undoing these steps would lose, each in plain words with its facts. */
async function rollbackLosses(state: RunState, undo: readonly PlannedStep[], opts: ExecuteOptions): Promise<string[]> {
  const probe = probeContext(state, opts);
  const out: string[] = [];
  for (const step of undo) {
    const lost = await stepDefinition(step.kind).rollbackLoses?.(probe, step.params);
    if (lost) out.push(lost);
  }
  return out;
}

/**
 * Why a rollback of this run would be refused: past a point of no return, or a step that would do
 * harm when undone now (a cluster started on shared files). Hints name only ways that work.
 */
async function rollbackRefusal(state: RunState, opts: ExecuteOptions): Promise<{ message: string; hint: string } | undefined> {
  const touched = touchedSteps(state);
  // a completed run has nothing left to resume: its hint names only the step's own way back
  const hintFor = (step: PlannedStep) =>
    state.status === 'completed' ? step.rollback : `\`${runCommandLine('resume', state.id, opts.stateDir)}\` finishes the run; ${step.rollback}`;
  const pastNoReturn = touched.find((s) => s.pointOfNoReturn && state.steps.get(s.id) === 'done');
  if (pastNoReturn)
    return { message: `run ${state.id} is past its point of no return ("${pastNoReturn.title}"): it cannot be rolled back`, hint: hintFor(pastNoReturn) };
  const probe = probeContext(state, opts);
  for (const step of [...touched].reverse()) {
    const why = await stepDefinition(step.kind).refusesRollback?.(probe, step.params);
    if (why) return { message: `run ${state.id} cannot be rolled back: ${why}`, hint: hintFor(step) };
  }
  return undefined;
}

/** What to do next with a run that stopped: resume always; rollback only when it would not be refused. */
async function wayOut(state: RunState, opts: ExecuteOptions): Promise<string> {
  const resume = `continue with \`${runCommandLine('resume', state.id, opts.stateDir)}\``;
  return (await rollbackRefusal(state, opts))
    ? `${resume} (rollback is no longer possible: past the point of no return)`
    : `${resume} or undo with \`${runCommandLine('rollback', state.id, opts.stateDir)}\``;
}

/** Undoes what a run did, newest step first; refuses past a point of no return. */
export async function rollbackRun(runId: string, opts: ExecuteOptions): Promise<RunReport> {
  const started = performance.now();
  const state = readRun(opts.stateDir, runId);
  if (state.status === 'running')
    throw refused(`run ${runId} is still running`, 'wait for it to finish, or stop it with Ctrl-C (it stops at a safe point), then roll back');
  if (state.status === 'rolled-back') throw refused(`run ${runId} was already rolled back`, 'nothing to undo (see `pgscale runs`)');
  const refusal = await rollbackRefusal(state, opts);
  if (refusal) throw refused(refusal.message, refusal.hint);
  const undo = [...touchedSteps(state)].reverse();
  const losses = (await rollbackLosses(state, undo, opts)).map((l) => `WARNING: ${l}`);
  if (opts.dryRun) {
    const conflict = lockConflict(runLockKey(state.plan), runId) ?? (await serverConflict(state.plan, opts));
    if (conflict) throw conflict;
    return report(
      state,
      performance.now(),
      undo.map((s) => ({ id: s.id, title: s.title, action: `undo: ${s.rollback}` })),
      losses,
    );
  }
  // undoing a step that took the cluster down takes it down again (the new server stops, the old one restarts)
  const down = undo.filter((s) => s.downtime || s.pointOfNoReturn);
  if (down.length || losses.length) {
    const why = [down.length ? `undoing "${down[0]!.title}"${down.length > 1 ? ` and ${down.length - 1} more` : ''} takes the cluster down` : '', ...losses]
      .filter(Boolean)
      .join('\n');
    refuseUnconfirmable(`the rollback of run ${runId}`, opts, why);
    if (!opts.assumeYes) {
      const steps = undo.map((s, i) => `  ${i + 1}. undo: ${s.title} — ${s.rollback}`).join('\n');
      if (!(await opts.confirm!(`Rollback of run ${runId} (${state.plan.operation}, ${state.status}):\n${steps}\n${why}\nContinue?`)))
        throw refused('not confirmed: nothing was undone', `\`${runCommandLine('rollback', runId, opts.stateDir)}\` asks again`);
    }
  }
  const serverLock = await takeLocks(state.plan, runId, opts, runId);
  await killOrphans(state.orphans);
  opts.onRunDir?.(state.dir);
  if (serverLock?.backendPid) appendEvent(state.dir, { type: 'server-lock', backendPid: serverLock.backendPid });
  try {
    await undoSteps(state, undo, opts, serverHolder(state, serverLock));
  } catch (e) {
    if (opts.signal.aborted)
      throw new PgscaleError(
        `interrupted; the undo of run ${runId} stopped between two steps`,
        ExitCode.Interrupted,
        `\`${runCommandLine('rollback', runId, opts.stateDir)}\` finishes it`,
      );
    throw e;
  } finally {
    await serverLock?.release();
  }
  releaseLock(runLockKey(state.plan), runId);
  return report(readRun(opts.stateDir, runId), started, undefined, losses);
}
