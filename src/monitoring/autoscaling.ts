/**
 * @module
 * Autoscaling signals, computed at scrape time from counters the data plane already keeps (nothing is added
 * per request):
 *
 * - `switchyard_queue_time_per_request_seconds{model,version}`: Triton's "queue time per request", the queue
 *   time that requests accumulated over the window divided by how many there were (Δ cumulative queue time /
 *   Δ request count; 0 when none started in the window).
 * - `switchyard_instance_utilization{model,version}`: the share of the window the version's instances spent
 *   executing batches (Δ busy seconds / (instances × Δt)), 0..1.
 * - `switchyard_saturation`: the server's largest instance utilization: 1 means some model's instances were
 *   busy the whole window, so its queue can only grow; scale out (or give it more instances).
 *
 * The window: the values cover the last {@link WINDOW_MS} (measured from the newest sample that is at least
 * that old; from start-up until one exists, and since the previous scrape when scrapes are further apart).
 * Samples are taken when the registry is read, at most one per {@link SAMPLE_EVERY_MS}, so a series keeps at
 * most WINDOW_MS / SAMPLE_EVERY_MS + 1 of them and there is no timer. Several scrapers (an HA Prometheus
 * pair) share the samples.
 *
 * The counters these come from (`switchyard_inference_queue_duration_seconds_sum/_count`,
 * `switchyard_instance_busy_seconds_total`) are exported too: across replicas, aggregate those in PromQL
 * rather than averaging these gauges (docs/deployment.md has the queries).
 */
import { Gauge, type Registry } from 'prom-client';

/** How far back the windowed gauges look, in ms. Triton's autoscaling example uses the same 30 s. */
export const WINDOW_MS = 30_000;
/** Fewest ms between two samples of one series. */
export const SAMPLE_EVERY_MS = 1000;

interface Sample {
  at: number;
  num: number;
  den: number;
}

/**
 * Δnum / Δden over a sliding window of samples of two cumulative counters, taken when read.
 *
 * @example
 * const w = new WindowedRatio();
 * w.read(now, queueSeconds, requests); // → average queue seconds per request over the last 30 s
 */
export class WindowedRatio {
  readonly #samples: Sample[] = [];

  /** Record (num, den) at `at` (ms, monotonic) if due, and return Δnum / Δden against the window's base (0 when Δden is 0). */
  read(at: number, num: number, den: number): number {
    const base = this.#base(at, num, den);
    const dDen = den - base.den;
    return dDen > 0 ? (num - base.num) / dDen : 0;
  }

  /** The sample to difference against (then the samples are trimmed and `now` appended when due). */
  #base(at: number, num: number, den: number): Sample {
    const s = this.#samples;
    // Drop samples older than the newest one at least WINDOW_MS old: that one is the base.
    let firstOld = -1;
    for (let i = 0; i < s.length; i++) if (at - s[i]!.at >= WINDOW_MS) firstOld = i;
    if (firstOld > 0) s.splice(0, firstOld);
    const base = s[0] ?? { at: 0, num: 0, den: 0 };
    const last = s[s.length - 1];
    if (last === undefined || at - last.at >= SAMPLE_EVERY_MS) s.push({ at, num, den });
    return base;
  }
}

/** What the autoscaling gauges read per model version. */
export interface VersionCounters {
  readonly model: string;
  readonly version: string;
  /** Cumulative seconds requests of this version waited in its queue, and how many requests that was. */
  queueSeconds(): { sum: number; count: number };
  /** Cumulative instance-seconds spent executing batches. */
  busySeconds(): number;
  /** Instances of the version now (0 when not loaded). */
  instances(): number;
}

/**
 * Register the windowed autoscaling gauges on `registry`; `versions()` lists the series (every version that
 * loaded at least once, so the series exist from the load on). `now` is a monotonic clock in ms (injectable
 * for tests).
 */
export function watchAutoscaling(registry: Registry, versions: () => Iterable<VersionCounters>, now: () => number = () => performance.now()): void {
  const queue = new Map<VersionCounters, WindowedRatio>();
  const busy = new Map<VersionCounters, WindowedRatio>();
  const ratio = (m: Map<VersionCounters, WindowedRatio>, v: VersionCounters): WindowedRatio => {
    let r = m.get(v);
    if (r === undefined) m.set(v, (r = new WindowedRatio()));
    return r;
  };
  // Utilization is Δbusy / Δ(instance-seconds): the denominator counter integrates instances over time.
  const capacity = new Map<VersionCounters, { at: number; instanceSeconds: number }>();
  const utilization = (v: VersionCounters, at: number): number => {
    let c = capacity.get(v);
    if (c === undefined) capacity.set(v, (c = { at, instanceSeconds: 0 }));
    c.instanceSeconds += (v.instances() * (at - c.at)) / 1000;
    c.at = at;
    return Math.min(1, ratio(busy, v).read(at, v.busySeconds(), c.instanceSeconds));
  };
  const mv = ['model', 'version'] as const;
  new Gauge({
    name: 'switchyard_queue_time_per_request_seconds',
    registers: [registry],
    labelNames: mv,
    help: `Average time requests waited in the queue over the last ${WINDOW_MS / 1000} s (Δ queue seconds / Δ requests; 0 when none ran). Autoscaling signal.`,
    collect() {
      const at = now();
      for (const v of versions()) {
        const q = v.queueSeconds();
        this.set({ model: v.model, version: v.version }, ratio(queue, v).read(at, q.sum, q.count));
      }
    },
  });
  new Gauge({
    name: 'switchyard_instance_utilization',
    registers: [registry],
    labelNames: mv,
    help: `Share of the last ${WINDOW_MS / 1000} s the version's instances spent executing batches, 0..1.`,
    collect() {
      const at = now();
      for (const v of versions()) this.set({ model: v.model, version: v.version }, utilization(v, at));
    },
  });
  new Gauge({
    name: 'switchyard_saturation',
    registers: [registry],
    help: `Largest instance utilization of any model version over the last ${WINDOW_MS / 1000} s, 0..1: at 1 some model's queue can only grow. Autoscaling signal.`,
    collect() {
      const at = now();
      let max = 0;
      for (const v of versions()) max = Math.max(max, utilization(v, at));
      this.set(max);
    },
  });
}
