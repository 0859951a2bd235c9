import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, createLoopVolume, scratchDir, teardownAll, type LoopVolume, type TestCluster } from '../helpers/testbed.js';
import { missingWrites, startWriter, type Writer } from '../helpers/writer.js';
import { parseJson, runCli, type CliResult } from '../helpers/cli.js';
import type { OperationResult } from '../../src/operationCommand.js';
import type { RunReport } from '../../src/pipeline/execute.js';
import type { TuneResult } from '../../commands/tune.js';
import { isRoot } from '../../src/runner.js';

after(teardownAll);

// A server as production runs it — port, socket directory and listen_addresses on its command line,
// its configuration outside PGDATA — with a client writing every 50 ms and a reader, through every
// operation that stops and starts it besides the upgrade: afterwards clients find it where they
// found it before, and every acknowledged write is there.
describe('wal move and tune restarts keep the server where clients find it', { skip: !isRoot() && 'loop volumes and servers as postgres need root' }, () => {
  let c: TestCluster;
  let vol: LoopVolume;
  let stateDir: string;
  let where: Record<string, string>;

  /** Where the server listens and what it reads, asked over the socket directory and port clients use. */
  const listening = async () => ({
    port: await c.sql('SHOW port'),
    sockets: await c.sql('SHOW unix_socket_directories'),
    listen: await c.sql('SHOW listen_addresses'),
    config: await c.sql('SHOW config_file'),
  });

  /** Runs `work` with the writer and reader going; then: every write kept, same place, no log inside PGDATA. */
  async function withClients(t: TestContext, label: string, work: () => Promise<CliResult>): Promise<CliResult> {
    const writer: Writer = await startWriter(c, { reader: true });
    await new Promise((r) => setTimeout(r, 300));
    const outcome = await work().then(
      (res) => ({ res }),
      (failure: unknown) => ({ failure }),
    );
    await new Promise((r) => setTimeout(r, 500));
    const report = await writer.stop();
    if ('failure' in outcome) throw outcome.failure;
    t.diagnostic(
      `${label}: longest write gap ${report.longestGapMs} ms, ${report.acknowledged.length} writes acknowledged, ${report.errors} client errors, ${report.reads} reads`,
    );
    assert.ok(report.acknowledged.length > 10, `${label}: writes acknowledged: ${report.acknowledged.length}`);
    assert.deepEqual(await missingWrites(c, report), [], `${label}: every acknowledged write survives`);
    assert.deepEqual(await listening(), where, `${label}: the server answers on the same socket directory and port, reading the same config_file`);
    assert.deepEqual(
      readdirSync(c.pgdata).filter((n) => /pgscale.*\.log$/.test(n)),
      [],
      `${label}: no pgscale log inside PGDATA`,
    );
    return outcome.res;
  }

  before(async () => {
    vol = createLoopVolume(256);
    stateDir = scratchDir('pgscale-state-');
    c = await createCluster({ version: 17, listenOn: 'command-line', configOutside: true, conf: ['max_wal_size = 64MB', 'min_wal_size = 32MB'] });
    where = await listening();
    assert.deepEqual(where, { port: String(c.port), sockets: c.socketDir, listen: '', config: c.configFile });
  });

  const wal = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    runCli(['wal', 'move', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', stateDir, ...args], { env });
  const tune = (args: string[]) =>
    runCli([
      'tune',
      '--pgdata',
      c.pgdata,
      '--bindir',
      c.bindir,
      '--state-dir',
      stateDir,
      '--profile',
      'oltp',
      '--cpus',
      '2',
      '--storage',
      'ssd',
      '--json',
      ...args,
    ]);

  test('wal move: the plan shows where the listening settings come from; the run brings the server back in place', async (t) => {
    const target = join(vol.mountPoint, 'wal');
    const dry = await wal(['--to', target, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`port ${c.port} \\(command line\\), sockets in ${c.socketDir} \\(command line\\), no TCP \\(command line\\)`));
    assert.match(dry.stdout, new RegExp(`config_file ${c.configFile}`));
    // pg_upgrade rewrites postmaster.opts when it starts a server: the running postmaster's own argv counts
    writeFileSync(join(c.pgdata, 'postmaster.opts'), `${join(c.bindir, 'postgres')} "-D" "${c.pgdata}"\n`);
    const res = await withClients(t, 'wal move to a volume', () => wal(['--to', target, '--yes', '--json']));
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.equal(parseJson<OperationResult>(res).run?.status, 'completed');
  });

  test('wal move rolled back after the server ran on the new WAL: back on the same port and socket', async (t) => {
    await withClients(t, 'wal move killed after its start step, then rolled back', async () => {
      const killed = await wal(['--to-data-dir', '--yes', '--json'], { PGSCALE_FAILPOINT: 'start:done' });
      assert.equal(killed.code, null, `expected SIGKILL: ${killed.stderr}`);
      const res = await runCli(['rollback', '--state-dir', stateDir, '--yes', '--json']);
      assert.equal(res.code, 0, res.stderr + res.stdout);
      assert.equal(parseJson<RunReport>(res).status, 'rolled-back');
      return res;
    });
    assert.equal(readlinkSync(join(c.pgdata, 'pg_wal')), join(vol.mountPoint, 'wal'), 'pg_wal leads to the volume again, as before the run');
  });

  test('tune --apply leaves a restart pending; a re-run with --yes completes it in place', async (t) => {
    const pending = await tune(['--memory', '1GB', '--apply']);
    assert.equal(pending.code, 0, pending.stderr + pending.stdout);
    const first = parseJson<TuneResult>(pending);
    assert.ok(first.restartPending?.includes('shared_buffers'), `restart pending: ${first.restartPending}`);
    assert.equal(await c.sql('SHOW shared_buffers'), '128MB', 'not restarted without consent');
    const res = await withClients(t, 'tune re-run with --yes (the pending restart)', () => tune(['--memory', '1GB', '--yes']));
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const out = parseJson<TuneResult>(res);
    assert.equal(out.run?.status, 'completed', res.stderr);
    assert.deepEqual(out.restartPending, []);
    assert.equal(await c.sql('SHOW shared_buffers'), '256MB');
    // and nothing is left: a third run has nothing to write and nothing to restart
    const again = await tune(['--memory', '1GB', '--yes']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(parseJson<TuneResult>(again).run, undefined);
  });

  test('tune --apply --yes restarts the server in place', async (t) => {
    const res = await withClients(t, 'tune --apply --yes restart', () => tune(['--memory', '1536MB', '--apply', '--yes']));
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const out = parseJson<TuneResult>(res);
    assert.equal(out.run?.status, 'completed', res.stderr);
    assert.ok(
      out.run?.steps.some((s) => s.id === 'restart' && s.state === 'done'),
      'the run restarted the server',
    );
    assert.equal(await c.sql('SHOW shared_buffers'), '384MB');
  });
});
