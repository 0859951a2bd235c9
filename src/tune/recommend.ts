/**
 * Runs every area's recommender and checks each proposal against the version's catalog: settings
 * the version lacks are dropped (with why), out-of-range values are clamped (the reason says so),
 * and each kept recommendation learns whether it needs a restart.
 */
import { findSetting, isReadOnly, needsRestart } from '../gucCatalog/catalog.js';
import type { GucCatalog } from '../gucCatalog/types.js';
import { clampValue, formatValue, isCloseEnough, validateValue, type GucValue } from '../gucCatalog/values.js';
import { formatBytes } from '../format.js';
import { badInput } from '../errors.js';
import { connectionsThatFit, memoryBudget, type MemoryBudgetInput } from './budget.js';
import { recommendAutovacuum } from './recommend/autovacuum.js';
import { recommendConnections } from './recommend/connections.js';
import { recommendIo } from './recommend/io.js';
import { recommendMemory } from './recommend/memory.js';
import { recommendParallelism } from './recommend/parallelism.js';
import { recommendProfile } from './recommend/profile.js';
import { recommendWal } from './recommend/wal.js';
import { NODES_PER_QUERY, hashMemMultiplierOf } from './sizing.js';
import type { AreaResult, DroppedProposal, MemoryBudget, Proposal, Recommendation, RecommendationSet, SystemProfile, TuneArea } from './types.js';
import { TUNE_AREAS } from './types.js';

export type AreaRecommender = (profile: SystemProfile, catalog: GucCatalog) => AreaResult;

export const RECOMMENDERS: Record<TuneArea, AreaRecommender> = {
  memory: recommendMemory,
  connections: recommendConnections,
  parallelism: recommendParallelism,
  wal: recommendWal,
  io: recommendIo,
  autovacuum: recommendAutovacuum,
  profile: recommendProfile,
};

export type CheckedProposal = { kept: Recommendation } | { dropped: string };

/** A proposal as the version's server would take it, or why it cannot. */
export function checkProposal(proposal: Proposal, catalog: GucCatalog, profile: SystemProfile): CheckedProposal {
  const def = findSetting(catalog, proposal.name);
  if (!def) return { dropped: `not a setting of PostgreSQL ${catalog.major}` };
  if (isReadOnly(def)) return { dropped: `read-only in PostgreSQL ${catalog.major}` };
  const { value } = proposal;
  if (value.kind === 'enum') {
    const validity = validateValue(def, value);
    if (!validity.valid) return { dropped: validity.reason };
    const feature = def.buildOptionalValues?.[value.value];
    if (feature && !profile.buildFeatures.includes(feature)) return { dropped: `"${value.value}" needs a build with ${feature}` };
  }
  const { value: clampedValue, clamped } = clampValue(def, value);
  const validity = validateValue(def, clampedValue);
  // a kind mismatch is a recommender bug, not something to hide in the dropped list
  if (!validity.valid) throw new Error(`recommendation for ${proposal.name}: ${validity.reason}`);
  const reason = clamped
    ? `${proposal.reason} (${formatValue(value)} clamped to PostgreSQL ${catalog.major}'s ${clamped.bound}imum ${clamped.limit})`
    : proposal.reason;
  return { kept: { name: def.name, value: clampedValue, reason, restart: needsRestart(def), ...(proposal.held ? { held: true } : {}) } };
}

/** Bytes of a memory setting, or the count of a numeric one. */
function amountOf(recs: readonly Recommendation[], name: string): number {
  const v = recs.find((r) => r.name === name)?.value;
  if (v?.kind === 'memory') return v.bytes;
  if (v?.kind === 'number') return v.value;
  throw new Error(`the recommendations lack ${name}, which the memory budget needs`);
}

function budgetInput(set: Pick<RecommendationSet, 'areas'>, profile: SystemProfile, catalog: GucCatalog): MemoryBudgetInput {
  const all = Object.values(set.areas).flat();
  return {
    effectiveMemoryBytes: profile.memoryBytes,
    sharedBuffersBytes: amountOf(all, 'shared_buffers'),
    walBuffersBytes: amountOf(all, 'wal_buffers'),
    maxConnections: amountOf(all, 'max_connections'),
    maxParallelWorkers: amountOf(all, 'max_parallel_workers'),
    workMemBytes: amountOf(all, 'work_mem'),
    hashMemMultiplier: hashMemMultiplierOf(catalog),
    nodesPerQuery: NODES_PER_QUERY[profile.workload],
    maintenanceWorkMemBytes: amountOf(all, 'maintenance_work_mem'),
    autovacuumMaxWorkers: amountOf(all, 'autovacuum_max_workers'),
    autovacuumWorkMemBytes: amountOf(all, 'autovacuum_work_mem'),
  };
}

/** The worst-case memory of the recommendations as they will be applied (after clamping). */
export function budgetOf(set: Pick<RecommendationSet, 'areas'>, profile: SystemProfile, catalog: GucCatalog): MemoryBudget {
  return memoryBudget(budgetInput(set, profile, catalog));
}

/** What to do when the worst case does not fit: how many connections do, and a pooler for the rest. */
export function budgetWarning(input: MemoryBudgetInput, budget: MemoryBudget): string {
  const fit = connectionsThatFit(input);
  const over = `in the worst case ${formatBytes(budget.totalBytes)} over ${formatBytes(budget.limitBytes)}`;
  const perConnection = `work_mem ${formatBytes(input.workMemBytes)} × ${input.nodesPerQuery} sort/hash nodes × hash_mem_multiplier ${input.hashMemMultiplier}`;
  if (fit === 0) {
    return `the memory budget does not fit (${over}): shared_buffers, maintenance and autovacuum memory leave no room for a single connection with ${perConnection}; give PostgreSQL more memory`;
  }
  return (
    `the memory budget does not fit (${over}): with ${perConnection} per connection it holds ${fit} of the ${input.maxConnections} connections; ` +
    `lower max_connections to ${fit} and put a connection pooler (e.g. PgBouncer, pool size at most ${fit}) in front of the clients, rather than starving every query with a smaller work_mem`
  );
}

function checkProfile(p: SystemProfile, catalog: GucCatalog): void {
  if (p.pgMajor !== catalog.major) throw new Error(`profile is for PostgreSQL ${p.pgMajor} but the catalog is ${catalog.major}'s`);
  if (!(p.memoryBytes > 0)) throw badInput(`memory must be a positive size, not ${p.memoryBytes} bytes`);
  if (!(Number.isInteger(p.vcpus) && p.vcpus >= 1)) throw badInput(`vCPUs must be a whole number of at least 1, not ${p.vcpus}`);
  if (p.maxConnections !== undefined && !(Number.isInteger(p.maxConnections) && p.maxConnections >= 1)) {
    throw badInput(`max_connections must be a whole number of at least 1, not ${p.maxConnections}`);
  }
}

/** Every area's recommendations for the profile, checked against the catalog of profile.pgMajor. */
export function recommend(profile: SystemProfile, catalog: GucCatalog): RecommendationSet {
  checkProfile(profile, catalog);
  const areas = {} as Record<TuneArea, Recommendation[]>;
  const dropped: DroppedProposal[] = [];
  const advisories: RecommendationSet['advisories'] = [];
  const warnings: string[] = [];
  for (const area of TUNE_AREAS) {
    const result = RECOMMENDERS[area](profile, catalog);
    areas[area] = [];
    for (const proposal of result.proposals) {
      const checked = checkProposal(proposal, catalog, profile);
      if ('kept' in checked) areas[area].push(checked.kept);
      else dropped.push({ area, name: proposal.name, reason: checked.dropped });
    }
    advisories.push(...result.advisories);
    warnings.push(...result.warnings);
  }
  const input = budgetInput({ areas }, profile, catalog);
  const budget = memoryBudget(input);
  if (!budget.fits) warnings.push(budgetWarning(input, budget));
  return {
    pgMajor: catalog.major,
    catalogVersion: catalog.serverVersion,
    profile,
    areas,
    advisories,
    dropped,
    warnings,
    memoryBudget: budget,
  };
}

/** The recommendations a cluster with `current` settings still lacks: missing, or not close enough. */
export function changesNeeded(set: RecommendationSet, current: ReadonlyMap<string, GucValue>): Recommendation[] {
  return Object.values(set.areas)
    .flat()
    .filter((r) => {
      const now = current.get(r.name);
      return now === undefined || !isCloseEnough(now, r.value);
    });
}
