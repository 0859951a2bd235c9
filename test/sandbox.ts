/**
 * The README's main job on a throwaway sandbox: a real PostgreSQL 16 cluster from the test bed
 * with some data, then pgscale run against it exactly as a DBA would, then everything torn down.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createCluster, scratchDir, teardownAll } from './helpers/testbed.js';
import { cliEntry } from './helpers/paths.js';

function pgscale(args: string[]): void {
  process.stdout.write(`\n$ pgscale ${args.join(' ')}\n`);
  const res = spawnSync(process.execPath, [cliEntry, ...args], { stdio: 'inherit' });
  if (res.status !== 0) {
    teardownAll();
    process.exit(res.status ?? 1);
  }
}

const cluster = await createCluster({ version: 16, checksums: true });
await cluster.sql(`create table orders as select g as id, md5(g::text) as ref, now() - g * interval '1 minute' as placed from generate_series(1, 50000) g;
                   create index on orders (ref);`);
const work = scratchDir('pgscale-sandbox-');
const common = ['--pgdata', cluster.pgdata, '--bindir', cluster.bindir];
pgscale(['detect', ...common]);
pgscale(['backup', ...common, '--to', join(work, 'backup'), '--state-dir', join(work, 'state'), '--yes']);
pgscale(['backup', 'verify', join(work, 'backup')]);
teardownAll();
process.stdout.write('\nsandbox removed: the cluster was stopped and its files deleted\n');
