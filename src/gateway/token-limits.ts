/**
 * @module
 * Requests-per-minute and tokens-per-minute limits of the LLM API, per scope (a tenant, an API key, a
 * tenant×model pair: see `Gateway.tokenScopes`). They are separate from the request limiter
 * (src/gateway/limiter.ts), which ignores `rpm` / `tpm`.
 *
 * Per scope, two buckets refilled continuously, full at first use:
 * - requests: capacity `rpm`, refilled at `rpm` per minute; a request takes 1.
 * - tokens: capacity `tpm`, refilled at `tpm` per minute; a request takes the tokens it reserves (prompt
 *   tokens plus its `max_tokens`, as the caller estimates them).
 *
 * `reserve(scopes, tokens)` is atomic across every scope and both dimensions: when every bucket holds what the
 * request takes, all of them are charged; otherwise nothing is charged anywhere and `retryAfterMs` is the
 * longest wait until every failing bucket can admit it. A request needing more tokens than a scope's `tpm`
 * can never pass: it is refused with reason 'tokens', `tooLarge` set and `retryAfterMs` {@link OVER_CAPACITY_RETRY_MS}
 * (answer it with a non-retryable 429 naming the limit: retrying cannot help). A refusal's `requests` and `tokens`
 * windows are the refusing scope's, so the x-ratelimit-* headers describe the limit that refused (its remaining is
 * below what the request needs, its reset is at least the retry delay). Once the request has finished,
 * `settle(actualTokens)` refunds what it did not use or charges what it used beyond its reservation; a bucket
 * may then go negative, and later requests wait until it has refilled.
 *
 * ```
 *  reserve(scopes, n) ──► every bucket >= its cost? ──yes──► take: requests -1, tokens -n (all scopes)
 *                                 │ no                               │
 *                                 ▼                                  ▼ the request runs, uses m tokens
 *                      nothing taken, retryAfterMs              settle(m): tokens -(m - n) (once)
 * ```
 *
 * Two interchangeable backends: {@link MemoryTokenLimiter} (one process, injectable clock) and
 * {@link RedisTokenLimiter} (every replica shares one exact limit: one Lua script per decision, timed by
 * Redis `TIME`). Both share the decision code below, so headers, reasons and waits are computed the same way,
 * and with the request limiter (limiter.ts, redis-limiter.ts) the token-bucket math (bucket.ts, in TypeScript and
 * Lua) and the Redis script runner with its fail-open / fail-closed answer (lua-runner.ts).
 */
import { BUCKET_LUA, heldLevel, holds, levelAt, msUntilFull, retryMs, take, whole, type BucketShape, type HeldLevel } from './bucket.js';
import { UNAVAILABLE_RETRY_MS } from './limiter.js';
import { LuaRunner, swallow, type LuaReply } from './lua-runner.js';

/** The per-minute limits of one scope; null: that dimension is not limited. Keys within one `reserve` must be distinct. */
export interface TokenScope {
  readonly key: string;
  /** Requests per minute, > 0, or null. */
  readonly rpm: number | null;
  /** Tokens per minute, > 0, or null. */
  readonly tpm: number | null;
}

/** One dimension's bucket as x-ratelimit-* headers report it. */
export interface RateWindow {
  /** The bucket's capacity (rpm or tpm). */
  readonly limit: number;
  /** Whole units left after this request (floor, >= 0). */
  readonly remaining: number;
  /** ms until the bucket is full again. */
  readonly resetMs: number;
}

/** Why a reservation was refused; 'unavailable': Redis failed and the fail mode is 'closed'. */
export type TokenLimitReason = 'requests' | 'tokens' | 'unavailable';

/** The outcome of one `reserve`. Every field is always present (null when it does not apply). */
export interface TokenReservation {
  readonly allowed: boolean;
  /** The scope key that refused (the one with the longest wait), or null (allowed, or 'unavailable'). */
  readonly scope: string | null;
  readonly reason: TokenLimitReason | null;
  /** Refused because the request alone needs more tokens than a scope's tpm: no retry can pass. */
  readonly tooLarge: boolean;
  /**
   * When refused: ms until a retry can pass every bucket ({@link OVER_CAPACITY_RETRY_MS} when the request
   * exceeds a scope's tpm, {@link UNAVAILABLE_RETRY_MS} for 'unavailable'). 0 when allowed.
   */
  readonly retryAfterMs: number;
  /**
   * For x-ratelimit-*-requests: the scope with the fewest requests left (refused: the refusing scope's, when it
   * has an rpm); null when no scope has an rpm.
   */
  readonly requests: RateWindow | null;
  /** For x-ratelimit-*-tokens: the scope with the fewest tokens left (refused: the refusing scope's, when it has a tpm); null when no scope has a tpm. */
  readonly tokens: RateWindow | null;
  /** True when the backend failed and the fail-open policy admitted the request without checking. */
  readonly degraded: boolean;
  /**
   * Reconciles the reservation with the tokens the request really used: refunds what it did not use, or
   * charges the excess (a bucket may go negative: later requests wait). Applies once; later calls, and calls
   * on a refused or unchecked reservation, do nothing. Never rejects for a backend failure (the Redis backend
   * reports it to `onBackendError`); rejects with a RangeError when `actualTokens` is not a finite number >= 0.
   */
  settle(actualTokens: number): Promise<void>;
}

/**
 * An rpm / tpm limiter. `reserve` never rejects because of its backend (see the fail mode of each
 * implementation); it rejects only with a RangeError for invalid input (a bad limit, a repeated key, a token
 * count that is not a finite number >= 0).
 */
export interface TokenLimiter {
  /** Check every scope's buckets and, only if ALL pass, take from all of them atomically. */
  reserve(scopes: readonly TokenScope[], tokens: number): Promise<TokenReservation>;
  /** Release the backend. Reservations still held may be settled afterwards (a no-op). */
  close(): Promise<void>;
}

/** Refill period: a bucket refills its whole capacity in one minute. */
export const MINUTE_MS = 60_000;
/** `retryAfterMs` of a request that needs more tokens than a scope's tpm (it can never pass). */
export const OVER_CAPACITY_RETRY_MS = 60_000;

/** One bucket a reservation takes from: capacity `cap`, refilled at `cap` per minute. @internal */
interface Bucket extends BucketShape {
  readonly scope: string;
  readonly dim: 'requests' | 'tokens';
  /** What this request takes from it. */
  readonly cost: number;
}

function checkAmount(what: string, v: number): void {
  if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`${what} must be a finite number >= 0, got ${v}`);
}

function checkLimit(key: string, name: string, v: number | null): void {
  if (v !== null && !(Number.isFinite(v) && v > 0)) throw new RangeError(`token scope "${key}": ${name} must be a positive finite number or null, got ${v}`);
}

/** The buckets a reservation of `tokens` takes from: requests then tokens, per scope, in scope order. Validates. */
function bucketsOf(scopes: readonly TokenScope[], tokens: number): Bucket[] {
  checkAmount('tokens', tokens);
  const out: Bucket[] = [];
  for (let i = 0; i < scopes.length; i++) {
    const { key, rpm, tpm } = scopes[i]!;
    for (let j = 0; j < i; j++) if (scopes[j]!.key === key) throw new RangeError(`token scope "${key}" appears twice in one reserve`);
    checkLimit(key, 'rpm', rpm);
    checkLimit(key, 'tpm', tpm);
    if (rpm !== null) out.push({ scope: key, dim: 'requests', cap: rpm, rate: rpm, perMs: MINUTE_MS, cost: 1 });
    if (tpm !== null) out.push({ scope: key, dim: 'tokens', cap: tpm, rate: tpm, perMs: MINUTE_MS, cost: tokens });
  }
  return out;
}

/** Whether every bucket holds what the request takes (the Redis script makes the same comparison). */
function allFit(buckets: readonly Bucket[], levels: ArrayLike<number>): boolean {
  for (let i = 0; i < buckets.length; i++) if (!holds(levels[i]!, buckets[i]!.cost)) return false;
  return true;
}

/** The one TokenReservation implementation: a plain record plus a settle hook that runs at most once. */
class Reservation implements TokenReservation {
  #settle: ((actualTokens: number) => Promise<void>) | null;

  constructor(
    readonly allowed: boolean,
    readonly scope: string | null,
    readonly reason: TokenLimitReason | null,
    readonly tooLarge: boolean,
    readonly retryAfterMs: number,
    readonly requests: RateWindow | null,
    readonly tokens: RateWindow | null,
    readonly degraded: boolean,
    settle: ((actualTokens: number) => Promise<void>) | null,
  ) {
    this.#settle = settle;
  }

  async settle(actualTokens: number): Promise<void> {
    checkAmount('actualTokens', actualTokens);
    const s = this.#settle;
    if (s === null) return;
    this.#settle = null;
    await s(actualTokens);
  }
}

const UNLIMITED: TokenReservation = new Reservation(true, null, null, false, 0, null, null, false, null);
const DEGRADED: TokenReservation = new Reservation(true, null, null, false, 0, null, null, true, null);
const UNAVAILABLE: TokenReservation = new Reservation(false, null, 'unavailable', false, UNAVAILABLE_RETRY_MS, null, null, false, null);

/**
 * Builds the reservation from the levels observed before taking (`levels[i]` for `buckets[i]`) and the verdict:
 * headers from the buckets with the fewest units left; for a refusal, the scope and reason of the longest wait
 * (a request over a tpm capacity wins: it can never pass).
 */
function decide(
  buckets: readonly Bucket[],
  levels: ArrayLike<number>,
  allowed: boolean,
  settle: ((actualTokens: number) => Promise<void>) | null,
): TokenReservation {
  let requests: RateWindow | null = null;
  let tokens: RateWindow | null = null;
  let scope: string | null = null;
  let reason: TokenLimitReason | null = null;
  let retryAfterMs = 0;
  let overCapacity = false;
  for (let i = 0; i < buckets.length; i++) {
    const b = buckets[i]!;
    const level = levels[i]!;
    const after = level - (allowed ? b.cost : 0);
    const w: RateWindow = { limit: b.cap, remaining: whole(after), resetMs: msUntilFull(b, after) };
    if (b.dim === 'requests') {
      if (requests === null || w.remaining < requests.remaining) requests = w;
    } else if (tokens === null || w.remaining < tokens.remaining) {
      tokens = w;
    }
    if (allowed || holds(level, b.cost) || overCapacity) continue;
    if (b.cost > b.cap) {
      overCapacity = true;
      scope = b.scope;
      reason = 'tokens';
      retryAfterMs = OVER_CAPACITY_RETRY_MS;
      continue;
    }
    const wait = retryMs(b, level, b.cost);
    if (wait > retryAfterMs) {
      retryAfterMs = wait;
      scope = b.scope;
      reason = b.dim;
    }
  }
  if (!allowed && scope !== null) {
    // The headers describe the limit that refused: its window replaces the fewest-left one of each dimension.
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i]!;
      if (b.scope !== scope) continue;
      const w: RateWindow = { limit: b.cap, remaining: whole(levels[i]!), resetMs: msUntilFull(b, levels[i]!) };
      if (b.dim === 'requests') requests = w;
      else tokens = w;
    }
  }
  return new Reservation(allowed, scope, reason, overCapacity, retryAfterMs, requests, tokens, false, allowed ? settle : null);
}

/** The token buckets of a reservation, and the correction to apply to them (> 0 charges, < 0 refunds). */
function correction(buckets: readonly Bucket[], reserved: number, actual: number): { buckets: Bucket[]; delta: number } {
  const delta = actual - reserved;
  return { buckets: delta === 0 ? [] : buckets.filter((b) => b.dim === 'tokens'), delta };
}

/** Reservations between two sweeps of full buckets (keeps the map bounded by the scopes in use). */
const SWEEP_EVERY = 1024;

/**
 * The in-process rpm / tpm limiter: exact, one process only.
 *
 * @example
 * ```ts
 * const limiter = new MemoryTokenLimiter();
 * const r = await limiter.reserve(gateway.tokenScopes(principal, model), promptTokens + maxTokens);
 * if (!r.allowed) reply.code(429).header('retry-after-ms', r.retryAfterMs);
 * ... // generate
 * await r.settle(usage.total_tokens);
 * ```
 * @see RedisTokenLimiter for the shared, multi-replica backend.
 */
export class MemoryTokenLimiter implements TokenLimiter {
  readonly #now: () => number;
  /** Bucket states by dimension and scope; absent: full (swept once full again). */
  readonly #levels = new Map<string, HeldLevel>();
  #sinceSweep = 0;

  /** `now`: the clock (epoch ms), injectable for tests. @default Date.now */
  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? Date.now;
  }

  /** Buckets with state held (for tests). */
  get size(): number {
    return this.#levels.size;
  }

  async reserve(scopes: readonly TokenScope[], tokens: number): Promise<TokenReservation> {
    const buckets = bucketsOf(scopes, tokens);
    if (buckets.length === 0) return UNLIMITED;
    const now = this.#now();
    const levels = buckets.map((b) => this.#level(b, now));
    const allowed = allFit(buckets, levels);
    if (allowed) for (let i = 0; i < buckets.length; i++) this.#set(buckets[i]!, take(buckets[i]!, levels[i]!, buckets[i]!.cost), now);
    if (++this.#sinceSweep >= SWEEP_EVERY) this.#sweep(now);
    return decide(buckets, levels, allowed, async (actual) => this.#settle(buckets, tokens, actual));
  }

  #settle(all: readonly Bucket[], reserved: number, actual: number): void {
    const { buckets, delta } = correction(all, reserved, actual);
    const now = this.#now();
    for (const b of buckets) this.#set(b, take(b, this.#level(b, now), delta), now);
  }

  #level(b: Bucket, now: number): number {
    return levelAt(b, this.#levels.get(`${b.dim}:${b.scope}`), now);
  }

  #set(b: Bucket, value: number, now: number): void {
    this.#levels.set(`${b.dim}:${b.scope}`, heldLevel(b, value, now));
  }

  /** Drops full buckets (absent is full). */
  #sweep(now: number): void {
    this.#sinceSweep = 0;
    for (const [k, l] of this.#levels) if (now >= l.fullAt) this.#levels.delete(k);
  }

  /** Forgets all state. */
  async close(): Promise<void> {
    this.#levels.clear();
  }
}

/** Options of {@link RedisTokenLimiter}. */
export interface RedisTokenLimiterOptions {
  /** redis://[user:password@]host:port[/db] (rediss:// for TLS). */
  readonly url: string;
  /** Key prefix. @default "sy:tl:" (tests use a random prefix) */
  readonly prefix?: string;
  /** Per-command deadline; a hung or unreachable Redis never holds a reservation longer. @default 50 @unit milliseconds */
  readonly timeoutMs?: number;
  /** When Redis fails or times out: 'open' admits (degraded: true), 'closed' refuses (reason 'unavailable'). @default 'open' */
  readonly failMode?: 'open' | 'closed';
  /** Called once per backend failure (reserve or settle), for a metric and a rate-limited log line. Must not throw. */
  readonly onBackendError?: (e: Error) => void;
}

/**
 * Takes from (ARGV[1] = 1: only when every bucket holds its cost) or adjusts (ARGV[1] = 0: settle, always,
 * may go negative) the buckets in KEYS; ARGV[2i], ARGV[2i + 1]: capacity (= refill per minute) and cost of
 * KEYS[i]. Each key is a hash {v: level, ts: ms of v} that expires a minute after the bucket would be full
 * again (absent = full). Reply: {1 taken | 0 refused, then each bucket's refilled level before this call
 * (%.17g)}; the comparison matches `allFit`. The bucket routine is bucket.ts's, shared with the request limiter.
 */
const BUCKETS_LUA = `${BUCKET_LUA}
local taking = ARGV[1] == '1'
local out = {1}
local lv = {}
for i = 1, #KEYS do
  local cap, cost = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local l = bucket_level(KEYS[i], 'v', cap, cap, ${MINUTE_MS})
  lv[i] = l
  out[i + 1] = string.format('%.17g', l)
  if taking and not bucket_holds(l, cost) then out[1] = 0 end
end
if out[1] == 0 then return out end
for i = 1, #KEYS do
  local cap, cost = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  bucket_store(KEYS[i], 'v', bucket_take(lv[i], cost, cap), cap, cap, ${MINUTE_MS}, ${MINUTE_MS})
end
return out
`;

/**
 * The multi-replica rpm / tpm limiter: one Lua script per reserve and per settle, so replicas never interleave
 * between check and take; all times come from Redis `TIME`. Keys, under `prefix`: `r:<scope>` (requests) and
 * `t:<scope>` (tokens). Deployment as the request limiter: a single Redis or a primary, not Redis Cluster.
 *
 * Failure: the connection fails fast (lua-runner.ts); a reserve that fails or misses `timeoutMs` calls
 * `onBackendError` once and answers by `failMode`. A failed settle is reported and dropped (the buckets stay
 * charged with the reservation); a settle after `close()` is dropped silently. The constructor never throws for
 * an unreachable server or blocks.
 *
 * @example
 * ```ts
 * const limiter = new RedisTokenLimiter({ url: 'redis://127.0.0.1:6379', onBackendError: (e) => log.warn(e) });
 * const r = await limiter.reserve(scopes, 1200); // one round trip, resolves within ~timeoutMs whatever Redis does
 * await r.settle(830);
 * await limiter.close();
 * ```
 * @see MemoryTokenLimiter for the single-process backend with the same semantics.
 */
export class RedisTokenLimiter implements TokenLimiter {
  readonly #conn: LuaRunner<'syTokenBuckets'>;
  readonly #prefix: string;

  constructor(opts: RedisTokenLimiterOptions) {
    this.#prefix = opts.prefix ?? 'sy:tl:';
    this.#conn = new LuaRunner({
      url: opts.url,
      timeoutMs: opts.timeoutMs ?? 50,
      connectionName: 'switchyard-token-limiter',
      label: 'token limiter',
      scripts: { syTokenBuckets: BUCKETS_LUA },
      failMode: opts.failMode ?? 'open',
      onBackendError: opts.onBackendError,
    });
  }

  /** Whether the connection is up and reservations are being checked (false while connecting or reconnecting). */
  get connected(): boolean {
    return this.#conn.ready;
  }

  async reserve(scopes: readonly TokenScope[], tokens: number): Promise<TokenReservation> {
    const buckets = bucketsOf(scopes, tokens);
    if (buckets.length === 0) return UNLIMITED;
    try {
      const reply = await this.#run(true, buckets, (b) => b.cost);
      const levels = new Float64Array(buckets.length);
      for (let i = 0; i < buckets.length; i++) levels[i] = Number(reply[1 + i]);
      const allowed = Number(reply[0]) === 1;
      if (allowed !== allFit(buckets, levels)) throw new Error(`token limiter: script and decision disagree (reply ${JSON.stringify(reply)})`);
      return decide(buckets, levels, allowed, (actual) => this.#settle(buckets, tokens, actual));
    } catch (e) {
      return this.#conn.fallback(e, DEGRADED, UNAVAILABLE);
    }
  }

  async #settle(all: readonly Bucket[], reserved: number, actual: number): Promise<void> {
    const { buckets, delta } = correction(all, reserved, actual);
    if (buckets.length === 0 || this.#conn.closed) return; // after close(): shutting down, nothing to correct
    await this.#run(false, buckets, () => delta).then(swallow, (e: unknown) => this.#conn.report(e));
  }

  /** One run of the script within the deadline; rejects when not connected, on a Redis error or a timeout. */
  #run(taking: boolean, buckets: readonly Bucket[], cost: (b: Bucket) => number): Promise<LuaReply> {
    const keys = buckets.map((b) => `${this.#prefix}${b.dim === 'requests' ? 'r' : 't'}:${b.scope}`);
    const argv: Array<string | number> = [taking ? 1 : 0];
    for (const b of buckets) argv.push(b.cap, cost(b));
    return this.#conn.run('syTokenBuckets', keys, argv);
  }

  /** Stops checking (later reserves answer by the fail mode) and closes the connection. */
  close(): Promise<void> {
    return this.#conn.close();
  }
}
