import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { parseConfigText } from '../../src/config/parse.js';
import { KNOWN_MAJORS, findSetting, formatValue, loadCatalog, parseSetting } from '../../src/gucCatalog/index.js';
import { WORKLOAD_PROFILES, recommend, render, templatesDir, type RecommendationSet } from '../../src/tune/index.js';
import { INCLUDE_DIR, INCLUDE_FILE } from '../../src/tune/decide.js';
import { HARDWARE } from './tune-fixtures.js';

const allRecommendations = (set: RecommendationSet) => Object.values(set.areas).flat();

const sets = Object.values(HARDWARE).flatMap((hw) =>
  WORKLOAD_PROFILES.flatMap((workload) => KNOWN_MAJORS.map((pgMajor) => recommend({ ...hw, workload, pgMajor }, loadCatalog(pgMajor)))),
);

test('the templates are the three layouts, nothing else', () => {
  assert.deepEqual(readdirSync(templatesDir).sort(), ['alter-system.sql.tmpl', 'pgscale.conf.tmpl', 'postgresql.conf.tmpl']);
});

test('conf and include: the config parser reads back exactly the recommended values', () => {
  for (const set of sets) {
    for (const format of ['conf', 'include'] as const) {
      const text = render(set, format);
      assert.doesNotMatch(text, /\{\{|\}\}/, `${format}: every placeholder filled`);
      // each template orders the areas its own way
      const lines = parseConfigText(text, `${format}.conf`);
      const recs = allRecommendations(set);
      assert.deepEqual(lines.map((l) => l.name).sort(), recs.map((r) => r.name).sort(), format);
      const catalog = loadCatalog(set.pgMajor);
      for (const line of lines) {
        const def = findSetting(catalog, line.name)!;
        assert.deepEqual(parseSetting(def, line.value), recs.find((r) => r.name === line.name)!.value, `${format} ${line.name} = ${line.value}`);
      }
      const restartLines = text
        .split('\n')
        .filter((l) => l.endsWith('# needs restart'))
        .map((l) => l.split(' ')[0]);
      assert.deepEqual(
        restartLines.sort(),
        recs
          .filter((r) => r.restart)
          .map((r) => r.name)
          .sort(),
        `${format}: restart marks`,
      );
      for (const r of recs) assert.ok(text.includes(`# ${r.reason}\n${r.name} = `), `${format}: reason above ${r.name}`);
    }
  }
});

test('conf: a complete file with the profile in its header and what the version lacks', () => {
  const set = sets.find((s) => s.pgMajor === 16 && s.profile.storage === 'network-block' && s.profile.workload === 'oltp')!;
  const text = render(set, 'conf');
  assert.match(text, /^# postgresql\.conf for capacity planning/m);
  assert.match(text, /^# {3}PostgreSQL 16 {6}\(settings checked against 16\.\d+\)$/m);
  assert.match(text, /^# {3}memory {5}8.0 GB$/m);
  assert.match(text, /^# Worst-case memory: [\d.]+ GB of [\d.]+ GB/m);
  assert.match(text, /^# io_method \(io\): not a setting of PostgreSQL 16$/m);
  assert.match(text, /^# kernel: sysctl vm\.nr_hugepages=\d+ /m);
  assert.match(
    render(
      sets.find((s) => s.pgMajor === 18)!,
      'conf',
    ),
    /^# \(nothing\)$/m,
  );
});

test('sql: one ALTER SYSTEM per recommendation, quoted, then a reload', () => {
  for (const set of sets) {
    const text = render(set, 'sql');
    assert.doesNotMatch(text, /\{\{|\}\}/);
    const statements = text.split('\n').filter((l) => l.startsWith('ALTER SYSTEM'));
    const recs = allRecommendations(set);
    assert.deepEqual(
      statements,
      recs.map((r) => `ALTER SYSTEM SET ${r.name} = '${formatValue(r.value)}';${r.restart ? '  -- needs restart' : ''}`),
    );
    assert.ok(text.trimEnd().endsWith('SELECT pg_reload_conf();'));
    for (const line of text.split('\n')) assert.ok(line === '' || line.startsWith('--') || line.startsWith('ALTER SYSTEM') || line.startsWith('SELECT'), line);
  }
});

test('json: typed values, the file spelling, and everything else of the set', () => {
  for (const set of sets) {
    const parsed = JSON.parse(render(set, 'json'));
    const recs = allRecommendations(set);
    assert.equal(parsed.pgMajor, set.pgMajor);
    assert.deepEqual(parsed.memoryBudget, set.memoryBudget);
    assert.deepEqual(parsed.dropped, set.dropped);
    assert.deepEqual(parsed.advisories, set.advisories);
    assert.deepEqual(
      parsed.settings.map((s: { name: string; value: unknown; setting: string; restart: boolean }) => [s.name, s.value, s.setting, s.restart]),
      recs.map((r) => [r.name, r.value, formatValue(r.value), r.restart]),
    );
    assert.equal(parsed.areas, undefined, 'settings are listed once, with their area');
  }
});

test('include: the header names the include line pgscale tune adds; measured figures show in the header', () => {
  const set = recommend({ ...HARDWARE['8GB/2 vCPU network SSD']!, workload: 'oltp', pgMajor: 17 }, loadCatalog(17));
  const text = render(set, 'include');
  assert.ok(text.replace(/\n# /g, ' ').includes(`include_if_exists = '${INCLUDE_DIR}/${INCLUDE_FILE}'`), 'the line tuneParams appends');
  assert.doesNotMatch(text, /include_dir 'conf\.d'/);
  const measured = recommend(
    {
      ...HARDWARE['8GB/2 vCPU network SSD']!,
      workload: 'oltp',
      pgMajor: 17,
      storageMeasured: {
        fsync: { path: '/w', seconds: 1, opsPerSecond: { fdatasync: 390.4 } },
        randomRead: { path: '/d', serialIops: 4000, parallelIops: 30000, depth: 16, fileBytes: 1 << 27, seconds: 1.5 },
      },
    },
    loadCatalog(17),
  );
  assert.match(
    render(measured, 'conf'),
    /storage +network-block \(measured: random 8kB reads 4,?000\/s one at a time, 30,?000\/s 16 at once; WAL flushes fdatasync 390\/s \(pg_test_fsync\)\)/,
  );
});
