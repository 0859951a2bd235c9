import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, createLoopVolume, mkdirOwned, scratchDir, serverUser, teardownAll, type LoopVolume, type TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli, type CliResult } from '../helpers/cli.js';
import { waitFor } from '../helpers/snapshot.js';
import type { OperationResult } from '../../src/operationCommand.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import type { TemperatureReport } from '../../src/tablespaces/snapshot.js';
import { isRoot } from '../../src/runner.js';
import { historyPartitions, loadTiers } from '../helpers/tiers.js';

after(teardownAll);

const partitions = historyPartitions;

describe('pgscale tablespaces on a real 17 cluster and loop-mounted volumes', { skip: !isRoot() && 'loop volumes need root' }, () => {
  let c: TestCluster;
  let hot: LoopVolume;
  let cold: LoopVolume;
  let tiny: LoopVolume;
  let stateDir: string;
  let planFile: string;

  const cli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
    runCli(['tablespaces', ...args, '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir], { env });
  const place = (args: string[], env: NodeJS.ProcessEnv = {}) => cli(['place', '--yes', '--json', ...args], env);
  // these tests cover ALTER TABLE and REINDEX CONCURRENTLY; pg_repack (in the test bed's 17) has tablespaces-repack.test.ts
  const volumes = () => ['--volume', `${hot.mountPoint}=hot`, '--volume', `${cold.mountPoint}=cold`, '--no-repack'];
  /** relation → tablespace ('' = default) of the history partitions, their indexes and the hot table. */
  const placement = async (): Promise<Record<string, string>> => {
    const out = await c.sql(`select c.relname || '=' || coalesce(t.spcname, '') from pg_class c join pg_namespace n on n.oid = c.relnamespace
      left join pg_tablespace t on t.oid = c.reltablespace where n.nspname = 'public' and c.relkind in ('r', 'i', 'p', 'I') order by 1`);
    return Object.fromEntries(out.split('\n').map((l) => l.split('=') as [string, string]));
  };
  const allDefault = (p: Record<string, string>) =>
    Object.entries(p)
      .filter(([, ts]) => ts !== '')
      .map(([r]) => r);

  before(async () => {
    hot = createLoopVolume(32);
    cold = createLoopVolume(96);
    tiny = createLoopVolume(8);
    stateDir = scratchDir('pgscale-state-');
    c = await createCluster({ version: 17, conf: ['max_wal_size = 64MB', 'min_wal_size = 32MB'] });
    await loadTiers(c, 15000);
    assert.equal(await c.sql('select count(*) from history'), '15000');
  });

  test('two samples around a workload: show classifies the hammered table hot and the unread partitions cold, with reasons', async () => {
    const s1 = await cli(['sample', '--json']);
    assert.equal(s1.code, 0, s1.stderr);
    const file = parseJson<{ file: string }>(s1).file;
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(join(stateDir, 'tablespaces')).mode & 0o777, 0o700);
    // a small bounded workload on hot_t only
    await c.sql(
      Array.from(
        { length: 300 },
        (_, i) => `update hot_t set v = v + 1 where id = ${(i % 2000) + 1}; select v from hot_t where id = ${((i * 7) % 2000) + 1};`,
      ).join('\n'),
    );
    await new Promise((r) => setTimeout(r, 1100)); // the counters reach pg_stat at the next flush (≤ 1 s)
    assert.equal((await cli(['sample'])).code, 0);
    const res = await cli(['show', '--json']);
    assert.equal(res.code, 0, res.stderr);
    const report = parseJson<TemperatureReport>(res);
    assert.equal(report.basis, 'two snapshots');
    const by = new Map(report.relations.map((r) => [r.name, r]));
    assert.equal(by.get('hot_t')?.tier, 'hot', by.get('hot_t')?.reason);
    assert.match(by.get('hot_t')!.reason, /scans\+writes\/min .* ≥ .*stays hot/);
    for (const p of partitions) {
      assert.equal(by.get(p)?.tier, 'cold', by.get(p)?.reason);
      assert.match(by.get(p)!.reason, /time-range partition ended \d+ days ago/);
      assert.equal(by.get(p)?.parent, 'public.history');
    }
    assert.ok(!by.has('history'), 'a partitioned parent holds no rows and is not classified');
    const text = await cli(['show']);
    assert.match(text.stdout, /^hot +public\.hot_t/m);
  });

  test('bad input and refusals: message, hint, documented exit code, nothing changed', async () => {
    const before = await placement();
    const rootOnly = join(hot.mountPoint, 'root-only');
    mkdirSync(rootOnly, { mode: 0o755 });
    const sameDevice = mkdirOwned(join(scratchDir(), 'cold-on-data-device'));
    const cases: { args: string[]; code: number; message: RegExp }[] = [
      { args: ['--volume', `${cold.mountPoint}=lukewarm`], code: 2, message: /unknown tier "lukewarm"[\s\S]*hint: the tiers are hot, warm, cold/ },
      { args: ['--volume', `${join(c.pgdata, 'ts')}=cold`], code: 2, message: /inside the data directory[\s\S]*hint:/ },
      { args: [], code: 2, message: /pass --volume PATH=hot\|warm\|cold/ },
      { args: ['--volume', `${rootOnly}=cold`], code: 3, message: /writable by postgres: postgres \(the cluster owner\) cannot write/ },
      { args: ['--volume', `${sameDevice}=cold`], code: 3, message: /separate device: .* on the data directory's device.*--force/ },
    ];
    for (const k of cases) {
      const res = await cli(['place', '--yes', ...k.args]);
      assert.equal(res.code, k.code, `${k.args.join(' ')}: ${res.stderr}`);
      assert.match(res.stderr, k.message, k.args.join(' '));
    }
    // a tablespace of that name somewhere else
    await c.sql(`create tablespace pgscale_cold location '${mkdirOwned(join(hot.mountPoint, 'elsewhere'))}'`);
    const collision = await cli(['place', '--yes', '--volume', `${cold.mountPoint}=cold`]);
    assert.equal(collision.code, 3, collision.stderr);
    assert.match(collision.stderr, /tablespace name: a tablespace named pgscale_cold already exists at .*elsewhere[\s\S]*hint: nothing was changed/);
    await c.sql('drop tablespace pgscale_cold');
    // the cold partitions do not fit on an 8 MB volume: refused before anything moves
    const small = await cli(['place', '--yes', '--volume', `${tiny.mountPoint}=cold`]);
    assert.equal(small.code, 3, small.stderr);
    assert.match(small.stderr, /free space: not enough/);
    const json = parseJson<{ error: { exitCode: number; kind: string } }>(await place(['--volume', `${tiny.mountPoint}=cold`]));
    assert.deepEqual([json.error.exitCode, json.error.kind], [3, 'refused']);
    assert.deepEqual(await placement(), before);
    assert.equal(await c.sql(`select count(*) from pg_tablespace where spcname like 'pgscale%'`), '0');
    assert.deepEqual(readdirSync(tiny.mountPoint), ['lost+found']);
  });

  test('--dry-run shows the moves with their online methods and changes nothing', async () => {
    // comma-separated, as a playbook passes them
    const res = await cli(['place', '--volume', `${hot.mountPoint}=hot,${cold.mountPoint}=cold`, '--no-repack', '--dry-run']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /# pgscale plan: tablespaces-place/);
    assert.match(res.stdout, /REINDEX \(TABLESPACE "pgscale_cold"\) INDEX CONCURRENTLY "public"\."history_2023_01_pkey"/);
    assert.match(res.stdout, /PERFORM set_config\('lock_timeout', '200ms', true\);/);
    assert.match(res.stdout, /staying \| pass \| public\.hot_t \(hot\): already on the hot tier/);
    planFile = join(stateDir, 'place.plan.json');
    const plan = parseJson<OperationResult>(await place([...volumes(), '--dry-run', '--plan-out', planFile])).plan;
    assert.equal(statSync(planFile).mode & 0o777, 0o600);
    assert.deepEqual(
      plan.steps.map((s) => s.id),
      ['prepare', ...partitions.map((p) => `move-public.${p}`), 'default-public.history', 'temp-tablespaces'],
    );
    assert.ok(plan.steps.every((s) => !s.downtime));
    assert.equal(allDefault(await placement()).length, 0);
    assert.ok(!existsSync(join(cold.mountPoint, 'pgscale_cold')));
  });

  test("a lock held elsewhere: bounded attempts under lock_timeout, then a clean failure that undoes itself: what was created is dropped, the DBA's tablespace setting put back", async () => {
    const part = partitions[0]!;
    // a pgscale_hot made earlier, with a setting of the DBA's: reused, and its setting put back by the rollback
    await c.sql(`create tablespace pgscale_hot location '${mkdirOwned(join(hot.mountPoint, 'pgscale_hot'))}' with (random_page_cost = 3)`);
    // SHARE conflicts with the move's ACCESS EXCLUSIVE, not with the size and catalog reads of planning
    const holder = c.sql(`begin; lock table ${part} in share mode; select pg_sleep(60); commit;`).catch(() => undefined);
    await waitFor(
      'the held lock',
      async () => (await c.sql(`select count(*) from pg_locks where relation = '${part}'::regclass and mode = 'ShareLock' and granted`)) === '1',
    );
    const started = Date.now();
    const res = await cli(['place', '--yes', ...volumes(), '--lock-timeout', '100', '--lock-retries', '2']);
    // pg_repack, given the same lock budget (1 s), gives up the same way instead of cancelling the holder
    const repacked = await cli(['place', '--yes', '--volume', `${cold.mountPoint}=cold`, '--lock-timeout', '100', '--lock-retries', '2']);
    await c.sql(`select pg_terminate_backend(pid) from pg_stat_activity where query like '%pg_sleep(60)%' and pid <> pg_backend_pid()`);
    await holder;
    // nothing takes the cluster down: a failure undoes the run at once and releases the lock (exit 4)
    assert.equal(res.code, 4, res.stderr);
    assert.match(res.stderr, new RegExp(`moving public\\.${part}: the lock was not granted within 100 ms in 3 attempts`));
    assert.match(res.stderr, /what the run had done is undone/);
    assert.equal(repacked.code, 4, repacked.stderr);
    assert.match(repacked.stderr, new RegExp(`moving public\\.${part} with pg_repack: the table is still in the default tablespace .*timed out`));
    assert.ok(Date.now() - started < 40_000, 'the attempts are bounded');
    assert.equal((await placement())[part], '', 'the partition stayed where it was');
    const rb = await runCli(['rollback', '--state-dir', stateDir, '--yes', '--json']);
    assert.equal(rb.code, 3, 'no run is left to roll back: ' + rb.stderr + rb.stdout);
    assert.equal(
      await c.sql(`select string_agg(spcname || ':' || coalesce(array_to_string(spcoptions, ','), ''), ' ') from pg_tablespace where spcname like 'pgscale%'`),
      'pgscale_hot:random_page_cost=3',
    );
    assert.ok(!existsSync(join(cold.mountPoint, 'pgscale_cold')), 'the directory it made is gone');
    assert.deepEqual(allDefault(await placement()), []);
    await c.sql('drop tablespace pgscale_hot');
  });

  test('the reviewed plan applied under a writer, SIGKILLed mid-run, resumed: cold partitions and their indexes on the cold volume, hot table untouched, every acknowledged row there; rollback returns everything', async () => {
    let stop = false;
    const acked: number[] = [];
    let failures = 0;
    let runId: string;
    // a writer into a partition that is moving and into the hot table: each insert its own transaction
    const writer = (async () => {
      for (let id = 1_000_000; !stop; id++) {
        try {
          await c.sql(`insert into history values (${id}, '2023-01-15', 'w'); insert into hot_t values (${id});`);
          acked.push(id);
        } catch {
          failures++;
        }
      }
    })();
    try {
      // the reviewed plan file, applied as it is
      const killed = await runCli(['apply', planFile, '--state-dir', stateDir, '--yes', '--json'], {
        env: { PGSCALE_FAILPOINT: `move-public.${partitions[1]}:started` },
      });
      assert.equal(killed.code, null, `expected SIGKILL: ${killed.stderr}${killed.stdout}`);
      const p1 = await placement();
      assert.equal(p1[partitions[0]!], 'pgscale_cold', 'the first partition moved before the kill');
      assert.equal(p1[partitions[1]!], '', 'the second did not');
      const res = await runCli(['resume', '--state-dir', stateDir, '--yes', '--json']);
      assert.equal(res.code, 0, res.stderr + res.stdout);
      const resumed = parseJson<RunReport>(res);
      assert.equal(resumed.status, 'completed');
      runId = resumed.runId;
    } finally {
      stop = true;
      await writer;
    }
    assert.ok(acked.length > 0, 'the writer wrote during the moves');
    assert.equal(failures, 0, 'no insert failed');
    assert.equal(await c.sql(`select count(*) from history where id >= 1000000`), String(acked.length));
    assert.equal(await c.sql(`select count(*) from hot_t where id >= 1000000`), String(acked.length));
    const p = await placement();
    for (const part of partitions) {
      assert.equal(p[part], 'pgscale_cold', part);
      assert.equal(p[`${part}_pkey`], 'pgscale_cold', `${part}_pkey`);
      assert.equal(p[`${part}_at_idx`], 'pgscale_cold', `${part}_at_idx`);
    }
    assert.equal(p.history, 'pgscale_cold', 'the parent default follows');
    assert.equal(p.hot_t, '');
    assert.equal(p.hot_t_pkey, '');
    const loc = join(cold.mountPoint, 'pgscale_cold');
    assert.equal(statSync(loc).mode & 0o777, 0o700);
    assert.equal(statSync(loc).uid, serverUser.uid);
    assert.equal(
      await c.sql(`select array_to_string(spcoptions, ',') from pg_tablespace where spcname = 'pgscale_cold'`),
      'random_page_cost=4,effective_io_concurrency=2,maintenance_io_concurrency=10',
    );
    assert.equal(await c.sql('show temp_tablespaces'), 'pgscale_hot');
    assert.equal(await c.sql('select count(*) from history'), String(15000 + acked.length));
    assert.equal(await c.sql(`select count(*) from pg_index where not indisvalid`), '0', 'no invalid index left by the kill');

    const rb = await runCli(['rollback', runId, '--state-dir', stateDir, '--yes', '--json']);
    assert.equal(rb.code, 0, rb.stderr + rb.stdout);
    assert.equal(parseJson<RunReport>(rb).status, 'rolled-back');
    assert.deepEqual(allDefault(await placement()), []);
    assert.equal(await c.sql(`select count(*) from pg_tablespace where spcname like 'pgscale%'`), '0');
    assert.ok(!existsSync(loc));
    assert.equal(await c.sql('show temp_tablespaces'), '');
    assert.equal(await c.sql('select count(*) from history'), String(15000 + acked.length));
  });
});
