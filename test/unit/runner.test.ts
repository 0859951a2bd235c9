import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuditEvent } from '../../src/audit.js';
import { ZxRunner, abortKillSignal } from '../../src/runner.js';

// real programs, no shell between: what run() returns is what the program did
const events: AuditEvent[] = [];
const runner = new ZxRunner({ record: (e) => events.push(e) });

test('run: exit code, stdout and stderr apart, arguments passed verbatim (no shell)', async () => {
  const res = await runner.run({ program: 'sh', args: ['-c', 'printf "%s|" "$@"; echo err >&2; exit 3', 'sh', 'a b', '$HOME', "'; rm -rf /"] });
  assert.equal(res.exitCode, 3);
  assert.equal(res.signal, null);
  assert.equal(res.stdout, "a b|$HOME|'; rm -rf /|");
  assert.equal(res.stderr, 'err\n');
  const last = events.at(-1);
  assert.equal(last?.kind === 'run' && last.exitCode, 3, 'audited');
});

test('run: input on stdin, and end of input when none is given', async () => {
  assert.equal((await runner.run({ program: 'cat', args: [], input: 'héllo\n' })).stdout, 'héllo\n');
  const noInput = await runner.run({ program: 'cat', args: [], timeoutMs: 10_000 });
  assert.deepEqual([noInput.exitCode, noInput.stdout], [0, '']);
});

test('run: environment added to the inherited one, cwd honoured', async () => {
  const res = await runner.run({ program: 'sh', args: ['-c', 'echo "$PGSCALE_T $PWD ${PATH:+path}"'], env: { PGSCALE_T: 'x' }, cwd: '/tmp' });
  assert.equal(res.stdout, 'x /tmp path\n');
});

test('run: a program that cannot start fails like a shell says (127), not with an exception', async () => {
  const res = await runner.run({ program: '/nonexistent/pgscale-test', args: [] });
  assert.equal(res.exitCode, 127);
  assert.match(res.stderr, /\/nonexistent\/pgscale-test: spawn .*ENOENT/);
});

test('run: the timeout and the abort signal kill the whole process group', async () => {
  const started = performance.now();
  const timed = await runner.run({ program: 'sh', args: ['-c', 'sleep 30 & wait'], timeoutMs: 200 });
  assert.equal(timed.signal, 'SIGTERM');
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 200);
  const aborted = await runner.run({ program: 'sh', args: ['-c', 'sleep 30 | cat'], signal: ac.signal });
  assert.equal(aborted.signal, 'SIGTERM');
  // 'close' waits for every holder of the output pipes: the background sleeps were killed too
  assert.ok(performance.now() - started < 10_000);
});

test('an abort sends SIGTERM, except to a pgscale child, which is sent the signal pgscale received', async () => {
  const ac = new AbortController();
  ac.abort('SIGINT');
  assert.equal(abortKillSignal({ signal: ac.signal }), 'SIGTERM');
  assert.equal(abortKillSignal({ signal: ac.signal, forwardInterrupt: true }), 'SIGINT');
  const plain = new AbortController();
  plain.abort();
  assert.equal(abortKillSignal({ signal: plain.signal, forwardInterrupt: true }), 'SIGTERM', 'an abort that is no signal');
  // the program really gets it
  const forwarded = new AbortController();
  setTimeout(() => forwarded.abort('SIGINT'), 200);
  const res = await runner.run({ program: 'sleep', args: ['30'], signal: forwarded.signal, forwardInterrupt: true });
  assert.equal(res.signal, 'SIGINT');
});

test('a program that cleans up on one signal is sent that one on an abort, and SIGKILL if it is still there after its grace', async () => {
  const plain = new AbortController();
  plain.abort();
  assert.equal(abortKillSignal({ signal: plain.signal, abortWith: { signal: 'SIGINT', graceMs: 1000 } }), 'SIGINT');
  // it traps SIGINT, cleans up and exits 7 on its own
  const cleaner = new AbortController();
  setTimeout(() => cleaner.abort(), 300);
  const cleaned = await runner.run({
    program: 'sh',
    args: ['-c', 'trap "echo cleaned; exit 7" INT; while :; do sleep 0.05; done'],
    signal: cleaner.signal,
    abortWith: { signal: 'SIGINT', graceMs: 10_000 },
  });
  assert.deepEqual([cleaned.exitCode, cleaned.signal, cleaned.stdout], [7, null, 'cleaned\n']);
  // it ignores SIGINT: SIGKILL ends it after the grace, not before
  const stuck = new AbortController();
  setTimeout(() => stuck.abort(), 300);
  const started = performance.now();
  const killed = await runner.run({
    program: 'sh',
    args: ['-c', 'trap "" INT; while :; do sleep 0.05; done'],
    signal: stuck.signal,
    abortWith: { signal: 'SIGINT', graceMs: 700 },
  });
  const took = performance.now() - started;
  assert.equal(killed.signal, 'SIGKILL');
  assert.ok(took >= 900 && took < 5000, `${took} ms`);
});
