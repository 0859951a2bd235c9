/**
 * `pgscale tune` end to end on real 16, 17 and 18 clusters, the built CLI run as a DBA would:
 * the diff, --dry-run changing nothing, --yes applying (backup, write, postgres -C, reload,
 * restart) with pg_settings showing every value, a second run proposing nothing, --restore putting
 * every touched file back byte for byte. Each cluster has a DBA include file and a
 * postgresql.auto.conf setting the recommendations change: both must be honoured. Then the bad
 * inputs, each a clear error with nothing changed, and a configuration planned without a cluster.
 * --memory 2GB --cpus 2 --storage ssd keep the values small and the same on every machine.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chownSync, existsSync, readdirSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { createCluster, scratchDir, serverUser, teardownAll, type TestCluster } from '../helpers/testbed.js';
import { parseJson, runCli, type CliResult } from '../helpers/cli.js';
import { cliEntry } from '../helpers/paths.js';
import { hasTmux, killTmux, Terminal } from '../helpers/terminal.js';
import { isRoot } from '../../src/runner.js';
import { findSetting, loadCatalog } from '../../src/gucCatalog/catalog.js';
import { isCloseEnough, parseSetting } from '../../src/gucCatalog/values.js';
import type { TuneResult } from '../../commands/tune.js';

after(() => {
  killTmux();
  teardownAll();
});

// --no-measure: values that do not move with this machine's disk between runs (measuring has its own test)
const HW = ['--memory', '2GB', '--cpus', '2', '--storage', 'ssd', '--profile', 'oltp', '--no-measure'];
const sha = (path: string): string | null => (existsSync(path) ? createHash('sha256').update(readFileSync(path)).digest('hex') : null);
const shas = (paths: readonly string[]) => Object.fromEntries(paths.map((p) => [p, sha(p)]));
const runsIn = (stateDir: string): string[] => (existsSync(join(stateDir, 'runs')) ? readdirSync(join(stateDir, 'runs')).sort() : []);
/** sh -c script: the python3 paths the old read probe used become /dev/null, then the command runs. */
const WITHOUT_PYTHON = 'for p in /usr/bin/python3 /usr/local/bin/python3; do if [ -e "$p" ]; then mount --bind /dev/null "$p" || exit 1; fi; done; exec "$@"';
const show = (r: CliResult) => `exit ${r.code}\nstdout:\n${r.stdout.slice(-4000)}\nstderr:\n${r.stderr.slice(-4000)}`;

/** pg_settings as name → {setting, unit, pending}. */
async function settings(c: TestCluster): Promise<Map<string, { setting: string; pending: boolean }>> {
  const out = await c.sql(`select name || '|' || setting || '|' || pending_restart from pg_settings`);
  return new Map(
    out.split('\n').map((l) => {
      const [name, setting, pending] = l.split('|');
      return [name!, { setting: setting!, pending: pending === 'true' }];
    }),
  );
}

describe('pgscale tune', { skip: !isRoot() && 'the test bed runs servers as postgres and bind-mounts a read-only directory: needs root' }, () => {
  let state: string;
  const tune = (c: TestCluster, args: string[]) =>
    runCli(['tune', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', state, ...HW, ...args], { timeoutMs: 180_000 });

  before(() => {
    state = join(scratchDir('pgscale-tune-state-'), 'state');
  });

  for (const version of [16, 17, 18]) {
    describe(`PostgreSQL ${version}`, () => {
      let c: TestCluster;
      let touched: string[];
      let original: Record<string, string | null>;

      before(async () => {
        c = await createCluster({ version, start: false, conf: ['fsync = off', "include 'dba.conf'"] });
        // a DBA include file: work_mem there is changed (pgscale.conf is read after it), jit already as recommended
        writeFileSync(join(c.pgdata, 'dba.conf'), "# the DBA's own settings\nwork_mem = 1MB\njit = off\n");
        chownSync(join(c.pgdata, 'dba.conf'), serverUser.uid, serverUser.gid);
        await c.start();
        // postgresql.auto.conf overrides every file: the recommended 1.1 must go there to take effect
        await c.sql('ALTER SYSTEM SET random_page_cost = 3');
        await c.sql('select pg_reload_conf()');
        touched = ['postgresql.conf', 'postgresql.auto.conf', 'conf.d/pgscale.conf', 'dba.conf'].map((f) => join(c.pgdata, f));
        original = shas(touched);
      });

      test('the diff against the effective configuration, grouped by area; --dry-run changes nothing', async () => {
        const runsBefore = runsIn(state);
        const res = await tune(c, ['--dry-run']);
        assert.equal(res.code, 0, show(res));
        assert.match(res.stdout, /^# PostgreSQL \d+ · 2\.0 GB · 2 vCPUs · ssd storage · oltp profile/m);
        assert.match(res.stdout, /^## memory: \d+ changes \(1 needs a restart, \d+ take effect on reload\)$/m);
        assert.match(res.stdout, /^-shared_buffers = 128MB +# postgresql\.conf:\d+$/m);
        assert.match(res.stdout, /^\+shared_buffers = 512MB +# RESTART: 25 % of the 2.0 GB of RAM/m);
        assert.match(res.stdout, /^-work_mem = 1MB +# dba\.conf:2$/m, 'the include file is where work_mem comes from');
        assert.match(res.stdout, /^-random_page_cost = 3 +# postgresql\.auto\.conf:\d+ \(ALTER SYSTEM\)$/m);
        assert.match(res.stdout, /^\+random_page_cost = 1\.1 +# reload: /m);
        assert.match(
          res.stdout,
          /# warning: random_page_cost is set in postgresql\.auto\.conf:\d+ \(ALTER SYSTEM\), which the server reads after every other file: 1\.1 is written there/,
        );
        assert.doesNotMatch(res.stdout, /^[-+]jit = /m, 'jit = off in dba.conf is already the recommendation');
        assert.match(res.stdout, /# pgscale plan: tune/, 'the plan is shown');
        assert.deepEqual(shas(touched), original, 'no file changed');
        assert.deepEqual(runsIn(state), runsBefore, 'a dry run starts no run');
      });

      test('--yes: backup, write, validate, reload, restart; the server runs and pg_settings shows every value', async () => {
        const res = await tune(c, ['--yes', '--json']);
        assert.equal(res.code, 0, show(res));
        const out = parseJson<TuneResult>(res);
        assert.equal(out.run?.status, 'completed');
        assert.deepEqual(
          out.run?.steps.map((s) => s.id),
          ['backup', 'write', 'validate', 'reload', 'restart', 'verify'],
        );
        assert.deepEqual(out.restartPending, []);
        const changes = out.changes!.filter((x) => x.status === 'change');
        assert.ok(changes.length >= 10, `${changes.length} changes`);
        assert.ok(changes.some((x) => x.name === 'random_page_cost' && x.via === 'auto'));
        const catalog = loadCatalog(version);
        const live = await settings(c);
        for (const ch of changes) {
          const def = findSetting(catalog, ch.name)!;
          const now = live.get(ch.name)!;
          assert.ok(
            isCloseEnough(parseSetting(def, now.setting), parseSetting(def, ch.recommended)),
            `${ch.name}: pg_settings ${now.setting}, recommended ${ch.recommended}`,
          );
        }
        assert.deepEqual(
          [...live].filter(([, s]) => s.pending).map(([n]) => n),
          [],
          'nothing pending a restart',
        );
        assert.equal(live.get('shared_buffers')!.setting, String((512 * 1024) / 8));
        assert.equal(live.get('random_page_cost')!.setting, '1.1', 'the auto.conf value was changed where it wins');
        assert.match(readFileSync(join(c.pgdata, 'postgresql.auto.conf'), 'utf8'), /^random_page_cost = '1\.1'$/m);
        const conf = readFileSync(join(c.pgdata, 'postgresql.conf'), 'utf8').trimEnd().split('\n');
        assert.match(conf[conf.length - 1]!, /^include_if_exists = 'conf\.d\/pgscale\.conf'/, 'one include line, last');
        assert.match(readFileSync(join(c.pgdata, 'conf.d', 'pgscale.conf'), 'utf8'), /^work_mem = \S+$/m);
        assert.equal(sha(join(c.pgdata, 'dba.conf')), original[join(c.pgdata, 'dba.conf')], "the DBA's include file is left alone");
        const backups = join(out.run.runDir, 'backup');
        assert.ok(existsSync(join(backups, 'manifest.json')), 'backups in the run directory under the state directory');
        assert.ok(backups.startsWith(state));
        assert.equal(await c.sql('select 1'), '1', 'the server answers');
      });

      test('a second run on the tuned cluster proposes no change', async () => {
        const res = await tune(c, ['--yes', '--json']);
        assert.equal(res.code, 0, show(res));
        const out = parseJson<TuneResult>(res);
        assert.deepEqual(
          out.changes!.filter((x) => x.status === 'change').map((x) => `${x.name}: ${x.current} → ${x.recommended}`),
          [],
        );
        assert.equal(out.run, undefined, 'nothing applied');
        const text = await tune(c, []);
        assert.match(text.stdout, /^no change: every recommended setting is already close enough/m);
      });

      test('--restore puts every touched file back byte for byte, reloads and (with --yes) restarts', async () => {
        const res = await tune(c, ['--restore', '--yes']);
        assert.equal(res.code, 0, show(res));
        assert.deepEqual(shas(touched), original, 'sha256 of every touched file as before the tune run');
        assert.equal(existsSync(join(c.pgdata, 'conf.d')), false, 'the directory pgscale created is gone');
        const live = await settings(c);
        assert.equal(live.get('shared_buffers')!.setting, '16384');
        assert.equal(live.get('random_page_cost')!.setting, '3');
        assert.equal(live.get('work_mem')!.setting, '1024');
        assert.deepEqual(
          [...live].filter(([, s]) => s.pending).map(([n]) => n),
          [],
        );
        const again = await tune(c, ['--restore', '--yes']);
        assert.equal(again.code, 3, `nothing left to restore\n${show(again)}`);
        assert.match(again.stderr, /no completed pgscale tune run of .* to restore/);
      });
    });
  }

  describe('other targets: postgresql.conf in place, ALTER SYSTEM, a stopped server', () => {
    let c: TestCluster;
    let touched: string[];
    let original: Record<string, string | null>;

    before(async () => {
      c = await createCluster({ version: 16, conf: ['fsync = off'] });
      touched = ['postgresql.conf', 'postgresql.auto.conf', 'conf.d/pgscale.conf'].map((f) => join(c.pgdata, f));
      original = shas(touched);
    });

    test('--target conf rewrites the winning line of postgresql.conf in place and appends the rest', async () => {
      const res = await tune(c, ['--target', 'conf', '--yes']);
      assert.equal(res.code, 0, show(res));
      const conf = readFileSync(join(c.pgdata, 'postgresql.conf'), 'utf8');
      assert.match(conf, /^shared_buffers = 512MB\t\t# pgscale tune \(was 128MB\): 25 % of the 2.0 GB of RAM/m, "initdb's line, rewritten where it was");
      assert.equal(conf.match(/^shared_buffers =/gm)!.length, 1);
      assert.match(conf, /\nrandom_page_cost = 1\.1\t\t# pgscale tune: flash reads randomly/, 'a setting no line had is appended');
      assert.equal(existsSync(join(c.pgdata, 'conf.d')), false, 'no include file');
      const live = await settings(c);
      assert.equal(live.get('shared_buffers')!.setting, '65536');
      assert.equal(live.get('random_page_cost')!.setting, '1.1');
      const again = await tune(c, ['--target', 'conf', '--json']);
      assert.deepEqual(
        parseJson<TuneResult>(again).changes!.filter((x) => x.status === 'change'),
        [],
      );
      const restore = await tune(c, ['--restore', '--yes']);
      assert.equal(restore.code, 0, show(restore));
      assert.deepEqual(shas(touched), original);
      assert.equal((await settings(c)).get('shared_buffers')!.setting, '16384');
    });

    test('--apply without consent: reloaded, the restart left pending and reported, nothing else pending', async () => {
      const res = await tune(c, ['--apply', '--json']);
      assert.equal(res.code, 0, show(res));
      const out = parseJson<TuneResult>(res);
      assert.deepEqual(
        out.run?.steps.map((s) => s.id),
        ['backup', 'write', 'validate', 'reload', 'verify'],
        'no restart step',
      );
      assert.deepEqual(out.restartPending?.sort(), ['shared_buffers', 'wal_buffers']);
      const live = await settings(c);
      assert.deepEqual(
        [...live]
          .filter(([, s]) => s.pending)
          .map(([n]) => n)
          .sort(),
        ['shared_buffers', 'wal_buffers'],
      );
      assert.equal(live.get('random_page_cost')!.setting, '1.1', 'reload-context settings are in effect');
      // pgscale's own pending restart is said once, as the restart a consented re-run completes
      const text = await tune(c, []);
      assert.equal(text.code, 0, show(text));
      const said = text.stdout + text.stderr;
      assert.doesNotMatch(said, /already waiting for a restart before pgscale changes anything/);
      assert.equal(said.split("pgscale's settings wait for a server restart: shared_buffers, wal_buffers").length, 2, show(text));
      const restore = await tune(c, ['--restore', '--json']);
      assert.equal(restore.code, 0, show(restore));
      assert.deepEqual(shas(touched), original);
      // shared_buffers never left 128MB; wal_buffers back to its default -1 counts as a change from the
      // 4MB the server computed from it at start, so the server itself reports it pending: pgscale says so
      const pending = [...(await settings(c))].filter(([, s]) => s.pending).map(([n]) => n);
      assert.ok(!pending.includes('shared_buffers'), pending.join(', '));
      assert.deepEqual(parseJson<TuneResult>(restore).restartPending, pending);
    });

    test('--apply, then --yes completing the restart (a run that writes nothing), then --restore puts back the files of the --apply', async () => {
      assert.equal((await tune(c, ['--apply'])).code, 0);
      const completed = await tune(c, ['--yes', '--json']);
      assert.equal(completed.code, 0, show(completed));
      assert.equal((await settings(c)).get('shared_buffers')!.setting, '65536', 'the pending restart was completed');
      const restore = await tune(c, ['--restore', '--yes']);
      assert.equal(restore.code, 0, show(restore));
      assert.deepEqual(shas(touched), original);
      assert.equal((await settings(c)).get('shared_buffers')!.setting, '16384', 'restarted with the files as they were');
    });

    test('a reviewed plan file is applied exactly with `pgscale apply`', async () => {
      const planFile = join(scratchDir('pgscale-tune-plan-'), 'tune.plan.json');
      // --yes at planning time puts the restart into the plan; `apply` asks for it again (or --yes)
      const dry = await tune(c, ['--dry-run', '--yes', '--plan-out', planFile]);
      assert.equal(dry.code, 0, show(dry));
      assert.match(dry.stdout, /Restart the server \(fast stop, then start as it ran\)/);
      assert.deepEqual(shas(touched), original);
      const apply = await runCli(['apply', planFile, '--state-dir', state, '--yes', '--json'], { timeoutMs: 180_000 });
      assert.equal(apply.code, 0, show(apply));
      assert.equal(parseJson<TuneResult>(apply).run?.status, 'completed');
      assert.equal((await settings(c)).get('shared_buffers')!.setting, '65536');
      const restore = await tune(c, ['--restore', '--yes']);
      assert.equal(restore.code, 0, show(restore));
      assert.deepEqual(shas(touched), original);
    });

    test('when the real server rejects the new files (an include it cannot read), they are put back before any reload', async () => {
      const secret = join(c.pgdata, 'root-only.conf');
      writeFileSync(secret, 'log_min_duration_statement = 5s\n', { mode: 0o600 });
      const confPath = join(c.pgdata, 'postgresql.conf');
      const saved = readFileSync(confPath);
      appendFileSync(confPath, "include 'root-only.conf'\n");
      const files0 = shas([...touched, secret]);
      try {
        const res = await tune(c, ['--yes']);
        // a failure before any downtime: the run undoes itself and releases the lock (no run left to close)
        assert.equal(res.code, 4, show(res));
        assert.match(res.stderr, /the server rejects the new configuration, so the previous files were put back \(nothing was reloaded\)/);
        assert.match(res.stderr, /root-only\.conf/);
        assert.match(res.stderr, /what the run had done is undone/);
        assert.deepEqual(shas([...touched, secret]), files0, 'every file as before');
        assert.equal((await settings(c)).get('shared_buffers')!.setting, '16384', 'the server was not touched');
        const rollback = await runCli(['rollback', '--state-dir', state, '--yes']);
        assert.equal(rollback.code, 3, show(rollback));
        assert.match(rollback.stderr, /no unfinished run/);
        assert.deepEqual(shas([...touched, secret]), files0);
      } finally {
        writeFileSync(confPath, saved);
      }
    });

    test('--target sql on a stopped server: postgresql.auto.conf written as the server writes it, validated, in effect once started', async () => {
      await c.stop();
      const res = await tune(c, ['--target', 'sql', '--apply']);
      assert.equal(res.code, 0, show(res));
      assert.match(res.stderr, /the server is stopped: the settings take effect when it starts/);
      const auto = readFileSync(join(c.pgdata, 'postgresql.auto.conf'), 'utf8');
      assert.match(auto, /^# Do not edit this file manually!/);
      assert.match(auto, /^shared_buffers = '512MB'$/m);
      assert.equal(sha(join(c.pgdata, 'postgresql.conf')), original[join(c.pgdata, 'postgresql.conf')], 'postgresql.conf untouched');
      await c.start();
      const live = await settings(c);
      assert.equal(live.get('shared_buffers')!.setting, '65536');
      // 100 connections on 2GB: work_mem stays at PostgreSQL's 4MB (a warning asks for fewer connections)
      assert.equal(live.get('work_mem')!.setting, '4096');
      const again = await tune(c, ['--target', 'sql', '--json']);
      assert.deepEqual(
        parseJson<TuneResult>(again).changes!.filter((x) => x.status === 'change'),
        [],
        'no churn',
      );
      const restore = await tune(c, ['--restore', '--yes']);
      assert.equal(restore.code, 0, show(restore));
      assert.deepEqual(shas(touched), original);
    });
  });

  describe('at a terminal: asked per area (apply / skip / quit) and for the restart', { skip: !hasTmux && 'tmux is not installed' }, () => {
    let c: TestCluster;
    let touched: string[];
    let original: Record<string, string | null>;
    const argv = () => [process.execPath, cliEntry, 'tune', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', state, ...HW];

    before(async () => {
      c = await createCluster({ version: 17, conf: ['fsync = off'] });
      touched = ['postgresql.conf', 'postgresql.auto.conf', 'conf.d/pgscale.conf'].map((f) => join(c.pgdata, f));
      original = shas(touched);
    });

    test('quit at the first question changes nothing', async () => {
      const term = Terminal.start('quit', argv());
      try {
        await term.answer(/memory: \d+ changes/, 'Down', 'Down', 'Enter');
        assert.equal(await term.exitCode(), 0, term.screen());
        assert.match(term.screen(), /quit: nothing was changed/);
        assert.doesNotMatch(term.screen(), /\? parallelism/, 'no more questions after quit');
        assert.deepEqual(shas(touched), original);
      } finally {
        term.kill();
      }
    });

    test('some areas applied, others skipped, the restart consented: only the accepted settings change', async () => {
      const term = Terminal.start('areas', argv());
      try {
        await term.answer(/memory: \d+ changes/, 'Enter');
        await term.answer(/parallelism: \d+ changes/, 'Down', 'Enter');
        await term.answer(/wal: \d+ changes/, 'Enter');
        await term.answer(/io: \d+ changes/, 'Enter');
        await term.answer(/autovacuum: \d+ changes/, 'Down', 'Enter');
        await term.answer(/profile: 2 changes/, 'Enter');
        await term.answer(/shared_buffers, wal_buffers take effect only after a server restart/, 'y', 'Enter');
        assert.equal(await term.exitCode(), 0, term.screen());
        assert.match(term.screen(), /applied and verified in pg_settings/);
      } finally {
        term.kill();
      }
      const live = await settings(c);
      assert.equal(live.get('shared_buffers')!.setting, '65536', 'memory applied, restarted');
      assert.equal(live.get('max_parallel_workers')!.setting, '8', 'parallelism skipped');
      assert.equal(live.get('autovacuum_naptime')!.setting, '60', 'autovacuum skipped');
      assert.equal(live.get('random_page_cost')!.setting, '1.1', 'io applied');
      assert.equal(live.get('jit')!.setting, 'off', 'profile applied');
      assert.doesNotMatch(readFileSync(join(c.pgdata, 'conf.d', 'pgscale.conf'), 'utf8'), /^(max_parallel_workers|autovacuum_naptime) =/m);
      const restore = await tune(c, ['--restore', '--yes']);
      assert.equal(restore.code, 0, show(restore));
      assert.deepEqual(shas(touched), original);
    });
  });

  describe('--restore --dry-run and plan drift: what a run will do, what changed', () => {
    let c: TestCluster;

    before(async () => {
      c = await createCluster({ version: 17, conf: ['fsync = off'], configOutside: true });
    });

    test('--restore --dry-run shows the diff of every file put back and every file deleted: the actions the restore then takes', async () => {
      const tuned = await tune(c, ['--yes']);
      assert.equal(tuned.code, 0, show(tuned));
      const conf = c.configFile!;
      const include = join(dirname(conf), 'conf.d', 'pgscale.conf');
      const before = shas([conf, include]);
      const dry = await tune(c, ['--restore', '--dry-run']);
      assert.equal(dry.code, 0, show(dry));
      assert.deepEqual(shas([conf, include]), before, 'the dry run changed nothing');
      assert.match(dry.stdout, new RegExp(`^- delete \`${include}\``, 'm'));
      const diff = /```diff\n([^`]*)```/.exec(dry.stdout.slice(dry.stdout.indexOf(`modify \`${conf}\``)))?.[1] ?? '';
      assert.match(diff, new RegExp(`^--- ${conf}$`, 'm'));
      assert.match(diff, /^-include_if_exists = 'conf\.d\/pgscale\.conf'/m, `the include line goes:\n${diff}`);
      assert.doesNotMatch(dry.stdout, /```diff\n```/, 'no empty diff');
      const writeActions = (r: CliResult) => parseJson<TuneResult>(r).plan!.steps.find((st) => st.id === 'write')!.actions;
      const dryJson = await tune(c, ['--restore', '--dry-run', '--json']);
      assert.equal(dryJson.code, 0, show(dryJson));
      const planned = writeActions(dryJson);
      assert.deepEqual(
        planned.map((a) => (a.kind === 'file' ? `${a.change} ${a.path}` : a.kind)),
        [`delete ${include}`, `modify ${conf}`, `delete ${dirname(include)}`],
      );
      const real = await tune(c, ['--restore', '--yes', '--json']);
      assert.equal(real.code, 0, show(real));
      assert.deepEqual(writeActions(real), planned, 'the restore did what its dry run showed');
      assert.equal(existsSync(include), false);
      assert.doesNotMatch(readFileSync(conf, 'utf8'), /conf\.d\/pgscale\.conf/);
    });

    test('`pgscale apply` after an edit of postgresql.conf: refused (exit 3), one line per changed fact, naming the file; --json keeps the data', async () => {
      const planFile = join(scratchDir('pgscale-tune-plan-'), 'tune.plan.json');
      const dry = await tune(c, ['--dry-run', '--plan-out', planFile]);
      assert.equal(dry.code, 0, show(dry));
      const conf = c.configFile!;
      const planned = sha(conf)!;
      appendFileSync(conf, '# a DBA was here\n');
      const now = sha(conf)!;
      const apply = await runCli(['apply', planFile, '--state-dir', state, '--yes'], { timeoutMs: 180_000 });
      assert.equal(apply.code, 3, show(apply));
      assert.match(apply.stderr, new RegExp(`^ {2}- ${conf} changed since the plan \\(sha256 ${planned.slice(0, 8)}… → sha256 ${now.slice(0, 8)}…\\)$`, 'm'));
      assert.doesNotMatch(apply.stderr, /files: planned \{/, 'not a JSON map of hashes');
      const json = await runCli(['apply', planFile, '--state-dir', state, '--yes', '--json'], { timeoutMs: 180_000 });
      assert.equal(json.code, 3, show(json));
      const { drift } = parseJson<{ drift: { facts: { fact: string[]; planned: unknown; now: unknown }[] } }>(json);
      assert.deepEqual(
        drift.facts.find((f) => f.fact.at(-1) === conf),
        { fact: ['files', conf], planned, now },
      );
    });
  });

  describe('--dsn without --pgdata on the database host: the data directory the server names', () => {
    let c: TestCluster;
    const password = 'tune-dsn-pw';
    const dsn = (user: string) => `host=127.0.0.1 port=${c.port} user=${user} dbname=postgres`;
    const tuneByDsn = (user: string, planFile: string) =>
      runCli(['tune', '--dsn', dsn(user), '--bindir', c.bindir, '--state-dir', state, ...HW, '--dry-run', '--plan-out', planFile], {
        timeoutMs: 180_000,
        env: { PGPASSWORD: password, PGDATA: undefined, PGHOST: undefined, PGPORT: undefined },
      });

    before(async () => {
      c = await createCluster({ version: 17, conf: ["listen_addresses = '127.0.0.1'"] });
      await c.sql(`alter role ${c.superuser} password '${password}'; create role app login password '${password}'`);
    });

    test('a superuser over 127.0.0.1: SHOW data_directory, checked against its pg_control, and the plan says so', async () => {
      const planFile = join(scratchDir('pgscale-tune-plan-'), 'tune.plan.json');
      const res = await tuneByDsn(c.superuser, planFile);
      assert.equal(res.code, 0, show(res));
      const plan = JSON.parse(readFileSync(planFile, 'utf8')) as { target: { lockKey: string }; summary: string; params: { dataDir: string } };
      assert.equal(plan.params.dataDir, c.pgdata);
      assert.equal(plan.target.lockKey, `cluster:${c.pgdata}`);
      assert.match(
        plan.summary,
        new RegExp(
          `data directory ${c.pgdata}, as the server names it \\(SHOW data_directory\\), whose pg_control carries the server's system identifier \\d+`,
        ),
      );
      assert.doesNotMatch(readFileSync(planFile, 'utf8'), new RegExp(password), 'no password in the plan');
    });

    test('a role that may not read data_directory: still exit 2, no plan written', async () => {
      const planFile = join(scratchDir('pgscale-tune-plan-'), 'tune.plan.json');
      const res = await tuneByDsn('app', planFile);
      assert.equal(res.code, 2, show(res));
      assert.match(res.stderr, /applying needs the cluster's data directory on this host/);
      assert.equal(existsSync(planFile), false);
    });
  });

  describe('bad input: a clear error and nothing changed', () => {
    let c: TestCluster;
    let confDir: string;
    let confFile: string;
    let files: string[];
    let before0: Record<string, string | null>;
    const run = (args: string[]) => runCli(['tune', '--pgdata', c.pgdata, '--bindir', c.bindir, '--state-dir', state, ...args], { timeoutMs: 120_000 });
    const unchanged = (res: CliResult) => {
      assert.deepEqual(shas(files), before0, `no file changed\n${show(res)}`);
      assert.equal(existsSync(join(confDir, 'conf.d')), false);
    };

    before(async () => {
      // postgresql.conf outside the data directory (like /etc/postgresql/17/main), found through pg_settings.config_file
      c = await createCluster({ version: 17, configOutside: true, conf: ['fsync = off'] });
      confFile = c.configPath;
      confDir = dirname(confFile);
      files = [confFile, join(c.pgdata, 'postgresql.auto.conf'), join(confDir, 'conf.d', 'pgscale.conf')];
      before0 = shas(files);
    });

    test('an unknown profile', async () => {
      const res = await run([...HW.slice(0, 6), '--profile', 'banking', '--yes']);
      assert.equal(res.code, 2, show(res));
      assert.match(res.stderr, /unknown --profile banking; known: oltp, web, dw, mixed, desktop, read-replica/);
      unchanged(res);
    });

    test('--memory 0 and nonsense units', async () => {
      for (const [memory, why] of [
        ['0', /--memory 0: memory must be more than 0/],
        ['0GB', /memory must be more than 0/],
        ['12XB', /--memory 12XB: unknown unit "XB"/],
      ] as const) {
        const res = await run(['--memory', memory, '--yes']);
        assert.equal(res.code, 2, show(res));
        assert.match(res.stderr, why);
        unchanged(res);
      }
    });

    test('an unknown --pg-version, with a cluster and without one', async () => {
      const res = await run([...HW, '--pg-version', '12', '--yes']);
      assert.equal(res.code, 2, show(res));
      assert.match(res.stderr, /unknown --pg-version 12; known: 13–18/);
      unchanged(res);
      const mismatch = await run([...HW, '--pg-version', '16', '--yes']);
      assert.equal(mismatch.code, 2, show(mismatch));
      assert.match(mismatch.stderr, /--pg-version 16 does not match the cluster, which runs PostgreSQL 17/);
      const offline = await runCli(['tune', '--pg-version', '19', ...HW]);
      assert.equal(offline.code, 2, show(offline));
      assert.match(offline.stderr, /unknown --pg-version 19/);
      unchanged(mismatch);
    });

    test('measured, not guessed: WAL rate, pg_test_fsync on the WAL volume, a random-read probe, partitions; seconds, no file left', async () => {
      await c.sql('create table events (id bigint, at date) partition by range (at)');
      for (let i = 0; i < 40; i++)
        await c.sql(`create table events_${i} partition of events for values from ('2020-01-01'::date + ${i}) to ('2020-01-01'::date + ${i + 1})`);
      const started = Date.now();
      // on a database host without python: the python3 paths hidden in a private mount namespace
      const noPython = spawnSync(
        'unshare',
        [
          '-m',
          '--propagation',
          'private',
          'sh',
          '-c',
          WITHOUT_PYTHON,
          'sh',
          process.execPath,
          cliEntry,
          'tune',
          '--pgdata',
          c.pgdata,
          '--bindir',
          c.bindir,
        ].concat(['--state-dir', state, '--memory', '2GB', '--cpus', '2', '--profile', 'oltp', '--dry-run', '--json']),
        { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 120_000 },
      );
      const res: CliResult = { code: noPython.status, stdout: noPython.stdout, stderr: noPython.stderr };
      const seconds = (Date.now() - started) / 1000;
      assert.equal(res.code, 0, show(res));
      assert.ok(seconds < 90, `measuring took ${seconds}s`);
      const out = parseJson<TuneResult>(res);
      const notes = out.notes.join('\n');
      assert.match(notes, /^WAL written at [\d.]+ [kMGT]?B\/s \(measured on the cluster: .* since pg_stat_wal was reset/m);
      assert.match(notes, /^WAL flushes measured \(pg_test_fsync -s 1, .*pg_wal\): open_datasync \d+\/s, fdatasync \d+\/s/m);
      const reads = /^random 8kB reads measured on the data volume \(128 MB file, O_DIRECT\): ([\d,]+)\/s one at a time, ([\d,]+)\/s with 16 in flight$/m.exec(
        notes,
      );
      assert.ok(reads, notes);
      assert.doesNotMatch(notes, /python/);
      // plausible for a disk: not the page cache (a few µs a read), not stalled, and more reads in flight not slower
      const [serial, parallel] = [reads[1]!, reads[2]!].map((f) => Number(f.replace(/,/g, '')));
      assert.ok(serial! >= 20 && serial! < 200_000, `${serial} reads/s one at a time`);
      assert.ok(parallel! >= serial! * 0.8, `${parallel} reads/s with 16 in flight against ${serial} one at a time`);
      assert.match(notes, /^largest partition tree: 40 partitions$/m);
      // the figures drive the settings, and the reasons show them
      const reason = (name: string) => out.changes!.find((ch) => ch.name === name)?.reason ?? '';
      assert.match(reason('random_page_cost'), /^measured \d+µs per random 8kB read/);
      assert.match(reason('effective_io_concurrency'), /random 8kB reads one at a time, \d+\/s with 16 in flight/);
      assert.match(reason('wal_sync_method'), /^pg_test_fsync on the WAL volume: fdatasync \d+\/s/);
      assert.match(reason('commit_delay'), /WAL flush takes \d+µs|one WAL flush takes/);
      assert.match(reason('max_wal_size'), /of WAL \(measured on the cluster: /);
      assert.match(reason('max_locks_per_transaction'), /^the largest partition tree has 40 partitions/);
      assert.equal(out.changes!.find((ch) => ch.name === 'max_locks_per_transaction')!.recommended, '128');
      // the probes' temporary files are gone
      const leftovers = [join(c.pgdata, 'pg_wal'), join(c.pgdata, 'base', 'pgsql_tmp')]
        .flatMap((d) => (existsSync(d) ? readdirSync(d) : []))
        .filter((f) => f.startsWith('pgscale-'));
      assert.deepEqual(leftovers, []);
      // --wal-rate wins over a sample; --storage over the read probe
      const given = await run([...HW.filter((a) => a !== '--no-measure'), '--wal-rate', '20MB/s', '--dry-run']);
      assert.equal(given.code, 0, show(given));
      assert.match(given.stdout, /^\+max_wal_size = \S+ +# reload: 20MB\/s of WAL \(given with --wal-rate\)/m);
      assert.match(given.stdout, /random reads not measured: --storage given/);
      unchanged(given);
    });

    test('a configuration file with a syntax error, reported with file and line', async () => {
      const broken = join(confDir, 'broken.conf');
      writeFileSync(broken, '# fine\nwork_mem = = 4MB\n');
      const saved = readFileSync(confFile);
      appendFileSync(confFile, "include 'broken.conf'\n");
      const files0 = shas(files);
      try {
        const res = await run([...HW, '--yes']);
        assert.equal(res.code, 2, show(res));
        assert.match(res.stderr, new RegExp(`syntax error in ${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} line 2`));
        assert.deepEqual(shas(files), files0, 'no file changed');
        assert.equal(existsSync(join(confDir, 'conf.d')), false);
      } finally {
        writeFileSync(confFile, saved);
      }
    });

    test('a read-only configuration directory is refused before anything is written', async () => {
      // the configuration directory is found through pg_settings.config_file: the diff reads it
      const dry = await run([...HW, '--dry-run']);
      assert.equal(dry.code, 0, show(dry));
      assert.match(dry.stdout, new RegExp(`^-max_wal_size = 1GB +# ${confFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+$`, 'm'));
      const bind = (args: string[]) => spawnSync('mount', args, { encoding: 'utf8' });
      assert.equal(bind(['--bind', confDir, confDir]).status, 0);
      try {
        assert.equal(bind(['-o', 'remount,bind,ro', confDir, confDir]).status, 0);
        const res = await run([...HW, '--yes']);
        assert.equal(res.code, 3, show(res));
        assert.match(res.stderr, /checks failed/);
        assert.match(res.stderr, /read-only filesystem/);
        assert.match(res.stderr, /nothing was changed/);
        unchanged(res);
      } finally {
        spawnSync('umount', [confDir]);
      }
    });
  });

  test('without a cluster: a complete configuration for the hardware given, in each format', async () => {
    const conf = await runCli(['tune', '--pg-version', '17', '--memory', '64GB', '--cpus', '16', '--storage', 'nvme', '--profile', 'oltp']);
    assert.equal(conf.code, 0, show(conf));
    assert.match(conf.stdout, /^# postgresql\.conf for capacity planning/m);
    assert.match(conf.stdout, /^shared_buffers = 16GB {2}# needs restart$/m);
    assert.match(conf.stdout, /^effective_cache_size = 48GB$/m);
    const sql = await runCli(['tune', '--pg-version', '16', '--memory', '8GB', '--cpus', '2', '--storage', 'network-ssd', '--format', 'sql']);
    assert.equal(sql.code, 0, show(sql));
    assert.match(sql.stdout, /^ALTER SYSTEM SET shared_buffers = '2GB';/m);
    const json = await runCli(['tune', '--pg-version', '18', '--memory', '4GB', '--cpus', '2', '--storage', 'hdd', '--format', 'json']);
    assert.equal(json.code, 0, show(json));
    assert.equal((JSON.parse(json.stdout) as { pgMajor: number }).pgMajor, 18);
  });
});
