/**
 * Crash safety of `pgscale upgrade` (16 → 17, link mode, --no-backup): pgscale is SIGKILLed at
 * every step boundary (PGSCALE_FAILPOINT) and once while pg_upgrade runs. `pgscale resume` must
 * complete with identical data; before the new cluster starts, `pgscale rollback` must give the
 * old cluster back running with identical data; after it started, rollback is refused (exit 3)
 * with the restore-from-backup explanation.
 *
 * Fast by design: one small 16 cluster is loaded once, stopped, and copied (cp -a) for each case.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { bindir, upgradeCommand, createCluster, freePort, mkdirOwned, removeScratchDir, scratchDir, teardownAll, TestCluster } from '../helpers/testbed.js';
import { cliEntry, repoRoot } from '../helpers/paths.js';
import { parseJson, runCli, type CliResult } from '../helpers/cli.js';
import { amcheckClean, datasetConf, datasetDb, loadDataset, smallDataset, tableChecksums, type Checksums } from '../helpers/dataset.js';
import { isRoot } from '../../src/runner.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import { lockPath } from '../../src/pipeline/journal.js';
import { readSystemIdentifier } from '../../src/pipeline/plan.js';
import { CLUSTER_LOCK_NAMESPACE } from '../../src/sql.js';

after(teardownAll);

const fail = (what: string, r: CliResult) => `${what}: exit ${r.code}\nstdout:\n${r.stdout.slice(-4000)}\nstderr:\n${r.stderr.slice(-4000)}`;
const running = (dataDir: string) => existsSync(join(dataDir, 'postmaster.pid'));

/**
 * Stopped, loaded 16 clusters to copy; a copy keeps its template's system identifier, and pgscale
 * holds one lock per system identifier: concurrent cases each take a template of their own.
 */
const templates: { cluster: TestCluster; baseline: Checksums }[] = [];
const waiting: ((t: (typeof templates)[number]) => void)[] = [];

async function withTemplate(use: (t: (typeof templates)[number]) => Promise<void>): Promise<void> {
  const t = templates.pop() ?? (await new Promise<(typeof templates)[number]>((resolve) => waiting.push(resolve)));
  try {
    await use(t);
  } finally {
    // the case's servers stop and its run's lock goes with it, passed or failed: the next case on this template starts clean
    for (const dir of caseDirs.filter((d) => d.template === t)) {
      caseDirs.splice(caseDirs.indexOf(dir), 1);
      removeScratchDir(dir.parent);
    }
    const next = waiting.shift();
    if (next) next(t);
    else templates.push(t);
  }
}

interface Case {
  old: TestCluster;
  baseline: Checksums;
  newDataDir: string;
  stateDir: string;
  args: string[];
}

const caseDirs: { template: (typeof templates)[number]; parent: string }[] = [];

/** A running copy of the template cluster on its own port and socket directory. */
async function freshCase(t: (typeof templates)[number]): Promise<Case> {
  const { cluster: template, baseline } = t;
  const parent = scratchDir('pgscale-upfault-');
  caseDirs.push({ template: t, parent });
  const pgdata = join(parent, 'data');
  execFileSync('cp', ['-a', template.pgdata, pgdata]);
  const sock = mkdirOwned(join(parent, 'sock'));
  const port = await freePort();
  appendFileSync(join(pgdata, 'postgresql.conf'), `\n# this copy\nport = ${port}\nunix_socket_directories = '${sock}'\n`);
  const old = new TestCluster(16, template.bindir, pgdata, port, sock, join(parent, 'server.log'));
  await old.start();
  const newDataDir = join(parent, 'data-17');
  const stateDir = join(parent, 'state');
  const args = upgradeCommand(
    { pgdata, bindir: template.bindir },
    { 'to-version': 17, 'new-pgdata': newDataDir, mode: 'link', 'no-backup': true, 'state-dir': stateDir, yes: true },
  );
  return { old, baseline, newDataDir, stateDir, args };
}

const newCluster = (k: Case) => new TestCluster(17, bindir(17), k.newDataDir, k.old.port, k.old.socketDir, join(k.newDataDir, '..', 'new.log'));

async function killedAt(k: Case, failpoint: string): Promise<void> {
  const res = await runCli(k.args, { env: { PGSCALE_FAILPOINT: failpoint }, timeoutMs: 180_000 });
  assert.equal(res.code, null, fail(`pgscale was to be SIGKILLed at ${failpoint}`, res));
}

/** pgscale resume finishes the run: PostgreSQL 17 on the old port with the same data, amcheck clean. */
async function resumeCompletes(k: Case): Promise<void> {
  const res = await runCli(['resume', '--state-dir', k.stateDir, '--yes', '--json'], { timeoutMs: 180_000 });
  assert.equal(res.code, 0, fail('resume', res));
  const run = parseJson<RunReport>(res);
  assert.equal(run.status, 'completed');
  assert.deepEqual(
    run.steps.filter((s) => s.state !== 'done' && s.state !== 'skipped').map((s) => `${s.id}: ${s.state}`),
    [],
  );
  const next = newCluster(k);
  assert.equal(Math.floor(Number(await next.sql('show server_version_num')) / 10000), 17);
  assert.equal(running(k.old.pgdata), false, 'the old cluster is stopped');
  assert.deepEqual(await tableChecksums(next), k.baseline);
  assert.deepEqual((await amcheckClean(next)).errors, []);
  await next.sql(`insert into items (id, name, created) values (-1, 'after resume', now())`, datasetDb);
  onlyServer(k, k.newDataDir);
}

/** pgscale rollback before the new cluster started: the old 16 cluster runs again with the same data, nothing new remains. */
async function rollbackRestores(k: Case): Promise<void> {
  const res = await runCli(['rollback', '--state-dir', k.stateDir, '--yes', '--json'], { timeoutMs: 180_000 });
  assert.equal(res.code, 0, fail('rollback', res));
  assert.equal(parseJson<RunReport>(res).status, 'rolled-back');
  assert.ok(running(k.old.pgdata), 'the old cluster runs again');
  assert.equal(Math.floor(Number(await k.old.sql('show server_version_num')) / 10000), 16);
  assert.deepEqual(await tableChecksums(k.old), k.baseline);
  assert.ok(existsSync(join(k.old.pgdata, 'global', 'pg_control')), 'pg_control is back in place');
  assert.equal(existsSync(k.newDataDir), false, 'the new data directory is removed');
  onlyServer(k, k.old.pgdata);
  await k.old.sql(`insert into items (id, name, created) values (-1, 'after rollback', now())`, datasetDb);
}

/** pg_upgrade processes and postmasters (by their -D) working in this case's directory. */
function processesOf(k: Case): { pgUpgrade: string[]; postmasterDirs: string[] } {
  const parent = dirname(k.newDataDir);
  const pgUpgrade: string[] = [];
  const postmasterDirs: string[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!argv.some((a) => a.startsWith(parent))) continue;
    if (argv[0]?.endsWith('/pg_upgrade')) pgUpgrade.push(`${pid}: ${argv.join(' ')}`);
    // a server pg_upgrade started runs in binary-upgrade mode (-b): never one to leave behind
    if (argv[0]?.endsWith('/postgres') && argv.includes('-D'))
      postmasterDirs.push(argv[argv.indexOf('-D') + 1]!.replace(/"/g, '') + (argv.includes('-b') ? ' (binary-upgrade mode, started by pg_upgrade)' : ''));
  }
  return { pgUpgrade, postmasterDirs };
}

/** Exactly one server runs in the case's directory (the given one), and no pg_upgrade. */
function onlyServer(k: Case, dataDir: string): void {
  const p = processesOf(k);
  assert.deepEqual(p.pgUpgrade, [], 'no pg_upgrade left running');
  assert.deepEqual(p.postmasterDirs, [dataDir], 'only the expected server runs');
}

describe(
  'pgscale upgrade: SIGKILL at every step boundary, then resume or rollback',
  { skip: !isRoot() && 'servers run as postgres: needs root', concurrency: 2 },
  () => {
    before(async () => {
      for (const template of await Promise.all([0, 1].map(() => createCluster({ version: 16, checksums: true, conf: datasetConf(16) })))) {
        await loadDataset(template, smallDataset);
        templates.push({ cluster: template, baseline: await tableChecksums(template) });
        await template.stop();
      }
    });

    // before the new cluster starts (link mode): resume completes, and on another copy rollback restores
    for (const failpoint of [
      'initdb:started',
      'config:started',
      'precheck:started',
      'stop-old:started',
      'pg_upgrade:started',
      'pg_upgrade:applied',
      'start-new:started',
    ]) {
      test(`killed at ${failpoint}: resume completes`, () =>
        withTemplate(async (template) => {
          const k = await freshCase(template);
          await killedAt(k, failpoint);
          await resumeCompletes(k);
        }));
      test(`killed at ${failpoint}: rollback restores the old cluster`, () =>
        withTemplate(async (template) => {
          const k = await freshCase(template);
          await killedAt(k, failpoint);
          await rollbackRestores(k);
        }));
    }

    // after the new cluster started in link mode: rollback is refused, resume completes
    for (const failpoint of ['open:started', 'extensions:started', 'verify:started', 'analyze:started']) {
      test(`killed at ${failpoint}: rollback refused past the point of no return, resume completes`, () =>
        withTemplate(async (template) => {
          const k = await freshCase(template);
          await killedAt(k, failpoint);
          const rb = await runCli(['rollback', '--state-dir', k.stateDir, '--yes']);
          assert.equal(rb.code, 3, fail('rollback past the point of no return', rb));
          assert.match(rb.stderr, /past its point of no return \("Start PostgreSQL 17 on a private socket and verify it"\): it cannot be rolled back/);
          assert.match(
            rb.stderr,
            /hint: `pgscale resume \S+ --state-dir \S+` finishes the run; past this point the old cluster's files are shared with the new one: rollback is refused; to go back, restore from the backup \(none was taken: --no-backup\)/,
          );
          assert.ok(running(k.newDataDir), 'the refused rollback left the new cluster running');
          await resumeCompletes(k);
        }));
    }

    test('killed after the new cluster started privately (link mode, step not yet recorded): rollback refused before undoing anything, resume completes', () =>
      withTemplate(async (template) => {
        const k = await freshCase(template);
        await killedAt(k, 'start-new:applied');
        const rb = await runCli(['rollback', '--state-dir', k.stateDir, '--yes']);
        assert.equal(rb.code, 3, fail('rollback after the new cluster started', rb));
        assert.match(rb.stderr, /cannot be rolled back: the new cluster has started on files it shares with the old one \(link mode\)/);
        assert.doesNotMatch(rb.stderr, /pgscale rollback/, 'the hint offers no rollback');
        assert.ok(existsSync(join(k.old.pgdata, 'global', 'pg_control.old')), 'the old cluster was left disabled');
        await resumeCompletes(k);
      }));

    /**
     * A Ctrl-C between steps. Before the old cluster stops the run is undone at once: the old
     * cluster serves the same data, the new data directory and every lock are gone. From the stop
     * on it stops there, resumable, keeping its lock file; the row's way out then completes (past
     * the new cluster's start, only resume). At the last boundary the run simply completes.
     */
    const sigintRows: { at: string; code: number; message: RegExp; status: string; wayOut?: 'resume' | 'rollback' }[] = [
      { at: 'initdb:done', code: 130, message: /interrupted before any downtime: what run \S+ had done is undone/, status: 'rolled-back' },
      { at: 'config:done', code: 130, message: /interrupted before any downtime: what run \S+ had done is undone/, status: 'rolled-back' },
      { at: 'precheck:done', code: 130, message: /interrupted before any downtime: what run \S+ had done is undone/, status: 'rolled-back' },
      { at: 'stop-old:done', code: 130, message: /interrupted; the journal of run \S+ is consistent/, status: 'interrupted', wayOut: 'rollback' },
      { at: 'pg_upgrade:done', code: 130, message: /interrupted; the journal of run \S+ is consistent/, status: 'interrupted', wayOut: 'resume' },
      { at: 'start-new:done', code: 130, message: /interrupted; the journal of run \S+ is consistent/, status: 'interrupted', wayOut: 'resume' },
      { at: 'open:done', code: 130, message: /interrupted; the journal of run \S+ is consistent/, status: 'interrupted', wayOut: 'resume' },
      { at: 'extensions:done', code: 130, message: /interrupted; the journal of run \S+ is consistent/, status: 'interrupted', wayOut: 'resume' },
      { at: 'verify:done', code: 130, message: /interrupted; the journal of run \S+ is consistent/, status: 'interrupted', wayOut: 'resume' },
      { at: 'analyze:done', code: 0, message: /SIGINT: stopping at the next safe point/, status: 'completed' },
    ];
    for (const row of sigintRows) {
      test(`SIGINT at ${row.at}: exit ${row.code}, ${row.status}${row.wayOut ? `, then ${row.wayOut} completes` : ''}`, () =>
        withTemplate(async (template) => {
          const k = await freshCase(template);
          const lockFile = lockPath(`system:${readSystemIdentifier(k.old.pgdata)}`);
          const res = await runCli(k.args, { env: { PGSCALE_FAILPOINT: `${row.at}:SIGINT` }, timeoutMs: 180_000 });
          assert.equal(res.code, row.code, fail(`SIGINT at ${row.at}`, res));
          assert.match(res.stderr, row.message);
          const [run] = parseJson<{ id: string; status: string }[]>(await runCli(['runs', '--state-dir', k.stateDir, '--json']));
          assert.equal(run?.status, row.status);
          assert.equal(existsSync(lockFile), Boolean(row.wayOut), 'the lock file is kept only for a run to resume or roll back');
          if (row.status === 'rolled-back') {
            assert.match(res.stderr, /hint: run the same command again when ready/);
            assert.ok(running(k.old.pgdata), 'the old cluster still runs');
            assert.deepEqual(await tableChecksums(k.old), k.baseline);
            assert.equal(existsSync(k.newDataDir), false, 'the new data directory is removed');
            assert.equal(await k.old.sql(`select count(*) from pg_locks where locktype = 'advisory' and classid = ${CLUSTER_LOCK_NAMESPACE}`), '0');
            onlyServer(k, k.old.pgdata);
          } else if (row.status === 'interrupted') {
            assert.match(res.stderr, new RegExp(`hint: continue with \`pgscale resume ${run.id} --state-dir ${k.stateDir}\``));
            await (row.wayOut === 'resume' ? resumeCompletes(k) : rollbackRestores(k));
          } else {
            assert.deepEqual(await tableChecksums(newCluster(k)), k.baseline);
            onlyServer(k, k.newDataDir);
          }
          assert.equal(existsSync(lockFile), false, 'no lock file is left');
        }));
    }

    /**
     * Starts the upgrade, SIGKILLs pgscale inside pg_upgrade --link: `afterMs` after pg_upgrade
     * started, or (no afterMs) once a server pg_upgrade started (binary-upgrade mode) is up, the worst
     * moment. pg_upgrade (detached from pgscale's process group) may keep going.
     */
    async function killedInsidePgUpgrade(k: Case, afterMs?: number): Promise<void> {
      const child = spawn(process.execPath, [cliEntry, ...k.args], {
        cwd: repoRoot,
        env: { ...process.env, NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr.on('data', (d: Buffer) => (output += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      const started = Date.now();
      const waitFor = async (what: string, done: () => boolean) => {
        while (!done()) {
          if (Date.now() - started > 120_000 || child.exitCode !== null) assert.fail(`${what}:\n${output}`);
          await new Promise((r) => setTimeout(r, 10));
        }
      };
      // the real run, not pg_upgrade --check
      await waitFor('pg_upgrade --link did not start', () => processesOf(k).pgUpgrade.some((p) => p.includes('--link')));
      if (afterMs === undefined) await waitFor('pg_upgrade started no server', () => processesOf(k).postmasterDirs.some((d) => d.includes('binary-upgrade')));
      else await new Promise((r) => setTimeout(r, afterMs));
      child.kill('SIGKILL');
      assert.equal(await exited, null);
    }

    test('killed while pg_upgrade runs (its orphan keeps going): resume stops it and what it started, and completes', () =>
      withTemplate(async (template) => {
        const k = await freshCase(template);
        await killedInsidePgUpgrade(k);
        assert.notDeepEqual(processesOf(k).pgUpgrade, [], 'the orphaned pg_upgrade is still at work');
        await resumeCompletes(k);
      }));

    test('killed while pg_upgrade runs: rollback stops it and what it started, and restores the old cluster', () =>
      withTemplate(async (template) => {
        const k = await freshCase(template);
        await killedInsidePgUpgrade(k);
        await rollbackRestores(k);
      }));

    // kills at several points inside pg_upgrade (schema dump, restore, linking): no server with fsync=off survives either way
    for (const afterMs of [300, 1000, 2000]) {
      test(`killed ${afterMs} ms into pg_upgrade: resume completes`, () =>
        withTemplate(async (template) => {
          const k = await freshCase(template);
          await killedInsidePgUpgrade(k, afterMs);
          await resumeCompletes(k);
        }));
      test(`killed ${afterMs} ms into pg_upgrade: rollback restores the old cluster`, () =>
        withTemplate(async (template) => {
          const k = await freshCase(template);
          await killedInsidePgUpgrade(k, afterMs);
          await rollbackRestores(k);
        }));
    }
  },
);
