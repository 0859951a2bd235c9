/**
 * The rsync method (link mode), in the order of the pg_upgrade documentation ("Upgrade streaming
 * replication and log-shipping standby servers"), every standby at once (each keeps its own record
 * and outcome; a step waits until every standby has ended its part, so none is left half-done):
 *   after the primary's clean stop — each standby is stopped once it has replayed the primary's
 *     shutdown checkpoint, and its `Latest checkpoint location` must equal the primary's (a
 *     mismatch stops the run before pg_upgrade: the old primary and standbys are restartable);
 *   after pg_upgrade --link, before the new primary starts — from this host, per standby,
 *     `rsync --archive --delete --hard-links --size-only --no-inc-recursive OLD NEW host:PARENT`
 *     for the data directory and each tablespace's version directories, then the new primary's
 *     pg_wal into the new standby's WAL directory (outside its data directory when the old
 *     standby's was, pg_wal a link to it: the documentation's "relocated pg_wal"); standby.signal,
 *     primary_conninfo (passfile) and primary_slot_name written into the new data directory;
 *   once the new primary accepts writes — its physical slot created, the standby started and
 *     verified (streaming, a row written on the primary read there) through the replica steps.
 * The standby's data directory name may differ from the primary's: the transfer goes through a
 * staging directory beside it holding a link under the primary's name (rsync --keep-dirlinks).
 * When the primary's old and new data directories are named alike (…/16/main, …/17/main) rsync
 * works one level up, from the directories above both clusters, as the documentation's recipe
 * does; the checks allow it only where those hold nothing but the cluster (rsyncTransfer).
 */
import { readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ExitCode, PgscaleError } from '../errors.js';
import { userByName } from '../osUser.js';
import { defineStep, stepDefinition, type JsonObject, type StepContext } from '../pipeline/step.js';
import { isLocal, remoteAccount, runnerFor, SshRunner } from '../remote/ssh.js';
import { replicaPassfile } from '../replica/steps.js';
import { describeFailure, type Invocation, type OsUser } from '../runner.js';
import { PostgresServer } from '../server/postgres.js';
import { PsqlDb, statements } from '../sql.js';
import type { UpgradeParams } from './params.js';
import { standbyAutoConf, standbyWalPlacement, transferLevel } from './standbyRules.js';
import { commandFor, oldStandby, oneAtATime, ownBeside, readRecord, walDirsOf, writeRecord, type StandbyPlan, type StandbyRecord } from './standbys.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const owned = (s: StandbyPlan): OsUser => (isLocal(s.host) ? userByName(s.replica!.replicaOwner)! : remoteAccount(s.replica!.replicaOwner));
const rsyncable = (p: UpgradeParams) => (p.replicas?.standbys ?? []).filter((s) => s.replica);

async function onHost(ctx: StepContext, s: StandbyPlan, inv: Invocation, what: string): Promise<string> {
  const res = await runnerFor(s.host, ctx).run({ cwd: '/', ...inv });
  if (res.exitCode !== 0) throw new Error(`${what} on ${s.host.destination}: ${describeFailure(inv, res)}`);
  return res.stdout;
}

/** Waits until the standby has replayed up to the primary's shutdown checkpoint, stops it and compares both pg_controldata. */
async function stopAtCheckpoint(ctx: StepContext, p: UpgradeParams, s: StandbyPlan, checkpoint: string): Promise<void> {
  const r = s.replica!;
  const old = oldStandby(ctx, s);
  const db = new PsqlDb(
    runnerFor(s.host, ctx),
    join(s.layout?.bindir ?? p.old.bindir, 'psql'),
    { host: r.replicaSocketDir, port: r.replicaPort, user: r.replicaOwner, database: 'postgres' },
    owned(s),
    ctx.audit,
  );
  const deadline = Date.now() + 60_000;
  // the replay position is asked first: only when the query fails (a standby a resumed run already stopped) is the server's state read
  for (;;) {
    const [row] = await db.query(statements.replayedUpTo(checkpoint)).catch(() => [undefined]);
    if (row?.reached) {
      await old.stop({ timeoutSeconds: 120 });
      break;
    }
    if (!row && !(await old.isRunning())) break;
    if (Date.now() > deadline)
      throw new PgscaleError(
        `standby ${s.name} has not replayed the primary's shutdown checkpoint ${checkpoint} (at ${row?.replayed ?? 'unknown'})`,
        ExitCode.FailedAfterChange,
        '`pgscale rollback` starts the old primary and its standbys again',
      );
    await sleep(200);
  }
  const mine = (await old.controlData())?.latestCheckpoint;
  if (mine !== checkpoint)
    throw new PgscaleError(
      `standby ${s.name}: Latest checkpoint location ${mine ?? 'unreadable'}, the primary's ${checkpoint}: it did not receive the shutdown checkpoint, so rsync cannot bring it level`,
      ExitCode.FailedAfterChange,
      '`pgscale rollback` starts the old primary and its standbys again; then upgrade with --replicas rebuild',
    );
}

/** Runs `work` for every standby at once and waits for all of them; then the failures, if any, as one error (each standby named in its own message). */
async function forEachStandby(standbys: StandbyPlan[], work: (s: StandbyPlan) => Promise<void>): Promise<void> {
  const failed = (await Promise.allSettled(standbys.map(work))).flatMap((o) => (o.status === 'rejected' ? [o.reason as Error] : []));
  const [only, ...more] = failed;
  if (only && !more.length) throw only;
  if (only) {
    const first = failed.find((e) => e instanceof PgscaleError);
    throw new PgscaleError(failed.map((e) => e.message).join('; '), first?.exitCode ?? ExitCode.FailedAfterChange, first?.hint);
  }
}

export const stopStandbysStep = defineStep<UpgradeParams>({
  kind: 'upgrade.standbys-stop',
  title: () =>
    "Stop the standbys, all at once, each once it has replayed the primary's shutdown checkpoint; compare Latest checkpoint location (pg_controldata) with the primary's",
  downtime: true,
  check: async () => [],
  plan: async (_ctx, p) =>
    rsyncable(p).map((s) => ({
      kind: 'service' as const,
      action: 'stop' as const,
      target: `standby ${s.name}`,
      note: "after pg_last_wal_replay_lsn() reaches the primary's shutdown checkpoint; pg_controldata must then show the same Latest checkpoint location",
    })),
  async apply(ctx, p) {
    const primary = await new PostgresServer(p.old.server, ctx.runner).controlData();
    if (primary?.state !== 'shut down' || !primary.latestCheckpoint)
      throw new PgscaleError(`the old primary is not shut down cleanly (${primary?.state ?? 'pg_controldata unreadable'})`, ExitCode.FailedAfterChange);
    const checkpoint = primary.latestCheckpoint;
    // a standby that fails leaves the others stopped and recorded (or running): the rollback starts them all again
    await forEachStandby(
      rsyncable(p).filter((s) => !readRecord(p, s)),
      async (s) => {
        await stopAtCheckpoint(ctx, p, s, checkpoint);
        writeRecord(p, s, { state: 'stopped', detail: `at ${checkpoint}` });
      },
    );
    return { checkpoint };
  },
  async verify(_ctx, p) {
    const open = rsyncable(p).filter((s) => !readRecord(p, s));
    return open.length
      ? { ok: false, detail: `not stopped at the checkpoint: ${open.map((s) => s.name).join(', ')}` }
      : { ok: true, detail: "every standby stopped at the primary's shutdown checkpoint" };
  },
  async rollback(ctx, p) {
    await forEachStandby(rsyncable(p), async (s) => {
      await oldStandby(ctx, s)
        .start()
        .catch(() => undefined);
      writeRecord(p, s, { state: 'failed', detail: 'rolled back' });
    });
  },
  rollbackNote: () => 'start the old standbys again (they follow the old primary once it is back)',
  estimateSeconds: () => 5,
});

/** rsync's argv: the documented options, -e with this run's ssh connection, the standby's own files protected from --delete. */
function rsyncArgv(ctx: StepContext, s: StandbyPlan, sources: string[], dest: string, protect: string[]): string[] {
  // --whole-file: the files that differ are small (catalogs, configuration, stats); rsync 3.2.7's delta transfer
  // through --keep-dirlinks was seen to fail its own verification on them ("failed verification -- update discarded")
  const args = [
    '--archive',
    '--delete',
    '--hard-links',
    '--size-only',
    '--no-inc-recursive',
    '--keep-dirlinks',
    '--whole-file',
    ...protect.flatMap((x) => ['--exclude', x]),
  ];
  const runner = runnerFor(s.host, ctx);
  if (runner instanceof SshRunner) return [...args, '-e', runner.transportCommand(), ...sources, `${s.host.destination}:${dest}`];
  return [...args, ...sources, dest];
}

/** Each tablespace on the primary and where the old standby keeps it (the version directories go side by side there). */
const standbyTablespaces = (s: StandbyPlan) =>
  (s.layout?.tablespaces ?? []).map((t) => ({
    oid: t.oid,
    standby: t.location,
    primary: s.replica!.tablespaces.find((m) => m.name === t.oid)?.location ?? t.location,
  }));

/**
 * The data directories' transfer: rsync names each source by its last component, so it sends the
 * primary's old and new data directories, or the directories above them when both are named alike
 * (transferLevel). On the standby a staging directory beside its counterpart of the old source holds
 * a link to it under the old source's name (rsync --keep-dirlinks) and receives the new one. pg_wal is
 * left out on both sides: the old standby keeps its own WAL (a rollback starts it from there) and the
 * new one gets the new primary's WAL on its own (walOf), wherever either primary or standby keeps it.
 */
function dataTransfer(p: UpgradeParams, s: StandbyPlan) {
  const up = transferLevel(p.old.dataDir, p.new.dataDir) === 'parent';
  const [oldSource, newSource] = up ? [dirname(p.old.dataDir), dirname(p.new.dataDir)] : [p.old.dataDir, p.new.dataDir];
  const standbySource = up ? dirname(s.oldDataDir) : s.oldDataDir;
  const stage = join(dirname(standbySource), `.pgscale-rsync-${s.replica!.slot}`);
  const [oldName, newName] = [basename(oldSource), basename(newSource)];
  // the cluster within a source one level up (both named alike)
  const within = up ? `/${basename(p.new.dataDir)}` : '';
  const own = ownBeside(p, s);
  return {
    sources: [oldSource, newSource],
    stage,
    dest: `${stage}/`,
    link: { name: oldName, target: standbySource },
    /** What rsync makes in the staging directory, and the new data directory in it. */
    newCopy: join(stage, newName),
    newData: join(stage, newName + within),
    protect: [
      // the old standby keeps what makes it a standby: a rollback can start it again
      ...['standby.signal', 'postgresql.auto.conf', 'postmaster.*', 'pg_wal'].map((f) => `/${oldName}${within}/${f}`),
      `/${newName}${within}/pg_wal`,
      // one level up: pgscale's own files beside the clusters are neither sent nor deleted
      ...(up ? [...own.primaryOld, ...own.standbyOld].map((f) => `/${oldName}/${f}`) : []),
      ...(up ? own.primaryNew.map((f) => `/${newName}/${f}`) : []),
    ],
  };
}

/**
 * Where the new standby's WAL goes (a problem fails the checks before downtime): rsynced before the
 * new data directory leaves the staging directory, into its pg_wal there or into the WAL directory.
 */
function walOf(p: UpgradeParams, s: StandbyPlan): { source: string; dest: string; dir: string; link: boolean } {
  const w = standbyWalPlacement(walDirsOf(s));
  if ('problem' in w) throw new PgscaleError(`standby ${s.name}: ${w.problem}`, ExitCode.FailedNoChange, 'use --replicas rebuild');
  // the trailing slash: the contents, through the link when the new primary keeps its WAL elsewhere (--waldir)
  const dest = w.link ? w.dir : join(dataTransfer(p, s).newData, 'pg_wal');
  return { source: `${join(p.new.dataDir, 'pg_wal')}/`, dest: `${dest}/`, ...w };
}

/**
 * One standby's transfer: two commands on its host (prepare; place and configure) around the rsync
 * runs, each rsync through the host's one multiplexed ssh connection.
 */
async function syncOne(ctx: StepContext, p: UpgradeParams, s: StandbyPlan): Promise<StandbyRecord> {
  const r = s.replica!;
  const account = owned(s);
  const data = dataTransfer(p, s);
  const wal = walOf(p, s);
  const passfile = s.layout?.conninfo.passfile;
  if (!passfile) throw new Error("the old standby's primary_conninfo names no passfile");
  // a resumed transfer starts over: the new directories were absent or empty when the run was planned (a check);
  // a WAL directory outside the data directory is made now (rsync makes only the last level of its destination)
  await onHost(
    ctx,
    s,
    {
      program: 'sh',
      args: [
        '-c',
        'mkdir -p -m 0700 "$1" && ln -sfn "$2" "$1/$3" && WAL=$4 && shift 4 && rm -rf -- "$@" && { [ -z "$WAL" ] || mkdir -p -m 0700 -- "$WAL"; }',
        'sh',
        data.stage,
        data.link.target,
        data.link.name,
        wal.link ? wal.dir : '',
        data.newCopy,
        r.replicaDir,
        ...(wal.link ? [wal.dir] : []),
      ],
      runAs: account,
    },
    'preparing the staging directory',
  );
  const run = async (sources: string[], dest: string, protect: string[]) => {
    ctx.progress.message(`${s.name}: rsync ${sources.join(' ')}`);
    const inv: Invocation = { program: 'rsync', args: rsyncArgv(ctx, s, sources, dest, protect), signal: ctx.signal, onStart: ctx.trackProcess };
    const res = await ctx.runner.run(inv);
    if (res.exitCode !== 0) throw new Error(`rsync to ${s.name}: ${describeFailure(inv, res)}`);
  };
  await run(data.sources, data.dest, data.protect);
  const places = standbyTablespaces(s);
  for (const t of places) {
    const dirs = readdirSync(t.primary)
      .filter((n) => n.startsWith(`PG_${p.old.major}_`) || n.startsWith(`PG_${p.new.major}_`))
      .map((n) => join(t.primary, n));
    await run(dirs, `${t.standby}/`, []);
  }
  await run([wal.source], wal.dest, []);
  // the new data directory under its own name beside the old one (or in the new version's directory, which the checks
  // found), pg_wal a link to the WAL directory when the old standby had one; its tablespace links point at
  // the standby's places; the password file, the standby settings (on stdin) and standby.signal
  const place = [
    'mv -T -- "$DATA" "$NEW"',
    '{ [ "$COPY" = "$DATA" ] || rmdir -- "$COPY"; }',
    'rm -f -- "$STAGE/$LINK"',
    'rmdir -- "$STAGE"',
    '{ [ "$WALMODE" != link ] || ln -sn -- "$WALDIR" "$NEW/pg_wal"; }',
    'install -m 0600 -- "$PASS" "$NEWPASS"',
    'cat >> "$NEW/postgresql.auto.conf"',
    ': > "$NEW/standby.signal"',
    'while [ $# -gt 0 ]; do ln -sfn -- "$2" "$NEW/pg_tblspc/$1"; shift 2; done',
  ].join(' && ');
  await onHost(
    ctx,
    s,
    {
      program: 'sh',
      args: [
        '-c',
        `STAGE=$1 COPY=$2 DATA=$3 NEW=$4 LINK=$5 WALDIR=$6 WALMODE=$7 PASS=$8 NEWPASS=$9 && shift 9 && ${place}`,
        'sh',
        data.stage,
        data.newCopy,
        data.newData,
        r.replicaDir,
        data.link.name,
        wal.dir,
        wal.link ? 'link' : 'inside',
        passfile,
        replicaPassfile(r.replicaDir),
        ...places.flatMap((t) => [t.oid, t.standby]),
      ],
      runAs: account,
      input: standbyAutoConf(s.layout!.conninfo, replicaPassfile(r.replicaDir), r.slot),
    },
    'placing and configuring the new data directory',
  );
  return { state: 'synced', detail: `${r.replicaDir} brought level by rsync` };
}

export const rsyncStandbysStep = defineStep<UpgradeParams>({
  kind: 'upgrade.standbys-rsync',
  title: () =>
    'rsync the standbys level with the upgraded primary, all at once (hard links, sizes only), before the new primary starts; standby.signal, primary_conninfo and primary_slot_name written',
  downtime: true,
  check: async () => [],
  plan: async (ctx, p) =>
    rsyncable(p).flatMap((s) => {
      const data = dataTransfer(p, s);
      const wal = walOf(p, s);
      return [
        {
          kind: 'command' as const,
          argv: ['rsync', ...rsyncArgv(ctx, s, data.sources, data.dest, data.protect)],
          note: `${join(data.stage, data.link.name)} links to ${data.link.target}; then ${data.newData} becomes ${s.replica!.replicaDir}`,
        },
        ...standbyTablespaces(s).map((t) => ({
          kind: 'command' as const,
          argv: ['rsync', ...rsyncArgv(ctx, s, [`${t.primary}/PG_${p.old.major}_*`, `${t.primary}/PG_${p.new.major}_*`], `${t.standby}/`, [])],
        })),
        {
          kind: 'command' as const,
          argv: ['rsync', ...rsyncArgv(ctx, s, [wal.source], wal.dest, [])],
          note: wal.link
            ? `${join(s.replica!.replicaDir, 'pg_wal')} links to ${wal.dir}, as the old standby's pg_wal links to ${s.layout?.waldir}`
            : 'WAL inside the data directory, as on the old standby',
        },
        {
          kind: 'file' as const,
          path: `${s.host.destination}:${join(s.replica!.replicaDir, 'postgresql.auto.conf')}`,
          change: 'modify' as const,
          note: `standby.signal, primary_conninfo (passfile ${replicaPassfile(s.replica!.replicaDir)}), primary_slot_name ${s.replica!.slot}`,
        },
      ];
    }),
  async apply(ctx, p) {
    const standbys = await Promise.all(
      rsyncable(p).map(async (s): Promise<JsonObject> => {
        const prior = readRecord(p, s);
        if (prior?.state !== 'stopped') return { standby: s.name, ...(prior ?? {}) };
        let rec: StandbyRecord;
        try {
          rec = await syncOne(ctx, p, s);
        } catch (e) {
          // the primary's upgrade goes on: this standby is reported with the command that rebuilds it
          rec = { state: 'failed', detail: (e as Error).message, command: `remove ${s.replica!.replicaDir} on ${s.host.destination}, then: ${commandFor(s)}` };
        }
        writeRecord(p, s, rec);
        return { standby: s.name, ...rec };
      }),
    );
    return { standbys };
  },
  async verify(_ctx, p) {
    const open = rsyncable(p).filter((s) => readRecord(p, s)?.state === 'stopped');
    return open.length
      ? { ok: false, detail: `not synced yet: ${open.map((s) => s.name).join(', ')}` }
      : { ok: true, detail: 'every standby synced (or reported)' };
  },
  async rollback(ctx, p) {
    // before the new primary starts the old standbys are intact (their standby files were protected): remove the new copies
    await forEachStandby(rsyncable(p), async (s) => {
      await onHost(
        ctx,
        s,
        {
          program: 'rm',
          args: [
            '-rf',
            '--',
            s.replica!.replicaDir,
            ...(s.replica!.replicaWaldir ? [s.replica!.replicaWaldir] : []),
            dataTransfer(p, s).stage,
            replicaPassfile(s.replica!.replicaDir),
          ],
          runAs: owned(s),
        },
        'removing the new copy',
      ).catch(() => undefined);
      writeRecord(p, s, { state: 'stopped', detail: 'rsync rolled back' });
    });
  },
  rollbackNote: () => 'remove the new standby directories (the old standbys keep standby.signal and their settings)',
  estimateSeconds: () => 10,
});

export const startStandbysStep = defineStep<UpgradeParams>({
  kind: 'upgrade.standbys-start',
  title: () =>
    "Create each standby's physical slot on the new primary, start the standbys all at once, verify they stream and serve a row written now (one probe at a time)",
  check: async () => [],
  plan: async (_ctx, p) =>
    rsyncable(p).flatMap((s) =>
      ['replica-slot', 'replica-start', 'replica-verify'].map((k) => ({
        kind: 'command' as const,
        argv: [stepDefinition(k).title(s.replica!)],
        note: `on ${s.host.destination}`,
      })),
    ),
  async apply(ctx, p) {
    const standbys = await Promise.all(
      rsyncable(p).map(async (s): Promise<JsonObject> => {
        const prior = readRecord(p, s);
        if (prior?.state !== 'synced') return { standby: s.name, ...(prior ?? {}) };
        let rec: StandbyRecord;
        try {
          for (const kind of ['replica-slot', 'replica-start', 'replica-verify']) {
            const def = stepDefinition(kind);
            // the verify writes and drops a probe table on the primary that all standbys share
            await (kind === 'replica-verify' ? oneAtATime(() => def.apply(ctx, s.replica!)) : def.apply(ctx, s.replica!));
            const v = await def.verify({ ...ctx, outputs: new Map([['verify', {}]]) }, s.replica!);
            if (!v.ok) throw new Error(`${def.title(s.replica!)}: ${v.detail}`);
          }
          rec = { state: 'rebuilt', detail: `${s.replica!.replicaDir} streams from the new primary through ${s.replica!.slot}` };
        } catch (e) {
          // the copy stays for inspection (its tablespace directories sit beside the old ones): stop it, free the slot
          for (const kind of ['replica-start', 'replica-slot'])
            await stepDefinition(kind)
              .rollback?.(ctx, s.replica!)
              .catch(() => undefined);
          rec = { state: 'failed', detail: (e as Error).message, command: `remove ${s.replica!.replicaDir} on ${s.host.destination}, then: ${commandFor(s)}` };
        }
        writeRecord(p, s, rec);
        return { standby: s.name, ...rec };
      }),
    );
    return { standbys };
  },
  async verify(_ctx, p) {
    const records = rsyncable(p).map((s) => [s, readRecord(p, s)] as const);
    const open = records.filter(([, r]) => r?.state === 'synced');
    if (open.length) return { ok: false, detail: `not started yet: ${open.map(([s]) => s.name).join(', ')}` };
    const failed = records.filter(([, r]) => r?.state === 'failed');
    return {
      ok: true,
      detail: failed.length
        ? `FAILED (the primary's upgrade stands): ${failed.map(([s, r]) => `${s.name}: ${r!.detail} — rebuild it with: ${r!.command}`).join('; ')}`
        : `${records.length} standbys stream from the new primary through new slots`,
    };
  },
  rollbackNote: () => 'not undone: past the point of no return the standbys belong to the new primary',
});

/** Where the rsync method's steps go in the upgrade: after the primary's stop, after pg_upgrade, after the new primary opens. */
export function rsyncStepsAfter(upgradeStepId: string): { id: string; kind: string }[] {
  if (upgradeStepId === 'stop-old') return [{ id: 'standbys-stop', kind: stopStandbysStep.kind }];
  if (upgradeStepId === 'pg_upgrade') return [{ id: 'standbys-rsync', kind: rsyncStandbysStep.kind }];
  if (upgradeStepId === 'open') return [{ id: 'standbys-start', kind: startStandbysStep.kind }];
  return [];
}
