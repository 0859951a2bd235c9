/**
 * A physical copy of a cluster (pg_basebackup, a restored base backup) carries the source's
 * postgresql.conf, and with it any path settings that name the source: data_directory, hba_file,
 * ident_file, external_pid_file. Started as they are, the copy would run on the source's data
 * directory, read the source's pg_hba.conf or overwrite its pid file. These edits make the copy's
 * own postgresql.conf self-contained; a config edit (not a start option) survives a restart by the DBA.
 */
import { isAbsolute, join, posix, relative } from 'node:path';
import { parseConfigText } from './parse.js';

/** The path settings a copied configuration may carry, and the file each names inside the data directory by default. */
const pathSettings: Record<string, string | null> = {
  data_directory: null,
  hba_file: 'pg_hba.conf',
  ident_file: 'pg_ident.conf',
  external_pid_file: null,
};

export interface CopyEdit {
  line: number;
  name: string;
  value: string;
  /** commented: the default applies (the copy's own file); rewritten: the same file inside the copy. */
  action: 'commented' | 'rewritten';
  to?: string;
  why: string;
}

/** A file outside the source's data directory that the copy needs in its own default place. */
export interface CopyFile {
  from: string;
  to: string;
}

export interface SelfContainedEdits {
  /** The configuration with the edits made (the same text when there are none). */
  text: string;
  edits: CopyEdit[];
  copyFiles: CopyFile[];
  /** include directives naming files outside the source's data directory: shared with the source, not copied. */
  outsideIncludes: string[];
}

const inside = (path: string, dir: string) => {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
};

const quote = (s: string) => `'${s.replace(/'/g, "''")}'`;

/**
 * The edits that make a copy's postgresql.conf its own. A relative path is taken as relative to the
 * data directory (where the server and pg_ctl run); a path naming the source's default file is
 * commented out (the copy has that file in the same place); another path inside the source's data
 * directory is rewritten to the same place in the copy; a hba_file or ident_file outside it is
 * commented out and its file copied to the copy's default place; data_directory and external_pid_file
 * are commented out unless they already name the copy.
 */
export function selfContainedCopyEdits(confText: string, sourceDataDir: string, copyDataDir: string): SelfContainedEdits {
  const absolute = (v: string) => posix.normalize(isAbsolute(v) ? v : join(sourceDataDir, v));
  const lines = confText.split('\n');
  const edits: CopyEdit[] = [];
  const copyFiles: CopyFile[] = [];
  const outsideIncludes: string[] = [];
  for (const entry of parseConfigText(confText, 'postgresql.conf')) {
    if (entry.name === 'include' || entry.name === 'include_if_exists' || entry.name === 'include_dir') {
      if (!inside(absolute(entry.value), sourceDataDir)) outsideIncludes.push(entry.value);
      continue;
    }
    if (!(entry.name in pathSettings)) continue;
    const defaultName = pathSettings[entry.name]!;
    const path = absolute(entry.value);
    // already the copy's own (a copy in the same path on another host)
    if (inside(path, copyDataDir) && (entry.name !== 'data_directory' || path === posix.normalize(copyDataDir))) continue;
    const raw = lines[entry.line - 1]!;
    const comment = (why: string) => {
      lines[entry.line - 1] = `# ${raw.trim()}  # pgscale: commented out in this copy of ${sourceDataDir}: ${why}`;
      edits.push({ line: entry.line, name: entry.name, value: entry.value, action: 'commented', why });
    };
    if (entry.name === 'data_directory') comment('it named the source; the copy is its own data directory');
    else if (entry.name === 'external_pid_file') comment("it would overwrite the source's pid file");
    else if (path === join(sourceDataDir, defaultName)) comment(`the copy has its own ${defaultName} in the same place`);
    else if (inside(path, sourceDataDir)) {
      const to = join(copyDataDir, relative(sourceDataDir, path));
      const why = 'it named the source; the copy has the same file';
      lines[entry.line - 1] = `${entry.name} = ${quote(to)}  # pgscale: was ${quote(entry.value)} in ${sourceDataDir}: ${why}`;
      edits.push({ line: entry.line, name: entry.name, value: entry.value, action: 'rewritten', to, why });
    } else {
      const to = join(copyDataDir, defaultName);
      comment(`the file outside the data directory is copied to ${to}`);
      copyFiles.push({ from: path, to });
    }
  }
  return { text: lines.join('\n'), edits, copyFiles, outsideIncludes };
}
