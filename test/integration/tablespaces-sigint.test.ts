/**
 * Ctrl-C at every step boundary of `pgscale tablespaces place` on one real 17 cluster and
 * loop-mounted volumes. No step takes the cluster down: every Ctrl-C before the last step's end
 * undoes the run (relations back on the default tablespace, no tablespace, directory or setting
 * left, no lock); after it the run completes, and its rollback returns everything.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, createLoopVolume, scratchDir, teardownAll, type LoopVolume, type TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli } from '../helpers/cli.js';
import { interruptAt, interruptRows } from '../helpers/interrupt.js';
import { isRoot } from '../../src/runner.js';
import { lockPath } from '../../src/pipeline/journal.js';
import { readSystemIdentifier } from '../../src/pipeline/plan.js';
import { CLUSTER_LOCK_NAMESPACE } from '../../src/sql.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import { historyPartitions, loadTiers } from '../helpers/tiers.js';

after(teardownAll);

const partitions = historyPartitions;

describe('pgscale tablespaces place: SIGINT at every step boundary', { skip: !isRoot() && 'loop volumes need root' }, () => {
  let c: TestCluster;
  let hot: LoopVolume;
  let cold: LoopVolume;
  let stateDir: string;

  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    runCli(['tablespaces', ...args, '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir], { env });
  /** Where each relation is, the tablespaces and their directories, temp_tablespaces, the rows: what a row compares. */
  const observed = async () => ({
    placement: await c.sql(`select string_agg(c.relname || '=' || coalesce(t.spcname, ''), ',' order by c.relname) from pg_class c
      join pg_namespace n on n.oid = c.relnamespace left join pg_tablespace t on t.oid = c.reltablespace
      where n.nspname = 'public' and c.relkind in ('r', 'i', 'p', 'I')`),
    tablespaces: await c.sql(`select coalesce(string_agg(spcname, ',' order by spcname), '') from pg_tablespace where spcname like 'pgscale%'`),
    directories: ['hot', 'cold'].filter((tier) => existsSync(join((tier === 'hot' ? hot : cold).mountPoint, `pgscale_${tier}`))).join(','),
    tempTablespaces: await c.sql('show temp_tablespaces'),
    rows: await c.sql('select count(*) from history'),
    invalidIndexes: await c.sql('select count(*) from pg_index where not indisvalid'),
  });

  before(async () => {
    hot = createLoopVolume(32);
    cold = createLoopVolume(96);
    stateDir = scratchDir('pgscale-state-');
    c = await createCluster({ version: 17, conf: ['max_wal_size = 64MB', 'min_wal_size = 32MB'] });
    await loadTiers(c, 3000);
    // two samples around a workload on hot_t: it stays hot, the partitions go cold
    assert.equal((await cli(['sample'])).code, 0);
    await c.sql(Array.from({ length: 300 }, (_, i) => `update hot_t set v = v + 1 where id = ${(i % 2000) + 1};`).join('\n'));
    await new Promise((r) => setTimeout(r, 1100)); // the counters reach pg_stat at the next flush (≤ 1 s)
    assert.equal((await cli(['sample'])).code, 0);
  });

  test('every Ctrl-C but the last undoes the run; the completed run rolls back; placement as expected, nothing left, no lock', async () => {
    const untouched = await observed();
    assert.equal(untouched.tablespaces, '');
    const target = {
      start: (env: NodeJS.ProcessEnv) =>
        cli(['place', '--yes', '--json', '--volume', `${hot.mountPoint}=hot`, '--volume', `${cold.mountPoint}=cold`, '--no-repack'], env),
      stateDir,
      lockFile: () => lockPath(`system:${readSystemIdentifier(c.pgdata)}`),
      serverLocks: () => c.sql(`select count(*) from pg_locks where locktype = 'advisory' and classid = ${CLUSTER_LOCK_NAMESPACE}`),
    };
    const steps = ['prepare', ...partitions.map((p) => `move-public.${p}`), 'default-public.history', 'temp-tablespaces'];
    for (const row of interruptRows(steps)) {
      const { runId, outcome } = await interruptAt(row, target);
      if (outcome === 'rolled-back') {
        assert.deepEqual(await observed(), untouched, row.at);
        continue;
      }
      const placed = await observed();
      for (const part of partitions)
        for (const rel of [part, `${part}_pkey`, `${part}_at_idx`]) assert.ok(placed.placement.includes(`${rel}=pgscale_cold,`), `${row.at}: ${rel} on cold`);
      assert.ok(placed.placement.includes('hot_t=,'), `${row.at}: hot_t stays: ${placed.placement}`);
      assert.equal(placed.tempTablespaces, 'pgscale_hot', row.at);
      assert.equal(placed.rows, untouched.rows, row.at);
      assert.equal(placed.invalidIndexes, '0', row.at);
      const back = await runCli(['rollback', runId, '--state-dir', stateDir, '--yes', '--json']);
      assert.equal(back.code, 0, `${row.at}: ${back.stdout}${back.stderr}`);
      assert.equal(parseJson<RunReport>(back).status, 'rolled-back');
      assert.deepEqual(await observed(), untouched, `${row.at}: rolled back`);
    }
  });
});
