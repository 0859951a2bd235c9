/**
 * `pgscale backup`: pg_dumpall of a running cluster into DEST.partial (0700, files 0600), a
 * manifest, a decompress-and-checksum pass (and optionally a restore into a scratch cluster), and
 * only then an atomic rename to DEST. An incomplete backup never carries the final name.
 */
import { randomBytes } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import {
  accessSync,
  constants,
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  statfsSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { clientInvocation, openDb, osUserOf, type ClusterAccess, withDb } from '../cluster/access.js';
import { withScratchCluster } from '../cluster/scratch.js';
import { PgscaleError, ExitCode } from '../errors.js';
import { formatBytes } from '../format.js';
import { currentUser, userByName } from '../osUser.js';
import { writeFileAtomic } from '../pipeline/journal.js';
import { defineOperation } from '../pipeline/plan.js';
import { displayArgv } from '../pipeline/render.js';
import { check, defineStep, type CheckResult, type JsonObject, type PlannedAction, type StepContext } from '../pipeline/step.js';
import { existingAncestor, fsyncPath, isInside, realish, treeBytes } from '../files.js';
import { describeFailure, isRoot, type Runner } from '../runner.js';
import { statements, type HbaRuleRow } from '../sql.js';
import {
  Digest,
  checkArchive,
  databaseDumpDir,
  describeSize,
  heldSize,
  fileEntries,
  filesUnder,
  manifestName,
  physicalDir,
  readManifest,
  sha256File,
  type BackupManifest,
  type BackupMethod,
  type BackupSize,
  type ClusterShape,
  type DatabaseEntry,
} from './archive.js';
import { compressArgv, compressedSuffix, decompressArgv, type CompressionSpec } from './compression.js';
import {
  baseBackupCompression,
  baseBackupInvocation,
  clientVersion,
  exactPattern,
  jobShares,
  lendTo,
  pgDumpCompression,
  pgDumpInvocation,
  programRuns,
  runWeighted,
  type ProgramRun,
  takeBack,
} from './methods.js';

interface BackupCore extends JsonObject {
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

/** Method and jobs are optional: plans made before methods existed, and the upgrade's own backup, mean dumpall. */
export type BackupParams = BackupCore & {
  /** dumpall when absent (plans made before methods existed, and the upgrade's own backup). */
  method?: BackupMethod;
  /** Job budget of the parallel and physical methods (1 when absent). */
  jobs?: number;
  /** Databases left out on purpose, by exact name (none when absent). */
  excludeDatabases?: string[];
  /** A bindir with pg_verifybackup 18+ (physical backups are tar-format); null if none is installed. */
  verifyBindir?: string | null;
};

const methodOf = (p: BackupParams): BackupMethod => p.method ?? 'dumpall';
const excluded = (p: BackupParams): string[] => p.excludeDatabases ?? [];
const staging = (p: BackupParams) => `${p.dest}.partial`;
const doneMarker = 'dump.done.json';
const verifiedMarker = 'verified.json';
/** The pg_dumpall stream's file: the whole cluster (dumpall), the globals (parallel), none (physical). */
export function streamFileName(method: BackupMethod, c: CompressionSpec): string | null {
  if (method === 'physical') return null;
  return `${method === 'dumpall' ? 'dumpall' : 'globals'}.sql${compressedSuffix[c.compressor]}`;
}
const databaseDone = (index: number) => `${databaseDumpDir(index)}.done`;

/**
 * Rates assumed for estimates, in bytes of database per second on one core: pg_dumpall is one
 * stream; pg_dump -j and pg_basebackup scale with jobs up to the disk (bench/backup measures them).
 */
export const assumedRates: Record<BackupMethod, { backupPerJob: number; backupCap: number; restorePerJob: number; restoreCap: number; parallel: boolean }> = {
  dumpall: { backupPerJob: 80e6, backupCap: 80e6, restorePerJob: 25e6, restoreCap: 25e6, parallel: false },
  parallel: { backupPerJob: 60e6, backupCap: 400e6, restorePerJob: 30e6, restoreCap: 200e6, parallel: true },
  physical: { backupPerJob: 250e6, backupCap: 250e6, restorePerJob: 300e6, restoreCap: 300e6, parallel: false },
};

interface DumpDone extends JsonObject {
  method: BackupMethod;
  startedAt: string;
  finishedAt: string;
  /** The pg_dumpall stream, when the method has one. */
  stream: { uncompressedBytes: number; uncompressedSha256: string; compressedBytes: number } | null;
  serverVersion: string;
  serverVersionNum: number;
  pgDumpallVersion: string;
  programs: ProgramRun[];
  databases: DatabaseEntry[];
  shape: ClusterShape;
  rowCounts: Record<string, Record<string, number>>;
}

async function rowCounts(ctx: StepContext, access: ClusterAccess, databases: readonly string[]): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {};
  for (const name of databases) {
    if (name === 'template1') continue;
    out[name] = Object.fromEntries(
      (await withDb(ctx, { ...access, database: name }, (db) => db.query(statements.tableRowCounts()))).map((r) => [r.table_name, Number(r.row_count)]),
    );
  }
  return out;
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/**
 * Logical methods connect to every database: one that refuses connections would be left out
 * without a word (pg_dumpall skips it), so it must be allowed or excluded by name. A physical
 * backup copies every database whatever its flags.
 */
export function judgeDatabases(
  method: BackupMethod,
  databases: readonly { name: string; allow_connections: boolean }[],
  /** undefined: this backup cannot leave databases out (one taken by an upgrade, which needs them all) */
  excludable: readonly string[] | undefined,
): CheckResult[] {
  const exclude = excludable ?? [];
  const out: CheckResult[] = [];
  const unknown = exclude.filter((n) => !databases.some((d) => d.name === n));
  if (unknown.length)
    out.push(
      check.fail(
        'excluded databases exist',
        `--exclude-database names no database of the cluster: ${unknown.map((n) => JSON.stringify(n)).join(', ')}`,
        'name each excluded database exactly as pg_database spells it',
      ),
    );
  if (method === 'physical') {
    out.push(check.pass('every database backed up', `a physical backup copies all ${databases.length} databases`));
    return out;
  }
  const refusing = databases.filter((d) => !d.allow_connections && !exclude.includes(d.name));
  if (refusing.length) {
    const names = refusing.map((d) => d.name);
    out.push(
      check.fail(
        'every database backed up',
        `${names.map((n) => JSON.stringify(n)).join(', ')} ${names.length === 1 ? 'refuses' : 'refuse'} connections (datallowconn = false): a logical backup cannot dump ${names.length === 1 ? 'it' : 'them'}, and pg_dumpall would leave ${names.length === 1 ? 'it' : 'them'} out without a word`,
        `allow connections (${names.map((n) => `ALTER DATABASE ${quoteIdent(n)} ALLOW_CONNECTIONS true`).join('; ')})${excludable ? `, or leave ${names.length === 1 ? 'it' : 'them'} out by name: ${displayArgv(names.flatMap((n) => ['--exclude-database', n]))}` : ''}`,
      ),
    );
  } else {
    const left = exclude.length ? `; left out by name: ${exclude.map((n) => JSON.stringify(n)).join(', ')}` : '';
    out.push(check.pass('every database backed up', `${databases.length - exclude.length} databases will be dumped${left}`));
  }
  return out;
}

/** What a base backup needs of the server, as gathered over pgscale's own connection. */
export interface BaseBackupFacts {
  maxWalSenders: number;
  sendersInUse: number;
  role: string;
  superuser: boolean;
  replication: boolean;
  /** The address the server sees pgscale connect from; null: the Unix socket. */
  clientAddress: string | null;
  /** pg_hba_file_rules in file order; null where the role may not read it (superusers only). */
  hbaRules: HbaRuleRow[] | null;
}

/** pg_basebackup -X stream holds two walsenders: one sends the files, one streams the WAL. */
export const baseBackupSenders = 2;

type HbaMatch = 'yes' | 'no' | 'maybe';

/** Whether a pg_hba rule applies to a replication connection of `role` from `address` (null: the socket). */
export function hbaRuleApplies(r: HbaRuleRow, role: string, address: string | null): HbaMatch {
  if (r.error || !r.type) return 'no';
  // only the keyword replication matches a replication connection ("all" does not)
  if (!r.database?.includes('replication')) return 'no';
  const users = r.user_name ?? [];
  const user: HbaMatch = users.includes('all') || users.includes(role) ? 'yes' : users.some((u) => u.startsWith('+') || u.startsWith('/')) ? 'maybe' : 'no';
  if (user === 'no') return 'no';
  if (address === null) return r.type === 'local' ? user : 'no';
  if (!r.type.startsWith('host')) return 'no';
  // hostssl, hostgssenc and their negations depend on the connection's encryption, not known here
  const type: HbaMatch = r.type === 'host' ? 'yes' : 'maybe';
  const addr = hbaAddressMatches(r, address);
  if (addr === 'no') return 'no';
  return [user, type, addr].includes('maybe') ? 'maybe' : 'yes';
}

function hbaAddressMatches(r: HbaRuleRow, address: string): HbaMatch {
  if (r.address === 'all') return 'yes';
  const family = isIP(address);
  if (!r.address || !isIP(r.address) || !r.netmask || !family) return 'maybe';
  if (isIP(r.address) !== family) return 'no';
  const block = new BlockList();
  const prefix = netmaskBits(r.netmask);
  if (prefix === undefined) return 'maybe';
  block.addSubnet(r.address, prefix, family === 4 ? 'ipv4' : 'ipv6');
  return block.check(address, family === 4 ? 'ipv4' : 'ipv6') ? 'yes' : 'no';
}

/** A netmask's prefix length (255.255.255.0 → 24, ffff:ffff:: → 32); undefined if it is not one. */
export function netmaskBits(mask: string): number | undefined {
  const bytes = isIP(mask) === 4 ? mask.split('.').map(Number) : isIP(mask) === 6 ? expandIPv6(mask).flatMap((g) => [g >> 8, g & 0xff]) : undefined;
  if (!bytes) return undefined;
  const bits = bytes.map((b) => b.toString(2).padStart(8, '0')).join('');
  return /^1*0*$/.test(bits) ? (bits.indexOf('0') === -1 ? bits.length : bits.indexOf('0')) : undefined;
}

function expandIPv6(a: string): number[] {
  const [head, tail] = a.split('::') as [string, string | undefined];
  const part = (s: string | undefined) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = part(head);
  const t = part(tail);
  return [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
}

/**
 * A physical backup's preconditions, judged before anything is made: pg_basebackup fails with a
 * FATAL when walsenders run out, the role may not replicate, or pg_hba has no replication rule.
 */
export function judgeBaseBackup(f: BaseBackupFacts): CheckResult[] {
  const out: CheckResult[] = [];
  const free = f.maxWalSenders - f.sendersInUse;
  out.push(
    free >= baseBackupSenders
      ? check.pass('max_wal_senders', `${free} of ${f.maxWalSenders} walsenders free; pg_basebackup -X stream uses ${baseBackupSenders}`)
      : check.fail(
          'max_wal_senders',
          `${f.sendersInUse} of ${f.maxWalSenders} walsenders in use: pg_basebackup -X stream needs ${baseBackupSenders} free (one sends the files, one streams the WAL), ${free <= 0 ? 'none is' : `only ${free} is`}`,
          `raise max_wal_senders to at least ${f.sendersInUse + baseBackupSenders} (a restart), wait for another base backup or standby to disconnect, or use --method parallel`,
        ),
  );
  out.push(
    f.superuser || f.replication
      ? check.pass('replication role', `${f.role} ${f.superuser ? 'is a superuser' : 'has REPLICATION'}`)
      : check.fail(
          'replication role',
          `${f.role} has neither REPLICATION nor SUPERUSER: pg_basebackup's replication connection would be refused`,
          `ALTER ROLE ${quoteIdent(f.role)} REPLICATION (as a superuser), or connect as a role that has it`,
        ),
  );
  const from = f.clientAddress === null ? 'over the Unix socket' : `from ${f.clientAddress}`;
  if (!f.hbaRules) {
    out.push(
      check.info(
        'pg_hba allows replication',
        `${f.role} may not read pg_hba_file_rules (superusers only, unless granted): not judged for a replication connection ${from}`,
      ),
    );
    return out;
  }
  const rule = f.hbaRules.map((r) => ({ r, m: hbaRuleApplies(r, f.role, f.clientAddress) })).find((x) => x.m !== 'no');
  const example =
    f.clientAddress === null
      ? `local replication ${f.role} peer`
      : `host replication ${f.role} ${f.clientAddress}/${isIP(f.clientAddress) === 6 ? 128 : 32} scram-sha-256`;
  if (!rule || (rule.m === 'yes' && rule.r.auth_method === 'reject'))
    out.push(
      check.fail(
        'pg_hba allows replication',
        rule
          ? `line ${rule.r.line_number} of pg_hba.conf rejects a replication connection of ${f.role} ${from}`
          : `no pg_hba.conf line lets ${f.role} make a replication connection ${from} (the database "all" does not cover replication)`,
        `add "${example}" to pg_hba.conf ${rule ? `before line ${rule.r.line_number} ` : ''}and reload`,
      ),
    );
  else
    out.push(
      check.pass(
        'pg_hba allows replication',
        `line ${rule.r.line_number} of pg_hba.conf (${rule.r.type} ${rule.r.auth_method}) ${rule.m === 'yes' ? 'applies' : 'may apply (it depends on group membership or the encryption)'} to a replication connection of ${f.role} ${from}`,
      ),
    );
  return out;
}

/** The program each method's dump is made with (its version must be at least the server's). */
const dumpProgram: Record<BackupMethod, string> = { dumpall: 'pg_dumpall', parallel: 'pg_dump', physical: 'pg_basebackup' };
/** Every client program a method runs to make the backup, the one pgDumpallVersion names first. */
const methodPrograms: Record<BackupMethod, string[]> = { dumpall: ['pg_dumpall'], parallel: ['pg_dumpall', 'pg_dump'], physical: ['pg_basebackup'] };
const parseVersion = (version: string) => (/^\d+/.test(version) ? { version, major: parseInt(version, 10) } : undefined);

const dumpallArgs = (p: BackupParams) => ['--no-password', ...excluded(p).map((n) => `--exclude-database=${exactPattern(n)}`)];
const globalsArgs = ['--no-password', '--globals-only'];

function dumpTitle(p: BackupParams): string {
  switch (methodOf(p)) {
    case 'dumpall':
      return `Dump the cluster with pg_dumpall into ${staging(p)}`;
    case 'parallel':
      return `Dump the globals with pg_dumpall and each database with pg_dump -Fd (${p.jobs ?? 1} jobs) into ${staging(p)}`;
    case 'physical':
      return `Copy the cluster with pg_basebackup (tar, backup manifest) into ${staging(p)}`;
  }
}

/** Streams pg_dumpall ARGS through the compressor into `file`; a failure removes the staging directory. */
async function streamDump(ctx: StepContext, p: BackupParams, args: string[], file: string, estimate: number): Promise<NonNullable<DumpDone['stream']>> {
  const dump = ctx.runner.stream(clientInvocation(p.access, 'pg_dumpall', args, { signal: ctx.signal, onStart: ctx.trackProcess }));
  dump.stdin.end();
  const c = compressArgv(p.compression);
  const compress = ctx.runner.stream({ program: c.program, args: c.args, signal: ctx.signal, onStart: ctx.trackProcess });
  const out = createWriteStream(file, { mode: 0o600 });
  // a failed write (ENOSPC…) is the cause when it happens: the programs then only die of broken pipes
  let writeError: Error | undefined;
  out.on('error', (e) => (writeError ??= e));
  const digest = new Digest();
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
  const failure = writeError
    ? `cannot write ${file}: ${writeError.message}`
    : dres.exitCode !== 0
      ? `pg_dumpall failed: ${dres.stderr.trim() || dres.signal}`
      : cres.exitCode !== 0
        ? `${c.program} failed: ${cres.stderr.trim() || cres.signal}`
        : !digest.complete()
          ? 'pg_dumpall output has no completion trailer'
          : undefined;
  if (failure) failDump(p, failure);
  fsyncPath(file);
  return { uncompressedBytes: digest.bytes, uncompressedSha256: digest.sha256(), compressedBytes: statSync(file).size };
}

/** Nothing half-written is kept: the staging directory goes, and the failure is "no change". */
function failDump(p: BackupParams, failure: string): never {
  rmSync(staging(p), { recursive: true, force: true });
  const full = /No space left|ENOSPC/i.test(failure);
  throw new PgscaleError(full ? `the destination filled up during the dump: ${failure}` : failure, ExitCode.FailedNoChange);
}

/**
 * pg_dump -Fd of every database to dump, side by side within the job budget. A database whose
 * dump finished is kept across a resume (its marker says so); a half-written one is redone.
 */
async function parallelDumps(ctx: StepContext, p: BackupParams, databases: readonly DatabaseEntry[], compression: string): Promise<void> {
  const dir = staging(p);
  const todo = databases.map((d, index) => ({ d, index })).filter(({ d, index }) => d.dumped && !existsSync(join(dir, databaseDone(index))));
  todo.sort((a, b) => b.d.bytes - a.d.bytes);
  const jobs = Math.max(1, p.jobs ?? 1);
  const shares = jobShares(
    todo.map(({ d }) => d),
    jobs,
  );
  let finished = databases.filter((d) => d.dumped).length - todo.length;
  const total = databases.filter((d) => d.dumped).length;
  const inner = new AbortController();
  const onAbort = () => inner.abort();
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  // databases finish one by one, each after minutes maybe: the bytes written so far show it moving
  const report = () => ctx.progress.message(`${finished} of ${total} databases dumped, ${formatBytes(treeBytes(dir))} written (compressed)`);
  report();
  const ticker = setInterval(report, 2000);
  try {
    await runWeighted(
      jobs,
      todo.map(({ d, index }, k) => ({
        weight: shares[k]!,
        run: async () => {
          const out = join(dir, databaseDumpDir(index));
          rmSync(out, { recursive: true, force: true });
          const inv = pgDumpInvocation(p.access, d.name, out, shares[k]!, compression, { signal: inner.signal, onStart: ctx.trackProcess });
          const res = await ctx.runner.run(inv);
          if (res.exitCode !== 0) {
            inner.abort();
            throw new Error(`database ${JSON.stringify(d.name)}: ${describeFailure(inv, res)}`);
          }
          writeFileSync(join(dir, databaseDone(index)), '', { mode: 0o600 });
          finished++;
        },
      })),
      inner.signal,
    );
  } catch (e) {
    if (ctx.signal.aborted) throw e;
    failDump(p, (e as Error).message);
  } finally {
    clearInterval(ticker);
    ctx.signal.removeEventListener('abort', onAbort);
  }
}

async function gatherBaseBackupFacts(ctx: StepContext, access: ClusterAccess): Promise<BaseBackupFacts> {
  return withDb(ctx, access, async (db) => {
    const [f] = await db.query(statements.baseBackupFacts());
    // pg_hba_file_rules is for superusers unless granted: without it the rules are not judged, and the plan says so
    const hbaRules = f!.hba_readable ? await db.query(statements.hbaRules()) : null;
    return {
      maxWalSenders: f!.max_wal_senders,
      sendersInUse: f!.senders_in_use,
      role: f!.role,
      superuser: f!.superuser,
      replication: f!.replication,
      clientAddress: f!.client_addr,
      hbaRules,
    };
  });
}

/** The whole dump as it lies in the staging directory: the stream and every pg_dump or pg_basebackup file. */
function dumpedSize(dir: string, p: BackupParams, done: DumpDone): BackupSize {
  const file = streamFileName(methodOf(p), p.compression);
  const files = [...(file && existsSync(join(dir, file)) ? [file] : []), ...filesUnder(dir).filter(isPayload)];
  return {
    method: methodOf(p),
    compressedBytes: files.reduce((a, f) => a + statSync(join(dir, f)).size, 0),
    files: files.length,
    uncompressedBytes: methodOf(p) === 'dumpall' ? (done.stream?.uncompressedBytes ?? null) : null,
    ...heldSize(done.databases),
  };
}

export const dumpStep = defineStep<BackupParams>({
  kind: 'backup.dump',
  title: dumpTitle,
  async check(ctx, p) {
    const out: CheckResult[] = [];
    const dest = realish(p.dest);
    out.push(
      existsSync(p.dest)
        ? check.fail('destination absent', `${p.dest} already exists; pgscale never overwrites a backup`)
        : check.pass('destination absent', `${p.dest} does not exist yet`),
    );
    out.push(
      existsSync(staging(p))
        ? check.fail('no leftover staging directory', `${staging(p)} exists (an interrupted backup?): resume that run, or remove it`)
        : check.pass('no leftover staging directory', `${staging(p)} does not exist`),
    );
    const inside = p.protectedPaths.find((d) => isInside(dest, realish(d)));
    out.push(
      inside
        ? check.fail('not inside the cluster', `${p.dest} is inside ${inside}: a backup there would be copied into itself and lost with the cluster`)
        : check.pass('not inside the cluster', 'outside the data directory and tablespaces'),
    );
    // the run creates missing parents (mkdir -p): what must exist and be writable is the nearest existing one
    const parent = existingAncestor(dirname(dest));
    const created = parent === dirname(dest) ? '' : ` (${relative(parent, dirname(dest))} is created under it)`;
    let writable = true;
    try {
      if (!statSync(parent).isDirectory()) throw new Error('not a directory');
      accessSync(parent, constants.W_OK | constants.X_OK);
    } catch (e) {
      writable = false;
      out.push(
        check.fail(
          'destination writable',
          `cannot create ${p.dest}: ${parent} is ${(e as Error).message === 'not a directory' ? 'not a directory' : 'not writable'}`,
        ),
      );
    }
    if (writable) {
      out.push(check.pass('destination writable', `${parent} is writable${created}`));
      const fs = statfsSync(parent);
      const free = fs.bavail * fs.bsize;
      out.push(
        free >= p.estimateBytes
          ? check.pass('free space', `${formatBytes(free)} free at ${parent}; the dump needs about ${formatBytes(p.estimateBytes)}`)
          : check.fail('free space', `only ${formatBytes(free)} free at ${parent}; the dump needs about ${formatBytes(p.estimateBytes)}`),
      );
    }
    if (methodOf(p) !== 'physical') {
      const compressor = compressArgv(p.compression);
      const cres = await ctx.runner.run({ program: compressor.program, args: ['--version'] });
      out.push(
        cres.exitCode === 0
          ? check.pass('compressor installed', `${compressor.program} found`)
          : check.fail('compressor installed', `${compressor.program} is not installed`),
      );
    }
    if (methodOf(p) === 'physical') {
      const v = p.verifyBindir ? await ctx.runner.run({ program: join(p.verifyBindir, 'pg_verifybackup'), args: ['--version'] }) : undefined;
      out.push(
        v?.exitCode === 0
          ? check.pass('pg_verifybackup', `${join(p.verifyBindir!, 'pg_verifybackup')} checks the backup`)
          : check.fail(
              'pg_verifybackup',
              `a physical backup is checked with pg_verifybackup, which ${p.verifyBindir ?? 'the client bindir'} lacks`,
              "install the PostgreSQL client programs of the server's version, or use --method parallel",
            ),
      );
    }
    try {
      const [facts, databases] = await withDb(
        ctx,
        p.access,
        async (db) => [await db.query(statements.serverVersionNum()), await db.query(statements.clusterDatabases())] as const,
      );
      const serverMajor = Math.floor(facts[0]!.server_version_num / 10000);
      out.push(check.pass('server reachable', `PostgreSQL ${facts[0]!.server_version} answers`));
      out.push(...judgeDatabases(methodOf(p), databases, p.excludeDatabases));
      const programs = methodOf(p) === 'parallel' ? ['pg_dumpall', 'pg_dump'] : [dumpProgram[methodOf(p)]];
      if (methodOf(p) === 'physical') out.push(...judgeBaseBackup(await gatherBaseBackupFacts(ctx, p.access)));
      for (const program of programs) {
        const dv = await clientVersion(ctx.runner, p.access, program);
        if (!dv) out.push(check.fail(`${program} version`, `no working ${program} in ${p.access.bindir}`));
        else if (methodOf(p) === 'physical' ? dv.major !== serverMajor : dv.major < serverMajor)
          out.push(
            check.fail(
              `${program} version`,
              `${program} ${dv.version} cannot back up a ${serverMajor} server; ${methodOf(p) === 'physical' ? "pg_basebackup must be of the server's major version" : `${program} must be at least the server's version`}`,
              'pass --bindir with the matching client programs',
            ),
          );
        else out.push(check.pass(`${program} version`, `${program} ${dv.version} for server ${serverMajor}`));
      }
    } catch (e) {
      out.push(check.fail('server reachable', (e as Error).message));
    }
    return out;
  },
  async plan(ctx, p) {
    const owner = p.access.runAs ?? undefined;
    const env = ['PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE'];
    const actions: PlannedAction[] = [{ kind: 'file', path: staging(p), change: 'mkdir', mode: '0700' }];
    const stream = streamFileName(methodOf(p), p.compression);
    const c = compressArgv(p.compression);
    if (stream) {
      actions.push(
        {
          kind: 'command',
          argv: ['pg_dumpall', ...(methodOf(p) === 'dumpall' ? dumpallArgs(p) : globalsArgs)],
          runAs: owner,
          env,
          note: `connection from the environment${owner ? ` (as ${owner})` : ''}; output hashed (sha256) and piped to the compressor`,
        },
        { kind: 'command', argv: [c.program, ...c.args], output: join(staging(p), stream), note: 'file created 0600' },
      );
    }
    if (methodOf(p) === 'parallel') {
      const client = await clientVersion(ctx.runner, p.access, 'pg_dump');
      actions.push({
        kind: 'command',
        argv: ['pg_dump', '--no-password', '-Fd', '-j', 'N', '-Z', pgDumpCompression(client?.major ?? 0, p.compression), '-f', join(staging(p), 'db-I')],
        runAs: owner,
        env,
        note: `once per database (PGDATABASE), largest first, side by side within ${p.jobs ?? 1} jobs in all (N in proportion to its size); files taken back 0600`,
      });
    }
    if (methodOf(p) === 'physical') {
      const client = await clientVersion(ctx.runner, p.access, 'pg_basebackup');
      const server = await withDb(ctx, p.access, (db) => db.query(statements.serverVersionNum())).catch(() => []);
      const serverMajor = Math.floor((server[0]?.server_version_num ?? 0) / 10000);
      actions.push({
        kind: 'command',
        argv: [
          'pg_basebackup',
          ...baseBackupInvocation(p.access, join(staging(p), physicalDir), baseBackupCompression(client?.major ?? 0, serverMajor, p.compression), {}).args,
        ],
        runAs: owner,
        env: ['PGHOST', 'PGPORT', 'PGUSER'],
        note: 'a replication connection; WAL streamed alongside; files taken back 0600',
      });
    }
    return actions;
  },
  async apply(ctx, p) {
    const dir = staging(p);
    const method = methodOf(p);
    const startedAt = new Date().toISOString();
    const gathered = await withDb(ctx, p.access, async (db) => ({
      facts: (await db.query(statements.serverVersionNum()))[0]!,
      databases: await db.query(statements.clusterDatabases()),
      tablespaces: await db.query(statements.tablespaces()),
      locale: (await db.query(statements.clusterLocale()))[0]!,
      superuser: (await db.query(statements.bootstrapSuperuser()))[0]!.rolname,
    }));
    const blockers = judgeDatabases(method, gathered.databases, p.excludeDatabases).filter((c) => !c.passed);
    if (blockers.length) throw new PgscaleError(blockers.map((b) => b.detail).join('; '), ExitCode.FailedNoChange, blockers[0]!.fix);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    rmSync(join(dir, doneMarker), { force: true });
    const databases: DatabaseEntry[] = gathered.databases.map((d) => ({
      name: d.name,
      bytes: Number(d.bytes),
      encoding: d.encoding,
      allowConnections: d.allow_connections,
      dumped: method === 'physical' || (d.allow_connections && !excluded(p).includes(d.name)),
    }));
    const estimate = databases.reduce((a, d) => a + d.bytes, 0);
    // asked of the very paths the dump runs: what the manifest records is what ran
    const programs = await programRuns(ctx.runner, p.access, methodPrograms[method]);
    const client = parseVersion(programs.find((r) => r.program === dumpProgram[method])!.version);
    const serverMajor = Math.floor(gathered.facts.server_version_num / 10000);
    let stream: DumpDone['stream'] = null;
    const streamFile = streamFileName(method, p.compression);
    if (streamFile)
      stream = await streamDump(ctx, p, method === 'dumpall' ? dumpallArgs(p) : globalsArgs, join(dir, streamFile), method === 'dumpall' ? estimate : 0);
    if (method !== 'dumpall') {
      lendTo(dir, osUserOf(p.access));
      try {
        if (method === 'parallel') await parallelDumps(ctx, p, databases, pgDumpCompression(client?.major ?? 0, p.compression));
        else {
          rmSync(join(dir, physicalDir), { recursive: true, force: true });
          const inv = baseBackupInvocation(p.access, join(dir, physicalDir), baseBackupCompression(client?.major ?? 0, serverMajor, p.compression), {
            signal: ctx.signal,
            onStart: ctx.trackProcess,
          });
          ctx.progress.message(`pg_basebackup of ~${formatBytes(estimate)}`);
          const res = await ctx.runner.run(inv);
          if (ctx.signal.aborted) throw new PgscaleError('interrupted', ExitCode.Interrupted);
          if (res.exitCode !== 0) failDump(p, describeFailure(inv, res));
        }
      } finally {
        if (existsSync(dir)) takeBack(dir);
      }
    }
    // counted after the dump, not before: a table locked by a client blocks the dump first, where a kill or Ctrl-C stops it cleanly
    ctx.progress.message("counting every table's rows");
    const counts = await rowCounts(
      ctx,
      p.access,
      databases.filter((d) => d.dumped && d.allowConnections).map((d) => d.name),
    );
    const done: DumpDone = {
      method,
      startedAt,
      finishedAt: new Date().toISOString(),
      stream,
      serverVersion: gathered.facts.server_version,
      serverVersionNum: gathered.facts.server_version_num,
      pgDumpallVersion: programs[0]!.version,
      programs,
      databases,
      shape: {
        encoding: gathered.locale.encoding,
        collate: gathered.locale.collate,
        ctype: gathered.locale.ctype,
        provider: gathered.locale.provider,
        icuLocale: gathered.locale.icu_locale,
        superuser: gathered.superuser,
        tablespaces: gathered.tablespaces.map((t) => ({ name: t.name, location: t.location })),
      },
      rowCounts: counts,
    };
    writeFileAtomic(join(dir, doneMarker), JSON.stringify(done, null, 2));
    const size = dumpedSize(dir, p, done);
    return { ...size, detail: describeSize(size) };
  },
  async verify(_ctx, p) {
    const marker = join(staging(p), doneMarker);
    if (existsSync(p.dest) && existsSync(join(p.dest, manifestName))) return { ok: true, detail: 'backup already published' };
    if (!existsSync(marker)) return { ok: false, detail: 'no completed dump in the staging directory' };
    const done = JSON.parse(readFileSync(marker, 'utf8')) as DumpDone;
    const file = streamFileName(methodOf(p), p.compression);
    if (file && done.stream) {
      const size = existsSync(join(staging(p), file)) ? statSync(join(staging(p), file)).size : -1;
      if (size !== done.stream.compressedBytes) return { ok: false, detail: `dump file is ${size} bytes, the dump recorded ${done.stream.compressedBytes}` };
    }
    return { ok: true, detail: describeSize(dumpedSize(staging(p), p, done)) };
  },
  async rollback(_ctx, p) {
    rmSync(staging(p), { recursive: true, force: true });
  },
  rollbackNote: (p) => `remove ${staging(p)}`,
  estimateSeconds: (p) => estimateBackupSeconds(methodOf(p), p.estimateBytes * 2, p.jobs ?? 1),
});

export interface MethodEstimate {
  [key: string]: string | number;
  method: BackupMethod;
  backupSeconds: number;
  restoreSeconds: number;
  /** Which servers it restores into. */
  restoresInto: string;
}

/**
 * Each method's expected backup and restore time for a cluster of `databaseBytes` with a job
 * budget: what the upgrade plan shows beside the method it takes.
 */
export function backupTimes(databaseBytes: number, jobs: number): MethodEstimate[] {
  const into: Record<BackupMethod, string> = {
    dumpall: 'any version as new or newer',
    parallel: 'any version as new or newer',
    physical: 'the same major only',
  };
  return (['dumpall', 'parallel', 'physical'] as const).map((method) => ({
    method,
    backupSeconds: Math.round(estimateBackupSeconds(method, databaseBytes, jobs)),
    restoreSeconds: Math.round(estimateBackupSeconds(method, databaseBytes, jobs, 'restore')),
    restoresInto: into[method],
  }));
}

/** The files of a parallel or physical backup (pg_dump directories, pg_basebackup's output), not pgscale's markers. */
const isPayload = (path: string) => /^db-\d+\//.test(path) || path.startsWith(`${physicalDir}/`);

/** Expected seconds to back up (or restore) `bytes` of database with a method and a job budget. */
export function estimateBackupSeconds(method: BackupMethod, bytes: number, jobs: number, what: 'backup' | 'restore' = 'backup'): number {
  const r = assumedRates[method];
  const perJob = what === 'backup' ? r.backupPerJob : r.restorePerJob;
  const cap = what === 'backup' ? r.backupCap : r.restoreCap;
  return bytes / Math.min(cap, perJob * (r.parallel ? Math.max(1, jobs) : 1));
}

export const manifestStep = defineStep<BackupParams>({
  kind: 'backup.manifest',
  title: () => 'Write the manifest (versions, every database with its size and whether it is held, sha256 of every file)',
  check: async () => [],
  async plan(_ctx, p) {
    return [
      {
        kind: 'file',
        path: join(staging(p), manifestName),
        change: 'create',
        mode: '0600',
        note: 'method, server and client versions, every database of pg_database but template0 with its size and whether the backup holds it, encoding and locale, tablespaces, byte counts and sha256 of every file, row counts, start/end, options',
      },
    ];
  },
  async apply(_ctx, p) {
    const dir = staging(p);
    const done = JSON.parse(readFileSync(join(dir, doneMarker), 'utf8')) as DumpDone;
    const file = streamFileName(methodOf(p), p.compression);
    const compressed = file ? await sha256File(join(dir, file)) : { bytes: 0, sha256: '' };
    const manifest: BackupManifest = {
      format: 'pgscale-backup/1',
      method: methodOf(p),
      token: p.token,
      serverVersion: done.serverVersion,
      serverVersionNum: done.serverVersionNum,
      pgDumpallVersion: done.pgDumpallVersion,
      programs: done.programs,
      clientBindir: p.access.bindir,
      databases: done.databases,
      excludedDatabases: excluded(p),
      shape: done.shape,
      compression: p.compression,
      dumpFile: file,
      compressedBytes: compressed.bytes,
      compressedSha256: compressed.sha256,
      uncompressedBytes: done.stream?.uncompressedBytes ?? 0,
      uncompressedSha256: done.stream?.uncompressedSha256 ?? '',
      files: await fileEntries(dir, filesUnder(dir).filter(isPayload)),
      startedAt: done.startedAt,
      finishedAt: done.finishedAt,
      options: { pgDumpallArgs: methodOf(p) === 'dumpall' ? dumpallArgs(p) : methodOf(p) === 'parallel' ? globalsArgs : [], jobs: p.jobs ?? 1 },
      rowCounts: done.rowCounts,
    };
    writeFileAtomic(join(dir, manifestName), JSON.stringify(manifest, null, 2) + '\n');
    return { compressedSha256: compressed.sha256, files: manifest.files!.length };
  },
  async verify(_ctx, p) {
    const dir = existsSync(join(p.dest, manifestName)) ? p.dest : staging(p);
    try {
      const m = readManifest(dir);
      return m.token === p.token
        ? {
            ok: true,
            detail: `manifest written (${m.databases.filter((d) => d.dumped).length} of ${m.databases.length} databases held, ${(m.files?.length ?? 0) + (m.dumpFile ? 1 : 0)} files)`,
          }
        : { ok: false, detail: 'the manifest belongs to another backup' };
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
    const file = join(staging(p), manifest.dumpFile!);
    const [dec, restore] = [
      ctx.runner.stream({ ...decompressArgv(manifest.compression, file), signal: ctx.signal, onStart: ctx.trackProcess }),
      ctx.runner.stream(
        clientInvocation(scratch, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=0', '-d', 'postgres', '-f', '-'], {
          signal: ctx.signal,
          onStart: ctx.trackProcess,
        }),
      ),
    ];
    dec.stdin.end();
    await Promise.all([pipeline(dec.stdout, restore.stdin), pipeline(restore.stdout, drain())]);
    const r = await restore.result;
    if (r.exitCode !== 0) return [`restore failed: ${r.stderr.trim().slice(-500)}`];
    const restored = await rowCounts(ctx, scratch, Object.keys(manifest.rowCounts ?? {}));
    return compareRowCounts(manifest.rowCounts ?? {}, restored).missing;
  });
}

/** Tables whose restored row count differs from the count taken after the dump. */
/**
 * Restored tables against the manifest's counts. The counts are taken right after the dump, not in
 * its snapshot: a table written while the backup ran differs without anything being lost, so a
 * differing count is reported, and only a table missing from the restore fails verification.
 */
export function compareRowCounts(
  expected: Record<string, Record<string, number>>,
  restored: Record<string, Record<string, number>>,
): { missing: string[]; differing: string[] } {
  const missing: string[] = [];
  const differing: string[] = [];
  for (const [db, tables] of Object.entries(expected)) {
    for (const [table, n] of Object.entries(tables)) {
      const got = restored[db]?.[table];
      if (got === undefined) missing.push(`${db}.${table}: ${n} rows in the source, missing from the restore`);
      else if (got !== n) differing.push(`${db}.${table}: ${n} rows counted after the dump, ${got} restored`);
    }
  }
  return { missing, differing };
}

export { rowCounts as tableRowCounts };

function drain() {
  return async function* (source: AsyncIterable<unknown>) {
    for await (const _ of source);
  };
}

const methodProofNote: Record<BackupMethod, string> = {
  dumpall: 'sha256 and byte count compared with the manifest; completion trailer checked',
  parallel:
    "the globals decompressed and checked like a pg_dumpall stream; every pg_dump file's sha256 compared; pg_restore --list reads every database's table of contents",
  physical: "every file's sha256 compared; pg_verifybackup checks the tars against pg_basebackup's backup_manifest",
};

export const verifyStep = defineStep<BackupParams>({
  kind: 'backup.verify',
  title: (p) =>
    p.restoreBindir
      ? 'Verify: decompress and checksum, restore into a scratch cluster, compare row counts'
      : `Verify: ${methodOf(p) === 'dumpall' ? 'decompress and checksum' : methodOf(p) === 'parallel' ? 'checksum every file, read every table of contents' : 'checksum every file, pg_verifybackup'}`,
  check: async () => [],
  async plan(_ctx, p) {
    const file = streamFileName(methodOf(p), p.compression);
    const actions: PlannedAction[] = [];
    if (file) {
      const dec = decompressArgv(p.compression, join(staging(p), file));
      actions.push({ kind: 'command', argv: [dec.program, ...dec.args], note: methodProofNote[methodOf(p)] });
    }
    if (methodOf(p) === 'parallel')
      actions.push({ kind: 'command', argv: [join(p.access.bindir, 'pg_restore'), '--list', join(staging(p), 'db-I')], note: 'once per database' });
    if (methodOf(p) === 'physical')
      actions.push({
        kind: 'command',
        argv: [join(p.verifyBindir ?? '', 'pg_verifybackup'), '--no-parse-wal', '--quiet', join(staging(p), physicalDir)],
        note: methodProofNote.physical,
      });
    if (p.restoreBindir) {
      actions.push({
        kind: 'command',
        argv: [join(p.restoreBindir, 'initdb'), '-D', `${p.dest}.restore-check/data`],
        note: "scratch cluster, removed afterwards; the dump is restored with psql and every table's row count compared",
      });
    }
    return actions;
  },
  async apply(ctx, p) {
    const dir = staging(p);
    const manifest = readManifest(dir);
    ctx.progress.message('checksumming');
    const result = await checkArchive(dir, manifest, ctx.runner, ctx.signal, { restoreBindir: p.access.bindir, verifyBindir: p.verifyBindir ?? undefined });
    if (!result.ok) throw new PgscaleError(`backup verification failed: ${result.problems.join('; ')}`, ExitCode.FailedAfterChange);
    if (p.restoreBindir) {
      ctx.progress.message('restoring into a scratch cluster');
      const restoreProblems = await restoreAndCompare(ctx, p, manifest);
      if (restoreProblems.length) throw new PgscaleError(`restore verification failed: ${restoreProblems.slice(0, 10).join('; ')}`, ExitCode.FailedAfterChange);
    }
    const tables = Object.values(manifest.rowCounts ?? {}).reduce((a, t) => a + Object.keys(t).length, 0);
    const detail = `checksums match (${describeSize({ method: methodOf(p), ...result, ...heldSize(manifest.databases) })})${methodOf(p) === 'physical' ? '; pg_verifybackup passed' : methodOf(p) === 'parallel' ? '; every table of contents reads' : ''}${p.restoreBindir ? `; restored, ${tables} tables' row counts match` : ''}`;
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
      return readManifest(p.dest).token === p.token
        ? { ok: true, detail: `backup complete at ${p.dest}` }
        : { ok: false, detail: `${p.dest} holds another backup` };
    } catch (e) {
      return { ok: false, detail: (e as Error).message };
    }
  },
  /**
   * A published backup is verified: an undo never deletes it (it may be the only way back). Only
   * a staging directory, which is not a backup, goes.
   */
  async rollback(_ctx, p) {
    rmSync(staging(p), { recursive: true, force: true });
  },
  rollbackNote: (p) => `keep ${p.dest}: a verified backup is never removed by an undo (\`pgscale backup remove ${p.dest}\` removes it on purpose)`,
});

export const backupOperation = defineOperation<BackupParams>({
  name: 'backup',
  serverAccess: (p) => p.access,
  describeTarget: (p) => ({
    description: `${p.access.host ?? 'localhost'}:${p.access.port ?? 5432}`,
    lockKey: p.protectedPaths[0] ? `cluster:${p.protectedPaths[0]}` : `server:${p.access.host ?? 'localhost'}:${p.access.port ?? 5432}`,
  }),
  summary: (p) => {
    const how =
      methodOf(p) === 'dumpall' ? 'pg_dumpall' : methodOf(p) === 'parallel' ? `parallel (pg_dump -Fd, ${p.jobs ?? 1} jobs)` : 'physical (pg_basebackup)';
    const left = excluded(p).length
      ? `, leaving out ${excluded(p)
          .map((n) => JSON.stringify(n))
          .join(', ')}`
      : '';
    return `${how} backup of ${p.access.host ?? 'localhost'}:${p.access.port ?? 5432} to ${p.dest} (${p.compression.compressor} level ${p.compression.level}${p.restoreBindir ? ', restore-verified' : ''}${left})`;
  },
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
      const dbs = await db.query(statements.clusterDatabases());
      return {
        systemIdentifier: id?.system_identifier ?? null,
        serverVersion: v?.server_version ?? null,
        databases: dbs.filter((d) => d.allow_connections).map((d) => d.name),
        refusingConnections: dbs.filter((d) => !d.allow_connections).map((d) => d.name),
        destination: p.dest,
      };
    });
  },
});

export const newBackupToken = () => randomBytes(8).toString('hex');

export async function estimateBackupBytes(runner: Runner, access: ClusterAccess): Promise<number> {
  const db = await openDb(access, runner);
  try {
    const dbs = await db.query(statements.clusterDatabases());
    // a compressed dump is far smaller than the database (no indexes, compressed); half is a safe bound
    return Math.max(16 * 1024 * 1024, Math.round(dbs.reduce((a, d) => a + Number(d.bytes), 0) * 0.5));
  } finally {
    await db.close();
  }
}
