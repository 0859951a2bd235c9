import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExitCode, PgscaleError } from '../../src/errors.js';
import {
  BUILD_OPTIONAL_VALUES,
  GiB,
  KiB,
  KNOWN_MAJORS,
  MiB,
  REMOVALS,
  RENAMES,
  clampValue,
  convertUnits,
  durationValue,
  enumValue,
  findSetting,
  formatDuration,
  formatMemory,
  formatValue,
  fromBaseUnits,
  isCloseEnough,
  loadCatalog,
  memoryValue,
  needsRestart,
  numberValue,
  boolValue,
  parseQuantity,
  parseSetting,
  removedSettings,
  toBaseUnits,
  validateValue,
  valueKindOf,
  type GucDefinition,
} from '../../src/gucCatalog/index.js';
import { readRawCatalog } from '../../src/gucCatalog/catalog.js';

const setting = (major: number, name: string): GucDefinition => {
  const def = findSetting(loadCatalog(major), name);
  assert.ok(def, `${name} in ${major}`);
  return def;
};

const isBadInput = (message: string) => (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.BadInput && e.message === message;

test("a catalog per major 13–18, from each version's own pg_settings", () => {
  assert.deepEqual(KNOWN_MAJORS, [13, 14, 15, 16, 17, 18]);
  for (const major of KNOWN_MAJORS) {
    const catalog = loadCatalog(major);
    assert.equal(catalog.major, major);
    assert.match(catalog.serverVersion, new RegExp(`^${major}\\.\\d+`));
    assert.ok(catalog.settings.size > 300, `${major} has ${catalog.settings.size} settings`);
    const sb = setting(major, 'shared_buffers');
    assert.deepEqual([sb.type, sb.unit, sb.context, sb.min], ['integer', '8kB', 'postmaster', 16]);
    assert.equal(needsRestart(sb), true);
    assert.equal(needsRestart(setting(major, 'work_mem')), false);
    for (const def of catalog.settings.values()) {
      if (def.type === 'integer' || def.type === 'real') assert.ok(def.min! <= def.max!, `${major} ${def.name} bounds`);
      if (def.type === 'enum') assert.ok(def.enumValues!.length > 0, `${major} ${def.name} enum values`);
    }
  }
  assert.equal(loadCatalog('17'), loadCatalog(17), 'cached, and a flag string works');
});

test('an unknown --pg-version is bad input naming the known range', () => {
  assert.throws(() => loadCatalog(12), isBadInput('unknown --pg-version 12; known: 13–18'));
  assert.throws(() => loadCatalog('19'), isBadInput('unknown --pg-version 19; known: 13–18'));
  assert.throws(() => loadCatalog('sixteen'), isBadInput('unknown --pg-version sixteen; known: 13–18'));
});

test('settings are found in any case; version-specific ones only where they exist', () => {
  assert.equal(findSetting(loadCatalog(16), 'DateStyle')?.name, 'DateStyle');
  assert.equal(findSetting(loadCatalog(16), 'datestyle')?.name, 'DateStyle');
  assert.equal(findSetting(loadCatalog(17), 'io_method'), undefined);
  assert.deepEqual(setting(18, 'io_method').enumValues, ['sync', 'worker', 'io_uring']);
  assert.equal(setting(13, 'wal_compression').type, 'bool');
  assert.equal(setting(15, 'wal_compression').type, 'enum');
});

test('every rename: old name in the older catalog only, new name from its version on', () => {
  for (const r of RENAMES) {
    const before = r.major - 1;
    if (KNOWN_MAJORS.includes(before)) {
      assert.ok(findSetting(loadCatalog(before), r.oldName), `${r.oldName} in ${before}`);
      assert.equal(findSetting(loadCatalog(before), r.newName), undefined, `${r.newName} not yet in ${before}`);
    }
    for (const major of KNOWN_MAJORS.filter((m) => m >= r.major)) {
      assert.ok(findSetting(loadCatalog(major), r.newName), `${r.newName} in ${major}`);
      assert.equal(findSetting(loadCatalog(major), r.oldName), undefined, `${r.oldName} gone from ${major}`);
    }
    assert.ok(r.reason.length > 10 && !r.reason.includes('\n'), `${r.oldName} has a one-line reason`);
  }
});

test('every removal: in the version before, in none from its version on', () => {
  for (const r of REMOVALS) {
    if (KNOWN_MAJORS.includes(r.major - 1)) assert.ok(findSetting(loadCatalog(r.major - 1), r.name), `${r.name} in ${r.major - 1}`);
    for (const major of KNOWN_MAJORS.filter((m) => m >= r.major)) {
      assert.equal(findSetting(loadCatalog(major), r.name), undefined, `${r.name} gone from ${major}`);
    }
    assert.ok(r.reason.length > 10 && !r.reason.includes('\n'), `${r.name} has a one-line reason`);
  }
});

test('wal_keep_segments becomes wal_keep_size: segments × segment size', () => {
  const rename = RENAMES.find((r) => r.oldName === 'wal_keep_segments')!;
  assert.deepEqual(rename.convertValue!(numberValue(32), { walSegmentBytes: 16 * MiB }), memoryValue(512 * MiB));
  assert.equal(formatValue(rename.convertValue!(numberValue(64), { walSegmentBytes: 64 * MiB })), '4GB');
});

test('removedSettings: what the newer server lacks, with renames and reasons', () => {
  const byName = (from: number, to: number) => new Map(removedSettings(loadCatalog(from), loadCatalog(to)).map((r) => [r.name, r]));
  const r15to16 = byName(15, 16);
  assert.equal(r15to16.get('force_parallel_mode')?.rename?.newName, 'debug_parallel_query');
  assert.match(r15to16.get('promote_trigger_file')!.reason, /^removed in 16: .*pg_promote/);
  assert.match(r15to16.get('extension_destdir')!.reason, /Debian/);
  assert.equal(r15to16.has('shared_buffers'), false);

  const r13to18 = byName(13, 18);
  for (const name of [
    'operator_precedence_warning',
    'vacuum_cleanup_index_scale_factor',
    'stats_temp_directory',
    'promote_trigger_file',
    'old_snapshot_threshold',
    'ssl_ecdh_curve',
  ]) {
    assert.ok(r13to18.has(name), name);
  }
  assert.equal(r13to18.get('ssl_ecdh_curve')?.rename?.oldNameStillAccepted, true);
  for (const r of r13to18.values()) assert.ok(r.reason.length > 0, r.name);
  assert.deepEqual(removedSettings(loadCatalog(17), loadCatalog(17)), []);
});

test('build-optional enum values: spelled as some build prints them, present from their version on', () => {
  for (const o of BUILD_OPTIONAL_VALUES) {
    const printed = KNOWN_MAJORS.some((m) => readRawCatalog(m).settings.some((s) => s.name === o.setting && s.enumValues?.includes(o.value)));
    assert.ok(printed, `some generated catalog lists ${o.setting}=${o.value}`);
    for (const major of KNOWN_MAJORS) {
      const def = findSetting(loadCatalog(major), o.setting);
      if (major >= o.since) {
        assert.ok(def?.enumValues?.includes(o.value), `${major} ${o.setting} has ${o.value}`);
        assert.equal(def?.buildOptionalValues?.[o.value], o.feature);
      } else {
        assert.ok(!def?.enumValues?.includes(o.value), `${major} ${o.setting} lacks ${o.value}`);
      }
    }
  }
  // the v16 test-bed build has no lz4: the value comes from the table, not the generated file
  assert.ok(
    !readRawCatalog(16)
      .settings.find((s) => s.name === 'wal_compression')!
      .enumValues!.includes('lz4'),
  );
  assert.ok(setting(16, 'wal_compression').enumValues!.includes('lz4'));
});

test('units: conversions and the spelling postgresql.conf expects', () => {
  assert.equal(formatMemory(16 * GiB), '16GB');
  assert.equal(formatMemory(256 * MiB), '256MB');
  assert.equal(formatMemory(64 * KiB), '64kB');
  assert.equal(formatMemory(1536 * MiB), '1536MB');
  assert.equal(formatMemory(1536), '1536B');
  assert.equal(formatMemory(2 * 1024 * GiB), '2TB');
  assert.equal(formatDuration(15 * 60_000), '15min');
  assert.equal(formatDuration(30_000), '30s');
  assert.equal(formatDuration(90_000), '90s');
  assert.equal(formatDuration(3_600_000), '1h');
  assert.equal(formatDuration(86_400_000), '1d');
  assert.equal(formatDuration(2), '2ms');
  assert.equal(formatDuration(0.5), '0.5ms');
  assert.equal(convertUnits(2, 'GB', '8kB'), 262144);
  assert.equal(convertUnits(15, 'min', 's'), 900);
  assert.equal(convertUnits(1, 'TB', 'MB'), 1024 * 1024);
  assert.throws(() => convertUnits(1, 'GB', 's'), /cannot convert/);
  assert.equal(parseQuantity('128MB', 'kB'), 131072);
  assert.equal(parseQuantity('0.5GB', 'MB'), 512);
  assert.equal(parseQuantity('15min', 's'), 900);
  assert.equal(parseQuantity(' 10 ', 'kB'), 10);
  assert.throws(
    () => parseQuantity('10mb', 'kB'),
    (e: unknown) => e instanceof PgscaleError && /unknown unit "mb"/.test(e.message),
  );
  assert.throws(() => parseQuantity('10s', 'kB'), PgscaleError);
  assert.throws(() => parseQuantity('lots', 'kB'), PgscaleError);
});

test('values: typed from pg_settings or file text, and back', () => {
  const sb = setting(17, 'shared_buffers');
  assert.deepEqual(parseSetting(sb, '16384'), memoryValue(128 * MiB));
  assert.deepEqual(parseSetting(sb, '2GB'), memoryValue(2 * GiB));
  assert.equal(toBaseUnits(sb, memoryValue(128 * MiB)), 16384);
  assert.deepEqual(fromBaseUnits(sb, 262144), memoryValue(2 * GiB));
  const timeout = setting(17, 'checkpoint_timeout');
  assert.deepEqual(parseSetting(timeout, '300'), durationValue(300_000));
  assert.deepEqual(parseSetting(timeout, '15min'), durationValue(900_000));
  assert.equal(toBaseUnits(timeout, durationValue(900_000)), 900);
  const jit = setting(17, 'jit');
  for (const [text, b] of [
    ['on', true],
    ['OFF', false],
    ['of', false],
    ['t', true],
    ['yes', true],
    ['0', false],
  ] as const) {
    assert.deepEqual(parseSetting(jit, text), boolValue(b), text);
  }
  assert.throws(() => parseSetting(jit, 'o'), PgscaleError);
  assert.deepEqual(parseSetting(setting(17, 'wal_compression'), 'LZ4'), enumValue('lz4'));
  assert.deepEqual(parseSetting(setting(17, 'huge_pages'), 'true'), enumValue('on'));
  assert.throws(() => parseSetting(setting(17, 'wal_compression'), 'snappy'), PgscaleError);
  assert.deepEqual(parseSetting(setting(17, 'random_page_cost'), '1.1'), numberValue(1.1));
  assert.equal(valueKindOf(setting(17, 'search_path')), undefined);
});

test('every numeric setting of every catalog: bounds and default survive formatting and parsing', () => {
  for (const major of KNOWN_MAJORS) {
    for (const def of loadCatalog(major).settings.values()) {
      if (def.type !== 'integer' && def.type !== 'real') continue;
      for (const amount of [def.min!, def.max!, def.default as number]) {
        const text = formatValue(fromBaseUnits(def, amount));
        assert.equal(toBaseUnits(def, parseSetting(def, text)), amount, `${major} ${def.name} ${amount} → "${text}"`);
      }
    }
  }
});

test("validation and clamping against a version's bounds and values", () => {
  const workMem = setting(16, 'work_mem');
  assert.deepEqual(validateValue(workMem, memoryValue(4 * MiB)), { valid: true });
  assert.deepEqual(validateValue(workMem, memoryValue(32 * KiB)), { valid: false, reason: 'work_mem must be at least 64kB' });
  assert.deepEqual(validateValue(workMem, numberValue(4)), { valid: false, reason: 'work_mem takes a memory value, not number' });
  const eic = setting(16, 'effective_io_concurrency');
  assert.deepEqual(validateValue(eic, numberValue(2000)), { valid: false, reason: 'effective_io_concurrency must be at most 1000' });
  assert.deepEqual(clampValue(eic, numberValue(2000)), { value: numberValue(1000), clamped: { bound: 'max', limit: '1000' } });
  assert.deepEqual(clampValue(eic, numberValue(200)), { value: numberValue(200) });
  assert.deepEqual(clampValue(workMem, memoryValue(1 * KiB)), { value: memoryValue(64 * KiB), clamped: { bound: 'min', limit: '64kB' } });
  const walCompression = setting(16, 'wal_compression');
  assert.deepEqual(validateValue(walCompression, enumValue('zstd')), { valid: true });
  assert.equal(validateValue(walCompression, enumValue('snappy')).valid, false);
  assert.equal(validateValue(setting(14, 'wal_compression'), enumValue('lz4')).valid, false);
  assert.deepEqual(validateValue(setting(14, 'wal_compression'), boolValue(true)), { valid: true });
});

test('close enough: within 10 % for sizes, durations and counts; equal for enums, booleans and sentinels', () => {
  assert.equal(isCloseEnough(memoryValue(15 * GiB), memoryValue(16 * GiB)), true);
  assert.equal(isCloseEnough(memoryValue(14 * GiB), memoryValue(16 * GiB)), false);
  assert.equal(isCloseEnough(durationValue(840_000), durationValue(900_000)), true);
  assert.equal(isCloseEnough(numberValue(1), numberValue(1.1)), true);
  assert.equal(isCloseEnough(numberValue(2), numberValue(3)), false);
  assert.equal(isCloseEnough(numberValue(-1), numberValue(1)), false);
  assert.equal(isCloseEnough(numberValue(0), numberValue(0)), true);
  assert.equal(isCloseEnough(enumValue('lz4'), enumValue('lz4')), true);
  assert.equal(isCloseEnough(enumValue('lz4'), enumValue('zstd')), false);
  assert.equal(isCloseEnough(boolValue(true), boolValue(false)), false);
  assert.equal(isCloseEnough(boolValue(true), enumValue('on')), false);
});
