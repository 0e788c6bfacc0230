/**
 * @module
 * A short in-process time series of serving per model — requests, errors, latency quantiles, queue vs compute
 * time, batch sizes — over the last hour in fixed steps (default 360 × 10 s), so the web console's overview
 * works without Prometheus. Fed from the `request` and `batch` events (off the hot path: the data plane only
 * publishes); recording is O(1) and allocation-free once a model has a series.
 *
 *   slot = step number % steps    one Float64Array row of STRIDE numbers per slot, per model
 *   epochs[slot] = step number    a slot whose epoch is stale is zeroed before it is written, skipped when read
 *
 * Latencies are counted in fixed histogram bins (the Prometheus histogram's), quantiles interpolated within a
 * bin as `histogram_quantile` does: exact to the bin, bounded memory.
 */
import type { BatchEvent, RequestEvent } from '../events.js';

/** Upper bounds of the latency bins, ms (a last, open bin follows). */
export const LATENCY_BOUNDS_MS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000] as const;
/** Upper bounds of the batch-size bins, rows (a last, open bin follows). */
export const BATCH_BOUNDS_ROWS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] as const;

const REQUESTS = 0;
const ERRORS = 1;
const CLIENT_ERRORS = 2;
const OK = 3;
const QUEUE_SUM = 4;
const COMPUTE_SUM = 5;
const CACHED = 6;
const BATCHES = 7;
const BATCH_ROWS = 8;
const LAT = 9;
const LAT_BINS = LATENCY_BOUNDS_MS.length + 1;
const BATCH = LAT + LAT_BINS;
const BATCH_BINS = BATCH_BOUNDS_ROWS.length + 1;
const STRIDE = BATCH + BATCH_BINS;

export interface TimelineOptions {
  /** Step length, ms. Default 10000. */
  readonly stepMs?: number;
  /** Steps kept (the window is stepMs × steps). Default 360 (one hour of 10 s steps). */
  readonly steps?: number;
  /** Models with a series at most (further models are not recorded). Default 1000. */
  readonly maxModels?: number;
  /** Clock, ms since the epoch. Default Date.now. */
  readonly now?: () => number;
  /**
   * How often the current step is read from the clock, ms (events are counted in the step as of the last tick:
   * reading the clock per event would cost more than the rest of `record`). 0 = only when `tick()` is called
   * (tests). Default 1000.
   */
  readonly tickMs?: number;
}

/** One model's serving over a window: per-step columns (null where a step had no data) and totals. */
export interface ModelTimeline {
  readonly model: string;
  /** Start of each step, ms since the epoch (oldest first, the current step last). */
  readonly t: number[];
  readonly requests: number[];
  /** Requests that failed on the server side (bad input and cancellations are the caller's: not counted). */
  readonly errors: number[];
  readonly p50Ms: (number | null)[];
  readonly p95Ms: (number | null)[];
  readonly p99Ms: (number | null)[];
  /** Mean time a successful request waited in the queue / its batch computed, ms. */
  readonly queueMs: (number | null)[];
  readonly computeMs: (number | null)[];
  readonly totals: {
    readonly requests: number;
    readonly errors: number;
    readonly clientErrors: number;
    readonly cached: number;
    /** Requests per second over the window. */
    readonly rate: number;
    readonly errorRate: number | null;
    readonly p50Ms: number | null;
    readonly p95Ms: number | null;
    readonly p99Ms: number | null;
    readonly queueMs: number | null;
    readonly computeMs: number | null;
  };
  /** Executed batches by size (rows): counts per bin, `bounds` the bins' upper bounds (a last, open bin follows). */
  readonly batches: { readonly bounds: readonly number[]; readonly counts: number[]; readonly total: number; readonly meanRows: number | null };
}

/** Quantile q of a binned histogram (counts per bin, bounds the upper bounds), interpolated within its bin. */
export function binnedQuantile(counts: ArrayLike<number>, offset: number, bounds: readonly number[], q: number): number | null {
  let total = 0;
  for (let i = 0; i <= bounds.length; i++) total += counts[offset + i]!;
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i <= bounds.length; i++) {
    const c = counts[offset + i]!;
    if (c > 0 && seen + c >= rank) {
      if (i === bounds.length) return bounds[i - 1]!;
      const lo = i === 0 ? 0 : bounds[i - 1]!;
      return lo + (bounds[i]! - lo) * ((rank - seen) / c);
    }
    seen += c;
  }
  return bounds[bounds.length - 1]!;
}

function binOf(bounds: readonly number[], v: number): number {
  let i = 0;
  while (i < bounds.length && v > bounds[i]!) i++;
  return i;
}

class Series {
  readonly data: Float64Array;
  readonly epochs: Float64Array;
  constructor(steps: number) {
    this.data = new Float64Array(steps * STRIDE);
    this.epochs = new Float64Array(steps).fill(-1);
  }

  /** The step last written and its row offset (most events land in the current step). */
  step = -1;
  off = 0;

  /** The row offset for step `n`, zeroed first when it held an older step. */
  row(n: number): number {
    if (n === this.step) return this.off;
    const slot = n % this.epochs.length;
    const off = slot * STRIDE;
    if (this.epochs[slot] !== n) {
      this.data.fill(0, off, off + STRIDE);
      this.epochs[slot] = n;
    }
    if (n > this.step) {
      this.step = n;
      this.off = off;
    }
    return off;
  }
}

const round = (v: number | null): number | null => (v === null ? null : Math.round(v * 1000) / 1000);

/** Requests and batches per model over the last `stepMs × steps`; see the module comment. */
export class ServingTimeline {
  readonly stepMs: number;
  readonly steps: number;
  readonly #now: () => number;
  readonly #maxModels: number;
  readonly #series = new Map<string, Series>();
  readonly #timer: NodeJS.Timeout | null;
  /** The current step number, as of the last tick. */
  #step = 0;
  /** The series of the model recorded last (consecutive events are often the same model's). */
  #lastModel: string | null = null;
  #last: Series | null = null;

  constructor(opts: TimelineOptions = {}) {
    this.stepMs = opts.stepMs ?? 10_000;
    this.steps = opts.steps ?? 360;
    this.#now = opts.now ?? Date.now;
    this.#maxModels = opts.maxModels ?? 1000;
    if (!(this.stepMs > 0) || !Number.isInteger(this.steps) || this.steps < 1) throw new RangeError('stepMs must be > 0 and steps a positive integer');
    this.tick();
    const tickMs = opts.tickMs ?? 1000;
    this.#timer = tickMs > 0 ? setInterval(() => this.tick(), tickMs) : null;
    this.#timer?.unref();
  }

  /** Read the clock: events from now on count in its step. */
  tick(): void {
    this.#step = Math.floor(this.#now() / this.stepMs);
  }

  /** Stop the clock timer. */
  close(): void {
    if (this.#timer) clearInterval(this.#timer);
  }

  #seriesOf(model: string): Series | null {
    if (model === this.#lastModel) return this.#last;
    let s = this.#series.get(model);
    if (s === undefined) {
      if (this.#series.size >= this.#maxModels) return null;
      this.#series.set(model, (s = new Series(this.steps)));
    }
    this.#lastModel = model;
    this.#last = s;
    return s;
  }

  /** Count one finished request. */
  record(e: RequestEvent): void {
    const s = this.#seriesOf(e.model);
    if (s === null) return;
    const d = s.data;
    const o = s.row(this.#step);
    d[o + REQUESTS]!++;
    if (e.cached) d[o + CACHED]!++;
    if (e.ok) {
      d[o + OK]!++;
      d[o + QUEUE_SUM]! += e.queueMs;
      d[o + COMPUTE_SUM]! += e.computeMs;
      d[o + LAT + binOf(LATENCY_BOUNDS_MS, e.totalMs)]!++;
    } else if (e.reason === 'invalid_input' || e.reason === 'cancelled') {
      d[o + CLIENT_ERRORS]!++;
    } else {
      d[o + ERRORS]!++;
    }
  }

  /** Count one executed batch. */
  recordBatch(e: BatchEvent): void {
    const s = this.#seriesOf(e.model);
    if (s === null) return;
    const d = s.data;
    const o = s.row(this.#step);
    d[o + BATCHES]!++;
    d[o + BATCH_ROWS]! += e.rows;
    d[o + BATCH + binOf(BATCH_BOUNDS_ROWS, e.rows)]!++;
  }

  /** Models with a series (some traffic since start). */
  models(): string[] {
    return [...this.#series.keys()];
  }

  /** A model's last `windowMs` (default: the whole window), one point per step; zeros when it had no traffic. */
  read(model: string, windowMs = this.stepMs * this.steps): ModelTimeline {
    const n = Math.max(1, Math.min(this.steps, Math.ceil(windowMs / this.stepMs)));
    this.tick();
    const current = this.#step;
    const s = this.#series.get(model);
    const sum = new Float64Array(STRIDE);
    const out = {
      t: [] as number[],
      requests: [] as number[],
      errors: [] as number[],
      p50Ms: [] as (number | null)[],
      p95Ms: [] as (number | null)[],
      p99Ms: [] as (number | null)[],
      queueMs: [] as (number | null)[],
      computeMs: [] as (number | null)[],
    };
    for (let step = current - n + 1; step <= current; step++) {
      out.t.push(step * this.stepMs);
      const slot = step % this.steps;
      const live = s !== undefined && step >= 0 && s.epochs[slot] === step;
      const o = slot * STRIDE;
      const d = live ? s.data : null;
      if (d === null) {
        out.requests.push(0);
        out.errors.push(0);
        out.p50Ms.push(null);
        out.p95Ms.push(null);
        out.p99Ms.push(null);
        out.queueMs.push(null);
        out.computeMs.push(null);
        continue;
      }
      for (let i = 0; i < STRIDE; i++) sum[i]! += d[o + i]!;
      const ok = d[o + OK]!;
      out.requests.push(d[o + REQUESTS]!);
      out.errors.push(d[o + ERRORS]!);
      out.p50Ms.push(round(binnedQuantile(d, o + LAT, LATENCY_BOUNDS_MS, 0.5)));
      out.p95Ms.push(round(binnedQuantile(d, o + LAT, LATENCY_BOUNDS_MS, 0.95)));
      out.p99Ms.push(round(binnedQuantile(d, o + LAT, LATENCY_BOUNDS_MS, 0.99)));
      out.queueMs.push(ok > 0 ? round(d[o + QUEUE_SUM]! / ok) : null);
      out.computeMs.push(ok > 0 ? round(d[o + COMPUTE_SUM]! / ok) : null);
    }
    const ok = sum[OK]!;
    const served = sum[REQUESTS]! - sum[CLIENT_ERRORS]!;
    return {
      model,
      ...out,
      totals: {
        requests: sum[REQUESTS]!,
        errors: sum[ERRORS]!,
        clientErrors: sum[CLIENT_ERRORS]!,
        cached: sum[CACHED]!,
        rate: Math.round((sum[REQUESTS]! / ((n * this.stepMs) / 1000)) * 1e6) / 1e6,
        errorRate: served > 0 ? round(sum[ERRORS]! / served) : null,
        p50Ms: round(binnedQuantile(sum, LAT, LATENCY_BOUNDS_MS, 0.5)),
        p95Ms: round(binnedQuantile(sum, LAT, LATENCY_BOUNDS_MS, 0.95)),
        p99Ms: round(binnedQuantile(sum, LAT, LATENCY_BOUNDS_MS, 0.99)),
        queueMs: ok > 0 ? round(sum[QUEUE_SUM]! / ok) : null,
        computeMs: ok > 0 ? round(sum[COMPUTE_SUM]! / ok) : null,
      },
      batches: {
        bounds: BATCH_BOUNDS_ROWS,
        counts: Array.from(sum.subarray(BATCH, BATCH + BATCH_BINS)),
        total: sum[BATCHES]!,
        meanRows: sum[BATCHES]! > 0 ? round(sum[BATCH_ROWS]! / sum[BATCHES]!) : null,
      },
    };
  }
}
