/**
 * @module
 * The one catalog of Switchyard's typed errors. Every error has a stable `code` (SY_ERR_<AREA>_<WHAT>),
 * an HTTP status and a message. Callers match on `code`, never on message text.
 * docs/errors.md lists every code; a test keeps the two in sync.
 */

export interface ErrorSpec {
  readonly status: number;
  /** Whether a client retry can succeed (sent as `x-should-retry` on 5xx). */
  readonly retryable: boolean;
  readonly summary: string;
}

/** Every error code, its HTTP status and what it means. */
export const ERRORS = {
  SY_ERR_BAD_REQUEST: { status: 400, retryable: false, summary: 'The request body or parameters are malformed.' },
  SY_ERR_INPUT_INVALID: { status: 400, retryable: false, summary: 'An input tensor is wrong: missing, unknown, bad dtype, shape or data.' },
  SY_ERR_OUTPUT_UNKNOWN: { status: 400, retryable: false, summary: 'A requested output does not exist on the model.' },
  SY_ERR_BODY_TOO_LARGE: { status: 413, retryable: false, summary: 'The request body exceeds the configured limit.' },
  SY_ERR_UNSUPPORTED_MEDIA: { status: 415, retryable: false, summary: 'The request content type or encoding is not supported.' },
  SY_ERR_UNAUTHENTICATED: { status: 401, retryable: false, summary: 'No valid API key: missing or malformed Authorization header, or an unknown, revoked or expired key.' },
  SY_ERR_FORBIDDEN: { status: 403, retryable: false, summary: "The key lacks the scope this action needs (on something the key's tenant can see)." },
  SY_ERR_TENANT_NOT_FOUND: { status: 404, retryable: false, summary: 'No tenant or API key with this name or id (or not visible to this key).' },
  SY_ERR_TENANT_CONFLICT: { status: 409, retryable: false, summary: 'A tenant with this name already exists, or the change conflicts with its state.' },
  SY_ERR_RATE_LIMITED: { status: 429, retryable: true, summary: "The tenant's (or key's, or model's) request rate limit is exhausted; retry after Retry-After." },
  SY_ERR_CONCURRENCY_LIMITED: { status: 429, retryable: true, summary: 'The tenant already has its maximum number of requests in flight.' },
  SY_ERR_QUOTA_EXCEEDED: { status: 429, retryable: true, summary: 'The daily or monthly request quota is used up; Retry-After says when it resets.' },
  SY_ERR_LIMITER_UNAVAILABLE: { status: 503, retryable: true, summary: 'The shared rate-limit store (Redis) is unreachable and limits fail closed.' },
  SY_ERR_MODEL_NOT_FOUND: { status: 404, retryable: false, summary: 'No model (or version) with this name is served.' },
  SY_ERR_ROUTE_NOT_FOUND: { status: 404, retryable: false, summary: 'No endpoint at this path and method.' },
  SY_ERR_REGISTRY_NOT_FOUND: { status: 404, retryable: false, summary: 'No registered model, version, alias or tag with this name.' },
  SY_ERR_REGISTRY_CONFLICT: { status: 409, retryable: false, summary: 'The registry already holds this (model name, version number) or the change conflicts with its state.' },
  SY_ERR_EXPERIMENT_NOT_FOUND: { status: 404, retryable: false, summary: 'No experiment with this id (or not visible to this key).' },
  SY_ERR_EXPERIMENT_CONFLICT: { status: 409, retryable: false, summary: "An experiment with this id exists, the model already runs one, or the change conflicts with the experiment's state." },
  SY_ERR_CIRCUIT_OPEN: { status: 503, retryable: true, summary: "The routed version's circuit breaker is open (recent error rate too high) and no fallback could serve; retry after Retry-After." },
  SY_ERR_ARTIFACT_INVALID: { status: 400, retryable: false, summary: 'An uploaded model artifact is not a loadable ONNX model; nothing was registered.' },
  SY_ERR_LOAD_TIMEOUT: { status: 503, retryable: true, summary: 'The model version is loading and did not become ready within the wait bound; retry after Retry-After.' },
  SY_ERR_MEMORY_BUDGET: { status: 503, retryable: true, summary: 'The version cannot be made resident: the memory budget is held by pinned or busy versions.' },
  SY_ERR_MODEL_NOT_READY: { status: 503, retryable: true, summary: 'The model version exists but is loading or unavailable.' },
  SY_ERR_QUEUE_FULL: { status: 503, retryable: true, summary: "The model's queue is full; retry after the Retry-After delay." },
  SY_ERR_TIMEOUT: { status: 504, retryable: true, summary: 'The request did not complete within its timeout.' },
  SY_ERR_SHUTTING_DOWN: { status: 503, retryable: true, summary: 'The server is shutting down and admits no new work.' },
  SY_ERR_CLIENT_CLOSED: { status: 499, retryable: false, summary: 'The client disconnected before the response; the request was dropped (never sent).' },
  SY_ERR_INFERENCE_FAILED: { status: 500, retryable: false, summary: 'The runtime failed while executing the model.' },
  SY_ERR_INTERNAL: { status: 500, retryable: false, summary: 'An unexpected internal error.' },
  SY_ERR_CONFIG_INVALID: { status: 500, retryable: false, summary: 'Configuration is invalid (raised at start, never per request).' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** Base class of all Switchyard errors. */
export class SwitchyardError extends Error {
  override readonly name = 'SwitchyardError';
  readonly code: ErrorCode;
  readonly status: number;
  /** Seconds a client should wait before retrying (sent as Retry-After), or null. */
  readonly retryAfterS: number | null;

  constructor(code: ErrorCode, message: string, options: { retryAfterS?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = ERRORS[code].status;
    this.retryAfterS = options.retryAfterS ?? null;
  }

  get retryable(): boolean {
    return ERRORS[this.code].retryable;
  }
}

/** Shorthand constructor: `err('SY_ERR_INPUT_INVALID', 'input "x": ...')`. */
export function err(code: ErrorCode, message: string, options?: { retryAfterS?: number; cause?: unknown }): SwitchyardError {
  return new SwitchyardError(code, message, options);
}

export function isSwitchyardError(e: unknown): e is SwitchyardError {
  return e instanceof SwitchyardError;
}
