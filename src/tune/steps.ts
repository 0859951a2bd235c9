/**
 * `pgscale tune` applied through the pipeline, and `pgscale tune --restore`: the same steps with
 * other parameters.
 *   backup   every file about to change, byte for byte, into the run's directory (state dir);
 *   write    the planned edits (refusing a file changed since the plan), and ALTER SYSTEM where
 *            postgresql.auto.conf must carry a value;
 *   validate `postgres -C NAME` for every changed setting, as the data directory's owner: the real
 *            server reads the new files (syntax, names, ranges) BEFORE any reload or restart; a
 *            rejection puts the previous files back at once;
 *   reload   pg_reload_conf(), then the reload-context settings must show;
 *   restart  only with consent (--yes or the prompt): a fast stop, then a start with the server's
 *            whole identity (options, port, sockets, listen addresses, config file) as planned;
 *   verify   pg_settings shows every value (close-enough rule), nothing is pending_restart that
 *            should not be, and the server reports no configuration file errors.
 */
import {
  chownSync,
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  rmdirSync,
  statSync,
  writeSync,
  accessSync,
  constants,
  chmodSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createTwoFilesPatch } from 'diff';
import { withDb as withAccess, type ClusterAccess } from '../cluster/access.js';
import { parseConfigText } from '../config/parse.js';
import { ExitCode, PgscaleError } from '../errors.js';
import { findSetting, loadCatalog } from '../gucCatalog/catalog.js';
import { isCloseEnough, parseSetting } from '../gucCatalog/values.js';
import { userByName } from '../osUser.js';
import { writeFileAtomic } from '../pipeline/journal.js';
import { defineOperation } from '../pipeline/plan.js';
import { check, defineStep, type CheckResult, type JsonObject, type PlannedAction, type StepContext } from '../pipeline/step.js';
import { fsyncPath } from '../files.js';
import type { Invocation, OsUser, Runner } from '../runner.js';
import { describeListening, describeStart, listeningNow, missingServerPrograms, noServerLog, PostgresServer, type ServerIdentity } from '../server/postgres.js';
import { statements, type Db } from '../sql.js';
import { SESSION_SOURCES, serverValue } from './effective.js';
import { applyEdits, sha256, textOf, type FileEdit } from './edits.js';

export type FileState = { exists: boolean; sha256: string | null; mode: number | null; uid: number | null; gid: number | null };

export type PlannedFile = {
  path: string;
  /** What the file is, for people: "postgresql.conf", "pgscale.conf", "postgresql.auto.conf". */
  role: string;
  before: FileState;
  edits: FileEdit[];
  /** After the edits; null when the server writes the file (ALTER SYSTEM). */
  after: { exists: boolean; sha256: string | null } | null;
};

/** A setting's value once the files are in place: null = no file sets it (the server's default). */
export type ExpectedSetting = { name: string; value: string | null; restart: boolean };

export interface TuneParams extends JsonObject {
  operation: 'tune' | 'tune-restore';
  dataDir: string;
  configFile: string;
  owner: string;
  /** Server programs (postgres, pg_ctl) of the cluster's major version. */
  bindir: string;
  major: number;
  access: ClusterAccess;
  /** The server ran when the plan was made: reload (and maybe restart) it. */
  running: boolean;
  files: PlannedFile[];
  /** Directories created first (owner, 0700), e.g. conf.d. */
  createDirs: string[];
  /** Directories removed when empty afterwards (a restore of a run that created them). */
  removeDirs: string[];
  /** Settings written with ALTER SYSTEM (postgresql.auto.conf) while the server runs. */
  alterSystem: { name: string; value: string }[];
  expect: ExpectedSetting[];
  /** Restart the server (consent given); otherwise restart-context settings are reported pending. */
  restart: boolean;
  /** Settings already waiting for a restart before pgscale touched anything. */
  pendingBefore: string[];
  /** Every configuration file the effective configuration was read from (fingerprinted). */
  watch: string[];
  /** The server as it ran when planned: a restart (or a rollback's start) brings it back exactly so. */
  server: ServerIdentity;
  /** --restore: the tune run whose backup is put back. */
  restoredRun: string | null;
  summary: string;
}

const { pass, fail, info } = check;

function ownerOf(p: TuneParams): OsUser {
  const u = userByName(p.owner);
  if (!u) throw new PgscaleError(`the data directory owner ${p.owner} has no entry in /etc/passwd`, ExitCode.FailedNoChange);
  return u;
}

const asOwner = (p: TuneParams, program: string, args: string[]): Invocation => ({ program: join(p.bindir, program), args, runAs: ownerOf(p), cwd: '/' });

/** postgres -C reads the same files the server would: config_file given when it is not DATADIR/postgresql.conf. */
export function postgresCArgs(p: Pick<TuneParams, 'dataDir' | 'configFile'>, name: string): string[] {
  const args = ['-D', p.dataDir];
  if (p.configFile !== join(p.dataDir, 'postgresql.conf')) args.push('-c', `config_file=${p.configFile}`);
  return [...args, '-C', name];
}

const serverOf = (runner: Runner, p: TuneParams) => new PostgresServer(p.server, runner);
const serverRunning = (runner: Runner, p: TuneParams) => serverOf(runner, p).isRunning();
/** A fast stop (no immediate one: nobody consented to crash recovery), then a start as the server ran. */
const restartServer = (ctx: StepContext, p: TuneParams) =>
  serverOf(ctx.runner, p).restart({ timeoutSeconds: 300 }, { timeoutSeconds: 300, signal: ctx.signal });

export function fileState(path: string): FileState {
  try {
    const st = statSync(path);
    return { exists: true, sha256: sha256(readFileSync(path)), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false, sha256: null, mode: null, uid: null, gid: null };
    throw e;
  }
}

const readIfExists = (path: string): Buffer | undefined => (existsSync(path) ? readFileSync(path) : undefined);

/** Written completely or not at all (temp file, fsync, rename), with the mode and owner given. */
function writeBytesAtomic(path: string, data: Buffer, mode: number, uid: number, gid: number): void {
  // a file put back may have lived in a directory a later run removed (conf.d after a --restore)
  if (!existsSync(dirname(path))) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    chownSync(dirname(path), uid, gid);
  }
  const tmp = join(dirname(path), `.${basename(path)}.pgscale-tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, mode);
  chownSync(tmp, uid, gid);
  renameSync(tmp, path);
  fsyncPath(dirname(path));
}

const withDb = <T>(ctx: StepContext, p: TuneParams, use: (db: Db) => Promise<T>): Promise<T> => withAccess(ctx, p.access, use);

// ---------------------------------------------------------------- backup

interface BackupManifest {
  files: { path: string; existed: boolean; sha256: string | null; mode: number | null; uid: number | null; gid: number | null; copy: string | null }[];
  createdDirs: string[];
}

const backupDir = (runDir: string) => join(runDir, 'backup');
const backupName = (index: number, path: string) => `${String(index).padStart(2, '0')}-${basename(path)}`;
const manifestPath = (runDir: string) => join(backupDir(runDir), 'manifest.json');

export function readBackupManifest(runDir: string): BackupManifest | undefined {
  try {
    return JSON.parse(readFileSync(manifestPath(runDir), 'utf8')) as BackupManifest;
  } catch {
    return undefined;
  }
}

/** The backup is complete and every copy still has the bytes it was taken with. */
function backupIntact(runDir: string, p: TuneParams): string | undefined {
  const m = readBackupManifest(runDir);
  if (!m) return 'no backup manifest';
  for (const f of p.files) {
    const entry = m.files.find((e) => e.path === f.path);
    if (!entry) return `${f.path} is not in the backup`;
    if (entry.copy && sha256(readFileSync(join(backupDir(runDir), entry.copy))) !== entry.sha256) return `the backup of ${f.path} is damaged`;
  }
  return undefined;
}

/** Puts every file of a run's backup back, byte for byte, with its mode and owner; removes files and directories the run created. */
export function restoreBackup(runDir: string): string[] {
  const m = readBackupManifest(runDir);
  if (!m) throw new PgscaleError(`no backup manifest in ${backupDir(runDir)}`, ExitCode.FailedAfterChange);
  const restored: string[] = [];
  for (const f of m.files) {
    if (f.existed && f.copy) {
      const data = readFileSync(join(backupDir(runDir), f.copy));
      if (sha256(data) !== f.sha256) throw new PgscaleError(`the backup of ${f.path} is damaged (sha256 differs)`, ExitCode.FailedAfterChange);
      const now = readIfExists(f.path);
      if (!now || sha256(now) !== f.sha256) writeBytesAtomic(f.path, data, f.mode ?? 0o600, f.uid ?? 0, f.gid ?? 0);
      restored.push(f.path);
    } else if (!f.existed && existsSync(f.path)) {
      rmSync(f.path, { force: true });
      restored.push(f.path);
    }
  }
  for (const d of [...m.createdDirs].reverse()) {
    try {
      if (readdirSync(d).length === 0) rmdirSync(d);
    } catch {
      /* gone already, or someone put files there: keep it */
    }
  }
  return restored;
}

export const backupStep = defineStep<TuneParams>({
  kind: 'tune.backup',
  title: (p) => `Back up ${p.files.map((f) => f.role).join(', ')} into the run directory`,
  async check(_ctx, p) {
    const out: CheckResult[] = [];
    for (const f of p.files) {
      if (!f.before.exists) continue;
      try {
        accessSync(f.path, constants.R_OK);
        out.push(pass(`readable: ${f.role}`, `${f.path} can be backed up`));
      } catch (e) {
        out.push(fail(`readable: ${f.role}`, `cannot read ${f.path}: ${(e as NodeJS.ErrnoException).code}`));
      }
    }
    return out;
  },
  async plan(ctx, p) {
    return p.files.map((f, i): PlannedAction =>
      f.before.exists
        ? {
            kind: 'file',
            path: join(ctx.runDir, 'runs', 'RUN', 'backup', backupName(i, f.path)),
            change: 'create',
            mode: '0600',
            note: `byte-for-byte copy of ${f.path} (sha256 ${f.before.sha256?.slice(0, 12)}…) in the run's own directory (RUN: its id) under the state directory`,
          }
        : { kind: 'file', path: f.path, change: 'create', note: 'does not exist yet: the backup records that, so a restore removes it' },
    );
  },
  async apply(ctx, p) {
    const dir = backupDir(ctx.runDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const manifest: BackupManifest = { files: [], createdDirs: p.createDirs.filter((d) => !existsSync(d)) };
    p.files.forEach((f, i) => {
      const data = readIfExists(f.path);
      const st = data ? statSync(f.path) : undefined;
      const copy = data ? backupName(i, f.path) : null;
      if (data && copy) writeBytesAtomic(join(dir, copy), data, 0o600, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
      manifest.files.push({
        path: f.path,
        existed: Boolean(data),
        sha256: data ? sha256(data) : null,
        mode: st ? st.mode & 0o7777 : null,
        uid: st?.uid ?? null,
        gid: st?.gid ?? null,
        copy,
      });
    });
    writeFileAtomic(manifestPath(ctx.runDir), JSON.stringify(manifest, null, 2) + '\n');
    return { backupDir: dir, files: manifest.files.filter((f) => f.existed).length };
  },
  async verify(ctx, p) {
    const problem = backupIntact(ctx.runDir, p);
    return problem
      ? { ok: false, detail: problem }
      : { ok: true, detail: `${p.files.filter((f) => f.before.exists).length} file(s) backed up in ${backupDir(ctx.runDir)}` };
  },
  rollbackNote: () => 'nothing: the backup stays in the run directory',
});

// ---------------------------------------------------------------- write

function writableDir(dir: string): string | undefined {
  let d = dir;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  try {
    accessSync(d, constants.W_OK | constants.X_OK);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'EROFS' ? `${d} is on a read-only filesystem` : `${d} is not writable (${code})`;
  }
}

function newContent(f: PlannedFile): Buffer | null {
  return applyEdits(f.path, readIfExists(f.path), f.edits, (from) => readFileSync(from));
}

/** The unified diff a file's edits make, for the plan. */
function fileDiff(f: PlannedFile): string | undefined {
  if (!f.after) return undefined;
  const before = readIfExists(f.path);
  let after: Buffer | null;
  try {
    after = newContent(f);
  } catch {
    return undefined;
  }
  return createTwoFilesPatch(f.path, f.path, textOf(before), textOf(after), undefined, undefined, { context: 3 })
    .split('\n')
    .filter((l) => !l.startsWith('Index:') && !/^=+$/.test(l))
    .join('\n');
}

async function autoConfValues(p: TuneParams): Promise<Map<string, string>> {
  const text = readIfExists(join(p.dataDir, 'postgresql.auto.conf'));
  return new Map(text ? parseConfigText(text.toString('latin1'), 'postgresql.auto.conf').map((l) => [l.name, l.value]) : []);
}

export const writeStep = defineStep<TuneParams>({
  kind: 'tune.write',
  title: (p) =>
    p.operation === 'tune-restore'
      ? `Put back the files of run ${p.restoredRun}: ${p.files.map((f) => f.role).join(', ')}`
      : `Write ${[...p.files.filter((f) => f.after).map((f) => f.role), ...(p.alterSystem.length ? [`ALTER SYSTEM (${p.alterSystem.length})`] : [])].join(', ')}`,
  async check(ctx, p) {
    const out: CheckResult[] = [];
    for (const f of p.files.filter((x) => x.after)) {
      const now = fileState(f.path);
      if (now.sha256 !== f.before.sha256) {
        out.push(fail(`unchanged since planned: ${f.role}`, `${f.path} changed since the plan was made`));
        continue;
      }
      const problem = writableDir(dirname(f.path)) ?? (now.exists ? writableFile(f.path) : undefined);
      out.push(problem ? fail(`writable: ${f.role}`, `cannot write ${f.path}: ${problem}`) : pass(`writable: ${f.role}`, `${f.path} can be written`));
    }
    for (const d of p.createDirs) {
      const problem = writableDir(d);
      if (problem) out.push(fail('writable: configuration directory', `cannot create ${d}: ${problem}`));
    }
    if (p.alterSystem.length) {
      try {
        const [r] = await withDb(ctx, p, (db) => db.query(statements.alterSystemAllowed()));
        out.push(
          r?.superuser && r.allowed
            ? pass('ALTER SYSTEM allowed', `${p.alterSystem.length} setting(s) go to postgresql.auto.conf`)
            : fail('ALTER SYSTEM allowed', r?.superuser ? 'allow_alter_system is off' : 'the connection is not a superuser'),
        );
      } catch (e) {
        out.push(fail('ALTER SYSTEM allowed', (e as Error).message));
      }
    }
    return out;
  },
  async plan(_ctx, p) {
    const actions: PlannedAction[] = p.createDirs
      .filter((d) => !existsSync(d))
      .map((d) => ({ kind: 'file', path: d, change: 'mkdir', mode: '0700', note: `owned by ${p.owner}` }));
    for (const f of p.files) {
      if (!f.after) continue;
      const change = !f.after.exists ? 'delete' : f.before.exists ? 'modify' : 'create';
      const note = f.edits.some((e) => e.kind === 'restore') ? 'restored byte for byte from the backup' : undefined;
      const diff = change === 'delete' ? undefined : fileDiff(f);
      actions.push({
        kind: 'file',
        path: f.path,
        change,
        ...(f.before.mode !== null ? { mode: f.before.mode.toString(8).padStart(4, '0') } : { mode: '0600' }),
        ...(diff ? { diff } : {}),
        ...(note ? { note } : {}),
      });
    }
    for (const a of p.alterSystem)
      actions.push({
        kind: 'sql',
        target: `${p.access.host}:${p.access.port}`,
        sql: statements.alterSystemSet(a.name, a.value).text,
        note: 'postgresql.auto.conf is read after every other file',
      });
    for (const d of p.removeDirs) actions.push({ kind: 'file', path: d, change: 'delete', note: 'only if empty' });
    return actions;
  },
  async apply(ctx, p) {
    const owner = ownerOf(p);
    for (const d of p.createDirs) {
      if (existsSync(d)) continue;
      mkdirSync(d, { recursive: true, mode: 0o700 });
      chownSync(d, owner.uid, owner.gid);
    }
    const written: string[] = [];
    for (const f of p.files) {
      if (!f.after) continue;
      const cur = readIfExists(f.path);
      const curSha = cur ? sha256(cur) : null;
      if (curSha === f.after.sha256) continue;
      if (curSha !== f.before.sha256) throw new PgscaleError(`${f.path} changed since the plan was made; nothing more was written`, ExitCode.FailedAfterChange);
      const next = newContent(f);
      const nextSha = next ? sha256(next) : null;
      if (nextSha !== f.after.sha256) throw new Error(`edits of ${f.path} gave other bytes than planned`);
      if (next === null) rmSync(f.path, { force: true });
      else writeBytesAtomic(f.path, next, f.before.mode ?? 0o600, f.before.uid ?? owner.uid, f.before.gid ?? owner.gid);
      written.push(f.path);
    }
    if (p.alterSystem.length) {
      await withDb(ctx, p, async (db) => {
        for (const a of p.alterSystem) await db.query(statements.alterSystemSet(a.name, a.value));
      });
    }
    for (const d of p.removeDirs) {
      try {
        if (readdirSync(d).length === 0) rmdirSync(d);
      } catch {
        /* gone or not empty: keep */
      }
    }
    return { written, alterSystem: p.alterSystem.map((a) => a.name) };
  },
  async verify(_ctx, p) {
    for (const f of p.files) {
      if (!f.after) continue;
      const now = fileState(f.path);
      if (now.sha256 !== f.after.sha256) return { ok: false, detail: `${f.path} is not as planned yet` };
    }
    const auto = await autoConfValues(p);
    const missing = p.alterSystem.filter((a) => auto.get(a.name) !== a.value);
    if (missing.length) return { ok: false, detail: `postgresql.auto.conf lacks ${missing.map((a) => `${a.name} = '${a.value}'`).join(', ')}` };
    const n = p.files.filter((f) => f.after).length;
    return { ok: true, detail: `${n} file(s) written${p.alterSystem.length ? `, ${p.alterSystem.length} setting(s) through ALTER SYSTEM` : ''}` };
  },
  async rollback(ctx, p) {
    const restored = restoreBackup(ctx.runDir);
    if (!p.running) return;
    if (!(await serverRunning(ctx.runner, p))) {
      await serverOf(ctx.runner, p).start({ timeoutSeconds: 300, signal: ctx.signal });
      return;
    }
    await withDb(ctx, p, (db) => db.query(statements.reloadConf()));
    // a restart this run made is undone by another: settings that only a restart changes go back too
    const restarted = ctx.outputs.get('restart')?.restarted === true;
    if (restarted && restored.length) {
      const pending = await pendingRestart(ctx, p);
      if (pending.length) await restartServer(ctx, p);
    }
  },
  rollbackNote: (p) => `put every file back from the backup byte for byte${p.running ? ', reload (and restart if this run restarted)' : ''}`,
});

function writableFile(path: string): string | undefined {
  try {
    accessSync(path, constants.W_OK);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'EROFS' ? 'read-only filesystem' : `not writable (${code})`;
  }
}

// ---------------------------------------------------------------- validate

/** The names postgres -C is asked about: every expected setting, or one harmless name to check the files parse. */
const validatedNames = (p: TuneParams) => (p.expect.length ? p.expect.map((e) => e.name) : ['data_directory']);

/** What the real server makes of the files as they are now: problems, none when it accepts them. */
async function serverReadsFiles(ctx: StepContext, p: TuneParams): Promise<string[]> {
  const catalog = loadCatalog(p.major);
  const problems: string[] = [];
  for (const name of validatedNames(p)) {
    const inv = asOwner(p, 'postgres', postgresCArgs(p, name));
    const res = await ctx.runner.run({ ...inv, signal: ctx.signal });
    if (res.exitCode !== 0) {
      problems.push(`postgres -C ${name}: ${res.stderr.trim().split('\n').slice(-3).join(' ') || `exit code ${res.exitCode}`}`);
      // a file the server cannot read fails every name alike: once is enough
      if (/syntax error|could not open|nesting depth/i.test(res.stderr)) break;
      continue;
    }
    const expected = p.expect.find((e) => e.name === name);
    const def = findSetting(catalog, name);
    if (!expected || expected.value === null || !def) continue;
    try {
      const got = parseSetting(def, res.stdout.trim());
      const want = parseSetting(def, expected.value);
      if (!isCloseEnough(got, want)) problems.push(`${name}: the server reads ${res.stdout.trim()} (in ${def.unit ?? 'its unit'}), not ${expected.value}`);
    } catch (e) {
      problems.push(`${name}: ${(e as Error).message}`);
    }
  }
  return problems;
}

export const validateStep = defineStep<TuneParams>({
  kind: 'tune.validate',
  title: () => 'Validate with the real server (postgres -C) before any reload or restart',
  async check(_ctx, p) {
    const missing = missingServerPrograms(p.bindir);
    return [
      missing.length
        ? fail('server programs', `${missing.join(', ')} missing from ${p.bindir}: pass --bindir`)
        : pass('server programs', `postgres and pg_ctl of ${p.major} in ${p.bindir}`),
    ];
  },
  async plan(_ctx, p) {
    return validatedNames(p).map((name): PlannedAction => ({
      kind: 'command',
      argv: [join(p.bindir, 'postgres'), ...postgresCArgs(p, name)],
      runAs: p.owner,
      note: name === validatedNames(p)[0] ? 'reads every configuration file as the server would; a rejection puts the previous files back' : undefined,
    }));
  },
  async apply(ctx, p) {
    const problems = await serverReadsFiles(ctx, p);
    if (problems.length) {
      if (!writesNothing(p)) restoreBackup(ctx.runDir);
      throw new PgscaleError(
        `the server rejects ${writesNothing(p) ? 'its configuration files, so it is not restarted' : 'the new configuration, so the previous files were put back (nothing was reloaded)'}:\n${problems.map((x) => `  - ${x}`).join('\n')}`,
        ExitCode.FailedAfterChange,
        'close the run with `pgscale rollback` and report the problem',
      );
    }
    return { validated: validatedNames(p).length };
  },
  async verify(ctx, p) {
    const problems = await serverReadsFiles(ctx, p);
    return problems.length ? { ok: false, detail: problems.join('; ') } : { ok: true, detail: `postgres -C reads ${p.expect.length} setting(s) as planned` };
  },
  rollbackNote: () => 'nothing (the write step puts the files back)',
});

// ---------------------------------------------------------------- reload, restart, verify

interface LiveSetting {
  value: string;
  pending: boolean;
  source: string;
}

async function liveSettings(ctx: StepContext, p: TuneParams): Promise<Map<string, LiveSetting>> {
  const catalog = loadCatalog(p.major);
  const rows = await withDb(ctx, p, (db) => db.query(statements.allSettings()));
  return new Map(
    rows.map((r) => [r.name.toLowerCase(), { value: serverValue(findSetting(catalog, r.name), r).text, pending: r.pending_restart, source: r.source }]),
  );
}

async function pendingRestart(ctx: StepContext, p: TuneParams): Promise<string[]> {
  return [...(await liveSettings(ctx, p))].filter(([, s]) => s.pending).map(([n]) => n);
}

/** Expected settings the server does not show yet (close-enough rule); defaults (null) only for pending state. */
function mismatches(p: TuneParams, live: Map<string, LiveSetting>, which: (e: ExpectedSetting) => boolean): string[] {
  const catalog = loadCatalog(p.major);
  const out: string[] = [];
  for (const e of p.expect.filter(which)) {
    const s = live.get(e.name);
    const def = findSetting(catalog, e.name);
    if (!s || !def || e.value === null) continue;
    if (SESSION_SOURCES.has(s.source)) continue; // an ALTER ROLE/DATABASE value hides the server's from this session
    try {
      if (!isCloseEnough(parseSetting(def, s.value), parseSetting(def, e.value))) out.push(`${e.name} is ${s.value}, expected ${e.value}`);
    } catch {
      out.push(`${e.name} is ${s.value}, expected ${e.value}`);
    }
  }
  return out;
}

async function poll<T>(attempt: () => Promise<T>, done: (t: T) => boolean, ms = 10_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const t = await attempt();
    if (done(t) || Date.now() > until) return t;
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function fileErrors(ctx: StepContext, p: TuneParams): Promise<string[]> {
  const rows = await withDb(ctx, p, (db) => db.query(statements.configFileErrors()));
  // a restart-context value waiting for a restart shows up here too ("setting could not be applied", or
  // "cannot be changed without restarting" once its line is gone): pending_restart covers those
  return rows
    .filter((r) => r.error !== 'setting could not be applied' && !/cannot be changed without restarting the server/.test(r.error))
    .map((r) => `${r.sourcefile ?? '?'}:${r.sourceline ?? '?'}${r.name ? ` ${r.name}` : ''}: ${r.error}`);
}

export const reloadStep = defineStep<TuneParams>({
  kind: 'tune.reload',
  title: () => 'Reload the configuration (pg_reload_conf())',
  check: async () => [],
  async plan(_ctx, p) {
    return [
      {
        kind: 'sql',
        target: `${p.access.host}:${p.access.port}`,
        sql: statements.reloadConf().text,
        note: `then pg_settings must show the ${p.expect.filter((e) => !e.restart).length} reload-context setting(s)`,
      },
    ];
  },
  async apply(ctx, p) {
    await withDb(ctx, p, (db) => db.query(statements.reloadConf()));
    await poll(
      async () => mismatches(p, await liveSettings(ctx, p), (e) => !e.restart),
      (m) => m.length === 0,
    );
    return { reloaded: true };
  },
  async verify(ctx, p) {
    const errors = await fileErrors(ctx, p);
    if (errors.length) return { ok: false, detail: `the server reports configuration file errors: ${errors.join('; ')}` };
    const wrong = mismatches(p, await liveSettings(ctx, p), (e) => !e.restart);
    return wrong.length ? { ok: false, detail: wrong.join('; ') } : { ok: true, detail: `${p.expect.filter((e) => !e.restart).length} setting(s) in effect` };
  },
  rollbackNote: () => 'nothing (the write step puts the files back and reloads)',
});

export const restartStep = defineStep<TuneParams>({
  kind: 'tune.restart',
  title: (p) =>
    `Restart the server (fast stop, then start as it ran) for ${p.expect
      .filter((e) => e.restart)
      .map((e) => e.name)
      .join(', ')}`,
  downtime: true,
  async check(_ctx, p) {
    return [
      p.server.log
        ? info(
            'restart consented',
            `restart-context settings: ${p.expect
              .filter((e) => e.restart)
              .map((e) => e.name)
              .join(', ')}; the server log goes to ${p.server.log}`,
          )
        : fail('server log', noServerLog(p.server)),
      info('started as it runs', describeStart(p.server)),
    ];
  },
  async plan(ctx, p) {
    const server = serverOf(ctx.runner, p);
    const stop = server.stopInvocation('fast', 300);
    const start = server.startInvocation({ timeoutSeconds: 300 });
    return [
      { kind: 'service', action: 'restart', target: p.dataDir, note: 'sessions are disconnected; the configuration was validated first' },
      { kind: 'command', argv: [stop.program, ...stop.args], runAs: p.owner },
      { kind: 'command', argv: [start.program, ...start.args], runAs: p.owner, note: `back where clients found it: ${describeListening(p.server)}` },
    ];
  },
  async apply(ctx, p) {
    await restartServer(ctx, p);
    return { restarted: true };
  },
  async verify(ctx, p) {
    if (!(await serverRunning(ctx.runner, p))) return { ok: false, detail: 'the server is not running' };
    const wrong = mismatches(
      p,
      await poll(
        () => liveSettings(ctx, p),
        () => true,
      ),
      (e) => e.restart,
    );
    return wrong.length
      ? { ok: false, detail: wrong.join('; ') }
      : { ok: true, detail: `running with the ${p.expect.filter((e) => e.restart).length} restart-context setting(s)` };
  },
  estimateSeconds: () => 5,
  rollbackNote: () => 'nothing (the write step puts the files back and restarts again)',
});

async function verifySettings(ctx: StepContext, p: TuneParams): Promise<{ ok: boolean; detail: string }> {
  if (!p.running) {
    return (await serverRunning(ctx.runner, p))
      ? { ok: false, detail: 'the server was started meanwhile: run pgscale tune again to check it' }
      : { ok: true, detail: 'server stopped: the settings take effect when it starts' };
  }
  const live = await liveSettings(ctx, p);
  const errors = await fileErrors(ctx, p);
  if (errors.length) return { ok: false, detail: `the server reports configuration file errors: ${errors.join('; ')}` };
  const wrong = mismatches(p, live, (e) => !e.restart || p.restart);
  if (wrong.length) return { ok: false, detail: wrong.join('; ') };
  // restart-context changes that were not restarted are either in effect already or pending a restart
  const waiting = p.restart ? [] : p.expect.filter((e) => e.restart && mismatches(p, live, (x) => x.name === e.name).length > 0);
  const notPending = waiting.filter((e) => !live.get(e.name)?.pending);
  if (notPending.length) return { ok: false, detail: `neither in effect nor pending a restart: ${notPending.map((e) => e.name).join(', ')}` };
  // and nothing else may wait for a restart, unless it already did before pgscale touched anything
  const allowed = new Set([...(p.restart ? [] : p.expect.filter((e) => e.restart).map((e) => e.name)), ...p.pendingBefore]);
  const unexpected = [...live].filter(([n, s]) => s.pending && !allowed.has(n)).map(([n]) => n);
  if (unexpected.length) return { ok: false, detail: `unexpectedly pending a restart: ${unexpected.join(', ')}` };
  const note = waiting.length ? `; waiting for a restart: ${waiting.map((e) => e.name).join(', ')}` : '';
  return { ok: true, detail: `pg_settings shows ${p.expect.length - waiting.length} setting(s) in effect${note}` };
}

async function restartPendingNames(ctx: StepContext, p: TuneParams): Promise<string[]> {
  if (!p.running || p.restart) return [];
  const live = await liveSettings(ctx, p);
  return p.expect.filter((e) => e.restart && live.get(e.name)?.pending).map((e) => e.name);
}

export const verifyStep = defineStep<TuneParams>({
  kind: 'tune.verify',
  title: () => 'Verify pg_settings: every value in effect, or pending a restart only where none was consented',
  check: async () => [],
  async plan(ctx, p) {
    const status = serverOf(ctx.runner, p).statusInvocation();
    if (!p.running)
      return [
        {
          kind: 'command',
          argv: [status.program, ...status.args],
          runAs: p.owner,
          note: 'the server is stopped: the new values take effect when it starts (validated with postgres -C)',
        },
      ];
    return [
      {
        kind: 'sql',
        target: `${p.access.host}:${p.access.port}`,
        sql: statements.allSettings().text,
        note: 'values compared with the close-enough rule; pending_restart only where a restart was not consented',
      },
    ];
  },
  async apply(ctx, p) {
    const v = await verifySettings(ctx, p);
    if (!v.ok) throw new PgscaleError(`verification failed: ${v.detail}`, ExitCode.FailedAfterChange);
    return { restartPending: await restartPendingNames(ctx, p) };
  },
  verify: verifySettings,
  rollbackNote: () => 'nothing',
});

/** Nothing to write: a run that only completes a restart an earlier run left pending. */
const writesNothing = (p: TuneParams) => p.files.length === 0 && p.alterSystem.length === 0 && p.createDirs.length === 0 && p.removeDirs.length === 0;

function tuneSteps(p: TuneParams) {
  const steps = writesNothing(p)
    ? []
    : [
        { id: 'backup', kind: backupStep.kind, params: p },
        { id: 'write', kind: writeStep.kind, params: p },
      ];
  steps.push({ id: 'validate', kind: validateStep.kind, params: p });
  if (p.running && !writesNothing(p)) steps.push({ id: 'reload', kind: reloadStep.kind, params: p });
  if (p.running && p.restart) steps.push({ id: 'restart', kind: restartStep.kind, params: p });
  steps.push({ id: 'verify', kind: verifyStep.kind, params: p });
  return steps;
}

async function fingerprint(ctx: StepContext, p: TuneParams) {
  const files = Object.fromEntries([...new Set([...p.watch, ...p.files.map((f) => f.path)])].sort().map((path) => [path, fileState(path).sha256]));
  return { dataDir: p.dataDir, running: await serverRunning(ctx.runner, p), listening: listeningNow(p.dataDir), files };
}

const describeTarget = (p: TuneParams) => ({ description: `${p.dataDir} (PostgreSQL ${p.major})`, lockKey: `cluster:${p.dataDir}` });

/** Tuning and restoring run the same steps; only the operation's name (and so its runs) differ. */
const tuneLikeOperation = (name: string) =>
  defineOperation<TuneParams>({ name, describeTarget, serverAccess: (p) => p.access, summary: (p) => p.summary, steps: tuneSteps, fingerprint });

export const tuneOperation = tuneLikeOperation('tune');
export const tuneRestoreOperation = tuneLikeOperation('tune-restore');
