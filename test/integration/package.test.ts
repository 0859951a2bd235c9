/**
 * `npm run package` as a database host gets it: the single executable runs where no `node` is on
 * PATH, and the .deb installs /usr/bin/pgscale and removes cleanly. Both inside private mount
 * namespaces (overlays over the directories touched), so this machine's /usr, PATH and dpkg
 * database never change. The package is built once, here (tens of seconds).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageAll } from '../../packaging/build.js';
import type { DetectReport } from '../../src/detect.js';
import { isRoot, type RunResult } from '../../src/runner.js';
import { upgradeCommand, createCluster, runner, scratchDir, teardownAll, type TestCluster } from '../helpers/testbed.js';

after(teardownAll);

/**
 * Runs "$@" in a private mount namespace where every directory on PATH that holds `node` is
 * overlaid with node removed (the overlays' upper layers on a tmpfs over $1), and proves that
 * `command -v node` then finds nothing.
 */
const WITHOUT_NODE = `set -eu
scratch=$1; shift
mount -t tmpfs tmpfs "$scratch"
i=0
IFS=:
for dir in $PATH; do
  case $dir in /*) ;; *) continue ;; esac
  [ -e "$dir/node" ] || [ -L "$dir/node" ] || continue
  i=$((i + 1)); mkdir "$scratch/u$i" "$scratch/w$i"
  mount -t overlay overlay -o "lowerdir=$dir,upperdir=$scratch/u$i,workdir=$scratch/w$i" "$dir"
  rm "$dir/node"
done
unset IFS
if command -v node >/dev/null 2>&1; then echo "node is still on PATH: $(command -v node)" >&2; exit 99; fi
exec "$@"
`;

/**
 * Installs and purges the .deb ($2) in a private mount namespace: /usr and /var/lib/dpkg are
 * overlays (upper layers on a tmpfs over $1), dpkg logs nowhere. Prints what it saw, one fact a line.
 */
const DEB_ROUND_TRIP = `set -eu
scratch=$1 deb=$2
mount -t tmpfs tmpfs "$scratch"
for d in /usr /var/lib/dpkg; do
  n=$(echo "$d" | tr / _)
  mkdir "$scratch/u$n" "$scratch/w$n"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$scratch/u$n,workdir=$scratch/w$n" "$d"
done
dpkg --log=/dev/null -i "$deb" >&2
echo "status=$(dpkg-query -W -f='\${Status} \${Version}' pgscale)"
echo "link=$(readlink -f /usr/bin/pgscale)"
echo "version=$(/usr/bin/pgscale --version)"
echo "files=$(dpkg -L pgscale | grep -c . )"
/usr/bin/pgscale tune --pg-version 17 --memory 8GB --cpus 4 --storage ssd --format sql | grep -c '^ALTER SYSTEM' | sed 's/^/tuneLines=/'
dpkg --log=/dev/null --purge pgscale >&2
echo "afterPurge=$(ls -d /usr/bin/pgscale /usr/lib/pgscale 2>/dev/null | wc -l)"
echo "queryAfterPurge=$(dpkg-query -W pgscale >/dev/null 2>&1 && echo found || echo gone)"
`;

const facts = (res: RunResult) =>
  new Map(
    res.stdout
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
const show = (res: RunResult) => `exit ${res.exitCode}\nstdout:\n${res.stdout.slice(-3000)}\nstderr:\n${res.stderr.slice(-3000)}`;
const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('the packaged pgscale on a host without Node.js', { skip: !isRoot() && 'mount namespaces (unshare -m), overlays and dpkg need root' }, () => {
  let built: Awaited<ReturnType<typeof packageAll>>;
  let old: TestCluster;

  before(async () => {
    [built, old] = await Promise.all([packageAll(), createCluster({ version: 16, checksums: true })]);
  });

  const withoutNode = (args: string[]) =>
    runner.run({
      program: 'unshare',
      args: ['-m', '--propagation', 'private', 'sh', '-c', WITHOUT_NODE, 'sh', scratchDir('pgscale-nonode-'), built.executable, ...args],
      cwd: '/',
      env: { NO_COLOR: '1' },
    });

  test('no node on PATH: the namespace proves it', async () => {
    const res = await runner.run({
      program: 'unshare',
      args: ['-m', '--propagation', 'private', 'sh', '-c', WITHOUT_NODE, 'sh', scratchDir('pgscale-nonode-'), 'sh', '-c', 'node -e 0'],
      cwd: '/',
    });
    assert.equal(res.exitCode, 127, show(res));
    assert.match(res.stderr, /node: not found/);
  });

  test('--version', async () => {
    const res = await withoutNode(['--version']);
    assert.equal(res.exitCode, 0, show(res));
    assert.match(res.stdout, /^pgscale\/0\.\d+\.\d+ linux-x64 node-v22\.\d+\.\d+$/m);
  });

  test('detect --json finds the running 16 cluster', async () => {
    const res = await withoutNode(['detect', '--json', '--pgdata', old.pgdata, '--bindir', old.bindir]);
    assert.equal(res.exitCode, 0, show(res));
    const report = JSON.parse(res.stdout) as DetectReport;
    assert.equal(report.clusters.length, 1);
    assert.equal(report.clusters[0]!.major, 16);
    assert.equal(report.clusters[0]!.state, 'running');
    assert.equal(report.clusters[0]!.checksums, true);
  });

  test('a dry-run upgrade plan 16 → 17 with its checks; nothing created', async () => {
    const work = scratchDir('pgscale-pkg-up-');
    const newDataDir = join(work, 'data-17');
    const stateDir = join(work, 'state');
    const res = await withoutNode([
      ...upgradeCommand(old, { 'to-version': 17, 'new-pgdata': newDataDir, 'state-dir': stateDir, 'no-backup': true, 'dry-run': true }),
    ]);
    assert.equal(res.exitCode, 0, show(res));
    assert.match(res.stdout, /^# pgscale plan: upgrade/m);
    assert.match(res.stdout, /## Checks/);
    assert.match(res.stdout, /^\| target version \| pass \|/m);
    assert.equal(existsSync(newDataDir), false, 'a dry run creates nothing');
    assert.equal(existsSync(stateDir), false, 'a dry run leaves no state');
  });

  test('the tarball holds the executable and the data it reads beside itself', async () => {
    const res = await runner.run({ program: 'tar', args: ['-tzf', built.tarball] });
    assert.equal(res.exitCode, 0, show(res));
    const entries = new Set(res.stdout.split('\n'));
    for (const e of [
      'pgscale/pgscale',
      'pgscale/templates/pgscale.conf.tmpl',
      'pgscale/playbooks/upgrade-16-to-17.yaml',
      'pgscale/src/gucCatalog/data/pg17.json',
    ])
      assert.ok(entries.has(e), `${e} in the tarball`);
  });

  test("the .deb installs /usr/bin/pgscale, which runs, and purges cleanly; the machine's dpkg database is untouched", async () => {
    const statusBefore = sha256('/var/lib/dpkg/status');
    const res = await runner.run({
      program: 'unshare',
      args: ['-m', '--propagation', 'private', 'sh', '-c', DEB_ROUND_TRIP, 'sh', scratchDir('pgscale-deb-'), built.deb],
      cwd: '/',
    });
    assert.equal(res.exitCode, 0, show(res));
    const f = facts(res);
    assert.match(f.get('status') ?? '', /^install ok installed 0\.\d+\.\d+$/, show(res));
    assert.equal(f.get('link'), '/usr/lib/pgscale/pgscale');
    assert.match(f.get('version') ?? '', /^pgscale\/0\.\d+\.\d+ linux-x64 node-v22/);
    assert.ok(Number(f.get('files')) >= 10, `dpkg -L lists the package's files: ${f.get('files')}`);
    assert.ok(Number(f.get('tuneLines')) > 5, 'templates and catalogs are found under /usr/lib/pgscale');
    assert.equal(f.get('afterPurge'), '0', 'purge removes /usr/bin/pgscale and /usr/lib/pgscale');
    assert.equal(f.get('queryAfterPurge'), 'gone');
    assert.equal(sha256('/var/lib/dpkg/status'), statusBefore);
    assert.equal(existsSync('/usr/bin/pgscale'), false);
    assert.equal(existsSync('/usr/lib/pgscale'), false);
  });
});
