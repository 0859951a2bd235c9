#!/usr/bin/env node
import { Errors, flush, handle, run } from '@oclif/core';

// Errors raised before a command runs (an unknown command or topic) keep the --json contract:
// {"error": {message, hint, exitCode, kind}}, exit 2. A command's own errors are shaped by its catch().
try {
  await run(process.argv.slice(2), import.meta.url);
  await flush();
} catch (error) {
  if (error instanceof Errors.ExitError || !process.argv.slice(2).includes('--json')) {
    await handle(error);
  } else {
    const message = String(error?.message ?? error).split('\n')[0];
    process.stdout.write(JSON.stringify({ error: { message, hint: 'see `pgscale --help` for the commands', exitCode: 2, kind: 'bad-input' } }, null, 2) + '\n');
    process.exitCode = 2;
  }
}
