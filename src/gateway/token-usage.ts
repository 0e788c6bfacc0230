/**
 * @module
 * LLM API usage and spend per (tenant, model, hour): requests, errors, prompt and completion tokens, and cost
 * (in the currency of the model catalog's prices). `record` is the hot path: it adds to an in-memory delta and,
 * with a registry, to Prometheus counters; deltas are flushed to the `llm_usage` table as additive upserts by
 * the machinery the tenancy usage meter uses (src/storage/hourly-counters.ts): replicas flush into one database
 * and the counts add up, a failed flush keeps its deltas for the next one, and reads include unflushed deltas.
 */
import type { Counter, Registry } from 'prom-client';
import type { HotCounter, HotCounterChild } from '../monitoring/hot-metrics.js';
import { amount, HourlyCounters, type CounterTable, type MeterOptions, type PeriodRange } from '../storage/hourly-counters.js';
import { flushFailureCounter, registeredCounter } from './usage.js';

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

const SEP = '\u0000';

const LLM_USAGE_TABLE: CounterTable<LlmUsageRow> = {
  name: 'llm_usage',
  keys: [['tenant', 'tenant'], ['model', 'model']],
  counters: [
    ['requests', 'requests', false], ['errors', 'errors', false], ['promptTokens', 'prompt_tokens', false],
    ['completionTokens', 'completion_tokens', false], ['cost', 'cost', true],
  ],
};

interface SeriesCounters {
  prompt: HotCounterChild;
  completion: HotCounterChild;
  spend: HotCounterChild;
}

interface MeterCounters {
  tokens: HotCounter;
  spend: HotCounter;
  flushFailures: Counter;
}

function meterCounters(registry: Registry): MeterCounters {
  return {
    tokens: registeredCounter(registry, 'switchyard_llm_tokens_total', 'LLM API tokens per tenant, model and kind (prompt|completion).', ['tenant', 'model', 'kind']),
    spend: registeredCounter(registry, 'switchyard_llm_spend_total', 'LLM API spend per tenant and model, by the model catalog\'s prices.', ['tenant', 'model']),
    flushFailures: flushFailureCounter(registry),
  };
}

/**
 * Accumulates LLM usage in memory and flushes it to the `llm_usage` table.
 *
 * @example
 * const meter = new LlmUsageMeter({ db: database.db, logger, metrics: registry });
 * meter.record({ tenant: 'acme', model: 'gpt-4o-mini', promptTokens: 812, completionTokens: 96, cost: 0.0002, ok: true });
 * const today = await meter.query({ tenant: 'acme', from: dayStart, groupBy: 'day' });
 * await meter.close(); // on shutdown: stops the timer and writes what is left
 * @see UsageMeter (src/gateway/usage.ts) for the usage of the inference API.
 */
export class LlmUsageMeter extends HourlyCounters<LlmUsageRow> {
  readonly #counters: MeterCounters | null;
  /** Label children per (tenant, model): the hot path hashes labels once per series. */
  readonly #series = new Map<string, SeriesCounters>();

  constructor(opts: LlmUsageMeterOptions) {
    const counters = opts.metrics ? meterCounters(opts.metrics) : null;
    super({
      db: opts.db, table: LLM_USAGE_TABLE, name: 'LLM usage', flushIntervalMs: opts.flushIntervalMs, logger: opts.logger, now: opts.now,
      onFlushFailure: () => counters?.flushFailures.inc(),
    });
    this.#counters = counters;
  }

  /** Hot path: O(1), synchronous, never touches the database, never throws. Negative or non-finite amounts count as 0. */
  record(r: LlmUsageRecord): void {
    try {
      if (typeof r.tenant !== 'string' || typeof r.model !== 'string') {
        this.log?.warn({ tenant: r.tenant, model: r.model }, 'LLM usage record dropped: tenant and model must be strings');
        return;
      }
      const prompt = amount(r.promptTokens);
      const completion = amount(r.completionTokens);
      const cost = amount(r.cost);
      const period = this.hour();
      const series = r.tenant + SEP + r.model;
      const key = series + SEP + period;
      const d = this.pending(key)
        ?? this.start(key, { tenant: r.tenant, model: r.model, period, requests: 0, errors: 0, promptTokens: 0, completionTokens: 0, cost: 0 });
      d.requests += 1;
      if (!r.ok) d.errors += 1;
      d.promptTokens += prompt;
      d.completionTokens += completion;
      d.cost += cost;
      if (this.#counters !== null) {
        const c = this.#seriesCounters(series, r);
        if (prompt > 0) c.prompt.inc(prompt);
        if (completion > 0) c.completion.inc(completion);
        if (cost > 0) c.spend.inc(cost);
      }
    } catch (e) {
      this.log?.error({ err: e }, 'LLM usage record failed');
    }
  }

  /**
   * Flushed rows merged with this meter's unflushed deltas, filtered and grouped; sorted by period, tenant, model.
   * Rejects with SY_ERR_BAD_REQUEST for a bad range or grouping.
   */
  query(q: LlmUsageQuery): Promise<LlmUsageRow[]> {
    return this.select(q);
  }

  #seriesCounters(series: string, r: LlmUsageRecord): SeriesCounters {
    let c = this.#series.get(series);
    if (c === undefined) {
      const m = this.#counters as MeterCounters;
      c = {
        prompt: m.tokens.child(r.tenant, r.model, 'prompt'),
        completion: m.tokens.child(r.tenant, r.model, 'completion'),
        spend: m.spend.child(r.tenant, r.model),
      };
      this.#series.set(series, c);
    }
    return c;
  }
}
