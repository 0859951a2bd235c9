import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { environmentAssignments, pgdataFromUnitTexts, rhelServices, rhelUpgradeNextSteps } from '../../src/cluster/rhel.js';
import { pgdgUnit } from '../helpers/pgdg.js';

test('Environment= assignments: several per line, quoted values', () => {
  assert.deepEqual(
    [...environmentAssignments('PGDATA=/a PGPORT=5433')],
    [
      ['PGDATA', '/a'],
      ['PGPORT', '5433'],
    ],
  );
  assert.deepEqual(
    [...environmentAssignments('"PGDATA=/srv/my data" \'X=1 2\'')],
    [
      ['PGDATA', '/srv/my data'],
      ['X', '1 2'],
    ],
  );
  assert.deepEqual([...environmentAssignments('"PGDATA=/a\\"b"')], [['PGDATA', '/a"b']]);
});

test('PGDATA from a unit and its drop-ins: the last assignment in [Service] wins, an empty Environment= resets', () => {
  assert.equal(pgdataFromUnitTexts([pgdgUnit(16)]), '/var/lib/pgsql/16/data/');
  assert.equal(pgdataFromUnitTexts([pgdgUnit(16), '[Service]\nEnvironment=PGDATA=/srv/pg16/data\n']), '/srv/pg16/data');
  assert.equal(pgdataFromUnitTexts([pgdgUnit(16), '[Service]\n#Environment=PGDATA=/commented\n']), '/var/lib/pgsql/16/data/');
  assert.equal(pgdataFromUnitTexts([pgdgUnit(16), '[Service]\nEnvironment=\n']), undefined);
  assert.equal(pgdataFromUnitTexts(['[Unit]\nEnvironment=PGDATA=/not-service\n']), undefined);
  assert.equal(pgdataFromUnitTexts([pgdgUnit(16), '[Service]\nEnvironment=PGPORT=5433\n']), '/var/lib/pgsql/16/data/', 'another variable leaves PGDATA alone');
});

test('postgresql-N.service units as systemd reads them: /etc replaces /usr/lib, drop-ins from every directory in name order', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pgscale-units-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const etc = join(root, 'etc/systemd/system');
  const lib = join(root, 'usr/lib/systemd/system');
  const put = (path: string, text: string) => {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  };
  put(join(lib, 'postgresql-16.service'), pgdgUnit(16));
  put(join(lib, 'postgresql-17.service'), pgdgUnit(17));
  put(join(lib, 'postgresql-17.service.d/10-vendor.conf'), '[Service]\nEnvironment=PGDATA=/vendor/17\n');
  put(join(etc, 'postgresql-17.service.d/override.conf'), '[Service]\nEnvironment=PGDATA=/srv/pg17/data/\n');
  put(join(lib, 'postgresql-15.service'), pgdgUnit(15));
  put(join(etc, 'postgresql-15.service'), pgdgUnit(15).replace('/var/lib/pgsql/15/data/', '/data/pg15'));
  put(join(lib, 'postgresql-14.service'), '[Service]\nExecStart=/bin/true\n');
  put(join(lib, 'postgresql.service'), pgdgUnit(13));

  const services = await rhelServices([etc, join(root, 'run/systemd/system'), lib]);
  assert.deepEqual(
    services.map((s) => [s.service, s.version, s.dataDir]),
    [
      ['postgresql-15.service', 15, '/data/pg15'],
      ['postgresql-16.service', 16, '/var/lib/pgsql/16/data'],
      ['postgresql-17.service', 17, '/srv/pg17/data'],
    ],
  );
  assert.deepEqual(services.find((s) => s.version === 17)!.unitFiles, [
    join(lib, 'postgresql-17.service'),
    join(lib, 'postgresql-17.service.d/10-vendor.conf'),
    join(etc, 'postgresql-17.service.d/override.conf'),
  ]);
});

test('next steps after an upgrade name both units, and the PGDATA to set when not the PGDG default', () => {
  const old = { kind: 'rhel' as const, version: 16, service: 'postgresql-16.service', unitFiles: [] };
  const moved = rhelUpgradeNextSteps(old, { major: 17, dataDir: '/srv/pg17', bindir: '/usr/pgsql-17/bin' });
  assert.match(moved[0]!, /^systemctl disable postgresql-16\.service/);
  assert.match(moved[1]!, /systemctl edit postgresql-17\.service, then under \[Service\] Environment=PGDATA=\/srv\/pg17$/);
  assert.match(moved[2]!, /\/usr\/pgsql-17\/bin\/pg_ctl -D \/srv\/pg17 stop .*systemctl enable --now postgresql-17\.service$/);
  const standard = rhelUpgradeNextSteps({ ...old, service: undefined }, { major: 17, dataDir: '/var/lib/pgsql/17/data', bindir: '/usr/pgsql-17/bin' });
  assert.equal(standard.length, 2);
  assert.match(standard[0]!, /already points at \/var\/lib\/pgsql\/17\/data/);
});
