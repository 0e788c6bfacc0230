/**
 * @module
 * Builds the Switchyard HTTP server: Fastify with the V2 protocol plugin, /metrics, request ids on every
 * response, the V2 error shape for every error, and graceful shutdown that drains queued work.
 */
import { randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { adminRoutes, registerOpenApi } from './api/admin/routes.js';
import { v2Routes } from './api/v2/routes.js';
import { installErrorShape } from './api/reply-error.js';
import type { ServerConfig } from './config/server-config.js';
import { createMetrics, type Metrics } from './monitoring/metrics.js';
import { Registry } from './registry/index.js';
import { onnxRuntime } from './runtimes/onnx/index.js';
import { signatureJson } from './runtimes/types.js';
import { importRepository, ModelManager } from './serving/index.js';
import { VERSION } from './version.js';

export interface Switchyard {
  readonly app: FastifyInstance;
  readonly manager: ModelManager;
  readonly registry: Registry;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Stop admitting, drain queued requests, release models. Idempotent. */
  close(): Promise<void>;
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;

export function createLogger(level: ServerConfig['logLevel']): Logger {
  return pino({ level, base: { service: 'switchyard' }, redact: ['req.headers.authorization'] });
}

/**
 * Open the registry (importing the model repository, if one is configured), load what should be resident and
 * build (not start) the HTTP server.
 */
export async function createSwitchyard(config: ServerConfig, logger: Logger = createLogger(config.logLevel)): Promise<Switchyard> {
  const dataDir = resolve(config.dataDir);
  const registry = await Registry.open({
    databaseUrl: config.database || `sqlite:${join(dataDir, 'switchyard.db')}`,
    artifactDir: join(dataDir, 'artifacts'),
    inspect: async (path) => signatureJson(await onnxRuntime.inspect(path)),
    logger,
  });
  let manager: ModelManager;
  try {
    const configErrors = config.modelRepository ? await importRepository(registry, config.modelRepository, logger) : new Map<string, string>();
    manager = await ModelManager.create({
      registry, logger, executionProvider: config.executionProvider, memoryBudgetBytes: config.memoryBudget,
      loadWaitMs: config.loadWaitMs, configErrors,
    });
  } catch (e) {
    await registry.close();
    throw e;
  }
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
  installErrorShape(app);

  await registerOpenApi(app);
  await app.register(v2Routes, { manager, serverName: 'switchyard', serverVersion: VERSION, bodyLimit });
  await app.register(adminRoutes, {
    registry,
    maxArtifactBytes: Math.floor(config.maxArtifactMb * 1024 * 1024),
    serving: (model) => servingState(manager, model),
  });
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
      await registry.close();
    })();
    return closing;
  };
  return { app, manager, registry, metrics, logger, close };
}

/** Live state of a model's servable versions, for the admin API. */
function servingState(manager: ModelManager, model: string): Record<string, unknown>[] {
  const m = manager.list().find((x) => x.name === model);
  if (!m) return [];
  const aliasesOf = (label: string): string[] => [...m.aliases].filter(([, v]) => v.label === label).map(([a]) => a);
  const dflt = m.defaultVersion();
  return m.versions.map((v) => ({
    version: v.version, state: v.state, reason: v.reason, residentBytes: v.state === 'READY' ? v.residentBytes : 0,
    inflight: v.refs, aliases: aliasesOf(v.label), default: v === dflt,
  }));
}
