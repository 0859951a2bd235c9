/**
 * Runs a playbook's steps as pgscale subprocesses, one after another, recording progress. Running
 * it again skips finished steps and resumes the run a failed step left unfinished.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PgscaleError, ExitCode } from '../errors.js';
import { runCommandLine } from '../pipeline/execute.js';
import { listRuns, writeFileAtomic, type RunState } from '../pipeline/journal.js';
import { ensurePrivateDir } from '../pipeline/stateDir.js';
import type { Runner } from '../runner.js';
import { stepInvocation, type Playbook } from './playbook.js';
import { redact } from '../audit.js';

interface Progress {
  digest: string;
  /** Indexes of finished steps. */
  done: number[];
  /** The pgscale run each step started, by index. */
  runs: Record<string, string>;
}

export interface PlaybookResult {
  name: string;
  steps: {
    index: number;
    command: string;
    outcome: 'done' | 'already done' | 'resumed' | 'failed' | 'dry-run';
    runId?: string;
    exitCode: number;
    output?: unknown;
  }[];
}

export interface PlaybookOptions {
  runner: Runner;
  cli: string;
  stateDir: string;
  yes: boolean;
  dryRun: boolean;
  /** --json: every step runs with --json and its result (or error) becomes part of the playbook's JSON. */
  json: boolean;
  log: (line: string) => void;
  signal: AbortSignal;
}

const progressPath = (stateDir: string, pb: Playbook) => join(stateDir, 'playbooks', `${pb.name}.json`);

function loadProgress(stateDir: string, pb: Playbook): Progress {
  const path = progressPath(stateDir, pb);
  if (existsSync(path)) {
    const p = JSON.parse(readFileSync(path, 'utf8')) as Progress;
    if (p.digest === pb.digest) return p;
  }
  return { digest: pb.digest, done: [], runs: {} };
}

/**
 * A run whose undo stopped cannot be resumed (pgscale refuses it, and so would a rerun of the
 * playbook): its rollback is the way on, and says what is left to undo.
 */
function undoUnfinished(run: RunState | undefined, stateDir: string, step: number): string | undefined {
  if (!run || !['rolling-back', 'rollback-failed'].includes(run.status)) return undefined;
  const left = run.plan.steps.filter((s) => ['done', 'failed', 'running'].includes(run.steps.get(s.id) ?? 'pending')).reverse();
  return `\`${runCommandLine('rollback', run.id, stateDir)}\` finishes undoing step ${step}'s run (${run.status}): it undoes ${left.map((s) => `"${s.title}"`).join(', ') || 'nothing more'} and verifies each; then run the playbook again and the step starts anew`;
}

/** A step's --json output; text that is not JSON is kept as text rather than lost. */
function parseOutput(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text.trim() || undefined;
  }
}

/**
 * The cluster a step works on: the playbook's, until an upgrade step completes — from then on the
 * upgraded cluster (its data directory and binaries), never the retired one.
 */
export function clusterForStep(
  pb: Playbook,
  index: number,
  upgraded: (runId: string) => { dataDir: string; bindir: string } | undefined,
  runs: Record<string, string>,
): Record<string, string> {
  let cluster = { ...pb.cluster };
  for (let i = 0; i < index; i++) {
    const runId = runs[i];
    const next = pb.steps[i]!.command === 'upgrade' && runId ? upgraded(runId) : undefined;
    if (next) cluster = { ...cluster, pgdata: next.dataDir, bindir: next.bindir };
  }
  return cluster;
}

/** The new cluster of a completed upgrade run. */
function upgradedCluster(stateDir: string, runId: string): { dataDir: string; bindir: string } | undefined {
  const run = listRuns(stateDir).find((r) => r.id === runId && r.status === 'completed' && r.plan.operation === 'upgrade');
  const next = (run?.plan.params as { new?: { dataDir?: unknown; bindir?: unknown } } | undefined)?.new;
  return typeof next?.dataDir === 'string' && typeof next.bindir === 'string' ? { dataDir: next.dataDir, bindir: next.bindir } : undefined;
}

export async function runPlaybook(pb: Playbook, o: PlaybookOptions): Promise<PlaybookResult> {
  const progress = o.dryRun ? { digest: pb.digest, done: [], runs: {} } : loadProgress(o.stateDir, pb);
  const save = () => {
    ensurePrivateDir(join(o.stateDir, 'playbooks'));
    writeFileAtomic(progressPath(o.stateDir, pb), JSON.stringify(progress, null, 2));
  };
  const result: PlaybookResult = { name: pb.name, steps: [] };
  const common = [...(o.yes ? ['--yes'] : []), ...(o.dryRun ? ['--dry-run'] : []), ...(o.json ? ['--json'] : [])];
  for (const [index, step] of pb.steps.entries()) {
    const label = `[${new Date().toISOString()}] step ${index + 1}/${pb.steps.length}: ${step.command}`;
    if (progress.done.includes(index)) {
      o.log(`${label}: already done`);
      result.steps.push({ index, command: step.command, outcome: 'already done', runId: progress.runs[index], exitCode: 0 });
      continue;
    }
    const previous = progress.runs[index];
    const previousRun = previous ? listRuns(o.stateDir).find((r) => r.id === previous) : undefined;
    if (previousRun?.status === 'completed' && !o.dryRun) {
      // finished outside the playbook (`pgscale resume RUN`, as the failed step's hint offered)
      o.log(`${label}: already done (run ${previousRun.id} completed)`);
      progress.done.push(index);
      save();
      result.steps.push({ index, command: step.command, outcome: 'already done', runId: previousRun.id, exitCode: 0 });
      continue;
    }
    const unfinished = previousRun && !['completed', 'rolled-back'].includes(previousRun.status) ? previousRun : undefined;
    const undoFirst = o.dryRun ? undefined : undoUnfinished(unfinished, o.stateDir, index + 1);
    if (undoFirst) {
      result.steps.push({ index, command: step.command, outcome: 'failed', runId: unfinished!.id, exitCode: ExitCode.Refused });
      throw new PgscaleError(
        `playbook ${pb.name} cannot go on at step ${index + 1} (${step.command}): run ${unfinished!.id} is being rolled back`,
        ExitCode.Refused,
        undoFirst,
      );
    }
    const { argv, env } = unfinished
      ? { argv: ['resume', unfinished.id, ...(o.yes ? ['--yes'] : []), ...(o.json ? ['--json'] : [])], env: { PGSCALE_STATE_DIR: o.stateDir } }
      : stepInvocation(
          step,
          clusterForStep(pb, index, (id) => upgradedCluster(o.stateDir, id), progress.runs),
          common,
          o.stateDir,
        );
    o.log(redact(`${label}: pgscale ${argv.join(' ')}`));
    const before = new Set(listRuns(o.stateDir).map((r) => r.id));
    const child = o.runner.stream({ program: process.execPath, args: [o.cli, ...argv], env, signal: o.signal, forwardInterrupt: true });
    child.stdin.end();
    let jsonText = '';
    if (o.json) child.stdout.on('data', (d: Buffer) => (jsonText += d.toString()));
    else child.stdout.pipe(process.stdout, { end: false });
    const res = await child.result;
    if (res.stderr && !o.json) process.stderr.write(res.stderr);
    const output = o.json ? parseOutput(jsonText) : undefined;
    const started = listRuns(o.stateDir).find((r) => !before.has(r.id))?.id ?? unfinished?.id;
    if (started) progress.runs[index] = started;
    const exitCode = res.exitCode ?? ExitCode.Interrupted;
    if (exitCode !== 0) {
      if (!o.dryRun) save();
      result.steps.push({ index, command: step.command, outcome: 'failed', runId: started, exitCode, output });
      const childError = (output as { error?: { message?: string } } | undefined)?.error?.message;
      throw new PgscaleError(
        `playbook ${pb.name} stopped at step ${index + 1} (${step.command}), exit code ${exitCode}${childError ? `: ${childError}` : ''}`,
        exitCode as ExitCode,
        undoUnfinished(started ? listRuns(o.stateDir).find((r) => r.id === started) : undefined, o.stateDir, index + 1) ??
          'fix the cause and run the playbook again: finished steps are skipped and an unfinished run is resumed',
      );
    }
    if (!o.dryRun) {
      progress.done.push(index);
      save();
    }
    result.steps.push({ index, command: step.command, outcome: o.dryRun ? 'dry-run' : unfinished ? 'resumed' : 'done', runId: started, exitCode, output });
  }
  return result;
}
