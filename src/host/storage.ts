/**
 * What storage holds a path (data directory, pg_wal target, tablespace): its mount, the block device stack
 * behind it (partitions, LVM/dm-crypt, md RAID, loop files) and what kind of media the disks at the bottom are.
 */
import { posix } from 'node:path';
import { badInput } from '../errors.js';
import type { HostRoot } from './hostRoot.js';
import { findMountForPath, readMountTable } from './mounts.js';
import type { Classification, Confidence, DiskEvidence, DiskInfo, MountEntry, StorageClass, StorageInfo, Transport } from './types.js';

/** Filesystems whose data lives in RAM. */
const MEMORY_FILESYSTEMS = new Set(['tmpfs', 'ramfs']);
/** Filesystems served over the network. */
const NETWORK_FILESYSTEMS = new Set(['nfs', 'nfs4', 'cifs', 'smb3', 'ceph', 'glusterfs', 'fuse.glusterfs', 'lustre']);
/** Loop files on filesystems on loop files...: deeper than this is a cycle or not worth following. */
const MAX_FILE_BACKED_LAYERS = 8;

// ---------------------------------------------------------------- classifying one disk (pure)

interface KnownModel {
  /** Matched against "VENDOR MODEL" with runs of spaces collapsed; NVMe disks have no vendor. */
  identity: RegExp;
  storageClass: StorageClass;
  confidence: Confidence;
  meaning: string;
}

/**
 * Model strings the cloud providers document for their disks. They are what tells network block storage
 * presented as NVMe or SCSI from storage in the host itself.
 */
const KNOWN_MODELS: readonly KnownModel[] = [
  { identity: /^Amazon Elastic Block Store$/i, storageClass: 'network-block', confidence: 'high', meaning: 'an AWS EBS volume' },
  { identity: /^Amazon EC2 NVMe Instance Storage$/i, storageClass: 'local-nvme', confidence: 'high', meaning: 'AWS EC2 instance store' },
  {
    identity: /^nvme_card-pd$/i,
    storageClass: 'network-block',
    confidence: 'high',
    meaning: 'a Google Persistent Disk or Hyperdisk volume',
  },
  { identity: /^nvme_card\d*$/i, storageClass: 'local-nvme', confidence: 'high', meaning: 'a Google Local SSD' },
  { identity: /^Google PersistentDisk$/i, storageClass: 'network-block', confidence: 'high', meaning: 'a Google Persistent Disk volume' },
  { identity: /^Google EphemeralDisk$/i, storageClass: 'ssd', confidence: 'high', meaning: 'a Google Local SSD attached over SCSI' },
  { identity: /^Microsoft NVMe Direct Disk/i, storageClass: 'local-nvme', confidence: 'high', meaning: 'an Azure local NVMe disk' },
  { identity: /^MSFT NVMe Accelerator/i, storageClass: 'network-block', confidence: 'high', meaning: 'an Azure managed disk' },
  {
    identity: /^Msft Virtual[ _]Disk$/i,
    storageClass: 'network-block',
    confidence: 'medium',
    meaning: 'an Azure managed disk (Azure temporary disks and on-premises Hyper-V disks report the same model)',
  },
  {
    identity: /^(ATA )?(QEMU|VBOX|VMware|Virtual)\b/i,
    storageClass: 'virtual-disk',
    confidence: 'medium',
    meaning: 'a disk emulated by a hypervisor, which also makes up its rotational flag',
  },
];

/** How the disk is attached, from its kernel name and where it sits under /sys/devices. */
export function detectTransport(name: string, sysfsPath: string, nvmeTransport: string | null): Transport {
  if (name.startsWith('nvme')) {
    const fabric = sysfsPath.includes('/nvme-fabrics/') || (nvmeTransport !== null && nvmeTransport !== 'pcie');
    return fabric ? 'nvme-fabrics' : 'nvme';
  }
  if (name.startsWith('vd') && sysfsPath.includes('/virtio')) return 'virtio-blk';
  if (name.startsWith('xvd')) return 'xen';
  if (name.startsWith('mmcblk')) return 'mmc';
  if (/\/usb\d+\//.test(sysfsPath)) return 'usb';
  if (/\/ata\d+\//.test(sysfsPath)) return 'sata';
  if (sysfsPath.includes('/virtio')) return 'virtio-scsi';
  if (sysfsPath.includes('/VMBUS')) return 'hyper-v';
  if (name.startsWith('sd')) return 'scsi';
  return 'unknown';
}

/** How far the rotational flag can be believed: SATA drives report their own rotation rate, USB bridges often lie. */
const ROTATIONAL_TRUST: Partial<Record<Transport, Confidence>> = { sata: 'high', usb: 'low' };

/**
 * Judges one disk: documented cloud model strings first, then the transport, then the rotational flag,
 * believed as far as the transport allows.
 */
export function classifyDisk(disk: DiskEvidence): Classification {
  const identity = [disk.vendor, disk.model]
    .filter((part) => part !== null)
    .join(' ')
    .replace(/\s+/g, ' ')
    .trim();
  const evidence = [
    `transport ${disk.transport}`,
    `driver ${disk.driver ?? 'unknown'}`,
    disk.vendor === null ? null : `vendor "${disk.vendor}"`,
    disk.model === null ? null : `model "${disk.model}"`,
    `rotational ${disk.rotational === null ? 'unknown' : disk.rotational ? '1' : '0'}`,
  ].filter((part) => part !== null);
  const verdict = (storageClass: StorageClass, confidence: Confidence, why: string): Classification => ({
    storageClass,
    confidence,
    reasons: [`${disk.name}: ${evidence.join(', ')}`, `${disk.name}: ${why}`],
  });

  if (disk.transport === 'nvme-fabrics') return verdict('network-block', 'high', 'NVMe over fabrics is storage across the network');
  const known = KNOWN_MODELS.find((entry) => entry.identity.test(identity));
  if (known) return verdict(known.storageClass, known.confidence, `"${identity}" is ${known.meaning}`);
  if (disk.transport === 'virtio-blk' || disk.transport === 'xen') {
    const why = `a ${disk.transport} disk: the hypervisor sets the rotational flag, so it says nothing about the media`;
    return verdict('virtual-disk', 'medium', why);
  }
  if (disk.transport === 'nvme') {
    return verdict('local-nvme', 'medium', 'an NVMe disk whose model is no known cloud network volume: taken as local flash');
  }
  if (disk.rotational === null) return verdict('unknown', 'low', 'no rotational flag to go on');
  const trust = ROTATIONAL_TRUST[disk.transport] ?? 'medium';
  return disk.rotational
    ? verdict('hdd', trust, `rotational flag 1 on ${disk.transport}: spinning disk`)
    : verdict('ssd', trust, `rotational flag 0 on ${disk.transport}: flash`);
}

// ---------------------------------------------------------------- classifying a stack (pure)

/** Fastest first: a stack over different kinds of disk is as slow as its slowest member. */
const SPEED_ORDER: readonly StorageClass[] = ['tmpfs', 'local-nvme', 'ssd', 'network-block', 'virtual-disk', 'network-fs', 'hdd', 'loop', 'unknown'];
const CONFIDENCE_ORDER: readonly Confidence[] = ['high', 'medium', 'low'];

const weakest = (confidences: readonly Confidence[]): Confidence => CONFIDENCE_ORDER[Math.max(...confidences.map((c) => CONFIDENCE_ORDER.indexOf(c)))]!;
const lowered = (confidence: Confidence): Confidence => CONFIDENCE_ORDER[Math.min(CONFIDENCE_ORDER.indexOf(confidence) + 1, CONFIDENCE_ORDER.length - 1)]!;

/** One verdict for everything at the bottom of a stack: their shared class, or the slowest one with less confidence. */
export function combineClassifications(members: readonly Classification[]): Classification {
  if (members.length === 0) return { storageClass: 'unknown', confidence: 'low', reasons: ['no device found under the mount'] };
  const reasons = members.flatMap((member) => member.reasons);
  const classes = [...new Set(members.map((member) => member.storageClass))];
  const confidence = weakest(members.map((member) => member.confidence));
  if (classes.length === 1) return { storageClass: classes[0]!, confidence, reasons };
  const slowest = SPEED_ORDER[Math.max(...classes.map((c) => SPEED_ORDER.indexOf(c)))]!;
  return {
    storageClass: slowest,
    confidence: lowered(confidence),
    reasons: [...reasons, `members differ (${classes.join(', ')}): the stack is only as fast as its slowest, ${slowest}`],
  };
}

// ---------------------------------------------------------------- walking the stack

/** What is under a mount or a device: the layers passed on the way down and what was found at the bottom. */
interface Backing {
  stack: string[];
  /** Why layers were followed the way they were (loop files, overlays, anonymous device numbers). */
  notes: string[];
  disks: DiskInfo[];
  /** Verdicts for what is at the bottom: the disks, and what is not a disk (tmpfs, NFS, dead ends). */
  bottoms: Classification[];
}

const endOfTheLine = (storageClass: StorageClass, confidence: Confidence, reason: string): Backing => ({
  stack: [],
  notes: [],
  disks: [],
  bottoms: [{ storageClass, confidence, reasons: [reason] }],
});

const layered = (layer: string, below: Backing): Backing => ({ ...below, stack: [layer, ...below.stack] });

const noted = (note: string, below: Backing): Backing => ({ ...below, notes: [note, ...below.notes] });

const sideBySide = (members: readonly Backing[]): Backing => ({
  stack: members.flatMap((m) => m.stack),
  notes: members.flatMap((m) => m.notes),
  disks: members.flatMap((m) => m.disks),
  bottoms: members.flatMap((m) => m.bottoms),
});

class StackWalker {
  constructor(
    private readonly root: HostRoot,
    private readonly mounts: readonly MountEntry[],
  ) {}

  async mountOf(path: string): Promise<{ resolvedPath: string; mount: MountEntry }> {
    const resolvedPath = await this.root.resolve(path);
    const mount = findMountForPath(this.mounts, resolvedPath);
    if (!mount) throw badInput(`no mount in /proc/self/mountinfo holds ${resolvedPath}`);
    return { resolvedPath, mount };
  }

  async mount(mount: MountEntry, fileLayers: number): Promise<Backing> {
    const what = `${mount.mountPoint} (${mount.fsType} on ${mount.source})`;
    if (MEMORY_FILESYSTEMS.has(mount.fsType)) return endOfTheLine('tmpfs', 'high', `${what}: memory, emptied on reboot`);
    if (NETWORK_FILESYSTEMS.has(mount.fsType)) return endOfTheLine('network-fs', 'high', `${what}: a network filesystem`);
    if (fileLayers > MAX_FILE_BACKED_LAYERS) return endOfTheLine('unknown', 'low', `${what}: too many file-backed layers to follow`);
    if (mount.fsType === 'overlay') return this.overlay(mount, what, fileLayers);
    if (mount.major !== 0) return this.device(`/sys/dev/block/${mount.major}:${mount.minor}`, fileLayers);
    // btrfs and a few others mount with an anonymous device number; their source still names the device.
    if (mount.source.startsWith('/dev/')) {
      const device = posix.basename(await this.root.resolve(mount.source));
      const below = await this.device(`/sys/class/block/${device}`, fileLayers);
      return noted(`${what}: anonymous device number ${mount.major}:${mount.minor}, followed its source`, below);
    }
    return endOfTheLine('unknown', 'low', `${what}: no block device behind it`);
  }

  /** An overlay's writes land in its upper directory, so that directory's storage is what counts. */
  private async overlay(mount: MountEntry, what: string, fileLayers: number): Promise<Backing> {
    const upper = mount.superOptions.find((option) => option.startsWith('upperdir='))?.slice('upperdir='.length);
    if (upper === undefined) return endOfTheLine('unknown', 'low', `${what}: read-only overlay without an upper directory`);
    if (!(await this.root.exists(upper))) {
      return endOfTheLine('unknown', 'low', `${what}: upper directory ${upper} is not visible here (a container's root filesystem?)`);
    }
    const below = await this.mountOf(upper);
    return layered(`overlay (upper directory ${upper})`, await this.mount(below.mount, fileLayers + 1));
  }

  private async device(sysfsLink: string, fileLayers: number): Promise<Backing> {
    const dir = await this.root.resolve(sysfsLink);
    if (!(await this.root.isDirectory(dir))) {
      return endOfTheLine('unknown', 'low', `${sysfsLink} does not exist: no block device to inspect`);
    }
    const name = posix.basename(dir);

    // A partition's directory sits inside its disk's and holds a "partition" file.
    if (await this.root.exists(`${dir}/partition`)) {
      const disk = posix.dirname(dir);
      return layered(`${name} (partition of ${posix.basename(disk)})`, await this.device(disk, fileLayers));
    }
    const dmName = await this.root.readLine(`${dir}/dm/name`);
    if (dmName !== undefined) {
      const kind = deviceMapperKind((await this.root.readLine(`${dir}/dm/uuid`)) ?? '');
      return layered(`${name} (${kind} ${dmName})`, await this.members(dir, fileLayers));
    }
    const mdLevel = await this.root.readLine(`${dir}/md/level`);
    if (mdLevel !== undefined) return layered(`${name} (md ${mdLevel})`, await this.members(dir, fileLayers));
    if (await this.root.isDirectory(`${dir}/loop`)) return this.loop(dir, name, fileLayers);
    return this.disk(dir, name);
  }

  /** The devices a dm or md device is built on, listed in its slaves/ directory. */
  private async members(dir: string, fileLayers: number): Promise<Backing> {
    const slaves = await this.root.list(`${dir}/slaves`);
    if (slaves.length === 0) return endOfTheLine('unknown', 'low', `${dir}/slaves is empty: nothing to follow`);
    return sideBySide(await Promise.all(slaves.map((slave) => this.device(`${dir}/slaves/${slave}`, fileLayers))));
  }

  /** A loop device is as fast as the storage under its backing file. */
  private async loop(dir: string, name: string, fileLayers: number): Promise<Backing> {
    const file = await this.root.readLine(`${dir}/loop/backing_file`);
    if (file === undefined || !(await this.root.exists(file))) {
      return endOfTheLine('loop', 'low', `${name}: backing file ${file ?? '(none)'} is not visible here`);
    }
    const { mount } = await this.mountOf(file);
    const below = await this.mount(mount, fileLayers + 1);
    return noted(`${name} is a loop device over ${file}, on ${mount.mountPoint}`, layered(`${name} (loop over ${file})`, below));
  }

  private async disk(dir: string, name: string): Promise<Backing> {
    const read = async (file: string): Promise<string | null> => (await this.root.readLine(`${dir}/${file}`)) || null;
    const rotational = await read('queue/rotational');
    const evidence: DiskEvidence = {
      name,
      sysfsPath: dir,
      transport: detectTransport(name, dir, await read('device/transport')),
      // NVMe namespaces hang off the controller, whose PCI function is what the driver binds to.
      driver: (await this.linkName(`${dir}/device/driver`)) ?? (await this.linkName(`${dir}/device/device/driver`)),
      vendor: await read('device/vendor'),
      model: await read('device/model'),
      rotational: rotational === null ? null : rotational === '1',
    };
    const disk: DiskInfo = { ...evidence, ...classifyDisk(evidence) };
    return { stack: [name], notes: [], disks: [disk], bottoms: [disk] };
  }

  private async linkName(link: string): Promise<string | null> {
    return (await this.root.exists(link)) ? posix.basename(await this.root.resolve(link)) : null;
  }
}

/** Device-mapper targets name themselves by the prefix userspace gives their uuid. */
function deviceMapperKind(uuid: string): string {
  if (uuid.startsWith('LVM-')) return 'LVM';
  if (uuid.startsWith('CRYPT-')) return 'dm-crypt';
  if (uuid.startsWith('mpath-')) return 'multipath';
  return 'device-mapper';
}

const unique = (values: readonly string[]): string[] => [...new Set(values)];

export async function detectStorage(root: HostRoot, path: string): Promise<StorageInfo> {
  const walker = new StackWalker(root, await readMountTable(root));
  const { resolvedPath, mount } = await walker.mountOf(path);
  const backing = await walker.mount(mount, 0);
  const verdict = combineClassifications(backing.bottoms);
  return {
    path,
    resolvedPath,
    mount: {
      mountPoint: mount.mountPoint,
      fsType: mount.fsType,
      source: mount.source,
      device: `${mount.major}:${mount.minor}`,
      options: unique([...mount.mountOptions, ...mount.superOptions]),
    },
    storageClass: verdict.storageClass,
    confidence: verdict.confidence,
    reasons: [...backing.notes, ...verdict.reasons],
    stack: backing.stack,
    disks: backing.disks,
  };
}
