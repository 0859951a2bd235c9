/**
 * A run's journal: runs/<id>/plan.json (0600), journal.jsonl (fsynced events) and audit.jsonl, in
 * a 0700 state directory; and the per-cluster lock that keeps two runs off one cluster.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readdirSync, rmSync, writeSync, renameSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { refused } from '../errors.js';
import type { JsonObject } from './step.js';
import type { Plan } from './plan.js';
import { ensurePrivateDir } from './stateDir.js';

export type JournalEvent =
  | { type: 'run-started'; pid: number; resumed?: boolean }
  | { type: 'step-started'; step: string }
  | { type: 'process'; step: string; pgid: number }
  | { type: 'step-done'; step: string; outputs: JsonObject; verified: string }
  | { type: 'step-skipped'; step: string; reason: string }
  | { type: 'step-failed'; step: string; error: string; clean: boolean }
  | { type: 'run-interrupted'; step?: string }
  | { type: 'run-failed'; error: string }
  | { type: 'run-done' }
  | { type: 'rollback-started'; pid: number }
  | { type: 'step-rolled-back'; step: string }
  | { type: 'rollback-failed'; step: string; error: string }
  | { type: 'rollback-done' };

export type StampedEvent = JournalEvent & { at: string };

export type StepState = 'pending' | 'running' | 'done' | 'skipped' | 'failed' | 'rolled-back';
export type RunStatus = 'running' | 'completed' | 'failed' | 'interrupted' | 'killed' | 'rolling-back' | 'rolled-back' | 'rollback-failed';

export interface RunState {
  id: string;
  dir: string;
  plan: Plan;
  events: StampedEvent[];
  status: RunStatus;
  steps: Map<string, StepState>;
  outputs: Map<string, JsonObject>;
  /** Process groups started by steps that did not finish. */
  orphans: number[];
}

const syncWrite = (path: string, text: string, flags: string) => {
  const fd = openSync(path, flags, 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
};

/** A file written completely or not at all: temp name, fsync, rename. */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  syncWrite(tmp, text, 'w');
  renameSync(tmp, path);
}

export function runsDir(stateDir: string): string {
  return join(stateDir, 'runs');
}

export function newRun(stateDir: string, plan: Plan): string {
  const id = `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${plan.operation}-${randomBytes(3).toString('hex')}`;
  const dir = ensurePrivateDir(join(ensurePrivateDir(runsDir(stateDir)), id));
  writeFileAtomic(join(dir, 'plan.json'), JSON.stringify(plan, null, 2) + '\n');
  return id;
}

export function appendEvent(runDir: string, event: JournalEvent): void {
  syncWrite(join(runDir, 'journal.jsonl'), JSON.stringify({ at: new Date().toISOString(), ...event }) + '\n', 'a');
}

/** Start time of a process in clock ticks since boot: a pid alone can be reused. */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export function processAlive(pid: number, start?: string): boolean {
  const now = processStart(pid);
  return now !== undefined && (start === undefined || now === start);
}

/** Whether any live (not zombie) process is in the group; exited children linger as zombies until reaped. */
export function processGroupAlive(pgid: number): boolean {
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z') return true;
    } catch {
      /* gone meanwhile */
    }
  }
  return false;
}

export function readRun(stateDir: string, id: string): RunState {
  const dir = join(runsDir(stateDir), id);
  if (!existsSync(join(dir, 'plan.json'))) throw refused(`no run "${id}" in ${runsDir(stateDir)}`, 'see `pgscale runs`');
  const plan = JSON.parse(readFileSync(join(dir, 'plan.json'), 'utf8')) as Plan;
  const events: StampedEvent[] = existsSync(join(dir, 'journal.jsonl'))
    ? readFileSync(join(dir, 'journal.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as StampedEvent];
          } catch {
            return []; // a line torn by a crash mid-write carries nothing that was acted on
          }
        })
    : [];
  const steps = new Map<string, StepState>(plan.steps.map((s) => [s.id, 'pending']));
  const outputs = new Map<string, JsonObject>();
  const processes = new Map<string, number[]>();
  let status: RunStatus = 'killed';
  for (const e of events) {
    switch (e.type) {
      case 'run-started':
        status = 'running';
        break;
      case 'step-started':
        steps.set(e.step, 'running');
        break;
      case 'process':
        processes.set(e.step, [...(processes.get(e.step) ?? []), e.pgid]);
        break;
      case 'step-done':
        steps.set(e.step, 'done');
        outputs.set(e.step, e.outputs);
        processes.delete(e.step);
        break;
      case 'step-skipped':
        steps.set(e.step, 'skipped');
        processes.delete(e.step);
        break;
      case 'step-failed':
        steps.set(e.step, e.clean ? 'pending' : 'failed');
        break;
      case 'run-interrupted':
        status = 'interrupted';
        break;
      case 'run-failed':
        status = 'failed';
        break;
      case 'run-done':
        status = 'completed';
        break;
      case 'rollback-started':
        status = 'rolling-back';
        break;
      case 'step-rolled-back':
        steps.set(e.step, 'rolled-back');
        break;
      case 'rollback-failed':
        status = 'rollback-failed';
        break;
      case 'rollback-done':
        status = 'rolled-back';
        break;
    }
  }
  const lock = readLock(stateDir, plan.target.lockKey);
  // "running" needs a live process holding the lock; a run that has just taken it has no events yet
  const live = lock?.runId === id && processAlive(lock.pid, lock.start);
  if (events.length === 0) status = live ? 'running' : 'killed';
  else if ((status === 'running' || status === 'rolling-back') && !live) status = status === 'running' ? 'killed' : 'rollback-failed';
  return { id, dir, plan, events, status, steps, outputs, orphans: [...processes.values()].flat() };
}

export function listRuns(stateDir: string): RunState[] {
  let ids: string[];
  try {
    ids = readdirSync(runsDir(stateDir));
  } catch {
    return [];
  }
  return ids.sort().flatMap((id) => {
    try {
      return [readRun(stateDir, id)];
    } catch {
      return [];
    }
  });
}

interface LockContent {
  runId: string;
  pid: number;
  start: string | undefined;
  key: string;
}

const lockPath = (stateDir: string, key: string) => join(stateDir, 'locks', createHash('sha256').update(key).digest('hex').slice(0, 24) + '.lock');

function readLock(stateDir: string, key: string): LockContent | undefined {
  try {
    return JSON.parse(readFileSync(lockPath(stateDir, key), 'utf8')) as LockContent;
  } catch {
    return undefined;
  }
}

/**
 * Takes the cluster's lock for a run. A live holder always wins; a dead holder's lock passes only
 * to a resume or rollback of that same run, so an interrupted run is never silently overtaken.
 */
export function acquireLock(stateDir: string, key: string, runId: string, takeOverFrom?: string): void {
  ensurePrivateDir(join(stateDir, 'locks'));
  const path = lockPath(stateDir, key);
  const mine: LockContent = { runId, pid: process.pid, start: processStart(process.pid), key };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      syncWrite(path, JSON.stringify(mine), 'wx');
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const held = readLock(stateDir, key);
    if (held) {
      // a run holds the lock while it is executing, and after it failed or was interrupted, until
      // it is resumed, rolled back or completed
      let status: RunStatus | undefined;
      try {
        status = readRun(stateDir, held.runId).status;
      } catch {
        status = undefined;
      }
      if (status === 'running' || status === 'rolling-back') {
        throw refused(
          `another pgscale run (${held.runId}, pid ${held.pid}) is working on ${key}`,
          'wait for it to finish; two runs on one cluster are never allowed',
        );
      }
      if (held.runId !== takeOverFrom && status && status !== 'completed' && status !== 'rolled-back') {
        throw refused(
          `run ${held.runId} on ${key} did not finish (${status})`,
          `finish it with \`pgscale resume ${held.runId}\` or undo it with \`pgscale rollback ${held.runId}\``,
        );
      }
    }
    rmSync(path, { force: true });
  }
  throw refused(`could not take the lock for ${key}`);
}

export function releaseLock(stateDir: string, key: string, runId: string): void {
  const held = readLock(stateDir, key);
  if (held?.runId === runId) rmSync(lockPath(stateDir, key), { force: true });
}
