import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lastValues, parseConfigText, readConfigTree } from '../../src/config/parse.js';
import { parseControlData } from '../../src/cluster/controlData.js';
import { parsePostmasterPid } from '../../src/cluster/postmasterPid.js';
import { parsePostgresVersion } from '../../src/cluster/installations.js';
import { ExitCode, PgscaleError } from '../../src/errors.js';
import { redact } from '../../src/audit.js';
import { formatBytes } from '../../src/format.js';
import { resolveConnection, libpqEnvironment } from '../../src/connection.js';

test('postgresql.conf syntax: both forms, quotes, escapes, comments', () => {
  const lines = parseConfigText(
    [
      'shared_buffers = 128MB   # comment',
      'work_mem 4MB',
      'search_path = \'"$user", public\'',
      "log_line_prefix = '%m [%p] it''s\\tok '",
      '  # indented comment',
      'Port=5433',
    ].join('\n'),
    'x.conf',
  );
  assert.deepEqual(
    lines.map((l) => [l.name, l.value, l.line]),
    [
      ['shared_buffers', '128MB', 1],
      ['work_mem', '4MB', 2],
      ['search_path', '"$user", public', 3],
      ['log_line_prefix', "%m [%p] it's\tok ", 4],
      ['port', '5433', 6],
    ],
  );
});

test('postgresql.conf syntax errors name the file and line', () => {
  for (const [text, line] of [
    ["a = 'open", 1],
    ['ok = 1\n= 3', 2],
    ['x = 1 2', 1],
  ] as const) {
    assert.throws(
      () => parseConfigText(text, '/etc/pg.conf'),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.BadInput && e.message.includes(`/etc/pg.conf line ${line}`),
    );
  }
});

test('include, include_if_exists and include_dir are followed in server order', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgscale-conf-'));
  try {
    mkdirSync(join(dir, 'conf.d'));
    writeFileSync(
      join(dir, 'postgresql.conf'),
      "work_mem = 1MB\ninclude 'extra.conf'\ninclude_if_exists 'missing.conf'\ninclude_dir 'conf.d'\nmax_connections = 50\n",
    );
    writeFileSync(join(dir, 'extra.conf'), 'work_mem = 2MB\nport = 6000\n');
    writeFileSync(join(dir, 'conf.d', '10-a.conf'), 'port = 6001\n');
    writeFileSync(join(dir, 'conf.d', '20-b.conf'), 'port = 6002\n');
    writeFileSync(join(dir, 'conf.d', '.hidden.conf'), 'port = 1\n');
    writeFileSync(join(dir, 'conf.d', 'notes.txt'), 'port = 2\n');
    const last = lastValues(readConfigTree(join(dir, 'postgresql.conf')));
    assert.equal(last.get('work_mem')?.value, '2MB');
    assert.equal(last.get('port')?.value, '6002');
    assert.equal(last.get('port')?.file, join(dir, 'conf.d', '20-b.conf'));
    assert.equal(last.get('max_connections')?.line, 5);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pg_controldata output', () => {
  const cd = parseControlData(`pg_control version number:            1700
Catalog version number:               202406281
Database system identifier:           7440000000000000001
Database cluster state:               shut down
Latest checkpoint location:           0/1A2B3C4
Latest checkpoint's TimeLineID:       1
wal_level setting:                    replica
Database block size:                  8192
Bytes per WAL segment:                16777216
Data page checksum version:           1
`);
  assert.equal(cd.systemIdentifier, '7440000000000000001');
  assert.equal(cd.state, 'shut down');
  assert.equal(cd.checksumVersion, 1);
  assert.equal(cd.walSegmentBytes, 16777216);
  assert.throws(() => parseControlData('garbage'), /pg_control version number/);
});

test('postmaster.pid', () => {
  const p = parsePostmasterPid('4242\n/var/lib/postgresql/16/main\n1700000000\n5433\n/tmp/sock\n*\n  1234  5678\nready   \n');
  assert.equal(p?.pid, 4242);
  assert.equal(p?.port, 5433);
  assert.equal(p?.socketDir, '/tmp/sock');
  assert.equal(p?.status, 'ready');
  assert.equal(p?.startedAt?.getTime(), 1700000000 * 1000);
  assert.equal(parsePostmasterPid(''), undefined);
  assert.equal(parsePostmasterPid('-3\n'), undefined);
});

test('postgres -V output', () => {
  assert.deepEqual(parsePostgresVersion('postgres (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)\n'), { major: 17, version: '17.12 (Debian 17.12-0+deb13u1)' });
  assert.deepEqual(parsePostgresVersion('postgres (PostgreSQL) 16.14\n'), { major: 16, version: '16.14' });
  assert.equal(parsePostgresVersion('bash: nope'), undefined);
});

test('passwords never survive redaction', () => {
  assert.equal(redact('host=x password=s3cret user=u'), 'host=x password=*** user=u');
  assert.equal(redact("password = 'a b'"), 'password = ***');
  assert.equal(redact('postgresql://bob:hunter2@db:5432/app'), 'postgresql://bob:***@db:5432/app');
});

test('connection settings follow libpq precedence: DSN over environment', () => {
  const c = resolveConnection('postgresql://alice@db.example:6543/app', { PGHOST: 'other', PGPORT: '5000', PGUSER: 'bob', PGPASSFILE: '/p/.pgpass' });
  assert.deepEqual(c, { host: 'db.example', port: 6543, user: 'alice', database: 'app', passfile: '/p/.pgpass' });
  assert.deepEqual(libpqEnvironment(c), { PGHOST: 'db.example', PGPORT: '6543', PGUSER: 'alice', PGDATABASE: 'app', PGPASSFILE: '/p/.pgpass' });
  assert.throws(
    () => resolveConnection(undefined, { PGPORT: 'abc' }),
    (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.BadInput,
  );
});

test('PGSERVICE entries come from the service file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgscale-svc-'));
  try {
    writeFileSync(join(dir, 'svc.conf'), '[other]\nhost=h0\n[prod]\nhost=db1\nport=5444\ndbname=app\n');
    const c = resolveConnection(undefined, { PGSERVICE: 'prod', PGSERVICEFILE: join(dir, 'svc.conf'), PGSYSCONFDIR: dir });
    assert.deepEqual(c, { host: 'db1', port: 5444, database: 'app', service: 'prod' });
    assert.throws(
      () => resolveConnection(undefined, { PGSERVICE: 'nope', PGSERVICEFILE: join(dir, 'svc.conf'), PGSYSCONFDIR: dir }),
      /service "nope" not found/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('formatBytes: the one size format detect and tune print, three significant digits with a space', () => {
  const GiB = 1024 ** 3;
  assert.equal(formatBytes(23.5 * GiB), '23.5 GB', 'not "24 GB" (detect before) nor "23.5GB" (tune before)');
  assert.equal(formatBytes(8 * GiB), '8.0 GB');
  assert.equal(formatBytes(512 * 1024 ** 2), '512 MB');
  assert.equal(formatBytes(16 * 1024 ** 2), '16 MB');
  assert.equal(formatBytes(4.9 * 1024), '4.9 kB');
  assert.equal(formatBytes(100), '100 B');
});
