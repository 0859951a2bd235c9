import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** The repository root, from compiled tests in dist/test/** and from sources alike. */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const fixturesDir = join(repoRoot, 'test', 'fixtures');
export const hostFixture = (name: string): string => join(fixturesDir, 'hosts', name);
export const cliEntry = join(repoRoot, 'bin', 'run.js');
