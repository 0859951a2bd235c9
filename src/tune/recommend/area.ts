import type { AreaResult, Proposal } from '../types.js';

/** An area's result when it has settings to propose and nothing else to say. */
export const onlyProposals = (proposals: Proposal[]): AreaResult => ({ proposals, advisories: [], warnings: [] });
