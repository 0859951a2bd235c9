/**
 * A RHEL/PGDG host, built inside a private mount namespace so this machine never changes: the test
 * bed's 16 and 17 trees bind-mounted as /usr/pgsql-16 and /usr/pgsql-17, postgresql-N.service units
 * as postgresql16-server ships them (17's data directory moved by a `systemctl edit` drop-in), and
 * real data directories at /var/lib/pgsql/16/data and /srv/pg17/data. /usr, /etc, /var/lib and /srv
 * are overlays whose upper layers live on a tmpfs that disappears with the namespace.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { DetectReport, DetectedCluster } from '../../src/detect.js';
import { isRoot, type RunResult } from '../../src/runner.js';
import { cliEntry } from '../helpers/paths.js';
import { bindir, createCluster, scratchDir, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { runOnLayoutHost } from '../helpers/layoutHost.js';
import { pgdgUnit } from '../helpers/pgdg.js';

after(teardownAll);

const show = (res: RunResult) => `exit ${res.exitCode}\nstdout:\n${res.stdout.slice(-3000)}\nstderr:\n${res.stderr.slice(-3000)}`;

describe(
  'a RHEL/PGDG host: /usr/pgsql-N, /var/lib/pgsql/N/data, postgresql-N.service',
  { skip: !isRoot() && 'mount namespaces (unshare -m) need root' },
  () => {
    let fixture: string;
    let binds: [string, string][];
    let c16: TestCluster;
    let c17: TestCluster;

    before(async () => {
      [c16, c17] = await Promise.all([
        createCluster({ version: 16, checksums: true, start: false }),
        createCluster({ version: 17, checksums: false, start: false }),
      ]);
      fixture = scratchDir('pgscale-rhel-fixture-');
      const put = (path: string, text: string) => {
        mkdirSync(dirname(join(fixture, path)), { recursive: true });
        writeFileSync(join(fixture, path), text);
      };
      put('/usr/lib/systemd/system/postgresql-16.service', pgdgUnit(16));
      put('/usr/lib/systemd/system/postgresql-17.service', pgdgUnit(17));
      put('/etc/systemd/system/postgresql-17.service.d/override.conf', '[Service]\nEnvironment=PGDATA=/srv/pg17/data\n');
      // the test bed's trees are laid out as PGDG's: bin/, lib/, share/
      binds = [
        [dirname(bindir(16)), '/usr/pgsql-16'],
        [dirname(bindir(17)), '/usr/pgsql-17'],
        [dirname(c16.pgdata), '/var/lib/pgsql/16'],
        [dirname(c17.pgdata), '/srv/pg17'],
      ];
    });

    const onRhelHost = (args: string[]) =>
      runOnLayoutHost({ overlays: ['/usr', '/etc', '/var/lib', '/srv'], fixture, binds }, [process.execPath, cliEntry, ...args], { PGDATA: '', NO_COLOR: '1' });

    const clusterAt = (report: DetectReport, dataDir: string): DetectedCluster => {
      const c = report.clusters.find((x) => x.dataDir === dataDir);
      assert.ok(c, `${dataDir} among ${report.clusters.map((x) => x.dataDir).join(', ')}; skipped: ${JSON.stringify(report.skipped)}`);
      return c;
    };

    test('detect finds both bindirs and both clusters, each with its unit and the bindir of its major', async () => {
      const res = await onRhelHost(['detect', '--json']);
      assert.equal(res.exitCode, 0, show(res));
      const report = JSON.parse(res.stdout) as DetectReport;
      for (const major of [16, 17]) {
        assert.ok(
          report.installations.some((i) => i.major === major && i.bindir === `/usr/pgsql-${major}/bin` && i.layout === 'rhel'),
          JSON.stringify(report.installations),
        );
      }
      const pg16 = clusterAt(report, '/var/lib/pgsql/16/data');
      assert.deepEqual(pg16.layout, {
        kind: 'rhel',
        version: 16,
        service: 'postgresql-16.service',
        unitFiles: ['/usr/lib/systemd/system/postgresql-16.service'],
      });
      assert.ok(pg16.foundBy.includes('rhel'));
      assert.equal(pg16.major, 16);
      assert.equal(pg16.bindir, '/usr/pgsql-16/bin');
      assert.equal(pg16.checksums, true, 'pg_controldata ran from /usr/pgsql-16/bin');
      assert.equal(pg16.configFile, '/var/lib/pgsql/16/data/postgresql.conf');
      assert.equal(pg16.port, c16.port, 'the port from postgresql.conf in the data directory');

      const pg17 = clusterAt(report, '/srv/pg17/data');
      assert.equal(pg17.layout.kind, 'rhel');
      assert.equal(pg17.layout.kind === 'rhel' && pg17.layout.service, 'postgresql-17.service');
      assert.deepEqual(pg17.layout.kind === 'rhel' && pg17.layout.unitFiles, [
        '/usr/lib/systemd/system/postgresql-17.service',
        '/etc/systemd/system/postgresql-17.service.d/override.conf',
      ]);
      assert.equal(pg17.bindir, '/usr/pgsql-17/bin');
      assert.equal(pg17.checksums, false);
      assert.equal(
        report.clusters.some((x) => x.dataDir === '/var/lib/pgsql/17/data'),
        false,
        'the drop-in moved 17 away from the default',
      );
    });

    test("--pgdata of a unit's data directory carries its layout", async () => {
      const res = await onRhelHost(['detect', '--json', '--pgdata', '/srv/pg17/data']);
      assert.equal(res.exitCode, 0, show(res));
      const [c] = (JSON.parse(res.stdout) as DetectReport).clusters;
      assert.deepEqual(c?.layout.kind === 'rhel' && [c.layout.version, c.layout.service], [17, 'postgresql-17.service']);
      assert.deepEqual(c?.foundBy, ['flag']);
    });

    test('for people: the unit named, and systemctl as the way to drive it', async () => {
      const res = await onRhelHost(['detect', '--pgdata', '/var/lib/pgsql/16/data']);
      assert.equal(res.exitCode, 0, show(res));
      assert.match(res.stdout, /^ {2}16 .* \/usr\/pgsql-16\/bin {2}\[rhel\]$/m);
      assert.match(res.stdout, /^ {2}postgresql-16 \(\/var\/lib\/pgsql\/16\/data\): PostgreSQL 16, stopped/m);
      assert.match(res.stdout, /^ {4}service {5}postgresql-16\.service {2}\(PGDATA from \/usr\/lib\/systemd\/system\/postgresql-16\.service\)$/m);
      assert.match(res.stdout, /^ {4}next {8}start, stop and reload it with systemctl … postgresql-16\.service/m);
    });
  },
);
