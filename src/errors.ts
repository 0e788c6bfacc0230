/**
 * @module
 * The one catalog of Switchyard's typed errors. Every error has a stable `code` (SY_ERR_<AREA>_<WHAT>),
 * an HTTP status, whether a retry can succeed, and how the OpenAI-compatible API (/v1) names it (OpenAI's
 * `type` and `code`). Callers match on `code`, never on message text. The V2 and admin APIs send
 * `{"error": "<message>", "code": "SY_ERR_..."}`; /v1 sends OpenAI's `{"error": {"message", "type", "param", "code"}}`
 * ({@link LlmError}). docs/errors.md lists every code; a test keeps the two in sync.
 *
 * Longer than our ~500-line guide on purpose: the catalog is one table of codes by design (docs/errors.md mirrors
 * it and a test keeps the two in sync); splitting it would scatter the codes callers match on.
 */

/** OpenAI error `type` values, as OpenAI's API sends them. */
/**
 * OpenAI's `error.type` as its API sends it: `invalid_request_error` for every 4xx but rate limits (401, 403 and
 * 404 included), `requests` / `tokens` for a rate limit by dimension, `insufficient_quota`, `server_error`. The
 * rest are types other OpenAI-compatible servers send, relayed from upstreams as they came.
 */
export type OpenAiErrorType =
  | 'invalid_request_error'
  | 'requests'
  | 'tokens'
  | 'insufficient_quota'
  | 'server_error'
  | 'timeout_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'api_error';

export interface ErrorSpec {
  readonly status: number;
  /** Whether a client retry can succeed (sent as `x-should-retry: false` on 5xx when not). */
  readonly retryable: boolean;
  /** OpenAI's `error.type` on the /v1 API. */
  readonly type: OpenAiErrorType;
  /** OpenAI's `error.code` on the /v1 API (an error may override it); null: none. */
  readonly openaiCode: string | null;
  readonly summary: string;
}

/** Every error code, its HTTP status and what it means. */
export const ERRORS = {
  SY_ERR_BAD_REQUEST: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'bad_request',
    summary: 'The request body or parameters are malformed.',
  },
  SY_ERR_INVALID_JSON: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'invalid_json',
    summary: 'The request body is not valid JSON.',
  },
  SY_ERR_INPUT_INVALID: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'input_invalid',
    summary: 'An input tensor is wrong: missing, unknown, bad dtype, shape or data.',
  },
  SY_ERR_OUTPUT_UNKNOWN: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'output_unknown',
    summary: 'A requested output does not exist on the model.',
  },
  SY_ERR_INPUT_REJECTED: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'input_rejected',
    summary: "The model failed on this request's input values while the requests batched with it ran (e.g. token ids outside the vocabulary).",
  },
  SY_ERR_NOT_REPRESENTABLE: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'not_representable',
    summary:
      "A tensor's value cannot be carried faithfully this way (BYTES that are not UTF-8 in JSON, a NUL or non-UTF-8 element the ONNX runtime cannot take); refused, never altered.",
  },
  SY_ERR_MODEL_NOT_SUPPORTED: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'model_not_supported',
    summary: 'The LLM model does not serve this endpoint (a generation model asked for embeddings, or the reverse).',
  },
  SY_ERR_CONTEXT_LENGTH_EXCEEDED: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'context_length_exceeded',
    summary: "The prompt (or an embedding input) plus max_tokens does not fit the model's context length.",
  },
  SY_ERR_BODY_TOO_LARGE: {
    status: 413,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'request_too_large',
    summary: 'The request body exceeds the configured limit.',
  },
  SY_ERR_TENSOR_TOO_LARGE: {
    status: 413,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'request_too_large',
    summary:
      "The request's tensors have more rows or elements than one request may carry (--max-request-rows / --max-request-elements, or the model's max_request_rows / max_request_elements); refused before decoding.",
  },
  SY_ERR_UNSUPPORTED_MEDIA: {
    status: 415,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'unsupported_media',
    summary: 'The request content type or encoding is not supported.',
  },
  SY_ERR_UNAUTHENTICATED: {
    status: 401,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'invalid_api_key',
    summary: 'No valid API key: missing or malformed Authorization header, or an unknown, revoked or expired key.',
  },
  SY_ERR_FORBIDDEN: {
    status: 403,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'insufficient_permissions',
    summary: "The key lacks the scope this action needs (on something the key's tenant can see).",
  },
  SY_ERR_TENANT_NOT_FOUND: {
    status: 404,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'tenant_not_found',
    summary: 'No tenant or API key with this name or id (or not visible to this key).',
  },
  SY_ERR_TENANT_CONFLICT: {
    status: 409,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'tenant_conflict',
    summary: 'A tenant with this name already exists, or the change conflicts with its state.',
  },
  SY_ERR_RATE_LIMITED: {
    status: 429,
    retryable: true,
    type: 'requests',
    openaiCode: 'rate_limit_exceeded',
    summary: "The tenant's (or key's, or model's) request rate limit is exhausted; retry after Retry-After.",
  },
  SY_ERR_CONCURRENCY_LIMITED: {
    status: 429,
    retryable: true,
    type: 'requests',
    openaiCode: 'rate_limit_exceeded',
    summary: 'The tenant already has its maximum number of requests in flight.',
  },
  SY_ERR_QUOTA_EXCEEDED: {
    status: 429,
    retryable: true,
    type: 'insufficient_quota',
    openaiCode: 'insufficient_quota',
    summary: 'The daily or monthly request quota is used up; Retry-After says when it resets.',
  },
  SY_ERR_REQUEST_TOO_LARGE: {
    status: 429,
    retryable: false,
    type: 'tokens',
    openaiCode: 'request_too_large',
    summary: 'The request alone needs more tokens than the tokens-per-minute limit allows; it can never be admitted.',
  },
  SY_ERR_LIMITER_UNAVAILABLE: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'limiter_unavailable',
    summary: 'The shared rate-limit store (Redis) is unreachable and limits fail closed.',
  },
  SY_ERR_DATABASE_UNAVAILABLE: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'database_unavailable',
    summary:
      'The metadata store (database) is unreachable or did not answer in time: control-plane calls, and API keys this replica has not seen yet, wait for it; retry after Retry-After.',
  },
  SY_ERR_MODEL_NOT_FOUND: {
    status: 404,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'model_not_found',
    summary: 'No model (or version) with this name is served.',
  },
  SY_ERR_ROUTE_NOT_FOUND: {
    status: 404,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'unknown_url',
    summary: 'No endpoint at this path and method.',
  },
  SY_ERR_REGISTRY_NOT_FOUND: {
    status: 404,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'registry_not_found',
    summary: 'No registered model, version, alias or tag with this name.',
  },
  SY_ERR_REGISTRY_CONFLICT: {
    status: 409,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'registry_conflict',
    summary: 'The registry already holds this (model name, version number) or the change conflicts with its state.',
  },
  SY_ERR_EXPERIMENT_NOT_FOUND: {
    status: 404,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'experiment_not_found',
    summary: 'No experiment with this id (or not visible to this key).',
  },
  SY_ERR_FILE_NOT_FOUND: {
    status: 404,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: null,
    summary: "No batch file with this id (or not one of this tenant's files).",
  },
  SY_ERR_BATCH_NOT_FOUND: {
    status: 404,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: null,
    summary: "No batch job with this id (or not one of this tenant's jobs).",
  },
  SY_ERR_BATCH_SPEC: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: null,
    summary:
      'A V2 batch job spec is invalid: the message and `param` name the field (an input the model lacks, an unmapped input, a format the file cannot be read as, a pass-through field clashing with an output).',
  },
  SY_ERR_BATCH_STATE: {
    status: 409,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: null,
    summary: "The batch job's state does not allow this (e.g. cancelling a batch that already ended).",
  },
  SY_ERR_EXPERIMENT_CONFLICT: {
    status: 409,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'experiment_conflict',
    summary: "An experiment with this id exists, the model already runs one, or the change conflicts with the experiment's state.",
  },
  SY_ERR_CIRCUIT_OPEN: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'circuit_open',
    summary: "The routed version's circuit breaker is open (recent error rate too high) and no fallback could serve; retry after Retry-After.",
  },
  SY_ERR_ARTIFACT_INVALID: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'artifact_invalid',
    summary: 'An uploaded model artifact is not a loadable ONNX model; nothing was registered.',
  },
  SY_ERR_ARTIFACT_UNAVAILABLE: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'artifact_unavailable',
    summary:
      "The artifact store (S3 or the artifact directory) could not store or return a model's bytes, or returned bytes whose sha256 differs from the registry's; nothing was registered (push) or the version did not load.",
  },
  SY_ERR_LOAD_TIMEOUT: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'load_timeout',
    summary: 'The model version is loading and did not become ready within the wait bound; retry after Retry-After.',
  },
  SY_ERR_MEMORY_BUDGET: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'memory_budget',
    summary: 'The version cannot be made resident: the memory budget is held by pinned or busy versions.',
  },
  SY_ERR_MODEL_NOT_READY: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'model_not_ready',
    summary: 'The model version exists but is loading or unavailable.',
  },
  SY_ERR_QUEUE_FULL: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'queue_full',
    summary: "The model's queue is full; retry after the Retry-After delay.",
  },
  SY_ERR_MODEL_OVERLOADED: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'model_overloaded',
    summary: "A local LLM's sequences are all busy and its wait queue is full; retry after Retry-After.",
  },
  SY_ERR_TIMEOUT: { status: 504, retryable: true, type: 'timeout_error', openaiCode: 'timeout', summary: 'The request did not complete within its timeout.' },
  SY_ERR_SHUTTING_DOWN: {
    status: 503,
    retryable: true,
    type: 'server_error',
    openaiCode: 'shutting_down',
    summary: 'The server is shutting down and admits no new work.',
  },
  SY_ERR_CLIENT_CLOSED: {
    status: 499,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: 'client_closed',
    summary: 'The client disconnected before the response; the request was dropped (never sent).',
  },
  SY_ERR_INFERENCE_FAILED: {
    status: 500,
    retryable: false,
    type: 'server_error',
    openaiCode: 'inference_failed',
    summary: 'The runtime failed while executing the model.',
  },
  SY_ERR_MODEL_MISCONFIGURED: {
    status: 500,
    retryable: false,
    type: 'server_error',
    openaiCode: 'model_misconfigured',
    summary: "An LLM model's configuration does not fit the model it serves (e.g. an embedding model's inputs).",
  },
  SY_ERR_UPSTREAM_REJECTED: {
    status: 400,
    retryable: false,
    type: 'invalid_request_error',
    openaiCode: null,
    summary: "An upstream provider refused the request (a 4xx other than 401, 403, 429); sent with the upstream's own status, message, type, param and code.",
  },
  SY_ERR_UPSTREAM_RATE_LIMITED: {
    status: 429,
    retryable: true,
    type: 'requests',
    openaiCode: 'rate_limit_exceeded',
    summary: "Every attempt at the model's upstream was rate limited (HTTP 429); retry after Retry-After.",
  },
  SY_ERR_UPSTREAM_FAILED: {
    status: 502,
    retryable: true,
    type: 'server_error',
    openaiCode: 'upstream_error',
    summary: "The model's upstream failed on every attempt (5xx, refused credentials, connection error, bad response) or sent an error in its stream.",
  },
  SY_ERR_UPSTREAM_TIMEOUT: {
    status: 504,
    retryable: true,
    type: 'timeout_error',
    openaiCode: 'upstream_timeout',
    summary: "The model's upstream did not answer within its timeout on the last attempt.",
  },
  SY_ERR_UPSTREAM_STREAM_INCOMPLETE: {
    status: 502,
    retryable: true,
    type: 'server_error',
    openaiCode: 'upstream_stream_incomplete',
    summary: "The upstream's stream ended before [DONE] (sent as an error event once the stream started).",
  },
  SY_ERR_INTERNAL: { status: 500, retryable: false, type: 'server_error', openaiCode: 'internal_error', summary: 'An unexpected internal error.' },
  SY_ERR_CONFIG_INVALID: {
    status: 500,
    retryable: false,
    type: 'server_error',
    openaiCode: 'config_invalid',
    summary: 'Configuration is invalid (raised at start, never per request).',
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export interface SwitchyardErrorOptions {
  /** Seconds a client should wait before retrying (sent as Retry-After). */
  retryAfterS?: number | undefined;
  /**
   * The HTTP status instead of the catalog's. Only for errors relayed from elsewhere with their own status
   * (an upstream provider's 4xx, a Fastify client error): the catalog's status is the rule.
   */
  status?: number | undefined;
  cause?: unknown;
}

/** Base class of all Switchyard errors. */
export class SwitchyardError extends Error {
  override readonly name: string = 'SwitchyardError';
  readonly code: ErrorCode;
  readonly status: number;
  /** Seconds a client should wait before retrying (sent as Retry-After), or null. */
  readonly retryAfterS: number | null;

  constructor(code: ErrorCode, message: string, options: SwitchyardErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status ?? ERRORS[code].status;
    this.retryAfterS = options.retryAfterS ?? null;
  }

  get retryable(): boolean {
    return ERRORS[this.code].retryable;
  }
}

/** Shorthand constructor: `err('SY_ERR_INPUT_INVALID', 'input "x": ...')`. */
export function err(code: ErrorCode, message: string, options?: SwitchyardErrorOptions): SwitchyardError {
  return new SwitchyardError(code, message, options);
}

export function isSwitchyardError(e: unknown): e is SwitchyardError {
  return e instanceof SwitchyardError;
}

/** OpenAI's `type` for an HTTP status, for errors that come with a status only (an upstream's 4xx). */
export function defaultType(status: number): OpenAiErrorType {
  if (status === 429) return 'requests';
  if (status === 504) return 'timeout_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

export interface LlmErrorOptions {
  /** The request field at fault, as OpenAI names it (`messages[0].content`). */
  param?: string | null | undefined;
  /** OpenAI's `code` instead of the catalog's (null: none). */
  openaiCode?: string | null | undefined;
  /** OpenAI's `type` instead of the catalog's: only to relay an upstream's own. */
  type?: OpenAiErrorType | undefined;
  /** For 429/503: when a retry can succeed (sent as retry-after, retry-after-ms). */
  retryAfterMs?: number | null | undefined;
  /** Extra response headers (x-ratelimit-*). */
  headers?: Record<string, string> | undefined;
  /** See {@link SwitchyardErrorOptions.status}. */
  status?: number | undefined;
  cause?: unknown;
}

/**
 * A Switchyard error as the OpenAI-compatible API (/v1) sends it: `{"error": {"message", "type", "param", "code"}}`
 * with `status`. `code` is the catalog code like any SwitchyardError's; OpenAI's `type` and `code` come from the
 * catalog unless the error overrides them (`openaiCode`, or an upstream's relayed `type`).
 *
 * @example
 * throw new LlmError('SY_ERR_CONTEXT_LENGTH_EXCEEDED', "This model's maximum context length is ...", { param: 'messages' });
 */
export class LlmError extends SwitchyardError {
  override readonly name: string = 'LlmError';
  /** OpenAI's `error.type`. */
  readonly type: OpenAiErrorType;
  readonly param: string | null;
  /** OpenAI's `error.code` (not the catalog code: that is `code`). */
  readonly openaiCode: string | null;
  /** For 429/503: when a retry can succeed (sent as retry-after, retry-after-ms). */
  readonly retryAfterMs: number | null;
  /** Extra response headers (x-ratelimit-*). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, message: string, opts: LlmErrorOptions = {}) {
    const ms = opts.retryAfterMs ?? null;
    super(code, message, { status: opts.status, retryAfterS: ms === null ? undefined : Math.max(1, Math.ceil(ms / 1000)), cause: opts.cause });
    const spec: ErrorSpec = ERRORS[code];
    this.type = opts.type ?? spec.type;
    this.param = opts.param ?? null;
    this.openaiCode = opts.openaiCode === undefined ? spec.openaiCode : opts.openaiCode;
    this.retryAfterMs = ms;
    this.headers = opts.headers ?? {};
  }

  /** A Switchyard error (gateway, serving core) for /v1: same code, status, message and retry hint. */
  static from(e: SwitchyardError): LlmError {
    if (e instanceof LlmError) return e;
    return new LlmError(e.code, e.message, { status: e.status, retryAfterMs: e.retryAfterS === null ? null : e.retryAfterS * 1000 });
  }

  /** The wire body. */
  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.openaiCode } };
  }
}

export function isLlmError(e: unknown): e is LlmError {
  return e instanceof LlmError;
}
