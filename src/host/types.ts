/** What host detection found: the resources PostgreSQL gets and the storage under its directories. */

/** One line of /proc/self/mountinfo, with octal escapes (\040 for a space) decoded. */
export interface MountEntry {
  mountId: number;
  parentId: number;
  /** Device number of the mounted filesystem; major 0 is an anonymous device (tmpfs, overlay, nfs, btrfs). */
  major: number;
  minor: number;
  /** Directory of the mounted filesystem that appears at mountPoint: "/" unless bind-mounted (or a cgroup namespace). */
  root: string;
  mountPoint: string;
  /** Per-mount options, e.g. ["rw", "relatime"]. */
  mountOptions: string[];
  fsType: string;
  /** The device or pseudo name, e.g. "/dev/nvme1n1", "tmpfs", "overlay". */
  source: string;
  /** Per-filesystem options, e.g. ["rw", "discard"] or ["rw", "cpu", "cpuacct"] for a cgroup v1 hierarchy. */
  superOptions: string[];
}

// ---------------------------------------------------------------- compute

export type CgroupVersion = 1 | 2;

export interface Resources {
  cpus: number;
  memoryBytes: number;
}

/** A CFS bandwidth limit: quotaMicros of CPU time per periodMicros of wall time. */
export interface CpuQuota {
  quotaMicros: number;
  periodMicros: number;
}

export interface CpuQuotaLimit extends CpuQuota {
  /** The exact number of CPUs the quota is worth, e.g. 1.5 for 150000/100000. */
  cpus: number;
  /** Host path of the file the limit was read from, e.g. /sys/fs/cgroup/cpu.max. */
  source: string;
}

export interface CpusetLimit {
  /** How many CPUs the cpuset holds. */
  cpus: number;
  /** The kernel's CPU list, e.g. "0-3,8". */
  list: string;
  source: string;
}

export interface MemoryLimit {
  bytes: number;
  source: string;
}

/** The tightest cgroup limits over the process's cgroup and its ancestors; null where nothing is below the host's total. */
export interface CgroupLimits {
  cpuQuota: CpuQuotaLimit | null;
  cpuset: CpusetLimit | null;
  memory: MemoryLimit | null;
}

export interface ComputeProfile {
  /** Online CPUs and MemTotal of the machine (or VM). */
  host: Resources;
  /** What PostgreSQL gets: the host's totals cut down by the cgroup limits. cpus is whole vCPUs, rounded up. */
  effective: Resources & {
    /** CPU capacity before rounding, e.g. 1.5 for a 150000/100000 quota. */
    exactCpus: number;
  };
  limits: CgroupLimits;
  /** null when no cgroup filesystem holds the process's controllers. */
  cgroupVersion: CgroupVersion | null;
  /** Human-readable account of where the numbers came from. */
  notes: string[];
}

/** One line of /proc/self/cgroup: "hierarchy-ID:controller-list:cgroup-path". */
export interface CgroupMembership {
  /** 0 for the cgroup v2 unified hierarchy. */
  hierarchyId: number;
  /** Controllers bound to the hierarchy (cgroup v1), e.g. ["cpu", "cpuacct"]; empty for v2. */
  controllers: string[];
  path: string;
}

// ---------------------------------------------------------------- storage

/**
 * What kind of storage holds a path, as far as performance goes:
 * - local-nvme: NVMe flash attached to this machine (bare metal, or cloud instance storage);
 * - network-block: cloud or SAN block storage, however it is presented (NVMe, SCSI, NVMe over fabrics);
 * - ssd: local SATA/SAS flash;
 * - hdd: rotating disks;
 * - virtual-disk: a hypervisor's disk (virtio, Xen, emulated) whose backing storage the guest cannot see;
 * - network-fs: NFS, SMB, CephFS and the like;
 * - tmpfs: memory;
 * - loop: a loop device whose backing file is not visible here;
 * - unknown: nothing to go on.
 */
export type StorageClass = 'local-nvme' | 'network-block' | 'ssd' | 'hdd' | 'virtual-disk' | 'network-fs' | 'tmpfs' | 'loop' | 'unknown';

export type Confidence = 'high' | 'medium' | 'low';

/** How a disk is attached, from its sysfs path and name. */
export type Transport = 'nvme' | 'nvme-fabrics' | 'sata' | 'scsi' | 'virtio-blk' | 'virtio-scsi' | 'xen' | 'hyper-v' | 'usb' | 'mmc' | 'unknown';

export interface Classification {
  storageClass: StorageClass;
  confidence: Confidence;
  /** The evidence, each naming what was read: model text, rotational flag, driver, transport. */
  reasons: string[];
}

/** What sysfs says about a whole disk (a leaf of the device stack). */
export interface DiskEvidence {
  /** Kernel name, e.g. "nvme1n1", "sda", "vda". */
  name: string;
  /** The disk's directory under /sys/devices. */
  sysfsPath: string;
  transport: Transport;
  /** Kernel driver bound to the disk's device, e.g. "nvme", "sd", "virtio_blk". */
  driver: string | null;
  /** SCSI/ATA vendor ("ATA", "Google", "Msft"), or the virtio vendor id; NVMe has none. */
  vendor: string | null;
  model: string | null;
  /** queue/rotational; hypervisors set it as they please, so it is weighed by transport. */
  rotational: boolean | null;
}

export interface DiskInfo extends DiskEvidence, Classification {}

export interface StorageInfo {
  /** The path asked about. */
  path: string;
  /** The path with every symlink resolved. */
  resolvedPath: string;
  mount: {
    mountPoint: string;
    fsType: string;
    source: string;
    /** "MAJOR:MINOR" of the mounted filesystem. */
    device: string;
    /** Mount options followed by filesystem (super block) options, without repeats. */
    options: string[];
  };
  storageClass: StorageClass;
  confidence: Confidence;
  reasons: string[];
  /** The layers from the filesystem down, e.g. ["dm-0 (LVM vg0-pgdata)", "sda2 (partition of sda)", "sda"]. */
  stack: string[];
  /** The whole disks at the bottom of the stack. */
  disks: DiskInfo[];
}
