/**
 * @module
 * The monitoring/ folder's public surface: other folders import from here only.
 */
export { readDataset } from './dataset.js';
export { type PredictionSink, csvParts, jsonlParts, jsonParts, toCsv, toJsonl } from './prediction-log.js';
export { type AlertEventRecord, type AlertRule, type AlertState, redactRule } from './alerts.js';
export { MonitoringService, type ProfileRecord } from './service.js';
export { type DriftBins, type DriftReport, type FeatureBins, type FeatureDrift } from './drift.js';
export { type PredictionRecord, type TensorJson } from './types.js';
export { filterExposition } from './filter.js';
export { DatabasePredictionSink } from './log-sink-database.js';
export { JsonlPredictionSink } from './log-sink-jsonl.js';
export { createMetrics, type Metrics } from './metrics.js';
export { ServingTimeline, type ModelTimeline, type TimelineOptions } from './timeline.js';
