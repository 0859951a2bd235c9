/** `npm run package` (after `npm run build`): see build.ts for what it writes to build/. */
import { packageAll } from './build.js';

await packageAll();
