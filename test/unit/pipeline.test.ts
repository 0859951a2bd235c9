/** The step engine on toy steps (no PostgreSQL): plans, drift, journal, resume, rollback, lock. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryAuditLog } from '../../src/audit.js';
import { ExitCode, PgscaleError } from '../../src/errors.js';
import { resumeRun, rollbackRun, startRun, type ExecuteOptions } from '../../src/pipeline/execute.js';
import { listRunEntries, listRuns, lockPath, readRun, releaseLock, runLockKey } from '../../src/pipeline/journal.js';
import { actionDrift, buildPlan, defineOperation, describeDrift, fingerprintDrift, readSystemIdentifier, type Plan } from '../../src/pipeline/plan.js';
import { assertTrustedPlanFile, assertUnedited, planEdits, readPlanFile, writePlanFile } from '../../src/pipeline/planFile.js';
import { treeSnapshot } from '../helpers/snapshot.js';
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

/** Takes the (toy) cluster down: a failure after it keeps the run open for resume or rollback. */
const downtimeStep = defineStep<ToyParams>({ ...writeFileStep, kind: 'toy.downtime', downtime: true });

interface ToyOp extends JsonObject {
  dir: string;
  failAt: string;
  withNoReturn: boolean;
  withDowntime: boolean;
}

const toyOperation = defineOperation<ToyOp>({
  name: 'toy',
  describeTarget: (p) => ({ description: p.dir, lockKey: `toy:${p.dir}` }),
  summary: () => 'toy operation',
  steps: (p) => [
    ...(p.withDowntime ? [{ id: 'd', kind: downtimeStep.kind, params: { dir: p.dir, name: 'd', failOnce: false } }] : []),
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
  // a downtime step: a failure there is not undone by itself (before downtime, the run undoes itself)
  downtime: true,
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

function setup(failAt = '', withNoReturn = false, withDowntime = false) {
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
    dryRun: false,
  };
  // the lock directory is the host's: a run a test leaves open must not leave its lock there
  const done = () => {
    for (const r of listRuns(join(dir, 'state'))) releaseLock(runLockKey(r.plan), r.id);
    rmSync(dir, { recursive: true, force: true });
  };
  return { dir, ctx, opts, params: { dir, failAt, withNoReturn, withDowntime } as ToyOp, done };
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
    const { seal, ...content } = readPlanFile(file);
    assert.deepEqual(content, plan);
    assert.match(seal.hmacSha256, /^[0-9a-f]{64}$/);
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
    assert.deepEqual(fingerprintDrift(reviewed.fingerprint, now.fingerprint), [{ fact: ['marker'], planned: null, now: 'changed' }]);
    assert.deepEqual(fingerprintDrift(reviewed.fingerprint, now.fingerprint).map(describeDrift), ['marker appeared since the plan (now "changed")']);
    const altered: Plan = { ...now, steps: now.steps.map((x) => (x.id === 'b' ? { ...x, actions: [] } : x)) };
    assert.deepEqual(actionDrift(reviewed, altered), ['step b (write b): its commands or file changes differ from the reviewed plan']);
    assert.deepEqual(actionDrift(reviewed, now), []);
  } finally {
    s.done();
  }
});

test('a run failing after downtime began keeps its lock, resumes past its done steps, and a second run is refused meanwhile', async () => {
  const s = setup('b', false, true);
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(startRun(plan, s.opts), (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.FailedAfterChange);
    const [run] = listRuns(s.opts.stateDir);
    assert.equal(run?.status, 'failed');
    assert.deepEqual([...run.steps.values()], ['done', 'done', 'failed', 'pending']);
    await assert.rejects(
      startRun(plan, s.opts),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.Refused && /did not finish/.test(e.message),
    );
    const resumed = await resumeRun(run.id, s.opts);
    assert.equal(resumed.status, 'completed');
    assert.deepEqual(
      resumed.steps.map((x) => x.state),
      ['done', 'done', 'done', 'done'],
    );
    const events = readRun(s.opts.stateDir, run.id).events.map((e) => e.type);
    assert.ok(events.includes('step-skipped') === false, 'a done step is not re-verified into a skip; it is left alone');
    for (const n of ['a', 'b', 'c']) assert.equal(readFileSync(join(s.dir, n), 'utf8'), n);
    await assert.rejects(resumeRun(run.id, s.opts), /already completed/);
    // the lock is free again
    assert.equal((await startRun(await buildPlan(toyOperation, s.params, s.ctx), s.opts)).status, 'completed');
  } finally {
    s.done();
  }
});

test('a resume is confirmed anew when a point of no return is still ahead: refused without --yes or a terminal, asked at the first such step', async () => {
  const s = setup('b', true, true);
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(startRun(plan, s.opts), (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.FailedAfterChange);
    const [run] = listRuns(s.opts.stateDir);
    assert.deepEqual([...run!.steps.values()], ['done', 'done', 'failed', 'pending', 'pending'], 'stopped inside downtime, before z (the point of no return)');
    // nobody to ask, no --yes: refused before any step, nothing run
    await assert.rejects(
      resumeRun(run!.id, { ...s.opts, assumeYes: false }),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.Refused && /"write z" needs confirmation and nobody can be asked/.test(e.message),
    );
    assert.deepEqual([...readRun(s.opts.stateDir, run!.id).steps.values()], ['done', 'done', 'failed', 'pending', 'pending']);
    // at a terminal: asked before z, not before the steps that lead to it
    const asked: string[] = [];
    const resumed = await resumeRun(run!.id, { ...s.opts, assumeYes: false, confirm: async (q) => (asked.push(q), true) });
    assert.equal(resumed.status, 'completed');
    assert.deepEqual(asked, ['Next: write z — the cluster will be unavailable; it is the point of no return. Continue?']);
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
  const s = setup('c', false, true);
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(startRun(plan, s.opts));
    const id = listRuns(s.opts.stateDir)[0]!.id;
    const undone = await rollbackRun(id, s.opts);
    assert.equal(undone.status, 'rolled-back');
    assert.ok(!existsSync(join(s.dir, 'a')) && !existsSync(join(s.dir, 'b')) && !existsSync(join(s.dir, 'd')));
    const order = readRun(s.opts.stateDir, id)
      .events.filter((e) => e.type === 'step-rolled-back')
      .map((e) => (e as { step: string }).step);
    assert.deepEqual(order, ['c', 'b', 'a', 'd']);
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

test('a failure before any downtime undoes what the run did, releases the lock and exits 4', async () => {
  const s = setup('c');
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(
      startRun(plan, s.opts),
      (e: unknown) =>
        e instanceof PgscaleError &&
        e.exitCode === ExitCode.FailedNoChange &&
        /what the run had done is undone/.test(e.message) &&
        !/rollback/.test(e.hint ?? ''),
    );
    const [run] = listRuns(s.opts.stateDir);
    assert.equal(run?.status, 'rolled-back');
    assert.deepEqual(
      ['a', 'b', 'c'].filter((n) => existsSync(join(s.dir, n))),
      [],
      'nothing the run wrote remains',
    );
    assert.equal(existsSync(lockPath(runLockKey(plan))), false, 'the lock is free');
    // a fresh run proceeds at once (the step fails only once)
    assert.equal((await startRun(await buildPlan(toyOperation, s.params, s.ctx), s.opts)).status, 'completed');
  } finally {
    s.done();
  }
});

test("a step the failed run started whose change is found on resume counts as this run's: done, and undone by a rollback", async () => {
  const s = setup('b', false, true);
  try {
    await assert.rejects(startRun(await buildPlan(toyOperation, s.params, s.ctx), s.opts));
    const [run] = listRuns(s.opts.stateDir);
    assert.equal(run?.steps.get('b'), 'failed');
    // what a program of step b did after its run was gone (pg_repack finishing its swap)
    writeFileSync(join(s.dir, 'b'), 'b');
    const resumed = await resumeRun(run.id, s.opts);
    assert.deepEqual(
      resumed.steps.map((x) => `${x.id}:${x.state}`),
      ['d:done', 'a:done', 'b:done', 'c:done'],
    );
    assert.ok(!readRun(s.opts.stateDir, run.id).events.some((e) => e.type === 'step-skipped'));
    assert.equal((await rollbackRun(run.id, s.opts)).status, 'rolled-back');
    for (const n of ['d', 'a', 'b', 'c']) assert.ok(!existsSync(join(s.dir, n)), `${n} undone`);
  } finally {
    s.done();
  }
});

test('--dry-run in the executor: start, resume and rollback report their steps and write nothing, take no lock', async () => {
  const s = setup('b', false, true);
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    const dry = { ...s.opts, dryRun: true };
    const before = treeSnapshot(s.dir);
    const started = await startRun(plan, dry);
    assert.deepEqual(
      started.dryRun?.map((x) => x.action),
      ['run', 'run', 'run', 'run'],
    );
    assert.deepEqual(treeSnapshot(s.dir), before, 'a dry start wrote nothing (no state dir, no run)');
    assert.equal(existsSync(lockPath(runLockKey(plan))), false);

    await assert.rejects(startRun(plan, s.opts));
    const id = listRuns(s.opts.stateDir)[0]!.id;
    const lockBefore = readFileSync(lockPath(runLockKey(plan)), 'utf8');
    const failed = treeSnapshot(s.dir);
    const resumed = await resumeRun(id, dry);
    assert.deepEqual(
      resumed.dryRun?.map((x) => `${x.id}:${x.action}`),
      ['d:keep (done)', 'a:keep (done)', 'b:verify, then run if needed', 'c:verify, then run if needed'],
    );
    const undo = await rollbackRun(id, dry);
    assert.deepEqual(
      undo.dryRun?.map((x) => x.id),
      ['b', 'a', 'd'],
      'newest first, the failed step included',
    );
    assert.deepEqual(treeSnapshot(s.dir), failed, 'dry resume and rollback changed nothing: files, journal, state');
    assert.equal(readFileSync(lockPath(runLockKey(plan)), 'utf8'), lockBefore, "the lock is the failed run's still");
    assert.equal(readRun(s.opts.stateDir, id).status, 'failed');
    // a dry run of a new plan on the locked cluster is refused like the real one
    await assert.rejects(startRun(plan, dry), (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.Refused && /did not finish/.test(e.message));
    await rollbackRun(id, s.opts);
  } finally {
    s.done();
  }
});

test("the run lock is keyed by the cluster's system identifier when the plan knows it, and lives outside the state dir", () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgscale-sysid-'));
  try {
    mkdirSync(join(dir, 'global'));
    const control = Buffer.alloc(296);
    control.writeBigUInt64LE(7714411204444872482n, 0);
    writeFileSync(join(dir, 'global', 'pg_control'), control);
    assert.equal(readSystemIdentifier(dir), '7714411204444872482');
    assert.equal(readSystemIdentifier(join(dir, 'nothing-here')), undefined);
    const plan = { target: { description: 'x', lockKey: `cluster:${dir}`, systemIdentifier: '7714411204444872482' } } as Plan;
    assert.equal(runLockKey(plan), 'system:7714411204444872482');
    assert.equal(runLockKey({ target: { description: 'x', lockKey: 'server:h:5432' } } as Plan), 'server:h:5432');
    assert.equal(lockPath('system:1'), lockPath('system:1'));
    assert.ok(!lockPath('system:1').startsWith(dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('damaged runs are listed as such; run ids that are paths or unknown are bad input', async () => {
  const s = setup('b', false, true);
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    await assert.rejects(startRun(plan, s.opts));
    const id = listRuns(s.opts.stateDir)[0]!.id;
    appendFileSync(join(s.opts.stateDir, 'runs', id, 'journal.jsonl'), '{"torn\n');
    assert.deepEqual(readRun(s.opts.stateDir, id).corruptLines.length, 1);
    mkdirSync(join(s.opts.stateDir, 'runs', '20260101T000000-toy-000000'));
    const entries = listRunEntries(s.opts.stateDir);
    assert.equal(entries.length, 2);
    assert.match(entries.find((e) => !e.run)?.problem ?? '', /damaged: .* has no plan\.json/);
    for (const bad of ['../../etc', '.', 'a/b'])
      assert.throws(
        () => readRun(s.opts.stateDir, bad),
        (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.BadInput && /not a run id/.test(e.message),
      );
    assert.throws(
      () => readRun(s.opts.stateDir, 'nosuch'),
      (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.BadInput && Boolean(e.hint),
    );
    await rollbackRun(id, s.opts);
  } finally {
    s.done();
  }
});

test('an edited plan file is named as edited; a plan file others can write is refused', async () => {
  const s = setup('');
  try {
    const plan = await buildPlan(toyOperation, s.params, s.ctx);
    assert.deepEqual(planEdits(plan), []);
    const edited = (change: (p: Plan) => void) => {
      const copy = JSON.parse(JSON.stringify(plan)) as Plan;
      change(copy);
      return planEdits(copy);
    };
    assert.match(edited((p) => (p.summary = 'harmless')).join(), /summary/);
    assert.match(edited((p) => (p.steps[0]!.title = 'write nothing')).join(), /title/);
    assert.match(edited((p) => (p.steps[1]!.params.name = 'evil')).join(), /step b: its kind or parameters differ/);
    assert.match(edited((p) => (p.params.withNoReturn = true)).join(), /steps .* are not the ones its parameters make/);
    assert.match(edited((p) => (p.operation = 'nope')).join(), /do not make a plan/);
    const file = join(s.dir, 'plan.json');
    writePlanFile(file, plan);
    assert.equal(assertUnedited(file, readPlanFile(file), 'apply'), undefined);
    // a consistent edit (every step still follows from the parameters) breaks only the seal
    const consistent = readPlanFile(file);
    consistent.createdAt = '2000-01-01T00:00:00.000Z';
    assert.deepEqual(planEdits(consistent), []);
    const sealBroken = (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.Refused && /its content does not match its seal/.test(e.message);
    assert.throws(() => assertUnedited(file, consistent, 'show'), sealBroken);
    // sealed by another host or user: apply refuses, show warns
    const foreign = readPlanFile(file);
    foreign.seal.keyId = '0123456789abcdef';
    assert.throws(() => assertUnedited(file, foreign, 'apply'), /cannot be verified: its seal was made with key 0123456789abcdef/);
    assert.match(assertUnedited(file, foreign, 'show') ?? '', /cannot be verified here/);
    assert.doesNotThrow(() => assertTrustedPlanFile(file));
    for (const mode of [0o620, 0o602, 0o666]) {
      chmodSync(file, mode);
      assert.throws(
        () => assertTrustedPlanFile(file),
        (e: unknown) => e instanceof PgscaleError && e.exitCode === ExitCode.Refused && /writable by/.test(e.message) && /chmod go-w/.test(e.hint ?? ''),
      );
    }
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

test('a rollback that undoes a downtime step needs a yes like any such step: refused without a TTY or --yes (nothing undone), asked at a terminal', async () => {
  const s = setup('', false, true);
  try {
    const run = await startRun(await buildPlan(toyOperation, s.params, s.ctx), s.opts);
    assert.equal(run.status, 'completed');
    await assert.rejects(
      rollbackRun(run.runId, { ...s.opts, assumeYes: false }),
      (e: unknown) =>
        e instanceof PgscaleError && e.exitCode === ExitCode.Refused && /rollback of run \S+ needs confirmation and nobody can be asked/.test(e.message),
    );
    assert.ok(
      ['a', 'b', 'c', 'd'].every((n) => existsSync(join(s.dir, n))),
      'nothing was undone',
    );
    const declined = await rollbackRun(run.runId, { ...s.opts, assumeYes: false, confirm: async () => false }).catch((e: unknown) => e);
    assert.ok(declined instanceof PgscaleError && declined.exitCode === ExitCode.Refused && /not confirmed: nothing was undone/.test(declined.message));
    assert.ok(existsSync(join(s.dir, 'd')));
    const asked: string[] = [];
    const undone = await rollbackRun(run.runId, { ...s.opts, assumeYes: false, confirm: async (q) => (asked.push(q), true) });
    assert.equal(undone.status, 'rolled-back');
    assert.equal(asked.length, 1);
    assert.match(asked[0]!, /undo: write d — remove d[\s\S]*takes the cluster down/);
  } finally {
    s.done();
  }
});

test('a rollback that undoes no downtime step (nothing taken down, nothing lost) needs no yes', async () => {
  const s = setup();
  try {
    const run = await startRun(await buildPlan(toyOperation, s.params, s.ctx), s.opts);
    assert.equal((await rollbackRun(run.runId, { ...s.opts, assumeYes: false })).status, 'rolled-back');
  } finally {
    s.done();
  }
});

test('drift of a map of file hashes: one line per changed file, named by its path, hashes shortened', () => {
  const [a, b, c] = ['a1b2c3d4'.repeat(8), 'c3d4e5f6'.repeat(8), '0f0f0f0f'.repeat(8)];
  const reviewed = { dataDir: '/d', running: true, files: { '/etc/x/postgresql.conf': a, '/d/postgresql.auto.conf': c, '/etc/x/conf.d/pgscale.conf': null } };
  const now = { dataDir: '/d', running: false, files: { '/etc/x/postgresql.conf': b, '/d/postgresql.auto.conf': c, '/etc/x/conf.d/pgscale.conf': a } };
  const drift = fingerprintDrift(reviewed, now);
  assert.deepEqual(drift, [
    { fact: ['files', '/etc/x/conf.d/pgscale.conf'], planned: null, now: a },
    { fact: ['files', '/etc/x/postgresql.conf'], planned: a, now: b },
    { fact: ['running'], planned: true, now: false },
  ]);
  assert.deepEqual(drift.map(describeDrift), [
    '/etc/x/conf.d/pgscale.conf appeared since the plan (now sha256 a1b2c3d4…)',
    '/etc/x/postgresql.conf changed since the plan (sha256 a1b2c3d4… → sha256 c3d4e5f6…)',
    'running changed since the plan (true → false)',
  ]);
  assert.deepEqual(fingerprintDrift(reviewed, reviewed), []);
});
