import * as Flags from '@oclif/core/flags';
import { badInput } from '../src/errors.js';
import { loadCatalog } from '../src/gucCatalog/catalog.js';
import { formatBytes } from '../src/format.js';
import { OperationCommand, type OperationResult, planOutFlag } from '../src/operationCommand.js';
import '../src/operations.js';
import type { ExecuteOptions } from '../src/pipeline/execute.js';
import { askAreas, askRestart } from '../src/tune/ask.js';
import {
  checkTuneFlags,
  decideRestore,
  decideTune,
  pendingOwnRestarts,
  readTuneCluster,
  restartParams,
  systemProfile,
  tuneParams,
  type TuneDecision,
} from '../src/tune/decide.js';
import { allChanges, renderDiff } from '../src/tune/diff.js';
import { describeOrigin } from '../src/tune/effective.js';
import { recommend } from '../src/tune/recommend.js';
import { render, type RenderFormat } from '../src/tune/render.js';
import type { RecommendationSet, SystemProfile, TuneArea } from '../src/tune/types.js';

export interface TuneChange {
  area: TuneArea;
  name: string;
  current: string | null;
  currentOrigin: string | null;
  recommended: string;
  status: 'change' | 'keep' | 'blocked';
  via: 'main' | 'auto';
  restart: boolean;
  reason: string;
}

export interface TuneResult extends Partial<OperationResult> {
  mode: 'cluster' | 'planning' | 'restore';
  profile?: SystemProfile;
  changes?: TuneChange[];
  diff?: string;
  rendered?: string;
  notes: string[];
  warnings: string[];
  /** Settings written that wait for a server restart (none was consented). */
  restartPending?: string[];
  restoredRun?: string;
  /** Planning without a cluster, under --json: the recommendations in full. */
  recommendations?: RecommendationSet;
}

const int = (name: string, text: string | undefined): number | undefined => {
  if (text === undefined) return undefined;
  if (!/^\s*\d+\s*$/.test(text)) throw badInput(`--${name} ${text}: not a whole number`, `pass a positive whole number, e.g. --${name} 8`);
  return Number(text);
};

const profileLine = (p: SystemProfile) =>
  `PostgreSQL ${p.pgMajor} · ${formatBytes(p.memoryBytes)}${p.memoryIsCgroupLimit ? ' (cgroup limit)' : ''} · ${p.vcpus} vCPUs · ${p.storage} storage · ${p.workload} profile`;

export default class Tune extends OperationCommand<typeof Tune> {
  static override summary =
    'A tuned configuration from the detected hardware, shown as a diff against the effective configuration, applied with checks and undone with --restore.';

  static override description = `Detects memory (the cgroup limit in a container), vCPUs and the storage class under the data directory (each can be overridden), reads the cluster's EFFECTIVE configuration — postgresql.conf with its include, include_if_exists and include_dir files, then postgresql.auto.conf, and, when the server runs, pg_settings (values from the server's command line, defaults, pending restarts) — and shows, area by area, a unified diff of what it recommends: every changed line with its reason, marked RESTART or reload. Settings already within 10 % of a recommendation are left alone, so a second run on a tuned cluster proposes nothing.

At a terminal it asks per area (apply / skip / quit) and whether to restart; --yes applies every area and restarts when needed; --apply without a terminal applies every area and leaves a needed restart pending, which the same command run again with --yes completes (restart only, nothing written); --dry-run shows the diff and the plan and changes nothing. Applying is a journaled run: every touched file is backed up into the run's directory under the state directory, the files are written, the real server validates them (postgres -C, as the data directory's owner) BEFORE any reload or restart — a rejection puts the old files back at once — then reload, a restart only with consent (a fast stop, then a start with the options, port, sockets, listen addresses and config file the server ran with), and a check that pg_settings shows the values and nothing is pending a restart unexpectedly. --restore puts back the files of the newest tune run byte for byte (and reloads; restarts with consent); a second --restore goes one run further back.

Where the changes go (--target):
  include (default)  conf.d/pgscale.conf beside postgresql.conf, plus ONE line appended to postgresql.conf:
                     include_if_exists = 'conf.d/pgscale.conf'. Why the default: it is reversible (delete the
                     line and the file), it leaves the DBA's postgresql.conf intact (one line added), and being
                     read last it wins over every earlier setting there. postgresql.auto.conf (ALTER SYSTEM) is
                     read after it and still wins: a setting that is in postgresql.auto.conf is therefore
                     changed there, through ALTER SYSTEM, and the diff says so. Values given on the server's
                     command line win over every file: pgscale leaves those and warns.
  conf               postgresql.conf itself: the winning line is rewritten in place (old value in its comment),
                     or the setting appended at the end.
  sql                ALTER SYSTEM for every setting (postgresql.auto.conf).

Without a cluster, --pg-version plus hardware flags prints a complete configuration for capacity planning, like pgtune (--format conf, include, sql or json).

Exit codes: 2 bad input (unknown profile, --memory 0 or an unknown unit, a configuration file with a syntax error — named with file and line —, an unknown --pg-version), 3 refused by a check (a read-only configuration directory, a file changed since the plan) — nothing is changed in either case.`;

  static override examples = [
    '<%= config.bin %> tune --pgdata /var/lib/postgresql/17/main',
    '<%= config.bin %> tune --pgdata /var/lib/postgresql/17/main --profile oltp --yes',
    '<%= config.bin %> tune --pgdata /var/lib/postgresql/17/main --dry-run --plan-out tune.plan.json',
    '<%= config.bin %> tune --pgdata /var/lib/postgresql/17/main --restore --yes',
    '<%= config.bin %> tune --pg-version 17 --memory 64GB --cpus 16 --storage nvme --profile oltp --format conf',
  ];

  static override flags = {
    profile: Flags.string({ summary: 'Workload: oltp, web, dw, mixed, desktop or read-replica (default mixed).' }),
    memory: Flags.string({ summary: 'Memory PostgreSQL may use, e.g. 64GB (default: detected RAM, or the cgroup limit).' }),
    cpus: Flags.string({ summary: 'vCPUs PostgreSQL may use (default: detected, after a cgroup CPU limit).' }),
    storage: Flags.string({ summary: 'Storage under the data directory: nvme, network-ssd, ssd or hdd (default: detected).' }),
    'max-connections': Flags.string({
      summary: "max_connections to size memory for (default: the cluster's current value; without a cluster, the profile's).",
    }),
    'wal-rate': Flags.string({ summary: 'Peak WAL written per second, e.g. 20MB/s, to size max_wal_size from (default: measured on a running cluster).' }),
    measure: Flags.boolean({
      summary:
        "Measure the WAL rate, WAL flushes (pg_test_fsync) and random reads on the cluster's volumes, some 25 s (--no-measure: decide from the storage class).",
      default: true,
      allowNo: true,
    }),
    'pg-version': Flags.string({ summary: 'Major version (13–18) for a configuration without a cluster; with one, must match it.' }),
    format: Flags.option({
      options: ['conf', 'include', 'sql', 'json'] as const,
      summary:
        'Print the recommendations in this format (a complete postgresql.conf, the pgscale.conf include file, ALTER SYSTEM statements, JSON) instead of the diff.',
    })(),
    target: Flags.option({
      options: ['include', 'conf', 'sql'] as const,
      summary:
        "Where changes are written: include = conf.d/pgscale.conf plus one include line at the end of postgresql.conf (reversible, the DBA's file intact, wins over earlier lines; postgresql.auto.conf still wins over it, so settings found there go through ALTER SYSTEM); conf = postgresql.conf in place; sql = ALTER SYSTEM. See DESCRIPTION.",
      default: 'include',
    })(),
    apply: Flags.boolean({
      summary: 'Apply: at a terminal ask per area; otherwise apply every area and leave a needed restart pending (--yes restarts).',
      default: false,
    }),
    restore: Flags.boolean({
      summary: 'Put back the configuration files of the newest pgscale tune run, byte for byte, and reload (restart with consent).',
      default: false,
    }),
    'plan-out': planOutFlag,
  };

  /** A restart the DBA consented to at the prompt counts as --yes for the restart step. */
  private restartConsented = false;

  protected override executeOptions(signal: AbortSignal): ExecuteOptions {
    const o = super.executeOptions(signal);
    return { ...o, assumeYes: o.assumeYes || this.restartConsented };
  }

  private say(text: string): void {
    if (!this.jsonEnabled()) this.log(text);
  }

  private note(text: string): void {
    if (!this.jsonEnabled()) this.logToStderr(text);
  }

  async run(): Promise<TuneResult> {
    const f = this.flags;
    const inputs = checkTuneFlags({
      profile: f.profile,
      memory: f.memory,
      cpus: int('cpus', f.cpus),
      storage: f.storage,
      maxConnections: int('max-connections', f['max-connections']),
      pgVersion: f['pg-version'],
      walRate: f['wal-rate'],
      measure: f.measure,
    });
    if (f.restore && (f.apply || f.format))
      throw badInput('--restore takes no --apply or --format', 'run `pgscale tune --restore` alone (with --yes to restart if needed)');
    const planning = inputs.pgMajor !== undefined && !f.pgdata && !f.dsn;
    if (planning) {
      if (f.restore || f.apply || f.yes || f['plan-out'])
        throw badInput('without a cluster there is nothing to apply or restore: --pg-version prints a configuration', 'pass --pgdata to tune a cluster');
      return this.planningConfig(inputs);
    }
    if (!f.pgdata && !f.dsn && !process.env.PGDATA && !process.env.PGHOST && !process.env.PGPORT && !process.env.PGSERVICE) {
      throw badInput(
        'which cluster? no --pgdata, --dsn, PGDATA or PGHOST',
        'pass --pgdata (or --dsn) to tune a cluster, or --pg-version with hardware flags for a configuration without one',
      );
    }
    const cluster = await readTuneCluster({ pgdata: f.pgdata, bindir: f.bindir, dsn: f.dsn, runner: this.runner, audit: this.audit, stateDir: this.stateDir });
    if (f.restore) return this.restore(cluster);
    const d = await decideTune(inputs, f.target, cluster, { runner: this.runner, hostRoot: this.hostRoot });
    return this.tune(d);
  }

  /** No cluster: a complete configuration for the given hardware, like pgtune. */
  private async planningConfig(inputs: ReturnType<typeof checkTuneFlags>): Promise<TuneResult> {
    const catalog = loadCatalog(inputs.pgMajor!);
    const { profile, notes } = await systemProfile(inputs, { runner: this.runner, hostRoot: this.hostRoot, catalog });
    const set = recommend(profile, catalog);
    const format: RenderFormat = this.flags.format ?? 'conf';
    const rendered = render(set, format);
    this.note(notes.map((n) => `# ${n}`).join('\n'));
    this.say(rendered.trimEnd());
    return {
      mode: 'planning',
      profile,
      rendered,
      notes,
      warnings: set.warnings,
      ...(this.jsonEnabled() ? { recommendations: JSON.parse(render(set, 'json')) as RecommendationSet } : {}),
    };
  }

  private changesOf(d: TuneDecision): TuneChange[] {
    return d.areas.flatMap((a) =>
      a.settings.map((s) => ({
        area: a.area,
        name: s.name,
        current: s.current?.text ?? null,
        currentOrigin: s.current ? describeOrigin(s.current) : null,
        recommended: s.text,
        status: s.status,
        via: s.via,
        restart: s.recommended.restart,
        reason: s.recommended.reason,
      })),
    );
  }

  private async tune(d: TuneDecision): Promise<TuneResult> {
    const f = this.flags;
    const relativeTo = d.cluster.dataDir ?? undefined;
    const diff = renderDiff(d.areas, relativeTo);
    const base: TuneResult = { mode: 'cluster', profile: d.set.profile, changes: this.changesOf(d), diff, notes: d.notes, warnings: d.warnings };
    if (f.format) {
      base.rendered = render(d.set, f.format);
      this.say(base.rendered.trimEnd());
    } else {
      this.say(`# ${profileLine(d.set.profile)}${d.cluster.dataDir ? ` · ${d.cluster.dataDir}` : ''}`);
      for (const n of d.notes) this.say(`#   ${n}`);
      for (const w of d.warnings) this.say(`# warning: ${w}`);
      this.say('');
      this.say(diff.trimEnd());
    }
    const changes = allChanges(d.areas);
    if (changes.length === 0) return d.cluster.running && pendingOwnRestarts(d.areas).length ? this.completeRestart(d, base) : base;
    const running = d.cluster.running;
    const restartNames = (areas: ReadonlySet<TuneArea>) => changes.filter((c) => areas.has(c.area) && c.recommended.restart).map((c) => c.name);
    const every = new Set(changes.map((c) => c.area));
    if (f['dry-run']) {
      // --plan-out too (a dry run): every area, a restart only with --yes; `pgscale apply FILE` runs it
      const params = tuneParams(d, { areas: every, restart: f.yes });
      return { ...base, ...(await this.runPlan(await this.planOperation('tune', params), f['plan-out'])) };
    }
    if (!(f.apply || f.yes || this.canPrompt)) {
      this.note('\nnothing applied: pass --apply (at a terminal: asked per area) or --yes (apply everything, restart if needed); --dry-run shows the plan');
      return base;
    }
    let accepted = every;
    let restart = f.yes;
    if (this.canPrompt) {
      this.say('');
      const answers = await askAreas(d.areas);
      if (answers.quit || answers.accepted.size === 0) {
        this.note(answers.quit ? 'quit: nothing was changed' : 'every area skipped: nothing was changed');
        return base;
      }
      accepted = answers.accepted;
      const names = restartNames(accepted);
      restart = running && names.length > 0 ? await askRestart(names) : false;
    }
    this.restartConsented = restart;
    const params = tuneParams(d, { areas: accepted, restart });
    const result = await this.runPlan(await this.planOperation('tune', params), f['plan-out']);
    const restartPending = (result.run?.outputs.verify?.restartPending as string[] | undefined) ?? [];
    if (result.run) {
      if (!running) this.note(`written; the server is stopped: the settings take effect when it starts`);
      else if (restartPending.length)
        this.note(
          `applied; waiting for a server restart: ${restartPending.join(', ')} (run the same command again with --yes to restart the server as it runs now)`,
        );
      else this.note(`applied and verified in pg_settings (run ${result.run.runId}; undo with \`pgscale tune --restore\`)`);
    }
    return { ...base, ...result, restartPending };
  }

  /**
   * Nothing left to write, but pgscale's settings wait for a restart an earlier run was not allowed
   * to make: with consent (--yes, or the prompt) this run makes it.
   */
  private async completeRestart(d: TuneDecision, base: TuneResult): Promise<TuneResult> {
    const f = this.flags;
    const names = pendingOwnRestarts(d.areas).map((s) => s.name);
    this.note(`\npgscale's settings wait for a server restart: ${names.join(', ')}`);
    if (f['dry-run']) return { ...base, ...(await this.runPlan(await this.planOperation('tune', restartParams(d)), f['plan-out'])), restartPending: names };
    const consent = f.yes || (this.canPrompt && (await askRestart(names)));
    if (!consent) {
      this.note('not restarted: run again with --yes (or answer yes at a terminal) to restart now');
      return { ...base, restartPending: names };
    }
    this.restartConsented = true;
    const result = await this.runPlan(await this.planOperation('tune', restartParams(d)), f['plan-out']);
    if (result.run) this.note(`restarted; ${names.join(', ')} in effect (run ${result.run.runId})`);
    return { ...base, ...result, restartPending: (result.run?.outputs.verify?.restartPending as string[] | undefined) ?? [] };
  }

  private async restore(cluster: Awaited<ReturnType<typeof readTuneCluster>>): Promise<TuneResult> {
    const f = this.flags;
    let consent = f.yes;
    const first = decideRestore(cluster, this.stateDir, consent);
    for (const w of first.warnings) this.note(`warning: ${w}`);
    let decision = first;
    if (!f['dry-run'] && this.canPrompt && first.restartNeeded.length) {
      consent = await askRestart(first.restartNeeded);
      decision = decideRestore(cluster, this.stateDir, consent);
    }
    this.restartConsented = consent;
    const result = await this.runPlan(await this.planOperation('tune-restore', decision.params), f['plan-out']);
    const restartPending = (result.run?.outputs.verify?.restartPending as string[] | undefined) ?? [];
    if (result.run) {
      this.note(`restored the files of run ${decision.runId}${restartPending.length ? `; waiting for a server restart: ${restartPending.join(', ')}` : ''}`);
    }
    return { mode: 'restore', notes: [], warnings: decision.warnings, restoredRun: decision.runId, restartPending, ...result };
  }
}
