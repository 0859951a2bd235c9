/** Plan files: written 0600, read back with their schema checked before anything is trusted. */
import { Ajv } from 'ajv';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { badInput } from '../errors.js';
import { planFormat, type Plan } from './plan.js';

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
  required: ['format', 'operation', 'params', 'target', 'createdAt', 'fingerprint', 'summary', 'steps', 'downtimeSeconds', 'pointOfNoReturn', 'risks'],
  properties: {
    format: { const: planFormat },
    operation: { type: 'string' },
    params: { type: 'object' },
    target: { type: 'object', required: ['description', 'lockKey'], properties: { description: { type: 'string' }, lockKey: { type: 'string' } } },
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

export function writePlanFile(path: string, plan: Plan): void {
  if (existsSync(path)) throw badInput(`plan file ${path} already exists`, 'choose a new name; a reviewed plan is never overwritten');
  writeFileSync(path, JSON.stringify(plan, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
}

export function readPlanFile(path: string): Plan {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw badInput(code ? `cannot read plan file ${path}: ${code}` : `plan file ${path} is not JSON: ${(e as Error).message}`);
  }
  if (!validate(data)) {
    const why = (validate.errors ?? [])
      .slice(0, 5)
      .map((e) => `${e.instancePath || '/'} ${e.message}`)
      .join('; ');
    throw badInput(`plan file ${path} does not match the plan schema: ${why}`);
  }
  return data as unknown as Plan;
}
