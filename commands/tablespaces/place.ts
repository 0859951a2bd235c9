import * as Flags from '@oclif/core/flags';
import { existsSync, realpathSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { withDb } from '../../src/cluster/access.js';
import { probeBindir } from '../../src/cluster/installations.js';
import { badInput } from '../../src/errors.js';
import { isInside, realish } from '../../src/files.js';
import { detectStorage } from '../../src/host/storage.js';
import type { StorageClass } from '../../src/host/types.js';
import { OperationCommand, type OperationResult, planOutFlag } from '../../src/operationCommand.js';
import '../../src/operations.js';
import type { Runner } from '../../src/runner.js';
import { statements, tablespaceStatements } from '../../src/sql.js';
import { temperatureFlags } from '../../src/tablespaces/flags.js';
import { formatBytes } from '../../src/format.js';
import { gatherTemperature, journaledMoves } from '../../src/tablespaces/gather.js';
import {
  decidePlacement,
  judgeRepack,
  measuredCopyRate,
  parseVolumeArg,
  tablespaceName,
  tablespaceOptionsFor,
  tierForStorageClass,
} from '../../src/tablespaces/placement.js';
import type { PlaceParams, TierVolume } from '../../src/tablespaces/steps.js';
import { tiers } from '../../src/tablespaces/temperature.js';

const MB = 1024 ** 2;
/** The copy rate of the estimate before any move was journaled for the cluster. */
const assumedCopyRateMb = 100;

/** BINDIR/pg_repack's version and the major of the PostgreSQL installation it sits in; null when there is none. */
async function repackClient(runner: Runner, bindir: string): Promise<{ version: string; bindirMajor: number | null } | null> {
  const program = join(bindir, 'pg_repack');
  if (!existsSync(program)) return null;
  const res = await runner.run({ program, args: ['--version'] });
  const version = /^pg_repack (\S+)/m.exec(res.stdout)?.[1];
  if (res.exitCode !== 0 || !version) return null;
  const installation = await probeBindir(runner, bindir, 'explicit').catch(() => undefined); // a client-only bindir
  return { version, bindirMajor: installation?.major ?? null };
}

export default class TablespacesPlace extends OperationCommand<typeof TablespacesPlace> {
  static override summary = 'Move tables and their indexes to the tablespace of their temperature tier (hot, warm, cold), online where PostgreSQL allows.';
  static override description = `Each --volume maps a directory on a volume to a tier (PATH=hot|warm|cold, or PATH alone for the tier of its detected storage class); a tablespace pgscale_TIER is created in PATH/pgscale_TIER (0700, owned by the cluster owner; never inside the data directory, not on its device unless --force) with random_page_cost and the I/O concurrency settings of that storage. The default tablespace counts as the --data-dir-tier tier. A relation whose temperature (see \`pgscale tablespaces show\`) differs from the tier it is on moves, each in its own journaled step. A table with a primary key or a NOT NULL unique index moves online with pg_repack --tablespace --moveidx when pgscale connects as a superuser (pg_repack works only as one) and BINDIR/pg_repack is built for the server's major and matches the version of the pg_repack extension (created by the run when only available, dropped by its rollback; --no-repack declines). Other tables: the heap (TOAST follows) by ALTER TABLE … SET TABLESPACE under a lock_timeout of --lock-timeout ms with --lock-retries retries whose pauses double (never an unbounded wait), rows counted in one snapshot before the lock and after the rewrite; indexes by REINDEX … INDEX CONCURRENTLY (14+). ALTER TABLE holds ACCESS EXCLUSIVE for the copy, so a heap above --blocking-limit-mb without an online method is refused unless --allow-blocking. The duration estimate uses the copy rate of the last moves journaled for the cluster. Partitioned tables move partition by partition, then their default follows the hottest partition. temp_tablespaces goes to the hot tier's tablespace.

Checks before anything: free space on every volume for what moves there, WAL space for the largest move, the owner can write the volume, no tablespace name or location collision. \`pgscale resume RUN\` continues with the next relation; \`pgscale rollback RUN\` moves them back and drops the tablespaces it created. Exit codes: 2 bad input, 3 refused by a check — nothing changed in either case.`;

  static override examples = [
    '<%= config.bin %> tablespaces place --pgdata /var/lib/postgresql/17/main --database app --volume /mnt/nvme=hot --volume /mnt/hdd=cold --dry-run',
    '<%= config.bin %> tablespaces place --pgdata /var/lib/postgresql/17/main --database app --volume /mnt/hdd --yes',
  ];

  static override flags = {
    ...temperatureFlags,
    // a playbook flag holds one value: there the volumes are one comma-separated list
    volume: Flags.string({
      summary: 'PATH=hot|warm|cold (or PATH: tier from its storage class). Repeatable or comma-separated, one volume per tier.',
      multiple: true,
      delimiter: ',',
    }),
    force: Flags.boolean({ summary: "Accept a volume on the data directory's device (a warning instead of a refusal).", default: false }),
    'allow-blocking': Flags.boolean({ summary: 'Move heaps above --blocking-limit-mb too, though readers and writers wait for the copy.', default: false }),
    'blocking-limit-mb': Flags.integer({ summary: 'Largest heap moved by a blocking rewrite without --allow-blocking.', default: 1024, min: 0 }),
    // while an ACCESS EXCLUSIVE request waits, every later query on the table queues behind it: the wait must stay short
    'lock-timeout': Flags.integer({
      summary: 'Milliseconds each attempt waits for a table lock (clients queue behind a waiting request, so keep it short).',
      default: 200,
      min: 10,
    }),
    'lock-retries': Flags.integer({
      summary: 'Attempts after the first when the lock is not granted; the pauses double from 200 ms, at most 10 s.',
      default: 8,
      min: 0,
      max: 20,
    }),
    repack: Flags.boolean({
      summary:
        'Move tables that have a primary key or a NOT NULL unique index with pg_repack when its program (in the bindir) and extension match the server; --no-repack uses ALTER TABLE for every table.',
      default: true,
      allowNo: true,
    }),
    'verify-rows': Flags.boolean({
      summary:
        "Count each table's rows in one snapshot before its lock and after its rewrite (a difference undoes the move); --no-verify-rows shortens the lock by that scan.",
      default: true,
      allowNo: true,
    }),
    'copy-rate-mb': Flags.integer({
      summary: `MB per second for the duration estimate; without it, the rate measured on the last moves journaled for this cluster, else ${assumedCopyRateMb}.`,
      min: 1,
    }),
    'plan-out': planOutFlag,
  };

  async run(): Promise<OperationResult> {
    const f = this.flags;
    const args = (f.volume ?? []).map(parseVolumeArg);
    if (args.length === 0) throw badInput('where to? pass --volume PATH=hot|warm|cold (one per tier)', 'e.g. --volume /mnt/hdd/pg=cold');
    const facts = await gatherTemperature({ runner: this.runner, audit: this.audit }, f, this.stateDir);
    const cluster = facts.resolved.cluster;
    if (!cluster)
      throw badInput('tablespaces place works on a cluster on this host: pass --pgdata', 'the volumes and the tablespace directories must be reachable here');

    const volumes: TierVolume[] = [];
    for (const a of args) {
      const volume = realish(resolve(a.path));
      if (isInside(volume, cluster.dataDir))
        throw badInput(
          `--volume ${a.path} is inside the data directory ${cluster.dataDir}`,
          'a tablespace belongs on another volume, outside the data directory',
        );
      let storageClass: StorageClass = 'unknown';
      try {
        storageClass = (await detectStorage(this.hostRoot, volume)).storageClass;
      } catch {
        /* an unreadable stack: the tier's defaults */
      }
      const tier = a.tier ?? tierForStorageClass(storageClass);
      if (volumes.some((v) => v.tier === tier)) throw badInput(`two volumes for the ${tier} tier`, 'pass one --volume per tier');
      const name = tablespaceName(tier);
      const location = join(volume, name);
      volumes.push({
        tier,
        volume,
        location,
        tablespace: name,
        storageClass,
        options: tablespaceOptionsFor(storageClass, tier),
        existed: false,
        previousOptions: [],
      });
    }
    volumes.sort((a, b) => tiers.indexOf(a.tier) - tiers.indexOf(b.tier));

    const access = facts.resolved.access;
    const database = facts.live.database;
    const { existing, temp, wal, repackExtension, role } = await withDb(
      { runner: this.runner, audit: this.audit },
      access,
      async (db) => ({
        existing: await db.query(tablespaceStatements.tablespaceList()),
        temp: (await db.query(tablespaceStatements.tempTablespaces()))[0],
        wal: (await db.query(statements.walSizing()))[0],
        repackExtension: (await db.query(tablespaceStatements.repackExtension()))[0],
        role: (await db.query(tablespaceStatements.sessionRole()))[0]!,
      }),
      database,
    );
    for (const v of volumes) {
      const found = existing.find((t) => t.name === v.tablespace && t.location === v.location);
      v.existed = found !== undefined;
      v.previousOptions = found?.options ?? [];
    }

    const repack = judgeRepack({
      wanted: f.repack,
      serverMajor: Math.floor(facts.live.serverVersionNum / 10000),
      bindir: access.bindir,
      client: f.repack ? await repackClient(this.runner, access.bindir) : null,
      extension: repackExtension ? { defaultVersion: repackExtension.default_version, installedVersion: repackExtension.installed_version } : null,
      role,
    });
    const placement = decidePlacement(facts.report.relations, facts.live.relations, {
      dataDirTier: facts.dataDirTier,
      declaredTiers: volumes.map((v) => v.tier),
      serverVersionNum: facts.live.serverVersionNum,
      blockingLimitBytes: f['blocking-limit-mb'] * MB,
      allowBlocking: f['allow-blocking'],
      repack,
    });
    const measured = measuredCopyRate(journaledMoves(this.stateDir, facts.live.systemIdentifier));
    const copyRate =
      f['copy-rate-mb'] !== undefined
        ? { bytesPerSecond: f['copy-rate-mb'] * MB, source: `${f['copy-rate-mb']} MB/s (--copy-rate-mb)` }
        : measured
          ? {
              bytesPerSecond: measured.bytesPerSecond,
              source: `${formatBytes(measured.bytesPerSecond)}/s, measured on the last ${measured.moves} move${measured.moves === 1 ? '' : 's'} journaled for this cluster`,
            }
          : { bytesPerSecond: assumedCopyRateMb * MB, source: `${assumedCopyRateMb} MB/s assumed: no move of 16 MB or more journaled for this cluster yet` };
    const hot = volumes.find((v) => v.tier === 'hot');
    const params: PlaceParams = {
      access,
      database,
      dataDir: cluster.dataDir,
      walDir: realpathSync(cluster.wal.path),
      owner: cluster.owner,
      serverVersionNum: facts.live.serverVersionNum,
      defaultTablespace: facts.live.defaultTablespace,
      volumes,
      moves: placement.moves,
      parents: placement.parents,
      refused: placement.refused,
      staying: placement.staying,
      tempTablespaces: hot && temp?.setting !== hot.tablespace ? hot.tablespace : null,
      previousTempTablespaces: temp?.setting ?? '',
      force: f.force,
      repack,
      lock: { lockTimeoutMs: f['lock-timeout'], retries: f['lock-retries'], backoffMs: 200 },
      countRows: f['verify-rows'],
      copyBytesPerSecond: copyRate.bytesPerSecond,
      copyRateSource: copyRate.source,
      maxWalBytes: Number(wal?.max_wal_size_bytes ?? 1024 * MB),
    };
    return this.runPlan(await this.planOperation('tablespaces-place', params), f['plan-out']);
  }
}
