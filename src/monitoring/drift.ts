/**
 * @module
 * The live drift monitor: {@link DriftMonitor} keeps a sliding window of mergeable sketches per feature and reports
 * drift and data quality against a reference profile. The metrics (PSI, Jensen-Shannon distance, binned two-sample
 * Kolmogorov-Smirnov) live in drift-stats.ts and the profiles (built from rows, the default feature mapping from a
 * model signature) in drift-profile.ts; both are re-exported here.
 *
 * Drift rule (per feature, thresholds from {@link DEFAULT_THRESHOLDS} unless overridden): a feature drifts when
 * PSI >= `psi` (default 0.2), or JS distance >= `js` (default 0.1), or — numeric features only — the KS p-value
 * < `ksPValue` (default 0.01). Metrics need at least `minRows` valid values in the window (default 100); below
 * that they are null and the feature never drifts. The dataset drifts when the share of drifted features (among
 * those with metrics) is >= `datasetShare` (default 0.5).
 */
import { err } from '../errors.js';
import type { Tensor } from '../tensor/index.js';
import { DEFAULT_THRESHOLDS } from './types.js';
import type { DriftThresholds, FeatureSpec } from './types.js';
import { CategoricalSketch, NumericSketch, OTHER_CATEGORY } from './sketch.js';
import { alignCategories, jsDistance, ksTest, psi } from './drift-stats.js';
import { categoryAt, categoryValue, columnsOf, numberAt, numericValue } from './drift-profile.js';
import type { ReferenceProfile, RowValue } from './drift-profile.js';

export { PSI_EPSILON, alignCategories, jsDistance, kolmogorovSf, ksTest, psi } from './drift-stats.js';
export { buildProfile, defaultFeatures, rowsFromRecords, rowsFromTensors } from './drift-profile.js';
export type { FeatureProfile, ReferenceProfile } from './drift-profile.js';

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

/**
 * The reference and current-window counts of one feature over the bins its drift metrics use. Numeric: `edges`
 * (k-1 ascending edges make k bins; bin i holds edges[i-1] <= x < edges[i], the first and last are open-ended).
 * Categorical: `categories`, the reference's first, then categories only the window has (as PSI / JS align them).
 */
export type FeatureBins = {
  readonly name: string;
  readonly source: 'input' | 'output';
  /** Per bin, the reference profile's counts. */
  readonly reference: readonly number[];
  /** Per bin, the current window's counts (valid values only: NaN and missing are in the drift report's quality). */
  readonly current: readonly number[];
} & ({ readonly kind: 'numeric'; readonly edges: readonly number[] } | { readonly kind: 'categorical'; readonly categories: readonly string[] });

/** {@link DriftMonitor.bins}: the histograms behind a report, over the same window. */
export interface DriftBins {
  readonly windowStart: string;
  readonly windowEnd: string;
  readonly rows: number;
  readonly features: readonly FeatureBins[];
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

  /** The buckets inside the window now, merged per feature. */
  private window(): { now: number; lowest: number; live: Bucket[]; merged: Slot[] } {
    const now = this.nowFn();
    const cur = Math.floor(now / this.width);
    const lowest = cur - this.ring.length + 1;
    const live = this.ring.filter((b) => b.idx >= lowest && b.idx <= cur);
    const merged = this.feats.map((f, i) => {
      const m = this.emptySlot(f);
      for (const b of live) {
        const s = b.slots[i]!;
        if (m.num && s.num) m.num.merge(s.num);
        if (m.cat && s.cat) m.cat.merge(s.cat);
        m.oor += s.oor;
      }
      return m;
    });
    return { now, lowest, live, merged };
  }

  /** Reference vs current-window counts per feature, over the bins {@link report}'s metrics compare. */
  bins(): DriftBins {
    const { now, lowest, live, merged } = this.window();
    const features = this.feats.map((f, i): FeatureBins => {
      const s = merged[i]!;
      const base = { name: f.spec.name, source: f.spec.source };
      if (s.num && f.refNum)
        return { ...base, kind: 'numeric', edges: f.refNum.edges, reference: Array.from(f.refNum.counts), current: Array.from(s.num.counts) };
      const ref = f.refCat!.counts();
      const [r, q] = alignCategories(ref, s.cat!.counts());
      const categories = [...ref.keys()];
      for (const k of s.cat!.counts().keys()) if (!ref.has(k)) categories.push(k);
      return { ...base, kind: 'categorical', categories, reference: Array.from(r), current: Array.from(q) };
    });
    let rows = 0;
    for (const b of live) rows += b.rows;
    return { windowStart: new Date(lowest * this.width).toISOString(), windowEnd: new Date(now).toISOString(), rows, features };
  }

  report(): DriftReport {
    const { now, lowest, live, merged } = this.window();
    let rows = 0;
    let shapeViolations = 0;
    let typeViolations = 0;
    for (const b of live) {
      rows += b.rows;
      shapeViolations += b.shape;
      typeViolations += b.type;
    }
    const features = this.feats.map((f, i) => this.featureDrift(f, merged[i]!));
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

/** The defined entries of a partial thresholds object (so an explicit undefined does not erase a default). */
function defined(t: Partial<DriftThresholds> | undefined): Partial<DriftThresholds> {
  const out: { psi?: number; js?: number; ksPValue?: number } = {};
  if (t?.psi !== undefined) out.psi = t.psi;
  if (t?.js !== undefined) out.js = t.js;
  if (t?.ksPValue !== undefined) out.ksPValue = t.ksPValue;
  return out;
}
