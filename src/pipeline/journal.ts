/**
 * A run's journal: runs/<id>/plan.json (0600), journal.jsonl (fsynced events) and audit.jsonl, in
 * a 0700 state directory; and the per-cluster lock that keeps two runs off one cluster.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readdirSync, rmSync, writeSync, renameSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { redact } from '../audit.js';
import { badInput, refused } from '../errors.js';
import type { JsonObject } from './step.js';
import type { Plan } from './plan.js';
import { defaultStateDir, ensurePrivateDir } from './stateDir.js';

export type JournalEvent =
  | { type: 'run-started'; pid: number; resumed?: boolean }
  /** A session took the cluster's lock on its server (again, after a restart). */
  | { type: 'server-lock'; backendPid: number }
  | { type: 'step-started'; step: string }
  | { type: 'process'; step: string; pgid: number }
  | { type: 'step-done'; step: string; outputs: JsonObject; verified: string }
  | { type: 'step-skipped'; step: string; reason: string }
  | { type: 'step-failed'; step: string; error: string; clean: boolean }
  | { type: 'run-interrupted'; step?: string }
  | { type: 'run-failed'; error: string }
  | { type: 'run-done' }
  | { type: 'rollback-started'; pid: number }
  | { type: 'step-rolled-back'; step: string; kept?: string }
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
  /** What undone steps kept instead of deleting (e.g. a data directory moved aside), and where. */
  kept: string[];
  /** Journal lines that are not JSON, by line number (1-based): shown by `pgscale runs`, never silently dropped. */
  corruptLines: number[];
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

export function newRunId(plan: Plan): string {
  // milliseconds: ids sort in the order runs began, also for two runs in one second (runs, tests' latest run)
  return `${new Date().toISOString().replace(/[-:]/g, '').replace(/Z$/, '')}-${plan.operation}-${randomBytes(3).toString('hex')}`;
}

/** Creates the run's directory with its plan; the run must hold the cluster's lock already (a refused run leaves nothing). */
export function newRun(stateDir: string, plan: Plan, id: string): string {
  const dir = ensurePrivateDir(join(ensurePrivateDir(runsDir(stateDir)), id));
  writeFileAtomic(join(dir, 'plan.json'), JSON.stringify(plan, null, 2) + '\n');
  return id;
}

export function appendEvent(runDir: string, event: JournalEvent): void {
  // error texts come from programs and servers: no password reaches the journal whatever they say
  syncWrite(join(runDir, 'journal.jsonl'), redact(JSON.stringify({ at: new Date().toISOString(), ...event })) + '\n', 'a');
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

/** Run ids are made by newRun: a timestamp, the operation and hex. Anything else (a path above all) is not one. */
const runIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function readRun(stateDir: string, id: string): RunState {
  if (!runIdPattern.test(id) || id.includes('..'))
    throw badInput(`"${id}" is not a run id`, 'run ids look like 20260101T120000.000-backup-a1b2c3: see `pgscale runs`');
  const dir = join(runsDir(stateDir), id);
  if (!existsSync(dir)) throw badInput(`no run "${id}" in ${runsDir(stateDir)}`, 'see `pgscale runs` for the run ids (pass the same --state-dir as the run)');
  let plan: Plan;
  try {
    plan = JSON.parse(readFileSync(join(dir, 'plan.json'), 'utf8')) as Plan;
  } catch (e) {
    const why =
      (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'has no plan.json' : `has an unreadable plan.json (${(e as NodeJS.ErrnoException).code ?? 'not JSON'})`;
    throw refused(
      `run ${id} is damaged: ${dir} ${why}`,
      `it can be neither resumed nor rolled back by pgscale: check the cluster by hand (its journal is ${join(dir, 'journal.jsonl')}), then remove ${dir}; its lock no longer blocks a new run`,
    );
  }
  const corruptLines: number[] = [];
  const events: StampedEvent[] = existsSync(join(dir, 'journal.jsonl'))
    ? readFileSync(join(dir, 'journal.jsonl'), 'utf8')
        .split('\n')
        .flatMap((l, i) => {
          if (!l) return [];
          try {
            return [JSON.parse(l) as StampedEvent];
          } catch {
            corruptLines.push(i + 1); // a line torn by a crash mid-write carries nothing that was acted on
            return [];
          }
        })
    : [];
  const steps = new Map<string, StepState>(plan.steps.map((s) => [s.id, 'pending']));
  const outputs = new Map<string, JsonObject>();
  const processes = new Map<string, number[]>();
  const kept: string[] = [];
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
        if (e.kept) kept.push(e.kept);
        break;
      case 'rollback-failed':
        status = 'rollback-failed';
        break;
      case 'rollback-done':
        status = 'rolled-back';
        break;
    }
  }
  const lock = readLock(runLockKey(plan));
  // "running" needs a live process holding the lock; a run that has just taken it has no events yet
  const live = lock?.runId === id && processAlive(lock.pid, lock.start);
  if (events.length === 0) status = live ? 'running' : 'killed';
  else if ((status === 'running' || status === 'rolling-back') && !live) status = status === 'running' ? 'killed' : 'rollback-failed';
  return { id, dir, plan, events, status, steps, outputs, orphans: [...processes.values()].flat(), kept, corruptLines };
}

/** A run directory as `pgscale runs` shows it: the run, or why it cannot be read. */
export type RunEntry = { id: string; dir: string; run: RunState; problem?: undefined } | { id: string; dir: string; run?: undefined; problem: string };

export function listRunEntries(stateDir: string): RunEntry[] {
  let ids: string[];
  try {
    ids = readdirSync(runsDir(stateDir));
  } catch {
    return [];
  }
  return ids.sort().map((id): RunEntry => {
    const dir = join(runsDir(stateDir), id);
    try {
      return { id, dir, run: readRun(stateDir, id) };
    } catch (e) {
      return { id, dir, problem: (e as Error).message };
    }
  });
}

/** The runs that can be read; damaged ones are listed by listRunEntries. */
export function listRuns(stateDir: string): RunState[] {
  return listRunEntries(stateDir).flatMap((e) => (e.run ? [e.run] : []));
}

interface LockContent {
  runId: string;
  pid: number;
  start: string | undefined;
  key: string;
  /** The state directory holding the run: the lock is host-wide, runs are wherever --state-dir put them. */
  stateDir: string;
}

/**
 * What a run locks: the cluster's system identifier when the plan knows it (the same cluster by
 * --pgdata, --dsn or any path then shares one lock), else the operation's own key.
 */
export function runLockKey(plan: Plan): string {
  return plan.target.systemIdentifier ? `system:${plan.target.systemIdentifier}` : plan.target.lockKey;
}

/**
 * Locks live in one directory per host for root (/var/lib/pgscale/locks), whatever --state-dir a
 * run uses, so every pgscale on the host sees them; otherwise under the user's own default state
 * directory (a non-root user can only change clusters it owns).
 */
export function lockDir(): string {
  return join(defaultStateDir(), 'locks');
}

/** The lock file of a key. */
export const lockPath = (key: string) => join(lockDir(), createHash('sha256').update(key).digest('hex').slice(0, 24) + '.lock');

function readLock(key: string): LockContent | undefined {
  try {
    return JSON.parse(readFileSync(lockPath(key), 'utf8')) as LockContent;
  } catch {
    return undefined;
  }
}

/**
 * Why a run could not take a cluster's lock now, or undefined when it could. A live holder always
 * wins; a dead holder's lock passes only to a resume or rollback of that same run, so an
 * interrupted run is never silently overtaken. A holder whose run can no longer be read (its
 * state directory or plan is gone) cannot be resumed or rolled back: it blocks nothing.
 */
export function lockConflict(key: string, takeOverFrom?: string): Error | undefined {
  const held = readLock(key);
  if (!held) return undefined;
  // a live holder wins even before its run directory exists (it is being created)
  if (held.pid !== process.pid && processAlive(held.pid, held.start)) {
    return refused(
      `another pgscale run (${held.runId}, pid ${held.pid}) is working on this cluster (${held.key})`,
      'wait for it to finish; two runs on one cluster are never allowed',
    );
  }
  let status: RunStatus | undefined;
  try {
    status = readRun(held.stateDir ?? defaultStateDir(), held.runId).status;
  } catch {
    status = undefined;
  }
  const stateFlag = held.stateDir && held.stateDir !== defaultStateDir() ? ` --state-dir ${held.stateDir}` : '';
  if (status === 'running' || status === 'rolling-back') {
    return refused(
      `another pgscale run (${held.runId}, pid ${held.pid}) is working on this cluster (${held.key})`,
      'wait for it to finish; two runs on one cluster are never allowed',
    );
  }
  if (held.runId !== takeOverFrom && status && status !== 'completed' && status !== 'rolled-back') {
    return refused(
      `run ${held.runId} on this cluster (${held.key}) did not finish (${status})`,
      status === 'rollback-failed'
        ? `finish undoing it with \`pgscale rollback ${held.runId}${stateFlag}\``
        : `finish it with \`pgscale resume ${held.runId}${stateFlag}\` or undo it with \`pgscale rollback ${held.runId}${stateFlag}\``,
    );
  }
  return undefined;
}

/** Takes the cluster's lock for a run of stateDir (see lockConflict for who may take it). */
export function acquireLock(stateDir: string, key: string, runId: string, takeOverFrom?: string): void {
  ensurePrivateDir(lockDir());
  const path = lockPath(key);
  const mine: LockContent = { runId, pid: process.pid, start: processStart(process.pid), key, stateDir };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      syncWrite(path, JSON.stringify(mine), 'wx');
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const conflict = lockConflict(key, takeOverFrom);
    if (conflict) throw conflict;
    rmSync(path, { force: true });
  }
  throw refused(`could not take the lock for ${key}`, 'another pgscale started on this cluster at the same moment: see `pgscale runs`, then try again');
}

export function releaseLock(key: string, runId: string): void {
  const held = readLock(key);
  if (held?.runId === runId) rmSync(lockPath(key), { force: true });
}
