/**
 * @module
 * The config/ folder's public surface: other folders import from here only.
 */
export { authEnabled, checkExposure, databaseUrl, loadServerConfig, SERVER_DEFAULTS, type ServerConfig } from './server-config.js';
export { type LlamaModelConfig, type LlmConfig, type LlmModelConfig, loadLlmConfig, type OnnxEmbeddingModelConfig, type UpstreamModelConfig } from './llm-config.js';
export { DEFAULT_MAX_BATCH_SIZE, describeConfigIssues, type ModelConfig, type ModelConfigFile, modelConfigSchema, readModelConfig, resolveModelConfig, type VersionPolicy, type WarmupInput, type WarmupSample } from './model-config.js';
