/**
 * @module
 * Maps any thrown error to the wire: status, `{"error": "..."}` body (the V2 error shape), `retry-after` on
 * 503/429, `x-should-retry: false` on 5xx a retry cannot fix. Unknown errors become 500 without internals.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { isSwitchyardError, type SwitchyardError } from '../errors.js';
import type { FailureReason } from '../events.js';

/** Fastify's own error codes that mean bad client input. */
const FASTIFY_CLIENT: Record<string, { status: number; message: (e: Error) => string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, message: () => 'request body is larger than the server limit (see --max-body-mb)' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, message: (e) => e.message },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, message: () => 'request body is empty' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, message: () => 'Content-Length does not match the body' },
  FST_ERR_CTP_EMPTY_TYPE: { status: 400, message: (e) => e.message },
  FST_ERR_CTP_INVALID_TYPE: { status: 400, message: (e) => e.message },
};

export interface WireError { status: number; message: string; retryAfterS: number | null; retryable: boolean }

export function toWireError(e: unknown): WireError {
  if (isSwitchyardError(e)) return { status: e.status, message: e.message, retryAfterS: e.retryAfterS, retryable: e.retryable };
  const fe = e as Error & { code?: string; statusCode?: number };
  const known = fe.code ? FASTIFY_CLIENT[fe.code] : undefined;
  if (known) return { status: known.status, message: known.message(fe), retryAfterS: null, retryable: false };
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode, message: fe.message, retryAfterS: null, retryable: false };
  }
  return { status: 500, message: 'internal server error', retryAfterS: null, retryable: false };
}

export function sendError(reply: FastifyReply, w: WireError): FastifyReply {
  if (w.retryAfterS !== null) reply.header('retry-after', String(w.retryAfterS));
  if (w.status >= 500 && !w.retryable) reply.header('x-should-retry', 'false');
  return reply.code(w.status).type('application/json').send(`{"error":${JSON.stringify(w.message)}}`);
}

/** The `reason` label for a failed inference. */
export function failureReason(e: unknown): FailureReason {
  if (!isSwitchyardError(e)) return 'other';
  const byCode: Partial<Record<SwitchyardError['code'], FailureReason>> = {
    SY_ERR_BAD_REQUEST: 'invalid_input',
    SY_ERR_INPUT_INVALID: 'invalid_input',
    SY_ERR_OUTPUT_UNKNOWN: 'invalid_input',
    SY_ERR_MODEL_NOT_READY: 'not_ready',
    SY_ERR_LOAD_TIMEOUT: 'not_ready',
    SY_ERR_MEMORY_BUDGET: 'not_ready',
    SY_ERR_QUEUE_FULL: 'queue_full',
    SY_ERR_TIMEOUT: 'timeout',
    SY_ERR_SHUTTING_DOWN: 'shutting_down',
    SY_ERR_INFERENCE_FAILED: 'runtime_error',
    SY_ERR_CLIENT_CLOSED: 'cancelled',
  };
  return byCode[e.code] ?? 'other';
}

/** The root error and not-found handlers: every error leaves as `{"error": ...}`; 5xx are logged. */
export function installErrorShape(app: FastifyInstance): void {
  app.setErrorHandler((e, req, reply) => {
    const w = toWireError(e);
    if (w.status >= 500) req.log.error({ err: e }, 'request failed');
    return sendError(reply, w);
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, { status: 404, message: `no route for ${req.method} ${req.url.split('?')[0]}`, retryAfterS: null, retryable: false }));
}
