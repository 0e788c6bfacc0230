/**
 * @module
 * Usage accounting of the gateway, one hourly series per key: the inference API's usage per (tenant, model,
 * version, API key, hour) — requests, rows, compute, errors — in the `usage` table ({@link UsageMeter}), and the LLM API's
 * usage and spend per (tenant, model, hour) — requests, errors, prompt and completion tokens, cost in the
 * currency of the model catalog's prices — in the `llm_usage` table ({@link LlmUsageMeter}).
 *
 * Both are one {@link Meter} with a different record kind. The hot path (`record`) only adds to an in-memory
 * delta (and, when a registry is given, to Prometheus counters); a timer flushes the deltas as additive upserts,
 * so any number of replicas can flush into one database and the counts add up; a failed flush keeps its deltas
 * for the next one. Reads merge the flushed rows with this replica's unflushed deltas. The machinery (flush,
 * retry, reads and grouping) is src/storage/hourly-counters.ts.
 */
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { err } from '../errors.js';
import { HotCounter, type HotCounterChild } from '../hot-metrics.js';
import type { DB } from '../storage/index.js';
import { amount, HourlyCounters, type CounterTable, type PeriodRange, type PeriodRow } from '../storage/index.js';

export { DAY_MS, HOUR_MS } from '../storage/index.js';

/** What a usage meter is constructed with (both kinds). */
export interface MeterOptions {
  db: Kysely<DB>;
  /** How often pending deltas are written. Must be a positive number. @default 10000 @unit milliseconds */
  flushIntervalMs?: number;
  logger?: Logger;
  /** When given, the meter's Prometheus counters are registered here (re-used if another meter already registered them). */
  metrics?: Registry;
  /** Clock, epoch ms. @default Date.now */
  now?: () => number;
}

const SEP = '\u0000';

/** The counter registered under `name`, or a new one (several meters may share a registry). Hot: meters count per request. */
export function registeredCounter(registry: Registry, name: string, help: string, labelNames: readonly string[]): HotCounter {
  const existing = registry.getSingleMetric(name);
  if (existing instanceof HotCounter) return existing;
  return new HotCounter({ name, help, labelNames, registers: [registry] });
}

/** Usage flushes that failed (their deltas are kept and retried); shared by every usage meter. */
export function flushFailureCounter(registry: Registry): Counter {
  return registeredCounter(registry, 'switchyard_usage_flush_failures_total', 'Usage flushes that failed (their deltas are kept and retried).', []);
}

/**
 * A usage meter over one counter table: `Rec` is what `record` takes, `R` a row of the table, `S` the Prometheus
 * label children of one series (created once per series: the hot path hashes labels once). A kind says how a
 * record names its series, what a fresh row holds, and what a record adds.
 */
abstract class Meter<Rec, R extends PeriodRow, S> extends HourlyCounters<R> {
  readonly #label: string;
  /** Label children of a record's series, when metrics are on. */
  readonly #children: ((r: Rec) => S) | null;
  readonly #series = new Map<string, S>();

  /** `children(registry)` registers the kind's counters (re-used if registered) and returns the children factory. */
  protected constructor(opts: MeterOptions, table: CounterTable<R>, label: string, children: (registry: Registry) => (r: Rec) => S) {
    const make = opts.metrics ? children(opts.metrics) : null;
    const failures = opts.metrics ? flushFailureCounter(opts.metrics) : null;
    super({
      db: opts.db,
      table,
      name: label,
      flushIntervalMs: opts.flushIntervalMs,
      logger: opts.logger,
      now: opts.now,
      onFlushFailure: () => failures?.inc(),
    });
    this.#label = label;
    this.#children = make;
  }

  /** The record's series (its key fields joined by SEP), or null for a malformed record (after a warning: it is dropped). */
  protected abstract seriesOf(r: Rec): string | null;
  /** The pending row of `r`'s series in `period`, counters at zero. */
  protected abstract zero(r: Rec, period: number): R;
  /** Adds `r` to its pending row and, when metrics are on, to its series' children. */
  protected abstract add(row: R, r: Rec, children: S | null): void;

  /** Hot path: O(1), synchronous, never touches the database, never throws. Negative or non-finite amounts count as 0. */
  record(r: Rec): void {
    try {
      const series = this.seriesOf(r);
      if (series === null) return;
      const period = this.hour();
      const key = series + SEP + period;
      const row = this.pending(key) ?? this.start(key, this.zero(r, period));
      let c: S | null = null;
      if (this.#children !== null) {
        c = this.#series.get(series) ?? null;
        if (c === null) this.#series.set(series, (c = this.#children(r)));
      }
      this.add(row, r, c);
    } catch (e) {
      this.log?.error({ err: e }, `${this.#label} record failed`);
    }
  }
}

// ---- The inference API: rows and compute per (tenant, model, version, hour)

/** One finished inference request, as the gateway saw it. */
export interface UsageRecord {
  /** '' = unauthenticated / platform. */
  tenant: string;
  model: string;
  version: number;
  /** The API key's id; '' or absent for none (open mode, internal callers). */
  keyId?: string;
  /** Rows (dim 0) the request carried; counted for served requests only (a refused one was not inferred). */
  rows: number;
  /** Compute time attributed to the request, milliseconds. */
  computeMs: number;
  ok: boolean;
  /** A failed request the caller caused (4xx: invalid input, unknown model): counted as `invalid`, not as an error. */
  invalid?: boolean;
}

/** Usage in one period (or over the whole range for `groupBy: 'total'`). */
export interface UsageRow {
  tenant: string;
  model: string;
  version: number;
  /** The API key's id ('' for none) when the query splits by key ({@link UsageQuery.byKey}), else null. */
  keyId: string | null;
  /**
   * Start of the bucket, epoch ms (UTC): the hour for 'hour', the UTC day for 'day', and for 'total' the earliest
   * hour that has usage in the group.
   */
  period: number;
  requests: number;
  /** Rows of the served requests. */
  rows: number;
  /** Milliseconds. */
  computeMs: number;
  /** Requests that failed for a server-side reason (5xx). */
  errors: number;
  /** Requests refused as the caller's fault (4xx: invalid input, unknown model or version). */
  invalid: number;
}

export interface UsageQuery extends PeriodRange {
  /** Exact tenant ('' selects unauthenticated / platform usage); all tenants when absent. */
  tenant?: string;
  model?: string;
  version?: number;
  /** Exact API key id ('' selects requests made without a key); implies {@link byKey}. */
  keyId?: string;
  /** One row per API key too (rows carry `keyId`); default false: keys are summed over (`keyId` null). */
  byKey?: boolean;
}

/** Metrics: `switchyard_tenant_*` counters. */
export type UsageMeterOptions = MeterOptions;

const USAGE_TABLE: CounterTable<UsageRow> = {
  name: 'usage',
  keys: [
    ['tenant', 'tenant'],
    ['model', 'model'],
    ['version', 'version'],
    ['keyId', 'key_id'],
  ],
  counters: [
    ['requests', 'requests', false],
    ['rows', 'rows', false],
    ['computeMs', 'compute_ms', true],
    ['errors', 'errors', false],
    ['invalid', 'invalid', false],
  ],
};

interface SeriesCounters {
  success: HotCounterChild;
  error: HotCounterChild;
  invalid: HotCounterChild;
  rows: HotCounterChild;
  computeS: HotCounterChild;
}

/** The `switchyard_tenant_*` counters, and the children of one (tenant, model, version) series. */
function usageChildren(registry: Registry): (r: UsageRecord) => SeriesCounters {
  const tmv = ['tenant', 'model', 'version'] as const;
  const requests = registeredCounter(
    registry,
    'switchyard_tenant_requests_total',
    "Inference requests per tenant, model version and outcome (success|invalid|error: invalid = refused as the caller's fault, 4xx).",
    [...tmv, 'outcome'],
  );
  const rows = registeredCounter(registry, 'switchyard_tenant_rows_total', 'Rows (dim 0) inferred per tenant and model version.', tmv);
  const computeS = registeredCounter(registry, 'switchyard_tenant_compute_seconds_total', 'Compute time attributed to each tenant and model version.', tmv);
  return (r) => {
    const v = String(r.version);
    return {
      success: requests.child(r.tenant, r.model, v, 'success'),
      error: requests.child(r.tenant, r.model, v, 'error'),
      invalid: requests.child(r.tenant, r.model, v, 'invalid'),
      rows: rows.child(r.tenant, r.model, v),
      computeS: computeS.child(r.tenant, r.model, v),
    };
  };
}

/**
 * Accumulates inference usage in memory and flushes it to the `usage` table.
 *
 * @example
 * const meter = new UsageMeter({ db: database.db, logger, metrics: registry });
 * meter.record({ tenant: 'acme', model: 'resnet', version: 3, rows: 8, computeMs: 4.2, ok: true });
 * const today = await meter.query({ tenant: 'acme', from: dayStart, groupBy: 'day' });
 * await meter.close(); // on shutdown: stops the timer and writes what is left
 * @see {@link AuditLog} for the other tenancy store.
 */
export class UsageMeter extends Meter<UsageRecord, UsageRow, SeriesCounters> {
  constructor(opts: UsageMeterOptions) {
    super(opts, USAGE_TABLE, 'usage', usageChildren);
  }

  /** Flushed rows merged with this meter's unflushed deltas, filtered and grouped; sorted by period, tenant, model, version. */
  query(q: UsageQuery): Promise<UsageRow[]> {
    if (q.version !== undefined && !Number.isSafeInteger(q.version))
      return Promise.reject(err('SY_ERR_BAD_REQUEST', 'usage query: "version" must be an integer'));
    const { byKey, ...rest } = q;
    return this.select(byKey === true || q.keyId !== undefined ? rest : { ...rest, collapse: ['keyId'] });
  }

  protected seriesOf(r: UsageRecord): string | null {
    if (
      typeof r.tenant !== 'string' ||
      typeof r.model !== 'string' ||
      !Number.isSafeInteger(r.version) ||
      (r.keyId !== undefined && typeof r.keyId !== 'string')
    ) {
      this.log?.warn(
        { tenant: r.tenant, model: r.model, version: r.version },
        'usage record dropped: tenant/model/keyId must be strings and version an integer',
      );
      return null;
    }
    return r.tenant + SEP + r.model + SEP + r.version + SEP + (r.keyId ?? '');
  }

  protected zero(r: UsageRecord, period: number): UsageRow {
    return { tenant: r.tenant, model: r.model, version: r.version, keyId: r.keyId ?? '', period, requests: 0, rows: 0, computeMs: 0, errors: 0, invalid: 0 };
  }

  protected add(d: UsageRow, r: UsageRecord, c: SeriesCounters | null): void {
    const rows = r.ok ? amount(r.rows) : 0;
    const computeMs = amount(r.computeMs);
    const invalid = !r.ok && r.invalid === true;
    d.requests += 1;
    d.rows += rows;
    d.computeMs += computeMs;
    if (invalid) d.invalid += 1;
    else if (!r.ok) d.errors += 1;
    if (c !== null) {
      (r.ok ? c.success : invalid ? c.invalid : c.error).inc();
      if (rows > 0) c.rows.inc(rows);
      if (computeMs > 0) c.computeS.inc(computeMs / 1000);
    }
  }
}

// ---- The LLM API: tokens and spend per (tenant, model, hour)

/** One finished LLM API request. */
export interface LlmUsageRecord {
  /** '' = unauthenticated / platform. */
  tenant: string;
  model: string;
  promptTokens: number;
  completionTokens: number;
  /** What the request cost, by the model's prices. */
  cost: number;
  /** false: the request failed (it still counts, with the tokens it used). */
  ok: boolean;
}

/** Usage in one period (or over the whole range for `groupBy: 'total'`). */
export interface LlmUsageRow {
  tenant: string;
  model: string;
  /**
   * Start of the bucket, epoch ms (UTC): the hour for 'hour', the UTC day for 'day', and for 'total' the earliest
   * hour that has usage in the group.
   */
  period: number;
  requests: number;
  errors: number;
  promptTokens: number;
  completionTokens: number;
  cost: number;
}

export interface LlmUsageQuery extends PeriodRange {
  /** Exact tenant ('' selects unauthenticated / platform usage); all tenants when absent. */
  tenant?: string;
  model?: string;
}

/** Metrics: `switchyard_llm_tokens_total{tenant,model,kind}` and `switchyard_llm_spend_total{tenant,model}`. */
export type LlmUsageMeterOptions = MeterOptions;

const LLM_USAGE_TABLE: CounterTable<LlmUsageRow> = {
  name: 'llm_usage',
  keys: [
    ['tenant', 'tenant'],
    ['model', 'model'],
  ],
  counters: [
    ['requests', 'requests', false],
    ['errors', 'errors', false],
    ['promptTokens', 'prompt_tokens', false],
    ['completionTokens', 'completion_tokens', false],
    ['cost', 'cost', true],
  ],
};

interface LlmSeriesCounters {
  prompt: HotCounterChild;
  completion: HotCounterChild;
  spend: HotCounterChild;
}

/** The `switchyard_llm_tokens_total` and `switchyard_llm_spend_total` counters, and the children of one (tenant, model) series. */
function llmChildren(registry: Registry): (r: LlmUsageRecord) => LlmSeriesCounters {
  const tokens = registeredCounter(registry, 'switchyard_llm_tokens_total', 'LLM API tokens per tenant, model and kind (prompt|completion).', [
    'tenant',
    'model',
    'kind',
  ]);
  const spend = registeredCounter(registry, 'switchyard_llm_spend_total', "LLM API spend per tenant and model, by the model catalog's prices.", [
    'tenant',
    'model',
  ]);
  return (r) => ({
    prompt: tokens.child(r.tenant, r.model, 'prompt'),
    completion: tokens.child(r.tenant, r.model, 'completion'),
    spend: spend.child(r.tenant, r.model),
  });
}

/**
 * Accumulates LLM usage in memory and flushes it to the `llm_usage` table.
 *
 * @example
 * const meter = new LlmUsageMeter({ db: database.db, logger, metrics: registry });
 * meter.record({ tenant: 'acme', model: 'gpt-4o-mini', promptTokens: 812, completionTokens: 96, cost: 0.0002, ok: true });
 * const today = await meter.query({ tenant: 'acme', from: dayStart, groupBy: 'day' });
 * await meter.close(); // on shutdown: stops the timer and writes what is left
 */
export class LlmUsageMeter extends Meter<LlmUsageRecord, LlmUsageRow, LlmSeriesCounters> {
  constructor(opts: LlmUsageMeterOptions) {
    super(opts, LLM_USAGE_TABLE, 'LLM usage', llmChildren);
  }

  /**
   * Flushed rows merged with this meter's unflushed deltas, filtered and grouped; sorted by period, tenant, model.
   * Rejects with SY_ERR_BAD_REQUEST for a bad range or grouping.
   */
  query(q: LlmUsageQuery): Promise<LlmUsageRow[]> {
    return this.select(q);
  }

  protected seriesOf(r: LlmUsageRecord): string | null {
    if (typeof r.tenant !== 'string' || typeof r.model !== 'string') {
      this.log?.warn({ tenant: r.tenant, model: r.model }, 'LLM usage record dropped: tenant and model must be strings');
      return null;
    }
    return r.tenant + SEP + r.model;
  }

  protected zero(r: LlmUsageRecord, period: number): LlmUsageRow {
    return { tenant: r.tenant, model: r.model, period, requests: 0, errors: 0, promptTokens: 0, completionTokens: 0, cost: 0 };
  }

  protected add(d: LlmUsageRow, r: LlmUsageRecord, c: LlmSeriesCounters | null): void {
    const prompt = amount(r.promptTokens);
    const completion = amount(r.completionTokens);
    const cost = amount(r.cost);
    d.requests += 1;
    if (!r.ok) d.errors += 1;
    d.promptTokens += prompt;
    d.completionTokens += completion;
    d.cost += cost;
    if (c !== null) {
      if (prompt > 0) c.prompt.inc(prompt);
      if (completion > 0) c.completion.inc(completion);
      if (cost > 0) c.spend.inc(cost);
    }
  }
}
