/**
 * @module
 * Experiments: persistence, exposure and outcome tracking, reports and the statistics behind them.
 */
export { ExperimentStore } from './store.js';
export {
  EXPERIMENT_ID,
  METRIC_NAME,
  MAX_EVENTS_PER_CALL,
  MAX_TIMELINE_POINTS,
  type ExperimentStatus,
  type ExperimentArm,
  type Guardrails,
  type ExperimentRecord,
  type CreateExperimentInput,
  type OutcomeEvent,
  type MetricSummary,
  type ArmReport,
  type Comparison,
  type ExperimentReport,
  type ExperimentStoreOptions,
  type ExperimentPoint,
  type ExperimentTimeline,
} from './types.js';
export { SRM_ALPHA, twoProportionZTest, welchTTest, sampleRatioMismatch, type Moments, type ProportionTest, type MeanTest, type SrmTest } from './stats.js';
export { aggregate, summarize, type ArmOutcomes, type Aggregates } from './report.js';
export { ExperimentTracker, type GuardrailStatus } from './tracker.js';
