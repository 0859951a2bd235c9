/**
 * Ctrl-C at every step boundary of `pgscale tune --apply --yes` with a restart, on one real 17
 * cluster: before the restart the run is undone (files byte for byte, settings as they were, no
 * lock); from the restart on it stays open, and its resume or rollback completes. Each row ends
 * with the cluster serving either the original or the tuned settings, nothing pending a restart.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, scratchDir, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli } from '../helpers/cli.js';
import { interruptAt, interruptRows } from '../helpers/interrupt.js';
import { isRoot } from '../../src/runner.js';
import { lockPath } from '../../src/pipeline/journal.js';
import { readSystemIdentifier } from '../../src/pipeline/plan.js';
import { CLUSTER_LOCK_NAMESPACE } from '../../src/sql.js';
import type { RunReport } from '../../src/pipeline/execute.js';

after(teardownAll);

const HW = ['--memory', '2GB', '--cpus', '2', '--storage', 'ssd', '--profile', 'oltp', '--no-measure'];
const sha = (path: string): string | null => (existsSync(path) ? createHash('sha256').update(readFileSync(path)).digest('hex') : null);

describe('pgscale tune --apply: SIGINT at every step boundary', { skip: !isRoot() && 'the test bed runs servers as postgres: needs root' }, () => {
  let c: TestCluster;
  let stateDir: string;
  let touched: string[];
  let original: (string | null)[];

  /** What a row compares: the touched files, the settings tune changes, what waits for a restart, and that the server answers. */
  const observed = async () => ({
    shared_buffers: await c.sql('show shared_buffers'),
    random_page_cost: await c.sql('show random_page_cost'),
    pending: await c.sql("select string_agg(name, ',') from pg_settings where pending_restart"),
    serving: await c.sql('select 1'),
  });

  before(async () => {
    stateDir = scratchDir('pgscale-state-');
    // wal_buffers as recommended: from its default -1 the server would report a restored value
    // pending a restart after any reload (tune.test.ts covers that); here nothing may be pending
    c = await createCluster({ version: 17, conf: ['fsync = off', 'wal_buffers = 16MB'] });
    touched = ['postgresql.conf', 'postgresql.auto.conf', 'conf.d/pgscale.conf'].map((f) => join(c.pgdata, f));
    original = touched.map(sha);
  });

  test('before the restart Ctrl-C undoes the run; from it on resume or rollback completes; the server serves the expected settings, no lock left', async () => {
    const untouched = await observed();
    assert.deepEqual(untouched, { shared_buffers: '128MB', random_page_cost: '4', pending: '', serving: '1' });
    const tuned = { shared_buffers: '512MB', random_page_cost: '1.1', pending: '', serving: '1' };
    const target = {
      start: (env: NodeJS.ProcessEnv) =>
        runCli(['tune', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, ...HW, '--apply', '--yes', '--json'], { env, timeoutMs: 180_000 }),
      stateDir,
      lockFile: () => lockPath(`system:${readSystemIdentifier(c.pgdata)}`),
      serverLocks: () => c.sql(`select count(*) from pg_locks where locktype = 'advisory' and classid = ${CLUSTER_LOCK_NAMESPACE}`),
      timeoutMs: 180_000,
    };
    for (const row of interruptRows(['backup', 'write', 'validate', 'reload', 'restart', 'verify'], 'restart')) {
      const { runId, outcome } = await interruptAt(row, target);
      if (outcome === 'rolled-back') {
        assert.deepEqual(touched.map(sha), original, `${row.at}: every touched file as before`);
        assert.deepEqual(await observed(), untouched, row.at);
        continue;
      }
      assert.deepEqual(await observed(), tuned, row.at);
      // back to the start for the next row: a completed tune run rolls back too
      const back = await runCli(['rollback', runId, '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: 180_000 });
      assert.equal(back.code, 0, `${row.at}: ${back.stdout}${back.stderr}`);
      assert.equal(parseJson<RunReport>(back).status, 'rolled-back');
      assert.deepEqual(touched.map(sha), original, `${row.at}: rolled back`);
      assert.deepEqual(await observed(), untouched, `${row.at}: rolled back`);
    }
  });
});
