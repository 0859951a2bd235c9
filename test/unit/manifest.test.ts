import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { buildManifest, manifestPath } from '../../packaging/manifest.js';

// oclif trusts the manifest for which commands exist and what --help shows: a stale one (tsc run
// without `npm run build` after a command changed) hides new commands and shows old flags.
test(
  'oclif.manifest.json matches the built commands',
  { skip: existsSync(manifestPath) ? false : 'no oclif.manifest.json: `npm run build` writes it' },
  async () => {
    const onDisk = JSON.parse(readFileSync(manifestPath, 'utf8')) as unknown;
    assert.deepEqual(onDisk, JSON.parse(JSON.stringify(await buildManifest())), 'oclif.manifest.json is stale: run `npm run build`');
  },
);
