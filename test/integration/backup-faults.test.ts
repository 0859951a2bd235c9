/**
 * Crash safety of `pgscale backup`: SIGKILL at every step boundary (PGSCALE_FAILPOINT), SIGKILL
 * and SIGINT in the middle of a dump. After each, no incomplete backup carries the final name;
 * after a kill `pgscale resume` finishes a backup that verifies (or `rollback` leaves nothing
 * behind), and a Ctrl-C (before any downtime, as a backup always is) undoes the run itself.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, scratchDir, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli, startCli, type StartedCli } from '../helpers/cli.js';
import { holdTableLock, lockWaiters, sizeOf, waitFor } from '../helpers/snapshot.js';
import { isRoot } from '../../src/runner.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import { lockPath, processGroupAlive, type StampedEvent } from '../../src/pipeline/journal.js';
import { readSystemIdentifier } from '../../src/pipeline/plan.js';
import { CLUSTER_LOCK_NAMESPACE } from '../../src/sql.js';

after(teardownAll);

type Started = StartedCli;

interface RunSummary {
  id: string;
  status: string;
}

async function runs(stateDir: string): Promise<RunSummary[]> {
  const res = await runCli(['runs', '--state-dir', stateDir, '--json']);
  assert.equal(res.code, 0, res.stderr);
  return parseJson<RunSummary[]>(res);
}

function journal(stateDir: string, runId: string): StampedEvent[] {
  const text = readFileSync(join(stateDir, 'runs', runId, 'journal.jsonl'), 'utf8');
  // every line parses: the journal is never torn by a kill between events
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as StampedEvent);
}

describe('pgscale backup under faults', { skip: !isRoot() && 'the test bed runs servers as postgres: needs root' }, () => {
  let pg: TestCluster;
  let work: string;

  const backupArgs = (dest: string, stateDir: string, c: TestCluster = pg) => [
    'backup',
    '--bindir',
    c.bindir,
    '--pgdata',
    c.pgdata,
    '--to',
    dest,
    '--state-dir',
    stateDir,
  ];

  // one lock per cluster: a killed run holds its cluster until resumed, so concurrent cases each take a cluster of their own
  const lanes: TestCluster[] = [];
  const waiting: ((c: TestCluster) => void)[] = [];
  async function withLane<T>(use: (c: TestCluster) => Promise<T>): Promise<T> {
    const c = lanes.pop() ?? (await new Promise<TestCluster>((resolve) => waiting.push(resolve)));
    try {
      return await use(c);
    } finally {
      const next = waiting.shift();
      if (next) next(c);
      else lanes.push(c);
    }
  }

  /** The backup at dest is complete: `backup verify` passes and no staging directory remains. */
  async function assertVerifies(dest: string): Promise<void> {
    const v = await runCli(['backup', 'verify', dest]);
    assert.equal(v.code, 0, `backup verify ${dest}: ${v.stderr}`);
    assert.equal(existsSync(`${dest}.partial`), false, `${dest}.partial is gone`);
  }

  before(async () => {
    work = scratchDir('pgscale-backup-faults-');
    const clusters = await Promise.all([0, 1, 2].map(() => createCluster({ version: 17, conf: ['fsync = off'] })));
    for (const c of clusters) {
      await c.sql('create database app');
      await c.sql('create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 2000) g;', 'app');
    }
    pg = clusters[0]!;
    lanes.push(...clusters);
  });

  const steps = ['dump', 'manifest', 'verify', 'publish'] as const;
  const boundaries = ['started', 'applied', 'done'] as const;

  describe('SIGKILL at every step boundary, then resume', { concurrency: 3 }, () => {
    for (const step of steps) {
      for (const where of boundaries) {
        test(`${step}:${where}`, () =>
          withLane(async (c) => {
            const dest = join(work, `fp-${step}-${where}`);
            const stateDir = join(work, `state-${step}-${where}`);
            const killed = await startCli(backupArgs(dest, stateDir, c), { PGSCALE_FAILPOINT: `${step}:${where}` }).done;
            assert.equal(killed.signal, 'SIGKILL', `killed at ${step}:${where}: ${killed.stderr}`);
            assert.equal(killed.code, null);

            const published = step === 'publish' && where !== 'started';
            if (published) {
              // the rename happened: what carries the final name is complete
              await assertVerifies(dest);
            } else {
              assert.equal(existsSync(dest), false, `no ${dest} before publish`);
              assert.equal(existsSync(`${dest}.partial`), !(step === 'dump' && where === 'started'), 'staging exists once the dump step has made it');
            }
            const [run] = await runs(stateDir);
            assert.ok(run);
            assert.equal(run.status, 'killed');

            const resumed = await runCli(['resume', '--state-dir', stateDir, '--json']);
            assert.equal(resumed.code, 0, resumed.stderr);
            const report = parseJson<RunReport>(resumed);
            assert.equal(report.runId, run.id);
            assert.equal(report.status, 'completed');
            assert.ok(
              report.steps.every((s) => s.state === 'done' || s.state === 'skipped'),
              JSON.stringify(report.steps),
            );
            await assertVerifies(dest);
          }));
      }
    }

    test('rollback after SIGKILL at verify:done removes the staging directory, verified or not: it is not a backup', () =>
      withLane(async (c) => {
        const dest = join(work, 'rb-verify-done');
        const stateDir = join(work, 'state-rb-verify-done');
        const killed = await startCli(backupArgs(dest, stateDir, c), { PGSCALE_FAILPOINT: 'verify:done' }).done;
        assert.equal(killed.signal, 'SIGKILL');
        assert.ok(existsSync(join(`${dest}.partial`, 'verified.json')), 'the staging directory was verified');
        const rolled = await runCli(['rollback', '--state-dir', stateDir, '--json']);
        assert.equal(rolled.code, 0, rolled.stderr);
        assert.equal(parseJson<RunReport>(rolled).status, 'rolled-back');
        assert.equal(existsSync(dest), false);
        assert.equal(existsSync(`${dest}.partial`), false);
        // the cluster is free again: a new backup to the same place works
        const again = await runCli(backupArgs(dest, stateDir, c));
        assert.equal(again.code, 0, again.stderr);
        await assertVerifies(dest);
      }));

    test('rollback after SIGKILL at publish:applied keeps the published backup (a verified backup is never removed by an undo)', () =>
      withLane(async (c) => {
        const dest = join(work, 'rb-publish-applied');
        const stateDir = join(work, 'state-rb-publish-applied');
        const killed = await startCli(backupArgs(dest, stateDir, c), { PGSCALE_FAILPOINT: 'publish:applied' }).done;
        assert.equal(killed.signal, 'SIGKILL');
        const rolled = await runCli(['rollback', '--state-dir', stateDir, '--json']);
        assert.equal(rolled.code, 0, rolled.stderr);
        assert.equal(parseJson<RunReport>(rolled).status, 'rolled-back');
        assert.equal(existsSync(`${dest}.partial`), false);
        await assertVerifies(dest);
        assert.equal((await runs(stateDir))[0]?.status, 'rolled-back');
      }));
  });

  /** No lock of any kind is left on the cluster: neither this host's lock file nor a session's advisory lock. */
  async function assertNoLock(c: TestCluster): Promise<void> {
    assert.equal(existsSync(lockPath(`system:${readSystemIdentifier(c.pgdata)}`)), false, 'no lock file');
    assert.equal(await c.sql(`select count(*) from pg_locks where locktype = 'advisory' and classid = ${CLUSTER_LOCK_NAMESPACE}`), '0', 'no server lock');
  }

  /**
   * A Ctrl-C at each step boundary. A backup never takes the cluster down, so a Ctrl-C undoes the
   * run (nothing stays changed, no lock) and the same command then completes; at the last
   * boundary there is nothing left to stop and the run completes.
   */
  describe('SIGINT at every step boundary', { concurrency: 3 }, () => {
    const rows = steps.flatMap((step) =>
      (['started', 'done'] as const).map((where) => {
        const completes = step === 'publish' && where === 'done';
        return {
          at: `${step}:${where}`,
          code: completes ? 0 : 130,
          message: completes
            ? /SIGINT: stopping at the next safe point/
            : /interrupted before any downtime: what run \S+ had done is undone, nothing is left changed/,
          hint: completes ? undefined : /hint: run the same command again when ready/,
          status: completes ? 'completed' : 'rolled-back',
        };
      }),
    );
    for (const row of rows) {
      test(`${row.at}: exit ${row.code}, ${row.status}`, () =>
        withLane(async (c) => {
          const dest = join(work, `int-${row.at.replace(':', '-')}`);
          const stateDir = join(work, `state-int-${row.at.replace(':', '-')}`);
          const rowsBefore = await c.sql('select count(*) from t', 'app');
          const res = await runCli(backupArgs(dest, stateDir, c), { env: { PGSCALE_FAILPOINT: `${row.at}:SIGINT` } });
          assert.equal(res.code, row.code, `${row.at}: ${res.stderr}`);
          assert.match(res.stderr, row.message);
          if (row.hint) assert.match(res.stderr, row.hint);
          const [run] = await runs(stateDir);
          assert.equal(run?.status, row.status);
          const events = journal(stateDir, run.id).map((e) => e.type);
          assert.equal(events.includes('run-interrupted'), row.code === 130, events.join(' '));
          assert.equal(existsSync(`${dest}.partial`), false, 'no staging directory is left');
          await assertNoLock(c);
          assert.equal(await c.sql('select count(*) from t', 'app'), rowsBefore, 'the cluster serves the same data');
          if (row.status === 'rolled-back') {
            assert.equal(existsSync(dest), false);
            const again = await runCli(backupArgs(dest, stateDir, c));
            assert.equal(again.code, 0, again.stderr);
          }
          await assertVerifies(dest);
          await assertNoLock(c);
        }));
    }
  });

  test('a second Ctrl-C while the first one undoes the run: exit 130 at once, and `pgscale rollback` (or nothing, if the undo had finished) leaves no trace', () =>
    withLane(async (c) => {
      const dest = join(work, 'int-twice');
      const stateDir = join(work, 'state-int-twice');
      const run = startCli(backupArgs(dest, stateDir, c), { PGSCALE_FAILPOINT: 'manifest:done:SIGINT' });
      await waitFor(
        'the first Ctrl-C to start the undo',
        () =>
          existsSync(join(stateDir, 'runs')) &&
          // a run directory exists a moment before its journal does
          readdirSync(join(stateDir, 'runs')).some(
            (id) => existsSync(join(stateDir, 'runs', id, 'journal.jsonl')) && journal(stateDir, id).some((e) => e.type === 'run-interrupted'),
          ),
        60_000,
      );
      run.kill('SIGINT');
      const stopped = await run.done;
      assert.equal(stopped.code, 130, stopped.stderr);
      const [left] = await runs(stateDir);
      assert.ok(left && ['rolled-back', 'rollback-failed'].includes(left.status), `a way out remains: ${left?.status}`);
      if (left.status === 'rollback-failed') {
        const resume = await runCli(['resume', left.id, '--state-dir', stateDir]);
        assert.equal(resume.code, 3, 'a half-undone run is not resumed');
        assert.match(resume.stderr, /finish undoing it: `pgscale rollback/);
        const rolled = await runCli(['rollback', left.id, '--state-dir', stateDir, '--json']);
        assert.equal(rolled.code, 0, rolled.stderr);
        assert.equal(parseJson<RunReport>(rolled).status, 'rolled-back');
      }
      assert.equal(existsSync(`${dest}.partial`) || existsSync(dest), false, 'nothing of the run is left');
      // a lock file may outlive a process that left between journaling the undo and removing it: its
      // run is rolled back, so it blocks nothing, and the next run takes it over
      const again = await runCli(backupArgs(dest, stateDir, c));
      assert.equal(again.code, 0, again.stderr);
      await assertVerifies(dest);
      await assertNoLock(c);
    }));

  describe('signals in the middle of a dump', () => {
    before(async () => {
      // 12 MiB of incompressible bytes (24 MiB of hex, more than one zstd -T0 job, so compressed
      // output reaches the file) dumped before "app" (pg_dumpall goes by name): the dump file
      // grows, then pg_dump waits at the lock the tests hold on app.t
      await pg.sql('create database aaa');
      await pg.sql(
        `create table r (id int, b bytea); alter table r alter b set storage external;
         insert into r select g / 32768, string_agg(sha256(int4send(g)), ''::bytea) from generate_series(0, 12 * 32768 - 1) g group by g / 32768;`,
        'aaa',
      );
    });

    /** Starts a backup and returns once its dump file has grown and pg_dump waits at the lock. */
    async function backupStuckMidDump(dest: string, stateDir: string): Promise<Started> {
      const run = startCli(backupArgs(dest, stateDir));
      const file = join(`${dest}.partial`, 'dumpall.sql.zst');
      await waitFor('the dump file to grow while pg_dump waits at the lock', async () => sizeOf(file) > 0 && (await lockWaiters(pg)) > 0, 60_000);
      return run;
    }

    test('SIGKILL mid-dump: nothing is presented as a backup, a new backup is refused, resume reaps the orphans and completes', async () => {
      const dest = join(work, 'kill-mid-dump');
      const stateDir = join(work, 'state-kill-mid-dump');
      const lock = await holdTableLock(pg, 'app', 't');
      try {
        const run = await backupStuckMidDump(dest, stateDir);
        run.kill('SIGKILL');
        const killed = await run.done;
        assert.equal(killed.signal, 'SIGKILL');
        assert.equal(existsSync(dest), false, 'no complete backup is presented');
        assert.ok(existsSync(`${dest}.partial`), 'the partial dump stays under its staging name');
        assert.equal(existsSync(join(`${dest}.partial`, 'manifest.json')), false);

        const [killedRun] = await runs(stateDir);
        assert.ok(killedRun);
        assert.equal(killedRun.status, 'killed');
        const orphans = journal(stateDir, killedRun.id).flatMap((e) => (e.type === 'process' ? [e.pgid] : []));
        assert.equal(orphans.length, 2, 'pg_dumpall and the compressor were journaled');
        assert.ok(orphans.some(processGroupAlive), 'pg_dumpall outlived pgscale (it waits at the lock)');

        const sameDest = await runCli(backupArgs(dest, stateDir));
        assert.equal(sameDest.code, 3, sameDest.stderr);
        assert.match(sameDest.stderr, /no leftover staging directory: .*\.partial exists \(an interrupted backup\?\)/);
        const otherDest = await runCli(backupArgs(join(work, 'kill-mid-dump-other'), stateDir));
        assert.equal(otherDest.code, 3, otherDest.stderr);
        assert.match(otherDest.stderr, new RegExp(`run ${killedRun.id} on this cluster \\(system:\\d+\\) did not finish \\(killed\\)`));
        assert.match(otherDest.stderr, /hint: finish it with `pgscale resume/);
        assert.equal(existsSync(join(work, 'kill-mid-dump-other.partial')), false);

        // resume while the lock is still held: it must stop the orphans first (they cannot end on their own)
        const resume = startCli(['resume', '--state-dir', stateDir, '--json']);
        try {
          await waitFor("resume to stop the killed run's pg_dumpall", () => !orphans.some(processGroupAlive), 30_000);
        } finally {
          await lock.release();
        }
        const resumed = await resume.done;
        assert.equal(resumed.code, 0, resumed.stderr);
        assert.equal(parseJson<RunReport>(resumed).status, 'completed');
        await assertVerifies(dest);
      } finally {
        await lock.release();
      }
    });

    test('SIGINT mid-dump (before any downtime): exit 130, the run undone, no orphans, no lock; the same command then completes', async () => {
      const dest = join(work, 'int-mid-dump');
      const stateDir = join(work, 'state-int-mid-dump');
      const lock = await holdTableLock(pg, 'app', 't');
      try {
        const run = await backupStuckMidDump(dest, stateDir);
        run.kill('SIGINT');
        const stopped = await run.done;
        assert.equal(stopped.code, 130, stopped.stderr);
        assert.match(stopped.stderr, /interrupted before any downtime: what run \S+ had done is undone, nothing is left changed/);
        assert.match(stopped.stderr, /hint: run the same command again when ready/);
        assert.equal(existsSync(dest), false);
        assert.equal(existsSync(`${dest}.partial`), false, 'the staging directory is removed');

        const [interrupted] = await runs(stateDir);
        assert.ok(interrupted);
        assert.equal(interrupted.status, 'rolled-back');
        const events = journal(stateDir, interrupted.id);
        const failed = events.find((e) => e.type === 'step-failed');
        assert.ok(failed?.type === 'step-failed');
        assert.equal(failed.step, 'dump');
        assert.equal(failed.error, 'interrupted');
        // a dump that cleaned up after itself has nothing left to undo
        assert.deepEqual(
          events.filter((e) => e.type !== 'process').map((e) => e.type),
          [
            'run-started',
            'server-lock',
            'step-started',
            'step-failed',
            'run-interrupted',
            'rollback-started',
            ...(failed.clean ? [] : ['step-rolled-back']),
            'rollback-done',
          ],
        );
        const pgids = events.flatMap((e) => (e.type === 'process' ? [e.pgid] : []));
        assert.equal(pgids.length, 2);
        await waitFor('pgscale to have stopped pg_dumpall and the compressor', () => !pgids.some(processGroupAlive), 10_000);

        await lock.release();
        const again = await runCli([...backupArgs(dest, stateDir), '--json']);
        assert.equal(again.code, 0, again.stderr);
        assert.equal(parseJson<{ run: RunReport }>(again).run.status, 'completed');
        await assertVerifies(dest);
        assert.deepEqual(readdirSync(dest).sort(), ['dump.done.json', 'dumpall.sql.zst', 'manifest.json', 'verified.json']);
      } finally {
        await lock.release();
      }
    });
  });
});
