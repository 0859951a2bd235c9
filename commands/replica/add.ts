import { password } from '@inquirer/prompts';
import * as Flags from '@oclif/core/flags';
import { resolveTarget } from '../../src/cluster/access.js';
import { badInput } from '../../src/errors.js';
import { OperationCommand, type OperationResult, planOutFlag } from '../../src/operationCommand.js';
import '../../src/operations.js';
import { closeRemoteRunners, isLocal, runnerFor } from '../../src/remote/ssh.js';
import { absoluteDir, hostSpec, replicaFlags } from '../../src/replica/flags.js';
import { slotNameFor, validSlotName } from '../../src/replica/rules.js';
import { connectionAddresses, gatherPrimary, keepPromptedPassword, readPassword, type ReplicaParams, type TablespaceMapping } from '../../src/replica/steps.js';

export default class ReplicaAdd extends OperationCommand<typeof ReplicaAdd> {
  static override summary = 'Add a streaming read replica cloned with pg_basebackup through a replication slot, on this host or another over ssh.';
  static override description = `Checks first (nothing changes if one fails, exit 3): wal_level, 2 free wal senders and a free slot, the replication role (LOGIN REPLICATION, SCRAM password; created from the passfile entry when missing), the primary listening where the replica reaches it, ssh non-interactive with a known host key, the same major version on the replica host (minor compared), target directories absent or empty and writable by the owner, free space for the data, WAL and every tablespace, tablespaces mapped.

Steps: a pg_hba rule for exactly that role from exactly the replica's address (shown as a diff, reload) — the physical slot, reserving WAL before the copy — a 0600 password file next to the replica's data directory (DIR.pgpass; refused if a file is there already) — pg_basebackup -R -X stream -c fast -P run on the replica host — the copy's postgresql.conf made its own (data_directory, hba_file, ident_file, external_pid_file naming the primary commented out or pointed into the copy, with a pgscale note) — the standby started as its owner on its own port and socket directory (start-up log: DIR/log/pgscale-standby.log; when it does not start, the error shows its last lines and a copy is kept in the run's directory) — verify: streaming through the slot, lag under --max-lag, a row written on the primary read on the replica. \`pgscale rollback\` removes only what the run created.

The password comes from a libpq password file (--replication-passfile or PGPASSFILE, entry PRIMARY_ADDRESS:PORT:replication:ROLE:PASSWORD), never from argv; at a terminal without --yes/--json it is asked for and kept 0600 in the state directory (secrets/SLOT.pgpass) so that a resume can use it — rollback and \`replica remove\` delete it.`;

  static override examples = [
    '<%= config.bin %> replica add --pgdata /var/lib/postgresql/17/main --host postgres@db2 --replica-pgdata /var/lib/postgresql/17/main --replication-passfile ~/.pgpass-repl --dry-run',
    '<%= config.bin %> replica add --pgdata /srv/pg17 --host local --replica-pgdata /srv/pg17-replica --replica-port 5433 --yes',
  ];

  static override flags = {
    ...replicaFlags,
    'replica-waldir': Flags.string({ summary: "pg_basebackup --waldir: the replica's WAL on another volume." }),
    'tablespace-mapping': Flags.string({ summary: 'OLD=NEW: where a tablespace of the primary goes on the replica (repeatable).', multiple: true }),
    'replica-port': Flags.integer({ summary: "The standby's port (default: the primary's; on this host the primary's + 1)." }),
    'replica-socket-dir': Flags.string({ summary: "The standby's socket directory (default: the primary's)." }),
    'primary-address': Flags.string({
      summary: 'Where the replica reaches the primary (default: this host as the replica sees it over ssh; 127.0.0.1 for local).',
    }),
    'replica-address': Flags.string({ summary: "The replica's address as the primary sees it (default: from the ssh connection; 127.0.0.1 for local)." }),
    'replication-passfile': Flags.string({ summary: 'libpq password file with the replication role password (default: PGPASSFILE).' }),
    'max-rate': Flags.string({ summary: 'pg_basebackup --max-rate (e.g. 100M): spares a busy primary.' }),
    'max-lag': Flags.integer({ summary: 'Replay lag bound (bytes) the verify step waits for.', default: 16 * 1024 * 1024 }),
    'plan-out': planOutFlag,
  };

  async run(): Promise<OperationResult> {
    try {
      return await this.plan();
    } finally {
      await closeRemoteRunners();
    }
  }

  private async plan(): Promise<OperationResult> {
    const f = this.flags;
    if (!f.pgdata) throw badInput('which primary? pass --pgdata DIR: the primary is a cluster on this host (its pg_hba.conf is edited here)');
    const host = hostSpec(f.host, f['ssh-config']);
    const replicaDir = absoluteDir('replica-pgdata', f['replica-pgdata']);
    const resolved = await resolveTarget({ pgdata: f.pgdata, bindir: f.bindir, dsn: f.dsn, runner: this.runner, audit: this.audit, requireRunning: true });
    const cluster = resolved.cluster!;
    if (isLocal(host) && replicaDir === cluster.dataDir) throw badInput("--replica-pgdata is the primary's own data directory");
    const slot = f.slot ?? slotNameFor(f.host, replicaDir);
    if (!validSlotName(slot)) throw badInput(`slot name "${slot}": lower-case letters, digits and _ only, at most 63`);

    let primaryAddress = f['primary-address'] ?? null;
    let replicaAddress = f['replica-address'] ?? null;
    if (isLocal(host)) {
      primaryAddress ??= '127.0.0.1';
      replicaAddress ??= '127.0.0.1';
    } else if (!primaryAddress || !replicaAddress) {
      const seen = await connectionAddresses(runnerFor(host, { runner: this.runner, audit: this.audit }));
      if ('here' in seen) {
        primaryAddress ??= seen.here;
        replicaAddress ??= seen.there;
      }
    }
    const mappings: TablespaceMapping[] = [];
    for (const m of f['tablespace-mapping'] ?? []) {
      const eq = m.indexOf('=');
      if (eq <= 0) throw badInput(`--tablespace-mapping ${m}: expected OLD=NEW`);
      const location = m.slice(0, eq);
      const ts = cluster.tablespaces.find((t) => t.location === location);
      if (!ts)
        throw badInput(
          `--tablespace-mapping ${m}: the primary has no tablespace at ${location}`,
          `its tablespaces: ${cluster.tablespaces.map((t) => t.location).join(', ') || 'none'}`,
        );
      mappings.push({ name: ts.name ?? String(ts.oid), location, target: absoluteDir('tablespace-mapping', m.slice(eq + 1)) });
    }
    // a tablespace left unmapped keeps its path on a remote host; the checks refuse that on this host
    for (const t of cluster.tablespaces)
      if (!mappings.some((m) => m.location === t.location) && !isLocal(host))
        mappings.push({ name: t.name ?? String(t.oid), location: t.location, target: t.location });

    const params: ReplicaParams = {
      primaryDataDir: cluster.dataDir,
      primaryMajor: cluster.major,
      access: resolved.access,
      host,
      replicaDir,
      replicaWaldir: f['replica-waldir'] ? absoluteDir('replica-waldir', f['replica-waldir']) : null,
      tablespaces: mappings,
      replicaBindir: f['replica-bindir'] ?? cluster.bindir ?? resolved.access.bindir,
      replicaOwner: f['replica-owner'] ?? cluster.owner,
      replicaPort: f['replica-port'] ?? (isLocal(host) ? cluster.port + 1 : cluster.port),
      replicaSocketDir: f['replica-socket-dir'] ?? cluster.socketDir?.split(',')[0]?.trim() ?? '/var/run/postgresql',
      role: f['replication-user'],
      slot,
      passfile: f['replication-passfile'] ?? process.env.PGPASSFILE ?? null,
      primaryAddress,
      primaryPort: cluster.port,
      replicaAddress,
      maxRate: f['max-rate'] ?? null,
      maxLagBytes: f['max-lag'],
      promptedPassfile: false,
    };
    // a DBA at a terminal may type the password instead (never in argv); it is kept 0600 for a resume
    if (!readPassword(params) && primaryAddress && this.canPrompt && !f['dry-run']) {
      const typed = await password({ message: `Password of the replication role ${params.role}`, mask: '*' });
      params.passfile = keepPromptedPassword(this.stateDir, params, typed);
      params.promptedPassfile = true;
    }
    const facts = await gatherPrimary(this.planningContext(), params);
    return this.runPlan(
      await this.planOperation('replica-add', { ...params, createRole: !facts.role.exists, hbaRulePresent: facts.hbaRulePresent }),
      f['plan-out'],
    );
  }
}
