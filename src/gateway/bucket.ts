/**
 * @module
 * Token-bucket math shared by every limit of the gateway: the request limiter's rate (`rps` / `burst`,
 * limiter.ts) and the LLM API's `rpm` / `tpm` (token-limits.ts), in memory (the functions below) and in Redis
 * ({@link BUCKET_LUA}, the same formulas in the same order, so both backends compute the same floats).
 *
 * A bucket holds up to `cap` units and refills continuously at `rate` units per `perMs` ms; it is full at first
 * use (an absent bucket is full). A level may be fractional, and negative after a charge beyond what was taken
 * (settle): later requests then wait until it has refilled. Comparisons forgive float noise ({@link EPS}).
 *
 * ```
 *  level at `at` ──refill(now - at)──► level now (≤ cap) ──holds(cost)? ──► take(cost) ──► stored with `now`
 *                                                    └── no: retryMs(level, cost) until it does
 * ```
 */

/** Float slack for level comparisons: 0.9999999999 units after a refill is one unit. */
export const EPS = 1e-9;

/** A bucket's shape: at most `cap` units, refilled at `rate` units every `perMs` ms (rps: perMs 1000; rpm: 60000). */
export interface BucketShape {
  readonly cap: number;
  readonly rate: number;
  readonly perMs: number;
}

/** A bucket's state as a memory backend holds it. */
export interface HeldLevel {
  /** Units at `at` (may be negative). */
  readonly level: number;
  /** Epoch ms. */
  readonly at: number;
  /** When the bucket is full again (epoch ms): it may then be forgotten (absent is full). */
  readonly fullAt: number;
}

/** ceil for a computed duration, forgiving float noise (100.00000001 ms is 100 ms); never negative. */
export function ceilMs(ms: number): number {
  return Math.max(0, Math.ceil(ms - 1e-6));
}

/** The level `elapsedMs` after the bucket held `level`: continuous refill, capped at `cap` (a negative elapsed time counts as 0). */
export function refill(b: BucketShape, level: number, elapsedMs: number): number {
  return Math.min(b.cap, level + (Math.max(0, elapsedMs) * b.rate) / b.perMs);
}

/** Whether a bucket at `level` holds `cost` units. */
export function holds(level: number, cost: number): boolean {
  return level >= cost - EPS;
}

/** The level after taking `cost` (a negative cost refunds, never above `cap`). */
export function take(b: BucketShape, level: number, cost: number): number {
  return Math.min(b.cap, level - cost);
}

/** Whole units at `level` (floor, forgiving float noise; >= 0): the `remaining` of x-ratelimit headers. */
export function whole(level: number): number {
  return Math.max(0, Math.floor(level + EPS));
}

/** ms until a bucket at `level` holds `target` units (0 when it already does). */
export function msUntil(b: BucketShape, level: number, target: number): number {
  return ceilMs(((target - level) * b.perMs) / b.rate);
}

/** ms until a bucket at `level` is full again: the `reset` of x-ratelimit headers. */
export function msUntilFull(b: BucketShape, level: number): number {
  return msUntil(b, level, b.cap);
}

/** The retry delay of a request refused by a bucket at `level` for `cost` units: until it holds them, at least 1 ms. */
export function retryMs(b: BucketShape, level: number, cost: number): number {
  return Math.max(1, msUntil(b, level, cost));
}

/** The level of a bucket held in memory (`held` undefined: never used or forgotten, so full), refilled to `now`. */
export function levelAt(b: BucketShape, held: HeldLevel | undefined, now: number): number {
  return held === undefined ? b.cap : refill(b, held.level, now - held.at);
}

/** The state to hold for a bucket left at `level` at `now`. */
export function heldLevel(b: BucketShape, level: number, now: number): HeldLevel {
  return { level, at: now, fullAt: now + msUntilFull(b, level) };
}

/**
 * The same bucket routine in Lua, for the Redis scripts to start with (string-concatenated before the script's
 * own body). It reads the clock with `TIME` into `now` (ms, the server's clock: never a replica's) and
 * `nowStr`, and defines:
 * - `bucket_level(key, field, cap, rate, per)`: the hash `key` holds the level in `field` and its time in
 *   `ts`; the level refilled to `now` (absent: `cap`), as {@link refill}.
 * - `bucket_holds(level, cost)`: as {@link holds}; `bucket_take(level, cost, cap)`: as {@link take}.
 * - `bucket_store(key, field, left, cap, rate, per, graceMs)`: writes level `left` at `now`; the key expires
 *   `graceMs` after the bucket would be full again (absent is full).
 * Levels are written as %.17g: a float read back is the float written.
 */
export const BUCKET_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nowStr = string.format('%.17g', now)
local function bucket_level(key, field, cap, rate, per)
  local v = redis.call('HMGET', key, field, 'ts')
  if not v[1] then return cap end
  local el = now - tonumber(v[2])
  if el < 0 then el = 0 end
  local l = tonumber(v[1]) + el * rate / per
  if l > cap then l = cap end
  return l
end
local function bucket_holds(level, cost)
  return level >= cost - ${EPS}
end
local function bucket_take(level, cost, cap)
  local l = level - cost
  if l > cap then l = cap end
  return l
end
local function bucket_store(key, field, left, cap, rate, per, graceMs)
  redis.call('HSET', key, field, string.format('%.17g', left), 'ts', nowStr)
  redis.call('PEXPIRE', key, math.ceil((cap - left) * per / rate) + graceMs)
end
`;
