/** `npm run build`, after tsc: writes oclif.manifest.json from the built commands. */
import { writeFileSync } from 'node:fs';
import { buildManifest, manifestPath } from './manifest.js';

writeFileSync(manifestPath, JSON.stringify(await buildManifest(), null, 2) + '\n');
