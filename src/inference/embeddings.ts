/**
 * @module
 * Local embeddings from an ONNX encoder (`backend: onnx-embeddings`), run through the inference core like any
 * V2 request: the caller's tenant and fair-queueing flow, the encoder's routing policy (canary, shadow,
 * fallback, breaker), the result cache, the prediction log and drift, request metrics and tenancy usage.
 *
 * A request's k inputs (texts, or token-id arrays used as they are) are tokenized (tokenizer.ts: a Hugging Face
 * tokenizer.json, or UTF-8 bytes), padded to the serving version's sequence length and submitted as
 * one call of k rows (split into jobs only where the version's max batch size is smaller), so concurrent
 * embedding requests, and V2 requests to the same model, share batches. The outputs are pooled ([N,T,D]),
 * truncated to `dimensions` and normalized.
 *
 * Inputs longer than the sequence length are refused (400 `context_length_exceeded`), as OpenAI does, unless the
 * model is configured to truncate (`truncate: true`). Serving-core errors (queue full, not ready, timeout, unknown model) become
 * LlmErrors with the same status and retry hint; a client that goes away cancels its queued rows.
 *
 * @example
 * ```ts
 * const backend = new OnnxEmbeddingBackend(OnnxEmbeddingModelSchema.parse({ name: 'text-embed', backend: 'onnx-embeddings', model: 'text-encoder' }), { inference, logger });
 * const { vectors, usage } = await backend.embed({ model: 'text-embed', input: ['hello'], dimensions: null, body: {}, signal, requestId });
 * ```
 */
import type { Logger } from 'pino';
import { err, isSwitchyardError } from '../errors.js';
import type { LoadedModel, TensorSpec } from '../runtimes/index.js';
import type { ModelVersion } from '../serving/index.js';
import { DTYPES, fromHalfBits, zeros, type Tensor } from '../tensor/index.js';
import type { OnnxEmbeddingModelConfig } from '../config/index.js';
import {
  LlmError,
  type ChunkStream,
  type EmbeddingCaller,
  type EmbeddingInput,
  type EmbeddingRequest,
  type EmbeddingResult,
  type GenerationRequest,
  type LlmBackend,
  type TokenEstimate,
} from '../runtimes/index.js';
import type { InferenceService } from './service.js';
import { loadTokenizer, type Encoded, type TextTokenizer } from './tokenizer.js';

export type Pooling = OnnxEmbeddingModelConfig['pooling'];

/** Where each role sits in a loaded version's signature, and the sizes derived from it. */
export interface EncoderLayout {
  /** The version's inputs, in signature order (jobs are submitted in this order). */
  readonly inputs: readonly TensorSpec[];
  /** Index of the token ids input, and of the attention mask input (or null when the model has none). */
  readonly ids: number;
  readonly mask: number | null;
  /** Index of the token type ids input, or null. */
  readonly types: number | null;
  /** Index of the output holding the embeddings. */
  readonly output: number;
  /** Tokens per row: the ids input's fixed dim 1, else the config's maxLength. */
  readonly seqLen: number;
  /** Rows per job: the version's max batch size, unbounded for an unbatched dynamic dim 0, 1 for a fixed one. */
  readonly maxRows: number;
  /** Embedding size when the output's last dim is static, else null. */
  readonly dims: number | null;
}

function misconfigured(c: OnnxEmbeddingModelConfig, what: string): LlmError {
  return new LlmError('SY_ERR_MODEL_MISCONFIGURED', `embedding model "${c.name}" (ONNX model "${c.model}"): ${what}`);
}

function findInput(inputs: readonly TensorSpec[], name: string, c: OnnxEmbeddingModelConfig): number {
  const i = inputs.findIndex((s) => s.name === name);
  if (i < 0) throw misconfigured(c, `no input "${name}" (inputs: ${inputs.map((s) => s.name).join(', ')})`);
  if (inputs[i]!.dtype !== DTYPES.INT64) throw misconfigured(c, `input "${name}" is ${inputs[i]!.dtype.v2}, expected INT64`);
  return i;
}

/**
 * Resolve the roles in a loaded version's signature: ids = `inputIds` or the first INT64 input; mask =
 * `attentionMask` or another INT64 input named like "mask"; output = `output` or the first. Throws a 500
 * LlmError naming what does not fit.
 */
export function encoderLayout(mv: ModelVersion, c: OnnxEmbeddingModelConfig): EncoderLayout {
  const sig = mv.signature;
  if (sig === null) throw misconfigured(c, `version ${mv.label} is not loaded`);
  const inputs = sig.inputs;
  const ids = c.inputIds !== undefined ? findInput(inputs, c.inputIds, c) : inputs.findIndex((s) => s.dtype === DTYPES.INT64);
  if (ids < 0) throw misconfigured(c, 'no INT64 input for the token ids (set inputIds)');
  const mask =
    c.attentionMask !== undefined
      ? findInput(inputs, c.attentionMask, c)
      : inputs.findIndex((s, i) => i !== ids && s.dtype === DTYPES.INT64 && /mask/i.test(s.name));
  const types =
    c.tokenTypeIds !== undefined
      ? findInput(inputs, c.tokenTypeIds, c)
      : inputs.findIndex((s, i) => i !== ids && i !== mask && s.dtype === DTYPES.INT64 && /token_?type/i.test(s.name));
  for (const s of inputs) if (s.shape.length !== 2) throw misconfigured(c, `input "${s.name}" has shape [${s.shape.join(',')}], expected [batch, sequence]`);
  const [batch, seq] = inputs[ids]!.shape as [number, number];
  if (batch !== -1 && batch !== 1) throw misconfigured(c, `the batch dim of "${inputs[ids]!.name}" is fixed at ${batch}; it must be dynamic or 1`);
  const output = c.output === undefined ? 0 : sig.outputs.findIndex((s) => s.name === c.output);
  if (output < 0) throw misconfigured(c, `no output "${c.output}" (outputs: ${sig.outputs.map((s) => s.name).join(', ')})`);
  const last = sig.outputs[output]!.shape.at(-1) ?? -1;
  return {
    inputs,
    ids,
    output,
    mask: mask < 0 ? null : mask,
    types: types < 0 ? null : types,
    seqLen: seq > 0 ? seq : c.maxLength,
    maxRows: batch === 1 ? 1 : mv.maxBatchSize > 0 ? mv.maxBatchSize : Infinity,
    dims: last > 0 ? last : null,
  };
}

/**
 * The tokens of each input: texts through the tokenizer, token-id arrays as they are (each id checked against
 * the vocabulary). 400 naming the input for an empty one, an id outside the vocabulary, or one longer than
 * `seqLen` (unless the model truncates).
 */
export function tokenize(input: readonly EmbeddingInput[], seqLen: number, tokenizer: TextTokenizer, truncate: boolean): Encoded[] {
  if (input.length === 0) throw new LlmError('SY_ERR_BAD_REQUEST', "'$.input' is invalid: it must not be an empty array", { param: 'input', openaiCode: null });
  return input.map((x, i) => {
    if (x.length === 0) throw new LlmError('SY_ERR_BAD_REQUEST', `'$.input' is invalid: input[${i}] is empty`, { param: 'input', openaiCode: null });
    if (typeof x === 'string') return tokenizer.encode(x, seqLen, i);
    for (const id of x) {
      if (!(Number.isInteger(id) && id >= 0 && id < tokenizer.vocabSize)) {
        throw new LlmError(
          'SY_ERR_BAD_REQUEST',
          `'$.input' is invalid: input[${i}] holds the token id ${id}, outside this model's vocabulary (0..${tokenizer.vocabSize - 1})`,
          { param: 'input', openaiCode: null },
        );
      }
    }
    if (x.length > seqLen && !truncate) {
      throw new LlmError(
        'SY_ERR_CONTEXT_LENGTH_EXCEEDED',
        `input[${i}] is ${x.length} tokens; this model's maximum input length is ${seqLen} tokens. Shorten or split the input.`,
        { param: 'input' },
      );
    }
    const ids = x.length > seqLen ? x.slice(0, seqLen) : x;
    return { ids, typeIds: new Array<number>(ids.length).fill(0) };
  });
}

/** Input tensors (signature order) for `rows`: ids padded with padId, mask 1 / 0, token types, other inputs zeros. */
export function encodeRows(rows: readonly Encoded[], layout: EncoderLayout, padId: number): Tensor[] {
  const T = layout.seqLen;
  const shape = [rows.length, T];
  const ids = new BigInt64Array(rows.length * T).fill(BigInt(padId));
  const mask = new BigInt64Array(layout.mask === null ? 0 : rows.length * T);
  const types = new BigInt64Array(layout.types === null ? 0 : rows.length * T);
  for (let r = 0; r < rows.length; r++) {
    const t = rows[r]!;
    const base = r * T;
    for (let j = 0; j < t.ids.length; j++) ids[base + j] = BigInt(t.ids[j]!);
    if (layout.mask !== null) mask.fill(1n, base, base + t.ids.length);
    if (layout.types !== null) for (let j = 0; j < t.typeIds.length; j++) types[base + j] = BigInt(t.typeIds[j]!);
  }
  return layout.inputs.map((s, i) => {
    if (i === layout.ids) return { dtype: DTYPES.INT64, shape, data: ids };
    if (i === layout.mask) return { dtype: DTYPES.INT64, shape, data: mask };
    if (i === layout.types) return { dtype: DTYPES.INT64, shape, data: types };
    return zeros(s.dtype, shape);
  });
}

/** An output's values as numbers (FP32/FP64 as they are, FP16 decoded); other dtypes are not embeddings. */
function floatValues(t: Tensor, c: OnnxEmbeddingModelConfig): ArrayLike<number> {
  if (t.dtype === DTYPES.FP32 || t.dtype === DTYPES.FP64) return t.data as Float32Array | Float64Array;
  if (t.dtype === DTYPES.FP16) return Float32Array.from(t.data as Uint16Array, fromHalfBits);
  throw misconfigured(c, `the embedding output is ${t.dtype.v2}, expected FP32, FP64 or FP16`);
}

/**
 * One vector per row of an embedding output: [N,D] rows as they are; [N,T,D] pooled over each row's first
 * `lengths[i]` tokens (`mean`), its first token (`cls`) or its last real token (`last`). Returns null for any other rank.
 *
 * @example
 * ```ts
 * poolRows([1, 2, 3, 4, 9, 9], [1, 3, 2], [2], 'mean'); // [Float32Array [2, 3]]
 * ```
 */
export function poolRows(values: ArrayLike<number>, shape: readonly number[], lengths: readonly number[], pooling: Pooling): Float32Array[] | null {
  const rows = shape[0]!;
  const D = shape.at(-1)!;
  if (shape.length === 2) return Array.from({ length: rows }, (_, r) => Float32Array.from({ length: D }, (_, d) => values[r * D + d]!));
  if (shape.length !== 3) return null;
  const T = shape[1]!;
  return Array.from({ length: rows }, (_, r) => {
    const len = Math.max(1, Math.min(T, lengths[r]!));
    const from = pooling === 'last' ? len - 1 : 0;
    const n = pooling === 'mean' ? len : 1;
    const sum = new Float64Array(D);
    for (let t = from; t < from + n; t++) {
      const base = (r * T + t) * D;
      for (let d = 0; d < D; d++) sum[d]! += values[base + d]!;
    }
    return Float32Array.from(sum, (x) => x / n);
  });
}

/** Scale `v` to unit L2 norm in place (a zero vector stays zero). */
export function l2Normalize(v: Float32Array): Float32Array {
  let ss = 0;
  for (const x of v) ss += x * x;
  const norm = Math.sqrt(ss);
  if (norm > 0) for (let i = 0; i < v.length; i++) v[i]! /= norm;
  return v;
}

/** 400 when `dimensions` is not between 1 and the model's embedding size `D`. */
function checkDimensions(dimensions: number | null, D: number): void {
  if (dimensions === null || (dimensions >= 1 && dimensions <= D)) return;
  throw new LlmError('SY_ERR_BAD_REQUEST', `dimensions must be between 1 and ${D} (this model's embedding size), got ${dimensions}`, {
    param: 'dimensions',
    openaiCode: null,
  });
}

export class OnnxEmbeddingBackend implements LlmBackend {
  readonly kind = 'onnx-embeddings';
  readonly capabilities = { chat: false, completions: false, embeddings: true } as const;
  readonly #c: OnnxEmbeddingModelConfig;
  readonly #inference: InferenceService;
  readonly #log: Logger;
  readonly #tokenizer: TextTokenizer;
  #inflight = 0;
  /** Resolved once per load of a version (and logged, so the guessed roles can be checked). */
  readonly #layouts = new WeakMap<LoadedModel, EncoderLayout>();

  constructor(config: OnnxEmbeddingModelConfig, opts: { inference: InferenceService; logger: Logger }) {
    this.#c = config;
    this.#inference = opts.inference;
    this.#log = opts.logger.child({ llmModel: config.name, backend: this.kind });
    this.#tokenizer = loadTokenizer(config);
  }

  /** The ONNX model this embedding model serves (the tenant's access to it decides who sees the embedding model). */
  get model(): string {
    return this.#c.model;
  }

  /** The sequence length of the version served now; the config's maxLength until it is first loaded. */
  get contextLength(): number {
    try {
      const mv = this.#inference.manager.resolve(this.#c.model, this.#c.version === undefined ? undefined : String(this.#c.version));
      return mv.loaded ? this.#layout(mv).seqLen : this.#c.maxLength;
    } catch {
      return this.#c.maxLength; // not served (yet) or misconfigured: embed() reports why
    }
  }

  estimate(_req: GenerationRequest): Promise<TokenEstimate> {
    return Promise.reject(this.#notGeneration());
  }

  complete(_req: GenerationRequest): Promise<Record<string, unknown>> {
    return Promise.reject(this.#notGeneration());
  }

  stream(_req: GenerationRequest): Promise<ChunkStream> {
    return Promise.reject(this.#notGeneration());
  }

  async embed(req: EmbeddingRequest): Promise<EmbeddingResult> {
    this.#inflight++;
    try {
      return await this.#embed(req);
    } catch (e) {
      throw isSwitchyardError(e) ? LlmError.from(e) : e; // serving-core errors keep their status and retry hint
    } finally {
      this.#inflight--;
    }
  }

  /** Requests in flight (queued or running in the encoder's batcher: its queue depth is the model's own gauge). */
  load(): { active: number; queued: number; slots: null } {
    return { active: this.#inflight, queued: 0, slots: null };
  }

  /** Nothing to release: the serving core owns the model and drains it on its own close. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  #notGeneration(): LlmError {
    return new LlmError('SY_ERR_MODEL_NOT_SUPPORTED', `model "${this.#c.name}" is an embedding model; use /v1/embeddings`, { param: 'model' });
  }

  #layout(mv: ModelVersion): EncoderLayout {
    const loaded = mv.loaded!;
    let layout = this.#layouts.get(loaded);
    if (layout === undefined) {
      layout = encoderLayout(mv, this.#c);
      this.#layouts.set(loaded, layout);
      const { inputs, ids, mask, output, seqLen, maxRows } = layout;
      this.#log.info(
        {
          version: mv.version,
          ids: inputs[ids]!.name,
          mask: mask === null ? null : inputs[mask]!.name,
          output: mv.signature!.outputs[output]!.name,
          seqLen,
          maxRows,
        },
        'embedding model layout',
      );
    }
    return layout;
  }

  /**
   * One call through the inference core: the version it routes to lays out the token ids (its sequence length,
   * its inputs), and its outputs are pooled with that layout.
   */
  async #embed(req: EmbeddingRequest): Promise<EmbeddingResult> {
    if (req.signal.aborted) throw err('SY_ERR_CLIENT_CLOSED', 'client closed the connection before the embeddings were ready');
    const built = new Map<string, { layout: EncoderLayout; tokens: Encoded[] }>();
    const caller: EmbeddingCaller = req.caller ?? { tenant: '', flow: undefined, keyId: null, requestId: req.requestId, header: () => undefined };
    const out = await this.#inference.infer({
      model: this.#c.model,
      version: this.#c.version === undefined ? null : String(this.#c.version),
      body: {
        kind: 'built',
        parameters: null,
        build: (mv) => {
          const layout = this.#layout(mv);
          const tokens = tokenize(req.input, layout.seqLen, this.#tokenizer, this.#c.truncate);
          if (layout.dims !== null) checkDimensions(req.dimensions, layout.dims);
          built.set(`${mv.model}:${mv.label}`, { layout, tokens });
          return { inputs: encodeRows(tokens, layout, this.#tokenizer.padId), rows: tokens.length, maxRows: layout.maxRows };
        },
      },
      caller,
      timeoutUs: 0,
      signal: req.signal,
    });
    const { layout, tokens } = built.get(`${out.model}:${out.label}`)!;
    const vectors = this.#vectors(out.outputs[layout.output]!, tokens, req.dimensions);
    let promptTokens = 0;
    for (const t of tokens) promptTokens += t.ids.length;
    return { vectors, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } };
  }

  /** Pool the output rows, then truncate to `dimensions` and normalize (as configured). */
  #vectors(out: Tensor, tokens: readonly Encoded[], dimensions: number | null): Float32Array[] {
    const pooled = poolRows(
      floatValues(out, this.#c),
      out.shape,
      tokens.map((t) => t.ids.length),
      this.#c.pooling,
    );
    if (pooled === null) throw misconfigured(this.#c, `the embedding output has shape [${out.shape.join(',')}], expected [N,D] or [N,T,D]`);
    checkDimensions(dimensions, pooled[0]!.length);
    return pooled.map((v) => {
      const cut = dimensions === null || dimensions === v.length ? v : v.slice(0, dimensions);
      return this.#c.normalize ? l2Normalize(cut) : cut;
    });
  }
}
