/**
 * vCPUs and RAM as PostgreSQL will get them: the host's totals cut down by cgroup (v1 or v2) limits,
 * which is what a container or a systemd slice actually allows.
 */
import { posix } from 'node:path';
import { badInput } from '../errors.js';
import type { HostRoot } from './hostRoot.js';
import { malformedHostFile, readMountTable } from './mounts.js';
import type {
  CgroupLimits,
  CgroupMembership,
  CgroupVersion,
  ComputeProfile,
  CpuQuota,
  CpuQuotaLimit,
  CpusetLimit,
  MemoryLimit,
  MountEntry,
  Resources,
} from './types.js';

const CPU_ONLINE = '/sys/devices/system/cpu/online';
const CPUINFO = '/proc/cpuinfo';
const MEMINFO = '/proc/meminfo';
const PROC_CGROUP = '/proc/self/cgroup';

const GiB = 1024 ** 3;
const formatGiB = (bytes: number): string => `${(bytes / GiB).toFixed(1)} GiB`;

// ---------------------------------------------------------------- parsing (pure)

function parsePositiveInteger(text: string, file: string, expected: string): number {
  const trimmed = text.trim();
  if (!/^[1-9]\d*$/.test(trimmed)) throw malformedHostFile(file, text, expected);
  return Number(trimmed);
}

/** CPU ids of a kernel CPU list such as "0-3,8-11" (cpuset files, /sys/devices/system/cpu/online). */
export function parseCpuList(text: string, file: string): number[] {
  const trimmed = text.trim();
  const ids = new Set<number>();
  for (const range of trimmed.split(',')) {
    const match = /^(\d+)(?:-(\d+))?$/.exec(range);
    const first = Number(match?.[1]);
    const last = match?.[2] === undefined ? first : Number(match[2]);
    if (!match || last < first) throw malformedHostFile(file, text, 'a CPU list like "0-3,8"');
    for (let id = first; id <= last; id++) ids.add(id);
  }
  return [...ids].sort((a, b) => a - b);
}

/** cgroup v2 cpu.max: "max PERIOD" (no limit) or "QUOTA PERIOD", both in microseconds. */
export function parseCpuMax(text: string, file: string): CpuQuota | null {
  const match = /^(max|[1-9]\d*) ([1-9]\d*)$/.exec(text.trim());
  if (!match) throw malformedHostFile(file, text, '"max PERIOD" or "QUOTA PERIOD" in microseconds');
  return match[1] === 'max' ? null : { quotaMicros: Number(match[1]), periodMicros: Number(match[2]) };
}

/** cgroup v1 cpu.cfs_quota_us ("-1": no limit) over cpu.cfs_period_us, both in microseconds. */
export function parseCfsQuota(quotaText: string, quotaFile: string, periodText: string, periodFile: string): CpuQuota | null {
  if (quotaText.trim() === '-1') return null;
  return {
    quotaMicros: parsePositiveInteger(quotaText, quotaFile, '-1 or a quota in microseconds'),
    periodMicros: parsePositiveInteger(periodText, periodFile, 'a period in microseconds'),
  };
}

/**
 * A memory limit in bytes: cgroup v2 memory.max ("max": no limit) or v1 memory.limit_in_bytes, whose
 * "no limit" is a huge page-aligned number. Values past 2^53 lose precision, which only affects such
 * sentinels, far above any host's RAM.
 */
export function parseMemoryLimit(text: string, file: string): number | null {
  const trimmed = text.trim();
  if (trimmed === 'max') return null;
  if (!/^\d+$/.test(trimmed)) throw malformedHostFile(file, text, '"max" or a number of bytes');
  return Number(trimmed);
}

/** MemTotal from /proc/meminfo, in bytes. */
export function parseMemTotal(text: string, file: string): number {
  const match = /^MemTotal:\s+(\d+) kB$/m.exec(text);
  if (!match) throw malformedHostFile(file, text.split('\n')[0] ?? '', 'a "MemTotal: N kB" line');
  return Number(match[1]) * 1024;
}

/** How many "processor : N" entries /proc/cpuinfo lists. */
export function countCpuinfoProcessors(text: string): number {
  return text.split('\n').filter((line) => /^processor\s*:/.test(line)).length;
}

/** /proc/self/cgroup: one "hierarchy-ID:controller-list:cgroup-path" per line; the path may itself hold colons. */
export function parseProcCgroup(text: string, file: string): CgroupMembership[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const match = /^(\d+):([^:]*):(\/.*)$/.exec(line);
      if (!match) throw malformedHostFile(file, line, '"ID:CONTROLLERS:/PATH"');
      return { hierarchyId: Number(match[1]), controllers: match[2] ? match[2].split(',') : [], path: match[3]! };
    });
}

// ---------------------------------------------------------------- host totals

async function readHostCpus(root: HostRoot, notes: string[]): Promise<number> {
  const online = await root.read(CPU_ONLINE);
  if (online !== undefined) return parseCpuList(online, CPU_ONLINE).length;
  const cpuinfo = await root.read(CPUINFO);
  const processors = cpuinfo === undefined ? 0 : countCpuinfoProcessors(cpuinfo);
  if (processors === 0) throw badInput(`cannot count CPUs: neither ${CPU_ONLINE} nor ${CPUINFO} lists any`);
  notes.push(`${CPU_ONLINE} is missing: counted ${processors} CPUs in ${CPUINFO}`);
  return processors;
}

async function readHostMemory(root: HostRoot): Promise<number> {
  const meminfo = await root.read(MEMINFO);
  if (meminfo === undefined) throw badInput(`${MEMINFO} is not readable`);
  return parseMemTotal(meminfo, MEMINFO);
}

// ---------------------------------------------------------------- locating the process's cgroups

type Controller = 'cpu' | 'cpuset' | 'memory';
const CONTROLLERS: readonly Controller[] = ['cpu', 'cpuset', 'memory'];

/** For each controller, the directories to read limits from (empty when the controller is not mounted). */
interface CgroupDirs {
  version: CgroupVersion;
  dirs: Record<Controller, string[]>;
}

/**
 * The process's cgroup directory under a cgroup mount, then each ancestor up to the mount point. The mount
 * shows the hierarchy from its root field down: "/" on a host or in a cgroup namespace, the container's own
 * cgroup when a container without a namespace gets only its subtree. A path outside that root cannot be
 * seen, so the mount point is the best there is.
 */
async function cgroupDirectories(root: HostRoot, mount: MountEntry, cgroupPath: string, notes: string[]): Promise<string[]> {
  const prefix = mount.root === '/' ? '/' : `${mount.root}/`;
  let leaf: string | undefined;
  if (cgroupPath === mount.root) leaf = mount.mountPoint;
  else if (cgroupPath.startsWith(prefix)) leaf = posix.join(mount.mountPoint, cgroupPath.slice(prefix.length));
  // Nested cgroup namespaces can show paths like "/../../x", which lead out of the mount.
  const insideMount = leaf === mount.mountPoint || leaf?.startsWith(`${mount.mountPoint}/`);
  if (leaf === undefined || !insideMount || !(await root.isDirectory(leaf))) {
    notes.push(`cgroup ${cgroupPath} is not visible under ${mount.mountPoint}: reading limits there instead`);
    return [mount.mountPoint];
  }
  const dirs = [leaf];
  for (let dir = leaf; dir !== mount.mountPoint;) {
    dir = posix.dirname(dir);
    dirs.push(dir);
  }
  return dirs;
}

/**
 * cgroup v1 when any of cpu, cpuset or memory is bound to a v1 hierarchy (hybrid hosts mount an empty
 * v2 hierarchy next to them), else v2 when the unified hierarchy is mounted.
 */
async function locateCgroups(
  root: HostRoot,
  mounts: readonly MountEntry[],
  memberships: readonly CgroupMembership[],
  notes: string[],
): Promise<CgroupDirs | null> {
  const v1: Record<Controller, string[]> = { cpu: [], cpuset: [], memory: [] };
  let foundV1 = false;
  for (const controller of CONTROLLERS) {
    const membership = memberships.find((m) => m.hierarchyId !== 0 && m.controllers.includes(controller));
    const mount = mounts.find((m) => m.fsType === 'cgroup' && m.superOptions.includes(controller));
    if (membership && mount) {
      v1[controller] = await cgroupDirectories(root, mount, membership.path, notes);
      foundV1 = true;
    }
  }
  if (foundV1) {
    notes.push(
      `cgroup v1: ${CONTROLLERS.filter((c) => v1[c].length > 0)
        .map((c) => `${c} at ${v1[c][0]}`)
        .join(', ')}`,
    );
    return { version: 1, dirs: v1 };
  }

  const unified = memberships.find((m) => m.hierarchyId === 0);
  const mount = mounts.find((m) => m.fsType === 'cgroup2');
  if (!unified || !mount) {
    notes.push(`no cgroup filesystem holds this process (${PROC_CGROUP} or its cgroup mount is missing): no limits apply`);
    return null;
  }
  const dirs = await cgroupDirectories(root, mount, unified.path, notes);
  notes.push(`cgroup v2: ${dirs[0]}`);
  return { version: 2, dirs: { cpu: dirs, cpuset: dirs, memory: dirs } };
}

// ---------------------------------------------------------------- reading limits

const CPUSET_FILE: Record<CgroupVersion, string> = { 1: 'cpuset.cpus', 2: 'cpuset.cpus.effective' };
const MEMORY_FILE: Record<CgroupVersion, string> = { 1: 'memory.limit_in_bytes', 2: 'memory.max' };

async function readCpuQuota(root: HostRoot, version: CgroupVersion, dir: string): Promise<CpuQuotaLimit | null> {
  let quota: CpuQuota | null = null;
  let source: string;
  if (version === 2) {
    source = posix.join(dir, 'cpu.max');
    const text = await root.read(source);
    if (text !== undefined) quota = parseCpuMax(text, source);
  } else {
    source = posix.join(dir, 'cpu.cfs_quota_us');
    const periodFile = posix.join(dir, 'cpu.cfs_period_us');
    const text = await root.read(source);
    if (text !== undefined) {
      const periodText = await root.read(periodFile);
      if (periodText === undefined) throw badInput(`${periodFile} is missing next to ${source}`);
      quota = parseCfsQuota(text, source, periodText, periodFile);
    }
  }
  return quota && { ...quota, cpus: quota.quotaMicros / quota.periodMicros, source };
}

async function readCpuset(root: HostRoot, version: CgroupVersion, dir: string): Promise<CpusetLimit | null> {
  const source = posix.join(dir, CPUSET_FILE[version]);
  const list = (await root.read(source))?.trim();
  // An empty v1 cpuset.cpus belongs to a cgroup nothing can run in: not ours, so not a limit.
  if (!list) return null;
  return { cpus: parseCpuList(list, source).length, list, source };
}

async function readMemoryLimit(root: HostRoot, version: CgroupVersion, dir: string): Promise<MemoryLimit | null> {
  const source = posix.join(dir, MEMORY_FILE[version]);
  const text = await root.read(source);
  const bytes = text === undefined ? null : parseMemoryLimit(text, source);
  return bytes === null ? null : { bytes, source };
}

/** The smallest limit over the directories (each ancestor's limit applies too), kept only when below the host's total. */
async function tightest<T>(
  dirs: readonly string[],
  read: (dir: string) => Promise<T | null>,
  size: (limit: T) => number,
  hostTotal: number,
): Promise<T | null> {
  let best: T | null = null;
  for (const dir of dirs) {
    const limit = await read(dir);
    if (limit !== null && (best === null || size(limit) < size(best))) best = limit;
  }
  return best !== null && size(best) < hostTotal ? best : null;
}

async function readLimits(root: HostRoot, cgroups: CgroupDirs, host: Resources): Promise<CgroupLimits> {
  const { version, dirs } = cgroups;
  return {
    cpuQuota: await tightest(
      dirs.cpu,
      (dir) => readCpuQuota(root, version, dir),
      (l) => l.cpus,
      host.cpus,
    ),
    cpuset: await tightest(
      dirs.cpuset,
      (dir) => readCpuset(root, version, dir),
      (l) => l.cpus,
      host.cpus,
    ),
    memory: await tightest(
      dirs.memory,
      (dir) => readMemoryLimit(root, version, dir),
      (l) => l.bytes,
      host.memoryBytes,
    ),
  };
}

function describeLimits(limits: CgroupLimits, host: Resources, exactCpus: number): string[] {
  const { cpuQuota, cpuset, memory } = limits;
  const notes: string[] = [];
  if (cpuQuota) {
    const { quotaMicros, periodMicros, source } = cpuQuota;
    notes.push(`CPU quota ${quotaMicros}/${periodMicros} µs in ${source}: ${cpuQuota.cpus} of ${host.cpus} CPUs`);
  }
  if (cpuset) notes.push(`cpuset ${cpuset.list} in ${cpuset.source}: ${cpuset.cpus} of ${host.cpus} CPUs`);
  // Only a quota can make the CPU count fractional; PostgreSQL settings want whole workers.
  if (!Number.isInteger(exactCpus)) notes.push(`${exactCpus} CPUs of quota count as ${Math.ceil(exactCpus)} vCPUs`);
  if (memory) notes.push(`memory limit ${formatGiB(memory.bytes)} in ${memory.source} (host has ${formatGiB(host.memoryBytes)})`);
  if (!cpuQuota && !cpuset && !memory) {
    notes.push(`no cgroup limit below the host's ${host.cpus} CPUs and ${formatGiB(host.memoryBytes)}`);
  }
  return notes;
}

// ---------------------------------------------------------------- detection

export async function detectCompute(root: HostRoot): Promise<ComputeProfile> {
  const notes: string[] = [];
  const host: Resources = { cpus: await readHostCpus(root, notes), memoryBytes: await readHostMemory(root) };

  const cgroupText = await root.read(PROC_CGROUP);
  const memberships = cgroupText === undefined ? [] : parseProcCgroup(cgroupText, PROC_CGROUP);
  const cgroups = await locateCgroups(root, await readMountTable(root), memberships, notes);
  const limits: CgroupLimits = cgroups ? await readLimits(root, cgroups, host) : { cpuQuota: null, cpuset: null, memory: null };

  const exactCpus = Math.min(host.cpus, limits.cpuQuota?.cpus ?? Infinity, limits.cpuset?.cpus ?? Infinity);
  const effective = {
    cpus: Math.ceil(exactCpus),
    exactCpus,
    memoryBytes: Math.min(host.memoryBytes, limits.memory?.bytes ?? Infinity),
  };
  notes.push(...describeLimits(limits, host, exactCpus));
  return { host, effective, limits, cgroupVersion: cgroups?.version ?? null, notes };
}
