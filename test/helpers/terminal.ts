/**
 * A command in a real terminal (a tmux window): the screen as text, keys in, the exit code when it
 * ends. Each test process runs its own tmux server (-L), killed at exit with everything in it.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

export const hasTmux = spawnSync('tmux', ['-V']).status === 0;

const tmuxSocket = `pgscale-wizard-${process.pid}`;
const tmux = (...args: string[]) => execFileSync('tmux', ['-L', tmuxSocket, ...args], { encoding: 'utf8' });
export const killTmux = () => {
  spawnSync('tmux', ['-L', tmuxSocket, 'kill-server'], { stdio: 'ignore' });
  rmSync(join(process.env.TMUX_TMPDIR ?? '/tmp', `tmux-${process.getuid?.() ?? 0}`, tmuxSocket), { force: true });
};
process.on('exit', killTmux);

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** A command in a tmux window: the screen as text, keys in, the exit code when it ends. */
export class Terminal {
  private constructor(readonly name: string) {}

  static start(name: string, argv: string[]): Terminal {
    const command = `cd ${shellQuote(repoRoot)} && ${argv.map(shellQuote).join(' ')}; echo "[exit $?]"; sleep 3600`;
    tmux('new-session', '-d', '-s', name, '-x', '250', '-y', '60', command);
    return new Terminal(name);
  }

  /** Everything printed so far, wrapped lines joined. */
  screen(): string {
    return tmux('capture-pane', '-p', '-J', '-S', '-', '-t', this.name);
  }

  /** The question waiting for an answer: inquirer shows it as "? …" (then its choices) until answered ("✔ …"). */
  pendingPrompt(): string | undefined {
    const lines = this.screen()
      .split('\n')
      .map((l) => l.trimEnd())
      .filter(Boolean);
    const i = lines.findLastIndex((l) => l.startsWith('? '));
    if (i < 0) return undefined;
    return lines.slice(i + 1).every((l) => /^(❯ | {2}\S|↑↓)/.test(l)) ? lines[i] : undefined;
  }

  async waitFor(what: RegExp, timeoutMs = 120_000): Promise<RegExpMatchArray> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const m = this.screen().match(what);
      if (m) return m;
      if (Date.now() > until) assert.fail(`timed out waiting for ${what} on screen:\n${this.screen()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Waits for the prompt (the pending question, not one answered earlier), then sends the keys. */
  async answer(prompt: RegExp, ...keys: string[]): Promise<string> {
    const until = Date.now() + 120_000;
    for (;;) {
      const pending = this.pendingPrompt();
      if (pending && prompt.test(pending)) break;
      const exited = /\[exit (\d+)\]/.exec(this.screen());
      if (exited || Date.now() > until)
        assert.fail(`expected the prompt ${prompt}${exited ? `, but pgscale exited ${exited[1]}` : ''}; screen:\n${this.screen()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const asked = this.pendingPrompt()!;
    await this.send(...keys);
    // answered: the question turns into "✔ …"
    const question = asked.replace(/^\? /, '').replace(/\s*\([^()]*\)$/, '');
    await this.waitFor(new RegExp(`✔ ${question.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    return asked;
  }

  /** Keys as typed: Enter, Down and Up by name, anything else literally. */
  async send(...keys: string[]): Promise<void> {
    for (const k of keys) {
      if (['Enter', 'Down', 'Up'].includes(k)) tmux('send-keys', '-t', this.name, k);
      else tmux('send-keys', '-t', this.name, '-l', k);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async exitCode(timeoutMs = 300_000): Promise<number> {
    return Number((await this.waitFor(/\[exit (\d+)\]/, timeoutMs))[1]);
  }

  kill(): void {
    spawnSync('tmux', ['-L', tmuxSocket, 'kill-session', '-t', this.name], { stdio: 'ignore' });
  }
}
