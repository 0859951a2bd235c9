import { fileURLToPath } from 'node:url';

/** The installed package's root (holds templates/ and src/gucCatalog/data/): this file runs as dist/src/gucCatalog/packageRoot.js. */
export const packageRoot = fileURLToPath(new URL('../../../', import.meta.url));
