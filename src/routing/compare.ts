/**
 * @module
 * Compare a primary's outputs with a shadow's for the same request: the largest element-wise difference over
 * numeric outputs, and the share of rows whose decision (argmax, or value above a threshold) agrees.
 */
import { elementCount, fromHalfBits, type Tensor } from '../tensor/index.js';
import type { NumericArray } from '../tensor/index.js';

export interface OutputComparison {
  /** Max |primary - shadow| over every element of the numeric outputs compared; null when none was. */
  readonly maxAbsDiff: number | null;
  /** Share (0..1) of rows (dim 0) whose decision agrees, over all outputs compared; null when no rows were. */
  readonly agreement: number | null;
  /** Rows compared of the first comparable output. */
  readonly rows: number;
  /** Outputs that could not be compared, with why. */
  readonly mismatches: readonly string[];
}

export interface NamedTensor {
  readonly name: string;
  readonly tensor: Tensor;
}

type Reader = (i: number) => number;

function reader(t: Tensor): Reader {
  const d = t.data as NumericArray;
  if (t.dtype.v2 === 'FP16') return (i) => fromHalfBits(d[i] as number);
  if (t.dtype.bigint) return (i) => Number(d[i] as bigint);
  if (t.dtype.v2 === 'BOOL') return (i) => (d[i] === 0 ? 0 : 1);
  return (i) => d[i] as number;
}

const shapeText = (s: readonly number[]): string => `[${s.join(',')}]`;

/** |a - b|, with NaN vs NaN equal and NaN vs a number infinitely far. */
function absDiff(a: number, b: number): number {
  if (a === b) return 0;
  const d = Math.abs(a - b);
  if (d === d) return d;
  return a !== a && b !== b ? 0 : Infinity;
}

/**
 * Compare outputs by name. Numeric outputs of any numeric dtypes are comparable when shapes match; BYTES only
 * with BYTES. Decisions: argmax of a row when a row holds more than one element, else value > threshold.
 */
export function compareOutputs(primary: readonly NamedTensor[], shadow: readonly NamedTensor[], threshold = 0.5): OutputComparison {
  const byName = new Map<string, Tensor>();
  for (const o of shadow) byName.set(o.name, o.tensor);
  const seen = new Set<string>();
  const mismatches: string[] = [];
  let maxAbsDiff: number | null = null;
  let rowsTotal = 0;
  let rowsAgree = 0;
  let firstRows: number | null = null;

  for (const { name, tensor: p } of primary) {
    seen.add(name);
    const s = byName.get(name);
    if (s === undefined) {
      mismatches.push(`${name}: missing in shadow`);
      continue;
    }
    const pBytes = p.dtype.array === null;
    const sBytes = s.dtype.array === null;
    if (pBytes !== sBytes) {
      mismatches.push(`${name}: dtype ${p.dtype.v2} vs ${s.dtype.v2}`);
      continue;
    }
    if (p.shape.length !== s.shape.length || p.shape.some((d, i) => d !== s.shape[i])) {
      mismatches.push(`${name}: shape ${shapeText(p.shape)} vs ${shapeText(s.shape)}`);
      continue;
    }
    const n = elementCount(p.shape);
    if (p.data.length !== n || s.data.length !== n) {
      mismatches.push(`${name}: ${p.data.length} vs ${s.data.length} elements for shape ${shapeText(p.shape)}`);
      continue;
    }
    const rows = p.shape.length === 0 ? 1 : p.shape[0]!;
    const per = rows === 0 ? 0 : n / rows;
    firstRows ??= rows;
    rowsTotal += rows;

    if (pBytes) {
      const a = p.data as Uint8Array[];
      const b = s.data as Uint8Array[];
      for (let r = 0, i = 0; r < rows; r++) {
        let same = true;
        for (const end = i + per; i < end; i++) if (Buffer.compare(a[i]!, b[i]!) !== 0) same = false;
        if (same) rowsAgree++;
      }
      continue;
    }

    const a = reader(p);
    const b = reader(s);
    let max: number = maxAbsDiff ?? 0;
    for (let r = 0, i = 0; r < rows; r++) {
      if (per === 1) {
        const x = a(i);
        const y = b(i);
        const d = absDiff(x, y);
        if (d > max) max = d;
        if (x > threshold === y > threshold) rowsAgree++;
        i++;
        continue;
      }
      // argmax: first index of the largest value; NaN never wins.
      let ai = -1;
      let av = -Infinity;
      let bi = -1;
      let bv = -Infinity;
      for (let k = 0; k < per; k++, i++) {
        const x = a(i);
        const y = b(i);
        const d = absDiff(x, y);
        if (d > max) max = d;
        if (x > av || (ai < 0 && x === -Infinity)) {
          av = x;
          ai = k;
        }
        if (y > bv || (bi < 0 && y === -Infinity)) {
          bv = y;
          bi = k;
        }
      }
      if (ai === bi) rowsAgree++;
    }
    maxAbsDiff = max;
  }
  for (const { name } of shadow) if (!seen.has(name)) mismatches.push(`${name}: missing in primary`);

  return {
    maxAbsDiff,
    agreement: rowsTotal === 0 ? null : rowsAgree / rowsTotal,
    rows: firstRows ?? 0,
    mismatches,
  };
}
