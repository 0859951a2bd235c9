/** Flags and decisions shared by `replica add` and `replica remove`. */
import * as Flags from '@oclif/core/flags';
import { resolve } from 'node:path';
import { badInput } from '../errors.js';
import { validateDestination, type HostSpec } from '../remote/ssh.js';

export const replicaFlags = {
  host: Flags.string({ summary: 'Where the replica lives: an ssh destination (user@db2, an alias from ~/.ssh/config) or local.', required: true }),
  'replica-pgdata': Flags.string({ summary: "The replica's data directory on that host (absent or empty).", required: true }),
  slot: Flags.string({ summary: 'Replication slot name (default: derived from the host and the directory).' }),
  'replication-user': Flags.string({ summary: 'The role replicas connect as (LOGIN REPLICATION, SCRAM password).', default: 'replicator' }),
  'replica-bindir': Flags.string({ summary: "PostgreSQL programs on the replica host (default: the primary's bindir path)." }),
  'replica-owner': Flags.string({ summary: "OS account owning the replica there (default: the primary's owner)." }),
  'ssh-config': Flags.string({ summary: 'ssh -F FILE: an ssh client configuration instead of ~/.ssh/config.' }),
};

export function hostSpec(host: string, sshConfig: string | undefined): HostSpec {
  if (host !== 'local') validateDestination(host);
  return { destination: host, sshConfig: sshConfig ? resolve(sshConfig) : null };
}

export function absoluteDir(flag: string, value: string): string {
  if (!value.startsWith('/')) throw badInput(`--${flag} ${value} is not an absolute path (it names a directory on the replica host)`);
  return value.replace(/\/+$/, '') || '/';
}
