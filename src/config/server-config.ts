/**
 * @module
 * The server's options: ONE table ({@link SERVER_OPTIONS}: key, type and checks, default, unit, help) from which
 * the config schema, the defaults, the environment variables (SWITCHYARD_<KEY>), the config-file keys and the
 * `serve` command-line flags (--<key>) are all derived. Adding an option is one table entry.
 *
 * Precedence: defaults < config file (`--config FILE` or SWITCHYARD_CONFIG; YAML or JSON) < environment <
 * command-line flags. Validated once at start with errors that name the setting and where its value came from,
 * then frozen.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { err } from '../errors.js';

type Scalar = string | number | boolean;

/** One server option. Its env var is SWITCHYARD_<KEY_IN_SNAKE_CASE>, its flag --<key-in-kebab-case>. */
export interface OptionSpec<T extends Scalar = Scalar> {
  readonly schema: z.ZodType<T>;
  readonly default: T;
  /**
   * The value's placeholder in --help, doubling as its unit: `ms`, `mib`, `bytes` (also takes 512M, 2G), `dir`,
   * `url`, … Absent for a boolean switch (a switch whose default is true is turned off with --no-<key>).
   */
  readonly arg?: string;
  /** One-letter flag alias. */
  readonly short?: string;
  /** The default as --help and the docs show it, where the value says little ('' → "none"). */
  readonly shown?: string;
  /** Other environment variables the component reads as a fallback (documentation only). */
  readonly envAlso?: string;
  readonly help: string;
}

const o = <T extends Scalar>(spec: OptionSpec<T>): OptionSpec<T> => spec;

/** Every server option. Keep one entry per line; the flag, env var and config-file key follow from the key. */
export const SERVER_OPTIONS = {
  modelRepository: o({
    schema: z.string(),
    default: '',
    arg: 'dir',
    short: 'm',
    shown: 'none',
    help: 'model repository directory (DIR/<model>/<version>/model.onnx), imported into the registry at start',
  }),
  dataDir: o({ schema: z.string().min(1), default: 'data', arg: 'dir', help: 'where the embedded database and the local artifact store live' }),
  database: o({
    schema: z.string().refine((u) => u === '' || /^(sqlite:|postgres(ql)?:\/\/)/.test(u), 'must start with sqlite: or postgres://'),
    default: '',
    arg: 'url',
    shown: 'sqlite:<data-dir>/switchyard.db',
    help: 'metadata store: sqlite:FILE or postgres://user@host:5432/db[?schema=NAME]',
  }),
  databaseTimeoutMs: o({
    schema: z.number().int().min(100),
    default: 5000,
    arg: 'ms',
    help: 'Postgres: longest a connection attempt or one statement may take; then the call answers 503 (the data plane keeps serving from memory)',
  }),
  memoryBudget: o({
    schema: z.number().int().min(0),
    default: 0,
    arg: 'bytes',
    help: 'bytes all resident model versions may hold together (512M, 2G, …); least recently used idle, unpinned versions are unloaded to make room; 0 = unlimited',
  }),
  loadWaitMs: o({
    schema: z.number().int().min(0),
    default: 30_000,
    arg: 'ms',
    help: 'how long a request waits for its model version to load before 503 + Retry-After',
  }),
  strictReadiness: o({
    schema: z.boolean(),
    default: false,
    help: 'GET /v2/health/ready is 200 only while every servable version is ready; by default it is 200 once start-up loading finished and the versions loaded at start are servable (a version registered later that fails to load is unready on its own)',
  }),
  maxArtifactMb: o({ schema: z.number().positive(), default: 2048, arg: 'mib', help: 'largest model artifact the admin API accepts, in MiB' }),
  port: o({ schema: z.number().int().min(0).max(65535), default: 8000, arg: 'port', short: 'p', help: 'TCP port, 0 for any free port' }),
  grpcPort: o({
    schema: z.number().int().min(0).max(65535),
    default: 8001,
    arg: 'port',
    help: 'gRPC port for the Open Inference Protocol (inference.GRPCInferenceService, grpc.health.v1.Health) on the same --host; 0 = no gRPC listener',
  }),
  grpcMaxMessageMb: o({
    schema: z.number().min(0).max(4096),
    default: 0,
    arg: 'mib',
    help: 'largest gRPC message received or sent, in MiB; 0 = the same as --max-body-mb',
  }),
  host: o({ schema: z.string().min(1), default: '127.0.0.1', arg: 'address', shown: '"127.0.0.1", loopback only', help: 'bind address' }),
  logLevel: o({ schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), default: 'info', arg: 'level', help: 'log level' }),
  accessLogSampleRate: o({
    schema: z.number().min(0).max(1),
    default: 0,
    arg: 'share',
    help: 'share of HTTP requests written to the access log at info, 0..1 (request id, route, status, latency, tenant, model); at --log-level debug every request is',
  }),
  maxBodyMb: o({ schema: z.number().positive().max(4096), default: 64, arg: 'mib', help: 'largest request body in MiB, also after decompression' }),
  maxInflateMb: o({
    schema: z.number().positive().max(4096),
    default: 16,
    arg: 'mib',
    help: 'largest inference body after gzip/deflate decompression in MiB; inflating stops there with 413',
  }),
  maxRequestRows: o({
    schema: z.number().int().min(0),
    default: 1024,
    arg: 'rows',
    help: "most rows per inference request, checked before decoding (413); a model's max_request_rows overrides it; 0 = no limit",
  }),
  maxRequestElements: o({
    schema: z.number().int().min(0),
    default: 8_388_608,
    arg: 'n',
    help: "most tensor elements per inference request, checked before decoding (413); a model's max_request_elements overrides it; 0 = no limit",
  }),
  executionProvider: o({
    schema: z.enum(['cpu', 'cuda']),
    default: 'cpu',
    arg: 'ep',
    help: 'default onnxruntime execution provider for models whose config names none; cuda falls back to cpu when unavailable',
  }),
  shutdownGraceMs: o({ schema: z.number().int().min(0), default: 10_000, arg: 'ms', help: 'on SIGTERM/SIGINT, how long queued requests may take to finish' }),
  headersTimeoutMs: o({
    schema: z.number().int().min(1),
    default: 10_000,
    arg: 'ms',
    help: "longest a client may take to send a request's headers (then 408 and the connection closes)",
  }),
  requestTimeoutMs: o({
    schema: z.number().int().min(0),
    default: 60_000,
    arg: 'ms',
    help: 'longest a client may take to send a whole request, body included (408); raise it for large uploads on slow links; 0 = no limit',
  }),
  keepAliveTimeoutMs: o({ schema: z.number().int().min(1), default: 5000, arg: 'ms', help: 'how long an idle keep-alive connection is kept' }),
  auth: o({
    schema: z.boolean(),
    default: false,
    shown: 'off on loopback',
    help: 'require an API key (Authorization: Bearer) on every endpoint except /v2/health/* and /docs; with no --admin-key and no stored platform key, one is generated and printed once',
  }),
  adminKey: o({
    schema: z.string().refine((k) => k === '' || k.length >= 16, 'must be at least 16 characters'),
    default: '',
    arg: 'key',
    help: 'a platform admin key (16+ characters, e.g. from a secret store); implies --auth',
  }),
  insecure: o({ schema: z.boolean(), default: false, help: 'allow a non-loopback --host without authentication (refused otherwise)' }),
  redis: o({
    schema: z.string().refine((u) => u === '' || /^rediss?:\/\//.test(u), 'must start with redis:// or rediss://'),
    default: '',
    arg: 'url',
    shown: 'in-process limits',
    help: 'Redis for tenant limits shared by all replicas (redis://127.0.0.1:6379)',
  }),
  rateLimitFail: o({
    schema: z.enum(['open', 'closed']),
    default: 'open',
    arg: 'mode',
    help: 'when Redis is unreachable: open admits requests unchecked, closed refuses them with 503',
  }),
  redisTimeoutMs: o({ schema: z.number().int().min(1), default: 50, arg: 'ms', help: 'longest a limit check waits for Redis' }),
  authCacheMs: o({
    schema: z.number().int().min(0),
    default: 5000,
    arg: 'ms',
    help: 'how long keys, tenants and model access are cached; changes made on another replica apply within this',
  }),
  usageFlushMs: o({
    schema: z.number().int().min(100),
    default: 10_000,
    arg: 'ms',
    help: 'how often usage counters are written to the metadata store; a crash loses at most this much',
  }),
  cacheMaxMb: o({
    schema: z.number().min(1),
    default: 64,
    arg: 'mb',
    help: 'memory for the result cache of models whose routing policy enables it (in-process; with --redis the cache lives in Redis)',
  }),
  monitorSampleRate: o({
    schema: z.number().min(0).max(1),
    default: 0.01,
    arg: 'rate',
    help: 'share of requests per model written to the prediction log, 0..1',
  }),
  predictionLog: o({
    schema: z.enum(['database', 'jsonl', 'off']),
    default: 'database',
    arg: 'sink',
    help: 'where sampled predictions go: database (the metadata store), jsonl (files under <data-dir>/predictions, rotated), off',
  }),
  predictionRetentionDays: o({ schema: z.number().gt(0), default: 7, arg: 'days', help: 'how long the prediction log keeps records' }),
  driftSampleRate: o({
    schema: z.number().min(0).max(1),
    default: 1,
    arg: 'rate',
    help: 'share of requests fed to drift monitoring (versions with a reference profile), 0..1',
  }),
  driftWindowMs: o({ schema: z.number().int().min(60_000), default: 3_600_000, arg: 'ms', help: 'drift sliding window' }),
  driftEvalMs: o({ schema: z.number().int().min(1000), default: 60_000, arg: 'ms', help: 'how often drift reports are computed, stored and exported' }),
  alertEvalMs: o({ schema: z.number().int().min(100), default: 15_000, arg: 'ms', help: 'how often alert rules are evaluated' }),
  nats: o({
    schema: z.string().refine((u) => u === '' || /^(nats|tls):\/\//.test(u), 'must start with nats:// or tls://'),
    default: '',
    arg: 'url',
    shown: 'none',
    help: 'NATS server (JetStream) for windowed feature views that consume a NATS stream (nats://127.0.0.1:4222)',
  }),
  llmConfig: o({
    schema: z.string(),
    default: '',
    arg: 'file',
    shown: 'none',
    help: 'LLM models (YAML or JSON) served by the OpenAI-compatible API under /v1: local GGUF models (llama.cpp), upstream providers, ONNX embedding encoders',
  }),
  batchWorkers: o({
    schema: z.number().int().min(0).max(64),
    default: 2,
    arg: 'n',
    help: 'batch workers in this replica, leasing chunks of batch jobs from the metadata store; 0 = none',
  }),
  batchLeaseMs: o({
    schema: z.number().int().min(100),
    default: 30_000,
    arg: 'ms',
    help: "lease of a batch chunk, renewed while it runs: how soon another replica redoes a dead replica's chunk",
  }),
  batchChunkLines: o({ schema: z.number().int().min(1).max(100_000), default: 100, arg: 'n', help: 'lines per batch chunk (the unit of leasing and commit)' }),
  ui: o({ schema: z.boolean(), default: true, shown: 'served', help: 'serve the web console at /ui' }),
  artifacts: o({
    schema: z
      .string()
      .refine((u) => !/^[a-z][a-z0-9+.-]*:\/\//i.test(u) || /^(s3|file):\/\//.test(u), 'must be a directory, file:///dir or s3://bucket/prefix'),
    default: '',
    arg: 'url',
    shown: '<data-dir>/artifacts',
    help: "where model artifacts are stored: a directory, or s3://bucket/prefix on any S3-compatible server (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the AWS profile or the pod's role)",
  }),
  artifactCacheDir: o({
    schema: z.string(),
    default: '',
    arg: 'dir',
    shown: '<data-dir>/artifact-cache',
    help: 'local cache of s3:// artifacts, content-addressed by sha256 and kept across restarts',
  }),
  artifactCacheMb: o({
    schema: z.number().positive(),
    default: 20_480,
    arg: 'mib',
    help: 'MiB the artifact cache may hold, least recently used evicted first (files being loaded excepted)',
  }),
  s3Endpoint: o({
    schema: z.string().refine((u) => u === '' || /^https?:\/\//.test(u), 'must start with http:// or https://'),
    default: '',
    arg: 'url',
    shown: 'AWS',
    envAlso: 'AWS_ENDPOINT_URL_S3',
    help: 'S3 API endpoint of a non-AWS server, e.g. http://minio:9000',
  }),
  s3Region: o({
    schema: z.string(),
    default: '',
    arg: 'region',
    shown: "the AWS profile's; us-east-1 with --s3-endpoint",
    envAlso: 'AWS_REGION',
    help: 'S3 region',
  }),
  s3PathStyle: o({ schema: z.boolean(), default: false, help: 'path-style S3 URLs (endpoint/bucket/key), which most non-AWS servers need' }),
  s3Checksum: o({
    schema: z.enum(['when-required', 'when-supported']),
    default: 'when-required',
    arg: 'mode',
    help: 'S3 request checksums: when-required works with every S3-compatible server (downloads are verified by sha256 regardless); when-supported is the AWS SDK default',
  }),
  s3PartMb: o({ schema: z.number().min(5).max(5120), default: 16, arg: 'mib', help: 'size of one S3 upload part and one download range' }),
  s3Concurrency: o({ schema: z.number().int().min(1).max(64), default: 4, arg: 'n', help: 'S3 upload parts or download ranges in flight at once' }),
};

export type ServerOptionKey = keyof typeof SERVER_OPTIONS;
export type ServerConfig = { readonly [K in ServerOptionKey]: (typeof SERVER_OPTIONS)[K]['default'] };

const KEYS = Object.keys(SERVER_OPTIONS) as ServerOptionKey[];
const spec = (k: ServerOptionKey): OptionSpec => SERVER_OPTIONS[k] as OptionSpec;

export const serverConfigSchema = z.strictObject(
  Object.fromEntries(KEYS.map((k) => [k, spec(k).schema])) as { [K in ServerOptionKey]: (typeof SERVER_OPTIONS)[K]['schema'] },
);

export const SERVER_DEFAULTS: ServerConfig = Object.freeze(Object.fromEntries(KEYS.map((k) => [k, spec(k).default])) as ServerConfig);

/** `maxBodyMb` → `max-body-mb`. */
export const optionFlag = (key: string): string => key.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`);
/** `maxBodyMb` → `SWITCHYARD_MAX_BODY_MB`. */
export const optionEnv = (key: string): string => `SWITCHYARD_${optionFlag(key).replaceAll('-', '_').toUpperCase()}`;
/** The environment variable naming the config file. */
export const CONFIG_ENV = 'SWITCHYARD_CONFIG';

/** The allowed values of an enum option, else undefined. */
export function optionChoices(s: OptionSpec): readonly string[] | undefined {
  return s.schema instanceof z.ZodEnum ? (s.schema.options as string[]) : undefined;
}

/** Bytes, optionally with a binary suffix: 512M, 2G, 1.5GiB; NaN when it is not one. */
export function parseBytes(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(v.trim());
  if (!m) return NaN;
  return Math.floor(Number(m[1]) * 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase()));
}

/**
 * An option's value from text (a flag, an env var, a string in the config file) in its type; what does not
 * parse is returned as is, for the schema to reject with its message.
 */
export function optionFromText(s: OptionSpec, v: string): unknown {
  if (typeof s.default === 'boolean') return /^(1|true|yes|on)$/i.test(v) ? true : /^(0|false|no|off)$/i.test(v) ? false : v;
  if (typeof s.default !== 'number') return v;
  const n = s.arg === 'bytes' ? parseBytes(v) : v.trim() === '' ? NaN : Number(v);
  return Number.isNaN(n) ? v : n;
}

/** The config file's settings: keys as in {@link SERVER_OPTIONS} (camelCase) or as the flags (kebab-case). */
function readConfigFile(path: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8'));
  } catch (e) {
    throw err('SY_ERR_CONFIG_INVALID', `cannot read config file ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw err('SY_ERR_CONFIG_INVALID', `config file ${path}: must be a mapping of option: value`);
  const byName = new Map<string, ServerOptionKey>();
  for (const k of KEYS) byName.set(k, k).set(optionFlag(k), k);
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(doc)) {
    const key = byName.get(name);
    if (key === undefined)
      throw err(
        'SY_ERR_CONFIG_INVALID',
        `config file ${path}: unknown option "${name}" (the options are those of \`switchyard serve --help\`, without the dashes)`,
      );
    out[key] = typeof v === 'string' ? optionFromText(spec(key), v) : v;
  }
  return out;
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
    throw err(
      'SY_ERR_CONFIG_INVALID',
      `refusing to serve ${c.host} (not loopback) without authentication: start with --auth (and --admin-key or the generated key), or --insecure to serve it open`,
    );
  }
}

/**
 * Merge defaults < config file < env < flags and validate. `flags` holds only what the user passed (values in
 * their types); `flags.config` (or SWITCHYARD_CONFIG) names the config file.
 */
export function loadServerConfig(flags: Partial<Record<ServerOptionKey | 'config', unknown>>, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const merged: Record<string, unknown> = { ...SERVER_DEFAULTS };
  const from: Record<string, string> = {};
  const file = typeof flags.config === 'string' && flags.config !== '' ? flags.config : env[CONFIG_ENV];
  if (file !== undefined && file !== '') {
    for (const [key, v] of Object.entries(readConfigFile(file))) {
      merged[key] = v;
      from[key] = `config file ${file}`;
    }
  }
  for (const key of KEYS) {
    const v = env[optionEnv(key)];
    if (v === undefined || v === '') continue;
    merged[key] = optionFromText(spec(key), v);
    from[key] = optionEnv(key);
  }
  for (const [key, v] of Object.entries(flags)) {
    if (v === undefined || key === 'config') continue;
    merged[key] = v;
    from[key] = `--${optionFlag(key)}`;
  }
  const r = serverConfigSchema.safeParse(merged);
  if (!r.success) {
    const msg = r.error.issues
      .map((i) => {
        const key = String(i.path[0] ?? '');
        if (i.code === 'unrecognized_keys') return `unknown option(s) ${i.keys.join(', ')}`;
        const where = from[key] ?? `--${optionFlag(key)} or ${optionEnv(key)}`;
        return `${key} (${where}): ${i.message}`;
      })
      .join('; ');
    throw err('SY_ERR_CONFIG_INVALID', `invalid configuration: ${msg}`);
  }
  return Object.freeze(r.data) as ServerConfig;
}
