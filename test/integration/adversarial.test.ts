/**
 * The contract under bad and unusual input, as a table: every row is a real invocation of the
 * built CLI against real clusters, run twice (text and --json). Each asserts the exit code, the
 * message and a hint that says what to do, the JSON error shape, no secret (a --dsn password,
 * PGPASSWORD, a .pgpass line, a playbook value) in any output, and that nothing changed: the files
 * under the work directory, the clusters' configuration, no lock left, the servers as they were.
 * Then, in order: one lock per cluster whatever path leads to it, dry runs of resume and rollback,
 * the way out of every failed state, and a failed tune --restore that no longer locks anyone out.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { cliRunnableBy, parseJson, runCli, startCli as startCliWith, type CliResult, type CliOptions } from '../helpers/cli.js';
import { hostFixture } from '../helpers/paths.js';
import { filesContaining, holdTableLock, lockWaiters, treeSnapshot, waitFor } from '../helpers/snapshot.js';
import { createCluster, scratchDir, serverUser, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { lockPath } from '../../src/pipeline/journal.js';
import { readSystemIdentifier } from '../../src/pipeline/plan.js';
import { isRoot } from '../../src/runner.js';
import { userByName } from '../../src/osUser.js';

after(teardownAll);

const SECRETS = { dsn: 'S3cr3t-dsn-7f', env: 'S3cr3t-env-9q', pgpass: 'S3cr3t-pgpass-2k', playbook: 'S3cr3t-pb-5m' };
const kinds: Record<number, string> = { 1: 'internal-error', 2: 'bad-input', 3: 'refused', 4: 'failed-no-change', 5: 'failed-after-change' };
const nobody = isRoot() ? userByName('nobody') : undefined;

let A: TestCluster; // PostgreSQL 17, running
let S: TestCluster; // PostgreSQL 16, stopped
let work: string;
let state: string;
let env: NodeJS.ProcessEnv;

const sha = (path: string) => (existsSync(path) ? createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16) : 'absent');
const clusterFiles = (c: TestCluster) =>
  ['postgresql.conf', 'postgresql.auto.conf', 'pg_hba.conf', 'conf.d/pgscale.conf', 'postmaster.pid'].map(
    (f) => `${c.pgdata}/${f} ${f === 'postmaster.pid' ? existsSync(join(c.pgdata, f)) : sha(join(c.pgdata, f))}`,
  );
const lockOf = (c: TestCluster) => lockPath(`system:${readSystemIdentifier(c.pgdata)}`);

/** Everything a refused or dry run must leave as it was. */
function world(): string[] {
  return [...treeSnapshot(work), ...clusterFiles(A), ...clusterFiles(S), `lock A ${existsSync(lockOf(A))}`, `lock S ${existsSync(lockOf(S))}`];
}

function assertNoSecret(label: string, ...texts: string[]): void {
  for (const t of texts) for (const s of Object.values(SECRETS)) assert.equal(t.includes(s), false, `${label}: a secret (${s}) appears in the output:\n${t}`);
}

const cli = (args: string[], opts: CliOptions = {}): Promise<CliResult> => runCli(args, { ...opts, env: { ...env, ...opts.env } });
const startCli = (args: string[], extra: NodeJS.ProcessEnv = {}) => startCliWith(args, { ...env, ...extra });
const show = (r: CliResult) => `exit ${r.code}\nstdout: ${r.stdout.slice(0, 3000)}\nstderr: ${r.stderr.slice(0, 3000)}`;

interface Row {
  name: string;
  args: () => string[];
  code: number;
  message: RegExp;
  /** What the hint must say (every error has a hint in any case). */
  hint?: RegExp;
  /** For exit 0: what stdout must show. */
  stdout?: RegExp;
  /** A dry run blocked by its plan's checks: under --json the plan comes with the error, in one document. */
  blockedPlan?: boolean;
  opts?: () => CliOptions;
  skip?: string | false;
}

/** What the table reads of a plan printed under --json. */
interface JsonPlan {
  steps: { checks: { name: string; passed: boolean; severity: string; detail: string }[] }[];
}

/** Runs a row as text and as --json (concurrently) and checks both against the contract. */
async function check(row: Row): Promise<void> {
  const before = world();
  const opts = row.opts?.() ?? {};
  const [text, json] = await Promise.all([cli(row.args(), opts), cli([...row.args(), '--json'], opts)]);
  assert.equal(text.code, row.code, `${row.name} (text): ${show(text)}`);
  assert.equal(json.code, row.code, `${row.name} (--json): ${show(json)}`);
  assertNoSecret(row.name, text.stdout, text.stderr, json.stdout, json.stderr);
  if (row.code === 0) {
    if (row.stdout) assert.match(text.stdout, row.stdout, `${row.name}: ${show(text)}`);
    parseJson(json);
  } else {
    const [line, hintLine] = text.stderr
      .split('\n')
      .filter((l) => l.startsWith('pgscale: error: ') || l.startsWith('hint: '))
      .reduce<[string, string]>(([m, h], l) => (l.startsWith('hint: ') ? [m, h || l] : [m || l, h]), ['', '']);
    assert.ok(line, `${row.name}: an error line on stderr: ${show(text)}`);
    assert.match(text.stderr, row.message, `${row.name}: ${show(text)}`);
    assert.ok(hintLine.length > 'hint: '.length + 10, `${row.name}: a hint that says what to do: ${show(text)}`);
    if (row.hint) assert.match(hintLine, row.hint, `${row.name}: ${show(text)}`);
    const parsed = parseJson<{ error: { message: string; hint: string; exitCode: number; kind: string }; plan?: JsonPlan }>(json);
    if (row.blockedPlan) {
      assert.deepEqual(Object.keys(parsed).sort(), ['error', 'plan'], `${row.name}: ${json.stdout.slice(0, 3000)}`);
      const checks = parsed.plan!.steps.flatMap((s) => s.checks);
      assert.ok(parsed.plan!.steps.length > 0 && checks.length > 0, `${row.name}: the plan's steps and checks`);
      for (const c of checks) assert.equal(typeof c.passed, 'boolean', `${row.name}: check ${c.name} has its outcome`);
      const blockers = checks.filter((c) => !c.passed && c.severity === 'error');
      assert.ok(blockers.length > 0, `${row.name}: the failed check is in the plan`);
      for (const c of blockers) assert.ok(parsed.error.message.includes(`${c.name}: ${c.detail}`), `${row.name}: the error names ${c.name}`);
    } else {
      assert.ok(json.stdout.length < 8000, `${row.name}: a short JSON error, not ${json.stdout.length} bytes`);
      assert.deepEqual(Object.keys(parsed), ['error'], `${row.name}: ${json.stdout}`);
    }
    assert.deepEqual(Object.keys(parsed.error).sort(), ['exitCode', 'hint', 'kind', 'message']);
    assert.equal(parsed.error.exitCode, row.code);
    assert.equal(parsed.error.kind, kinds[row.code]);
    assert.match(`pgscale: error: ${parsed.error.message}\nhint: ${parsed.error.hint}`, row.message, `${row.name} (--json): ${json.stdout}`);
    assert.ok(parsed.error.hint.length > 10, `${row.name}: a JSON hint`);
    assert.equal(json.stderr.includes('pgscale: error'), false, `${row.name}: under --json the error is on stdout only`);
  }
  assert.deepEqual(world(), before, `${row.name}: nothing changed`);
}

before(async () => {
  // A also listens on 127.0.0.1 with a scram password: the same cluster by --dsn, as root
  [A, S] = await Promise.all([createCluster({ version: 17, conf: ["listen_addresses = '127.0.0.1'"] }), createCluster({ version: 16, start: false })]);
  await A.sql(
    `create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 2000) g; alter role ${A.superuser} password '${SECRETS.env}'`,
  );
  work = scratchDir('pgscale-adversarial-');
  chmodSync(work, 0o755); // other OS users reach their files here (and are refused the rest)
  state = join(work, 'state');
  const pgpass = join(work, 'pgpass');
  writeFileSync(pgpass, `*:*:*:*:${SECRETS.pgpass}\n`, { mode: 0o600 });
  env = { PGPASSFILE: pgpass, PGSCALE_STATE_DIR: state, PGDATA: undefined, PGHOST: undefined, PGPORT: undefined, PGUSER: undefined };

  // inputs the rows read: a finished backup and a damaged copy, plans, playbooks, damaged runs
  mkdirSync(join(work, 'backups'));
  const good = await cli([
    'backup',
    '--pgdata',
    A.pgdata,
    '--bindir',
    A.bindir,
    '--to',
    join(work, 'backups', 'good'),
    '--state-dir',
    join(work, 'state-setup'),
  ]);
  assert.equal(good.code, 0, show(good));
  mkdirSync(join(work, 'backups', 'damaged'), { mode: 0o700 });

  for (const f of readdirSync(join(work, 'backups', 'good'))) copyFileSync(join(work, 'backups', 'good', f), join(work, 'backups', 'damaged', f));
  const dump = readdirSync(join(work, 'backups', 'damaged')).find((f) => f.startsWith('dumpall'))!;
  const bytes = readFileSync(join(work, 'backups', 'damaged', dump));
  const mid = Math.floor(bytes.length / 2);
  bytes[mid] = bytes[mid]! ^ 0xff;
  writeFileSync(join(work, 'backups', 'damaged', dump), bytes);
  mkdirSync(join(work, 'backups', 'unfinished.partial'));
  mkdirSync(join(work, 'not-a-backup'));
  writeFileSync(join(work, 'not-a-backup', 'notes.txt'), 'hello\n');

  const plans = join(work, 'plans');
  mkdirSync(plans);
  const planned = await cli([
    'backup',
    '--pgdata',
    A.pgdata,
    '--bindir',
    A.bindir,
    '--to',
    join(work, 'planned-dest'),
    '--dry-run',
    '--plan-out',
    join(plans, 'good.json'),
  ]);
  assert.equal(planned.code, 0, show(planned));
  const plan = JSON.parse(readFileSync(join(plans, 'good.json'), 'utf8')) as { summary: string; steps: { title: string; params: { dest: string } }[] };
  writeFileSync(join(plans, 'edited-summary.json'), JSON.stringify({ ...plan, summary: 'a harmless backup' }), { mode: 0o600 });
  const retargeted = JSON.parse(JSON.stringify(plan)) as typeof plan;
  retargeted.steps[0]!.params.dest = join(work, 'elsewhere');
  writeFileSync(join(plans, 'edited-step.json'), JSON.stringify(retargeted), { mode: 0o600 });
  // an edit that keeps the plan consistent (the trial's `sed s#planned-dest#evil-dest#g`): only the seal tells
  writeFileSync(join(plans, 'consistent-edit.json'), readFileSync(join(plans, 'good.json'), 'utf8').replaceAll('planned-dest', 'evil-dest'), { mode: 0o600 });
  const sealedElsewhere = JSON.parse(readFileSync(join(plans, 'good.json'), 'utf8')) as { seal: { keyId: string } };
  sealedElsewhere.seal.keyId = '0123456789abcdef';
  writeFileSync(join(plans, 'sealed-elsewhere.json'), JSON.stringify(sealedElsewhere), { mode: 0o600 });
  copyFileSync(join(plans, 'good.json'), join(plans, 'loose.json'));
  chmodSync(join(plans, 'loose.json'), 0o666);
  copyFileSync(join(plans, 'good.json'), join(plans, 'group-writable.json'));
  chmodSync(join(plans, 'group-writable.json'), 0o620);
  if (nobody) {
    copyFileSync(join(plans, 'good.json'), join(plans, 'foreign.json'));
    chownSync(join(plans, 'foreign.json'), nobody.uid, nobody.gid);
  }
  writeFileSync(join(plans, 'not-json.json'), 'this is not { json', { mode: 0o600 });
  writeFileSync(join(plans, 'not-a-plan.json'), '{"hello": "world"}', { mode: 0o600 });
  const drifted = await cli([
    'backup',
    '--pgdata',
    A.pgdata,
    '--bindir',
    A.bindir,
    '--to',
    join(work, 'drift-dest'),
    '--dry-run',
    '--plan-out',
    join(plans, 'drift.json'),
  ]);
  assert.equal(drifted.code, 0, show(drifted));
  mkdirSync(join(work, 'drift-dest'));
  writeFileSync(join(work, 'drift-dest', 'x'), 'now in the way');

  const books = join(work, 'playbooks');
  mkdirSync(books);
  writeFileSync(join(books, 'bad-yaml.yaml'), 'version: 1\nname: x\nsteps:\n  - backup: {to: /b}\n   bad indent: [\n');
  writeFileSync(join(books, 'bad-schema.yaml'), 'version: 1\nname: x\nsteps:\n  - drop-database: {}\n');
  writeFileSync(
    join(books, 'secret.yaml'),
    `version: 1\nname: secret\ncluster:\n  dsn: "postgresql://u:${SECRETS.playbook}@127.0.0.1:1/db"\n  bindir: ${A.bindir}\nsteps:\n  - backup:\n      to: ${join(work, 'pb-dest')}\n`,
  );
  writeFileSync(
    join(books, 'detect-tune.yaml'),
    `version: 1\nname: detect-tune\ncluster:\n  pgdata: ${A.pgdata}\n  bindir: ${A.bindir}\nsteps:\n  - detect:\n  - tune:\n      memory: 1GB\n      cpus: 2\n      storage: ssd\n`,
  );

  const damaged = join(work, 'state-damaged', 'runs');
  mkdirSync(join(damaged, '20260101T000000-backup-abcdef'), { recursive: true });
  writeFileSync(join(damaged, '20260101T000000-backup-abcdef', 'journal.jsonl'), '{"at":"2026-01-01T00:00:00Z","type":"run-started","pid":1}\n');
  mkdirSync(join(work, 'state-empty'));
  chmodSync(join(work, 'state-empty'), 0o700);
});

const B = () => A.bindir;
/** A over TCP with its password in PGPASSWORD (see withPassword): not the data directory, a DSN. */
const dsnA = () => `host=127.0.0.1 port=${A.port} user=${A.superuser} dbname=postgres`;
const secretDsn = () => `postgresql://u:${SECRETS.dsn}@127.0.0.1:1/db`;
/** PGPASSWORD set (it turns off peer authentication as the data directory's owner, so only where no connection is needed or it fails anyway). */
const withPassword = (): CliOptions => ({ env: { PGPASSWORD: SECRETS.env } });
const nobodyOpts = (): CliOptions => ({ asUser: nobody, env: { HOME: '/', PGSCALE_STATE_DIR: '/nonexistent-state-for-nobody' } });
const nobodySkip = () => (!nobody ? 'needs root and a nobody account' : !cliRunnableBy(nobody) ? "the checkout is out of nobody's reach" : false);

const rows: Row[] = [
  // flags and arguments: oclif's parser, in the documented shape, exit 2
  {
    name: 'unknown flag',
    opts: withPassword,
    args: () => ['backup', '--bogus', '--dsn', secretDsn()],
    code: 2,
    message: /Nonexistent flag: --bogus/,
    hint: /pgscale backup --help/,
  },
  {
    name: 'unknown flag with a keyword DSN password',
    args: () => ['detect', '--nope', '--dsn', `host=h password=${SECRETS.dsn}`],
    code: 2,
    message: /Nonexistent flag: --nope/,
  },
  { name: 'missing required flag', opts: withPassword, args: () => ['backup', '--pgdata', A.pgdata], code: 2, message: /Missing required flag to/ },
  { name: 'integer flag not a number', args: () => ['backup', '--to', 'x', '--level', 'abc'], code: 2, message: /Expected an integer but received: abc/ },
  { name: 'integer flag above its maximum', args: () => ['backup', '--to', 'x', '--level', '50'], code: 2, message: /less than or equal to 19/ },
  { name: 'option flag not an option', args: () => ['backup', '--to', 'x', '--compress', 'lz4'], code: 2, message: /--compress=lz4 to be one of: zstd, gzip/ },
  {
    name: 'gzip level out of range',
    args: () => ['backup', '--pgdata', A.pgdata, '--to', join(work, 'gz'), '--compress', 'gzip', '--level', '12'],
    code: 2,
    message: /gzip levels are 1 to 9/,
    hint: /--level 1 to 9/,
  },
  {
    name: 'negative duration',
    args: () => ['upgrade', '--pgdata', S.pgdata, '--max-transaction-age', '-5'],
    code: 2,
    message: /max-transaction-age.*greater than or equal to 0/,
  },
  { name: 'zero jobs', args: () => ['upgrade', '--pgdata', S.pgdata, '--jobs', '0'], code: 2, message: /--jobs.*greater than or equal to 1/ },
  { name: 'version below 10', args: () => ['upgrade', '--pgdata', S.pgdata, '--to-version', '5'], code: 2, message: /greater than or equal to 10/ },
  {
    name: 'exclusive flags',
    args: () => ['upgrade', '--pgdata', S.pgdata, '--backup-to', join(work, 'bk'), '--no-backup'],
    code: 2,
    message: /--no-backup=true cannot also be provided when using --backup-to/,
  },
  { name: 'unknown command', args: () => ['bogus'], code: 2, message: /command "bogus" not found/, hint: /pgscale --help/ },
  {
    name: 'backup --dry-run by DSN over TCP with PGPASSWORD',
    args: () => ['backup', '--bindir', B(), '--dsn', dsnA(), '--to', join(work, 'dry-by-dsn'), '--dry-run'],
    opts: withPassword,
    code: 0,
    message: /./,
    stdout: /# pgscale plan: backup/,
  },
  {
    name: 'backup by DSN with a wrong password in the DSN',
    args: () => ['backup', '--bindir', B(), '--dsn', `postgresql://${A.superuser}:${SECRETS.dsn}@127.0.0.1:${A.port}/postgres`, '--to', join(work, 'b')],
    code: 4,
    message: /password authentication failed/,
  },
  { name: 'unexpected argument', args: () => ['runs', 'extra-arg'], code: 2, message: /command "runs extra-arg" not found|Unexpected argument: extra-arg/ },
  { name: '--host-root that does not exist', args: () => ['detect', '--host-root', join(work, 'no-root')], code: 2, message: /No directory found/ },
  { name: 'malformed host facts', args: () => ['detect', '--host-root', hostFixture('malformed-cgroup-cpu')], code: 2, message: /cpu/i },

  // replicas, tablespaces, restores: the commands added since the first table
  {
    name: 'replica add of a data directory that does not exist',
    args: () => ['replica', 'add', '--pgdata', join(work, 'no-such-data'), '--host', 'local', '--replica-pgdata', join(work, 'r')],
    code: 2,
    message: /data directory .*no-such-data does not exist/,
  },
  {
    name: 'replica add of a directory that is not a cluster',
    args: () => ['replica', 'add', '--pgdata', join(work, 'not-a-backup'), '--host', 'local', '--replica-pgdata', join(work, 'r')],
    code: 2,
    message: /not a PostgreSQL data directory/,
  },
  { name: 'replica list of nothing', args: () => ['replica', 'list', '--pgdata', join(work, 'no-such-data')], code: 2, message: /does not exist/ },
  {
    name: 'replica remove of nothing',
    args: () => ['replica', 'remove', '--pgdata', join(work, 'no-such-data'), '--host', 'local', '--replica-pgdata', join(work, 'r'), '--yes'],
    code: 2,
    message: /does not exist/,
  },
  {
    name: 'replica add without --host',
    args: () => ['replica', 'add', '--pgdata', A.pgdata, '--replica-pgdata', join(work, 'r')],
    code: 2,
    message: /Missing required flag host/,
  },
  {
    name: 'tablespaces place with an unknown tier',
    args: () => ['tablespaces', 'place', '--pgdata', A.pgdata, '--volume', `${work}=lukewarm`],
    code: 2,
    message: /unknown tier "lukewarm"/,
    hint: /hot, warm, cold/,
  },
  { name: 'tablespaces show of nothing', args: () => ['tablespaces', 'show', '--pgdata', join(work, 'no-such-data')], code: 2, message: /does not exist/ },
  { name: 'tablespaces sample of nothing', args: () => ['tablespaces', 'sample', '--pgdata', join(work, 'no-such-data')], code: 2, message: /does not exist/ },
  {
    name: 'backup restore of nothing',
    args: () => ['backup', 'restore', join(work, 'no-such-backup'), '--to', join(work, 'restored')],
    code: 2,
    message: /no backup directory/,
  },
  {
    name: 'backup restore of a directory that is not a backup',
    args: () => ['backup', 'restore', join(work, 'not-a-backup'), '--to', join(work, 'restored')],
    code: 2,
    message: /is not a complete pgscale backup: no manifest\.json/,
    hint: /pgscale backup --to/,
  },
  {
    name: 'backup remove of a directory that is not a backup',
    args: () => ['backup', 'remove', join(work, 'not-a-backup'), '--yes'],
    code: 2,
    message: /no manifest\.json/,
  },
  {
    name: 'physical backup with --exclude-database',
    args: () => ['backup', '--pgdata', A.pgdata, '--to', join(work, 'b'), '--method', 'physical', '--exclude-database', 'x'],
    code: 2,
    message: /a physical backup copies the whole cluster/,
  },
  {
    name: '--jobs with a dumpall backup',
    args: () => ['backup', '--pgdata', A.pgdata, '--to', join(work, 'b'), '--jobs', '2'],
    code: 2,
    message: /--jobs applies to --method parallel/,
    hint: /--method parallel/,
  },
  {
    name: 'upgrade --replicas not a method',
    args: () => ['upgrade', '--pgdata', S.pgdata, '--replicas', 'sometimes'],
    code: 2,
    message: /to be one of: rsync, rebuild, leave/,
  },
  {
    name: 'upgrade --replica without a host',
    args: () => ['upgrade', '--pgdata', S.pgdata, '--replica', 'nohostpart'],
    code: 2,
    message: /expected HOST:\/absolute\/pgdata/,
    hint: /ssh destination/,
  },
  {
    name: 'resume --dry-run of an unknown run',
    args: () => ['resume', '20260101T000000-nosuch-000000', '--dry-run'],
    code: 2,
    message: /no run "20260101T000000-nosuch-000000"/,
    hint: /pgscale runs/,
  },

  // tune inputs
  {
    name: '--memory 0 suggests nothing that fails',
    args: () => ['tune', '--pg-version', '17', '--memory', '0'],
    code: 2,
    message: /--memory 0: memory must be more than 0/,
    hint: /^hint: (?!.*\b0GB).*--memory 64GB/,
  },
  { name: '--memory 0GB', args: () => ['tune', '--pg-version', '17', '--memory', '0GB'], code: 2, message: /more than 0/, hint: /--memory 64GB/ },
  { name: 'negative memory', args: () => ['tune', '--pg-version', '17', '--memory', '-5GB'], code: 2, message: /--memory -5GB: not a size/ },
  { name: 'memory without a unit', args: () => ['tune', '--pg-version', '17', '--memory', '16'], code: 2, message: /give a unit/, hint: /--memory 16GB/ },
  { name: 'memory with an unknown unit', args: () => ['tune', '--pg-version', '17', '--memory', '64XB'], code: 2, message: /unknown unit "XB"/ },
  { name: 'too little memory', args: () => ['tune', '--pg-version', '17', '--memory', '100MB'], code: 2, message: /at least 256MB/, hint: /256MB or more/ },
  { name: 'negative cpus', args: () => ['tune', '--pg-version', '17', '--cpus', '-1'], code: 2, message: /--cpus -1: not a whole number/ },
  { name: 'unknown version', args: () => ['tune', '--pg-version', '99'], code: 2, message: /unknown --pg-version 99|--pg-version 99/ },
  { name: 'unknown format', args: () => ['tune', '--pg-version', '17', '--format', 'xml'], code: 2, message: /--format=xml to be one of/ },
  { name: 'unknown profile', args: () => ['tune', '--pg-version', '17', '--profile', 'nosuch'], code: 2, message: /nosuch/ },
  { name: '--restore with --apply', args: () => ['tune', '--pgdata', A.pgdata, '--restore', '--apply'], code: 2, message: /--restore takes no --apply/ },
  { name: 'tune without a cluster', opts: withPassword, args: () => ['tune'], code: 2, message: /which cluster\?/, hint: /--pgdata/ },
  {
    name: "tune --pg-version not the cluster's",
    args: () => ['tune', '--pgdata', A.pgdata, '--pg-version', '16'],
    code: 2,
    message: /does not match the cluster/,
  },
  {
    name: 'tune --dry-run changes nothing',
    args: () => ['tune', '--pgdata', A.pgdata, '--bindir', B(), '--dry-run', '--memory', '1GB', '--cpus', '2', '--storage', 'ssd'],
    code: 0,
    message: /./,
    stdout: /# pgscale plan: tune/,
  },

  // clusters that are not there, not running, not readable
  {
    name: 'data directory that does not exist',
    args: () => ['backup', '--pgdata', join(work, 'no-such-data'), '--to', join(work, 'b')],
    code: 2,
    message: /data directory .*no-such-data does not exist/,
    hint: /pgscale detect/,
  },
  {
    name: 'data directory that is a file',
    args: () => ['wal', 'move', '--pgdata', join(work, 'pgpass'), '--to', join(work, 'w')],
    code: 2,
    message: /is not a directory/,
  },
  {
    name: 'directory that is not a cluster',
    args: () => ['wal', 'move', '--pgdata', join(work, 'not-a-backup'), '--to', join(work, 'w')],
    code: 2,
    message: /not a PostgreSQL data directory/,
  },
  {
    name: 'backup of a stopped cluster',
    args: () => ['backup', '--pgdata', S.pgdata, '--to', join(work, 'b')],
    code: 3,
    message: /is not running/,
    hint: /start it first/,
  },
  {
    name: 'upgrade of a stopped cluster',
    args: () => ['upgrade', '--pgdata', S.pgdata, '--old-bindir', S.bindir, '--new-bindir', A.bindir, '--to-version', '17', '--dry-run'],
    code: 3,
    message: /not running/,
  },
  {
    name: 'unreachable server, DSN with a password',
    opts: withPassword,
    args: () => ['backup', '--bindir', B(), '--dsn', secretDsn(), '--to', join(work, 'b')],
    code: 4,
    message: /cannot connect to PostgreSQL at u@127\.0\.0\.1:1\/db/,
    hint: /port/,
  },
  {
    name: 'DSN that is not one',
    opts: withPassword,
    args: () => ['backup', '--bindir', B(), '--dsn', 'this is = not a dsn =', '--to', join(work, 'b')],
    code: 2,
    message: /--dsn is not a valid connection string/,
    hint: /PGPASSFILE/,
  },
  {
    name: 'DSN with an impossible port',
    args: () => ['backup', '--bindir', B(), '--dsn', 'host=/tmp port=99999', '--to', join(work, 'b')],
    code: 2,
    message: /invalid port "99999"/,
  },
  {
    name: 'data directory another user cannot read',
    args: () => ['backup', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(work, 'b')],
    opts: nobodyOpts,
    skip: nobodySkip(),
    code: 2,
    message: /cannot read data directory .*: permission denied/,
    hint: /root or as the data directory's owner/,
  },

  // wal move
  {
    name: 'wal move without a target',
    args: () => ['wal', 'move', '--pgdata', A.pgdata],
    code: 2,
    message: /where to\?/,
    hint: /--to DIR .* or --to-data-dir/,
  },
  {
    name: 'wal move with both targets',
    args: () => ['wal', 'move', '--pgdata', A.pgdata, '--to', join(work, 'w'), '--to-data-dir'],
    code: 2,
    message: /exclude each other/,
  },
  { name: 'wal move without a cluster', args: () => ['wal', 'move', '--to', join(work, 'w')], code: 2, message: /which cluster\?/, hint: /--pgdata DIR/ },
  {
    name: 'wal move into the data directory',
    args: () => ['wal', 'move', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(A.pgdata, 'wal2')],
    code: 2,
    message: /inside the data directory/,
    hint: /--to-data-dir/,
  },
  {
    name: 'wal move --dry-run onto a non-empty directory',
    args: () => ['wal', 'move', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(work, 'not-a-backup'), '--dry-run'],
    code: 3,
    message: /checks failed/,
    hint: /plan is shown above/,
    blockedPlan: true,
  },
  {
    name: 'wal move already in the data directory',
    args: () => ['wal', 'move', '--pgdata', A.pgdata, '--bindir', B(), '--to-data-dir'],
    code: 3,
    message: /already in the data directory/,
  },

  // backup
  {
    name: 'backup --dry-run changes nothing',
    args: () => ['backup', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(work, 'dry-dest'), '--dry-run'],
    code: 0,
    message: /./,
    stdout: /# pgscale plan: backup/,
  },
  {
    name: 'backup --dry-run as the postgres OS user with USER unset connects as that user',
    args: () => ['backup', '--bindir', B(), '--dsn', `host=${A.socketDir} port=${A.port}`, '--to', join(work, 'dry-as-postgres'), '--dry-run'],
    opts: () => ({ asUser: serverUser, env: { USER: undefined, LOGNAME: undefined, HOME: serverUser.home, PGUSER: undefined } }),
    skip: !isRoot() ? 'needs root to become postgres' : !cliRunnableBy(serverUser) && "the checkout is out of the postgres account's reach",
    code: 0,
    message: /./,
    stdout: /# pgscale plan: backup/,
  },
  {
    name: 'backup onto an existing backup',
    args: () => ['backup', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(work, 'backups', 'good')],
    code: 3,
    message: /checks failed/,
  },
  {
    name: 'backup --dry-run onto an existing backup',
    args: () => ['backup', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(work, 'backups', 'good'), '--dry-run'],
    code: 3,
    message: /checks failed/,
    hint: /plan is shown above/,
    blockedPlan: true,
  },
  {
    name: 'backup verify of nothing',
    args: () => ['backup', 'verify', join(work, 'backups', 'none')],
    code: 2,
    message: /no backup directory/,
    hint: /pgscale backup --to/,
  },
  {
    name: 'backup verify of a file',
    opts: withPassword,
    args: () => ['backup', 'verify', join(work, 'pgpass')],
    code: 2,
    message: /is a file, not a backup directory/,
    hint: /not a file in it/,
  },
  {
    name: 'backup verify of a directory that is not a backup',
    args: () => ['backup', 'verify', join(work, 'not-a-backup')],
    code: 2,
    message: /is not a pgscale backup: it holds no manifest\.json/,
    hint: /pgscale backup --to/,
  },
  {
    name: 'backup verify of an unfinished backup',
    args: () => ['backup', 'verify', join(work, 'backups', 'unfinished.partial')],
    code: 2,
    message: /not a pgscale backup/,
    hint: /never finished/,
  },
  {
    name: 'backup verify of its name without .partial',
    args: () => ['backup', 'verify', join(work, 'backups', 'unfinished')],
    code: 2,
    message: /no backup directory/,
    hint: /unfinished backup/,
  },
  {
    name: 'backup verify of a damaged backup',
    args: () => ['backup', 'verify', join(work, 'backups', 'damaged')],
    code: 3,
    message: /is damaged/,
    hint: /take a new backup/,
  },
  { name: 'backup verify of a good backup', args: () => ['backup', 'verify', join(work, 'backups', 'good')], code: 0, message: /./, stdout: /^ok: / },

  // runs, resume, rollback
  {
    name: 'resume of a path',
    opts: withPassword,
    args: () => ['resume', '../../etc'],
    code: 2,
    message: /"\.\.\/\.\.\/etc" is not a run id/,
    hint: /pgscale runs/,
  },
  { name: 'rollback of a path', args: () => ['rollback', '../../etc', '--dry-run'], code: 2, message: /not a run id/ },
  { name: 'rollback of an absolute path', args: () => ['rollback', '/etc/passwd'], code: 2, message: /not a run id/ },
  {
    name: 'resume of an unknown run',
    args: () => ['resume', '20990101T000000-backup-000000'],
    code: 2,
    message: /no run "20990101T000000-backup-000000"/,
    hint: /same --state-dir/,
  },
  { name: 'rollback of an unknown run', args: () => ['rollback', 'nosuch', '--state-dir', join(work, 'state-empty')], code: 2, message: /no run "nosuch"/ },
  {
    name: 'resume with no run to resume',
    args: () => ['resume', '--state-dir', join(work, 'state-empty')],
    code: 3,
    message: /no unfinished run/,
    hint: /pgscale runs/,
  },
  {
    name: 'rollback --dry-run with no run',
    args: () => ['rollback', '--dry-run', '--state-dir', join(work, 'state-never-made')],
    code: 3,
    message: /no unfinished run/,
  },
  {
    name: 'resume of a completed run',
    args: () => ['resume', readdirSync(join(work, 'state-setup', 'runs'))[0]!, '--state-dir', join(work, 'state-setup')],
    code: 3,
    message: /already completed/,
    hint: /new plan/,
  },
  {
    name: 'resume of a run without plan.json',
    args: () => ['resume', '20260101T000000-backup-abcdef', '--state-dir', join(work, 'state-damaged')],
    code: 3,
    message: /is damaged: .* has no plan\.json/,
    hint: /remove/,
  },
  {
    name: 'runs shows a damaged run as such',
    args: () => ['runs', '--state-dir', join(work, 'state-damaged')],
    code: 0,
    message: /./,
    stdout: /damaged[\s\S]*problem: .*has no plan\.json[\s\S]*next: check the cluster/,
  },
  {
    name: 'runs of a state dir that does not exist creates none',
    args: () => ['runs', '--state-dir', join(work, 'state-never-made')],
    code: 0,
    message: /./,
    stdout: /no runs in/,
  },

  // plan files
  { name: 'plan show of a missing file', args: () => ['plan', 'show', join(work, 'plans', 'none.json')], code: 2, message: /No file found at/ },
  { name: 'plan show of a directory', args: () => ['plan', 'show', join(work, 'plans')], code: 2, message: /is not a file/ },
  {
    name: 'plan show of a file that is not JSON',
    args: () => ['plan', 'show', join(work, 'plans', 'not-json.json')],
    code: 2,
    message: /is not JSON/,
    hint: /new plan/,
  },
  {
    name: 'plan show of JSON that is not a plan',
    args: () => ['plan', 'show', join(work, 'plans', 'not-a-plan.json')],
    code: 2,
    message: /does not match the plan schema/,
  },
  {
    name: 'plan show of an edited summary',
    args: () => ['plan', 'show', join(work, 'plans', 'edited-summary.json')],
    code: 3,
    message: /was edited after it was made[\s\S]*summary/,
    hint: /new plan/,
  },
  {
    name: 'plan show of an edited step',
    opts: withPassword,
    args: () => ['plan', 'show', join(work, 'plans', 'edited-step.json')],
    code: 3,
    message: /step dump: its kind or parameters differ/,
  },
  { name: 'plan show of a good plan', args: () => ['plan', 'show', join(work, 'plans', 'good.json')], code: 0, message: /./, stdout: /# pgscale plan: backup/ },
  { name: 'apply of a missing file', args: () => ['apply', join(work, 'plans', 'none.json')], code: 2, message: /No file found at/ },
  {
    name: 'apply of an edited plan',
    args: () => ['apply', join(work, 'plans', 'edited-step.json'), '--yes'],
    code: 3,
    message: /was edited after it was made/,
  },
  {
    name: 'apply of a consistently edited plan (a path replaced everywhere)',
    args: () => ['apply', join(work, 'plans', 'consistent-edit.json'), '--yes'],
    code: 3,
    message: /was edited after it was made:\n {2}- its content does not match its seal/,
    hint: /new plan/,
  },
  {
    name: 'plan show of a consistently edited plan',
    args: () => ['plan', 'show', join(work, 'plans', 'consistent-edit.json')],
    code: 3,
    message: /its content does not match its seal/,
  },
  {
    name: 'apply of a plan sealed by another host or user',
    args: () => ['apply', join(work, 'plans', 'sealed-elsewhere.json'), '--yes'],
    code: 3,
    message: /cannot be verified: its seal was made with key 0123456789abcdef/,
    hint: /make the plan on this host/,
  },
  {
    name: 'plan show of a plan sealed elsewhere shows it, with a warning',
    args: () => ['plan', 'show', join(work, 'plans', 'sealed-elsewhere.json')],
    code: 0,
    message: /./,
    stdout: /# pgscale plan: backup/,
  },
  {
    name: 'apply of a plan writable by everyone',
    opts: withPassword,
    args: () => ['apply', join(work, 'plans', 'loose.json'), '--yes'],
    code: 3,
    message: /writable by every user \(mode 666\)/,
    hint: /chmod go-w/,
  },
  {
    name: 'apply of a plan writable by its group',
    args: () => ['apply', join(work, 'plans', 'group-writable.json'), '--yes'],
    code: 3,
    message: /writable by its group/,
  },
  {
    name: 'apply of a plan owned by another user',
    args: () => ['apply', join(work, 'plans', 'foreign.json'), '--yes'],
    skip: !nobody && 'needs root',
    code: 3,
    message: /belongs to another user/,
    hint: /install -m 600/,
  },
  {
    name: 'apply of a plan whose checks fail now',
    args: () => ['apply', join(work, 'plans', 'drift.json'), '--yes'],
    code: 3,
    message: /checks fail now|changed since the plan/,
  },
  {
    name: 'apply --dry-run shows the plan and changes nothing',
    args: () => ['apply', join(work, 'plans', 'good.json'), '--dry-run'],
    code: 0,
    message: /./,
    stdout: /# pgscale plan: backup/,
  },

  // playbooks
  {
    name: 'playbook that does not exist',
    args: () => ['playbook', 'run', join(work, 'playbooks', 'none.yaml')],
    code: 2,
    message: /cannot read playbook .*: no such file/,
    hint: /playbooks\//,
  },
  { name: 'playbook that is not YAML', args: () => ['playbook', 'run', join(work, 'playbooks', 'bad-yaml.yaml')], code: 2, message: /is not valid YAML/ },
  {
    name: 'playbook with an unknown command',
    args: () => ['playbook', 'run', join(work, 'playbooks', 'bad-schema.yaml')],
    code: 2,
    message: /does not match the playbook schema/,
    hint: /detect, backup, upgrade/,
  },
  {
    name: 'playbook whose DSN holds a password, dry run',
    opts: withPassword,
    args: () => ['playbook', 'run', join(work, 'playbooks', 'secret.yaml'), '--dry-run'],
    code: 4,
    message: /stopped at step 1 \(backup\), exit code 4/,
  },
  {
    name: 'playbook with a detect step, dry run',
    args: () => ['playbook', 'run', join(work, 'playbooks', 'detect-tune.yaml'), '--dry-run'],
    code: 0,
    message: /./,
    stdout: /# pgscale plan: tune/,
  },
];

describe('bad and unusual input: exit code, message, hint, JSON shape, no secret, nothing changed', { concurrency: 4 }, () => {
  test(`the table has ${rows.length} rows`, () => assert.ok(rows.length >= 60));
  for (const row of rows) test(row.name, { skip: row.skip || false }, () => check(row));
});

describe('--plan-out writes a plan for review and changes nothing', () => {
  test('backup --plan-out without --dry-run: the plan is written (0600, sealed), no backup, no run journal; applying it makes the backup', async () => {
    const dir = join(work, 'plan-out');
    mkdirSync(dir);
    const planFile = join(dir, 'backup.plan.json');
    const runs = join(dir, 'state');
    const args = ['backup', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(dir, 'dest'), '--state-dir', runs];
    const files = [...clusterFiles(A), `lock A ${existsSync(lockOf(A))}`];
    const planned = await cli([...args, '--plan-out', planFile]);
    assert.equal(planned.code, 0, show(planned));
    assert.ok(planned.stderr.includes(`plan written to ${planFile}; nothing was changed; apply it with \`pgscale apply ${planFile}\``), show(planned));
    assert.match(planned.stdout, /# pgscale plan: backup/);
    assert.equal(statSync(planFile).mode & 0o777, 0o600);
    assert.ok((JSON.parse(readFileSync(planFile, 'utf8')) as { seal?: unknown }).seal, 'the plan is sealed');
    assert.deepEqual(readdirSync(dir), ['backup.plan.json'], 'no backup (nor its .partial), no state directory: no run journal');
    assert.deepEqual([...clusterFiles(A), `lock A ${existsSync(lockOf(A))}`], files, 'the cluster as it was');
    const applied = await cli(['apply', planFile, '--state-dir', runs, '--yes']);
    assert.equal(applied.code, 0, show(applied));
    assert.ok(existsSync(join(dir, 'dest', 'manifest.json')), 'the reviewed plan made the backup');
    assert.equal(readdirSync(join(runs, 'runs')).length, 1);
  });
});

describe('one lock per cluster, whatever path leads to it; the way out of a killed run', () => {
  test('a killed run holds the cluster against every path and state dir; dry runs of resume and rollback change nothing; rollback frees it', async () => {
    const lk = join(work, 'locks');
    mkdirSync(lk);
    const X = join(lk, 'state-x');
    const Y = join(lk, 'state-y');
    const killed = await startCli(['backup', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(lk, 'b1'), '--state-dir', X], {
      PGSCALE_FAILPOINT: 'dump:applied',
    }).done;
    assert.equal(killed.signal, 'SIGKILL', show(killed));
    assert.ok(existsSync(lockOf(A)), 'the killed run holds the host-wide lock of the cluster');
    const [id] = readdirSync(join(X, 'runs'));
    const refusedBy = [
      ['backup', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(lk, 'b2'), '--state-dir', Y],
      ['backup', '--dsn', dsnA(), '--bindir', B(), '--to', join(lk, 'b3'), '--state-dir', Y],
      ['backup', '--dsn', dsnA(), '--bindir', B(), '--to', join(lk, 'b4'), '--state-dir', X],
      ['tune', '--pgdata', A.pgdata, '--bindir', B(), '--apply', '--memory', '1GB', '--cpus', '2', '--storage', 'ssd', '--state-dir', Y],
      ['wal', 'move', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(lk, 'wal'), '--force', '--dry-run', '--state-dir', Y],
    ];
    const before = [treeSnapshot(lk), readFileSync(lockOf(A), 'utf8')];
    for (const args of refusedBy) {
      const o = args.includes('--dsn') ? withPassword() : {};
      const [text, json] = await Promise.all([cli(args, o), cli([...args, '--json'], o)]);
      assert.equal(text.code, 3, `${args.join(' ')}: ${show(text)}`);
      assert.match(text.stderr, new RegExp(`run ${id} on this cluster \\(system:\\d+\\) did not finish \\(killed\\)`));
      assert.match(
        text.stderr,
        new RegExp(`hint: finish it with \`pgscale resume ${id} --state-dir ${X}\` or undo it with \`pgscale rollback ${id} --state-dir ${X}\``),
      );
      assert.equal(parseJson<{ error: { exitCode: number } }>(json).error.exitCode, 3);
      assertNoSecret(args[0]!, text.stdout, text.stderr, json.stdout);
    }
    const dryResume = await cli(['resume', id!, '--state-dir', X, '--dry-run']);
    assert.equal(dryResume.code, 0, show(dryResume));
    assert.match(dryResume.stdout, /would:\n {2}1\. .*\(dump\): verify, then run if needed/);
    const dryRollback = await cli(['rollback', '--state-dir', X, '--dry-run', '--json']);
    assert.equal(dryRollback.code, 0, show(dryRollback));
    assert.deepEqual(
      parseJson<{ dryRun: { id: string }[] }>(dryRollback).dryRun.map((s) => s.id),
      ['dump'],
    );
    assert.deepEqual([treeSnapshot(lk), readFileSync(lockOf(A), 'utf8')], before, "refusals and dry runs changed nothing, the lock is the killed run's");

    const listed = await cli(['runs', '--state-dir', X]);
    assert.match(
      listed.stdout,
      new RegExp(`${id}\\s+killed[\\s\\S]*next: pgscale resume ${id} --state-dir ${X}\\n\\s+next: pgscale rollback ${id} --state-dir ${X}`),
    );
    const undone = await cli(['rollback', id!, '--state-dir', X, '--yes']);
    assert.equal(undone.code, 0, show(undone));
    assert.equal(existsSync(lockOf(A)), false, 'the lock is released');
    assert.equal(existsSync(join(lk, 'b1.partial')), false);
  });

  test('two backups at once, by --pgdata and by --dsn with another state dir: the second is refused while the first runs', async () => {
    const lk = join(work, 'live');
    mkdirSync(lk);
    const held = await holdTableLock(A, 'postgres', 't');
    try {
      const first = startCli(['backup', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(lk, 'first'), '--state-dir', join(lk, 'x')]);
      let ended: CliResult | undefined;
      void first.done.then((r) => (ended = r));
      await waitFor(
        'the first backup to wait at the table lock',
        async () => {
          if (ended) throw new Error(`the first backup ended early: ${show(ended)}`);
          return (await lockWaiters(A)) > 0;
        },
        60_000,
      );
      for (const args of [
        ['backup', '--dsn', dsnA(), '--bindir', B(), '--to', join(lk, 'second'), '--state-dir', join(lk, 'y')],
        ['backup', '--pgdata', A.pgdata, '--bindir', B(), '--to', join(lk, 'third'), '--state-dir', join(lk, 'z')],
      ]) {
        const second = await cli(args, args.includes('--dsn') ? withPassword() : {});
        assert.equal(second.code, 3, show(second));
        assert.match(second.stderr, /another pgscale run \(\S+, pid \d+\) is working on this cluster \(system:\d+\)/);
        assert.match(second.stderr, /hint: wait for it to finish/);
        assert.equal(existsSync(join(lk, 'second')) || existsSync(join(lk, 'second.partial')) || existsSync(join(lk, 'third.partial')), false);
      }
      await held.release();
      const done = await first.done;
      assert.equal(done.code, 0, show(done));
    } finally {
      await held.release();
    }
    assert.equal(existsSync(lockOf(A)), false, 'no lock left');
    // a whole run by DSN with PGPASSWORD: its plan, journal and audit log are checked for the password at the end
    const byDsn = await cli(
      ['backup', '--dsn', dsnA(), '--bindir', B(), '--to', join(lk, 'by-dsn'), '--state-dir', join(lk, 'y'), '--verbose'],
      withPassword(),
    );
    assert.equal(byDsn.code, 0, show(byDsn));
    assertNoSecret('backup by DSN', byDsn.stdout, byDsn.stderr);
    assert.ok(readdirSync(join(lk, 'y', 'runs')).length === 1);
    assert.equal(existsSync(lockOf(A)), false, 'no lock left');
  });
});

describe('no lock-out: a tune --restore the server rejects undoes itself, and the cluster stays usable', () => {
  test('an invalid value in postgresql.auto.conf: restore exits 4 with the reason, leaves nothing open; after the fix it restores', async () => {
    const T = join(work, 'state-tune');
    const hw = ['--memory', '1GB', '--cpus', '2', '--storage', 'ssd'];
    const applied = await cli(['tune', '--pgdata', A.pgdata, '--bindir', B(), '--yes', ...hw, '--state-dir', T]);
    assert.equal(applied.code, 0, show(applied));
    const auto = join(A.pgdata, 'postgresql.auto.conf');
    const autoBefore = readFileSync(auto);
    appendFileSync(auto, "work_mem = 'bogus'\n");
    const files = clusterFiles(A);
    const failed = await cli(['tune', '--pgdata', A.pgdata, '--bindir', B(), '--restore', '--yes', '--state-dir', T]);
    assert.equal(failed.code, 4, show(failed));
    assert.match(failed.stderr, /work_mem/);
    assert.match(failed.stderr, /what the run had done is undone/);
    assert.doesNotMatch(failed.stderr, /ENOENT/);
    assert.deepEqual(clusterFiles(A), files, 'every file as before the restore');
    assert.equal(existsSync(lockOf(A)), false, 'no lock held');
    const listed = parseJson<{ status: string; next: string[] }[]>(await cli(['runs', '--state-dir', T, '--json']));
    assert.deepEqual(
      listed.map((r) => r.status),
      ['completed', 'rolled-back'],
    );
    writeFileSync(auto, autoBefore);
    const restored = await cli(['tune', '--pgdata', A.pgdata, '--bindir', B(), '--restore', '--yes', '--state-dir', T]);
    assert.equal(restored.code, 0, show(restored));
    assert.equal(existsSync(join(A.pgdata, 'conf.d', 'pgscale.conf')), false, 'the tuned include is gone again');
    assert.equal(existsSync(lockOf(A)), false);
  });
});

describe('no lock-out: tune --apply on a data directory root owns', () => {
  test(
    'the server refuses to validate as root: the files are put back, exit 4, no lock held, and the same tune runs once the owner is right',
    { skip: !isRoot() && 'needs root' },
    async () => {
      const T = join(work, 'state-root-owned');
      const args = ['tune', '--pgdata', S.pgdata, '--bindir', S.bindir, '--apply', '--memory', '1GB', '--cpus', '2', '--storage', 'ssd', '--state-dir', T];
      const owned = (uid: number, gid: number) => {
        for (const f of [S.pgdata, ...readdirSync(S.pgdata, { recursive: true }).map((e) => join(S.pgdata, String(e)))]) chownSync(f, uid, gid);
      };
      owned(0, 0);
      try {
        const files = clusterFiles(S);
        const res = await cli(args);
        assert.equal(res.code, 4, show(res));
        assert.match(res.stderr, /hint: .*(run the same command again|fix)/);
        assert.deepEqual(clusterFiles(S), files, 'every file as before');
        assert.equal(existsSync(lockOf(S)), false, 'no lock held');
      } finally {
        owned(serverUser.uid, serverUser.gid);
      }
      const again = await cli(args);
      assert.equal(again.code, 0, show(again));
      assert.equal(existsSync(lockOf(S)), false);
    },
  );
});

describe('what pgscale wrote', () => {
  test('no file under the work directory (state dirs, plans, journals, audit logs, backups) holds a secret', () => {
    assert.ok(readdirSync(work).includes('state-tune'), 'the runs above wrote their state here');
    // the inputs hold the secrets they were given; nothing pgscale wrote does
    for (const secret of Object.values(SECRETS)) {
      const found = filesContaining(work, secret).filter((f) => !f.endsWith('/pgpass') && !f.endsWith('/secret.yaml'));
      assert.deepEqual(found, [], `no file written holds ${secret}`);
    }
  });
});
