/**
 * @module
 * The shared limiter: every replica enforces one exact limit per scope through Redis.
 *
 * One `admit` is one round trip: one Lua script (run by lua-runner.ts: EVALSHA, falling back to EVAL once
 * after a script-cache flush) receives every key of every scope, reads the clock with `TIME` (the server's
 * clock, never a replica's), checks all scopes, and writes only when all pass. The token bucket is the
 * routine of bucket.ts, shared with the LLM API's token limiter. Redis runs a script atomically, so
 * replicas never interleave between check and consume.
 *
 * Keys, under `prefix` (default `sy:rl:`), per scope key K:
 * - `b:K`            hash {t: tokens, ts: ms}: the token bucket; expires once it would be full again.
 * - `c:K`            sorted set of lease ids scored by expiry (ms): in-flight requests. Expired leases are
 *                    removed before counting, so a slot held by a crashed replica frees itself after `leaseMs`.
 * - `d:K:YYYY-MM-DD` counter of the UTC day; `m:K:YYYY-MM` counter of the UTC month; each expires one hour
 *                    after its period ends.
 * The replica proposes the day and month (key names and bounds) from its own clock; the script checks the
 * bounds against `TIME` and answers "wrong period" instead of counting when they differ (a skewed replica
 * near midnight). The replica then learns the server's clock offset and retries once. Counts therefore always
 * land in the server's period.
 *
 * Deployment: a single Redis or a primary (scripts write). Redis Cluster is not supported: one admit's keys
 * may hash to different slots.
 *
 * Failure: the connection fails fast and reconnects in the background (lua-runner.ts); `admit` races its
 * own `timeoutMs` deadline. A failed or timed-out admit calls `onBackendError` once, then resolves by
 * `failMode` (LuaRunner.fallback): 'open' admits (`degraded: true`, null headers, no slot held), 'closed'
 * rejects with reason 'unavailable'. Concurrency is then not enforced (open) for that request; a lease the
 * script may still have taken is removed in the background, or expires after `leaseMs`. Connection errors
 * between requests are not reported (no traffic, no failure); the next admit reports them.
 */
import { randomBytes } from 'node:crypto';
import { BUCKET_LUA, type BucketShape } from './bucket.js';
import { LuaRunner, swallow } from './lua-runner.js';
import {
  allPass,
  rateBuckets,
  decide,
  degradedAdmission,
  isLimited,
  PeriodCache,
  STATE_WIDTH,
  unavailableAdmission,
  unlimited,
  type Admission,
  type Limiter,
  type LimitScope,
  type Periods,
} from './limiter.js';

/** Options of {@link RedisLimiter}. */
export interface RedisLimiterOptions {
  /** redis://[user:password@]host:port[/db] (rediss:// for TLS). */
  readonly url: string;
  /** Key prefix. @default "sy:rl:" (tests use a random prefix) */
  readonly prefix?: string;
  /** Per-command timeout; a hung or unreachable Redis never holds an admit longer. @default 50 @unit milliseconds */
  readonly timeoutMs?: number;
  /** What to do when Redis fails or times out: 'open' admits (degraded: true), 'closed' rejects (reason 'unavailable'). */
  readonly failMode: 'open' | 'closed';
  /** Called once per backend failure (for a metric + a rate-limited log line, which the caller does). Must not throw. */
  readonly onBackendError?: (e: Error) => void;
  /** Concurrency slot lease: a slot held by a crashed replica frees itself after this long. Set it above the longest request. @default 60000 @unit milliseconds */
  readonly leaseMs?: number;
  /**
   * Local clock (epoch ms), used only to propose the quota period; the server's `TIME` decides. Injectable to
   * test clock skew. @default Date.now
   */
  readonly now?: () => number;
}

/**
 * Checks and consumes all scopes atomically.
 * ARGV: n, dayStart, dayEnd, monthStart, monthEnd, leaseMs, leaseId, then per scope rps, capacity,
 * concurrency, dailyQuota, monthlyQuota (-1 = no limit). KEYS: per scope, in order, the bucket (with rps),
 * the lease set (with concurrency), the day counter, the month counter (each only when that limit is set).
 * Reply: {1 admitted | 0 rejected | -1 wrong period, server ms, then per scope tokens (before this
 * request, %.17g), in flight, used today, used this month} (-1 where not limited). The comparisons match
 * `allPass` in limiter.ts.
 */
const ADMIT_LUA = `${BUCKET_LUA}
local n = tonumber(ARGV[1])
local dayStart, dayEnd = tonumber(ARGV[2]), tonumber(ARGV[3])
local monthStart, monthEnd = tonumber(ARGV[4]), tonumber(ARGV[5])
local leaseMs, lease = tonumber(ARGV[6]), ARGV[7]
local inDay = now >= dayStart and now < dayEnd
local inMonth = now >= monthStart and now < monthEnd
for i = 0, n - 1 do
  local a = 8 + i * 5
  if (tonumber(ARGV[a + 3]) >= 0 and not inDay) or (tonumber(ARGV[a + 4]) >= 0 and not inMonth) then
    return {-1, nowStr}
  end
end
local out = {1, nowStr}
local tok = {}
local ok = true
local k = 1
for i = 0, n - 1 do
  local a = 8 + i * 5
  local rps, cap, conc = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local dq, mq = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local tk, c, d, m = -1, -1, -1, -1
  if rps > 0 then
    tk = bucket_level(KEYS[k], 't', cap, rps, 1000)
    if not bucket_holds(tk, 1) then ok = false end
    k = k + 1
  end
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    c = redis.call('ZCARD', KEYS[k])
    if c >= conc then ok = false end
    k = k + 1
  end
  if dq >= 0 then
    d = tonumber(redis.call('GET', KEYS[k]) or '0')
    if d >= dq then ok = false end
    k = k + 1
  end
  if mq >= 0 then
    m = tonumber(redis.call('GET', KEYS[k]) or '0')
    if m >= mq then ok = false end
    k = k + 1
  end
  tok[i] = tk
  out[#out + 1] = string.format('%.17g', tk)
  out[#out + 1] = c
  out[#out + 1] = d
  out[#out + 1] = m
end
if not ok then
  out[1] = 0
  return out
end
k = 1
for i = 0, n - 1 do
  local a = 8 + i * 5
  local rps, cap = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  if rps > 0 then
    bucket_store(KEYS[k], 't', bucket_take(tok[i], 1, cap), cap, rps, 1000, 1000)
    k = k + 1
  end
  if tonumber(ARGV[a + 2]) >= 0 then
    redis.call('ZADD', KEYS[k], now + leaseMs, lease)
    redis.call('PEXPIRE', KEYS[k], leaseMs + 1000)
    k = k + 1
  end
  if tonumber(ARGV[a + 3]) >= 0 then
    redis.call('INCR', KEYS[k])
    redis.call('PEXPIREAT', KEYS[k], dayEnd + 3600000)
    k = k + 1
  end
  if tonumber(ARGV[a + 4]) >= 0 then
    redis.call('INCR', KEYS[k])
    redis.call('PEXPIREAT', KEYS[k], monthEnd + 3600000)
    k = k + 1
  end
end
return out
`;

/** Removes one lease id (ARGV[1]) from every lease set in KEYS. */
const RELEASE_LUA = `
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
`;

/**
 * The multi-replica limiter over Redis (see the module comment for keys, the script and failure handling).
 * The constructor never throws or blocks: it connects in the background.
 *
 * @example
 * ```ts
 * const limiter = new RedisLimiter({ url: 'redis://127.0.0.1:6379', failMode: 'open', onBackendError: (e) => log.warn(e) });
 * const a = await limiter.admit(scopes); // one round trip, resolves within ~timeoutMs whatever Redis does
 * ...
 * await limiter.close();
 * ```
 * @see MemoryLimiter for the single-process backend with the same semantics.
 */
export class RedisLimiter implements Limiter {
  readonly #conn: LuaRunner<'syAdmit' | 'syRelease'>;
  readonly #prefix: string;
  readonly #leaseMs: number;
  readonly #now: () => number;
  readonly #periods = new PeriodCache();
  /** Server clock minus local clock (ms), learned from every reply; corrects the proposed period. */
  #offsetMs = 0;
  readonly #leaseBase = `${randomBytes(6).toString('hex')}:`;
  #leaseSeq = 0;

  constructor(opts: RedisLimiterOptions) {
    this.#prefix = opts.prefix ?? 'sy:rl:';
    this.#leaseMs = opts.leaseMs ?? 60_000;
    this.#now = opts.now ?? Date.now;
    if (!(Number.isInteger(this.#leaseMs) && this.#leaseMs > 0)) throw new RangeError(`leaseMs must be an integer > 0, got ${this.#leaseMs}`);
    this.#conn = new LuaRunner({
      url: opts.url,
      timeoutMs: opts.timeoutMs ?? 50,
      connectionName: 'switchyard-limiter',
      label: 'rate limiter',
      scripts: { syAdmit: ADMIT_LUA, syRelease: RELEASE_LUA },
      failMode: opts.failMode,
      onBackendError: opts.onBackendError,
    });
  }

  /** Whether the connection is up and admits are being checked (false while connecting or reconnecting). */
  get connected(): boolean {
    return this.#conn.ready;
  }

  async admit(scopes: readonly LimitScope[]): Promise<Admission> {
    const rates = rateBuckets(scopes);
    let limited = false;
    for (const s of scopes) if (isLimited(s.spec)) limited = true;
    if (!limited) return unlimited();
    const conn = this.#conn;
    if (!conn.ready) return this.#failed(conn.unusable(), null);

    const n = scopes.length;
    const leaseId = `${this.#leaseBase}${(this.#leaseSeq++).toString(36)}`;
    let leaseKeys: string[] | null = null;
    for (const { key, spec } of scopes) if (spec.concurrency !== null) (leaseKeys ??= []).push(`${this.#prefix}c:${key}`);

    try {
      return await conn.timed(async () => {
        let now = this.#now() + this.#offsetMs;
        for (let attempt = 0; ; attempt++) {
          const periods = this.#periods.at(now);
          const [keys, argv] = this.#args(scopes, rates, periods, leaseId);
          const reply = await conn.eval('syAdmit', keys, argv);
          const status = Number(reply[0]);
          const serverNow = Number(reply[1]);
          this.#offsetMs = serverNow - this.#now();
          if (status === -1) {
            if (attempt > 0) throw conn.error(`rejected the quota period twice (server time ${serverNow})`);
            now = serverNow;
            continue;
          }
          const state = new Float64Array(n * STATE_WIDTH);
          for (let i = 0; i < n * STATE_WIDTH; i++) state[i] = Number(reply[2 + i]);
          const allowed = status === 1;
          if (allowed !== allPass(scopes, rates, state)) {
            throw new Error(`rate limiter: script and decision disagree (reply ${JSON.stringify(reply)})`);
          }
          const leases = leaseKeys;
          return decide(scopes, rates, state, allowed, serverNow, periods, leases === null ? null : () => this.#release(leases, leaseId, true));
        }
      });
    } catch (e) {
      // The script may have run (a late reply): take the lease back in the background.
      return this.#failed(e, leaseKeys === null ? null : () => this.#release(leaseKeys, leaseId, false));
    }
  }

  /** Keys and arguments of the admit script (layout documented on ADMIT_LUA). */
  #args(scopes: readonly LimitScope[], rates: readonly (BucketShape | null)[], p: Periods, leaseId: string): [string[], Array<string | number>] {
    const keys: string[] = [];
    const argv: Array<string | number> = [scopes.length, p.dayStart, p.dayEnd, p.monthStart, p.monthEnd, this.#leaseMs, leaseId];
    const pre = this.#prefix;
    for (let i = 0; i < scopes.length; i++) {
      const { key, spec } = scopes[i]!;
      const b = rates[i];
      if (b != null) keys.push(`${pre}b:${key}`);
      if (spec.concurrency !== null) keys.push(`${pre}c:${key}`);
      if (spec.dailyQuota !== null) keys.push(`${pre}d:${key}:${p.dayId}`);
      if (spec.monthlyQuota !== null) keys.push(`${pre}m:${key}:${p.monthId}`);
      argv.push(b?.rate ?? -1, b?.cap ?? -1, spec.concurrency ?? -1, spec.dailyQuota ?? -1, spec.monthlyQuota ?? -1);
    }
    return [keys, argv];
  }

  /** Reports the failure once, takes back a lease the script may have taken, and answers by the fail mode. */
  #failed(e: unknown, cleanup: (() => void) | null): Admission {
    const answer = this.#conn.fallback(e, degradedAdmission, unavailableAdmission)();
    if (cleanup !== null) cleanup();
    return answer;
  }

  /** Fire-and-forget ZREM of one lease; never throws. `report`: send failures to onBackendError. */
  #release(keys: readonly string[], leaseId: string, report: boolean): void {
    const conn = this.#conn;
    if (conn.closed) return; // close() already sent QUIT after every pending release
    if (!conn.ready) {
      if (report) conn.report(conn.error(`is not connected; the concurrency slot frees itself after ${this.#leaseMs} ms`));
      return;
    }
    conn.eval('syRelease', keys, [leaseId]).then(swallow, report ? (e: unknown) => conn.report(e) : swallow);
  }

  /**
   * Stops admitting (later admits answer by the fail mode), sends pending releases, and closes the
   * connection: QUIT when connected, then a hard disconnect that also stops reconnecting.
   */
  close(): Promise<void> {
    return this.#conn.close();
  }
}
