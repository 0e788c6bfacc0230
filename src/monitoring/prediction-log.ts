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
import { bytesText, fromHalfBits, toHalfBits, type NumericArray } from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import type { PredictionRecord, TensorJson } from './types.js';

/** Fraction of requests logged per model unless configured: 1%. */
export const DEFAULT_SAMPLE_RATE = 0.01;
/** Tensors with more elements are logged as shape only (`truncated: true`). */
export const DEFAULT_MAX_ELEMENTS = 4096;
export const DEFAULT_MAX_BUFFER = 10_000;
export const DEFAULT_FLUSH_MS = 1000;
/** 7 days. */
export const DEFAULT_RETENTION_MS = 7 * 86_400_000;
export const DEFAULT_QUERY_LIMIT = 1000;
export const MAX_QUERY_LIMIT = 100_000;
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

function jsonNumber(v: number): number | string {
  return Number.isFinite(v) ? v : String(v);
}

/** A tensor as JSON (see {@link TensorJson}); more than `maxElements` elements: shape only, `truncated: true`. */
export function tensorJson(name: string, t: Tensor, maxElements: number = DEFAULT_MAX_ELEMENTS): TensorJson {
  const datatype = t.dtype.v2;
  const shape = [...t.shape];
  const d = t.data;
  const n = d.length;
  if (n > maxElements) return { name, datatype, shape, data: [], truncated: true };
  const out = new Array<number | string | boolean>(n);
  if (t.dtype.array === null) {
    const s = d as Uint8Array[];
    for (let i = 0; i < n; i++) out[i] = bytesText(s[i]!);
  } else if (datatype === 'BOOL') {
    const a = d as Uint8Array;
    for (let i = 0; i < n; i++) out[i] = a[i] !== 0;
  } else if (datatype === 'FP16') {
    const a = d as Uint16Array;
    for (let i = 0; i < n; i++) out[i] = jsonNumber(fromHalfBits(a[i]!));
  } else if (t.dtype.bigint) {
    const a = d as BigInt64Array | BigUint64Array;
    for (let i = 0; i < n; i++) {
      const v = a[i]!;
      out[i] = v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
    }
  } else {
    const a = d as Exclude<NumericArray, BigInt64Array | BigUint64Array>;
    for (let i = 0; i < n; i++) out[i] = jsonNumber(a[i]!);
  }
  return { name, datatype, shape, data: out };
}

type NumericCtor = Float32ArrayConstructor | Float64ArrayConstructor | Int8ArrayConstructor | Int16ArrayConstructor | Int32ArrayConstructor
  | Uint8ArrayConstructor | Uint16ArrayConstructor | Uint32ArrayConstructor;

/** Datatypes stored packed, and the typed array of their stored elements (FP16: its half-precision bits). */
const PACKED: Readonly<Record<string, NumericCtor>> = {
  FP32: Float32Array, FP64: Float64Array, FP16: Uint16Array,
  INT8: Int8Array, INT16: Int16Array, INT32: Int32Array, UINT8: Uint8Array, UINT16: Uint16Array, UINT32: Uint32Array,
};

const base64 = (a: ArrayBufferView): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

/**
 * A tensor in the log's storage form: numeric ones packed (`b64`, see {@link TensorJson}) straight from their
 * typed array — a fraction of the bytes and CPU of JSON numbers; the rest (BOOL, INT64, BYTES, truncated) as
 * {@link tensorJson} writes them.
 */
export function packTensor(name: string, t: Tensor, maxElements: number = DEFAULT_MAX_ELEMENTS): TensorJson {
  const Ctor = PACKED[t.dtype.v2];
  if (Ctor === undefined || t.data.length > maxElements || Array.isArray(t.data)) return tensorJson(name, t, maxElements);
  return { name, datatype: t.dtype.v2, shape: [...t.shape], data: [], b64: base64(t.data as ArrayBufferView) };
}

/** Pack a tensor already in JSON form (exactly, or not at all: what would not round-trip stays JSON). */
export function packTensorJson(t: TensorJson): TensorJson {
  const Ctor = PACKED[t.datatype];
  if (t.b64 !== undefined || Ctor === undefined || t.truncated === true) return t;
  const d = t.data;
  const a = new Ctor(d.length);
  const half = t.datatype === 'FP16';
  const float = Ctor === Float32Array || Ctor === Float64Array || half;
  for (let i = 0; i < d.length; i++) {
    const v = d[i];
    const x = typeof v === 'number' ? v : float && (v === 'NaN' || v === 'Infinity' || v === '-Infinity') ? Number(v) : null;
    if (x === null) return t;
    if (half) {
      a[i] = toHalfBits(x);
      if (fromHalfBits(a[i]!) !== x && !(Number.isNaN(x) && Number.isNaN(fromHalfBits(a[i]!)))) return t;
    } else {
      a[i] = x;
      if (a[i] !== x && !(Number.isNaN(x) && Number.isNaN(a[i]!))) return t;
    }
  }
  return { name: t.name, datatype: t.datatype, shape: t.shape, data: [], b64: base64(a) };
}

/** The JSON form of a stored tensor: packed data back to numbers, exactly as {@link tensorJson} writes them. */
export function unpackTensor(t: TensorJson): TensorJson {
  if (t.b64 === undefined) return t;
  const Ctor = PACKED[t.datatype];
  if (Ctor === undefined) return { name: t.name, datatype: t.datatype, shape: t.shape, data: [] };
  const bytes = Buffer.from(t.b64, 'base64');
  const copy = new Uint8Array(bytes.length); // aligned for the element type
  copy.set(bytes);
  const a = new Ctor(copy.buffer, 0, Math.floor(bytes.length / Ctor.BYTES_PER_ELEMENT));
  const half = t.datatype === 'FP16';
  const data = new Array<number | string>(a.length);
  for (let i = 0; i < a.length; i++) data[i] = jsonNumber(half ? fromHalfBits(a[i]!) : a[i]!);
  return { name: t.name, datatype: t.datatype, shape: t.shape, data };
}

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

export interface PredictionQuery {
  readonly model?: string;
  readonly version?: number;
  /** Epoch ms, inclusive. */
  readonly since?: number;
  /** Epoch ms, inclusive. */
  readonly until?: number;
  /** Default 1000, at most 100000 (larger values are lowered); 0 returns nothing. */
  readonly limit?: number;
}

/** A validated query: `limit` resolved. */
export interface NormalizedQuery {
  readonly model?: string;
  readonly version?: number;
  readonly since?: number;
  readonly until?: number;
  readonly limit: number;
}

/**
 * Where the log writes. `query` returns the matching records ascending by time (ties in write order), the
 * first `limit` of them: page forward with `since`.
 */
export interface PredictionSink {
  readonly kind: 'database' | 'jsonl';
  /** All or nothing where the store allows it (the database sink: one transaction). */
  write(batch: readonly PredictionRecord[]): Promise<void>;
  /**
   * Optional: `write` from the buffered form (tensors still typed arrays), the sink converting with
   * {@link toRecord} itself, e.g. on another thread. The log calls it instead of `write` when present.
   */
  writeBuffered?(batch: readonly BufferedPrediction[]): Promise<void>;
  query(q: PredictionQuery): Promise<PredictionRecord[]>;
  /** Delete what is older than `olderThanMs` (a cutoff, epoch ms); returns how many records (database) or files (JSONL) went. */
  prune(olderThanMs: number): Promise<number>;
  close(): Promise<void>;
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

/** Validate a query (SY_ERR_BAD_REQUEST) and resolve its limit. */
export function normalizeQuery(q: PredictionQuery): NormalizedQuery {
  const bad = (msg: string): Error => err('SY_ERR_BAD_REQUEST', `prediction log query: ${msg}`);
  if (q === null || typeof q !== 'object') throw bad('must be an object');
  if (q.model !== undefined && typeof q.model !== 'string') throw bad('"model" must be a string');
  if (q.version !== undefined && !Number.isSafeInteger(q.version)) throw bad('"version" must be an integer');
  for (const k of ['since', 'until'] as const) {
    const v = q[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) throw bad(`"${k}" must be epoch milliseconds`);
  }
  const limit = q.limit ?? DEFAULT_QUERY_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 0) throw bad(`"limit" must be a non-negative integer (got ${String(limit)})`);
  return {
    ...(q.model === undefined ? {} : { model: q.model }),
    ...(q.version === undefined ? {} : { version: q.version }),
    ...(q.since === undefined ? {} : { since: q.since }),
    ...(q.until === undefined ? {} : { until: q.until }),
    limit: Math.min(limit, MAX_QUERY_LIMIT),
  };
}

/** A tensor as buffered: the caller's copy, or already reduced to its shape (more than `maxElements`). */
export type BufferedTensor = { readonly name: string; readonly tensor: Tensor } | TensorJson;

/** A prediction as the log buffers it until written (see {@link toRecord}). */
export interface BufferedPrediction {
  /** Epoch ms. */
  readonly at: number;
  readonly model: string;
  readonly version: number;
  readonly tenant: string;
  readonly arm: string | null;
  readonly requestId: string;
  readonly latencyMs: number;
  readonly inputs: readonly BufferedTensor[];
  readonly outputs: readonly BufferedTensor[];
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

function finiteOr(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

/** A buffered prediction in storage form: numeric tensors packed from their typed arrays (sinks store it as is; queries unpack). */
export function toRecord(h: BufferedPrediction): PredictionRecord {
  // Tensors beyond maxElements were reduced when buffered: the rest is kept whole.
  const json = (list: readonly BufferedTensor[]): TensorJson[] => list.map((t) => ('tensor' in t ? packTensor(t.name, t.tensor, Infinity) : t));
  const at = finiteOr(h.at, Date.now());
  return {
    at: new Date(at).toISOString(),
    model: String(h.model),
    version: finiteOr(h.version, 0),
    tenant: String(h.tenant ?? ''),
    arm: h.arm === null || h.arm === undefined ? null : String(h.arm),
    requestId: String(h.requestId ?? ''),
    latencyMs: finiteOr(h.latencyMs, 0),
    inputs: json(h.inputs),
    outputs: json(h.outputs),
  };
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
        model: p.model, version: p.version, tenant: p.tenant, arm: p.arm, requestId: p.requestId, latencyMs: p.latencyMs,
        inputs: this.#hold(p.inputs), outputs: this.#hold(p.outputs),
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
    this.#lock = run.then(() => undefined, () => undefined);
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

// ---------------------------------------------------------------------------------------------------------------
// Export.

/** One JSON object per line (the key order of {@link PredictionRecord}), each line ending in "\n". */
export function toJsonl(records: readonly PredictionRecord[]): string {
  let out = '';
  for (const r of records) out += recordLine(r);
  return out;
}

/** A record as one JSONL line, `at` first (readers may pick it out without parsing the line). */
export function recordLine(r: PredictionRecord): string {
  return JSON.stringify({
    at: r.at, model: r.model, version: r.version, tenant: r.tenant, arm: r.arm, requestId: r.requestId,
    latencyMs: r.latencyMs, inputs: r.inputs, outputs: r.outputs,
  }) + '\n';
}

/** Tensors with at most this many elements per row get one column per element. */
export const CSV_MAX_ELEMENT_COLUMNS = 64;

/** One CSV field, quoted as RFC 4180 asks (commas, quotes, line breaks). */
export function csvField(v: string): string {
  return /[",\r\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
}

function csvValue(v: number | string | boolean | undefined): string {
  if (v === undefined) return '';
  if (typeof v === 'string') return v === '' ? '""' : csvField(v);
  return String(v);
}

/** Rows of a record: the dim 0 all its tensors share, or 1 (whole tensors) when they do not. */
function rowsOf(r: PredictionRecord): number {
  let rows = -1;
  for (const t of [...r.inputs, ...r.outputs]) {
    const d = t.shape[0];
    if (t.shape.length === 0 || d === undefined || d < 1) return 1;
    if (rows === -1) rows = d;
    else if (d !== rows) return 1;
  }
  return rows === -1 ? 1 : rows;
}

interface CsvTensor {
  readonly source: 'input' | 'output';
  readonly name: string;
  /** Elements per row when one column per element, else null (one JSON column). */
  perRow: number | null;
  headers: string[];
}

/**
 * CSV (RFC 4180: CRLF line ends, fields with `,` `"` CR or LF quoted, quotes doubled). One line per request
 * row: a request whose tensors all share dim 0 = N gives N lines (`row` 0..N-1); otherwise (a scalar, or
 * differing dim 0) one line with the whole tensors. Columns:
 *
 *   at, model, version, tenant, arm, request_id, latency_ms, row, then per tensor (inputs, then outputs, in
 *   first-seen order): `<tensor>[i]` for i < E when the tensor has the same number E ≤ 64 of elements per row in
 *   every record and is never truncated; else one column `<tensor>` holding the row's values as a JSON array
 *   (empty when the tensor was truncated).
 *
 * A header that would repeat another (an output named like an input, a tensor named like a fixed column) is
 * prefixed with `input:` / `output:`. Empty cell = no value (tensor absent, arm null, tenant ''); an empty
 * BYTES string is written quoted (`""`). Booleans are true/false; numbers in JavaScript's shortest form.
 */
export function toCsv(records: readonly PredictionRecord[]): string {
  const fixed = ['at', 'model', 'version', 'tenant', 'arm', 'request_id', 'latency_ms', 'row'];
  const tensors = new Map<string, CsvTensor>();
  const rows = records.map(rowsOf);
  const survey = (source: 'input' | 'output', list: readonly TensorJson[], nRows: number): void => {
    for (const t of list) {
      const key = `${source}\u0000${t.name}`;
      const per = t.truncated === true || t.data.length % nRows !== 0 ? null : t.data.length / nRows;
      const cur = tensors.get(key);
      if (cur === undefined) tensors.set(key, { source, name: t.name, perRow: per !== null && per <= CSV_MAX_ELEMENT_COLUMNS ? per : null, headers: [] });
      else if (cur.perRow !== per) cur.perRow = null;
    }
  };
  for (const source of ['input', 'output'] as const) {
    records.forEach((r, i) => survey(source, source === 'input' ? r.inputs : r.outputs, rows[i]!));
  }
  const used = new Set(fixed);
  for (const t of tensors.values()) {
    const make = (base: string): string[] =>
      t.perRow === null ? [base] : Array.from({ length: t.perRow }, (_, i) => `${base}[${i}]`);
    let headers = make(t.name);
    if (headers.some((h) => used.has(h))) headers = make(`${t.source}:${t.name}`);
    for (let k = 2; headers.some((h) => used.has(h)); k++) headers = make(`${t.source}:${t.name}#${k}`);
    for (const h of headers) used.add(h);
    t.headers = headers;
  }
  const columns = [...tensors.values()];
  let out = [...fixed, ...columns.flatMap((t) => t.headers)].map(csvField).join(',') + '\r\n';
  records.forEach((r, i) => {
    const nRows = rows[i]!;
    const byKey = new Map<string, TensorJson>();
    for (const t of r.inputs) byKey.set(`input\u0000${t.name}`, t);
    for (const t of r.outputs) byKey.set(`output\u0000${t.name}`, t);
    const head = [csvField(r.at), csvField(r.model), String(r.version), csvField(r.tenant), r.arm === null ? '' : csvField(r.arm),
      csvField(r.requestId), String(r.latencyMs)];
    for (let row = 0; row < nRows; row++) {
      const cells = [...head, String(row)];
      for (const c of columns) {
        const t = byKey.get(`${c.source}\u0000${c.name}`);
        if (c.perRow !== null) {
          const per = c.perRow;
          for (let e = 0; e < per; e++) cells.push(t === undefined ? '' : csvValue(t.data[row * per + e]));
        } else if (t === undefined || t.truncated === true) {
          cells.push('');
        } else {
          const per = t.data.length / nRows;
          cells.push(csvField(JSON.stringify(t.data.slice(row * per, (row + 1) * per))));
        }
      }
      out += cells.join(',') + '\r\n';
    }
  });
  return out;
}
