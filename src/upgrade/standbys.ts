/**
 * The physical standbys of a primary being upgraded: found (pgscale's own replica runs, --replica
 * HOST:PGDATA, the primary's walsenders and slots), checked before downtime (reachable over ssh,
 * streaming and caught up, the new version's binaries and free space there), and — with the
 * rebuild method — cloned again from the new primary once it accepts writes, a few hosts at a time,
 * through the replica module's own steps (slot, pg_basebackup, start, verify).
 *
 * pg_upgrade does not carry 16's replication slots: each standby's slot is created on the new
 * primary before that standby starts. Past the primary's point of no return a standby that fails
 * never fails the upgrade: it is reported with the exact command that rebuilds it. Each standby
 * keeps its own record in the upgrade's work directory, so a resume continues host by host.
 */
import { mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { withDb } from '../cluster/access.js';
import { ExitCode, PgscaleError } from '../errors.js';
import { formatBytes, formatDuration } from '../format.js';
import { userByName } from '../osUser.js';
import { listRuns, writeFileAtomic } from '../pipeline/journal.js';
import { check, defineStep, stepDefinition, type CheckResult, type JsonObject, type StepContext } from '../pipeline/step.js';
import { isLocal, remoteAccount, runnerFor, type HostSpec } from '../remote/ssh.js';
import { judgeHost, spaceNeeds, versionMajor } from '../replica/rules.js';
import { gatherHost, gatherPrimary, replicaPassfile, standbyIdentity, type ReplicaParams } from '../replica/steps.js';
import type { OsUser, Runner } from '../runner.js';
import { PostgresServer } from '../server/postgres.js';
import { statements } from '../sql.js';
import type { UpgradeParams } from './params.js';
import {
  chooseMethod,
  judgeOldStandby,
  judgeUnknownStandbys,
  newVersionPath,
  parseStandbyLayout,
  rebuildCommand,
  rsyncBlockers,
  rsyncTransfer,
  standbyWalPlacement,
  transferLevel,
  type ReplicasMethod,
  type ReplicationEntry,
  type StandbyLayout,
  type StandbyWalDirs,
  type StreamingFacts,
} from './standbyRules.js';

export interface StandbyPlan extends JsonObject {
  /** HOST:PGDATA, as the DBA names it. */
  name: string;
  source: string;
  host: HostSpec;
  oldDataDir: string;
  /** What its files said when the run was planned (null: not readable then; the checks say why). */
  layout: StandbyLayout | null;
  /** The standby of the new version: the replica module's parameters (null when the layout is unknown). */
  replica: ReplicaParams | null;
}

export interface UpgradeReplicas extends JsonObject {
  method: ReplicasMethod;
  why: string;
  standbys: StandbyPlan[];
  maxLagBytes: number;
  /** Standbys rebuilt at the same time. */
  concurrency: number;
}

export interface StandbyChoices {
  method?: ReplicasMethod;
  named: { destination: string; dataDir: string }[];
  sshConfig: string | null;
  maxLagBytes: number;
  stateDir: string;
}

/** The copy rate the plan's estimate assumes for pg_basebackup (a network and disk of the usual kind). */
const assumedCopyRate = 100 * 1024 ** 2;

type Ctx = { runner: Runner; audit?: StepContext['audit'] };

const nameOf = (host: HostSpec, dir: string) => `${host.destination}:${dir}`;

function accountOn(host: HostSpec, name: string): OsUser | undefined {
  return isLocal(host) ? userByName(name) : remoteAccount(name);
}

/** Reads a standby's files on its host as their owner: postmaster.pid, standby.signal, links, primary_* settings. */
const layoutScript = `d=$1
if [ -f "$d/postmaster.pid" ]; then
  pid=$(sed -n 1p "$d/postmaster.pid")
  if kill -0 "$pid" 2>/dev/null; then
    sed -n '1s/^/pid=/p;4s/^/port=/p;5s/^/socket=/p;6s/^/listen=/p' "$d/postmaster.pid"
    printf 'exe=%s\\n' "$(readlink "/proc/$pid/exe")"
  fi
fi
[ -f "$d/standby.signal" ] && echo standby=1
printf 'version=%s\\n' "$(cat "$d/PG_VERSION" 2>/dev/null)"
[ -L "$d/pg_wal" ] && printf 'waldir=%s\\n' "$(readlink -- "$d/pg_wal")"
for l in "$d"/pg_tblspc/*; do [ -L "$l" ] && printf 'tablespace=%s %s\\n' "\${l##*/}" "$(readlink -- "$l")"; done
for f in "$d/postgresql.conf" "$d/postgresql.auto.conf"; do [ -f "$f" ] && grep -E '^[[:space:]]*primary_(conninfo|slot_name)' "$f" | sed 's/^/conf=/'; done
true`;

export async function gatherLayout(
  ctx: Ctx,
  host: HostSpec,
  dir: string,
): Promise<{ owner: string | null; layout: StandbyLayout | null; sshError: string | null }> {
  const runner = runnerFor(host, ctx);
  const st = await runner.run({ program: 'stat', args: ['-c', '%U', '--', dir], cwd: '/' });
  if (st.exitCode === 255 && !isLocal(host)) return { owner: null, layout: null, sshError: st.stderr.trim() };
  if (st.exitCode !== 0) return { owner: null, layout: null, sshError: null };
  const owner = st.stdout.trim();
  const account = accountOn(host, owner);
  if (!account) return { owner: null, layout: null, sshError: null };
  const res = await runner.run({ program: 'sh', args: ['-c', layoutScript, 'sh', dir], runAs: account, cwd: '/' });
  return { owner, layout: res.exitCode === 0 ? parseStandbyLayout(res.stdout) : null, sshError: null };
}

type StreamEntry = ReplicationEntry & StreamingFacts;

async function replicationEntries(ctx: Ctx, p: UpgradeParams): Promise<StreamEntry[]> {
  const rows = await withDb(ctx, p.access, (db) => db.query(statements.replicationOverview()));
  return rows.map((r) => ({
    slot: r.slot_name,
    slotType: r.slot_type,
    applicationName: r.application_name,
    clientAddress: r.client_addr,
    active: Boolean(r.active),
    state: r.state,
    lagBytes: r.lag_bytes === null ? null : Number(r.lag_bytes),
  }));
}

/** The primary's tablespaces by oid (pg_tblspc links): a standby's link of the same oid is that tablespace's copy. */
function primaryTablespaces(dataDir: string): Map<string, string> {
  const out = new Map<string, string>();
  try {
    for (const oid of readdirSync(join(dataDir, 'pg_tblspc'))) out.set(oid, readlinkSync(join(dataDir, 'pg_tblspc', oid)));
  } catch {
    /* none */
  }
  return out;
}

/** The replica module's parameters for the new version's standby, beside the old one on its host. */
function newStandby(
  p: UpgradeParams,
  host: HostSpec,
  oldDir: string,
  owner: string,
  l: StandbyLayout,
  clientAddress: string | null,
  maxLagBytes: number,
): ReplicaParams | null {
  if (!l.port || !l.socketDir || !l.slot || !l.conninfo.user) return null;
  const locations = primaryTablespaces(p.old.dataDir);
  return {
    primaryDataDir: p.new.dataDir,
    primaryMajor: p.new.major,
    access: { ...p.access, bindir: p.new.bindir },
    host,
    replicaDir: newVersionPath(oldDir, p.old.major, p.new.major),
    replicaWaldir: l.waldir ? newVersionPath(l.waldir, p.old.major, p.new.major) : null,
    tablespaces: l.tablespaces.map((t) => ({
      name: t.oid,
      location: locations.get(t.oid) ?? t.location,
      target: newVersionPath(t.location, p.old.major, p.new.major),
    })),
    replicaBindir: p.new.bindir,
    replicaOwner: owner,
    replicaPort: l.port,
    replicaSocketDir: l.socketDir,
    role: l.conninfo.user,
    slot: l.slot,
    passfile: null,
    primaryAddress: l.conninfo.host ?? null,
    primaryPort: Number(l.conninfo.port ?? p.old.port),
    replicaAddress: clientAddress,
    maxRate: null,
    maxLagBytes,
    promptedPassfile: false,
  };
}

/** Standbys pgscale created for this primary (completed `replica add` runs whose slot still exists). */
function createdByPgscale(stateDir: string, primaryDataDir: string, liveSlots: ReadonlySet<string>): { host: HostSpec; dataDir: string }[] {
  return listRuns(stateDir)
    .filter((r) => r.plan.operation === 'replica-add' && r.status === 'completed')
    .map((r) => r.plan.params as unknown as ReplicaParams)
    .filter((rp) => rp.primaryDataDir === primaryDataDir && liveSlots.has(rp.slot))
    .map((rp) => ({ host: rp.host, dataDir: rp.replicaDir }));
}

export async function decideStandbys(c: StandbyChoices, p: UpgradeParams, ctx: Ctx): Promise<UpgradeReplicas | null> {
  const entries = await replicationEntries(ctx, p);
  const found = new Map<string, { host: HostSpec; dataDir: string; source: string }>();
  for (const n of c.named) {
    const host: HostSpec = { destination: n.destination, sshConfig: isLocal({ destination: n.destination, sshConfig: null }) ? null : c.sshConfig };
    found.set(nameOf(host, n.dataDir), { host, dataDir: n.dataDir, source: '--replica' });
  }
  const liveSlots = new Set(entries.map((e) => e.slot).filter((s): s is string => Boolean(s)));
  for (const r of createdByPgscale(c.stateDir, p.old.dataDir, liveSlots)) {
    if (!found.has(nameOf(r.host, r.dataDir))) found.set(nameOf(r.host, r.dataDir), { ...r, source: 'created by pgscale replica add' });
  }
  const standbys: StandbyPlan[] = [];
  for (const [name, s] of found) {
    const g = await gatherLayout(ctx, s.host, s.dataDir);
    const client = g.layout?.slot ? (entries.find((e) => e.slot === g.layout!.slot)?.clientAddress ?? null) : null;
    standbys.push({
      name,
      source: s.source,
      host: s.host,
      oldDataDir: s.dataDir,
      layout: g.layout,
      replica: g.owner && g.layout ? newStandby(p, s.host, s.dataDir, g.owner, g.layout, client, c.maxLagBytes) : null,
    });
  }
  // no standby anywhere and nothing asked: the upgrade has no standby steps at all
  if (!c.method && !standbys.length && !entries.some((e) => e.slotType !== 'logical')) return null;
  let rsyncChecksPass = standbys.length > 0;
  for (const s of standbys) if ((await rsyncProblems(ctx, p, s)).length) rsyncChecksPass = false;
  const { method, why } = chooseMethod(c.method, { standbys: standbys.length, linkMode: p.mode === 'link', rsyncChecksPass });
  return { method, why, standbys, maxLagBytes: c.maxLagBytes, concurrency: 2 };
}

/** The old and new WAL directories of a standby whose new version is planned. */
export const walDirsOf = (s: StandbyPlan): StandbyWalDirs => ({
  oldDataDir: s.oldDataDir,
  oldWaldir: s.layout?.waldir ?? null,
  newDataDir: s.replica!.replicaDir,
  newWaldir: s.replica!.replicaWaldir,
});

/** Where the upgrade's starts of an old standby log (beside it: its data directory is the transfer's target). */
const oldStandbyLog = (s: Pick<StandbyPlan, 'oldDataDir'>) => `${s.oldDataDir}.log`;

/** pgscale's own files in the directories above the data directories (never transferred, never deleted by a transfer one level up), by name. */
export function ownBeside(p: UpgradeParams, s: StandbyPlan): { primaryOld: string[]; primaryNew: string[]; standbyOld: string[] } {
  const inDir = (dataDir: string, files: string[]) => files.filter((f) => dirname(f) === dirname(dataDir)).map((f) => basename(f));
  return {
    primaryOld: inDir(p.old.dataDir, [p.old.server.log]),
    primaryNew: inDir(p.new.dataDir, [p.workDir, p.new.server.log]),
    standbyOld: inDir(s.oldDataDir, [oldStandbyLog(s), replicaPassfile(s.oldDataDir)]),
  };
}

/** A directory's entries on this host (absent: none; null: unreadable). */
function entriesHere(dir: string): string[] | null {
  try {
    return readdirSync(dir);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? [] : null;
  }
}

/** Why a transfer one level above the data directories could not carry this standby (null: it can, or it is not needed). */
async function transferProblem(ctx: Ctx, p: UpgradeParams, s: StandbyPlan): Promise<string | null> {
  if (!s.replica || transferLevel(p.old.dataDir, p.new.dataDir) === 'data directory') return null;
  const own = ownBeside(p, s);
  const res = await runnerFor(s.host, ctx).run({
    program: 'find',
    args: [dirname(s.oldDataDir), '-mindepth', '1', '-maxdepth', '1', '-printf', '%f\\0'],
    runAs: accountOn(s.host, s.replica.replicaOwner),
    cwd: '/',
  });
  return rsyncTransfer({
    oldDataDir: p.old.dataDir,
    newDataDir: p.new.dataDir,
    standbyDataDir: s.oldDataDir,
    standbyNewDataDir: s.replica.replicaDir,
    primaryOld: { entries: entriesHere(dirname(p.old.dataDir)), own: own.primaryOld },
    primaryNew: { entries: entriesHere(dirname(p.new.dataDir)), own: own.primaryNew },
    standbyOld: { entries: res.exitCode === 0 ? res.stdout.split('\0').filter(Boolean) : null, own: own.standbyOld },
  }).problem;
}

/** Why the rsync method cannot carry a standby, gathered now (empty: it can). */
export async function rsyncProblems(ctx: Ctx, p: UpgradeParams, s: StandbyPlan): Promise<string[]> {
  const here = await ctx.runner.run({ program: 'rsync', args: ['--version'] }).catch(() => ({ exitCode: 127 }));
  const there = await runnerFor(s.host, ctx).run({ program: 'rsync', args: ['--version'], cwd: '/' });
  const missing = (s.replica?.tablespaces ?? []).filter((t) => !t.target);
  const wal = s.replica ? standbyWalPlacement(walDirsOf(s)) : null;
  return rsyncBlockers({
    linkMode: p.mode === 'link',
    rsyncHere: here.exitCode === 0,
    rsyncThere: there.exitCode === 0,
    walProblem: wal && 'problem' in wal ? wal.problem : null,
    transferProblem: await transferProblem(ctx, p, s),
    tablespaceProblem: !s.replica
      ? "the standby's layout is unknown"
      : missing.length
        ? `tablespaces without a place on the standby: ${missing.map((t) => t.location).join(', ')}`
        : null,
  });
}

/** Every check of every standby, gathered now (at planning and again just before the old primary stops). */
export async function standbyChecks(ctx: StepContext, p: UpgradeParams): Promise<CheckResult[]> {
  const r = p.replicas;
  if (!r) return [];
  const out: CheckResult[] = [
    check.info('standbys', `${r.standbys.length ? r.standbys.map((s) => `${s.name} (${s.source})`).join(', ') : 'none known'}: ${r.method} — ${r.why}`),
  ];
  const entries = await replicationEntries(ctx, p);
  const known = new Set(r.standbys.map((s) => s.layout?.slot).filter((s): s is string => Boolean(s)));
  out.push(...judgeUnknownStandbys(entries, known, r.method));
  if (r.method === 'leave') {
    for (const s of r.standbys) out.push(check.warn(`standby ${s.name}`, 'left on the old version (--replicas leave): it cannot follow the upgraded primary'));
    return out;
  }

  if (r.standbys.length)
    out.push(
      check.info(
        'replication slots',
        `pg_upgrade does not carry ${p.old.major}'s slots: ${r.standbys.map((s) => s.layout?.slot ?? '?').join(', ')} ${r.standbys.length === 1 ? 'is' : 'are'} created on the new primary before ${r.standbys.length === 1 ? 'its standby starts' : 'each standby starts'}`,
      ),
    );
  const newVersion = (await ctx.runner.run({ program: join(p.new.bindir, 'postgres'), args: ['--version'] })).stdout.trim();
  for (const s of r.standbys) {
    const g = await gatherLayout(ctx, s.host, s.oldDataDir);
    const slot = g.layout?.slot;
    const e = slot ? entries.find((x) => x.slot === slot) : undefined;
    const streaming: StreamingFacts | null = e ? { state: e.state, lagBytes: e.lagBytes } : null;
    out.push(...judgeOldStandby({ name: s.name, sshError: g.sshError, layout: g.layout, oldMajor: p.old.major, streaming }, r.maxLagBytes));
    if (g.sshError) continue;
    if (!s.replica) {
      out.push(check.fail(`standby ${s.name}: new standby`, 'its port, sockets, slot or replication user could not be read when the run was planned'));
      continue;
    }
    const host = await gatherHost(ctx, s.replica);
    const primary = await gatherPrimary(ctx, { ...s.replica, access: p.access });
    // rsync links the unchanged files: it needs no room for a copy, and the tablespaces keep their places
    const rsync = r.method === 'rsync';
    const intent = {
      role: s.replica.role,
      slot: s.replica.slot,
      primaryAddress: s.replica.primaryAddress,
      replicaAddress: s.replica.replicaAddress,
      replicaDir: s.replica.replicaDir,
      replicaWaldir: s.replica.replicaWaldir,
      tablespaceTargets: rsync ? [] : s.replica.tablespaces,
      local: isLocal(s.host),
      createRole: false,
    };
    const judged = judgeHost(host, intent, p.new.major, newVersion || String(p.new.major), rsync ? new Map<string, number>() : spaceNeeds(primary, intent));
    out.push(...judged.map((c) => ({ ...c, name: `standby ${s.name}: ${c.name === 'replica binaries' ? `PostgreSQL ${p.new.major} binaries` : c.name}` })));
    if (rsync) {
      const problems = await rsyncProblems(ctx, p, s);
      out.push(
        problems.length
          ? check.fail(`standby ${s.name}: rsync`, `${problems.join('; ')}: use --replicas rebuild`)
          : check.pass(
              `standby ${s.name}: rsync`,
              `rsync on both ends; ${s.oldDataDir} is brought level with the primary's files by rsync --hard-links --size-only before the new primary starts, then started as ${s.replica.replicaDir}`,
            ),
      );
      continue;
    }
    out.push(
      check.info(
        `standby ${s.name}: rebuild`,
        `into ${s.replica.host.destination}:${s.replica.replicaDir} through slot ${s.replica.slot} once the new primary accepts writes; about ${formatDuration(Math.max(5, primary.dataBytes / assumedCopyRate))} for ${formatBytes(primary.dataBytes)} at ${formatBytes(assumedCopyRate)}/s`,
      ),
    );
    if (versionMajor(newVersion) !== p.new.major) out.push(check.fail('new binaries', `${p.new.bindir}/postgres --version says ${newVersion}`));
  }
  return out;
}

export const standbysCheckStep = defineStep<UpgradeParams>({
  kind: 'upgrade.standbys-check',
  title: (p) => `Check the ${p.replicas?.standbys.length ?? 0} standbys again just before the old primary stops (reachable, streaming, caught up)`,
  check: standbyChecks,
  plan: async () => [],
  async apply(ctx, p) {
    const failed = (await standbyChecks(ctx, p)).filter((c) => !c.passed && c.severity === 'error');
    if (failed.length)
      throw new PgscaleError(
        `a standby is not ready: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`,
        ExitCode.FailedNoChange,
        'nothing is stopped yet: fix it (or pass --replicas leave), then run the upgrade again',
      );
  },
  verify: async () => ({ ok: true, detail: 'every standby streams and is caught up' }),
  rollbackNote: () => 'nothing to undo (read-only)',
});

// ---- rebuild ----

const recordDir = (p: UpgradeParams) => join(p.workDir, 'standbys');
export const recordFile = (p: UpgradeParams, s: StandbyPlan) => join(recordDir(p), `${s.replica?.slot ?? s.name.replace(/[^\w.-]+/g, '_')}.json`);

export interface StandbyRecord {
  /** rsync: stopped at the primary's checkpoint → synced → rebuilt (streaming); rebuild: rebuilding → rebuilt. */
  state: 'rebuilding' | 'stopped' | 'synced' | 'rebuilt' | 'failed';
  detail: string;
  command?: string;
}

export function readRecord(p: UpgradeParams, s: StandbyPlan): StandbyRecord | undefined {
  try {
    return JSON.parse(readFileSync(recordFile(p, s), 'utf8')) as StandbyRecord;
  } catch {
    return undefined;
  }
}

export function writeRecord(p: UpgradeParams, s: StandbyPlan, r: StandbyRecord): void {
  mkdirSync(recordDir(p), { recursive: true, mode: 0o700 });
  writeFileAtomic(recordFile(p, s), JSON.stringify(r));
}

/** The old standby's server: stopped before its new version is cloned (it cannot follow the new primary). */
export function oldStandby(ctx: StepContext, s: StandbyPlan): PostgresServer {
  const r = s.replica!;
  const id = standbyIdentity({
    replicaBindir: s.layout?.bindir ?? r.replicaBindir,
    replicaDir: s.oldDataDir,
    replicaPort: r.replicaPort,
    replicaSocketDir: r.replicaSocketDir,
    replicaAddress: r.replicaAddress,
    replicaOwner: r.replicaOwner,
  });
  return new PostgresServer({ ...id, log: oldStandbyLog(s) }, runnerFor(s.host, ctx), isLocal(s.host) ? undefined : remoteAccount(r.replicaOwner));
}

/** The replica module's steps, in order: the slot on the new primary first, then the copy, the start and the check. */
export const replicaStepKinds = ['replica-slot', 'replica-basebackup', 'replica-own-config', 'replica-start', 'replica-verify'];

export function commandFor(s: StandbyPlan): string {
  const r = s.replica!;
  return rebuildCommand({ ...r, destination: r.host.destination, sshConfig: r.host.sshConfig });
}

let verifying: Promise<unknown> = Promise.resolve();
/** Runs `work` after every earlier call has settled: the replica verify's probe table is one on the primary, shared by all standbys. */
export function oneAtATime<T>(work: () => Promise<T>): Promise<T> {
  const next = verifying.then(work, work);
  verifying = next.catch(() => undefined);
  return next;
}

async function rebuildOne(ctx: StepContext, p: UpgradeParams, s: StandbyPlan): Promise<StandbyRecord> {
  const r = s.replica!;
  writeRecord(p, s, { state: 'rebuilding', detail: new Date().toISOString() });
  const runner = runnerFor(s.host, ctx);
  const account = isLocal(s.host) ? userByName(r.replicaOwner) : remoteAccount(r.replicaOwner);
  await oldStandby(ctx, s).stop({ immediateAfterTimeout: true, timeoutSeconds: 60 });
  // the new standby's password file: the old one's, copied 0600 beside the new data directory
  const oldPassfile = s.layout?.conninfo.passfile;
  if (!oldPassfile) throw new Error("the old standby's primary_conninfo names no passfile");
  const copy = await runner.run({ program: 'install', args: ['-m', '0600', '--', oldPassfile, replicaPassfile(r.replicaDir)], runAs: account, cwd: '/' });
  if (copy.exitCode !== 0) throw new Error(`copying ${oldPassfile}: ${copy.stderr.trim()}`);
  const subCtx = { ...ctx, outputs: new Map<string, JsonObject>() };
  for (const kind of replicaStepKinds) {
    const def = stepDefinition(kind);
    // a resumed run skips what is already done (a complete copy, a running standby)
    if (kind !== 'replica-verify' && (await def.verify(subCtx, r)).ok) continue;
    ctx.progress.message(`${s.name}: ${def.title(r)}`);
    // the replica verify writes and then drops one shared probe table on the primary: one standby at a time
    const out = kind === 'replica-verify' ? await oneAtATime(() => def.apply(subCtx, r)) : await def.apply(subCtx, r);
    if (out) subCtx.outputs.set(kind.replace('replica-', ''), out);
    const v = await def.verify(subCtx, r);
    if (!v.ok) throw new Error(`${def.title(r)}: ${v.detail}`);
  }
  return { state: 'rebuilt', detail: `${r.host.destination}:${r.replicaDir} streams from the new primary through ${r.slot}` };
}

/** Undoes a standby's half-made copy and its slot, so that the reported command starts from nothing. */
export async function clearFailed(ctx: StepContext, s: StandbyPlan): Promise<void> {
  for (const kind of ['replica-basebackup', 'replica-slot']) {
    try {
      await stepDefinition(kind).rollback?.(ctx, s.replica!);
    } catch {
      /* reported with the failure: the command's own checks say what is left */
    }
  }
}

export const rebuildStandbysStep = defineStep<UpgradeParams>({
  kind: 'upgrade.standbys-rebuild',
  title: (p) =>
    `Rebuild ${p.replicas?.standbys.length ?? 0} standbys from the new primary, ${p.replicas?.concurrency ?? 2} at a time: stop the old one, slot, pg_basebackup, start, verify`,
  check: async () => [],
  async plan(ctx, p) {
    return (p.replicas?.standbys ?? []).flatMap((s) => {
      const r = s.replica;
      if (!r) return [];
      return [
        { kind: 'service' as const, action: 'stop' as const, target: `old standby ${s.name}` },
        {
          kind: 'file' as const,
          path: `${s.host.destination}:${replicaPassfile(r.replicaDir)}`,
          change: 'create' as const,
          mode: '0600',
          note: `copied from ${s.layout?.conninfo.passfile ?? '?'}`,
        },
        ...replicaStepKinds.map((k) => ({
          kind: 'command' as const,
          argv: [stepDefinition(k).title(r)],
          note: `on ${s.host.destination}; by hand: ${commandFor(s)}`,
        })),
      ];
    });
  },
  async apply(ctx, p) {
    const queue = [...(p.replicas?.standbys ?? [])];
    const results: JsonObject[] = [];
    const worker = async () => {
      for (let s = queue.shift(); s; s = queue.shift()) {
        const prior = readRecord(p, s);
        if (prior?.state === 'rebuilt' || prior?.state === 'failed') {
          results.push({ standby: s.name, ...prior });
          continue;
        }
        let rec: StandbyRecord;
        try {
          if (!s.replica) throw new Error('its layout was unknown when the run was planned');
          rec = await rebuildOne(ctx, p, s);
        } catch (e) {
          // past the primary's point of no return: reported with the command that rebuilds it, never a failed upgrade
          if (s.replica) await clearFailed(ctx, s);
          rec = { state: 'failed', detail: (e as Error).message, ...(s.replica ? { command: commandFor(s) } : {}) };
        }
        writeRecord(p, s, rec);
        results.push({ standby: s.name, ...rec });
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, p.replicas?.concurrency ?? 2) }, worker));
    return { standbys: results };
  },
  async verify(_ctx, p) {
    const records = (p.replicas?.standbys ?? []).map((s) => [s, readRecord(p, s)] as const);
    const open = records.filter(([, r]) => !r || r.state === 'rebuilding');
    if (open.length) return { ok: false, detail: `not yet rebuilt: ${open.map(([s]) => s.name).join(', ')}` };
    const failed = records.filter(([, r]) => r?.state === 'failed');
    return {
      ok: true,
      detail: failed.length
        ? `${records.length - failed.length} rebuilt; FAILED (the primary's upgrade stands): ${failed.map(([s, r]) => `${s.name}: ${r!.detail} — rebuild it with: ${r!.command ?? 'pgscale replica add …'}`).join('; ')}`
        : `${records.length} standbys stream from the new primary through new slots`,
    };
  },
  async rollback(ctx, p) {
    // reached only when the upgrade itself can still go back (copy mode): the old standbys follow the old primary again
    for (const s of p.replicas?.standbys ?? []) {
      if (!s.replica) continue;
      await clearFailed(ctx, s);
      await oldStandby(ctx, s)
        .start()
        .catch(() => undefined);
      rmSync(recordFile(p, s), { force: true });
    }
  },
  rollbackNote: () =>
    'stop and remove the new standbys and their slots, start the old standbys again (copy mode only; past the point of no return the rebuilt standbys stay)',
  estimateSeconds: () => 60,
});
