/**
 * `pgscale upgrade` against clusters set up the way production ones are: a 16 server started with
 * port, socket directory and listen_addresses on its command line and its configuration outside
 * PGDATA, with a client writing a row every 50 ms and a reader, both reconnecting. Link and copy
 * upgrades complete with every acknowledged row present and clients finding 17 where they found
 * 16; a rollback before the point of no return gives the old server back where it was; every check
 * that can be known before a change refuses before one, with nothing left behind.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { basename, dirname, join } from 'node:path';
import {
  bindir,
  upgradeCommand,
  createCluster,
  freePort,
  mkdirOwned,
  scratchDir,
  setprivArgs,
  stopAtTeardown,
  teardownAll,
  TestCluster,
} from '../helpers/testbed.js';
import { parseJson, runCli, type CliResult } from '../helpers/cli.js';
import { missingWrites, startWriter } from '../helpers/writer.js';
import { treeSnapshot } from '../helpers/snapshot.js';
import { isRoot } from '../../src/runner.js';
import { postmastersOn } from '../../src/server/postgres.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import type { UpgradeReport } from '../../src/upgrade/report.js';

after(teardownAll);

const TIMEOUT = 300_000;
const fail = (what: string, r: CliResult) => `${what}: exit ${r.code}\nstdout:\n${r.stdout.slice(-3000)}\nstderr:\n${r.stderr.slice(-3000)}`;
const pidOf = (dataDir: string) => Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
const argvOf = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);

/** A 16 server as init scripts start it: -p, -k and listen_addresses on its command line, config in an etc directory. */
async function productionCluster(): Promise<TestCluster> {
  const old = await createCluster({ version: 16, listenOn: 'command-line', configOutside: true });
  await old.sql(`create table accounts (id int primary key, balance numeric not null);
                 insert into accounts select g, g * 10 from generate_series(1, 20000) g;
                 create index on accounts (balance);
                 create materialized view balances as select count(*) as n, sum(balance) as total from accounts;
                 create sequence tickets;`);
  return old;
}

function upgradeArgs(old: TestCluster, newDataDir: string, stateDir: string, mode: 'link' | 'copy', backup: 'none' | 'default' = 'none'): string[] {
  return upgradeCommand(old, { 'to-version': 17, 'new-pgdata': newDataDir, mode, 'no-backup': backup === 'none', 'state-dir': stateDir });
}

/** The server on the old socket and port is a 17 whose postmaster runs from newDataDir with the old command-line options. */
async function servesWhereTheOldOneDid(old: TestCluster, newDataDir: string, version: number): Promise<TestCluster> {
  const next = new TestCluster(version, bindir(version), newDataDir, old.port, old.socketDir, join(dirname(newDataDir), 'new.log'));
  assert.equal(Math.floor(Number(await next.sql('show server_version_num')) / 10000), version);
  assert.equal(await next.sql('show port'), String(old.port));
  assert.equal(await next.sql('show unix_socket_directories'), old.socketDir);
  assert.equal(await next.sql('show listen_addresses'), '');
  const argv = argvOf(pidOf(newDataDir));
  for (const opt of ['-p', String(old.port), '-k', old.socketDir]) assert.ok(argv.includes(opt), `the server runs with ${opt}: ${argv.join(' ')}`);
  return next;
}

async function upgradeUnderLoad(t: TestContext, mode: 'link' | 'copy'): Promise<void> {
  const old = await productionCluster();
  const hbaBefore = readFileSync(join(dirname(old.configPath), 'pg_hba.conf'), 'utf8');
  const work = scratchDir('pgscale-upprod-');
  const newDataDir = join(dirname(old.pgdata), 'data-17');
  // copy mode also takes the backup at its default location, in a fresh state directory (created when missing)
  const stateDir = join(work, 'state');
  const args = upgradeArgs(old, newDataDir, stateDir, mode, mode === 'copy' ? 'default' : 'none');

  if (mode === 'link') {
    // the plan shows where the new server will listen, and why
    const dry = await runCli([...args, '--dry-run'], { timeoutMs: TIMEOUT });
    assert.equal(dry.code, 0, fail('dry-run', dry));
    assert.match(
      dry.stdout,
      new RegExp(
        `where the new server listens \\| pass \\| port ${old.port} from command line, sockets ${old.socketDir} from command line, listen_addresses '' from command line`,
      ),
    );
    for (const check of [
      'old binaries version',
      'new binaries version',
      'separate directories',
      'new data directory writable',
      'databases allow connections',
      'reg\\* columns',
    ])
      assert.match(dry.stdout, new RegExp(`^\\| ${check} \\| pass \\|`, 'm'));
  }

  const writer = await startWriter(old, { reader: true });
  await new Promise((r) => setTimeout(r, 500));
  const res = await runCli([...args, '--yes', '--json'], { timeoutMs: TIMEOUT });
  const ended = new Date().toISOString();
  await new Promise((r) => setTimeout(r, 1000));
  const clients = await writer.stop();
  assert.equal(res.code, 0, fail('upgrade', res));
  const out = parseJson<{ run: RunReport; report: UpgradeReport }>(res);
  assert.equal(out.run.status, 'completed');
  assert.match(String(out.run.outputs['start-new']?.version), /^17\./);
  assert.deepEqual(out.run.outputs['start-new']?.catalogDifferences, [], 'relfilenodes and fork sizes match');
  assert.ok(Number(out.run.outputs['start-new']?.relationsCompared) >= 5);
  assert.deepEqual(out.run.outputs.verify?.findings, []);
  if (mode === 'copy') assert.equal(readdirSync(join(stateDir, 'backups')).length, 1, 'the backup is at its default location');

  const next = await servesWhereTheOldOneDid(old, newDataDir, 17);
  assert.deepEqual(await missingWrites(next, clients), [], 'every acknowledged write survived');
  assert.ok(
    Number(await next.sql(`select count(*) from pgscale_writer where at > '${ended}'`)) > 5,
    'the writer found 17 where it wrote to 16 and kept writing',
  );
  assert.ok(clients.reads > 0, 'the reader read');
  assert.equal(await next.sql('select count(*) from accounts'), '20000');
  // the connection block is gone and the old pg_hba.conf is as it was
  assert.equal(readFileSync(join(dirname(old.configPath), 'pg_hba.conf'), 'utf8'), hbaBefore);
  assert.equal(existsSync(join(old.pgdata, 'postmaster.pid')), false, 'the old cluster is stopped');
  // 16 named its pg_hba.conf and pg_ident.conf in its own configuration directory: 17 reads copies of its own
  for (const setting of ['hba_file', 'ident_file']) {
    const file = await next.sql(`show ${setting}`);
    assert.ok(!file.startsWith(dirname(old.configPath) + '/'), `${setting} ${file} is not the old cluster's`);
    assert.ok(existsSync(file), `${setting} ${file} exists`);
  }
  assert.ok(out.report.downtimeSeconds !== null && out.report.downtimeSeconds > 0);
  t.diagnostic(
    `${mode}: longest gap between acknowledged writes ${clients.longestGapMs} ms; pgscale's downtime ${out.report.downtimeSeconds} s; ${clients.acknowledged.length} writes, ${clients.errors} client errors`,
  );
  // the writer saw no more downtime than pgscale measured, plus its 50 ms interval and a reconnect
  assert.ok(
    clients.longestGapMs < out.report.downtimeSeconds * 1000 + 3000,
    `client gap ${clients.longestGapMs} ms vs downtime ${out.report.downtimeSeconds} s`,
  );
  await next.stop();
}

describe('pgscale upgrade: production patterns', { skip: !isRoot() && 'servers run as postgres: needs root' }, () => {
  test('16 → 17 link mode, options on the command line, config outside PGDATA, a writer and a reader reconnecting', { timeout: 600_000 }, (t) =>
    upgradeUnderLoad(t, 'link'),
  );
  test('16 → 17 copy mode, the same', { timeout: 600_000 }, (t) => upgradeUnderLoad(t, 'copy'));

  test('rollback before the point of no return: the old server runs again where it ran, with its options, unblocked', { timeout: 600_000 }, async () => {
    const old = await productionCluster();
    const hba = join(dirname(old.configPath), 'pg_hba.conf');
    const hbaBefore = readFileSync(hba, 'utf8');
    const work = scratchDir('pgscale-uprb-');
    const stateDir = join(work, 'state');
    const newDataDir = join(dirname(old.pgdata), 'data-17');
    const writer = await startWriter(old, { reader: true });
    const killed = await runCli([...upgradeArgs(old, newDataDir, stateDir, 'link'), '--yes'], {
      env: { PGSCALE_FAILPOINT: 'pg_upgrade:applied' },
      timeoutMs: TIMEOUT,
    });
    assert.equal(killed.code, null, fail('pgscale was to be killed after pg_upgrade', killed));
    assert.match(readFileSync(hba, 'utf8'), /reject/, 'connections are blocked during downtime');
    const rb = await runCli(['rollback', '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: TIMEOUT });
    assert.equal(rb.code, 0, fail('rollback', rb));
    await new Promise((r) => setTimeout(r, 1000));
    const clients = await writer.stop();
    assert.equal(readFileSync(hba, 'utf8'), hbaBefore, 'the block is lifted');
    assert.equal(await old.sql('show port'), String(old.port));
    assert.equal(await old.sql('show unix_socket_directories'), old.socketDir);
    assert.equal(await old.sql('show config_file'), old.configFile);
    assert.equal(Math.floor(Number(await old.sql('show server_version_num')) / 10000), 16);
    const argv = argvOf(pidOf(old.pgdata));
    for (const opt of ['-p', String(old.port), '-k', old.socketDir]) assert.ok(argv.includes(opt), `restarted with ${opt}: ${argv.join(' ')}`);
    assert.deepEqual(await missingWrites(old, clients), []);
    assert.ok(clients.acknowledged.length > 0);
    assert.equal(existsSync(newDataDir), false);
    assert.deepEqual(postmastersOn([newDataDir]), []);
  });
  test('rollback of a completed copy upgrade whose 17 served clients: needs a yes, says what is lost, keeps 17 moved aside', { timeout: 600_000 }, async () => {
    const old = await productionCluster();
    const work = scratchDir('pgscale-uprbdone-');
    const stateDir = join(work, 'state');
    const newDataDir = join(dirname(old.pgdata), 'data-17');
    const up = await runCli([...upgradeArgs(old, newDataDir, stateDir, 'copy'), '--yes', '--json'], { timeoutMs: TIMEOUT });
    assert.equal(up.code, 0, fail('upgrade', up));
    const runId = parseJson<{ run: RunReport }>(up).run.runId;
    const lsnAtOpen = String(parseJson<{ run: RunReport }>(up).run.outputs.open?.lsnAtOpen);
    assert.match(lsnAtOpen, /^[0-9A-F]+\/[0-9A-F]+$/, 'the journal records the WAL position at open');
    // clients write to 17 as they would after any upgrade
    const next = await servesWhereTheOldOneDid(old, newDataDir, 17);
    const writer = await startWriter(next);
    await new Promise((r) => setTimeout(r, 1500));
    const on17 = await writer.stop();
    assert.ok(on17.acknowledged.length > 5, '17 acknowledged writes');
    const pid17 = pidOf(newDataDir);

    // no TTY, no --yes: refused before anything is touched, naming what would be lost
    const noYes = await runCli(['rollback', runId, '--state-dir', stateDir], { timeoutMs: TIMEOUT });
    assert.equal(noYes.code, 3, fail('rollback without --yes', noYes));
    assert.match(noYes.stderr, /needs confirmation and nobody can be asked: nothing was done/);
    assert.match(noYes.stderr, /writes made on it since it opened are NOT in the old 16 cluster/);
    assert.match(noYes.stderr, new RegExp(`WAL at open ${lsnAtOpen}, now [0-9A-F]+/[0-9A-F]+: \\d+ bytes written since`));
    assert.equal(pidOf(newDataDir), pid17, '17 still runs, never restarted');
    assert.equal(existsSync(join(old.pgdata, 'postmaster.pid')), false, '16 was not started');
    assert.deepEqual(await missingWrites(next, on17), []);

    // the rollback's plan says it too
    const dry = await runCli(['rollback', runId, '--state-dir', stateDir, '--dry-run'], { timeoutMs: TIMEOUT });
    assert.equal(dry.code, 0, fail('rollback --dry-run', dry));
    assert.match(dry.stdout, /^WARNING: the new 17 cluster has been open to clients since \S+ \(WAL at open/m);
    assert.match(dry.stdout, /moved aside to .*data-17\.rolled-back-<time>/);

    const rb = await runCli(['rollback', runId, '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: TIMEOUT });
    assert.equal(rb.code, 0, fail('rollback --yes', rb));
    const report = parseJson<RunReport>(rb);
    assert.equal(report.status, 'rolled-back');
    assert.match(String(report.warnings), /NOT in the old 16 cluster/);
    assert.equal(Math.floor(Number(await old.sql('show server_version_num')) / 10000), 16, '16 serves again');
    assert.equal(existsSync(newDataDir), false);
    const aside = readdirSync(dirname(newDataDir)).filter((n) => n.startsWith('data-17.rolled-back-'));
    assert.equal(aside.length, 1, 'the 17 data directory is moved aside, not deleted');
    const kept = join(dirname(newDataDir), aside[0]!);
    assert.match(String(report.kept), new RegExp(`moved aside to ${kept} \\(0700\\)`), 'the report says where');
    assert.equal(statSync(kept).mode & 0o777, 0o700);

    // what 17 acknowledged is recoverable from there: it starts on its own (nothing in it names data-17) and has every write
    const port = await freePort();
    const sock = mkdirOwned(join(work, 'sock-kept'));
    const recovered = new TestCluster(17, bindir(17), kept, port, sock, join(work, 'kept.log'), ['-p', String(port), '-k', sock, '-c', 'listen_addresses=']);
    stopAtTeardown(bindir(17), kept);
    await recovered.start();
    assert.equal(await recovered.sql('show data_directory'), kept);
    assert.deepEqual(await missingWrites(recovered, on17), [], 'every write 17 acknowledged is in the kept directory');
    await recovered.stop();
  });
  test(
    '16 started Debian-style, `pg_ctl -D CONFDIR` (postgresql.conf sets data_directory): copy upgrade and rollback run it as it ran',
    { timeout: 600_000 },
    async () => {
      // the configuration directory holds postgresql.conf, pg_hba.conf and pg_ident.conf; only data_directory points at PGDATA
      const old = await createCluster({ version: 16, configOutside: true, start: false });
      const confDir = dirname(old.configPath);
      const conf = readFileSync(old.configPath, 'utf8')
        .split('\n')
        .filter((l) => !/^(hba_file|ident_file)\b/.test(l))
        .join('\n');
      writeFileSync(old.configPath, conf);
      /** pg_ctl -D CONFDIR start, from a working directory (a relative -D is relative to it). */
      const startFromConfDir = (dashD: string, cwd: string) => {
        const r = spawnSync('setpriv', setprivArgs(join(old.bindir, 'pg_ctl'), ['-D', dashD, '-w', '-l', old.logFile, 'start']), { encoding: 'utf8', cwd });
        assert.equal(r.status, 0, r.stderr);
      };
      startFromConfDir(confDir, '/');
      assert.ok(argvOf(pidOf(old.pgdata)).includes(confDir), 'the postmaster runs with -D CONFDIR');
      await old.sql('create table t (id int); insert into t select generate_series(1, 1000)');
      const work = scratchDir('pgscale-upconfdir-');
      const stateDir = join(work, 'state');
      const newDataDir = join(dirname(old.pgdata), 'data-17');

      const planFile = join(work, 'upgrade.plan.json');
      const dry = await runCli([...upgradeArgs(old, newDataDir, stateDir, 'copy'), '--dry-run', '--plan-out', planFile], { timeoutMs: TIMEOUT });
      assert.equal(dry.code, 0, fail('dry-run', dry));
      assert.match(dry.stdout, new RegExp(`pg_upgrade.* -d ${confDir} `), 'pg_upgrade is given the configuration directory');

      // the reviewed plan applied in text mode, as a person runs it: the closing report ends the output
      const up = await runCli(['apply', planFile, '--state-dir', stateDir, '--yes'], { timeoutMs: TIMEOUT });
      assert.equal(up.code, 0, fail('apply', up));
      assert.match(
        up.stdout,
        /PostgreSQL 16 → 17: completed in .*, downtime .* \(connections blocked → new accepting writes\)\nnext:\n {2}- point your service manager at PostgreSQL 17/,
      );
      const runId = parseJson<{ id: string }[]>(await runCli(['runs', '--state-dir', stateDir, '--json']))[0]!.id;
      const next = new TestCluster(17, bindir(17), newDataDir, old.port, old.socketDir, join(dirname(newDataDir), 'new.log'));
      assert.equal(Math.floor(Number(await next.sql('show server_version_num')) / 10000), 17);
      assert.equal(await next.sql('select count(*) from t'), '1000');
      // 17 runs from its own data directory with the configuration carried from CONFDIR (nothing in it names a directory)
      assert.equal(await next.sql('show config_file'), join(newDataDir, 'postgresql.conf'));
      assert.equal(await next.sql('show hba_file'), join(newDataDir, 'pg_hba.conf'));
      assert.doesNotMatch(readFileSync(join(newDataDir, 'postgresql.conf'), 'utf8'), /^data_directory/m);

      const rb = await runCli(['rollback', runId, '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: TIMEOUT });
      assert.equal(rb.code, 0, fail('rollback', rb));
      assert.equal(Math.floor(Number(await old.sql('show server_version_num')) / 10000), 16);
      assert.ok(argvOf(pidOf(old.pgdata)).includes(confDir), `16 restarted as it ran, -D ${confDir}: ${argvOf(pidOf(old.pgdata)).join(' ')}`);
      assert.equal(await old.sql('show config_file'), old.configPath);
      assert.equal(await old.sql('show hba_file'), join(confDir, 'pg_hba.conf'));
      assert.equal(await old.sql('select count(*) from t'), '1000');

      // started with a relative -D, the configuration directory cannot be placed: refused in the plan, not in downtime
      await old.stop();
      startFromConfDir(basename(confDir), dirname(confDir));
      const relative = await runCli([...upgradeArgs(old, join(work, 'rel', 'data-17'), stateDir, 'copy'), '--yes'], { timeoutMs: TIMEOUT });
      assert.equal(relative.code, 3, fail('a relative -D', relative));
      assert.match(
        relative.stderr,
        /old server configuration: a start of the old server .* would find no .*postgresql\.conf: pg_upgrade and a rollback would fail during downtime/,
      );
      assert.equal(existsSync(join(work, 'rel')), false, 'nothing was made');
    },
  );
});

describe('pgscale upgrade: every check before the first change', { skip: !isRoot() && 'servers run as postgres: needs root' }, () => {
  let old: TestCluster;
  let work: string;
  let stateDir: string;
  let pid: number;

  before(async () => {
    old = await productionCluster();
    work = scratchDir('pgscale-upcheck-');
    stateDir = join(work, 'state');
    pid = pidOf(old.pgdata);
  });

  /** Runs pgscale; then: the exit code and message, nothing changed under the cluster's directories, no lock, no run, no server started, the old one still serving. */
  async function refusedWithNothingLeft(args: string[], code: number, message: RegExp, newDataDir: string): Promise<void> {
    const watched = [dirname(old.configPath), dirname(newDataDir)];
    const before = watched.map(treeSnapshot);
    const r = await runCli(args, { timeoutMs: TIMEOUT });
    assert.equal(r.code, code, fail('expected a refusal', r));
    assert.match(r.stderr, message);
    assert.deepEqual(watched.map(treeSnapshot), before, 'nothing changed on disk');
    assert.equal(existsSync(newDataDir), false);
    assert.deepEqual(existsSync(join(stateDir, 'locks')) ? readdirSync(join(stateDir, 'locks')) : [], [], 'no lock');
    assert.deepEqual(existsSync(join(stateDir, 'runs')) ? readdirSync(join(stateDir, 'runs')) : [], [], 'no run');
    assert.deepEqual(postmastersOn([newDataDir]), [], 'no server started');
    assert.equal(pidOf(old.pgdata), pid, 'the old server was never restarted');
    assert.equal(await old.sql('select count(*) from accounts'), '20000');
  }

  const args = (newDataDir: string, extra: string[] = []) => [...upgradeArgs(old, newDataDir, stateDir, 'link'), ...extra];

  test('--old-bindir of another major than PG_VERSION: refused (3)', async () => {
    const newDataDir = join(work, 'a', 'data-17');
    mkdirOwned(dirname(newDataDir));
    const r = args(newDataDir, ['--yes']);
    r[r.indexOf('--old-bindir') + 1] = bindir(17);
    await refusedWithNothingLeft(r, 3, /old binaries version: the old bindir holds PostgreSQL 17, but .*PG_VERSION says 16/, newDataDir);
  });

  test('a database refusing connections (pg_upgrade would refuse it): refused (3)', async () => {
    await old.sql('create database closed; alter database closed allow_connections false');
    try {
      const newDataDir = join(work, 'b', 'data-17');
      mkdirOwned(dirname(newDataDir));
      await refusedWithNothingLeft(args(newDataDir, ['--yes']), 3, /databases allow connections: closed has datallowconn = false/, newDataDir);
    } finally {
      await old.sql('drop database closed');
    }
  });

  test('a new data directory whose parent the cluster owner cannot write: refused (3)', async () => {
    const parent = join(work, 'root-only');
    mkdirSync(parent, { mode: 0o755 }); // root's, as we are root
    await refusedWithNothingLeft(
      args(join(parent, 'data-17'), ['--yes']),
      3,
      /new data directory writable: postgres \(the cluster owner, who runs initdb\) cannot create entries in .*root-only/,
      join(parent, 'data-17'),
    );
  });

  test('--new-pgdata inside the old PGDATA: refused (3)', async () => {
    const newDataDir = join(old.pgdata, 'pg17');
    const r = await runCli(args(newDataDir, ['--yes']), { timeoutMs: TIMEOUT });
    assert.equal(r.code, 3, fail('inside', r));
    assert.match(r.stderr, /separate directories: the new data directory .*pg17 is inside the old one/);
    assert.equal(existsSync(newDataDir), false);
    assert.deepEqual(
      readdirSync(old.pgdata).filter((n) => /pg_upgrade|pgscale|pg17/.test(n)),
      [],
      'nothing written into the old PGDATA',
    );
  });

  test('no TTY and no --yes: refused (3) before anything ran', async () => {
    const newDataDir = join(work, 'e', 'data-17');
    mkdirOwned(dirname(newDataDir));
    await refusedWithNothingLeft(args(newDataDir), 3, /needs confirmation and nobody can be asked: nothing was done/, newDataDir);
  });

  test("the old cluster's bindir comes from its running postmaster (/proc/PID/exe) when not given", async () => {
    const newDataDir = join(work, 'f', 'data-17');
    const r = args(newDataDir, ['--dry-run', '--json']);
    r.splice(r.indexOf('--old-bindir'), 2);
    const res = await runCli(r, { timeoutMs: TIMEOUT, env: { PATH: '/usr/bin:/bin' } });
    assert.equal(res.code, 0, fail('dry-run', res));
    const plan = parseJson<{ plan: { params: { old: { bindir: string } } } }>(res).plan;
    assert.equal(plan.params.old.bindir, dirname(readlinkSync(`/proc/${pid}/exe`)));
  });
});
