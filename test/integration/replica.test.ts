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
