/**
 * Runs a playbook's steps as pgscale subprocesses, one after another, recording progress. Running
 * it again skips finished steps and resumes the run a failed step left unfinished.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PgscaleError, ExitCode } from '../errors.js';
import { listRuns, writeFileAtomic } from '../pipeline/journal.js';
import { ensurePrivateDir } from '../pipeline/stateDir.js';
import type { Runner } from '../runner.js';
import { stepArgv, type Playbook } from './playbook.js';

interface Progress {
  digest: string;
  /** Indexes of finished steps. */
  done: number[];
  /** The pgscale run each step started, by index. */
  runs: Record<string, string>;
}

export interface PlaybookResult {
  name: string;
  steps: { index: number; command: string; outcome: 'done' | 'already done' | 'resumed' | 'failed' | 'dry-run'; runId?: string; exitCode: number }[];
}

export interface PlaybookOptions {
  runner: Runner;
  cli: string;
  stateDir: string;
  yes: boolean;
  dryRun: boolean;
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

export async function runPlaybook(pb: Playbook, o: PlaybookOptions): Promise<PlaybookResult> {
  const progress = o.dryRun ? { digest: pb.digest, done: [], runs: {} } : loadProgress(o.stateDir, pb);
  const save = () => {
    ensurePrivateDir(join(o.stateDir, 'playbooks'));
    writeFileAtomic(progressPath(o.stateDir, pb), JSON.stringify(progress, null, 2));
  };
  const result: PlaybookResult = { name: pb.name, steps: [] };
  const common = ['--state-dir', o.stateDir, ...(o.yes ? ['--yes'] : []), ...(o.dryRun ? ['--dry-run'] : [])];
  for (const [index, step] of pb.steps.entries()) {
    const label = `[${new Date().toISOString()}] step ${index + 1}/${pb.steps.length}: ${step.command}`;
    if (progress.done.includes(index)) {
      o.log(`${label}: already done`);
      result.steps.push({ index, command: step.command, outcome: 'already done', runId: progress.runs[index], exitCode: 0 });
      continue;
    }
    const previous = progress.runs[index];
    const unfinished = previous ? listRuns(o.stateDir).find((r) => r.id === previous && !['completed', 'rolled-back'].includes(r.status)) : undefined;
    const argv = unfinished ? ['resume', unfinished.id, '--state-dir', o.stateDir, ...(o.yes ? ['--yes'] : [])] : stepArgv(step, pb.cluster, common);
    o.log(`${label}: pgscale ${argv.join(' ')}`);
    const before = new Set(listRuns(o.stateDir).map((r) => r.id));
    const child = o.runner.stream({ program: process.execPath, args: [o.cli, ...argv], signal: o.signal });
    child.stdin.end();
    child.stdout.pipe(process.stdout, { end: false });
    const res = await child.result;
    if (res.stderr) process.stderr.write(res.stderr);
    const started = listRuns(o.stateDir).find((r) => !before.has(r.id))?.id ?? unfinished?.id;
    if (started) progress.runs[index] = started;
    const exitCode = res.exitCode ?? ExitCode.Interrupted;
    if (exitCode !== 0) {
      if (!o.dryRun) save();
      result.steps.push({ index, command: step.command, outcome: 'failed', runId: started, exitCode });
      throw new PgscaleError(
        `playbook ${pb.name} stopped at step ${index + 1} (${step.command}), exit code ${exitCode}`,
        exitCode as ExitCode,
        'fix the cause and run the playbook again: finished steps are skipped and an unfinished run is resumed',
      );
    }
    if (!o.dryRun) {
      progress.done.push(index);
      save();
    }
    result.steps.push({ index, command: step.command, outcome: o.dryRun ? 'dry-run' : unfinished ? 'resumed' : 'done', runId: started, exitCode });
  }
  return result;
}
