#!/usr/bin/env node
// V8's compiled code for pgscale and its dependencies is cached on disk (Node's compile cache,
// under the system's temporary directory): most of a start is loading modules.
import module from 'node:module';

module.enableCompileCache?.();
const { execute } = await import('@oclif/core');
await execute({ dir: import.meta.url });
