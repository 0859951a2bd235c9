/**
 * Test hosts: a "remote host" is a network namespace with its own address on a veth pair
 * (10.231.N.2, this side 10.231.N.1) and its own sshd (key-only, its own host key), reached only
 * through ssh with its own ssh_config and known_hosts. The namespaces share this machine's
 * filesystem, users and binaries: each host gets its own directories, socket directory included.
 * `ip netns exec` gives sshd a mount namespace of its own: mount volumes before creating a host.
 * Teardown (registered with the test bed's) always stops sshd and removes the veth and namespace.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';
import { mkdirOwned, onTeardown, runTeardown, scratchDir } from './testbed.js';

export interface TestHost {
  name: string;
  /** The host's own address (sshd and its PostgreSQL listen here). */
  address: string;
  /** This machine's address on the veth pair: the primary listens here for that host. */
  localAddress: string;
  /** ssh -F file with BatchMode, StrictHostKeyChecking yes, its own known_hosts. */
  sshConfig: string;
  knownHosts: string;
  /** A directory private to this host, owned by the server account (data, sockets, passfiles). */
  root: string;
  socketDir: string;
  down(): void;
}

let provisioned = false;

/** openssh-server, rsync, iproute2: installed by the project's script when missing. */
export function provisionHosts(): void {
  if (provisioned) return;
  execFileSync('bash', [join(repoRoot, 'test/testbed/provision-hosts.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
  provisioned = true;
}

const sh = (program: string, args: string[]) => execFileSync(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
const quiet = (program: string, args: string[]) => spawnSync(program, args, { stdio: 'ignore' });

const zombie = (pid: number): boolean => {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true; // gone
  }
};

const signal = (pid: number, sig: NodeJS.Signals): void => {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
};

/** A namespace host numbered n (10.231.n.0/30); its sshd runs until teardown. */
export function createHost(name: string, n: number): TestHost {
  provisionHosts();
  const dir = scratchDir(`pgscale-host-${name}-`);
  chmodSync(dir, 0o755);
  const keys = join(dir, 'ssh');
  mkdirSync(keys, { mode: 0o700 });
  const ns = `pgs-${name}`;
  const veth = `pgsv${n}`;
  const peer = `pgsp${n}`;
  const localAddress = `10.231.${n}.1`;
  const address = `10.231.${n}.2`;
  // a namespace left by a crashed earlier run of this file would make `ip netns add` fail
  quiet('ip', ['link', 'del', veth]);
  quiet('ip', ['netns', 'del', ns]);
  sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(keys, 'client_key')]);
  sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(keys, 'host_key')]);
  const pidFile = join(keys, 'sshd.pid');
  let sshd: ChildProcess | undefined;
  const down = onTeardown(`host ${name}`, () => {
    // first every other process in the namespace: sshd's per-connection children (a killed client's
    // session waits on a dead connection for hours and keeps the namespace alive), servers started
    // over ssh; the listening sshd, still running, reaps its children
    const others = () =>
      spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
        .stdout.split('\n')
        .filter(Boolean)
        .map(Number)
        .filter((pid) => pid !== sshd?.pid && !zombie(pid));
    for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
      for (const pid of others()) signal(pid, sig);
      for (let i = 0; i < 30 && others().length; i++) spawnSync('sleep', ['0.1']);
    }
    if (sshd?.pid) {
      signal(sshd.pid, 'SIGTERM');
      // a child of ours, reaped by this process (a daemonised sshd would end as a zombie of PID 1 here)
      for (let i = 0; i < 50 && existsSync(`/proc/${sshd.pid}`) && !zombie(sshd.pid); i++) spawnSync('sleep', ['0.1']);
    }
    quiet('ip', ['link', 'del', veth]);
    quiet('ip', ['netns', 'del', ns]);
  });
  sh('ip', ['netns', 'add', ns]);
  sh('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', peer]);
  sh('ip', ['link', 'set', peer, 'netns', ns]);
  sh('ip', ['addr', 'add', `${localAddress}/30`, 'dev', veth]);
  sh('ip', ['link', 'set', veth, 'up']);
  sh('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', `${address}/30`, 'dev', peer]);
  sh('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', peer, 'up']);
  sh('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  writeFileSync(join(keys, 'authorized_keys'), readFileSync(join(keys, 'client_key.pub')), { mode: 0o600 });
  writeFileSync(
    join(keys, 'sshd_config'),
    [
      `ListenAddress ${address}`,
      `HostKey ${join(keys, 'host_key')}`,
      `PidFile ${pidFile}`,
      `AuthorizedKeysFile ${join(keys, 'authorized_keys')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      'StrictModes no',
      'UsePAM no',
      // this machine's root ~/.bashrc (pyenv init) costs ~0.45 s per command: Debian's bash reads it
      // for every command sshd runs unless SHLVL says it is not the first shell
      'SetEnv SHLVL=1',
      '',
    ].join('\n'),
  );
  mkdirSync('/run/sshd', { recursive: true });
  // -D: sshd stays our child (ip netns exec execs it), so teardown stops and reaps exactly it
  sshd = spawn('ip', ['netns', 'exec', ns, '/usr/sbin/sshd', '-D', '-f', join(keys, 'sshd_config')], { stdio: 'ignore' });
  const knownHosts = join(keys, 'known_hosts');
  const hostKey = readFileSync(join(keys, 'host_key.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
  writeFileSync(knownHosts, `${address} ${hostKey}\n`);
  const sshConfig = join(keys, 'ssh_config');
  appendFileSync(
    sshConfig,
    [
      `Host ${name}`,
      `  HostName ${address}`,
      '  User root',
      `  IdentityFile ${join(keys, 'client_key')}`,
      '  IdentitiesOnly yes',
      `  UserKnownHostsFile ${knownHosts}`,
      '  StrictHostKeyChecking yes',
      '  BatchMode yes',
      '  ConnectTimeout 5',
      '',
    ].join('\n'),
  );
  // sshd forks into the background: wait until it answers
  for (let i = 0; i < 50; i++) {
    if (spawnSync('ssh', ['-F', sshConfig, name, 'true'], { stdio: 'ignore' }).status === 0) break;
    spawnSync('sleep', ['0.1']);
  }
  const root = mkdirOwned(join(dir, 'host'));
  const socketDir = mkdirOwned(join(root, 'sock'));
  return { name, address, localAddress, sshConfig, knownHosts, root, socketDir, down: () => runTeardown(down) };
}
