/**
 * @module
 * Batch jobs: files in the metadata store, inputs split into chunks that every replica's workers lease, each
 * chunk's output committed with its completion, jobs finalized into output and error files. The OpenAI Batch
 * API (/v1/files, /v1/batches) is its first transport; the lines run through a {@link LineRunner} the transport
 * provides, in a low-weight fair-queueing flow.
 */
export { BatchService, COMPLETION_WINDOWS, type BatchServiceOptions, type NewOpenAiBatch } from './service.js';
export { FileStore, newFileId, PART_BYTES, type FileRecord } from './files.js';
export {
  JobStore,
  TERMINAL,
  type JobKindName,
  type JobRecord,
  type JobStatus,
  type JobTimes,
  type JobUsage,
  type OpenAiJob,
  type OpenAiSpec,
  type V2Job,
} from './jobs.js';
export {
  DEFAULT_CHUNK_ROWS,
  INPUT_FORMATS,
  MAX_JOB_ROWS,
  OUTPUT_FORMATS,
  formatOf,
  type InputFormat,
  type OutputFormat,
  type V2Spec,
  type V2SpecRequest,
} from './v2-spec.js';
export type { JobKind } from './kinds.js';
export { BATCH_ENDPOINTS, MAX_BATCH_TASKS, checkInput, type BatchEndpoint, type LineError } from './openai-format.js';
export { BATCH_FLOW_WEIGHT, BatchWorkers } from './worker.js';
export type { LineContext, LineOutcome, LineRunner, LineUsage, RowRequest, RowRunner, RowSignature, UsageSink } from './types.js';
export { v2JobView, type V2JobView } from './v2-view.js';
