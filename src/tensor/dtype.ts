/**
 * @module
 * The datatype table: V2 (Open Inference Protocol) names ↔ onnxruntime tensor types ↔ typed arrays, defined once.
 */

export type V2Datatype = 'BOOL' | 'UINT8' | 'UINT16' | 'UINT32' | 'UINT64' | 'INT8' | 'INT16' | 'INT32' | 'INT64' | 'FP16' | 'FP32' | 'FP64' | 'BYTES';

/** onnxruntime-common Tensor.Type names for the types we serve. */
export type OrtType = 'bool' | 'uint8' | 'uint16' | 'uint32' | 'uint64' | 'int8' | 'int16' | 'int32' | 'int64' | 'float16' | 'float32' | 'float64' | 'string';

export type NumericArray =
  Uint8Array | Uint16Array | Uint32Array | BigUint64Array | Int8Array | Int16Array | Int32Array | BigInt64Array | Float32Array | Float64Array;

/**
 * Element storage: typed arrays for numbers (FP16 as raw IEEE half bits in Uint16Array); for BYTES, one
 * Uint8Array per element: BYTES are bytes, not text (a JSON string is their UTF-8 encoding at the edge).
 */
export type TensorData = NumericArray | Uint8Array[];

type TypedArrayCtor = {
  new (length: number): NumericArray;
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): NumericArray;
  readonly BYTES_PER_ELEMENT: number;
};

export interface DtypeInfo {
  readonly v2: V2Datatype;
  readonly ort: OrtType;
  /** Bytes per element in the binary wire format; 0 for BYTES (variable length). */
  readonly size: number;
  /** Typed array class, or null for BYTES. */
  readonly array: TypedArrayCtor | null;
  /** Values are bigint (INT64/UINT64). */
  readonly bigint: boolean;
}

const entry = (v2: V2Datatype, ort: OrtType, array: TypedArrayCtor | null, bigint = false): DtypeInfo =>
  Object.freeze({ v2, ort, size: array?.BYTES_PER_ELEMENT ?? 0, array, bigint });

/** Keyed by V2 name. */
export const DTYPES: Readonly<Record<V2Datatype, DtypeInfo>> = Object.freeze({
  BOOL: entry('BOOL', 'bool', Uint8Array),
  UINT8: entry('UINT8', 'uint8', Uint8Array),
  UINT16: entry('UINT16', 'uint16', Uint16Array),
  UINT32: entry('UINT32', 'uint32', Uint32Array),
  UINT64: entry('UINT64', 'uint64', BigUint64Array as unknown as TypedArrayCtor, true),
  INT8: entry('INT8', 'int8', Int8Array),
  INT16: entry('INT16', 'int16', Int16Array),
  INT32: entry('INT32', 'int32', Int32Array),
  INT64: entry('INT64', 'int64', BigInt64Array as unknown as TypedArrayCtor, true),
  FP16: entry('FP16', 'float16', Uint16Array),
  FP32: entry('FP32', 'float32', Float32Array),
  FP64: entry('FP64', 'float64', Float64Array),
  BYTES: entry('BYTES', 'string', null),
});

const BY_ORT = new Map<string, DtypeInfo>(Object.values(DTYPES).map((d) => [d.ort, d]));

export function dtypeFromV2(name: string): DtypeInfo | undefined {
  return Object.hasOwn(DTYPES, name) ? DTYPES[name as V2Datatype] : undefined;
}

export function dtypeFromOrt(name: string): DtypeInfo | undefined {
  return BY_ORT.get(name);
}

// IEEE 754 half <-> single conversion through a shared scratch buffer.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Float → IEEE half bits, round-to-nearest-even, with overflow to ±Inf and NaN preserved. */
export function toHalfBits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  e = half; // carry into exponent is correct IEEE behaviour (may become Inf)
  return sign | e;
}

/** IEEE half bits → number. */
export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
