/**
 * @module
 * Mergeable sketches for drift monitoring: a fixed-edge histogram with moments for numeric features and a capped
 * category counter for categorical ones. Merging two sketches gives exactly the sketch of the union of their
 * values (counts are exact; `sum`/`sumSq` up to floating-point addition order). JSON round-trips through
 * `toJSON`/`fromJSON` (the reference profile stores them).
 */
import { err } from '../errors.js';

/** Bucket for categories past the cap of a {@link CategoricalSketch}. */
export const OTHER_CATEGORY = '__other__';

function bad(what: string): never {
  throw err('SY_ERR_BAD_REQUEST', `invalid sketch: ${what}`);
}

function isRecord(o: unknown): o is Record<string, unknown> {
  return typeof o === 'object' && o !== null && !Array.isArray(o);
}

function num(o: Record<string, unknown>, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) bad(`"${key}" must be a finite number`);
  return v;
}

function count(o: Record<string, unknown>, key: string): number {
  const v = num(o, key);
  if (v < 0 || !Number.isInteger(v)) bad(`"${key}" must be a non-negative integer`);
  return v;
}

/** Histogram over fixed bin edges plus n/NaN/missing counts, sum, sum of squares, min and max. */
export class NumericSketch {
  /** Ascending bin edges; k-1 edges make k bins. Bin i holds edges[i-1] <= x < edges[i]. */
  readonly edges: readonly number[];
  /** Per-bin counts (length edges.length + 1). */
  readonly counts: Float64Array;
  /** Non-NaN values added (the bins' total). */
  n = 0;
  /** NaN values (not in any bin). */
  nan = 0;
  /** Missing values (null / absent), counted through {@link addMissing}. */
  missing = 0;
  sum = 0;
  sumSq = 0;
  min = Infinity;
  max = -Infinity;
  private readonly e: Float64Array;

  constructor(edges: readonly number[]) {
    for (let i = 0; i < edges.length; i++) {
      const x = edges[i]!;
      if (Number.isNaN(x)) throw err('SY_ERR_BAD_REQUEST', 'sketch edges must not be NaN');
      if (i > 0 && !(x > edges[i - 1]!)) throw err('SY_ERR_BAD_REQUEST', 'sketch edges must be strictly ascending');
    }
    this.edges = Object.freeze([...edges]);
    this.e = Float64Array.from(edges);
    this.counts = new Float64Array(edges.length + 1);
  }

  /** Bin of a non-NaN value: the number of edges <= x (binary search). */
  bin(x: number): number {
    const e = this.e;
    let lo = 0;
    let hi = e.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (e[mid]! <= x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  add(x: number): void {
    if (Number.isNaN(x)) {
      this.nan++;
      return;
    }
    this.counts[this.bin(x)]!++;
    this.n++;
    this.sum += x;
    this.sumSq += x * x;
    if (x < this.min) this.min = x;
    if (x > this.max) this.max = x;
  }

  /** Count one missing value (null, empty cell, absent input). */
  addMissing(times = 1): void {
    this.missing += times;
  }

  /** Whether `o` has the same edges (mergeable). */
  sameEdges(o: NumericSketch): boolean {
    if (o.e.length !== this.e.length) return false;
    for (let i = 0; i < this.e.length; i++) if (o.e[i] !== this.e[i]) return false;
    return true;
  }

  merge(o: NumericSketch): void {
    if (!this.sameEdges(o)) throw err('SY_ERR_BAD_REQUEST', 'cannot merge numeric sketches with different bin edges');
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += o.counts[i]!;
    this.n += o.n;
    this.nan += o.nan;
    this.missing += o.missing;
    this.sum += o.sum;
    this.sumSq += o.sumSq;
    if (o.min < this.min) this.min = o.min;
    if (o.max > this.max) this.max = o.max;
  }

  clear(): void {
    this.counts.fill(0);
    this.n = 0;
    this.nan = 0;
    this.missing = 0;
    this.sum = 0;
    this.sumSq = 0;
    this.min = Infinity;
    this.max = -Infinity;
  }

  /** Mean of the non-NaN values (NaN when empty). */
  get mean(): number {
    return this.n === 0 ? NaN : this.sum / this.n;
  }

  /** JSON form; min/max are null when empty or infinite. */
  toJSON(): object {
    return {
      kind: 'numeric',
      edges: [...this.edges],
      counts: Array.from(this.counts),
      n: this.n,
      nan: this.nan,
      missing: this.missing,
      sum: Number.isFinite(this.sum) ? this.sum : null,
      sumSq: Number.isFinite(this.sumSq) ? this.sumSq : null,
      min: Number.isFinite(this.min) ? this.min : null,
      max: Number.isFinite(this.max) ? this.max : null,
    };
  }

  static fromJSON(o: unknown): NumericSketch {
    if (!isRecord(o)) bad('numeric sketch must be an object');
    const edges = o['edges'];
    const counts = o['counts'];
    if (!Array.isArray(edges) || !edges.every((x) => typeof x === 'number' && Number.isFinite(x))) bad('"edges" must be finite numbers');
    if (!Array.isArray(counts) || counts.length !== edges.length + 1) bad('"counts" must have edges.length + 1 entries');
    const s = new NumericSketch(edges as number[]);
    let total = 0;
    for (let i = 0; i < counts.length; i++) {
      const c: unknown = counts[i];
      if (typeof c !== 'number' || !Number.isInteger(c) || c < 0) bad('"counts" must be non-negative integers');
      s.counts[i] = c;
      total += c;
    }
    s.n = count(o, 'n');
    if (s.n !== total) bad('"n" must equal the sum of "counts"');
    s.nan = count(o, 'nan');
    s.missing = count(o, 'missing');
    const opt = (key: string, dflt: number): number => (o[key] === null || o[key] === undefined ? dflt : num(o, key));
    s.sum = opt('sum', s.n === 0 ? 0 : NaN);
    s.sumSq = opt('sumSq', s.n === 0 ? 0 : NaN);
    s.min = opt('min', Infinity);
    s.max = opt('max', -Infinity);
    return s;
  }
}

/** Counts per category up to `maxCategories` distinct ones; later new categories count under `__other__`. */
export class CategoricalSketch {
  readonly maxCategories: number;
  /** Missing values (null / absent), counted through {@link addMissing}. */
  missing = 0;
  private readonly map = new Map<string, number>();
  private total = 0;

  constructor(maxCategories = 64) {
    if (!Number.isInteger(maxCategories) || maxCategories < 1) throw err('SY_ERR_BAD_REQUEST', 'maxCategories must be a positive integer');
    this.maxCategories = maxCategories;
  }

  /** Non-missing values added. */
  get n(): number {
    return this.total;
  }

  add(v: string, times = 1): void {
    const c = this.map.get(v);
    if (c !== undefined) this.map.set(v, c + times);
    else if (v === OTHER_CATEGORY || this.distinct() < this.maxCategories) this.map.set(v, times);
    else this.map.set(OTHER_CATEGORY, (this.map.get(OTHER_CATEGORY) ?? 0) + times);
    this.total += times;
  }

  addMissing(times = 1): void {
    this.missing += times;
  }

  /** Whether `v` has its own bucket (was seen before the cap). */
  has(v: string): boolean {
    return v !== OTHER_CATEGORY && this.map.has(v);
  }

  /** Distinct categories held, `__other__` excluded. */
  distinct(): number {
    return this.map.size - (this.map.has(OTHER_CATEGORY) ? 1 : 0);
  }

  merge(o: CategoricalSketch): void {
    for (const [k, c] of o.map) this.add(k, c);
    this.missing += o.missing;
  }

  clear(): void {
    this.map.clear();
    this.total = 0;
    this.missing = 0;
  }

  /** A copy of the counts. */
  counts(): Map<string, number> {
    return new Map(this.map);
  }

  toJSON(): object {
    return { kind: 'categorical', maxCategories: this.maxCategories, counts: Object.fromEntries(this.map), missing: this.missing };
  }

  static fromJSON(o: unknown): CategoricalSketch {
    if (!isRecord(o)) bad('categorical sketch must be an object');
    const max = o['maxCategories'] === undefined ? 64 : count(o, 'maxCategories');
    const s = new CategoricalSketch(max);
    const counts = o['counts'];
    if (!isRecord(counts)) bad('"counts" must be an object');
    for (const [k, c] of Object.entries(counts)) {
      if (typeof c !== 'number' || !Number.isInteger(c) || c < 0) bad(`count of "${k}" must be a non-negative integer`);
      s.map.set(k, c);
      s.total += c;
    }
    s.missing = o['missing'] === undefined ? 0 : count(o, 'missing');
    return s;
  }
}

/**
 * Quantile bin edges (deciles by default: bins = 10) of the finite sample values, deduplicated: the interior
 * quantiles i/bins (i = 1..bins-1, linear interpolation between order statistics, numpy's default), so k
 * equal-mass bins when values are distinct and fewer where quantiles coincide. Empty input → [] (one bin).
 */
export function quantileEdges(values: readonly number[], bins = 10): number[] {
  if (!Number.isInteger(bins) || bins < 1) throw err('SY_ERR_BAD_REQUEST', 'bins must be a positive integer');
  const v = Float64Array.from(values.filter((x) => Number.isFinite(x))).sort();
  const out: number[] = [];
  if (v.length === 0) return out;
  for (let i = 1; i < bins; i++) {
    const h = ((v.length - 1) * i) / bins;
    const lo = Math.floor(h);
    const a = v[lo]!;
    const b = v[Math.min(lo + 1, v.length - 1)]!;
    const q = a + (h - lo) * (b - a);
    if (out.length === 0 || q > out[out.length - 1]!) out.push(q);
  }
  return out;
}
