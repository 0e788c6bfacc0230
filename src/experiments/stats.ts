/**
 * @module
 * Significance tests for experiment reports: two-proportion z-test (conversion), Welch's t-test from sufficient
 * statistics (per-unit values) and a chi-square goodness-of-fit test for sample ratio mismatch (SRM).
 *
 * Distributions come from the modular stdlib packages (`@stdlib/stats-base-dists-*`): typed, CommonJS with
 * `export =` (a default import under NodeNext), accurate to ~1e-15 against scipy, and the t distribution takes a
 * real-valued df (Welch). Alternatives checked: jstat has no types and is off by up to 1e-8 (normal tail at -9
 * wrong); cephes' `stdtr` takes integer df only.
 */
import chisquareCdf from '@stdlib/stats-base-dists-chisquare-cdf';
import normalCdf from '@stdlib/stats-base-dists-normal-cdf';
import normalQuantile from '@stdlib/stats-base-dists-normal-quantile';
import tCdf from '@stdlib/stats-base-dists-t-cdf';
import tQuantile from '@stdlib/stats-base-dists-t-quantile';

/** Sufficient statistics of a sample: count, sum and sum of squares. */
export interface Moments {
  readonly n: number;
  readonly sum: number;
  readonly sumSq: number;
}

export interface ProportionTest {
  readonly rateA: number;
  readonly rateB: number;
  /** rateB - rateA. */
  readonly diff: number;
  readonly ciLow: number;
  readonly ciHigh: number;
  readonly z: number;
  readonly pValue: number;
}

export interface MeanTest {
  readonly meanA: number;
  readonly meanB: number;
  /** meanB - meanA. */
  readonly diff: number;
  readonly ciLow: number;
  readonly ciHigh: number;
  readonly t: number;
  readonly df: number;
  readonly pValue: number;
}

export interface SrmTest {
  readonly chiSquare: number;
  readonly df: number;
  readonly pValue: number;
  readonly mismatch: boolean;
}

/** SRM is flagged below this p-value (strict: an SRM check runs continuously, so false alarms must be rare). */
export const SRM_ALPHA = 0.001;

function checkCount(name: string, v: number): void {
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a non-negative finite number (got ${v})`);
}

function checkConfidence(c: number): void {
  if (!(c > 0 && c < 1)) throw new RangeError(`confidence must be in (0, 1) (got ${c})`);
}

/** Two-sided upper critical value of the standard normal. */
function zCritical(confidence: number): number {
  return normalQuantile(1 - (1 - confidence) / 2, 0, 1);
}

/**
 * Two-sided two-proportion z-test of B vs A (diff = rateB - rateA): pooled SE for z/p, unpooled (Wald) SE for the
 * CI. null when nA or nB is 0 or the pooled SE is 0.
 */
export function twoProportionZTest(successA: number, nA: number, successB: number, nB: number, confidence = 0.95): ProportionTest | null {
  checkCount('successA', successA);
  checkCount('nA', nA);
  checkCount('successB', successB);
  checkCount('nB', nB);
  checkConfidence(confidence);
  if (successA > nA || successB > nB) throw new RangeError('successes must not exceed trials');
  if (nA === 0 || nB === 0) return null;
  const rateA = successA / nA;
  const rateB = successB / nB;
  const pooled = (successA + successB) / (nA + nB);
  const sePooled = Math.sqrt(pooled * (1 - pooled) * (1 / nA + 1 / nB));
  if (!(sePooled > 0)) return null;
  const diff = rateB - rateA;
  const z = diff / sePooled;
  // 2·Φ(-|z|) rather than 2·(1-Φ(|z|)): keeps precision in the tail.
  const pValue = Math.min(1, 2 * normalCdf(-Math.abs(z), 0, 1));
  const seWald = Math.sqrt((rateA * (1 - rateA)) / nA + (rateB * (1 - rateB)) / nB);
  const half = zCritical(confidence) * seWald;
  return { rateA, rateB, diff, ciLow: diff - half, ciHigh: diff + half, z, pValue };
}

/** Sample variance (n-1) from moments; cancellation noise below ~1e-13 of sumSq reads as 0 (e.g. all values equal). */
function sampleVariance(m: Moments): number {
  const ss = m.sumSq - (m.sum * m.sum) / m.n;
  return ss <= 1e-13 * Math.abs(m.sumSq) ? 0 : ss / (m.n - 1);
}

function checkMoments(name: string, m: Moments): void {
  checkCount(`${name}.n`, m.n);
  if (!Number.isFinite(m.sum) || !Number.isFinite(m.sumSq) || m.sumSq < 0) throw new RangeError(`${name}: sum and sumSq must be finite, sumSq >= 0`);
}

/**
 * Two-sided Welch's t-test of B vs A from sufficient statistics (sample variance with n-1), Welch–Satterthwaite
 * df, CI with the t quantile. null when either n < 2 or both variances are 0.
 */
export function welchTTest(a: Moments, b: Moments, confidence = 0.95): MeanTest | null {
  checkMoments('a', a);
  checkMoments('b', b);
  checkConfidence(confidence);
  if (a.n < 2 || b.n < 2) return null;
  const meanA = a.sum / a.n;
  const meanB = b.sum / b.n;
  const vA = sampleVariance(a) / a.n;
  const vB = sampleVariance(b) / b.n;
  const se2 = vA + vB;
  if (!(se2 > 0)) return null;
  const se = Math.sqrt(se2);
  const df = (se2 * se2) / ((vA * vA) / (a.n - 1) + (vB * vB) / (b.n - 1));
  const diff = meanB - meanA;
  const t = diff / se;
  const pValue = Math.min(1, 2 * tCdf(-Math.abs(t), df));
  const half = tQuantile(1 - (1 - confidence) / 2, df) * se;
  return { meanA, meanB, diff, ciLow: diff - half, ciHigh: diff + half, t, df, pValue };
}

/**
 * Chi-square goodness-of-fit of observed counts vs expected weights (normalised; arms with weight 0 are excluded,
 * and must have 0 observed or they make it a mismatch); df = arms - 1; mismatch = pValue < SRM_ALPHA. null when
 * total observed is 0 or fewer than 2 arms with weight > 0.
 *
 * The statistic and p-value cover the weighted arms only (expected counts from their own total); observations in
 * a weight-0 arm set `mismatch` regardless of the p-value. The p-value is 1 - CDF: exact in absolute terms, 0 once
 * it is below ~1e-16.
 */
export function sampleRatioMismatch(observed: readonly number[], weights: readonly number[]): SrmTest | null {
  if (observed.length !== weights.length) throw new RangeError(`observed (${observed.length}) and weights (${weights.length}) differ in length`);
  let total = 0;
  let weightSum = 0;
  let included = 0;
  let includedTotal = 0;
  let stray = 0;
  for (let i = 0; i < observed.length; i++) {
    const o = observed[i] as number;
    const w = weights[i] as number;
    checkCount(`observed[${i}]`, o);
    checkCount(`weights[${i}]`, w);
    total += o;
    if (w > 0) {
      included += 1;
      weightSum += w;
      includedTotal += o;
    } else {
      stray += o;
    }
  }
  if (total === 0 || included < 2) return null;
  let chiSquare = 0;
  if (includedTotal > 0) {
    for (let i = 0; i < observed.length; i++) {
      const w = weights[i] as number;
      if (!(w > 0)) continue;
      const expected = (includedTotal * w) / weightSum;
      const d = (observed[i] as number) - expected;
      chiSquare += (d * d) / expected;
    }
  }
  const df = included - 1;
  const pValue = Math.max(0, 1 - chisquareCdf(chiSquare, df));
  return { chiSquare, df, pValue, mismatch: pValue < SRM_ALPHA || stray > 0 };
}
