import { realpathSync } from 'node:fs';
import { dirname } from 'node:path';
import { isSea } from 'node:sea';
import { fileURLToPath } from 'node:url';

/**
 * The installed package's root (holds templates/ and src/gucCatalog/data/): this file runs as
 * dist/src/gucCatalog/packageRoot.js; in the single executable (`npm run package`) those
 * directories lie beside the executable.
 */
export const packageRoot = isSea() ? dirname(realpathSync(process.execPath)) : fileURLToPath(new URL('../../../', import.meta.url));
