/**
 * @module
 * Typed-array tensors and the row (dim 0) operations the batcher needs: concatenate requests into one batch,
 * slice a batch's outputs back per request without copying.
 */
import type { DtypeInfo, NumericArray, TensorData } from './dtype.js';

export interface Tensor {
  readonly dtype: DtypeInfo;
  readonly shape: readonly number[];
  readonly data: TensorData;
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Concatenate tensors along dim 0. All parts must share dtype and trailing dims (the batcher guarantees it). */
export function concatRows(parts: readonly Tensor[]): Tensor {
  const first = parts[0]!;
  if (parts.length === 1) return first;
  let rows = 0;
  let total = 0;
  for (const p of parts) {
    rows += p.shape[0]!;
    total += p.data.length;
  }
  const shape = [rows, ...first.shape.slice(1)];
  if (first.dtype.array === null) {
    const out: Uint8Array[] = new Array<Uint8Array>(total);
    let o = 0;
    for (const p of parts) for (const s of p.data as Uint8Array[]) out[o++] = s;
    return { dtype: first.dtype, shape, data: out };
  }
  const out = new first.dtype.array(total);
  let o = 0;
  for (const p of parts) {
    (out as Uint8Array).set(p.data as Uint8Array, o);
    o += p.data.length;
  }
  return { dtype: first.dtype, shape, data: out };
}

/** Rows [start, start+rows) of a tensor: a view for typed arrays, a slice of the element list for BYTES. */
export function sliceRows(t: Tensor, start: number, rows: number): Tensor {
  const total = t.shape[0]!;
  if (start === 0 && rows === total) return t;
  const per = total === 0 ? 0 : t.data.length / total;
  const shape = [rows, ...t.shape.slice(1)];
  const data =
    t.dtype.array === null
      ? (t.data as Uint8Array[]).slice(start * per, (start + rows) * per)
      : (t.data as NumericArray).subarray(start * per, (start + rows) * per);
  return { dtype: t.dtype, shape, data };
}

/** A tensor of zeros (empty elements for BYTES): used for warmup. */
export function zeros(dtype: DtypeInfo, shape: readonly number[]): Tensor {
  const n = elementCount(shape);
  const data = dtype.array === null ? Array.from({ length: n }, () => new Uint8Array(0)) : new dtype.array(n);
  return { dtype, shape: [...shape], data };
}

const SLAB_BYTES = 64 * 1024;
const SMALL_BYTES = 4 * 1024;
let slab = new ArrayBuffer(SLAB_BYTES);
let slabUsed = 0;

/**
 * A zeroed typed array of `count` elements of numeric `dtype`. Small ones (≤ 4 KiB, every decoded input of a
 * typical request) are views carved out of shared 64 KiB slabs: a typed array of its own allocates its own
 * ArrayBuffer (about 0.5 µs and GC bookkeeping), a view about 0.04 µs. A slab is freed once no view on it is
 * reachable. Such a view does not cover its whole buffer: code that transfers buffers to another thread must
 * copy it first (runtimes/onnx/instance.ts does).
 */
export function newArray(dtype: DtypeInfo, count: number): NumericArray {
  const ctor = dtype.array;
  if (ctor === null) throw new TypeError(`newArray: ${dtype.v2} has no typed array`);
  const bytes = count * dtype.size;
  if (bytes === 0 || bytes > SMALL_BYTES) return new ctor(count);
  let start = (slabUsed + 7) & ~7; // 8-byte aligned: fits every element size
  if (start + bytes > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES); // the old one lives on while its views do
    start = 0;
  }
  slabUsed = start + bytes;
  return new ctor(slab, start, count);
}

/** A copy of a tensor whose data the caller may hand to the runtime (which can take ownership of buffers). */
export function cloneTensor(t: Tensor): Tensor {
  return { dtype: t.dtype, shape: [...t.shape], data: Array.isArray(t.data) ? t.data.map((b) => b.slice()) : t.data.slice() };
}

/** Tensors in signature order, paired with their names. */
export function named(specs: readonly { readonly name: string }[], tensors: readonly Tensor[]): { name: string; tensor: Tensor }[] {
  return tensors.map((tensor, i) => ({ name: specs[i]!.name, tensor }));
}
