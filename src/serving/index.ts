/**
 * @module
 * Serving: the model manager (registry-driven servable versions, load/warmup, lazy loading, hot swap,
 * memory-budgeted residency), per-version dynamic batchers, and repository import.
 */
export {
  ModelManager,
  ModelVersion,
  ServedModel,
  isBatchable,
  type RepositoryEntry,
  type VersionState,
  type ModelManagerOptions,
  type RegistrySource,
} from './model-manager.js';
export { DEFAULT_FLOW, type Flow } from './batcher.js';
export { Batcher, Job, shapeKey, type BatcherOptions } from './batcher.js';
export { checkDeclared, inputSpec, orderInputs } from './validate.js';
export { importRepository } from './import-repository.js';
export { tritonDataType, warmupInputs } from './warmup.js';
export { signatureJson } from '../runtimes/index.js';
export { type LlmModel, LlmService } from './catalog.js';
