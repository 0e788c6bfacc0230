/**
 * @module
 * Small SQL helpers shared by every store (registry, gateway, experiments, features): timestamps as ISO text,
 * and unique-key violations recognised from either driver (SQLite, Postgres).
 */

/** Epoch ms as an ISO-8601 UTC string. */
export const iso = (ms: number): string => new Date(ms).toISOString();

/** Unique-key violations from either driver. */
export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}
