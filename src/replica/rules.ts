/**
 * Pure rules for replicas: slot names, password files, SCRAM verifiers, the pg_hba rule, and the
 * judging of gathered facts into check results (gather elsewhere, judge here, unit-tested).
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { formatBytes } from '../format.js';
import { check, type CheckResult } from '../pipeline/step.js';
import type { HbaRuleRow } from '../sql.js';

/** A slot name from the host and the directory: lower-case letters, digits and _, at most 63 bytes. */
export function slotNameFor(host: string, replicaDir: string): string {
  const base = replicaDir.split('/').filter(Boolean).pop() ?? 'data';
  const raw = `pgscale_${host === 'local' ? 'local' : host.replace(/^.*@/, '')}_${base}`;
  const clean = raw
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_')
    .replace(/_+/g, '_')
    .replace(/_$/, '');
  if (clean.length <= 63) return clean;
  const hash = createHash('sha256').update(raw).digest('hex').slice(0, 8);
  return `${clean.slice(0, 54)}_${hash}`;
}

export const validSlotName = (s: string): boolean => /^[a-z0-9_]{1,63}$/.test(s);

// ---- password files (libpq's format: host:port:database:user:password, \ escapes : and \) ----

const pgpassField = (s: string) => s.replace(/\\/g, '\\\\').replace(/:/g, '\\:');

export function pgpassLine(host: string, port: number, database: string, user: string, password: string): string {
  if (/[\n\r]/.test(password)) throw new Error('a password with a line break cannot be written to a password file');
  return [host, String(port), database, user, password].map(pgpassField).join(':') + '\n';
}

function splitPgpass(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && i + 1 < line.length) cur += line[++i];
    else if (c === ':' && out.length < 4) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** The password libpq would take from this file for a replication connection (first match wins). */
export function pgpassLookup(text: string, want: { host: string; port: number; user: string }): string | undefined {
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!line || line.startsWith('#')) continue;
    const f = splitPgpass(line);
    if (f.length < 5) continue;
    const [host, port, db, user, password] = f as [string, string, string, string, string];
    const hostOk = host === '*' || host === want.host || (host === 'localhost' && want.host.startsWith('/'));
    if (hostOk && (port === '*' || port === String(want.port)) && (db === '*' || db === 'replication') && (user === '*' || user === want.user)) return password;
  }
  return undefined;
}

/** A SCRAM-SHA-256 verifier as PostgreSQL stores it: the password itself is never sent anywhere. */
export function scramVerifier(password: string, salt: Buffer = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

// ---- pg_hba ----

/** The one rule a replica needs: exactly that role, exactly that address, scram only. */
export function hbaRule(role: string, address: string, slot: string): string {
  const quoted = /^[a-z_][a-z0-9_]*$/.test(role) ? role : `"${role.replace(/"/g, '""')}"`;
  return `host replication ${quoted} ${address}/32 scram-sha-256  # pgscale replica ${slot}`;
}

export const hbaMarker = (slot: string) => `# pgscale replica ${slot}`;

/** The rule goes before the first rule: pg_hba's first match wins, and this one matches only the replica. */
export function insertHbaRule(text: string, rule: string): string {
  const lines = text.split('\n');
  const first = lines.findIndex((l) => l.trim() !== '' && !l.trim().startsWith('#'));
  const at = first < 0 ? lines.length : first;
  lines.splice(at, 0, rule);
  return lines.join('\n');
}

/** Removes only lines carrying this replica's marker. */
export function removeHbaRule(text: string, slot: string): string {
  return text
    .split('\n')
    .filter((l) => !l.endsWith(hbaMarker(slot)))
    .join('\n');
}

export const hbaAllows = (rules: readonly HbaRuleRow[], role: string, address: string): boolean =>
  rules.some(
    (r) =>
      r.type === 'host' &&
      r.database?.length === 1 &&
      r.database[0] === 'replication' &&
      r.user_name?.length === 1 &&
      r.user_name[0] === role &&
      r.address === address &&
      r.netmask === '255.255.255.255' &&
      r.auth_method === 'scram-sha-256',
  );

// ---- judging ----

export interface PrimaryFacts {
  major: number;
  version: string;
  inRecovery: boolean;
  walLevel: string;
  maxWalSenders: number;
  sendersInUse: number;
  maxReplicationSlots: number;
  slotsInUse: number;
  maxSlotWalKeepSize: number;
  listenAddresses: string;
  /** Free bytes on the primary's WAL volume: what a slot may retain at most. */
  walVolumeFree: number | null;
  slotExists: boolean;
  role: { exists: boolean; replication: boolean; login: boolean; scram: boolean };
  passwordAvailable: boolean;
  hbaRulePresent: boolean;
  hbaErrors: string[];
  configOutsideDataDir: boolean;
  tablespaces: { name: string; location: string; bytes: number }[];
  dataBytes: number;
  walBytes: number;
}

export interface PathProbe {
  path: string;
  state: 'absent' | 'empty' | 'nonempty' | 'notdir' | 'unknown';
  writable: boolean;
  /** Free bytes and the filesystem's mount point (of the directory or the parent it will be created in). */
  avail: number | null;
  mount: string | null;
}

export interface HostFacts {
  destination: string;
  /** Why ssh failed, when it did: nothing else was gathered. */
  sshError: string | null;
  ownerExists: boolean;
  /** `postgres --version` of the replica bindir, or null when missing. */
  version: string | null;
  paths: PathProbe[];
}

export interface Intent {
  role: string;
  slot: string;
  primaryAddress: string | null;
  replicaAddress: string | null;
  replicaDir: string;
  replicaWaldir: string | null;
  /** The tablespace locations on the replica: mapped, or the primary's own path. */
  tablespaceTargets: { name: string; location: string; target: string }[];
  local: boolean;
  createRole: boolean;
}

export const versionMajor = (v: string): number => Number(/(\d+)(?:\.(\d+))?/.exec(v)?.[1] ?? NaN);
const versionText = (v: string) => /(\d+(?:\.\d+)*)/.exec(v)?.[1] ?? v;

export function listensOn(listen: string, address: string): boolean {
  const list = listen.split(',').map((s) => s.trim());
  return (
    list.includes('*') ||
    list.includes(address) ||
    (address === '0.0.0.0' ? false : list.includes('0.0.0.0')) ||
    (address === '127.0.0.1' && list.includes('localhost'))
  );
}

/** A size proposed for max_slot_wal_keep_size: half the WAL volume's free space, whole GB, at least 1 GB. */
export function proposedSlotKeep(walVolumeFree: number | null): string {
  if (!walVolumeFree) return '10GB';
  return `${Math.max(1, Math.floor(walVolumeFree / 2 / 1024 ** 3))}GB`;
}

export function judgePrimary(f: PrimaryFacts, want: Intent): CheckResult[] {
  const out: CheckResult[] = [];
  out.push(
    f.inRecovery ? check.fail('primary', 'the server is a standby: replicas are cloned from the primary') : check.pass('primary', `PostgreSQL ${f.version}`),
  );
  out.push(
    f.walLevel === 'replica' || f.walLevel === 'logical'
      ? check.pass('wal_level', f.walLevel)
      : check.fail('wal_level', `wal_level is ${f.walLevel}: set it to replica (a restart) first`),
  );
  const freeSenders = f.maxWalSenders - f.sendersInUse;
  out.push(
    freeSenders >= 2
      ? check.pass('max_wal_senders', `${freeSenders} of ${f.maxWalSenders} free (the copy uses 2, the standby 1)`)
      : check.fail(
          'max_wal_senders',
          `${f.sendersInUse} of ${f.maxWalSenders} wal senders in use: pg_basebackup -X stream needs 2 free — raise max_wal_senders (a restart)`,
        ),
  );
  const freeSlots = f.maxReplicationSlots - f.slotsInUse;
  out.push(
    freeSlots >= 1
      ? check.pass('max_replication_slots', `${freeSlots} of ${f.maxReplicationSlots} free`)
      : check.fail(
          'max_replication_slots',
          `all ${f.maxReplicationSlots} replication slots are in use: raise max_replication_slots (a restart) or drop an unused slot`,
        ),
  );
  out.push(
    f.slotExists
      ? check.fail('slot', `a replication slot named ${want.slot} exists already: pass another --slot, or remove the replica that uses it`)
      : check.pass('slot', `${want.slot} is free; it is created reserving WAL before the copy`),
  );
  if (f.maxSlotWalKeepSize === -1)
    out.push(
      check.warn(
        'max_slot_wal_keep_size',
        `-1: an offline replica's slot retains WAL without limit and can fill the WAL volume${f.walVolumeFree !== null ? ` (${formatBytes(f.walVolumeFree)} free)` : ''} — set max_slot_wal_keep_size = '${proposedSlotKeep(f.walVolumeFree)}' (a reload; pgscale tune proposes it too)`,
      ),
    );
  else out.push(check.pass('max_slot_wal_keep_size', `${formatBytes(f.maxSlotWalKeepSize)}: a slot retains at most that much WAL`));
  if (!f.role.exists) {
    out.push(
      want.createRole && f.passwordAvailable
        ? check.pass(
            'replication role',
            `${want.role} does not exist: it is created with LOGIN REPLICATION and a SCRAM verifier of the password from the passfile`,
          )
        : check.fail(
            'replication role',
            `${want.role} does not exist and no password source names it: put "${want.primaryAddress ?? '*'}:PORT:replication:${want.role}:PASSWORD" in a 0600 file given by --replication-passfile or PGPASSFILE`,
          ),
    );
  } else {
    const lacks = [!f.role.replication && 'REPLICATION', !f.role.login && 'LOGIN', !f.role.scram && 'a SCRAM password'].filter(Boolean);
    out.push(
      lacks.length
        ? check.fail(
            'replication role',
            `${want.role} lacks ${lacks.join(', ')}: ALTER ROLE ${want.role} WITH ${!f.role.replication ? 'REPLICATION ' : ''}${!f.role.login ? 'LOGIN ' : ''}; set its password with psql's \\password (scram)`,
          )
        : check.pass('replication role', `${want.role} has LOGIN, REPLICATION and a SCRAM password`),
    );
    out.push(
      f.passwordAvailable
        ? check.pass('replication password', 'found in the passfile; the replica gets its own 0600 copy')
        : check.fail(
            'replication password',
            `no entry for ${want.role} (database replication) in the passfile: give one with --replication-passfile or PGPASSFILE`,
          ),
    );
  }
  if (want.primaryAddress?.startsWith('/'))
    out.push(
      check.fail(
        'primary listens',
        `${want.primaryAddress} is a socket directory: a replica connects over TCP (its pg_hba rule is host replication ${want.role} ADDRESS/32 scram-sha-256), so --primary-address must be an IP address the primary listens on, e.g. 127.0.0.1 for a replica on this host`,
      ),
    );
  else if (want.primaryAddress) {
    out.push(
      listensOn(f.listenAddresses, want.primaryAddress)
        ? check.pass('primary listens', `listen_addresses '${f.listenAddresses}' covers ${want.primaryAddress}`)
        : check.fail(
            'primary listens',
            `the replica reaches the primary at ${want.primaryAddress}, but listen_addresses is '${f.listenAddresses}': add ${want.primaryAddress} to listen_addresses (a restart), or give --primary-address an address it listens on`,
          ),
    );
  }
  if (f.hbaErrors.length) out.push(check.fail('pg_hba.conf', `the server reports errors in pg_hba.conf: ${f.hbaErrors.join('; ')}`));
  else if (want.replicaAddress)
    out.push(
      f.hbaRulePresent
        ? check.pass('pg_hba rule', `host replication ${want.role} ${want.replicaAddress}/32 scram-sha-256 is present`)
        : check.info(
            'pg_hba rule',
            `host replication ${want.role} ${want.replicaAddress}/32 scram-sha-256 is added (diff below) and the configuration reloaded`,
          ),
    );
  out.push(
    f.configOutsideDataDir
      ? check.fail(
          'configuration',
          'postgresql.conf lives outside the data directory: pg_basebackup does not copy it, and this layout is not supported for replicas yet',
        )
      : check.pass('configuration', 'postgresql.conf is inside the data directory: the copy carries it'),
  );
  for (const t of want.tablespaceTargets) {
    if (want.local && t.target === t.location)
      out.push(
        check.fail(
          'tablespace mapping',
          `tablespace ${t.name} is at ${t.location}; on this host the replica needs another place: --tablespace-mapping ${t.location}=NEW`,
        ),
      );
  }
  return out;
}

export function judgeHost(h: HostFacts, want: Intent, primaryMajor: number, primaryVersion: string, need: Map<string, number>): CheckResult[] {
  const out: CheckResult[] = [];
  if (h.sshError) return [check.fail('ssh', h.sshError)];
  if (!want.local) out.push(check.pass('ssh', `${h.destination} reached non-interactively, host key known`));
  if (!want.replicaAddress || !want.primaryAddress)
    out.push(check.fail('addresses', `the replica's address as the primary sees it is unknown: pass --replica-address and --primary-address`));
  else out.push(check.pass('addresses', `the replica connects from ${want.replicaAddress} to the primary at ${want.primaryAddress}`));
  out.push(
    h.ownerExists
      ? check.pass('replica owner', 'the account exists on the replica host')
      : check.fail('replica owner', 'the account that is to own the replica does not exist on the replica host'),
  );
  if (!h.version) out.push(check.fail('replica binaries', 'no postgres in the replica bindir on that host: pass --replica-bindir'));
  else {
    const major = versionMajor(h.version);
    if (major !== primaryMajor)
      out.push(
        check.fail(
          'replica binaries',
          `PostgreSQL ${versionText(h.version)} there, the primary is ${primaryMajor}: a physical replica needs the same major version`,
        ),
      );
    else if (versionText(h.version) !== versionText(primaryVersion))
      out.push(
        check.warn(
          'replica binaries',
          `${versionText(h.version)} there, ${versionText(primaryVersion)} on the primary: same major, minors differ — keep standbys at or above the primary's minor`,
        ),
      );
    else out.push(check.pass('replica binaries', `PostgreSQL ${versionText(h.version)}, as on the primary`));
  }
  const mounts = new Map<string, { avail: number; need: number; paths: string[] }>();
  for (const p of h.paths) {
    const what = p.path === want.replicaDir ? 'data directory' : p.path === want.replicaWaldir ? 'WAL directory' : 'tablespace';
    if (p.state === 'nonempty') out.push(check.fail('target directory', `${p.path} (${what}) is not empty`));
    else if (p.state === 'notdir') out.push(check.fail('target directory', `${p.path} (${what}) exists and is not a directory`));
    else if (!p.writable)
      out.push(
        check.fail(
          'target directory',
          `${p.path} (${what}): ${p.state === 'absent' ? 'its parent does not exist or' : 'it'} is not writable by the replica's owner`,
        ),
      );
    else out.push(check.pass('target directory', `${p.path} (${what}) is ${p.state}, writable by the owner`));
    if (p.mount !== null && p.avail !== null) {
      const m = mounts.get(p.mount) ?? { avail: p.avail, need: 0, paths: [] };
      m.need += need.get(p.path) ?? 0;
      m.paths.push(p.path);
      mounts.set(p.mount, m);
    }
  }
  for (const [mount, m] of mounts) {
    out.push(
      m.need <= m.avail
        ? check.pass('free space', `${mount}: ${formatBytes(m.avail)} free for ${formatBytes(m.need)} (${m.paths.join(', ')})`)
        : check.fail('free space', `${mount}: ${formatBytes(m.avail)} free, the replica needs ${formatBytes(m.need)} there (${m.paths.join(', ')})`),
    );
  }
  return out;
}

/** A file pgscale is to create (the replica's password file): it must not exist, pgscale never overwrites what it did not write. */
export function judgeNewFile(probe: PathProbe, what: string): CheckResult {
  if (probe.state === 'absent')
    return probe.writable
      ? check.pass(what, `${probe.path} is free`)
      : check.fail(what, `${probe.path}: its directory does not exist or is not writable by the replica's owner`);
  return check.fail(
    what,
    `${probe.path} exists already: pgscale does not overwrite a file it did not create`,
    `move ${probe.path} away, or choose another --replica-pgdata`,
  );
}

/** Lines of a server log shown in an error: the last few, none that mentions a password. */
export function logTail(text: string, count = 15): string[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(-count)
    .map((l) => (/password/i.test(l) ? '[a line mentioning a password, left out]' : l));
}

/** Bytes each target directory must hold: data (without tablespaces), WAL (max_wal_size), each tablespace; 10 % margin. */
export function spaceNeeds(
  f: Pick<PrimaryFacts, 'dataBytes' | 'walBytes' | 'tablespaces'>,
  want: Pick<Intent, 'replicaDir' | 'replicaWaldir' | 'tablespaceTargets'>,
): Map<string, number> {
  const margin = (n: number) => Math.round(n * 1.1);
  const tsBytes = f.tablespaces.reduce((a, t) => a + t.bytes, 0);
  const need = new Map<string, number>();
  const add = (p: string, n: number) => need.set(p, (need.get(p) ?? 0) + margin(n));
  add(want.replicaDir, Math.max(0, f.dataBytes - tsBytes));
  add(want.replicaWaldir ?? want.replicaDir, f.walBytes);
  for (const t of want.tablespaceTargets) add(t.target, f.tablespaces.find((x) => x.name === t.name)?.bytes ?? 0);
  return need;
}

/** What pg_basebackup -P writes: "  1234/56789 kB (2%), 0/1 tablespace". */
export function parseBasebackupProgress(chunk: string): { doneBytes: number; totalBytes: number } | undefined {
  const all = [...chunk.matchAll(/(\d+)\/(\d+) kB/g)];
  const m = all[all.length - 1];
  return m ? { doneBytes: Number(m[1]) * 1024, totalBytes: Number(m[2]) * 1024 } : undefined;
}

/** libpq connection options and the major that introduced them: an older server's walreceiver refuses them. */
const conninfoOptionSince: Record<string, number> = {
  require_auth: 16,
  sslcertmode: 16,
  load_balance_hosts: 16,
  gssdelegation: 16,
  sslnegotiation: 17,
  sslkeylogfile: 18,
  min_protocol_version: 18,
  max_protocol_version: 18,
  oauth_issuer: 18,
  oauth_client_id: 18,
  oauth_client_secret: 18,
  oauth_scope: 18,
};

/** A conninfo string split into its `key=value` words, each kept as written (quotes and escapes intact). */
function conninfoWords(s: string): string[] {
  const words: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '\\' && i + 1 < s.length) {
      cur += ch + s[++i];
      continue;
    }
    if (ch === "'") quoted = !quoted;
    if (ch === ' ' && !quoted) {
      if (cur) words.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (cur) words.push(cur);
  return words;
}

/**
 * postgresql.auto.conf with primary_conninfo stripped of options the standby's server does not
 * know: `pg_basebackup -R` of a newer libpq (Debian's wrapper picks the newest) writes every option
 * it has, and a 16 walreceiver refuses sslnegotiation (17) with "invalid connection option".
 */
export function conninfoForServer(autoConf: string, serverMajor: number): string {
  return autoConf
    .split('\n')
    .map((line) => {
      const m = /^(\s*primary_conninfo\s*=\s*)'((?:[^'\\]|''|\\.)*)'(.*)$/.exec(line);
      if (!m) return line;
      const words = conninfoWords(m[2]!.replace(/''|\\(.)/g, (q, c: string | undefined) => (q === "''" ? "'" : c!)));
      const kept = words.filter((w) => (conninfoOptionSince[w.slice(0, w.indexOf('='))] ?? 0) <= serverMajor);
      return kept.length === words.length ? line : `${m[1]}'${kept.join(' ').replace(/['\\]/g, (c) => c + c)}'${m[3]}`;
    })
    .join('\n');
}

// ---- remove: what the target directory is, and what may be done to it ----

/** The directory `replica remove` was pointed at, as found on its host. */
export interface RemoveTargetFacts {
  state: 'absent' | 'notdir' | 'unreadable' | 'dir';
  /** PG_VERSION's content: a PostgreSQL data directory; null when there is none. */
  pgVersion: string | null;
  standbySignal: boolean;
  /** From its postgresql.auto.conf (pg_basebackup -R writes them there). */
  primaryConninfo: string | null;
  primarySlotName: string | null;
  /** pg_controldata's; null when it could not be read (another major, no pg_control). */
  systemIdentifier: string | null;
  running: boolean;
}

export interface RemovePrimaryFacts {
  systemIdentifier: string;
  major: number;
  port: number;
  slotExists: boolean;
  /** Where the walsender holding the slot streams to, when one does ('local' for a socket). */
  slotActiveFrom: string | null;
  hbaRuleMarked: boolean;
}

export interface RemoveIntent {
  replicaDir: string;
  slot: string;
  keepData: boolean;
  /** The password file pgscale writes beside the data directory (removed only when the standby's conninfo names it). */
  passfile: string;
}

/** What `replica remove` does: each part only when the facts show it belongs to this replica. */
export interface RemoveActions {
  [key: string]: boolean;
  stop: boolean;
  dropSlot: boolean;
  removeHba: boolean;
  removeData: boolean;
  removePassfile: boolean;
}

/** The value of a key in a libpq conninfo string (quoted or not), or null. */
export function conninfoValue(conninfo: string, key: string): string | null {
  for (const w of conninfoWords(conninfo)) {
    const eq = w.indexOf('=');
    if (eq > 0 && w.slice(0, eq).trim() === key) {
      const v = w.slice(eq + 1).trim();
      return v.startsWith("'") && v.endsWith("'") ? v.slice(1, -1).replace(/\\(.)/g, '$1') : v;
    }
  }
  return null;
}

/** What the directory is, in words, for the plan and for a refusal. */
export function describeRemoveTarget(t: RemoveTargetFacts, primary: Pick<RemovePrimaryFacts, 'systemIdentifier' | 'major'>): string {
  if (t.state === 'absent') return 'absent';
  if (t.state === 'notdir') return 'a file, not a directory';
  if (t.state === 'unreadable') return "a directory the replica's owner cannot read";
  if (!t.pgVersion) return 'a directory that is not a PostgreSQL data directory (no PG_VERSION)';
  const what = `a PostgreSQL ${t.pgVersion} data directory${t.running ? ' with a running server' : ''}`;
  if (Number(t.pgVersion) !== primary.major) return `${what}; the primary is ${primary.major}: not its standby`;
  if (!t.systemIdentifier) return `${what} without a readable pg_control`;
  if (t.systemIdentifier !== primary.systemIdentifier)
    return `${what} of another cluster (system identifier ${t.systemIdentifier}, the primary's is ${primary.systemIdentifier})`;
  if (!t.standbySignal) return `${what}, a copy of this primary that is not a standby (no standby.signal: promoted, or a restored backup)`;
  return `${what}, a standby of this primary`;
}

/**
 * Judges a removal: the directory is stopped and deleted only when it is a standby of this primary
 * (the same system identifier, standby.signal); any other directory is kept and its server never
 * stopped. The slot and the pg_hba rule go only when they belong to this replica: the standby's
 * primary_slot_name names the slot, or (no standby there) nobody streams through it.
 */
export function judgeRemoval(t: RemoveTargetFacts, primary: RemovePrimaryFacts, want: RemoveIntent): { checks: CheckResult[]; actions: RemoveActions } {
  const checks: CheckResult[] = [];
  const what = describeRemoveTarget(t, primary);
  const isStandby = t.state === 'dir' && t.standbySignal && t.systemIdentifier !== null && t.systemIdentifier === primary.systemIdentifier;
  let slotBelongs: boolean;
  if (isStandby) {
    const streamsThrough = t.primarySlotName;
    slotBelongs = streamsThrough === want.slot;
    // the system identifier says whose standby it is; a port elsewhere means it streams from another standby
    const port = t.primaryConninfo ? conninfoValue(t.primaryConninfo, 'port') : null;
    if (port !== null && Number(port) !== primary.port)
      checks.push(
        check.warn(
          'replica upstream',
          `its primary_conninfo connects to port ${port}, not this primary's ${primary.port}: it may stream from another standby (cascading)`,
        ),
      );
    checks.push(
      slotBelongs
        ? check.pass('replica', `${want.replicaDir} is ${what}, streaming through slot ${want.slot}`)
        : check.fail(
            'replica',
            `${want.replicaDir} is ${what}, but its primary_slot_name is ${streamsThrough ?? 'not set'}, not ${want.slot}: nothing is changed`,
            streamsThrough ? `pass --slot ${streamsThrough}` : 'check --slot and --replica-pgdata',
          ),
    );
  } else {
    // no standby of this primary there: the slot is this replica's only while nobody streams through it
    slotBelongs = primary.slotActiveFrom === null;
    if (primary.slotExists && !slotBelongs)
      checks.push(
        check.fail(
          'slot',
          `slot ${want.slot} is in use by a standby streaming from ${primary.slotActiveFrom}, and ${want.replicaDir} is ${what}: that standby is not the replica in ${want.replicaDir}`,
          'check --host, --replica-pgdata and --slot',
        ),
      );
  }
  const actions: RemoveActions = {
    stop: isStandby && slotBelongs && t.running,
    dropSlot: slotBelongs && primary.slotExists,
    removeHba: slotBelongs && primary.hbaRuleMarked,
    removeData: isStandby && slotBelongs && !want.keepData,
    removePassfile: isStandby && slotBelongs && !want.keepData && t.primaryConninfo !== null && conninfoValue(t.primaryConninfo, 'passfile') === want.passfile,
  };
  if (!isStandby && t.state !== 'absent') {
    const leftovers = [actions.dropSlot && `slot ${want.slot}`, actions.removeHba && 'its pg_hba rule'].filter(Boolean).join(' and ');
    if (!want.keepData)
      checks.push(
        check.fail(
          'replica directory',
          `${want.replicaDir} is ${what}: it is kept and no server there is stopped — pgscale deletes only a standby of this primary (the same system identifier, standby.signal)`,
          leftovers ? `to remove only ${leftovers}, pass --keep-data` : 'check --host and --replica-pgdata',
        ),
      );
    else checks.push(check.info('replica directory', `${want.replicaDir} is ${what}: it is not touched (--keep-data)`));
  } else if (t.state === 'absent') checks.push(check.info('replica directory', `${want.replicaDir} is absent (already removed?)`));
  if (checks.every((c) => c.passed) && !Object.values(actions).some(Boolean))
    checks.push(
      check.fail(
        'replica',
        `nothing to remove: ${want.replicaDir} is ${what}, no slot ${want.slot}, no pg_hba rule marked for it`,
        'check --host, --replica-pgdata and --slot (pgscale replica list shows the slots)',
      ),
    );
  return { checks, actions };
}
