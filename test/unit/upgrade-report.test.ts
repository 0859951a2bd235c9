import { test } from 'node:test';
import assert from 'node:assert/strict';
import { standbyOutcomes } from '../../src/upgrade/report.js';
import type { UpgradeParams } from '../../src/upgrade/params.js';
import type { StandbyPlan } from '../../src/upgrade/standbys.js';
import type { ReplicasMethod } from '../../src/upgrade/standbyRules.js';

const standby = (name: string, oldDataDir: string): StandbyPlan => ({
  name,
  source: '--replica',
  host: { destination: name.split(':')[0]!, sshConfig: null },
  oldDataDir,
  layout: null,
  replica: null,
});
const params = (method: ReplicasMethod | null): UpgradeParams =>
  ({
    old: { major: 16 },
    replicas: method && {
      method,
      why: '',
      standbys: [standby('db2:/srv/16/main', '/srv/16/main'), standby('db3:/srv/16/main', '/srv/16/main')],
      maxLagBytes: 0,
      concurrency: 2,
    },
  }) as unknown as UpgradeParams;

test('the report says what happened to each standby: carried by rsync, rebuilt, failed with its command, unfinished, or left', () => {
  const done = { state: 'rebuilt' as const, detail: '/srv/17/main streams from the new primary through s2' };
  const rsync = standbyOutcomes(params('rsync'), [done, { state: 'failed', detail: 'rsync to db3: exit 12', command: 'pgscale replica add --x' }]);
  assert.match(
    rsync[0]!,
    /^standby db2:\/srv\/16\/main: upgraded by rsync --hard-links with the primary; \/srv\/17\/main streams .* through s2; its old data directory \/srv\/16\/main shares files with the new one: never start it/,
  );
  assert.equal(rsync[1], 'standby db3:/srv/16/main FAILED (rsync to db3: exit 12): rebuild it with: pgscale replica add --x');

  const rebuild = standbyOutcomes(params('rebuild'), [done, { state: 'synced', detail: '' }]);
  assert.match(rebuild[0]!, /rebuilt from the new primary by pg_basebackup; .*; its old data directory \/srv\/16\/main is stopped: remove it/);
  assert.equal(rebuild[1], 'standby db3:/srv/16/main: not finished (synced): `pgscale resume` continues it');
  assert.match(standbyOutcomes(params('rebuild'), [done, undefined])[1]!, /not finished \(not started\)/);

  const left = standbyOutcomes(params('leave'), [undefined, undefined]);
  assert.match(
    left[0]!,
    /^standby db2:\/srv\/16\/main: left on PostgreSQL 16 \(--replicas leave\); it cannot follow the new primary: rebuild it with: pgscale replica add/,
  );
  assert.deepEqual(standbyOutcomes(params(null), []), [], 'no standbys: no line');
});
