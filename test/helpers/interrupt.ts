/**
 * Ctrl-C at a step boundary (PGSCALE_FAILPOINT=STEP:WHERE:SIGINT), for the operations' SIGINT
 * tables: which outcome each boundary must have, and one row run and judged with its way out.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseJson, runCli, type CliResult } from './cli.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import { readRun } from '../../src/pipeline/journal.js';

export interface InterruptRow {
  at: string;
  /** 130 interrupted; 0 when the Ctrl-C came after the last step (nothing was left to stop). */
  code: 0 | 130;
  /** The run's status as `pgscale runs` lists it right after the interrupted command. */
  status: 'rolled-back' | 'interrupted' | 'completed';
  /** For a run left open: what the test runs next, which must complete. */
  wayOut?: 'resume' | 'rollback';
}

/**
 * The rows for a plan's steps: a Ctrl-C before the first step that takes the cluster down or passes
 * its point of no return (or anywhere, for a plan without one) undoes the run; from that step's
 * end on, the run stays open, resumed and rolled back in turn; after the last step it completes.
 */
export function interruptRows(stepIds: readonly string[], firstDowntime?: string): InterruptRow[] {
  const edge = firstDowntime === undefined ? stepIds.length : stepIds.indexOf(firstDowntime);
  assert.ok(edge >= 0, `${firstDowntime} is not a step of ${stepIds.join(', ')}`);
  const rows: InterruptRow[] = [];
  for (const [i, id] of stepIds.entries()) {
    for (const where of ['started', 'done'] as const) {
      const at = `${id}:${where}`;
      // a step stopped right after it was journaled never began: it does not count as touched
      const open = i > edge || (i === edge && where === 'done');
      if (i === stepIds.length - 1 && where === 'done') rows.push({ at, code: 0, status: 'completed' });
      else if (!open) rows.push({ at, code: 130, status: 'rolled-back' });
      else rows.push({ at, code: 130, status: 'interrupted', wayOut: rows.filter((r) => r.wayOut).length % 2 === 0 ? 'resume' : 'rollback' });
    }
  }
  return rows;
}

export interface InterruptTarget {
  /** Starts the operation with the environment given (the failpoint among it); --json, --yes. */
  start: (env: NodeJS.ProcessEnv) => Promise<CliResult>;
  stateDir: string;
  /** The host-wide lock file of the cluster's runs. */
  lockFile: () => string;
  /** How many of pgscale's advisory locks the cluster's server holds. */
  serverLocks: () => Promise<string>;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/**
 * Runs one row: the exit code, message, hint and journal status of the interrupted command; the
 * lock file kept only for a run left open; its way out completing; then no lock of either kind.
 * Returns the run and where it ended: 'completed' (the change is made) or 'rolled-back'.
 */
export async function interruptAt(row: InterruptRow, t: InterruptTarget): Promise<{ runId: string; outcome: 'completed' | 'rolled-back' }> {
  const env = t.env ?? {};
  const res = await t.start({ ...env, PGSCALE_FAILPOINT: `${row.at}:SIGINT` });
  assert.equal(res.code, row.code, `${row.at}: ${res.stdout}${res.stderr}`);
  const runId = readdirSync(join(t.stateDir, 'runs')).sort().at(-1)!;
  if (row.code !== 0) {
    const err = parseJson<{ error: { message: string; hint: string; kind: string } }>(res).error;
    assert.equal(err.kind, 'interrupted', row.at);
    if (row.wayOut) {
      assert.match(err.message, /interrupted; the journal of run \S+ is consistent/, row.at);
      assert.match(err.hint, new RegExp(`pgscale resume ${runId}.*pgscale rollback ${runId}`), row.at);
    } else {
      assert.match(err.message, /interrupted before any downtime: what run \S+ had done is undone/, row.at);
      assert.match(err.hint, /run the same command again when ready/, row.at);
    }
  }
  // the journal as `pgscale runs` reads it (a CLI start less per row)
  assert.equal(readRun(t.stateDir, runId).status, row.status, row.at);
  assert.equal(existsSync(t.lockFile()), Boolean(row.wayOut), `${row.at}: the lock file is kept only for a run to resume or roll back`);
  if (row.wayOut) {
    const out = await runCli([row.wayOut, runId, '--state-dir', t.stateDir, '--yes', '--json'], { env, timeoutMs: t.timeoutMs });
    assert.equal(out.code, 0, `${row.at} then ${row.wayOut}: ${out.stdout}${out.stderr}`);
    assert.equal(parseJson<RunReport>(out).status, row.wayOut === 'resume' ? 'completed' : 'rolled-back', row.at);
  }
  assert.equal(existsSync(t.lockFile()), false, `${row.at}: no lock file left`);
  assert.equal(await t.serverLocks(), '0', `${row.at}: no server lock left`);
  return { runId, outcome: row.status === 'completed' || row.wayOut === 'resume' ? 'completed' : 'rolled-back' };
}
