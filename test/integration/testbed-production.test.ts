import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster } from '../helpers/testbed.js';
import { missingWrites, startWriter } from '../helpers/writer.js';

// The production patterns the other tests build on: a server whose port, socket and listen
// addresses are on its command line with its configuration outside PGDATA, and a writer that
// reconnects across a restart and keeps every acknowledged write.
test('test bed: command-line options, config outside PGDATA, a writer across a restart', async () => {
  const c = await createCluster({ version: 17, listenOn: 'command-line', configOutside: true });
  assert.ok(!existsSync(join(c.pgdata, 'postgresql.conf')), 'postgresql.conf lives outside the data directory');
  assert.equal(await c.sql('SHOW port'), String(c.port));
  assert.equal(await c.sql('SHOW config_file'), c.configFile);
  const writer = await startWriter(c, { intervalMs: 20, reader: true });
  await new Promise((r) => setTimeout(r, 300));
  await c.stop();
  await c.start();
  await new Promise((r) => setTimeout(r, 500));
  const report = await writer.stop();
  assert.ok(report.acknowledged.length > 10, `writes acknowledged: ${report.acknowledged.length}`);
  assert.ok(report.errors > 0, 'the restart interrupted the writer');
  assert.ok(report.reads > 0);
  assert.deepEqual(await missingWrites(c, report), []);
  await c.stop();
});
