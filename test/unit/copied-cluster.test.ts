import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selfContainedCopyEdits } from '../../src/config/copiedCluster.js';
import { parseConfigText } from '../../src/config/parse.js';

const src = '/var/lib/postgresql/16/main';
const copy = '/srv/replica';

/** The settings the server would read from the edited text. */
const settings = (text: string) => new Map(parseConfigText(text, 'test').map((e) => [e.name, e.value]));

test("a copy's configuration: path settings naming the source are commented out, rewritten or their file copied", () => {
  const conf = [
    '# written by pgscale upgrade',
    `data_directory = '${src}'`,
    "hba_file = '/etc/postgresql/16/main/pg_hba.conf'  # moved out",
    `ident_file '${src}/conf/pg_ident.conf'`,
    "external_pid_file = '/var/run/postgresql/16-main.pid'",
    'shared_buffers = 1GB',
    "#hba_file = '/etc/other'",
  ].join('\n');
  const r = selfContainedCopyEdits(conf, src, copy);
  assert.deepEqual(
    r.edits.map((e) => [e.line, e.name, e.action, e.to ?? null]),
    [
      [2, 'data_directory', 'commented', null],
      [3, 'hba_file', 'commented', null],
      [4, 'ident_file', 'rewritten', `${copy}/conf/pg_ident.conf`],
      [5, 'external_pid_file', 'commented', null],
    ],
  );
  assert.deepEqual(r.copyFiles, [{ from: '/etc/postgresql/16/main/pg_hba.conf', to: `${copy}/pg_hba.conf` }]);
  const now = settings(r.text);
  assert.ok(!now.has('data_directory') && !now.has('hba_file') && !now.has('external_pid_file'), r.text);
  assert.equal(now.get('ident_file'), `${copy}/conf/pg_ident.conf`);
  assert.equal(now.get('shared_buffers'), '1GB');
  assert.match(r.text.split('\n')[1]!, /^# data_directory = '\/var\/lib\/postgresql\/16\/main' {2}# pgscale: commented out in this copy of/);
  assert.equal(r.text.split('\n')[6], "#hba_file = '/etc/other'", 'a comment stays as it was');
  // applied again to its own result: nothing more to do
  assert.deepEqual(selfContainedCopyEdits(r.text, src, copy).edits, []);
});

test("a copy's configuration: quoted values with '' and spaces, relative paths, default locations", () => {
  const conf = [`hba_file = '${src}/pg_hba.conf'`, "ident_file = 'my ''ident''.conf'", "data_directory = '/x/it''s here'"].join('\n');
  const r = selfContainedCopyEdits(conf, src, copy);
  assert.equal(r.edits[0]!.action, 'commented', "the source's default pg_hba.conf: the copy's own default applies");
  assert.equal(r.edits[1]!.action, 'rewritten');
  assert.equal(r.edits[1]!.to, `${copy}/my 'ident'.conf`);
  assert.equal(settings(r.text).get('ident_file'), `${copy}/my 'ident'.conf`, 'the rewritten value is quoted the way the server reads it');
  assert.equal(r.edits[2]!.value, "/x/it's here");
  assert.deepEqual(r.copyFiles, []);
});

test("a copy's configuration: a copy in the same path on another host keeps settings that name itself", () => {
  const conf = `data_directory = '${src}'\nhba_file = '${src}/pg_hba.conf'\nident_file = '/etc/pg/pg_ident.conf'\n`;
  const r = selfContainedCopyEdits(conf, src, src);
  assert.deepEqual(
    r.edits.map((e) => e.name),
    ['ident_file'],
  );
  assert.deepEqual(r.copyFiles, [{ from: '/etc/pg/pg_ident.conf', to: `${src}/pg_ident.conf` }]);
});

test("a copy's configuration: includes outside the data directory are reported, inside ones and no path settings change nothing", () => {
  const conf = "include 'extra.conf'\ninclude_if_exists '/etc/postgresql/common.conf'\ninclude_dir 'conf.d'\nwork_mem = 64MB\n";
  const r = selfContainedCopyEdits(conf, src, copy);
  assert.deepEqual(r.outsideIncludes, ['/etc/postgresql/common.conf']);
  assert.deepEqual(r.edits, []);
  assert.equal(r.text, conf);
});
