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
    const out: string[] = new Array<string>(total);
    let o = 0;
    for (const p of parts) for (const s of p.data as string[]) out[o++] = s;
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

/** Rows [start, start+rows) of a tensor: a view for typed arrays, a slice for strings. */
export function sliceRows(t: Tensor, start: number, rows: number): Tensor {
  const total = t.shape[0]!;
  if (start === 0 && rows === total) return t;
  const per = total === 0 ? 0 : t.data.length / total;
  const shape = [rows, ...t.shape.slice(1)];
  const data =
    t.dtype.array === null
      ? (t.data as string[]).slice(start * per, (start + rows) * per)
      : (t.data as NumericArray).subarray(start * per, (start + rows) * per);
  return { dtype: t.dtype, shape, data };
}

/** A tensor of zeros (empty strings for BYTES): used for warmup. */
export function zeros(dtype: DtypeInfo, shape: readonly number[]): Tensor {
  const n = elementCount(shape);
  const data = dtype.array === null ? new Array<string>(n).fill('') : new dtype.array(n);
  return { dtype, shape: [...shape], data };
}
