/**
 * A client like every production database has: it writes a row every few milliseconds over the
 * server's socket and reconnects whenever the server goes away, recording every acknowledged id.
 * Operations under test must keep every acknowledged write, and clients must find the server where
 * they found it before. The longest gap between acknowledged writes is the downtime a client saw.
 */
import pg from 'pg';
import type { TestCluster } from './testbed.js';

export interface WriterReport {
  acknowledged: number[];
  /** Longest time between two acknowledged writes (ms): downtime as the client saw it. */
  longestGapMs: number;
  errors: number;
  /** Reads that succeeded (the reader's side), when a reader ran. */
  reads: number;
}

export interface Writer {
  /** Stops writing; resolves with what was acknowledged. */
  stop(): Promise<WriterReport>;
}

/** The OS account the writer connects as maps to a role of the same name (peer authentication). */
const clientRole = (): string => {
  const name = process.env.USER ?? process.env.LOGNAME;
  return name && name.length > 0 ? name : 'root';
};

/**
 * Creates the writer's table and login role (as the superuser, through psql), then starts writing
 * every `intervalMs` (default 50) and, with `reader`, reading on a second connection. Bounded:
 * stops by itself after `maxSeconds` (default 600).
 */
export async function startWriter(
  cluster: Pick<TestCluster, 'sql' | 'socketDir' | 'port'>,
  opts: { intervalMs?: number; reader?: boolean; maxSeconds?: number; database?: string } = {},
): Promise<Writer> {
  const role = clientRole();
  const database = opts.database ?? 'postgres';
  await cluster.sql(
    `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${role}') THEN CREATE ROLE "${role}" LOGIN; END IF; END $$;
     CREATE TABLE IF NOT EXISTS pgscale_writer (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
     GRANT SELECT, INSERT ON pgscale_writer TO "${role}";`,
    database,
  );
  const interval = opts.intervalMs ?? 50;
  const acknowledged: number[] = [];
  let errors = 0;
  let reads = 0;
  let lastAck = performance.now();
  let longestGapMs = 0;
  let running = true;
  const config = { host: cluster.socketDir, port: cluster.port, user: role, database, connectionTimeoutMillis: 2000 };
  const loop = async (work: (c: pg.Client) => Promise<void>): Promise<void> => {
    let client: pg.Client | undefined;
    while (running) {
      const started = performance.now();
      try {
        if (!client) {
          client = new pg.Client(config);
          client.on('error', () => undefined); // a terminated session surfaces on the next query
          await client.connect();
        }
        await work(client);
      } catch {
        errors++;
        await client?.end().catch(() => undefined);
        client = undefined;
      }
      await new Promise((r) => setTimeout(r, Math.max(0, interval - (performance.now() - started))));
    }
    await client?.end().catch(() => undefined);
  };
  let next = Date.now() * 1000; // ids unique across writers and runs
  const writing = loop(async (c) => {
    const id = next++;
    await c.query('INSERT INTO pgscale_writer (id) VALUES ($1)', [id]);
    const now = performance.now();
    longestGapMs = Math.max(longestGapMs, now - lastAck);
    lastAck = now;
    acknowledged.push(id);
  });
  const reading = opts.reader
    ? loop(async (c) => {
        await c.query('SELECT count(*) FROM pgscale_writer');
        reads++;
      })
    : Promise.resolve();
  const limit = setTimeout(() => (running = false), (opts.maxSeconds ?? 600) * 1000);
  return {
    async stop() {
      running = false;
      clearTimeout(limit);
      await Promise.all([writing, reading]);
      return { acknowledged, longestGapMs: Math.round(longestGapMs), errors, reads };
    },
  };
}

/** The acknowledged ids missing from the table now: must be none. */
export async function missingWrites(cluster: Pick<TestCluster, 'sql'>, report: WriterReport, database = 'postgres'): Promise<number[]> {
  const present = new Set((await cluster.sql('SELECT id FROM pgscale_writer', database)).split('\n').filter(Boolean).map(Number));
  return report.acknowledged.filter((id) => !present.has(id));
}
