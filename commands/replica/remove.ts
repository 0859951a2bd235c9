import * as Flags from '@oclif/core/flags';
import { rmSync } from 'node:fs';
import { resolveTarget } from '../../src/cluster/access.js';
import { badInput } from '../../src/errors.js';
import { OperationCommand, type OperationResult } from '../../src/operationCommand.js';
import '../../src/operations.js';
import { closeRemoteRunners, isLocal, runnerFor } from '../../src/remote/ssh.js';
import { absoluteDir, hostSpec, replicaFlags } from '../../src/replica/flags.js';
import { slotNameFor, validSlotName } from '../../src/replica/rules.js';
import { connectionAddresses, judgeRemovalNow, promptedPassfilePath, type ReplicaRemoveParams } from '../../src/replica/steps.js';

const noActions = { stop: false, dropSlot: false, removeHba: false, removeData: false, removePassfile: false };

export default class ReplicaRemove extends OperationCommand<typeof ReplicaRemove> {
  static override summary = 'Remove a replica on purpose: stop the standby, drop its slot, remove its pg_hba rule and (unless --keep-data) its files.';
  static override description =
    "The directory is stopped and deleted only when it is a standby of this primary: PG_VERSION of the primary's major, the primary's system identifier (pg_controldata) and standby.signal. Anything else there (another cluster, a promoted copy, a user's files) is kept, no server there is stopped, and the removal is refused (exit 3); with --keep-data only the slot and the pg_hba rule are removed, when they belong to it (its primary_slot_name, or nobody streams through the slot). The pg_hba rule pgscale added for it (marked with the slot name) is kept while another standby still streams through it. Dropping the slot is the point of no return: the replica would have to be cloned again.";
  static override flags = {
    ...replicaFlags,
    'keep-data': Flags.boolean({ summary: 'Keep the data directory (and its password file and log).', default: false }),
    'replica-address': Flags.string({ summary: "The replica's address as the primary sees it (default: from the ssh connection; 127.0.0.1 for local)." }),
  };

  async run(): Promise<OperationResult> {
    try {
      const f = this.flags;
      if (!f.pgdata) throw badInput('which primary? pass --pgdata DIR');
      const host = hostSpec(f.host, f['ssh-config']);
      const replicaDir = absoluteDir('replica-pgdata', f['replica-pgdata']);
      const resolved = await resolveTarget({ pgdata: f.pgdata, bindir: f.bindir, dsn: f.dsn, runner: this.runner, audit: this.audit, requireRunning: true });
      const cluster = resolved.cluster!;
      const slot = f.slot ?? slotNameFor(f.host, replicaDir);
      if (!validSlotName(slot)) throw badInput(`slot name "${slot}" is not valid`);
      let replicaAddress = f['replica-address'] ?? (isLocal(host) ? '127.0.0.1' : null);
      if (!replicaAddress) {
        const seen = await connectionAddresses(runnerFor(host, { runner: this.runner, audit: this.audit }));
        if ('there' in seen) replicaAddress = seen.there;
      }
      const known = {
        primaryDataDir: cluster.dataDir,
        access: resolved.access,
        host,
        replicaDir,
        replicaBindir: f['replica-bindir'] ?? cluster.bindir ?? resolved.access.bindir,
        replicaOwner: f['replica-owner'] ?? cluster.owner,
        role: f['replication-user'],
        slot,
        replicaAddress,
        keepData: f['keep-data'],
        primaryMajor: cluster.major,
        primaryPort: cluster.port,
      };
      // what is done is decided from what is there: the plan shows exactly that, and the checks step refuses anything else
      const judged = await judgeRemovalNow(this.planningContext(), { ...known, actions: noActions });
      const params: ReplicaRemoveParams = { ...known, actions: judged.actions ?? noActions };
      const result = await this.runPlan(await this.planOperation('replica-remove', params), undefined);
      // a password typed when the replica was added has no use any more
      if (result.applied) rmSync(promptedPassfilePath(this.stateDir, slot), { force: true });
      return result;
    } finally {
      await closeRemoteRunners();
    }
  }
}
