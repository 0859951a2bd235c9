/**
 * bench/startup — wall time of `pgscale --help` and `pgscale detect --json` next to a bare
 * `node -e 0`, in one run; and of the single executable (build/pgscale, from `npm run package`)
 * when it has been built.
 *
 *   npm run build && node dist/bench/startup.js      (Node 22 from the npm `node` package)
 *
 * Environment: PGSCALE_BENCH_REPEATS (default 21).
 *
 * Method: each command runs REPEATS times, the commands interleaved round-robin so that other load
 * on the machine spreads over all of them alike, after two unmeasured rounds that warm the page
 * cache. `detect --json` does real work on this host (reads /proc and /sys, runs `postgres -V` and
 * `pg_controldata` for each cluster found), as a user's would. The table shows the median, the
 * fastest and the slowest run, and the median's ratio to `node -e 0`; the goal is a median of at
 * most 150 ms for `--help` and `detect --json`.
 */
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ZxRunner, type Invocation } from '../src/runner.js';

const REPEATS = Number(process.env.PGSCALE_BENCH_REPEATS ?? 21);
const GOAL_MS = 150;
const root = fileURLToPath(new URL('../../', import.meta.url));
const node = process.execPath;
const bin = `${root}bin/run.js`;
const executable = `${root}build/pgscale`;

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
  cases.push({ name: 'build/pgscale --help', inv: { program: executable, args: ['--help'] }, goal: true });
  cases.push({ name: 'build/pgscale detect --json', inv: { program: executable, args: ['detect', '--json'] }, goal: true });
}

const runner = new ZxRunner();
const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
for (let round = -2; round < REPEATS; round++) {
  for (const c of cases) {
    const res = await runner.run({ ...c.inv, cwd: root });
    if (res.exitCode !== 0) throw new Error(`${c.name} failed (${res.exitCode}): ${res.stderr.trim().slice(-500)}`);
    if (round >= 0) times.get(c.name)!.push(res.durationMs);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const baseline = median(times.get('node -e 0')!);
console.log(`startup, ${REPEATS} runs each, Node ${process.version}, load average ${loadavg()[0]!.toFixed(2)}`);
console.log(`${'command'.padEnd(30)} ${'median'.padStart(8)} ${'min'.padStart(6)} ${'max'.padStart(6)} ${'× node -e 0'.padStart(12)}  goal ≤ ${GOAL_MS} ms`);
let allMet = true;
for (const c of cases) {
  const xs = times.get(c.name)!;
  const m = median(xs);
  const met = m <= GOAL_MS;
  if (c.goal) allMet &&= met;
  console.log(`${c.name.padEnd(30)} ${`${m} ms`.padStart(8)} ${String(Math.min(...xs)).padStart(6)} ${String(Math.max(...xs)).padStart(6)} ${(m / baseline).toFixed(1).padStart(11)}×  ${c.goal ? (met ? 'met' : 'NOT met') : ''}`);
}
console.log(allMet ? 'goal met' : 'goal NOT met');
