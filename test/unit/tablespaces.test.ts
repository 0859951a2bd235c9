/** Temperature classification and placement decisions of `pgscale tablespaces` (pure, no PostgreSQL). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PgscaleError } from '../../src/errors.js';
import { parsePlaybook, stepInvocation } from '../../src/playbook/playbook.js';
import { quoteIdent, tablespaceStatements, type RelationStatsRow } from '../../src/sql.js';
import {
  bytesByTarget,
  decidePlacement,
  estimateMoveSeconds,
  judgeRepack,
  measuredCopyRate,
  moveWorkBytes,
  parseVolumeArg,
  tablespaceOptionsFor,
  tierForStorageClass,
  tierTablespaces,
  type RepackFacts,
} from '../../src/tablespaces/placement.js';
import { temperatureReport, tierOfTablespace, type RelationTemperature, type Snapshot } from '../../src/tablespaces/snapshot.js';
import { activityBetween, classify, defaultThresholds, partitionUpperBound, type Activity } from '../../src/tablespaces/temperature.js';

const now = new Date('2026-06-01T00:00:00Z');
const activity = (perMinute: number, over = 600): Activity => ({
  seconds: over,
  scans: Math.round((perMinute * over) / 60),
  writes: 0,
  tuplesRead: 0,
  blocksRead: 0,
  blocksHit: 0,
  counterReset: false,
});

function row(name: string, o: Partial<RelationStatsRow> = {}): RelationStatsRow {
  return {
    schema: 'public',
    name,
    kind: 'r',
    tablespace: '',
    heap_bytes: 1e6,
    total_bytes: 1.5e6,
    row_estimate: 1000,
    is_partition: false,
    parent_schema: null,
    parent_name: null,
    partition_bound: null,
    seq_scan: 0,
    seq_tup_read: 0,
    idx_scan: 0,
    idx_tup_fetch: 0,
    n_tup_ins: 0,
    n_tup_upd: 0,
    n_tup_del: 0,
    last_seq_scan: null,
    last_idx_scan: null,
    heap_blks_read: 0,
    heap_blks_hit: 0,
    idx_blks_read: 0,
    idx_blks_hit: 0,
    toast_blks_read: 0,
    toast_blks_hit: 0,
    has_key: true,
    indexes: [{ schema: 'public', name: `${name}_pkey`, bytes: 5e5, tablespace: '', idx_scan: 0, idx_blks_read: 0, idx_blks_hit: 0, exclusion: false }],
    ...o,
  };
}

test('classify: thresholds decide hot, warm and cold, each with a reason naming the rate', () => {
  const t = defaultThresholds;
  const hot = classify(activity(120), t, undefined, { now });
  assert.equal(hot.tier, 'hot');
  assert.match(hot.reason, /^120 scans\+writes\/min over 10 min .* ≥ 60$/);
  assert.equal(classify(activity(10), t, undefined, { now }).tier, 'warm');
  assert.match(classify(activity(10), t, undefined, { now }).reason, /between 0\.50 and 60/);
  const cold = classify(activity(0), t, undefined, { now });
  assert.equal(cold.tier, 'cold');
  assert.match(cold.reason, /≤ 0\.50/);
});

test('classify: hysteresis keeps a relation on its tier within the margin and moves it beyond', () => {
  const t = { ...defaultThresholds, margin: 0.25 };
  // 50/min: under the hot line (60) but within 25 % of it
  assert.equal(classify(activity(50), t, 'hot', { now }).tier, 'hot');
  assert.match(classify(activity(50), t, 'hot', { now }).reason, /stays hot \(margin 25 %\)/);
  assert.equal(classify(activity(50), t, undefined, { now }).tier, 'warm');
  const left = classify(activity(40), t, 'hot', { now });
  assert.equal(left.tier, 'warm');
  // its class, and what happens to it: it is warm and leaves the hot tier
  assert.match(left.reason, /between 0\.38 and 45, due to move from hot to warm$/);
  assert.match(classify(activity(1), t, 'cold', { now }).reason, /between 0\.63 and 75, due to move from cold to warm$/);
  assert.match(classify(activity(10), t, 'warm', { now }).reason, /between 0\.38 and 75, stays warm \(margin 25 %\)$/);
  assert.match(classify(activity(100), t, 'warm', { now }).reason, /≥ 75, due to move from warm to hot$/);
  assert.match(classify(activity(0.1), t, 'hot', { now }).reason, /≤ 0\.38, due to move from hot to cold$/);
  assert.doesNotMatch(classify(activity(10), t, undefined, { now }).reason, /move|stays/, 'on a tablespace of no tier: left where it is');
  // entering hot from warm needs 60 × 1.25
  assert.equal(classify(activity(70), t, 'warm', { now }).tier, 'warm');
  assert.equal(classify(activity(76), t, 'warm', { now }).tier, 'hot');
  // staying cold is easier than becoming cold
  assert.equal(classify(activity(0.6), t, 'cold', { now }).tier, 'cold');
  assert.equal(classify(activity(0.6), t, 'warm', { now }).tier, 'warm');
  assert.equal(classify(activity(0.45), t, 'warm', { now }).tier, 'warm', 'warm → cold needs 0.5 × 0.75');
});

test('classify: an old time-range partition is cold unless hot', () => {
  const ends = partitionUpperBound("FOR VALUES FROM ('2023-01-01') TO ('2023-02-01')")!;
  assert.equal(ends.toISOString(), '2023-02-01T00:00:00.000Z');
  const c = classify(activity(10), defaultThresholds, 'hot', { now, partitionEnds: ends });
  assert.equal(c.tier, 'cold');
  assert.match(c.reason, /time-range partition ended 1216 days ago \(> 30\)/);
  assert.equal(classify(activity(100), defaultThresholds, 'hot', { now, partitionEnds: ends }).tier, 'hot');
  assert.equal(
    classify(activity(10), defaultThresholds, undefined, { now, partitionEnds: new Date('2026-05-20T00:00:00Z') }).tier,
    'warm',
    'a recent partition is judged by its rate',
  );
  assert.equal(partitionUpperBound('FOR VALUES FROM (1) TO (100)'), undefined);
  assert.equal(partitionUpperBound("FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00')")?.toISOString(), '2024-02-01T00:00:00.000Z');
  assert.equal(partitionUpperBound(null), undefined);
});

test('activityBetween: deltas of scans, writes and blocks; a counter reset counts from zero', () => {
  const a = row('t', { seq_scan: 10, idx_scan: 5, n_tup_ins: 100, heap_blks_hit: 50 });
  const b = row('t', { seq_scan: 14, idx_scan: 25, n_tup_ins: 130, n_tup_upd: 2, heap_blks_hit: 90, heap_blks_read: 3 });
  assert.deepEqual(activityBetween(a, b, 60), { seconds: 60, scans: 24, tuplesRead: 0, writes: 32, blocksRead: 3, blocksHit: 40, counterReset: false });
  const reset = activityBetween(b, row('t', { seq_scan: 1 }), 60);
  assert.equal(reset.counterReset, true);
  assert.equal(reset.scans, 1);
  assert.equal(activityBetween(undefined, b, 0).seconds, 1, 'never divides by zero');
});

test('temperatureReport: two snapshots give rates; one gives rates since stats_reset; none is refused', () => {
  const snap = (at: string, rel: RelationStatsRow[]): Snapshot => ({
    format: 'pgscale-stats/1',
    database: 'app',
    systemIdentifier: '1',
    serverVersionNum: 170000,
    takenAt: at,
    statsReset: '2026-05-31T23:00:00Z',
    postmasterStart: '2026-05-31T00:00:00Z',
    defaultTablespace: 'pg_default',
    relations: rel,
  });
  const s1 = snap('2026-06-01T00:00:00Z', [row('busy', { idx_scan: 1000 }), row('idle'), row('p', { kind: 'p' })]);
  const s2 = snap('2026-06-01T00:10:00Z', [row('busy', { idx_scan: 2000 }), row('idle'), row('p', { kind: 'p' }), row('new', { n_tup_ins: 6000 })]);
  const r = temperatureReport([s1, s2], defaultThresholds, 'hot');
  assert.equal(r.basis, 'two snapshots');
  assert.deepEqual(
    r.relations.map((x) => [x.name, x.tier, Math.round(x.perMinute)]),
    [
      ['busy', 'hot', 100],
      ['idle', 'cold', 0],
      ['new', 'hot', 600],
    ],
  );
  const one = temperatureReport([s1], defaultThresholds, 'hot');
  assert.equal(one.basis, 'since stats_reset');
  assert.equal(one.from, '2026-05-31T23:00:00Z');
  assert.equal(Math.round(one.relations[0]!.perMinute), 17);
  assert.throws(
    () => temperatureReport([], defaultThresholds, 'hot'),
    (e) => e instanceof PgscaleError && e.exitCode === 3,
  );
  assert.equal(tierOfTablespace('', 'warm'), 'warm');
  assert.equal(tierOfTablespace('pgscale_cold', 'hot'), 'cold');
  assert.equal(tierOfTablespace('fast_ssd', 'hot'), null);
});

test('parseVolumeArg and storage-class tiers: unknown tiers and relative paths are bad input', () => {
  assert.deepEqual(parseVolumeArg('/mnt/a=b=cold'), { path: '/mnt/a=b', tier: 'cold' });
  assert.deepEqual(parseVolumeArg('/mnt/nvme'), { path: '/mnt/nvme' });
  for (const bad of ['/mnt/x=lukewarm', 'rel=cold', 'relative'])
    assert.throws(
      () => parseVolumeArg(bad),
      (e) => e instanceof PgscaleError && e.exitCode === 2,
      bad,
    );
  assert.equal(tierForStorageClass('local-nvme'), 'hot');
  assert.equal(tierForStorageClass('hdd'), 'cold');
  assert.equal(tierForStorageClass('network-block'), 'warm');
  assert.equal(tablespaceOptionsFor('hdd', 'hot').random_page_cost, 4, 'the media wins over the tier');
  assert.equal(tablespaceOptionsFor('loop', 'cold').random_page_cost, 4);
  assert.equal(tablespaceOptionsFor('unknown', 'hot').random_page_cost, 1.1);
  assert.deepEqual(tierTablespaces(['cold'], 'hot'), { hot: '', cold: 'pgscale_cold' });
  assert.deepEqual(tierTablespaces(['hot', 'cold'], 'hot'), { hot: 'pgscale_hot', cold: 'pgscale_cold' });
});

function temp(name: string, tier: RelationTemperature['tier'], o: Partial<RelationTemperature> = {}): RelationTemperature {
  return {
    relation: `public.${name}`,
    schema: 'public',
    name,
    parent: null,
    tablespace: '',
    currentTier: 'hot',
    totalBytes: 1.5e6,
    tier,
    perMinute: tier === 'hot' ? 100 : 0,
    reason: `${tier} because`,
    ...o,
  };
}

test('decidePlacement: cold relations move with their indexes, hot ones stay, limits and methods apply', () => {
  const stats = [
    row('hot_t'),
    row('old', {
      indexes: [
        ...row('old').indexes,
        { schema: 'public', name: 'old_excl', bytes: 1e5, tablespace: '', idx_scan: 0, idx_blks_read: 0, idx_blks_hit: 0, exclusion: true },
      ],
    }),
    row('big', { heap_bytes: 5e9, total_bytes: 6e9 }),
    row('warmish'),
    row('mine', { tablespace: 'fast_ssd' }),
    row('back', { tablespace: 'pgscale_cold' }),
    row('h', { kind: 'p' }),
    row('h_2023', { parent_schema: 'public', parent_name: 'h' }),
    row('h_2026', { parent_schema: 'public', parent_name: 'h' }),
  ];
  const temps = [
    temp('hot_t', 'hot'),
    temp('old', 'cold'),
    temp('big', 'cold'),
    temp('warmish', 'warm'),
    temp('mine', 'cold', { tablespace: 'fast_ssd', currentTier: null }),
    temp('back', 'hot', { tablespace: 'pgscale_cold', currentTier: 'cold' }),
    temp('h_2023', 'cold', { parent: 'public.h' }),
    temp('h_2026', 'hot', { parent: 'public.h' }),
  ];
  const noRepack = { usable: false, createExtension: false, why: 'no pg_repack program in /usr/lib/postgresql/17/bin' };
  const opts = {
    dataDirTier: 'hot' as const,
    declaredTiers: ['cold' as const],
    serverVersionNum: 170000,
    blockingLimitBytes: 1024 ** 3,
    allowBlocking: false,
    repack: noRepack,
  };
  const p = decidePlacement(temps, stats, opts);
  assert.deepEqual(
    p.moves.map((m) => [m.name, m.from, m.to]),
    [
      ['old', '', 'pgscale_cold'],
      ['back', 'pgscale_cold', ''],
      ['h_2023', '', 'pgscale_cold'],
    ],
  );
  assert.deepEqual(
    p.moves[0]!.indexes.map((i) => [i.name, i.method]),
    [
      ['old_pkey', 'reindex-concurrently'],
      ['old_excl', 'alter-index'],
    ],
  );
  assert.deepEqual(
    p.refused.map((r) => r.relation),
    ['public.big'],
  );
  assert.match(p.refused[0]!.why, /ACCESS EXCLUSIVE.*pg_repack cannot move it online: no pg_repack program/);
  assert.ok(
    p.moves.every((m) => m.method === 'alter-table' && m.methodWhy === noRepack.why),
    'without pg_repack every table moves by ALTER TABLE',
  );
  // with pg_repack: tables with a key move online, whatever their size; a keyless big one is still refused
  const keyless = [...stats, row('big_nokey', { heap_bytes: 5e9, total_bytes: 6e9, has_key: false }), row('small_nokey', { has_key: false })];
  const online = decidePlacement([...temps, temp('big_nokey', 'cold'), temp('small_nokey', 'cold')], keyless, {
    ...opts,
    repack: { usable: true, createExtension: true, why: 'available' },
  });
  assert.deepEqual(
    online.moves.map((m) => [m.name, m.method, m.blocking]),
    [
      ['old', 'pg_repack', false],
      ['big', 'pg_repack', false],
      ['back', 'pg_repack', false],
      ['h_2023', 'pg_repack', false],
      ['small_nokey', 'alter-table', false],
    ],
  );
  assert.match(online.moves.find((m) => m.name === 'small_nokey')!.methodWhy, /needs a primary key or a NOT NULL unique index/);
  assert.deepEqual(
    online.refused.map((r) => r.relation),
    ['public.big_nokey'],
  );
  assert.match(online.refused[0]!.why, /pg_repack cannot move it online: pg_repack needs a primary key/);
  // the same cluster through --dsn as a role that is no superuser: pg_repack is ruled out in the plan, tables with a
  // key fall back to ALTER TABLE and the big one is refused there (exit 3) unless --allow-blocking
  const notSuperuser = judgeRepack({
    wanted: true,
    serverMajor: 17,
    bindir: '/usr/lib/postgresql/17/bin',
    client: { version: '1.5.2', bindirMajor: 17 },
    extension: { defaultVersion: '1.5.2', installedVersion: '1.5.2' },
    role: { name: 'app', superuser: false },
  });
  const asApp = decidePlacement(temps, stats, { ...opts, repack: notSuperuser });
  assert.ok(asApp.moves.every((m) => m.method === 'alter-table' && /needs a superuser/.test(m.methodWhy)));
  assert.deepEqual(
    asApp.refused.map((r) => r.relation),
    ['public.big'],
  );
  assert.match(asApp.refused[0]!.why, /pg_repack cannot move it online: pg_repack needs a superuser and role app is not one/);
  assert.equal(
    decidePlacement(temps, stats, { ...opts, repack: notSuperuser, allowBlocking: true }).moves.find((m) => m.name === 'big')?.method,
    'alter-table',
  );
  assert.deepEqual(
    p.staying.map((s) => [s.relation, s.why.replace(/ \(.*/, '')]),
    [
      ['public.hot_t', 'already on the hot tier'],
      ['public.warmish', 'no volume for the warm tier'],
      ['public.mine', 'in tablespace fast_ssd, which pgscale does not manage'],
      ['public.h_2026', 'already on the hot tier'],
    ],
  );
  assert.deepEqual(p.parents, [], 'the parent follows its hottest partition, which stays in the default');
  const allowed = decidePlacement(temps, stats, { ...opts, allowBlocking: true });
  assert.equal(allowed.moves.find((m) => m.name === 'big')?.blocking, true);
  const old = decidePlacement(temps, stats, { ...opts, serverVersionNum: 130000 });
  assert.ok(
    old.moves.every((m) => m.indexes.every((i) => i.method === 'alter-index')),
    'before 14 indexes move by rewrite',
  );
  const allCold = decidePlacement([temp('h_2023', 'cold', { parent: 'public.h' }), temp('h_2026', 'cold', { parent: 'public.h' })], stats, opts);
  assert.deepEqual(
    allCold.parents.map((x) => [x.name, x.from, x.to]),
    [['h', '', 'pgscale_cold']],
  );
  assert.deepEqual(
    [...bytesByTarget(p.moves)],
    [
      ['pgscale_cold', 3e6],
      ['', 1.5e6],
    ],
  );
  assert.equal(
    Math.round(estimateMoveSeconds({ heapBytes: 100e6, indexes: [], method: 'alter-table' }, 100e6, true)),
    3,
    '1 s + 1.5 × the heap at the copy rate',
  );
  assert.equal(
    estimateMoveSeconds({ heapBytes: 100e6, indexes: [], method: 'pg_repack' }, 100e6, true),
    2.2,
    'pg_repack: copy plus log replay, no count under a lock',
  );
  assert.equal(
    Math.round(
      estimateMoveSeconds(
        { heapBytes: 100e6, indexes: [{ schema: 's', name: 'i', bytes: 50e6, from: '', method: 'reindex-concurrently' }], method: 'alter-table' },
        100e6,
        false,
      ),
    ),
    3,
  );
});

test('measuredCopyRate: work over time of the last large journaled moves; none measured without one', () => {
  const MB = 1024 ** 2;
  assert.equal(measuredCopyRate([]), null);
  assert.equal(measuredCopyRate([{ workBytes: 4 * MB, seconds: 1 }]), null, 'a small move is mostly start-up: not a sample');
  assert.deepEqual(
    measuredCopyRate(
      [
        { workBytes: 1000 * MB, seconds: 100 }, // older than the last two: left out
        { workBytes: 4 * MB, seconds: 0.1 },
        { workBytes: 300 * MB, seconds: 2 },
        { workBytes: 100 * MB, seconds: 2 },
      ],
      2,
    ),
    { bytesPerSecond: 100 * MB, moves: 2 },
  );
  const move = { heapBytes: 100 * MB, indexes: [{ schema: 's', name: 'i', bytes: 10 * MB, from: '', method: 'alter-index' as const }] };
  assert.equal(moveWorkBytes({ ...move, method: 'alter-table' }, true), 170 * MB);
  assert.equal(moveWorkBytes({ ...move, method: 'alter-table' }, false), 120 * MB);
  assert.equal(moveWorkBytes({ ...move, method: 'pg_repack' }, true), 140 * MB);
});

test('judgeRepack: the program must match the server major and the extension version; absent extension is created by the run', () => {
  const base: RepackFacts = {
    wanted: true,
    serverMajor: 17,
    bindir: '/usr/lib/postgresql/17/bin',
    client: { version: '1.5.2', bindirMajor: 17 },
    extension: { defaultVersion: '1.5.2', installedVersion: null },
    role: { name: 'postgres', superuser: true },
  };
  assert.deepEqual(judgeRepack(base), {
    usable: true,
    createExtension: true,
    why: 'pg_repack 1.5.2 is available: the run creates the extension (a rollback drops it)',
  });
  assert.deepEqual(judgeRepack({ ...base, extension: { defaultVersion: '1.5.2', installedVersion: '1.5.2' } }), {
    usable: true,
    createExtension: false,
    why: 'pg_repack 1.5.2 is installed in the database',
  });
  const refusals: [Partial<RepackFacts>, RegExp][] = [
    [{ wanted: false }, /declined with --no-repack/],
    // through --dsn as an application role: judged in the plan, not found out when pg_repack refuses
    [{ role: { name: 'app', superuser: false } }, /pg_repack needs a superuser and role app is not one/],
    [{ client: null }, /no pg_repack program in \/usr\/lib\/postgresql\/17\/bin/],
    [{ client: { version: '1.5.2', bindirMajor: 16 } }, /belongs to PostgreSQL 16, the server is 17/],
    [{ client: { version: '1.5.2', bindirMajor: null } }, /no postgres program/],
    [{ extension: null }, /no pg_repack extension files \(postgresql-17-repack/],
    [{ extension: { defaultVersion: '1.5.3', installedVersion: null } }, /program is 1\.5\.2, the extension the server offers is 1\.5\.3/],
    [{ extension: { defaultVersion: '1.5.2', installedVersion: '1.4.8' } }, /program is 1\.5\.2, the extension in the database is 1\.4\.8/],
  ];
  for (const [change, why] of refusals) {
    const d = judgeRepack({ ...base, ...change });
    assert.equal(d.usable, false, String(why));
    assert.equal(d.createExtension, false);
    assert.match(d.why, why);
  }
});

test('SQL text: identifiers are quoted, the move counts rows under its lock and lock_timeout bounds every wait', () => {
  assert.equal(quoteIdent('we"ird'), '"we""ird"');
  const text = tablespaceStatements.moveTable('public', 'Mixed Case', 'pgscale_cold', 1500, true).text;
  assert.match(
    text,
    /^BEGIN ISOLATION LEVEL REPEATABLE READ;\nDO \$pgscale\$\nDECLARE before bigint; after bigint;\nBEGIN\n {2}PERFORM set_config\('lock_timeout', '1500ms', true\);/,
  );
  assert.match(text, /SELECT count\(\*\) INTO before FROM "public"\."Mixed Case";\n {2}LOCK TABLE "public"\."Mixed Case" IN ACCESS EXCLUSIVE MODE;/);
  assert.match(text, /END \$pgscale\$;\nCOMMIT$/);
  assert.match(text, /ALTER TABLE "public"\."Mixed Case" SET TABLESPACE "pgscale_cold";/);
  assert.match(text, /RAISE EXCEPTION 'row count changed/);
  assert.equal(
    tablespaceStatements.moveTable('public', 't', 'pg_default', 200, false).text,
    `DO $pgscale$\nBEGIN\n  PERFORM set_config('lock_timeout', '200ms', true);\n  ALTER TABLE "public"."t" SET TABLESPACE "pg_default";\nEND $pgscale$`,
  );
  assert.throws(() => tablespaceStatements.moveIndex('public', 'x$pgscale$y', 'ts', 100), /contains/);
});

test('playbooks take the tablespaces commands, volumes as one comma-separated flag', () => {
  const pb = parsePlaybook(
    [
      'version: 1',
      'name: tiers',
      'steps:',
      '  - tablespaces sample: { database: app }',
      '  - tablespaces place: { database: app, volume: "/mnt/nvme=hot,/mnt/hdd=cold" }',
    ].join('\n'),
    'tiers.yaml',
  );
  assert.deepEqual(stepInvocation(pb.steps[1]!, { pgdata: '/pg' }, ['--yes'], '/state').argv, [
    'tablespaces',
    'place',
    '--pgdata',
    '/pg',
    '--database',
    'app',
    '--volume',
    '/mnt/nvme=hot,/mnt/hdd=cold',
    '--yes',
  ]);
});
