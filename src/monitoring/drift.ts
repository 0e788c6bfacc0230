/**
 * @module
 * Drift detection against a reference profile: the metrics (PSI, Jensen-Shannon distance, binned two-sample
 * Kolmogorov-Smirnov), reference profiles built from rows, the default feature mapping from a model signature,
 * and {@link DriftMonitor}, which keeps a sliding window of mergeable sketches per feature and reports drift and
 * data quality for it.
 *
 * Drift rule (per feature, thresholds from {@link DEFAULT_THRESHOLDS} unless overridden): a feature drifts when
 * PSI >= `psi` (default 0.2), or JS distance >= `js` (default 0.1), or — numeric features only — the KS p-value
 * < `ksPValue` (default 0.01). Metrics need at least `minRows` valid values in the window (default 100); below
 * that they are null and the feature never drifts. The dataset drifts when the share of drifted features (among
 * those with metrics) is >= `datasetShare` (default 0.5).
 */
import { err } from '../errors.js';
import { bytesText, fromHalfBits } from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import { DEFAULT_THRESHOLDS } from './types.js';
import type { DriftThresholds, FeatureSpec, PredictionRecord, TensorJson } from './types.js';
import { CategoricalSketch, NumericSketch, OTHER_CATEGORY, quantileEdges } from './sketch.js';

/** Proportion used in place of 0 for an empty bin by {@link psi} (keeps the log finite). */
export const PSI_EPSILON = 1e-4;

function total(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return s;
}

function sameLength(ref: ArrayLike<number>, cur: ArrayLike<number>): void {
  if (ref.length !== cur.length) throw err('SY_ERR_BAD_REQUEST', `bin count mismatch: ${ref.length} vs ${cur.length}`);
}

/**
 * Population stability index Σ (q - p)·ln(q / p) over bins, p = reference proportion, q = current proportion.
 * An empty bin's proportion is replaced by {@link PSI_EPSILON} = 1e-4 (no renormalisation). NaN when either side
 * has no counts.
 */
export function psi(ref: ArrayLike<number>, cur: ArrayLike<number>): number {
  sameLength(ref, cur);
  const n = total(ref);
  const m = total(cur);
  if (!(n > 0) || !(m > 0)) return NaN;
  let s = 0;
  for (let i = 0; i < ref.length; i++) {
    const p = ref[i]! > 0 ? ref[i]! / n : PSI_EPSILON;
    const q = cur[i]! > 0 ? cur[i]! / m : PSI_EPSILON;
    s += (q - p) * Math.log(q / p);
  }
  return s;
}

/**
 * Jensen-Shannon distance with base-2 logarithms: sqrt(JSD), in [0, 1] (as scipy.spatial.distance.jensenshannon
 * with base=2; counts are normalised first). NaN when either side has no counts.
 */
export function jsDistance(ref: ArrayLike<number>, cur: ArrayLike<number>): number {
  sameLength(ref, cur);
  const n = total(ref);
  const m = total(cur);
  if (!(n > 0) || !(m > 0)) return NaN;
  let d = 0;
  for (let i = 0; i < ref.length; i++) {
    const p = ref[i]! / n;
    const q = cur[i]! / m;
    const mid = (p + q) / 2;
    if (p > 0) d += p * Math.log2(p / mid);
    if (q > 0) d += q * Math.log2(q / mid);
  }
  return Math.sqrt(Math.min(1, Math.max(0, d / 2)));
}

/**
 * Survival function of the Kolmogorov distribution (the limit law of sqrt(n)·D_n), P(K > x) — what
 * scipy.special.kolmogorov / scipy.stats.kstwobign.sf compute. No maintained npm package exposes it (stdlib has
 * only the one-sample test, @stdlib/stats-kstest, whose Kolmogorov CDF is private and exact-finite-n), so it is
 * evaluated here from Kolmogorov's two classical series: for x >= 1, 2·Σ_{k>=1} (-1)^{k-1}·exp(-2k²x²); for x < 1,
 * 1 - sqrt(2π)/x·Σ_{k>=1} exp(-(2k-1)²π²/(8x²)). Both converge to double precision within a few terms.
 */
export function kolmogorovSf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x <= 0) return 1;
  if (x < 1) {
    const t = -(Math.PI * Math.PI) / (8 * x * x);
    let s = 0;
    for (let k = 1; k <= 50; k++) {
      const term = Math.exp((2 * k - 1) * (2 * k - 1) * t);
      s += term;
      if (term <= 1e-17 * s) break;
    }
    return 1 - (Math.sqrt(2 * Math.PI) / x) * s;
  }
  let s = 0;
  let sign = 1;
  for (let k = 1; k <= 100; k++) {
    const term = Math.exp(-2 * k * k * x * x);
    s += sign * term;
    if (term <= 1e-17 * Math.abs(s)) break;
    sign = -sign;
  }
  return Math.min(1, Math.max(0, 2 * s));
}

/**
 * Two-sample Kolmogorov-Smirnov test from binned counts over the same bins: the statistic is the largest
 * difference of the two empirical CDFs at the bin edges (<= the unbinned statistic, so the test is conservative);
 * the p-value is asymptotic, P(K > sqrt(en)·D) with effective n en = n·m/(n+m). NaN for both when a side is empty.
 */
export function ksTest(ref: ArrayLike<number>, cur: ArrayLike<number>): { statistic: number; pValue: number } {
  sameLength(ref, cur);
  const n = total(ref);
  const m = total(cur);
  if (!(n > 0) || !(m > 0)) return { statistic: NaN, pValue: NaN };
  let a = 0;
  let b = 0;
  let d = 0;
  for (let i = 0; i < ref.length; i++) {
    a += ref[i]!;
    b += cur[i]!;
    const diff = Math.abs(a / n - b / m);
    if (diff > d) d = diff;
  }
  const en = (n * m) / (n + m);
  return { statistic: d, pValue: kolmogorovSf(Math.sqrt(en) * d) };
}

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

type RowValue = number | string | boolean | null | undefined;

/** A row value as a number for a numeric feature (NaN when it does not parse), or null when missing. */
function numericValue(v: Exclude<RowValue, undefined>): number | null {
  if (v === null || v === '') return null;
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  const t = v.trim();
  return t === '' ? NaN : Number(t);
}

/** A row value as a category, or null when missing. */
function categoryValue(v: Exclude<RowValue, undefined>): string | null {
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
function columnsOf(shape: readonly number[]): number {
  return shape.length < 2 ? 1 : shape[shape.length - 1]!;
}

/**
 * Rows (one per tensor row; leading dims flattened) from logged prediction records, keyed by feature name.
 * A feature whose input tensor is absent from a record is null (missing); an absent output, a truncated tensor
 * (data not logged) or a tensor with fewer rows than the record's others leaves the key out (not observed).
 */
export function* rowsFromRecords(
  features: readonly FeatureSpec[],
  records: Iterable<PredictionRecord>,
): Iterable<Record<string, number | string | null>> {
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
function numberAt(t: Tensor, i: number): number {
  const d = t.dtype;
  if (d.array === null) return NaN;
  const v = (t.data as ArrayLike<number | bigint>)[i]!;
  if (d.bigint) return Number(v);
  if (d.v2 === 'FP16') return fromHalfBits(v as number);
  return v as number;
}

/** Element i of a tensor as a category (BOOL → "true"/"false", numbers → String). */
function categoryAt(t: Tensor, i: number): string {
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

export interface FeatureDrift {
  readonly name: string;
  readonly kind: 'numeric' | 'categorical';
  readonly source: 'input' | 'output';
  /** Values observed in the window: valid + NaN + missing. */
  readonly count: number;
  readonly psi: number | null;
  readonly js: number | null;
  /** KS statistic (numeric features only). */
  readonly ks: number | null;
  readonly ksPValue: number | null;
  readonly drifted: boolean;
  readonly quality: {
    /** Missing values / count. */
    readonly missingRate: number | null;
    /** NaN values / count (numeric only). */
    readonly nanRate: number | null;
    /**
     * Numeric: share of valid values outside the reference [min, max]. Categorical: share of values in categories
     * the reference never saw (null when the reference overflowed into `__other__`).
     */
    readonly outOfRangeRate: number | null;
  };
}

export interface DriftReport {
  /** Start of the oldest bucket in the window (ISO-8601). */
  readonly windowStart: string;
  /** The report time (ISO-8601). */
  readonly windowEnd: string;
  /** Request rows observed in the window. */
  readonly rows: number;
  readonly features: readonly FeatureDrift[];
  /** Share of features (with metrics) that drifted; null when none has metrics. */
  readonly driftedShare: number | null;
  /** driftedShare >= datasetShare. */
  readonly datasetDrift: boolean;
  readonly quality: { readonly shapeViolations: number; readonly typeViolations: number };
  readonly thresholds: DriftThresholds;
}

export interface DriftMonitorOptions {
  /** Window length; default 3_600_000 (1 h). */
  readonly windowMs?: number;
  /** Buckets the window is split into; default 12 (5-minute buckets for 1 h). The window slides a bucket at a time. */
  readonly buckets?: number;
  readonly thresholds?: Partial<DriftThresholds>;
  /** Per feature name. */
  readonly overrides?: Readonly<Record<string, Partial<DriftThresholds>>>;
  /** Default 0.5. */
  readonly datasetShare?: number;
  /** Features with fewer valid values in the window report null metrics and never drift; default 100. */
  readonly minRows?: number;
  readonly now?: () => number;
}

interface Compiled {
  readonly spec: FeatureSpec;
  readonly refNum: NumericSketch | null;
  readonly refCat: CategoricalSketch | null;
  readonly min: number;
  readonly max: number;
  /** Reference categories are complete (no `__other__` overflow): unseen ones count as out of range. */
  readonly closedCats: boolean;
  readonly thresholds: DriftThresholds;
}

interface Slot {
  readonly num: NumericSketch | null;
  readonly cat: CategoricalSketch | null;
  /** Out-of-range values (numeric) or unseen categories (categorical). */
  oor: number;
}

interface Bucket {
  idx: number;
  rows: number;
  shape: number;
  type: number;
  readonly slots: Slot[];
}

interface TensorPlan {
  /** Indexes into the compiled features. */
  readonly features: number[];
  maxColumn: number;
  numeric: boolean;
  /** observe() generation in which the tensor was last present. */
  seen: number;
}

/**
 * Incremental drift against a reference profile over a sliding window. The window is `buckets` time buckets of
 * mergeable sketches; observe() adds to the current bucket (clearing it first when its time slot is reused),
 * report() merges the buckets still inside the window. observe() is the hot path: O(features · log bins) per
 * row, no allocation per value beyond the sketches (categorical features read from numeric tensors format the
 * number as a string).
 */
export class DriftMonitor {
  private readonly feats: Compiled[];
  private readonly inputs = new Map<string, TensorPlan>();
  private readonly outputs = new Map<string, TensorPlan>();
  private readonly ring: Bucket[];
  private readonly width: number;
  private readonly nowFn: () => number;
  private readonly minRows: number;
  private readonly datasetShare: number;
  private readonly thresholds: DriftThresholds;
  private gen = 0;

  constructor(profile: ReferenceProfile, opts: DriftMonitorOptions = {}) {
    if (profile.format !== 1) throw err('SY_ERR_BAD_REQUEST', `unsupported reference profile format ${String(profile.format)}`);
    const windowMs = opts.windowMs ?? 3_600_000;
    const buckets = opts.buckets ?? 12;
    if (!(windowMs > 0)) throw err('SY_ERR_BAD_REQUEST', 'windowMs must be > 0');
    if (!Number.isInteger(buckets) || buckets < 1) throw err('SY_ERR_BAD_REQUEST', 'buckets must be a positive integer');
    this.width = windowMs / buckets;
    this.nowFn = opts.now ?? Date.now;
    this.minRows = opts.minRows ?? 100;
    this.datasetShare = opts.datasetShare ?? 0.5;
    this.thresholds = Object.freeze({ ...DEFAULT_THRESHOLDS, ...defined(opts.thresholds) });
    this.feats = profile.features.map((fp): Compiled => {
      const spec = fp.spec;
      const over = opts.overrides !== undefined && Object.hasOwn(opts.overrides, spec.name) ? opts.overrides[spec.name] : undefined;
      const thresholds = Object.freeze({ ...this.thresholds, ...defined(over) });
      if (spec.kind === 'categorical') {
        const refCat = fp.categorical !== undefined ? CategoricalSketch.fromJSON(fp.categorical) : new CategoricalSketch();
        const closedCats = refCat.n > 0 && !refCat.counts().has(OTHER_CATEGORY);
        return { spec, refNum: null, refCat, min: NaN, max: NaN, closedCats, thresholds };
      }
      const refNum = fp.numeric !== undefined ? NumericSketch.fromJSON(fp.numeric) : new NumericSketch([]);
      return { spec, refNum, refCat: null, min: fp.min ?? NaN, max: fp.max ?? NaN, closedCats: false, thresholds };
    });
    this.feats.forEach((f, i) => {
      const plans = f.spec.source === 'input' ? this.inputs : this.outputs;
      let p = plans.get(f.spec.tensor);
      if (!p) plans.set(f.spec.tensor, (p = { features: [], maxColumn: -1, numeric: false, seen: -1 }));
      p.features.push(i);
      p.maxColumn = Math.max(p.maxColumn, f.spec.column);
      if (f.spec.kind === 'numeric') p.numeric = true;
    });
    this.ring = Array.from({ length: buckets }, () => ({
      idx: Number.NEGATIVE_INFINITY,
      rows: 0,
      shape: 0,
      type: 0,
      slots: this.feats.map((f) => this.emptySlot(f)),
    }));
  }

  private emptySlot(f: Compiled): Slot {
    return {
      num: f.refNum ? new NumericSketch(f.refNum.edges) : null,
      cat: f.refCat ? new CategoricalSketch(f.refCat.maxCategories) : null,
      oor: 0,
    };
  }

  /** The bucket for the current time, cleared when its ring slot last held an older time slot. */
  private bucket(): Bucket {
    const idx = Math.floor(this.nowFn() / this.width);
    const b = this.ring[((idx % this.ring.length) + this.ring.length) % this.ring.length]!;
    if (b.idx !== idx) {
      b.idx = idx;
      b.rows = 0;
      b.shape = 0;
      b.type = 0;
      for (const s of b.slots) {
        s.num?.clear();
        s.cat?.clear();
        s.oor = 0;
      }
    }
    return b;
  }

  /**
   * One request's tensors (any order; matched by name to the feature specs). A tensor whose shape does not fit
   * its features (too few columns, data length ≠ shape) counts one shape violation; a BYTES tensor for a numeric
   * feature one type violation; either way its features are not observed. An input tensor the profile maps but
   * the request lacks counts its features as missing (absent outputs are not observed: outputs may be filtered).
   */
  observe(inputs: readonly { name: string; tensor: Tensor }[], outputs: readonly { name: string; tensor: Tensor }[]): void {
    const b = this.bucket();
    const gen = ++this.gen;
    const first = inputs[0]?.tensor;
    const rows = first === undefined ? 1 : first.shape.length === 0 ? 1 : first.shape[0]!;
    b.rows += rows;
    for (const { name, tensor } of inputs) {
      const p = this.inputs.get(name);
      if (p) {
        p.seen = gen;
        this.observeTensor(b, p, tensor);
      }
    }
    for (const { name, tensor } of outputs) {
      const p = this.outputs.get(name);
      if (p) this.observeTensor(b, p, tensor);
    }
    for (const p of this.inputs.values()) {
      if (p.seen === gen) continue;
      for (const i of p.features) {
        const s = b.slots[i]!;
        s.num?.addMissing(rows);
        s.cat?.addMissing(rows);
      }
    }
  }

  private observeTensor(b: Bucket, p: TensorPlan, t: Tensor): void {
    if (p.numeric && t.dtype.array === null) {
      b.type++;
      return;
    }
    const c = columnsOf(t.shape);
    let elems = 1;
    for (const d of t.shape) elems *= d;
    if (c <= p.maxColumn || elems !== t.data.length) {
      b.shape++;
      return;
    }
    const rows = t.data.length / c;
    for (const i of p.features) {
      const f = this.feats[i]!;
      const s = b.slots[i]!;
      const col = f.spec.column;
      if (s.num) {
        const sk = s.num;
        for (let r = 0; r < rows; r++) {
          const x = numberAt(t, r * c + col);
          sk.add(x);
          if (x < f.min || x > f.max) s.oor++;
        }
      } else if (s.cat) {
        const sk = s.cat;
        const ref = f.refCat!;
        for (let r = 0; r < rows; r++) {
          const v = categoryAt(t, r * c + col);
          sk.add(v);
          if (f.closedCats && !ref.has(v)) s.oor++;
        }
      }
    }
  }

  /**
   * Rows keyed by feature name (e.g. from {@link rowsFromRecords}) into the current bucket, read like
   * {@link buildProfile} reads them (null/'' missing, absent key not observed). Each row counts as one row.
   */
  observeRows(rows: Iterable<Readonly<Record<string, RowValue>>>): void {
    const b = this.bucket();
    for (const row of rows) {
      b.rows++;
      for (let i = 0; i < this.feats.length; i++) {
        const f = this.feats[i]!;
        const v = Object.hasOwn(row, f.spec.name) ? row[f.spec.name] : undefined;
        if (v === undefined) continue;
        const s = b.slots[i]!;
        if (s.num) {
          const x = numericValue(v);
          if (x === null) s.num.addMissing();
          else {
            s.num.add(x);
            if (x < f.min || x > f.max) s.oor++;
          }
        } else if (s.cat) {
          const c = categoryValue(v);
          if (c === null) s.cat.addMissing();
          else {
            s.cat.add(c);
            if (f.closedCats && !f.refCat!.has(c)) s.oor++;
          }
        }
      }
    }
  }

  /** Count a request rejected for wrong types/shapes (from the serving layer). */
  violation(kind: 'shape' | 'type'): void {
    const b = this.bucket();
    if (kind === 'shape') b.shape++;
    else b.type++;
  }

  report(): DriftReport {
    const now = this.nowFn();
    const cur = Math.floor(now / this.width);
    const lowest = cur - this.ring.length + 1;
    const live = this.ring.filter((b) => b.idx >= lowest && b.idx <= cur);
    let rows = 0;
    let shapeViolations = 0;
    let typeViolations = 0;
    for (const b of live) {
      rows += b.rows;
      shapeViolations += b.shape;
      typeViolations += b.type;
    }
    const features = this.feats.map((f, i) => {
      const merged = this.emptySlot(f);
      for (const b of live) {
        const s = b.slots[i]!;
        if (merged.num && s.num) merged.num.merge(s.num);
        if (merged.cat && s.cat) merged.cat.merge(s.cat);
        merged.oor += s.oor;
      }
      return this.featureDrift(f, merged);
    });
    let withMetrics = 0;
    let drifted = 0;
    for (const f of features) {
      if (f.psi === null && f.js === null && f.ksPValue === null) continue;
      withMetrics++;
      if (f.drifted) drifted++;
    }
    const driftedShare = withMetrics === 0 ? null : drifted / withMetrics;
    return {
      windowStart: new Date(lowest * this.width).toISOString(),
      windowEnd: new Date(now).toISOString(),
      rows,
      features,
      driftedShare,
      datasetDrift: driftedShare !== null && driftedShare >= this.datasetShare,
      quality: { shapeViolations, typeViolations },
      thresholds: this.thresholds,
    };
  }

  private featureDrift(f: Compiled, s: Slot): FeatureDrift {
    const base = { name: f.spec.name, kind: f.spec.kind, source: f.spec.source };
    const t = f.thresholds;
    if (s.num && f.refNum) {
      const c = s.num;
      const count = c.n + c.nan + c.missing;
      const quality = {
        missingRate: count === 0 ? null : c.missing / count,
        nanRate: count === 0 ? null : c.nan / count,
        outOfRangeRate: c.n === 0 || Number.isNaN(f.min) ? null : s.oor / c.n,
      };
      if (f.refNum.n === 0 || c.n < this.minRows || c.n === 0) {
        return { ...base, count, psi: null, js: null, ks: null, ksPValue: null, drifted: false, quality };
      }
      const p = psi(f.refNum.counts, c.counts);
      const j = jsDistance(f.refNum.counts, c.counts);
      const k = ksTest(f.refNum.counts, c.counts);
      const drifted = p >= t.psi || j >= t.js || k.pValue < t.ksPValue;
      return { ...base, count, psi: p, js: j, ks: k.statistic, ksPValue: k.pValue, drifted, quality };
    }
    const c = s.cat!;
    const ref = f.refCat!;
    const count = c.n + c.missing;
    const quality = {
      missingRate: count === 0 ? null : c.missing / count,
      nanRate: null,
      outOfRangeRate: c.n === 0 || !f.closedCats ? null : s.oor / c.n,
    };
    if (ref.n === 0 || c.n < this.minRows || c.n === 0) {
      return { ...base, count, psi: null, js: null, ks: null, ksPValue: null, drifted: false, quality };
    }
    const [r, q] = alignCategories(ref.counts(), c.counts());
    const p = psi(r, q);
    const j = jsDistance(r, q);
    const drifted = p >= t.psi || j >= t.js;
    return { ...base, count, psi: p, js: j, ks: null, ksPValue: null, drifted, quality };
  }
}

/** Count vectors over the union of both sides' categories (reference order first). */
export function alignCategories(ref: ReadonlyMap<string, number>, cur: ReadonlyMap<string, number>): [Float64Array, Float64Array] {
  const keys = [...ref.keys()];
  for (const k of cur.keys()) if (!ref.has(k)) keys.push(k);
  const a = new Float64Array(keys.length);
  const b = new Float64Array(keys.length);
  keys.forEach((k, i) => {
    a[i] = ref.get(k) ?? 0;
    b[i] = cur.get(k) ?? 0;
  });
  return [a, b];
}

/** The defined entries of a partial thresholds object (so an explicit undefined does not erase a default). */
function defined(t: Partial<DriftThresholds> | undefined): Partial<DriftThresholds> {
  const out: { psi?: number; js?: number; ksPValue?: number } = {};
  if (t?.psi !== undefined) out.psi = t.psi;
  if (t?.js !== undefined) out.js = t.js;
  if (t?.ksPValue !== undefined) out.ksPValue = t.ksPValue;
  return out;
}
