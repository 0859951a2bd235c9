import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ZxRunner } from '../../src/runner.js';
import {
  dataDirArg,
  describeListening,
  gatherIdentity,
  judgeListening,
  managerFor,
  onePerSetting,
  optionValue,
  PostgresServer,
  parsePostmasterOpts,
  pgCtlOptionString,
  startOptions,
  withoutDataDir,
  type ServerIdentity,
} from '../../src/server/postgres.js';

test('postmaster.opts: quoted arguments, -D removed in every spelling', () => {
  const argv = parsePostmasterOpts('/usr/lib/postgresql/16/bin/postgres "-D" "/srv/data" "-p" "5433" "-k" "/run/pg sock" "-c" "listen_addresses="\n');
  assert.deepEqual(argv, ['-D', '/srv/data', '-p', '5433', '-k', '/run/pg sock', '-c', 'listen_addresses=']);
  assert.deepEqual(withoutDataDir(argv), ['-p', '5433', '-k', '/run/pg sock', '-c', 'listen_addresses=']);
  assert.deepEqual(withoutDataDir(['-D/x', '--pgdata=/y', '--pgdata', '/z', '-p', '1']), ['-p', '1']);
  // what withoutDataDir removes is what dataDirArg finds: a starting postmaster is known by it
  assert.equal(dataDirArg(argv), '/srv/data');
  assert.equal(dataDirArg(['-D/x', '-p', '1']), '/x');
  assert.equal(dataDirArg(['--pgdata=/y']), '/y');
  assert.equal(dataDirArg(['-p', '5433']), undefined);
});

test('option values: every spelling PostgreSQL accepts, the last one wins', () => {
  const opts = [
    '-p',
    '5433',
    '-c',
    'port=5434',
    '--port=5435',
    '-k',
    '/a',
    '-c',
    'unix_socket_directories=/b,/c',
    '-h',
    '127.0.0.1',
    '-cfsync=off',
    '--config-file=/etc/pg.conf',
  ];
  assert.equal(optionValue(opts, 'port'), '5435');
  assert.equal(optionValue(opts, 'unix_socket_directories'), '/b,/c');
  assert.equal(optionValue(opts, 'listen_addresses'), '127.0.0.1');
  assert.equal(optionValue(opts, 'fsync'), 'off');
  assert.equal(optionValue(opts, 'config_file'), '/etc/pg.conf');
  assert.equal(optionValue(['-i'], 'listen_addresses'), '*');
  assert.equal(optionValue(['-p5440'], 'port'), '5440');
  assert.equal(optionValue([], 'port'), undefined);
});

test('listening: command line over PGPORT over configuration over default, with origins', () => {
  const conf = { port: '5432', unix_socket_directories: "'/var/run/postgresql'", listen_addresses: "'localhost'" };
  const cmd = judgeListening({
    options: ['-p', '5433', '-k', '/run/pg', '-c', 'listen_addresses='],
    env: new Map([['PGPORT', '6000']]),
    configured: conf,
    running: undefined,
  });
  assert.deepEqual(cmd, {
    port: 5433,
    socketDirs: ['/run/pg'],
    listenAddresses: '',
    origins: { port: 'command line', sockets: 'command line', listen: 'command line' },
  });
  const env = judgeListening({ options: [], env: new Map([['PGPORT', '6000']]), configured: {}, running: undefined });
  assert.equal(env.port, 6000);
  assert.equal(env.origins.port, 'environment (PGPORT)');
  assert.deepEqual(env.socketDirs, ['/tmp']);
  assert.equal(env.listenAddresses, 'localhost');
  assert.equal(env.origins.listen, 'default');
  const file = judgeListening({ options: [], env: new Map([['PGPORT', '6000']]), configured: conf, running: undefined });
  assert.deepEqual([file.port, file.origins.port, file.socketDirs[0]], [5432, 'configuration', '/var/run/postgresql']);
  // a running server's postmaster.pid has the effective port
  const live = judgeListening({
    options: [],
    env: new Map(),
    configured: {},
    running: { pid: 1, dataDir: '/d', startedAt: undefined, port: 5999, socketDir: '/s', listenAddress: '*', status: 'ready' },
  });
  assert.equal(live.port, 5999);
});

const identity = (over: Partial<ServerIdentity> = {}): ServerIdentity => ({
  bindir: '/usr/lib/postgresql/17/bin',
  dataDir: '/srv/17',
  configFile: null,
  configDir: null,
  options: ['-p', '5433', '-k', "/run/it's here"],
  port: 5433,
  socketDirs: ["/run/it's here"],
  listenAddresses: '',
  owner: 'postgres',
  log: '/srv/17.log',
  origins: { port: 'command line', sockets: 'command line', listen: 'configuration' },
  manager: { kind: 'pg_ctl' },
  ...over,
});

test('a start repeats the options the server ran with; private starts override them last', () => {
  assert.deepEqual(startOptions(identity()), ['-p', '5433', '-k', "/run/it's here"]);
  const priv = startOptions(identity(), { privateSocketDir: '/tmp/pgscale-x', settings: { port: '7000' } });
  assert.equal(optionValue(priv, 'listen_addresses'), '');
  assert.equal(optionValue(priv, 'unix_socket_directories'), '/tmp/pgscale-x');
  assert.equal(optionValue(priv, 'port'), '7000');
  // PGPORT of the old server's environment becomes explicit; a config outside PGDATA is named
  const env = startOptions(
    identity({
      options: [],
      origins: { port: 'environment (PGPORT)', sockets: 'default', listen: 'default' },
      configFile: '/etc/postgresql/17/main/postgresql.conf',
    }),
  );
  assert.deepEqual(env, ['-p', '5433', '-c', 'config_file=/etc/postgresql/17/main/postgresql.conf']);
});

test('a private start gives each setting once: its override replaces the carried one, whatever its spelling', () => {
  // a server pgscale started privately before: listen_addresses= is already among the options carried
  const carried = identity({ options: ['-p', '5433', '-c', 'listen_addresses=', '-k', '/run/pg', '--listen-addresses=127.0.0.1', '-F', '-c', 'work_mem=8MB'] });
  const priv = startOptions(carried, { privateSocketDir: '/tmp/pgscale-x', settings: { port: '7000' } });
  assert.deepEqual(priv, ['-F', '-c', 'work_mem=8MB', '-c', 'listen_addresses=', '-c', 'unix_socket_directories=/tmp/pgscale-x', '-c', 'port=7000']);
  // the last occurrence is the one PostgreSQL uses, and the one kept, in place
  assert.deepEqual(onePerSetting(['-h', '*', '-i', '-c', 'fsync=off', '-D', '/x', '-cfsync=on', '-k/a']), ['-i', '-D', '/x', '-cfsync=on', '-k/a']);
  assert.deepEqual(startOptions(carried), ['-p', '5433', '-k', '/run/pg', '--listen-addresses=127.0.0.1', '-F', '-c', 'work_mem=8MB']);
});

test('pg_ctl -o: each option quoted for the shell, so hostile values stay one argument', () => {
  const s = pgCtlOptionString(['-k', "/run/it's here", '-c', 'listen_addresses=', '-c', 'x=$(rm -rf /)']);
  assert.equal(s, "-k '/run/it'\\''s here' -c listen_addresses= -c 'x=$(rm -rf /)'");
  // and the shell really splits it back into exactly those arguments
  const back = spawnSync('sh', ['-c', `printf '%s\\n' ${s}`], { encoding: 'utf8' })
    .stdout.split('\n')
    .slice(0, -1);
  assert.deepEqual(back, ['-k', "/run/it's here", '-c', 'listen_addresses=', '-c', 'x=$(rm -rf /)']);
  assert.match(describeListening(identity()), /port 5433 \(command line\), sockets in \/run\/it's here \(command line\), no TCP \(configuration\)/);
});

test('a config in /etc/postgresql/V/NAME of the same major is run by pg_ctlcluster V NAME, when installed', () => {
  const conf = '/etc/postgresql/16/main/postgresql.conf';
  assert.deepEqual(managerFor(conf, 16, true), { kind: 'pg_ctlcluster', version: 16, cluster: 'main' });
  assert.deepEqual(managerFor(conf, 16, false), { kind: 'pg_ctl' }, 'no postgresql-common: pg_ctl');
  assert.deepEqual(managerFor(conf, 17, true), { kind: 'pg_ctl' }, 'a data directory of another major than its config path says');
  assert.deepEqual(managerFor('/etc/postgresql/16/main/other.conf', 16, true), { kind: 'pg_ctl' });
  assert.deepEqual(managerFor('/srv/etc/postgresql/16/main/postgresql.conf', 16, true), { kind: 'pg_ctl' });
  assert.deepEqual(managerFor(null, 16, true), { kind: 'pg_ctl' });
});

test('pg_ctlcluster starts and stops a postgresql-common cluster; a private start is pg_ctl with its config_file', () => {
  const debian = new PostgresServer(
    identity({
      dataDir: '/var/lib/postgresql/17/main',
      configFile: '/etc/postgresql/17/main/postgresql.conf',
      options: ['-c', 'config_file=/etc/postgresql/17/main/postgresql.conf'],
      owner: 'root', // looked up only when pgscale is not root
      manager: { kind: 'pg_ctlcluster', version: 17, cluster: 'main' },
    }),
    new ZxRunner(), // nothing is run: the invocations are only built
  );
  const start = debian.startInvocation();
  assert.deepEqual([start.program, ...start.args], ['/usr/bin/pg_ctlcluster', '17', 'main', 'start'], 'no extra option: systemd keeps the cluster');
  const stop = debian.stopInvocation('fast', 120);
  assert.deepEqual([stop.program, ...stop.args], ['/usr/bin/pg_ctlcluster', '-m', 'fast', '17', 'main', 'stop']);
  const tuned = debian.startInvocation({ settings: { shared_buffers: '1GB' } });
  assert.deepEqual(tuned.args, ['-o', '-c shared_buffers=1GB', '17', 'main', 'start']);
  const priv = debian.startInvocation({ privateSocketDir: '/tmp/pgscale-x' });
  assert.equal(priv.program, '/usr/lib/postgresql/17/bin/pg_ctl');
  assert.equal(priv.args[0], 'start');
  const o = priv.args[priv.args.indexOf('-o') + 1]!;
  assert.match(o, /config_file=\/etc\/postgresql\/17\/main\/postgresql\.conf/);
  assert.match(o, /unix_socket_directories=\/tmp\/pgscale-x/);
});

test('a server started with -D CONFDIR (postgresql.conf there sets data_directory): its identity carries CONFDIR and starts it so again', () => {
  const root = mkdtempSync(join(tmpdir(), 'pgscale-confdir-'));
  try {
    const data = join(root, 'd16');
    const conf = join(root, 'conf');
    mkdirSync(data);
    mkdirSync(conf);
    writeFileSync(join(conf, 'postgresql.conf'), `data_directory = '${data}'\n`);
    // what pg_ctl -D CONFDIR leaves: postmaster.opts in the data directory names CONFDIR
    writeFileSync(join(data, 'postmaster.opts'), `/usr/lib/postgresql/16/bin/postgres "-D" "${conf}" "-p" "5433"\n`);
    const input = { dataDir: data, bindir: '/usr/lib/postgresql/16/bin', owner: 'root', configured: {}, configFile: null, log: join(root, 'log') };
    const id = gatherIdentity(input);
    assert.equal(id.configDir, conf);
    assert.equal(id.configFile, join(conf, 'postgresql.conf'));
    assert.deepEqual(id.options, ['-p', '5433']);
    const start = new PostgresServer(id, new ZxRunner()).startInvocation();
    assert.deepEqual(start.args.slice(0, 2), ['start', '-D']);
    assert.equal(start.args[2], conf, 'started with -D CONFDIR, as it ran');
    assert.deepEqual(startOptions(id), ['-p', '5433'], 'no config_file added: CONFDIR names it');
    assert.deepEqual(new PostgresServer(id, new ZxRunner()).stopInvocation().args.slice(0, 3), ['stop', '-D', data], 'stopped through the pid file in PGDATA');
    // -D naming the data directory itself, or a directory without postgresql.conf: no configuration directory
    writeFileSync(join(data, 'postmaster.opts'), `/usr/lib/postgresql/16/bin/postgres "-D" "${data}"\n`);
    assert.equal(gatherIdentity(input).configDir, null);
    rmSync(join(conf, 'postgresql.conf'));
    writeFileSync(join(data, 'postmaster.opts'), `/usr/lib/postgresql/16/bin/postgres "-D" "${conf}"\n`);
    assert.equal(gatherIdentity(input).configDir, null);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
