/** The mount table (/proc/self/mountinfo), shared by storage and cgroup detection. */
import { badInput, type PgscaleError } from '../errors.js';
import type { HostRoot } from './hostRoot.js';
import type { MountEntry } from './types.js';

export const MOUNTINFO = '/proc/self/mountinfo';

/** The error for a host file whose content is not what the kernel writes. */
export function malformedHostFile(file: string, content: string, expected: string): PgscaleError {
  return badInput(
    `${file}: expected ${expected}, found ${JSON.stringify(content.trim())}`,
    'This file comes from the kernel; if it really reads like this, report it together with the file.',
  );
}

/** Decodes the octal escapes the kernel writes for space, tab, newline and backslash ("\040"). */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

const splitOptions = (field: string): string[] => field.split(',').map(unescapeMountField);

/**
 * Parses mountinfo (proc(5)): "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
 * The optional fields vary in number, so the " - " separator finds the filesystem part.
 */
export function parseMountInfo(text: string, file = MOUNTINFO): MountEntry[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const fields = line.split(' ');
      const separator = fields.indexOf('-', 6);
      const device = /^(\d+):(\d+)$/.exec(fields[2] ?? '');
      const [mountId, parentId, , root, mountPoint, mountOptions] = fields;
      const [fsType, source, superOptions] = fields.slice(separator + 1);
      if (separator < 0 || !device || !/^\d+$/.test(mountId ?? '') || !/^\d+$/.test(parentId ?? '') || superOptions === undefined) {
        throw malformedHostFile(file, line, '"ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE OPTIONS"');
      }
      return {
        mountId: Number(mountId),
        parentId: Number(parentId),
        major: Number(device[1]),
        minor: Number(device[2]),
        root: unescapeMountField(root!),
        mountPoint: unescapeMountField(mountPoint!),
        mountOptions: splitOptions(mountOptions!),
        fsType: fsType!,
        source: unescapeMountField(source!),
        superOptions: splitOptions(superOptions),
      };
    });
}

/** The host's mount table; without one nothing about storage or cgroups can be known. */
export async function readMountTable(root: HostRoot): Promise<MountEntry[]> {
  const text = await root.read(MOUNTINFO);
  if (text === undefined) throw badInput(`${MOUNTINFO} is not readable`, 'pgscale needs /proc mounted to inspect the host.');
  return parseMountInfo(text);
}

/**
 * The mount that holds an absolute, symlink-free path: the longest mount point that is a prefix of it.
 * When several mounts share a mount point the last one listed is on top, so it wins.
 */
export function findMountForPath(mounts: readonly MountEntry[], path: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const mount of mounts) {
    const point = mount.mountPoint;
    const contains = point === '/' || path === point || path.startsWith(point + '/');
    if (contains && (best === undefined || point.length >= best.mountPoint.length)) best = mount;
  }
  return best;
}
