/**
 * @module
 * The data plane every transport calls: {@link InferenceService} (plan → attempts → shadows, events), the
 * transport-neutral call and outcome shapes, and the ONNX embeddings path built on it.
 */
export {
  InferenceService,
  failureReason,
  type FeatureJoin,
  type InferenceServiceOptions,
  type ModelMetadata,
  type ModelReadiness,
  type PredictionSampler,
  type VersionStatistics,
} from './service.js';
export { classCount, classifyTensor, tritonModelConfig, tritonStats, type Duration, type TritonModelConfig, type TritonModelStats } from './extensions.js';
export { routeParameters } from './types.js';
export { checkEntityRows, checkShape, NO_LIMITS, type RequestLimits } from './limits.js';
export type {
  BuiltBody,
  DeferredBody,
  Caller,
  CancelSignal,
  InferBody,
  InferCall,
  InferOutcome,
  NamedTensor,
  PreparedInputs,
  RouteFacts,
  TensorBody,
} from './types.js';
export { OnnxEmbeddingBackend, encoderLayout, tokenize, encodeRows, poolRows, l2Normalize, type EncoderLayout, type Pooling } from './embeddings.js';
