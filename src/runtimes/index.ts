/**
 * @module
 * The runtimes/ folder's public surface: other folders import from here only.
 */
export {
  type CancelSignal,
  type ChatMessage,
  type ChunkStream,
  ClientSignal,
  type EmbeddingCaller,
  type EmbeddingInput,
  type EmbeddingRequest,
  type EmbeddingResult,
  type GenerationRequest,
  type LlmBackend,
  LlmError,
  RAW_JSON,
  type ResponseFormat,
  type SamplingParams,
  type TokenEstimate,
  type ToolCall,
  type ToolChoice,
  type ToolSpec,
  type Usage,
} from './generation.js';
export { DONE, SseReader } from './remote/sse-reader.js';
export {
  type LoadedModel,
  type ModelInstance,
  type Runtime,
  type Signature,
  signatureJson,
  type SignatureJson,
  type TensorSpec,
  tensorSpecJson,
  type TensorSpecJson,
} from './types.js';
export { onnxRuntime } from './onnx/index.js';
export { LlamaBackend } from './llama/backend.js';
export { UpstreamBackend } from './remote/upstream.js';
