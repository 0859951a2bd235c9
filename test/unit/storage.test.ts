import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyDisk, combineClassifications, detectStorage, detectTransport } from '../../src/host/storage.js';
import { findMountForPath, parseMountInfo, unescapeMountField } from '../../src/host/mounts.js';
import { HostRoot } from '../../src/host/hostRoot.js';
import { ExitCode, PgscaleError } from '../../src/errors.js';
import type { Classification, Confidence, DiskEvidence, StorageClass } from '../../src/host/types.js';
import { hostFixture } from '../helpers/paths.js';

// ---------------------------------------------------------------- mountinfo

const MOUNTINFO = [
  '22 1 259:1 / / rw,noatime shared:1 - xfs /dev/nvme0n1p1 rw,attr2,inode64',
  '29 22 0:25 / /run rw,nosuid,nodev shared:11 - tmpfs tmpfs rw,size=1k,mode=755',
  '81 22 259:4 / /var/lib/postgresql rw,noatime shared:40 master:2 - xfs /dev/nvme1n1 rw,attr2',
  '82 22 259:5 / /var/lib/postgresql\\040wal rw - ext4 /dev/nvme2n1 rw',
  '83 81 0:60 / /var/lib/postgresql/16 rw - tmpfs tmpfs rw',
  '84 81 259:6 / /var/lib/postgresql/16 rw - ext4 /dev/nvme3n1 rw',
].join('\n');

test('parseMountInfo: fields, optional fields, super options, octal escapes', () => {
  const mounts = parseMountInfo(MOUNTINFO + '\n');
  assert.equal(mounts.length, 6);
  assert.deepEqual(mounts[2], {
    mountId: 81,
    parentId: 22,
    major: 259,
    minor: 4,
    root: '/',
    mountPoint: '/var/lib/postgresql',
    mountOptions: ['rw', 'noatime'],
    fsType: 'xfs',
    source: '/dev/nvme1n1',
    superOptions: ['rw', 'attr2'],
  });
  assert.equal(mounts[3]!.mountPoint, '/var/lib/postgresql wal');
  assert.equal(unescapeMountField('a\\011b\\134c\\012'), 'a\tb\\c\n');
});

test('parseMountInfo: a line without the " - " separator is bad input naming mountinfo', () => {
  assert.throws(
    () => parseMountInfo('22 1 259:1 / / rw,noatime xfs /dev/nvme0n1p1 rw\n'),
    (error: unknown) => error instanceof PgscaleError && error.exitCode === ExitCode.BadInput && error.message.includes('/proc/self/mountinfo'),
  );
});

test('findMountForPath: longest prefix on path boundaries; the last of stacked mounts is on top', () => {
  const mounts = parseMountInfo(MOUNTINFO);
  const at = (path: string) => findMountForPath(mounts, path)?.mountPoint;
  assert.equal(at('/'), '/');
  assert.equal(at('/etc/passwd'), '/');
  assert.equal(at('/var/lib/postgresql'), '/var/lib/postgresql');
  assert.equal(at('/var/lib/postgresql/15/main'), '/var/lib/postgresql');
  assert.equal(at('/var/lib/postgresqlx'), '/');
  assert.equal(at('/var/lib/postgresql wal/16'), '/var/lib/postgresql wal');
  assert.equal(findMountForPath(mounts, '/var/lib/postgresql/16/main')?.source, '/dev/nvme3n1');
});

// ---------------------------------------------------------------- classifying disks

const disk = (overrides: Partial<DiskEvidence>): DiskEvidence => ({
  name: 'nvme1n1',
  sysfsPath: '/sys/devices/pci0000:00/0000:00:1f.0/nvme/nvme1/nvme1n1',
  transport: 'nvme',
  driver: 'nvme',
  vendor: null,
  model: null,
  rotational: false,
  ...overrides,
});

test('classifyDisk: cloud model strings', () => {
  const cases: [Partial<DiskEvidence>, StorageClass, Confidence][] = [
    [{ model: 'Amazon Elastic Block Store' }, 'network-block', 'high'],
    [{ model: 'Amazon EC2 NVMe Instance Storage' }, 'local-nvme', 'high'],
    [{ model: 'nvme_card-pd' }, 'network-block', 'high'],
    [{ model: 'nvme_card' }, 'local-nvme', 'high'],
    [{ model: 'nvme_card7' }, 'local-nvme', 'high'],
    [{ model: 'Microsoft NVMe Direct Disk v2' }, 'local-nvme', 'high'],
    [{ model: 'MSFT NVMe Accelerator v1.0' }, 'network-block', 'high'],
    [{ name: 'sdb', transport: 'virtio-scsi', driver: 'sd', vendor: 'Google', model: 'PersistentDisk', rotational: true }, 'network-block', 'high'],
    [{ name: 'sdb', transport: 'virtio-scsi', driver: 'sd', vendor: 'Google', model: 'EphemeralDisk', rotational: true }, 'ssd', 'high'],
    [{ name: 'sdc', transport: 'hyper-v', driver: 'sd', vendor: 'Msft', model: 'Virtual Disk', rotational: true }, 'network-block', 'medium'],
    [{ name: 'sda', transport: 'sata', driver: 'sd', vendor: 'ATA', model: 'QEMU HARDDISK', rotational: true }, 'virtual-disk', 'medium'],
    [{ name: 'sda', transport: 'scsi', driver: 'sd', vendor: 'VMware', model: 'Virtual disk', rotational: true }, 'virtual-disk', 'medium'],
  ];
  for (const [evidence, storageClass, confidence] of cases) {
    const verdict = classifyDisk(disk(evidence));
    assert.deepEqual([verdict.storageClass, verdict.confidence], [storageClass, confidence], JSON.stringify(evidence));
    assert.ok(
      verdict.reasons.some((reason) => reason.includes(evidence.model!)),
      verdict.reasons.join('\n'),
    );
  }
});

test('classifyDisk: transport and rotational flag when the model says nothing', () => {
  const cases: [Partial<DiskEvidence>, StorageClass, Confidence][] = [
    [{ transport: 'nvme-fabrics', model: 'Linux' }, 'network-block', 'high'],
    [{ model: 'SAMSUNG MZQL23T8HCLS-00A07' }, 'local-nvme', 'medium'],
    [{ name: 'vda', transport: 'virtio-blk', driver: 'virtio_blk', rotational: true }, 'virtual-disk', 'medium'],
    [{ name: 'xvdf', transport: 'xen', driver: 'vbd', rotational: false }, 'virtual-disk', 'medium'],
    [{ name: 'sda', transport: 'sata', vendor: 'ATA', model: 'ST4000NM0035-1V4', rotational: true }, 'hdd', 'high'],
    [{ name: 'sda', transport: 'sata', vendor: 'ATA', model: 'Samsung SSD 870', rotational: false }, 'ssd', 'high'],
    [{ name: 'sdb', transport: 'scsi', vendor: 'TOSHIBA', model: 'KPM5XRUG1T92', rotational: false }, 'ssd', 'medium'],
    [{ name: 'sdc', transport: 'usb', vendor: 'WD', model: 'Elements 25A2', rotational: true }, 'hdd', 'low'],
    [{ name: 'sdd', transport: 'scsi', vendor: 'X', model: 'Y', rotational: null }, 'unknown', 'low'],
  ];
  for (const [evidence, storageClass, confidence] of cases) {
    const verdict = classifyDisk(disk(evidence));
    assert.deepEqual([verdict.storageClass, verdict.confidence], [storageClass, confidence], JSON.stringify(evidence));
  }
  const virtio = classifyDisk(disk({ name: 'vda', transport: 'virtio-blk', driver: 'virtio_blk', rotational: true }));
  assert.ok(
    virtio.reasons.some((r) => r.includes('driver virtio_blk') && r.includes('rotational 1')),
    virtio.reasons.join('\n'),
  );
});

test('detectTransport: from the kernel name and the sysfs path', () => {
  assert.equal(detectTransport('nvme0n1', '/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1', 'pcie'), 'nvme');
  assert.equal(detectTransport('nvme0n1', '/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1', null), 'nvme');
  assert.equal(detectTransport('nvme3n1', '/sys/devices/virtual/nvme-fabrics/ctl/nvme3/nvme3n1', 'tcp'), 'nvme-fabrics');
  assert.equal(detectTransport('vda', '/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda', null), 'virtio-blk');
  assert.equal(detectTransport('sda', '/sys/devices/pci0000:00/0000:00:03.0/virtio0/host0/target0:0:1/0:0:1:0/block/sda', null), 'virtio-scsi');
  assert.equal(detectTransport('sda', '/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda', null), 'sata');
  assert.equal(detectTransport('sdb', '/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb', null), 'usb');
  assert.equal(
    detectTransport(
      'sdc',
      '/sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/f8b3781b-1e82-4818-a1c3-63d806ec15bb/host0/target0:0:0/0:0:0:2/block/sdc',
      null,
    ),
    'hyper-v',
  );
  assert.equal(detectTransport('xvdf', '/sys/devices/vbd-51792/block/xvdf', null), 'xen');
});

test('combineClassifications: one class stays; mixed members give the slowest with less confidence', () => {
  const nvme: Classification = { storageClass: 'local-nvme', confidence: 'high', reasons: ['nvme0n1: fast'] };
  const ssd: Classification = { storageClass: 'ssd', confidence: 'medium', reasons: ['sda: flash'] };
  const hdd: Classification = { storageClass: 'hdd', confidence: 'high', reasons: ['sdb: spinning'] };
  assert.deepEqual(combineClassifications([nvme, nvme]), { storageClass: 'local-nvme', confidence: 'high', reasons: ['nvme0n1: fast', 'nvme0n1: fast'] });
  assert.deepEqual(combineClassifications([ssd, ssd]).confidence, 'medium');
  const mixed = combineClassifications([nvme, hdd]);
  assert.deepEqual([mixed.storageClass, mixed.confidence], ['hdd', 'medium']);
  assert.ok(
    mixed.reasons.some((r) => r.includes('local-nvme, hdd')),
    mixed.reasons.join('\n'),
  );
  const weakMixed = combineClassifications([nvme, ssd]);
  assert.deepEqual([weakMixed.storageClass, weakMixed.confidence], ['ssd', 'low']);
  assert.equal(combineClassifications([]).storageClass, 'unknown');
});

// ---------------------------------------------------------------- fixtures

interface Expected {
  fixture: string;
  path: string;
  storageClass: StorageClass;
  confidence: Confidence;
  mountPoint: string;
  fsType: string;
  stack: string[];
  /** Text each expected to appear in some reason. */
  evidence: string[];
}

const expectations: Expected[] = [
  {
    fixture: 'this-machine-virtio',
    path: '/work',
    storageClass: 'virtual-disk',
    confidence: 'medium',
    mountPoint: '/',
    fsType: 'ext4',
    stack: ['vda'],
    evidence: ['transport virtio-blk', 'driver virtio_blk', 'rotational 1'],
  },
  {
    fixture: 'aws-64g-16cpu-local-nvme',
    path: '/var/lib/postgresql/16/main',
    storageClass: 'local-nvme',
    confidence: 'high',
    mountPoint: '/var/lib/postgresql',
    fsType: 'xfs',
    stack: ['nvme1n1'],
    evidence: ['"Amazon EC2 NVMe Instance Storage"', 'driver nvme'],
  },
  {
    fixture: 'aws-64g-16cpu-local-nvme',
    path: '/',
    storageClass: 'network-block',
    confidence: 'high',
    mountPoint: '/',
    fsType: 'xfs',
    stack: ['nvme0n1p1 (partition of nvme0n1)', 'nvme0n1'],
    evidence: ['"Amazon Elastic Block Store"'],
  },
  {
    fixture: 'aws-ebs-nvme',
    path: '/var/lib/postgresql/16/main',
    storageClass: 'network-block',
    confidence: 'high',
    mountPoint: '/var/lib/postgresql',
    fsType: 'ext4',
    stack: ['nvme1n1'],
    evidence: ['"Amazon Elastic Block Store"', 'transport nvme'],
  },
  {
    fixture: 'container-cgroup2-2cpu-4g',
    path: '/var/lib/postgresql/data',
    storageClass: 'local-nvme',
    confidence: 'medium',
    mountPoint: '/var/lib/postgresql/data',
    fsType: 'ext4',
    stack: ['nvme0n1p2 (partition of nvme0n1)', 'nvme0n1'],
    evidence: ['"SAMSUNG MZQL23T8HCLS-00A07"'],
  },
  {
    fixture: 'container-cgroup2-2cpu-4g',
    path: '/',
    storageClass: 'unknown',
    confidence: 'low',
    mountPoint: '/',
    fsType: 'overlay',
    stack: [],
    evidence: ['upper directory /var/lib/docker/overlay2/', 'not visible'],
  },
  {
    fixture: 'container-cgroup1-2cpu-4g',
    path: '/var/lib/postgresql/data',
    storageClass: 'ssd',
    confidence: 'medium',
    mountPoint: '/var/lib/postgresql/data',
    fsType: 'xfs',
    stack: ['sdb1 (partition of sdb)', 'sdb'],
    evidence: ['transport scsi', 'vendor "TOSHIBA"', 'rotational 0'],
  },
  {
    fixture: 'md-raid0-nvme',
    path: '/var/lib/postgresql/16/main',
    storageClass: 'local-nvme',
    confidence: 'medium',
    mountPoint: '/var/lib/postgresql',
    fsType: 'xfs',
    stack: ['md0 (md raid0)', 'nvme0n1', 'nvme1n1'],
    evidence: ['nvme0n1: transport nvme', 'nvme1n1: transport nvme'],
  },
  {
    fixture: 'lvm-ssd',
    path: '/var/lib/postgresql/16/main',
    storageClass: 'ssd',
    confidence: 'high',
    mountPoint: '/var/lib/postgresql',
    fsType: 'ext4',
    stack: ['dm-1 (LVM vg0-pgdata)', 'sda2 (partition of sda)', 'sda'],
    evidence: ['transport sata', 'model "Samsung SSD 870"', 'rotational 0'],
  },
  {
    fixture: 'lvm-ssd',
    path: '/srv/backups',
    storageClass: 'ssd',
    confidence: 'high',
    mountPoint: '/srv',
    fsType: 'btrfs',
    stack: ['sda3 (partition of sda)', 'sda'],
    evidence: ['anonymous device number 0:45'],
  },
  {
    fixture: 'hdd',
    path: '/var/lib/postgresql/16/main',
    storageClass: 'hdd',
    confidence: 'high',
    mountPoint: '/var/lib/postgresql',
    fsType: 'xfs',
    stack: ['sda3 (partition of sda)', 'sda'],
    evidence: ['rotational 1', 'model "ST4000NM0035-1V4"'],
  },
  {
    fixture: 'hdd',
    path: '/mnt/pgimage/16/main',
    storageClass: 'hdd',
    confidence: 'high',
    mountPoint: '/mnt/pgimage',
    fsType: 'ext4',
    stack: ['loop0 (loop over /srv/images/pg.img)', 'sda2 (partition of sda)', 'sda'],
    evidence: ['loop0 is a loop device over /srv/images/pg.img'],
  },
  {
    fixture: 'hdd',
    path: '/run/postgresql',
    storageClass: 'tmpfs',
    confidence: 'high',
    mountPoint: '/run/postgresql',
    fsType: 'tmpfs',
    stack: [],
    evidence: ['memory'],
  },
];

for (const expected of expectations) {
  test(`detectStorage: ${expected.fixture} ${expected.path} is ${expected.storageClass}`, async () => {
    const info = await detectStorage(new HostRoot(hostFixture(expected.fixture)), expected.path);
    assert.equal(info.storageClass, expected.storageClass, info.reasons.join('\n'));
    assert.equal(info.confidence, expected.confidence, info.reasons.join('\n'));
    assert.equal(info.mount.mountPoint, expected.mountPoint);
    assert.equal(info.mount.fsType, expected.fsType);
    assert.deepEqual(info.stack, expected.stack);
    for (const text of expected.evidence) {
      assert.ok(
        info.reasons.some((reason) => reason.includes(text)),
        `no reason mentions ${text}:\n${info.reasons.join('\n')}`,
      );
    }
  });
}

test('detectStorage: mount details and the disks at the bottom of the stack', async () => {
  const info = await detectStorage(new HostRoot(hostFixture('md-raid0-nvme')), '/var/lib/postgresql/16/main');
  assert.deepEqual(info.mount, {
    mountPoint: '/var/lib/postgresql',
    fsType: 'xfs',
    source: '/dev/md0',
    device: '9:0',
    options: ['rw', 'noatime', 'attr2', 'inode64', 'logbufs=8', 'logbsize=32k', 'sunit=1024', 'swidth=2048', 'noquota'],
  });
  assert.deepEqual(
    info.disks.map((d) => [d.name, d.transport, d.driver, d.model, d.rotational, d.storageClass]),
    [
      ['nvme0n1', 'nvme', 'nvme', 'SAMSUNG MZQL23T8HCLS-00A07', false, 'local-nvme'],
      ['nvme1n1', 'nvme', 'nvme', 'SAMSUNG MZQL23T8HCLS-00A07', false, 'local-nvme'],
    ],
  );
});

test('detectStorage: this machine, through the real root', async () => {
  const info = await detectStorage(new HostRoot('/'), '/');
  assert.equal(info.mount.mountPoint, '/');
  assert.notEqual(info.storageClass, 'unknown', info.reasons.join('\n'));
  assert.ok(info.disks.length > 0);
});
