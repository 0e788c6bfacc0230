/**
 * @module
 * Usage accounting per (tenant, model, version, hour). The hot path (`record`) only adds to an in-memory delta
 * map (and, when a registry is given, to Prometheus counters); a timer flushes the deltas to the `usage` table as
 * additive upserts, so any number of replicas can flush into one database and the counts add up.
 *
 * ```
 *  record() ──► pending: Map<key, delta> ──flush()──► swap out ──► one transaction:
 *                    ▲                                     │        INSERT … ON CONFLICT DO UPDATE SET n = usage.n + excluded.n
 *                    └──────── merged back on failure ◄────┘
 * ```
 *
 * Reads (`query`) merge the flushed rows with this replica's unflushed deltas. Flushes and reads run one at a time
 * (a small mutex), so a read never counts a delta twice (once in the database, once in memory) or misses one that
 * is being written.
 *
 * Ownership: a delta belongs to the meter until the transaction that writes it commits. If the transaction fails
 * the delta goes back into the pending map and is retried by the next flush. (A commit whose acknowledgement is
 * lost, e.g. the connection dies after COMMIT reached the server, is retried and counted twice: the table has no
 * idempotency key.)
 */
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { err } from '../errors.js';
import type { DB } from '../storage/index.js';

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

export interface UsageQuery {
  /** Exact tenant ('' selects unauthenticated / platform usage); all tenants when absent. */
  tenant?: string;
  model?: string;
  version?: number;
  /** Epoch ms, inclusive, compared with the hour start (`period`). */
  from?: number;
  /** Epoch ms, exclusive, compared with the hour start (`period`). */
  to?: number;
  /** @default 'hour' */
  groupBy?: 'hour' | 'day' | 'total';
}

export interface UsageMeterOptions {
  db: Kysely<DB>;
  /**
   * How often pending deltas are written. Must be a positive number.
   * @default 10000
   * @unit milliseconds
   */
  flushIntervalMs?: number;
  logger?: Logger;
  /** When given, per-tenant counters are registered here (re-used if another meter already registered them). */
  metrics?: Registry;
  /** Clock, epoch ms. @default Date.now */
  now?: () => number;
}

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;
export const DEFAULT_FLUSH_INTERVAL_MS = 10_000;
/** Rows per INSERT statement: 8 parameters each, well under SQLite's and Postgres' parameter limits. */
const CHUNK = 500;
const SEP = '\u0000';

/** Accumulated, not yet written usage of one (tenant, model, version, hour): the shape of a row. */
type Delta = UsageRow;

interface SeriesCounters {
  success: ReturnType<Counter['labels']>;
  error: ReturnType<Counter['labels']>;
  rows: ReturnType<Counter['labels']>;
  computeS: ReturnType<Counter['labels']>;
}

interface MeterCounters {
  requests: Counter;
  rows: Counter;
  computeS: Counter;
  flushFailures: Counter;
}

function counter(registry: Registry, name: string, help: string, labelNames: readonly string[]): Counter {
  const existing = registry.getSingleMetric(name);
  if (existing instanceof Counter) return existing;
  return new Counter({ name, help, labelNames, registers: [registry] });
}

function meterCounters(registry: Registry): MeterCounters {
  const tmv = ['tenant', 'model', 'version'] as const;
  return {
    requests: counter(registry, 'switchyard_tenant_requests_total', 'Inference requests per tenant, model version and outcome (success|error).', [...tmv, 'outcome']),
    rows: counter(registry, 'switchyard_tenant_rows_total', 'Rows (dim 0) inferred per tenant and model version.', tmv),
    computeS: counter(registry, 'switchyard_tenant_compute_seconds_total', 'Compute time attributed to each tenant and model version.', tmv),
    flushFailures: counter(registry, 'switchyard_usage_flush_failures_total', 'Usage flushes that failed (their deltas are kept and retried).', []),
  };
}

/** A non-negative finite number, else 0 (the hot path never throws and never writes NaN). */
function amount(x: number): number {
  return Number.isFinite(x) && x > 0 ? x : 0;
}

function addInto(target: Delta, d: Delta): void {
  target.requests += d.requests;
  target.rows += d.rows;
  target.computeMs += d.computeMs;
  target.errors += d.errors;
}

function compareRows(a: UsageRow, b: UsageRow): number {
  if (a.period !== b.period) return a.period - b.period;
  if (a.tenant !== b.tenant) return a.tenant < b.tenant ? -1 : 1;
  if (a.model !== b.model) return a.model < b.model ? -1 : 1;
  return a.version - b.version;
}

function checkQuery(q: UsageQuery): void {
  for (const k of ['from', 'to'] as const) {
    const v = q[k];
    if (v !== undefined && !Number.isFinite(v)) throw err('SY_ERR_BAD_REQUEST', `usage query: "${k}" must be epoch milliseconds`);
  }
  if (q.version !== undefined && !Number.isSafeInteger(q.version)) throw err('SY_ERR_BAD_REQUEST', 'usage query: "version" must be an integer');
  if (q.groupBy !== undefined && q.groupBy !== 'hour' && q.groupBy !== 'day' && q.groupBy !== 'total') {
    throw err('SY_ERR_BAD_REQUEST', `usage query: "groupBy" must be hour, day or total (got "${String(q.groupBy)}")`);
  }
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
export class UsageMeter {
  readonly #db: Kysely<DB>;
  readonly #log: Logger | null;
  readonly #now: () => number;
  readonly #counters: MeterCounters | null;
  /** Label children per (tenant, model, version): the hot path hashes labels once per series. */
  readonly #series = new Map<string, SeriesCounters>();
  #pending = new Map<string, Delta>();
  #timer: NodeJS.Timeout | null;
  /** Tail of the flush/read queue. */
  #lock: Promise<void> = Promise.resolve();
  #flushing = false;

  constructor(opts: UsageMeterOptions) {
    const interval = opts.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS;
    if (!Number.isFinite(interval) || interval <= 0) {
      throw err('SY_ERR_CONFIG_INVALID', `usage meter: flushIntervalMs must be a positive number of milliseconds (got ${interval})`);
    }
    this.#db = opts.db;
    this.#log = opts.logger ?? null;
    this.#now = opts.now ?? Date.now;
    this.#counters = opts.metrics ? meterCounters(opts.metrics) : null;
    this.#timer = setInterval(() => this.#tick(), interval);
    this.#timer.unref();
  }

  /** Deltas not yet written (for tests and diagnostics). */
  get pendingKeys(): number {
    return this.#pending.size;
  }

  /** Hot path: O(1), synchronous, never touches the database, never throws. */
  record(r: UsageRecord): void {
    try {
      if (typeof r.tenant !== 'string' || typeof r.model !== 'string' || !Number.isSafeInteger(r.version)) {
        this.#log?.warn({ tenant: r.tenant, model: r.model, version: r.version }, 'usage record dropped: tenant/model must be strings and version an integer');
        return;
      }
      const rows = amount(r.rows);
      const computeMs = amount(r.computeMs);
      const period = Math.floor(this.#now() / HOUR_MS) * HOUR_MS;
      const series = r.tenant + SEP + r.model + SEP + r.version;
      const key = series + SEP + period;
      let d = this.#pending.get(key);
      if (d === undefined) {
        d = { tenant: r.tenant, model: r.model, version: r.version, period, requests: 0, rows: 0, computeMs: 0, errors: 0 };
        this.#pending.set(key, d);
      }
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
      this.#log?.error({ err: e }, 'usage record failed');
    }
  }

  /**
   * Write the accumulated deltas in one transaction (additive upserts). Rejects when the write fails; the deltas
   * are then kept and retried by the next flush.
   */
  flush(): Promise<void> {
    return this.#exclusive(() => this.#flushNow());
  }

  /** Flushed rows merged with this meter's unflushed deltas, filtered and grouped; sorted by period, tenant, model, version. */
  query(q: UsageQuery): Promise<UsageRow[]> {
    try {
      checkQuery(q);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#exclusive(() => this.#queryNow(q));
  }

  /** Stop the timer and flush once (rejects if that flush fails; the deltas stay in memory). */
  async close(): Promise<void> {
    if (this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
    await this.flush();
  }

  #tick(): void {
    if (this.#flushing || this.#pending.size === 0) return;
    this.flush().catch(() => undefined); // logged and counted in #flushNow
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn);
    this.#lock = run.then(() => undefined, () => undefined);
    return run;
  }

  #seriesCounters(series: string, r: UsageRecord): SeriesCounters {
    let c = this.#series.get(series);
    if (c === undefined) {
      const m = this.#counters as MeterCounters;
      const v = String(r.version);
      c = {
        success: m.requests.labels(r.tenant, r.model, v, 'success'),
        error: m.requests.labels(r.tenant, r.model, v, 'error'),
        rows: m.rows.labels(r.tenant, r.model, v),
        computeS: m.computeS.labels(r.tenant, r.model, v),
      };
      this.#series.set(series, c);
    }
    return c;
  }

  async #flushNow(): Promise<void> {
    if (this.#pending.size === 0) return;
    const batch = this.#pending;
    this.#pending = new Map();
    this.#flushing = true;
    // Same key order on every replica: concurrent Postgres transactions lock rows in one order and cannot deadlock.
    const keys = [...batch.keys()].sort();
    try {
      await this.#db.transaction().execute(async (tx) => {
        for (let i = 0; i < keys.length; i += CHUNK) {
          const values = keys.slice(i, i + CHUNK).map((k) => {
            const d = batch.get(k) as Delta;
            return { tenant: d.tenant, model: d.model, version: d.version, period: d.period, requests: d.requests, rows: d.rows, compute_ms: d.computeMs, errors: d.errors };
          });
          await tx.insertInto('usage').values(values)
            .onConflict((oc) => oc.columns(['tenant', 'model', 'version', 'period']).doUpdateSet((eb) => ({
              requests: eb('usage.requests', '+', eb.ref('excluded.requests')),
              rows: eb('usage.rows', '+', eb.ref('excluded.rows')),
              compute_ms: eb('usage.compute_ms', '+', eb.ref('excluded.compute_ms')),
              errors: eb('usage.errors', '+', eb.ref('excluded.errors')),
            })))
            .execute();
        }
      });
    } catch (e) {
      // Give the deltas back; records that arrived during the flush are already in the new map.
      for (const [k, d] of batch) {
        const cur = this.#pending.get(k);
        if (cur === undefined) this.#pending.set(k, d);
        else addInto(cur, d);
      }
      this.#counters?.flushFailures.inc();
      this.#log?.error({ err: e, keys: batch.size }, 'usage flush failed; deltas kept for the next flush');
      throw e;
    } finally {
      this.#flushing = false;
    }
  }

  async #queryNow(q: UsageQuery): Promise<UsageRow[]> {
    const groupBy = q.groupBy ?? 'hour';
    const bucket = groupBy === 'day'
      ? sql<number>`period - (period % ${sql.lit(DAY_MS)})`
      : sql<number>`period`;
    let sel = this.#db.selectFrom('usage')
      .select((eb) => [
        'tenant', 'model', 'version',
        (groupBy === 'total' ? eb.fn.min('period') : bucket).as('bucket'),
        eb.fn.sum<number | string>('requests').as('requests'),
        eb.fn.sum<number | string>('rows').as('rows'),
        // Postgres stores compute_ms as real: sum in double precision.
        eb.fn.sum<number | string>(sql`cast(compute_ms as double precision)`).as('compute_ms'),
        eb.fn.sum<number | string>('errors').as('errors'),
      ])
      .groupBy(['tenant', 'model', 'version']);
    if (groupBy !== 'total') sel = sel.groupBy(bucket);
    if (q.tenant !== undefined) sel = sel.where('tenant', '=', q.tenant);
    if (q.model !== undefined) sel = sel.where('model', '=', q.model);
    if (q.version !== undefined) sel = sel.where('version', '=', q.version);
    if (q.from !== undefined) sel = sel.where('period', '>=', q.from);
    if (q.to !== undefined) sel = sel.where('period', '<', q.to);
    const stored = await sel.execute();

    // Read after the await: deltas recorded meanwhile are in memory only (no flush can run while we hold the lock).
    const groups = new Map<string, UsageRow>();
    const keyOf = (tenant: string, model: string, version: number, period: number): string =>
      tenant + SEP + model + SEP + version + (groupBy === 'total' ? '' : SEP + period);
    for (const r of stored) {
      const version = Number(r.version);
      const period = Number(r.bucket);
      groups.set(keyOf(r.tenant, r.model, version, period), {
        tenant: r.tenant, model: r.model, version, period,
        requests: Number(r.requests), rows: Number(r.rows), computeMs: Number(r.compute_ms), errors: Number(r.errors),
      });
    }
    for (const d of this.#pending.values()) {
      if (q.tenant !== undefined && d.tenant !== q.tenant) continue;
      if (q.model !== undefined && d.model !== q.model) continue;
      if (q.version !== undefined && d.version !== q.version) continue;
      if (q.from !== undefined && d.period < q.from) continue;
      if (q.to !== undefined && d.period >= q.to) continue;
      const period = groupBy === 'day' ? d.period - (d.period % DAY_MS) : d.period;
      const k = keyOf(d.tenant, d.model, d.version, period);
      const g = groups.get(k);
      if (g === undefined) {
        groups.set(k, { tenant: d.tenant, model: d.model, version: d.version, period, requests: d.requests, rows: d.rows, computeMs: d.computeMs, errors: d.errors });
      } else {
        if (period < g.period) g.period = period; // 'total': earliest hour
        g.requests += d.requests;
        g.rows += d.rows;
        g.computeMs += d.computeMs;
        g.errors += d.errors;
      }
    }
    return [...groups.values()].sort(compareRows);
  }
}
