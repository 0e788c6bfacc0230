/**
 * @module
 * The prediction log's record forms and storage contract: tensors as JSON (packed or not), a buffered prediction
 * converted to its stored record, the query a sink answers and the {@link PredictionSink} interface.
 *
 * Non-finite floats are logged as the strings "NaN", "Infinity" and "-Infinity" (JSON has no such numbers).
 */
import { err } from '../errors.js';
import { bytesText, fromHalfBits, toHalfBits, type NumericArray } from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import type { PredictionRecord, TensorJson } from './types.js';

/** Tensors with more elements are logged as shape only (`truncated: true`). */
export const DEFAULT_MAX_ELEMENTS = 4096;
export const DEFAULT_QUERY_LIMIT = 1000;
export const MAX_QUERY_LIMIT = 100_000;

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

type NumericCtor =
  | Float32ArrayConstructor
  | Float64ArrayConstructor
  | Int8ArrayConstructor
  | Int16ArrayConstructor
  | Int32ArrayConstructor
  | Uint8ArrayConstructor
  | Uint16ArrayConstructor
  | Uint32ArrayConstructor;

/** Datatypes stored packed, and the typed array of their stored elements (FP16: its half-precision bits). */
const PACKED: Readonly<Record<string, NumericCtor>> = {
  FP32: Float32Array,
  FP64: Float64Array,
  FP16: Uint16Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
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

/** A record's `at` as epoch ms (SY_ERR_BAD_REQUEST when it is not an ISO time). */
export function epochMs(rec: PredictionRecord): number {
  const at = Date.parse(rec.at);
  if (!Number.isFinite(at)) throw err('SY_ERR_BAD_REQUEST', `prediction record: "at" is not an ISO time (${String(rec.at)})`);
  return at;
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
