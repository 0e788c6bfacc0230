#!/usr/bin/env node
/**
 * @module
 * The `switchyard` command line. `switchyard serve` runs the server; `switchyard --help` lists every command.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { loadServerConfig, SERVER_DEFAULTS, type ServerConfig } from '../config/index.js';
import { isSwitchyardError } from '../errors.js';
import { modelsCommand } from './models.js';
import { tenantsCommand } from './tenants.js';
import { routingCommand } from './routing.js';
import { experimentsCommand } from './experiments.js';
import { featuresCommand } from './features.js';
import { monitorCommand } from './monitor.js';
import { llmCommand } from './llm.js';
import { migrateCommand } from './migrate.js';
import { VERSION } from '../version.js';

const int = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`${name} must be an integer`);
  return n;
};
/** Bytes, optionally with a binary suffix: 512M, 2G, 1.5GiB. */
const bytes = (name: string) => (v: string): number => {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`${name} must be a byte count such as 536870912, 512M or 2G`);
  const scale = 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase());
  return Math.floor(Number(m[1]) * scale);
};
const num = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
  return n;
};

interface ServeFlags {
  modelRepository?: string; port?: number; grpcPort?: number; grpcMaxMessageMb?: number; host?: string; logLevel?: ServerConfig['logLevel']; accessLogSampleRate?: number;
  maxBodyMb?: number; maxInflateMb?: number; maxRequestRows?: number; maxRequestElements?: number; executionProvider?: ServerConfig['executionProvider']; shutdownGraceMs?: number;
  headersTimeoutMs?: number; requestTimeoutMs?: number; keepAliveTimeoutMs?: number;
  dataDir?: string; database?: string; databaseTimeoutMs?: number; memoryBudget?: number; loadWaitMs?: number; maxArtifactMb?: number;
  auth?: boolean; adminKey?: string; insecure?: boolean; redis?: string; rateLimitFail?: 'open' | 'closed';
  redisTimeoutMs?: number; authCacheMs?: number; usageFlushMs?: number; cacheMaxMb?: number;
  monitorSampleRate?: number; predictionLog?: ServerConfig['predictionLog']; predictionRetentionDays?: number; driftSampleRate?: number;
  driftWindowMs?: number; driftEvalMs?: number; alertEvalMs?: number; nats?: string; llmConfig?: string;
  strictReadiness?: boolean; batchWorkers?: number; batchLeaseMs?: number; batchChunkLines?: number; ui?: boolean;
  artifacts?: string; artifactCacheDir?: string; artifactCacheMb?: number; s3Endpoint?: string; s3Region?: string;
  s3PathStyle?: boolean; s3Checksum?: ServerConfig['s3Checksum']; s3PartMb?: number; s3Concurrency?: number;
}

async function serve(flags: ServeFlags): Promise<void> {
  const config = loadServerConfig(flags);
  // The server (onnxruntime, Fastify, database drivers) loads only for `serve`: client commands start fast.
  const { createLogger, createSwitchyard } = await import('../server.js');
  const logger = createLogger(config.logLevel);
  const sy = await createSwitchyard(config, logger);
  const address = await sy.app.listen({ port: config.port, host: config.host });
  const grpcPort = config.grpcPort === 0 ? null : await sy.grpc.listen(config.grpcPort, config.host);
  const models = sy.manager.list().map((m) => `${m.name}[${m.versions.map((v) => `${v.label}:${v.state}`).join(',')}]`);
  logger.info({ address, grpcPort, models }, 'switchyard listening');
  process.stdout.write(`Switchyard ${VERSION} listening on ${address}${grpcPort === null ? '' : ` and gRPC ${config.host}:${grpcPort}`} — models: ${models.join(' ') || '(none)'}\n`);
  if (sy.bootstrapKey) {
    process.stdout.write(`Generated platform admin key (shown this once; only its hash is stored):\n  ${sy.bootstrapKey}\n`);
  }
  if (!sy.gateway.authRequired) process.stdout.write('Authentication is off (open developer mode on loopback); start with --auth to require API keys.\n');
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) process.exit(1); // second signal: leave now
    stopping = true;
    logger.info({ signal }, 'shutting down: draining queued requests');
    sy.close().then(() => process.exit(0), (e: unknown) => {
      logger.error({ err: e }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

const program = new Command('switchyard')
  .description('Switchyard: one service for serving ONNX models over the Open Inference Protocol (KServe/Triton V2).')
  .version(VERSION)
  // Subcommands own the options after their name (`monitor drift m --version 1` is the model version, not ours).
  .enablePositionalOptions()
  .showHelpAfterError();

program
  .command('serve')
  .description('Serve the registered models (V2 inference, /api/v1 admin, /docs, /metrics); --model-repository imports a directory (DIR/<model>/<version>/model.onnx, optional config.json|yaml) into the registry first.')
  .addOption(new Option('-m, --model-repository <dir>', 'model repository directory (DIR/<model>/<version>/model.onnx), imported into the registry at start [env SWITCHYARD_MODEL_REPOSITORY] (default: none)'))
  .addOption(new Option('--data-dir <dir>', `where the embedded database and the local artifact store live [env SWITCHYARD_DATA_DIR] (default: "${SERVER_DEFAULTS.dataDir}")`))
  .addOption(new Option('--database <url>', 'metadata store: sqlite:FILE or postgres://user@host:5432/db[?schema=NAME] [env SWITCHYARD_DATABASE] (default: sqlite:<data-dir>/switchyard.db)'))
  .addOption(new Option('--database-timeout-ms <ms>', `Postgres: longest a connection attempt or one statement may take; then the call answers 503 (the data plane keeps serving from memory) [env SWITCHYARD_DATABASE_TIMEOUT_MS] (default: ${SERVER_DEFAULTS.databaseTimeoutMs})`).argParser(int('database-timeout-ms')))
  .addOption(new Option('--memory-budget <bytes>', 'bytes all resident model versions may hold together (512M, 2G, …); least recently used idle, unpinned versions are unloaded to make room; 0 = unlimited [env SWITCHYARD_MEMORY_BUDGET] (default: 0)').argParser(bytes('memory-budget')))
  .addOption(new Option('--load-wait-ms <ms>', `how long a request waits for its model version to load before 503 + Retry-After [env SWITCHYARD_LOAD_WAIT_MS] (default: ${SERVER_DEFAULTS.loadWaitMs})`).argParser(int('load-wait-ms')))
  .addOption(new Option('--strict-readiness', 'GET /v2/health/ready is 200 only while every servable version is ready; by default it is 200 once start-up loading finished and the versions loaded at start are servable (a version registered later that fails to load is unready on its own) [env SWITCHYARD_STRICT_READINESS=1] (default: off)'))
  .addOption(new Option('--max-artifact-mb <mib>', `largest model artifact the admin API accepts, in MiB [env SWITCHYARD_MAX_ARTIFACT_MB] (default: ${SERVER_DEFAULTS.maxArtifactMb})`).argParser(num('max-artifact-mb')))
  .addOption(new Option('-p, --port <port>', `TCP port, 0 for any free port [env SWITCHYARD_PORT] (default: ${SERVER_DEFAULTS.port})`).argParser(int('port')))
  .addOption(new Option('--grpc-port <port>', `gRPC port for the Open Inference Protocol (inference.GRPCInferenceService, grpc.health.v1.Health) on the same --host; 0 = no gRPC listener [env SWITCHYARD_GRPC_PORT] (default: ${SERVER_DEFAULTS.grpcPort})`).argParser(int('grpc-port')))
  .addOption(new Option('--grpc-max-message-mb <mib>', 'largest gRPC message received or sent, in MiB; 0 = the same as --max-body-mb [env SWITCHYARD_GRPC_MAX_MESSAGE_MB] (default: 0)').argParser(num('grpc-max-message-mb')))
  .addOption(new Option('--host <address>', `bind address [env SWITCHYARD_HOST] (default: "${SERVER_DEFAULTS.host}", loopback only)`))
  .addOption(new Option('--log-level <level>', `log level [env SWITCHYARD_LOG_LEVEL] (default: "${SERVER_DEFAULTS.logLevel}")`).choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
  .addOption(new Option('--access-log-sample-rate <share>', `share of HTTP requests written to the access log at info, 0..1 (request id, route, status, latency, tenant, model); at --log-level debug every request is [env SWITCHYARD_ACCESS_LOG_SAMPLE_RATE] (default: ${SERVER_DEFAULTS.accessLogSampleRate})`).argParser(num('access-log-sample-rate')))
  .addOption(new Option('--max-body-mb <mib>', `largest request body in MiB, also after decompression [env SWITCHYARD_MAX_BODY_MB] (default: ${SERVER_DEFAULTS.maxBodyMb})`).argParser(num('max-body-mb')))
  .addOption(new Option('--max-inflate-mb <mib>', `largest inference body after gzip/deflate decompression in MiB; inflating stops there with 413 [env SWITCHYARD_MAX_INFLATE_MB] (default: ${SERVER_DEFAULTS.maxInflateMb})`).argParser(num('max-inflate-mb')))
  .addOption(new Option('--max-request-rows <rows>', `most rows per inference request, checked before decoding (413); a model's max_request_rows overrides it; 0 = no limit [env SWITCHYARD_MAX_REQUEST_ROWS] (default: ${SERVER_DEFAULTS.maxRequestRows})`).argParser(int('max-request-rows')))
  .addOption(new Option('--max-request-elements <n>', `most tensor elements per inference request, checked before decoding (413); a model's max_request_elements overrides it; 0 = no limit [env SWITCHYARD_MAX_REQUEST_ELEMENTS] (default: ${SERVER_DEFAULTS.maxRequestElements})`).argParser(int('max-request-elements')))
  .addOption(new Option('--execution-provider <ep>', `default onnxruntime execution provider for models whose config names none; cuda falls back to cpu when unavailable [env SWITCHYARD_EXECUTION_PROVIDER] (default: "${SERVER_DEFAULTS.executionProvider}")`).choices(['cpu', 'cuda']))
  .addOption(new Option('--shutdown-grace-ms <ms>', `on SIGTERM/SIGINT, how long queued and running requests may take to finish: an upper bound, after which they are refused and connections closed [env SWITCHYARD_SHUTDOWN_GRACE_MS] (default: ${SERVER_DEFAULTS.shutdownGraceMs})`).argParser(int('shutdown-grace-ms')))
  .addOption(new Option('--headers-timeout-ms <ms>', `longest a client may take to send a request's headers (then 408 and the connection closes) [env SWITCHYARD_HEADERS_TIMEOUT_MS] (default: ${SERVER_DEFAULTS.headersTimeoutMs})`).argParser(int('headers-timeout-ms')))
  .addOption(new Option('--request-timeout-ms <ms>', `longest a client may take to send a whole request, body included (408); raise it for large uploads on slow links; 0 = no limit [env SWITCHYARD_REQUEST_TIMEOUT_MS] (default: ${SERVER_DEFAULTS.requestTimeoutMs})`).argParser(int('request-timeout-ms')))
  .addOption(new Option('--keep-alive-timeout-ms <ms>', `how long an idle keep-alive connection is kept [env SWITCHYARD_KEEP_ALIVE_TIMEOUT_MS] (default: ${SERVER_DEFAULTS.keepAliveTimeoutMs})`).argParser(int('keep-alive-timeout-ms')))
  .addOption(new Option('--auth', 'require an API key (Authorization: Bearer) on every endpoint except /v2/health/* and /docs; with no --admin-key and no stored platform key, one is generated and printed once [env SWITCHYARD_AUTH=1] (default: off on loopback)'))
  .addOption(new Option('--admin-key <key>', 'a platform admin key (16+ characters, e.g. from a secret store); implies --auth [env SWITCHYARD_ADMIN_KEY]'))
  .addOption(new Option('--insecure', 'allow a non-loopback --host without authentication (refused otherwise) [env SWITCHYARD_INSECURE=1]'))
  .addOption(new Option('--redis <url>', 'Redis for tenant limits shared by all replicas (redis://127.0.0.1:6379) [env SWITCHYARD_REDIS] (default: in-process limits)'))
  .addOption(new Option('--rate-limit-fail <mode>', `when Redis is unreachable: open admits requests unchecked, closed refuses them with 503 [env SWITCHYARD_RATE_LIMIT_FAIL] (default: "${SERVER_DEFAULTS.rateLimitFail}")`).choices(['open', 'closed']))
  .addOption(new Option('--redis-timeout-ms <ms>', `longest a limit check waits for Redis [env SWITCHYARD_REDIS_TIMEOUT_MS] (default: ${SERVER_DEFAULTS.redisTimeoutMs})`).argParser(int('redis-timeout-ms')))
  .addOption(new Option('--auth-cache-ms <ms>', `how long keys, tenants and model access are cached; changes made on another replica apply within this [env SWITCHYARD_AUTH_CACHE_MS] (default: ${SERVER_DEFAULTS.authCacheMs})`).argParser(int('auth-cache-ms')))
  .addOption(new Option('--usage-flush-ms <ms>', `how often usage counters are written to the metadata store; a crash loses at most this much [env SWITCHYARD_USAGE_FLUSH_MS] (default: ${SERVER_DEFAULTS.usageFlushMs})`).argParser(int('usage-flush-ms')))
  .addOption(new Option('--cache-max-mb <mb>', `memory for the result cache of models whose routing policy enables it (in-process; with --redis the cache lives in Redis) [env SWITCHYARD_CACHE_MAX_MB] (default: ${SERVER_DEFAULTS.cacheMaxMb})`).argParser(num('cache-max-mb')))
  .addOption(new Option('--monitor-sample-rate <rate>', `share of requests per model written to the prediction log, 0..1 [env SWITCHYARD_MONITOR_SAMPLE_RATE] (default: ${SERVER_DEFAULTS.monitorSampleRate})`).argParser(num('monitor-sample-rate')))
  .addOption(new Option('--prediction-log <sink>', `where sampled predictions go: database (the metadata store), jsonl (files under <data-dir>/predictions, rotated), off [env SWITCHYARD_PREDICTION_LOG] (default: "${SERVER_DEFAULTS.predictionLog}")`).choices(['database', 'jsonl', 'off']))
  .addOption(new Option('--prediction-retention-days <days>', `how long the prediction log keeps records [env SWITCHYARD_PREDICTION_RETENTION_DAYS] (default: ${SERVER_DEFAULTS.predictionRetentionDays})`).argParser(num('prediction-retention-days')))
  .addOption(new Option('--drift-sample-rate <rate>', `share of requests fed to drift monitoring (versions with a reference profile), 0..1 [env SWITCHYARD_DRIFT_SAMPLE_RATE] (default: ${SERVER_DEFAULTS.driftSampleRate})`).argParser(num('drift-sample-rate')))
  .addOption(new Option('--drift-window-ms <ms>', `drift sliding window [env SWITCHYARD_DRIFT_WINDOW_MS] (default: ${SERVER_DEFAULTS.driftWindowMs})`).argParser(int('drift-window-ms')))
  .addOption(new Option('--drift-eval-ms <ms>', `how often drift reports are computed, stored and exported [env SWITCHYARD_DRIFT_EVAL_MS] (default: ${SERVER_DEFAULTS.driftEvalMs})`).argParser(int('drift-eval-ms')))
  .addOption(new Option('--alert-eval-ms <ms>', `how often alert rules are evaluated [env SWITCHYARD_ALERT_EVAL_MS] (default: ${SERVER_DEFAULTS.alertEvalMs})`).argParser(int('alert-eval-ms')))
  .addOption(new Option('--nats <url>', 'NATS server (JetStream) for windowed feature views that consume a NATS stream (nats://127.0.0.1:4222) [env SWITCHYARD_NATS] (default: none)'))
  .addOption(new Option('--llm-config <file>', 'LLM models (YAML or JSON) served by the OpenAI-compatible API under /v1: local GGUF models (llama.cpp), upstream providers, ONNX embedding encoders [env SWITCHYARD_LLM_CONFIG] (default: none)'))
  .addOption(new Option('--batch-workers <n>', `batch workers in this replica, leasing chunks of batch jobs from the metadata store; 0 = none [env SWITCHYARD_BATCH_WORKERS] (default: ${SERVER_DEFAULTS.batchWorkers})`).argParser(int('batch-workers')))
  .addOption(new Option('--batch-lease-ms <ms>', `lease of a batch chunk, renewed while it runs: how soon another replica redoes a dead replica's chunk [env SWITCHYARD_BATCH_LEASE_MS] (default: ${SERVER_DEFAULTS.batchLeaseMs})`).argParser(int('batch-lease-ms')))
  .addOption(new Option('--batch-chunk-lines <n>', `lines per batch chunk (the unit of leasing and commit) [env SWITCHYARD_BATCH_CHUNK_LINES] (default: ${SERVER_DEFAULTS.batchChunkLines})`).argParser(int('batch-chunk-lines')))
  // --ui is hidden: defined so that --no-ui has no default of its own (which would override SWITCHYARD_UI).
  .addOption(new Option('--ui', 'serve the web console at /ui').hideHelp())
  .addOption(new Option('--no-ui', 'do not serve the web console at /ui [env SWITCHYARD_UI=0] (default: served)'))
  .addOption(new Option('--artifacts <url>', 'where model artifacts are stored: a directory, or s3://bucket/prefix on any S3-compatible server (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the AWS profile or the pod\'s role) [env SWITCHYARD_ARTIFACTS] (default: <data-dir>/artifacts)'))
  .addOption(new Option('--artifact-cache-dir <dir>', 'local cache of s3:// artifacts, content-addressed by sha256 and kept across restarts [env SWITCHYARD_ARTIFACT_CACHE_DIR] (default: <data-dir>/artifact-cache)'))
  .addOption(new Option('--artifact-cache-mb <mib>', `MiB the artifact cache may hold, least recently used evicted first (files being loaded excepted) [env SWITCHYARD_ARTIFACT_CACHE_MB] (default: ${SERVER_DEFAULTS.artifactCacheMb})`).argParser(num('artifact-cache-mb')))
  .addOption(new Option('--s3-endpoint <url>', 'S3 API endpoint of a non-AWS server, e.g. http://minio:9000 [env SWITCHYARD_S3_ENDPOINT, or AWS_ENDPOINT_URL_S3] (default: AWS)'))
  .addOption(new Option('--s3-region <region>', 'S3 region [env SWITCHYARD_S3_REGION, or AWS_REGION] (default: the AWS profile\'s; us-east-1 with --s3-endpoint)'))
  .addOption(new Option('--s3-path-style', 'path-style S3 URLs (endpoint/bucket/key), which most non-AWS servers need [env SWITCHYARD_S3_PATH_STYLE=1] (default: off)'))
  .addOption(new Option('--s3-checksum <mode>', `S3 request checksums: when-required works with every S3-compatible server (downloads are verified by sha256 regardless); when-supported is the AWS SDK default [env SWITCHYARD_S3_CHECKSUM] (default: "${SERVER_DEFAULTS.s3Checksum}")`).choices(['when-required', 'when-supported']))
  .addOption(new Option('--s3-part-mb <mib>', `size of one S3 upload part and one download range [env SWITCHYARD_S3_PART_MB] (default: ${SERVER_DEFAULTS.s3PartMb})`).argParser(num('s3-part-mb')))
  .addOption(new Option('--s3-concurrency <n>', `S3 upload parts or download ranges in flight at once [env SWITCHYARD_S3_CONCURRENCY] (default: ${SERVER_DEFAULTS.s3Concurrency})`).argParser(int('s3-concurrency')))
  .action(serve);

program.addCommand(modelsCommand());
program.addCommand(tenantsCommand());
program.addCommand(routingCommand());
program.addCommand(experimentsCommand());
program.addCommand(featuresCommand());
program.addCommand(monitorCommand());
program.addCommand(llmCommand());
program.addCommand(migrateCommand());

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`switchyard: ${isSwitchyardError(e) ? e.message : (e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
