/**
 * `pgscale tablespaces place` with pg_repack as the online table method, on a real PostgreSQL 17
 * with the test bed's pg_repack (postgresql-17-repack) and loop-mounted volumes: a table above
 * 100 MB moved under a writer, and a volume that runs out of space in the middle of a move.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, createLoopVolume, scratchDir, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli, startCli, type CliResult } from '../helpers/cli.js';
import { waitFor } from '../helpers/snapshot.js';
import { missingWrites, startWriter } from '../helpers/writer.js';
import type { OperationResult } from '../../src/operationCommand.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import { readRun } from '../../src/pipeline/journal.js';
import { isRoot } from '../../src/runner.js';

after(teardownAll);

const MB = 1024 ** 2;
// every table is judged cold: the tests are about moving, not about classifying
const allCold = ['--hot-per-minute', '1e15', '--cold-per-minute', '1e14'];

describe('pgscale tablespaces place with pg_repack on a real 17 cluster', { skip: !isRoot() && 'loop volumes need root' }, () => {
  let c: TestCluster;
  let stateDir: string;

  const cli = (db: string, args: string[]): Promise<CliResult> =>
    runCli(['tablespaces', ...args, '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, '--database', db], { timeoutMs: 600_000 });
  /** relation → tablespace ('' = default) of every table, index and TOAST table of the public schema. */
  const placement = async (db: string): Promise<Record<string, string>> => {
    const out = await c.sql(
      `select c.relname || '=' || coalesce(t.spcname, '') from pg_class c join pg_namespace n on n.oid = c.relnamespace
         left join pg_tablespace t on t.oid = c.reltablespace
        where c.relkind in ('r', 'i', 't')
          and (n.nspname = 'public' or c.oid in (select reltoastrelid from pg_class k join pg_namespace kn on kn.oid = k.relnamespace where kn.nspname = 'public'))
        order by 1`,
      db,
    );
    return Object.fromEntries(out.split('\n').map((l) => l.split('=') as [string, string]));
  };
  /** What pg_repack leaves when it does not clean up: its schema's tables and its trigger. */
  const repackLeftovers = async (db: string) =>
    c.sql(
      `select count(*) from pg_trigger where tgname = 'repack_trigger'
       union all select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'repack' and c.relkind = 'r'`,
      db,
    );

  before(async () => {
    stateDir = scratchDir('pgscale-state-');
    c = await createCluster({ version: 17, listenOn: 'command-line', configOutside: true, conf: ['max_wal_size = 256MB'] });
  });

  test('a 100+ MB table with a primary key moves to the cold volume by pg_repack under a writer: no client error, every acknowledged write there, indexes and TOAST moved; rollback moves it back and drops the extension', async () => {
    const cold = createLoopVolume(400);
    await c.sql('create database big');
    // the writer's own table is the one that moves: its inserts land in the table pg_repack copies
    await c.sql(
      `create table pgscale_writer (id bigint primary key, at timestamptz not null default now(), payload text not null default '');
       create index pgscale_writer_at on pgscale_writer (at);
       insert into pgscale_writer (id, payload) select -g, repeat(md5(g::text), 6) from generate_series(1, 450000) g;
       create table keyless (v int);
       insert into keyless select generate_series(1, 1000);
       analyze;`,
      'big',
    );
    const heapBytes = Number(await c.sql(`select pg_relation_size('pgscale_writer')`, 'big'));
    assert.ok(heapBytes >= 100 * MB, `the table is ${heapBytes} bytes`);
    assert.equal((await cli('big', ['sample'])).code, 0);

    const dry = await cli('big', ['place', '--volume', `${cold.mountPoint}=cold`, ...allCold, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(
      dry.stdout,
      /pg_repack --no-order --no-kill-backend --wait-timeout \d+ --tablespace pgscale_cold --moveidx --table '?"public"\."pgscale_writer"'?/,
    );
    assert.match(dry.stdout, /CREATE EXTENSION IF NOT EXISTS pg_repack/);
    assert.match(dry.stdout, /Move public\.keyless .* by ALTER TABLE/);
    assert.match(dry.stdout, /online table method \| pass \| pg_repack 1\.5\.\d+ is available/);
    assert.doesNotMatch(dry.stdout, /PGPASSWORD|password/i);

    const writer = await startWriter(c, { database: 'big', intervalMs: 20 });
    const res = await cli('big', ['place', '--yes', '--json', '--volume', `${cold.mountPoint}=cold`, ...allCold]).catch(async (e: unknown) => {
      await writer.stop();
      throw e;
    });
    const report = await writer.stop();
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const run = parseJson<OperationResult>(res);
    assert.deepEqual(
      run.plan.steps.map((s) => s.id),
      ['prepare', 'pg_repack-extension', 'move-public.keyless', 'move-public.pgscale_writer'],
    );
    assert.equal(report.errors, 0, 'no client error during the move');
    assert.ok(report.acknowledged.length > 20, `the writer wrote during the move (${report.acknowledged.length})`);
    assert.deepEqual(await missingWrites(c, report, 'big'), [], 'every acknowledged write is in the moved table');
    process.stderr.write(`writer: ${report.acknowledged.length} writes, longest gap ${report.longestGapMs} ms\n`);

    const p = await placement('big');
    for (const r of ['pgscale_writer', 'pgscale_writer_pkey', 'pgscale_writer_at', 'keyless']) assert.equal(p[r], 'pgscale_cold', r);
    const toast = await c.sql(`select relname from pg_class where oid = (select reltoastrelid from pg_class where relname = 'pgscale_writer')`, 'big');
    assert.equal(p[toast], 'pgscale_cold', 'TOAST follows the table');
    assert.equal(await c.sql(`select count(*) from pgscale_writer where id < 0`, 'big'), '450000');
    assert.equal(
      await c.sql(`select extversion from pg_extension where extname = 'pg_repack'`, 'big'),
      (/pg_repack (\S+) is available/.exec(dry.stdout) ?? [])[1],
    );
    assert.deepEqual((await repackLeftovers('big')).split('\n'), ['0', '0']);
    const verified = await c.sql(`select count(*) from pg_class c join pg_tablespace t on t.oid = c.reltablespace where t.spcname = 'pgscale_cold'`, 'big');
    assert.ok(Number(verified) >= 6, `table, TOAST, TOAST index, 2 indexes, keyless in pgscale_cold: ${verified}`);

    const rb = await runCli(['rollback', run.run!.runId, '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: 600_000 });
    assert.equal(rb.code, 0, rb.stderr + rb.stdout);
    assert.equal(parseJson<RunReport>(rb).status, 'rolled-back');
    assert.deepEqual(
      Object.entries(await placement('big')).filter(([, ts]) => ts !== ''),
      [],
    );
    assert.equal(await c.sql(`select count(*) from pg_extension where extname = 'pg_repack'`, 'big'), '0', 'the extension the run created is dropped');
    assert.equal(await c.sql(`select count(*) from pgscale_writer`, 'big'), String(450000 + report.acknowledged.length));
    assert.ok(!existsSync(join(cold.mountPoint, 'pgscale_cold')));
    // the next plan's estimate uses the copy rate of the move just journaled, not an assumed one
    assert.match(dry.stdout, /duration estimate \| pass \| copy rate 100 MB\/s assumed: no move of 16 MB or more journaled/);
    const again = await cli('big', ['place', '--volume', `${cold.mountPoint}=cold`, ...allCold, '--dry-run']);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /duration estimate \| pass \| copy rate [\d.]+ [kMG]B\/s, measured on the last 1 move journaled for this cluster/);
    await c.sql('drop database big');
    cold.unmount();
  });

  test('SIGKILL while pg_repack copies: resume completes (the orphaned copy ended and its trigger and log table dropped, or its finished swap taken as done); rollback returns the table', async () => {
    const vol = createLoopVolume(256);
    await c.sql('create database killed');
    await c.sql(
      `create table t (id int primary key, v text not null);
       insert into t select g, repeat(md5(g::text), 8) from generate_series(1, 500000) g;
       analyze;`,
      'killed',
    );
    assert.equal((await cli('killed', ['sample'])).code, 0);
    const run = startCli([
      'tablespaces',
      'place',
      '--pgdata',
      c.pgdata,
      '--bindir',
      c.bindir,
      '--state-dir',
      stateDir,
      '--database',
      'killed',
      '--yes',
      '--volume',
      `${vol.mountPoint}=cold`,
      ...allCold,
    ]);
    // pg_repack's trigger on the table: its copy is under way
    await waitFor('pg_repack at work', async () => (await repackLeftovers('killed')).split('\n')[0] === '1', 120_000, 20);
    run.kill('SIGKILL');
    const killed = await run.done;
    assert.equal(killed.signal, 'SIGKILL');
    assert.equal((await placement('killed')).t, '', 'the table is where it was');
    assert.equal(await c.sql('select count(*) from t', 'killed'), '500000', 'and readable');

    const res = await runCli(['resume', '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: 600_000 });
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const resumed = parseJson<RunReport>(res);
    assert.equal(resumed.status, 'completed');
    const events = readRun(stateDir, resumed.runId).events;
    const again = events.findIndex(
      (e) => e.type === 'step-started' && e.step === 'move-public.t' && events.slice(0, events.indexOf(e)).some((r) => r.type === 'run-started' && r.resumed),
    );
    process.stderr.write(`resume: ${again >= 0 ? 'the move ran again after the orphaned copy was ended' : 'the orphaned pg_repack had finished the move'}\n`);
    const p = await placement('killed');
    assert.deepEqual([p.t, p.t_pkey], ['pgscale_cold', 'pgscale_cold']);
    assert.equal(await c.sql('select count(*) from t', 'killed'), '500000');
    assert.deepEqual((await repackLeftovers('killed')).split('\n'), ['0', '0'], 'no trigger, no log table left');
    assert.equal(await c.sql(`select count(*) from pg_stat_activity where application_name like '%pg_repack'`), '0');

    const rb = await runCli(['rollback', resumed.runId, '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: 600_000 });
    assert.equal(rb.code, 0, rb.stderr + rb.stdout);
    assert.deepEqual(
      Object.entries(await placement('killed')).filter(([, ts]) => ts !== ''),
      [],
    );
    assert.equal(await c.sql(`select count(*) from pg_extension where extname = 'pg_repack'`, 'killed'), '0');
    await c.sql('drop database killed');
    vol.unmount();
  });

  /** Everything of pg_repack in a database: its trigger, tables, types and indexes in its schema, invalid indexes, its sessions. */
  const repackTraces = async (db: string) =>
    c.sql(
      `select 'trigger=' || count(*) from pg_trigger where tgname = 'repack_trigger'
       union all select 'relations=' || count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'repack' and c.relkind in ('r', 'i', 't')
       union all select 'types=' || count(*) from pg_type t join pg_namespace n on n.oid = t.typnamespace where n.nspname = 'repack' and t.typname ~ '^pk_'
       union all select 'invalid indexes=' || count(*) from pg_index where not indisvalid
       union all select 'sessions=' || count(*) from pg_stat_activity where application_name like '%pg_repack'`,
      db,
    );
  const noTraces = ['trigger=0', 'relations=0', 'types=0', 'invalid indexes=0', 'sessions=0'].join('\n');
  /** pg_repack processes working for this cluster (its port in their environment). */
  const repackProcesses = (): number[] =>
    readdirSync('/proc')
      .filter((pid) => /^\d+$/.test(pid))
      .filter((pid) => {
        try {
          const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
          return (
            readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'pg_repack' && env.includes('PGAPPNAME=pgscale-pg_repack') && env.includes(`PGPORT=${c.port}`)
          );
        } catch {
          return false;
        }
      })
      .map(Number);
  /** A table pg_repack takes a few seconds to copy, written to by the writer, and the place command started on it. */
  const startMove = async (db: string, volume: string) => {
    await c.sql(`create database ${db}`);
    await c.sql(
      `create table pgscale_writer (id bigint primary key, at timestamptz not null default now(), payload text not null default '');
       insert into pgscale_writer (id, payload) select -g, repeat(md5(g::text), 6) from generate_series(1, 300000) g;
       analyze;`,
      db,
    );
    assert.equal((await cli(db, ['sample'])).code, 0);
    const writer = await startWriter(c, { database: db, intervalMs: 20 });
    const args = ['tablespaces', 'place', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, '--database', db];
    const run = startCli([...args, '--yes', '--json', '--volume', `${volume}=cold`, ...allCold]);
    // pg_repack's trigger on the table: its copy is under way
    await waitFor('pg_repack at work', async () => (await repackLeftovers(db)).split('\n')[0] === '1', 120_000, 20);
    return { writer, run };
  };

  test('Ctrl-C while pg_repack copies under a writer: pg_repack is stopped, nothing of it is left, the run undoes itself and exits 130 with every acknowledged write kept', async () => {
    const vol = createLoopVolume(256);
    const { writer, run } = await startMove('interrupted', vol.mountPoint);
    run.kill('SIGINT');
    const res = await run.done;
    const report = await writer.stop();
    assert.equal(res.code, 130, res.stderr + res.stdout);
    const error = parseJson<{ error: { message: string; kind: string } }>(res).error;
    assert.equal(error.kind, 'interrupted');
    assert.match(error.message, /interrupted before any downtime: what run \S+ had done is undone/);
    const runId = readdirSync(join(stateDir, 'runs')).sort().at(-1)!;
    const journal = readRun(stateDir, runId);
    assert.equal(journal.status, 'rolled-back');
    assert.deepEqual(
      journal.events.filter((e) => e.type === 'step-rolled-back').map((e) => (e as { step: string }).step),
      ['move-public.pgscale_writer', 'pg_repack-extension', 'prepare'],
    );
    assert.equal(await repackTraces('interrupted'), noTraces, 'no trigger, log table, copy, key type or index of pg_repack left');
    assert.deepEqual(repackProcesses(), []);
    assert.deepEqual(
      Object.entries(await placement('interrupted')).filter(([, ts]) => ts !== ''),
      [],
      'the table and its index are where they were',
    );
    assert.equal(await c.sql(`select count(*) from pg_extension where extname = 'pg_repack'`, 'interrupted'), '0', 'the extension the run created is gone');
    assert.equal(await c.sql(`select count(*) from pg_tablespace where spcname like 'pgscale%'`), '0');
    assert.equal(report.errors, 0);
    assert.ok(report.acknowledged.length > 0);
    assert.deepEqual(await missingWrites(c, report, 'interrupted'), [], 'every acknowledged write is in the table');
    assert.equal(await c.sql('select count(*) from pgscale_writer where id < 0', 'interrupted'), '300000');
    // writes after the undo are not logged anywhere any more: the trigger is gone, the insert just lands
    await c.sql(`insert into pgscale_writer (id) values (0)`, 'interrupted');
    assert.equal(await repackTraces('interrupted'), noTraces);
    await c.sql('drop database interrupted');
    vol.unmount();
  });

  test('SIGKILL while pg_repack copies: pg_repack is left running, orphaned; rollback stops it, removes what it left, returns the table and drops the extension', async () => {
    const vol = createLoopVolume(256);
    const { writer, run } = await startMove('orphaned', vol.mountPoint);
    run.kill('SIGKILL');
    assert.equal((await run.done).signal, 'SIGKILL');
    const orphans = repackProcesses();
    process.stderr.write(`after SIGKILL: ${orphans.length} pg_repack process(es) still running\n`);
    const rb = await runCli(['rollback', '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: 120_000 });
    const report = await writer.stop();
    assert.equal(rb.code, 0, rb.stderr + rb.stdout);
    assert.equal(parseJson<RunReport>(rb).status, 'rolled-back');
    assert.deepEqual(repackProcesses(), [], 'the orphaned pg_repack is stopped');
    assert.equal(await repackTraces('orphaned'), noTraces, 'no trigger, log table, copy, key type or index of pg_repack left');
    assert.deepEqual(
      Object.entries(await placement('orphaned')).filter(([, ts]) => ts !== ''),
      [],
    );
    assert.equal(await c.sql(`select count(*) from pg_extension where extname = 'pg_repack'`, 'orphaned'), '0');
    assert.equal(report.errors, 0);
    assert.deepEqual(await missingWrites(c, report, 'orphaned'), [], 'every acknowledged write is in the table');
    assert.ok(!existsSync(join(vol.mountPoint, 'pgscale_cold')));
    await c.sql('drop database orphaned');
    vol.unmount();
  });

  for (const method of ['pg_repack', 'ALTER TABLE'] as const) {
    test(`a volume that fills up during a move by ${method}: that table stays where it was and readable, the run fails cleanly and undoes itself, the next run after space is made succeeds`, async () => {
      const db = method === 'pg_repack' ? 'fill_repack' : 'fill_alter';
      const extra = method === 'pg_repack' ? [] : ['--no-repack'];
      const vol = createLoopVolume(64);
      await c.sql(`create database ${db}`);
      await c.sql(
        `create table a_small (id int primary key, v text);
         insert into a_small select g, md5(g::text) from generate_series(1, 5000) g;
         create table b_growing (id int primary key, v text not null);
         insert into b_growing select g, repeat(md5(g::text), 8) from generate_series(1, 60000) g;
         analyze;`,
        db,
      );
      assert.equal((await cli(db, ['sample'])).code, 0);
      // planned while the tables fit (about 20 MB for a volume with ~55 MB free)
      const planFile = join(stateDir, `${db}.plan.json`);
      const planned = await cli(db, ['place', '--json', '--volume', `${vol.mountPoint}=cold`, ...allCold, ...extra, '--dry-run', '--plan-out', planFile]);
      assert.equal(planned.code, 0, planned.stderr);
      const moves = parseJson<OperationResult>(planned).plan.steps.filter((s) => s.kind === 'tablespaces.move');
      assert.deepEqual(
        moves.map((s) => s.title.replace(/ \(.*\) from /, ' from ')),
        [
          `Move public.a_small from the default tablespace to pgscale_cold with its 1 index by ${method}`,
          `Move public.b_growing from the default tablespace to pgscale_cold with its 1 index by ${method}`,
        ],
      );
      // the table grows before the reviewed plan is applied: its copy no longer fits on the volume
      await c.sql(`insert into b_growing select g, repeat(md5(g::text), 8) from generate_series(60001, 250000) g`, db);
      const rows = await c.sql('select count(*) from b_growing', db);
      const res = await runCli(['apply', planFile, '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: 600_000 });
      assert.equal(res.code, 4, `exit 4: failed, nothing left changed: ${res.stderr}${res.stdout}`);
      const error = parseJson<{ error: { message: string; kind: string } }>(res).error;
      assert.match(error.message, /No space left on device/);
      assert.match(error.message, /"?public"?\."?b_growing/);
      assert.match(error.message, /what the run had done is undone/);
      // everything is back where it was, readable, and nothing of the copy is left
      assert.deepEqual(
        Object.entries(await placement(db)).filter(([, ts]) => ts !== ''),
        [],
      );
      assert.equal(await c.sql('select count(*) from b_growing', db), rows);
      assert.equal(await c.sql('select count(*) from a_small', db), '5000');
      assert.equal(await c.sql(`select count(*) from pg_tablespace where spcname like 'pgscale%'`, db), '0');
      assert.equal(await c.sql(`select count(*) from pg_extension where extname = 'pg_repack'`, db), '0');
      assert.deepEqual(readdirSync(vol.mountPoint), ['lost+found'], 'the partial copy is gone from the volume');
      // no run is left open
      const rb = await runCli(['rollback', '--state-dir', stateDir, '--yes', '--json']);
      assert.equal(rb.code, 3, rb.stderr + rb.stdout);
      // a new plan sees the table as it is now and refuses before anything moves
      const refused = await cli(db, ['place', '--yes', '--volume', `${vol.mountPoint}=cold`, ...allCold, ...extra]);
      assert.equal(refused.code, 3, refused.stderr);
      assert.match(refused.stderr, /free space: not enough/);
      // space made (the growth removed and the table compacted): the same command succeeds
      await c.sql(`delete from b_growing where id > 60000; vacuum full b_growing;`, db);
      const ok = await cli(db, ['place', '--yes', '--json', '--volume', `${vol.mountPoint}=cold`, ...allCold, ...extra]);
      assert.equal(ok.code, 0, ok.stderr + ok.stdout);
      const p = await placement(db);
      for (const r of ['a_small', 'a_small_pkey', 'b_growing', 'b_growing_pkey']) assert.equal(p[r], 'pgscale_cold', r);
      assert.equal(await c.sql('select count(*) from b_growing', db), '60000');
      const back = await runCli(['rollback', parseJson<OperationResult>(ok).run!.runId, '--state-dir', stateDir, '--yes']);
      assert.equal(back.code, 0, back.stderr);
      await c.sql(`drop database ${db}`);
      vol.unmount();
    });
  }
});
