/**
 * The pure rules behind restarts outside the upgrade: where pg_ctl's log goes (never inside the
 * data directory), and which of pgscale's settings wait for a restart a re-run with consent makes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseServerLog, type ServerLogFacts } from '../../src/cluster/serverLog.js';
import { pendingOwnRestarts } from '../../src/tune/decide.js';
import type { AreaChanges, SettingChange } from '../../src/tune/diff.js';

const facts: ServerLogFacts = { dataDir: '/srv/pg/16/main', loggingCollector: false, writableLogDirectory: null, parentWritable: true, writableStateDir: '/var/lib/pgscale' };

test('server log: the server\'s own log directory with logging_collector on, else beside the data directory, else the state directory', () => {
  assert.equal(chooseServerLog({ ...facts, loggingCollector: true, writableLogDirectory: '/var/log/postgresql' })?.path, '/var/log/postgresql/pgscale-startup.log');
  assert.equal(chooseServerLog(facts)?.path, '/srv/pg/16/main.pgscale-server.log');
  // a collector whose directory cannot be written (or does not exist yet) is no place for pg_ctl's output
  assert.equal(chooseServerLog({ ...facts, loggingCollector: true, writableLogDirectory: null })?.path, '/srv/pg/16/main.pgscale-server.log');
  assert.equal(chooseServerLog({ ...facts, parentWritable: false })?.path, '/var/lib/pgscale/server-main.log');
  assert.equal(chooseServerLog({ ...facts, parentWritable: false, writableStateDir: null }), undefined);
  for (const f of [facts, { ...facts, parentWritable: false }, { ...facts, loggingCollector: true, writableLogDirectory: '/var/log/pg' }]) {
    const path = chooseServerLog(f)!.path;
    assert.ok(!path.startsWith(facts.dataDir + '/'), `${path} is outside the data directory`);
  }
});

const setting = (name: string, status: SettingChange['status'], restart: boolean, current: Partial<NonNullable<SettingChange['current']>> | undefined): SettingChange =>
  ({ area: 'memory', name, text: '256MB', status, via: 'main', recommended: { name, restart }, current: current && { name, text: '256MB', value: undefined, overrides: [], origin: 'file', ...current } }) as unknown as SettingChange;
const areas = (settings: SettingChange[]): AreaChanges[] => [{ area: 'memory', settings, changes: settings.filter((s) => s.status === 'change'), restart: 0, reload: 0 }];
const running = { text: '128MB', value: undefined };

test('pending restarts of pgscale\'s settings: in the files at the recommendation, the server waiting for a restart', () => {
  const pending = setting('shared_buffers', 'keep', true, { running: { ...running, pendingRestart: true } });
  assert.deepEqual(pendingOwnRestarts(areas([pending])).map((s) => s.name), ['shared_buffers']);
  // in effect already, a reload setting, still to be written, or pinned on the command line: no restart to complete
  assert.deepEqual(pendingOwnRestarts(areas([setting('shared_buffers', 'keep', true, {})])), []);
  assert.deepEqual(pendingOwnRestarts(areas([setting('work_mem', 'keep', false, { running: { ...running, pendingRestart: true } })])), []);
  assert.deepEqual(pendingOwnRestarts(areas([setting('shared_buffers', 'change', true, { running: { ...running, pendingRestart: true } })])), []);
  assert.deepEqual(pendingOwnRestarts(areas([setting('shared_buffers', 'keep', true, { origin: 'command-line', running: { ...running, pendingRestart: true } })])), []);
  assert.deepEqual(pendingOwnRestarts(areas([setting('max_wal_senders', 'keep', true, undefined)])), []);
});
