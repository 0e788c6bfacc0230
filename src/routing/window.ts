/**
 * @module
 * Serving statistics for experiment guardrails and shadow reports: requests, errors and latency over a sliding
 * window per key (time buckets plus a bounded ring of recent latencies), and a running aggregate of shadow
 * comparisons per (model, shadow target).
 */
import type { OutputComparison } from './compare.js';

export interface WindowSnapshot {
  readonly requests: number;
  readonly errors: number;
  readonly errorRate: number | null;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly meanMs: number | null;
}

export interface WindowStatsOptions {
  /** Window length, ms. Default 300000. */
  readonly windowMs?: number;
  /** Time buckets in the window. Default 30. */
  readonly buckets?: number;
  /** Latencies kept per key (the most recent of the window). Default 2048. */
  readonly samples?: number;
  /** Clock in ms; default performance.now. */
  readonly now?: () => number;
}

const DEFAULT_SAMPLES = 2048;

/** Nearest-rank quantile of an ascending array. */
function quantile(sorted: Float64Array, q: number): number {
  const rank = Math.max(1, Math.ceil(q * sorted.length - 1e-9));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

/** A fixed ring of recent latencies, with an optional tag (bucket number) per sample. */
class Ring {
  readonly values: Float64Array;
  readonly tags: Float64Array;
  next = 0;
  size = 0;

  constructor(capacity: number) {
    this.values = new Float64Array(capacity);
    this.tags = new Float64Array(capacity);
  }

  push(v: number, tag: number): void {
    this.values[this.next] = v;
    this.tags[this.next] = tag;
    this.next = (this.next + 1) % this.values.length;
    if (this.size < this.values.length) this.size++;
  }

  /** Sorted copy of the samples whose tag is >= minTag. */
  sorted(minTag: number): Float64Array {
    const out = new Float64Array(this.size);
    let n = 0;
    for (let i = 0; i < this.size; i++) if (this.tags[i]! >= minTag) out[n++] = this.values[i]!;
    return out.subarray(0, n).sort();
  }

  clear(): void {
    this.next = 0;
    this.size = 0;
  }
}

interface KeyState {
  readonly reqs: Int32Array;
  readonly errs: Int32Array;
  /** Latency sum and count per bucket (non-finite or negative latencies are not counted). */
  readonly latSum: Float64Array;
  readonly latN: Int32Array;
  readonly ring: Ring;
  epoch: number;
}

/** Requests, errors and latency over the last windowMs, per key. record() is O(1) and allocation-free once a key exists. */
export class WindowStats {
  readonly #buckets: number;
  readonly #bucketMs: number;
  readonly #samples: number;
  readonly #now: () => number;
  readonly #keys = new Map<string, KeyState>();

  constructor(opts: WindowStatsOptions = {}) {
    const windowMs = opts.windowMs ?? 300_000;
    this.#buckets = Math.max(1, Math.floor(opts.buckets ?? 30));
    this.#bucketMs = windowMs / this.#buckets;
    this.#samples = Math.max(1, Math.floor(opts.samples ?? DEFAULT_SAMPLES));
    this.#now = opts.now ?? (() => performance.now());
  }

  record(key: string, ok: boolean, latencyMs: number): void {
    const e = Math.floor(this.#now() / this.#bucketMs);
    let st = this.#keys.get(key);
    if (st === undefined) {
      const b = this.#buckets;
      st = { reqs: new Int32Array(b), errs: new Int32Array(b), latSum: new Float64Array(b), latN: new Int32Array(b), ring: new Ring(this.#samples), epoch: e };
      this.#keys.set(key, st);
    } else {
      this.#advance(st, e);
    }
    const s = this.#slot(st.epoch);
    st.reqs[s]!++;
    if (!ok) st.errs[s]!++;
    if (Number.isFinite(latencyMs) && latencyMs >= 0) {
      st.latSum[s]! += latencyMs;
      st.latN[s]!++;
      st.ring.push(latencyMs, st.epoch);
    }
  }

  /** Window counts and latency quantiles; zeros and nulls for an unknown key. */
  snapshot(key: string): WindowSnapshot {
    const st = this.#keys.get(key);
    if (st === undefined) return { requests: 0, errors: 0, errorRate: null, p50Ms: null, p99Ms: null, meanMs: null };
    this.#advance(st, Math.floor(this.#now() / this.#bucketMs));
    let requests = 0;
    let errors = 0;
    let latSum = 0;
    let latN = 0;
    for (let i = 0; i < this.#buckets; i++) {
      requests += st.reqs[i]!;
      errors += st.errs[i]!;
      latSum += st.latSum[i]!;
      latN += st.latN[i]!;
    }
    const sorted = st.ring.sorted(st.epoch - this.#buckets + 1);
    const has = sorted.length > 0;
    return {
      requests,
      errors,
      errorRate: requests === 0 ? null : errors / requests,
      p50Ms: has ? quantile(sorted, 0.5) : null,
      p99Ms: has ? quantile(sorted, 0.99) : null,
      meanMs: latN === 0 ? null : latSum / latN,
    };
  }

  keys(): string[] {
    return [...this.#keys.keys()];
  }

  /** Forget one key, or all. */
  reset(key?: string): void {
    if (key === undefined) this.#keys.clear();
    else this.#keys.delete(key);
  }

  #slot(epoch: number): number {
    return ((epoch % this.#buckets) + this.#buckets) % this.#buckets;
  }

  /** Clear buckets that left the window; a clock going backwards keeps the newest bucket. */
  #advance(st: KeyState, e: number): void {
    if (e <= st.epoch) return;
    const steps = Math.min(e - st.epoch, this.#buckets);
    for (let i = 1; i <= steps; i++) {
      const s = this.#slot(st.epoch + i);
      st.reqs[s] = 0;
      st.errs[s] = 0;
      st.latSum[s] = 0;
      st.latN[s] = 0;
    }
    if (steps === this.#buckets) st.ring.clear();
    st.epoch = e;
  }
}

export interface ShadowSnapshot {
  readonly copies: number;
  readonly ok: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly dropped: number;
  readonly meanMaxAbsDiff: number | null;
  readonly maxAbsDiff: number | null;
  readonly agreement: number | null;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly mismatches: number;
}

/** Running aggregate of shadow comparisons for one (model, shadow target). */
export class ShadowStats {
  #copies = 0;
  #ok = 0;
  #errors = 0;
  #timeouts = 0;
  #dropped = 0;
  #diffSum = 0;
  #diffN = 0;
  #diffMax: number | null = null;
  #agreeSum = 0;
  #agreeRows = 0;
  #mismatches = 0;
  readonly #ring: Ring;

  constructor(opts: { samples?: number } = {}) {
    this.#ring = new Ring(Math.max(1, Math.floor(opts.samples ?? DEFAULT_SAMPLES)));
  }

  /** One shadow copy's outcome; latency is kept when finite and >= 0, the comparison when given. */
  record(outcome: 'ok' | 'error' | 'timeout' | 'dropped', latencyMs: number | null, cmp: OutputComparison | null): void {
    this.#copies++;
    if (outcome === 'ok') this.#ok++;
    else if (outcome === 'error') this.#errors++;
    else if (outcome === 'timeout') this.#timeouts++;
    else this.#dropped++;
    if (latencyMs !== null && Number.isFinite(latencyMs) && latencyMs >= 0) this.#ring.push(latencyMs, 0);
    if (cmp === null) return;
    if (cmp.maxAbsDiff !== null) {
      this.#diffSum += cmp.maxAbsDiff;
      this.#diffN++;
      if (this.#diffMax === null || cmp.maxAbsDiff > this.#diffMax) this.#diffMax = cmp.maxAbsDiff;
    }
    if (cmp.agreement !== null && cmp.rows > 0) {
      this.#agreeSum += cmp.agreement * cmp.rows;
      this.#agreeRows += cmp.rows;
    }
    if (cmp.mismatches.length > 0) this.#mismatches++;
  }

  snapshot(): ShadowSnapshot {
    const sorted = this.#ring.sorted(-Infinity);
    const has = sorted.length > 0;
    return {
      copies: this.#copies,
      ok: this.#ok,
      errors: this.#errors,
      timeouts: this.#timeouts,
      dropped: this.#dropped,
      meanMaxAbsDiff: this.#diffN === 0 ? null : this.#diffSum / this.#diffN,
      maxAbsDiff: this.#diffMax,
      agreement: this.#agreeRows === 0 ? null : this.#agreeSum / this.#agreeRows,
      p50Ms: has ? quantile(sorted, 0.5) : null,
      p99Ms: has ? quantile(sorted, 0.99) : null,
      mismatches: this.#mismatches,
    };
  }
}
