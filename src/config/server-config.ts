/**
 * @module
 * The server's typed configuration: defaults < environment (SWITCHYARD_*) < command-line flags, validated once
 * at start with errors that name the setting, then frozen.
 */
import { z } from 'zod';
import { err } from '../errors.js';

export const serverConfigSchema = z.strictObject({
  /** Directory of models (DIR/<model>/<version>/model.onnx) imported into the registry at start; '' = none. Env SWITCHYARD_MODEL_REPOSITORY. */
  modelRepository: z.string(),
  /** Directory for the embedded database and the local artifact store. Default ./data. Env SWITCHYARD_DATA_DIR. */
  dataDir: z.string().min(1),
  /** Metadata store URL: sqlite:FILE or postgres://…; '' = sqlite:<dataDir>/switchyard.db. Env SWITCHYARD_DATABASE. */
  database: z.string().refine((u) => u === '' || /^(sqlite:|postgres(ql)?:\/\/)/.test(u), 'must start with sqlite: or postgres://'),
  /** Bytes all resident model versions may hold together; 0 = unlimited. Env SWITCHYARD_MEMORY_BUDGET. */
  memoryBudget: z.number().int().min(0),
  /** Longest a request waits for its model version to load, in ms (then 503 + Retry-After). Default 30000. Env SWITCHYARD_LOAD_WAIT_MS. */
  loadWaitMs: z.number().int().min(0),
  /** Largest model artifact accepted by the admin upload, in MiB. Default 2048. Env SWITCHYARD_MAX_ARTIFACT_MB. */
  maxArtifactMb: z.number().positive(),
  /** TCP port; 0 picks a free one. Default 8000. Env SWITCHYARD_PORT. */
  port: z.number().int().min(0).max(65535),
  /** Bind address. Default 127.0.0.1 (loopback only). Env SWITCHYARD_HOST. */
  host: z.string().min(1),
  /** pino level: fatal, error, warn, info, debug, trace, silent. Default info. Env SWITCHYARD_LOG_LEVEL. */
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** Largest accepted request body, in MiB (after decompression too). Default 64. Env SWITCHYARD_MAX_BODY_MB. */
  maxBodyMb: z.number().positive().max(4096),
  /** Execution provider for models whose config names none: cpu or cuda. Default cpu. Env SWITCHYARD_EXECUTION_PROVIDER. */
  executionProvider: z.enum(['cpu', 'cuda']),
  /** How long shutdown waits for queued requests to finish, in ms. Default 10000. Env SWITCHYARD_SHUTDOWN_GRACE_MS. */
  shutdownGraceMs: z.number().int().min(0),
});

export type ServerConfig = Readonly<z.infer<typeof serverConfigSchema>>;

export const SERVER_DEFAULTS: ServerConfig = Object.freeze({
  modelRepository: '',
  dataDir: 'data',
  database: '',
  memoryBudget: 0,
  loadWaitMs: 30_000,
  maxArtifactMb: 2048,
  port: 8000,
  host: '127.0.0.1',
  logLevel: 'info',
  maxBodyMb: 64,
  executionProvider: 'cpu',
  shutdownGraceMs: 10_000,
});

const ENV: Record<keyof ServerConfig, { name: string; number: boolean }> = {
  modelRepository: { name: 'SWITCHYARD_MODEL_REPOSITORY', number: false },
  dataDir: { name: 'SWITCHYARD_DATA_DIR', number: false },
  database: { name: 'SWITCHYARD_DATABASE', number: false },
  memoryBudget: { name: 'SWITCHYARD_MEMORY_BUDGET', number: true },
  loadWaitMs: { name: 'SWITCHYARD_LOAD_WAIT_MS', number: true },
  maxArtifactMb: { name: 'SWITCHYARD_MAX_ARTIFACT_MB', number: true },
  port: { name: 'SWITCHYARD_PORT', number: true },
  host: { name: 'SWITCHYARD_HOST', number: false },
  logLevel: { name: 'SWITCHYARD_LOG_LEVEL', number: false },
  maxBodyMb: { name: 'SWITCHYARD_MAX_BODY_MB', number: true },
  executionProvider: { name: 'SWITCHYARD_EXECUTION_PROVIDER', number: false },
  shutdownGraceMs: { name: 'SWITCHYARD_SHUTDOWN_GRACE_MS', number: true },
};

/** Merge defaults < env < flags and validate. `flags` holds only what the user passed. */
export function loadServerConfig(flags: Partial<Record<keyof ServerConfig, unknown>>, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const merged: Record<string, unknown> = { ...SERVER_DEFAULTS };
  for (const [key, spec] of Object.entries(ENV)) {
    const v = env[spec.name];
    if (v !== undefined && v !== '') merged[key] = spec.number ? Number(v) : v;
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
