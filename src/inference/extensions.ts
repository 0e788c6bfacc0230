/**
 * @module
 * Triton's protocol extensions as transport-neutral shapes (V2 REST writes them as JSON; gRPC's messages
 * have the same fields): model statistics, model configuration and classification. No transport types here.
 */
import type { VersionPolicy, WarmupSample } from '../config/index.js';
import { err } from '../errors.js';
import type { ModelVersion, ServedModel } from '../serving/index.js';
import { tritonDataType } from '../serving/index.js';
import { decodeJsonData, DTYPES, fromHalfBits, type Tensor } from '../tensor/index.js';
import type { InferOutcome } from './types.js';

/** A count and the nanoseconds it took (Triton's StatisticDuration). */
export interface Duration {
  count: number;
  ns: number;
}

/** One version's statistics in Triton's model statistics extension shape (`model_stats[]`). */
export interface TritonModelStats {
  name: string;
  version: string;
  /** Epoch ms of the last successful inference, 0 = none. */
  last_inference: number;
  /** Rows inferred. */
  inference_count: number;
  /** Batches (jobs) executed for this version's requests. */
  execution_count: number;
  inference_stats: {
    success: Duration;
    fail: Duration;
    queue: Duration;
    compute_input: Duration;
    compute_infer: Duration;
    compute_output: Duration;
    cache_hit: Duration;
    cache_miss: Duration;
  };
  /** Per batch size (rows) executed: input copies and output copies are part of compute_infer (not measured apart: zeros). */
  batch_stats: { batch_size: number; compute_input: Duration; compute_infer: Duration; compute_output: Duration }[];
}

const ZERO = (): Duration => ({ count: 0, ns: 0 });

/** Triton's model configuration (the JSON form of model_config.proto), as far as Switchyard has the facts. */
export interface TritonModelConfig {
  name: string;
  platform: string;
  backend: string;
  version_policy: VersionPolicy;
  max_batch_size: number;
  input: { name: string; data_type: string; dims: number[] }[];
  output: { name: string; data_type: string; dims: number[]; label_filename?: string }[];
  dynamic_batching?: {
    preferred_batch_size: number[];
    max_queue_delay_microseconds: number;
    default_queue_policy: { timeout_action: 'REJECT'; default_timeout_microseconds: number; allow_timeout_override: true; max_queue_size: number };
  };
  instance_group: { name: string; kind: 'KIND_CPU' | 'KIND_GPU'; count: number; gpus: number[] }[];
  model_warmup: WarmupSample[];
  /** Switchyard's own settings with no Triton field (instance mode, threads, labels count). */
  parameters: Record<string, { string_value: string }>;
}

/**
 * The Triton model configuration of a loaded version (its signature is needed: call after it loaded once).
 * Dims leave out the batch dimension when the version batches (max_batch_size > 0), as Triton's do.
 */
export function tritonModelConfig(m: ServedModel, mv: ModelVersion): TritonModelConfig {
  const sig = mv.signature;
  if (sig === null)
    throw err('SY_ERR_MODEL_NOT_READY', `model "${mv.model}" version ${mv.label} is not loaded (${mv.state}${mv.reason ? `: ${mv.reason}` : ''})`, {
      retryAfterS: 1,
    });
  const c = mv.config;
  const batched = mv.maxBatchSize > 0;
  const dims = (shape: readonly number[]): number[] => [...(batched ? shape.slice(1) : shape)];
  const gpu = (mv.loaded?.executionProvider ?? c.executionProvider) === 'cuda';
  const out: TritonModelConfig = {
    name: mv.model,
    platform: mv.loaded?.platform ?? 'onnxruntime_onnx',
    backend: 'onnxruntime',
    version_policy: m.policy ?? c.versionPolicy,
    max_batch_size: mv.maxBatchSize,
    input: sig.inputs.map((s) => ({ name: s.name, data_type: tritonDataType(s.dtype), dims: dims(s.shape) })),
    output: sig.outputs.map((s) => ({ name: s.name, data_type: tritonDataType(s.dtype), dims: dims(s.shape) })),
    instance_group: [
      { name: `${mv.model}_0`, kind: gpu ? 'KIND_GPU' : 'KIND_CPU', count: mv.loaded?.instances.length ?? c.instances, gpus: gpu ? [c.deviceId] : [] },
    ],
    model_warmup: c.warmup === null ? [] : c.warmup.map((s) => ({ ...s })),
    parameters: {
      instance_mode: { string_value: mv.loaded ? (mv.loaded.inline ? 'inline' : 'worker') : c.instanceMode },
      intra_op_threads: { string_value: String(c.intraOpThreads) },
      labels: { string_value: String(c.labels.length) },
      default_warmup: { string_value: String(c.warmup === null) },
    },
  };
  if (batched) {
    out.dynamic_batching = {
      preferred_batch_size: c.preferredBatchSizes.filter((p) => p <= mv.maxBatchSize),
      max_queue_delay_microseconds: c.maxQueueDelayUs,
      default_queue_policy: {
        timeout_action: 'REJECT',
        default_timeout_microseconds: c.defaultTimeoutUs,
        allow_timeout_override: true,
        max_queue_size: c.maxQueueSize,
      },
    };
  }
  return out;
}

/** Parse `parameters.classification` of a requested output: a class count ≥ 1 (400 naming the output otherwise). */
export function classCount(output: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw err('SY_ERR_BAD_REQUEST', `output "${output}": "parameters.classification" must be a positive integer (the number of classes to return)`);
  }
  return value;
}

function numberAt(t: Tensor, i: number): number {
  const v = (t.data as ArrayLike<number | bigint>)[i]!;
  if (t.dtype.v2 === 'FP16') return fromHalfBits(v as number);
  return Number(v);
}

/**
 * Top-`count` classes of an output tensor, per row (dim 0 when the version batches; else the whole tensor as
 * one row), as BYTES strings `value:index[:label]` with the highest value first (ties: lower index first).
 * The result has shape [rows, count] (batched) or [count].
 */
export function classifyTensor(name: string, t: Tensor, count: number, batched: boolean, labels: readonly string[]): Tensor {
  if (t.dtype.array === null || t.dtype.v2 === 'BOOL')
    throw err('SY_ERR_BAD_REQUEST', `output "${name}": classification needs a numeric output, not ${t.dtype.v2}`);
  const rows = batched ? (t.shape[0] ?? 1) : 1;
  const per = rows === 0 ? 0 : t.data.length / rows;
  if (count > per) throw err('SY_ERR_BAD_REQUEST', `output "${name}": classification asks for ${count} classes but the output has ${per} per row`);
  const float = t.dtype.v2 === 'FP32' || t.dtype.v2 === 'FP64' || t.dtype.v2 === 'FP16';
  const strings: string[] = [];
  const idx = Array.from({ length: per }, (_, i) => i);
  for (let r = 0; r < rows; r++) {
    const base = r * per;
    const vals = idx.map((i) => numberAt(t, base + i));
    const order = [...idx].sort((a, b) => vals[b]! - vals[a]! || a - b);
    for (let k = 0; k < count; k++) {
      const i = order[k]!;
      const v = vals[i]!;
      const label = labels[i];
      strings.push(`${float ? v.toFixed(6) : String(v)}:${i}${label !== undefined && label !== '' ? `:${label}` : ''}`);
    }
  }
  const shape = batched ? [rows, count] : [count];
  return { dtype: DTYPES.BYTES, shape, data: decodeJsonData(name, DTYPES.BYTES, strings.length, strings) };
}

/** The outcome with each classified output (by name → class count) replaced by its top-k BYTES tensor. */
export function classifyOutcome(out: InferOutcome, classes: ReadonlyMap<string, number>, batched: boolean, labels: readonly string[]): InferOutcome {
  const outputs = [...out.outputs];
  for (const [name, count] of classes) {
    const index = out.outputSpecs.findIndex((s) => s.name === name);
    if (index < 0)
      throw err('SY_ERR_OUTPUT_UNKNOWN', `unknown output "${name}" for model "${out.model}"; outputs are: ${out.outputSpecs.map((s) => s.name).join(', ')}`);
    outputs[index] = classifyTensor(name, outputs[index]!, count, batched, labels);
  }
  return { ...out, outputs };
}

/** Triton-shaped statistics entry from the core's counters and the version's batch statistics. */
export function tritonStats(
  s: {
    name: string;
    version: string;
    lastInference: number;
    inferenceCount: number;
    executionCount: number;
    success: Duration;
    fail: Duration;
    queue: Duration;
    computeInfer: Duration;
    cacheHit: Duration;
    cacheMiss: Duration;
  } | null,
  mv: ModelVersion,
): TritonModelStats {
  const d = (x: Duration | undefined): Duration => (x === undefined ? ZERO() : { count: x.count, ns: Math.round(x.ns) });
  const batches = [...mv.batchStats.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([size, x]) => ({
      batch_size: size,
      compute_input: ZERO(),
      compute_infer: d(x),
      compute_output: ZERO(),
    }));
  return {
    name: mv.model,
    version: mv.label,
    last_inference: s?.lastInference ?? 0,
    inference_count: s?.inferenceCount ?? 0,
    execution_count: s?.executionCount ?? 0,
    inference_stats: {
      success: d(s?.success),
      fail: d(s?.fail),
      queue: d(s?.queue),
      compute_input: ZERO(),
      compute_infer: d(s?.computeInfer),
      compute_output: ZERO(),
      cache_hit: d(s?.cacheHit),
      cache_miss: d(s?.cacheMiss),
    },
    batch_stats: batches,
  };
}
