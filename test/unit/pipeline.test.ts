/** The step engine on toy steps (no PostgreSQL): plans, drift, journal, resume, rollback, lock. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryAuditLog } from '../../src/audit.js';
import { ExitCode, PgscaleError } from '../../src/errors.js';
import { resumeRun, rollbackRun, startRun, type ExecuteOptions } from '../../src/pipeline/execute.js';
import { listRuns, readRun } from '../../src/pipeline/journal.js';
import { actionDrift, buildPlan, defineOperation, fingerprintDrift, type Plan } from '../../src/pipeline/plan.js';
import { readPlanFile, writePlanFile } from '../../src/pipeline/planFile.js';
import { planMarkdown } from '../../src/pipeline/render.js';
import { defineStep, type JsonObject, type StepContext } from '../../src/pipeline/step.js';
import { ZxRunner } from '../../src/runner.js';

interface ToyParams extends JsonObject {
  dir: string;
  name: string;
  failOnce: boolean;
}

/** Writes DIR/NAME; its postcondition is the file; rollback removes it. */
const writeFileStep = defineStep<ToyParams>({
  kind: 'toy.write',
  title: (p) => `write ${p.name}`,
  async check(_ctx, p) {
    return [{ name: 'dir exists', severity: 'error', passed: existsSync(p.dir), detail: p.dir }];
  },
  async plan(_ctx, p) {
    return [{ kind: 'file', path: join(p.dir, p.name), change: 'create' }];
  },
  async apply(_ctx, p) {
    const flag = join(p.dir, `${p.name}.failed-once`);
    if (p.failOnce && !existsSync(flag)) {
      writeFileSync(flag, '');
      throw new Error(`${p.name} fails the first time`);
    }
    writeFileSync(join(p.dir, p.name), p.name);
    return { wrote: p.name };
  },
  async verify(_ctx, p) {
    return existsSync(join(p.dir, p.name)) ? { ok: true, detail: `${p.name} present` } : { ok: false, detail: `${p.name} missing` };
  },
  async rollback(_ctx, p) {
    rmSync(join(p.dir, p.name), { force: true });
  },
  rollbackNote: (p) => `remove ${p.name}`,
});

const stopStep = defineStep<ToyParams>({
  ...writeFileStep,
  kind: 'toy.no-return',
  pointOfNoReturn: true,
  downtime: true,
  rollback: undefined,
  rollbackNote: () => 'cannot be undone: restore from the backup',
  estimateSeconds: () => 7,
});

interface ToyOp extends JsonObject {
  dir: string;
  failAt: string;
  withNoReturn: boolean;
}

const toyOperation = defineOperation<ToyOp>({
  name: 'toy',
  describeTarget: (p) => ({ description: p.dir, lockKey: `toy:${p.dir}` }),
  summary: () => 'toy operation',
  steps: (p) => [
    ...['a', 'b', 'c'].map((name) => ({ id: name, kind: writeFileStep.kind, params: { dir: p.dir, name, failOnce: p.failAt === name } })),
    ...(p.withNoReturn ? [{ id: 'z', kind: stopStep.kind, params: { dir: p.dir, name: 'z', failOnce: false } }] : []),
  ],
  async fingerprint(_ctx, p) {
    return { marker: existsSync(join(p.dir, 'marker')) ? readFileSync(join(p.dir, 'marker'), 'utf8') : null };
  },
});

/** Makes its change (as a step that starts a server does); its verify then cannot connect: sql.ts's connection errors say exit 4. */
const startsThenCannotConnect = defineStep<ToyParams>({
  ...writeFileStep,
  kind: 'toy.starts-then-cannot-connect',
  async verify(_ctx, p) {
    if (!existsSync(join(p.dir, p.name))) return { ok: false, detail: 'not started' };
    throw new PgscaleError('cannot connect to PostgreSQL at /tmp:5432', ExitCode.FailedNoChange);
  },
});

const toyStartOperation = defineOperation<ToyOp>({
  name: 'toy-start',
  describeTarget: (p) => ({ description: p.dir, lockKey: `toy-start:${p.dir}` }),
  summary: () => 'toy start',
  steps: (p) => [{ id: 'start', kind: startsThenCannotConnect.kind, params: { dir: p.dir, name: 'server', failOnce: false } }],
  fingerprint: async () => ({}),
});

function setup(failAt = '', withNoReturn = false) {
  const dir = mkdtempSync(join(tmpdir(), 'pgscale-engine-'));
  const audit = new MemoryAuditLog();
  const ctx: StepContext = {
    runner: new ZxRunner(audit),
    audit,
    signal: new AbortController().signal,
    progress: { message: () => undefined, bytes: () => undefined },
    outputs: new Map(),
    runDir: dir,
    trackProcess: () => undefined,
  };
  const opts: ExecuteOptions = {
    stateDir: join(dir, 'state'),
    runner: ctx.runner,
    audit,
    progress: 'silent',
    signal: new AbortController().signal,
    assumeYes: true,
  };
  return { dir, ctx, opts, params: { dir, failAt, withNoReturn } as ToyOp, done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('a plan names every step, check and action; it renders as markdown and survives its file', async () => {
  const s = setup('', true);
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    assert.deepEqual(
      plan.steps.map((x) => x.id),
      ['a', 'b', 'c', 'z'],
    );
    assert.equal(plan.pointOfNoReturn, 'z');
    assert.equal(plan.downtimeSeconds, 7);
    assert.ok(plan.steps.every((x) => x.checks.length === 1 && x.checks[0]!.passed));
    const md = planMarkdown(plan);
    for (const text of [
      '# pgscale plan: toy',
      'expected downtime: 7.0 s',
      'point of no return: after step `z`',
      '## How to roll back',
      '- `z`: cannot be undone',
    ])
      assert.ok(md.includes(text), text);
    const file = join(s.dir, 'plan.json');
    writePlanFile(file, plan);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(readPlanFile(file), plan);
    assert.throws(() => writePlanFile(file, plan), /already exists/);
    writeFileSync(join(s.dir, 'bad.json'), JSON.stringify({ ...plan, steps: 'nope' }));
    assert.throws(() => readPlanFile(join(s.dir, 'bad.json')), /does not match the plan schema/);
    assert.equal(existsSync(s.opts.stateDir), false, 'planning wrote no state');
  } finally {
    s.done();
  }
});

test('drift: fingerprint and action differences are listed', async () => {
  const s = setup();
  try {
    const reviewed = await buildPlan(toyOperation, s.params, s.ctx);
    writeFileSync(join(s.dir, 'marker'), 'changed');
    const now = await buildPlan(toyOperation, s.params, s.ctx);
    assert.deepEqual(fingerprintDrift(reviewed.fingerprint, now.fingerprint), ['marker: planned null, now "changed"']);
    const altered: Plan = { ...now, steps: now.steps.map((x) => (x.id === 'b' ? { ...x, actions: [] } : x)) };
    assert.deepEqual(actionDrift(reviewed, altered), ['step b (write b): its commands or file changes differ from the reviewed plan']);
    assert.deepEqual(actionDrift(reviewed, now), []);
  } finally {
    s.done();
  }
});

test('a failed run keeps its lock, resumes past its done steps, and a second run is refused meanwhile', async () => {
  const s = setup('b');
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(startRun(plan, s.opts), (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.FailedAfterChange);
    const [run] = listRuns(s.opts.stateDir);
    assert.equal(run?.status, 'failed');
    assert.deepEqual([...run!.steps.values()], ['done', 'failed', 'pending']);
    await assert.rejects(
      startRun(plan, s.opts),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.Refused && /did not finish/.test(e.message),
    );
    const resumed = await resumeRun(run!.id, s.opts);
    assert.equal(resumed.status, 'completed');
    assert.deepEqual(
      resumed.steps.map((x) => x.state),
      ['done', 'done', 'done'],
    );
    const events = readRun(s.opts.stateDir, run!.id).events.map((e) => e.type);
    assert.ok(events.includes('step-skipped') === false, 'a done step is not re-verified into a skip; it is left alone');
    for (const n of ['a', 'b', 'c']) assert.equal(readFileSync(join(s.dir, n), 'utf8'), n);
    await assert.rejects(resumeRun(run!.id, s.opts), /already completed/);
    // the lock is free again
    assert.equal((await startRun(await buildPlan(toyOperation, s.params, s.ctx), s.opts)).status, 'completed');
  } finally {
    s.done();
  }
});

test('a step whose apply returned is never recorded clean: a connection error in its verify leaves it failed and the lock held', async () => {
  const s = setup();
  try {
    const plan = await buildPlan(toyStartOperation, s.params, s.ctx);
    await assert.rejects(startRun(plan, s.opts), (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.FailedAfterChange);
    const [run] = listRuns(s.opts.stateDir);
    assert.deepEqual([...run!.steps.values()], ['failed'], 'what it started is still there: the step is not clean');
    await assert.rejects(startRun(plan, s.opts), (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.Refused);
    assert.equal((await rollbackRun(run!.id, s.opts)).status, 'rolled-back');
    assert.equal(existsSync(join(s.dir, 'server')), false, 'the rollback undid it');
  } finally {
    s.done();
  }
});

test('rollback undoes newest first and is refused past a point of no return', async () => {
  const s = setup('c');
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(startRun(plan, s.opts));
    const id = listRuns(s.opts.stateDir)[0]!.id;
    const undone = await rollbackRun(id, s.opts);
    assert.equal(undone.status, 'rolled-back');
    assert.ok(!existsSync(join(s.dir, 'a')) && !existsSync(join(s.dir, 'b')));
    const order = readRun(s.opts.stateDir, id)
      .events.filter((e) => e.type === 'step-rolled-back')
      .map((e) => (e as { step: string }).step);
    assert.deepEqual(order, ['c', 'b', 'a']);
  } finally {
    s.done();
  }
  const t = setup('', true);
  try {
    const run = await startRun(await buildPlan(toyOperation, t.params, t.ctx), t.opts);
    await assert.rejects(
      rollbackRun(run.runId, t.opts),
      (e: unknown) =>
        e instanceof PgscaleError &&
        e.exitCode === ExitCode.Refused &&
        /point of no return/.test(e.message) &&
        e.hint === 'cannot be undone: restore from the backup',
    );
  } finally {
    t.done();
  }
});

test('a step needing confirmation is refused without a TTY or --yes, before anything of it runs', async () => {
  const s = setup('', true);
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(startRun(plan, { ...s.opts, assumeYes: false }), (e: unknown) => e instanceof PgscaleError && /needs confirmation/.test(e.message));
    assert.equal(existsSync(join(s.dir, 'z')), false);
    const answered: string[] = [];
    const s2 = setup('', true);
    try {
      const run = await startRun(await buildPlan(toyOperation, s2.params, s2.ctx), {
        ...s2.opts,
        assumeYes: false,
        confirm: async (q) => (answered.push(q), true),
      });
      assert.equal(run.status, 'completed');
      assert.equal(answered.length, 1);
      assert.match(answered[0]!, /point of no return/);
    } finally {
      s2.done();
    }
  } finally {
    s.done();
  }
});

test('a failure before downtime undoes what ran and releases the lock: exit 4, nothing left', async () => {
  const s = setup('b', true);
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(
      startRun(plan, s.opts),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.FailedNoChange && /undone/.test(e.message),
    );
    assert.equal(existsSync(join(s.dir, 'a')), false, 'the done step before the failure was undone');
    const [run] = listRuns(s.opts.stateDir);
    assert.equal(run?.status, 'rolled-back');
    // the lock is free: a new run may start at once
    assert.equal((await startRun(await buildPlan(toyOperation, { ...s.params, failAt: '' }, s.ctx), s.opts)).status, 'completed');
  } finally {
    s.done();
  }
});

test('without a TTY or --yes a plan with downtime is refused before any step and before any run exists', async () => {
  const s = setup('', true);
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(
      startRun(plan, { ...s.opts, assumeYes: false }),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.Refused && /nothing was done/.test(e.message),
    );
    assert.equal(existsSync(join(s.dir, 'a')), false);
    assert.deepEqual(listRuns(s.opts.stateDir), []);
  } finally {
    s.done();
  }
});
