import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  blockedHba,
  blockMarker,
  carriedIdentity,
  catalogDifferences,
  planChecks,
  withoutBlock,
  withoutSettings,
  type PlanFacts,
  lsnBytes,
  lsnOf,
  writesSinceOpen,
  restartConfigCheck,
  restartConfigFile,
} from '../../src/upgrade/rules.js';
import { optionValue, type ServerIdentity } from '../../src/server/postgres.js';

const old: ServerIdentity = {
  bindir: '/usr/lib/postgresql/16/bin',
  dataDir: '/srv/pg16',
  configFile: '/etc/pg/16/postgresql.conf',
  configDir: null,
  options: [
    '-p',
    '5433',
    '-k',
    '/run/pg',
    '-c',
    'listen_addresses=',
    '-c',
    'config_file=/etc/pg/16/postgresql.conf',
    '--hba-file=/etc/pg/16/pg_hba.conf',
    '-c',
    'work_mem=8MB',
  ],
  port: 5433,
  socketDirs: ['/run/pg'],
  listenAddresses: '',
  owner: 'postgres',
  log: '/srv/pg16.pgscale-server.log',
  origins: { port: 'command line', sockets: 'command line', listen: 'command line' },
  manager: { kind: 'pg_ctl' },
};
const plainNew = { configFile: null, manager: { kind: 'pg_ctl' } } as const;

test("the new server keeps the old one's options but none naming the old cluster's files", () => {
  const n = carriedIdentity(old, { bindir: '/usr/lib/postgresql/17/bin', dataDir: '/srv/pg17', log: '/srv/pg17.log', ...plainNew });
  assert.deepEqual(n.options, ['-p', '5433', '-k', '/run/pg', '-c', 'listen_addresses=', '-c', 'work_mem=8MB']);
  assert.equal(n.configFile, null);
  assert.equal(n.port, 5433);
  assert.deepEqual(n.socketDirs, ['/run/pg']);
  assert.equal(n.dataDir, '/srv/pg17');
  assert.deepEqual(n.origins, old.origins);
  // a port that came from the service's PGPORT is made explicit: pgscale's environment has no PGPORT
  const env = carriedIdentity(
    { ...old, options: [], port: 6000, origins: { ...old.origins, port: 'environment (PGPORT)' } },
    { bindir: '/b', dataDir: '/d', log: '/l', ...plainNew },
  );
  assert.deepEqual(env.options, ['-p', '6000']);
  // a postgresql-common cluster: its own config_file in /etc/postgresql/17/main, run by pg_ctlcluster 17 main
  const debian = carriedIdentity(old, {
    bindir: '/usr/lib/postgresql/17/bin',
    dataDir: '/var/lib/postgresql/17/main',
    log: '/l',
    configFile: '/etc/postgresql/17/main/postgresql.conf',
    manager: { kind: 'pg_ctlcluster', version: 17, cluster: 'main' },
  });
  assert.equal(debian.configFile, '/etc/postgresql/17/main/postgresql.conf');
  assert.deepEqual(debian.manager, { kind: 'pg_ctlcluster', version: 17, cluster: 'main' });
  assert.equal(optionValue(debian.options, 'config_file'), undefined, "the old cluster's config_file is not given to the new server");
  assert.deepEqual(withoutSettings(['-cconfig_file=/x', '--data-directory=/y', '-c', 'fsync=on'], ['config_file', 'data_directory']), ['-c', 'fsync=on']);
});

test('the connection block: pgscale first, everyone else rejected, removable without a trace', () => {
  const original = '# TYPE DATABASE USER ADDRESS METHOD\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n';
  const blocked = blockedHba(original, { user: 'postgres', local: true, peer: true });
  const lines = blocked.split('\n');
  assert.match(lines[0]!, /^local all "postgres" peer\t/);
  assert.match(lines[1]!, /^local all all reject\t/);
  assert.match(lines[2]!, /^host all all all reject\t/);
  assert.ok(lines.slice(0, 3).every((l) => l.includes(blockMarker)));
  assert.equal(withoutBlock(blocked), original);
  // blocking twice (a resumed run) does not stack blocks
  assert.equal(blockedHba(blocked, { user: 'postgres', local: true, peer: true }), blocked);
  assert.match(blockedHba(original, { user: 'dba', local: false, peer: false }).split('\n')[0]!, /^host all "dba" all scram-sha-256\t/);
});

const facts = (over: Partial<PlanFacts> = {}): PlanFacts => ({
  oldDataDir: '/srv/pg16',
  pgVersion: '16',
  oldMajor: 16,
  newMajor: 17,
  newDataDir: '/srv/pg17',
  waldir: null,
  tablespaces: [],
  oldBinaryMajor: 16,
  newBinaryMajor: 17,
  newParent: { path: '/srv', ownerCanWrite: true, willBeCreatedByPgscale: false },
  owner: 'postgres',
  refusingConnections: [],
  regColumns: [],
  ...over,
});
const failed = (f: PlanFacts) =>
  planChecks(f)
    .filter((c) => !c.passed)
    .map((c) => `${c.name}: ${c.detail}`);

test('plan checks: a sound setup passes every rule', () => {
  assert.deepEqual(failed(facts()), []);
  assert.equal(planChecks(facts()).length, 6);
});

test('plan checks: binaries of another major than PG_VERSION, or than the target', () => {
  assert.match(
    failed(facts({ oldBinaryMajor: 17 })).join('\n'),
    /old binaries version: the old bindir holds PostgreSQL 17, but \/srv\/pg16\/PG_VERSION says 16/,
  );
  assert.match(failed(facts({ oldBinaryMajor: undefined })).join('\n'), /old binaries version: .*gave no version/);
  assert.match(failed(facts({ newBinaryMajor: 18 })).join('\n'), /new binaries version: the new bindir holds PostgreSQL 18, not 17/);
});

test('plan checks: data and WAL directories that contain one another', () => {
  assert.match(
    failed(facts({ newDataDir: '/srv/pg16/pg17' })).join('\n'),
    /separate directories: the new data directory \/srv\/pg16\/pg17 is inside the old one/,
  );
  assert.match(failed(facts({ newDataDir: '/srv' })).join('\n'), /the old data directory \/srv\/pg16 is inside the new one \/srv/);
  assert.match(failed(facts({ waldir: '/srv/pg17/wal' })).join('\n'), /the WAL directory \/srv\/pg17\/wal and the new data directory/);
  assert.match(failed(facts({ tablespaces: ['/ts'], newDataDir: '/ts/pg17' })).join('\n'), /inside the tablespace \/ts/);
  assert.deepEqual(failed(facts({ newDataDir: '/srv/pg16-17' })), [], 'a sibling sharing a prefix is not inside');
});

test('plan checks: a parent the owner cannot write, unless pgscale creates it', () => {
  assert.match(
    failed(facts({ newParent: { path: '/srv', ownerCanWrite: false, willBeCreatedByPgscale: false } })).join('\n'),
    /new data directory writable: postgres \(the cluster owner, who runs initdb\) cannot create entries in \/srv/,
  );
  assert.deepEqual(failed(facts({ newParent: { path: '/', ownerCanWrite: false, willBeCreatedByPgscale: true } })), []);
});

test('plan checks: what pg_upgrade --check refuses — databases refusing connections, reg* columns', () => {
  assert.match(
    failed(facts({ refusingConnections: ['archive'] })).join('\n'),
    /databases allow connections: archive has datallowconn = false, which pg_upgrade refuses: ALTER DATABASE/,
  );
  assert.match(failed(facts({ regColumns: ['app: public.t.f (regproc)'] })).join('\n'), /reg\* columns: app: public.t.f \(regproc\)/);
});

test('catalog facts: equal snapshots match; a changed fork size, a missing relation or database is named', () => {
  const before = { app: { 'public.t': 'r 16400 8192 24576 8192 0', 'public.t_pkey': 'i 16403 16384 0 0 0' } };
  assert.deepEqual(catalogDifferences(before, structuredClone(before)), []);
  assert.deepEqual(catalogDifferences(before, { app: { 'public.t': 'r 16400 16384 24576 8192 0', 'public.t_pkey': 'i 16403 16384 0 0 0' } }), [
    'app.public.t: r 16400 8192 24576 8192 0 before, r 16400 16384 24576 8192 0 after (kind relfilenode main fsm vm init)',
  ]);
  assert.deepEqual(catalogDifferences(before, { app: { 'public.t': 'r 16400 8192 24576 8192 0' } }), [
    'app.public.t_pkey: i 16403 16384 0 0 0 before, missing after (kind relfilenode main fsm vm init)',
  ]);
  assert.deepEqual(catalogDifferences(before, {}), ['database app is missing']);
});

test('LSNs: text to bytes and back', () => {
  assert.equal(lsnBytes('0/0'), 0n);
  assert.equal(lsnBytes('16/B374D848'), (0x16n << 32n) + 0xb374d848n);
  assert.equal(lsnOf(lsnBytes('16/B374D848')), '16/B374D848');
});

test('writesSinceOpen: says plainly that writes since the open are not in the old cluster, with the WAL facts', () => {
  const n = { major: 17, oldMajor: 16, keptAs: '/srv/d17.rolled-back' };
  const said = writesSinceOpen({ at: '2026-12-01T10:00:00.000Z', walBytesAtOpen: String(lsnBytes('0/3000000')) }, lsnBytes('0/3100000'), n);
  assert.match(said, /open to clients since 2026-12-01T10:00:00\.000Z \(WAL at open 0\/3000000, now 0\/3100000: 1048576 bytes written since\)/);
  assert.match(said, /writes made on it since it opened are NOT in the old 16 cluster/);
  assert.match(said, /moved aside to \/srv\/d17\.rolled-back-<time> \(0700\), not deleted/);
  assert.match(writesSinceOpen({ at: 'T' }, 5n, n), /WAL position at open not recorded; now 0\/5\)/);
  assert.match(writesSinceOpen({ at: 'T', walBytesAtOpen: '5' }, undefined, n), /WAL position at open 0\/5; the current one could not be read/);
});

test('restartConfigCheck: a start that would find no postgresql.conf is refused in the plan, naming why', () => {
  const plain = { ...old, configFile: null, configDir: null };
  assert.equal(restartConfigFile(plain), '/srv/pg16/postgresql.conf');
  assert.equal(restartConfigFile(old), '/etc/pg/16/postgresql.conf');
  const fromConfDir = { ...old, configFile: '/etc/pg16/postgresql.conf', configDir: '/etc/pg16' };
  assert.equal(restartConfigFile(fromConfDir), '/etc/pg16/postgresql.conf');
  assert.equal(restartConfigCheck(fromConfDir, restartConfigFile(fromConfDir), true).passed, true);
  assert.match(restartConfigCheck(fromConfDir, restartConfigFile(fromConfDir), true).detail, /-D \/etc\/pg16, its configuration directory/);
  const missing = restartConfigCheck(plain, restartConfigFile(plain), false);
  assert.equal(missing.passed, false);
  assert.equal(missing.severity, 'error');
  assert.match(missing.detail, /-D \/srv\/pg16\) would find no \/srv\/pg16\/postgresql\.conf: pg_upgrade and a rollback would fail during downtime/);
  assert.match(missing.fix ?? '', /absolute -D/);
});
