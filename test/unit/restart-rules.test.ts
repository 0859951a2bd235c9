/**
 * The pure rules behind restarts outside the upgrade: where pg_ctl's log goes (never inside the
 * data directory), which of pgscale's settings wait for a restart a re-run with consent makes, and
 * a stopped cluster's identity gathered from the files it last ran with.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { currentUser } from '../../src/osUser.js';
import { ZxRunner } from '../../src/runner.js';
import { describeListening, gatherClusterIdentity } from '../../src/server/postgres.js';
import { chooseServerLog, type ServerLogFacts } from '../../src/cluster/serverLog.js';
import { pendingNotOwn, pendingOwnRestarts } from '../../src/tune/decide.js';
import type { AreaChanges, SettingChange } from '../../src/tune/diff.js';

const facts: ServerLogFacts = {
  dataDir: '/srv/pg/16/main',
  loggingCollector: false,
  writableLogDirectory: null,
  parentWritable: true,
  writableStateDir: '/var/lib/pgscale',
};

test("server log: the server's own log directory with logging_collector on, else beside the data directory, else the state directory", () => {
  assert.equal(
    chooseServerLog({ ...facts, loggingCollector: true, writableLogDirectory: '/var/log/postgresql' })?.path,
    '/var/log/postgresql/pgscale-startup.log',
  );
  assert.equal(chooseServerLog(facts)?.path, '/srv/pg/16/main.pgscale-server.log');
  // a collector whose directory cannot be written (or does not exist yet) is no place for pg_ctl's output
  assert.equal(chooseServerLog({ ...facts, loggingCollector: true, writableLogDirectory: null })?.path, '/srv/pg/16/main.pgscale-server.log');
  assert.equal(chooseServerLog({ ...facts, parentWritable: false })?.path, '/var/lib/pgscale/server-main.log');
  assert.equal(chooseServerLog({ ...facts, parentWritable: false, writableStateDir: null }), undefined);
  // a server started with pg_ctl -l FILE keeps logging there after pgscale restarts it
  assert.equal(
    chooseServerLog({ ...facts, currentLog: '/var/log/pg/main.log', loggingCollector: true, writableLogDirectory: '/x' })?.path,
    '/var/log/pg/main.log',
  );
  for (const f of [facts, { ...facts, parentWritable: false }, { ...facts, loggingCollector: true, writableLogDirectory: '/var/log/pg' }]) {
    const path = chooseServerLog(f)!.path;
    assert.ok(!path.startsWith(facts.dataDir + '/'), `${path} is outside the data directory`);
  }
});

const setting = (
  name: string,
  status: SettingChange['status'],
  restart: boolean,
  current: Partial<NonNullable<SettingChange['current']>> | undefined,
): SettingChange =>
  ({
    area: 'memory',
    name,
    text: '256MB',
    status,
    via: 'main',
    recommended: { name, restart },
    current: current && { name, text: '256MB', value: undefined, overrides: [], origin: 'file', ...current },
  }) as unknown as SettingChange;
const areas = (settings: SettingChange[]): AreaChanges[] => [
  { area: 'memory', settings, changes: settings.filter((s) => s.status === 'change'), restart: 0, reload: 0 },
];
const running = { text: '128MB', value: undefined };

test("pending restarts of pgscale's settings: in the files at the recommendation, the server waiting for a restart", () => {
  const pending = setting('shared_buffers', 'keep', true, { running: { ...running, pendingRestart: true } });
  assert.deepEqual(
    pendingOwnRestarts(areas([pending])).map((s) => s.name),
    ['shared_buffers'],
  );
  // in effect already, a reload setting, still to be written, or pinned on the command line: no restart to complete
  assert.deepEqual(pendingOwnRestarts(areas([setting('shared_buffers', 'keep', true, {})])), []);
  assert.deepEqual(pendingOwnRestarts(areas([setting('work_mem', 'keep', false, { running: { ...running, pendingRestart: true } })])), []);
  assert.deepEqual(pendingOwnRestarts(areas([setting('shared_buffers', 'change', true, { running: { ...running, pendingRestart: true } })])), []);
  assert.deepEqual(
    pendingOwnRestarts(areas([setting('shared_buffers', 'keep', true, { origin: 'command-line', running: { ...running, pendingRestart: true } })])),
    [],
  );
  assert.deepEqual(pendingOwnRestarts(areas([setting('max_wal_senders', 'keep', true, undefined)])), []);
});

test("a restart pending before pgscale changes anything is warned of once: pgscale's own pending restarts are reported by the restart note alone", () => {
  const own = areas([setting('shared_buffers', 'keep', true, { running: { ...running, pendingRestart: true } })]);
  assert.deepEqual(pendingNotOwn(['shared_buffers', 'wal_level'], own), ['wal_level']);
  assert.deepEqual(pendingNotOwn(['shared_buffers'], own), []);
  assert.deepEqual(pendingNotOwn(['shared_buffers'], areas([setting('shared_buffers', 'change', true, { running: { ...running, pendingRestart: true } })])), [
    'shared_buffers',
  ]);
});

test("a stopped cluster's identity: config_file from the command line it last ran with, listening settings from includes and postgresql.auto.conf", async () => {
  const root = mkdtempSync(join(tmpdir(), 'pgscale-identity-'));
  try {
    const data = join(root, 'data');
    const etc = join(root, 'etc');
    mkdirSync(data);
    mkdirSync(join(etc, 'conf.d'), { recursive: true });
    writeFileSync(join(etc, 'postgresql.conf'), `port = 5432\ninclude_dir = 'conf.d'\nunix_socket_directories = '/run/a'\n`);
    writeFileSync(join(etc, 'conf.d', 'site.conf'), 'port = 5544\n');
    writeFileSync(join(data, 'postgresql.auto.conf'), "listen_addresses = '10.0.0.1'\n");
    writeFileSync(join(data, 'postmaster.opts'), `/usr/lib/postgresql/17/bin/postgres "-D" "${data}" "-c" "config_file=${join(etc, 'postgresql.conf')}"\n`);
    const id = await gatherClusterIdentity(
      { dataDir: data, bindir: '/usr/lib/postgresql/17/bin', owner: currentUser(), configFile: join(data, 'postgresql.conf'), stateDir: join(root, 'state') },
      new ZxRunner(),
    );
    assert.equal(id.configFile, join(etc, 'postgresql.conf'));
    assert.deepEqual(id.options, ['-c', `config_file=${join(etc, 'postgresql.conf')}`]);
    assert.equal(describeListening(id), 'port 5544 (configuration), sockets in /run/a (configuration), TCP on 10.0.0.1 (configuration)');
    assert.equal(id.log, join(root, 'data.pgscale-server.log'));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
