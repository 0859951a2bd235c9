/**
 * Storage measured, not guessed; WAL rate; the rules for the settings the anchors set and pgscale now
 * considers (jit, lz4 TOAST, locks for partitions); work_mem's floor and version defaults. Pure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GiB, MiB, enumValue, loadCatalog, memoryValue, numberValue, boolValue, type GucValue } from '../../src/gucCatalog/index.js';
import { connectionsThatFit, memoryBudget, memoryHeadroom, recommend, type RecommendationSet, type SystemProfile } from '../../src/tune/index.js';
import { parseFsyncOutput, fullVolumeReason, walRateFrom } from '../../src/tune/measure.js';
import { probeRandomReads, readsPerSecond } from '../../src/tune/randomReads.js';
import { groupCommitFromFsync, ioConcurrencyFromProbe, randomPageCostFromProbe, walSyncMethodFromFsync } from '../../src/tune/recommend/measured.js';
import { locksForPartitions } from '../../src/tune/recommend/connections.js';
import { parseWalRateFlag } from '../../src/tune/flags.js';
import { checkTuneFlags } from '../../src/tune/decide.js';
import { render } from '../../src/tune/render.js';
import type { RandomReadMeasurement } from '../../src/tune/types.js';
import { fixturesDir } from '../helpers/paths.js';
import { HARDWARE } from './tune-fixtures.js';

const valueOf = (set: RecommendationSet, name: string): GucValue | undefined =>
  Object.values(set.areas)
    .flat()
    .find((r) => r.name === name)?.value;
const reasonOf = (set: RecommendationSet, name: string): string =>
  Object.values(set.areas)
    .flat()
    .find((r) => r.name === name)!.reason;
const profile = (over: Partial<SystemProfile> & Pick<SystemProfile, 'pgMajor'>): SystemProfile => ({
  ...HARDWARE['8GB/2 vCPU network SSD']!,
  workload: 'oltp',
  ...over,
});
const run = (p: SystemProfile) => recommend(p, loadCatalog(p.pgMajor));

test('headroom scales with memory: 20 % on small hosts, 256MB up to 2.5GB, 10 % above', () => {
  assert.equal(memoryHeadroom(512 * MiB), Math.floor(0.2 * 512 * MiB));
  assert.equal(memoryHeadroom(1 * GiB), Math.floor(0.2 * GiB));
  assert.equal(memoryHeadroom(2 * GiB), 256 * MiB);
  assert.equal(memoryHeadroom(64 * GiB), Math.floor(6.4 * GiB));
});

test("work_mem: PostgreSQL's 4MB at least; a budget that cannot hold it says how many connections fit, with a pooler", () => {
  const small = run(profile({ pgMajor: 17, memoryBytes: 512 * MiB, vcpus: 1, storage: 'ssd' }));
  assert.deepEqual(valueOf(small, 'work_mem'), memoryValue(4 * MiB));
  assert.equal(small.memoryBudget.fits, false);
  assert.match(reasonOf(small, 'work_mem'), /^PostgreSQL's default 4MB, kept as the floor: .* would need work_mem of \d+kB .* does not fit/);
  assert.doesNotMatch(reasonOf(small, 'work_mem'), /\bfits\b/);
  const warning = small.warnings.join('\n');
  const fit = Number(/holds (\d+) of the 20 connections/.exec(warning)![1]);
  assert.match(warning, new RegExp(`lower max_connections to ${fit} and put a connection pooler \\(e\\.g\\. PgBouncer, pool size at most ${fit}\\)`));
  assert.match(reasonOf(small, 'max_connections'), new RegExp(`memory budget holds only ${fit}; 20 is the least`));
  // the rendered header and the reasons agree: DOES NOT FIT, and no "fits in" under it
  const conf = render(small, 'conf');
  assert.match(conf, /DOES NOT FIT/);
  assert.doesNotMatch(conf, /fits with shared_buffers/);

  // 1000 connections asked for on 32GB: kept, work_mem 4MB, and the count that fits is exact
  const crowded = run(profile({ pgMajor: 17, memoryBytes: 32 * GiB, vcpus: 8, storage: 'ssd', maxConnections: 1000 }));
  assert.deepEqual(valueOf(crowded, 'work_mem'), memoryValue(4 * MiB));
  const k = Number(/holds (\d+) of the 1000 connections/.exec(crowded.warnings.join('\n'))![1]);
  const input = {
    effectiveMemoryBytes: 32 * GiB,
    sharedBuffersBytes: (valueOf(crowded, 'shared_buffers') as { bytes: number }).bytes,
    walBuffersBytes: (valueOf(crowded, 'wal_buffers') as { bytes: number }).bytes,
    maxParallelWorkers: 8,
    workMemBytes: 4 * MiB,
    hashMemMultiplier: 2,
    nodesPerQuery: 2,
    maintenanceWorkMemBytes: (valueOf(crowded, 'maintenance_work_mem') as { bytes: number }).bytes,
    autovacuumMaxWorkers: 3,
    autovacuumWorkMemBytes: (valueOf(crowded, 'autovacuum_work_mem') as { bytes: number }).bytes,
  };
  assert.equal(connectionsThatFit(input), k);
  assert.equal(memoryBudget({ ...input, maxConnections: k }).fits, true);
  assert.equal(memoryBudget({ ...input, maxConnections: k + 1 }).fits, false);
});

test('the 1GB VACUUM limit is claimed, and applied, only before 17', () => {
  const big = (pgMajor: number) => run(profile({ pgMajor, memoryBytes: 512 * GiB, vcpus: 32, storage: 'local-nvme', workload: 'dw' }));
  assert.deepEqual(valueOf(big(16), 'autovacuum_work_mem'), memoryValue(1 * GiB));
  assert.match(reasonOf(big(16), 'autovacuum_work_mem'), /no more than 1GB before PostgreSQL 17/);
  assert.deepEqual(valueOf(big(17), 'autovacuum_work_mem'), memoryValue(4 * GiB));
  assert.match(reasonOf(big(17), 'autovacuum_work_mem'), /PostgreSQL 17 has no 1GB VACUUM limit/);
});

test("prefetch never below the version's default without a reason: 18's 16 on an HDD, maintenance consistent", () => {
  const hdd = (pgMajor: number) => run(profile({ pgMajor, storage: 'hdd' }));
  assert.deepEqual(valueOf(hdd(17), 'effective_io_concurrency'), numberValue(2));
  assert.equal(valueOf(hdd(17), 'maintenance_io_concurrency'), undefined, 'the default 10 stays');
  assert.deepEqual(valueOf(hdd(18), 'effective_io_concurrency'), numberValue(16));
  assert.match(reasonOf(hdd(18), 'effective_io_concurrency'), /PostgreSQL 18's default 16, not the 2/);
  assert.equal(valueOf(hdd(18), 'maintenance_io_concurrency'), undefined, "18's default 16 stays, as deep as queries");
  const nvme = run(profile({ pgMajor: 18, storage: 'local-nvme' }));
  assert.deepEqual(valueOf(nvme, 'maintenance_io_concurrency'), valueOf(nvme, 'effective_io_concurrency'));
});

const probe = (serialIops: number, parallelIops: number): RandomReadMeasurement => ({
  path: '/d',
  serialIops,
  parallelIops,
  depth: 16,
  fileBytes: 128 * MiB,
  seconds: 1.5,
});

test('random reads measured: random_page_cost from latency, prefetch depth from scaling', () => {
  assert.equal(randomPageCostFromProbe(probe(10_000, 80_000)).value, 1.1);
  assert.equal(randomPageCostFromProbe(probe(2_000, 20_000)).value, 1.5);
  assert.equal(randomPageCostFromProbe(probe(500, 600)).value, 2);
  assert.equal(randomPageCostFromProbe(probe(120, 130)).value, 4);
  assert.match(randomPageCostFromProbe(probe(10_000, 80_000)).reason, /measured 100µs per random 8kB read .*10,?000\/s one at a time/);
  assert.equal(ioConcurrencyFromProbe(probe(10_000, 100_000)).value, 200);
  assert.equal(ioConcurrencyFromProbe(probe(10_000, 40_000)).value, 64);
  assert.equal(ioConcurrencyFromProbe(probe(150, 160)).value, 2);
  assert.match(ioConcurrencyFromProbe(probe(10_000, 40_000)).reason, /with 16 in flight \(×4\)/);

  // the measurement wins over the class: a "virtual-disk" that reads like flash is tuned as flash
  const measured = run(profile({ pgMajor: 17, storage: 'virtual-disk', storageMeasured: { randomRead: probe(8_000, 90_000) } }));
  assert.deepEqual(valueOf(measured, 'random_page_cost'), numberValue(1.1));
  assert.deepEqual(valueOf(measured, 'effective_io_concurrency'), numberValue(200));
  assert.match(reasonOf(measured, 'random_page_cost'), /^measured 125µs/);
  // and on 18 a slow measured disk still keeps the default 16
  const slow18 = run(profile({ pgMajor: 18, storage: 'ssd', storageMeasured: { randomRead: probe(150, 160) } }));
  assert.deepEqual(valueOf(slow18, 'effective_io_concurrency'), numberValue(16));
  assert.match(reasonOf(slow18, 'effective_io_concurrency'), /default 16, not the 2 .*measured 150\/s/);
});

test('pg_test_fsync: its first section parsed; wal_sync_method only for a clear win; commit_delay half a slow flush', () => {
  const text = readFileSync(join(fixturesDir, 'pg_test_fsync', 'pg18-virtio.txt'), 'utf8');
  assert.deepEqual(parseFsyncOutput(text), { open_datasync: 458.239, fdatasync: 390.443, fsync: 581.576, open_sync: 836.108 });
  assert.deepEqual(parseFsyncOutput('pg_test_fsync: could not open'), {});
  const fsync = (fdatasync: number, open_datasync: number) => ({ path: '/w', seconds: 1, opsPerSecond: { fdatasync, open_datasync } });
  assert.equal(walSyncMethodFromFsync(fsync(390, 458))!.value, 'fdatasync', 'a 17 % edge is noise at -s 1');
  assert.equal(walSyncMethodFromFsync(fsync(390, 600))!.value, 'open_datasync');
  assert.match(walSyncMethodFromFsync(fsync(390, 458))!.reason, /fdatasync 390\/s, open_datasync 458\/s/);
  assert.equal(walSyncMethodFromFsync({ path: '/w', seconds: 1, opsPerSecond: { fsync: 100 } }), undefined);
  assert.deepEqual(groupCommitFromFsync(2561, 'oltp'), { delayUs: 1281, siblings: 5, reason: groupCommitFromFsync(2561, 'oltp')!.reason });
  assert.match(groupCommitFromFsync(2561, 'oltp')!.reason, /half of the 2,?561µs one WAL flush takes/);
  assert.equal(groupCommitFromFsync(80, 'oltp')!.delayUs, 0);
  assert.equal(groupCommitFromFsync(2561, 'dw'), undefined);
  assert.equal(groupCommitFromFsync(1e9, 'web')!.delayUs, 100_000, "commit_delay's maximum");

  const set = run(profile({ pgMajor: 17, storageMeasured: { fsync: { path: '/w', seconds: 1, opsPerSecond: parseFsyncOutput(text) } } }));
  assert.deepEqual(valueOf(set, 'wal_sync_method'), enumValue('fdatasync'));
  assert.deepEqual(valueOf(set, 'commit_delay'), numberValue(1281));
  assert.deepEqual(valueOf(set, 'commit_siblings'), numberValue(5));
  // nothing about flushes without a measurement
  assert.equal(valueOf(run(profile({ pgMajor: 17 })), 'commit_delay'), undefined);
});

test('read probe: readers side by side add up, each over its own time (a late starter is not counted short); a file it cannot open is a reason', async () => {
  assert.equal(readsPerSecond([{ reads: 1500, ms: 1500 }]), 1000);
  assert.equal(
    readsPerSecond([
      { reads: 1500, ms: 1500 },
      { reads: 1000, ms: 500 },
    ]),
    3000,
  );
  assert.equal(
    readsPerSecond([
      { reads: 0, ms: 0 },
      { reads: 300, ms: 1000 },
    ]),
    300,
  );
  assert.match(String(await probeRandomReads('/nonexistent/pgscale-probe', 1 << 20, 0.1, 2)), /^opening the probe file with O_DIRECT failed: ENOENT/);
});

test('hysteresis: a figure within 25 % of a class boundary keeps the current value, with why; beyond it the class changes', () => {
  const latency = (us: number) => probe(1e6 / us, 2e6 / us);
  const rpc = (us: number, current?: number) => randomPageCostFromProbe(latency(us), current).value;
  // boundaries 250, 1000 and 4000µs: each current class, on both sides of the widened edges
  assert.equal(rpc(300), 1.5, 'no current value: the class measured');
  assert.equal(rpc(300, 1.1), 1.1);
  assert.equal(rpc(320, 1.1), 1.5);
  assert.equal(rpc(210, 1.5), 1.5);
  assert.equal(rpc(190, 1.5), 1.1);
  assert.equal(rpc(1200, 1.5), 1.5);
  assert.equal(rpc(1300, 1.5), 2);
  assert.equal(rpc(850, 2), 2);
  assert.equal(rpc(780, 2), 1.5);
  assert.equal(rpc(4900, 2), 2);
  assert.equal(rpc(5100, 2), 4);
  assert.equal(rpc(3300, 4), 4, 'the default 4 stays for a disk just under the seek boundary');
  assert.equal(rpc(3100, 4), 2);
  assert.equal(rpc(3300, 3), 2, "a value no class has (the DBA's own) gets no hysteresis");
  assert.match(
    randomPageCostFromProbe(latency(300), 1.1).reason,
    /^measured 300µs per random 8kB read .*: within 25 % of the 250µs boundary, so the current 1\.1 stays: a re-measurement on a noisy disk is no reason to change it$/,
  );
  assert.doesNotMatch(randomPageCostFromProbe(latency(320), 1.1).reason, /stays/);

  // prefetch: boundaries ×3 and ×8 (16 in flight)
  const scaling = (x: number) => probe(1000, 1000 * x);
  const eic = (x: number, current?: number, floor?: number) => ioConcurrencyFromProbe(scaling(x), current, floor).value;
  assert.equal(eic(3.5), 64);
  assert.equal(eic(3.5, 2), 2);
  assert.equal(eic(3.9, 2), 64);
  assert.equal(eic(2.5, 64), 64);
  assert.equal(eic(2.3, 64), 2);
  assert.equal(eic(9.5, 64), 64);
  assert.equal(eic(10.5, 64), 200);
  assert.equal(eic(6.5, 200), 200);
  assert.equal(eic(6.3, 200), 64);
  assert.equal(eic(3.5, 16, 16), 2, "18's default 16 is where the lowest class lands: it stays in that class");
  assert.match(ioConcurrencyFromProbe(scaling(9.5), 64).reason, /\(×9\.5\): within 25 % of the ×8 boundary, so the current 64 stays/);

  // wal_sync_method: open_datasync must be ×1.25 faster than fdatasync
  const sync = (fdatasync: number, open_datasync: number, current?: string) =>
    walSyncMethodFromFsync({ path: '/w', seconds: 1, opsPerSecond: { fdatasync, open_datasync } }, current)!;
  assert.equal(sync(400, 600).value, 'open_datasync');
  assert.equal(sync(400, 600, 'fdatasync').value, 'fdatasync');
  assert.match(sync(400, 600, 'fdatasync').reason, /open_datasync\/fdatasync within 25 % of the ×1\.25 boundary, so the current fdatasync stays/);
  assert.equal(sync(400, 640, 'fdatasync').value, 'open_datasync');
  assert.equal(sync(400, 420, 'open_datasync').value, 'open_datasync');
  assert.equal(sync(400, 380, 'open_datasync').value, 'fdatasync');
  assert.equal(sync(400, 600, 'fsync').value, 'open_datasync', 'fsync is no class: the measurement decides');

  // commit_delay: grouping from a 500µs flush, then half a flush, a current delay near it kept
  const group = (flushUs: number, current?: number) => groupCommitFromFsync(flushUs, 'oltp', current)!;
  assert.equal(group(600).delayUs, 300);
  assert.equal(group(600, 0).delayUs, 0);
  assert.match(group(600, 0).reason, /^a WAL flush takes 600µs \(pg_test_fsync\): within 25 % of the 500µs boundary, so the current commit_delay 0 stays/);
  assert.equal(group(640, 0).delayUs, 320);
  assert.equal(group(450, 250).delayUs, 250, 'grouping kept below 500µs, and 250 is within 25 % of half of 450');
  assert.equal(group(450, 300).delayUs, 225, 'grouping kept, but 300 is too far from 225');
  assert.match(group(450, 300).reason, /the flush is within 25 % of the 500µs boundary, so the current grouping stays/);
  assert.equal(group(390, 250).delayUs, 0);
  assert.equal(group(2400, 1281).delayUs, 1281);
  assert.match(group(2400, 1281).reason, /the current 1,?281µs is within 25 % of 1,?200µs and stays/);
  assert.equal(group(3600, 1281).delayUs, 1800);

  // through recommend(): the cluster's current values come in the profile, and a kept value is no change
  const current = {
    random_page_cost: numberValue(1.1),
    effective_io_concurrency: numberValue(16),
    wal_sync_method: enumValue('fdatasync'),
    commit_delay: numberValue(0),
  };
  const noisy = run(
    profile({
      pgMajor: 18,
      storage: 'ssd',
      currentMeasured: current,
      storageMeasured: {
        randomRead: probe(1e6 / 300, 3.5 * (1e6 / 300)),
        fsync: { path: '/w', seconds: 1, opsPerSecond: { fdatasync: 1e6 / 600, open_datasync: 1.5e6 / 600 } },
      },
    }),
  );
  for (const [name, value] of Object.entries(current)) assert.deepEqual(valueOf(noisy, name), value, name);
  assert.match(reasonOf(noisy, 'effective_io_concurrency'), /default 16, not the 2 .*within 25 % of the ×3 boundary, so the current 16 stays/);
  assert.equal(valueOf(noisy, 'commit_siblings'), undefined, 'no delay, no siblings');
  const fresh = run(profile({ pgMajor: 18, storage: 'ssd', storageMeasured: noisy.profile.storageMeasured! }));
  assert.deepEqual(valueOf(fresh, 'random_page_cost'), numberValue(1.5));
  assert.deepEqual(valueOf(fresh, 'effective_io_concurrency'), numberValue(64));
  assert.deepEqual(valueOf(fresh, 'wal_sync_method'), enumValue('open_datasync'));
});

test('nearly full volumes are not measured', () => {
  assert.match(fullVolumeReason(500 * MiB, 100 * GiB, 'WAL flushes')!, /WAL flushes not measured: only 500 MB of 100 GB free/);
  assert.match(fullVolumeReason(5 * GiB, 100 * GiB, 'random reads')!, /10 % free/);
  assert.equal(fullVolumeReason(20 * GiB, 100 * GiB, 'random reads'), undefined);
});

test('max_wal_size from the WAL rate: measured (higher of the sample and the average), or --wal-rate; the reason shows it', () => {
  const rate = walRateFrom({ bytes: 50 * MiB, seconds: 5 }, { bytes: 36 * GiB, seconds: 3600 * 10 })!;
  assert.equal(rate.bytesPerSecond, 10 * MiB);
  assert.match(rate.source, /50 MB in a 5s sample, 36 GB in 10h since pg_stat_wal was reset/);
  assert.equal(walRateFrom({ bytes: 0, seconds: 5 }, undefined), undefined);
  const fast = run(
    profile({
      pgMajor: 17,
      memoryBytes: 256 * GiB,
      vcpus: 64,
      walWriteBytesPerSecond: rate.bytesPerSecond,
      walWriteRateSource: rate.source,
      walVolumeBytes: undefined,
    }),
  );
  // 10MB/s × 900s × 1.9 = 16.7GB
  const maxWal = valueOf(fast, 'max_wal_size') as { bytes: number };
  assert.ok(maxWal.bytes >= 16.7 * GiB && maxWal.bytes <= 18 * GiB, String(maxWal.bytes));
  assert.match(reasonOf(fast, 'max_wal_size'), /^10MB\/s of WAL \(measured on the cluster: .*\) over checkpoint_timeout 15min/);
  assert.match(reasonOf(run(profile({ pgMajor: 17, walVolumeBytes: undefined })), 'max_wal_size'), /WAL write rate is unknown .*--wal-rate/);
  assert.equal(parseWalRateFlag('20MB/s'), 20 * MiB);
  assert.equal(parseWalRateFlag('1.5GB'), 1.5 * GiB);
  for (const bad of ['20', 'fast', '0MB/s', '3XB/s']) assert.throws(() => parseWalRateFlag(bad), /--wal-rate/, bad);
  assert.equal(checkTuneFlags({ walRate: '8MB/s' }).walWriteBytesPerSecond, 8 * MiB);
  assert.equal(checkTuneFlags({ measure: false }).measure, false);
});

test('jit off for OLTP, web, mixed and desktop, on for analytics; lz4 TOAST where built; locks for partitions', () => {
  for (const workload of ['oltp', 'web', 'mixed', 'desktop'] as const) {
    const set = run(profile({ pgMajor: 16, workload }));
    assert.deepEqual(valueOf(set, 'jit'), boolValue(false), workload);
    assert.match(reasonOf(set, 'jit'), /short queries never win back/);
  }
  for (const workload of ['dw', 'read-replica'] as const) {
    const set = run(profile({ pgMajor: 16, workload }));
    assert.deepEqual(valueOf(set, 'jit'), boolValue(true), workload);
    assert.match(reasonOf(set, 'jit'), /repay the compile time/);
  }
  assert.deepEqual(valueOf(run(profile({ pgMajor: 16 })), 'default_toast_compression'), enumValue('lz4'));
  const unbuilt = run(profile({ pgMajor: 16, buildFeatures: [] }));
  assert.equal(valueOf(unbuilt, 'default_toast_compression'), undefined);
  assert.deepEqual(
    unbuilt.dropped.find((d) => d.name === 'default_toast_compression'),
    { area: 'profile', name: 'default_toast_compression', reason: '"lz4" needs a build with lz4' },
  );
  assert.equal(
    run(profile({ pgMajor: 13 })).dropped.find((d) => d.name === 'default_toast_compression'),
    undefined,
    'not proposed before 14',
  );

  assert.equal(locksForPartitions(undefined), undefined);
  assert.equal(locksForPartitions(32), undefined, '64 locks hold 32 partitions and their indexes');
  assert.deepEqual(locksForPartitions(200)!.value, numberValue(512));
  assert.match(locksForPartitions(200)!.reason, /largest partition tree has 200 partitions: .*~400 locks/);
  assert.deepEqual(locksForPartitions(5000)!.value, numberValue(1024));
  assert.match(locksForPartitions(5000)!.reason, /capped at 1024: make sure queries prune partitions/);
  assert.deepEqual(valueOf(run(profile({ pgMajor: 17, largestPartitionTree: 300 })), 'max_locks_per_transaction'), numberValue(1024));
});
