/**
 * Every playbook shipped in playbooks/ runs, as shipped, against real test-bed clusters: only the
 * host's paths are mapped (the cluster's data directory to a test cluster of the version its path
 * names, every other absolute path onto a loop-mounted volume, as a dedicated WAL or backup volume
 * would be) and the test bed's bindirs are named, since its PostgreSQL is not installed where a
 * package would put it. Commands, flags and their order are the playbook's own.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse, stringify } from 'yaml';
import { runCli } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { bindir, createCluster, createLoopVolume, mkdirOwned, scratchDir, teardownAll } from '../helpers/testbed.js';
import { isRoot } from '../../src/runner.js';

after(teardownAll);

type Doc = { cluster: { pgdata: string; bindir?: string }; steps: Record<string, Record<string, string | number | boolean> | null>[] };

const shipped = readdirSync(join(repoRoot, 'playbooks'))
  .filter((f) => f.endsWith('.yaml'))
  .sort();

test('every shipped playbook is covered here', () => {
  assert.deepEqual(shipped, ['move-wal.yaml', 'place-by-temperature.yaml', 'upgrade-16-to-17.yaml']);
});

for (const file of shipped) {
  test(`playbooks/${file} runs to the end on a test-bed cluster`, { skip: !isRoot() && 'loop volumes need root' }, async () => {
    const doc = parse(readFileSync(join(repoRoot, 'playbooks', file), 'utf8')) as Doc;
    const version = Number(/\/(\d+)\//.exec(doc.cluster.pgdata)?.[1]);
    assert.ok(version >= 13, `the playbook's data directory names a version: ${doc.cluster.pgdata}`);
    // a small window's cluster: its max_wal_size sizes the WAL volume the checks ask for
    const cluster = await createCluster({ version, checksums: true, conf: ["max_wal_size = '64MB'", "min_wal_size = '32MB'"] });
    await cluster.sql('create table kept as select g from generate_series(1, 5000) g');
    // a database a step names exists, with data in it
    const databases = new Set(doc.steps.flatMap((st) => Object.values(st).flatMap((f) => (f && typeof f.database === 'string' ? [f.database] : []))));
    for (const db of databases) {
      await cluster.sql(`create database ${db}`);
      await cluster.sql('create table kept as select g from generate_series(1, 5000) g', db);
    }
    const volume = createLoopVolume(256);
    const onVolume = (path: string) => {
      // every directory on the way is the server account's, as a DBA would prepare the volume
      let dir = volume.mountPoint;
      for (const part of dirname(path).split('/').filter(Boolean)) mkdirOwned((dir = join(dir, part)));
      return join(volume.mountPoint, path);
    };
    doc.cluster = { pgdata: cluster.pgdata, bindir: cluster.bindir };
    for (const step of doc.steps) {
      const [command, flags] = Object.entries(step)[0]!;
      const tablespaceVolumes = command === 'tablespaces place' ? flags?.volume : undefined;
      for (const [name, value] of Object.entries(flags ?? {}))
        if (typeof value === 'string' && value.startsWith('/') && name !== 'volume') flags![name] = onVolume(value);
      // tablespace volumes (PATH=TIER,…): each tier on a volume of its own, none on the data directory's device
      if (typeof tablespaceVolumes === 'string') {
        flags!.volume = tablespaceVolumes
          .split(',')
          .map((entry) => {
            const [path, tier] = entry.split('=');
            const own = createLoopVolume(64);
            let dir = own.mountPoint;
            for (const part of path!.split('/').filter(Boolean)) mkdirOwned((dir = join(dir, part)));
            return `${dir}=${tier}`;
          })
          .join(',');
      }
      if (command === 'upgrade') Object.assign(flags!, { 'old-bindir': cluster.bindir, 'new-bindir': bindir(Number(flags!['to-version'])) });
    }
    const work = scratchDir('pgscale-playbook-');
    const mapped = join(work, file);
    writeFileSync(mapped, stringify(doc));

    const res = await runCli(['playbook', 'run', mapped, '--yes', '--state-dir', join(work, 'state')], { timeoutMs: 300_000 });
    assert.equal(res.code, 0, `exit ${res.code}\n${res.stderr.slice(-4000)}`);
    assert.match(res.stderr, new RegExp(`step ${doc.steps.length}/${doc.steps.length}`));
    if (file === 'move-wal.yaml') {
      const wal = join(cluster.pgdata, 'pg_wal');
      assert.ok(lstatSync(wal).isSymbolicLink(), 'pg_wal is a symlink to the volume');
      assert.match(await cluster.sql('select count(*) from kept'), /^5000$/);
    } else if (file === 'place-by-temperature.yaml') {
      // one tablespace per tier on its own volume, temp files on the fastest; the data intact wherever it was placed
      assert.equal(
        await cluster.sql("select string_agg(spcname, ',' order by spcname) from pg_tablespace where spcname like 'pgscale%'"),
        'pgscale_cold,pgscale_hot',
        res.stderr,
      );
      assert.match(await cluster.sql('show temp_tablespaces', 'app'), /pgscale_hot/);
      assert.match(await cluster.sql('select count(*) from kept', 'app'), /^5000$/);
    } else {
      assert.match(await cluster.sql("select current_setting('server_version_num')::int / 10000 || ':' || count(*) from kept"), /^17:5000$/);
      const backup = String(doc.steps[0]!.backup!.to);
      assert.ok(existsSync(join(backup, 'manifest.json')), 'the pre-upgrade backup is there');
      // the tune step after the upgrade worked on the 17 cluster; the retired 16 directory was not touched
      const upgraded = await cluster.sql('show data_directory');
      assert.notEqual(upgraded, cluster.pgdata);
      assert.ok(existsSync(join(upgraded, 'conf.d', 'pgscale.conf')), `tune wrote into the upgraded cluster ${upgraded}`);
      assert.ok(!existsSync(join(cluster.pgdata, 'conf.d', 'pgscale.conf')), 'nothing written into the retired cluster');
    }
  });
}
