/**
 * Everything around executing a plan that is not a step: Ctrl-C handling, how progress is shown,
 * and the question asked before downtime. Deciding and planning happen elsewhere.
 */
import { confirm } from '@inquirer/prompts';
import type { ProgressMode } from './execute.js';

/**
 * First SIGINT/SIGTERM: stop at the next safe point. Second: leave now (the journal is fsynced).
 * The abort's reason is the signal received: a pgscale child is sent that one (see forwardInterrupt).
 */
export function interruptSignal(notify: (message: string) => void): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(130);
    notify(`${sig}: stopping at the next safe point (again to leave at once)`);
    controller.abort(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      // interrupted once: a second signal while pgscale reports and exits still means "leave at once"
      // (exit 130), never death by the signal's default action
      if (controller.signal.aborted) {
        const leave = () => process.exit(130);
        process.once('SIGINT', leave);
        process.once('SIGTERM', leave);
      }
    },
  };
}

export function progressMode(json: boolean): ProgressMode {
  if (json) return 'silent';
  return process.stdout.isTTY ? 'tty' : 'plain';
}

export const askToContinue = (question: string): Promise<boolean> => confirm({ message: question, default: false });
