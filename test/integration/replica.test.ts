import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  bindir,
  createCluster,
  createLoopVolume,
  freePort,
  mkdirOwned,
  scratchDir,
  serverUser,
  stopAtTeardown,
  teardownAll,
  type LoopVolume,
  type TestCluster,
} from '../helpers/testbed.js';
import { createHost, type TestHost } from '../helpers/hosts.js';
import { hasTmux, Terminal } from '../helpers/terminal.js';
import { parseJson, runCli, startCli, type CliResult } from '../helpers/cli.js';
import { cliEntry } from '../helpers/paths.js';
import { isRoot } from '../../src/runner.js';
import type { ReplicaEntry } from '../../src/replica/list.js';
import type { RunReport } from '../../src/pipeline/execute.js';

after(teardownAll);

describe(
  'pgscale replica on a real 17 primary: a local replica and one on a namespace host over ssh',
  { skip: !isRoot() && 'namespace hosts and servers as postgres need root' },
  () => {
    let c: TestCluster;
    let host: TestHost;
    let base: string;
    let stateDir: string;
    let passfile: string;
    const hostNumber = 40 + (process.pid % 150);

    /** The primary's flags: its data directory, bindir and the test's state directory. */
    const primaryArgs = (p: TestCluster = c) => ['--pgdata', p.pgdata, '--bindir', p.bindir, '--state-dir', stateDir];
    /** A replica on this host, its tablespace mapped beside it. */
    const localArgs = (dir: string, port: number | undefined, tablespaceDir: string) => [
      '--host',
      'local',
      '--replica-pgdata',
      dir,
      ...(port === undefined ? [] : ['--replica-port', String(port)]),
      '--tablespace-mapping',
      `${tablespace}=${tablespaceDir}`,
    ];
    const replica = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
      runCli(['replica', ...args, ...primaryArgs(), '--json'], {
        env: { PGPASSFILE: passfile, ...env },
        timeoutMs: 240_000,
      });
    const remoteArgs = (dir: string) => [
      '--host',
      host.name,
      '--ssh-config',
      host.sshConfig,
      '--replica-pgdata',
      dir,
      '--replica-socket-dir',
      host.socketDir,
      '--replica-port',
      String(c.port),
      '--tablespace-mapping',
      `${tablespace}=${join(host.root, 'ts')}`,
    ];
    const slots = async () => (await c.sql('select slot_name from pg_replication_slots order by 1')).split('\n').filter(Boolean);
    const hba = () => readFileSync(join(c.pgdata, 'pg_hba.conf'), 'utf8');
    const standbySql = async (socketDir: string, port: number, sql: string): Promise<string> => {
      const { ZxRunner } = await import('../../src/runner.js');
      const res = await new ZxRunner().run({
        program: join(c.bindir, 'psql'),
        args: ['-X', '-At', '-h', socketDir, '-p', String(port), '-d', 'postgres', '-c', sql],
        runAs: serverUser,
      });
      return res.stdout.trim();
    };
    async function eventually(what: string, probe: () => Promise<boolean>, ms = 30_000): Promise<void> {
      const end = Date.now() + ms;
      while (!(await probe())) {
        if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 300));
      }
    }

    let tablespace: string;
    let tiny: LoopVolume;

    before(async () => {
      // mounted before the host's sshd starts: `ip netns exec` gives it a mount namespace of its own
      tiny = createLoopVolume(8);
      host = createHost('r10', hostNumber);
      base = scratchDir('pgscale-replica-');
      stateDir = scratchDir('pgscale-state-');
      // the primary keeps its WAL on its own volume and has a tablespace
      const wal = createLoopVolume(256);
      c = await createCluster({ version: 17, waldir: join(wal.mountPoint, 'pg_wal'), conf: [`listen_addresses = '127.0.0.1,${host.localAddress}'`] });
      tablespace = mkdirOwned(join(base, 'ts'));
      await c.sql(`create role replicator login replication password 'rep secret:1'; create tablespace warm location '${tablespace}';
      create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 1000) g;
      create table w (id int) tablespace warm; insert into w select generate_series(1, 100);`);
      passfile = join(base, 'pgpass');
      // replicator exists; repl_new is created by pgscale from this entry (SCRAM verifier computed client-side)
      writeFileSync(passfile, '*:*:replication:replicator:rep secret\\:1\n*:*:replication:repl_new:new pass\n', { mode: 0o600 });
    });

    /** No secret in any file pgscale wrote under its state directory (plans, journals, audit logs). */
    function assertNoSecretsIn(dir: string): void {
      for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
        if (!e.isFile()) continue;
        const text = readFileSync(join(e.parentPath, e.name), 'utf8');
        assert.ok(!text.includes('rep secret') && !text.includes('new pass'), `a password in ${join(e.parentPath, e.name)}`);
      }
    }

    test('--dry-run shows every step and changes nothing', async () => {
      const before = hba();
      const planFile = join(base, 'replica-plan.json');
      const res = await runCli(
        ['replica', 'add', ...primaryArgs(), ...localArgs(join(base, 'dry'), undefined, join(base, 'dry-ts')), '--plan-out', planFile, '--dry-run'],
        { env: { PGPASSFILE: passfile } },
      );
      assert.equal(res.code, 0, res.stderr + res.stdout);
      assert.match(res.stdout, /pg_basebackup/);
      assert.match(res.stdout, /host replication replicator 127\.0\.0\.1\/32 scram-sha-256/);
      assert.match(res.stdout, /max_slot_wal_keep_size.*-1.*set max_slot_wal_keep_size = '\d+GB'/);
      assert.deepEqual(await slots(), []);
      assert.equal(hba(), before);
      assert.ok(!existsSync(join(base, 'dry')));
      assert.equal(statSync(planFile).mode & 0o777, 0o600);
      const plan = JSON.parse(readFileSync(planFile, 'utf8')) as { operation: string; steps: { id: string }[] };
      assert.equal(plan.operation, 'replica-add');
      assert.deepEqual(
        plan.steps.map((st) => st.id),
        ['checks', 'hba', 'slot', 'passfile', 'basebackup', 'own-config', 'start', 'verify'],
      );
      assert.ok(!readFileSync(planFile, 'utf8').includes('rep secret'), 'no password in the plan');
    });

    test('bad input, each refused with exit 3 and nothing changed', async () => {
      const before = hba();
      const nonEmpty = mkdirOwned(join(base, 'nonempty'));
      writeFileSync(join(nonEmpty, 'x'), 'x');
      // a known_hosts without the host's key: host key checking stays on, so ssh refuses
      const strangerConfig = join(base, 'stranger_ssh_config');
      writeFileSync(join(base, 'empty_known_hosts'), '');
      writeFileSync(strangerConfig, readFileSync(host.sshConfig, 'utf8').replace(host.knownHosts, join(base, 'empty_known_hosts')));
      // a host that does not answer ssh (nothing listens on that port in the namespace)
      const closedConfig = join(base, 'closed_ssh_config');
      writeFileSync(closedConfig, readFileSync(host.sshConfig, 'utf8').replace('  BatchMode yes', '  BatchMode yes\n  Port 2222'));
      const small = mkdirOwned(join(tiny.mountPoint, 'replica'));
      const cases: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
        [
          'unreachable host',
          [
            '--host',
            host.name,
            '--ssh-config',
            closedConfig,
            '--replica-pgdata',
            join(host.root, 'x'),
            '--replica-address',
            host.address,
            '--primary-address',
            host.localAddress,
          ],
          {},
          /r10 is unreachable/,
        ],
        ['target volume too small', remoteArgs(small), {}, /free, the replica needs/],
        [
          'unknown host key',
          [
            '--host',
            host.name,
            '--ssh-config',
            strangerConfig,
            '--replica-pgdata',
            join(host.root, 'x'),
            '--replica-address',
            host.address,
            '--primary-address',
            host.localAddress,
          ],
          {},
          /host key of r10 is not known/,
        ],
        ['wrong major on the host', [...remoteArgs(join(host.root, 'x')), '--replica-bindir', bindir(16)], {}, /needs the same major version/],
        [
          'role missing, no password source',
          ['--host', 'local', '--replica-pgdata', join(base, 'y'), '--replication-user', 'nobody_repl'],
          { PGPASSFILE: join(base, 'absent') },
          /nobody_repl does not exist and no password source/,
        ],
        ['non-empty target', ['--host', 'local', '--replica-pgdata', nonEmpty], {}, /is not empty/],
      ];
      for (const [what, args, env, message] of cases) {
        const res = await replica(['add', '--yes', ...args], env);
        assert.equal(res.code, 3, `${what}: ${res.stdout} ${res.stderr}`);
        assert.match(res.stdout, message, what);
      }
      assert.deepEqual(await slots(), []);
      assert.equal(hba(), before);
      assert.deepEqual(readdirSync(nonEmpty), ['x']);

      // wal senders exhausted: a primary allowing none
      const none = await createCluster({ version: 17, conf: ['max_wal_senders = 0', "listen_addresses = '127.0.0.1'"] });
      const res = await runCli(
        [
          'replica',
          'add',
          ...primaryArgs(none),
          '--host',
          'local',
          '--replica-pgdata',
          join(base, 'z'),
          '--replication-user',
          none.superuser,
          '--yes',
          '--json',
        ],
        { env: { PGPASSFILE: passfile } },
      );
      assert.equal(res.code, 3, res.stdout + res.stderr);
      assert.match(res.stdout, /wal senders in use/);
      await none.stop();
    });

    test('SIGKILL during pg_basebackup: resume completes; rollback leaves no slot, no directory, no pg_hba line', async () => {
      const dir = join(base, 'killed');
      const before = hba();
      const port = await freePort();
      const child = startCli(
        [
          'replica',
          'add',
          ...primaryArgs(),
          ...localArgs(dir, port, join(base, 'killed-ts')),
          '--replication-user',
          'repl_new',
          '--max-rate',
          '2M',
          '--yes',
          '--json',
        ],
        { PGPASSFILE: passfile },
      );
      await eventually('pg_basebackup to write into the directory', async () => existsSync(join(dir, 'base')), 60_000);
      child.kill('SIGKILL');
      await child.done;
      assert.ok(!existsSync(join(dir, 'backup_manifest')), 'killed before the copy completed');

      const resumed = await runCli(['resume', '--state-dir', stateDir, '--yes', '--json'], { env: { PGPASSFILE: passfile }, timeoutMs: 240_000 });
      assert.equal(resumed.code, 0, resumed.stdout + resumed.stderr);
      const report = parseJson<RunReport>(resumed);
      assert.equal(report.status, 'completed');
      assert.ok((await slots()).includes('pgscale_local_killed'));
      assert.equal(await c.sql("select rolreplication and rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'repl_new'"), 't');
      await c.sql('insert into t values (5001, $$after resume$$)');
      await eventually(
        'the row on the resumed replica',
        async () => (await standbySql(c.socketDir, port, 'select v from t where id = 5001')) === 'after resume',
      );

      const rolled = await runCli(['rollback', report.runId, '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: 240_000 });
      assert.equal(rolled.code, 0, rolled.stdout + rolled.stderr);
      assert.deepEqual(await slots(), []);
      assert.ok(!existsSync(dir), 'directory removed');
      assert.ok(!existsSync(`${dir}.pgpass`) && !existsSync(`${dir}.log`));
      assert.equal(hba(), before, 'pg_hba.conf as before');
      assert.equal(await c.sql("select count(*) from pg_roles where rolname = 'repl_new'"), '0', 'the role this run created is gone');
      assert.ok(!existsSync(join(base, 'killed-ts')) || readdirSync(join(base, 'killed-ts')).length === 0);
      assertNoSecretsIn(stateDir);
    });

    test('a local replica and a namespace replica stream; rows reach both; replica list shows them; remove takes them away', async () => {
      const localDir = join(base, 'local');
      const localPort = await freePort();
      const localSock = mkdirOwned(join(base, 'local-sock'));
      const a = await replica(['add', '--yes', ...localArgs(localDir, localPort, join(base, 'local-ts')), '--replica-socket-dir', localSock]);
      assert.equal(a.code, 0, a.stdout + a.stderr);
      const remoteDir = join(host.root, 'data');
      const b = await replica(['add', '--yes', ...remoteArgs(remoteDir), '--replica-waldir', join(host.root, 'wal')]);
      assert.equal(b.code, 0, b.stdout + b.stderr);
      // every command on the namespace host is in the run's audit log, with the host
      const runDir = join(stateDir, 'runs', parseJson<{ run: RunReport }>(b).run.runId);
      const audit = readFileSync(join(runDir, 'audit.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { host?: string; program?: string; runAs?: string });
      assert.ok(
        audit.some((e) => e.host === host.name && e.program?.endsWith('/pg_basebackup') && e.runAs === serverUser.name),
        'pg_basebackup on the host, audited',
      );
      assert.ok(
        audit.some((e) => e.host === host.name && e.program?.endsWith('/pg_ctl')),
        'the standby start, audited',
      );
      assertNoSecretsIn(stateDir);
      // the tablespace and the WAL went where they were mapped
      const [tsLink] = readdirSync(join(remoteDir, 'pg_tblspc'));
      assert.equal(readlinkSync(join(remoteDir, 'pg_tblspc', tsLink!)), join(host.root, 'ts'));
      assert.equal(readlinkSync(join(remoteDir, 'pg_wal')), join(host.root, 'wal'));
      assert.match(hba(), new RegExp(`host replication replicator ${host.address.replace(/\./g, '\\.')}/32 scram-sha-256`));
      // the password lives only in 0600 passfiles, not in the replica's configuration
      assert.doesNotMatch(readFileSync(join(remoteDir, 'postgresql.auto.conf'), 'utf8'), /password=/);
      assert.match(readFileSync(join(remoteDir, 'postgresql.auto.conf'), 'utf8'), /passfile=/);

      await c.sql(`insert into t values (7001, 'to both')`);
      await eventually('the row on the local replica', async () => (await standbySql(localSock, localPort, 'select v from t where id = 7001')) === 'to both');
      await eventually(
        'the row on the namespace replica',
        async () => (await standbySql(host.socketDir, c.port, 'select v from t where id = 7001')) === 'to both',
      );
      assert.equal(await standbySql(host.socketDir, c.port, 'select count(*) from w'), '100', 'the tablespace table on the namespace replica');

      const list = await runCli(['replica', 'list', '--pgdata', c.pgdata, '--bindir', c.bindir, '--json']);
      assert.equal(list.code, 0, list.stdout + list.stderr);
      const entries = parseJson<{ replicas: ReplicaEntry[] }>(list).replicas;
      const remoteSlot = entries.find((e) => e.slot === 'pgscale_r10_data');
      const localSlot = entries.find((e) => e.slot === 'pgscale_local_local');
      assert.equal(remoteSlot?.state, 'streaming');
      assert.equal(remoteSlot?.clientAddress, host.address);
      assert.equal(remoteSlot?.walStatus, 'reserved');
      assert.equal(localSlot?.state, 'streaming');
      assert.equal(localSlot?.clientAddress, '127.0.0.1');

      // a replica stopped while the primary writes: its slot turns inactive and retains more and more WAL
      const { ZxRunner } = await import('../../src/runner.js');
      await new ZxRunner().run({ program: join(c.bindir, 'pg_ctl'), args: ['stop', '-D', localDir, '-m', 'fast', '-w'], runAs: serverUser, cwd: '/' });
      const retained = async () =>
        parseJson<{ replicas: ReplicaEntry[] }>(await runCli(['replica', 'list', '--pgdata', c.pgdata, '--bindir', c.bindir, '--json'])).replicas.find(
          (e) => e.slot === 'pgscale_local_local',
        )!;
      const r0 = await retained();
      await c.sql(`insert into t select g, md5(g::text) from generate_series(10001, 30000) g; select pg_switch_wal();`);
      const r1s = await retained();
      assert.equal(r1s.state, 'inactive');
      assert.equal(r1s.walStatus, 'reserved');
      assert.ok(r1s.retainedBytes! > r0.retainedBytes!, `retained WAL grows: ${r0.retainedBytes} → ${r1s.retainedBytes}`);
      assert.match(r1s.advice ?? '', /inactive slot pgscale_local_local retains WAL/);

      const r1 = await replica(['remove', '--yes', '--host', host.name, '--ssh-config', host.sshConfig, '--replica-pgdata', remoteDir]);
      assert.equal(r1.code, 0, r1.stdout + r1.stderr);
      const r2 = await replica(['remove', '--yes', '--keep-data', '--host', 'local', '--replica-pgdata', localDir]);
      assert.equal(r2.code, 0, r2.stdout + r2.stderr);
      assert.deepEqual(await slots(), []);
      assert.ok(!existsSync(remoteDir), 'the namespace replica is gone');
      assert.ok(existsSync(join(localDir, 'standby.signal')) && !existsSync(join(localDir, 'postmaster.pid')), '--keep-data keeps the stopped local replica');
      assert.ok(!existsSync(join(host.root, 'wal')) && !existsSync(join(host.root, 'ts')), 'the WAL and tablespace directories went with the replica');
      assert.doesNotMatch(hba(), /pgscale replica/);
    });

    test('remove refuses a directory that is no standby of this primary: a running 15 primary, a 17 cluster of its own, a plain directory — nothing stopped, nothing deleted', async () => {
      const mine = mkdirOwned(join(base, 'mine'));
      writeFileSync(join(mine, 'notes.txt'), 'my own files');
      const pg15 = await createCluster({ version: 15 });
      const other17 = await createCluster({ version: 17 });
      const slotsBefore = await slots();
      const hbaBefore = hba();
      const cases: [string, string, RegExp][] = [
        ['a running PostgreSQL 15 primary', pg15.pgdata, /PostgreSQL 15 data directory with a running server; the primary is 17/],
        ['a 17 cluster of its own', other17.pgdata, /PostgreSQL 17 data directory with a running server of another cluster \(system identifier \d+/],
        ["a user's directory", mine, /a directory that is not a PostgreSQL data directory/],
      ];
      for (const [what, dir, says] of cases) {
        const dry = await runCli(['replica', 'remove', ...primaryArgs(), '--host', 'local', '--replica-pgdata', dir, '--dry-run']);
        assert.equal(dry.code, 3, `${what}, dry run: ${dry.stdout}${dry.stderr}`);
        assert.doesNotMatch(dry.stdout, /Stop the standby|Remove the standby's data directory/, `${what}: the plan stops and deletes nothing`);
        const res = await replica(['remove', '--yes', '--host', 'local', '--replica-pgdata', dir]);
        assert.equal(res.code, 3, `${what}: ${res.stdout}${res.stderr}`);
        assert.match(res.stdout, says, what);
        assert.match(res.stdout, /it is kept and no server there is stopped/, what);
        // --keep-data: the directory is left alone, and there is no slot or rule of it either
        const kept = await replica(['remove', '--yes', '--keep-data', '--host', 'local', '--replica-pgdata', dir]);
        assert.equal(kept.code, 3, `${what}, --keep-data: ${kept.stdout}${kept.stderr}`);
        assert.match(kept.stdout, /nothing to remove/, what);
      }
      assert.equal(await pg15.sql('select 1'), '1', 'the 15 primary still runs');
      assert.equal(await other17.sql('select 1'), '1', 'the other 17 cluster still runs');
      assert.ok(existsSync(join(pg15.pgdata, 'PG_VERSION')) && existsSync(join(other17.pgdata, 'PG_VERSION')));
      assert.equal(readFileSync(join(mine, 'notes.txt'), 'utf8'), 'my own files');
      assert.deepEqual(await slots(), slotsBefore);
      assert.equal(hba(), hbaBefore);
      await pg15.stop();
      await other17.stop();
    });

    test("add: a standby that does not start is undone without touching the user's DIR.log or DIR.pgpass; the error names its log and shows its end", async () => {
      const dir = join(base, 'nostart');
      const userLog = `${dir}.log`;
      writeFileSync(userLog, 'the DBA keeps notes here\n');
      const taken = join(base, 'taken');
      writeFileSync(`${taken}.pgpass`, "not pgscale's\n", { mode: 0o600 });
      const refused = await replica(['add', '--yes', ...localArgs(taken, await freePort(), join(base, 'taken-ts'))]);
      assert.equal(refused.code, 3, refused.stdout + refused.stderr);
      assert.match(refused.stdout, /taken\.pgpass exists already: pgscale does not overwrite a file it did not create/);
      assert.equal(readFileSync(`${taken}.pgpass`, 'utf8'), "not pgscale's\n");

      // the standby is given the primary's own port and socket directory: it cannot start
      const res = await replica(['add', '--yes', ...localArgs(dir, c.port, join(base, 'nostart-ts')), '--replica-socket-dir', c.socketDir]);
      assert.equal(res.code, 4, res.stdout + res.stderr);
      const log = join(dir, 'log', 'pgscale-standby.log');
      const message = parseJson<{ error: { message: string } }>(res).error.message;
      assert.match(message, /^the standby did not start: /);
      assert.ok(message.includes(`its log ${log} on local ends with:\n  `), message);
      assert.match(message, /already exists|already in use|could not/, "the log's last lines are in the message");
      const kept = /a copy of that log is kept in (\S+)/.exec(message)?.[1];
      assert.ok(kept && existsSync(kept), `the log copy is kept: ${message}`);
      assert.equal(statSync(kept).mode & 0o777, 0o600);
      assert.match(readFileSync(kept, 'utf8'), /already exists|already in use|could not/);
      assert.equal(readFileSync(userLog, 'utf8'), 'the DBA keeps notes here\n', "the user's DIR.log is untouched");
      assert.ok(!existsSync(dir) && !existsSync(`${dir}.pgpass`), 'what the run created is gone');
      assert.deepEqual(await slots(), []);
      assert.equal(await c.sql('select 1'), '1', 'the primary runs on');
    });

    test("add: the primary's data_directory, hba_file (outside PGDATA) and external_pid_file do not follow the copy", async () => {
      const conf = join(c.pgdata, 'postgresql.conf');
      const original = readFileSync(conf, 'utf8');
      const outsideHba = join(base, 'hba-outside.conf');
      writeFileSync(outsideHba, hba());
      const pidFile = join(base, 'primary-external.pid');
      const dir = join(base, 'selfcontained');
      const port = await freePort();
      stopAtTeardown(c.bindir, dir);
      // as pgscale's upgrade writes them (read only at a start: the running primary is unaffected)
      writeFileSync(conf, `${original}\ndata_directory = '${c.pgdata}'\nhba_file = '${outsideHba}'\nexternal_pid_file = '${pidFile}'\n`);
      try {
        const dry = await runCli(['replica', 'add', ...primaryArgs(), ...localArgs(dir, port, join(base, 'selfcontained-ts')), '--dry-run'], {
          env: { PGPASSFILE: passfile },
        });
        assert.equal(dry.code, 0, dry.stdout + dry.stderr);
        assert.match(dry.stdout, /\+# data_directory = .* # pgscale: commented out in this copy of/);
        assert.match(dry.stdout, new RegExp(`${dir}/pg_hba\\.conf`));
        const a = await replica(['add', '--yes', ...localArgs(dir, port, join(base, 'selfcontained-ts'))]);
        assert.equal(a.code, 0, a.stdout + a.stderr);
      } finally {
        writeFileSync(conf, original);
      }
      const copied = readFileSync(join(dir, 'postgresql.conf'), 'utf8');
      assert.match(copied, /^# data_directory = .*pgscale: commented out/m);
      assert.match(copied, /^# hba_file = .*pgscale: commented out/m);
      assert.match(copied, /^# external_pid_file = .*pgscale: commented out/m);
      assert.equal(readFileSync(join(dir, 'pg_hba.conf'), 'utf8'), readFileSync(outsideHba, 'utf8'));
      assert.ok(!existsSync(pidFile), "the standby wrote no pid file where the primary's goes");
      assert.equal(await standbySql(c.socketDir, port, 'show data_directory'), dir);
      assert.equal(await standbySql(c.socketDir, port, 'show hba_file'), join(dir, 'pg_hba.conf'));
      await c.sql(`insert into t values (9201, 'self-contained')`);
      await eventually(
        'the row on the self-contained replica',
        async () => (await standbySql(c.socketDir, port, 'select v from t where id = 9201')) === 'self-contained',
      );
      // the plan of the removal: a standby of this primary, stopped, its slot, rule, directory and password file removed
      const plan = await runCli(['replica', 'remove', ...primaryArgs(), '--host', 'local', '--replica-pgdata', dir, '--dry-run']);
      assert.equal(plan.code, 0, plan.stdout + plan.stderr);
      assert.match(
        plan.stdout,
        /is a PostgreSQL 17 data directory with a running server, a standby of this primary, streaming through slot pgscale_local_selfcontained/,
      );
      for (const step of ['Stop the standby', 'Drop the replication slot', 'Remove the pg_hba rule', "Remove the standby's data directory"])
        assert.ok(plan.stdout.includes(step), `${step} in the plan:\n${plan.stdout}`);
      assert.ok(plan.stdout.includes(`local:${dir}.pgpass`), 'the password file its conninfo names is in the plan');
      assert.ok(!plan.stdout.includes(`${dir}.log`), 'no file beside it that pgscale did not create');
      const removed = await replica(['remove', '--yes', '--host', 'local', '--replica-pgdata', dir]);
      assert.equal(removed.code, 0, removed.stdout + removed.stderr);
      assert.ok(!existsSync(dir) && !existsSync(`${dir}.pgpass`));
      assert.equal(await c.sql('select 1'), '1', 'the primary runs on');
    });

    test(
      'at a terminal, the password is asked for (never argv), kept 0600 for a resume, and removed with the replica',
      { skip: !hasTmux && 'needs tmux' },
      async () => {
        const dir = join(base, 'prompted');
        const port = await freePort();
        const term = Terminal.start('prompted', [
          process.execPath,
          cliEntry,
          'replica',
          'add',
          ...primaryArgs(),
          ...localArgs(dir, port, join(base, 'prompted-ts')),
        ]);
        try {
          // a password prompt is no choice list: wait for the question, then type
          await term.waitFor(/\? Password of the replication role replicator/);
          await term.send('rep secret:1', 'Enter');
          assert.equal(await term.exitCode(), 0, term.screen());
          assert.doesNotMatch(term.screen(), /rep secret/, 'the password is masked');
        } finally {
          term.kill();
        }
        const kept = join(stateDir, 'secrets', 'pgscale_local_prompted.pgpass');
        assert.equal(statSync(kept).mode & 0o777, 0o600);
        await c.sql(`insert into t values (9001, 'prompted')`);
        await eventually(
          'the row on the prompted replica',
          async () => (await standbySql(c.socketDir, port, 'select v from t where id = 9001')) === 'prompted',
        );
        const removed = await replica(['remove', '--yes', '--host', 'local', '--replica-pgdata', dir]);
        assert.equal(removed.code, 0, removed.stdout + removed.stderr);
        assert.ok(!existsSync(kept) && !existsSync(dir));
      },
    );

    test('SIGKILL during pg_basebackup on the namespace host: resume completes over ssh, then remove', async () => {
      const dir = join(host.root, 'killed');
      const child = startCli(['replica', 'add', ...primaryArgs(), ...remoteArgs(dir), '--max-rate', '2M', '--yes', '--json'], { PGPASSFILE: passfile });
      await eventually('pg_basebackup to write on the host', async () => existsSync(join(dir, 'base')), 60_000);
      child.kill('SIGKILL');
      await child.done;
      const resumed = await runCli(['resume', '--state-dir', stateDir, '--yes', '--json'], { env: { PGPASSFILE: passfile }, timeoutMs: 240_000 });
      assert.equal(resumed.code, 0, resumed.stdout + resumed.stderr);
      await c.sql(`insert into t values (9101, 'after a remote kill')`);
      await eventually(
        'the row on the resumed namespace replica',
        async () => (await standbySql(host.socketDir, c.port, 'select v from t where id = 9101')) === 'after a remote kill',
      );
      const removed = await replica(['remove', '--yes', '--host', host.name, '--ssh-config', host.sshConfig, '--replica-pgdata', dir]);
      assert.equal(removed.code, 0, removed.stdout + removed.stderr);
      assert.deepEqual(await slots(), []);
      assert.ok(!existsSync(dir));
    });
  },
);
