/**
 * A database host's packaging layout built inside a private mount namespace, so this machine never
 * changes: a tmpfs over a scratch directory holds the upper layers of overlays over whole trees
 * (/usr, /etc…), a fixture tree is copied over /, and directories are bind-mounted where the layout
 * wants them (test bed binaries as /usr/lib/postgresql/N, scratch directories as /etc/postgresql…).
 * Everything goes with the namespace.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import type { RunResult } from '../../src/runner.js';
import { processAlive, runningPostmasters } from '../../src/server/postgres.js';
import { onTeardown, runner, runTeardown, scratchDir } from './testbed.js';

/** $1 scratch (a tmpfs goes over it), $2 a fixture tree copied over / ('' for none), $3 the overlaid directories, then SOURCE TARGET pairs up to "--", then the command. */
const LAYOUT_HOST = `set -eu
scratch=$1 fixture=$2 overlays=$3; shift 3
mount -t tmpfs tmpfs "$scratch"
for d in $overlays; do
  n=$(echo "$d" | tr / _)
  mkdir "$scratch/u$n" "$scratch/w$n"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$scratch/u$n,workdir=$scratch/w$n" "$d"
done
[ -z "$fixture" ] || cp -a "$fixture/." /
while [ "$1" != -- ]; do mkdir -p "$2"; mount --bind "$1" "$2"; shift 2; done
shift
exec "$@"
`;

export interface HostLayout {
  /** Trees overlaid (writable inside, unchanged outside), e.g. /usr. */
  overlays?: string[];
  /** A tree copied over / after the overlays: only into overlaid trees. */
  fixture?: string;
  /** [source, target] bind mounts, in order (a later target may lie inside an earlier one). */
  binds: [string, string][];
}

const unshareArgs = (layout: HostLayout, command: string[]) => [
  '-m',
  '--propagation',
  'private',
  'sh',
  '-c',
  LAYOUT_HOST,
  'sh',
  scratchDir('pgscale-ns-'),
  layout.fixture ?? '',
  (layout.overlays ?? []).join(' '),
  ...layout.binds.flat(),
  '--',
  ...command,
];

/** Runs one command on a host with this layout; the namespace ends with it. */
export function runOnLayoutHost(layout: HostLayout, command: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return runner.run({ program: 'unshare', args: unshareArgs(layout, command), cwd: '/', env });
}

export interface LayoutHost {
  /** The process holding the namespace. */
  pid: number;
  /** Runs a command inside the namespace (nsenter), as root. */
  run(command: string[], env?: NodeJS.ProcessEnv): Promise<RunResult>;
  /** Ends it now (else at teardown): pgscale tells servers apart by path, and another host's servers have the same paths. */
  stop(): void;
}

const mountNamespace = (pid: number) => {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
};

/**
 * A host with this layout that lives until teardown, for scenarios of several commands (servers it
 * starts keep running in it). Teardown stops every postmaster inside (immediate), then the namespace.
 */
export async function startLayoutHost(layout: HostLayout): Promise<LayoutHost> {
  const holder = spawn('unshare', unshareArgs(layout, ['sh', '-c', 'echo ready; exec sleep infinity']), { stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = holder.pid!;
  await new Promise<void>((resolve, reject) => {
    let err = '';
    holder.stderr.on('data', (d: Buffer) => (err += d.toString()));
    holder.stdout.once('data', () => resolve());
    holder.once('exit', (code) => reject(new Error(`the layout host did not come up (exit ${code}): ${err}`)));
  });
  const ns = mountNamespace(pid);
  const teardown = onTeardown(`layout host ${pid}`, () => {
    const inside = runningPostmasters().filter((pm) => mountNamespace(pm.pid) === ns);
    for (const pm of inside) process.kill(pm.pid, 'SIGQUIT');
    for (let i = 0; i < 100 && inside.some((pm) => processAlive(pm.pid)); i++) spawnSync('sleep', ['0.1']);
    holder.kill('SIGKILL');
    for (let i = 0; i < 100 && processAlive(pid); i++) spawnSync('sleep', ['0.1']);
  });
  return {
    pid,
    run: (command, env = {}) => runner.run({ program: 'nsenter', args: ['-t', String(pid), '-m', '--', ...command], cwd: '/', env }),
    stop: () => runTeardown(teardown),
  };
}
