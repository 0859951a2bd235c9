import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  GiB,
  KNOWN_MAJORS,
  KiB,
  MiB,
  boolValue,
  enumValue,
  findSetting,
  loadCatalog,
  memoryValue,
  numberValue,
  validateValue,
} from '../../src/gucCatalog/index.js';
import { WORKLOAD_PROFILES, anchorsFor, pgtune, timescaledbTune } from '../../src/tune/index.js';
import { HARDWARE } from './tune-fixtures.js';

test('pgtune: RAM/4, 3/4 RAM, work_mem (RAM − shared_buffers) / ((connections + workers) × 3)', () => {
  const a = pgtune({ memoryBytes: 64 * GiB, vcpus: 16, workload: 'web', storage: 'ssd', pgMajor: 16 });
  assert.deepEqual(a.shared_buffers, memoryValue(16 * GiB));
  assert.deepEqual(a.effective_cache_size, memoryValue(48 * GiB));
  assert.deepEqual(a.max_connections, numberValue(200));
  // (67108864 − 16777216) kB / ((200 + 16) × 3) = 77672.2 kB
  assert.deepEqual(a.work_mem, memoryValue(77672 * KiB));
  assert.deepEqual(a.maintenance_work_mem, memoryValue(4 * GiB));
  assert.deepEqual(a.wal_buffers, memoryValue(16 * MiB));
  assert.deepEqual(a.max_parallel_workers_per_gather, numberValue(4));
  assert.deepEqual(a.effective_io_concurrency, numberValue(200));
  assert.deepEqual(a.random_page_cost, numberValue(1.1));
  assert.deepEqual(a.huge_pages, enumValue('try'));
  assert.deepEqual(a.jit, boolValue(false));
  assert.deepEqual(a.wal_compression, enumValue('lz4'));
  assert.deepEqual(a.autovacuum_max_workers, numberValue(4));

  const small = pgtune({ memoryBytes: 2 * GiB, vcpus: 2, workload: 'dw', storage: 'nvme', pgMajor: 14 });
  assert.equal(small.max_worker_processes, undefined, 'no parallel settings below 4 CPUs');
  assert.deepEqual(small.effective_io_concurrency, numberValue(1000));
  assert.deepEqual(small.random_page_cost, numberValue(4), 'pgtune keeps data warehouses on flash at 4');
  assert.deepEqual(small.wal_compression, boolValue(true));
  // (2097152 − 524288) kB / ((40 + 8 default workers) × 3) / 2 for dw = 5461 kB, above the 4MB floor
  assert.deepEqual(small.work_mem, memoryValue(5461 * KiB));
});

test('timescaledb-tune 0.19: RAM/4, 3/4 RAM, work_mem from 6.4MB per GB per 20 connections per 2 vCPUs, memory-based connections', () => {
  const a = timescaledbTune({ memoryBytes: 16 * GiB, vcpus: 8 });
  assert.deepEqual(a.shared_buffers, memoryValue(4 * GiB));
  assert.deepEqual(a.effective_cache_size, memoryValue(12 * GiB));
  assert.deepEqual(a.maintenance_work_mem, memoryValue(2047 * MiB));
  assert.deepEqual(a.work_mem, memoryValue(Math.floor((16 * 6.4 * 20 * MiB) / 100 / 4)));
  assert.deepEqual(a.max_wal_size, memoryValue(1 * GiB));
  assert.deepEqual(a.min_wal_size, memoryValue(512 * MiB));
  // 3 built-ins + 16 TimescaleDB background workers + 8 CPUs
  assert.deepEqual(a.max_worker_processes, numberValue(27));
  assert.deepEqual(a.max_locks_per_transaction, numberValue(512));
  assert.deepEqual(a.default_statistics_target, numberValue(100));
  assert.deepEqual(a.max_connections, numberValue(100));
  assert.deepEqual(a.autovacuum_max_workers, numberValue(10));
  assert.deepEqual(a.autovacuum_naptime, { kind: 'duration', ms: 10_000 });
  assert.deepEqual(a.effective_io_concurrency, numberValue(256));
  assert.deepEqual(timescaledbTune({ memoryBytes: 2 * GiB, vcpus: 2 }).max_connections, numberValue(25));
  assert.deepEqual(timescaledbTune({ memoryBytes: 4 * GiB, vcpus: 2 }).max_connections, numberValue(50));
  assert.deepEqual(timescaledbTune({ memoryBytes: 6 * GiB, vcpus: 2 }).max_connections, numberValue(75));
  assert.deepEqual(timescaledbTune({ memoryBytes: 4 * GiB, vcpus: 2 }).max_locks_per_transaction, numberValue(128));
  assert.deepEqual(timescaledbTune({ memoryBytes: 64 * GiB, vcpus: 2 }).max_locks_per_transaction, numberValue(1024));
  // work_mem uses the given count, else 100, not the memory-based max_connections
  assert.deepEqual(timescaledbTune({ memoryBytes: 4 * GiB, vcpus: 2 }).work_mem, memoryValue(Math.floor((4 * 6.4 * 20 * MiB) / 100)));
  assert.deepEqual(timescaledbTune({ memoryBytes: 4 * GiB, vcpus: 2, maxConnections: 200 }).work_mem, memoryValue(Math.floor((4 * 6.4 * 20 * MiB) / 200)));
  const withDisk = timescaledbTune({ memoryBytes: 1 * GiB, vcpus: 1, walVolumeBytes: 10 * GiB });
  // 60 % of 10GB = 6144MB, already a multiple of 16MB
  assert.deepEqual(withDisk.max_wal_size, memoryValue(6 * GiB));
  assert.deepEqual(withDisk.wal_buffers, memoryValue(7864 * KiB));
  assert.equal(withDisk.max_parallel_workers, undefined, 'no parallel settings on one CPU');
});

test('anchorsFor: every fixture, workload and version gives typed values the version accepts', () => {
  for (const hw of Object.values(HARDWARE)) {
    for (const workload of WORKLOAD_PROFILES) {
      for (const pgMajor of KNOWN_MAJORS) {
        const catalog = loadCatalog(pgMajor);
        const anchors = anchorsFor({ ...hw, workload, pgMajor });
        for (const [tool, settings] of Object.entries(anchors)) {
          for (const [name, value] of Object.entries(settings)) {
            const def = findSetting(catalog, name);
            assert.ok(def, `${tool} ${name} exists in ${pgMajor}`);
            assert.deepEqual(validateValue(def, value), { valid: true }, `${tool} ${name} ${pgMajor}`);
          }
        }
      }
    }
  }
});
