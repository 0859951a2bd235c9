/**
 * `pgscale upgrade` with standbys: a 16 primary with a tablespace, one standby on this host and one
 * on a namespace host over ssh (both made by `pgscale replica add`). A lagging or unreachable
 * standby refuses the run before downtime (exit 3, nothing changed); then 16 → 17 with
 * `--replicas rebuild`, and with rsync (the namespace standby keeping its WAL outside its data
 * directory, --replica-waldir): the primary and both standbys on 17, streaming from new slots, a
 * row written after the upgrade read on both, per-table checksums identical. rsync again with every
 * data directory named alike in per-version directories (…/16/main → …/17/main), which rsync
 * carries from one level up, leaving what sits beside each standby's cluster in place.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cliEntry, repoRoot } from '../helpers/paths.js';
import { existsSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  bindir,
  createCluster,
  freePort,
  mkdirOwned,
  runner,
  scratchDir,
  serverUser,
  stopAtTeardown,
  teardownAll,
  TestCluster,
  upgradeCommand,
} from '../helpers/testbed.js';
import { createHost, type TestHost } from '../helpers/hosts.js';
import { parseJson, runCli, type CliResult } from '../helpers/cli.js';
import { isRoot } from '../../src/runner.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import type { UpgradeReport } from '../../src/upgrade/report.js';

after(teardownAll);

const fail = (what: string, r: CliResult) => `${what}: exit ${r.code}\nstdout:\n${r.stdout.slice(-5000)}\nstderr:\n${r.stderr.slice(-3000)}`;

const variants = [
  { method: 'rebuild', alike: false },
  { method: 'rsync', alike: false },
  { method: 'rsync', alike: true },
] as const;

for (const [variant, { method, alike }] of variants.entries())
  describe(
    `pgscale upgrade 16 → 17 with a local and a namespace standby: --replicas ${method}${alike ? ', data directories named alike (…/16/main → …/17/main)' : ''}`,
    { skip: !isRoot() && 'namespace hosts and servers as postgres need root' },
    () => {
      let c: TestCluster;
      let host: TestHost;
      let base: string;
      let stateDir: string;
      let passfile: string;
      let localDir: string;
      let localSock: string;
      let localPort: number;
      let remoteDir: string;
      let remoteWal: string;
      let newDataDir: string;
      const hostName = `u1${variant + 1}`;
      const remoteSlot = `pgscale_${hostName}_${alike ? 'main' : 'data'}`;
      const localSlot = `pgscale_local_${alike ? 'main' : 'local'}`;
      const hostNumber = 190 + (process.pid % 20) * 3 + variant;
      // the standbys' new data directories: the version segment swapped when named alike, else -17 appended
      const newOf = (dir: string) => (alike ? dir.replace('/16/', '/17/') : `${dir}-17`);

      const psql = async (version: number, socketDir: string, port: number, sql: string): Promise<string> => {
        const res = await runner.run({
          program: join(bindir(version), 'psql'),
          args: ['-X', '-At', '-h', socketDir, '-p', String(port), '-d', 'postgres', '-c', sql],
          runAs: serverUser,
          cwd: '/',
        });
        return res.stdout.trim();
      };
      async function eventually(what: string, probe: () => Promise<boolean>, ms = 60_000, everyMs = 300): Promise<void> {
        const end = Date.now() + ms;
        while (!(await probe())) {
          if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
          await new Promise((r) => setTimeout(r, everyMs));
        }
      }
      const upgradeArgs = () => upgradeCommand(c, { 'to-version': 17, 'new-pgdata': newDataDir, mode: 'link', 'no-backup': true, 'state-dir': stateDir });
      const hba = () => readFileSync(join(c.pgdata, 'pg_hba.conf'), 'utf8');

      before(async () => {
        host = createHost(hostName, hostNumber);
        base = scratchDir('pgscale-upgrade-replicas-');
        stateDir = scratchDir('pgscale-state-');
        c = await createCluster({ version: 16, conf: [`listen_addresses = '127.0.0.1,${host.localAddress}'`], start: !alike });
        if (alike) {
          // the data directory alone in a per-version directory: …/16/main (sockets and log elsewhere, as on Debian)
          const main = join(mkdirOwned(join(base, '16')), 'main');
          renameSync(c.pgdata, main);
          stopAtTeardown(c.bindir, main);
          c = new TestCluster(16, c.bindir, main, c.port, c.socketDir, c.logFile, c.options);
          await c.start();
        }
        const tablespace = mkdirOwned(join(base, 'ts'));
        await c.sql(`create role replicator login replication password 'rep secret';
      create tablespace warm location '${tablespace}';
      create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 1000) g;
      create table w (id int) tablespace warm; insert into w select generate_series(1, 100);`);
        passfile = join(base, 'pgpass');
        writeFileSync(passfile, '*:*:replication:replicator:rep secret\n', { mode: 0o600 });
        newDataDir = alike ? join(base, '17', 'main') : join(base, 'data-17');
        stopAtTeardown(bindir(17), newDataDir);

        localDir = alike ? join(mkdirOwned(join(mkdirOwned(join(base, 'local')), '16')), 'main') : join(base, 'local');
        localSock = mkdirOwned(join(base, 'local-sock'));
        localPort = await freePort();
        remoteDir = alike ? join(mkdirOwned(join(host.root, '16')), 'main') : join(host.root, 'data');
        remoteWal = join(host.root, 'wal');
        for (const [v, d] of [
          [16, localDir],
          [17, newOf(localDir)],
          [16, remoteDir],
          [17, newOf(remoteDir)],
        ] as const)
          stopAtTeardown(bindir(v), d);
        // the new version's directories on the standby hosts, as its packages make them (the checks want each new data directory's parent)
        if (alike) for (const d of [localDir, remoteDir]) mkdirOwned(dirname(newOf(d)));
        const add = (args: string[]) =>
          runCli(['replica', 'add', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, '--yes', '--json', ...args], {
            env: { PGPASSFILE: passfile },
            timeoutMs: 240_000,
          });
        const a = await add([
          '--host',
          'local',
          '--replica-pgdata',
          localDir,
          '--replica-port',
          String(localPort),
          '--replica-socket-dir',
          localSock,
          '--tablespace-mapping',
          `${tablespace}=${join(base, 'local-ts')}`,
        ]);
        assert.equal(
          a.code,
          0,
          `${fail('local replica', a)}\nstandby log:\n${existsSync(`${localDir}.log`) ? readFileSync(`${localDir}.log`, 'utf8').slice(-3000) : 'none'}`,
        );
        const b = await add([
          '--host',
          host.name,
          '--ssh-config',
          host.sshConfig,
          '--replica-pgdata',
          remoteDir,
          '--replica-socket-dir',
          host.socketDir,
          '--replica-port',
          String(c.port),
          '--tablespace-mapping',
          `${tablespace}=${join(host.root, 'ts')}`,
          // rsync carries a WAL directory outside the data directory too (the docs' relocated pg_wal)
          ...(method === 'rsync' ? ['--replica-waldir', remoteWal] : []),
        ]);
        assert.equal(b.code, 0, fail('namespace replica', b));
      });

      /** Nothing changed: the primary still runs 16, both standbys stream from it, no new cluster, pg_hba.conf as it was. */
      async function assertUnchanged(hbaBefore: string): Promise<void> {
        assert.match(await c.sql('show server_version'), /^16\./);
        assert.ok(!existsSync(join(newDataDir, 'PG_VERSION')), 'no new cluster');
        assert.equal(hba(), hbaBefore);
        await eventually(
          'both standbys streaming again',
          async () => (await c.sql("select count(*) from pg_stat_replication where state = 'streaming'")) === '2',
        );
      }

      // the refusals come before any method-specific step: checked once, with the first method
      if (method === 'rebuild')
        test('a lagging or unreachable standby refuses the run before downtime: exit 3, nothing changed', async () => {
          const before = hba();

          // lagging: replay paused on the local standby while the primary writes
          assert.equal(await psql(16, localSock, localPort, 'select pg_wal_replay_pause()'), '');
          await c.sql('insert into t select g, md5(g::text) from generate_series(2001, 4000) g');
          await eventually(
            'the local standby to lag',
            async () =>
              Number(
                await c.sql(
                  "select coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0) from pg_stat_replication r join pg_replication_slots s on s.active_pid = r.pid where s.slot_name = 'pgscale_local_local'",
                ),
              ) > 4096,
          );
          const lagging = await runCli([...upgradeArgs(), '--max-lag', '4096', '--yes', '--json'], { timeoutMs: 240_000 });
          assert.equal(lagging.code, 3, fail('lagging standby', lagging));
          assert.match(lagging.stdout, /standby local:.*caught up.*replay lag/);
          await psql(16, localSock, localPort, 'select pg_wal_replay_resume()');
          await assertUnchanged(before);

          // unreachable: the namespace standby named through an ssh configuration whose port nothing answers
          const closed = join(base, 'closed_ssh_config');
          writeFileSync(closed, readFileSync(host.sshConfig, 'utf8').replace('  BatchMode yes', '  BatchMode yes\n  Port 2222'));
          const unreachable = await runCli([...upgradeArgs(), '--replica', `${host.name}:${remoteDir}`, '--ssh-config', closed, '--yes', '--json'], {
            timeoutMs: 240_000,
          });
          assert.equal(unreachable.code, 3, fail('unreachable standby', unreachable));
          assert.match(unreachable.stdout, new RegExp(`${hostName} is unreachable`));
          await assertUnchanged(before);
        });

      test(`--replicas ${method}: primary and both standbys on 17, streaming from new slots, data identical, a row written after the upgrade on both${method === 'rsync' ? ', through a SIGKILL during the rsync and a resume' : ''}`, async (t) => {
        // rsync is the default when every standby passes its checks (link mode); rebuild is asked for
        const methodArgs = method === 'rebuild' ? ['--replicas', 'rebuild'] : [];
        const dry = await runCli([...upgradeArgs(), ...methodArgs, '--dry-run'], { timeoutMs: 240_000 });
        assert.equal(dry.code, 0, fail('dry run', dry));
        assert.ok(dry.stdout.includes(`local:${localDir} (created by pgscale replica add)`), dry.stdout);
        assert.match(dry.stdout, new RegExp(`pg_upgrade does not carry 16's slots: ${localSlot}, ${remoteSlot}`));
        assert.match(dry.stdout, method === 'rsync' ? /: rsync — every standby passes the rsync checks/ : /: rebuild — as asked/);
        if (method === 'rsync')
          assert.ok(
            dry.stdout.includes(`${newDataDir}/pg_wal/ ${hostName}:${remoteWal}-17/`),
            `the plan shows the WAL transfer into the new WAL directory:\n${dry.stdout}`,
          );
        if (alike) {
          assert.ok(
            dry.stdout.includes(`${join(base, '16')} ${join(base, '17')} ${hostName}:${join(host.root, `.pgscale-rsync-${remoteSlot}`)}/`),
            `the plan shows rsync from the directories above both clusters:\n${dry.stdout}`,
          );
          // anything else beside a standby's cluster would be within reach of rsync --delete: rebuild is chosen, rsync refused
          const other = join(host.root, '16', 'notes');
          writeFileSync(other, 'kept\n');
          const chosen = await runCli([...upgradeArgs(), '--dry-run'], { timeoutMs: 240_000 });
          assert.match(chosen.stdout, /: rebuild — a standby fails a check of the rsync method/, fail('dry run with a file beside', chosen));
          const asked = await runCli([...upgradeArgs(), '--replicas', 'rsync', '--dry-run'], { timeoutMs: 240_000 });
          assert.equal(asked.code, 3, fail('rsync asked for with a file beside', asked));
          assert.match(asked.stdout + asked.stderr, /the standby's \S+\/16 holds more than the cluster main \(notes\): rsync --delete would reach it/);
          rmSync(other);
        }

        let run: RunReport;
        if (method === 'rsync') {
          // SIGKILL once the rsync step has started: `pgscale resume` continues host by host
          const child = spawn(process.execPath, [cliEntry, ...upgradeArgs(), '--yes', '--json'], { cwd: repoRoot, stdio: 'ignore' });
          const exited = new Promise((r) => child.on('close', r));
          const started = (): string[] =>
            readdirSync(join(stateDir, 'runs')).flatMap((id) => {
              const f = join(stateDir, 'runs', id, 'journal.jsonl');
              if (!existsSync(f)) return [];
              const events = readFileSync(f, 'utf8')
                .split('\n')
                .filter(Boolean)
                .flatMap((l) => {
                  try {
                    return [JSON.parse(l) as { type: string; step?: string }];
                  } catch {
                    return [];
                  }
                });
              return events.filter((e) => e.type === 'step-started' && e.step?.startsWith('standbys')).map((e) => e.step!);
            });
          await eventually('the rsync step to start', async () => started().includes('standbys-rsync'), 120_000, 20);
          child.kill('SIGKILL');
          await exited;
          const killedIn = started().pop();
          t.diagnostic(`killed during step ${killedIn}`);
          const resumed = await runCli(['resume', '--state-dir', stateDir, '--yes', '--json'], { timeoutMs: 400_000 });
          assert.equal(resumed.code, 0, fail('resume', resumed));
          run = parseJson<RunReport>(resumed);
        } else {
          const res = await runCli([...upgradeArgs(), ...methodArgs, '--yes', '--json'], { timeoutMs: 400_000 });
          assert.equal(res.code, 0, fail('upgrade', res));
          const out = parseJson<{ run: RunReport; report: UpgradeReport }>(res);
          run = out.run;
          // the closing report says what happened to each standby
          for (const name of ['local', hostName])
            assert.ok(
              out.report.nextSteps.some((l) => new RegExp(`^standby ${name}:.*: rebuilt from the new primary by pg_basebackup; `).test(l)),
              out.report.text,
            );
        }
        assert.equal(run.status, 'completed');
        const standbySteps = run.steps.map((st) => st.id).filter((id) => id.startsWith('standbys'));
        assert.deepEqual(
          standbySteps,
          method === 'rsync' ? ['standbys', 'standbys-stop', 'standbys-rsync', 'standbys-start'] : ['standbys', 'standbys-rebuild'],
        );
        assert.match(await c.sql('show server_version'), /^17\./, 'the primary answers on its old port as 17');

        const slots = await c.sql("select string_agg(slot_name || ' ' || active, ',' order by slot_name) from pg_replication_slots");
        assert.equal(
          slots,
          `${localSlot} true,${remoteSlot} true`,
          `both slots recreated on the new primary and in use; standby steps: ${JSON.stringify(standbySteps.map((id) => run.outputs[id]))}`,
        );
        await c.sql("insert into t values (9001, 'after the upgrade')");
        const localNew = newOf(localDir);
        const remoteNew = newOf(remoteDir);
        assert.equal(readFileSync(join(localNew, 'PG_VERSION'), 'utf8').trim(), '17');
        assert.equal(readFileSync(join(remoteNew, 'PG_VERSION'), 'utf8').trim(), '17');
        await eventually(
          'the row on the local standby',
          async () => (await psql(17, localSock, localPort, 'select v from t where id = 9001')) === 'after the upgrade',
        );
        await eventually(
          'the row on the namespace standby',
          async () => (await psql(17, host.socketDir, c.port, 'select v from t where id = 9001')) === 'after the upgrade',
        );
        const checksum =
          "select (select md5(string_agg(id || v, ',' order by id)) from t) || ' ' || (select md5(string_agg(id::text, ',' order by id)) from w)";
        const onPrimary = await c.sql(checksum);
        assert.equal(await psql(17, localSock, localPort, checksum), onPrimary, 'per-table checksums on the local standby');
        assert.equal(
          await psql(17, host.socketDir, c.port, checksum),
          onPrimary,
          'per-table checksums on the namespace standby (its table in the tablespace too)',
        );
        assert.equal(await psql(17, host.socketDir, c.port, 'select pg_is_in_recovery()'), 't');
        assert.equal(await c.sql("select count(*) from pg_stat_replication where state = 'streaming'"), '2');
        assert.ok(!existsSync(join(localDir, 'postmaster.pid')) && !existsSync(join(remoteDir, 'postmaster.pid')), 'the old standbys are stopped');
        if (method === 'rsync') {
          // rsync --hard-links: the new standby's relation files are links to the old standby's, as on the primary
          const relation = (await c.sql("select pg_relation_filepath('t')")).trim();
          assert.ok(statSync(join(remoteNew, relation)).nlink >= 2, 'the table file is hard-linked on the namespace standby');
          // its WAL beside the old WAL directory, pg_wal linking there; the old standby's WAL left where it was
          assert.equal(readlinkSync(join(remoteNew, 'pg_wal')), `${remoteWal}-17`);
          assert.equal(readlinkSync(join(remoteDir, 'pg_wal')), remoteWal);
          const segment = await c.sql('select pg_walfile_name(pg_current_wal_lsn())');
          assert.ok(existsSync(join(`${remoteWal}-17`, segment)), `the segment streamed after the upgrade (${segment}) is in ${remoteWal}-17`);
        }
        if (alike) {
          // rsync --delete worked in the directories above: what sits beside each old standby stays, no staging is left
          // (a standby's own log is in its data directory's log/: nothing of it sits beside)
          assert.deepEqual(readdirSync(join(host.root, '16')).sort(), ['main', 'main.pgpass']);
          assert.deepEqual(readdirSync(join(base, 'local', '16')).sort(), ['main', 'main.pgpass']);
          assert.deepEqual(readdirSync(join(host.root, '17')).sort(), ['main', 'main.pgpass']);
          assert.deepEqual(
            readdirSync(host.root).filter((n) => n.startsWith('.pgscale-rsync')),
            [],
          );
          assert.ok(
            !existsSync(join(remoteNew, '.main.pgscale-upgrade')) && !existsSync(join(host.root, '17', '.main.pgscale-upgrade')),
            'the work directory is not sent',
          );
        }
      });
    },
  );
