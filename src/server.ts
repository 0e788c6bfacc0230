/**
 * @module
 * Builds the Switchyard HTTP server: Fastify with the V2 protocol plugin, /metrics, request ids on every
 * response, the V2 error shape for every error, and graceful shutdown that drains queued work.
 *
 * Longer than our ~500-line guide on purpose: the composition root: it wires every subsystem once, in start-up and
 * shutdown order, and holds no logic of its own.
 */
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { Redis } from 'ioredis';
import { Counter, Gauge } from 'prom-client';
import {
  adminRoutes,
  batchJobRoutes,
  batchRoutes,
  InferenceRowRunner,
  featureDataRoutes,
  featureDefinitionRoutes,
  installAccessLog,
  frameworkErrors,
  GrpcTransport,
  installErrorShape,
  installShutdownGate,
  settlesWithin,
  lazyChildLogger,
  llmAdminRoutes,
  llmRoutes,
  monitoringAdminRoutes,
  OpenAiLineRunner,
  overviewRoutes,
  registerOpenApi,
  requestIdGenerator,
  routingAdminRoutes,
  tenancyRoutes,
  uiRoutes,
  v2ExtensionRoutes,
  v2Routes,
} from './api/index.js';
import { authEnabled, checkExposure, loadLlmConfig, type ServerConfig } from './config/index.js';
import { databaseUrl } from './config/index.js';
import { ExperimentStore, ExperimentTracker } from './experiments/index.js';
import { createMetrics, DatabasePredictionSink, filterExposition, JsonlPredictionSink, type Metrics, MonitoringService } from './monitoring/index.js';
import type { PredictionSink } from './monitoring/index.js';
import { FeatureStore } from './features/index.js';
import { openArtifactStore, Registry } from './registry/index.js';
import { MemoryResultCache, RedisResultCache, type ResultCache, TrafficRouter } from './routing/index.js';
import { onnxRuntime, type Runtime, signatureJson } from './runtimes/index.js';
import { importRepository, LlmService, ModelManager } from './serving/index.js';
import {
  AuditLog,
  Authorizer,
  checkCreatable,
  Gateway,
  installGateway,
  type Limiter,
  tenantOf,
  LlmUsageMeter,
  MemoryLimiter,
  MemoryTokenLimiter,
  meterRequests,
  RedisLimiter,
  RedisTokenLimiter,
  type TenancyChange,
  TenantStore,
  type TokenLimiter,
  UsageMeter,
} from './gateway/index.js';
import { PgChannel } from './storage/index.js';
import type { Principal } from './gateway/index.js';
import { InferenceService, OnnxEmbeddingBackend } from './inference/index.js';
import { BatchService } from './batch/index.js';
import { VERSION } from './version.js';

export interface Switchyard {
  readonly app: FastifyInstance;
  readonly manager: ModelManager;
  readonly registry: Registry;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly gateway: Gateway;
  readonly usage: UsageMeter;
  readonly audit: AuditLog;
  readonly router: TrafficRouter;
  readonly experiments: ExperimentStore;
  readonly tracker: ExperimentTracker;
  readonly cache: ResultCache;
  readonly monitoring: MonitoringService;
  readonly features: FeatureStore;
  readonly llm: LlmService;
  readonly inference: InferenceService;
  /** The Open Inference Protocol over gRPC: built here, listening once `grpc.listen(port, host)` is called (the CLI does, on --grpc-port). */
  readonly grpc: GrpcTransport;
  /** Tokens and spend of the OpenAI-compatible API per tenant and model. */
  readonly llmUsage: LlmUsageMeter;
  /** Batch files and jobs (the OpenAI Batch API) and this replica's batch workers. */
  readonly batch: BatchService;
  /** A platform admin key generated at this start (auth on, none configured, none stored), to print once; else null. */
  readonly bootstrapKey: string | null;
  /** Stop admitting, drain queued requests, release models. Idempotent. */
  close(): Promise<void>;
}

export function createLogger(level: ServerConfig['logLevel']): Logger {
  return pino({ level, base: { service: 'switchyard' }, redact: ['req.headers.authorization'] });
}

/**
 * Open the registry (importing the model repository, if one is configured), load what should be resident and
 * build (not start) the HTTP server.
 */
export async function createSwitchyard(
  config: ServerConfig,
  logger: Logger = createLogger(config.logLevel),
  opts: { runtime?: Runtime } = {},
): Promise<Switchyard> {
  checkExposure(config);
  const runtime = opts.runtime ?? onnxRuntime;
  const dataDir = resolve(config.dataDir);
  const artifactStore = await openArtifactStore({
    url: config.artifacts,
    dataDir,
    cacheDir: config.artifactCacheDir,
    cacheMaxBytes: Math.floor(config.artifactCacheMb * 1024 * 1024),
    logger,
    s3: {
      endpoint: config.s3Endpoint,
      region: config.s3Region,
      pathStyle: config.s3PathStyle,
      checksum: config.s3Checksum,
      partBytes: Math.floor(config.s3PartMb * 1024 * 1024),
      concurrency: config.s3Concurrency,
    },
  });
  const registry = await Registry.open({
    databaseUrl: databaseUrl(config),
    artifactDir: join(dataDir, 'artifacts'),
    artifactStore,
    inspect: async (path) => signatureJson(await runtime.inspect(path)),
    logger,
    databaseTimeoutMs: config.databaseTimeoutMs,
  }).catch(async (e: unknown) => {
    await artifactStore.close();
    throw e;
  });
  let manager: ModelManager;
  try {
    const configErrors = config.modelRepository ? await importRepository(registry, config.modelRepository, logger) : new Map<string, string>();
    manager = await ModelManager.create({
      registry,
      logger,
      runtime,
      executionProvider: config.executionProvider,
      memoryBudgetBytes: config.memoryBudget,
      loadWaitMs: config.loadWaitMs,
      configErrors,
      strictReadiness: config.strictReadiness,
    });
  } catch (e) {
    await registry.close();
    throw e;
  }
  const router = new TrafficRouter({ manager, logger });
  const metrics = createMetrics(manager, { router, version: VERSION });
  const db = registry.database.db;
  new Gauge({
    name: 'switchyard_database_up',
    help: 'Whether the metadata store (database) answers (1) or not (0: control plane unavailable, data plane serving from memory).',
    registers: [metrics.registry],
    collect() {
      this.set(registry.database.health.available ? 1 : 0);
    },
  });
  const store = new TenantStore(db);
  const limiter: Limiter = config.redis
    ? new RedisLimiter({
        url: config.redis,
        failMode: config.rateLimitFail,
        timeoutMs: config.redisTimeoutMs,
        onBackendError: limitStoreErrors(logger, metrics, config.rateLimitFail),
      })
    : new MemoryLimiter();
  // Replicas sharing Postgres tell each other about key, tenant and access changes (revocation applies at once).
  let gatewayRef: Gateway | null = null;
  const database = registry.database;
  const channel =
    database.pgConfig === null
      ? null
      : await PgChannel.start<TenancyChange>(database.pgConfig, TENANCY_CHANNEL, database.schema ?? '', {
          onMessage: (c) => void gatewayRef?.apply(c).catch(() => undefined),
          onReconnect: () => void gatewayRef?.resync().catch(() => undefined),
          logger,
        });
  const gateway = (gatewayRef = await Gateway.create({
    store,
    authRequired: authEnabled(config),
    adminKey: config.adminKey || null,
    limiter,
    cacheMs: config.authCacheMs,
    logger,
    storeAvailable: () => database.health.available,
    ...(channel ? { publish: (c: TenancyChange) => channel.notify(db, c) } : {}),
  }));
  let bootstrapKey: string | null = null;
  if (authEnabled(config) && !config.adminKey && !(await store.hasActivePlatformKey())) {
    bootstrapKey = (await store.createKey(null, { name: 'bootstrap', scopes: ['infer', 'read', 'admin'] }, 'switchyard')).key;
    logger.warn('authentication is on and no platform admin key existed: generated one (printed once on stdout, stored hashed)');
  }
  const usage = new UsageMeter({ db, flushIntervalMs: config.usageFlushMs, logger, metrics: metrics.registry });
  const audit = new AuditLog({ db, logger, metrics: metrics.registry });
  // Result cache: in Redis when replicas share one (a hit on any replica serves all), else in-process.
  const cacheRedis = config.redis ? new Redis(config.redis, { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: false }) : null;
  cacheRedis?.on('error', () => {
    /* counted by the cache as misses + errors */
  });
  // Online features and window state: in Redis when replicas share one, else in-process.
  const featureRedis = config.redis ? new Redis(config.redis, { maxRetriesPerRequest: 2 }) : null;
  featureRedis?.on('error', (e) => logger.warn({ err: e }, 'feature store Redis connection error'));
  const features = await FeatureStore.create({
    database,
    redis: featureRedis,
    redisUrl: config.redis || null,
    natsUrl: config.nats || null,
    logger,
    metrics: metrics.registry,
  });
  const cache: ResultCache = cacheRedis
    ? new RedisResultCache({ redis: cacheRedis, timeoutMs: config.redisTimeoutMs })
    : new MemoryResultCache({ maxBytes: Math.floor(config.cacheMaxMb * 1024 * 1024) });
  metrics.watchCache(cache);
  const experiments = new ExperimentStore(database, { logger });
  const tracker = await ExperimentTracker.create({ store: experiments, registry, logger });
  const sink: PredictionSink =
    config.predictionLog === 'jsonl' ? new JsonlPredictionSink({ dir: join(dataDir, 'predictions') }) : new DatabasePredictionSink(database);
  const monitoring = await MonitoringService.create({
    database,
    registry,
    sink,
    logger,
    metrics: metrics.registry,
    sampleRate: config.predictionLog === 'off' ? 0 : config.monitorSampleRate,
    driftSampleRate: config.driftSampleRate,
    retentionMs: config.predictionRetentionDays * 86_400_000,
    driftWindowMs: config.driftWindowMs,
    driftEvalMs: config.driftEvalMs,
    alertEvalMs: config.alertEvalMs,
  });
  // The data plane every transport calls; usage and experiments follow its events.
  const inference = new InferenceService({
    manager,
    router,
    cache,
    monitor: monitoring,
    limits: { rows: config.maxRequestRows, elements: config.maxRequestElements },
    features: { assemble: (model, version, entities, inputs) => features.assemble(model, version, entities, inputs) },
  });
  const stopMetering = meterRequests(inference, usage);
  tracker.listen(inference);
  // The OpenAI-compatible API: token limits shared through Redis when replicas share one.
  const tokenLimiter: TokenLimiter = config.redis
    ? new RedisTokenLimiter({
        url: config.redis,
        timeoutMs: config.redisTimeoutMs,
        failMode: config.rateLimitFail,
        onBackendError: limitStoreErrors(logger, metrics, config.rateLimitFail, 'switchyard_llm_ratelimit_store_errors_total'),
      })
    : new MemoryTokenLimiter();
  const llmUsage = new LlmUsageMeter({ db, flushIntervalMs: config.usageFlushMs, logger, metrics: metrics.registry });
  const llm = await LlmService.create({
    config: config.llmConfig ? await loadLlmConfig(config.llmConfig) : { models: [] },
    embeddings: (c, log) => new OnnxEmbeddingBackend(c, { inference, logger: log }),
    logger,
  });
  metrics.watchLlm(llm);
  const stall = Number(process.env['SWITCHYARD_TEST_BATCH_STALL_AFTER'] ?? '');
  const batch = await BatchService.create({
    database,
    logger,
    usage: llmUsage,
    workers: config.batchWorkers,
    leaseMs: config.batchLeaseMs,
    chunkLines: config.batchChunkLines,
    runner: new OpenAiLineRunner({ service: llm, canSee: (tenant, model) => gateway.tenantCanSee(tenant, model) }),
    rowRunner: new InferenceRowRunner({ inference, canSee: (tenant, model) => gateway.tenantCanSee(tenant, model) }),
    stallAfterChunks: process.env['SWITCHYARD_TEST_BATCH_STALL_AFTER'] && Number.isInteger(stall) ? stall : null,
  });
  const modelExists = (name: string): Promise<boolean> =>
    registry.getModel(name).then(
      () => true,
      () => false,
    );
  const bodyLimit = Math.floor(config.maxBodyMb * 1024 * 1024);
  const requestId = requestIdGenerator();
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // No per-request info logging on the hot path; errors are logged by the error handler.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit,
    requestIdHeader: false,
    genReqId: (req) => requestId(req.headers['x-request-id']),
    childLoggerFactory: lazyChildLogger,
    frameworkErrors,
    // Late arrivals get the documented 503 from the shutdown gate below, not Fastify's own body.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // Slow clients: headers within headersTimeoutMs, the whole request within requestTimeoutMs, idle keep-alive
    // connections closed after keepAliveTimeoutMs (node:http checks at connectionsCheckingInterval).
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    http: { headersTimeout: config.headersTimeoutMs, connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(config.headersTimeoutMs / 4))) },
  });

  app.addHook('onRequest', (req, reply, done) => {
    reply.header('x-request-id', req.id);
    done();
  });
  const shutdownGate = installShutdownGate(app);
  installErrorShape(app);
  installAccessLog(app, { logger, sampleRate: config.accessLogSampleRate });
  // One Authorizer for every transport: the HTTP hooks and gRPC share its limit counters.
  const authorizer = new Authorizer({ gateway, modelExists, metrics: metrics.registry });
  installGateway(app, { gateway, audit, logger, modelExists, authorizer });
  const grpc = new GrpcTransport({
    inference,
    gateway,
    authorizer,
    audit,
    logger,
    serverName: 'switchyard',
    serverVersion: VERSION,
    maxMessageBytes: Math.floor((config.grpcMaxMessageMb || config.maxBodyMb) * 1024 * 1024),
  });

  await registerOpenApi(app);
  await app.register(v2Routes, {
    inference,
    serverName: 'switchyard',
    serverVersion: VERSION,
    bodyLimit,
    inflateLimit: Math.floor(config.maxInflateMb * 1024 * 1024),
    controlPlane: () => database.health.available,
  });
  await app.register(v2ExtensionRoutes, { inference, visible: (req, model) => !req.principal || gateway.canSee(req.principal, model) });
  await app.register(adminRoutes, {
    registry,
    maxArtifactBytes: Math.floor(config.maxArtifactMb * 1024 * 1024),
    serving: (model) => servingState(manager, model),
    access: {
      visible: (req, model) => !req.principal || gateway.canSee(req.principal, model),
      checkCreate: (req, name) => checkCreatable(gateway, req, name),
    },
  });
  await app.register(tenancyRoutes, { gateway, usage, audit, modelExists });
  await app.register(routingAdminRoutes, {
    registry,
    router,
    experiments,
    tracker,
    access: {
      visible: (req, model) => !req.principal || gateway.canSee(req.principal, model),
      owns: (req, model) => !req.principal || gateway.owns(req.principal, model),
      tenant: (req) => (req.principal?.kind === 'tenant' ? req.principal.tenant.name : null),
    },
  });
  await app.register(monitoringAdminRoutes, {
    registry,
    monitoring,
    access: {
      visible: (req, model) => !req.principal || gateway.canSee(req.principal, model),
      owns: (req, model) => !req.principal || gateway.owns(req.principal, model),
      isTenant: (req) => req.principal?.kind === 'tenant',
      tenant: (req) => (req.principal?.kind === 'tenant' ? req.principal.tenant.name : null),
    },
  });
  await app.register(overviewRoutes, {
    timeline: monitoring.timeline,
    served: () => manager.list().map((m) => m.name),
    memory: () => memoryState(manager),
    access: { visible: (req, model) => !req.principal || gateway.canSee(req.principal, model), isTenant: (req) => req.principal?.kind === 'tenant' },
  });
  if (config.ui) await app.register(uiRoutes, { root: fileURLToPath(new URL('../web', import.meta.url)) });
  const platformKey = (req: { principal: Principal | null }): boolean => req.principal === null || req.principal.kind !== 'tenant';
  await app.register(featureDefinitionRoutes, {
    store: features.defs,
    access: { platform: platformKey, visible: (req, model) => !req.principal || gateway.canSee(req.principal, model) },
  });
  await app.register(featureDataRoutes, { features, access: { platform: platformKey } });
  await app.register(llmRoutes, {
    prefix: '/v1',
    service: llm,
    limiter: tokenLimiter,
    usage: llmUsage,
    tenantOf: (req) => tenantOf(req.principal),
    canSee: (req, model) => !req.principal || gateway.canSee(req.principal, model),
    tokenScopes: (req, model) => (req.principal?.kind === 'tenant' ? gateway.tokenScopes(req.principal, model) : []),
  });
  await app.register(batchRoutes, {
    prefix: '/v1',
    batch,
    tenantOf: (req) => tenantOf(req.principal),
    keyIdOf: (req) => req.principal?.key?.id ?? null,
    maxFileBytes: bodyLimit,
  });
  await app.register(batchJobRoutes, {
    batch,
    tenantOf: (req) => tenantOf(req.principal),
    keyIdOf: (req) => req.principal?.key?.id ?? null,
    maxFileBytes: bodyLimit,
    mayReadPaths: (req) => req.principal === null || req.principal.kind !== 'tenant',
  });
  await app.register(llmAdminRoutes, { usage: llmUsage });
  app.get('/metrics', async (req, reply) => {
    const text = await metrics.registry.metrics();
    const p = req.principal;
    // A tenant's key scrapes only its own tenant's series and its models' series.
    const body =
      p?.kind === 'tenant'
        ? filterExposition(text, (l) => {
            const t = l.get('tenant');
            if (t !== undefined) return t === p.tenant.name;
            const m = l.get('model');
            return m !== undefined && gateway.canSee(p, m);
          })
        : text;
    return reply.type(metrics.registry.contentType).send(body);
  });

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      // The grace period starts now and bounds the drain: HTTP, gRPC, batch jobs and queued requests drain
      // together; past it, queued requests are refused (503) and connections still open are closed, even with
      // a run that never finishes.
      shutdownGate.close();
      const grace = config.shutdownGraceMs;
      const managerClosed = manager.close(grace);
      const drained = Promise.all([app.close(), grpc.close(grace), batch.close(), managerClosed]);
      if (!(await settlesWithin(drained, grace + SHUTDOWN_SLACK_MS))) {
        logger.warn({ graceMs: grace }, 'shutdown grace period over: closing connections whose requests are still running');
        app.server.closeAllConnections();
        await settlesWithin(drained, SHUTDOWN_SLACK_MS);
      }
      await llm.close();
      await llmUsage.close().catch((e: unknown) => logger.error({ err: e }, 'final LLM usage flush failed'));
      await tokenLimiter.close();
      stopMetering();
      await usage.close().catch((e: unknown) => logger.error({ err: e }, 'final usage flush failed'));
      tracker.close();
      await monitoring.close().catch((e: unknown) => logger.error({ err: e }, 'closing monitoring failed'));
      await experiments.close().catch((e: unknown) => logger.error({ err: e }, 'final experiment flush failed'));
      await cache.close();
      cacheRedis?.disconnect();
      await features.close().catch((e: unknown) => logger.error({ err: e }, 'closing the feature store failed'));
      featureRedis?.disconnect();
      await gateway.close();
      await channel?.close();
      metrics.close();
      await registry.close();
    })();
    return closing;
  };
  return {
    app,
    manager,
    registry,
    metrics,
    logger,
    gateway,
    usage,
    audit,
    router,
    experiments,
    tracker,
    cache,
    monitoring,
    features,
    llm,
    inference,
    grpc,
    llmUsage,
    batch,
    bootstrapKey,
    close,
  };
}

/** What closing may take beyond the grace period: refusing what is still queued, closing connections, releasing models. */
const SHUTDOWN_SLACK_MS = 500;

/** Limit-store failures: a counter and at most one log line per 10 s. */
function limitStoreErrors(logger: Logger, metrics: Metrics, mode: 'open' | 'closed', name = 'switchyard_ratelimit_store_errors_total'): (e: Error) => void {
  const errors = new Counter({ name, help: 'Failed or timed-out calls to the shared limit store (Redis).', registers: [metrics.registry] });
  let last = 0;
  let suppressed = 0;
  return (e) => {
    errors.inc();
    const now = Date.now();
    if (now - last < 10_000) {
      suppressed++;
      return;
    }
    logger.error(
      { err: e, suppressed, failMode: mode },
      `rate-limit store (Redis) failed; requests are ${mode === 'open' ? 'admitted unchecked (fail open)' : 'refused with 503 (fail closed)'}`,
    );
    last = now;
    suppressed = 0;
  };
}

/** Postgres channel on which replicas announce tenancy changes (keys, tenants, model access). */
const TENANCY_CHANNEL = 'switchyard_tenancy';

/** Live state of a model's servable versions, for the admin API. */
function servingState(manager: ModelManager, model: string): Record<string, unknown>[] {
  const m = manager.list().find((x) => x.name === model);
  if (!m) return [];
  const aliasesOf = (label: string): string[] => [...m.aliases].filter(([, v]) => v.label === label).map(([a]) => a);
  const dflt = m.defaultVersion();
  return m.versions.map((v) => ({
    version: v.version,
    state: v.state,
    reason: v.reason,
    residentBytes: v.state === 'READY' ? v.residentBytes : 0,
    inflight: v.refs,
    aliases: aliasesOf(v.label),
    default: v === dflt,
  }));
}

/** Memory held by model versions against the residency budget, for the overview. */
function memoryState(manager: ModelManager): {
  budgetBytes: number;
  usedBytes: number;
  resident: { model: string; version: string; state: string; bytes: number }[];
} {
  const resident = manager
    .list()
    .flatMap((m) =>
      m.versions
        .filter((v) => v.state === 'READY' || v.state === 'LOADING')
        .map((v) => ({ model: m.name, version: v.label, state: v.state, bytes: v.state === 'READY' ? v.residentBytes : 0 })),
    );
  return { ...manager.memory(), resident };
}
