/**
 * @module
 * The server's typed configuration: defaults < environment (SWITCHYARD_*) < command-line flags, validated once
 * at start with errors that name the setting, then frozen.
 */
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { err } from '../errors.js';

export const serverConfigSchema = z.strictObject({
  /** Directory of models (DIR/<model>/<version>/model.onnx) imported into the registry at start; '' = none. Env SWITCHYARD_MODEL_REPOSITORY. */
  modelRepository: z.string(),
  /** Directory for the embedded database and the local artifact store. Default ./data. Env SWITCHYARD_DATA_DIR. */
  dataDir: z.string().min(1),
  /** Metadata store URL: sqlite:FILE or postgres://…; '' = sqlite:<dataDir>/switchyard.db. Env SWITCHYARD_DATABASE. */
  database: z.string().refine((u) => u === '' || /^(sqlite:|postgres(ql)?:\/\/)/.test(u), 'must start with sqlite: or postgres://'),
  /** Postgres: longest a connection attempt or one statement may take, in ms; then the call answers 503 SY_ERR_DATABASE_UNAVAILABLE. Default 5000. Env SWITCHYARD_DATABASE_TIMEOUT_MS. */
  databaseTimeoutMs: z.number().int().min(100),
  /** Bytes all resident model versions may hold together; 0 = unlimited. Env SWITCHYARD_MEMORY_BUDGET. */
  memoryBudget: z.number().int().min(0),
  /** Longest a request waits for its model version to load, in ms (then 503 + Retry-After). Default 30000. Env SWITCHYARD_LOAD_WAIT_MS. */
  loadWaitMs: z.number().int().min(0),
  /**
   * Server readiness (`/v2/health/ready`): false = ready once start-up loading finished and the versions loaded
   * at start are servable (a version registered later that fails is unready on its own); true = every servable
   * version must be ready. Default false. Env SWITCHYARD_STRICT_READINESS.
   */
  strictReadiness: z.boolean(),
  /** Largest model artifact accepted by the admin upload, in MiB. Default 2048. Env SWITCHYARD_MAX_ARTIFACT_MB. */
  maxArtifactMb: z.number().positive(),
  /** TCP port; 0 picks a free one. Default 8000. Env SWITCHYARD_PORT. */
  port: z.number().int().min(0).max(65535),
  /** gRPC port (Open Inference Protocol over gRPC, same --host); 0 = no gRPC listener. Default 8001. Env SWITCHYARD_GRPC_PORT. */
  grpcPort: z.number().int().min(0).max(65535),
  /** Largest gRPC message received or sent, in MiB; 0 = the same as maxBodyMb. Default 0. Env SWITCHYARD_GRPC_MAX_MESSAGE_MB. */
  grpcMaxMessageMb: z.number().min(0).max(4096),
  /** Bind address. Default 127.0.0.1 (loopback only). Env SWITCHYARD_HOST. */
  host: z.string().min(1),
  /** pino level: fatal, error, warn, info, debug, trace, silent. Default info. Env SWITCHYARD_LOG_LEVEL. */
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** Share of HTTP requests written to the access log at info, 0..1 (at debug level every request is). Default 0. Env SWITCHYARD_ACCESS_LOG_SAMPLE_RATE. */
  accessLogSampleRate: z.number().min(0).max(1),
  /** Largest accepted request body, in MiB (after decompression too). Default 64. Env SWITCHYARD_MAX_BODY_MB. */
  maxBodyMb: z.number().positive().max(4096),
  /** Largest inference request body after decompression (Content-Encoding gzip or deflate), in MiB; inflating stops there (413). Default 16. Env SWITCHYARD_MAX_INFLATE_MB. */
  maxInflateMb: z.number().positive().max(4096),
  /** Most rows (dim 0 of each input) one inference request may carry, checked on the shapes before any data is decoded (413); a model's max_request_rows overrides it; 0 = no limit. Default 1024. Env SWITCHYARD_MAX_REQUEST_ROWS. */
  maxRequestRows: z.number().int().min(0),
  /** Most tensor elements (all inputs together) one inference request may carry, checked before decoding (413); a model's max_request_elements overrides it; 0 = no limit. Default 8388608 (32 MiB of FP32). Env SWITCHYARD_MAX_REQUEST_ELEMENTS. */
  maxRequestElements: z.number().int().min(0),
  /** Execution provider for models whose config names none: cpu or cuda. Default cpu. Env SWITCHYARD_EXECUTION_PROVIDER. */
  executionProvider: z.enum(['cpu', 'cuda']),
  /** Longest a client may take to send a request's headers, in ms (then the connection is closed: 408). Default 10000. Env SWITCHYARD_HEADERS_TIMEOUT_MS. */
  headersTimeoutMs: z.number().int().min(1),
  /** Longest a client may take to send a whole request (headers and body), in ms (408); raise it for large uploads on slow links; 0 = no limit. Default 60000. Env SWITCHYARD_REQUEST_TIMEOUT_MS. */
  requestTimeoutMs: z.number().int().min(0),
  /** How long an idle keep-alive connection is kept, in ms. Default 5000. Env SWITCHYARD_KEEP_ALIVE_TIMEOUT_MS. */
  keepAliveTimeoutMs: z.number().int().min(1),
  /** How long shutdown waits for queued requests to finish, in ms. Default 10000. Env SWITCHYARD_SHUTDOWN_GRACE_MS. */
  shutdownGraceMs: z.number().int().min(0),
  /** Require an API key on every endpoint but the health probes and /docs. Env SWITCHYARD_AUTH (1/true). */
  auth: z.boolean(),
  /** A platform admin key (any string of 16+ characters; implies auth). '' = none given: with auth on, one is generated and printed once at first start. Env SWITCHYARD_ADMIN_KEY. */
  adminKey: z.string().refine((k) => k === '' || k.length >= 16, 'must be at least 16 characters'),
  /** Allow serving on a non-loopback address without authentication. Env SWITCHYARD_INSECURE. */
  insecure: z.boolean(),
  /** Redis URL for limits shared by all replicas (redis://host:6379); '' = in-process limits. Env SWITCHYARD_REDIS. */
  redis: z.string().refine((u) => u === '' || /^rediss?:\/\//.test(u), 'must start with redis:// or rediss://'),
  /** When Redis is unreachable: admit requests unchecked (open) or refuse them with 503 (closed). Default open. Env SWITCHYARD_RATE_LIMIT_FAIL. */
  rateLimitFail: z.enum(['open', 'closed']),
  /** Longest a limit check waits for Redis, in ms. Default 50. Env SWITCHYARD_REDIS_TIMEOUT_MS. */
  redisTimeoutMs: z.number().int().min(1),
  /** How long keys, tenants and model access are cached; changes made through another replica apply within this. Default 5000. Env SWITCHYARD_AUTH_CACHE_MS. */
  authCacheMs: z.number().int().min(0),
  /** How often usage counters are written to the metadata store, in ms. Default 10000. Env SWITCHYARD_USAGE_FLUSH_MS. */
  usageFlushMs: z.number().int().min(100),
  /** Bytes (MiB) the in-process result cache may hold, for models whose routing policy enables caching (with --redis the cache is in Redis). Default 64. Env SWITCHYARD_CACHE_MAX_MB. */
  cacheMaxMb: z.number().min(1),
  /** Share of requests per model written to the prediction log, 0..1. Default 0.01. Env SWITCHYARD_MONITOR_SAMPLE_RATE. */
  monitorSampleRate: z.number().min(0).max(1),
  /** Where the prediction log goes: the metadata store (`database`), JSONL files under the data dir (`jsonl`) or nowhere (`off`). Default database. Env SWITCHYARD_PREDICTION_LOG. */
  predictionLog: z.enum(['database', 'jsonl', 'off']),
  /** Days the prediction log keeps records. Default 7. Env SWITCHYARD_PREDICTION_RETENTION_DAYS. */
  predictionRetentionDays: z.number().gt(0),
  /** Share of requests fed to drift monitoring, for versions with a reference profile, 0..1. Default 1. Env SWITCHYARD_DRIFT_SAMPLE_RATE. */
  driftSampleRate: z.number().min(0).max(1),
  /** Drift sliding window, ms. Default 3600000 (1 h). Env SWITCHYARD_DRIFT_WINDOW_MS. */
  driftWindowMs: z.number().int().min(60_000),
  /** How often drift reports are computed, stored and exported as gauges, ms. Default 60000. Env SWITCHYARD_DRIFT_EVAL_MS. */
  driftEvalMs: z.number().int().min(1000),
  /** How often alert rules are evaluated, ms. Default 15000. Env SWITCHYARD_ALERT_EVAL_MS. */
  alertEvalMs: z.number().int().min(100),
  /** NATS server for windowed feature views that read a JetStream stream (nats://host:4222); '' = none. Env SWITCHYARD_NATS. */
  nats: z.string().refine((u) => u === '' || /^(nats|tls):\/\//.test(u), 'must start with nats:// or tls://'),
  /** The LLM model catalog (YAML or JSON) served by the OpenAI-compatible API under /v1; '' = none. Env SWITCHYARD_LLM_CONFIG. */
  llmConfig: z.string(),
  /** Batch workers in this replica (leasing chunks of batch jobs from the metadata store); 0 = none. Default 2. Env SWITCHYARD_BATCH_WORKERS. */
  batchWorkers: z.number().int().min(0).max(64),
  /** Lease of a batch chunk (a visibility timeout renewed while it runs), in ms: how soon another replica redoes a dead one's chunk. Default 30000. Env SWITCHYARD_BATCH_LEASE_MS. */
  batchLeaseMs: z.number().int().min(100),
  /** Lines per batch chunk (the unit of leasing, commit and redo after a crash). Default 100. Env SWITCHYARD_BATCH_CHUNK_LINES. */
  batchChunkLines: z.number().int().min(1).max(100_000),
  /** Serve the web console at /ui (static files built from web/ at install). Default true. Env SWITCHYARD_UI (0/false turns it off). */
  ui: z.boolean(),
  /** Where model artifacts are stored: '' = <dataDir>/artifacts; a directory; or s3://bucket/prefix (any S3-compatible server). Env SWITCHYARD_ARTIFACTS. */
  artifacts: z.string().refine((u) => !/^[a-z][a-z0-9+.-]*:\/\//i.test(u) || /^(s3|file):\/\//.test(u), 'must be a directory, file:///dir or s3://bucket/prefix'),
  /** Directory of the local artifact cache (with s3:// artifacts); '' = <dataDir>/artifact-cache. Env SWITCHYARD_ARTIFACT_CACHE_DIR. */
  artifactCacheDir: z.string(),
  /** MiB the artifact cache may hold (files in use excepted), least recently used evicted first. Default 20480. Env SWITCHYARD_ARTIFACT_CACHE_MB. */
  artifactCacheMb: z.number().positive(),
  /** S3 API endpoint for non-AWS servers (http://minio:9000); '' = AWS, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. Env SWITCHYARD_S3_ENDPOINT. */
  s3Endpoint: z.string().refine((u) => u === '' || /^https?:\/\//.test(u), 'must start with http:// or https://'),
  /** S3 region; '' = AWS_REGION / AWS_DEFAULT_REGION / the AWS profile (us-east-1 with an endpoint and none of those). Env SWITCHYARD_S3_REGION. */
  s3Region: z.string(),
  /** Path-style S3 URLs (endpoint/bucket/key), needed by most non-AWS servers. Env SWITCHYARD_S3_PATH_STYLE. */
  s3PathStyle: z.boolean(),
  /** S3 checksums: when-required (works with every S3-compatible server) or when-supported (the AWS SDK's default). Default when-required. Env SWITCHYARD_S3_CHECKSUM. */
  s3Checksum: z.enum(['when-required', 'when-supported']),
  /** Size of an S3 upload part and of a download range, MiB (5..5120). Default 16. Env SWITCHYARD_S3_PART_MB. */
  s3PartMb: z.number().min(5).max(5120),
  /** S3 upload parts or download ranges in flight at once. Default 4. Env SWITCHYARD_S3_CONCURRENCY. */
  s3Concurrency: z.number().int().min(1).max(64),
});

export type ServerConfig = Readonly<z.infer<typeof serverConfigSchema>>;

export const SERVER_DEFAULTS: ServerConfig = Object.freeze({
  modelRepository: '',
  dataDir: 'data',
  database: '',
  databaseTimeoutMs: 5000,
  memoryBudget: 0,
  loadWaitMs: 30_000,
  strictReadiness: false,
  maxArtifactMb: 2048,
  port: 8000,
  grpcPort: 8001,
  grpcMaxMessageMb: 0,
  host: '127.0.0.1',
  logLevel: 'info',
  accessLogSampleRate: 0,
  maxBodyMb: 64,
  maxInflateMb: 16,
  maxRequestRows: 1024,
  maxRequestElements: 8_388_608,
  executionProvider: 'cpu',
  shutdownGraceMs: 10_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  keepAliveTimeoutMs: 5000,
  auth: false,
  adminKey: '',
  insecure: false,
  redis: '',
  rateLimitFail: 'open',
  redisTimeoutMs: 50,
  authCacheMs: 5000,
  usageFlushMs: 10_000,
  cacheMaxMb: 64,
  monitorSampleRate: 0.01,
  predictionLog: 'database',
  predictionRetentionDays: 7,
  driftSampleRate: 1,
  driftWindowMs: 3_600_000,
  driftEvalMs: 60_000,
  alertEvalMs: 15_000,
  nats: '',
  llmConfig: '',
  batchWorkers: 2,
  batchLeaseMs: 30_000,
  batchChunkLines: 100,
  ui: true,
  artifacts: '',
  artifactCacheDir: '',
  artifactCacheMb: 20_480,
  s3Endpoint: '',
  s3Region: '',
  s3PathStyle: false,
  s3Checksum: 'when-required',
  s3PartMb: 16,
  s3Concurrency: 4,
});

type EnvKind = 'string' | 'number' | 'boolean';
const ENV: Record<keyof ServerConfig, { name: string; kind: EnvKind }> = {
  modelRepository: { name: 'SWITCHYARD_MODEL_REPOSITORY', kind: 'string' },
  dataDir: { name: 'SWITCHYARD_DATA_DIR', kind: 'string' },
  database: { name: 'SWITCHYARD_DATABASE', kind: 'string' },
  databaseTimeoutMs: { name: 'SWITCHYARD_DATABASE_TIMEOUT_MS', kind: 'number' },
  memoryBudget: { name: 'SWITCHYARD_MEMORY_BUDGET', kind: 'number' },
  loadWaitMs: { name: 'SWITCHYARD_LOAD_WAIT_MS', kind: 'number' },
  strictReadiness: { name: 'SWITCHYARD_STRICT_READINESS', kind: 'boolean' },
  maxArtifactMb: { name: 'SWITCHYARD_MAX_ARTIFACT_MB', kind: 'number' },
  port: { name: 'SWITCHYARD_PORT', kind: 'number' },
  grpcPort: { name: 'SWITCHYARD_GRPC_PORT', kind: 'number' },
  grpcMaxMessageMb: { name: 'SWITCHYARD_GRPC_MAX_MESSAGE_MB', kind: 'number' },
  host: { name: 'SWITCHYARD_HOST', kind: 'string' },
  logLevel: { name: 'SWITCHYARD_LOG_LEVEL', kind: 'string' },
  accessLogSampleRate: { name: 'SWITCHYARD_ACCESS_LOG_SAMPLE_RATE', kind: 'number' },
  maxBodyMb: { name: 'SWITCHYARD_MAX_BODY_MB', kind: 'number' },
  maxInflateMb: { name: 'SWITCHYARD_MAX_INFLATE_MB', kind: 'number' },
  maxRequestRows: { name: 'SWITCHYARD_MAX_REQUEST_ROWS', kind: 'number' },
  maxRequestElements: { name: 'SWITCHYARD_MAX_REQUEST_ELEMENTS', kind: 'number' },
  executionProvider: { name: 'SWITCHYARD_EXECUTION_PROVIDER', kind: 'string' },
  shutdownGraceMs: { name: 'SWITCHYARD_SHUTDOWN_GRACE_MS', kind: 'number' },
  headersTimeoutMs: { name: 'SWITCHYARD_HEADERS_TIMEOUT_MS', kind: 'number' },
  requestTimeoutMs: { name: 'SWITCHYARD_REQUEST_TIMEOUT_MS', kind: 'number' },
  keepAliveTimeoutMs: { name: 'SWITCHYARD_KEEP_ALIVE_TIMEOUT_MS', kind: 'number' },
  auth: { name: 'SWITCHYARD_AUTH', kind: 'boolean' },
  adminKey: { name: 'SWITCHYARD_ADMIN_KEY', kind: 'string' },
  insecure: { name: 'SWITCHYARD_INSECURE', kind: 'boolean' },
  redis: { name: 'SWITCHYARD_REDIS', kind: 'string' },
  rateLimitFail: { name: 'SWITCHYARD_RATE_LIMIT_FAIL', kind: 'string' },
  redisTimeoutMs: { name: 'SWITCHYARD_REDIS_TIMEOUT_MS', kind: 'number' },
  authCacheMs: { name: 'SWITCHYARD_AUTH_CACHE_MS', kind: 'number' },
  usageFlushMs: { name: 'SWITCHYARD_USAGE_FLUSH_MS', kind: 'number' },
  cacheMaxMb: { name: 'SWITCHYARD_CACHE_MAX_MB', kind: 'number' },
  monitorSampleRate: { name: 'SWITCHYARD_MONITOR_SAMPLE_RATE', kind: 'number' },
  predictionLog: { name: 'SWITCHYARD_PREDICTION_LOG', kind: 'string' },
  predictionRetentionDays: { name: 'SWITCHYARD_PREDICTION_RETENTION_DAYS', kind: 'number' },
  driftSampleRate: { name: 'SWITCHYARD_DRIFT_SAMPLE_RATE', kind: 'number' },
  driftWindowMs: { name: 'SWITCHYARD_DRIFT_WINDOW_MS', kind: 'number' },
  driftEvalMs: { name: 'SWITCHYARD_DRIFT_EVAL_MS', kind: 'number' },
  alertEvalMs: { name: 'SWITCHYARD_ALERT_EVAL_MS', kind: 'number' },
  nats: { name: 'SWITCHYARD_NATS', kind: 'string' },
  llmConfig: { name: 'SWITCHYARD_LLM_CONFIG', kind: 'string' },
  batchWorkers: { name: 'SWITCHYARD_BATCH_WORKERS', kind: 'number' },
  batchLeaseMs: { name: 'SWITCHYARD_BATCH_LEASE_MS', kind: 'number' },
  batchChunkLines: { name: 'SWITCHYARD_BATCH_CHUNK_LINES', kind: 'number' },
  ui: { name: 'SWITCHYARD_UI', kind: 'boolean' },
  artifacts: { name: 'SWITCHYARD_ARTIFACTS', kind: 'string' },
  artifactCacheDir: { name: 'SWITCHYARD_ARTIFACT_CACHE_DIR', kind: 'string' },
  artifactCacheMb: { name: 'SWITCHYARD_ARTIFACT_CACHE_MB', kind: 'number' },
  s3Endpoint: { name: 'SWITCHYARD_S3_ENDPOINT', kind: 'string' },
  s3Region: { name: 'SWITCHYARD_S3_REGION', kind: 'string' },
  s3PathStyle: { name: 'SWITCHYARD_S3_PATH_STYLE', kind: 'boolean' },
  s3Checksum: { name: 'SWITCHYARD_S3_CHECKSUM', kind: 'string' },
  s3PartMb: { name: 'SWITCHYARD_S3_PART_MB', kind: 'number' },
  s3Concurrency: { name: 'SWITCHYARD_S3_CONCURRENCY', kind: 'number' },
};

function envValue(v: string, kind: EnvKind): unknown {
  if (kind === 'number') return Number(v);
  if (kind === 'boolean') return /^(1|true|yes|on)$/i.test(v) ? true : /^(0|false|no|off)$/i.test(v) ? false : v;
  return v;
}

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|::1|\[::1\])$/i;

/** Whether `host` binds only the loopback interface. */
export function isLoopback(host: string): boolean {
  return LOOPBACK.test(host);
}

/** The metadata store URL: `database`, else SQLite in the data dir. */
export function databaseUrl(c: Pick<ServerConfig, 'database' | 'dataDir'>): string {
  return c.database || `sqlite:${join(resolve(c.dataDir), 'switchyard.db')}`;
}

/** Whether requests must carry an API key. */
export function authEnabled(c: ServerConfig): boolean {
  return c.auth || c.adminKey !== '';
}

/** Secure default: refuse to serve a non-loopback address without authentication unless --insecure. */
export function checkExposure(c: ServerConfig): void {
  if (!isLoopback(c.host) && !authEnabled(c) && !c.insecure) {
    throw err('SY_ERR_CONFIG_INVALID', `refusing to serve ${c.host} (not loopback) without authentication: start with --auth (and --admin-key or the generated key), or --insecure to serve it open`);
  }
}

/** Merge defaults < env < flags and validate. `flags` holds only what the user passed. */
export function loadServerConfig(flags: Partial<Record<keyof ServerConfig, unknown>>, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const merged: Record<string, unknown> = { ...SERVER_DEFAULTS };
  for (const [key, spec] of Object.entries(ENV)) {
    const v = env[spec.name];
    if (v !== undefined && v !== '') merged[key] = envValue(v, spec.kind);
  }
  for (const [key, v] of Object.entries(flags)) if (v !== undefined) merged[key] = v;
  const r = serverConfigSchema.safeParse(merged);
  if (!r.success) {
    const msg = r.error.issues.map((i) => {
      const key = String(i.path[0] ?? '');
      const env = ENV[key as keyof ServerConfig]?.name;
      return `${key}${env ? ` (flag or ${env})` : ''}: ${i.message}`;
    }).join('; ');
    throw err('SY_ERR_CONFIG_INVALID', `invalid configuration: ${msg}`);
  }
  return Object.freeze(r.data);
}
