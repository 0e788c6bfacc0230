/**
 * @module
 * prom-client counters and histograms for per-request paths. A prom-client label child still validates and
 * hashes its labels on every inc/observe (a few hundred nanoseconds each, several per request); a hot child is
 * a handful of plain numbers bound to one series, and the metric adds its series to what prom-client exports
 * at scrape time. Same registry, same exposition, same names: the metrics are real prom-client metrics.
 *
 * Use `child(...labelValues)` once per series (cache it), never `inc`/`observe` with labels on the same metric:
 * the two would export the same series twice.
 *
 * @example
 * const latency = new HotHistogram({ name: 'x_seconds', help: '…', labelNames: ['model'], buckets: [0.01, 0.1, 1], registers: [registry] });
 * const ofModel = latency.child('mlp'); // once
 * ofModel.observe(0.004); // per request
 */
import { Counter, Histogram, type CounterConfiguration, type HistogramConfiguration, type MetricObjectWithValues, type MetricValueWithName } from 'prom-client';

export interface HotCounterChild {
  /** Add `by` (default 1); anything not a positive number is ignored (hot paths never throw). */
  inc(by?: number): void;
  /** The count so far. */
  readonly value: number;
}

export interface HotHistogramChild {
  /** Count one observation; NaN is ignored. */
  observe(value: number): void;
  /** Sum and count of the observations so far. */
  readonly sum: number;
  readonly count: number;
}

type Labels = Record<string, string>;
type Value = MetricValueWithName<string>;
type ForPromString = { getForPromString(this: unknown): Promise<MetricObjectWithValues<Value>> };

function labelsOf(names: readonly string[], values: readonly string[], metric: string): Labels {
  if (values.length !== names.length) throw new Error(`${metric}: expected ${names.length} label values (${names.join(', ')}), got ${values.length}`);
  const labels: Labels = {};
  names.forEach((n, i) => (labels[n] = values[i]!));
  return labels;
}

class CounterSeries implements HotCounterChild {
  value = 0;
  constructor(readonly labels: Labels) {}
  inc(by = 1): void {
    if (by > 0) this.value += by;
  }
}

/** A prom-client Counter whose series are {@link HotCounterChild}ren. */
export class HotCounter<T extends string = string> extends Counter<T> {
  readonly #series = new Map<string, CounterSeries>();
  readonly #name: string;
  readonly #names: readonly string[];

  constructor(config: CounterConfiguration<T>) {
    super(config);
    this.#name = config.name;
    this.#names = config.labelNames ?? [];
  }

  /** The series for these label values (in `labelNames` order); the same object for the same values. */
  child(...values: string[]): HotCounterChild {
    const key = values.join('\u0000');
    let s = this.#series.get(key);
    if (s === undefined) this.#series.set(key, (s = new CounterSeries(labelsOf(this.#names, values, this.#name))));
    return s;
  }

  override async get(): Promise<MetricObjectWithValues<Value>> {
    const base = (await super.get()) as MetricObjectWithValues<Value>;
    for (const s of this.#series.values()) base.values.push({ value: s.value, labels: { ...s.labels } } as Value);
    return base;
  }

  override reset(): void {
    super.reset();
    if (!(#series in this)) return; // prom-client's constructor resets before the fields exist
    for (const s of this.#series.values()) s.value = 0;
  }
}

class HistogramSeries implements HotHistogramChild {
  /** Observations per bucket (not cumulative); the last slot is above every bound (+Inf). */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Labels,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(value: number): void {
    if (value !== value) return; // NaN
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]! += 1;
    this.sum += value;
    this.count += 1;
  }
}

/** A prom-client Histogram whose series are {@link HotHistogramChild}ren. */
export class HotHistogram<T extends string = string> extends Histogram<T> {
  readonly #series = new Map<string, HistogramSeries>();
  readonly #name: string;
  readonly #names: readonly string[];
  readonly #bounds: readonly number[];

  constructor(config: HistogramConfiguration<T> & { buckets: readonly number[] }) {
    super(config);
    this.#name = config.name;
    this.#names = config.labelNames ?? [];
    this.#bounds = [...config.buckets];
    if (this.#bounds.some((b, i) => i > 0 && b <= this.#bounds[i - 1]!)) throw new Error(`${this.#name}: buckets must be increasing`);
  }

  /** The series for these label values (in `labelNames` order); the same object for the same values. */
  child(...values: string[]): HotHistogramChild {
    const key = values.join('\u0000');
    let s = this.#series.get(key);
    if (s === undefined) this.#series.set(key, (s = new HistogramSeries(labelsOf(this.#names, values, this.#name), this.#bounds)));
    return s;
  }

  /**
   * What the registry formats (and `get()` splays): prom-client's series, then the hot ones, in its shape.
   * (prom-client's registry prefers this method on a histogram; its typings do not declare it.)
   */
  async getForPromString(): Promise<MetricObjectWithValues<Value>> {
    const base = await (Histogram.prototype as unknown as ForPromString).getForPromString.call(this);
    const values = base.values as (Value & { sharedLabels: Labels; exemplar?: null | undefined })[];
    const bucket = `${this.#name}_bucket`;
    for (const s of this.#series.values()) {
      let acc = 0;
      this.#bounds.forEach((le, i) => {
        acc += s.counts[i]!;
        values.push({ labels: { le }, sharedLabels: s.labels, value: acc, metricName: bucket, exemplar: null });
      });
      values.push(
        { labels: { le: '+Inf' }, sharedLabels: s.labels, value: s.count, metricName: bucket, exemplar: null },
        { labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.#name}_sum`, exemplar: undefined },
        { labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.#name}_count`, exemplar: undefined },
      );
    }
    return base;
  }

  override reset(): void {
    super.reset();
    if (!(#series in this)) return; // prom-client's constructor resets before the fields exist
    for (const s of this.#series.values()) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}
