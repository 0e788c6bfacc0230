/**
 * @module
 * Serving: the model manager (load, warmup, readiness, version resolution) and per-version dynamic batchers.
 */
export { ModelManager, ModelVersion, isBatchable, type ServedModel, type VersionState, type ModelManagerOptions } from './model-manager.js';
export { Batcher, Job, shapeKey, type BatcherOptions } from './batcher.js';
export { checkDeclared, inputSpec, orderInputs } from './validate.js';
export { MODEL_NAME } from './repository.js';
