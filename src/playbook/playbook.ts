/**
 * Playbooks: a maintenance window as YAML — the cluster, then pgscale commands in order with their
 * flags. Validated against a schema before anything runs; progress is kept in the state directory
 * so running the same playbook again after a failure continues where it stopped.
 */
import { Ajv } from 'ajv';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { badInput } from '../errors.js';

export const playbookCommands = [
  'detect',
  'backup',
  'upgrade',
  'wal move',
  'tune',
  'tablespaces sample',
  'tablespaces show',
  'tablespaces place',
  'replica add',
  'replica remove',
] as const;
export type PlaybookCommand = (typeof playbookCommands)[number];

export type FlagValue = string | number | boolean;

export interface PlaybookStep {
  command: PlaybookCommand;
  flags: Record<string, FlagValue>;
}

export interface Playbook {
  name: string;
  cluster: Record<string, string>;
  steps: PlaybookStep[];
  /** Identifies this exact playbook text: progress of an edited playbook starts afresh. */
  digest: string;
}

const flagMap = { type: 'object', additionalProperties: { type: ['string', 'number', 'boolean'] }, propertyNames: { pattern: '^[a-z][a-z0-9-]*$' } };

export const playbookSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'pgscale playbook',
  type: 'object',
  required: ['version', 'name', 'steps'],
  additionalProperties: false,
  properties: {
    version: { const: 1 },
    name: { type: 'string', pattern: '^[A-Za-z0-9._-]+$' },
    description: { type: 'string' },
    cluster: { type: 'object', additionalProperties: false, properties: { pgdata: { type: 'string' }, bindir: { type: 'string' }, dsn: { type: 'string' } } },
    steps: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        minProperties: 1,
        maxProperties: 1,
        additionalProperties: false,
        properties: Object.fromEntries(playbookCommands.map((c) => [c, { oneOf: [flagMap, { type: 'null' }] }])),
      },
    },
  },
} as const;

const validate = new Ajv({ allErrors: true, strict: false }).compile(playbookSchema);

export function parsePlaybook(text: string, file: string): Playbook {
  let data: unknown;
  try {
    data = parse(text);
  } catch (e) {
    throw badInput(`playbook ${file} is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!validate(data)) {
    const why = (validate.errors ?? [])
      .slice(0, 5)
      .map((e) => `${e.instancePath || '/'} ${e.message}`)
      .join('; ');
    throw badInput(`playbook ${file} does not match the playbook schema: ${why}`, `each step is one of: ${playbookCommands.join(', ')}, with its flags`);
  }
  const doc = data as { name: string; cluster?: Record<string, string>; steps: Record<string, Record<string, FlagValue> | null>[] };
  return {
    name: doc.name,
    cluster: doc.cluster ?? {},
    steps: doc.steps.map((s) => {
      const [command, flags] = Object.entries(s)[0]!;
      return { command: command as PlaybookCommand, flags: flags ?? {} };
    }),
    digest: createHash('sha256').update(text).digest('hex').slice(0, 16),
  };
}

export function readPlaybook(file: string): Playbook {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw badInput(`cannot read playbook ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  return parsePlaybook(text, file);
}

/** The argv of one step: the command, the cluster flags, its own flags (true → --flag, false → omitted). */
export function stepArgv(step: PlaybookStep, cluster: Record<string, string>, common: string[]): string[] {
  const flags = { ...cluster, ...step.flags };
  const argv = step.command.split(' ');
  for (const [name, value] of Object.entries(flags)) {
    if (value === false) continue;
    argv.push(`--${name}`);
    if (value !== true) argv.push(String(value));
  }
  return [...argv, ...common];
}
