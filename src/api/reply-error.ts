/**
 * @module
 * Maps any thrown error to the wire: status, `{"error": "<message>", "code": "SY_ERR_..."}` body (the V2 error
 * shape plus the catalog code, which clients match on), `retry-after` on 503/429, `x-should-retry: false` on 5xx a
 * retry cannot fix. Fastify's own client errors (FST_ERR_*) get catalog codes too; unknown errors become 500
 * SY_ERR_INTERNAL without internals.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { isSwitchyardError, type ErrorCode } from '../errors.js';

/** Fastify's own error codes that mean bad client input. */
const FASTIFY_CLIENT: Record<string, { status: number; code: ErrorCode; message: (e: Error) => string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'SY_ERR_BODY_TOO_LARGE', message: () => 'request body is larger than the server limit (see --max-body-mb)' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'SY_ERR_UNSUPPORTED_MEDIA', message: (e) => e.message },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'SY_ERR_BAD_REQUEST', message: () => 'request body is empty' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'SY_ERR_BAD_REQUEST', message: () => 'Content-Length does not match the body' },
  FST_ERR_CTP_EMPTY_TYPE: { status: 400, code: 'SY_ERR_BAD_REQUEST', message: (e) => e.message },
  FST_ERR_CTP_INVALID_TYPE: { status: 400, code: 'SY_ERR_BAD_REQUEST', message: (e) => e.message },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'SY_ERR_INVALID_JSON', message: (e) => e.message },
};

/** The catalog code of any other 4xx (a plugin's, e.g. multipart limits), by status; the status is kept. */
const BY_STATUS: Readonly<Record<number, ErrorCode>> = {
  401: 'SY_ERR_UNAUTHENTICATED',
  403: 'SY_ERR_FORBIDDEN',
  404: 'SY_ERR_ROUTE_NOT_FOUND',
  406: 'SY_ERR_UNSUPPORTED_MEDIA',
  413: 'SY_ERR_BODY_TOO_LARGE',
  415: 'SY_ERR_UNSUPPORTED_MEDIA',
  429: 'SY_ERR_RATE_LIMITED',
};

export interface WireError {
  status: number;
  code: ErrorCode;
  message: string;
  retryAfterS: number | null;
  retryable: boolean;
}

export function toWireError(e: unknown): WireError {
  if (isSwitchyardError(e)) return { status: e.status, code: e.code, message: e.message, retryAfterS: e.retryAfterS, retryable: e.retryable };
  const fe = e as Error & { code?: string; statusCode?: number };
  const known = fe.code ? FASTIFY_CLIENT[fe.code] : undefined;
  if (known) return { status: known.status, code: known.code, message: known.message(fe), retryAfterS: null, retryable: false };
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const code = fe instanceof SyntaxError && fe.statusCode === 400 ? 'SY_ERR_INVALID_JSON' : (BY_STATUS[fe.statusCode] ?? 'SY_ERR_BAD_REQUEST');
    return { status: fe.statusCode, code, message: fe.message, retryAfterS: null, retryable: false };
  }
  return { status: 500, code: 'SY_ERR_INTERNAL', message: 'internal server error', retryAfterS: null, retryable: false };
}

/** Sends `{"error": "<message>", "code": "SY_ERR_..."}` (in this key order) with the retry headers. */
export function sendError(reply: FastifyReply, w: WireError): FastifyReply {
  if (w.retryAfterS !== null) reply.header('retry-after', String(w.retryAfterS));
  if (w.status >= 500 && !w.retryable) reply.header('x-should-retry', 'false');
  return reply
    .code(w.status)
    .type('application/json')
    .send(`{"error":${JSON.stringify(w.message)},"code":"${w.code}"}`);
}

/**
 * Fastify's `frameworkErrors` option: errors its router meets before any route runs (a malformed URL, a path
 * parameter over the length limit) leave in the same `{"error", "code"}` shape as every other error.
 */
export function frameworkErrors(e: Error, _req: unknown, reply: FastifyReply): void {
  sendError(reply, toWireError(e));
}

/** The root error and not-found handlers: every error leaves as `{"error": ..., "code": ...}`; 5xx are logged. */
export function installErrorShape(app: FastifyInstance): void {
  app.setErrorHandler((e, req, reply) => {
    const w = toWireError(e);
    if (w.status >= 500) req.log.error({ err: e }, 'request failed');
    return sendError(reply, w);
  });
  app.setNotFoundHandler((req, reply) =>
    sendError(reply, {
      status: 404,
      code: 'SY_ERR_ROUTE_NOT_FOUND',
      message: `no route for ${req.method} ${req.url.split('?')[0]}`,
      retryAfterS: null,
      retryable: false,
    }),
  );
}
