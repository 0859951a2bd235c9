import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  countCpuinfoProcessors,
  detectCompute,
  parseCfsQuota,
  parseCpuList,
  parseCpuMax,
  parseMemoryLimit,
  parseMemTotal,
  parseProcCgroup,
} from '../../src/host/compute.js';
import { HostRoot } from '../../src/host/hostRoot.js';
import { ExitCode, PgscaleError } from '../../src/errors.js';
import { hostFixture } from '../helpers/paths.js';

const KiB = 1024;
const GiB = 1024 ** 3;

/** A PgscaleError with exit code BadInput whose message names the file. */
const badInputNaming = (file: string, content: string) => (error: unknown) => {
  assert.ok(error instanceof PgscaleError, `expected a PgscaleError, got ${String(error)}`);
  assert.equal(error.exitCode, ExitCode.BadInput);
  assert.match(error.message, new RegExp(file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  assert.ok(error.message.includes(content), `message should quote ${content}: ${error.message}`);
  return true;
};

/** A writable copy of a fixture, for variations on it. */
function fixtureCopy(name: string): { dir: string; write: (hostPath: string, content: string) => void; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `pgscale-${name}-`));
  cpSync(hostFixture(name), dir, { recursive: true, verbatimSymlinks: true });
  return {
    dir,
    write: (hostPath, content) => {
      mkdirSync(join(dir, hostPath, '..'), { recursive: true });
      writeFileSync(join(dir, hostPath), content);
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

// ---------------------------------------------------------------- parsers

test('parseCpuList: ranges, singles, and what the kernel never writes', () => {
  assert.deepEqual(parseCpuList('0-3,8\n', 'f'), [0, 1, 2, 3, 8]);
  assert.deepEqual(parseCpuList('5', 'f'), [5]);
  assert.equal(parseCpuList('0-63', 'f').length, 64);
  for (const bad of ['1-', '', '3-1', 'a', '0,,1', '0-3,']) {
    assert.throws(() => parseCpuList(bad, '/sys/fs/cgroup/cpuset.cpus.effective'), badInputNaming('/sys/fs/cgroup/cpuset.cpus.effective', bad));
  }
});

test('parseCpuMax: unlimited, whole and fractional quotas, garbage', () => {
  assert.equal(parseCpuMax('max 100000\n', 'f'), null);
  assert.deepEqual(parseCpuMax('200000 100000\n', 'f'), { quotaMicros: 200000, periodMicros: 100000 });
  assert.deepEqual(parseCpuMax('150000 100000', 'f'), { quotaMicros: 150000, periodMicros: 100000 });
  for (const bad of ['banana', '200000', '0 100000', '100000 0', '-1 100000', 'max']) {
    assert.throws(() => parseCpuMax(bad, '/sys/fs/cgroup/cpu.max'), badInputNaming('/sys/fs/cgroup/cpu.max', bad));
  }
});

test('parseCfsQuota: -1 is no limit, otherwise quota over period', () => {
  assert.equal(parseCfsQuota('-1\n', 'q', '100000\n', 'p'), null);
  assert.deepEqual(parseCfsQuota('50000\n', 'q', '100000\n', 'p'), { quotaMicros: 50000, periodMicros: 100000 });
  assert.throws(() => parseCfsQuota('lots', '/q/cpu.cfs_quota_us', '100000', 'p'), badInputNaming('/q/cpu.cfs_quota_us', 'lots'));
  assert.throws(() => parseCfsQuota('50000', 'q', '0', '/p/cpu.cfs_period_us'), badInputNaming('/p/cpu.cfs_period_us', '0'));
});

test('parseMemoryLimit: "max", bytes, v1 sentinel, negative', () => {
  assert.equal(parseMemoryLimit('max\n', 'f'), null);
  assert.equal(parseMemoryLimit('4294967296\n', 'f'), 4 * GiB);
  assert.ok(parseMemoryLimit('9223372036854771712', 'f')! > 2 ** 62);
  assert.throws(() => parseMemoryLimit('-5\n', '/sys/fs/cgroup/memory.max'), badInputNaming('/sys/fs/cgroup/memory.max', '-5'));
  assert.throws(() => parseMemoryLimit('4G', '/m'), badInputNaming('/m', '4G'));
});

test('parseMemTotal and countCpuinfoProcessors', () => {
  assert.equal(parseMemTotal('MemTotal:       24684096 kB\nMemFree:  1 kB\n', 'f'), 24684096 * KiB);
  assert.throws(() => parseMemTotal('MemFree: 1 kB\n', '/proc/meminfo'), badInputNaming('/proc/meminfo', 'MemFree'));
  assert.equal(countCpuinfoProcessors('processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\n'), 2);
});

test('parseProcCgroup: v1 controller lists, the v2 line, colons in paths', () => {
  assert.deepEqual(parseProcCgroup('4:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n0::/a:b\n', 'f'), [
    { hierarchyId: 4, controllers: ['cpu', 'cpuacct'], path: '/docker/abc' },
    { hierarchyId: 1, controllers: ['name=systemd'], path: '/x' },
    { hierarchyId: 0, controllers: [], path: '/a:b' },
  ]);
  assert.throws(() => parseProcCgroup('nonsense\n', '/proc/self/cgroup'), badInputNaming('/proc/self/cgroup', 'nonsense'));
});

// ---------------------------------------------------------------- fixtures

interface Expected {
  hostCpus: number;
  hostMemoryBytes: number;
  cpus: number;
  memoryBytes: number;
  cgroupVersion: 1 | 2 | null;
  limitSources: { cpuQuota: string | null; cpuset: string | null; memory: string | null };
}

const noLimits = { cpuQuota: null, cpuset: null, memory: null };

const expectations: Record<string, Expected> = {
  'this-machine-virtio': {
    hostCpus: 2,
    hostMemoryBytes: 24684096 * KiB,
    cpus: 2,
    memoryBytes: 24684096 * KiB,
    cgroupVersion: 1,
    limitSources: noLimits,
  },
  'aws-64g-16cpu-local-nvme': {
    hostCpus: 16,
    hostMemoryBytes: 64931684 * KiB,
    cpus: 16,
    memoryBytes: 64931684 * KiB,
    cgroupVersion: 2,
    limitSources: noLimits,
  },
  'aws-ebs-nvme': {
    hostCpus: 8,
    hostMemoryBytes: 32475004 * KiB,
    cpus: 8,
    // MemoryMax on the slice above the service: the walk up the hierarchy finds it.
    memoryBytes: 24 * GiB,
    cgroupVersion: 2,
    limitSources: { ...noLimits, memory: '/sys/fs/cgroup/system.slice/system-postgresql.slice/memory.max' },
  },
  'container-cgroup2-2cpu-4g': {
    hostCpus: 64,
    hostMemoryBytes: 263857224 * KiB,
    cpus: 2,
    memoryBytes: 4 * GiB,
    cgroupVersion: 2,
    limitSources: { cpuQuota: '/sys/fs/cgroup/cpu.max', cpuset: null, memory: '/sys/fs/cgroup/memory.max' },
  },
  'container-cgroup1-2cpu-4g': {
    hostCpus: 40,
    hostMemoryBytes: 197630080 * KiB,
    cpus: 2,
    memoryBytes: 4 * GiB,
    cgroupVersion: 1,
    limitSources: {
      cpuQuota: '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us',
      cpuset: null,
      memory: '/sys/fs/cgroup/memory/memory.limit_in_bytes',
    },
  },
  'md-raid0-nvme': {
    hostCpus: 32,
    hostMemoryBytes: 131598740 * KiB,
    cpus: 32,
    memoryBytes: 131598740 * KiB,
    cgroupVersion: 2,
    limitSources: noLimits,
  },
  'lvm-ssd': { hostCpus: 8, hostMemoryBytes: 32744112 * KiB, cpus: 8, memoryBytes: 32744112 * KiB, cgroupVersion: 2, limitSources: noLimits },
  hdd: { hostCpus: 4, hostMemoryBytes: 16318524 * KiB, cpus: 4, memoryBytes: 16318524 * KiB, cgroupVersion: 2, limitSources: noLimits },
};

for (const [fixture, expected] of Object.entries(expectations)) {
  test(`detectCompute: ${fixture}`, async () => {
    const profile = await detectCompute(new HostRoot(hostFixture(fixture)));
    assert.deepEqual(profile.host, { cpus: expected.hostCpus, memoryBytes: expected.hostMemoryBytes });
    assert.deepEqual(profile.effective, { cpus: expected.cpus, exactCpus: expected.cpus, memoryBytes: expected.memoryBytes });
    assert.equal(profile.cgroupVersion, expected.cgroupVersion);
    assert.deepEqual(
      {
        cpuQuota: profile.limits.cpuQuota?.source ?? null,
        cpuset: profile.limits.cpuset?.source ?? null,
        memory: profile.limits.memory?.source ?? null,
      },
      expected.limitSources,
    );
    assert.ok(profile.notes.length > 0);
  });
}

test('detectCompute: a cgroup v2 container reports its quota and memory limit in the notes', async () => {
  const profile = await detectCompute(new HostRoot(hostFixture('container-cgroup2-2cpu-4g')));
  assert.deepEqual(profile.limits.cpuQuota, { quotaMicros: 200000, periodMicros: 100000, cpus: 2, source: '/sys/fs/cgroup/cpu.max' });
  assert.deepEqual(profile.limits.memory, { bytes: 4 * GiB, source: '/sys/fs/cgroup/memory.max' });
  assert.ok(
    profile.notes.some((note) => note.includes('cpu.max') && note.includes('2 of 64 CPUs')),
    profile.notes.join('\n'),
  );
  assert.ok(
    profile.notes.some((note) => note.includes('memory.max') && note.includes('4.0 GiB')),
    profile.notes.join('\n'),
  );
});

for (const [fixture, file, content] of [
  ['malformed-cgroup-cpu', '/sys/fs/cgroup/cpu.max', 'banana'],
  ['malformed-cgroup-memory', '/sys/fs/cgroup/memory.max', '-5'],
] as const) {
  test(`detectCompute: ${fixture} is bad input naming ${file}`, async () => {
    await assert.rejects(detectCompute(new HostRoot(hostFixture(fixture))), badInputNaming(file, content));
  });
}

test('detectCompute: a fractional quota rounds up, the exact fraction is kept, a cpuset narrows further', async () => {
  const host = fixtureCopy('container-cgroup2-2cpu-4g');
  try {
    host.write('/sys/fs/cgroup/cpu.max', '250000 100000\n');
    host.write('/sys/fs/cgroup/cpuset.cpus.effective', '0-2\n');
    let profile = await detectCompute(new HostRoot(host.dir));
    assert.equal(profile.limits.cpuQuota?.cpus, 2.5);
    assert.deepEqual(profile.limits.cpuset, { cpus: 3, list: '0-2', source: '/sys/fs/cgroup/cpuset.cpus.effective' });
    assert.equal(profile.effective.exactCpus, 2.5);
    assert.equal(profile.effective.cpus, 3);

    host.write('/sys/fs/cgroup/cpuset.cpus.effective', '4\n');
    profile = await detectCompute(new HostRoot(host.dir));
    assert.equal(profile.effective.exactCpus, 1);
    assert.equal(profile.effective.cpus, 1);
  } finally {
    host.remove();
  }
});

test('detectCompute: a quota above the host is no limit', async () => {
  const host = fixtureCopy('container-cgroup2-2cpu-4g');
  try {
    host.write('/sys/fs/cgroup/cpu.max', '12800000 100000\n');
    host.write('/sys/fs/cgroup/memory.max', `${512 * GiB}\n`);
    const profile = await detectCompute(new HostRoot(host.dir));
    assert.deepEqual(profile.limits, { cpuQuota: null, cpuset: null, memory: null });
    assert.deepEqual(profile.effective, { cpus: 64, exactCpus: 64, memoryBytes: 263857224 * KiB });
  } finally {
    host.remove();
  }
});

test('detectCompute: a cgroup path the mount does not show falls back to the mount point', async () => {
  const host = fixtureCopy('container-cgroup2-2cpu-4g');
  try {
    for (const path of ['/system.slice/docker-0123.scope', '/../../elsewhere']) {
      host.write('/proc/self/cgroup', `0::${path}\n`);
      const profile = await detectCompute(new HostRoot(host.dir));
      assert.equal(profile.effective.cpus, 2);
      assert.ok(
        profile.notes.some((note) => note.includes(`${path} is not visible`)),
        profile.notes.join('\n'),
      );
    }
  } finally {
    host.remove();
  }
});

test('detectCompute: no cgroup filesystem and no cpu/online: host totals from /proc, no limits', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgscale-bare-'));
  try {
    mkdirSync(join(dir, 'proc/self'), { recursive: true });
    writeFileSync(join(dir, 'proc/self/mountinfo'), '22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n');
    writeFileSync(join(dir, 'proc/meminfo'), 'MemTotal:        2000000 kB\n');
    writeFileSync(join(dir, 'proc/cpuinfo'), 'processor\t: 0\n\nprocessor\t: 1\n\nprocessor\t: 2\n');
    const profile = await detectCompute(new HostRoot(dir));
    assert.equal(profile.cgroupVersion, null);
    assert.deepEqual(profile.host, { cpus: 3, memoryBytes: 2000000 * KiB });
    assert.deepEqual(profile.effective, { cpus: 3, exactCpus: 3, memoryBytes: 2000000 * KiB });
    assert.ok(
      profile.notes.some((note) => note.includes('/proc/cpuinfo')),
      profile.notes.join('\n'),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('detectCompute: this machine, through the real root', async () => {
  const profile = await detectCompute(new HostRoot('/'));
  assert.ok(profile.host.cpus >= 1);
  assert.ok(profile.host.memoryBytes > 0);
  assert.ok(profile.effective.cpus >= 1 && profile.effective.cpus <= profile.host.cpus);
  assert.ok(profile.effective.memoryBytes > 0 && profile.effective.memoryBytes <= profile.host.memoryBytes);
});
