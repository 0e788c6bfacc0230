/**
 * @module
 * What a batch worker needs from outside: a {@link LineRunner} that runs one request line the way its online
 * endpoint would (the OpenAI transport provides it: same validation, models, visibility and response bodies),
 * and a sink for each committed line's usage.
 */
import type { TensorSpecJson } from '../runtimes/index.js';
import type { Flow } from '../serving/index.js';

/** Who a batch line runs for: the job's tenant, in the batch flow. */
export interface LineContext {
  readonly tenant: string;
  readonly keyId: string | null;
  /** The line's request id (`response.request_id`). */
  readonly requestId: string;
  /** The low-weight fair-queueing flow batch lines take, so online traffic keeps its latency. */
  readonly flow: Flow;
  /** Aborted when the job stops (cancelled, expired) or the worker lost the chunk's lease. */
  readonly signal: AbortSignal;
}

/** Tokens and spend of one line, recorded for the tenant once the line's chunk commits. */
export interface LineUsage {
  readonly model: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cost: number;
}

/** What one line produced: the status and body its online request would have answered. */
export interface LineOutcome {
  readonly status: number;
  readonly body: unknown;
  readonly usage: LineUsage | null;
}

/** Runs a request line (`url` is one of the batch endpoints; `body` as the line carries it). Never throws for a bad line. */
export interface LineRunner {
  run(url: string, body: Record<string, unknown>, ctx: LineContext): Promise<LineOutcome>;
}

/** Where committed lines' usage goes (the LLM usage meter: tokens and spend per tenant and model). */
export interface UsageSink {
  record(r: { tenant: string; model: string; promptTokens: number; completionTokens: number; cost: number; ok: boolean }): void;
}

/** A model's signature as a V2 batch job needs it: inputs and outputs (V2 JSON) and whether dim 0 is the batch. */
export interface RowSignature {
  readonly inputs: readonly TensorSpecJson[];
  readonly outputs: readonly TensorSpecJson[];
  /** Dim 0 of every input and output is the batch (max_batch_size > 0): rows are stacked into one request. */
  readonly batched: boolean;
}

/** Rows for the model: each input's values per row (flat, in row-major order), all rows the same length. */
export interface RowRequest {
  readonly model: string;
  readonly version: string | null;
  readonly inputs: ReadonlyMap<string, readonly (readonly unknown[])[]>;
  readonly rows: number;
  /** Outputs to return, in order (null = all, in signature order). */
  readonly outputs: readonly string[] | null;
}

/**
 * Runs rows of a V2 batch job through the inference core (the admin API provides it over InferenceService: the
 * same routing, fair queueing, monitoring and tenancy usage as online requests). Throws a SwitchyardError when
 * the request fails (bad input 4xx, overload 429/503, 5xx).
 */
export interface RowRunner {
  /** The signature of the version that would serve; throws SY_ERR_MODEL_NOT_FOUND when the tenant cannot use it. */
  signature(tenant: string, model: string, version: string | null): Promise<RowSignature>;
  /** Score the rows; returns each requested output's per-row value as JSON text (a scalar for one-element rows). */
  run(req: RowRequest, ctx: LineContext): Promise<Array<{ readonly name: string; readonly rows: readonly string[] }>>;
}
