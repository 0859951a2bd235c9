#!/usr/bin/env node
// Most of a start is compiling modules: V8's compiled code is kept between runs (Node's compile
// cache) in pgscale's own 0700 cache directory, never a shared temporary one whose entries another
// user could have planted. It must be on before the rest loads, hence import() below.
import module from 'node:module';
import { join } from 'node:path';
import { cacheDir, privateCacheDir } from '../dist/src/pipeline/stateDir.js';

if (privateCacheDir(cacheDir())) module.enableCompileCache?.(join(cacheDir(), 'compile'));

// oclif's entry points one by one, not '@oclif/core' whole: the rest loads only when a command needs it
const { run } = await import('@oclif/core/run');
const { flush } = await import('@oclif/core/flush');
const { handle } = await import('@oclif/core/handle');
const { ExitError } = await import('@oclif/core/errors');
// `pgscale … | head`: the reader went away; stop quietly, as other command-line tools do
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (error) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });

// Errors raised before a command runs (an unknown command or topic) keep the error contract:
// "pgscale: error: …" and a hint, or {"error": {message, hint, exitCode, kind}} under --json; exit 2.
try {
  await run(process.argv.slice(2), import.meta.url);
  await flush();
} catch (error) {
  if (error instanceof ExitError) {
    await handle(error);
  } else {
    // commands shape their own errors (PgscaleCommand.catch); only errors before a command runs get here
    const message = String(error?.message ?? error)
      .split('\n')[0]
      .replace(/^command (\S+) not found$/, (_, id) => `command "${id.replace(/:/g, ' ')}" not found`);
    const hint = 'see `pgscale --help` for the commands and `pgscale COMMAND --help` for their flags';
    if (process.argv.slice(2).includes('--json'))
      process.stdout.write(JSON.stringify({ error: { message, hint, exitCode: 2, kind: 'bad-input' } }, null, 2) + '\n');
    else process.stderr.write(`pgscale: error: ${message}\nhint: ${hint}\n`);
    process.exitCode = 2;
  }
}
