/**
 * @module
 * A per-target circuit breaker: counts outcomes in a sliding window of time buckets, opens when the error
 * share reaches the spec's rate (given enough requests), stays open for a cool-down, then admits one probe
 * (half-open) whose outcome closes or reopens it. Pure: no timers, time comes from an injectable clock.
 */
import type { CircuitBreakerSpec } from '../registry/index.js';

export type CircuitState = 'closed' | 'open' | 'half_open';

export interface CircuitBreakerOptions {
  /** Clock in ms; default performance.now. */
  readonly now?: () => number;
  /** Called on every state change with a short reason. */
  readonly onChange?: (from: CircuitState, to: CircuitState, why: string) => void;
}

/** Buckets in the sliding window. */
const BUCKETS = 10;

export class CircuitBreaker {
  readonly #spec: CircuitBreakerSpec;
  readonly #now: () => number;
  readonly #onChange: ((from: CircuitState, to: CircuitState, why: string) => void) | undefined;
  readonly #bucketMs: number;
  readonly #reqs = new Int32Array(BUCKETS);
  readonly #errs = new Int32Array(BUCKETS);
  /** Bucket number (floor(t / bucketMs)) of the newest bucket. */
  #epoch: number;
  #requests = 0;
  #errors = 0;
  #state: CircuitState = 'closed';
  #openedAt = 0;
  /** When the outstanding probe was admitted; null when none is out. */
  #probeAt: number | null = null;

  constructor(spec: CircuitBreakerSpec, opts: CircuitBreakerOptions = {}) {
    this.#spec = spec;
    this.#now = opts.now ?? (() => performance.now());
    this.#onChange = opts.onChange;
    this.#bucketMs = spec.windowMs / BUCKETS;
    this.#epoch = Math.floor(this.#now() / this.#bucketMs);
  }

  /** Current state; moves open → half_open once the cool-down has passed. */
  get state(): CircuitState {
    return this.#current(this.#now());
  }

  /** May a request be sent now? When half-open, true once for the probe (again if it is abandoned past the cool-down). */
  allow(): boolean {
    const t = this.#now();
    const s = this.#current(t);
    if (s === 'closed') return true;
    if (s === 'open') return false;
    if (this.#probeAt !== null && t - this.#probeAt < this.#spec.cooldownMs) return false;
    this.#probeAt = t;
    return true;
  }

  /** Outcome of an admitted request. Ignored while open, and while half-open with no probe out. */
  record(ok: boolean): void {
    const t = this.#now();
    const s = this.#current(t);
    if (s === 'open') return;
    if (s === 'half_open') {
      if (this.#probeAt === null) return;
      this.#probeAt = null;
      if (ok) {
        this.#clear(t);
        this.#move('closed', 'probe succeeded');
      } else {
        this.#openedAt = t;
        this.#move('open', 'probe failed');
      }
      return;
    }
    this.#advance(t);
    const slot = this.#slot(this.#epoch);
    this.#reqs[slot]!++;
    this.#requests++;
    if (!ok) {
      this.#errs[slot]!++;
      this.#errors++;
    }
    if (this.#requests >= this.#spec.minRequests && this.#errors / this.#requests >= this.#spec.errorRate) {
      this.#openedAt = t;
      this.#move('open', `error rate ${(this.#errors / this.#requests).toFixed(2)} over ${this.#requests} requests in ${this.#spec.windowMs} ms`);
    }
  }

  /** ms until a probe will be admitted: open → rest of the cool-down; half-open with a probe out → until it counts as abandoned; else 0. */
  retryAfterMs(): number {
    const t = this.#now();
    const s = this.#current(t);
    if (s === 'open') return Math.max(0, this.#openedAt + this.#spec.cooldownMs - t);
    if (s === 'half_open' && this.#probeAt !== null) return Math.max(0, this.#probeAt + this.#spec.cooldownMs - t);
    return 0;
  }

  /** Counts in the current window. */
  window(): { requests: number; errors: number } {
    this.#advance(this.#now());
    return { requests: this.#requests, errors: this.#errors };
  }

  #current(t: number): CircuitState {
    if (this.#state === 'open' && t - this.#openedAt >= this.#spec.cooldownMs) {
      this.#probeAt = null;
      this.#move('half_open', 'cool-down elapsed');
    }
    return this.#state;
  }

  #move(to: CircuitState, why: string): void {
    const from = this.#state;
    this.#state = to;
    this.#onChange?.(from, to, why);
  }

  #slot(epoch: number): number {
    return ((epoch % BUCKETS) + BUCKETS) % BUCKETS;
  }

  /** Drop buckets that left the window; a clock going backwards keeps the newest bucket. */
  #advance(t: number): void {
    const e = Math.floor(t / this.#bucketMs);
    if (e <= this.#epoch) return;
    const steps = Math.min(e - this.#epoch, BUCKETS);
    for (let i = 1; i <= steps; i++) {
      const s = this.#slot(this.#epoch + i);
      this.#requests -= this.#reqs[s]!;
      this.#errors -= this.#errs[s]!;
      this.#reqs[s] = 0;
      this.#errs[s] = 0;
    }
    this.#epoch = e;
  }

  #clear(t: number): void {
    this.#reqs.fill(0);
    this.#errs.fill(0);
    this.#requests = 0;
    this.#errors = 0;
    this.#epoch = Math.floor(t / this.#bucketMs);
  }
}
