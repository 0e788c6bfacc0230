/**
 * @module
 * Additive counters per (key columns, hour) in a metadata-store table, as the usage meters keep them (inference
 * and LLM usage: src/gateway/usage.ts). The hot path adds to an in-memory pending row; a
 * timer flushes the pending rows as additive upserts, so any number of replicas can flush into one database and
 * the counts add up. Works on SQLite and Postgres (the same SQL on both).
 *
 * ```
 *  pending(key) / start(key) ──► pending: Map<key, row> ──flush()──► swap out ──► one transaction:
 *                                    ▲                                     │        INSERT … ON CONFLICT DO UPDATE SET n = t.n + excluded.n
 *                                    └──────── merged back on failure ◄────┘
 * ```
 *
 * Reads (`query`) merge the flushed rows with this replica's pending rows. Flushes and reads run one at a time
 * (a small mutex), so a read never counts a delta twice (once in the database, once in memory) or misses one that
 * is being written.
 *
 * Ownership: a delta belongs to the meter until the transaction that writes it commits. If the transaction fails
 * the delta goes back into the pending map and is retried by the next flush. (A commit whose acknowledgement is
 * lost, e.g. the connection dies after COMMIT reached the server, is retried and counted twice: the table has no
 * idempotency key.)
 */
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { Logger } from 'pino';
import { err } from '../errors.js';
import type { DB } from './database.js';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;
const DEFAULT_FLUSH_INTERVAL_MS = 10_000;
/** Rows per INSERT statement: at most ~10 parameters each, well under SQLite's and Postgres' parameter limits. */
const CHUNK = 500;
const SEP = '\u0000';

export type GroupBy = 'hour' | 'day' | 'total';

/** A counter row: key fields, `period` (start of the hour, epoch ms UTC; of the bucket in query results) and counters. */
export interface PeriodRow {
  period: number;
}

/** Where a row's fields live. Field and column names are code, never user input. */
export interface CounterTable<R extends PeriodRow> {
  readonly name: keyof DB & string;
  /** Key fields besides `period`, with their columns, in sort order. Together with `period`: the primary key. */
  readonly keys: ReadonlyArray<readonly [field: keyof R & string, column: string]>;
  /** Counter fields with their columns; `float` columns are summed in double precision. */
  readonly counters: ReadonlyArray<readonly [field: keyof R & string, column: string, float: boolean]>;
}

/** The time range and grouping of a query. */
export interface PeriodRange {
  /** Epoch ms, inclusive, compared with the hour start (`period`). */
  from?: number;
  /** Epoch ms, exclusive, compared with the hour start (`period`). */
  to?: number;
  /** @default 'hour' */
  groupBy?: GroupBy;
}

export interface HourlyCountersOptions<R extends PeriodRow> {
  readonly db: Kysely<DB>;
  readonly table: CounterTable<R>;
  /** Names the meter in errors and log lines, e.g. "usage". */
  readonly name: string;
  /** How often pending rows are written. Must be a positive number. @default 10000 @unit milliseconds */
  readonly flushIntervalMs?: number | undefined;
  readonly logger?: Logger | undefined;
  /** Called once per failed flush (a metric). */
  readonly onFlushFailure?: () => void;
  /** Clock, epoch ms. @default Date.now */
  readonly now?: (() => number) | undefined;
}

/**
 * A query: exact values of key fields (absent: any), and the range. `collapse`: key fields summed over instead of
 * grouped by (they read as null in the results; a value given for one still filters).
 */
export type CounterQuery<R extends PeriodRow> = Partial<Omit<R, 'period'>> & PeriodRange & { readonly collapse?: readonly (keyof R & string)[] };

type Fields = Record<string, string | number | null>;
const fields = (r: PeriodRow): Fields => r as unknown as Fields;

/** Rejects a range that is not epoch milliseconds, or an unknown grouping, with SY_ERR_BAD_REQUEST naming `what`. */
function checkRange(q: PeriodRange, what: string): void {
  for (const k of ['from', 'to'] as const) {
    const v = q[k];
    if (v !== undefined && !Number.isFinite(v)) throw err('SY_ERR_BAD_REQUEST', `${what}: "${k}" must be epoch milliseconds`);
  }
  if (q.groupBy !== undefined && q.groupBy !== 'hour' && q.groupBy !== 'day' && q.groupBy !== 'total') {
    throw err('SY_ERR_BAD_REQUEST', `${what}: "groupBy" must be hour, day or total (got "${String(q.groupBy)}")`);
  }
}

/** A non-negative finite number, else 0 (hot paths never throw and never write NaN). */
export function amount(x: number): number {
  return Number.isFinite(x) && x > 0 ? x : 0;
}

/**
 * Pending rows of one counter table, flushed on a timer and merged into reads: the base of a usage meter, which
 * adds its `record` (the hot path: {@link HourlyCounters.pending} / {@link HourlyCounters.start}) and its
 * validated `query` (through {@link HourlyCounters.select}).
 *
 * @example
 * class Meter extends HourlyCounters<Row> {
 *   record(tenant: string): void {
 *     const period = this.hour();
 *     const key = tenant + '\u0000' + period;
 *     const row = this.pending(key) ?? this.start(key, { tenant, period, requests: 0 });
 *     row.requests += 1;
 *   }
 * }
 */
export class HourlyCounters<R extends PeriodRow> {
  /** For the hot path's own warnings. */
  protected readonly log: Logger | null;
  readonly #now: () => number;
  readonly #db: Kysely<DB>;
  readonly #table: CounterTable<R>;
  readonly #name: string;
  readonly #onFlushFailure: (() => void) | null;
  #pending = new Map<string, R>();
  #timer: NodeJS.Timeout | null;
  /** Tail of the flush/read queue. */
  #lock: Promise<void> = Promise.resolve();
  #flushing = false;

  constructor(opts: HourlyCountersOptions<R>) {
    const interval = opts.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS;
    if (!Number.isFinite(interval) || interval <= 0) {
      throw err('SY_ERR_CONFIG_INVALID', `${opts.name} meter: flushIntervalMs must be a positive number of milliseconds (got ${interval})`);
    }
    this.#db = opts.db;
    this.#table = opts.table;
    this.#name = opts.name;
    this.log = opts.logger ?? null;
    this.#now = opts.now ?? Date.now;
    this.#onFlushFailure = opts.onFlushFailure ?? null;
    this.#timer = setInterval(() => this.#tick(), interval);
    this.#timer.unref();
  }

  /** Deltas not yet written (for tests and diagnostics). */
  get pendingKeys(): number {
    return this.#pending.size;
  }

  /**
   * Write the accumulated deltas in one transaction (additive upserts). Rejects when the write fails; the deltas
   * are then kept and retried by the next flush.
   */
  flush(): Promise<void> {
    return this.#exclusive(() => this.#flushNow());
  }

  /** Stop the timer and flush once (rejects if that flush fails; the deltas stay in memory). */
  async close(): Promise<void> {
    if (this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
    await this.flush();
  }

  /** Start of the current hour, epoch ms: the `period` of a row recorded now. */
  protected hour(): number {
    return Math.floor(this.#now() / HOUR_MS) * HOUR_MS;
  }

  /** Hot path: the pending row under `key` (the key fields and the hour, joined), if any. */
  protected pending(key: string): R | undefined {
    return this.#pending.get(key);
  }

  /** Hot path: makes `row` (counters at zero, or the first delta) the pending row under `key`, and returns it. */
  protected start(key: string, row: R): R {
    this.#pending.set(key, row);
    return row;
  }

  /**
   * Flushed rows merged with the pending ones: those whose key fields equal `q`'s (a field absent from `q`: any)
   * in [from, to), summed per key and bucket; sorted by period, then the key fields in order. Rejects with
   * SY_ERR_BAD_REQUEST for a range that is not epoch milliseconds or an unknown grouping.
   */
  protected select(q: CounterQuery<R>): Promise<R[]> {
    try {
      checkRange(q, `${this.#name} query`);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#exclusive(() => this.#selectNow(q));
  }

  #tick(): void {
    if (this.#flushing || this.#pending.size === 0) return;
    this.flush().catch(() => undefined); // logged and counted in #flushNow
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn);
    this.#lock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  #addCounters(into: R, d: R): void {
    const a = fields(into);
    const b = fields(d);
    for (const [f] of this.#table.counters) a[f] = (a[f] as number) + (b[f] as number);
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
        for (let i = 0; i < keys.length; i += CHUNK) await this.#upsert(keys.slice(i, i + CHUNK).map((k) => batch.get(k) as R)).execute(tx);
      });
    } catch (e) {
      // Give the rows back; records that arrived during the flush are already in the new map.
      for (const [k, d] of batch) {
        const cur = this.#pending.get(k);
        if (cur === undefined) this.#pending.set(k, d);
        else this.#addCounters(cur, d);
      }
      this.#onFlushFailure?.();
      this.log?.error({ err: e, keys: batch.size }, `${this.#name} flush failed; deltas kept for the next flush`);
      throw e;
    } finally {
      this.#flushing = false;
    }
  }

  /** INSERT … ON CONFLICT (keys, period) DO UPDATE SET counter = table.counter + excluded.counter, for `rows`. */
  #upsert(rows: readonly R[]): RawBuilder<unknown> {
    const t = this.#table;
    const names = [...t.keys.map(([f]) => f), 'period', ...t.counters.map(([f]) => f)];
    const cols = [...t.keys.map(([, c]) => c), 'period', ...t.counters.map(([, c]) => c)];
    const values = rows.map((r) => sql`(${sql.join(names.map((f) => fields(r)[f]))})`);
    const pk = [...t.keys.map(([, c]) => c), 'period'];
    const set = t.counters.map(([, c]) => sql`${sql.ref(c)} = ${sql.ref(`${t.name}.${c}`)} + ${sql.ref(`excluded.${c}`)}`);
    return sql`insert into ${sql.table(t.name)} (${sql.join(cols.map((c) => sql.ref(c)))}) values ${sql.join(values)}
      on conflict (${sql.join(pk.map((c) => sql.ref(c)))}) do update set ${sql.join(set)}`;
  }

  async #selectNow(q: CounterQuery<R>): Promise<R[]> {
    const t = this.#table;
    const groupBy = q.groupBy ?? 'hour';
    const bucket = groupBy === 'day' ? sql`period - (period % ${sql.lit(DAY_MS)})` : sql`period`;
    const want = q as Partial<Fields>;
    const conds: RawBuilder<unknown>[] = [];
    for (const [f, c] of t.keys) if (want[f] !== undefined) conds.push(sql`${sql.ref(c)} = ${want[f]}`);
    if (q.from !== undefined) conds.push(sql`period >= ${q.from}`);
    if (q.to !== undefined) conds.push(sql`period < ${q.to}`);
    const collapsed = new Set<string>(q.collapse ?? []);
    const grouped = t.keys.filter(([f]) => !collapsed.has(f));
    const keyCols = grouped.map(([, c]) => sql.ref(c));
    const sums = t.counters.map(([, c, float]) => sql`sum(${float ? sql`cast(${sql.ref(c)} as double precision)` : sql.ref(c)}) as ${sql.ref(c)}`);
    const groupCols = groupBy === 'total' ? keyCols : [...keyCols, bucket];
    const { rows: stored } = await sql<
      Record<string, unknown>
    >`select ${sql.join([...keyCols, sql`${groupBy === 'total' ? sql`min(period)` : bucket} as bucket`, ...sums])}
      from ${sql.table(t.name)} ${conds.length > 0 ? sql`where ${sql.join(conds, sql` and `)}` : sql``}
      ${groupCols.length > 0 ? sql`group by ${sql.join(groupCols)}` : sql``}`.execute(this.#db);

    // Read after the await: rows recorded meanwhile are in memory only (no flush can run while we hold the lock).
    const groups = new Map<string, R>();
    const keyOf = (r: Fields): string => grouped.map(([f]) => r[f]).join(SEP) + (groupBy === 'total' ? '' : SEP + r['period']);
    for (const s of stored) {
      if (s['bucket'] === null) continue; // 'total' over no rows at all (no group by): one row of nulls
      const r: Fields = { period: Number(s['bucket']) };
      for (const [f, c] of t.keys) r[f] = collapsed.has(f) ? null : (s[c] as string | number);
      for (const [f, c] of t.counters) r[f] = Number(s[c]);
      groups.set(keyOf(r), r as unknown as R);
    }
    for (const d of this.#pending.values()) {
      const p = fields(d);
      if (t.keys.some(([f]) => want[f] !== undefined && p[f] !== want[f])) continue;
      if ((q.from !== undefined && d.period < q.from) || (q.to !== undefined && d.period >= q.to)) continue;
      const period = groupBy === 'day' ? d.period - (d.period % DAY_MS) : d.period;
      const k = keyOf({ ...p, period });
      const g = groups.get(k);
      if (g === undefined) {
        const row: Fields = { ...p, period };
        for (const f of collapsed) row[f] = null;
        groups.set(k, row as unknown as R);
      } else {
        if (period < g.period) g.period = period; // 'total': earliest hour
        this.#addCounters(g, d);
      }
    }
    return [...groups.values()].sort((a, b) => this.#compare(a, b));
  }

  #compare(a: R, b: R): number {
    if (a.period !== b.period) return a.period - b.period;
    const x = fields(a);
    const y = fields(b);
    for (const [f] of this.#table.keys) {
      const u = x[f] ?? null;
      const v = y[f] ?? null;
      if (u === v || u === null || v === null) continue;
      return typeof u === 'number' && typeof v === 'number' ? u - v : u < v ? -1 : 1;
    }
    return 0;
  }
}
