/**
 * @module
 * The server's typed configuration: defaults < environment (SWITCHYARD_*) < command-line flags, validated once
 * at start with errors that name the setting, then frozen.
 */
import { z } from 'zod';
import { err } from '../errors.js';

export const serverConfigSchema = z.strictObject({
  /** Directory of models: DIR/<model>/<version>/model.onnx. Env SWITCHYARD_MODEL_REPOSITORY. */
  modelRepository: z.string().min(1),
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
  modelRepository: 'models',
  port: 8000,
  host: '127.0.0.1',
  logLevel: 'info',
  maxBodyMb: 64,
  executionProvider: 'cpu',
  shutdownGraceMs: 10_000,
});

const ENV: Record<keyof ServerConfig, { name: string; number: boolean }> = {
  modelRepository: { name: 'SWITCHYARD_MODEL_REPOSITORY', number: false },
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
