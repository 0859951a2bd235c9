import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createCluster, createLoopVolume, mkdirOwned, scratchDir, serverUser, teardownAll, TestCluster, type LoopVolume } from '../helpers/testbed.js';
import { parseJson, runCli, type CliResult } from '../helpers/cli.js';
import type { OperationResult } from '../../src/operationCommand.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import { isRoot } from '../../src/runner.js';
import { lockPath } from '../../src/pipeline/journal.js';
import { readSystemIdentifier } from '../../src/pipeline/plan.js';
import { CLUSTER_LOCK_NAMESPACE } from '../../src/sql.js';

after(teardownAll);

/** The data directory's top level and a target's contents: what "nothing changed" compares. */
function layout(pgdata: string, ...targets: string[]): string[] {
  const entry = (path: string, name: string) => {
    const st = lstatSync(join(path, name));
    return `${join(path, name)} ${st.isSymbolicLink() ? `-> ${readlinkSync(join(path, name))}` : st.isDirectory() ? 'dir' : 'file'}`;
  };
  const out = readdirSync(pgdata)
    .sort()
    .map((n) => entry(pgdata, n));
  for (const t of targets) out.push(existsSync(t) ? `${t}: ${readdirSync(t).sort().join(',')}` : `${t}: absent`);
  return out;
}

describe('pgscale wal move on a real 17 cluster and loop-mounted volumes', { skip: !isRoot() && 'loop volumes need root' }, () => {
  let c: TestCluster;
  let vol: LoopVolume;
  let tiny: LoopVolume;
  let stateDir: string;
  let rows = 0;

  const walDir = (c: TestCluster) => join(c.pgdata, 'pg_wal');
  const move = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
    runCli(['wal', 'move', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, '--yes', '--json', ...args], { env });
  const count = async () => Number(await c.sql('select count(*) from t'));
  const running = async () => (await c.sql('select 1')) === '1';

  /** A write and a WAL switch: the completed segment must be a file in `dir`. */
  async function switchLandsIn(dir: string): Promise<void> {
    await c.sql(`insert into t select g, md5(g::text) from generate_series(${rows + 1}, ${rows + 100}) g`);
    rows += 100;
    const segment = await c.sql('select pg_walfile_name(pg_switch_wal())');
    assert.match(segment, /^[0-9A-F]{24}$/);
    assert.ok(statSync(join(dir, segment)).isFile(), `${segment} is not in ${dir}: ${readdirSync(dir).join(', ')}`);
  }

  function assertOnVolume(target: string): void {
    const st = lstatSync(walDir(c));
    assert.ok(st.isSymbolicLink(), 'pg_wal is a symlink');
    assert.equal(st.uid, serverUser.uid, 'the link belongs to the cluster owner, as the one initdb makes');
    assert.equal(readlinkSync(walDir(c)), target);
    const t = statSync(target);
    assert.equal(t.mode & 0o777, 0o700);
    assert.equal(t.uid, serverUser.uid);
    assert.ok(!existsSync(join(c.pgdata, 'pg_wal.pgscale-old')) && !existsSync(join(c.pgdata, 'pg_wal.pgscale-new')));
  }

  function assertInDataDir(): void {
    const st = lstatSync(walDir(c));
    assert.ok(st.isDirectory() && !st.isSymbolicLink(), 'pg_wal is a plain directory');
    assert.equal(st.mode & 0o777, 0o700);
    assert.equal(st.uid, serverUser.uid);
    assert.ok(!existsSync(join(c.pgdata, 'pg_wal.pgscale-old')) && !existsSync(join(c.pgdata, 'pg_wal.pgscale-new')));
  }

  before(async () => {
    vol = createLoopVolume(512);
    tiny = createLoopVolume(4);
    stateDir = scratchDir('pgscale-state-');
    // max_wal_size 64MB keeps the space the move needs small enough for a test volume
    c = await createCluster({ version: 17, conf: ['max_wal_size = 64MB', 'min_wal_size = 32MB'] });
    await c.sql(`create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 20000) g;`);
    rows = 20000;
  });

  test('--dry-run shows the plan and changes nothing', async () => {
    const target = join(vol.mountPoint, 'dry');
    const before = layout(c.pgdata, target);
    const res = await runCli(['wal', 'move', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, '--to', target, '--dry-run']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /# pgscale plan: wal-move/);
    assert.match(res.stdout, /point of no return: after step `cleanup`/);
    assert.match(res.stdout, /expected downtime: .*stop, copy, swap, start/);
    assert.match(res.stdout, /\| separate device \| pass \|/);
    const json = parseJson<OperationResult>(await move(['--to', target, '--dry-run']));
    assert.equal(json.applied, false);
    assert.deepEqual(
      json.plan.steps.map((s) => s.id),
      ['stop', 'copy', 'swap', 'start', 'cleanup'],
    );
    assert.deepEqual(layout(c.pgdata, target), before);
    assert.ok(await running());
  });

  test('bad input and refusals: clear errors, documented exit codes, nothing changed', async () => {
    const full = mkdirOwned(join(vol.mountPoint, 'full'));
    writeFileSync(join(full, 'someone-elses-file'), 'x');
    const sameDevice = join(dirname(c.pgdata), 'wal-on-data-device');
    const tinyTarget = join(tiny.mountPoint, 'wal');
    const before = layout(c.pgdata, full, sameDevice, tinyTarget);
    const n = await count();
    const cases: { args: string[]; code: number; message: RegExp; pgdata?: string; json?: boolean }[] = [
      { args: ['--to', full], code: 3, message: /target empty or absent: .*not empty/, json: true },
      { args: ['--to', sameDevice], code: 3, message: /separate device: .*the same device .*--force/ },
      { args: ['--to', tinyTarget], code: 3, message: /free space: not enough/ },
      { args: ['--to', tiny.mountPoint], code: 3, message: /lost\+found.*subdirectory/ },
      { args: ['--to', join(c.pgdata, 'pg_wal')], code: 2, message: /inside the data directory/ },
      { args: [], code: 2, message: /--to DIR .* or --to-data-dir/ },
      { args: ['--to', join(vol.mountPoint, 'x'), '--to-data-dir'], code: 2, message: /exclude each other/ },
      { args: ['--to-data-dir'], code: 3, message: /already in the data directory/ },
      { args: ['--to', join(vol.mountPoint, 'x')], code: 2, message: /does not exist/, pgdata: join(dirname(c.pgdata), 'no-such-data'), json: true },
    ];
    for (const k of cases) {
      const res = await runCli(['wal', 'move', '--pgdata', k.pgdata ?? c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, '--yes', ...k.args]);
      assert.equal(res.code, k.code, `${k.args.join(' ')}: ${res.stderr}`);
      assert.match(res.stderr, k.message, k.args.join(' '));
      if (!k.json) continue;
      const json = parseJson<{ error: { exitCode: number; kind: string } }>(
        await runCli(['wal', 'move', '--pgdata', k.pgdata ?? c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, '--yes', '--json', ...k.args]),
      );
      assert.equal(json.error.exitCode, k.code);
      assert.equal(json.error.kind, k.code === 2 ? 'bad-input' : 'refused');
    }
    // --force turns the same-device refusal into a warning (shown on a dry run)
    const forced = await runCli([
      'wal',
      'move',
      '--pgdata',
      c.pgdata,
      '--bindir',
      c.bindir,
      '--state-dir',
      stateDir,
      '--to',
      sameDevice,
      '--force',
      '--dry-run',
    ]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /warning: separate device: .*accepted with --force/);
    assert.deepEqual(layout(c.pgdata, full, sameDevice, tinyTarget), before);
    assert.equal(await count(), n);
    assert.ok(await running());
  });

  test('moves the WAL of a running cluster onto a volume: symlink, server up, new segments land there', async () => {
    const target = join(vol.mountPoint, 'wal');
    const n = await count();
    const res = await move(['--to', target]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const out = parseJson<OperationResult>(res);
    assert.equal(out.run?.status, 'completed');
    assertOnVolume(target);
    assert.ok(await running());
    assert.equal(await count(), n);
    await switchLandsIn(target);
    // a completed run is past its point of no return: rollback refuses
    const rb = await runCli(['rollback', out.run.runId, '--state-dir', stateDir]);
    assert.equal(rb.code, 3, rb.stderr);
    assert.match(rb.stderr, /point of no return/);
    assert.doesNotMatch(rb.stderr, /pgscale resume/, 'a completed run has nothing to resume: the hint does not offer it');
    await c.stop();
    await c.start();
    assert.equal(await count(), rows);
    await switchLandsIn(target);
  });

  test('moves it back onto the data volume: pg_wal a directory again, the old directory removed', async () => {
    const old = join(vol.mountPoint, 'wal');
    // this time through a reviewed plan file: `pgscale apply` rebuilds the same steps and checks again
    const planFile = join(stateDir, 'wal-back.plan.json');
    const planned = await move(['--to-data-dir', '--dry-run', '--plan-out', planFile]);
    assert.equal(planned.code, 0, planned.stderr);
    assert.ok(lstatSync(walDir(c)).isSymbolicLink(), 'the dry run changed nothing');
    // the DBA restarts the server with another option after the review: the plan would restart it without
    const restarted = new TestCluster(c.version, c.bindir, c.pgdata, c.port, c.socketDir, c.logFile, [...c.options, '-c', 'work_mem=5MB'], c.configFile);
    await c.stop();
    await restarted.start();
    const refused = await runCli(['apply', planFile, '--state-dir', stateDir, '--yes']);
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, /listening.options changed since the plan .*work_mem=5MB/);
    assert.ok(lstatSync(walDir(c)).isSymbolicLink(), 'the refused apply changed nothing');
    await restarted.stop();
    await c.start();
    const res = await runCli(['apply', planFile, '--state-dir', stateDir, '--yes', '--json']);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.equal(parseJson<OperationResult>(res).run?.status, 'completed');
    assertInDataDir();
    assert.ok(!existsSync(old), `${old} is removed`);
    assert.equal(await count(), rows);
    await switchLandsIn(walDir(c));
  });

  test('SIGKILL at each step boundary, then `pgscale resume` completes', async () => {
    // an even number of points: the loop ends with the WAL back in the data directory
    const points = [
      'stop:started',
      'stop:applied',
      'copy:started',
      'copy:applied',
      'copy:done',
      'swap:started',
      'swap:applied',
      'swap:done',
      'start:applied',
      'cleanup:started',
    ];
    for (const [i, point] of points.entries()) {
      const toVolume = i % 2 === 0;
      const target = join(vol.mountPoint, `wal-${i}`);
      const n = await count();
      const killed = await move(toVolume ? ['--to', target] : ['--to-data-dir'], { PGSCALE_FAILPOINT: point });
      assert.equal(killed.code, null, `${point}: expected SIGKILL, got ${killed.code}: ${killed.stderr}`);
      const res = await runCli(['resume', '--state-dir', stateDir, '--yes', '--json']);
      assert.equal(res.code, 0, `${point}: ${res.stderr}${res.stdout}`);
      assert.equal(parseJson<RunReport>(res).status, 'completed', point);
      if (toVolume) assertOnVolume(target);
      else {
        assertInDataDir();
        assert.ok(!existsSync(join(vol.mountPoint, `wal-${i - 1}`)), `${point}: the old WAL directory is removed`);
      }
      assert.ok(await running(), point);
      assert.equal(await count(), n, point);
      await switchLandsIn(toVolume ? target : walDir(c));
    }
  });

  test('`pgscale rollback` after a kill with the server already on the new WAL restores the original layout, and keeps the WAL written since', async () => {
    assertInDataDir();
    const target = join(vol.mountPoint, 'rolled-back');
    const killed = await move(['--to', target], { PGSCALE_FAILPOINT: 'start:done' });
    assert.equal(killed.code, null, killed.stderr);
    // the server now runs with pg_wal on the volume: what it writes there must survive the rollback
    assert.ok(lstatSync(walDir(c)).isSymbolicLink());
    await switchLandsIn(target);
    const n = await count();
    const res = await runCli(['rollback', '--state-dir', stateDir, '--yes', '--json']);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.equal(parseJson<RunReport>(res).status, 'rolled-back');
    assertInDataDir();
    assert.ok(!existsSync(target), `${target} is removed`);
    assert.ok(await running());
    assert.equal(await count(), n);
    await switchLandsIn(walDir(c));
    await c.stop();
    await c.start();
    assert.equal(await count(), rows);
  });

  test('a stopped cluster is moved and stays stopped', async () => {
    const target = join(vol.mountPoint, 'stopped');
    await c.stop();
    const res = await move(['--to', target]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const out = parseJson<OperationResult>(res);
    assert.deepEqual(
      out.plan.steps.map((s) => s.id),
      ['stop', 'copy', 'swap', 'cleanup'],
    );
    assert.equal(out.plan.downtimeSeconds, 0);
    // with the server down, max_wal_size comes from the configuration files
    const space = out.plan.steps[0]!.checks.find((k) => k.name === 'free space');
    assert.match(space?.detail ?? '', /max_wal_size 64 MB from .*postgresql\.conf line \d+/);
    assertOnVolume(target);
    assert.ok(!existsSync(join(c.pgdata, 'postmaster.pid')), 'still stopped');
    await c.start();
    assert.equal(await count(), rows);
    await switchLandsIn(target);
  });

  /**
   * A Ctrl-C at each step boundary, one row each, moving the WAL back and forth. Before the stop
   * (downtime) it undoes the run; from then on it stops at the boundary, resumable, with the lock
   * file kept and no server session; the row's way out (resume or rollback) then completes.
   */
  test('SIGINT at every step boundary: exit code, message, journal state; the way out completes, the server runs the same data, no lock', async () => {
    const rows: { at: string; code: number; status: string; message: RegExp; wayOut?: 'resume' | 'rollback' }[] = [
      { at: 'stop:started', code: 130, status: 'rolled-back', message: /interrupted before any downtime: what run \S+ had done is undone/ },
      { at: 'stop:done', code: 130, status: 'interrupted', message: /interrupted; the journal of run \S+ is consistent/, wayOut: 'resume' },
      { at: 'copy:started', code: 130, status: 'interrupted', message: /interrupted; the journal/, wayOut: 'rollback' },
      { at: 'copy:done', code: 130, status: 'interrupted', message: /interrupted; the journal/, wayOut: 'resume' },
      { at: 'swap:started', code: 130, status: 'interrupted', message: /interrupted; the journal/, wayOut: 'rollback' },
      { at: 'swap:done', code: 130, status: 'interrupted', message: /interrupted; the journal/, wayOut: 'resume' },
      { at: 'start:started', code: 130, status: 'interrupted', message: /interrupted; the journal/, wayOut: 'rollback' },
      { at: 'start:done', code: 130, status: 'interrupted', message: /interrupted; the journal/, wayOut: 'resume' },
      { at: 'cleanup:started', code: 130, status: 'interrupted', message: /interrupted; the journal/, wayOut: 'resume' },
      { at: 'cleanup:done', code: 0, status: 'completed', message: /./ },
    ];
    const lockFile = () => lockPath(`system:${readSystemIdentifier(c.pgdata)}`);
    const serverLocks = async () => c.sql(`select count(*) from pg_locks where locktype = 'advisory' and classid = ${CLUSTER_LOCK_NAMESPACE}`);
    for (const [i, row] of rows.entries()) {
      const onVolume = lstatSync(walDir(c)).isSymbolicLink();
      const target = join(vol.mountPoint, `int-${i}`);
      const before = layout(c.pgdata);
      const n = await count();
      const res = await move(onVolume ? ['--to-data-dir'] : ['--to', target], { PGSCALE_FAILPOINT: `${row.at}:SIGINT` });
      assert.equal(res.code, row.code, `${row.at}: ${res.stdout}${res.stderr}`);
      const runId = readdirSync(join(stateDir, 'runs')).sort().at(-1)!;
      if (row.code !== 0) {
        const err = parseJson<{ error: { message: string; hint: string; kind: string } }>(res).error;
        assert.match(err.message, row.message, row.at);
        assert.equal(err.kind, 'interrupted');
        assert.match(err.hint, row.wayOut ? new RegExp(`pgscale resume ${runId}.*pgscale rollback ${runId}`) : /run the same command again when ready/);
      }
      const listed = parseJson<{ id: string; status: string }[]>(await runCli(['runs', '--state-dir', stateDir, '--json']));
      assert.equal(listed.find((r) => r.id === runId)?.status, row.status, row.at);
      assert.equal(existsSync(lockFile()), Boolean(row.wayOut), `${row.at}: the lock file is kept only for a run to resume or roll back`);
      if (row.wayOut) {
        const out = await runCli([row.wayOut, runId, '--state-dir', stateDir, '--yes', '--json']);
        assert.equal(out.code, 0, `${row.at} then ${row.wayOut}: ${out.stdout}${out.stderr}`);
        assert.equal(parseJson<RunReport>(out).status, row.wayOut === 'resume' ? 'completed' : 'rolled-back');
      }
      const moved = row.status === 'completed' || row.wayOut === 'resume';
      if (!moved) assert.deepEqual(layout(c.pgdata), before, `${row.at}: the original layout`);
      else if (onVolume) assertInDataDir();
      else assertOnVolume(target);
      assert.ok(await running(), row.at);
      assert.equal(await count(), n, row.at);
      assert.equal(existsSync(lockFile()), false, `${row.at}: no lock file left`);
      assert.equal(await serverLocks(), '0', `${row.at}: no server lock left`);
      await switchLandsIn(lstatSync(walDir(c)).isSymbolicLink() ? readlinkSync(walDir(c)) : walDir(c));
    }
  });
});
