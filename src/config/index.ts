/**
 * @module
 * The config/ folder's public surface: other folders import from here only.
 */
export {
  authEnabled,
  checkExposure,
  CONFIG_ENV,
  databaseUrl,
  loadServerConfig,
  optionChoices,
  optionEnv,
  optionFlag,
  optionFromText,
  parseBytes,
  SERVER_DEFAULTS,
  SERVER_OPTIONS,
  type OptionSpec,
  type ServerConfig,
  type ServerOptionKey,
} from './server-config.js';
export {
  type LlamaModelConfig,
  type LlmConfig,
  type LlmModelConfig,
  loadLlmConfig,
  type OnnxEmbeddingModelConfig,
  type UpstreamModelConfig,
} from './llm-config.js';
export {
  DEFAULT_MAX_BATCH_SIZE,
  describeConfigIssues,
  type ModelConfig,
  type ModelConfigFile,
  modelConfigSchema,
  readModelConfig,
  resolveModelConfig,
  type VersionPolicy,
  type WarmupInput,
  type WarmupSample,
} from './model-config.js';
