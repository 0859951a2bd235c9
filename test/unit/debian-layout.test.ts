import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCatalog } from '../../src/gucCatalog/index.js';
import { readLastThroughIncludeDir } from '../../src/tune/edits.js';
import { migrateConfig } from '../../src/upgrade/configMigration.js';
import {
  layoutValue,
  manualStartConf,
  portHandOverBlocker,
  newClusterPaths,
  nextFreePort,
  startMode,
  withPort,
  type DebianUpgrade,
} from '../../src/upgrade/debianLayout.js';

test("the new cluster keeps the old one's name in the new version's directories", () => {
  assert.deepEqual(newClusterPaths('main', 17), { confDir: '/etc/postgresql/17/main', dataDir: '/var/lib/postgresql/17/main' });
  assert.deepEqual(newClusterPaths('reports', 18, { conf: '/x/etc', data: '/x/data' }), { confDir: '/x/etc/18/reports', dataDir: '/x/data/18/reports' });
});

test('the old cluster moves to the lowest port from 5432 up that nothing takes', () => {
  assert.equal(nextFreePort(new Set([5432])), 5433);
  assert.equal(nextFreePort(new Set([5432, 5433, 5435])), 5434);
  assert.equal(nextFreePort(new Set([6000])), 5432);
  assert.equal(nextFreePort(new Set([7000, 7001]), 7000), 7002);
  assert.throws(() => nextFreePort(new Set([65535]), 65535), /no free port/);
});

test("port: the last active line is rewritten, else one is appended; others' bytes stay", () => {
  const conf = "listen_addresses = 'localhost'\nport = 5432\t\t\t\t# (change requires restart)\n#port = 1\nmax_connections = 100\n";
  const moved = withPort(conf, '/etc/postgresql/16/main/postgresql.conf', 5433, 'moved');
  assert.equal(moved, "listen_addresses = 'localhost'\nport = 5433\t\t# moved\n#port = 1\nmax_connections = 100\n");
  assert.equal(withPort('port = 1\nport = 2\n', 'f', 9, 'c'), 'port = 1\nport = 9\t\t# c\n', 'the line that wins is the one changed');
  assert.equal(withPort('work_mem = 4MB', 'f', 5433, 'c'), 'work_mem = 4MB\nport = 5433\t\t# c\n');
  // applied to the original again: the same bytes (a resumed run repeats it harmlessly)
  assert.equal(withPort(conf, 'f', 5433, 'moved'), moved);
});

test('start.conf: the mode becomes manual, the comments stay; absent means auto', () => {
  const original = '# Automatic startup configuration\n#   auto: automatically start the cluster\n\nauto\n';
  assert.equal(manualStartConf(original), '# Automatic startup configuration\n#   auto: automatically start the cluster\n\nmanual\n');
  assert.equal(startMode(manualStartConf(original)), 'manual');
  assert.equal(startMode(original), 'auto');
  assert.equal(startMode(undefined), 'auto');
  assert.equal(manualStartConf(''), 'manual\n');
  assert.equal(manualStartConf('# only comments'), '# only comments\nmanual\n');
});

const d: DebianUpgrade = {
  cluster: 'main',
  oldVersion: 16,
  newVersion: 17,
  oldConfDir: '/etc/postgresql/16/main',
  newConfDir: '/etc/postgresql/17/main',
  port: 5432,
  oldClusterPort: 5433,
};

test("settings the layout names follow the new version; the port is always the old cluster's", () => {
  assert.equal(layoutValue(d, 'cluster_name', '16/main'), '17/main');
  assert.equal(layoutValue(d, 'cluster_name', 'billing'), undefined, "a DBA's own name stays");
  assert.equal(layoutValue(d, 'external_pid_file', '/var/run/postgresql/16-main.pid'), '/var/run/postgresql/17-main.pid');
  assert.equal(layoutValue(d, 'external_pid_file', '/run/postgresql/16-main.pid'), '/run/postgresql/17-main.pid');
  assert.equal(layoutValue(d, 'external_pid_file', '/srv/16-main.pid'), undefined);
  assert.equal(layoutValue(d, 'port', '5433'), '5432', 'even after the old cluster moved');
  assert.equal(layoutValue(d, 'work_mem', '4MB'), undefined);
});

test('a postgresql-common cluster: paths into /etc/postgresql/17/main, the layout files carried, the same result before and after the port moves', () => {
  const root = mkdtempSync(join(tmpdir(), 'pgscale-debian-migrate-'));
  try {
    const oldConf = join(root, 'etc', '16', 'main');
    const newConf = join(root, 'etc', '17', 'main');
    const oldData = join(root, 'lib', '16', 'main');
    const newData = join(root, 'lib', '17', 'main');
    mkdirSync(join(oldConf, 'conf.d'), { recursive: true });
    mkdirSync(oldData, { recursive: true });
    const conf = (port: number) =>
      [
        `data_directory = '${oldData}'`,
        `hba_file = '${oldConf}/pg_hba.conf'`,
        `ident_file = '${oldConf}/pg_ident.conf'`,
        "external_pid_file = '/var/run/postgresql/16-main.pid'",
        `port = ${port}\t\t\t\t# (change requires restart)`,
        "unix_socket_directories = '/var/run/postgresql'",
        "cluster_name = '16/main'",
        "include_dir = 'conf.d'",
        '',
      ].join('\n');
    writeFileSync(join(oldConf, 'postgresql.conf'), conf(5432));
    writeFileSync(join(oldConf, 'conf.d', 'memory.conf'), 'work_mem = 8MB\n');
    writeFileSync(join(oldConf, 'pg_hba.conf'), 'local all all peer\n');
    writeFileSync(join(oldConf, 'pg_ident.conf'), '');
    writeFileSync(join(oldConf, 'start.conf'), 'auto\n');
    writeFileSync(join(oldConf, 'pg_ctl.conf'), "pg_ctl_options = ''\n");
    writeFileSync(join(oldConf, 'environment'), '');
    const input = {
      oldConfigDir: oldConf,
      newConfigDir: newConf,
      oldDataDir: oldData,
      newDataDir: newData,
      oldCatalog: loadCatalog(16),
      newCatalog: loadCatalog(17),
      walSegmentBytes: 16 * 1024 * 1024,
      debian: { ...d, oldConfDir: oldConf, newConfDir: newConf },
    };
    const m = migrateConfig(input);
    const to = new Map(m.files.map((f) => [f.to, f]));
    assert.deepEqual([...to.keys()].map((p) => p.slice(newConf.length + 1)).sort(), [
      'conf.d/memory.conf',
      'environment',
      'pg_ctl.conf',
      'pg_hba.conf',
      'pg_ident.conf',
      'postgresql.conf',
      'start.conf',
    ]);
    const main = to.get(join(newConf, 'postgresql.conf'))!.after;
    assert.match(main, new RegExp(`^data_directory = '${newData}'\t`, 'm'));
    assert.match(main, new RegExp(`^hba_file = '${newConf}/pg_hba.conf'\t`, 'm'));
    assert.match(main, new RegExp(`^ident_file = '${newConf}/pg_ident.conf'\t`, 'm'));
    assert.match(main, /^external_pid_file = '\/var\/run\/postgresql\/17-main\.pid'\t/m);
    assert.match(main, /^cluster_name = '17\/main'\t/m);
    assert.match(main, /^port = 5432\t# pgscale: the port of 16\/main, which moves to another$/m);
    assert.match(main, /^unix_socket_directories = '\/var\/run\/postgresql'$/m, 'the socket directory is the layout');
    assert.equal(to.get(join(newConf, 'start.conf'))!.after, 'auto\n', 'start.conf as the old cluster had it');
    // the old cluster moves to 5433 mid-run: what the new cluster gets does not change (a resumed run verifies it)
    writeFileSync(join(oldConf, 'postgresql.conf'), conf(5433));
    assert.equal(migrateConfig(input).files.find((f) => f.to === join(newConf, 'postgresql.conf'))!.after, main);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("tune: postgresql-common's include_dir = 'conf.d' at the end reads conf.d/pgscale.conf last, unless a file sorts after it", () => {
  const file = '/etc/postgresql/16/main/postgresql.conf';
  const dir = '/etc/postgresql/16/main/conf.d';
  const debian = "port = 5432\n# Add settings for extensions here\ninclude_dir = 'conf.d'\t\t\t# include files ending in '.conf' from\n";
  assert.equal(readLastThroughIncludeDir(file, debian, dir, 'pgscale.conf', []), true);
  assert.equal(readLastThroughIncludeDir(file, debian, dir, 'pgscale.conf', ['50-app.conf', 'pgscale.conf', 'README', '.zz.conf']), true);
  assert.equal(readLastThroughIncludeDir(file, debian, dir, 'pgscale.conf', ['zz-override.conf']), false, 'zz-override.conf would win');
  assert.equal(readLastThroughIncludeDir(file, `${debian}work_mem = 8MB\n`, dir, 'pgscale.conf', []), false, 'a setting after the include_dir would win');
  assert.equal(readLastThroughIncludeDir(file, "include_dir = 'other.d'\n", dir, 'pgscale.conf', []), false);
  assert.equal(readLastThroughIncludeDir(file, `include_dir = '${dir}'\n`, dir, 'pgscale.conf', []), true, 'an absolute include_dir too');
});

test('the port hand-over refuses a port that postgresql.conf does not decide', () => {
  assert.equal(portHandOverBlocker({ portOrigin: 'configuration', autoConfPort: undefined }), undefined);
  assert.equal(portHandOverBlocker({ portOrigin: 'default', autoConfPort: undefined }), undefined);
  assert.match(portHandOverBlocker({ portOrigin: 'configuration', autoConfPort: '5433' }) ?? '', /ALTER SYSTEM RESET port/);
  assert.match(portHandOverBlocker({ portOrigin: 'command line', autoConfPort: undefined }) ?? '', /command line/);
  assert.match(portHandOverBlocker({ portOrigin: 'environment (PGPORT)', autoConfPort: undefined }) ?? '', /environment/);
});
