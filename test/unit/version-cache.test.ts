import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { versionLookup } from '../../src/cluster/versionCache.js';
import { probeBindir } from '../../src/cluster/installations.js';
import { ZxRunner, type Runner } from '../../src/runner.js';

const V17 = 'postgres (PostgreSQL) 17.6 (Debian 17.6-1.pgdg120+1)\n';

function scratch(): { dir: string; binary: string; file: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'pgscale-version-cache-'));
  const binary = join(dir, 'postgres');
  writeFileSync(binary, `#!/bin/sh\nprintf '%s' '${V17}'\n`, { mode: 0o755 });
  return { dir, binary, file: join(dir, 'cache', 'postgres-versions.json'), done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('an answer is used only while the binary is the same file; the cache is 0600 in a 0700 directory', (t) => {
  const s = scratch();
  t.after(s.done);
  assert.equal(versionLookup(s.binary, s.file).cached, undefined, 'nothing cached yet');
  versionLookup(s.binary, s.file).remember(V17);
  assert.equal(statSync(s.file).mode & 0o777, 0o600);
  assert.equal(statSync(join(s.dir, 'cache')).mode & 0o777, 0o700);
  assert.equal(versionLookup(s.binary, s.file).cached, V17);
  // found through a symlink (as /usr/bin links lead to a bindir): the same file, the same answer
  symlinkSync(s.binary, join(s.dir, 'link'));
  assert.equal(versionLookup(join(s.dir, 'link'), s.file).cached, V17);
  // a package upgrade rewrites the binary: never the old answer
  appendFileSync(s.binary, '# 17.7\n');
  assert.equal(versionLookup(s.binary, s.file).cached, undefined);
});

test('a binary replaced between the lookup and the probe is not paired with the answer', (t) => {
  const s = scratch();
  t.after(s.done);
  const lookup = versionLookup(s.binary, s.file);
  appendFileSync(s.binary, '# replaced meanwhile\n');
  lookup.remember(V17);
  assert.equal(versionLookup(s.binary, s.file).cached, undefined);
});

test('a corrupt, foreign-writable or missing cache is ignored, and an unwritable one changes nothing', (t) => {
  const s = scratch();
  t.after(s.done);
  versionLookup(s.binary, s.file).remember(V17);
  chmodSync(s.file, 0o666);
  assert.equal(versionLookup(s.binary, s.file).cached, undefined, 'writable by others: not trusted');
  for (const text of ['{not json', '[]', 'null', JSON.stringify({ [s.binary]: { key: 1, output: V17 } })]) {
    writeFileSync(s.file, text, { mode: 0o600 });
    chmodSync(s.file, 0o600);
    assert.equal(versionLookup(s.binary, s.file).cached, undefined, text);
  }
  rmSync(s.file);
  assert.equal(versionLookup(s.binary, s.file).cached, undefined);
  // the cache's directory is a file: remembering fails quietly
  const blocked = join(s.dir, 'postgres-versions.json');
  writeFileSync(blocked, 'x');
  assert.doesNotThrow(() => versionLookup(s.binary, join(blocked, 'x.json')).remember(V17));
  assert.equal(versionLookup(s.binary, join(blocked, 'x.json')).cached, undefined);
  assert.equal(readFileSync(blocked, 'utf8'), 'x');
});

test('probeBindir runs postgres -V once for the same binary, and again once it changed', async (t) => {
  const s = scratch();
  t.after(s.done);
  const real = new ZxRunner();
  let runs = 0;
  const counting: Runner = {
    run: (inv) => {
      runs++;
      return real.run(inv);
    },
    runPipeline: (p) => real.runPipeline(p),
    stream: (inv) => real.stream(inv),
  };
  const first = await probeBindir(counting, s.dir, 'explicit');
  assert.deepEqual({ major: first.major, version: first.version }, { major: 17, version: '17.6 (Debian 17.6-1.pgdg120+1)' });
  const again = await probeBindir(counting, s.dir, 'explicit');
  assert.deepEqual(again, first);
  assert.equal(runs, 1, 'the second probe used the cached answer');
  writeFileSync(s.binary, `#!/bin/sh\necho 'postgres (PostgreSQL) 18.1'\n`);
  assert.equal((await probeBindir(counting, s.dir, 'explicit')).major, 18);
  assert.equal(runs, 2);
});
