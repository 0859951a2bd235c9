/**
 * The interactive `pgscale upgrade` wizard in a real terminal (tmux): every prompt is awaited on
 * screen and answered with keys, as a DBA would. Once to completion (copy mode, WAL on a dedicated
 * volume, a backup), once declining the confirmation before downtime.
 *
 * Each test process runs its own tmux server (-L), killed in teardown with everything in it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readFileSync, readlinkSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { bindir, upgradeCommand, createCluster, createLoopVolume, scratchDir, teardownAll, TestCluster } from '../helpers/testbed.js';
import { cliEntry } from '../helpers/paths.js';
import { hasTmux, killTmux, Terminal } from '../helpers/terminal.js';
import { runCli } from '../helpers/cli.js';
import { amcheckClean, datasetConf, datasetDb, loadDataset, smallDataset, tableChecksums } from '../helpers/dataset.js';
import { isRoot } from '../../src/runner.js';
import { lockPath } from '../../src/pipeline/journal.js';
import { readSystemIdentifier } from '../../src/pipeline/plan.js';

after(() => {
  killTmux();
  teardownAll();
});

const postmasterPid = (dataDir: string) => Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
const running = (dataDir: string) => existsSync(join(dataDir, 'postmaster.pid'));

describe('pgscale upgrade wizard in a real terminal', { skip: (!isRoot() && 'loop volumes need root') || (!hasTmux && 'tmux is not installed') }, () => {
  let template: TestCluster;

  before(async () => {
    template = await createCluster({ version: 16, checksums: true, conf: datasetConf(16) });
    await loadDataset(template, smallDataset);
  });

  test(
    'answering every question: target, new data directory, copy mode, WAL volume, backup; confirming downtime; completes',
    { timeout: 600_000 },
    async () => {
      const old = template;
      const before = await tableChecksums(old);
      const walVolume = createLoopVolume(96);
      const work = scratchDir('pgscale-wizard-');
      const newDataDir = join(work, 'pg17', 'main');
      const waldir = join(walVolume.mountPoint, 'pg_wal');
      const backup = join(work, 'backup');
      const term = Terminal.start('complete', [process.execPath, cliEntry, ...upgradeCommand(old, { 'state-dir': join(work, 'state') })]);
      try {
        assert.match(await term.answer(/^\? Target version\?/, 'Enter'), /Target version/);
        assert.match(term.screen(), /✔ Target version\? 17/);
        const asked = await term.answer(/^\? New data directory\?/, newDataDir, 'Enter');
        assert.match(asked, new RegExp(`\\(${join(dirname(old.pgdata), 'data-17')}\\)`), 'the default is offered');
        await term.answer(/^\? Upgrade mode\?/, 'Down', 'Enter');
        assert.match(term.screen(), /✔ Upgrade mode\? copy/);
        await term.answer(/^\? Put WAL on a dedicated volume\?/, 'y', 'Enter');
        await term.answer(/^\? WAL directory/, waldir, 'Enter');
        await term.answer(/^\? Take a pg_dumpall backup first\?/, 'y', 'Enter');
        await term.answer(/^\? Backup directory/, backup, 'Enter');
        // the plan is shown, the work before downtime runs, then each confirmation is asked
        await term.waitFor(/Upgrade .* from PostgreSQL 16 to 17 into .*\(--copy, \d+ jobs?, WAL on .*, backup to .* first\)/);
        const confirmations: string[] = [];
        for (;;) {
          const pending = term.pendingPrompt();
          if (pending && /Continue\?/.test(pending)) {
            confirmations.push(pending);
            await term.answer(/Continue\?/, 'y', 'Enter');
            continue;
          }
          if (/\[exit \d+\]/.test(term.screen())) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        const code = await term.exitCode();
        assert.equal(code, 0, term.screen());
        assert.equal(confirmations.length, 1, 'one question, before downtime');
        assert.match(
          confirmations[0]!,
          /Next: Block new connections, stop the old 16 cluster cleanly \(downtime starts\) — the cluster will be unavailable\. Continue\?/,
        );
        assert.match(term.screen(), /PostgreSQL 16 → 17: completed in .*, downtime .* \(connections blocked → new accepting writes\)/);
        assert.match(term.screen(), /the old cluster in .* is intact and stopped/);
      } finally {
        term.kill();
      }
      const next = new TestCluster(17, bindir(17), newDataDir, old.port, old.socketDir, join(work, 'new.log'));
      assert.equal(Math.floor(Number(await next.sql('show server_version_num')) / 10000), 17);
      assert.deepEqual(await tableChecksums(next), before);
      assert.deepEqual((await amcheckClean(next)).errors, []);
      assert.ok(lstatSync(join(newDataDir, 'pg_wal')).isSymbolicLink());
      assert.equal(readlinkSync(join(newDataDir, 'pg_wal')), waldir);
      assert.ok(readdirSync(backup).length > 0, 'the backup was taken');
      assert.equal(running(old.pgdata), false);
      await next.stop();
    },
  );

  test(
    'declining the confirmation before downtime: exit 3, the old cluster never stopped; what was prepared is undone and the lock released',
    { timeout: 600_000 },
    async () => {
      // a fresh 16 cluster: the first test upgraded the template
      const old = await createCluster({ version: 16, checksums: true, conf: datasetConf(16) });
      await loadDataset(old, smallDataset);
      const before = await tableChecksums(old);
      const pid = postmasterPid(old.pgdata);
      const work = scratchDir('pgscale-wizard-');
      const stateDir = join(work, 'state');
      const defaultNew = join(dirname(old.pgdata), 'data-17');
      const term = Terminal.start('decline', [process.execPath, cliEntry, ...upgradeCommand(old, { 'state-dir': stateDir })]);
      let screen: string;
      try {
        await term.answer(/^\? Target version\?/, 'Enter');
        await term.answer(/^\? New data directory\?/, 'Enter');
        await term.answer(/^\? Upgrade mode\?/, 'Enter');
        await term.answer(/^\? Put WAL on a dedicated volume\?/, 'Enter');
        await term.answer(/^\? Take a pg_dumpall backup first\?/, 'n', 'Enter');
        const asked = await term.answer(/Continue\?/, 'n', 'Enter');
        assert.match(asked, /Next: Block new connections, stop the old 16 cluster cleanly \(downtime starts\)/);
        // the carried configuration was shown before the question
        assert.match(term.screen() + asked, /Configuration for the new version:/);
        const code = await term.exitCode();
        screen = term.screen();
        assert.equal(code, 3, screen);
      } finally {
        term.kill();
      }
      assert.match(screen, /pgscale: error: not confirmed: stopped before this step; nothing more was changed/);
      assert.match(screen, /declined before any downtime: what the run had done is undone/);
      // the old cluster was never stopped: same postmaster, same data, accepting writes
      assert.ok(running(old.pgdata));
      assert.equal(postmasterPid(old.pgdata), pid, 'the old cluster was never restarted');
      assert.deepEqual(await tableChecksums(old), before);
      assert.ok(existsSync(join(old.pgdata, 'global', 'pg_control')));
      // what ran before the question (initdb, config, pg_upgrade --check) was undone: nothing left, no lock
      assert.equal(existsSync(defaultNew), false, 'the prepared new data directory was removed');
      assert.equal(existsSync(join(dirname(defaultNew), '.data-17.pgscale-upgrade')), false, 'no work directory');
      assert.equal(existsSync(lockPath(`system:${readSystemIdentifier(old.pgdata)}`)), false, 'the lock was released');
      const again = await runCli(['rollback', '--state-dir', stateDir, '--yes']);
      assert.equal(again.code, 3, 'the run is already rolled back');
      assert.equal(postmasterPid(old.pgdata), pid);
      await old.sql(`insert into items (id, name, created) values (-1, 'still 16', now())`, datasetDb);
    },
  );
});
