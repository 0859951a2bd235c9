/**
 * One lock per cluster across hosts: a run holds pgscale's advisory lock on the cluster's server
 * for its whole length. A second pgscale on "another host" (its own mount namespace with a tmpfs
 * over /var/lib/pgscale: another lock directory, another state dir, the cluster by --dsn over TCP)
 * is refused before it changes anything, told who holds the cluster; the lock is taken again after
 * pgscale restarts the server (tune --yes), and a run that finds it taken by someone else meanwhile
 * stops with what it did kept, and resumes once the other has gone.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, runner, scratchDir, serverUser, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli, startCli, type CliResult, type StartedCli } from '../helpers/cli.js';
import { isRoot } from '../../src/runner.js';
import { lockPath } from '../../src/pipeline/journal.js';
import { readSystemIdentifier } from '../../src/pipeline/plan.js';
import { serverLockKey } from '../../src/pipeline/serverLock.js';
import { CLUSTER_LOCK_NAMESPACE, PsqlSession, psqlArgs, statements } from '../../src/sql.js';

after(teardownAll);

const PASSWORD = 'lock-test-pw-3x';
let A: TestCluster;
let work: string;

const show = (r: CliResult) => `exit ${r.code}\nstdout:\n${r.stdout.slice(-3000)}\nstderr:\n${r.stderr.slice(-3000)}`;
const runKey = () => `system:${readSystemIdentifier(A.pgdata)}`;

/** pgscale on another host: a private mount namespace whose /var/lib/pgscale (locks included) is an empty tmpfs. */
function onOtherHost(args: string[]): Promise<CliResult> {
  mkdirSync('/var/lib/pgscale', { recursive: true, mode: 0o700 });
  return runCli(args, {
    env: { PGPASSWORD: PASSWORD },
    wrapper: ['unshare', '-m', '--', 'sh', '-c', 'mount -t tmpfs pgscale-other-host /var/lib/pgscale && exec "$@"', 'sh'],
  });
}

/** The same cluster by --dsn over TCP, as a pgscale elsewhere reaches it. */
const dsn = () => `host=127.0.0.1 port=${A.port} user=${A.superuser} dbname=postgres`;

/** Sessions holding pgscale's lock on A: application_name and backend pid. */
async function lockHolders(): Promise<{ app: string; pid: number }[]> {
  const out = await A.sql(
    `select a.application_name || '|' || l.pid from pg_locks l join pg_stat_activity a using (pid)
      where l.locktype = 'advisory' and l.classid = ${CLUSTER_LOCK_NAMESPACE} and l.objid = ${serverLockKey(runKey())} and l.granted`,
  );
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => ({ app: l.split('|')[0]!, pid: Number(l.split('|')[1]) }));
}

/** pgscale runs a test started: a failed assertion must not leave one paused (node's kill is a no-op once it exited). */
const started: StartedCli[] = [];
after(() => {
  for (const run of started) run.kill('SIGKILL');
});

/** Waits until a pgscale that hit a SIGSTOP failpoint is stopped. */
async function paused(run: StartedCli): Promise<void> {
  started.push(run);
  const deadline = Date.now() + 120_000;
  let ended: CliResult | undefined;
  void run.done.then((r) => (ended = r));
  while (Date.now() < deadline) {
    if (ended) assert.fail(`pgscale ended instead of pausing: ${show(ended)}`);
    if (readFileSync(`/proc/${run.pid}/stat`, 'utf8').split(') ')[1]?.startsWith('T')) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail('pgscale did not reach its failpoint');
}

const journal = (stateDir: string) => {
  const [id] = readdirSync(join(stateDir, 'runs'));
  const events = readFileSync(join(stateDir, 'runs', id!, 'journal.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; backendPid?: number; step?: string });
  return { id: id!, events };
};

describe('the server-side lock: one run per cluster whatever host it runs on', { skip: !isRoot() && 'servers run as postgres: needs root' }, () => {
  before(async () => {
    A = await createCluster({ version: 17, configOutside: true, conf: ["listen_addresses = '127.0.0.1'"] });
    await A.sql(`create table t (id int primary key); insert into t select generate_series(1, 1000); alter role ${A.superuser} password '${PASSWORD}'`);
    work = scratchDir('pgscale-server-lock-');
  });

  test('while a backup runs, a pgscale on another host (--dsn, its own state and lock dirs) is refused, nothing changed; after it, that pgscale runs', async () => {
    const x = join(work, 'x');
    const y = join(work, 'y');
    const first = startCli(['backup', '--pgdata', A.pgdata, '--bindir', A.bindir, '--to', join(work, 'first'), '--state-dir', x], {
      PGSCALE_FAILPOINT: 'manifest:started:SIGSTOP',
    });
    await paused(first);
    const { id, events } = journal(x);
    const holders = await lockHolders();
    assert.deepEqual(
      holders.map((h) => h.app),
      [`pgscale ${id}`],
      'the run holds the lock in a session named after it',
    );
    assert.deepEqual(
      events.filter((e) => e.type === 'server-lock').map((e) => e.backendPid),
      [holders[0]!.pid],
    );
    assert.ok(existsSync(lockPath(runKey())), "this host's lock file is held too");

    const backup = ['backup', '--dsn', dsn(), '--bindir', A.bindir, '--to', join(work, 'second'), '--state-dir', y];
    for (const args of [backup, [...backup, '--dry-run']]) {
      const [text, json] = [await onOtherHost(args), await onOtherHost([...args, '--json'])];
      assert.equal(text.code, 3, `${args.join(' ')}: ${show(text)}`);
      assert.match(
        text.stderr,
        new RegExp(
          `another pgscale holds this cluster on its server: "pgscale ${id}" \\(backend pid ${holders[0]!.pid}, over the local socket, connected since [^)]+\\) has pgscale's lock`,
        ),
      );
      assert.match(text.stderr, /hint: it runs on another host or with another lock directory: wait for it to finish \(pg_stat_activity and pg_locks/);
      assert.doesNotMatch(text.stderr + json.stdout, new RegExp(PASSWORD));
      const err = parseJson<{ error: { exitCode: number; kind: string } }>(json).error;
      assert.deepEqual([err.exitCode, err.kind], [3, 'refused']);
    }
    assert.equal(existsSync(y), false, 'the refused runs left no state directory');
    assert.equal(existsSync(join(work, 'second')) || existsSync(join(work, 'second.partial')), false, 'nor a backup');
    assert.deepEqual(
      (await lockHolders()).map((h) => h.app),
      [`pgscale ${id}`],
      'the first run still holds the cluster alone',
    );

    first.kill('SIGCONT');
    const done = await first.done;
    assert.equal(done.code, 0, show(done));
    assert.deepEqual(await lockHolders(), [], 'the lock is released with the run');
    const later = await onOtherHost(backup);
    assert.equal(later.code, 0, show(later));
    assert.deepEqual(await lockHolders(), []);
  });

  const tune = (memory: string, stateDir: string) => [
    'tune',
    '--pgdata',
    A.pgdata,
    '--bindir',
    A.bindir,
    '--apply',
    '--yes',
    '--memory',
    memory,
    '--cpus',
    '2',
    '--storage',
    'ssd',
    '--state-dir',
    stateDir,
  ];

  test('tune --yes restarts the server: the lock is taken again by a new session, and held through the steps after the restart', async () => {
    const s = join(work, 'tune-a');
    const run = startCli(tune('1GB', s), { PGSCALE_FAILPOINT: 'verify:started:SIGSTOP' });
    await paused(run);
    const { id, events } = journal(s);
    const taken = events.filter((e) => e.type === 'server-lock').map((e) => e.backendPid);
    assert.equal(taken.length, 2, `taken at the start and after the restart: ${JSON.stringify(events)}`);
    assert.notEqual(taken[0], taken[1]);
    assert.ok(
      events.findIndex((e) => e.type === 'step-done' && e.step === 'restart') < events.findLastIndex((e) => e.type === 'server-lock'),
      'the second session comes after the restart',
    );
    assert.deepEqual(await lockHolders(), [{ app: `pgscale ${id}`, pid: taken[1]! }]);
    const other = await onOtherHost(['backup', '--dsn', dsn(), '--bindir', A.bindir, '--to', join(work, 'during-tune'), '--state-dir', join(work, 'z')]);
    assert.equal(other.code, 3, show(other));
    run.kill('SIGCONT');
    const done = await run.done;
    assert.equal(done.code, 0, show(done));
    assert.deepEqual(await lockHolders(), []);
  });

  test('a session that took the lock while pgscale restarted the server: the run stops before its next step (exit 5, the holder named), then resumes', async () => {
    const s = join(work, 'tune-b');
    const run = startCli(tune('2GB', s), { PGSCALE_FAILPOINT: 'restart:done:SIGSTOP' });
    await paused(run);
    const { id } = journal(s);
    // another pgscale's session, as it would hold the lock
    const intruder = new PsqlSession(
      runner.stream({
        program: join(A.bindir, 'psql'),
        args: [...psqlArgs, '-h', A.socketDir, '-p', String(A.port), '-d', 'postgres'],
        runAs: serverUser,
        env: { PGAPPNAME: 'pgscale 20260101T000000-backup-0ther0' },
      }),
      'intruder',
    );
    try {
      const [took] = await intruder.query(statements.takeClusterLock(serverLockKey(runKey())));
      assert.equal(took?.taken, true, 'the restart ended the run’s session, so the lock was free');
      run.kill('SIGCONT');
      const stoppedRun = await run.done;
      assert.equal(stoppedRun.code, 5, show(stoppedRun));
      assert.match(stoppedRun.stderr, /another pgscale holds this cluster on its server: "pgscale 20260101T000000-backup-0ther0" \(backend pid \d+/);
      assert.match(stoppedRun.stderr, new RegExp(`run ${id} stopped before its next step; what it had done is kept`));
      assert.match(stoppedRun.stderr, new RegExp(`hint: wait for that run to end, then continue with \`pgscale resume ${id} --state-dir ${s}\``));
      const { events } = journal(s);
      assert.equal(
        events.some((e) => e.type === 'step-started' && e.step === 'verify'),
        false,
        'no step began after the lock was lost',
      );
      assert.ok(existsSync(lockPath(runKey())), 'the stopped run keeps its host lock: only its resume or rollback may go on');
      const refused = await runCli(['resume', id, '--state-dir', s, '--yes']);
      assert.equal(refused.code, 3, `resume while the other holds the cluster: ${show(refused)}`);
      assert.match(refused.stderr, /another pgscale holds this cluster on its server/);
    } finally {
      await intruder.end();
    }
    const resumed = await runCli(['resume', id, '--state-dir', s, '--yes', '--json']);
    assert.equal(resumed.code, 0, show(resumed));
    assert.equal(parseJson<{ status: string }>(resumed).status, 'completed');
    assert.deepEqual(await lockHolders(), []);
    assert.equal(existsSync(lockPath(runKey())), false);
    assert.equal(await A.sql('select count(*) from t'), '1000');
  });
});
