/**
 * Benchmark: the seed's `pg_dumpall | gzip` and its `gunzip | psql` restore against each
 * `pgscale backup --method` and `pgscale backup restore`, on one cluster of several pgbench
 * databases, in one run, on one machine, with the same client programs (the test bed's 17).
 *
 * Run (as root: the test bed runs servers as `postgres`), after `npx tsc -p .`:
 *
 *     node_modules/.bin/node dist/bench/backup.js [--gb 2] [--databases 4] [--version 17]
 *
 * --gb: total size of the databases (default 2; pgbench scale 1 ≈ 15 MB), split evenly over
 * --databases (default 4). Prints one table: backup wall time (pgscale: the whole command, with its
 * row counts, manifest and verification), database bytes per second, output size, restore wall
 * time (the seed: initdb, start, gunzip | psql; pgscale: `backup restore --to`, which also starts,
 * loads, compares row counts and stops), each as a ratio to the seed. Exits 1 if the cluster cannot
 * be set up. The clusters and every output are removed at the end.
 *
 * pgBackRest (when `pgbackrest` is on PATH, e.g. Debian's package): the cluster archives its WAL into a
 * local repository (archive_mode on for every method), a full backup with --process-max = CPUs and
 * zstd, and a restore into a new data directory, started until recovery has ended.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, chownSync, existsSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createCluster, freePort, mkdirOwned, scratchDir, serverUser, teardownAll, TestCluster, type TestCluster as Cluster } from '../test/helpers/testbed.js';
import { cliEntry, repoRoot } from '../test/helpers/paths.js';
import { effectiveArgv, isRoot, shellQuote } from '../src/runner.js';
import { asServer, asServerArgv } from './sources.js';

const { values: opts } = parseArgs({
  options: { gb: { type: 'string', default: '2' }, databases: { type: 'string', default: '4' }, version: { type: 'string', default: '17' } },
});
const totalGb = Number(opts.gb);
const dbCount = Math.max(1, Number(opts.databases));
const version = Number(opts.version);
const MB = 1e6;
const fmt = (n: number, digits = 1) => n.toFixed(digits);

interface Timed {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

function run(program: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd = repoRoot): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(program, args, { cwd, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, seconds: (performance.now() - started) / 1000 }));
  });
}

async function must(what: string, p: Promise<Timed>): Promise<Timed> {
  const r = await p;
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.stderr.slice(-2000)}${r.stdout.slice(-2000)}`);
  return r;
}

/** A shell command line running a program as the server account, each argument quoted. */
const asServerShell = (program: string, args: string[]) => effectiveArgv(asServer(program, args)).map(shellQuote).join(' ');

function duBytes(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((a, e) => a + duBytes(join(path, e)), 0);
}

interface Row {
  name: string;
  backupSeconds: number;
  outputBytes: number;
  restoreSeconds: number;
}

function table(rows: Row[], dbBytes: number): string {
  const seed = rows[0]!;
  const head = ['method', 'backup s', 'DB MB/s', 'throughput ×seed', 'output MB', 'size ×seed', 'restore s', 'restore speed ×seed'];
  const body = rows.map((r) => [
    r.name,
    fmt(r.backupSeconds),
    fmt(dbBytes / r.backupSeconds / MB),
    fmt(seed.backupSeconds / r.backupSeconds, 2),
    fmt(r.outputBytes / MB),
    fmt(r.outputBytes / seed.outputBytes, 2),
    fmt(r.restoreSeconds),
    fmt(seed.restoreSeconds / r.restoreSeconds, 2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  return [line(head), `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`, ...body.map(line)].join('\n');
}

const pgbackrest = ['/usr/bin/pgbackrest', '/usr/local/bin/pgbackrest'].find((p) => existsSync(p));
let backrestNote = pgbackrest ? '' : 'pgBackRest: not measured (no pgbackrest on PATH: apt-get install pgbackrest)';

/** pgBackRest's configuration: a local repository in a directory of the server account's. */
function pgbackrestConfig(dir: string, cluster: Cluster, cpus: number): string {
  const conf = join(dir, 'pgbackrest.conf');
  writeFileSync(
    conf,
    [
      '[global]',
      `repo1-path=${join(dir, 'repo')}`,
      `log-path=${join(dir, 'log')}`,
      `lock-path=${join(dir, 'lock')}`,
      `spool-path=${join(dir, 'spool')}`,
      'start-fast=y',
      'compress-type=zst',
      'compress-level=3',
      `process-max=${cpus}`,
      'log-level-console=warn',
      '[bench]',
      `pg1-path=${cluster.pgdata}`,
      `pg1-socket-path=${cluster.socketDir}`,
      `pg1-port=${cluster.port}`,
      `pg1-user=${serverUser.name}`,
      '',
    ].join('\n'),
  );
  chownSync(conf, serverUser.uid, serverUser.gid);
  return conf;
}

async function setUp(cpus: number): Promise<{ cluster: Cluster; dbBytes: number; backrestConf: string | undefined }> {
  if (!isRoot()) throw new Error('run as root: the test bed runs the server as postgres');
  const backrestDir = pgbackrest ? scratchDir('pgscale-bench-pgbackrest-') : undefined;
  const backrestConfPath = backrestDir ? join(backrestDir, 'pgbackrest.conf') : undefined;
  const cluster = await createCluster({
    version,
    start: false,
    conf: [
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'max_wal_size = 8GB',
      'checkpoint_timeout = 1h',
      'shared_buffers = 256MB',
      'maintenance_work_mem = 256MB',
      'max_wal_senders = 4',
      ...(backrestConfPath ? ['archive_mode = on', `archive_command = '${pgbackrest} --config=${backrestConfPath} --stanza=bench archive-push %p'`] : []),
    ],
  });
  let backrestConf = backrestDir ? pgbackrestConfig(backrestDir, cluster, cpus) : undefined;
  await cluster.start();
  if (backrestConf) {
    const stanza = await run(...asServerArgv(pgbackrest!, [`--config=${backrestConf}`, '--stanza=bench', 'stanza-create']), {}, '/');
    if (stanza.code !== 0) {
      // e.g. Debian bookworm's 2.45 predates PostgreSQL 17
      backrestNote = `pgBackRest: not measured: stanza-create failed: ${
        stanza.stderr
          .split('\n')
          .find((l) => /ERROR|WARN: unable to check/.test(l))
          ?.trim() ?? stanza.stderr.trim()
      }`;
      backrestConf = undefined;
    }
  }
  const scale = Math.max(1, Math.round((totalGb * 1000) / 15 / dbCount));
  for (let i = 0; i < dbCount; i++) {
    const db = `bench${i}`;
    await cluster.sql(`create database ${db}`);
    process.stderr.write(`pgbench -i -s ${scale} ${db}…\n`);
    const [prog, args] = asServerArgv(join(cluster.bindir, 'pgbench'), [
      '-i',
      '-q',
      '-s',
      String(scale),
      '-I',
      'dtGvp',
      '-h',
      cluster.socketDir,
      '-p',
      String(cluster.port),
      '-U',
      cluster.superuser,
      db,
    ]);
    await must('pgbench -i', run(prog, args, {}, '/'));
  }
  await cluster.sql('checkpoint');
  const dbBytes = Number(await cluster.sql('select sum(pg_database_size(oid)) from pg_database'));
  return { cluster, dbBytes, backrestConf };
}

/** pgBackRest: a full backup, then a restore into a new data directory started until recovery has ended. */
async function pgbackrestRow(conf: string, cluster: Cluster, parent: string): Promise<Row> {
  const backrestVersion = (await run(pgbackrest!, ['version'])).stdout.trim().replace(/^pgBackRest /, '');
  const backup = await must('pgbackrest backup', run(...asServerArgv(pgbackrest!, [`--config=${conf}`, '--stanza=bench', '--type=full', 'backup']), {}, '/'));
  process.stderr.write(`  pgbackrest backup: ${fmt(backup.seconds)} s\n`);
  const repo = join(parent, 'repo', 'backup', 'bench');
  const outputBytes = readdirSync(repo)
    .filter((e) => /F$/.test(e))
    .reduce((a, e) => a + duBytes(join(repo, e)), 0);
  const started = performance.now();
  const pgdata = mkdirOwned(join(parent, 'restored'));
  await must('pgbackrest restore', run(...asServerArgv(pgbackrest!, [`--config=${conf}`, '--stanza=bench', `--pg1-path=${pgdata}`, 'restore']), {}, '/'));
  const port = await freePort();
  const sock = mkdirOwned(join(parent, 'restored-sock'));
  appendFileSync(join(pgdata, 'postgresql.auto.conf'), `port = ${port}\nunix_socket_directories = '${sock}'\nlisten_addresses = ''\narchive_mode = off\n`);
  const restored = new TestCluster(version, cluster.bindir, pgdata, port, sock, join(parent, 'restored.log'));
  await restored.start();
  while ((await restored.sql('select pg_is_in_recovery()')) === 't') await new Promise((r) => setTimeout(r, 100));
  const restoreSeconds = (performance.now() - started) / 1000;
  process.stderr.write(`  pgbackrest restore: ${fmt(restoreSeconds)} s\n`);
  await restored.stop('immediate');
  return {
    name: `pgBackRest ${backrestVersion} full (zst, process-max ${availableParallelism()})`,
    backupSeconds: backup.seconds,
    outputBytes,
    restoreSeconds,
  };
}

/** The seed's restore: a fresh cluster, started, fed `gunzip -c | psql`. */
async function seedRestore(file: string, parent: string, bindir: string): Promise<number> {
  const started = performance.now();
  const pgdata = join(parent, 'seed-restore');
  const sock = mkdirOwned(join(parent, 'seed-sock'));
  const port = await freePort();
  await must(
    'initdb',
    run(...asServerArgv(join(bindir, 'initdb'), ['-D', pgdata, '-U', serverUser.name, '-E', 'UTF8', '--no-locale', '--auth-local=peer']), {}, '/'),
  );
  appendFileSync(join(pgdata, 'postgresql.auto.conf'), `port = ${port}\nunix_socket_directories = '${sock}'\nlisten_addresses = ''\nfsync = off\n`);
  const restored = new TestCluster(version, bindir, pgdata, port, sock, join(parent, 'seed-restore.log'));
  await restored.start();
  const psql = asServerShell(join(bindir, 'psql'), ['-X', '-q', '-h', sock, '-p', String(port), '-d', 'postgres', '-f', '-']);
  await must('gunzip | psql', run('bash', ['-c', `set -o pipefail; gunzip -c ${shellQuote(file)} | ${psql} > /dev/null 2>&1`], {}, '/'));
  const seconds = (performance.now() - started) / 1000;
  await restored.stop('immediate');
  rmSync(pgdata, { recursive: true, force: true });
  return seconds;
}

async function main(): Promise<void> {
  let cluster: Cluster;
  let dbBytes: number;
  let backrestConf: string | undefined;
  const cpus = availableParallelism();
  try {
    ({ cluster, dbBytes, backrestConf } = await setUp(cpus));
  } catch (e) {
    process.stderr.write(`bench: cannot set up the cluster: ${(e as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  const out = scratchDir('pgscale-bench-');
  const env = { PGHOST: cluster.socketDir, PGPORT: String(cluster.port), PGUSER: cluster.superuser, PGDATABASE: 'postgres' };
  const dumpallAsServer = asServerShell(join(cluster.bindir, 'pg_dumpall'), []);
  process.stderr.write(`databases: ${fmt(dbBytes / MB)} MB in ${dbCount} pgbench databases (PostgreSQL ${version}), ${cpus} CPUs\n`);
  // warms the page cache for everyone
  await must('pg_dumpall > /dev/null', run('bash', ['-c', `set -o pipefail; ${dumpallAsServer} > /dev/null`], env, '/'));

  const rows: Row[] = [];
  const seedFile = join(out, 'seed.sql.gz');
  const seedBackup = await must('seed pipeline', run('bash', ['-c', `set -o pipefail; ${dumpallAsServer} | gzip > ${shellQuote(seedFile)}`], env, '/'));
  process.stderr.write(`  seed backup: ${fmt(seedBackup.seconds)} s\n`);
  const seedRestoreSeconds = await seedRestore(seedFile, out, cluster.bindir);
  process.stderr.write(`  seed restore: ${fmt(seedRestoreSeconds)} s\n`);
  rows.push({
    name: 'seed: pg_dumpall \\| gzip; gunzip \\| psql',
    backupSeconds: seedBackup.seconds,
    outputBytes: statSync(seedFile).size,
    restoreSeconds: seedRestoreSeconds,
  });
  rmSync(seedFile);

  for (const method of ['dumpall', 'parallel', 'physical'] as const) {
    const dest = join(out, `backup-${method}`);
    const state = join(out, 'state');
    const b = await must(
      `pgscale backup --method ${method}`,
      run(process.execPath, [
        cliEntry,
        'backup',
        '--pgdata',
        cluster.pgdata,
        '--bindir',
        cluster.bindir,
        '--to',
        dest,
        '--state-dir',
        state,
        '--method',
        method,
        ...(method === 'parallel' ? ['--jobs', String(cpus)] : []),
        '--json',
      ]),
    );
    process.stderr.write(`  pgscale ${method} backup: ${fmt(b.seconds)} s\n`);
    const pgdata = join(out, `restored-${method}`);
    const r = await must(
      `pgscale backup restore (${method})`,
      run(process.execPath, [
        cliEntry,
        'backup',
        'restore',
        dest,
        '--to',
        pgdata,
        '--bindir',
        cluster.bindir,
        '--state-dir',
        state,
        '--jobs',
        String(cpus),
        '--json',
      ]),
    );
    process.stderr.write(`  pgscale ${method} restore: ${fmt(r.seconds)} s\n`);
    rows.push({
      name: `pgscale --method ${method}${method === 'parallel' ? ` --jobs ${cpus}` : ''}`,
      backupSeconds: b.seconds,
      outputBytes: duBytes(dest),
      restoreSeconds: r.seconds,
    });
    rmSync(dest, { recursive: true, force: true });
    rmSync(pgdata, { recursive: true, force: true });
    rmSync(`${pgdata}.tablespaces`, { recursive: true, force: true });
  }

  if (backrestConf) {
    rows.push(await pgbackrestRow(backrestConf, cluster, join(backrestConf, '..')));
  }

  process.stdout.write(`\npgscale backup benchmark: ${fmt(dbBytes / MB)} MB in ${dbCount} databases, PostgreSQL ${version}, ${cpus} CPUs, one run\n\n`);
  process.stdout.write(table(rows, dbBytes) + '\n');
  const ours = rows.filter((r) => r.name.startsWith('pgscale'));
  const best = [...ours].sort((a, b) => a.backupSeconds - b.backupSeconds)[0]!;
  const bestRestore = [...ours].sort((a, b) => a.restoreSeconds - b.restoreSeconds)[0]!;
  process.stdout.write(
    `\ngoals: backup throughput ≥ 3× the seed: ${best.name} ${fmt(rows[0]!.backupSeconds / best.backupSeconds, 2)}× (${rows[0]!.backupSeconds / best.backupSeconds >= 3 ? 'met' : 'NOT met'}); restore ≥ 3× faster: ${bestRestore.name} ${fmt(rows[0]!.restoreSeconds / bestRestore.restoreSeconds, 2)}× (${rows[0]!.restoreSeconds / bestRestore.restoreSeconds >= 3 ? 'met' : 'NOT met'})\n`,
  );
  if (backrestNote) process.stdout.write(backrestNote + '\n');
}

try {
  await main();
} finally {
  teardownAll();
}
