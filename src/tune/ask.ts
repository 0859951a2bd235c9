/**
 * The questions `pgscale tune` asks at a terminal. It only asks: the diff was shown before, and
 * the answers become the accepted areas and the restart consent that planning uses.
 */
import { confirm, select } from '@inquirer/prompts';
import { areaHeading, type AreaChanges } from './diff.js';
import type { TuneArea } from './types.js';

export type AreaAnswer = 'apply' | 'skip' | 'quit';

export interface AreaAnswers {
  accepted: Set<TuneArea>;
  /** The DBA quit: nothing is applied. */
  quit: boolean;
}

/** Per area with changes: apply, skip, or quit (change nothing at all). */
export async function askAreas(areas: readonly AreaChanges[]): Promise<AreaAnswers> {
  const accepted = new Set<TuneArea>();
  for (const a of areas.filter((x) => x.changes.length > 0)) {
    const answer = await select<AreaAnswer>({
      message: `${areaHeading(a)} — ${a.changes.map((c) => c.name).join(', ')}`,
      default: 'apply',
      choices: [
        { name: 'apply', value: 'apply' },
        { name: 'skip (leave this area as it is)', value: 'skip' },
        { name: 'quit (change nothing at all)', value: 'quit' },
      ],
    });
    if (answer === 'quit') return { accepted: new Set(), quit: true };
    if (answer === 'apply') accepted.add(a.area);
  }
  return { accepted, quit: false };
}

/** Consent to restart the server now; without it the restart-context settings are left pending. */
export function askRestart(names: readonly string[]): Promise<boolean> {
  return confirm({
    message: `${names.join(', ')} take${names.length === 1 ? 's' : ''} effect only after a server restart. Restart now (sessions are disconnected for a few seconds)? No leaves the restart pending.`,
    default: false,
  });
}
