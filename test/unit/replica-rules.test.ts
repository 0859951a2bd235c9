import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  hbaAllows,
  hbaRule,
  insertHbaRule,
  judgeHost,
  judgePrimary,
  listensOn,
  parseBasebackupProgress,
  pgpassLine,
  pgpassLookup,
  proposedSlotKeep,
  removeHbaRule,
  scramVerifier,
  slotNameFor,
  spaceNeeds,
  validSlotName,
  conninfoValue,
  judgeNewFile,
  judgeRemoval,
  logTail,
  type HostFacts,
  type Intent,
  type PrimaryFacts,
  type RemoveIntent,
  type RemovePrimaryFacts,
  type RemoveTargetFacts,
} from '../../src/replica/rules.js';
import { judgeReplicas } from '../../src/replica/list.js';
import type { ReplicationOverviewRow } from '../../src/sql.js';

test('slot names: from host and directory, sanitised, at most 63', () => {
  assert.equal(slotNameFor('postgres@DB-2.example.com', '/var/lib/postgresql/17/main'), 'pgscale_db_2_example_com_main');
  assert.equal(slotNameFor('local', '/srv/replica-1/'), 'pgscale_local_replica_1');
  const long = slotNameFor('h'.repeat(80), '/d');
  assert.ok(validSlotName(long) && long.length <= 63);
  assert.notEqual(long, slotNameFor('h'.repeat(81), '/d'), 'truncation keeps names apart');
  assert.ok(!validSlotName('Bad-Name'));
});

test('password files: written and read back with : and \\ escaped; first match wins; no line breaks', () => {
  const line = pgpassLine('10.0.0.1', 5432, 'replication', 'rep', 'a:b\\c');
  assert.equal(line, '10.0.0.1:5432:replication:rep:a\\:b\\\\c\n');
  assert.equal(pgpassLookup(line, { host: '10.0.0.1', port: 5432, user: 'rep' }), 'a:b\\c');
  const file = '# comment\nother:*:*:rep:no\n*:5432:postgres:rep:no\n*:*:replication:rep:yes\n*:*:*:*:fallback\n';
  assert.equal(pgpassLookup(file, { host: '10.0.0.1', port: 5432, user: 'rep' }), 'yes');
  assert.equal(pgpassLookup(file, { host: '10.0.0.1', port: 5432, user: 'x' }), 'fallback');
  assert.equal(pgpassLookup('h:1:replication:rep:p', { host: 'h', port: 2, user: 'rep' }), undefined);
  assert.throws(() => pgpassLine('h', 1, 'replication', 'u', 'a\nb'), /line break/);
});

test('SCRAM verifier: PostgreSQL format, salted, deterministic for a salt', () => {
  const salt = Buffer.alloc(16, 7);
  const v = scramVerifier('pencil', salt);
  assert.match(v, /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$/);
  assert.equal(v, scramVerifier('pencil', salt));
  assert.notEqual(scramVerifier('pencil'), scramVerifier('pencil'));
  assert.ok(!v.includes('pencil'));
});

test('pg_hba: the rule goes before the first rule, is marked, and only it is removed', () => {
  const text = '# TYPE DATABASE USER ADDRESS METHOD\n\nlocal all all peer\nhost all all 0.0.0.0/0 reject\n';
  const rule = hbaRule('replicator', '10.231.7.2', 'pgscale_db2_main');
  assert.equal(rule, 'host replication replicator 10.231.7.2/32 scram-sha-256  # pgscale replica pgscale_db2_main');
  const added = insertHbaRule(text, rule);
  assert.deepEqual(added.split('\n').slice(2, 4), [rule, 'local all all peer']);
  assert.equal(removeHbaRule(added, 'pgscale_db2_main'), text);
  assert.equal(removeHbaRule(added, 'pgscale_other'), added);
  assert.ok(hbaRule('Odd "Role"', '1.2.3.4', 's').startsWith('host replication "Odd ""Role""" 1.2.3.4/32 '));
  const rows = [
    {
      line_number: 2,
      type: 'host',
      database: ['replication'],
      user_name: ['replicator'],
      address: '10.231.7.2',
      netmask: '255.255.255.255',
      auth_method: 'scram-sha-256',
      error: null,
    },
  ];
  assert.ok(hbaAllows(rows, 'replicator', '10.231.7.2'));
  assert.ok(!hbaAllows(rows, 'replicator', '10.231.7.3'));
  assert.ok(!hbaAllows([{ ...rows[0]!, auth_method: 'md5' }], 'replicator', '10.231.7.2'), 'scram only');
  assert.ok(!hbaAllows([{ ...rows[0]!, netmask: '255.255.255.0' }], 'replicator', '10.231.7.2'), 'exactly that address');
});

const primary: PrimaryFacts = {
  major: 17,
  version: '17.2',
  inRecovery: false,
  walLevel: 'replica',
  maxWalSenders: 10,
  sendersInUse: 0,
  maxReplicationSlots: 10,
  slotsInUse: 0,
  maxSlotWalKeepSize: -1,
  listenAddresses: '127.0.0.1,10.231.7.1',
  walVolumeFree: 40 * 1024 ** 3,
  slotExists: false,
  role: { exists: true, replication: true, login: true, scram: true },
  passwordAvailable: true,
  hbaRulePresent: false,
  hbaErrors: [],
  configOutsideDataDir: false,
  tablespaces: [{ name: 'warm', location: '/ts', bytes: 1000 }],
  dataBytes: 5000,
  walBytes: 1000,
};
const intent: Intent = {
  role: 'replicator',
  slot: 's',
  primaryAddress: '10.231.7.1',
  replicaAddress: '10.231.7.2',
  replicaDir: '/r',
  replicaWaldir: null,
  tablespaceTargets: [{ name: 'warm', location: '/ts', target: '/rts' }],
  local: false,
  createRole: true,
};
const failed = (cs: { passed: boolean; severity: string; name: string }[]) => cs.filter((c) => !c.passed && c.severity === 'error').map((c) => c.name);

test('judging the primary: each rule can fail on its own', () => {
  assert.deepEqual(failed(judgePrimary(primary, intent)), []);
  const warn = judgePrimary(primary, intent).find((c) => c.name === 'max_slot_wal_keep_size')!;
  assert.equal(warn.severity, 'warning');
  assert.match(warn.detail, /max_slot_wal_keep_size = '20GB'/);
  assert.deepEqual(failed(judgePrimary({ ...primary, walLevel: 'minimal' }, intent)), ['wal_level']);
  assert.deepEqual(failed(judgePrimary({ ...primary, sendersInUse: 9 }, intent)), ['max_wal_senders']);
  assert.deepEqual(failed(judgePrimary({ ...primary, slotsInUse: 10 }, intent)), ['max_replication_slots']);
  assert.deepEqual(failed(judgePrimary({ ...primary, slotExists: true }, intent)), ['slot']);
  assert.deepEqual(
    failed(judgePrimary({ ...primary, role: { exists: false, replication: false, login: false, scram: false }, passwordAvailable: false }, intent)),
    ['replication role'],
  );
  assert.deepEqual(
    failed(judgePrimary({ ...primary, role: { exists: false, replication: false, login: false, scram: false } }, intent)),
    [],
    'created from the passfile',
  );
  assert.deepEqual(failed(judgePrimary({ ...primary, role: { ...primary.role, scram: false } }, intent)), ['replication role']);
  assert.deepEqual(failed(judgePrimary({ ...primary, passwordAvailable: false }, intent)), ['replication password']);
  assert.deepEqual(failed(judgePrimary({ ...primary, listenAddresses: 'localhost' }, intent)), ['primary listens']);
  // a socket directory given as the primary's address (a trial's): refused with why, not "pass --primary-address"
  const bySocket = judgePrimary({ ...primary, listenAddresses: '' }, { ...intent, primaryAddress: '/run/pg' }).filter(
    (c) => !c.passed && c.severity === 'error',
  );
  assert.deepEqual(
    bySocket.map((c) => c.name),
    ['primary listens'],
  );
  assert.match(bySocket[0]!.detail, /\/run\/pg is a socket directory: a replica connects over TCP/);
  assert.deepEqual(failed(judgePrimary({ ...primary, inRecovery: true }, intent)), ['primary']);
  assert.deepEqual(failed(judgePrimary({ ...primary, configOutsideDataDir: true }, intent)), ['configuration']);
  assert.deepEqual(failed(judgePrimary(primary, { ...intent, local: true, tablespaceTargets: [{ name: 'warm', location: '/ts', target: '/ts' }] })), [
    'tablespace mapping',
  ]);
  assert.equal(judgePrimary({ ...primary, maxSlotWalKeepSize: 1024 ** 3 }, intent).find((c) => c.name === 'max_slot_wal_keep_size')!.passed, true);
  assert.ok(listensOn('*', '10.0.0.1') && listensOn('localhost', '127.0.0.1') && !listensOn('', '127.0.0.1'));
  assert.equal(proposedSlotKeep(null), '10GB');
  assert.equal(proposedSlotKeep(1024 ** 3), '1GB');
});

const host: HostFacts = {
  destination: 'db2',
  sshError: null,
  ownerExists: true,
  version: 'postgres (PostgreSQL) 17.2',
  paths: [
    { path: '/r', state: 'absent', writable: true, avail: 10_000, mount: '/' },
    { path: '/rts', state: 'empty', writable: true, avail: 10_000, mount: '/' },
  ],
};

test('judging the host: ssh, owner, versions, directories, space summed per filesystem', () => {
  const need = spaceNeeds(primary, intent);
  assert.deepEqual(
    [...need],
    [
      ['/r', Math.round(4000 * 1.1) + Math.round(1000 * 1.1)],
      ['/rts', 1100],
    ],
  );
  assert.deepEqual(failed(judgeHost(host, intent, 17, '17.2', need)), []);
  assert.deepEqual(failed(judgeHost({ ...host, sshError: 'the host key of db2 is not known' }, intent, 17, '17.2', need)), ['ssh']);
  assert.deepEqual(failed(judgeHost({ ...host, version: 'postgres (PostgreSQL) 16.4' }, intent, 17, '17.2', need)), ['replica binaries']);
  const minor = judgeHost({ ...host, version: 'postgres (PostgreSQL) 17.1' }, intent, 17, '17.2', need).find((c) => c.name === 'replica binaries')!;
  assert.equal(minor.severity, 'warning');
  assert.deepEqual(failed(judgeHost({ ...host, version: null }, intent, 17, '17.2', need)), ['replica binaries']);
  assert.deepEqual(failed(judgeHost({ ...host, ownerExists: false }, intent, 17, '17.2', need)), ['replica owner']);
  assert.deepEqual(failed(judgeHost({ ...host, paths: [{ ...host.paths[0]!, state: 'nonempty' }, host.paths[1]!] }, intent, 17, '17.2', need)), [
    'target directory',
  ]);
  assert.deepEqual(failed(judgeHost({ ...host, paths: [{ ...host.paths[0]!, writable: false }, host.paths[1]!] }, intent, 17, '17.2', need)), [
    'target directory',
  ]);
  // each fits alone, not together on one filesystem
  assert.deepEqual(failed(judgeHost({ ...host, paths: host.paths.map((p) => ({ ...p, avail: 6000 })) }, intent, 17, '17.2', need)), ['free space']);
  assert.deepEqual(failed(judgeHost(host, { ...intent, replicaAddress: null }, 17, '17.2', need)), ['addresses']);
});

test('pg_basebackup progress parsed from -P output', () => {
  assert.deepEqual(parseBasebackupProgress('   1024/4096 kB (25%), 0/1 tablespace\r   2048/4096 kB (50%), 0/1 tablespace\r'), {
    doneBytes: 2048 * 1024,
    totalBytes: 4096 * 1024,
  });
  assert.equal(parseBasebackupProgress('waiting for checkpoint'), undefined);
});

test('replica list: lost slots say rebuild with the command, inactive ones retain WAL, unlimited ones are named', () => {
  const row = (r: Partial<ReplicationOverviewRow>): ReplicationOverviewRow => ({
    slot_name: 's',
    slot_type: 'physical',
    active: true,
    wal_status: 'reserved',
    safe_wal_size: '1000000',
    retained_bytes: '100',
    pid: 1,
    application_name: 'a',
    client_addr: '10.0.0.2',
    state: 'streaming',
    sync_state: 'async',
    lag_bytes: '0',
    replay_lag_seconds: null,
    ...r,
  });
  const [streaming, lost, inactive, slotless, unlimited, idleUnlimited] = judgeReplicas(
    [
      row({}),
      row({ slot_name: 'gone', active: false, wal_status: 'lost', state: null, pid: null, safe_wal_size: null }),
      row({ slot_name: 'idle', active: false, state: null, pid: null, retained_bytes: '5000' }),
      row({ slot_name: null, slot_type: null, active: null, wal_status: null, safe_wal_size: null }),
      row({ slot_name: 'forever', safe_wal_size: null }),
      row({ slot_name: 'idle2', active: false, state: null, pid: null, safe_wal_size: null }),
    ],
    '/pg',
  );
  assert.match(unlimited!.advice!, /^max_slot_wal_keep_size = -1: slot forever retains WAL without limit .* set max_slot_wal_keep_size/);
  assert.match(idleUnlimited!.advice!, /^inactive slot idle2 retains WAL: .*; max_slot_wal_keep_size = -1: slot idle2/);
  assert.doesNotMatch(lost!.advice!, /max_slot_wal_keep_size = -1/, 'a lost slot has no safe_wal_size either way');
  assert.equal(streaming!.advice, null);
  assert.equal(streaming!.state, 'streaming');
  assert.match(lost!.advice!, /must be rebuilt — pgscale replica remove --pgdata \/pg .*--slot gone, then pgscale replica add/);
  assert.equal(inactive!.state, 'inactive');
  assert.equal(inactive!.retainedBytes, 5000);
  assert.match(inactive!.advice!, /inactive slot idle retains WAL/);
  assert.match(slotless!.advice!, /without a slot/);
});

const standbyHere: RemoveTargetFacts = {
  state: 'dir',
  pgVersion: '17',
  standbySignal: true,
  primaryConninfo: "user=replicator passfile='/r.pgpass' host=127.0.0.1 port=5432",
  primarySlotName: 'pgscale_local_r',
  systemIdentifier: '7400000000000000001',
  running: true,
};
const primaryOf: RemovePrimaryFacts = {
  systemIdentifier: '7400000000000000001',
  major: 17,
  port: 5432,
  slotExists: true,
  slotActiveFrom: '127.0.0.1',
  hbaRuleMarked: true,
};
const removal: RemoveIntent = { replicaDir: '/r', slot: 'pgscale_local_r', keepData: false, passfile: '/r.pgpass' };
const none = { stop: false, dropSlot: false, removeHba: false, removeData: false, removePassfile: false };

test('replica remove: a standby of this primary is stopped and deleted, with the slot, the rule and the password file its conninfo names', () => {
  const r = judgeRemoval(standbyHere, primaryOf, removal);
  assert.deepEqual(failed(r.checks), []);
  assert.deepEqual(r.actions, { stop: true, dropSlot: true, removeHba: true, removeData: true, removePassfile: true });
  // stopped already, kept with --keep-data, a passfile elsewhere: each part only when it holds
  assert.deepEqual(judgeRemoval({ ...standbyHere, running: false }, { ...primaryOf, slotActiveFrom: null }, { ...removal, keepData: true }).actions, {
    ...none,
    dropSlot: true,
    removeHba: true,
  });
  assert.equal(
    judgeRemoval({ ...standbyHere, primaryConninfo: 'user=replicator passfile=/home/dba/.pgpass' }, primaryOf, removal).actions.removePassfile,
    false,
  );
  assert.equal(conninfoValue("host=h passfile='/a b/x.pgpass' port=1", 'passfile'), '/a b/x.pgpass');
  // a cascading standby of this cluster: the same identity, another upstream — said, not refused
  const cascading = judgeRemoval({ ...standbyHere, primaryConninfo: 'host=10.0.0.9 port=5433' }, primaryOf, removal);
  assert.deepEqual(failed(cascading.checks), []);
  assert.match(cascading.checks.find((c) => c.name === 'replica upstream' && c.severity === 'warning')!.detail, /port 5433, not this primary's 5432/);
  assert.equal(cascading.actions.removeData, true);
});

test('replica remove: anything but a standby of this primary is kept, its server never stopped, the removal refused', () => {
  const cases: [string, RemoveTargetFacts, RegExp][] = [
    [
      'another cluster (the same major)',
      { ...standbyHere, standbySignal: false, primaryConninfo: null, primarySlotName: null, systemIdentifier: '7399999999999999999' },
      /data directory with a running server of another cluster \(system identifier 7399999999999999999/,
    ],
    [
      'a running PostgreSQL 15 primary',
      { ...standbyHere, pgVersion: '15', standbySignal: false, systemIdentifier: null },
      /PostgreSQL 15 data directory with a running server; the primary is 17/,
    ],
    ['a standby of another primary', { ...standbyHere, systemIdentifier: '42' }, /of another cluster/],
    ['a promoted copy', { ...standbyHere, standbySignal: false, running: false }, /a copy of this primary that is not a standby/],
    [
      "a user's own files",
      { ...standbyHere, pgVersion: null, standbySignal: false, systemIdentifier: null, running: false },
      /not a PostgreSQL data directory/,
    ],
    ['a file', { ...standbyHere, state: 'notdir', pgVersion: null, running: false }, /a file, not a directory/],
    ['unreadable', { ...standbyHere, state: 'unreadable', pgVersion: null, running: false }, /cannot read/],
  ];
  for (const [what, target, says] of cases) {
    // nobody streams through the slot: it and its rule may go (with --keep-data), the directory never
    const r = judgeRemoval(target, { ...primaryOf, slotActiveFrom: null }, removal);
    assert.deepEqual(failed(r.checks), ['replica directory'], what);
    const refusal = r.checks.find((c) => !c.passed)!;
    assert.match(refusal.detail, says, what);
    assert.match(refusal.detail, /it is kept and no server there is stopped/, what);
    assert.match(refusal.fix!, /to remove only slot pgscale_local_r and its pg_hba rule, pass --keep-data/, what);
    assert.equal(r.actions.stop || r.actions.removeData || r.actions.removePassfile, false, what);
    const kept = judgeRemoval(target, { ...primaryOf, slotActiveFrom: null }, { ...removal, keepData: true });
    assert.deepEqual(failed(kept.checks), [], what);
    assert.deepEqual(kept.actions, { ...none, dropSlot: true, removeHba: true }, what);
  }
  // the slot streams to somebody, and the directory is not that standby: the slot is not this replica's
  const busy = judgeRemoval({ ...standbyHere, pgVersion: null, standbySignal: false, running: false }, primaryOf, { ...removal, keepData: true });
  assert.deepEqual(failed(busy.checks), ['slot']);
  assert.deepEqual(busy.actions, none);
  // a standby of this primary through another slot
  const other = judgeRemoval({ ...standbyHere, primarySlotName: 'pgscale_db2_main' }, primaryOf, removal);
  assert.deepEqual(failed(other.checks), ['replica']);
  assert.equal(other.checks[0]!.fix, 'pass --slot pgscale_db2_main');
  assert.deepEqual(other.actions, none);
});

test('replica remove: an absent directory leaves the slot and rule to remove; with nothing at all, refused', () => {
  const absent: RemoveTargetFacts = { ...standbyHere, state: 'absent', pgVersion: null, standbySignal: false, running: false, systemIdentifier: null };
  const r = judgeRemoval(absent, { ...primaryOf, slotActiveFrom: null }, removal);
  assert.deepEqual(failed(r.checks), []);
  assert.deepEqual(r.actions, { ...none, dropSlot: true, removeHba: true });
  const nothing = judgeRemoval(absent, { ...primaryOf, slotExists: false, slotActiveFrom: null, hbaRuleMarked: false }, removal);
  assert.deepEqual(failed(nothing.checks), ['replica']);
  assert.match(nothing.checks.find((c) => !c.passed)!.detail, /^nothing to remove: \/r is absent/);
});

test("replica add: the password file must not exist; a standby's log tail leaves out lines with a password", () => {
  const probe = { path: '/r.pgpass', state: 'absent' as const, writable: true, avail: 1, mount: '/' };
  assert.equal(judgeNewFile(probe, 'password file').passed, true);
  const taken = judgeNewFile({ ...probe, state: 'notdir' }, 'password file');
  assert.equal(taken.passed, false);
  assert.match(taken.detail, /exists already: pgscale does not overwrite a file it did not create/);
  assert.equal(judgeNewFile({ ...probe, writable: false }, 'password file').passed, false);
  const log = Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n') + '\nFATAL: password authentication failed for user x\n\n';
  const tail = logTail(log, 5);
  assert.deepEqual(tail, ['line 26', 'line 27', 'line 28', 'line 29', '[a line mentioning a password, left out]']);
});
