/**
 * @module
 * Request admission for the multi-tenant gateway: token-bucket rate limits, UTC day / month quotas and
 * in-flight concurrency caps, enforced per scope (a tenant, an API key, a tenant×model pair...).
 *
 * One `admit(scopes)` checks every scope and, only when all of them pass, consumes from all of them at once:
 * a rejected request takes nothing anywhere. Two interchangeable backends implement {@link Limiter}:
 * {@link MemoryLimiter} (one process, exact, injectable clock) and `RedisLimiter` (redis-limiter.ts: several
 * replicas share one exact limit). Both share the decision code below, so headers, reasons and retry delays
 * are computed the same way, and the token-bucket math of bucket.ts (with the LLM API's rpm / tpm limits).
 *
 * Semantics, per scope:
 * - rate: a bucket of `burst` tokens refilled continuously at `rps` tokens/s (fractional tokens), full at
 *   first use; an admitted request takes one token.
 * - quotas: admitted requests per UTC calendar day and per UTC calendar month; rejected ones do not count.
 * - concurrency: admitted requests whose `release()` has not been called yet.
 *
 * When several checks fail, `reason` is the longest-lasting one: quota_monthly, then quota_daily, then rate,
 * then concurrency (so a client is told about an exhausted quota, not about a momentary concurrency peak);
 * among scopes failing that check, the first in the `scopes` array. `retryAfterMs` is the largest wait among
 * all failing checks: a retry cannot succeed before every one of them has cleared.
 */
import { ceilMs, heldLevel, holds, levelAt, msUntilFull, retryMs, take, whole, type BucketShape, type HeldLevel } from './bucket.js';

/** The limits of one scope. `null` disables a limit; `0` for a quota or concurrency admits nothing. */
export interface LimitSpec {
  /** Sustained requests per second (token bucket refill); null = no rate limit. Must be > 0. */
  readonly rps: number | null;
  /** Bucket capacity (max burst), an integer >= 1; null = max(1, ceil(rps)). Ignored without `rps`. */
  readonly burst: number | null;
  /** Max requests in flight at once (across replicas with Redis); null = unlimited. */
  readonly concurrency: number | null;
  /** Requests per UTC calendar day / month; null = unlimited. */
  readonly dailyQuota: number | null;
  readonly monthlyQuota: number | null;
}

/**
 * One limit to enforce, e.g. key "t:acme" (tenant), "k:sy_ab12cd" (API key), "m:acme:resnet" (tenant×model).
 * Keys within one `admit` call must be distinct.
 */
export interface LimitScope {
  readonly key: string;
  readonly spec: LimitSpec;
}

/** Why a request was rejected; 'unavailable': the shared backend failed and the fail mode is 'closed'. */
export type LimitReason = 'rate' | 'concurrency' | 'quota_daily' | 'quota_monthly' | 'unavailable';

/** Quota state reported with an admission (the most constraining quota among the scopes). */
export interface QuotaState {
  readonly period: 'day' | 'month';
  readonly limit: number;
  /** Requests left in the period after this one (>= 0). */
  readonly remaining: number;
  /** ms until the period rolls over (UTC midnight / the 1st of the month). */
  readonly resetMs: number;
}

/** The outcome of one `admit`. Every field is always present (null when it does not apply). */
export interface Admission {
  readonly allowed: boolean;
  /**
   * Why it was rejected; null when allowed. With several failing checks: quota_monthly, quota_daily, rate,
   * concurrency (the first in this order); 'unavailable' when the backend failed in fail-closed mode.
   */
  readonly reason: LimitReason | null;
  /** The scope key that rejected, or null (allowed, or 'unavailable'). */
  readonly scope: string | null;
  /** For x-ratelimit-* headers: from the most restrictive rate-limited scope (fewest remaining tokens); all null when no scope has a rate limit. */
  readonly limit: number | null;
  /** Whole tokens left after this request (floor), >= 0. */
  readonly remaining: number | null;
  /** ms until that bucket is full again. */
  readonly resetMs: number | null;
  /**
   * When rejected: ms until a retry can succeed (rate: until 1 token; quota: until the period rolls over;
   * concurrency: {@link CONCURRENCY_RETRY_MS}; unavailable: {@link UNAVAILABLE_RETRY_MS}). 0 when allowed.
   */
  readonly retryAfterMs: number;
  /** Quota state for the most constraining quota among scopes (fewest remaining), or null when none. */
  readonly quota: QuotaState | null;
  /** True when the backend failed and the fail-open policy admitted the request without checking. */
  readonly degraded: boolean;
  /** Frees the concurrency slot(s) taken by this admission. Idempotent; a no-op when nothing was taken. Never throws, never rejects. */
  release(): void;
}

/**
 * A rate / quota / concurrency limiter. `admit` never rejects because of its backend (see the fail mode of
 * each implementation); it rejects only with a RangeError for an invalid scope list (a programmer error:
 * a bad spec, or a key repeated).
 */
export interface Limiter {
  /** Check every scope and, only if ALL pass, consume from all of them atomically (a rejected request consumes nothing anywhere). */
  admit(scopes: readonly LimitScope[]): Promise<Admission>;
  /** Release the backend. Admissions still held may be released afterwards (a no-op). */
  close(): Promise<void>;
}

/** Retry delay (ms) reported for a rejection by a concurrency cap: slots free up when requests finish. */
export const CONCURRENCY_RETRY_MS = 100;
/** Retry delay (ms) reported when the backend is unavailable and the fail mode is 'closed'. */
export const UNAVAILABLE_RETRY_MS = 1000;

const DAY_MS = 86_400_000;
/** Ranks of the checks when several fail: the lowest is reported. */
const RANK_MONTH = 0;
const RANK_DAY = 1;
const RANK_RATE = 2;
const RANK_CONC = 3;
const NO_RANK = 9;

/**
 * Layout of the per-scope state that both backends observe before consuming: `STATE_WIDTH` numbers per
 * scope, in the order tokens (refilled, before this request), in flight, used today, used this month.
 * @internal
 */
export const STATE_WIDTH = 4;

function checkCount(key: string, name: string, v: number | null): void {
  if (v !== null && !(Number.isInteger(v) && v >= 0)) {
    throw new RangeError(`limit scope "${key}": ${name} must be an integer >= 0 or null, got ${v}`);
  }
}

/** A rate bucket refills `rps` tokens per second. */
const SECOND_MS = 1000;

/**
 * Validates `scopes` and returns each scope's rate bucket (null: no rate limit): capacity `burst`, refilled at
 * `rps` per second. Throws a RangeError naming the scope for an invalid spec or a repeated key.
 * @internal
 */
export function rateBuckets(scopes: readonly LimitScope[]): Array<BucketShape | null> {
  const rates = new Array<BucketShape | null>(scopes.length);
  for (let i = 0; i < scopes.length; i++) {
    const { key, spec } = scopes[i]!;
    for (let j = 0; j < i; j++) {
      if (scopes[j]!.key === key) throw new RangeError(`limit scope "${key}" appears twice in one admit`);
    }
    checkCount(key, 'concurrency', spec.concurrency);
    checkCount(key, 'dailyQuota', spec.dailyQuota);
    checkCount(key, 'monthlyQuota', spec.monthlyQuota);
    const { rps, burst } = spec;
    if (rps === null) {
      rates[i] = null;
      continue;
    }
    if (!(rps > 0 && Number.isFinite(rps))) {
      throw new RangeError(`limit scope "${key}": rps must be a positive finite number or null, got ${rps}`);
    }
    if (burst !== null && !(Number.isInteger(burst) && burst >= 1)) {
      throw new RangeError(`limit scope "${key}": burst must be an integer >= 1 or null, got ${burst}`);
    }
    rates[i] = { cap: burst ?? Math.max(1, Math.ceil(rps)), rate: rps, perMs: SECOND_MS };
  }
  return rates;
}

/** True when the spec limits anything (a scope with no limit needs no state). @internal */
export function isLimited(spec: LimitSpec): boolean {
  return spec.rps !== null || spec.concurrency !== null || spec.dailyQuota !== null || spec.monthlyQuota !== null;
}

/** The UTC day and month containing one instant: bounds in epoch ms, ids as used in backend keys. @internal */
export interface Periods {
  readonly dayStart: number;
  readonly dayEnd: number;
  /** YYYY-MM-DD */
  readonly dayId: string;
  readonly monthStart: number;
  readonly monthEnd: number;
  /** YYYY-MM */
  readonly monthId: string;
}

function periodsOf(now: number): Periods {
  const d = new Date(now);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  const dayStart = Date.UTC(y, m, d.getUTCDate());
  const monthId = `${String(y).padStart(4, '0')}-${String(m + 1).padStart(2, '0')}`;
  return {
    dayStart,
    dayEnd: dayStart + DAY_MS,
    dayId: `${monthId}-${String(d.getUTCDate()).padStart(2, '0')}`,
    monthStart: Date.UTC(y, m, 1),
    monthEnd: Date.UTC(y, m + 1, 1),
    monthId,
  };
}

/**
 * Caches the {@link Periods} of the current day: recomputed only when an instant falls outside it. The
 * returned objects are immutable, so a caller may hold one across an await.
 * @internal
 */
export class PeriodCache {
  #cur: Periods = periodsOf(0);

  at(now: number): Periods {
    const c = this.#cur;
    if (now >= c.dayStart && now < c.dayEnd) return c;
    this.#cur = periodsOf(now);
    return this.#cur;
  }
}

/** The one Admission implementation: a plain record plus a release hook that runs at most once. @internal */
export class AdmissionResult implements Admission {
  #release: (() => void) | null;

  constructor(
    readonly allowed: boolean,
    readonly reason: LimitReason | null,
    readonly scope: string | null,
    readonly limit: number | null,
    readonly remaining: number | null,
    readonly resetMs: number | null,
    readonly retryAfterMs: number,
    readonly quota: QuotaState | null,
    readonly degraded: boolean,
    release: (() => void) | null,
  ) {
    this.#release = release;
  }

  release(): void {
    const r = this.#release;
    if (r === null) return;
    this.#release = null;
    try {
      r();
    } catch {
      // release never throws: a backend problem is reported by the backend's own hook
    }
  }
}

/** Admitted with nothing to check (no scope limits anything). @internal */
export function unlimited(): Admission {
  return new AdmissionResult(true, null, null, null, null, null, 0, null, false, null);
}

/** The backend failed and the fail mode is 'open': admitted without checking. @internal */
export function degradedAdmission(): Admission {
  return new AdmissionResult(true, null, null, null, null, null, 0, null, true, null);
}

/** The backend failed and the fail mode is 'closed': rejected as 'unavailable'. @internal */
export function unavailableAdmission(): Admission {
  return new AdmissionResult(false, 'unavailable', null, null, null, null, UNAVAILABLE_RETRY_MS, null, false, null);
}

/**
 * Whether every check passes on the observed `state` (see {@link STATE_WIDTH}). The Redis script applies the
 * same comparisons server-side.
 * @internal
 */
export function allPass(scopes: readonly LimitScope[], rates: readonly (BucketShape | null)[], state: ArrayLike<number>): boolean {
  for (let i = 0; i < scopes.length; i++) {
    const spec = scopes[i]!.spec;
    const s = i * STATE_WIDTH;
    if (rates[i] != null && !holds(state[s]!, 1)) return false;
    if (spec.concurrency !== null && state[s + 1]! >= spec.concurrency) return false;
    if (spec.dailyQuota !== null && state[s + 2]! >= spec.dailyQuota) return false;
    if (spec.monthlyQuota !== null && state[s + 3]! >= spec.monthlyQuota) return false;
  }
  return true;
}

/**
 * Builds the Admission from the state observed before consuming (see {@link STATE_WIDTH}) and the verdict:
 * headers from the scope with the fewest tokens left, the most constraining quota, and for a rejection the
 * reason, scope and retry delay (see the module comment for the order).
 * @internal
 */
export function decide(
  scopes: readonly LimitScope[],
  rates: readonly (BucketShape | null)[],
  state: ArrayLike<number>,
  allowed: boolean,
  now: number,
  periods: Periods,
  release: (() => void) | null,
): Admission {
  const took = allowed ? 1 : 0;
  let rank = NO_RANK;
  let reason: LimitReason | null = null;
  let scope: string | null = null;
  let retryAfterMs = 0;
  let limit: number | null = null;
  let remaining: number | null = null;
  let resetMs: number | null = null;
  let quota: QuotaState | null = null;
  const fail = (r: number, why: LimitReason, key: string, waitMs: number): void => {
    if (r < rank) {
      rank = r;
      reason = why;
      scope = key;
    }
    if (waitMs > retryAfterMs) retryAfterMs = waitMs;
  };
  const quotaSeen = (period: 'day' | 'month', max: number, used: number, periodEnd: number, key: string, r: number): void => {
    const left = Math.max(0, max - used - took);
    const reset = Math.max(1, ceilMs(periodEnd - now));
    if (quota === null || left < quota.remaining || (left === quota.remaining && reset > quota.resetMs)) {
      quota = { period, limit: max, remaining: left, resetMs: reset };
    }
    if (!allowed && used >= max) fail(r, period === 'day' ? 'quota_daily' : 'quota_monthly', key, reset);
  };

  for (let i = 0; i < scopes.length; i++) {
    const { key, spec } = scopes[i]!;
    const s = i * STATE_WIDTH;
    const b = rates[i];
    if (b != null) {
      const tokens = state[s]!;
      const after = tokens - took;
      const left = whole(after);
      if (remaining === null || left < remaining) {
        limit = b.cap;
        remaining = left;
        resetMs = msUntilFull(b, after);
      }
      if (!allowed && !holds(tokens, 1)) fail(RANK_RATE, 'rate', key, retryMs(b, tokens, 1));
    }
    if (spec.concurrency !== null && !allowed && state[s + 1]! >= spec.concurrency) {
      fail(RANK_CONC, 'concurrency', key, CONCURRENCY_RETRY_MS);
    }
    if (spec.dailyQuota !== null) quotaSeen('day', spec.dailyQuota, state[s + 2]!, periods.dayEnd, key, RANK_DAY);
    if (spec.monthlyQuota !== null) quotaSeen('month', spec.monthlyQuota, state[s + 3]!, periods.monthEnd, key, RANK_MONTH);
  }
  if (!allowed && reason === null) {
    // Unreachable while the backend and allPass agree; keep the contract (a reason on every rejection).
    reason = 'rate';
    retryAfterMs = CONCURRENCY_RETRY_MS;
  }
  return new AdmissionResult(allowed, reason, scope, limit, remaining, resetMs, retryAfterMs, quota, false, allowed ? release : null);
}

/** One scope's state in the memory backend. */
interface Entry {
  /** The rate bucket (undefined: full, never used); the entry may be swept once it is full again if nothing else is held. */
  bucket: HeldLevel | undefined;
  inFlight: number;
  /** End of the day / month that `dayUsed` / `monthUsed` count. */
  dayEnd: number;
  dayUsed: number;
  monthEnd: number;
  monthUsed: number;
}

/** Admissions between two sweeps of idle entries (keeps the map bounded by the scopes in use). */
const SWEEP_EVERY = 1024;

/**
 * The in-process limiter: exact, synchronous under the hood, one process only. Concurrency slots have no
 * lease: an admission that is never released holds its slot until `close()`.
 *
 * @example
 * ```ts
 * const limiter = new MemoryLimiter();
 * const a = await limiter.admit([{ key: 't:acme', spec: { rps: 10, burst: 20, concurrency: 4, dailyQuota: null, monthlyQuota: 100_000 } }]);
 * if (!a.allowed) reply.code(429).header('retry-after-ms', a.retryAfterMs);
 * try { ... } finally { a.release(); }
 * ```
 * @see RedisLimiter (redis-limiter.ts) for the shared, multi-replica backend.
 */
export class MemoryLimiter implements Limiter {
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #periods = new PeriodCache();
  #sinceSweep = 0;

  /** `now`: the clock (epoch ms), injectable for tests. @default Date.now */
  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? Date.now;
  }

  /** Scopes with state held (for tests and metrics). */
  get size(): number {
    return this.#entries.size;
  }

  async admit(scopes: readonly LimitScope[]): Promise<Admission> {
    const rates = rateBuckets(scopes);
    const n = scopes.length;
    const now = this.#now();
    const periods = this.#periods.at(now);
    const entries = new Array<Entry | null>(n);
    const state = new Float64Array(n * STATE_WIDTH);
    let limited = false;
    for (let i = 0; i < n; i++) {
      const { key, spec } = scopes[i]!;
      if (!isLimited(spec)) {
        entries[i] = null;
        continue;
      }
      limited = true;
      let e = this.#entries.get(key);
      if (e === undefined) {
        e = { bucket: undefined, inFlight: 0, dayEnd: 0, dayUsed: 0, monthEnd: 0, monthUsed: 0 };
        this.#entries.set(key, e);
      }
      entries[i] = e;
      const s = i * STATE_WIDTH;
      const b = rates[i];
      if (b != null) state[s] = levelAt(b, e.bucket, now);
      state[s + 1] = e.inFlight;
      state[s + 2] = e.dayEnd === periods.dayEnd ? e.dayUsed : 0;
      state[s + 3] = e.monthEnd === periods.monthEnd ? e.monthUsed : 0;
    }
    if (!limited) return unlimited();

    const allowed = allPass(scopes, rates, state);
    let held: Entry[] | null = null;
    if (allowed) {
      for (let i = 0; i < n; i++) {
        const e = entries[i];
        if (e == null) continue;
        const spec = scopes[i]!.spec;
        const s = i * STATE_WIDTH;
        const b = rates[i];
        if (b != null) e.bucket = heldLevel(b, take(b, state[s]!, 1), now);
        if (spec.concurrency !== null) {
          e.inFlight++;
          (held ??= []).push(e);
        }
        if (spec.dailyQuota !== null) {
          e.dayUsed = state[s + 2]! + 1;
          e.dayEnd = periods.dayEnd;
        }
        if (spec.monthlyQuota !== null) {
          e.monthUsed = state[s + 3]! + 1;
          e.monthEnd = periods.monthEnd;
        }
      }
    }
    if (++this.#sinceSweep >= SWEEP_EVERY) this.#sweep(now);
    const slots = held;
    return decide(
      scopes,
      rates,
      state,
      allowed,
      now,
      periods,
      slots === null
        ? null
        : () => {
            for (const e of slots) e.inFlight--;
          },
    );
  }

  /** Drops entries that hold nothing: full bucket, no request in flight, no count in a current period. */
  #sweep(now: number): void {
    this.#sinceSweep = 0;
    for (const [key, e] of this.#entries) {
      if (
        e.inFlight === 0 &&
        (e.bucket === undefined || now >= e.bucket.fullAt) &&
        (e.dayUsed === 0 || now >= e.dayEnd) &&
        (e.monthUsed === 0 || now >= e.monthEnd)
      ) {
        this.#entries.delete(key);
      }
    }
  }

  /** Forgets all state. Admissions still held release into nothing. */
  async close(): Promise<void> {
    this.#entries.clear();
  }
}
