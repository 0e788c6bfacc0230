/**
 * @module
 * The data plane's transport-neutral shapes: a {@link InferCall} (what a transport decoded from its wire) goes
 * into `InferenceService.infer` and an {@link InferOutcome} (what served, its outputs and the route facts)
 * comes back for the transport to encode. No transport types (Fastify, gRPC) appear here.
 */
import type { Flow, ModelVersion } from '../serving/index.js';
import type { TensorSpec } from '../runtimes/index.js';
import type { Tensor } from '../tensor/index.js';

/** An input tensor as the caller named it (decoded, not yet checked against a version's signature). */
export interface NamedTensor {
  readonly name: string;
  readonly tensor: Tensor;
}

/** Inputs in one version's signature order, with their row count (dim 0, or 1 for unbatched models). */
export interface PreparedInputs {
  readonly inputs: Tensor[];
  readonly rows: number;
}

/**
 * A request body of named tensors (V2 REST JSON or binary, gRPC, batch lines). The core checks it against the
 * signature of each version it tries, joins features for `entities`, and resolves `outputs` by name.
 */
export interface TensorBody {
  readonly kind: 'tensors';
  readonly inputs: readonly NamedTensor[];
  /** Requested outputs by name, in the order the response lists them; null = all, in signature order. */
  readonly outputs: readonly string[] | null;
  /** Request parameters as sent (a routing key may be one of them), or null. */
  readonly parameters: Readonly<Record<string, unknown>> | null;
  /** Queue timeout in microseconds from the body (V2 `parameters.timeout`); 0 = the call's, else the version's default. */
  readonly timeoutUs: number;
  /**
   * Classification extension: requested output name → class count. Each such output comes back as BYTES
   * `value:index[:label]` strings, its top `count` classes per row. Absent or empty = none.
   */
  readonly classification?: ReadonlyMap<string, number>;
}

/**
 * A body built from the signature of the version that serves it (the embeddings path: token ids laid out the
 * way the encoder's inputs ask). `maxRows` splits a large body into several jobs of the same version.
 */
export interface BuiltBody {
  readonly kind: 'built';
  build(mv: ModelVersion): PreparedInputs & { readonly maxRows: number };
  readonly parameters: Readonly<Record<string, unknown>> | null;
}

/**
 * A body decoded on first use, inside the first attempt (a transport's wire decoding): a malformed body then
 * counts as a failed request of the version it was sent to, as a body that does not fit the signature does.
 */
export interface DeferredBody {
  readonly kind: 'deferred';
  decode(): TensorBody;
}

export type InferBody = TensorBody | BuiltBody;

/**
 * Anything with an `aborted` flag (AbortSignal fits): checked when a queued request's batch forms. A signal
 * that also takes listeners cancels the call's queued jobs at once when it aborts.
 */
export interface CancelSignal {
  readonly aborted: boolean;
  addEventListener?(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener?(type: 'abort', listener: () => void): void;
}

/** Who is calling: accounting, fair queueing, cache isolation and routing keys come from here. */
export interface Caller {
  /** Tenant name; '' for the platform / open mode. Cache entries and usage never cross tenants. */
  readonly tenant: string;
  /** The fair-queueing flow; undefined = the default flow. */
  readonly flow: Flow | undefined;
  /** The API key id, or null. */
  readonly keyId: string | null;
  readonly requestId: string;
  /** Request headers by lower-case name (a routing policy may key on one); undefined when absent. */
  header(name: string): string | undefined;
}

/** One inference, as every transport hands it to the core. */
export interface InferCall {
  readonly model: string;
  /** A version or alias the caller named (no routing policy applies), or null: the model's policy routes. */
  readonly version: string | null;
  readonly body: InferBody | DeferredBody;
  readonly caller: Caller;
  /** Queue timeout in microseconds (e.g. `x-request-timeout-ms`); 0 = none beyond the version's default. */
  readonly timeoutUs: number;
  /** Aborted when the caller went away: a queued request is dropped instead of run. Null = never. */
  readonly signal: CancelSignal | null;
}

/** What the routing policy did with a call, for transports to turn into headers / response parameters. */
export interface RouteFacts {
  /** A routing policy was in play (responses describe the route). */
  readonly routed: boolean;
  readonly arm: string | null;
  /** Why a fallback served (a failure reason, `circuit_open`, `unresolved`, `incompatible`), or null. */
  readonly fallbackReason: string | null;
  /** The version the request was routed to first, `model:label`, when a fallback served; else null. */
  readonly fallbackFrom: string | null;
  /** Result cache: hit, miss, or null when the policy has no cache. */
  readonly cache: 'hit' | 'miss' | null;
}

/** The result of one inference. */
export interface InferOutcome {
  /** The model and version that served (a fallback may be another model). */
  readonly model: string;
  readonly version: number;
  readonly label: string;
  /** The serving version's output specs (captured while it was held: safe to read after it unloads). */
  readonly outputSpecs: readonly TensorSpec[];
  /** All outputs, in signature order. */
  readonly outputs: readonly Tensor[];
  /** Indexes into `outputs` of the requested outputs, in request order; null = all. */
  readonly selected: readonly number[] | null;
  readonly rows: number;
  readonly route: RouteFacts;
}

/**
 * The route facts as protocol response parameters (V2 REST `parameters`, gRPC `InferParameters`): which
 * version and arm served, why a fallback served and from what, whether the cache answered; null when no
 * policy, fallback or cache was in play.
 */
export function routeParameters(out: InferOutcome): Record<string, string | boolean> | null {
  const r = out.route;
  if (!r.routed && r.cache === null && r.fallbackReason === null) return null;
  return {
    served_by: `${out.model}:${out.label}`,
    ...(r.arm === null ? {} : { arm: r.arm }),
    ...(r.fallbackReason === null || r.fallbackFrom === null ? {} : { fallback_reason: r.fallbackReason, fallback_from: r.fallbackFrom }),
    ...(r.cache === null ? {} : { cache_hit: r.cache === 'hit' }),
  };
}
