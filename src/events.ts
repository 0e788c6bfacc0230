/**
 * @module
 * Named diagnostics channels (`switchyard:<area>:<event>`) through which the data plane reports what happened.
 * Publishers never import monitoring; monitoring subscribes. Publishing with no subscriber costs a branch.
 */
import diagnostics from 'node:diagnostics_channel';

/** Failure reasons, used as the `reason` label on failure counters. */
export type FailureReason = 'invalid_input' | 'not_found' | 'not_ready' | 'queue_full' | 'timeout' | 'cancelled' | 'runtime_error' | 'shutting_down' | 'other';

/**
 * One inference attempt on a version finished (success or failure), with its timings in milliseconds. Usage
 * accounting (tenant, rows, compute share) and the per-instance statistics read it too.
 */
export interface RequestEvent {
  /** The InferenceService that published it: per-instance subscribers (usage) ignore other instances' events. */
  origin: object;
  model: string;
  version: string;
  versionNumber: number;
  /** Tenant name, '' for none. */
  tenant: string;
  /** The caller's API key id; null for none (open mode, internal callers). */
  keyId: string | null;
  arm: string | null;
  ok: boolean;
  reason: FailureReason | null;
  /** Rows of the request (0 when the body was bad before it was checked). */
  rows: number;
  /** Served from the result cache. */
  cached: boolean;
  totalMs: number;
  queueMs: number;
  computeMs: number;
  /** This request's share of its batches' execution time (by rows), for usage. */
  computeShareMs: number;
}

/** One batch executed on an instance. */
export interface BatchEvent {
  model: string;
  version: string;
  rows: number;
  requests: number;
  computeMs: number;
}

/** Why a version was loaded: at start, on a request (cold start), to swap an alias / default to it. */
export type LoadCause = 'startup' | 'request' | 'swap';

/** A model version finished loading (or failed to). */
export interface LoadEvent {
  model: string;
  version: string;
  ok: boolean;
  durationMs: number;
  cause: LoadCause;
  residentBytes: number;
}

/** Why a version was unloaded: the memory budget, no longer routed to (after a swap), removed from the registry, asked to (repository unload). */
export type UnloadReason = 'evicted' | 'retired' | 'removed' | 'requested';

/** A model version was unloaded. */
export interface UnloadEvent {
  model: string;
  version: string;
  reason: UnloadReason;
}

/** A request waited for its version to load (a cold start), for `waitMs`. */
export interface ColdStartEvent {
  model: string;
  version: string;
  waitMs: number;
  ok: boolean;
}

/** A request that named no version was routed by its model's traffic policy. */
export interface RouteEvent {
  origin: object;
  model: string;
  arm: string;
  unit: string | null;
  assignment: 'hash' | 'random' | 'excluded' | 'fixed';
}

/**
 * A request routed to an arm by its model's policy finished: ok, or failed on the server side (bad input is not counted). For
 * guardrails, a request its arm could not serve counts as that arm's failure even when a fallback rescued it.
 */
export interface ServedEvent {
  origin: object;
  model: string;
  arm: string | null;
  ok: boolean;
  latencyMs: number;
}

/** A request was served by a fallback target after `from` failed (reason: a failure reason or `circuit_open`). */
export interface FallbackEvent {
  model: string;
  from: string;
  to: string;
  reason: string;
}

/** A version's circuit breaker changed state. */
export interface CircuitEvent {
  model: string;
  version: string;
  from: 'closed' | 'open' | 'half_open';
  to: 'closed' | 'open' | 'half_open';
}

/** A shadow copy finished (or was dropped). `target` is the shadow's version or alias as the policy names it. */
export interface ShadowEvent {
  model: string;
  target: string;
  outcome: 'ok' | 'error' | 'timeout' | 'dropped';
  latencyMs: number | null;
  maxAbsDiff: number | null;
  agreement: number | null;
  rows: number;
}

/** A result-cache lookup. */
export interface CacheEvent {
  model: string;
  hit: boolean;
}

/** An OpenAI-API request finished (streams: after the last event). */
export interface LlmRequestEvent {
  model: string;
  endpoint: 'chat.completions' | 'completions' | 'embeddings';
  /** success, client_error, rate_limited, server_error, stream_error, cancelled. */
  outcome: string;
  /** End-to-end duration; null when the request never ran (refused before it started). */
  seconds: number | null;
  /**
   * Time per output token after the first, of a stream that produced two or more: (last text chunk − first text
   * chunk) / (completion tokens − 1), seconds; null otherwise.
   */
  tpot: number | null;
}

/** A streamed response produced text: its first chunk (`first`, seconds since arrival) or a later one (seconds since the previous). */
export interface LlmTokenEvent {
  model: string;
  first: boolean;
  seconds: number;
}

/** A failed upstream attempt (each retry counts). */
export interface LlmUpstreamErrorEvent {
  model: string;
  deployment: string;
  reason: string;
}

/** A batch chunk this replica ran: committed (its lines now count) or discarded (lease lost, job stopped). */
export interface BatchChunkEvent {
  endpoint: string;
  committed: boolean;
  succeeded: number;
  failed: number;
  seconds: number;
}

/** A batch job ended here (completed, failed, expired, cancelled), published by the replica that ended it. */
export interface BatchJobEvent {
  endpoint: string;
  status: string;
}

export const channels = {
  request: diagnostics.channel('switchyard:inference:request'),
  served: diagnostics.channel('switchyard:inference:served'),
  batch: diagnostics.channel('switchyard:serving:batch'),
  load: diagnostics.channel('switchyard:serving:load'),
  unload: diagnostics.channel('switchyard:serving:unload'),
  coldStart: diagnostics.channel('switchyard:serving:cold-start'),
  route: diagnostics.channel('switchyard:routing:route'),
  fallback: diagnostics.channel('switchyard:routing:fallback'),
  circuit: diagnostics.channel('switchyard:routing:circuit'),
  shadow: diagnostics.channel('switchyard:routing:shadow'),
  cache: diagnostics.channel('switchyard:routing:cache'),
  llmRequest: diagnostics.channel('switchyard:llm:request'),
  llmToken: diagnostics.channel('switchyard:llm:token'),
  llmUpstreamError: diagnostics.channel('switchyard:llm:upstream-error'),
  batchChunk: diagnostics.channel('switchyard:batch:chunk'),
  batchJob: diagnostics.channel('switchyard:batch:job'),
} as const;
