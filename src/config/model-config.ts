/**
 * @module
 * Per-model configuration (`DIR/<model>/config.json` or `config.yaml`): batching, instances, threads,
 * execution provider and version policy. Every key is optional; unknown keys are rejected with their name.
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { err } from '../errors.js';

/** One warmup input: where its values come from (exactly one source), its datatype and dims (checked against the signature). */
const warmupInput = z
  .strictObject({
    /** Triton's name, e.g. `TYPE_FP32` (or the V2 name `FP32`); checked against the signature when given. */
    data_type: z.string().min(1).optional(),
    /** Dims without the batch dim for batched models (default: the signature's, dynamic dims as 1). */
    dims: z.array(z.number().int().min(0)).optional(),
    zero_data: z.literal(true).optional(),
    random_data: z.literal(true).optional(),
    /** Values of one sample (one row for batched models, repeated `batch_size` times), as in a V2 JSON request's `data`. */
    data: z.array(z.unknown()).optional(),
    /** Raw little-endian elements (BYTES: 4-byte length-prefixed) in base64: what the repository import makes of `input_data_file`. */
    binary_data: z.string().optional(),
    /** Repository import only: a file under the model's `warmup/` directory (`.json`: a JSON array of values; else raw binary). */
    input_data_file: z.string().min(1).optional(),
  })
  .refine((i) => [i.zero_data, i.random_data, i.data, i.binary_data, i.input_data_file].filter((x) => x !== undefined).length === 1, {
    message: 'give exactly one of zero_data, random_data, data, binary_data, input_data_file',
  });

const warmupSample = z.strictObject({
  /** A name for logs and errors. */
  name: z.string().optional(),
  /** Rows per warmup request for batched models. Default 1. */
  batch_size: z.number().int().min(1).optional(),
  /** Every model input by name. */
  inputs: z.record(z.string(), warmupInput),
  /** How many times each instance runs this sample. Default 1. */
  count: z.number().int().min(1).optional(),
});

const versionPolicy = z.union([
  z.strictObject({ latest: z.strictObject({ num_versions: z.number().int().min(1) }) }),
  z.strictObject({ all: z.strictObject({}) }),
  z.strictObject({ specific: z.strictObject({ versions: z.array(z.number().int().min(1)).min(1) }) }),
]);

export const modelConfigSchema = z.strictObject({
  /** Largest batch, in rows (dim 0), the batcher forms. 0 disables batching. Default 64 for batchable models. */
  max_batch_size: z.number().int().min(0).optional(),
  /** Batch sizes (rows) at which a batch is sent at once without waiting for max_queue_delay_us. */
  preferred_batch_sizes: z.array(z.number().int().min(1)).optional(),
  /** Longest a queued request waits for a fuller batch while an instance is free, in microseconds. Default 0. */
  max_queue_delay_us: z.number().int().min(0).optional(),
  /** Most requests waiting in this version's queue; beyond it requests get 503 + Retry-After. Default 1024. */
  max_queue_size: z.number().int().min(1).optional(),
  /** Execution instances (each its own session on its own thread). Default: from the core count. */
  instances: z.number().int().min(1).max(64).optional(),
  /**
   * Where instances run: `worker` (own threads; the event loop never blocks), `inline` (one instance on the
   * main thread: no thread hop, blocks the loop while a batch runs) or `auto` (default: inline when a full batch
   * measured at load runs within 1 ms on CPU, else worker).
   */
  instance_mode: z.enum(['auto', 'worker', 'inline']).optional(),
  /** onnxruntime intra-op threads per instance. Default: cores / instances (at least 1). */
  intra_op_threads: z.number().int().min(1).max(256).optional(),
  /** Let intra-op threads spin between ops: faster batches for heavy models, burns idle CPU. Default true. */
  allow_spinning: z.boolean().optional(),
  /** `cpu` (default) or `cuda` (falls back to CPU with a warning when the CUDA provider is unavailable). */
  execution_provider: z.enum(['cpu', 'cuda']).optional(),
  /** GPU ordinal for `cuda`. Default 0. */
  device_id: z.number().int().min(0).optional(),
  /** Most rows one request may carry (checked on its shapes before decoding: 413); overrides the server's --max-request-rows; 0 = no limit. */
  max_request_rows: z.number().int().min(0).optional(),
  /** Most tensor elements (all inputs) one request may carry (checked before decoding: 413); overrides --max-request-elements; 0 = no limit. */
  max_request_elements: z.number().int().min(0).optional(),
  /** Timeout applied to requests that set none, in microseconds. 0 = none. Default 0. */
  default_timeout_us: z.number().int().min(0).optional(),
  /** Which versions to serve: `{latest:{num_versions:N}}` (default N=1), `{all:{}}`, `{specific:{versions:[..]}}`. */
  version_policy: versionPolicy.optional(),
  /**
   * Triton's `model_warmup`: the samples every instance runs before the version is READY. Absent = one row of
   * zeros (empty strings for BYTES) per input; `[]` = no warmup.
   */
  model_warmup: z.array(warmupSample).optional(),
  /** Class labels for the classification extension (`score:index:label`), by index. */
  labels: z.array(z.string()).optional(),
  /**
   * Repository import only: a file of labels, one per line, in the model's directory (default `labels.txt`
   * when present). The import inlines it as `labels`.
   */
  labels_file: z.string().min(1).optional(),
});

export type ModelConfigFile = z.infer<typeof modelConfigSchema>;
export type VersionPolicy = z.infer<typeof versionPolicy>;
export type WarmupSample = z.infer<typeof warmupSample>;
export type WarmupInput = z.infer<typeof warmupInput>;

/** Configuration after defaults; `maxBatchSize` is settled later against the model's signature. */
export interface ModelConfig {
  readonly maxBatchSize: number | null;
  readonly preferredBatchSizes: readonly number[];
  readonly maxQueueDelayUs: number;
  readonly maxQueueSize: number;
  readonly instances: number;
  readonly instanceMode: 'auto' | 'worker' | 'inline';
  readonly intraOpThreads: number;
  readonly allowSpinning: boolean;
  readonly executionProvider: 'cpu' | 'cuda';
  readonly deviceId: number;
  readonly defaultTimeoutUs: number;
  /** Per-request limits overriding the server's (null = the server's; 0 = no limit). */
  readonly maxRequestRows: number | null;
  readonly maxRequestElements: number | null;
  readonly versionPolicy: VersionPolicy;
  /** Warmup samples; null = the default (one row of zeros per input), [] = none. */
  readonly warmup: readonly WarmupSample[] | null;
  /** Class labels (classification extension), by index; empty = none. */
  readonly labels: readonly string[];
}

export const DEFAULT_MAX_BATCH_SIZE = 64;

/**
 * Instances and threads that do not oversubscribe the machine: on CPU, min(cores, 4) instances sharing the
 * cores as intra-op threads (instances × threads ≤ cores). Independent single-thread instances beat one
 * wide instance on small machines, where any other activity stalls a wide instance's parallel sections.
 * On CUDA, one instance.
 */
export function defaultParallelism(provider: 'cpu' | 'cuda', cores = availableParallelism()): { instances: number; intraOpThreads: number } {
  if (provider === 'cuda') return { instances: 1, intraOpThreads: 1 };
  const instances = Math.max(1, Math.min(4, cores));
  return { instances, intraOpThreads: Math.max(1, Math.floor(cores / instances)) };
}

export function resolveModelConfig(file: ModelConfigFile, defaults: { executionProvider?: 'cpu' | 'cuda' } = {}): ModelConfig {
  const executionProvider = file.execution_provider ?? defaults.executionProvider ?? 'cpu';
  const par = defaultParallelism(executionProvider);
  const instances = file.instances ?? par.instances;
  return Object.freeze({
    maxBatchSize: file.max_batch_size ?? null,
    preferredBatchSizes: Object.freeze([...(file.preferred_batch_sizes ?? [])].sort((a, b) => a - b)),
    maxQueueDelayUs: file.max_queue_delay_us ?? 0,
    maxQueueSize: file.max_queue_size ?? 1024,
    instances,
    instanceMode: file.instance_mode ?? 'auto',
    intraOpThreads: file.intra_op_threads ?? (file.instances === undefined ? par.intraOpThreads : Math.max(1, Math.floor(availableParallelism() / instances))),
    allowSpinning: file.allow_spinning ?? true,
    executionProvider,
    deviceId: file.device_id ?? 0,
    defaultTimeoutUs: file.default_timeout_us ?? 0,
    maxRequestRows: file.max_request_rows ?? null,
    maxRequestElements: file.max_request_elements ?? null,
    versionPolicy: file.version_policy ?? { latest: { num_versions: 1 } },
    warmup: file.model_warmup ?? null,
    labels: Object.freeze([...(file.labels ?? [])]),
  });
}

/** Parse and validate a config file's text; errors name the file and the offending key. */
export function parseModelConfig(text: string, source: string): ModelConfigFile {
  let raw: unknown;
  try {
    raw = source.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw err('SY_ERR_CONFIG_INVALID', `${source}: not valid ${source.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`);
  }
  const r = modelConfigSchema.safeParse(raw ?? {});
  if (!r.success) throw err('SY_ERR_CONFIG_INVALID', `${source}: ${describeConfigIssues(r.error)}`);
  return r.data;
}

/** A config validation error as `key: problem[ unknown keys]; …`, naming each offending key. */
export function describeConfigIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => {
      const at = i.path.length ? i.path.join('.') : '(root)';
      const keys = i.code === 'unrecognized_keys' ? ` ${i.keys.join(', ')}` : '';
      return `${at}: ${i.message}${keys}`;
    })
    .join('; ');
}

export async function readModelConfig(path: string): Promise<ModelConfigFile> {
  return parseModelConfig(await readFile(path, 'utf8'), path);
}
