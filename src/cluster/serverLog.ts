import { basename, dirname, join } from 'node:path';
import type { OsUser, Runner } from '../runner.js';

/**
 * Where pg_ctl -l writes when pgscale starts a server: beside the data directory
 * (DATADIR.pgscale-server.log) when its owner may write there, else inside the data directory,
 * which the owner can always write.
 */
export async function serverLogPath(runner: Runner, dataDir: string, owner: OsUser): Promise<string> {
  const parent = dirname(dataDir);
  const res = await runner.run({ program: 'test', args: ['-w', parent], runAs: owner, cwd: '/' });
  return res.exitCode === 0 ? join(parent, `${basename(dataDir)}.pgscale-server.log`) : join(dataDir, 'pgscale-server.log');
}
