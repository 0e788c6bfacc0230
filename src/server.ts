/**
 * @module
 * Builds the Switchyard HTTP server: Fastify with the V2 protocol plugin, /metrics, request ids on every
 * response, the V2 error shape for every error, and graceful shutdown that drains queued work.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { v2Routes } from './api/v2/routes.js';
import { sendError, toWireError } from './api/reply-error.js';
import type { ServerConfig } from './config/server-config.js';
import { createMetrics, type Metrics } from './monitoring/metrics.js';
import { ModelManager } from './serving/index.js';
import { VERSION } from './version.js';

export interface Switchyard {
  readonly app: FastifyInstance;
  readonly manager: ModelManager;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Stop admitting, drain queued requests, release models. Idempotent. */
  close(): Promise<void>;
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;

export function createLogger(level: ServerConfig['logLevel']): Logger {
  return pino({ level, base: { service: 'switchyard' }, redact: ['req.headers.authorization'] });
}

/** Load models from the repository and build (not start) the HTTP server. */
export async function createSwitchyard(config: ServerConfig, logger: Logger = createLogger(config.logLevel)): Promise<Switchyard> {
  const manager = await ModelManager.create({ repository: config.modelRepository, logger, executionProvider: config.executionProvider });
  const metrics = createMetrics(manager);
  const bodyLimit = Math.floor(config.maxBodyMb * 1024 * 1024);
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // No per-request info logging on the hot path; errors are logged by the error handler.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit,
    requestIdHeader: 'x-request-id',
    genReqId: (req) => {
      const h = req.headers['x-request-id'];
      return typeof h === 'string' && REQUEST_ID.test(h) ? h : randomUUID();
    },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });

  app.addHook('onRequest', (req, reply, done) => {
    reply.header('x-request-id', req.id);
    done();
  });
  app.setErrorHandler((e, req, reply) => {
    const w = toWireError(e);
    if (w.status >= 500) req.log.error({ err: e }, 'request failed');
    return sendError(reply, w);
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, { status: 404, message: `no route for ${req.method} ${req.url.split('?')[0]}`, retryAfterS: null, retryable: false }));

  await app.register(v2Routes, { manager, serverName: 'switchyard', serverVersion: VERSION, bodyLimit });
  app.get('/metrics', async (_req, reply) => {
    const text = await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(text);
  });

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await app.close();
      await manager.close(config.shutdownGraceMs);
      metrics.close();
    })();
    return closing;
  };
  return { app, manager, metrics, logger, close };
}
