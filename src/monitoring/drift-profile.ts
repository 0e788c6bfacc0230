/**
 * @module
 * Reference profiles for drift: the default feature mapping from a model signature, profiles built from rows,
 * and the readers that turn logged prediction records or live tensors into rows keyed by feature name.
 */
import { err } from '../errors.js';
import { bytesText, fromHalfBits } from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import type { FeatureSpec, PredictionRecord, TensorJson } from './types.js';
import { CategoricalSketch, NumericSketch, quantileEdges } from './sketch.js';

export interface FeatureProfile {
  readonly spec: FeatureSpec;
  /** NumericSketch JSON (numeric features). */
  readonly numeric?: object;
  /** CategoricalSketch JSON (categorical features). */
  readonly categorical?: object;
  /** Smallest / largest finite reference value (numeric features with data): the out-of-range bounds. */
  readonly min?: number;
  readonly max?: number;
}

export interface ReferenceProfile {
  readonly format: 1;
  /** Rows the profile was built from. */
  readonly rows: number;
  readonly features: readonly FeatureProfile[];
  /** ISO-8601 UTC. */
  readonly createdAt: string;
}

type Sig = { readonly name: string; readonly datatype: string; readonly shape: readonly number[] };

/**
 * Default feature mapping from a signature: each column of the last dim of every input and output tensor with
 * <= maxColumns (default 64) columns; numeric dtypes numeric, BYTES/BOOL categorical; names "<tensor>[i]" (or
 * "<tensor>" when it has one column). A rank-0/1 tensor is one column. A tensor whose last dim is dynamic (< 0) is
 * skipped unless `names` gives its columns. Custom names: `names` maps tensor → one name per column.
 */
export function defaultFeatures(
  sig: { inputs: readonly Sig[]; outputs: readonly Sig[] },
  opts: { maxColumns?: number; names?: Readonly<Record<string, readonly string[]>> } = {},
): FeatureSpec[] {
  const maxColumns = opts.maxColumns ?? 64;
  const out: FeatureSpec[] = [];
  const add = (t: Sig, source: 'input' | 'output'): void => {
    const custom = opts.names !== undefined && Object.hasOwn(opts.names, t.name) ? opts.names[t.name] : undefined;
    let cols = t.shape.length < 2 ? 1 : t.shape[t.shape.length - 1]!;
    if (cols < 0 && custom !== undefined) cols = custom.length;
    if (cols < 1 || cols > maxColumns) return;
    const kind = t.datatype === 'BYTES' || t.datatype === 'BOOL' ? 'categorical' : 'numeric';
    for (let i = 0; i < cols; i++) {
      const name = custom?.[i] ?? (cols === 1 ? t.name : `${t.name}[${i}]`);
      out.push({ name, source, tensor: t.name, column: i, kind });
    }
  };
  for (const t of sig.inputs) add(t, 'input');
  for (const t of sig.outputs) add(t, 'output');
  return out;
}

export type RowValue = number | string | boolean | null | undefined;

/** A row value as a number for a numeric feature (NaN when it does not parse), or null when missing. */
export function numericValue(v: Exclude<RowValue, undefined>): number | null {
  if (v === null || v === '') return null;
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  const t = v.trim();
  return t === '' ? NaN : Number(t);
}

/** A row value as a category, or null when missing. */
export function categoryValue(v: Exclude<RowValue, undefined>): string | null {
  if (v === null) return null;
  return typeof v === 'string' ? v : String(v);
}

/**
 * Build a profile from rows: each row = values per feature name (number | string | boolean; null or '' =
 * missing; an absent key = not observed). Numeric bins are quantileEdges of the reference values (deciles by
 * default); categorical features keep up to `maxCategories` (64) categories.
 */
export function buildProfile(
  features: readonly FeatureSpec[],
  rows: Iterable<Readonly<Record<string, RowValue>>>,
  opts: { bins?: number; maxCategories?: number; createdAt?: Date } = {},
): ReferenceProfile {
  const names = new Set<string>();
  for (const f of features) {
    if (names.has(f.name)) throw err('SY_ERR_BAD_REQUEST', `duplicate feature name "${f.name}"`);
    names.add(f.name);
  }
  const values = features.map(() => [] as number[]);
  const nan = new Float64Array(features.length);
  const missing = new Float64Array(features.length);
  const cats = features.map((f) => (f.kind === 'categorical' ? new CategoricalSketch(opts.maxCategories) : null));
  let n = 0;
  for (const row of rows) {
    n++;
    for (let i = 0; i < features.length; i++) {
      const f = features[i]!;
      const v = Object.hasOwn(row, f.name) ? row[f.name] : undefined;
      if (v === undefined) continue;
      const cat = cats[i];
      if (cat) {
        const c = categoryValue(v);
        if (c === null) cat.addMissing();
        else cat.add(c);
        continue;
      }
      const x = numericValue(v);
      if (x === null) missing[i]!++;
      else if (Number.isNaN(x)) nan[i]!++;
      else values[i]!.push(x);
    }
  }
  const out: FeatureProfile[] = features.map((spec, i) => {
    const cat = cats[i];
    if (cat) return { spec, categorical: cat.toJSON() };
    const vals = values[i]!;
    const s = new NumericSketch(quantileEdges(vals, opts.bins ?? 10));
    for (const x of vals) s.add(x);
    s.nan = nan[i]!;
    s.missing = missing[i]!;
    const finite = Number.isFinite(s.min) && Number.isFinite(s.max);
    return finite ? { spec, numeric: s.toJSON(), min: s.min, max: s.max } : { spec, numeric: s.toJSON() };
  });
  return { format: 1, rows: n, features: out, createdAt: (opts.createdAt ?? new Date()).toISOString() };
}

/** Columns along the last dim: 1 for rank 0/1. */
export function columnsOf(shape: readonly number[]): number {
  return shape.length < 2 ? 1 : shape[shape.length - 1]!;
}

/**
 * Rows (one per tensor row; leading dims flattened) from logged prediction records, keyed by feature name.
 * A feature whose input tensor is absent from a record is null (missing); an absent output, a truncated tensor
 * (data not logged) or a tensor with fewer rows than the record's others leaves the key out (not observed).
 */
export function* rowsFromRecords(features: readonly FeatureSpec[], records: Iterable<PredictionRecord>): Iterable<Record<string, number | string | null>> {
  for (const rec of records) {
    const find = (f: FeatureSpec): TensorJson | undefined => (f.source === 'input' ? rec.inputs : rec.outputs).find((t) => t.name === f.tensor);
    const ts = features.map(find);
    let rows = 0;
    for (const t of ts) {
      if (t === undefined || t.truncated === true) continue;
      const c = columnsOf(t.shape);
      if (c > 0) rows = Math.max(rows, Math.floor(t.data.length / c));
    }
    if (rows === 0 && ts.some((t) => t === undefined)) rows = 1;
    for (let r = 0; r < rows; r++) {
      const row: Record<string, number | string | null> = {};
      for (let i = 0; i < features.length; i++) {
        const f = features[i]!;
        const t = ts[i];
        if (t === undefined) {
          if (f.source === 'input') row[f.name] = null;
          continue;
        }
        if (t.truncated === true) continue;
        const c = columnsOf(t.shape);
        if (f.column >= c) continue;
        const v = t.data[r * c + f.column];
        if (v === undefined) continue;
        if (f.kind === 'categorical') row[f.name] = typeof v === 'string' ? v : String(v);
        else row[f.name] = typeof v === 'number' ? v : typeof v === 'boolean' ? (v ? 1 : 0) : Number(v);
      }
      yield row;
    }
  }
}

/** Element i of a tensor as a number (FP16 decoded, INT64/UINT64 via Number, BOOL 0/1); NaN for BYTES. */
export function numberAt(t: Tensor, i: number): number {
  const d = t.dtype;
  if (d.array === null) return NaN;
  const v = (t.data as ArrayLike<number | bigint>)[i]!;
  if (d.bigint) return Number(v);
  if (d.v2 === 'FP16') return fromHalfBits(v as number);
  return v as number;
}

/** Element i of a tensor as a category (BOOL → "true"/"false", numbers → String). */
export function categoryAt(t: Tensor, i: number): string {
  const d = t.dtype;
  if (d.array === null) return bytesText((t.data as Uint8Array[])[i]!);
  if (d.v2 === 'BOOL') return (t.data as Uint8Array)[i]! ? 'true' : 'false';
  return String(numberAt(t, i));
}

/** Rows keyed by feature name from one request's tensors, read the same way {@link DriftMonitor.observe} reads them. */
export function rowsFromTensors(
  features: readonly FeatureSpec[],
  inputs: readonly { name: string; tensor: Tensor }[],
  outputs: readonly { name: string; tensor: Tensor }[],
): Array<Record<string, number | string | null>> {
  const ts = features.map((f) => (f.source === 'input' ? inputs : outputs).find((x) => x.name === f.tensor)?.tensor);
  let rows = 0;
  for (const t of ts) {
    const c = t ? columnsOf(t.shape) : 0;
    if (t && c > 0) rows = Math.max(rows, Math.floor(t.data.length / c));
  }
  const out: Array<Record<string, number | string | null>> = [];
  for (let r = 0; r < rows; r++) {
    const row: Record<string, number | string | null> = {};
    features.forEach((f, i) => {
      const t = ts[i];
      if (t === undefined) {
        if (f.source === 'input') row[f.name] = null;
        return;
      }
      const c = columnsOf(t.shape);
      const k = r * c + f.column;
      if (f.column >= c || k >= t.data.length) return;
      row[f.name] = f.kind === 'categorical' ? categoryAt(t, k) : numberAt(t, k);
    });
    out.push(row);
  }
  return out;
}
