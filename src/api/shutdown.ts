/**
 * @module
 * Shutdown on the HTTP side: once closing begins, every request that still arrives (on a kept-alive
 * connection, or racing the listener's close) is answered at once with the documented error shape — 503
 * SY_ERR_SHUTTING_DOWN, Retry-After, `connection: close` — instead of Fastify's own 503 body; and a bound for
 * the drain, so that the grace period is an upper bound, not a wait that starts after in-flight work ends.
 */
import type { FastifyInstance } from 'fastify';
import { sendError } from './reply-error.js';

/** Seconds a client is told to wait before retrying elsewhere (another replica takes it meanwhile). */
const RETRY_AFTER_S = 1;

export interface ShutdownGate {
  /** Refuse every request from now on. */
  close(): void;
  readonly closing: boolean;
}

/** The first onRequest hook: while closing, answer 503 SY_ERR_SHUTTING_DOWN (with Retry-After) and close the connection. */
export function installShutdownGate(app: FastifyInstance): ShutdownGate {
  let closing = false;
  app.addHook('onRequest', (_req, reply, done) => {
    if (!closing) return done();
    reply.header('connection', 'close');
    sendError(reply, {
      status: 503,
      code: 'SY_ERR_SHUTTING_DOWN',
      message: 'the server is shutting down; retry on another replica',
      retryAfterS: RETRY_AFTER_S,
      retryable: true,
    });
  });
  return {
    close() {
      closing = true;
    },
    get closing() {
      return closing;
    },
  };
}

/** Whether `p` settles within `ms` (it keeps running either way; a rejection counts as settled). */
export function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
