/** A plan as markdown for a change review: summary, downtime, point of no return, every step exactly. */
import { formatDuration } from '../format.js';
import type { Plan } from './plan.js';
import type { PlannedAction } from './step.js';

const fence = (lang: string, body: string) => `\`\`\`${lang}\n${body.replace(/\n$/, '')}\n\`\`\``;

/** A shell-style rendering of argv for reading; quoting only for display, never executed. */
export function displayArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

function renderAction(a: PlannedAction): string {
  switch (a.kind) {
    case 'command': {
      const prefix = a.runAs ? `# as ${a.runAs}\n` : '';
      const out = a.output ? ` > ${displayArgv([a.output])}` : '';
      return `${a.note ? `- ${a.note}\n\n` : ''}${fence('sh', prefix + displayArgv(a.argv) + out)}`;
    }
    case 'sql':
      return `${a.note ? `- ${a.note}\n\n` : ''}SQL on ${a.target}:\n\n${fence('sql', a.sql)}`;
    case 'file': {
      const head = `- ${a.change} \`${a.path}\`${a.to ? ` → \`${a.to}\`` : ''}${a.mode ? ` (mode ${a.mode})` : ''}${a.note ? ` — ${a.note}` : ''}`;
      return a.diff ? `${head}\n\n${fence('diff', a.diff)}` : head;
    }
    case 'service':
      return `- ${a.action} ${a.target}${a.note ? ` — ${a.note}` : ''}`;
  }
}

export function planMarkdown(plan: Plan): string {
  const lines: string[] = [];
  const checks = plan.steps.flatMap((s) => s.checks);
  const blockers = checks.filter((c) => !c.passed && c.severity === 'error');
  lines.push(`# pgscale plan: ${plan.operation}`, '', plan.summary, '');
  lines.push(`- target: ${plan.target.description}`);
  lines.push(`- made: ${plan.createdAt}`);
  lines.push(
    `- expected downtime: ${
      plan.downtimeSeconds > 0
        ? formatDuration(plan.downtimeSeconds) +
          ` (steps: ${plan.steps
            .filter((s) => s.downtime)
            .map((s) => s.id)
            .join(', ')})`
        : 'none — the cluster stays available'
    }`,
  );
  const pnr = plan.steps.find((s) => s.id === plan.pointOfNoReturn);
  lines.push(
    `- point of no return: ${pnr ? `after step \`${pnr.id}\` (${pnr.title}); before it, \`pgscale rollback\` restores the previous state` : 'none — every step can be rolled back'}`,
  );
  lines.push(
    `- checks: ${checks.filter((c) => c.passed).length} passed, ${blockers.length} blocking, ${checks.filter((c) => !c.passed && c.severity === 'warning').length} warnings`,
  );
  lines.push('');
  if (plan.risks.length) lines.push('## Risks found by the checks', '', ...plan.risks.map((r) => `- ${r}`), '');
  lines.push('## Checks', '', '| check | result | detail |', '|---|---|---|');
  for (const c of checks)
    lines.push(
      `| ${c.name} | ${c.passed ? 'pass' : c.severity === 'error' ? '**FAIL**' : c.severity} | ${c.detail.replace(/\|/g, '\\|').replace(/\n/g, ' ')} |`,
    );
  lines.push('', '## Steps', '');
  plan.steps.forEach((s, i) => {
    const tags = [
      s.downtime ? 'downtime' : '',
      s.pointOfNoReturn ? 'POINT OF NO RETURN' : '',
      s.estimateSeconds ? `~${formatDuration(s.estimateSeconds)}` : '',
    ].filter(Boolean);
    lines.push(`### ${i + 1}. ${s.title} (\`${s.id}\`)${tags.length ? ` — ${tags.join(', ')}` : ''}`, '');
    lines.push(...s.actions.map(renderAction).flatMap((a) => [a, '']));
    lines.push(`Rollback: ${s.rollback}`, '');
  });
  lines.push('## How to roll back', '');
  lines.push('`pgscale rollback RUN` undoes the completed steps newest first:', '');
  [...plan.steps].reverse().forEach((s) => lines.push(`- \`${s.id}\`: ${s.rollback}`));
  lines.push(
    '',
    '## Fingerprint',
    '',
    'Applying this plan file refuses if any of these changed:',
    '',
    fence('json', JSON.stringify(plan.fingerprint, null, 2)),
    '',
  );
  return lines.join('\n');
}
