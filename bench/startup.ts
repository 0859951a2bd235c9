/**
 * bench/startup — wall time of `pgscale --help` and `pgscale detect --json` next to a bare
 * `node -e 0`, in one run; and of the single executable (build/pgscale/pgscale, from `npm run package`)
 * when it has been built.
 *
 *   npm run build && node dist/bench/startup.js      (Node 22 from the npm `node` package)
 *
 * Environment: PGSCALE_BENCH_REPEATS (default 21).
 *
 * Method: each command runs REPEATS times, the commands interleaved round-robin so that other load
 * on the machine spreads over all of them alike, after two unmeasured rounds that warm the page
 * cache (and Node's compile cache). `detect --json` does real work on this host (reads /proc and
 * /sys, runs `postgres -V` for each installation and `pg_controldata` for each cluster found), as a
 * user's would. As root every command, `node -e 0` included, runs in its own PID namespace with its
 * own /proc (`unshare --pid --fork --mount-proc`): servers that tests start and stop meanwhile are
 * not part of the host being measured, while the host's installed clusters (Debian, RHEL layouts)
 * are. The table shows the median, the fastest and the slowest run, and the median's ratio to
 * `node -e 0`, and the CPU time per run (user + system, of the command and every process it ran:
 * what a run costs whatever else the machine does); the goal is a median of at most 150 ms for
 * `--help` and `detect --json`. The load average is printed: on a machine shared with other work,
 * every wall-time figure grows with it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { DetectReport } from '../src/detect.js';
import { isRoot, ZxRunner, type Invocation } from '../src/runner.js';

const REPEATS = Number(process.env.PGSCALE_BENCH_REPEATS ?? 21);
const GOAL_MS = 150;
const root = fileURLToPath(new URL('../../', import.meta.url));
const node = process.execPath;
const bin = `${root}bin/run.js`;
const executable = `${root}build/pgscale/pgscale`;

interface Case {
  name: string;
  inv: Invocation;
  goal: boolean;
}

const cases: Case[] = [
  { name: 'node -e 0', inv: { program: node, args: ['-e', '0'] }, goal: false },
  { name: 'pgscale --help', inv: { program: node, args: [bin, '--help'] }, goal: true },
  { name: 'pgscale detect --json', inv: { program: node, args: [bin, 'detect', '--json'] }, goal: true },
];
if (existsSync(executable)) {
  cases.push({ name: 'executable --help', inv: { program: executable, args: ['--help'] }, goal: true });
  cases.push({ name: 'executable detect --json', inv: { program: executable, args: ['detect', '--json'] }, goal: true });
}

const isolate = (inv: Invocation): Invocation => (isRoot() ? { program: 'unshare', args: ['--pid', '--fork', '--mount-proc', inv.program, ...inv.args] } : inv);

/** CPU seconds of every waited-for descendant so far (cutime + cstime; Linux clock ticks are 1/100 s). */
const childCpuMs = (): number => {
  const fields = readFileSync('/proc/self/stat', 'utf8')
    .replace(/^.*\) /, '')
    .split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10;
};

const runner = new ZxRunner();
const cpu = new Map<string, number>(cases.map((c) => [c.name, 0]));
const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
let detected: DetectReport | undefined;
for (let round = -2; round < REPEATS; round++) {
  for (const c of cases) {
    const cpuBefore = childCpuMs();
    const res = await runner.run({ ...isolate(c.inv), cwd: root, env: { PGDATA: '' } });
    if (res.exitCode !== 0) throw new Error(`${c.name} failed (${res.exitCode}): ${res.stderr.trim().slice(-500)}`);
    if (round >= 0) {
      times.get(c.name)!.push(res.durationMs);
      cpu.set(c.name, cpu.get(c.name)! + childCpuMs() - cpuBefore);
    }
    if (c.inv.args.includes('detect')) detected = JSON.parse(res.stdout) as DetectReport;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const baseline = median(times.get('node -e 0')!);
console.log(
  `startup, ${REPEATS} runs each, Node ${process.version}, load average ${loadavg()[0]!.toFixed(2)}${isRoot() ? ', each in its own PID namespace' : ''}`,
);
console.log(
  `detect found ${detected!.installations.length} installation(s) and ${detected!.clusters.length} cluster(s): ${detected!.clusters.map((c) => `${c.major} ${c.state} ${c.dataDir}`).join('; ')}`,
);
console.log(
  `${'command'.padEnd(30)} ${'median'.padStart(8)} ${'min'.padStart(6)} ${'max'.padStart(6)} ${'× node -e 0'.padStart(12)} ${'CPU/run'.padStart(8)}  goal ≤ ${GOAL_MS} ms (median)`,
);
let allMet = true;
for (const c of cases) {
  const xs = times.get(c.name)!;
  const m = median(xs);
  const met = m <= GOAL_MS;
  if (c.goal) allMet &&= met;
  console.log(
    `${c.name.padEnd(30)} ${`${m} ms`.padStart(8)} ${String(Math.min(...xs)).padStart(6)} ${String(Math.max(...xs)).padStart(6)} ${(m / baseline).toFixed(1).padStart(11)}× ${`${Math.round(cpu.get(c.name)! / REPEATS)} ms`.padStart(8)}  ${c.goal ? (met ? 'met' : 'NOT met') : ''}`,
  );
}
console.log(allMet ? 'goal met' : 'goal NOT met');
