/**
 * Recommendations against the effective configuration: per area, which settings change (and need
 * a restart or a reload), which are close enough to stay, and which no file can change; and the
 * unified diff a DBA reads before anything is written. Pure functions.
 */
import { createTwoFilesPatch } from 'diff';
import { findSetting } from '../gucCatalog/catalog.js';
import type { GucCatalog } from '../gucCatalog/types.js';
import { formatValue, isCloseEnough } from '../gucCatalog/values.js';
import { describeOrigin, effectiveSetting, type EffectiveConfig, type EffectiveSetting } from './effective.js';
import type { Recommendation, RecommendationSet, TuneArea } from './types.js';
import { TUNE_AREAS } from './types.js';

/** Where a changed setting is written. */
export type TuneTarget = 'include' | 'conf' | 'sql';

/**
 * - change: the effective value is not close enough to the recommendation;
 * - keep: it is (the no-churn rule), nothing is written;
 * - blocked: the server was started with the setting on its command line (or in its environment):
 *   no configuration file can change it, so pgscale leaves it and says so.
 */
export type ChangeStatus = 'change' | 'keep' | 'blocked';

export interface SettingChange {
  area: TuneArea;
  name: string;
  recommended: Recommendation;
  /** The recommended value as written in a file. */
  text: string;
  current: EffectiveSetting | undefined;
  status: ChangeStatus;
  /**
   * main: the target's file (pgscale.conf, or postgresql.conf with --target conf);
   * auto: postgresql.auto.conf, which the server reads last: a value there would override the main
   * file, so the change goes there (ALTER SYSTEM), as it does for every setting with --target sql.
   */
  via: 'main' | 'auto';
}

export interface AreaChanges {
  area: TuneArea;
  settings: SettingChange[];
  /** Settings of this area that change. */
  changes: SettingChange[];
  restart: number;
  reload: number;
}

export function planChanges(set: RecommendationSet, config: EffectiveConfig, catalog: GucCatalog, target: TuneTarget): AreaChanges[] {
  return TUNE_AREAS.map((area) => {
    const settings = set.areas[area].map((rec): SettingChange => {
      const current = effectiveSetting(config, catalog, rec.name);
      let status: ChangeStatus;
      if (current?.origin === 'command-line') status = current.value && isCloseEnough(current.value, rec.value) ? 'keep' : 'blocked';
      else status = current?.value && isCloseEnough(current.value, rec.value) ? 'keep' : 'change';
      const via = target === 'sql' || current?.origin === 'auto' ? 'auto' : 'main';
      return { area, name: rec.name, recommended: rec, text: formatValue(rec.value), current, status, via };
    });
    const changes = settings.filter((s) => s.status === 'change');
    return {
      area,
      settings,
      changes,
      restart: changes.filter((c) => c.recommended.restart).length,
      reload: changes.filter((c) => !c.recommended.restart).length,
    };
  });
}

export const allChanges = (areas: readonly AreaChanges[]): SettingChange[] => areas.flatMap((a) => a.changes);

/** The warnings a DBA must read before applying: values no file can change, values only ALTER SYSTEM can. */
export function precedenceNotes(areas: readonly AreaChanges[], target: TuneTarget, relativeTo?: string): string[] {
  const out: string[] = [];
  for (const s of areas.flatMap((a) => a.settings)) {
    if (s.status === 'blocked') {
      out.push(
        `${s.name} is set on the server's command line (${s.current?.text}): no configuration file can change it, so it stays; restart the server without it to take ${s.text}`,
      );
    } else if (s.status === 'change' && s.via === 'auto' && target !== 'sql') {
      out.push(
        `${s.name} is set in ${describeOrigin(s.current!, relativeTo)}, which the server reads after every other file: ${s.text} is written there, or it would not take effect`,
      );
    }
  }
  return out;
}

const pad = (text: string, width: number) => (text.length >= width ? `${text} ` : text.padEnd(width));
const LINE_WIDTH = 44;

function currentLine(s: SettingChange, relativeTo: string | undefined): string {
  const c = s.current;
  if (!c) return `${pad(`${s.name} = (not a setting of this version)`, LINE_WIDTH)}`;
  const notes = [describeOrigin(c, relativeTo)];
  if (c.running) notes.push(`running ${c.running.text}${c.running.pendingRestart ? ', restart pending' : ', reload pending'}`);
  if (c.invalid) notes.push('invalid');
  return `${pad(`${s.name} = ${c.text || "''"}`, LINE_WIDTH)}# ${notes.join('; ')}`;
}

function newLine(s: SettingChange): string {
  return `${pad(`${s.name} = ${s.text}`, LINE_WIDTH)}# ${s.recommended.restart ? 'RESTART' : 'reload'}: ${s.recommended.reason}`;
}

function keptLine(s: SettingChange, relativeTo: string | undefined): string {
  // a blocked setting's origin already says "server command line"
  const why = s.status === 'blocked' ? `cannot change it to ${s.text}` : `close enough to ${s.text}${s.recommended.held ? ` (${s.recommended.reason})` : ''}`;
  return `${currentLine(s, relativeTo)}; ${why}`;
}

/** One area as before/after texts: changed settings differ, the others are the same line in both (context). */
export function areaTexts(a: AreaChanges, relativeTo?: string): { before: string; after: string } {
  const before: string[] = [];
  const after: string[] = [];
  for (const s of a.settings) {
    if (s.status === 'change') {
      before.push(currentLine(s, relativeTo));
      after.push(newLine(s));
    } else {
      const line = keptLine(s, relativeTo);
      before.push(line);
      after.push(line);
    }
  }
  return { before: before.join('\n') + '\n', after: after.join('\n') + '\n' };
}

export function areaHeading(a: AreaChanges): string {
  if (a.changes.length === 0) return `${a.area}: no change`;
  const parts = [
    a.restart ? `${a.restart} need${a.restart === 1 ? 's' : ''} a restart` : '',
    a.reload ? `${a.reload} take${a.reload === 1 ? 's' : ''} effect on reload` : '',
  ].filter(Boolean);
  return `${a.area}: ${a.changes.length} change${a.changes.length === 1 ? '' : 's'} (${parts.join(', ')})`;
}

/**
 * The unified diff of the effective configuration against the recommendations, one block per area
 * that changes: "-" the effective line with where it comes from, "+" the new one with RESTART or
 * reload and its reason; close-enough settings are context lines.
 */
export function renderAreaDiff(a: AreaChanges, relativeTo?: string): string {
  const { before, after } = areaTexts(a, relativeTo);
  const patch = createTwoFilesPatch(`effective/${a.area}`, `pgscale/${a.area}`, before, after, undefined, undefined, { context: Number.MAX_SAFE_INTEGER });
  // the Index:/==== lines say nothing here
  const body = patch
    .split('\n')
    .filter((l) => !l.startsWith('Index:') && !/^=+$/.test(l))
    .join('\n')
    .trimEnd();
  return `## ${areaHeading(a)}\n${body}\n`;
}

export function renderDiff(areas: readonly AreaChanges[], relativeTo?: string): string {
  const changed = areas.filter((a) => a.changes.length > 0);
  if (changed.length === 0) return 'no change: every recommended setting is already close enough (within 10 %) or equal\n';
  const unchanged = areas.filter((a) => a.changes.length === 0).map((a) => a.area);
  const total = allChanges(areas);
  const restart = total.filter((c) => c.recommended.restart).length;
  const head =
    `${total.length} setting${total.length === 1 ? '' : 's'} to change in ${changed.length} area${changed.length === 1 ? '' : 's'}: ${restart} need${restart === 1 ? 's' : ''} a server restart, ${total.length - restart} a reload` +
    (unchanged.length ? `; nothing to change in ${unchanged.join(', ')}` : '');
  return `${head}\n\n${changed.map((a) => renderAreaDiff(a, relativeTo)).join('\n')}`;
}

/** Whether the catalog says a setting needs a restart (for settings not in a RecommendationSet). */
export const restartNeeded = (catalog: GucCatalog, name: string): boolean => findSetting(catalog, name)?.context === 'postmaster';
