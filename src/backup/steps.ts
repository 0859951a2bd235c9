/**
 * `pgscale backup`: pg_dumpall of a running cluster into DEST.partial (0700, files 0600), a
 * manifest, a decompress-and-checksum pass (and optionally a restore into a scratch cluster), and
 * only then an atomic rename to DEST. An incomplete backup never carries the final name.
 */
import { randomBytes } from 'node:crypto';
import { accessSync, constants, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, statfsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { clientInvocation, openDb, type ClusterAccess, withDb } from '../cluster/access.js';
import { withScratchCluster } from '../cluster/scratch.js';
import { PgscaleError, ExitCode } from '../errors.js';
import { formatBytes } from '../format.js';
import { currentUser, userByName } from '../osUser.js';
import { writeFileAtomic } from '../pipeline/journal.js';
import { defineOperation } from '../pipeline/plan.js';
import { check, defineStep, type CheckResult, type JsonObject, type StepContext } from '../pipeline/step.js';
import { fsyncPath, isInside, realish } from '../files.js';
import { isRoot, type Runner } from '../runner.js';
import { statements } from '../sql.js';
import { Digest, checkArchive, dumpFileName, manifestName, readManifest, sha256File, type BackupManifest } from './archive.js';
import { compressArgv, decompressArgv, type CompressionSpec } from './compression.js';

export interface BackupParams extends JsonObject {
  access: ClusterAccess;
  dest: string;
  /** The cluster's data directory and tablespaces, when local: the backup must not land inside. */
  protectedPaths: string[];
  compression: CompressionSpec;
  /** Free space needed at the destination (bytes). */
  estimateBytes: number;
  /** Restore into a scratch cluster from this bindir and compare row counts; null to skip. */
  restoreBindir: string | null;
  token: string;
}

const staging = (p: BackupParams) => `${p.dest}.partial`;
const doneMarker = 'dump.done.json';
const verifiedMarker = 'verified.json';
/** Throughput assumed for estimates until measured: pg_dumpall is the bottleneck, not the compressor. */
const assumedDumpBytesPerSecond = 80 * 1024 * 1024;
const dumpallArgs = ['--no-password'];

interface DumpDone extends JsonObject {
  startedAt: string;
  finishedAt: string;
  uncompressedBytes: number;
  uncompressedSha256: string;
  compressedBytes: number;
  serverVersion: string;
  serverVersionNum: number;
  pgDumpallVersion: string;
  databases: { name: string; bytes: number; encoding: string }[];
  rowCounts: Record<string, Record<string, number>> | null;
}


async function dumpallVersion(ctx: StepContext, access: ClusterAccess): Promise<{ version: string; major: number } | undefined> {
  const res = await ctx.runner.run(clientInvocation(access, 'pg_dumpall', ['--version']));
  const m = /(\d+)(?:\.(\d+))?/.exec(res.stdout);
  return res.exitCode === 0 && m ? { version: res.stdout.trim().replace(/^pg_dumpall \(PostgreSQL\) /, ''), major: Number(m[1]) } : undefined;
}

async function rowCounts(ctx: StepContext, access: ClusterAccess, databases: readonly string[]): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {};
  for (const name of databases) {
    if (name === 'template1') continue;
    out[name] = Object.fromEntries((await withDb(ctx, { ...access, database: name }, (db) => db.query(statements.tableRowCounts()))).map((r) => [r.table_name, Number(r.row_count)]));
  }
  return out;
}

export const dumpStep = defineStep<BackupParams>({
  kind: 'backup.dump',
  title: (p) => `Dump the cluster with pg_dumpall into ${staging(p)}`,
  async check(ctx, p) {
    const out: CheckResult[] = [];
    const dest = realish(p.dest);
    out.push(existsSync(p.dest) ? check.fail('destination absent', `${p.dest} already exists; pgscale never overwrites a backup`) : check.pass('destination absent', `${p.dest} does not exist yet`));
    out.push(existsSync(staging(p)) ? check.fail('no leftover staging directory', `${staging(p)} exists (an interrupted backup?): resume that run, or remove it`) : check.pass('no leftover staging directory', `${staging(p)} does not exist`));
    const inside = p.protectedPaths.find((d) => isInside(dest, realish(d)));
    out.push(inside ? check.fail('not inside the cluster', `${p.dest} is inside ${inside}: a backup there would be copied into itself and lost with the cluster`) : check.pass('not inside the cluster', 'outside the data directory and tablespaces'));
    const parent = dirname(dest);
    let writable = true;
    try {
      accessSync(parent, constants.W_OK | constants.X_OK);
      if (!statSync(parent).isDirectory()) throw new Error('not a directory');
    } catch (e) {
      writable = false;
      out.push(check.fail('destination writable', `cannot create ${p.dest}: ${parent} is ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'not writable'}`));
    }
    if (writable) {
      out.push(check.pass('destination writable', `${parent} is writable`));
      const fs = statfsSync(parent);
      const free = fs.bavail * fs.bsize;
      out.push(
        free >= p.estimateBytes
          ? check.pass('free space', `${formatBytes(free)} free at ${parent}; the dump needs about ${formatBytes(p.estimateBytes)}`)
          : check.fail('free space', `only ${formatBytes(free)} free at ${parent}; the dump needs about ${formatBytes(p.estimateBytes)}`),
      );
    }
    const compressor = compressArgv(p.compression);
    const cres = await ctx.runner.run({ program: compressor.program, args: ['--version'] });
    out.push(cres.exitCode === 0 ? check.pass('compressor installed', `${compressor.program} found`) : check.fail('compressor installed', `${compressor.program} is not installed`));
    try {
      const facts = await withDb(ctx, p.access, (db) => db.query(statements.serverVersionNum()));
      const serverMajor = Math.floor(facts[0]!.server_version_num / 10000);
      out.push(check.pass('server reachable', `PostgreSQL ${facts[0]!.server_version} answers`));
      const dv = await dumpallVersion(ctx, p.access);
      if (!dv) out.push(check.fail('pg_dumpall version', `no working pg_dumpall in ${p.access.bindir}`));
      else if (dv.major < serverMajor) out.push(check.fail('pg_dumpall version', `pg_dumpall ${dv.version} is older than the server (${serverMajor}); pg_dumpall must be at least the server's version`));
      else out.push(check.pass('pg_dumpall version', `pg_dumpall ${dv.version} ≥ server ${serverMajor}`));
    } catch (e) {
      out.push(check.fail('server reachable', (e as Error).message));
    }
    return out;
  },
  async plan(_ctx, p) {
    const c = compressArgv(p.compression);
    const owner = p.access.runAs ? ` (as ${p.access.runAs})` : '';
    return [
      { kind: 'file', path: staging(p), change: 'mkdir', mode: '0700' },
      { kind: 'command', argv: ['pg_dumpall', ...dumpallArgs], runAs: p.access.runAs ?? undefined, env: ['PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE'], note: `connection from the environment${owner}; output hashed (sha256) and piped to the compressor` },
      { kind: 'command', argv: [c.program, ...c.args], output: join(staging(p), dumpFileName(p.compression)), note: 'file created 0600' },
    ];
  },
  async apply(ctx, p) {
    const dir = staging(p);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, dumpFileName(p.compression));
    rmSync(join(dir, doneMarker), { force: true });
    const startedAt = new Date().toISOString();
    const [facts, databases] = await withDb(ctx, p.access, async (db) => [await db.query(statements.serverVersionNum()), await db.query(statements.databases())] as const);
    const dv = await dumpallVersion(ctx, p.access);
    const counts = p.restoreBindir ? await rowCounts(ctx, p.access, databases.map((d) => d.name)) : null;

    const dump = ctx.runner.stream(clientInvocation(p.access, 'pg_dumpall', dumpallArgs, { signal: ctx.signal, onStart: ctx.trackProcess }));
    dump.stdin.end();
    const c = compressArgv(p.compression);
    const compress = ctx.runner.stream({ program: c.program, args: c.args, signal: ctx.signal, onStart: ctx.trackProcess });
    const out = createWriteStream(file, { mode: 0o600 });
    // a failed write (ENOSPC…) is the cause when it happens: the programs then only die of broken pipes
    let writeError: Error | undefined;
    out.on('error', (e) => (writeError ??= e));
    const digest = new Digest();
    const estimate = databases.reduce((a, d) => a + Number(d.bytes), 0);
    const ticker = setInterval(() => ctx.progress.bytes(digest.bytes, estimate), 500);
    try {
      await Promise.all([pipeline(dump.stdout, digest, compress.stdin), pipeline(compress.stdout, out)]);
    } catch (e) {
      // a broken pipe means one side died: its exit status below says why
      if (ctx.signal.aborted) throw e;
    } finally {
      clearInterval(ticker);
    }
    const [dres, cres] = await Promise.all([dump.result, compress.result]);
    const failure = writeError ? `cannot write ${file}: ${writeError.message}` : dres.exitCode !== 0 ? `pg_dumpall failed: ${dres.stderr.trim() || dres.signal}` : cres.exitCode !== 0 ? `${c.program} failed: ${cres.stderr.trim() || cres.signal}` : !digest.complete() ? 'pg_dumpall output has no completion trailer' : undefined;
    if (failure) {
      // nothing half-written is kept: the staging directory goes, and the failure is "no change"
      rmSync(dir, { recursive: true, force: true });
      const full = /No space left|ENOSPC/i.test(failure);
      throw new PgscaleError(full ? `the destination filled up during the dump: ${failure}` : failure, ExitCode.FailedNoChange);
    }
    fsyncPath(file);
    const done: DumpDone = {
      startedAt,
      finishedAt: new Date().toISOString(),
      uncompressedBytes: digest.bytes,
      uncompressedSha256: digest.sha256(),
      compressedBytes: statSync(file).size,
      serverVersion: facts[0]!.server_version,
      serverVersionNum: facts[0]!.server_version_num,
      pgDumpallVersion: dv?.version ?? 'unknown',
      databases: databases.map((d) => ({ name: d.name, bytes: Number(d.bytes), encoding: d.encoding })),
      rowCounts: counts,
    };
    writeFileAtomic(join(dir, doneMarker), JSON.stringify(done, null, 2));
    return { uncompressedBytes: done.uncompressedBytes, compressedBytes: done.compressedBytes };
  },
  async verify(_ctx, p) {
    const marker = join(staging(p), doneMarker);
    if (existsSync(p.dest) && existsSync(join(p.dest, manifestName))) return { ok: true, detail: 'backup already published' };
    if (!existsSync(marker)) return { ok: false, detail: 'no completed dump in the staging directory' };
    const done = JSON.parse(readFileSync(marker, 'utf8')) as DumpDone;
    const file = join(staging(p), dumpFileName(p.compression));
    const size = existsSync(file) ? statSync(file).size : -1;
    return size === done.compressedBytes
      ? { ok: true, detail: `${formatBytes(done.uncompressedBytes)} dumped, ${formatBytes(done.compressedBytes)} compressed` }
      : { ok: false, detail: `dump file is ${size} bytes, the dump recorded ${done.compressedBytes}` };
  },
  async rollback(_ctx, p) {
    rmSync(staging(p), { recursive: true, force: true });
  },
  rollbackNote: (p) => `remove ${staging(p)}`,
  estimateSeconds: (p) => p.estimateBytes / assumedDumpBytesPerSecond,
});

export const manifestStep = defineStep<BackupParams>({
  kind: 'backup.manifest',
  title: () => 'Write the manifest (versions, databases, sizes, sha256)',
  check: async () => [],
  async plan(_ctx, p) {
    return [{ kind: 'file', path: join(staging(p), manifestName), change: 'create', mode: '0600', note: 'server and pg_dumpall versions, databases with sizes, byte counts, sha256 of the compressed and decompressed dump, start/end, options' }];
  },
  async apply(_ctx, p) {
    const dir = staging(p);
    const done = JSON.parse(readFileSync(join(dir, doneMarker), 'utf8')) as DumpDone;
    const file = dumpFileName(p.compression);
    const compressed = await sha256File(join(dir, file));
    const manifest: BackupManifest = {
      format: 'pgscale-backup/1',
      token: p.token,
      serverVersion: done.serverVersion,
      serverVersionNum: done.serverVersionNum,
      pgDumpallVersion: done.pgDumpallVersion,
      databases: done.databases,
      compression: p.compression,
      dumpFile: file,
      compressedBytes: compressed.bytes,
      compressedSha256: compressed.sha256,
      uncompressedBytes: done.uncompressedBytes,
      uncompressedSha256: done.uncompressedSha256,
      startedAt: done.startedAt,
      finishedAt: done.finishedAt,
      options: { pgDumpallArgs: dumpallArgs },
      ...(done.rowCounts ? { rowCounts: done.rowCounts } : {}),
    };
    writeFileAtomic(join(dir, manifestName), JSON.stringify(manifest, null, 2) + '\n');
    return { compressedSha256: compressed.sha256 };
  },
  async verify(_ctx, p) {
    const dir = existsSync(join(p.dest, manifestName)) ? p.dest : staging(p);
    try {
      const m = readManifest(dir);
      return m.token === p.token ? { ok: true, detail: `manifest written (sha256 ${m.compressedSha256.slice(0, 12)}…)` } : { ok: false, detail: 'the manifest belongs to another backup' };
    } catch (e) {
      return { ok: false, detail: (e as Error).message };
    }
  },
  async rollback(_ctx, p) {
    rmSync(staging(p), { recursive: true, force: true });
  },
  rollbackNote: (p) => `remove ${staging(p)}`,
});

/** Restores the dump into a scratch cluster and compares every table's row count with the source's. */
async function restoreAndCompare(ctx: StepContext, p: BackupParams, manifest: BackupManifest): Promise<string[]> {
  const owner = (p.access.runAs ? userByName(p.access.runAs) : undefined) ?? (isRoot() ? userByName('postgres') : currentUser());
  if (!owner) throw new PgscaleError('no unprivileged OS account to run the scratch cluster as (tried "postgres")', ExitCode.FailedAfterChange);
  return withScratchCluster(ctx.runner, p.restoreBindir!, `${p.dest}.restore-check`, owner, async (scratch) => {
    const file = join(staging(p), manifest.dumpFile);
    const [dec, restore] = [
      ctx.runner.stream({ ...decompressArgv(manifest.compression, file), signal: ctx.signal, onStart: ctx.trackProcess }),
      ctx.runner.stream(clientInvocation(scratch, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=0', '-d', 'postgres', '-f', '-'], { signal: ctx.signal, onStart: ctx.trackProcess })),
    ];
    dec.stdin.end();
    await Promise.all([pipeline(dec.stdout, restore.stdin), pipeline(restore.stdout, drain())]);
    const r = await restore.result;
    if (r.exitCode !== 0) return [`restore failed: ${r.stderr.trim().slice(-500)}`];
    const restored = await rowCounts(ctx, scratch, Object.keys(manifest.rowCounts ?? {}));
    const problems: string[] = [];
    for (const [db, tables] of Object.entries(manifest.rowCounts ?? {})) {
      for (const [table, n] of Object.entries(tables)) {
        const got = restored[db]?.[table];
        if (got !== n) problems.push(`${db}.${table}: ${n} rows in the source, ${got ?? 'missing'} restored`);
      }
    }
    return problems;
  });
}

function drain() {
  return async function* (source: AsyncIterable<unknown>) {
    for await (const _ of source);
  };
}

export const verifyStep = defineStep<BackupParams>({
  kind: 'backup.verify',
  title: (p) => (p.restoreBindir ? 'Verify: decompress and checksum, restore into a scratch cluster, compare row counts' : 'Verify: decompress and checksum'),
  check: async () => [],
  async plan(_ctx, p) {
    const dec = decompressArgv(p.compression, join(staging(p), dumpFileName(p.compression)));
    const actions = [{ kind: 'command' as const, argv: [dec.program, ...dec.args], note: 'sha256 and byte count compared with the manifest; completion trailer checked' }];
    if (p.restoreBindir) {
      actions.push({ kind: 'command' as const, argv: [join(p.restoreBindir, 'initdb'), '-D', `${p.dest}.restore-check/data`], note: 'scratch cluster, removed afterwards; the dump is restored with psql and every table\'s row count compared' });
    }
    return actions;
  },
  async apply(ctx, p) {
    const dir = staging(p);
    const manifest = readManifest(dir);
    ctx.progress.message('decompressing and checksumming');
    const result = await checkArchive(dir, manifest, ctx.runner, ctx.signal);
    if (!result.ok) throw new PgscaleError(`backup verification failed: ${result.problems.join('; ')}`, ExitCode.FailedAfterChange);
    let restoreProblems: string[] = [];
    if (p.restoreBindir) {
      ctx.progress.message('restoring into a scratch cluster');
      restoreProblems = await restoreAndCompare(ctx, p, manifest);
      if (restoreProblems.length) throw new PgscaleError(`restore verification failed: ${restoreProblems.slice(0, 10).join('; ')}`, ExitCode.FailedAfterChange);
    }
    const tables = Object.values(manifest.rowCounts ?? {}).reduce((a, t) => a + Object.keys(t).length, 0);
    const detail = `checksums match (${formatBytes(result.uncompressedBytes)})${p.restoreBindir ? `; restored, ${tables} tables' row counts match` : ''}`;
    writeFileAtomic(join(dir, verifiedMarker), JSON.stringify({ token: p.token, detail, at: new Date().toISOString() }));
    return { detail };
  },
  async verify(_ctx, p) {
    for (const dir of [p.dest, staging(p)]) {
      const marker = join(dir, verifiedMarker);
      if (!existsSync(marker)) continue;
      const v = JSON.parse(readFileSync(marker, 'utf8')) as { token: string; detail: string };
      if (v.token === p.token) return { ok: true, detail: v.detail };
    }
    return { ok: false, detail: 'not verified yet' };
  },
  async rollback(_ctx, p) {
    rmSync(staging(p), { recursive: true, force: true });
    rmSync(`${p.dest}.restore-check`, { recursive: true, force: true });
  },
  rollbackNote: (p) => `remove ${staging(p)}`,
  estimateSeconds: (p) => p.estimateBytes / (400 * 1024 * 1024),
});

export const publishStep = defineStep<BackupParams>({
  kind: 'backup.publish',
  title: (p) => `Publish: rename ${staging(p)} to ${p.dest}`,
  check: async () => [],
  async plan(_ctx, p) {
    return [{ kind: 'file', path: staging(p), change: 'rename', to: p.dest, note: 'atomic; only a verified backup gets its final name' }];
  },
  async apply(_ctx, p) {
    renameSync(staging(p), p.dest);
    fsyncPath(dirname(resolve(p.dest)));
    return { path: p.dest };
  },
  async verify(_ctx, p) {
    if (existsSync(staging(p))) return { ok: false, detail: `${staging(p)} still exists` };
    try {
      return readManifest(p.dest).token === p.token ? { ok: true, detail: `backup complete at ${p.dest}` } : { ok: false, detail: `${p.dest} holds another backup` };
    } catch (e) {
      return { ok: false, detail: (e as Error).message };
    }
  },
  async rollback(_ctx, p) {
    try {
      if (readManifest(p.dest).token === p.token) rmSync(p.dest, { recursive: true, force: true });
    } catch {
      /* not ours or not there: leave it */
    }
    rmSync(staging(p), { recursive: true, force: true });
  },
  rollbackNote: (p) => `remove ${p.dest} (only if its manifest carries this plan's token)`,
});

export const backupOperation = defineOperation<BackupParams>({
  name: 'backup',
  describeTarget: (p) => ({ description: `${p.access.host ?? 'localhost'}:${p.access.port ?? 5432}`, lockKey: p.protectedPaths[0] ? `cluster:${p.protectedPaths[0]}` : `server:${p.access.host ?? 'localhost'}:${p.access.port ?? 5432}` }),
  summary: (p) => `pg_dumpall backup of ${p.access.host ?? 'localhost'}:${p.access.port ?? 5432} to ${p.dest} (${p.compression.compressor} level ${p.compression.level}${p.restoreBindir ? ', restore-verified' : ''})`,
  steps: (p) => [
    { id: 'dump', kind: dumpStep.kind, params: p },
    { id: 'manifest', kind: manifestStep.kind, params: p },
    { id: 'verify', kind: verifyStep.kind, params: p },
    { id: 'publish', kind: publishStep.kind, params: p },
  ],
  async fingerprint(ctx, p) {
    return withDb(ctx, p.access, async (db) => {
      const [v] = await db.query(statements.serverVersionNum());
      const [id] = await db.query(statements.systemIdentifier());
      const dbs = await db.query(statements.databases());
      return {
        systemIdentifier: id?.system_identifier ?? null,
        serverVersion: v?.server_version ?? null,
        databases: dbs.map((d) => d.name),
        destination: p.dest,
      };
    });
  },
});

export const newBackupToken = () => randomBytes(8).toString('hex');

export async function estimateBackupBytes(runner: Runner, access: ClusterAccess): Promise<number> {
  const db = await openDb(access, runner);
  try {
    const dbs = await db.query(statements.databases());
    // a compressed text dump is far smaller than the database (no indexes, compressed); half is a safe bound
    return Math.max(16 * 1024 * 1024, Math.round(dbs.reduce((a, d) => a + Number(d.bytes), 0) * 0.5));
  } finally {
    await db.close();
  }
}

