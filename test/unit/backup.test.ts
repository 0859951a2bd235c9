/** The pure parts of backups: which databases a method can hold, job shares, scheduling, compression flags, tablespace relocation. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { baseBackupCompression, exactPattern, jobShares, pgDumpCompression, runWeighted } from '../../src/backup/methods.js';
import {
  errorLines,
  failedStatements,
  isExpectedFailure,
  judgeRestoreClient,
  judgeRestoreVersion,
  notBackedUp,
  TablespaceRelocation,
} from '../../src/backup/restore.js';
import { describeSize, heldSize, toolFits, toolNeed, type BackupManifest, type DatabaseEntry } from '../../src/backup/archive.js';
import { ExitCode } from '../../src/errors.js';
import { backupTimes, compareRowCounts, judgeBaseBackup, judgeDatabases, netmaskBits, type BaseBackupFacts } from '../../src/backup/steps.js';
import type { HbaRuleRow } from '../../src/sql.js';

const dbs = [
  { name: 'app', allow_connections: true },
  { name: 'closed', allow_connections: false },
  { name: 'we"ird', allow_connections: false },
];

test('a logical backup refuses databases that refuse connections, with the fix; excluded by name they pass', () => {
  const [c] = judgeDatabases('dumpall', dbs, []);
  assert.equal(c?.passed, false);
  assert.match(c.detail, /"closed", "we\\"ird" refuse connections \(datallowconn = false\)/);
  assert.equal(
    c.fix,
    `allow connections (ALTER DATABASE "closed" ALLOW_CONNECTIONS true; ALTER DATABASE "we""ird" ALLOW_CONNECTIONS true), or leave them out by name: --exclude-database closed --exclude-database 'we"ird'`,
  );
  // a backup that cannot leave databases out (the one an upgrade takes) offers only the fix that works there
  assert.equal(
    judgeDatabases('dumpall', dbs, undefined)[0]!.fix,
    `allow connections (ALTER DATABASE "closed" ALLOW_CONNECTIONS true; ALTER DATABASE "we""ird" ALLOW_CONNECTIONS true)`,
  );
  assert.deepEqual(
    judgeDatabases('parallel', dbs, ['closed', 'we"ird']).map((r) => r.passed),
    [true],
  );
  assert.match(judgeDatabases('parallel', dbs, ['closed', 'we"ird'])[0]!.detail, /1 databases will be dumped; left out by name: "closed", "we\\"ird"/);
  assert.deepEqual(
    judgeDatabases('physical', dbs, []).map((r) => [r.name, r.passed]),
    [['every database backed up', true]],
  );
  const typo = judgeDatabases('dumpall', dbs, ['closd', 'closed', 'we"ird']);
  assert.deepEqual(
    typo.map((r) => [r.name, r.passed]),
    [
      ['excluded databases exist', false],
      ['every database backed up', true],
    ],
  );
});

test('pg_dumpall patterns match one name exactly', () => {
  assert.equal(exactPattern('a*b'), '"a*b"');
  assert.equal(exactPattern('we"ird'), '"we""ird"');
});

test('compression flags follow what each client version supports', () => {
  assert.equal(pgDumpCompression(17, { compressor: 'zstd', level: 3 }), 'zstd:3');
  assert.equal(pgDumpCompression(16, { compressor: 'gzip', level: 12 }), 'gzip:9');
  assert.equal(pgDumpCompression(15, { compressor: 'zstd', level: 3 }), '3');
  assert.equal(baseBackupCompression(17, 16, { compressor: 'zstd', level: 3 }), 'server-zstd:3');
  assert.equal(baseBackupCompression(17, 14, { compressor: 'zstd', level: 3 }), 'client-gzip:3');
});

test('job shares are proportional to size, at least one, at most the budget', () => {
  assert.deepEqual(jobShares([{ bytes: 900 }, { bytes: 50 }, { bytes: 50 }], 8), [7, 1, 1]);
  assert.deepEqual(jobShares([{ bytes: 0 }], 4), [1]);
  assert.deepEqual(jobShares([{ bytes: 10 }, { bytes: 10 }], 1), [1, 1]);
});

test('runWeighted never exceeds its capacity, and stops starting tasks after a failure', async () => {
  let running = 0;
  let peak = 0;
  const started: number[] = [];
  const task = (i: number, weight: number, fail = false) => ({
    weight,
    run: async () => {
      started.push(i);
      running += weight;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 20));
      running -= weight;
      if (fail) throw new Error(`task ${i} failed`);
    },
  });
  await runWeighted(3, [task(0, 2), task(1, 1), task(2, 2), task(3, 1)], new AbortController().signal);
  assert.equal(peak, 3);
  assert.deepEqual(started.sort(), [0, 1, 2, 3]);
  started.length = 0;
  await assert.rejects(runWeighted(1, [task(0, 1, true), task(1, 1), task(2, 1)], new AbortController().signal), /task 0 failed/);
  assert.deepEqual(started, [0]);
});

test('row counts: every difference named', () => {
  assert.deepEqual(compareRowCounts({ a: { 'public.t': 3, 'public.u': 1 } }, { a: { 'public.t': 3 } }), {
    missing: ['a.public.u: 1 rows in the source, missing from the restore'],
    differing: [],
  });
  assert.deepEqual(compareRowCounts({ a: { 'public.t': 3 } }, { a: { 'public.t': 3 } }), { missing: [], differing: [] });
  // written while the backup ran: reported, not a failure
  assert.deepEqual(compareRowCounts({ a: { 'public.t': 47 } }, { a: { 'public.t': 46 } }), {
    missing: [],
    differing: ['a.public.t: 47 rows counted after the dump, 46 restored'],
  });
});

test('tablespace relocation rewrites CREATE TABLESPACE before the first \\connect only', async () => {
  const dump = [
    'CREATE ROLE app;',
    "CREATE TABLESPACE cold OWNER postgres LOCATION '/srv/o''brien/cold';",
    'CREATE TABLESPACE "we ird" OWNER postgres LOCATION E\'/srv/back\\\\slash\';',
    "CREATE TABLESPACE other OWNER postgres LOCATION '/elsewhere';",
    '\\connect app',
    "CREATE TABLESPACE cold OWNER postgres LOCATION '/srv/o''brien/cold';",
    '',
  ].join('\n');
  const t = new TablespaceRelocation(
    new Map([
      ["/srv/o'brien/cold", "/new/it's"],
      ['/srv/back\\slash', '/new/b'],
    ]),
  );
  // one byte at a time: lines split across chunks are rewritten all the same
  const chunks: Buffer[] = [];
  for await (const c of Readable.from([...Buffer.from(dump)].map((b) => Buffer.from([b]))).pipe(t)) chunks.push(c as Buffer);
  assert.equal(
    Buffer.concat(chunks).toString(),
    [
      'CREATE ROLE app;',
      "CREATE TABLESPACE cold OWNER postgres LOCATION '/new/it''s';",
      'CREATE TABLESPACE "we ird" OWNER postgres LOCATION \'/new/b\';',
      "CREATE TABLESPACE other OWNER postgres LOCATION '/elsewhere';",
      '\\connect app',
      "CREATE TABLESPACE cold OWNER postgres LOCATION '/srv/o''brien/cold';",
      '',
    ].join('\n'),
  );
});

test('expected backup and restore times for the upgrade plan: every method, in seconds, from sizes and rates', () => {
  const times = backupTimes(10e9, 8);
  assert.deepEqual(
    times.map((t) => t.method),
    ['dumpall', 'parallel', 'physical'],
  );
  for (const t of times) assert.ok(t.backupSeconds > 0 && t.restoreSeconds > 0);
  assert.ok(times[1]!.backupSeconds < times[0]!.backupSeconds, 'parallel beats one stream with 8 jobs');
  assert.ok(times[2]!.restoreSeconds < times[0]!.restoreSeconds, 'a physical copy restores fastest');
});

test('restore versions: a logical dump into its own or a newer major only, a physical copy into its own major only; both versions and a hint named', () => {
  const v17 = { major: 17, version: '17.6' };
  for (const method of ['dumpall', 'parallel'] as const) {
    assert.equal(judgeRestoreVersion(method, v17, { major: 17, version: '17.2', what: 'x' }).passed, true);
    assert.equal(judgeRestoreVersion(method, v17, { major: 18, version: '18.1', what: 'x' }).passed, true);
    const older = judgeRestoreVersion(method, v17, { major: 16, version: '16.10', what: 'postgres -V of /opt/16/bin' });
    assert.equal(older.passed, false);
    assert.equal(
      older.detail,
      `a ${method} backup of PostgreSQL 17.6 cannot be restored into PostgreSQL 16.10 (postgres -V of /opt/16/bin): a logical dump restores into the same or a newer major version only (into an older one, statements fail)`,
    );
    assert.match(older.fix ?? '', /PostgreSQL 17 or newer/);
  }
  assert.equal(judgeRestoreVersion('physical', v17, { major: 17, version: '17.0', what: 'x' }).passed, true);
  for (const major of [16, 18]) {
    const other = judgeRestoreVersion('physical', v17, { major, version: `${major}.1`, what: 'x' });
    assert.equal(other.passed, false);
    assert.match(other.detail, new RegExp(`PostgreSQL 17\\.6 cannot be restored into PostgreSQL ${major}\\.1 .*same major version only`));
    assert.match(other.fix ?? '', /PostgreSQL 17 \(--bindir of a 17 installation\)/);
  }
});

test('pg_restore must be as new as the pg_dump that wrote the dump', () => {
  const dumped = { major: 17, version: '17.6' };
  assert.equal(judgeRestoreClient('pg_restore', dumped, { major: 18, version: '18.1', path: '/b/pg_restore' }).passed, true);
  const old = judgeRestoreClient('pg_restore', dumped, { major: 16, version: '16.10', path: '/b16/pg_restore' });
  assert.equal(old.passed, false);
  assert.equal(old.detail, '/b16/pg_restore 16.10 cannot read a dump written by pg_dump 17.6');
  assert.equal(judgeRestoreClient('pg_restore', dumped, undefined).passed, false);
});

test('failed statements fail the restore: the count, the first three error lines, never a "Command was:" line or a password', () => {
  assert.equal(failedStatements([]), undefined);
  const stderr = [
    'pg_restore: while PROCESSING TOC:',
    'pg_restore: from TOC entry 2; 3079 16385 EXTENSION adminpack (no owner)',
    'pg_restore: error: could not execute query: ERROR:  extension "adminpack" is not available',
    "Command was: CREATE ROLE app PASSWORD 'error: s3cret';",
    'psql:<stdin>:12: ERROR:  role "app" already exists',
    'psql:<stdin>:13: ERROR:  syntax error at or near "x" password = \'hunter2\'',
    'psql:<stdin>:14: ERROR:  relation "t" already exists',
    'pg_restore: warning: errors ignored on restore: 4',
  ].join('\n');
  const lines = errorLines(stderr);
  assert.equal(lines.length, 4);
  const e = failedStatements(lines)!;
  assert.equal(e.exitCode, ExitCode.FailedAfterChange);
  assert.match(
    e.message,
    /^the restore reported 4 failed statements \(the first 3\):\n {2}pg_restore: error: could not execute query: ERROR: {2}extension "adminpack"/,
  );
  assert.doesNotMatch(e.message, /Command was|s3cret|hunter2|relation "t"/);
  assert.match(e.message, /password = \*\*\*/);
  assert.ok(e.hint);
});

test('backup verify: which pg_restore or pg_verifybackup reads a backup', () => {
  const m = (method: 'parallel' | 'physical', server: number, client: string) =>
    ({ method, serverVersionNum: server * 10000 + 2, pgDumpallVersion: client }) as BackupManifest;
  // pg_restore at least as new as the pg_dump that wrote it (which may be newer than the server)
  assert.deepEqual(
    [16, 17, 18].map((v) => toolFits(m('parallel', 16, '17.6'), v)),
    [false, true, true],
  );
  assert.equal(toolNeed(m('parallel', 16, '17.6')), 'pg_restore of PostgreSQL 17 or later');
  // pg_verifybackup of the server's major; from 18 on, any later one
  assert.deepEqual(
    [16, 17, 18].map((v) => toolFits(m('physical', 17, '17.6'), v)),
    [false, true, false],
  );
  assert.deepEqual(
    [18, 19].map((v) => toolFits(m('physical', 18, '18.1'), v)),
    [true, true],
  );
  assert.equal(toolNeed(m('physical', 17, '17.6')), 'pg_verifybackup of PostgreSQL 17');
  // a manifest that records every program: pg_restore is judged by pg_dump's version, not pg_dumpall's
  const both = {
    ...m('parallel', 16, '16.4'),
    programs: [
      { program: 'pg_dumpall', path: '/a/pg_dumpall', resolvedPath: '/a/pg_dumpall', version: '16.4' },
      { program: 'pg_dump', path: '/a/pg_dump', resolvedPath: '/b/pg_dump', version: '17.6' },
    ],
  } as BackupManifest;
  assert.deepEqual(
    [16, 17].map((v) => toolFits(both, v)),
    [false, true],
  );
  assert.equal(toolNeed(both), 'pg_restore of PostgreSQL 17 or later');
});

const hba = (line: number, type: string, database: string, user: string, address: string | null, netmask: string | null, auth: string): HbaRuleRow => ({
  line_number: line,
  type,
  database: [database],
  user_name: [user],
  address,
  netmask,
  auth_method: auth,
  error: null,
});
const socketRules = [hba(1, 'local', 'all', 'all', null, null, 'peer'), hba(2, 'local', 'replication', 'all', null, null, 'peer')];
const facts = (f: Partial<BaseBackupFacts> = {}): BaseBackupFacts => ({
  maxWalSenders: 10,
  sendersInUse: 0,
  role: 'postgres',
  superuser: true,
  replication: true,
  clientAddress: null,
  hbaRules: socketRules,
  ...f,
});
const verdicts = (f: BaseBackupFacts) => judgeBaseBackup(f).map((c) => [c.name, c.passed]);

test('a physical backup: two free walsenders, a role that may replicate, a pg_hba rule for the way pgscale connects', () => {
  assert.deepEqual(verdicts(facts()), [
    ['max_wal_senders', true],
    ['replication role', true],
    ['pg_hba allows replication', true],
  ]);
  assert.match(
    judgeBaseBackup(facts())[2]!.detail,
    /^line 2 of pg_hba.conf \(local peer\) applies to a replication connection of postgres over the Unix socket/,
  );
  // pg_basebackup -X stream holds two: one in use of 2 leaves too few
  for (const [max, used, ok] of [
    [4, 2, true],
    [4, 3, false],
    [2, 1, false],
    [0, 0, false],
  ] as const) {
    const c = judgeBaseBackup(facts({ maxWalSenders: max, sendersInUse: used }))[0]!;
    assert.equal(c.passed, ok, `${used} of ${max}`);
  }
  const full = judgeBaseBackup(facts({ maxWalSenders: 4, sendersInUse: 4 }))[0]!;
  assert.equal(full.detail, '4 of 4 walsenders in use: pg_basebackup -X stream needs 2 free (one sends the files, one streams the WAL), none is');
  assert.match(full.fix!, /^raise max_wal_senders to at least 6 \(a restart\)/);

  const plain = judgeBaseBackup(facts({ role: 'app"x', superuser: false, replication: false }))[1]!;
  assert.equal(plain.passed, false);
  assert.equal(plain.fix, 'ALTER ROLE "app""x" REPLICATION (as a superuser), or connect as a role that has it');
  assert.equal(judgeBaseBackup(facts({ superuser: false, replication: true }))[1]!.passed, true);

  // "all" does not cover replication; nothing else matches the socket
  const none = judgeBaseBackup(facts({ hbaRules: [socketRules[0]!, hba(3, 'host', 'replication', 'all', '127.0.0.1', '255.255.255.255', 'trust')] }))[2]!;
  assert.equal(none.passed, false);
  assert.match(none.detail, /no pg_hba.conf line lets postgres make a replication connection over the Unix socket/);
  assert.equal(none.fix, 'add "local replication postgres peer" to pg_hba.conf and reload');
  // the first rule that applies decides: a reject before an allow refuses
  const rejected = judgeBaseBackup(facts({ hbaRules: [hba(1, 'local', 'replication', 'postgres', null, null, 'reject'), socketRules[1]!] }))[2]!;
  assert.equal(rejected.passed, false);
  assert.match(rejected.detail, /^line 1 of pg_hba.conf rejects/);
  assert.match(rejected.fix!, /before line 1 /);
  // a rule for another role is passed over
  assert.equal(judgeBaseBackup(facts({ hbaRules: [hba(1, 'local', 'replication', 'other', null, null, 'reject'), socketRules[1]!] }))[2]!.passed, true);

  // over TCP: the address the server sees against each rule's network
  const tcp = (addr: string, rules: HbaRuleRow[]) => judgeBaseBackup(facts({ clientAddress: addr, hbaRules: rules }))[2]!;
  const lan = hba(5, 'host', 'replication', 'all', '10.1.2.0', '255.255.255.0', 'scram-sha-256');
  assert.equal(tcp('10.1.2.77', [...socketRules, lan]).passed, true);
  const outside = tcp('10.1.3.77', [...socketRules, lan]);
  assert.equal(outside.passed, false);
  assert.equal(outside.fix, 'add "host replication postgres 10.1.3.77/32 scram-sha-256" to pg_hba.conf and reload');
  assert.equal(tcp('::1', [hba(6, 'host', 'replication', 'all', '::1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'trust')]).passed, true);
  assert.equal(tcp('::1', [lan]).passed, false, 'an IPv4 network never holds an IPv6 address');
  // what cannot be known here (encryption, group membership) is said, not refused
  const ssl = tcp('10.1.2.77', [hba(7, 'hostssl', 'replication', 'all', 'all', null, 'cert')]);
  assert.equal(ssl.passed, true);
  assert.match(ssl.detail, /may apply/);
  assert.match(tcp('10.1.2.77', [hba(8, 'host', 'replication', '+replicators', 'all', null, 'md5')]).detail, /line 8 .* may apply/);

  const unread = judgeBaseBackup(facts({ hbaRules: null }))[2]!;
  assert.deepEqual([unread.passed, unread.severity], [true, 'info']);
  assert.match(unread.detail, /may not read pg_hba_file_rules/);
});

test('netmasks as prefix lengths', () => {
  assert.equal(netmaskBits('255.255.255.0'), 24);
  assert.equal(netmaskBits('255.255.255.255'), 32);
  assert.equal(netmaskBits('0.0.0.0'), 0);
  assert.equal(netmaskBits('255.0.255.0'), undefined);
  assert.equal(netmaskBits('ffff:ffff::'), 32);
  assert.equal(netmaskBits('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 128);
});

const entry = (name: string, bytes: number, dumped: boolean, allowConnections = true): DatabaseEntry => ({
  name,
  bytes,
  encoding: 'UTF8',
  allowConnections,
  dumped,
});

test("a backup's size is the whole backup: every file, and the databases it holds", () => {
  const databases = [entry('app', 30e6, true), entry('postgres', 8e6, true), entry('closed', 8e6, false, false)];
  assert.deepEqual(heldSize(databases), { databases: 2, databaseBytes: 38e6 });
  assert.equal(
    describeSize({ method: 'parallel', compressedBytes: 4_500_000, files: 37, uncompressedBytes: null, ...heldSize(databases) }),
    '4.3 MB in 37 files; 2 databases of 36.2 MB backed up',
  );
  assert.equal(
    describeSize({ method: 'dumpall', compressedBytes: 2_000_000, files: 1, uncompressedBytes: 9_000_000, databases: 1, databaseBytes: 8e6 }),
    '1.9 MB in 1 file, dump 8.6 MB decompressed; 1 database of 7.6 MB backed up',
  );
});

test('a restore names the databases the backup does not hold, and why', () => {
  const databases = [entry('app', 1, true), entry('closed', 1, false, false), entry('old', 1, false)];
  assert.equal(
    notBackedUp({ databases, excludedDatabases: ['old'] }),
    'not in the backup, so not restored: "closed" (refuses connections), "old" (left out by --exclude-database)',
  );
  assert.equal(notBackedUp({ databases: [entry('app', 1, true)] }), undefined);
});

test('the failures a restore expects: the bootstrap superuser exists; in a running server, a tablespace the DBA created', () => {
  const manifest = { shape: { superuser: 'postgres', tablespaces: [{ name: 'co"ld', location: '/x' }] } } as unknown as BackupManifest;
  assert.equal(isExpectedFailure('psql:<stdin>:3: ERROR:  role "postgres" already exists', manifest, false), true);
  assert.equal(isExpectedFailure('psql:<stdin>:4: ERROR:  role "app" already exists', manifest, false), false);
  assert.equal(isExpectedFailure('psql:<stdin>:9: ERROR:  tablespace "co"ld" already exists', manifest, true), true);
  assert.equal(isExpectedFailure('psql:<stdin>:9: ERROR:  tablespace "co"ld" already exists', manifest, false), false, 'a new data directory has none');
  assert.equal(isExpectedFailure('psql:<stdin>:9: ERROR:  tablespace "other" already exists', manifest, true), false);
  assert.equal(isExpectedFailure('psql:<stdin>:9: ERROR:  relation "postgres" already exists', manifest, true), false);
});
