/**
 * @module
 * The drift metrics over binned counts: population stability index, Jensen-Shannon distance and the binned
 * two-sample Kolmogorov-Smirnov test (with the Kolmogorov survival function it needs).
 */
import { err } from '../errors.js';

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
