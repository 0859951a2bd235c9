/**
 * The README's main job on a throwaway sandbox: a real PostgreSQL 16 cluster from the test bed
 * with some data, then pgscale run against it exactly as a DBA would — detect, the upgrade plan
 * with its config diff, the upgrade to 17, the result — then everything torn down.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { bindir, upgradeCommand, createCluster, scratchDir, teardownAll } from './helpers/testbed.js';
import { cliEntry } from './helpers/paths.js';

function pgscale(args: string[]): void {
  process.stdout.write(`\n$ pgscale ${args.join(' ')}\n`);
  const res = spawnSync(process.execPath, [cliEntry, ...args], { stdio: 'inherit' });
  if (res.status !== 0) {
    teardownAll();
    process.exit(res.status ?? 1);
  }
}

const cluster = await createCluster({
  version: 16,
  checksums: true,
  // a setting PostgreSQL 17 removed, so the plan shows how the configuration is carried over
  conf: ["shared_preload_libraries = 'pg_stat_statements'", 'old_snapshot_threshold = -1'],
});
await cluster.sql(`create extension pg_stat_statements;
                   create table orders as select g as id, md5(g::text) as ref, now() - g * interval '1 minute' as placed from generate_series(1, 50000) g;
                   create index on orders (ref);`);
const work = scratchDir('pgscale-sandbox-');
const upgrade = upgradeCommand(cluster, { 'to-version': 17, 'state-dir': join(work, 'state'), 'backup-to': join(work, 'backup-before-17') });
pgscale(['detect', '--pgdata', cluster.pgdata, '--bindir', cluster.bindir]);
pgscale([...upgrade, '--dry-run']);
pgscale([...upgrade, '--yes']);
pgscale(['detect', '--pgdata', join(cluster.pgdata + '-17'), '--bindir', bindir(17)]);
pgscale(['runs', '--state-dir', join(work, 'state')]);
teardownAll();
process.stdout.write('\nsandbox removed: the clusters were stopped and their files deleted\n');
