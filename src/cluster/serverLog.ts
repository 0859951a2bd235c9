import { existsSync } from 'node:fs';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { isRoot, type OsUser, type Runner } from '../runner.js';

/** What decides where pg_ctl -l writes when pgscale starts a server. */
export interface ServerLogFacts {
  dataDir: string;
  /** The file the running server writes its output to now (pg_ctl -l FILE), when it is a regular file. */
  currentLog?: string | null;
  /** logging_collector is on (files or command line): the server keeps its own log files. */
  loggingCollector: boolean;
  /** log_directory resolved against the data directory, when it exists and the owner may write it. */
  writableLogDirectory: string | null;
  /** The owner may create a file beside the data directory. */
  parentWritable: boolean;
  /** pgscale's state directory, when the owner may write there (pgscale runs as the owner). */
  writableStateDir: string | null;
}

export interface ServerLogChoice {
  path: string;
  why: string;
}

/**
 * Where pg_ctl -l writes: where the running server writes now (the DBA's pg_ctl -l file); else, never
 * inside the data directory itself: with logging_collector on the
 * server logs where its DBA set it up and pg_ctl's few lines before the collector starts go beside
 * those files; otherwise beside the data directory; otherwise pgscale's state directory. Undefined
 * when none can be written by the owner.
 */
export function chooseServerLog(f: ServerLogFacts): ServerLogChoice | undefined {
  if (f.currentLog) return { path: f.currentLog, why: 'where the running server logs now (its pg_ctl -l file): a restart keeps logging there' };
  if (f.loggingCollector && f.writableLogDirectory) {
    return {
      path: join(f.writableLogDirectory, 'pgscale-startup.log'),
      why: `logging_collector is on: the server keeps logging in ${f.writableLogDirectory}; only its output before the collector starts goes to this file there`,
    };
  }
  if (f.parentWritable)
    return { path: join(dirname(f.dataDir), `${basename(f.dataDir)}.pgscale-server.log`), why: 'beside the data directory (logging_collector is off)' };
  if (f.writableStateDir)
    return {
      path: join(f.writableStateDir, `server-${basename(f.dataDir)}.log`),
      why: `in pgscale's state directory (logging_collector is off and the owner cannot write beside the data directory)`,
    };
  return undefined;
}

const truthy = (v: string | undefined) => v !== undefined && /^(on|true|yes|1|t|y)$/i.test(v.trim());

/** Gathers the facts as the data directory's owner and chooses. `setting` gives the configured value (command line over files). */
export async function serverLogPath(
  runner: Runner,
  o: { dataDir: string; owner: OsUser; setting: (name: string) => string | undefined; stateDir: string; currentLog?: string | null },
): Promise<ServerLogChoice | undefined> {
  const writable = async (dir: string) => (await runner.run({ program: 'test', args: ['-w', dir], runAs: o.owner, cwd: '/' })).exitCode === 0;
  const logDir = o.setting('log_directory') ?? 'log';
  const absLogDir = isAbsolute(logDir) ? logDir : join(o.dataDir, logDir);
  const collector = truthy(o.setting('logging_collector'));
  const meIsOwner = !isRoot() && process.getuid?.() === o.owner.uid;
  return chooseServerLog({
    dataDir: o.dataDir,
    currentLog: o.currentLog,
    loggingCollector: collector,
    writableLogDirectory: collector && existsSync(absLogDir) && (await writable(absLogDir)) ? absLogDir : null,
    parentWritable: await writable(dirname(o.dataDir)),
    writableStateDir: meIsOwner ? o.stateDir : null,
  });
}
