import * as Args from '@oclif/core/args';
import { listRuns } from './pipeline/journal.js';
import { refused } from './errors.js';

export const runArg = { run: Args.string({ description: 'Run id (see `pgscale runs`); default: the newest unfinished run.' }) };

/** The newest run that did not finish, for `resume` / `rollback` without an id. */
export function newestUnfinishedRun(stateDir: string): string {
  // a run refused before it started (another run held the lock) left nothing to continue or undo
  const open = listRuns(stateDir).filter((r) => !['completed', 'rolled-back'].includes(r.status) && r.events.some((e) => e.type === 'run-started'));
  const last = open[open.length - 1];
  if (!last) throw refused(`no unfinished run in ${stateDir}`, 'nothing to resume or roll back: see `pgscale runs` (with the --state-dir the run used)');
  return last.id;
}
