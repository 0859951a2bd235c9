/**
 * Pure rules for the standbys of an upgraded primary: a standby's layout read from its files, the
 * method chosen, the checks judged over gathered facts, and the exact command that rebuilds a
 * standby the run could not. No I/O here: src/upgrade/standbys.ts gathers, unit tests cover these.
 */
import { shellQuote } from '../runner.js';
import { check, type CheckResult } from '../pipeline/step.js';
import { formatBytes } from '../format.js';

export type ReplicasMethod = 'rsync' | 'rebuild' | 'leave';

/** Key/value pairs of a libpq connection string (`k=v k='v w'`, backslash escapes inside quotes). */
export function parseConninfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  const s = text.trim();
  while (i < s.length) {
    while (s[i] === ' ') i++;
    const eq = s.indexOf('=', i);
    if (eq < 0) break;
    const key = s.slice(i, eq).trim();
    i = eq + 1;
    while (s[i] === ' ') i++;
    let value = '';
    if (s[i] === "'") {
      i++;
      while (i < s.length && s[i] !== "'") {
        if (s[i] === '\\' && i + 1 < s.length) i++;
        value += s[i++];
      }
      i++;
    } else {
      while (i < s.length && s[i] !== ' ') {
        if (s[i] === '\\' && i + 1 < s.length) i++;
        value += s[i++];
      }
    }
    if (key) out[key] = value;
  }
  return out;
}

/** A quoted postgresql.conf value's text: '' and backslash escapes, as the server's scanner reads them (pg_basebackup -R doubles both). */
export const unescapeConfString = (s: string): string => s.replace(/''|\\(.)/g, (m, c: string | undefined) => (m === "''" ? "'" : c!));

/** A setting's value from postgresql.conf syntax: `name = 'value'` ('' inside quotes is one quote); the last line wins. */
export function confValue(lines: readonly string[], name: string): string | undefined {
  let found: string | undefined;
  for (const line of lines) {
    const m = new RegExp(`^\\s*${name}\\s*=?\\s*(?:'((?:[^'\\\\]|''|\\\\.)*)'|([^\\s#]+))`).exec(line);
    if (m) found = m[1] !== undefined ? unescapeConfString(m[1]) : m[2];
  }
  return found;
}

/** What a standby's files say about it, from the gathering script's `key=value` lines. */
export type StandbyLayout = {
  /** postmaster.pid: the running server's pid, port, first socket directory and listen address. */
  pid: number | null;
  port: number | null;
  socketDir: string | null;
  listen: string | null;
  standbySignal: boolean;
  pgVersion: string | null;
  /** The running postmaster's executable: its bindir. */
  bindir: string | null;
  /** pg_wal's symlink target, when WAL lives outside the data directory. */
  waldir: string | null;
  /** pg_tblspc entries: tablespace oid → directory. */
  tablespaces: { oid: string; location: string }[];
  slot: string | null;
  conninfo: Record<string, string>;
};

export function parseStandbyLayout(text: string): StandbyLayout {
  const lines = text.split('\n');
  const get = (k: string) => {
    const l = lines.find((x) => x.startsWith(`${k}=`));
    const v = l?.slice(k.length + 1).trim();
    return v ? v : null;
  };
  const conf = lines.filter((l) => l.startsWith('conf=')).map((l) => l.slice(5));
  const exe = get('exe');
  return {
    pid: get('pid') ? Number(get('pid')) : null,
    port: get('port') ? Number(get('port')) : null,
    socketDir: get('socket'),
    listen: get('listen'),
    standbySignal: get('standby') === '1',
    pgVersion: get('version'),
    bindir: exe ? exe.replace(/\/[^/]+$/, '') : null,
    waldir: get('waldir'),
    tablespaces: lines
      .filter((l) => l.startsWith('tablespace='))
      .map((l) => {
        const [oid, ...rest] = l.slice('tablespace='.length).split(' ');
        return { oid: oid!, location: rest.join(' ') };
      }),
    slot: confValue(conf, 'primary_slot_name') || null,
    conninfo: parseConninfo(confValue(conf, 'primary_conninfo') ?? ''),
  };
}

/** A directory of the new version beside the old one: /srv/16/main → /srv/17/main, else DIR-17. */
export function newVersionPath(oldPath: string, oldMajor: number, newMajor: number): string {
  const parts = oldPath.split('/');
  const i = parts.lastIndexOf(String(oldMajor));
  if (i > 0) return [...parts.slice(0, i), String(newMajor), ...parts.slice(i + 1)].join('/');
  return `${oldPath.replace(/\/+$/, '')}-${newMajor}`;
}

/** The standby as the primary sees it through its slot (null: no walsender on it). */
export interface StreamingFacts {
  state: string | null;
  lagBytes: number | null;
}

/** Facts gathered about one old standby, judged before downtime. */
export interface OldStandbyFacts {
  name: string;
  sshError: string | null;
  layout: StandbyLayout | null;
  oldMajor: number;
  streaming: StreamingFacts | null;
}

export function judgeOldStandby(f: OldStandbyFacts, maxLagBytes: number): CheckResult[] {
  const n = (what: string) => `standby ${f.name}: ${what}`;
  if (f.sshError) return [check.fail(n('ssh'), f.sshError)];
  const l = f.layout;
  if (!l) return [check.fail(n('layout'), 'its data directory could not be read')];
  const out: CheckResult[] = [];
  if (l.pgVersion !== String(f.oldMajor)) out.push(check.fail(n('version'), `PG_VERSION says ${l.pgVersion ?? 'nothing'}, the primary is ${f.oldMajor}`));
  if (!l.standbySignal) out.push(check.fail(n('standby'), 'no standby.signal in its data directory: not a streaming standby'));
  if (!l.pid || !l.port || !l.socketDir || !l.bindir)
    out.push(check.fail(n('running'), 'not running (no postmaster.pid): a standby is upgraded while it streams, so that it is known to be caught up'));
  if (!l.slot)
    out.push(
      check.fail(
        n('slot'),
        'it streams without a replication slot: pgscale cannot tell from the primary that it is caught up; give it a slot (primary_slot_name) or pass --replicas leave',
      ),
    );
  else if (!f.streaming?.state) out.push(check.fail(n('streaming'), `no walsender on slot ${l.slot}: the standby does not stream`));
  else if (f.streaming.state !== 'streaming') out.push(check.fail(n('streaming'), `state ${f.streaming.state} on slot ${l.slot}, not streaming`));
  else if (f.streaming.lagBytes === null || f.streaming.lagBytes > maxLagBytes)
    out.push(
      check.fail(
        n('caught up'),
        `replay lag ${f.streaming.lagBytes === null ? 'unknown' : formatBytes(f.streaming.lagBytes)} on slot ${l.slot} (limit ${formatBytes(maxLagBytes)}): let it catch up, or pass --replicas leave`,
      ),
    );
  else out.push(check.pass(n('streaming'), `through slot ${l.slot}, replay lag ${formatBytes(f.streaming.lagBytes)}`));
  if (!l.conninfo.user || !l.conninfo.passfile || !l.conninfo.host)
    out.push(
      check.fail(n('primary_conninfo'), `primary_conninfo needs user, host and passfile for a rebuild (found ${Object.keys(l.conninfo).join(', ') || 'none'})`),
    );
  const layout = [
    `data ${l.waldir ? `with WAL in ${l.waldir}` : 'with WAL inside'}`,
    `${l.tablespaces.length} tablespace${l.tablespaces.length === 1 ? '' : 's'}${l.tablespaces.length ? ` (${l.tablespaces.map((t) => t.location).join(', ')})` : ''}`,
  ];
  out.push(check.info(n('layout'), layout.join(', ')));
  return out;
}

/** A walsender or physical slot on the primary that belongs to no standby being upgraded. */
export interface ReplicationEntry {
  slot: string | null;
  slotType: string | null;
  applicationName: string | null;
  clientAddress: string | null;
  active: boolean;
}

/**
 * Standbys the primary serves that no --replica names and pgscale did not create: they cannot
 * follow the upgrade, so they must be named (or the DBA chooses --replicas leave).
 */
export function judgeUnknownStandbys(entries: readonly ReplicationEntry[], knownSlots: ReadonlySet<string>, method: ReplicasMethod): CheckResult[] {
  const out: CheckResult[] = [];
  for (const e of entries) {
    if (e.slotType === 'logical') continue;
    if (e.slot && knownSlots.has(e.slot)) continue;
    const who = e.slot
      ? `slot ${e.slot}${e.active ? ` (streaming to ${e.clientAddress ?? 'a local socket'})` : ' (inactive)'}`
      : `the walsender ${e.applicationName ?? '?'} from ${e.clientAddress ?? 'a local socket'}`;
    if (method === 'leave')
      out.push(
        check.warn(
          'unknown standby',
          `${who}: left on the old version (--replicas leave); it cannot follow the upgraded primary${e.slot ? ', and its slot is not carried by pg_upgrade' : ''}`,
        ),
      );
    else if (!e.active && e.slot)
      out.push(check.warn('unused slot', `${who}: not carried by pg_upgrade; recreate it on the new primary if something still needs it`));
    else out.push(check.fail('unknown standby', `${who} is not one pgscale knows: name it with --replica HOST:PGDATA, or pass --replicas leave`));
  }
  return out;
}

/** The method: what the DBA asked for, else rsync in link mode when every standby passes its rsync checks, else rebuild. */
export function chooseMethod(
  requested: ReplicasMethod | undefined,
  o: { standbys: number; linkMode: boolean; rsyncChecksPass: boolean },
): { method: ReplicasMethod; why: string } {
  if (requested) return { method: requested, why: 'as asked (--replicas)' };
  if (o.standbys === 0) return { method: 'leave', why: 'no standbys' };
  if (!o.linkMode)
    return {
      method: 'rebuild',
      why: 'the primary is upgraded in copy mode: rsync needs link mode; each standby is cloned again from the new primary once it accepts writes',
    };
  if (!o.rsyncChecksPass)
    return { method: 'rebuild', why: 'a standby fails a check of the rsync method: each standby is cloned again from the new primary once it accepts writes' };
  return { method: 'rsync', why: 'every standby passes the rsync checks (link mode)' };
}

/** What a rebuild needs to name, for the command that rebuilds a standby by hand. */
export interface RebuildTarget {
  primaryDataDir: string;
  destination: string;
  sshConfig: string | null;
  replicaDir: string;
  replicaWaldir: string | null;
  tablespaces: { location: string; target: string }[];
  replicaBindir: string;
  replicaOwner: string;
  replicaPort: number;
  replicaSocketDir: string;
  slot: string;
  role: string;
  primaryAddress: string | null;
  replicaAddress: string | null;
}

/** The exact `pgscale replica add` that rebuilds one standby from the new primary. */
export function rebuildCommand(t: RebuildTarget): string {
  const args = ['pgscale', 'replica', 'add', '--pgdata', t.primaryDataDir, '--host', t.destination];
  if (t.sshConfig) args.push('--ssh-config', t.sshConfig);
  args.push('--replica-pgdata', t.replicaDir);
  if (t.replicaWaldir) args.push('--replica-waldir', t.replicaWaldir);
  for (const ts of t.tablespaces) args.push('--tablespace-mapping', `${ts.location}=${ts.target}`);
  args.push(
    '--replica-bindir',
    t.replicaBindir,
    '--replica-owner',
    t.replicaOwner,
    '--replica-port',
    String(t.replicaPort),
    '--replica-socket-dir',
    t.replicaSocketDir,
    '--slot',
    t.slot,
    '--replication-user',
    t.role,
  );
  if (t.primaryAddress) args.push('--primary-address', t.primaryAddress);
  if (t.replicaAddress) args.push('--replica-address', t.replicaAddress);
  return `${args.map(shellQuote).join(' ')} --replication-passfile FILE`;
}

/** `--replica HOST:PGDATA`: the host part is an ssh destination (or local), the path absolute. */
export function parseReplicaFlag(value: string): { destination: string; dataDir: string } | undefined {
  const i = value.indexOf(':/');
  if (i <= 0) return undefined;
  return { destination: value.slice(0, i), dataDir: value.slice(i + 1).replace(/\/+$/, '') || '/' };
}

/** A standby's WAL directories: the old one (pg_wal's link target, null when inside) and the new one the plan chose. */
export interface StandbyWalDirs {
  oldDataDir: string;
  oldWaldir: string | null;
  newDataDir: string;
  newWaldir: string | null;
}

/** Where the rsync method writes the new standby's WAL; `link`: pg_wal is a link to `dir`, as on the old standby. */
export type WalPlacement = { dir: string; link: boolean } | { problem: string };

/**
 * The new standby keeps its WAL where the old one did: outside the data directory (the new version's
 * directory beside the old one, pg_wal linking to it) or inside. The new primary's pg_wal (the
 * segment pg_resetwal wrote, holding the checkpoint the standby starts from) is rsynced there;
 * pg_upgrade links no WAL between the clusters, so the old standby's WAL stays as it was.
 */
export function standbyWalPlacement(w: StandbyWalDirs): WalPlacement {
  if (!w.oldWaldir) return { dir: `${w.newDataDir.replace(/\/+$/, '')}/pg_wal`, link: false };
  if (!w.oldWaldir.startsWith('/')) return { problem: `pg_wal links to a relative path (${w.oldWaldir}): make it absolute, or use --replicas rebuild` };
  if (!w.newWaldir) return { problem: `WAL in ${w.oldWaldir} has no new directory beside it` };
  const within = (dir: string, root: string) =>
    dir === root || dir.startsWith(`${root.replace(/\/+$/, '')}/`) || root.startsWith(`${dir.replace(/\/+$/, '')}/`);
  for (const [what, root] of [
    ['the old WAL directory', w.oldWaldir],
    ['the old data directory', w.oldDataDir],
    ['the new data directory', w.newDataDir],
  ] as const)
    if (within(w.newWaldir, root)) return { problem: `the new WAL directory ${w.newWaldir} overlaps ${what} ${root}` };
  return { dir: w.newWaldir, link: true };
}

/** What the rsync method needs, gathered per standby. */
export interface RsyncFacts {
  linkMode: boolean;
  rsyncHere: boolean;
  rsyncThere: boolean;
  /** Why the new standby's WAL has no place (standbyWalPlacement): null when it has one. */
  walProblem: string | null;
  /** A standby tablespace whose directory is missing or not beside the data: null when all are in place. */
  tablespaceProblem: string | null;
  /** Why rsync's transfer has no level to work at (rsyncTransfer): null when it has one. */
  transferProblem: string | null;
}

/** Why the rsync method cannot carry this standby (empty: it can). */
export function rsyncBlockers(f: RsyncFacts): string[] {
  const out: string[] = [];
  if (!f.linkMode) out.push('the primary is not upgraded in link mode');
  if (!f.rsyncHere) out.push('rsync is not installed on this host');
  if (!f.rsyncThere) out.push('rsync is not installed on the standby host');
  if (f.walProblem) out.push(f.walProblem);
  if (f.transferProblem) out.push(f.transferProblem);
  if (f.tablespaceProblem) out.push(f.tablespaceProblem);
  return out;
}

const lastName = (d: string) => d.replace(/\/+$/, '').split('/').pop() ?? '';
const parentOf = (d: string) => d.replace(/\/+$/, '').replace(/\/[^/]*$/, '') || '/';

/**
 * The level rsync works at: the data directories themselves (rsync names each source by its last
 * component, so OLD and NEW must differ), or, when both are named alike (…/16/main and …/17/main),
 * the directories above them, as the pg_upgrade documentation's recipe does.
 */
export const transferLevel = (oldDataDir: string, newDataDir: string): 'data directory' | 'parent' =>
  lastName(oldDataDir) === lastName(newDataDir) ? 'parent' : 'data directory';

/** What one directory above a data directory holds: its entries (null: unreadable; absent is empty) and pgscale's own files beside the cluster there. */
export interface Beside {
  entries: string[] | null;
  /** A replica's log and password file, an upgrade's work directory and server log: never transferred, never deleted. */
  own: string[];
}

/** What a transfer one level above the data directories needs to know, gathered on the primary and the standby. */
export interface TransferFacts {
  oldDataDir: string;
  newDataDir: string;
  standbyDataDir: string;
  standbyNewDataDir: string;
  primaryOld: Beside;
  primaryNew: Beside;
  standbyOld: Beside;
}

/**
 * Whether rsync can carry the standby at its level. One level up rsync --delete works in the
 * directory above the standby's data directory: only safe when each directory above (the primary's
 * old and new, the standby's old) holds nothing but that cluster and pgscale's own files beside it,
 * and the standby's data directory bears the primary's name (rsync pairs files by their paths).
 */
export function rsyncTransfer(f: TransferFacts): { problem: string | null } {
  if (transferLevel(f.oldDataDir, f.newDataDir) === 'data directory') return { problem: null };
  const name = lastName(f.oldDataDir);
  const [oldParent, newParent, standbyParent] = [parentOf(f.oldDataDir), parentOf(f.newDataDir), parentOf(f.standbyDataDir)];
  const refuse = (why: string) => ({
    problem: `the primary's old and new data directories are both named ${name}, so rsync works one level up (${oldParent}, ${newParent}), but ${why}`,
  });
  if (oldParent === '/' || newParent === '/') return refuse('that is the root directory');
  if (lastName(oldParent) === lastName(newParent)) return refuse('those are named alike too');
  if (lastName(f.standbyDataDir) !== name) return refuse(`the standby's data directory is named ${lastName(f.standbyDataDir)}, not ${name}`);
  if (parentOf(f.standbyNewDataDir) === standbyParent)
    return refuse(
      `the standby's new data directory ${f.standbyNewDataDir} would sit in ${standbyParent}, where rsync deletes what the primary's ${oldParent} lacks`,
    );
  for (const [dir, b] of [
    [`the primary's ${oldParent}`, f.primaryOld],
    [`the primary's ${newParent}`, f.primaryNew],
    [`the standby's ${standbyParent}`, f.standbyOld],
  ] as const) {
    if (!b.entries) return refuse(`${dir} cannot be read`);
    const others = b.entries.filter((e) => e !== name && !b.own.includes(e));
    if (others.length)
      return refuse(
        `${dir} holds more than the cluster ${name} (${others.slice(0, 3).join(', ')}${others.length > 3 ? ', …' : ''}): rsync --delete would reach it`,
      );
  }
  return { problem: null };
}

/** The standby settings written into the new data directory's postgresql.auto.conf (standby.signal beside it). */
export function standbyAutoConf(conninfo: Record<string, string>, passfile: string, slot: string): string {
  const keep = ['user', 'host', 'port', 'application_name', 'sslmode', 'channel_binding'];
  const quote = (v: string) => (/^[\w./:-]+$/.test(v) ? v : `'${v.replace(/[\\']/g, (c) => `\\${c}`)}'`);
  const words = [...keep.filter((k) => conninfo[k] !== undefined).map((k) => `${k}=${quote(conninfo[k]!)}`), `passfile=${quote(passfile)}`];
  const conf = (v: string) => `'${v.replace(/['\\]/g, (c) => c + c)}'`;
  return `primary_conninfo = ${conf(words.join(' '))}\nprimary_slot_name = ${conf(slot)}\n`;
}
