/**
 * @module
 * What a batch worker needs from outside: a {@link LineRunner} that runs one request line the way its online
 * endpoint would (the OpenAI transport provides it: same validation, models, visibility and response bodies),
 * and a sink for each committed line's usage.
 */
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
