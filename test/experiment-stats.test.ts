/**
 * The experiment statistics (two-proportion z-test, Welch's t-test from moments, SRM chi-square) against numbers
 * computed independently with scipy 1.17, plus edge cases (zero n, identical arms, zero variance).
 *
 * Expected values come from this script (scipy 1.17, numpy); each `prop`/`welch`/`srm` line it prints is pasted
 * below:
 *
 * ```python
 * import numpy as np
 * from scipy.stats import norm, t, chisquare, ttest_ind, ttest_ind_from_stats, chi2_contingency
 * def prop(sA, nA, sB, nB, conf):
 *     pA, pB = sA / nA, sB / nB
 *     p = (sA + sB) / (nA + nB)
 *     z = (pB - pA) / np.sqrt(p * (1 - p) * (1 / nA + 1 / nB))
 *     pv = 2 * norm.sf(abs(z))
 *     # cross-check: the pooled z-test is the uncorrected 2x2 chi-square test
 *     assert np.isclose(pv, chi2_contingency([[sA, nA - sA], [sB, nB - sB]], correction=False).pvalue, rtol=1e-9)
 *     h = norm.ppf(1 - (1 - conf) / 2) * np.sqrt(pA * (1 - pA) / nA + pB * (1 - pB) / nB)
 *     return [pA, pB, pB - pA, pB - pA - h, pB - pA + h, z, pv]
 * for c in [(120, 1000, 150, 1000, 0.95), (45, 380, 31, 415, 0.99), (3, 20, 9, 25, 0.9), (5012, 100000, 5203, 100000, 0.95)]:
 *     print('prop', c, [repr(float(x)) for x in prop(*c)])
 * def welch_raw(a, b, conf):
 *     r = ttest_ind(b, a, equal_var=False)
 *     ci = r.confidence_interval(conf)
 *     return [np.mean(a), np.mean(b), np.mean(b) - np.mean(a), ci.low, ci.high, r.statistic, r.df, r.pvalue]
 * for a, b, conf in [(A1, B1, 0.95), (A2, B2, 0.99), (A3, B3, 0.95)]:  # the arrays below
 *     print('welch', [repr(float(x)) for x in welch_raw(a, b, conf)])
 * nA, mA, sA, nB, mB, sB = 5000, 2.31, 1.7, 4800, 2.38, 1.9
 * r = ttest_ind_from_stats(mB, sB, nB, mA, sA, nA, equal_var=False)
 * vA, vB = sA**2 / nA, sB**2 / nB
 * df = (vA + vB)**2 / (vA**2 / (nA - 1) + vB**2 / (nB - 1))
 * h = t.ppf(0.95, df) * np.sqrt(vA + vB)  # 90% CI
 * print('welch_stats', [repr(float(x)) for x in [mA, mB, mB - mA, mB - mA - h, mB - mA + h, r.statistic, df, r.pvalue]])
 * for obs, w in [([5010, 4990], [1, 1]), ([1050, 950], [1, 1]), ([6000, 4000], [1, 1]), ([3300, 3400, 3300], [1, 1, 1]),
 *                ([980, 2050, 6970], [0.1, 0.2, 0.7]), ([410, 590], [2, 3]), ([500, 530], [1, 1])]:
 *     o = np.array(obs, float); e = o.sum() * np.array(w, float) / sum(w)
 *     r = chisquare(o, e)
 *     print('srm', obs, w, repr(float(r.statistic)), len(obs) - 1, repr(float(r.pvalue)))
 * ```
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SRM_ALPHA, sampleRatioMismatch, twoProportionZTest, welchTTest, type Moments } from '../src/experiments/stats.js';

/** |actual - expected| within 1e-6 relative (plus 1e-12 absolute, for expected values at or near 0). */
function close(actual: number, expected: number, what: string): void {
  const tol = 1e-6 * Math.abs(expected) + 1e-12;
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: got ${actual}, expected ${expected} (±${tol})`);
}

function closeAll(actual: Record<string, number>, expected: Record<string, number>, what: string): void {
  for (const [k, v] of Object.entries(expected)) {
    const a = actual[k];
    assert.equal(typeof a, 'number', `${what}.${k} missing`);
    close(a as number, v, `${what}.${k}`);
  }
}

function moments(xs: readonly number[]): Moments {
  let sum = 0;
  let sumSq = 0;
  for (const x of xs) {
    sum += x;
    sumSq += x * x;
  }
  return { n: xs.length, sum, sumSq };
}

/** Moments of a sample given as n, mean and sample standard deviation. */
function fromSummary(n: number, mean: number, sd: number): Moments {
  return { n, sum: n * mean, sumSq: (n - 1) * sd * sd + n * mean * mean };
}

describe('twoProportionZTest', () => {
  const cases: [number, number, number, number, number, number[]][] = [
    [120, 1000, 150, 1000, 0.95, [0.12, 0.15, 0.03, 7.602882129778554e-5, 0.05992397117870221, 1.963049807622355, 0.04964038686536878]],
    [
      45,
      380,
      31,
      415,
      0.99,
      [0.11842105263157894, 0.0746987951807229, -0.04372225745085605, -0.09783195338510864, 0.010387438483396544, -2.094260718448211, 0.03623676153226339],
    ],
    [3, 20, 9, 25, 0.9, [0.15, 0.36, 0.21, 0.004617118549764265, 0.4153828814502357, 1.5829345590332589, 0.11343638083618274]],
    [
      5012,
      100000,
      5203,
      100000,
      0.95,
      [0.05012, 0.05203, 0.001910000000000002, -1.965262469524041e-5, 0.003839652624695244, 1.9399843993052193, 0.05238158586730479],
    ],
  ];
  for (const [sA, nA, sB, nB, conf, e] of cases) {
    it(`matches scipy for ${sA}/${nA} vs ${sB}/${nB} at ${conf}`, () => {
      const r = twoProportionZTest(sA, nA, sB, nB, conf);
      assert.ok(r);
      const [rateA, rateB, diff, ciLow, ciHigh, z, pValue] = e as [number, number, number, number, number, number, number];
      closeAll({ ...r }, { rateA, rateB, diff, ciLow, ciHigh, z, pValue }, 'proportion');
    });
  }

  it('defaults to a 95% interval', () => {
    const r = twoProportionZTest(120, 1000, 150, 1000);
    assert.ok(r);
    close(r.ciLow, 7.602882129778554e-5, 'ciLow');
  });

  it('is null when an arm has no trials or the pooled SE is 0', () => {
    assert.equal(twoProportionZTest(0, 0, 5, 10), null);
    assert.equal(twoProportionZTest(5, 10, 0, 0), null);
    assert.equal(twoProportionZTest(0, 100, 0, 200), null);
    assert.equal(twoProportionZTest(100, 100, 200, 200), null);
  });

  it('identical arms: no difference, p = 1', () => {
    const r = twoProportionZTest(50, 500, 50, 500);
    assert.ok(r);
    assert.equal(r.diff, 0);
    assert.equal(r.z, 0);
    assert.equal(r.pValue, 1);
    close(r.ciHigh, -r.ciLow, 'symmetric CI');
  });

  it('keeps precision far in the tail', () => {
    // 2 * norm.sf(z) for z = 0.4 / sqrt(0.25 * 2 / 1000) = 17.88854381999832: 1.4484424e-71 (scipy)
    const r = twoProportionZTest(300, 1000, 700, 1000);
    assert.ok(r);
    close(r.z, 17.88854381999832, 'z');
    assert.ok(r.pValue > 0 && r.pValue < 1e-70, `pValue ${r.pValue}`);
  });

  it('rejects impossible inputs', () => {
    assert.throws(() => twoProportionZTest(11, 10, 1, 10), RangeError);
    assert.throws(() => twoProportionZTest(-1, 10, 1, 10), RangeError);
    assert.throws(() => twoProportionZTest(1, Number.NaN, 1, 10), RangeError);
    assert.throws(() => twoProportionZTest(1, 10, 1, 10, 1), RangeError);
  });
});

describe('welchTTest', () => {
  const A1 = [12.1, 9.8, 11.4, 10.2, 13.5, 8.9, 10.7, 11.9];
  const B1 = [14.2, 12.8, 15.1, 11.9, 13.3, 16.0, 12.4, 14.8, 13.9, 15.5];
  const A2 = [0.5, 0.7, 0.4, 0.9, 0.6];
  const B2 = [0.45, 0.52, 0.61, 0.38, 0.49, 0.55, 0.47];
  const A3 = [3, 3, 3, 3];
  const B3 = [2.5, 3.5, 4.0, 2.0, 3.0];
  const keys = ['meanA', 'meanB', 'diff', 'ciLow', 'ciHigh', 't', 'df', 'pValue'] as const;
  const obj = (v: number[]): Record<string, number> => Object.fromEntries(keys.map((k, i) => [k, v[i] as number]));

  it('matches scipy ttest_ind(equal_var=False) on raw samples', () => {
    const r1 = welchTTest(moments(A1), moments(B1), 0.95);
    assert.ok(r1);
    closeAll(
      { ...r1 },
      obj([11.0625, 13.99, 2.9275, 1.4841235404967872, 4.370876459503213, 4.330929270740072, 14.693839890683295, 0.0006211056617456022]),
      'welch1',
    );
    const r2 = welchTTest(moments(A2), moments(B2), 0.99);
    assert.ok(r2);
    closeAll(
      { ...r2 },
      obj([
        0.62, 0.49571428571428566, -0.12428571428571433, -0.4947627570828484, 0.24619132851141973, -1.3741601101458336, 4.852046089652796, 0.2294689860231482,
      ]),
      'welch2',
    );
  });

  it('one arm with zero variance: df = n - 1 of the other, identical means give t = 0, p = 1', () => {
    const r = welchTTest(moments(A3), moments(B3));
    assert.ok(r);
    closeAll({ ...r }, obj([3.0, 3.0, 0.0, -0.9816215807387786, 0.9816215807387786, 0.0, 4.0, 1.0]), 'welch3');
  });

  it('matches scipy ttest_ind_from_stats on summary statistics (90% CI)', () => {
    const r = welchTTest(fromSummary(5000, 2.31, 1.7), fromSummary(4800, 2.38, 1.9), 0.9);
    assert.ok(r);
    closeAll(
      { ...r },
      obj([2.31, 2.38, 0.06999999999999984, 0.010005880089462411, 0.12999411991053728, 1.9193696101897626, 9578.654827433613, 0.05496724952143981]),
      'welch_stats',
    );
  });

  it('is antisymmetric in its arms', () => {
    const ab = welchTTest(moments(A1), moments(B1));
    const ba = welchTTest(moments(B1), moments(A1));
    assert.ok(ab && ba);
    close(ba.t, -ab.t, 't');
    close(ba.pValue, ab.pValue, 'p');
    close(ba.ciLow, -ab.ciHigh, 'ci');
  });

  it('is null when an arm has fewer than 2 units or both variances are 0', () => {
    assert.equal(welchTTest(moments([1]), moments(B1)), null);
    assert.equal(welchTTest(moments(A1), moments([])), null);
    assert.equal(welchTTest(moments([2, 2, 2]), moments([5, 5])), null);
    // Equal values whose sum of squares does not cancel exactly in floating point.
    assert.equal(welchTTest(moments([0.1, 0.1, 0.1]), moments([0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7])), null);
  });

  it('identical arms: t = 0, p = 1', () => {
    const r = welchTTest(moments(A1), moments(A1));
    assert.ok(r);
    assert.equal(r.t, 0);
    assert.equal(r.pValue, 1);
  });
});

describe('sampleRatioMismatch', () => {
  const cases: [number[], number[], number, number, number][] = [
    [[5010, 4990], [1, 1], 0.04, 1, 0.841480581121794],
    [[1050, 950], [1, 1], 5.0, 1, 0.025347318677468325],
    [[3300, 3400, 3300], [1, 1, 1], 2.0, 2, 0.36787944117144245],
    [[980, 2050, 6970], [0.1, 0.2, 0.7], 1.7785714285714285, 2, 0.41094918307409367],
    [[410, 590], [2, 3], 0.41666666666666663, 1, 0.5186050164287255],
  ];
  for (const [obs, w, chi, df, p] of cases) {
    it(`matches scipy chisquare for ${obs.join('/')} vs weights ${w.join('/')}`, () => {
      const r = sampleRatioMismatch(obs, w);
      assert.ok(r);
      close(r.chiSquare, chi, 'chiSquare');
      assert.equal(r.df, df);
      close(r.pValue, p, 'pValue');
      assert.equal(r.mismatch, false);
    });
  }

  it('flags a 60/40 split of 10k against 50/50 (scipy: chi2 400, p 5.5e-89)', () => {
    const r = sampleRatioMismatch([6000, 4000], [1, 1]);
    assert.ok(r);
    close(r.chiSquare, 400, 'chiSquare');
    assert.ok(r.pValue < 1e-15);
    assert.equal(r.mismatch, true);
    assert.equal(SRM_ALPHA, 0.001);
  });

  it('arms with weight 0 are excluded, and observations in them are a mismatch', () => {
    // scipy: chisquare([500, 530], [515, 515]) = (0.8737864077669902, p 0.3499091993282133)
    const clean = sampleRatioMismatch([500, 530, 0], [1, 1, 0]);
    assert.ok(clean);
    close(clean.chiSquare, 0.8737864077669902, 'chiSquare');
    close(clean.pValue, 0.3499091993282133, 'pValue');
    assert.equal(clean.df, 1);
    assert.equal(clean.mismatch, false);
    const stray = sampleRatioMismatch([500, 530, 3], [1, 1, 0]);
    assert.ok(stray);
    close(stray.chiSquare, 0.8737864077669902, 'chiSquare');
    assert.equal(stray.mismatch, true);
    const onlyStray = sampleRatioMismatch([0, 0, 7], [1, 1, 0]);
    assert.ok(onlyStray);
    assert.equal(onlyStray.mismatch, true);
  });

  it('is null with no observations or fewer than 2 weighted arms', () => {
    assert.equal(sampleRatioMismatch([0, 0], [1, 1]), null);
    assert.equal(sampleRatioMismatch([10, 0], [1, 0]), null);
    assert.equal(sampleRatioMismatch([], []), null);
  });

  it('rejects mismatched lengths and negative counts', () => {
    assert.throws(() => sampleRatioMismatch([1, 2], [1]), RangeError);
    assert.throws(() => sampleRatioMismatch([1, -2], [1, 1]), RangeError);
    assert.throws(() => sampleRatioMismatch([1, 2], [1, Number.POSITIVE_INFINITY]), RangeError);
  });
});
