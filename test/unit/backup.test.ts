/** The pure parts of backups: which databases a method can hold, job shares, scheduling, compression flags, tablespace relocation. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { baseBackupCompression, exactPattern, jobShares, pgDumpCompression, runWeighted } from '../../src/backup/methods.js';
import { TablespaceRelocation } from '../../src/backup/restore.js';
import { backupTimes, compareRowCounts, judgeDatabases } from '../../src/backup/steps.js';

const dbs = [
  { name: 'app', allow_connections: true },
  { name: 'closed', allow_connections: false },
  { name: 'we"ird', allow_connections: false },
];

test('a logical backup refuses databases that refuse connections, with the fix; excluded by name they pass', () => {
  const [c] = judgeDatabases('dumpall', dbs, []);
  assert.equal(c?.passed, false);
  assert.match(c!.detail, /"closed", "we\\"ird" refuse connections \(datallowconn = false\)/);
  assert.equal(
    c!.fix,
    `allow connections (ALTER DATABASE "closed" ALLOW_CONNECTIONS true; ALTER DATABASE "we""ird" ALLOW_CONNECTIONS true), or leave them out by name: --exclude-database closed --exclude-database 'we"ird'`,
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
  assert.deepEqual(compareRowCounts({ a: { 'public.t': 3, 'public.u': 1 } }, { a: { 'public.t': 3 } }), ['a.public.u: 1 rows in the source, missing restored']);
  assert.deepEqual(compareRowCounts({ a: { 'public.t': 3 } }, { a: { 'public.t': 3 } }), []);
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
