/**
 * Plan files: written 0600 and sealed (an HMAC with a key only this host's pgscale user holds), read
 * back with their schema checked and their seal verified before anything is trusted.
 */
import { Ajv } from 'ajv';
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { badInput, refused } from '../errors.js';
import { operation, planFormat, type Plan } from './plan.js';
import { defaultStateDir, ensurePrivateDir } from './stateDir.js';
import { flag, stepDefinition } from './step.js';

const action = {
  type: 'object',
  required: ['kind'],
  properties: { kind: { enum: ['command', 'sql', 'file', 'service'] } },
};

const check = {
  type: 'object',
  required: ['name', 'severity', 'passed', 'detail'],
  properties: { name: { type: 'string' }, severity: { enum: ['error', 'warning', 'info'] }, passed: { type: 'boolean' }, detail: { type: 'string' } },
};

/** The published schema of plan files (`pgscale schema plan`). */
export const planSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://pgscale.dev/schemas/plan-1.json',
  title: 'pgscale plan',
  type: 'object',
  required: ['format', 'operation', 'params', 'target', 'createdAt', 'fingerprint', 'summary', 'steps', 'downtimeSeconds', 'pointOfNoReturn', 'risks', 'seal'],
  properties: {
    format: { const: planFormat },
    seal: {
      type: 'object',
      required: ['keyId', 'hmacSha256'],
      properties: { keyId: { type: 'string', pattern: '^[0-9a-f]{16}$' }, hmacSha256: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
    },
    operation: { type: 'string' },
    params: { type: 'object' },
    target: {
      type: 'object',
      required: ['description', 'lockKey'],
      properties: { description: { type: 'string' }, lockKey: { type: 'string' }, systemIdentifier: { type: 'string', pattern: '^[0-9]+$' } },
    },
    createdAt: { type: 'string' },
    fingerprint: { type: 'object' },
    summary: { type: 'string' },
    downtimeSeconds: { type: 'number', minimum: 0 },
    pointOfNoReturn: { type: ['string', 'null'] },
    risks: { type: 'array', items: { type: 'string' } },
    steps: {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'kind', 'params', 'title', 'downtime', 'pointOfNoReturn', 'actions', 'checks', 'rollback', 'estimateSeconds'],
        properties: {
          id: { type: 'string' },
          kind: { type: 'string' },
          params: { type: 'object' },
          title: { type: 'string' },
          downtime: { type: 'boolean' },
          pointOfNoReturn: { type: 'boolean' },
          actions: { type: 'array', items: action },
          checks: { type: 'array', items: check },
          rollback: { type: 'string' },
          estimateSeconds: { type: 'number' },
        },
      },
    },
  },
} as const;

const validate = new Ajv({ allErrors: true, strict: false }).compile(planSchema);

/** A plan file's seal: which key made it, and the HMAC-SHA256 of the plan's JSON without the seal. */
interface Seal {
  keyId: string;
  hmacSha256: string;
}

export type SealedPlan = Plan & { seal: Seal };

/**
 * The key that seals this user's plan files on this host (0600 beside the host-wide locks): an edit
 * that keeps a plan consistent (a path replaced everywhere) still breaks the seal, and only someone
 * who could run pgscale as this user anyway could make a new one.
 */
function sealingKey(): Buffer {
  const path = join(ensurePrivateDir(defaultStateDir()), 'plan-seal.key');
  try {
    writeFileSync(path, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  return Buffer.from(readFileSync(path, 'utf8').trim(), 'hex');
}

const keyIdOf = (key: Buffer) => createHash('sha256').update(key).digest('hex').slice(0, 16);
const macOf = (key: Buffer, plan: Plan) => createHmac('sha256', key).update(JSON.stringify(plan)).digest('hex');

export function writePlanFile(path: string, plan: Plan): void {
  if (existsSync(path)) throw badInput(`plan file ${path} already exists`, 'choose a new name; a reviewed plan is never overwritten');
  const key = sealingKey();
  const sealed: SealedPlan = { ...plan, seal: { keyId: keyIdOf(key), hmacSha256: macOf(key, plan) } };
  writeFileSync(path, JSON.stringify(sealed, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
}

/** Whether a plan's seal holds: 'foreign' when another key made it (another host or user), 'broken' when its content changed. */
function sealState(plan: SealedPlan): { state: 'holds' | 'foreign' | 'broken'; detail: string } {
  const { seal, ...content } = plan;
  const key = sealingKey();
  if (seal.keyId !== keyIdOf(key))
    return { state: 'foreign', detail: `its seal was made with key ${seal.keyId}, not this pgscale's (${keyIdOf(key)}): another host or another user made it` };
  return timingSafeEqual(Buffer.from(macOf(key, content), 'hex'), Buffer.from(seal.hmacSha256, 'hex'))
    ? { state: 'holds', detail: '' }
    : { state: 'broken', detail: 'its content does not match its seal' };
}

export function readPlanFile(path: string): SealedPlan {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw badInput(
      code ? `cannot read plan file ${path}: ${code}` : `plan file ${path} is not JSON: ${(e as Error).message}`,
      code ? 'pass the file written by --plan-out' : 'a plan file is written by --plan-out and never edited by hand: make a new plan',
    );
  }
  if (!validate(data)) {
    const why = (validate.errors ?? [])
      .slice(0, 5)
      .map((e) => `${e.instancePath || '/'} ${e.message}`)
      .join('; ');
    throw badInput(
      `plan file ${path} does not match the plan schema: ${why}`,
      'a plan file is written by --plan-out and never edited by hand: make a new plan (`pgscale plan schema` prints the schema)',
    );
  }
  return data;
}

/**
 * A plan file that someone else could have written is refused, as ssh refuses a loose private key:
 * whoever can write it decides what root runs. Only its owner (root or the user running pgscale)
 * may write it.
 */
export function assertTrustedPlanFile(path: string): void {
  const st = statSync(path);
  const me = process.getuid?.() ?? 0;
  if ((st.mode & 0o022) !== 0) {
    throw refused(
      `plan file ${path} is writable by ${st.mode & 0o002 ? 'every user' : 'its group'} (mode ${(st.mode & 0o777).toString(8)}): anyone who could write it could have changed what runs`,
      `check its content, then \`chmod go-w ${path}\` (pgscale writes plans 0600)`,
    );
  }
  if (st.uid !== me && st.uid !== 0)
    throw refused(
      `plan file ${path} belongs to another user (uid ${st.uid})`,
      `check its content, then copy it to a file of your own (install -m 600 ${path} NEW) and apply that`,
    );
}

/**
 * What in a plan does not follow from its own parameters: steps, titles, flags, rollback notes and
 * summary are all derived from `params`, and `apply` runs the steps the parameters make. A
 * difference means the file was edited after it was made; what it shows would not be what runs.
 */
export function planEdits(plan: Plan): string[] {
  let expected;
  try {
    const op = operation(plan.operation);
    expected = { summary: op.summary(plan.params), steps: op.steps(plan.params) };
  } catch (e) {
    return [`its operation "${plan.operation}" and parameters do not make a plan: ${(e as Error).message}`];
  }
  const out: string[] = [];
  if (expected.summary !== plan.summary) out.push('the summary is not the one its parameters make');
  const ids = (steps: { id: string }[]) => steps.map((s) => s.id).join(', ');
  if (ids(expected.steps) !== ids(plan.steps)) return [...out, `its steps (${ids(plan.steps)}) are not the ones its parameters make (${ids(expected.steps)})`];
  plan.steps.forEach((s, i) => {
    const e = expected.steps[i]!;
    if (s.kind !== e.kind || JSON.stringify(s.params) !== JSON.stringify(e.params))
      return out.push(`step ${s.id}: its kind or parameters differ from the plan's parameters`);
    const def = stepDefinition(e.kind);
    if (s.title !== def.title(e.params)) out.push(`step ${s.id}: title "${s.title}" is not "${def.title(e.params)}"`);
    if (s.downtime !== flag(def.downtime, e.params) || s.pointOfNoReturn !== flag(def.pointOfNoReturn, e.params))
      out.push(`step ${s.id}: its downtime or point-of-no-return mark was changed`);
    if (s.rollback !== def.rollbackNote(e.params)) out.push(`step ${s.id}: its rollback note was changed`);
    return undefined;
  });
  if (plan.pointOfNoReturn !== (plan.steps.find((s) => s.pointOfNoReturn)?.id ?? null)) out.push('its point of no return is not the step marked so');
  return out;
}

/**
 * Refuses an edited plan (its seal broken, or steps that do not follow from its parameters): shown
 * or applied, a plan is what its parameters run. A plan sealed by another host or user cannot be
 * verified here: `apply` refuses it; `show` renders it with that said (returned as a warning).
 */
export function assertUnedited(path: string, plan: SealedPlan, use: 'apply' | 'show'): string | undefined {
  const seal = sealState(plan);
  const edits = [...(seal.state === 'broken' ? [seal.detail] : []), ...planEdits(plan)];
  if (edits.length)
    throw refused(
      `plan file ${path} was edited after it was made:\n${edits.map((e) => `  - ${e}`).join('\n')}`,
      'make and review a new plan with --plan-out; a plan file is never edited by hand',
    );
  if (seal.state !== 'foreign') return undefined;
  if (use === 'apply')
    throw refused(
      `plan file ${path} cannot be verified: ${seal.detail}`,
      'make the plan on this host as the user who applies it (--dry-run --plan-out), review it, then apply that file',
    );
  return `this plan's seal cannot be verified here: ${seal.detail}`;
}
