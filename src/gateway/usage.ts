/**
 * @module
 * Usage accounting per (tenant, model, version, hour). The hot path (`record`) only adds to an in-memory delta
 * (and, when a registry is given, to Prometheus counters); a timer flushes the deltas to the `usage` table as
 * additive upserts, so any number of replicas can flush into one database and the counts add up. Reads merge
 * the flushed rows with this replica's unflushed deltas. The machinery (flush, retry, reads) is
 * src/storage/hourly-counters.ts, shared with the LLM usage meter.
 */
import { Counter, type Registry } from 'prom-client';
import { err } from '../errors.js';
import { HotCounter, type HotCounterChild } from '../monitoring/hot-metrics.js';
import { amount, HourlyCounters, type CounterTable, type MeterOptions, type PeriodRange } from '../storage/hourly-counters.js';

export { DAY_MS, HOUR_MS } from '../storage/hourly-counters.js';

/** One finished inference request, as the gateway saw it. */
export interface UsageRecord {
  /** '' = unauthenticated / platform. */
  tenant: string;
  model: string;
  version: number;
  /** Rows (dim 0) the request carried. */
  rows: number;
  /** Compute time attributed to the request, milliseconds. */
  computeMs: number;
  ok: boolean;
}

/** Usage in one period (or over the whole range for `groupBy: 'total'`). */
export interface UsageRow {
  tenant: string;
  model: string;
  version: number;
  /**
   * Start of the bucket, epoch ms (UTC): the hour for 'hour', the UTC day for 'day', and for 'total' the earliest
   * hour that has usage in the group.
   */
  period: number;
  requests: number;
  rows: number;
  /** Milliseconds. */
  computeMs: number;
  errors: number;
}

export interface UsageQuery extends PeriodRange {
  /** Exact tenant ('' selects unauthenticated / platform usage); all tenants when absent. */
  tenant?: string;
  model?: string;
  version?: number;
}

/** Metrics: `switchyard_tenant_*` counters. */
export type UsageMeterOptions = MeterOptions;

const SEP = '\u0000';

const USAGE_TABLE: CounterTable<UsageRow> = {
  name: 'usage',
  keys: [['tenant', 'tenant'], ['model', 'model'], ['version', 'version']],
  counters: [['requests', 'requests', false], ['rows', 'rows', false], ['computeMs', 'compute_ms', true], ['errors', 'errors', false]],
};

interface SeriesCounters {
  success: HotCounterChild;
  error: HotCounterChild;
  rows: HotCounterChild;
  computeS: HotCounterChild;
}

interface MeterCounters {
  requests: HotCounter;
  rows: HotCounter;
  computeS: HotCounter;
  flushFailures: Counter;
}

/** The counter registered under `name`, or a new one (several meters may share a registry). Hot: meters count per request. */
export function registeredCounter(registry: Registry, name: string, help: string, labelNames: readonly string[]): HotCounter {
  const existing = registry.getSingleMetric(name);
  if (existing instanceof HotCounter) return existing;
  return new HotCounter({ name, help, labelNames, registers: [registry] });
}

function meterCounters(registry: Registry): MeterCounters {
  const tmv = ['tenant', 'model', 'version'] as const;
  return {
    requests: registeredCounter(registry, 'switchyard_tenant_requests_total', 'Inference requests per tenant, model version and outcome (success|error).', [...tmv, 'outcome']),
    rows: registeredCounter(registry, 'switchyard_tenant_rows_total', 'Rows (dim 0) inferred per tenant and model version.', tmv),
    computeS: registeredCounter(registry, 'switchyard_tenant_compute_seconds_total', 'Compute time attributed to each tenant and model version.', tmv),
    flushFailures: flushFailureCounter(registry),
  };
}

/** Usage flushes that failed (their deltas are kept and retried); shared by every usage meter. */
export function flushFailureCounter(registry: Registry): Counter {
  return registeredCounter(registry, 'switchyard_usage_flush_failures_total', 'Usage flushes that failed (their deltas are kept and retried).', []);
}

/**
 * Accumulates usage in memory and flushes it to the `usage` table.
 *
 * @example
 * const meter = new UsageMeter({ db: database.db, logger, metrics: registry });
 * meter.record({ tenant: 'acme', model: 'resnet', version: 3, rows: 8, computeMs: 4.2, ok: true });
 * const today = await meter.query({ tenant: 'acme', from: dayStart, groupBy: 'day' });
 * await meter.close(); // on shutdown: stops the timer and writes what is left
 * @see {@link AuditLog} for the other tenancy store.
 */
export class UsageMeter extends HourlyCounters<UsageRow> {
  readonly #counters: MeterCounters | null;
  /** Label children per (tenant, model, version): the hot path hashes labels once per series. */
  readonly #series = new Map<string, SeriesCounters>();

  constructor(opts: UsageMeterOptions) {
    const counters = opts.metrics ? meterCounters(opts.metrics) : null;
    super({
      db: opts.db, table: USAGE_TABLE, name: 'usage', flushIntervalMs: opts.flushIntervalMs, logger: opts.logger, now: opts.now,
      onFlushFailure: () => counters?.flushFailures.inc(),
    });
    this.#counters = counters;
  }

  /** Hot path: O(1), synchronous, never touches the database, never throws. */
  record(r: UsageRecord): void {
    try {
      if (typeof r.tenant !== 'string' || typeof r.model !== 'string' || !Number.isSafeInteger(r.version)) {
        this.log?.warn({ tenant: r.tenant, model: r.model, version: r.version }, 'usage record dropped: tenant/model must be strings and version an integer');
        return;
      }
      const rows = amount(r.rows);
      const computeMs = amount(r.computeMs);
      const period = this.hour();
      const series = r.tenant + SEP + r.model + SEP + r.version;
      const key = series + SEP + period;
      const d = this.pending(key)
        ?? this.start(key, { tenant: r.tenant, model: r.model, version: r.version, period, requests: 0, rows: 0, computeMs: 0, errors: 0 });
      d.requests += 1;
      d.rows += rows;
      d.computeMs += computeMs;
      if (!r.ok) d.errors += 1;
      if (this.#counters !== null) {
        const c = this.#seriesCounters(series, r);
        (r.ok ? c.success : c.error).inc();
        if (rows > 0) c.rows.inc(rows);
        if (computeMs > 0) c.computeS.inc(computeMs / 1000);
      }
    } catch (e) {
      this.log?.error({ err: e }, 'usage record failed');
    }
  }

  /** Flushed rows merged with this meter's unflushed deltas, filtered and grouped; sorted by period, tenant, model, version. */
  query(q: UsageQuery): Promise<UsageRow[]> {
    if (q.version !== undefined && !Number.isSafeInteger(q.version)) return Promise.reject(err('SY_ERR_BAD_REQUEST', 'usage query: "version" must be an integer'));
    return this.select(q);
  }

  #seriesCounters(series: string, r: UsageRecord): SeriesCounters {
    let c = this.#series.get(series);
    if (c === undefined) {
      const m = this.#counters as MeterCounters;
      const v = String(r.version);
      c = {
        success: m.requests.child(r.tenant, r.model, v, 'success'),
        error: m.requests.child(r.tenant, r.model, v, 'error'),
        rows: m.rows.child(r.tenant, r.model, v),
        computeS: m.computeS.child(r.tenant, r.model, v),
      };
      this.#series.set(series, c);
    }
    return c;
  }
}
