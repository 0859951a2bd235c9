import * as Flags from '@oclif/core/flags';
import { join, resolve } from 'node:path';
import { resolveTarget } from '../../src/cluster/access.js';
import { badInput } from '../../src/errors.js';
import { OperationCommand, type OperationResult, planOutFlag } from '../../src/operationCommand.js';
import { userByName } from '../../src/osUser.js';
import '../../src/operations.js';
import { directoryBytes, lexists } from '../../src/wal/files.js';
import { isInside, realish } from '../../src/files.js';
import type { WalMoveParams } from '../../src/wal/steps.js';
import { gatherClusterIdentity } from '../../src/server/postgres.js';

export default class WalMove extends OperationCommand<typeof WalMove> {
  static override summary = 'Move pg_wal to a dedicated volume (pg_wal becomes a symlink), or back into the data directory.';
  static override description = `For a cluster that stays on its version. With --to DIR the WAL moves into DIR (absent or empty, its parent must exist, on another device than the data directory unless --force) and pg_wal becomes a symlink to it. With --to-data-dir the WAL moves back from wherever pg_wal points into DATADIR/pg_wal, a plain directory again (--to cannot name a directory inside the data directory).

Steps: stop the server (pg_ctl stop -m fast; downtime starts) — copy the WAL into the new place, every file fsynced, then compare names, sizes and sha256 — swap: pg_wal → pg_wal.pgscale-old, the new pg_wal renamed into place — start the server (if it ran before) and see it write WAL there (a record, pg_switch_wal(), a checkpoint; downtime ends) — remove the old WAL. The last step is the point of no return: until it runs, \`pgscale rollback\` puts the old pg_wal back (with any WAL written at the new place copied back), and a killed run finishes with \`pgscale resume\`.

A stopped cluster is moved the same way and stays stopped. Exit codes: 2 bad input (no such data directory, conflicting flags), 3 refused by a check (target not empty, same device without --force, not enough space…) — nothing is changed in either case.`;

  static override examples = [
    '<%= config.bin %> wal move --pgdata /var/lib/postgresql/17/main --to /mnt/wal/pg_wal --dry-run',
    '<%= config.bin %> wal move --pgdata /var/lib/postgresql/17/main --to /mnt/wal/pg_wal --yes',
    '<%= config.bin %> wal move --pgdata /var/lib/postgresql/17/main --to-data-dir --yes',
  ];

  static override flags = {
    to: Flags.string({ summary: 'Directory for the WAL on its own volume: absent or empty; created 0700, owned by the data directory owner.' }),
    'to-data-dir': Flags.boolean({ summary: 'Move the WAL back into the data directory (pg_wal becomes a plain directory again).' }),
    force: Flags.boolean({ summary: "Accept a --to directory on the data directory's device (a warning instead of a refusal).", default: false }),
    'plan-out': planOutFlag,
  };

  async run(): Promise<OperationResult> {
    const f = this.flags;
    if (f.to !== undefined && f['to-data-dir']) throw badInput('--to and --to-data-dir exclude each other', 'pass one of them');
    if (f.to === undefined && !f['to-data-dir'])
      throw badInput('where to? neither --to nor --to-data-dir was given', 'pass --to DIR (a directory on the WAL volume) or --to-data-dir');
    if (f.to === '') throw badInput('--to needs a directory', 'pass --to DIR, a directory on the WAL volume (absent or empty)');
    const pgdata = f.pgdata ?? process.env.PGDATA;
    if (!pgdata) throw badInput('which cluster? no --pgdata and no PGDATA', 'pass --pgdata DIR: wal move works on a data directory on this host');
    const resolved = await resolveTarget({ pgdata, bindir: f.bindir, dsn: f.dsn, runner: this.runner, audit: this.audit });
    const cluster = resolved.cluster!;
    const owner = userByName(cluster.owner);
    if (!owner)
      throw badInput(
        `the owner of ${cluster.dataDir} (${cluster.owner}) has no entry in /etc/passwd`,
        'give the data directory to the account the server runs as',
      );

    let target: string;
    if (f['to-data-dir']) target = join(cluster.dataDir, 'pg_wal');
    else {
      target = realish(resolve(f.to!));
      if (isInside(target, cluster.dataDir))
        throw badInput(`--to ${f.to} is inside the data directory ${cluster.dataDir}`, 'to move the WAL back into the data directory, use --to-data-dir');
    }
    let walBytes = 0;
    try {
      walBytes = directoryBytes(cluster.wal.path);
    } catch {
      /* the checks say what is wrong with it */
    }
    // the server's identity now, while it runs as its DBA started it: a start after the move repeats it
    const server = await gatherClusterIdentity(
      { dataDir: cluster.dataDir, bindir: cluster.bindir ?? '', owner, configFile: cluster.configFile, stateDir: this.stateDir },
      this.runner,
    );
    const params: WalMoveParams = {
      dataDir: cluster.dataDir,
      major: cluster.major,
      server,
      owner: cluster.owner,
      access: resolved.access,
      destination: f['to-data-dir'] ? 'data-dir' : 'volume',
      target,
      source: cluster.wal.path,
      targetExisted: !f['to-data-dir'] && lexists(target),
      wasRunning: cluster.state === 'running',
      role: cluster.role,
      force: f.force,
      configFile: server.configFile ?? cluster.configFile,
      walBytes,
    };
    return this.runPlan(await this.planOperation('wal-move', params), f['plan-out']);
  }
}
