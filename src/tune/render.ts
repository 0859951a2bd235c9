/**
 * Writes a RecommendationSet as a full postgresql.conf, a conf.d include file, ALTER SYSTEM
 * statements, or JSON. The three text layouts are data in templates/; their placeholders:
 *   {{name}}         a fact about the profile, inline: pg_major, catalog_version, memory, vcpus,
 *                    storage, workload, memory_budget
 *   {{area:AREA}}    alone on a line: that area's settings, each after a comment with its reason
 *   {{advisories}}   alone on a line: kernel settings to make (comments)
 *   {{dropped}}      alone on a line: proposals the version does not have (comments)
 *   {{warnings}}     alone on a line: warnings (comments)
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../gucCatalog/packageRoot.js';
import { formatNumber } from '../gucCatalog/units.js';
import { formatBytes } from '../format.js';
import { formatValue } from '../gucCatalog/values.js';
import type { Recommendation, RecommendationSet, StorageMeasurement, TuneArea } from './types.js';
import { TUNE_AREAS } from './types.js';

export type RenderFormat = 'conf' | 'include' | 'sql' | 'json';

export const templatesDir = join(packageRoot, 'templates');

const TEMPLATE_FILES: Record<Exclude<RenderFormat, 'json'>, string> = {
  conf: 'postgresql.conf.tmpl',
  include: 'pgscale.conf.tmpl',
  sql: 'alter-system.sql.tmpl',
};

/** How one output language writes comments and settings. */
interface Syntax {
  comment: string;
  setting: (r: Recommendation) => string;
}

// guc-file.l reads letters, digits, _ . - : / unquoted; anything else is quoted
const bareWord = /^[A-Za-z0-9_.\-:/]+$/;
const quote = (text: string) => `'${text.replace(/'/g, "''")}'`;
const restartNote = (r: Recommendation) => (r.restart ? '  # needs restart' : '');

const confSyntax: Syntax = {
  comment: '#',
  setting: (r) => {
    const text = formatValue(r.value);
    return `${r.name} = ${bareWord.test(text) ? text : quote(text)}${restartNote(r)}`;
  },
};

const sqlSyntax: Syntax = {
  comment: '--',
  setting: (r) => `ALTER SYSTEM SET ${r.name} = ${quote(formatValue(r.value))};${r.restart ? '  -- needs restart' : ''}`,
};

/** The figures measured on the volumes, for the header: what random_page_cost, prefetch and WAL flush settings came from. */
function measuredFigures(m: StorageMeasurement | undefined): string {
  const parts: string[] = [];
  const r = m?.randomRead;
  if (r)
    parts.push(`random 8kB reads ${formatNumber(Math.round(r.serialIops))}/s one at a time, ${formatNumber(Math.round(r.parallelIops))}/s ${r.depth} at once`);
  const f = m?.fsync;
  if (f)
    parts.push(
      `WAL flushes ${Object.entries(f.opsPerSecond)
        .map(([k, v]) => `${k} ${formatNumber(Math.round(v))}/s`)
        .join(', ')} (pg_test_fsync)`,
    );
  return parts.length ? ` (measured: ${parts.join('; ')})` : '';
}

function scalars(set: RecommendationSet): Record<string, string> {
  const p = set.profile;
  const b = set.memoryBudget;
  return {
    pg_major: String(set.pgMajor),
    catalog_version: set.catalogVersion,
    memory: `${formatBytes(p.memoryBytes)}${p.memoryIsCgroupLimit ? ' (cgroup limit)' : ''}`,
    vcpus: String(p.vcpus),
    storage: `${p.storage}${measuredFigures(p.storageMeasured)}`,
    workload: p.workload,
    memory_budget: `${formatBytes(b.totalBytes)} of ${formatBytes(b.limitBytes)} (${formatBytes(b.effectiveMemoryBytes)} less ${formatBytes(b.headroomBytes)} headroom)${b.fits ? '' : ' — DOES NOT FIT'}`,
  };
}

function blockLines(set: RecommendationSet, syntax: Syntax, name: string, arg: string | undefined): string[] {
  const c = syntax.comment;
  switch (name) {
    case 'area': {
      if (!TUNE_AREAS.includes(arg as TuneArea)) throw new Error(`template names unknown area "${arg}"`);
      const recs = set.areas[arg as TuneArea];
      if (recs.length === 0) return [`${c} (nothing to set for this profile)`];
      return recs.flatMap((r) => [`${c} ${r.reason}`, syntax.setting(r)]);
    }
    case 'advisories':
      return set.advisories.map((a) => `${c} kernel: sysctl ${a.sysctl}=${a.value}  (${a.reason})`);
    case 'dropped':
      return set.dropped.length === 0 ? [`${c} (nothing)`] : set.dropped.map((d) => `${c} ${d.name} (${d.area}): ${d.reason}`);
    case 'warnings':
      return set.warnings.map((w) => `${c} WARNING: ${w}`);
    default:
      throw new Error(`template has unknown block placeholder {{${name}}}`);
  }
}

const blockPattern = /^\s*\{\{\s*(area|advisories|dropped|warnings)(?::([a-z-]+))?\s*\}\}\s*$/;
const inlinePattern = /\{\{\s*([a-z_]+)\s*\}\}/g;

/** Fills a template's placeholders; unknown ones are template bugs and throw. */
function renderTemplate(template: string, set: RecommendationSet, syntax: Syntax): string {
  const values = scalars(set);
  return template
    .split('\n')
    .flatMap((line) => {
      const block = blockPattern.exec(line);
      if (block) return blockLines(set, syntax, block[1]!, block[2]);
      return [
        line.replace(inlinePattern, (_, name: string) => {
          const v = values[name];
          if (v === undefined) throw new Error(`template has unknown placeholder {{${name}}}`);
          return v;
        }),
      ];
    })
    .join('\n');
}

function renderJson(set: RecommendationSet): string {
  const settings = TUNE_AREAS.flatMap((area) =>
    set.areas[area].map((r) => ({ area, name: r.name, setting: formatValue(r.value), value: r.value, restart: r.restart, reason: r.reason })),
  );
  const { areas: _areas, ...rest } = set;
  return `${JSON.stringify({ ...rest, settings }, null, 2)}\n`;
}

export function render(set: RecommendationSet, format: RenderFormat): string {
  if (format === 'json') return renderJson(set);
  const template = readFileSync(join(templatesDir, TEMPLATE_FILES[format]), 'utf8');
  return renderTemplate(template, set, format === 'sql' ? sqlSyntax : confSyntax);
}
