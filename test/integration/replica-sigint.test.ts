/**
 * Ctrl-C at every step boundary of `pgscale replica add` (a local replica of a real 17 primary).
 * No step takes the primary down: every Ctrl-C before the last step's end undoes the run (no slot,
 * pg_hba.conf line, role, directory, password file or log left, no lock); after it the replica
 * streams, and the run's rollback takes it all away again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, freePort, scratchDir, serverUser, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli, startCli } from '../helpers/cli.js';
import { interruptAt, interruptRows } from '../helpers/interrupt.js';
import { isRoot, ZxRunner } from '../../src/runner.js';
import { lockPath } from '../../src/pipeline/journal.js';
import { readSystemIdentifier } from '../../src/pipeline/plan.js';
import { CLUSTER_LOCK_NAMESPACE } from '../../src/sql.js';
import type { RunReport } from '../../src/pipeline/execute.js';

after(teardownAll);

describe('pgscale replica add: SIGINT at every step boundary', { skip: !isRoot() && 'servers run as postgres: needs root' }, () => {
  let c: TestCluster;
  let base: string;
  let stateDir: string;
  let passfile: string;
  let dir: string;
  let port: number;

  const standbySql = async (sql: string): Promise<string> => {
    const res = await new ZxRunner().run({
      program: join(c.bindir, 'psql'),
      args: ['-X', '-At', '-h', c.socketDir, '-p', String(port), '-d', 'postgres', '-c', sql],
      runAs: serverUser,
    });
    return res.stdout.trim();
  };
  /** What the primary and the host show of a replica: what a rolled-back row compares. */
  const observed = async () => ({
    slots: await c.sql(`select coalesce(string_agg(slot_name, ','), '') from pg_replication_slots`),
    hba: readFileSync(join(c.pgdata, 'pg_hba.conf'), 'utf8'),
    role: await c.sql(`select count(*) from pg_roles where rolname = 'repl_new'`),
    files: [dir, `${dir}.pgpass`, `${dir}.log`].filter((f) => existsSync(f)),
    serving: await c.sql('select count(*) from t'),
  });

  before(async () => {
    base = scratchDir('pgscale-replica-');
    stateDir = scratchDir('pgscale-state-');
    dir = join(base, 'standby');
    port = await freePort();
    c = await createCluster({ version: 17, conf: ["listen_addresses = '127.0.0.1'"] });
    await c.sql(`create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 1000) g;`);
    passfile = join(base, 'pgpass');
    // repl_new is created by pgscale from this entry: the run has a role step to undo
    writeFileSync(passfile, '*:*:replication:repl_new:new pass\n', { mode: 0o600 });
  });

  /** The arguments of the run under test: a local replica in `dir`, a role for pgscale to create. */
  const addArgs = () => {
    const replica = ['--host', 'local', '--replica-pgdata', dir, '--replica-port', String(port), '--replication-user', 'repl_new'];
    return ['replica', 'add', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, ...replica, '--yes', '--json'];
  };

  test('every Ctrl-C but the last undoes the run; the completed run streams, then rolls back; nothing left, no lock', async () => {
    const untouched = await observed();
    assert.deepEqual(untouched.files, []);
    const env = { PGPASSFILE: passfile };
    const target = {
      start: (e: NodeJS.ProcessEnv) => runCli(addArgs(), { env: e, timeoutMs: 240_000 }),
      stateDir,
      env,
      lockFile: () => lockPath(`system:${readSystemIdentifier(c.pgdata)}`),
      serverLocks: () => c.sql(`select count(*) from pg_locks where locktype = 'advisory' and classid = ${CLUSTER_LOCK_NAMESPACE}`),
      timeoutMs: 240_000,
    };
    const rows = interruptRows(['checks', 'role', 'hba', 'slot', 'passfile', 'basebackup', 'start', 'verify']);
    for (const [i, row] of rows.entries()) {
      const { runId, outcome } = await interruptAt(row, target);
      if (outcome === 'rolled-back') {
        assert.deepEqual(await observed(), untouched, row.at);
        continue;
      }
      assert.equal(await c.sql(`select count(*) from pg_stat_replication where state = 'streaming'`), '1', row.at);
      await c.sql(`insert into t values (${5000 + i}, 'row ${row.at}')`);
      const end = Date.now() + 30_000;
      while ((await standbySql(`select v from t where id = ${5000 + i}`).catch(() => '')) !== `row ${row.at}`) {
        assert.ok(Date.now() < end, `${row.at}: the row did not reach the replica`);
        await new Promise((r) => setTimeout(r, 300));
      }
      await c.sql(`delete from t where id = ${5000 + i}`);
      const back = await runCli(['rollback', runId, '--state-dir', stateDir, '--yes', '--json'], { env, timeoutMs: 240_000 });
      assert.equal(back.code, 0, `${row.at}: ${back.stdout}${back.stderr}`);
      assert.equal(parseJson<RunReport>(back).status, 'rolled-back');
      assert.deepEqual(await observed(), untouched, `${row.at}: rolled back`);
    }
  });

  test('Ctrl-C while pg_basebackup copies: the copy is stopped and the run undone (exit 130), nothing left, no lock', async () => {
    const untouched = await observed();
    const run = startCli([...addArgs(), '--max-rate', '1M'], { PGPASSFILE: passfile });
    const end = Date.now() + 60_000;
    while (!existsSync(join(dir, 'base'))) {
      assert.ok(Date.now() < end, 'pg_basebackup did not start writing');
      await new Promise((r) => setTimeout(r, 100));
    }
    run.kill('SIGINT');
    const res = await run.done;
    assert.equal(res.code, 130, res.stdout + res.stderr);
    const err = parseJson<{ error: { message: string; kind: string } }>(res).error;
    assert.equal(err.kind, 'interrupted');
    assert.match(err.message, /interrupted before any downtime: what run \S+ had done is undone/);
    assert.deepEqual(await observed(), untouched);
    assert.equal(existsSync(lockPath(`system:${readSystemIdentifier(c.pgdata)}`)), false, 'no lock file left');
    assert.equal(await c.sql(`select count(*) from pg_locks where locktype = 'advisory' and classid = ${CLUSTER_LOCK_NAMESPACE}`), '0');
    assert.equal(await c.sql(`select count(*) from pg_stat_activity where backend_type = 'walsender'`), '0', 'no copy left streaming');
  });
});
