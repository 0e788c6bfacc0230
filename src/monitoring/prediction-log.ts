/**
 * @module
 * The prediction log: a sampled record of inference requests (inputs, outputs, model version, tenant, routing arm,
 * latency, request id) for monitoring, drift analysis and debugging.
 *
 * ```
 *  sample(model) ─yes─► record(copy) ──► queue (≤ maxBuffer; beyond: dropped + counted)
 *                                          │ timer (flushMs) / flush()
 *                                          ▼
 *                          convert to JSON ─► sink.write(≤ 500) ─► database table or JSONL files
 *                                          ▲                 │ failed: kept (bounded) and retried
 *                                          └─────────────────┘
 * ```
 *
 * The request path (`sample`, `record`) is synchronous, does no I/O and never throws. Tensors are kept as the
 * caller's copies and converted at flush (by the sink, off the event loop, when it has `writeBuffered`: the
 * database sink on SQLite); tensors with more than `maxElements` elements are reduced to their shape at `record`
 * time (`truncated: true`), so a buffered record holds at most that many elements per tensor.
 *
 * Write failures: the batch goes back to the queue and is retried by the next flush; the queue stays bounded by
 * `maxBuffer` (new records are dropped while it is full). A record whose batch failed 3 times is then written on
 * its own; if it fails alone in a flush where another write succeeded, it is dropped as unwritable (counted), so
 * one bad record cannot stall the log. Failures are counted and logged at most once per 10 s.
 *
 * Non-finite floats are logged as the strings "NaN", "Infinity" and "-Infinity" (JSON has no such numbers).
 */
import type { Logger } from 'pino';
import { err } from '../errors.js';
import type { Tensor } from '../tensor/index.js';
import type { PredictionRecord } from './types.js';
import {
  DEFAULT_MAX_ELEMENTS,
  normalizeQuery,
  tensorJson,
  toRecord,
  type BufferedPrediction,
  type BufferedTensor,
  type PredictionQuery,
  type PredictionSink,
} from './prediction-record.js';

export {
  DEFAULT_MAX_ELEMENTS,
  DEFAULT_QUERY_LIMIT,
  MAX_QUERY_LIMIT,
  epochMs,
  normalizeQuery,
  packTensor,
  packTensorJson,
  tensorJson,
  toRecord,
  unpackTensor,
} from './prediction-record.js';
export type { BufferedPrediction, BufferedTensor, NormalizedQuery, PredictionQuery, PredictionSink } from './prediction-record.js';
export { CSV_MAX_ELEMENT_COLUMNS, csvParts, jsonlParts, jsonParts, recordLine, toCsv, toJsonl } from './prediction-export.js';

/** Fraction of requests logged per model unless configured: 1%. */
export const DEFAULT_SAMPLE_RATE = 0.01;
export const DEFAULT_MAX_BUFFER = 10_000;
export const DEFAULT_FLUSH_MS = 1000;
/** 7 days. */
export const DEFAULT_RETENTION_MS = 7 * 86_400_000;
/** Records per `sink.write`. */
export const WRITE_BATCH = 500;
/** Tensor elements per `sink.write` (a batch holds at least one record): bounds the synchronous conversion work. */
const WRITE_BATCH_ELEMENTS = 262_144;

const PRUNE_INTERVAL_MS = 3_600_000;
const LOG_INTERVAL_MS = 10_000;
/** Failed attempts after which a record is written on its own. */
const ISOLATE_AFTER = 3;
/** Failed writes after which a flush stops (the rest waits for the next flush). */
const MAX_FAILURES_PER_FLUSH = 2;

export interface PredictionInput {
  readonly model: string;
  readonly version: number;
  /** '' = no tenant. */
  readonly tenant: string;
  readonly arm: string | null;
  readonly requestId: string;
  readonly latencyMs: number;
  /** The caller passes its own copy (the runtime may take ownership of request buffers). */
  readonly inputs: readonly { readonly name: string; readonly tensor: Tensor }[];
  readonly outputs: readonly { readonly name: string; readonly tensor: Tensor }[];
  /** Epoch ms; default Date.now(). */
  readonly at?: number;
}

export interface PredictionLogOptions {
  readonly sink: PredictionSink;
  /** Sampling rate for a model, 0..1 (called per request: keep it cheap; the caller caches). Default: DEFAULT_SAMPLE_RATE for all. */
  readonly sampleRate?: (model: string) => number;
  /** Records held (pending and being written) at most; beyond, new records are dropped and counted. Default 10000. */
  readonly maxBuffer?: number;
  /** Flush interval, ms. Default 1000. */
  readonly flushMs?: number;
  /** Records older than this are pruned hourly (and at start), ms. Default 7 days; Infinity = never. */
  readonly retentionMs?: number;
  /** Default DEFAULT_MAX_ELEMENTS. */
  readonly maxElements?: number;
  readonly logger?: Logger;
  /** Uniform [0, 1) source for sampling (for tests). Default Math.random. */
  readonly random?: () => number;
  /** Start a flush as soon as a full batch (500) is pending, instead of waiting for the timer. Default true. */
  readonly flushAtBatch?: boolean;
}

interface Item {
  /** Until converted (at its first flush, unless the sink takes the buffered form). */
  held: BufferedPrediction | null;
  rec: PredictionRecord | null;
  /** Failed writes so far. */
  attempts: number;
  /** Tensor elements held. */
  readonly elements: number;
}

/**
 * Sampled, buffered, asynchronous prediction logging.
 *
 * @example
 * const log = new PredictionLog({ sink: new DatabasePredictionSink(database), sampleRate: (m) => rates.get(m) ?? 0.01, logger });
 * if (log.sample(model)) {            // before the request runs: copy the inputs only when sampled
 *   const inputs = copyOf(request.inputs);
 *   // … run the request …
 *   log.record({ model, version, tenant, arm, requestId, latencyMs, inputs, outputs });
 * }
 * const rows = await log.query({ model, since: Date.now() - 3_600_000 });
 * await log.close();
 */
export class PredictionLog {
  readonly #sink: PredictionSink;
  readonly #rate: (model: string) => number;
  readonly #random: () => number;
  readonly #maxBuffer: number;
  readonly #retentionMs: number;
  readonly #maxElements: number;
  readonly #log: Logger | null;
  #queue: Item[] = [];
  /** Records taken out of the queue by a running write (they count against maxBuffer). */
  #inflight = 0;
  #dropped = 0;
  #written = 0;
  #failures = 0;
  #reportedDrops = 0;
  #lastLog = -Infinity;
  #suppressed = 0;
  #flushTimer: NodeJS.Timeout | null;
  #pruneTimer: NodeJS.Timeout | null = null;
  #lock: Promise<void> = Promise.resolve();
  #flushing = false;
  readonly #flushAtBatch: boolean;
  /** The last flush failed: wait for the timer instead of retrying at every full batch. */
  #failing = false;
  #closing: Promise<void> | null = null;

  constructor(opts: PredictionLogOptions) {
    const maxBuffer = opts.maxBuffer ?? DEFAULT_MAX_BUFFER;
    const flushMs = opts.flushMs ?? DEFAULT_FLUSH_MS;
    const retentionMs = opts.retentionMs ?? DEFAULT_RETENTION_MS;
    const maxElements = opts.maxElements ?? DEFAULT_MAX_ELEMENTS;
    const bad = (msg: string): Error => err('SY_ERR_CONFIG_INVALID', `prediction log: ${msg}`);
    if (opts.sink === undefined || opts.sink === null) throw bad('a sink is required');
    if (!Number.isSafeInteger(maxBuffer) || maxBuffer < 1) throw bad(`maxBuffer must be a positive integer (got ${maxBuffer})`);
    if (!Number.isFinite(flushMs) || flushMs <= 0) throw bad(`flushMs must be a positive number of milliseconds (got ${flushMs})`);
    if (Number.isNaN(retentionMs) || retentionMs <= 0) throw bad(`retentionMs must be a positive number of milliseconds or Infinity (got ${retentionMs})`);
    if (!Number.isSafeInteger(maxElements) || maxElements < 0) throw bad(`maxElements must be a non-negative integer (got ${maxElements})`);
    this.#sink = opts.sink;
    this.#rate = opts.sampleRate ?? (() => DEFAULT_SAMPLE_RATE);
    this.#random = opts.random ?? Math.random;
    this.#maxBuffer = maxBuffer;
    this.#retentionMs = retentionMs;
    this.#maxElements = maxElements;
    this.#log = opts.logger ?? null;
    this.#flushAtBatch = opts.flushAtBatch ?? true;
    this.#flushTimer = setInterval(() => this.#tick(), flushMs);
    this.#flushTimer.unref();
    if (Number.isFinite(retentionMs)) {
      this.#pruneTimer = setInterval(() => void this.#prune(), PRUNE_INTERVAL_MS);
      this.#pruneTimer.unref();
      void this.#prune();
    }
  }

  /** Records dropped: buffer full, after close, unconvertible, or unwritable. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Records the sink accepted. */
  get written(): number {
    return this.#written;
  }

  /** Records held: waiting or being written. */
  get pending(): number {
    return this.#queue.length + this.#inflight;
  }

  /** Failed `sink.write` calls. */
  get failures(): number {
    return this.#failures;
  }

  /** HOT PATH: should this request be logged? (random < sampleRate(model)). Never throws. */
  sample(model: string): boolean {
    try {
      if (this.#closing !== null) return false;
      const rate = this.#rate(model);
      if (!(rate > 0)) return false;
      return rate >= 1 || this.#random() < rate;
    } catch {
      return false;
    }
  }

  /** HOT PATH: buffer one prediction (the tensors are kept, not copied). Synchronous, never throws. */
  record(p: PredictionInput): void {
    try {
      if (this.#closing !== null || this.#queue.length + this.#inflight >= this.#maxBuffer) {
        this.#dropped++;
        return;
      }
      const held: BufferedPrediction = {
        at: p.at ?? Date.now(),
        model: p.model,
        version: p.version,
        tenant: p.tenant,
        arm: p.arm,
        requestId: p.requestId,
        latencyMs: p.latencyMs,
        inputs: this.#hold(p.inputs),
        outputs: this.#hold(p.outputs),
      };
      let elements = 0;
      for (const t of held.inputs) elements += 'tensor' in t ? t.tensor.data.length : 0;
      for (const t of held.outputs) elements += 'tensor' in t ? t.tensor.data.length : 0;
      this.#queue.push({ held, rec: null, attempts: 0, elements });
      // A full batch is waiting: write it now rather than at the next tick (at high rates the buffer would
      // otherwise fill between ticks and drop).
      if (this.#flushAtBatch && !this.#failing && !this.#flushing && this.#queue.length >= WRITE_BATCH) this.#tick();
    } catch {
      this.#dropped++;
    }
  }

  /**
   * Write everything pending now: one `sink.write` per batch of at most 500 records (fewer when they hold more than
   * 262144 tensor elements together). Rejects when a write failed (the data is kept for the next flush).
   */
  flush(): Promise<void> {
    return this.#exclusive(() => this.#flushNow());
  }

  /** Flushes (a failed flush is logged, not thrown), then asks the sink. */
  async query(q: PredictionQuery): Promise<PredictionRecord[]> {
    const n = normalizeQuery(q);
    await this.flush().catch(() => undefined);
    return this.#sink.query(n);
  }

  /**
   * Stop the timers, flush once and close the sink. Records that could not be written are counted as dropped;
   * rejects with the flush error when the final flush failed (the sink is closed all the same).
   */
  close(): Promise<void> {
    if (this.#closing !== null) return this.#closing;
    if (this.#flushTimer !== null) clearInterval(this.#flushTimer);
    if (this.#pruneTimer !== null) clearInterval(this.#pruneTimer);
    this.#flushTimer = null;
    this.#pruneTimer = null;
    this.#closing = (async () => {
      let failure: unknown = null;
      try {
        await this.flush();
      } catch (e) {
        failure = e;
      }
      await this.#lock;
      const lost = this.#queue.length;
      if (lost > 0) {
        this.#dropped += lost;
        this.#queue = [];
        this.#log?.error({ lost }, 'prediction log closed with unwritten records; they are dropped');
      }
      await this.#sink.close();
      if (failure !== null) throw failure;
    })();
    return this.#closing;
  }

  #hold(list: PredictionInput['inputs']): BufferedTensor[] {
    const out = new Array<BufferedTensor>(list.length);
    for (let i = 0; i < list.length; i++) {
      const { name, tensor } = list[i]!;
      out[i] = tensor.data.length > this.#maxElements ? tensorJson(name, tensor, this.#maxElements) : { name, tensor };
    }
    return out;
  }

  #tick(): void {
    if (this.#flushing || this.#queue.length === 0) return;
    this.flush().catch(() => undefined); // logged in #flushNow
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn);
    this.#lock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** At most one log line per 10 s; the count of suppressed ones goes with the next. */
  #error(obj: Record<string, unknown>, msg: string, level: 'error' | 'warn' = 'error'): void {
    const now = Date.now();
    if (now - this.#lastLog < LOG_INTERVAL_MS) {
      this.#suppressed++;
      return;
    }
    this.#lastLog = now;
    this.#log?.[level]({ ...obj, suppressed: this.#suppressed }, msg);
    this.#suppressed = 0;
  }

  /** The items in storage form (converted once, at their first flush); one that cannot be converted is dropped. */
  #converted(batch: readonly Item[]): Item[] {
    const items: Item[] = [];
    for (const it of batch) {
      try {
        if (it.rec === null) {
          it.rec = toRecord(it.held!);
          it.held = null;
        }
        items.push(it);
      } catch (e) {
        this.#dropped++;
        this.#error({ err: e }, 'prediction log record could not be converted; dropped');
      }
    }
    return items;
  }

  /**
   * The next batch off the queue: up to 500 records and about WRITE_BATCH_ELEMENTS tensor elements, or one record
   * that already failed ISOLATE_AFTER times.
   */
  #take(): Item[] {
    const q = this.#queue;
    let n = 1;
    if (q[0]!.attempts < ISOLATE_AFTER) {
      let elements = q[0]!.elements;
      while (n < q.length && n < WRITE_BATCH && q[n]!.attempts < ISOLATE_AFTER && elements + q[n]!.elements <= WRITE_BATCH_ELEMENTS) {
        elements += q[n]!.elements;
        n++;
      }
    }
    return q.splice(0, n);
  }

  async #flushNow(): Promise<void> {
    if (this.#dropped > this.#reportedDrops) {
      this.#error({ dropped: this.#dropped, since: this.#dropped - this.#reportedDrops }, 'prediction log records dropped (buffer full or closed)', 'warn');
      this.#reportedDrops = this.#dropped;
    }
    this.#flushing = true;
    let failures = 0;
    let anyOk = false;
    let failure: unknown = null;
    /** Records that failed on their own in this flush. */
    const alone: Item[] = [];
    try {
      while (this.#queue.length > 0 && failures < MAX_FAILURES_PER_FLUSH) {
        const batch = this.#take();
        this.#inflight = batch.length;
        const items = this.#sink.writeBuffered === undefined ? this.#converted(batch) : batch;
        try {
          if (items.length > 0) {
            await (this.#sink.writeBuffered === undefined
              ? this.#sink.write(items.map((it) => it.rec!))
              : this.#sink.writeBuffered(items.map((it) => it.held!)));
            anyOk = true;
            this.#written += items.length;
          }
          // Let requests run between batches: a synchronous sink (SQLite in memory) would otherwise hold the
          // event loop for the whole queue.
          if (this.#queue.length > 0) await new Promise<void>((r) => setImmediate(r));
        } catch (e) {
          failures++;
          this.#failures++;
          failure = e;
          for (const it of items) it.attempts++;
          if (items.length === 1 && items[0]!.attempts > ISOLATE_AFTER) {
            alone.push(items[0]!);
          } else {
            this.#queue.unshift(...items);
            break;
          }
        } finally {
          this.#inflight = 0;
        }
      }
    } finally {
      this.#flushing = false;
    }
    if (alone.length > 0) {
      if (anyOk) {
        // The sink works: these records are the problem.
        this.#dropped += alone.length;
        this.#reportedDrops += alone.length;
        this.#error({ err: failure, records: alone.length }, 'prediction log records the sink refuses; dropped');
      } else {
        this.#queue.push(...alone);
      }
    }
    this.#failing = failure !== null;
    if (failure !== null) {
      this.#error({ err: failure, sink: this.#sink.kind, pending: this.pending }, 'prediction log write failed; records kept for the next flush');
      throw failure;
    }
  }

  #prune(): Promise<void> {
    return this.#exclusive(async () => {
      try {
        const n = await this.#sink.prune(Date.now() - this.#retentionMs);
        if (n > 0) this.#log?.info({ sink: this.#sink.kind, removed: n }, 'prediction log pruned');
      } catch (e) {
        this.#error({ err: e, sink: this.#sink.kind }, 'prediction log prune failed');
      }
    });
  }
}
