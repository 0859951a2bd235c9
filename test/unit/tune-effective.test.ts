/**
 * The effective configuration as the server resolves it (includes in order, postgresql.auto.conf
 * last, pg_settings on top), planned contents laid over the files, the diff grouped by area, and
 * the file edits — all pure, against test/fixtures/tune-config.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgscaleError } from '../../src/errors.js';
import { loadCatalog } from '../../src/gucCatalog/catalog.js';
import { GiB, MiB } from '../../src/gucCatalog/units.js';
import { durationValue, memoryValue, numberValue } from '../../src/gucCatalog/values.js';
import { checkTuneFlags, extensionWorkers, parseMemoryFlag } from '../../src/tune/decide.js';
import { allChanges, planChanges, precedenceNotes, renderDiff } from '../../src/tune/diff.js';
import { applyEdits, sha256 } from '../../src/tune/edits.js';
import { describeOrigin, overlayFiles, readEffectiveConfig, realFiles, type ServerSetting } from '../../src/tune/effective.js';
import { recommend } from '../../src/tune/recommend.js';
import { render } from '../../src/tune/render.js';
import type { SystemProfile } from '../../src/tune/types.js';
import { fixturesDir } from '../helpers/paths.js';

const dir = join(fixturesDir, 'tune-config');
const conf = join(dir, 'postgresql.conf');
const catalog = loadCatalog(17);
const read = (server?: ServerSetting[]) => readEffectiveConfig({ configFile: conf, dataDir: dir, catalog, server });

const profile: SystemProfile = {
  memoryBytes: 16 * GiB,
  memoryIsCgroupLimit: false,
  vcpus: 4,
  storage: 'ssd',
  pgMajor: 17,
  maxConnections: 100,
  workload: 'oltp',
  buildFeatures: ['lz4', 'zstd'],
  extensionBackgroundWorkers: 0,
};

const row = (name: string, setting: string, unit: string | null, source: string, extra: Partial<ServerSetting> = {}): ServerSetting => ({
  name,
  setting,
  unit,
  source,
  sourcefile: null,
  sourceline: null,
  pending_restart: false,
  context: 'user',
  boot_val: null,
  ...extra,
});

test('files: includes in the server order, include_dir by name without hidden or non-.conf files, postgresql.auto.conf last', () => {
  const c = read();
  assert.deepEqual(
    c.files.map((f) => f.slice(dir.length + 1)),
    ['postgresql.conf', 'extra.conf', 'present.conf', 'conf.d/10-first.conf', 'conf.d/20-work.conf', 'postgresql.auto.conf'],
  );
  assert.equal(c.fromServer, false);
  assert.deepEqual(c.warnings, []);
});

test('later lines win: an included file over postgresql.conf, the last include_dir file over the first', () => {
  const c = read();
  const work = c.settings.get('work_mem')!;
  assert.deepEqual(work.value, memoryValue(16 * MiB));
  assert.equal(work.origin, 'file');
  assert.equal(describeOrigin(work, dir), 'conf.d/20-work.conf:2');
  assert.deepEqual(
    work.overrides.map((o) => `${o.file.slice(dir.length + 1)}:${o.line} ${o.text}`),
    ['postgresql.conf:3 4MB', 'conf.d/10-first.conf:1 8MB'],
  );
  assert.deepEqual(c.settings.get('max_wal_size')!.value, memoryValue(2 * GiB));
  assert.deepEqual(c.settings.get('effective_cache_size')!.value, memoryValue(3 * GiB));
  assert.deepEqual(c.settings.get('maintenance_work_mem')!.value, memoryValue(256 * MiB), 'include_if_exists of a present file is read');
  assert.deepEqual(c.settings.get('shared_buffers')!.value, memoryValue(128 * MiB));
});

test('postgresql.auto.conf wins over every other file, even lines after include_dir', () => {
  const c = read();
  const rpc = c.settings.get('random_page_cost')!;
  assert.equal(rpc.origin, 'auto');
  assert.deepEqual(rpc.value, numberValue(1.5));
  assert.equal(describeOrigin(rpc, dir), 'postgresql.auto.conf:3 (ALTER SYSTEM)');
  const cpt = c.settings.get('checkpoint_timeout')!;
  assert.deepEqual(cpt.value, durationValue(20 * 60_000));
  assert.deepEqual(
    cpt.overrides.map((o) => o.text),
    ['10min'],
  );
});

test('pg_settings: the command line beats the files, running values and pending restarts are kept, defaults come from the server', () => {
  const c = read([
    row('shared_buffers', '32768', '8kB', 'command line', { context: 'postmaster' }),
    row('work_mem', '4096', 'kB', 'configuration file'),
    row('max_wal_size', '1024', 'MB', 'configuration file', { context: 'sighup' }),
    row('wal_buffers', '512', '8kB', 'default', { context: 'postmaster' }),
    row('max_connections', '100', null, 'default', { context: 'postmaster', pending_restart: true, boot_val: '100' }),
    row('temp_buffers', '2048', '8kB', 'user'),
  ]);
  const sb = c.settings.get('shared_buffers')!;
  assert.equal(sb.origin, 'command-line');
  assert.deepEqual(sb.value, memoryValue(256 * MiB));
  assert.equal(sb.overrides.length, 1, 'the file line it hides is remembered');
  const work = c.settings.get('work_mem')!;
  assert.equal(work.origin, 'file');
  assert.deepEqual(work.running, { text: '4MB', value: memoryValue(4 * MiB), pendingRestart: false }, 'the file says 16MB, the server still runs 4MB');
  const wb = c.settings.get('wal_buffers')!;
  assert.equal(wb.origin, 'default');
  assert.deepEqual(wb.value, memoryValue(4 * MiB), 'a computed default from the server');
  assert.equal(c.settings.get('temp_buffers'), undefined, "a session's own ALTER ROLE value is not the server's");
  assert.equal(c.fromServer, true);
});

test('planned contents laid over the files: the configuration as it will be', () => {
  const planned = new Map<string, string | null>([
    [join(dir, 'conf.d', '30-pgscale.conf'), 'work_mem = 32MB\n'],
    [join(dir, 'extra.conf'), 'max_wal_size = 4GB\n'],
  ]);
  const c = readEffectiveConfig({ configFile: conf, dataDir: dir, catalog, source: overlayFiles(realFiles, planned) });
  assert.deepEqual(c.settings.get('work_mem')!.value, memoryValue(32 * MiB));
  assert.deepEqual(c.settings.get('max_wal_size')!.value, memoryValue(4 * GiB));
  assert.equal(c.settings.get('effective_cache_size'), undefined, 'extra.conf as planned has no effective_cache_size');
});

test('a syntax error is bad input naming the file and the line; a missing include names the including line', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'pgscale-tune-eff-'));
  try {
    writeFileSync(join(tmp, 'postgresql.conf'), "shared_buffers = 128MB\ninclude 'bad.conf'\n");
    writeFileSync(join(tmp, 'bad.conf'), 'work_mem = 4MB\nmax_wal_size = = 1GB\n');
    assert.throws(
      () => readEffectiveConfig({ configFile: join(tmp, 'postgresql.conf'), dataDir: tmp, catalog }),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === 2 && e.message.includes(`${join(tmp, 'bad.conf')} line 2`),
    );
    writeFileSync(join(tmp, 'postgresql.conf'), "include 'gone.conf'\n");
    assert.throws(
      () => readEffectiveConfig({ configFile: join(tmp, 'postgresql.conf'), dataDir: tmp, catalog }),
      /gone\.conf \(included from .*postgresql\.conf line 1\)/,
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('diff grouping: per area, close enough is kept, auto.conf settings are changed there, command-line ones are blocked', () => {
  const set = recommend(profile, catalog);
  const server = [row('max_wal_size', '2048', 'MB', 'command line', { context: 'sighup' })];
  const c = read(server);
  const areas = planChanges(set, c, catalog, 'include');
  assert.deepEqual(
    areas.map((a) => a.area),
    ['memory', 'connections', 'parallelism', 'wal', 'io', 'autovacuum', 'profile'],
  );
  const byName = new Map(areas.flatMap((a) => a.settings).map((s) => [s.name, s]));
  assert.equal(byName.get('random_page_cost')!.via, 'auto', 'random_page_cost lives in postgresql.auto.conf');
  assert.equal(byName.get('random_page_cost')!.status, 'change');
  assert.equal(byName.get('shared_buffers')!.via, 'main');
  assert.equal(byName.get('max_wal_size')!.status, 'blocked', 'set on the command line: no file can change it');
  assert.equal(byName.get('max_connections')!.status, 'keep', '100 = 100');
  for (const a of areas) {
    assert.equal(a.restart + a.reload, a.changes.length);
    assert.ok(a.changes.every((ch) => ch.area === a.area));
  }
  const notes = precedenceNotes(areas, 'include');
  assert.ok(notes.some((n) => n.startsWith('random_page_cost is set in') && n.includes('ALTER SYSTEM')));
  assert.ok(notes.some((n) => n.startsWith("max_wal_size is set on the server's command line")));
  const walText = renderDiff(
    areas.filter((a) => a.area === 'wal'),
    dir,
  );
  const blockedLine = walText.split('\n').find((l) => l.startsWith(' max_wal_size = '))!;
  assert.match(blockedLine, /# server command line; cannot change it to \S+$/);
  assert.equal(blockedLine.match(/server command line/g)!.length, 1, 'said once');
  assert.equal(
    planChanges(set, c, catalog, 'sql')
      .flatMap((a) => a.changes)
      .every((ch) => ch.via === 'auto'),
    true,
    '--target sql writes everything through ALTER SYSTEM',
  );
});

test('the close-enough rule: within 10 % stays, beyond changes', () => {
  const set = recommend(profile, catalog);
  const sb = set.areas.memory.find((r) => r.name === 'shared_buffers')!;
  assert.equal(sb.value.kind, 'memory');
  const bytes = (sb.value as { bytes: number }).bytes;
  const near = new Map([[conf, `shared_buffers = ${Math.round((bytes * 0.92) / 1024)}kB\n`]]);
  const far = new Map([[conf, `shared_buffers = ${Math.round((bytes * 0.85) / 1024)}kB\n`]]);
  const status = (planned: Map<string, string>) =>
    planChanges(set, readEffectiveConfig({ configFile: conf, dataDir: '', catalog, source: overlayFiles(realFiles, planned) }), catalog, 'include')
      .flatMap((a) => a.settings)
      .find((s) => s.name === 'shared_buffers')!.status;
  assert.equal(status(near), 'keep');
  assert.equal(status(far), 'change');
});

test('a value held by the hysteresis is a context line that says why: the measurement near a boundary and the current value', () => {
  // postgresql.auto.conf has random_page_cost 1.5; 230µs a read is flash-fast (below 250µs), but within 25 % of the boundary
  const held = {
    ...profile,
    currentMeasured: { random_page_cost: numberValue(1.5) },
    storageMeasured: { randomRead: { path: dir, serialIops: 1e6 / 230, parallelIops: 1e6 / 23, depth: 16, fileBytes: 1 << 27, seconds: 1.5 } },
  };
  const areas = planChanges(recommend(held, catalog), read(), catalog, 'include');
  const rpc = areas.flatMap((a) => a.settings).find((s) => s.name === 'random_page_cost')!;
  assert.equal(rpc.status, 'keep');
  assert.match(
    renderDiff(areas, dir),
    /^ random_page_cost = 1\.5 +# postgresql\.auto\.conf:3 \(ALTER SYSTEM\); close enough to 1\.5 \(measured 230µs per random 8kB read .*within 25 % of the 250µs boundary, so the current 1\.5 stays/m,
  );
  const fresh = planChanges(recommend({ ...held, currentMeasured: {} }, catalog), read(), catalog, 'include');
  assert.equal(fresh.flatMap((a) => a.settings).find((s) => s.name === 'random_page_cost')!.text, '1.1', 'without a current value the class measured');
});

test('the unified diff: grouped by area, "-" the effective line with its origin, "+" the new one marked RESTART or reload with its reason', () => {
  const set = recommend(profile, catalog);
  const areas = planChanges(set, read(), catalog, 'include');
  const text = renderDiff(areas, dir);
  const changes = allChanges(areas);
  const restart = changes.filter((c) => c.recommended.restart).length;
  assert.match(
    text,
    new RegExp(`^${changes.length} settings to change in \\d areas: ${restart} needs? a server restart, ${changes.length - restart} a reload`),
  );
  assert.match(text, /^## memory: \d+ changes \(1 needs a restart, \d+ take effect on reload\)$/m);
  assert.match(text, /^--- effective\/memory$/m);
  assert.match(text, /^\+\+\+ pgscale\/memory$/m);
  assert.match(text, /^-shared_buffers = 128MB +# postgresql\.conf:2$/m);
  assert.match(text, /^\+shared_buffers = 4GB +# RESTART: 25 % of the 16 GB of RAM/m);
  assert.match(text, /^-random_page_cost = 1\.5 +# postgresql\.auto\.conf:3 \(ALTER SYSTEM\)$/m);
  assert.match(text, /^\+random_page_cost = 1\.1 +# reload: flash reads randomly/m);
  assert.match(
    text,
    /^ work_mem = 16MB +# conf\.d\/20-work\.conf:2; close enough to 17MB$/m,
    'a close-enough value is a context line, with where it comes from',
  );
  assert.match(text, /^-max_wal_size = 2GB +# extra\.conf:1$/m);
  assert.match(text, /^ checkpoint_completion_target = 0\.9 +# default; close enough to 0\.9$/m, 'unchanged settings are context lines');
  for (const c of changes) assert.ok(text.includes(`+${c.name} = ${c.text}`), `${c.name} in the diff`);
  assert.doesNotMatch(text, /^## connections/m, 'areas without a change have no block');
});

test('a configuration that already holds the recommendations proposes no change', () => {
  const set = recommend(profile, catalog);
  const planned = new Map<string, string | null>([
    [conf, render(set, 'include')],
    [join(dir, 'postgresql.auto.conf'), null],
  ]);
  const c = readEffectiveConfig({ configFile: conf, dataDir: dir, catalog, source: overlayFiles(realFiles, planned) });
  const areas = planChanges(set, c, catalog, 'include');
  assert.deepEqual(allChanges(areas), []);
  assert.match(renderDiff(areas), /^no change/);
});

test('edits: the include line becomes the last directive once, settings replaced in place or appended, postgresql.auto.conf in the server format', () => {
  const file = '/etc/pg/postgresql.conf';
  const target = '/etc/pg/conf.d/pgscale.conf';
  const line = "include_if_exists = 'conf.d/pgscale.conf'";
  const base = Buffer.from("shared_buffers = 128MB\ninclude_if_exists 'conf.d/pgscale.conf'\nwork_mem = 4MB\n");
  const once = applyEdits(file, base, [{ kind: 'include-last', target, line }], () => Buffer.alloc(0))!;
  assert.equal(once.toString(), `shared_buffers = 128MB\nwork_mem = 4MB\n${line}\n`);
  assert.equal(applyEdits(file, once, [{ kind: 'include-last', target, line }], () => Buffer.alloc(0))!.toString(), once.toString(), 'idempotent');
  const set = applyEdits(
    file,
    base,
    [
      { kind: 'set', name: 'shared_buffers', value: '4GB', line: 1, comment: 'pgscale tune (was 128MB)' },
      { kind: 'set', name: 'random_page_cost', value: '1.1', line: null, comment: 'pgscale tune' },
    ],
    () => Buffer.alloc(0),
  )!.toString();
  assert.equal(set.split('\n')[0], 'shared_buffers = 4GB\t\t# pgscale tune (was 128MB)');
  assert.match(set, /\nrandom_page_cost = 1\.1\t\t# pgscale tune\n$/);
  const auto = applyEdits('/d/postgresql.auto.conf', undefined, [{ kind: 'set-auto', name: 'work_mem', value: '64MB' }], () => Buffer.alloc(0))!.toString();
  assert.equal(auto, "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\nwork_mem = '64MB'\n");
  const again = applyEdits('/d/postgresql.auto.conf', Buffer.from(auto + "work_mem = '1MB'\n"), [{ kind: 'set-auto', name: 'work_mem', value: '8MB' }], () =>
    Buffer.alloc(0),
  )!.toString();
  assert.equal(again.match(/work_mem/g)!.length, 1, 'one entry per setting, as ALTER SYSTEM keeps it');
  assert.match(again, /work_mem = '8MB'/);
});

test('edits keep a non-UTF-8 file byte for byte and add only ASCII to it; restores are byte-identical', () => {
  const latin1 = Buffer.concat([Buffer.from('# R'), Buffer.from([0xe9]), Buffer.from('glage\nshared_buffers = 128MB\n')]);
  const out = applyEdits('/x/postgresql.conf', latin1, [{ kind: 'set', name: 'work_mem', value: '8MB', line: null, comment: 'why — 2 × 3' }], () =>
    Buffer.alloc(0),
  )!;
  assert.deepEqual(out.subarray(0, latin1.length), latin1);
  assert.ok([...out.subarray(latin1.length)].every((b) => b < 0x80));
  const backup = Buffer.from([0, 1, 2, 0xff]);
  assert.deepEqual(
    applyEdits('/x/f', Buffer.from('new'), [{ kind: 'restore', from: '/b', sha256: sha256(backup) }], () => backup),
    backup,
  );
  assert.throws(() => applyEdits('/x/f', undefined, [{ kind: 'restore', from: '/b', sha256: 'bad' }], () => backup), /does not match/);
  assert.equal(
    applyEdits('/x/f', Buffer.from('x'), [{ kind: 'delete' }], () => backup),
    null,
  );
});

test('flags: memory sizes with units, profiles and versions checked before anything is read', () => {
  assert.equal(parseMemoryFlag('64GB'), 64 * GiB);
  assert.equal(parseMemoryFlag('512mb'), 512 * MiB);
  assert.equal(parseMemoryFlag('1.5G'), 1.5 * GiB);
  for (const bad of ['0', '0GB', '12XB', 'lots', '64', '-1GB', '100MB'])
    assert.throws(
      () => parseMemoryFlag(bad),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === 2,
      bad,
    );
  assert.throws(() => checkTuneFlags({ profile: 'banking' }), /unknown --profile banking; known: oltp, web, dw, mixed, desktop, read-replica/);
  assert.throws(() => checkTuneFlags({ pgVersion: '12' }), /unknown --pg-version 12; known: 13–18/);
  assert.throws(() => checkTuneFlags({ pgVersion: 'latest' }), /unknown --pg-version latest/);
  assert.throws(() => checkTuneFlags({ storage: 'tape' }), /unknown --storage tape/);
  assert.deepEqual(checkTuneFlags({ profile: 'dw', memory: '8GB', pgVersion: '16' }), {
    workload: 'dw',
    memoryBytes: 8 * GiB,
    cpus: undefined,
    storage: undefined,
    maxConnections: undefined,
    pgMajor: 16,
  });
  assert.deepEqual(extensionWorkers("'timescaledb', pg_stat_statements,pg_cron"), { count: 9, libraries: ['timescaledb', 'pg_cron'] });
});
