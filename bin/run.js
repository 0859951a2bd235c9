#!/usr/bin/env node
// oclif's execute alone: the rest of @oclif/core loads only when a command needs it
import { execute } from '@oclif/core/execute';

await execute({ dir: import.meta.url });
