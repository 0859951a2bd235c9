/**
 * Benchmark: `pgscale replica add` against the bare `pg_basebackup` a DBA would type, creating a
 * replica of a ≥ 2 GB primary (pgbench) on a namespace host over ssh — same host pair, same
 * pg_basebackup, same passfile and pg_hba rule, in one run.
 *
 * Run (as root), after `npx tsc -p .`:
 *
 *     node_modules/.bin/node dist/bench/replica.js
 *
 * Environment: PGSCALE_BENCH_SCALE (pgbench scale, default 140 ≈ 2.1 GB), PGSCALE_BENCH_ROUNDS
 * (default 2; each method once per round, alternating which goes first; a checkpoint and sync before
 * each, so that neither pays for dirty pages left by pgbench or the other). Goal: ≤ 1.1× the bare
 * command. pgscale's time is the whole command (plan, checks, slot, passfile, copy, start of the
 * standby, verify until a row written on the primary is read on the replica); the bare command is
 * the copy alone (`pg_basebackup -C -S … -R -X stream -c fast` run over ssh as the owner), so the
 * ratio includes everything pgscale does beyond it. Everything is removed at the end.
 */
import { spawn } from 'node:child_process';
import { chownSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, mkdirOwned, scratchDir, serverUser, teardownAll } from '../test/helpers/testbed.js';
import { createHost } from '../test/helpers/hosts.js';
import { cliEntry, repoRoot } from '../test/helpers/paths.js';
import { isRoot } from '../src/runner.js';
import type { OperationResult } from '../src/operationCommand.js';
import { asServerArgv, stepSeconds } from './sources.js';

const scale = Number(process.env.PGSCALE_BENCH_SCALE ?? 140);
const rounds = Math.max(1, Number(process.env.PGSCALE_BENCH_ROUNDS ?? 2));

interface Timed {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

function run(program: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(program, args, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, seconds: (performance.now() - started) / 1000 }));
  });
}

async function must(what: string, p: Promise<Timed>): Promise<Timed> {
  const r = await p;
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.stderr}`);
  return r;
}

async function main(): Promise<void> {
  if (!isRoot()) throw new Error('run as root: namespace hosts and servers as postgres');
  const host = createHost('bench', 230);
  const c = await createCluster({ version: 17, conf: [`listen_addresses = '${host.localAddress}'`, 'max_wal_size = 4GB'] });
  const base = scratchDir('pgscale-bench-replica-');
  const asServer = (program: string, args: string[]) => run(...asServerArgv(program, args));
  await c.sql(`create role replicator login replication password 'bench-secret'; create database bench`);
  process.stderr.write(`pgbench -i -s ${scale}…\n`);
  await must(
    'pgbench -i',
    asServer(join(c.bindir, 'pgbench'), ['-i', '-q', '-s', String(scale), '-I', 'dtGvp', '-h', c.socketDir, '-p', String(c.port), '-U', c.superuser, 'bench']),
  );
  const bytes = Number(await c.sql('select sum(pg_database_size(oid)) from pg_database'));
  // the same rule for both: pgscale finds it present and adds none
  writeFileSync(
    join(c.pgdata, 'pg_hba.conf'),
    `host replication replicator ${host.address}/32 scram-sha-256\n` + readFileSync(join(c.pgdata, 'pg_hba.conf'), 'utf8'),
  );
  await c.sql('select pg_reload_conf()');
  const passfile = join(base, 'pgpass');
  writeFileSync(passfile, `*:*:replication:replicator:bench-secret\n`, { mode: 0o600 });
  const hostPass = join(host.root, 'bare.pgpass');
  writeFileSync(hostPass, `*:*:replication:replicator:bench-secret\n`, { mode: 0o600 });
  chownSync(hostPass, serverUser.uid, serverUser.gid);
  const ssh = (args: string[]) => run('ssh', ['-F', host.sshConfig, host.name, ...args]);

  const stepTimes: string[] = [];
  /** replica add/remove of the replica in `dir` on the namespace host, as a DBA types it. */
  const replicaCommand = (verb: 'add' | 'remove', dir: string) => [
    cliEntry,
    'replica',
    verb,
    '--pgdata',
    c.pgdata,
    '--bindir',
    c.bindir,
    '--state-dir',
    join(base, 'state'),
    '--host',
    host.name,
    '--ssh-config',
    host.sshConfig,
    '--replica-pgdata',
    dir,
  ];
  const pgscale = async (dir: string): Promise<number> => {
    const t = await must(
      'pgscale replica add',
      run(
        process.execPath,
        [
          ...replicaCommand('add', dir),
          '--replica-socket-dir',
          host.socketDir,
          '--replica-port',
          String(c.port),
          '--max-lag',
          String(1024 ** 3),
          '--yes',
          '--json',
        ],
        { PGPASSFILE: passfile },
      ),
    );
    const steps = stepSeconds((JSON.parse(t.stdout) as OperationResult).run!.runDir);
    stepTimes.push(
      steps.map(([s, n]) => `${s} ${n.toFixed(1)}`).join(', ') +
        `; outside the steps (start-up, planning and checks) ${(t.seconds - steps.reduce((a, [, n]) => a + n, 0)).toFixed(1)}`,
    );
    await must('pgscale replica remove', run(process.execPath, [...replicaCommand('remove', dir), '--yes', '--json']));
    return t.seconds;
  };
  const bare = async (dir: string): Promise<number> => {
    const t = await must(
      'bare pg_basebackup',
      ssh([
        'runuser',
        '-u',
        serverUser.name,
        '--',
        'env',
        `PGPASSFILE=${hostPass}`,
        join(c.bindir, 'pg_basebackup'),
        '-h',
        host.localAddress,
        '-p',
        String(c.port),
        '-U',
        'replicator',
        '-D',
        dir,
        '-C',
        '-S',
        'bench_bare',
        '-R',
        '-X',
        'stream',
        '-c',
        'fast',
      ]),
    );
    // the hand-typed start of that standby, for the "usable replica" row
    const opts = `-c port=${c.port} -c unix_socket_directories=${host.socketDir} -c listen_addresses=${host.address}`;
    const start = await must(
      'bare pg_ctl start',
      ssh(['runuser', '-u', serverUser.name, '--', join(c.bindir, 'pg_ctl'), 'start', '-w', '-D', dir, '-l', `${dir}.log`, '-o', `'${opts}'`]),
    );
    bareStart.push(start.seconds);
    await must('bare pg_ctl stop', ssh(['runuser', '-u', serverUser.name, '--', join(c.bindir, 'pg_ctl'), 'stop', '-w', '-m', 'fast', '-D', dir]));
    await must('cleanup', ssh(['rm', '-rf', dir, `${dir}.log`]));
    await c.sql(`select pg_drop_replication_slot('bench_bare')`);
    return t.seconds;
  };

  const results: { pgscale: number[]; bare: number[] } = { pgscale: [], bare: [] };
  const bareStart: number[] = [];
  mkdirOwned(join(host.root, 'r'));
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 === 0 ? (['bare', 'pgscale'] as const) : (['pgscale', 'bare'] as const);
    for (const m of order) {
      const dir = join(host.root, 'r', `${m}-${i}`);
      process.stderr.write(`round ${i + 1}: ${m}…\n`);
      // neither method may pay for the other's (or pgbench's) dirty pages: pg_basebackup -c fast checkpoints
      await c.sql('checkpoint');
      await must('sync', run('sync', []));
      results[m].push(m === 'bare' ? await bare(dir) : await pgscale(dir));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const b = median(results.bare);
  const p = median(results.pgscale);
  console.log(`primary: ${(bytes / 1e9).toFixed(2)} GB (pgbench scale ${scale}), replica on a namespace host over ssh, ${rounds} round(s), median`);
  console.log(`method                              seconds   MB/s   ratio`);
  console.log(`bare pg_basebackup (over ssh)       ${b.toFixed(1).padStart(7)} ${(bytes / 1e6 / b).toFixed(0).padStart(6)}   1.00`);
  const bs = b + median(bareStart);
  console.log(`bare + pg_ctl start of the standby  ${bs.toFixed(1).padStart(7)} ${(bytes / 1e6 / bs).toFixed(0).padStart(6)}   ${(bs / b).toFixed(2)}`);
  console.log(
    `pgscale replica add (whole command) ${p.toFixed(1).padStart(7)} ${(bytes / 1e6 / p).toFixed(0).padStart(6)}   ${(p / b).toFixed(2)}  (${(p / bs).toFixed(2)} of bare + start)`,
  );
  for (const s of stepTimes) console.log(`  pgscale seconds by step: ${s}`);
}

main()
  .catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
  })
  .finally(teardownAll);
