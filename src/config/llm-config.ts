/**
 * @module
 * The LLM model catalog (`--llm-config FILE`, YAML or JSON): one entry per model name the OpenAI-compatible
 * API serves, saying which backend runs it.
 *
 * ```yaml
 * models:
 *   - name: tiny-chat            # what clients put in "model"
 *     backend: llama             # local generation (node-llama-cpp, GGUF)
 *     path: models/tiny.gguf     # relative to the config file
 *     contextSize: 512
 *     sequences: 4               # concurrent sequences on the one loaded model (continuous batching)
 *   - name: gpt-4o-mini
 *     backend: upstream          # OpenAI-compatible providers
 *     deployments:
 *       - { url: https://api.openai.com/v1, apiKeyEnv: OPENAI_API_KEY }
 *       - { url: http://10.0.0.7:8000/v1, model: llama-3-8b, weight: 2 }
 *   - name: text-embed
 *     backend: onnx-embeddings   # an ONNX encoder the serving core serves
 *     model: text-encoder
 * ```
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { err } from '../errors.js';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;

/** Price per 1000 tokens (any currency; spend is recorded in it). */
const Pricing = z.strictObject({
  promptPer1k: z.number().nonnegative().default(0),
  completionPer1k: z.number().nonnegative().default(0),
});

const Common = {
  name: z.string().regex(NAME, 'a model name: letters, digits and ._:/- (up to 128)'),
  /** Shown in GET /v1/models. */
  ownedBy: z.string().default('switchyard'),
  /** max_tokens when a request gives none (also what the token limit reserves for it). */
  defaultMaxTokens: z.int().positive().default(256),
  pricing: Pricing.optional(),
  /** Tenants that may see and call the model (platform keys always can); absent: every tenant. */
  tenants: z.array(z.string().min(1)).optional(),
};

export const LlamaModelSchema = z.strictObject({
  ...Common,
  backend: z.literal('llama'),
  /** The GGUF file; relative paths are resolved against the config file's directory. */
  path: z.string().min(1),
  /** Context window per sequence, tokens; default: the model's trained context, at most 4096. */
  contextSize: z.int().positive().optional(),
  /** Sequences generating at once on the one loaded model; more requests wait in a queue. */
  sequences: z.int().min(1).max(64).default(4),
  /** Requests waiting for a free sequence before new ones get 503. */
  maxQueue: z.int().nonnegative().default(64),
  /** CPU threads; default: llama.cpp's choice for the machine. */
  threads: z.int().positive().optional(),
  /** 'auto' uses a GPU when node-llama-cpp finds one; false forces CPU. */
  gpu: z.union([z.literal('auto'), z.literal(false), z.literal('cuda'), z.literal('vulkan'), z.literal('metal')]).default(false),
});

export const DeploymentSchema = z.strictObject({
  /** Base URL up to and including /v1 (e.g. http://127.0.0.1:8000/v1). */
  url: z.url(),
  /** Model name at this deployment; default: the entry's name. */
  model: z.string().min(1).optional(),
  /** Bearer key, literally (prefer apiKeyEnv). */
  apiKey: z.string().min(1).optional(),
  /** Environment variable holding the bearer key. */
  apiKeyEnv: z.string().min(1).optional(),
  /** Share of traffic with balance 'weighted'. */
  weight: z.number().positive().default(1),
  /** Pooled keep-alive connections to this deployment. */
  connections: z.int().positive().default(64),
});

export const UpstreamModelSchema = z.strictObject({
  ...Common,
  backend: z.literal('upstream'),
  deployments: z.array(DeploymentSchema).min(1),
  /** How a request picks a deployment: fewest requests in flight, or by weight. */
  balance: z.enum(['least-inflight', 'weighted']).default('least-inflight'),
  /** Until the response headers (and, streaming, the first chunk) arrive. */
  timeoutMs: z.int().positive().default(60_000),
  /** Retries of a failed attempt (429, 5xx, connection errors) before giving up, across deployments. */
  retries: z.int().nonnegative().default(2),
  /** First backoff; doubles per retry (with jitter), unless the upstream's retry-after says longer. */
  backoffMs: z.int().nonnegative().default(200),
  /** Longest retry-after honoured; a longer one fails over (or fails) at once. */
  maxRetryAfterMs: z.int().nonnegative().default(10_000),
  /** A deployment that failed this many times in a row is skipped for cooldownMs. */
  failuresToCooldown: z.int().positive().default(3),
  cooldownMs: z.int().nonnegative().default(30_000),
  /** Context window, when known (requests that cannot fit are refused with 400 before any upstream call). */
  contextLength: z.int().positive().optional(),
  /** Embeddings: this upstream serves /embeddings too. */
  embeddings: z.boolean().default(false),
});

export const OnnxEmbeddingModelSchema = z.strictObject({
  ...Common,
  backend: z.literal('onnx-embeddings'),
  /** The served ONNX model (its registry name) and optionally a version; default: the model's default version. */
  model: z.string().min(1),
  version: z.int().positive().optional(),
  /**
   * How text becomes input ids: a Hugging Face tokenizer (`path` to its tokenizer.json, optionally `config` to
   * its tokenizer_config.json; relative to the config file), or 'bytes' = UTF-8 bytes, id = byte + tokenOffset
   * (byte-level models). Rows are padded (with padId) to the model's fixed sequence length, or to maxLength.
   */
  tokenizer: z.union([z.literal('bytes'), z.strictObject({ path: z.string().min(1), config: z.string().min(1).optional() })]).default('bytes'),
  tokenOffset: z.int().nonnegative().default(3),
  /** Padding id; default: the tokenizer's pad token ([PAD], <pad>), else 0. */
  padId: z.int().nonnegative().optional(),
  /** A longer input: cut to the sequence length (special tokens kept), or (false) refused with 400, as OpenAI does. */
  truncate: z.boolean().default(false),
  /** Sequence length when the model's is dynamic. */
  maxLength: z.int().positive().default(128),
  /** Input names; default: the first int64 input is the ids, an input named like "mask" the attention mask. */
  inputIds: z.string().optional(),
  attentionMask: z.string().optional(),
  /** The output holding the embeddings; default: the first output. */
  output: z.string().optional(),
  /** Input for token type (segment) ids, filled from the tokenizer; default: an INT64 input named like "token_type". */
  tokenTypeIds: z.string().optional(),
  /** [N,T,D] outputs are pooled over the unpadded tokens (mean), or take the first (cls) or last real token (last). */
  pooling: z.enum(['mean', 'cls', 'last']).default('mean'),
  normalize: z.boolean().default(true),
});

export const LlmModelSchema = z.discriminatedUnion('backend', [LlamaModelSchema, UpstreamModelSchema, OnnxEmbeddingModelSchema]);
export const LlmConfigSchema = z.strictObject({ models: z.array(LlmModelSchema) });

export type LlamaModelConfig = z.infer<typeof LlamaModelSchema>;
export type DeploymentConfig = z.infer<typeof DeploymentSchema>;
export type UpstreamModelConfig = z.infer<typeof UpstreamModelSchema>;
export type OnnxEmbeddingModelConfig = z.infer<typeof OnnxEmbeddingModelSchema>;
export type LlmModelConfig = z.infer<typeof LlmModelSchema>;
export type LlmConfig = z.infer<typeof LlmConfigSchema>;

/** Validate a catalog (parsed YAML/JSON); `baseDir` resolves relative GGUF paths. Throws SY_ERR_CONFIG_INVALID naming the field. */
export function parseLlmConfig(raw: unknown, baseDir: string, source = 'LLM config'): LlmConfig {
  const r = LlmConfigSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw err('SY_ERR_CONFIG_INVALID', `${source}: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  const seen = new Set<string>();
  for (const m of r.data.models) {
    if (seen.has(m.name)) throw err('SY_ERR_CONFIG_INVALID', `${source}: model "${m.name}" is listed twice`);
    seen.add(m.name);
    if (m.backend === 'llama') m.path = resolve(baseDir, m.path);
    if (m.backend === 'onnx-embeddings' && m.tokenizer !== 'bytes') {
      m.tokenizer = { path: resolve(baseDir, m.tokenizer.path), ...(m.tokenizer.config !== undefined ? { config: resolve(baseDir, m.tokenizer.config) } : {}) };
    }
  }
  return r.data;
}

export async function loadLlmConfig(file: string): Promise<LlmConfig> {
  const text = await readFile(file, 'utf8');
  let raw: unknown;
  try {
    raw = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw err('SY_ERR_CONFIG_INVALID', `${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`);
  }
  return parseLlmConfig(raw, dirname(resolve(file)), file);
}
