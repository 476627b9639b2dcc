export { prune } from './prune.js';
export type { PruneOptions, PruneReport, PruneRuleReport } from './prune.js';
export { DEFAULT_PRUNE_RULES } from './rules.js';
export type { PruneRule } from './rules.js';
