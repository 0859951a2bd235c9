/**
 * `pgscale replica add` and `replica remove`: a streaming replica cloned with pg_basebackup through
 * a physical slot that reserves WAL before the copy, on this host or another one over ssh.
 *
 * add:    checks → pg_hba rule (+ reload) → slot → passfile on the replica host → pg_basebackup
 *         there (progress streamed) → start the standby as its owner → verify streaming, lag and
 *         a row written on the primary read on the replica.
 * remove: stop the standby → drop the slot → remove its pg_hba rule → remove its files (unless
 *         --keep-data).
 * Rollback of an add removes only what the run created: the rule carries a marker naming the
 * slot, the slot did not exist before (a check), the directories were absent or empty.
 */
import { randomUUID } from 'node:crypto';
import { chownSync, readFileSync, renameSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs';
import { createPatch } from 'diff';
import { dirname, join } from 'node:path';
import { type ClusterAccess, withDb } from '../cluster/access.js';
import { ExitCode, PgscaleError } from '../errors.js';
import { fsyncPath } from '../files.js';
import { formatBytes } from '../format.js';
import { userByName } from '../osUser.js';
import { defineOperation } from '../pipeline/plan.js';
import { ensurePrivateDir } from '../pipeline/stateDir.js';
import { check, defineStep, type CheckResult, type JsonObject, type StepContext } from '../pipeline/step.js';
import { isLocal, remoteAccount, runnerFor, SshRunner, type HostSpec } from '../remote/ssh.js';
import { describeFailure, type Invocation, type OsUser, type Runner } from '../runner.js';
import { PostgresServer, type ServerIdentity } from '../server/postgres.js';
import { PsqlDb, statements } from '../sql.js';
import {
  conninfoForServer,
  hbaAllows,
  hbaMarker,
  hbaRule,
  insertHbaRule,
  judgeHost,
  judgeNewFile,
  logTail,
  judgePrimary,
  parseBasebackupProgress,
  pgpassLine,
  pgpassLookup,
  removeHbaRule,
  scramVerifier,
  spaceNeeds,
  type HostFacts,
  type Intent,
  type PathProbe,
  type PrimaryFacts,
  type RemoveActions,
  type RemovePrimaryFacts,
  type RemoveTargetFacts,
  judgeRemoval,
} from './rules.js';
import { selfContainedCopyEdits, type SelfContainedEdits } from '../config/copiedCluster.js';
import { parseConfigText } from '../config/parse.js';

export interface TablespaceMapping extends JsonObject {
  name: string;
  location: string;
  target: string;
}

export interface ReplicaParams extends JsonObject {
  /** The primary: a cluster on this host (its pg_hba.conf is edited here). */
  primaryDataDir: string;
  primaryMajor: number;
  access: ClusterAccess;
  host: HostSpec;
  replicaDir: string;
  replicaWaldir: string | null;
  tablespaces: TablespaceMapping[];
  replicaBindir: string;
  replicaOwner: string;
  replicaPort: number;
  replicaSocketDir: string;
  role: string;
  slot: string;
  /** The libpq password file on this host holding the role's password (read at apply, never copied into a plan). */
  passfile: string | null;
  primaryAddress: string | null;
  primaryPort: number;
  replicaAddress: string | null;
  /** pg_basebackup --max-rate (kB/s, or with k/M suffix): protects a busy primary; null for none. */
  maxRate: string | null;
  /** The verify step's bound on replay lag. */
  maxLagBytes: number;
  /** The passfile holds a password typed at the prompt (kept for resume): rollback and remove delete it. */
  promptedPassfile: boolean;
}

export interface ReplicaRemoveParams extends JsonObject {
  primaryDataDir: string;
  access: ClusterAccess;
  host: HostSpec;
  replicaDir: string;
  replicaBindir: string;
  replicaOwner: string;
  role: string;
  slot: string;
  replicaAddress: string | null;
  keepData: boolean;
  primaryMajor: number;
  primaryPort: number;
  /** What the plan does, judged from the target's facts when it was made (judgeRemoval). */
  actions: RemoveActions;
}

/** The replica's password file, next to its data directory: pg_basebackup needs it before the directory exists. */
export const replicaPassfile = (dir: string) => `${dir}.pgpass`;
/**
 * The standby's start-up log (pg_ctl -l): in log/ inside its data directory, where PostgreSQL's own
 * log_directory defaults to and a DBA looks first. The directory was absent or empty before the copy,
 * so nothing of the user's can be there; it goes with the data directory, and on a failed start a
 * copy is kept in the run's directory (startFailure).
 */
export const replicaLog = (dir: string) => join(dir, 'log', 'pgscale-standby.log');

type HostSide = Pick<ReplicaParams, 'host' | 'replicaOwner'>;

const hostRunner = (ctx: StepContext, p: HostSide): Runner => runnerFor(p.host, ctx);
function ownerAccount(p: HostSide): OsUser {
  if (!isLocal(p.host)) return remoteAccount(p.replicaOwner);
  const u = userByName(p.replicaOwner);
  if (!u) throw new PgscaleError(`OS user ${p.replicaOwner} does not exist`, ExitCode.FailedAfterChange);
  return u;
}
const asOwner = (p: HostSide, program: string, args: string[], extra: Partial<Invocation> = {}): Invocation => ({
  program,
  args,
  runAs: ownerAccount(p),
  cwd: '/',
  ...extra,
  env: { LC_ALL: 'C', ...extra.env },
});

async function onHost(ctx: StepContext, p: HostSide, inv: Invocation, what: string): Promise<string> {
  const res = await hostRunner(ctx, p).run(inv);
  if (res.exitCode !== 0) throw new PgscaleError(`${what} on ${p.host.destination}: ${describeFailure(inv, res)}`, ExitCode.FailedAfterChange);
  return res.stdout;
}

export function standbyIdentity(
  p: Pick<ReplicaParams, 'replicaBindir' | 'replicaDir' | 'replicaPort' | 'replicaSocketDir' | 'replicaAddress' | 'replicaOwner'>,
): ServerIdentity {
  const listen = p.replicaAddress ?? '';
  return {
    bindir: p.replicaBindir,
    dataDir: p.replicaDir,
    configFile: null,
    configDir: null,
    // the copied postgresql.conf is the primary's: port, sockets and addresses are the standby's own
    options: ['-c', `port=${p.replicaPort}`, '-c', `unix_socket_directories=${p.replicaSocketDir}`, '-c', `listen_addresses=${listen}`],
    port: p.replicaPort,
    socketDirs: [p.replicaSocketDir],
    listenAddresses: listen,
    owner: p.replicaOwner,
    log: replicaLog(p.replicaDir),
    origins: { port: 'command line', sockets: 'command line', listen: 'command line' },
    manager: { kind: 'pg_ctl' },
  };
}

const standby = (ctx: StepContext, p: ReplicaParams) =>
  new PostgresServer(standbyIdentity(p), hostRunner(ctx, p), isLocal(p.host) ? undefined : remoteAccount(p.replicaOwner));

// ---- gathering ----

/** Probes directories as the replica's owner: state, writability, free space and mount point. */
const probeScript = `for p do
  if [ -e "$p" ]; then
    if [ ! -d "$p" ]; then s=notdir; elif [ -n "$(ls -A -- "$p" 2>/dev/null)" ]; then s=nonempty; else s=empty; fi; w=$p
  else s=absent; w=$(dirname -- "$p"); fi
  if [ -d "$w" ] && [ -w "$w" ]; then wr=1; else wr=0; fi
  df -P -B1 -- "$w" 2>/dev/null | awk -v s="$s" -v wr="$wr" 'NR==2 {print s "\\t" wr "\\t" $4 "\\t" $6; found=1} END {if (!found) print s "\\t" wr "\\t\\t"}'
done`;

export async function probePaths(runner: Runner, owner: OsUser, paths: string[]): Promise<PathProbe[]> {
  const res = await runner.run({ program: 'sh', args: ['-c', probeScript, 'sh', ...paths], runAs: owner, cwd: '/' });
  const lines = res.stdout.split('\n').filter(Boolean);
  return paths.map((path, i) => {
    const [state, wr, avail, mount] = (lines[i] ?? '').split('\t');
    return { path, state: (state as PathProbe['state']) || 'unknown', writable: wr === '1', avail: avail ? Number(avail) : null, mount: mount || null };
  });
}

/** The addresses on both ends of the ssh connection: how the replica host and this host see each other. */
export async function connectionAddresses(runner: Runner): Promise<{ here: string; there: string } | { error: string }> {
  const res = await runner.run({ program: 'sh', args: ['-c', 'printf "%s\\n" "$SSH_CONNECTION"'] });
  if (res.exitCode !== 0) return { error: res.stderr.trim() };
  const [here, , there] = res.stdout.trim().split(/\s+/);
  return here && there ? { here, there } : { error: 'SSH_CONNECTION is not set on the remote side' };
}

export async function gatherHost(ctx: StepContext, p: ReplicaParams): Promise<HostFacts> {
  const runner = hostRunner(ctx, p);
  const facts: HostFacts = { destination: p.host.destination, sshError: null, ownerExists: false, version: null, paths: [] };
  const id = await runner.run({ program: 'id', args: ['-u', p.replicaOwner] });
  if (id.exitCode === 255 && !isLocal(p.host)) return { ...facts, sshError: id.stderr.trim() };
  facts.ownerExists = id.exitCode === 0;
  if (!facts.ownerExists) return facts;
  // side by side: over ssh each is a round trip on the one multiplexed connection
  const [v, paths] = await Promise.all([
    runner.run(asOwner(p, join(p.replicaBindir, 'postgres'), ['--version'])),
    probePaths(runner, ownerAccount(p), [p.replicaDir, ...(p.replicaWaldir ? [p.replicaWaldir] : []), ...p.tablespaces.map((t) => t.target)]),
  ]);
  facts.version = v.exitCode === 0 ? v.stdout.trim() : null;
  facts.paths = paths;
  return facts;
}

export async function gatherPrimary(ctx: StepContext, p: ReplicaParams): Promise<PrimaryFacts & { hbaFile: string }> {
  return withDb(ctx, p.access, async (db) => {
    const [facts] = await db.query(statements.replicaFacts(p.role, p.slot));
    const { settings: s, role, hba_rules: rules, tablespaces } = facts!;
    let walVolumeFree: number | null = null;
    try {
      const st = statfsSync(join(p.primaryDataDir, 'pg_wal'));
      walVolumeFree = st.bavail * st.bsize;
    } catch {
      /* unknown */
    }
    return {
      major: Math.floor(s.server_version_num / 10000),
      version: s.server_version,
      inRecovery: s.in_recovery,
      walLevel: s.wal_level,
      maxWalSenders: s.max_wal_senders,
      sendersInUse: s.senders_in_use,
      maxReplicationSlots: s.max_replication_slots,
      slotsInUse: s.slots_in_use,
      maxSlotWalKeepSize: Number(s.max_slot_wal_keep_size_bytes),
      listenAddresses: s.listen_addresses,
      walVolumeFree,
      slotExists: facts!.slot_exists,
      role: { exists: Boolean(role), replication: role?.rolreplication ?? false, login: role?.rolcanlogin ?? false, scram: role?.scram ?? false },
      passwordAvailable: Boolean(p.primaryAddress && readPassword(p)),
      hbaRulePresent: p.replicaAddress ? hbaAllows(rules, p.role, p.replicaAddress) : false,
      hbaErrors: rules.filter((r) => r.error).map((r) => `line ${r.line_number}: ${r.error}`),
      configOutsideDataDir: dirname(s.config_file) !== s.data_directory,
      tablespaces: tablespaces.map((t) => ({ name: t.name, location: t.location, bytes: Number(t.bytes ?? 0) })),
      dataBytes: Number(s.database_bytes),
      walBytes: Number(s.max_wal_size_bytes),
      hbaFile: s.hba_file,
    };
  });
}

/** The role's password from the libpq password file (read at the moment it is needed, never kept). */
export function readPassword(p: Pick<ReplicaParams, 'passfile' | 'primaryAddress' | 'primaryPort' | 'role'>): string | undefined {
  if (!p.passfile || !p.primaryAddress) return undefined;
  try {
    return pgpassLookup(readFileSync(p.passfile, 'utf8'), { host: p.primaryAddress, port: p.primaryPort, user: p.role });
  } catch {
    return undefined;
  }
}

/** Where a password typed at the prompt is kept (0600, in the 0700 state directory) so that a resume can use it. */
export const promptedPassfilePath = (stateDir: string, slot: string) => join(stateDir, 'secrets', `${slot}.pgpass`);

export function keepPromptedPassword(stateDir: string, p: Pick<ReplicaParams, 'slot' | 'primaryAddress' | 'primaryPort' | 'role'>, password: string): string {
  ensurePrivateDir(join(stateDir, 'secrets'));
  const file = promptedPassfilePath(stateDir, p.slot);
  writeFileSync(file, pgpassLine(p.primaryAddress!, p.primaryPort, 'replication', p.role, password), { mode: 0o600 });
  fsyncPath(file);
  return file;
}

const intentOf = (p: ReplicaParams, createRole: boolean): Intent => ({
  role: p.role,
  slot: p.slot,
  primaryAddress: p.primaryAddress,
  replicaAddress: p.replicaAddress,
  replicaDir: p.replicaDir,
  replicaWaldir: p.replicaWaldir,
  tablespaceTargets: p.tablespaces,
  local: isLocal(p.host),
  createRole,
});

// ---- add: steps ----

const checksStep = defineStep<ReplicaParams>({
  kind: 'replica-checks',
  title: (p) => `Check the primary and ${p.host.destination} for a replica in ${p.replicaDir}`,
  async check(ctx, p) {
    // the primary and the host are asked side by side; nothing else can be judged on a host ssh does not reach
    const [host, asked] = await Promise.all([gatherHost(ctx, p), gatherPrimary(ctx, p).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))))]);
    const intent = intentOf(p, true);
    if (host.sshError) return judgeHost(host, intent, 0, '', new Map());
    if (asked instanceof Error) throw asked;
    const primary = asked;
    const [passfile] = await probePaths(hostRunner(ctx, p), ownerAccount(p), [replicaPassfile(p.replicaDir)]);
    const out: CheckResult[] = [
      ...judgePrimary(primary, intent),
      ...judgeHost(host, intent, primary.major, primary.version, spaceNeeds(primary, intent)),
      judgeNewFile(passfile!, 'password file'),
    ];
    const mapped = new Set(p.tablespaces.map((t) => t.location));
    for (const t of primary.tablespaces)
      if (!mapped.has(t.location))
        out.push(check.fail('tablespace mapping', `tablespace ${t.name} (${t.location}) has no place on the replica: --tablespace-mapping ${t.location}=DIR`));
    return out;
  },
  plan: async () => [],
  apply: async () => undefined,
  verify: async () => ({ ok: true, detail: 'checked before the run' }),
  rollbackNote: () => 'nothing to undo',
});

const roleStep = defineStep<ReplicaParams>({
  kind: 'replica-role',
  title: (p) => `Create the replication role ${p.role} (LOGIN REPLICATION, SCRAM password from the passfile)`,
  check: async () => [],
  plan: async (_ctx, p) => [
    {
      kind: 'sql',
      target: 'primary',
      sql: `create role ${p.role} with login replication password 'SCRAM-SHA-256$…'`,
      note: 'the SCRAM verifier is computed by pgscale from the passfile entry: the password itself is not sent',
    },
  ],
  async apply(ctx, p) {
    const password = readPassword(p);
    if (!password) throw new PgscaleError(`no password for ${p.role} in ${p.passfile ?? 'any passfile'}`, ExitCode.FailedNoChange);
    await withDb(ctx, p.access, (db) => db.query(statements.createReplicationRole(p.role, scramVerifier(password))));
  },
  async verify(ctx, p) {
    const [r] = await withDb(ctx, p.access, (db) => db.query(statements.replicationRole(p.role)));
    return r?.rolreplication && r.scram
      ? { ok: true, detail: `${p.role} exists with REPLICATION and a SCRAM password` }
      : { ok: false, detail: `${p.role} missing or without REPLICATION/SCRAM` };
  },
  async rollback(ctx, p) {
    // the role did not exist when the plan was made (this step is planned only then)
    await withDb(ctx, p.access, (db) => db.query(statements.dropRole(p.role)));
  },
  rollbackNote: (p) => `drop role ${p.role}`,
});

function hbaFileOf(ctx: StepContext, p: { access: ClusterAccess }): Promise<string> {
  return withDb(ctx, p.access, async (db) => (await db.query(statements.replicationSettings()))[0]!.hba_file);
}

/** Rewrites pg_hba.conf in place of the old one: same owner and mode, fsynced, renamed over it. */
function writeHba(file: string, text: string): void {
  const st = statSync(file);
  const tmp = `${file}.pgscale-${process.pid}`;
  writeFileSync(tmp, text, { mode: st.mode & 0o777 });
  chownSync(tmp, st.uid, st.gid);
  fsyncPath(tmp);
  renameSync(tmp, file);
  fsyncPath(dirname(file));
}

async function reloadPrimary(ctx: StepContext, p: { access: ClusterAccess }): Promise<void> {
  await withDb(ctx, p.access, (db) => db.query(statements.reloadConfiguration()));
}

async function hbaAllowsNow(ctx: StepContext, p: { access: ClusterAccess; role: string; replicaAddress: string | null }): Promise<boolean> {
  if (!p.replicaAddress) return false;
  const rules = await withDb(ctx, p.access, (db) => db.query(statements.hbaRules()));
  return hbaAllows(rules, p.role, p.replicaAddress);
}

const hbaStep = defineStep<ReplicaParams>({
  kind: 'replica-hba',
  title: (p) => `Allow ${p.role} to replicate from ${p.replicaAddress}/32 (pg_hba.conf, reload)`,
  check: async () => [],
  async plan(ctx, p) {
    const file = await hbaFileOf(ctx, p);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return [{ kind: 'file', path: file, change: 'modify', note: 'unreadable here' }];
    }
    const diff = createPatch(file, text, insertHbaRule(text, hbaRule(p.role, p.replicaAddress ?? '?', p.slot)), '', '', { context: 2 });
    return [
      { kind: 'file', path: file, change: 'modify', diff },
      { kind: 'sql', target: 'primary', sql: 'select pg_reload_conf()' },
    ];
  },
  async apply(ctx, p) {
    const file = await hbaFileOf(ctx, p);
    const text = readFileSync(file, 'utf8');
    if (!text.includes(hbaMarker(p.slot))) writeHba(file, insertHbaRule(text, hbaRule(p.role, p.replicaAddress!, p.slot)));
    await reloadPrimary(ctx, p);
  },
  async verify(ctx, p) {
    return (await hbaAllowsNow(ctx, p))
      ? { ok: true, detail: `pg_hba allows ${p.role} from ${p.replicaAddress}` }
      : { ok: false, detail: 'the server does not read the rule' };
  },
  async rollback(ctx, p) {
    const file = await hbaFileOf(ctx, p);
    const text = readFileSync(file, 'utf8');
    if (!text.includes(hbaMarker(p.slot))) return;
    writeHba(file, removeHbaRule(text, p.slot));
    await reloadPrimary(ctx, p);
  },
  rollbackNote: (p) => `remove the line marked "${hbaMarker(p.slot)}" and reload`,
});

const slotStep = defineStep<ReplicaParams>({
  kind: 'replica-slot',
  title: (p) => `Create the physical replication slot ${p.slot} (WAL reserved now)`,
  check: async () => [],
  plan: async (_ctx, p) => [{ kind: 'sql', target: 'primary', sql: `select pg_create_physical_replication_slot('${p.slot}', true)` }],
  async apply(ctx, p) {
    await withDb(ctx, p.access, async (db) => {
      if ((await db.query(statements.slot(p.slot))).length === 0) await db.query(statements.createPhysicalSlot(p.slot));
    });
  },
  async verify(ctx, p) {
    const [s] = await withDb(ctx, p.access, (db) => db.query(statements.slot(p.slot)));
    return s?.restart_lsn ? { ok: true, detail: `slot ${p.slot} reserves WAL from ${s.restart_lsn}` } : { ok: false, detail: `slot ${p.slot} missing` };
  },
  async rollback(ctx, p) {
    await dropSlot(ctx, p);
  },
  rollbackNote: (p) => `drop the slot ${p.slot}`,
});

/** Drops a slot, ending a walsender that still holds it (a killed copy's, a stopped standby's). */
async function dropSlot(ctx: StepContext, p: { access: ClusterAccess; slot: string }): Promise<void> {
  await withDb(ctx, p.access, async (db) => {
    for (let i = 0; i < 100; i++) {
      const [s] = await db.query(statements.slot(p.slot));
      if (!s) return;
      if (!s.active) {
        await db.query(statements.dropSlot(p.slot));
        return;
      }
      await db.query(statements.terminateSlotHolder(p.slot));
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new PgscaleError(`slot ${p.slot} stays active`, ExitCode.FailedAfterChange);
  });
}

/** Waits until no walsender holds the slot: a killed pg_basebackup's may linger. */
async function slotReleased(ctx: StepContext, p: ReplicaParams): Promise<void> {
  await withDb(ctx, p.access, async (db) => {
    for (let i = 0; i < 150; i++) {
      const [s] = await db.query(statements.slot(p.slot));
      if (!s?.active) return;
      if (i === 25) await db.query(statements.terminateSlotHolder(p.slot));
      await new Promise((r) => setTimeout(r, 200));
    }
  });
}

const writeFileScript = 'umask 077 && cat > "$1"';
/** Creates a file that must not exist yet (set -C: the shell refuses to overwrite one that appeared since the checks). */
const createFileScript = 'umask 077 && set -C && cat > "$1"';

const passfileStep = defineStep<ReplicaParams>({
  kind: 'replica-passfile',
  title: (p) => `Write the replica's password file ${replicaPassfile(p.replicaDir)} (0600, owner ${p.replicaOwner})`,
  check: async () => [],
  plan: async (_ctx, p) => [
    {
      kind: 'file',
      path: `${p.host.destination}:${replicaPassfile(p.replicaDir)}`,
      change: 'create',
      mode: '0600',
      note: `${p.primaryAddress}:${p.primaryPort}:replication:${p.role}:*** — used by pg_basebackup and then by primary_conninfo`,
    },
  ],
  async apply(ctx, p) {
    const password = readPassword(p);
    if (!password)
      throw new PgscaleError(
        `no password for ${p.role} in ${p.passfile ?? 'any passfile'}`,
        ExitCode.FailedNoChange,
        'give a passfile with --replication-passfile or PGPASSFILE',
      );
    await onHost(
      ctx,
      p,
      asOwner(p, 'sh', ['-c', createFileScript, 'sh', replicaPassfile(p.replicaDir)], {
        input: pgpassLine(p.primaryAddress!, p.primaryPort, 'replication', p.role, password),
      }),
      'writing the password file',
    );
    return { created: replicaPassfile(p.replicaDir) };
  },
  async verify(ctx, p) {
    const res = await hostRunner(ctx, p).run(asOwner(p, 'test', ['-s', replicaPassfile(p.replicaDir)]));
    return res.exitCode === 0 ? { ok: true, detail: 'present' } : { ok: false, detail: 'missing' };
  },
  async rollback(ctx, p) {
    // only a file this run journaled as created: one that stood in the way made the step fail and is not pgscale's
    if (ctx.outputs.has('passfile')) await onHost(ctx, p, asOwner(p, 'rm', ['-f', '--', replicaPassfile(p.replicaDir)]), 'removing the password file');
    if (p.promptedPassfile && p.passfile) rmSync(p.passfile, { force: true });
  },
  rollbackNote: (p) =>
    `remove ${replicaPassfile(p.replicaDir)} if this run created it${p.promptedPassfile ? ` and the prompted password's file ${p.passfile}` : ''}`,
});

export function basebackupInvocation(p: ReplicaParams): Invocation {
  const args = [
    '-h',
    p.primaryAddress ?? '',
    '-p',
    String(p.primaryPort),
    '-U',
    p.role,
    '-D',
    p.replicaDir,
    '-S',
    p.slot,
    '-R',
    '-X',
    'stream',
    '-c',
    'fast',
    '-P',
    '-w',
  ];
  if (p.replicaWaldir) args.push('--waldir', p.replicaWaldir);
  for (const t of p.tablespaces) args.push('-T', `${t.location.replace(/=/g, '\\=')}=${t.target.replace(/=/g, '\\=')}`);
  if (p.maxRate) args.push('-r', p.maxRate);
  return asOwner(p, join(p.replicaBindir, 'pg_basebackup'), args, { env: { PGPASSFILE: replicaPassfile(p.replicaDir), PGAPPNAME: p.slot } });
}

/** The directories the copy creates (or fills): emptied by a retry and by rollback. */
const copyTargets = (p: ReplicaParams) => [p.replicaDir, ...(p.replicaWaldir ? [p.replicaWaldir] : []), ...p.tablespaces.map((t) => t.target)];

/** Empties the copy's directories (they were absent or empty before the run), as their owner. */
async function clearCopy(ctx: StepContext, p: ReplicaParams): Promise<void> {
  await onHost(
    ctx,
    p,
    asOwner(p, 'sh', ['-c', 'for d do if [ -d "$d" ]; then find "$d" -mindepth 1 -delete; fi; done', 'sh', ...copyTargets(p)]),
    'emptying the copy',
  );
}

const basebackupStep = defineStep<ReplicaParams>({
  kind: 'replica-basebackup',
  title: (p) => `Copy the primary with pg_basebackup on ${p.host.destination} into ${p.replicaDir}`,
  check: async () => [],
  plan: async (_ctx, p) => {
    const inv = basebackupInvocation(p);
    return [
      {
        kind: 'command',
        argv: [inv.program, ...inv.args],
        runAs: p.replicaOwner,
        env: [`PGPASSFILE=${replicaPassfile(p.replicaDir)}`],
        note: `on ${p.host.destination}; -R writes standby.signal and primary_conninfo (with that passfile)`,
      },
    ];
  },
  async apply(ctx, p) {
    await slotReleased(ctx, p);
    await clearCopy(ctx, p); // a killed copy's leftovers: pg_basebackup wants empty directories
    const runner = hostRunner(ctx, p);
    if (runner instanceof SshRunner) await runner.remoteUser();
    const inv = basebackupInvocation(p);
    const run = runner.stream({
      ...inv,
      signal: ctx.signal,
      onStart: (pgid) => ctx.trackProcess(pgid),
      onStderr: (chunk) => {
        const pr = parseBasebackupProgress(chunk);
        if (pr) {
          ctx.progress.bytes(pr.doneBytes, pr.totalBytes);
          ctx.progress.message(`${formatBytes(pr.doneBytes)} of ${formatBytes(pr.totalBytes)}`);
        }
      },
    });
    run.stdin.end();
    run.stdout.resume();
    const res = await run.result;
    if (res.exitCode !== 0) throw new PgscaleError(`pg_basebackup on ${p.host.destination}: ${describeFailure(inv, res)}`, ExitCode.FailedAfterChange);
    // a newer pg_basebackup may write connection options this server's walreceiver refuses
    const autoConf = join(p.replicaDir, 'postgresql.auto.conf');
    const text = await onHost(ctx, p, asOwner(p, 'cat', ['--', autoConf]), 'reading postgresql.auto.conf');
    const fitted = conninfoForServer(text, p.primaryMajor);
    if (fitted !== text) await onHost(ctx, p, asOwner(p, 'sh', ['-c', writeFileScript, 'sh', autoConf], { input: fitted }), 'writing postgresql.auto.conf');
  },
  async verify(ctx, p) {
    // backup_manifest is written last: its presence means the copy completed
    const res = await hostRunner(ctx, p).run(
      asOwner(p, 'test', ['-f', join(p.replicaDir, 'backup_manifest'), '-a', '-f', join(p.replicaDir, 'standby.signal')]),
    );
    return res.exitCode === 0 ? { ok: true, detail: `complete copy in ${p.replicaDir}` } : { ok: false, detail: 'no complete copy' };
  },
  async rollback(ctx, p) {
    await standby(ctx, p).stop({ immediateAfterTimeout: true, timeoutSeconds: 60 });
    await clearCopy(ctx, p);
    await onHost(
      ctx,
      p,
      asOwner(p, 'rm', ['-rf', '--', p.replicaDir, ...(p.replicaWaldir ? [p.replicaWaldir] : []), ...p.tablespaces.map((t) => t.target)]),
      'removing the copy',
    );
  },
  rollbackNote: (p) => `remove ${copyTargets(p).join(', ')} (they were absent or empty)`,
  estimateSeconds: () => 60,
});

/**
 * A standby that did not start: the error names its log and shows the last lines, and a copy of the
 * log is kept in the run's directory (0600), since undoing the run removes the data directory it is in.
 */
async function startFailure(ctx: StepContext, p: ReplicaParams, e: Error): Promise<PgscaleError> {
  const log = replicaLog(p.replicaDir);
  const res = await hostRunner(ctx, p).run(asOwner(p, 'cat', ['--', log]));
  const kept = join(ctx.runDir, 'standby-start.log');
  if (res.exitCode === 0) {
    writeFileSync(kept, res.stdout, { mode: 0o600 });
    fsyncPath(kept);
  }
  const tail = res.exitCode === 0 ? logTail(res.stdout) : [];
  // the executor's undo replaces a step's hint: where the copy is kept belongs in the message
  return new PgscaleError(
    `the standby did not start: ${e.message}\nits log ${log} on ${p.host.destination}${tail.length ? ` ends with:\n  ${tail.join('\n  ')}\na copy of that log is kept in ${kept} (an undo removes the data directory it is in)` : ' could not be read'}`,
    ExitCode.FailedAfterChange,
  );
}

/** The copy's postgresql.conf and the edits that stop it naming the primary's files (selfContainedCopyEdits). */
async function copyConfigEdits(ctx: StepContext, p: ReplicaParams): Promise<{ file: string; text: string; edits: SelfContainedEdits }> {
  const file = join(p.replicaDir, 'postgresql.conf');
  const text = await onHost(ctx, p, asOwner(p, 'cat', ['--', file]), "reading the copy's postgresql.conf");
  return { file, text, edits: selfContainedCopyEdits(text, p.primaryDataDir, p.replicaDir) };
}

const ownConfigStep = defineStep<ReplicaParams>({
  kind: 'replica-own-config',
  title: (p) => `Make the copy's configuration its own: no data_directory, hba_file, ident_file or external_pid_file naming ${p.primaryDataDir}`,
  check: async () => [],
  async plan(_ctx, p) {
    // the copy's postgresql.conf is the primary's (a check makes sure it lives in the data directory)
    const source = join(p.primaryDataDir, 'postgresql.conf');
    let text: string;
    try {
      text = readFileSync(source, 'utf8');
    } catch {
      return [{ kind: 'file', path: `${p.host.destination}:${join(p.replicaDir, 'postgresql.conf')}`, change: 'modify', note: `${source} is unreadable here` }];
    }
    const target = join(p.replicaDir, 'postgresql.conf');
    const e = selfContainedCopyEdits(text, p.primaryDataDir, p.replicaDir);
    const shared = e.outsideIncludes.length
      ? `; included from outside the data directory, read by the standby as they are: ${e.outsideIncludes.join(', ')}`
      : '';
    if (!e.edits.length)
      return [
        { kind: 'file', path: `${p.host.destination}:${target}`, change: 'modify', note: `no path setting names the primary: nothing to change${shared}` },
      ];
    return [
      {
        kind: 'file',
        path: `${p.host.destination}:${target}`,
        change: 'modify',
        diff: createPatch(target, text, e.text, '', '', { context: 1 }),
        ...(shared ? { note: shared.slice(2) } : {}),
      },
      ...e.copyFiles.map((c) => ({
        kind: 'file' as const,
        path: `${p.host.destination}:${c.to}`,
        change: 'create' as const,
        note: `a copy of the primary's ${c.from}`,
      })),
    ];
  },
  async apply(ctx, p) {
    const { file, edits } = await copyConfigEdits(ctx, p);
    if (!edits.edits.length) return;
    // the files first: a configuration naming them is written only once they are in place
    for (const c of edits.copyFiles)
      await onHost(ctx, p, asOwner(p, 'sh', ['-c', writeFileScript, 'sh', c.to], { input: readFileSync(c.from, 'utf8') }), `copying ${c.from} into the copy`);
    await onHost(ctx, p, asOwner(p, 'sh', ['-c', writeFileScript, 'sh', file], { input: edits.text }), "writing the copy's postgresql.conf");
    return { edited: edits.edits.map((e) => `${e.name} (line ${e.line}) ${e.action}`).join(', ') };
  },
  async verify(ctx, p) {
    const { edits } = await copyConfigEdits(ctx, p);
    return edits.edits.length
      ? { ok: false, detail: `${edits.edits.map((e) => e.name).join(', ')} still name the primary` }
      : { ok: true, detail: "the copy's configuration names only its own files" };
  },
  rollbackNote: () => 'nothing: the copy is removed with its configuration',
});

const startStep = defineStep<ReplicaParams>({
  kind: 'replica-start',
  title: (p) => `Start the standby on ${p.host.destination} (port ${p.replicaPort}, sockets in ${p.replicaSocketDir})`,
  check: async () => [],
  plan: async (ctx, p) => {
    const inv = standby(ctx, p).startInvocation({ timeoutSeconds: 300 });
    return [{ kind: 'command', argv: [inv.program, ...inv.args], runAs: p.replicaOwner, note: `on ${p.host.destination}` }];
  },
  async apply(ctx, p) {
    try {
      await standby(ctx, p).start({ timeoutSeconds: 300 });
    } catch (e) {
      throw await startFailure(ctx, p, e as Error);
    }
  },
  async verify(ctx, p) {
    const s = await standby(ctx, p).status();
    return s.state === 'running' ? { ok: true, detail: `standby running (pid ${s.pid})` } : { ok: false, detail: `standby ${s.state}` };
  },
  async rollback(ctx, p) {
    await standby(ctx, p).stop({ immediateAfterTimeout: true, timeoutSeconds: 60 });
  },
  rollbackNote: () => 'stop the standby',
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const replicaDb = (ctx: StepContext, p: ReplicaParams) =>
  new PsqlDb(
    hostRunner(ctx, p),
    join(p.replicaBindir, 'psql'),
    { host: p.replicaSocketDir, port: p.replicaPort, user: p.replicaOwner, database: p.access.database ?? 'postgres' },
    ownerAccount(p),
    ctx.audit,
  );

const verifyStep = defineStep<ReplicaParams>({
  kind: 'replica-verify',
  title: (p) => `Verify: ${p.slot} streaming, lag under ${formatBytes(p.maxLagBytes)}, a row written on the primary read on the replica`,
  check: async () => [],
  plan: async (_ctx, p) => [
    { kind: 'sql', target: 'primary', sql: statements.standbyOnSlot(p.slot).text },
    { kind: 'sql', target: 'primary', sql: `${statements.probeTableCreate().text}; ${statements.probeWrite('TOKEN').text}` },
    { kind: 'sql', target: `replica ${p.host.destination}`, sql: statements.probeRead('TOKEN').text },
    { kind: 'sql', target: 'primary', sql: statements.probeTableDrop().text },
  ],
  async apply(ctx, p) {
    const deadline = Date.now() + 120_000;
    let last = 'no walsender on the slot';
    for (;;) {
      const [r] = await withDb(ctx, p.access, (db) => db.query(statements.standbyOnSlot(p.slot)));
      if (r?.state === 'streaming' && Number(r.lag_bytes ?? Infinity) <= p.maxLagBytes) break;
      last = r ? `state ${r.state}, lag ${r.lag_bytes} bytes` : last;
      if (Date.now() > deadline)
        throw new PgscaleError(
          `the standby does not stream through ${p.slot}: ${last}`,
          ExitCode.FailedAfterChange,
          `its log is ${replicaLog(p.replicaDir)} on ${p.host.destination}`,
        );
      await sleep(200);
    }
    const token = randomUUID();
    await withDb(ctx, p.access, async (db) => {
      await db.query(statements.probeTableCreate());
      await db.query(statements.probeWrite(token));
    });
    try {
      const db = replicaDb(ctx, p);
      for (;;) {
        const rows = await db.query(statements.probeRead(token)).catch(() => []);
        if (rows.length) break;
        if (Date.now() > deadline) throw new PgscaleError('a row written on the primary did not reach the replica in time', ExitCode.FailedAfterChange);
        await sleep(200);
      }
    } finally {
      await withDb(ctx, p.access, (db) => db.query(statements.probeTableDrop()));
    }
    return { token };
  },
  async verify(ctx, p) {
    const [r] = await withDb(ctx, p.access, (db) => db.query(statements.standbyOnSlot(p.slot)));
    if (r?.state !== 'streaming') return { ok: false, detail: `not streaming through ${p.slot}` };
    if (!ctx.outputs.has('verify')) {
      // resume: the probe row must have been read in a finished apply
      const [rec] = await replicaDb(ctx, p)
        .query(statements.inRecovery())
        .catch(() => [undefined]);
      if (!rec?.in_recovery) return { ok: false, detail: 'the replica does not answer as a standby' };
    }
    return { ok: true, detail: `streaming from ${r.client_addr ?? 'local socket'} through ${p.slot}, lag ${formatBytes(Number(r.lag_bytes ?? 0))}` };
  },
  rollbackNote: () => 'nothing (the probe table is dropped at once)',
});

export const replicaAddOperation = defineOperation<ReplicaParams & { createRole: boolean; hbaRulePresent: boolean }>({
  name: 'replica-add',
  serverAccess: (p) => p.access,
  describeTarget: (p) => ({
    description: `replica of ${p.primaryDataDir} on ${p.host.destination} in ${p.replicaDir}`,
    lockKey: `cluster:${p.primaryDataDir}`,
  }),
  summary: (p) =>
    `Add a streaming replica of the PostgreSQL ${p.primaryMajor} primary ${p.primaryDataDir} on ${p.host.destination} in ${p.replicaDir}, through slot ${p.slot}`,
  steps: (p) => [
    { id: 'checks', kind: checksStep.kind, params: p },
    ...(p.createRole ? [{ id: 'role', kind: roleStep.kind, params: p }] : []),
    ...(p.hbaRulePresent ? [] : [{ id: 'hba', kind: hbaStep.kind, params: p }]),
    { id: 'slot', kind: slotStep.kind, params: p },
    { id: 'passfile', kind: passfileStep.kind, params: p },
    { id: 'basebackup', kind: basebackupStep.kind, params: p },
    { id: 'own-config', kind: ownConfigStep.kind, params: p },
    { id: 'start', kind: startStep.kind, params: p },
    { id: 'verify', kind: verifyStep.kind, params: p },
  ],
  async fingerprint(ctx, p) {
    const f = await gatherPrimary(ctx, p).catch(() => undefined);
    return { primary: p.primaryDataDir, slotExists: f?.slotExists ?? null, hbaRulePresent: f?.hbaRulePresent ?? null, roleExists: f?.role.exists ?? null };
  },
});

// ---- remove ----

const standbyOf = (ctx: StepContext, p: ReplicaRemoveParams) =>
  new PostgresServer(
    {
      bindir: p.replicaBindir,
      dataDir: p.replicaDir,
      configFile: null,
      configDir: null,
      options: [],
      port: 0,
      socketDirs: [],
      listenAddresses: '',
      owner: p.replicaOwner,
      log: replicaLog(p.replicaDir),
      origins: { port: 'default', sockets: 'default', listen: 'default' },
      manager: { kind: 'pg_ctl' },
    },
    hostRunner(ctx, p),
    isLocal(p.host) ? undefined : remoteAccount(p.replicaOwner),
  );

/** What is at the target path, read as the replica's owner (it changes nothing). */
const removeTargetScript = `d=$1
if [ ! -e "$d" ]; then echo absent; exit 0; fi
if [ ! -d "$d" ]; then echo notdir; exit 0; fi
if [ ! -r "$d" ] || [ ! -x "$d" ]; then echo unreadable; exit 0; fi
echo dir
if [ -f "$d/PG_VERSION" ]; then printf 'version %s\\n' "$(head -c 32 -- "$d/PG_VERSION")"; fi
if [ -e "$d/standby.signal" ]; then echo standby; fi
true`;

/** The target of a removal as found on its host: a standby of this primary, or something else to be kept. */
export async function gatherRemoveTarget(ctx: StepContext, p: ReplicaRemoveParams): Promise<RemoveTargetFacts | { sshError: string }> {
  const runner = hostRunner(ctx, p);
  const res = await runner.run(asOwner(p, 'sh', ['-c', removeTargetScript, 'sh', p.replicaDir]));
  if (res.exitCode === 255 && !isLocal(p.host)) return { sshError: res.stderr.trim() };
  const lines = res.stdout.split('\n');
  const state = (lines[0]?.trim() || 'unreadable') as RemoveTargetFacts['state'];
  const facts: RemoveTargetFacts = {
    state,
    pgVersion:
      lines
        .find((l) => l.startsWith('version '))
        ?.slice(8)
        .trim() || null,
    standbySignal: lines.includes('standby'),
    primaryConninfo: null,
    primarySlotName: null,
    systemIdentifier: null,
    running: false,
  };
  if (state !== 'dir' || !facts.pgVersion) return facts;
  const auto = await runner.run(asOwner(p, 'cat', ['--', join(p.replicaDir, 'postgresql.auto.conf')]));
  if (auto.exitCode === 0) {
    try {
      const values = new Map(parseConfigText(auto.stdout, 'postgresql.auto.conf').map((e) => [e.name, e.value]));
      facts.primaryConninfo = values.get('primary_conninfo') ?? null;
      facts.primarySlotName = values.get('primary_slot_name') ?? null;
    } catch {
      /* unparsable: no conninfo known, the system identifier still tells */
    }
  }
  const server = standbyOf(ctx, p);
  facts.running = (await server.status()).state === 'running';
  // pg_controldata of the primary's major reads only a directory of that major
  if (Number(facts.pgVersion) === p.primaryMajor) facts.systemIdentifier = (await server.controlData().catch(() => undefined))?.systemIdentifier ?? null;
  return facts;
}

export async function gatherRemovePrimary(ctx: StepContext, p: ReplicaRemoveParams): Promise<RemovePrimaryFacts> {
  return withDb(ctx, p.access, async (db) => {
    const [sys] = await db.query(statements.systemIdentifier());
    const [slot] = await db.query(statements.slot(p.slot));
    const [holder] = slot?.active ? await db.query(statements.standbyOnSlot(p.slot)) : [];
    const hbaFile = (await db.query(statements.replicationSettings()))[0]!.hba_file;
    return {
      systemIdentifier: sys!.system_identifier,
      major: p.primaryMajor,
      port: p.primaryPort,
      slotExists: Boolean(slot),
      slotActiveFrom: slot?.active ? (holder?.client_addr ?? 'local') : null,
      hbaRuleMarked: readFileSync(hbaFile, 'utf8').includes(hbaMarker(p.slot)),
    };
  });
}

/** Gathers and judges a removal: at planning, and again before each step that stops or deletes. */
export async function judgeRemovalNow(ctx: StepContext, p: ReplicaRemoveParams): Promise<{ checks: CheckResult[]; actions: RemoveActions | null }> {
  const target = await gatherRemoveTarget(ctx, p);
  if ('sshError' in target) return { checks: [check.fail('ssh', target.sshError)], actions: null };
  const primary = await gatherRemovePrimary(ctx, p);
  return judgeRemoval(target, primary, { replicaDir: p.replicaDir, slot: p.slot, keepData: p.keepData, passfile: replicaPassfile(p.replicaDir) });
}

/** A stop or a delete goes ahead only while the facts still say what the plan said. */
async function stillPlanned(ctx: StepContext, p: ReplicaRemoveParams, action: keyof RemoveActions): Promise<void> {
  const { checks, actions } = await judgeRemovalNow(ctx, p);
  if (!actions?.[action])
    throw new PgscaleError(
      `${p.replicaDir} on ${p.host.destination} is no longer what the plan found: ${checks.map((c) => c.detail).join('; ')}`,
      ExitCode.FailedAfterChange,
      'nothing was stopped or deleted there; run `pgscale replica remove` again to see a new plan',
    );
}

const removeChecksStep = defineStep<ReplicaRemoveParams>({
  kind: 'replica-remove-checks',
  title: (p) => `Check what ${p.replicaDir} on ${p.host.destination} is, and whether slot ${p.slot} and its pg_hba rule belong to it`,
  async check(ctx, p) {
    const { checks, actions } = await judgeRemovalNow(ctx, p);
    if (actions && JSON.stringify(actions) !== JSON.stringify(p.actions))
      checks.push(check.fail('plan', `the replica changed since the plan was made (now: ${JSON.stringify(actions)})`, 'run the command again'));
    return checks;
  },
  plan: async () => [],
  apply: async () => undefined,
  verify: async () => ({ ok: true, detail: 'checked before the run' }),
  rollbackNote: () => 'nothing to undo',
});

const removeStopStep = defineStep<ReplicaRemoveParams>({
  kind: 'replica-remove-stop',
  title: (p) => `Stop the standby in ${p.replicaDir} on ${p.host.destination}`,
  check: async () => [],
  plan: async (ctx, p) => {
    const inv = standbyOf(ctx, p).stopInvocation('fast', 120);
    return [{ kind: 'command', argv: [inv.program, ...inv.args], runAs: p.replicaOwner, note: `on ${p.host.destination}; immediate if a fast stop times out` }];
  },
  async apply(ctx, p) {
    await stillPlanned(ctx, p, 'stop');
    await standbyOf(ctx, p).stop({ immediateAfterTimeout: true, timeoutSeconds: 120 });
  },
  async verify(ctx, p) {
    return (await standbyOf(ctx, p).isRunning()) ? { ok: false, detail: 'still running' } : { ok: true, detail: 'stopped' };
  },
  rollbackNote: () => 'start the standby again by hand (pg_ctl start) if wanted',
});

const removeSlotStep = defineStep<ReplicaRemoveParams>({
  kind: 'replica-remove-slot',
  title: (p) => `Drop the replication slot ${p.slot}`,
  check: async () => [],
  plan: async (_ctx, p) => [{ kind: 'sql', target: 'primary', sql: `select pg_drop_replication_slot('${p.slot}')` }],
  apply: (ctx, p) => dropSlot(ctx, p),
  async verify(ctx, p) {
    const s = await withDb(ctx, p.access, (db) => db.query(statements.slot(p.slot)));
    return s.length ? { ok: false, detail: 'slot present' } : { ok: true, detail: `no slot ${p.slot}` };
  },
  pointOfNoReturn: true,
  rollbackNote: () => 'the slot cannot come back: the replica must be cloned again',
});

const removeHbaStep = defineStep<ReplicaRemoveParams>({
  kind: 'replica-remove-hba',
  title: (p) => `Remove the pg_hba rule marked "${hbaMarker(p.slot)}" (unless another standby still uses it)`,
  check: async () => [],
  async plan(ctx, p) {
    const file = await hbaFileOf(ctx, p);
    const text = readFileSync(file, 'utf8');
    return [{ kind: 'file', path: file, change: 'modify', diff: createPatch(file, text, removeHbaRule(text, p.slot), '', '', { context: 2 }) }];
  },
  async apply(ctx, p) {
    const file = await hbaFileOf(ctx, p);
    const text = readFileSync(file, 'utf8');
    if (!text.includes(hbaMarker(p.slot))) return;
    const [others] = p.replicaAddress ? await withDb(ctx, p.access, (db) => db.query(statements.sendersFrom(p.role, p.replicaAddress!))) : [{ n: 0 }];
    if ((others?.n ?? 0) > 0) return { kept: 'another standby streams through this rule' };
    writeHba(file, removeHbaRule(text, p.slot));
    await reloadPrimary(ctx, p);
  },
  async verify(ctx, p) {
    const text = readFileSync(await hbaFileOf(ctx, p), 'utf8');
    return text.includes(hbaMarker(p.slot)) && !ctx.outputs.get('hba')?.kept
      ? { ok: false, detail: 'rule still present' }
      : { ok: true, detail: 'rule removed' };
  },
  rollbackNote: () => 'none needed',
});

/** The paths a removal deletes: the data directory, the WAL and tablespace directories it links to, and the password file pgscale wrote for it. */
async function removalPaths(ctx: StepContext, p: ReplicaRemoveParams): Promise<string[]> {
  // the WAL directory and tablespaces may live elsewhere: follow pg_wal and pg_tblspc links
  const out = await onHost(
    ctx,
    p,
    asOwner(p, 'sh', ['-c', 'for l in "$1"/pg_wal "$1"/pg_tblspc/*; do [ -L "$l" ] && readlink -- "$l"; done; true', 'sh', p.replicaDir]),
    'reading the replica layout',
  );
  return [p.replicaDir, ...out.split('\n').filter(Boolean), ...(p.actions.removePassfile ? [replicaPassfile(p.replicaDir)] : [])];
}

/** Empties a data directory but for the files judgeRemoval reads (PG_VERSION, pg_control, standby.signal, postgresql.auto.conf). */
const clearAllButIdentity =
  'find "$1" -mindepth 1 -maxdepth 1 ! -name PG_VERSION ! -name global ! -name standby.signal ! -name postgresql.auto.conf -exec rm -rf -- {} +';

const removeDataStep = defineStep<ReplicaRemoveParams>({
  kind: 'replica-remove-data',
  title: (p) =>
    `Remove the standby's data directory ${p.replicaDir} (with its log), its WAL and tablespace directories${p.actions.removePassfile ? ` and ${replicaPassfile(p.replicaDir)}` : ''} on ${p.host.destination}`,
  check: async () => [],
  plan: async (ctx, p) =>
    (await removalPaths(ctx, p)).map((path) => ({
      kind: 'file' as const,
      path: `${p.host.destination}:${path}`,
      change: 'delete' as const,
      ...(path === p.replicaDir ? { note: 'a standby of this primary (same system identifier, standby.signal)' } : {}),
    })),
  async apply(ctx, p) {
    await stillPlanned(ctx, p, 'removeData');
    const paths = await removalPaths(ctx, p);
    // a standby started again since the stop step is not deleted under its server
    if (await standbyOf(ctx, p).isRunning())
      throw new PgscaleError(`the standby in ${p.replicaDir} runs again: it is not deleted`, ExitCode.FailedAfterChange, 'stop it, then resume');
    const [dir, ...beside] = paths;
    // what tells it is a standby of this primary goes last: a resume after a kill mid-way still recognises it
    if (beside.length) await onHost(ctx, p, asOwner(p, 'rm', ['-rf', '--', ...beside]), 'removing the WAL and tablespace directories');
    await onHost(ctx, p, asOwner(p, 'sh', ['-c', clearAllButIdentity, 'sh', dir!]), 'removing the replica');
    await onHost(ctx, p, asOwner(p, 'rm', ['-rf', '--', dir!]), 'removing the replica');
  },
  async verify(ctx, p) {
    const res = await hostRunner(ctx, p).run(asOwner(p, 'test', ['-e', p.replicaDir]));
    return res.exitCode === 0 ? { ok: false, detail: 'still present' } : { ok: true, detail: 'removed' };
  },
  pointOfNoReturn: true,
  rollbackNote: () => 'cannot be undone',
});

export const replicaRemoveOperation = defineOperation<ReplicaRemoveParams>({
  name: 'replica-remove',
  serverAccess: (p) => p.access,
  describeTarget: (p) => ({ description: `replica on ${p.host.destination} in ${p.replicaDir}`, lockKey: `cluster:${p.primaryDataDir}` }),
  summary: (p) => `Remove the replica on ${p.host.destination} in ${p.replicaDir} (slot ${p.slot})${p.actions.removeData ? '' : ', keeping the directory'}`,
  steps: (p) => [
    { id: 'checks', kind: removeChecksStep.kind, params: p },
    ...(p.actions.stop ? [{ id: 'stop', kind: removeStopStep.kind, params: p }] : []),
    ...(p.actions.dropSlot ? [{ id: 'slot', kind: removeSlotStep.kind, params: p }] : []),
    ...(p.actions.removeHba ? [{ id: 'hba', kind: removeHbaStep.kind, params: p }] : []),
    ...(p.actions.removeData ? [{ id: 'data', kind: removeDataStep.kind, params: p }] : []),
  ],
  fingerprint: async (_ctx, p) => ({ replica: `${p.host.destination}:${p.replicaDir}`, slot: p.slot }),
});
