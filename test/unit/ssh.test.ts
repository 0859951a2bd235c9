import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describeSshFailure, remoteAccount, remoteCommand, sshOptions, validateDestination } from '../../src/remote/ssh.js';

const hostile = [
  "it's",
  'two words',
  '$(touch /tmp/pgscale-pwned)',
  '`id`',
  'a\nb',
  '"double" \\ back',
  'ünïcødé ✓ 数据',
  '-- --not-an-option',
  '*',
  '; rm -rf /',
  '',
  "'",
  '$HOME ${PATH} !! %',
];

/** What a remote shell does with the command line: dash (Debian's sh) runs it, env prints the args. */
function throughShell(command: string): string[] {
  const res = spawnSync('sh', ['-c', command], { encoding: 'utf8' });
  assert.equal(res.status, 0, res.stderr);
  return res.stdout.split('\0').slice(0, -1);
}

test('remote command: hostile arguments arrive byte for byte through a real sh -c', () => {
  const cmd = remoteCommand({ program: 'printf', args: ['%s\\0', ...hostile] }, 'root');
  assert.deepEqual(throughShell(cmd), hostile);
});

test('remote command: environment values and the working directory are data, not shell text', () => {
  const value = "x'; $(id) `id` \n y";
  const cmd = remoteCommand(
    { program: 'sh', args: ['-c', 'printf "%s\\0%s\\0" "$PGSCALE_PROBE" "$(pwd)"'], env: { PGSCALE_PROBE: value }, cwd: '/tmp' },
    'root',
  );
  assert.deepEqual(throughShell(cmd), [value, '/tmp']);
});

test('remote command: runAs drops root with runuser, uses sudo -n otherwise, nothing when already that user', () => {
  const inv = { program: 'pg_ctl', args: ['status'], runAs: remoteAccount('postgres') };
  assert.match(remoteCommand(inv, 'root'), /^runuser -u postgres -- env pg_ctl status$/);
  assert.match(remoteCommand(inv, 'deploy'), /^sudo -n -u postgres -- env pg_ctl status$/);
  assert.equal(remoteCommand(inv, 'postgres'), 'env pg_ctl status');
});

test('remote command: a password never goes into a remote command line', () => {
  assert.throws(() => remoteCommand({ program: 'psql', args: [], env: { PGPASSWORD: 'secret' } }, 'root'), /PGPASSWORD/);
  assert.throws(() => remoteCommand({ program: 'x', args: [], env: { 'A B': '1' } }, 'root'), /invalid environment/);
});

test('ssh options: batch mode, timeout, private control path; never host key checking off', () => {
  const opts = sshOptions({ destination: 'db2', sshConfig: '/etc/pgscale/ssh_config' }, '/tmp/pgscale-ssh-x');
  const joined = opts.join(' ');
  assert.match(joined, /^-F \/etc\/pgscale\/ssh_config /);
  assert.match(joined, /BatchMode=yes/);
  assert.match(joined, /ConnectTimeout=10/);
  assert.match(joined, /ControlPath=\/tmp\/pgscale-ssh-x\/%C/);
  assert.doesNotMatch(joined, /StrictHostKeyChecking|UserKnownHostsFile=\/dev\/null/);
});

test('destinations: options and whitespace refused', () => {
  assert.equal(validateDestination('postgres@db2'), 'postgres@db2');
  for (const bad of ['-oProxyCommand=x', 'a b', '', 'a\nb']) assert.throws(() => validateDestination(bad), /not an ssh destination/);
});

test('ssh failures explained', () => {
  assert.match(
    describeSshFailure('db2', 'No ED25519 host key is known for 10.231.7.2 and you have requested strict checking.\nHost key verification failed.'),
    /host key of db2 is not known/,
  );
  assert.match(describeSshFailure('db2', 'root@10.231.7.2: Permission denied (publickey).'), /key authentication/);
  assert.match(describeSshFailure('db2', 'ssh: connect to host 10.231.9.2 port 22: Connection timed out'), /unreachable/);
});
