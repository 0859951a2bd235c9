/** `pgscale tune`'s engine: recommendations from a SystemProfile, checked per version, rendered. */
export type {
  AreaResult,
  DroppedProposal,
  KernelAdvisory,
  MemoryBudget,
  Proposal,
  Recommendation,
  RecommendationSet,
  StorageClass,
  SystemProfile,
  TuneArea,
  WorkloadProfile,
} from './types.js';
export { TUNE_AREAS, WORKLOAD_PROFILES } from './types.js';
export { recommend, changesNeeded, checkProposal, budgetOf, RECOMMENDERS, type AreaRecommender, type CheckedProposal } from './recommend.js';
export { memoryBudget, memoryHeadroom, connectionsThatFit, BACKEND_OVERHEAD_BYTES, type MemoryBudgetInput } from './budget.js';
export { sizeFor, type Sizing } from './sizing.js';
export { render, templatesDir, type RenderFormat } from './render.js';
export { pgtune, timescaledbTune, anchorsFor, type AnchorSettings, type PgtuneInput, type TimescaledbTuneInput } from './anchors.js';
export { storageClassFromFlag, workloadFromFlag, STORAGE_FLAGS } from './flags.js';
export { isCloseEnough } from '../gucCatalog/values.js';
