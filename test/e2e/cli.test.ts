import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseJson, runCli } from '../helpers/cli.js';
import { hostFixture, repoRoot } from '../helpers/paths.js';
import type { DetectReport } from '../../src/detect.js';

/** Command ids from the compiled command files: "backup/verify.js" → "backup verify". */
function commandIds(): string[] {
  const root = join(repoRoot, 'dist', 'commands');
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.js'))
        out.push(
          relative(root, p)
            .replace(/\.js$/, '')
            .replace(/\/index$/, '')
            .split('/')
            .join(' '),
        );
    }
  };
  walk(root);
  return out.sort();
}

test('every command has --help that documents it', async () => {
  const ids = commandIds();
  assert.ok(ids.includes('detect') && ids.includes('backup') && ids.includes('apply'), `commands: ${ids.join(', ')}`);
  for (const id of ids) {
    const res = await runCli([...id.split(' '), '--help']);
    assert.equal(res.code, 0, `${id} --help: ${res.stderr}`);
    assert.match(res.stdout, /USAGE/, id);
    assert.match(res.stdout, new RegExp(`\\$ pgscale ${id}`), id);
  }
});

test('detect --json against a fixture host parses and honours the cgroup limit', async () => {
  const ok = await runCli(['detect', '--json', '--host-root', hostFixture('container-cgroup2-2cpu-4g')], { env: { PGDATA: '' } });
  assert.equal(ok.code, 0, ok.stderr);
  const report = parseJson<DetectReport>(ok);
  assert.equal(report.compute.effective.cpus, 2);
  assert.equal(report.compute.effective.memoryBytes, 4 * 1024 ** 3);
  assert.ok(report.compute.host.memoryBytes > 200 * 1024 ** 3);
});

test('malformed cgroup files: clear message naming the file, exit code 2, JSON error under --json', async () => {
  for (const [fixture, file] of [
    ['malformed-cgroup-cpu', 'cpu.max'],
    ['malformed-cgroup-memory', 'memory.max'],
  ] as const) {
    const res = await runCli(['detect', '--host-root', hostFixture(fixture)]);
    assert.equal(res.code, 2, res.stderr);
    assert.match(res.stderr, new RegExp(file.replace('.', '\\.')));
    const json = await runCli(['detect', '--json', '--host-root', hostFixture(fixture)]);
    assert.equal(json.code, 2);
    assert.equal(parseJson<{ error: { kind: string } }>(json).error.kind, 'bad-input');
  }
});

test('an unknown flag is a usage error (exit 2)', async () => {
  const res = await runCli(['detect', '--no-such-flag']);
  assert.equal(res.code, 2);
  assert.match(res.stderr, /no-such-flag/);
});
