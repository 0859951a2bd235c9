import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExitCode, PgscaleError } from '../../src/errors.js';
import {
  GiB,
  KNOWN_MAJORS,
  MiB,
  enumValue,
  findSetting,
  formatValue,
  loadCatalog,
  memoryValue,
  needsRestart,
  numberValue,
  parseSetting,
  toBaseUnits,
  validateValue,
  type GucValue,
} from '../../src/gucCatalog/index.js';
import {
  BACKEND_OVERHEAD_BYTES,
  RECOMMENDERS,
  TUNE_AREAS,
  WORKLOAD_PROFILES,
  budgetOf,
  changesNeeded,
  checkProposal,
  memoryBudget,
  recommend,
  storageClassFromFlag,
  workloadFromFlag,
  type RecommendationSet,
  type SystemProfile,
} from '../../src/tune/index.js';
import { HARDWARE, type Hardware } from './tune-fixtures.js';

const profileOf = (hw: Hardware, workload: SystemProfile['workload'], pgMajor: number): SystemProfile => Object.freeze({ ...hw, workload, pgMajor });

const settingsOf = (set: RecommendationSet) =>
  new Map(
    Object.values(set.areas)
      .flat()
      .map((r) => [r.name, r.value]),
  );
const valueOf = (set: RecommendationSet, name: string): GucValue | undefined => settingsOf(set).get(name);

/** Every hardware fixture × workload × catalog version. */
const everyCase = Object.entries(HARDWARE).flatMap(([hwName, hw]) =>
  WORKLOAD_PROFILES.flatMap((workload) =>
    KNOWN_MAJORS.map((major) => ({ label: `${hwName}, ${workload}, PostgreSQL ${major}`, profile: profileOf(hw, workload, major) })),
  ),
);

test('every fixture, workload and version: values the server accepts, restart from the catalog', () => {
  assert.equal(everyCase.length, 5 * 6 * 6);
  for (const { label, profile } of everyCase) {
    const catalog = loadCatalog(profile.pgMajor);
    const set = recommend(profile, catalog);
    assert.deepEqual(Object.keys(set.areas), [...TUNE_AREAS], label);
    for (const r of Object.values(set.areas).flat()) {
      const def = findSetting(catalog, r.name);
      assert.ok(def, `${label}: ${r.name} exists`);
      assert.deepEqual(validateValue(def, r.value), { valid: true }, `${label}: ${r.name} = ${formatValue(r.value)}`);
      assert.equal(r.restart, needsRestart(def), `${label}: ${r.name} restart`);
      assert.ok(r.reason.length > 10 && !r.reason.includes('\n'), `${label}: ${r.name} reason`);
    }
    for (const d of set.dropped) {
      const unbuilt = d.name === 'default_toast_compression' && !profile.buildFeatures.includes('lz4') && d.reason === '"lz4" needs a build with lz4';
      assert.ok(unbuilt || findSetting(catalog, d.name) === undefined, `${label}: ${d.name} dropped only when missing or not built`);
    }
    // the only warning a fixture may get is the budget's, when work_mem's floor does not fit the connections
    assert.deepEqual(set.warnings, set.memoryBudget.fits ? [] : [set.warnings[0]], label);
  }
});

test('every fixture, workload and version: the worst-case memory fits the effective memory with headroom', () => {
  for (const { label, profile } of everyCase) {
    const catalog = loadCatalog(profile.pgMajor);
    const set = recommend(profile, catalog);
    const b = set.memoryBudget;
    if (b.fits) assert.ok(b.totalBytes <= profile.memoryBytes - b.headroomBytes, label);
    else {
      // only where PostgreSQL's 4MB work_mem for the least administrable connection count does not fit: said, with numbers
      assert.deepEqual(valueOf(set, 'work_mem'), memoryValue(4 * MiB), label);
      assert.deepEqual(valueOf(set, 'max_connections'), numberValue(20), label);
      assert.match(set.warnings.join('\n'), /holds \d+ of the 20 connections; lower max_connections to \d+ and put a connection pooler/, label);
      assert.ok(profile.memoryBytes <= 1 * GiB, `${label}: only the tiny VM`);
    }
    const workMem = valueOf(set, 'work_mem') as Extract<GucValue, { kind: 'memory' }>;
    assert.ok(workMem.bytes >= 4 * MiB, `${label}: work_mem never below PostgreSQL's default`);
    assert.ok(b.headroomBytes >= Math.floor(0.1 * profile.memoryBytes), label);
    assert.deepEqual(budgetOf(set, profile, catalog), b, label);
    const get = (name: string) => toBaseUnits(findSetting(catalog, name)!, valueOf(set, name)!) as number;
    // the budget is made of the settings as recommended
    assert.equal(b.components.sharedMemory, get('shared_buffers') * 8192 + get('wal_buffers') * 8192, label);
    assert.equal(b.components.maintenance, get('maintenance_work_mem') * 1024, label);
  }
});

test('every fixture, workload and version: a re-run on the tuned cluster proposes no change', () => {
  for (const { label, profile } of everyCase) {
    const catalog = loadCatalog(profile.pgMajor);
    const set = recommend(profile, catalog);
    assert.deepEqual(changesNeeded(set, settingsOf(set)), [], label);
    // as the server would show them back: pg_settings.setting in base units, parsed again
    const shown = new Map(
      Object.values(set.areas)
        .flat()
        .map((r) => {
          const def = findSetting(catalog, r.name)!;
          return [
            r.name,
            parseSetting(
              def,
              String(toBaseUnits(def, r.value))
                .replace(/^true$/, 'on')
                .replace(/^false$/, 'off'),
            ),
          ] as const;
        }),
    );
    assert.deepEqual(changesNeeded(set, shown), [], label);
    assert.deepEqual(recommend(profile, catalog), set, `${label}: deterministic`);
  }
});

test('changesNeeded: missing settings and values off by more than 10 %', () => {
  const set = recommend(profileOf(HARDWARE['64GB/16 vCPU local NVMe']!, 'oltp', 17), loadCatalog(17));
  const current = settingsOf(set);
  current.set('shared_buffers', memoryValue(15 * GiB));
  current.set('random_page_cost', numberValue(4));
  current.delete('jit');
  assert.deepEqual(
    changesNeeded(set, current)
      .map((r) => r.name)
      .sort(),
    ['jit', 'random_page_cost'],
  );
});

test('64GB/16 vCPU NVMe: 25 % / 75 % memory, flash costs, lz4 WAL, io_uring on 18', () => {
  for (const major of KNOWN_MAJORS) {
    const set = recommend(profileOf(HARDWARE['64GB/16 vCPU local NVMe']!, 'oltp', major), loadCatalog(major));
    const v = (name: string) => valueOf(set, name);
    assert.deepEqual(v('shared_buffers'), memoryValue(16 * GiB));
    assert.deepEqual(v('effective_cache_size'), memoryValue(48 * GiB));
    assert.deepEqual(v('random_page_cost'), numberValue(1.1));
    assert.deepEqual(v('effective_io_concurrency'), numberValue(200));
    assert.deepEqual(v('max_connections'), numberValue(300));
    assert.deepEqual(v('max_parallel_workers'), numberValue(16));
    assert.deepEqual(v('max_parallel_workers_per_gather'), numberValue(2));
    // 16 parallel + 2 extension workers + 5 for logical replication
    assert.deepEqual(v('max_worker_processes'), numberValue(23));
    assert.deepEqual(v('huge_pages'), enumValue('try'));
    // local NVMe is fast enough that 13/14's pglz is not worth its CPU
    assert.deepEqual(v('wal_compression'), major >= 15 ? enumValue('lz4') : undefined, `${major} wal_compression`);
    assert.deepEqual(v('io_method'), major >= 18 ? enumValue('io_uring') : undefined);
    const pages = set.advisories.find((a) => a.sysctl === 'vm.nr_hugepages')!.value;
    assert.ok(pages * 2 * MiB >= 16 * GiB + 64 * MiB && pages * 2 * MiB < 17 * GiB + 128 * MiB, `nr_hugepages ${pages}`);
    const wm = v('work_mem') as Extract<GucValue, { kind: 'memory' }>;
    assert.ok(wm.bytes >= 16 * MiB && wm.bytes <= 64 * MiB, `work_mem ${formatValue(wm)}`);
  }
});

test('a 4GB container on a 256GB host: memory follows the cgroup limit', () => {
  const hw = HARDWARE['4GB/2 vCPU container on a 256GB host']!;
  for (const workload of WORKLOAD_PROFILES) {
    const set = recommend(profileOf(hw, workload, 18), loadCatalog(18));
    const mem = (name: string) => (valueOf(set, name) as Extract<GucValue, { kind: 'memory' }>).bytes;
    assert.ok(mem('shared_buffers') <= 1 * GiB, workload);
    assert.ok(mem('effective_cache_size') <= 3 * GiB, workload);
    assert.ok(set.memoryBudget.totalBytes <= 4 * GiB - set.memoryBudget.headroomBytes, workload);
    assert.match(set.areas.memory.find((r) => r.name === 'shared_buffers')!.reason, /4\.0 GB cgroup memory limit/);
    // containers often block io_uring's system calls
    assert.deepEqual(valueOf(set, 'io_method'), enumValue('worker'), workload);
  }
});

test("connections shrink to what memory carries; a user's count is kept and warned about", () => {
  const tiny = recommend(profileOf(HARDWARE['1GB/1 vCPU tiny VM']!, 'oltp', 16), loadCatalog(16));
  assert.deepEqual(valueOf(tiny, 'max_connections'), numberValue(20));
  // 20 is the floor, not what fits: the reason says how many do
  assert.match(tiny.areas.connections[0]!.reason, /would want 300, but with work_mem 4MB the memory budget holds only 16; 20 is the least/);
  assert.deepEqual(valueOf(tiny, 'max_parallel_workers_per_gather'), numberValue(0));

  const web8 = recommend(profileOf(HARDWARE['8GB/2 vCPU network SSD']!, 'oltp', 16), loadCatalog(16));
  const c8 = web8.areas.connections[0]!;
  assert.match(c8.reason, /would want 300, but only \d+ fit in memory with work_mem 4MB/);
  assert.equal(web8.memoryBudget.fits, true);

  const crowded = recommend({ ...profileOf(HARDWARE['1GB/1 vCPU tiny VM']!, 'oltp', 16), maxConnections: 2000 }, loadCatalog(16));
  assert.deepEqual(valueOf(crowded, 'max_connections'), numberValue(2000));
  assert.deepEqual(valueOf(crowded, 'work_mem'), memoryValue(4 * MiB), 'never starved below the default');
  assert.equal(crowded.memoryBudget.fits, false);
  assert.match(crowded.warnings.join('\n'), /memory budget does not fit .*holds 16 of the 2000 connections; lower max_connections to 16/);
});

test('WAL: sized from the write rate, bounded by the WAL volume', () => {
  const hdd = recommend(profileOf(HARDWARE['16GB/4 vCPU HDD']!, 'oltp', 17), loadCatalog(17));
  // 8MB/s × 900s × 1.9 = 13680MB, rounded up
  const maxWal = valueOf(hdd, 'max_wal_size') as Extract<GucValue, { kind: 'memory' }>;
  assert.ok(maxWal.bytes >= 13680 * MiB && maxWal.bytes <= 14336 * MiB, formatValue(maxWal));
  assert.deepEqual(valueOf(hdd, 'wal_compression'), enumValue('pglz'), 'no lz4 in the build, slow disk');

  const net = recommend(profileOf(HARDWARE['8GB/2 vCPU network SSD']!, 'dw', 16), loadCatalog(16));
  assert.deepEqual(valueOf(net, 'max_wal_size'), memoryValue(10 * GiB), "half the 20GB WAL volume, not dw's 16GB");
  assert.match(net.areas.wal.find((r) => r.name === 'max_wal_size')!.reason, /half the 20GB WAL volume/);

  const squeezed = recommend({ ...profileOf(HARDWARE['16GB/4 vCPU HDD']!, 'oltp', 17), walVolumeBytes: 8 * GiB }, loadCatalog(17));
  assert.deepEqual(valueOf(squeezed, 'max_wal_size'), memoryValue(4 * GiB));
  assert.match(squeezed.warnings.join('\n'), /WAL volume is too small for the write rate/);
});

test('version-appropriate values: wal_compression type and io settings by version', () => {
  const net = (major: number) => recommend(profileOf(HARDWARE['8GB/2 vCPU network SSD']!, 'mixed', major), loadCatalog(major));
  assert.deepEqual(valueOf(net(13), 'wal_compression'), { kind: 'bool', value: true });
  assert.deepEqual(valueOf(net(15), 'wal_compression'), enumValue('lz4'));
  for (const major of [13, 14, 15, 16]) {
    assert.deepEqual(
      net(major).dropped.map((d) => d.name),
      ['io_combine_limit', 'io_max_combine_limit', 'io_method', 'io_workers'],
      `${major}`,
    );
  }
  assert.deepEqual(valueOf(net(17), 'io_combine_limit'), memoryValue(256 * 1024));
  assert.deepEqual(
    net(17).dropped.map((d) => d.name),
    ['io_max_combine_limit', 'io_method', 'io_workers'],
  );
  assert.deepEqual(net(18).dropped, []);
  assert.deepEqual(valueOf(net(18), 'io_method'), enumValue('worker'), 'no liburing in this build');
  assert.equal(net(17).areas.autovacuum.find((r) => r.name === 'autovacuum_max_workers')!.restart, true);
  assert.equal(net(18).areas.autovacuum.find((r) => r.name === 'autovacuum_max_workers')!.restart, false, 'sighup from 18 on');
});

test('read-replica: hot standby feedback, bounded replay delay, parallel reads', () => {
  const set = recommend(profileOf(HARDWARE['64GB/16 vCPU local NVMe']!, 'read-replica', 16), loadCatalog(16));
  assert.deepEqual(valueOf(set, 'hot_standby'), { kind: 'bool', value: true });
  assert.deepEqual(valueOf(set, 'hot_standby_feedback'), { kind: 'bool', value: true });
  assert.deepEqual(valueOf(set, 'max_standby_streaming_delay'), { kind: 'duration', ms: 120_000 });
  assert.deepEqual(valueOf(set, 'max_parallel_workers_per_gather'), numberValue(4));
  assert.match(set.areas.connections[0]!.reason, /fewer than its primary/);
});

test('checkProposal: unknown settings and unbuilt values dropped, out-of-range values clamped', () => {
  const catalog = loadCatalog(16);
  const profile = profileOf(HARDWARE['1GB/1 vCPU tiny VM']!, 'web', 16);
  assert.deepEqual(checkProposal({ name: 'io_method', value: enumValue('worker'), reason: 'x' }, catalog, profile), {
    dropped: 'not a setting of PostgreSQL 16',
  });
  assert.deepEqual(checkProposal({ name: 'wal_compression', value: enumValue('lz4'), reason: 'x' }, catalog, profile), {
    dropped: '"lz4" needs a build with lz4',
  });
  assert.deepEqual(checkProposal({ name: 'server_version_num', value: numberValue(1), reason: 'x' }, catalog, profile), {
    dropped: 'read-only in PostgreSQL 16',
  });
  const clamped = checkProposal({ name: 'effective_io_concurrency', value: numberValue(5000), reason: 'deep queues' }, catalog, profile);
  assert.deepEqual(clamped, {
    kept: { name: 'effective_io_concurrency', value: numberValue(1000), reason: "deep queues (5000 clamped to PostgreSQL 16's maximum 1000)", restart: false },
  });
  assert.throws(() => checkProposal({ name: 'work_mem', value: numberValue(4), reason: 'x' }, catalog, profile), /work_mem takes a memory value/);
});

test('recommenders are pure: same input, same output, profile untouched', () => {
  const profile = profileOf(HARDWARE['8GB/2 vCPU network SSD']!, 'web', 18);
  const catalog = loadCatalog(18);
  for (const area of TUNE_AREAS) assert.deepEqual(RECOMMENDERS[area](profile, catalog), RECOMMENDERS[area](profile, catalog), area);
  assert.ok(Object.isFrozen(profile));
});

test('memoryBudget: the sum of its parts against memory less headroom', () => {
  const b = memoryBudget({
    effectiveMemoryBytes: 10 * GiB,
    sharedBuffersBytes: 2 * GiB,
    walBuffersBytes: 16 * MiB,
    maxConnections: 100,
    maxParallelWorkers: 4,
    workMemBytes: 4 * MiB,
    hashMemMultiplier: 2,
    nodesPerQuery: 2,
    maintenanceWorkMemBytes: 512 * MiB,
    autovacuumMaxWorkers: 3,
    autovacuumWorkMemBytes: 256 * MiB,
  });
  assert.equal(b.headroomBytes, 1 * GiB);
  assert.equal(b.limitBytes, 9 * GiB);
  assert.deepEqual(b.components, {
    sharedMemory: 2 * GiB + 16 * MiB,
    backendOverhead: 107 * BACKEND_OVERHEAD_BYTES,
    queryMemory: 104 * 16 * MiB,
    maintenance: 512 * MiB,
    autovacuum: 768 * MiB,
  });
  assert.equal(
    b.totalBytes,
    Object.values(b.components).reduce((a, c) => a + c),
  );
  assert.equal(b.fits, true);
  assert.equal(
    memoryBudget({
      ...b.components,
      effectiveMemoryBytes: 1 * GiB,
      sharedBuffersBytes: 1 * GiB,
      walBuffersBytes: 0,
      maxConnections: 1,
      maxParallelWorkers: 0,
      workMemBytes: 0,
      hashMemMultiplier: 1,
      nodesPerQuery: 1,
      maintenanceWorkMemBytes: 0,
      autovacuumMaxWorkers: 0,
      autovacuumWorkMemBytes: 0,
    }).fits,
    false,
  );
});

test('profile checks and CLI words', () => {
  const profile = profileOf(HARDWARE['1GB/1 vCPU tiny VM']!, 'web', 16);
  const badInput = (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.BadInput;
  assert.throws(() => recommend({ ...profile, memoryBytes: 0 }, loadCatalog(16)), badInput);
  assert.throws(() => recommend({ ...profile, vcpus: 0.5 }, loadCatalog(16)), badInput);
  assert.throws(() => recommend({ ...profile, maxConnections: 0 }, loadCatalog(16)), badInput);
  assert.throws(() => recommend(profile, loadCatalog(17)), /profile is for PostgreSQL 16/);
  assert.equal(storageClassFromFlag('nvme'), 'local-nvme');
  assert.equal(storageClassFromFlag('network-ssd'), 'network-block');
  assert.equal(storageClassFromFlag('ssd'), 'ssd');
  assert.equal(storageClassFromFlag('hdd'), 'hdd');
  assert.throws(
    () => storageClassFromFlag('toString'),
    (e: unknown) => badInput(e) && /known: nvme, network-ssd, ssd, hdd/.test((e as Error).message),
  );
  assert.equal(workloadFromFlag('read-replica'), 'read-replica');
  assert.throws(() => workloadFromFlag('batch'), badInput);
});
