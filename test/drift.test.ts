/**
 * Drift monitoring: the metrics (PSI, Jensen-Shannon distance, binned KS and its asymptotic p-value) against
 * numbers computed independently with scipy 1.17 / numpy; drift on known distributions drawn with a seeded PRNG
 * (no drift for the same distribution; drift for a shifted mean, a changed variance, a changed category mix);
 * sliding windows; merging sketches; data quality; the default feature mapping; reading CSV / JSONL / Parquet
 * datasets; building a profile from logged records.
 *
 * Expected metric values come from this script (scipy 1.17); each `case` / `ksf` / theory line it prints is
 * pasted below:
 *
 * ```python
 * import numpy as np
 * from scipy.spatial.distance import jensenshannon
 * from scipy.special import kolmogorov
 * from scipy.stats import kstwobign, ks_2samp, norm
 * def psi(r, c, eps=1e-4):
 *     r = np.asarray(r, float); c = np.asarray(c, float)
 *     p = r / r.sum(); q = c / c.sum()
 *     p = np.where(r > 0, p, eps); q = np.where(c > 0, q, eps)
 *     return float(np.sum((q - p) * np.log(q / p)))
 * for r, c in CASES:  # the count vectors below
 *     n, m = sum(r), sum(c)
 *     # values = bin indexes, so the exact two-sample statistic is the binned one
 *     d = ks_2samp(np.repeat(np.arange(len(r)), r), np.repeat(np.arange(len(c)), c)).statistic
 *     en = n * m / (n + m)
 *     print('case', r, c, psi(r, c), jensenshannon(r, c, base=2), d, kolmogorov(np.sqrt(en) * d), kstwobign.sf(np.sqrt(en) * d))
 * for x in [0.05, 0.2, 0.5, 0.8, 0.99, 1.0, 1.2, 1.5, 2.0, 3.0]:
 *     print('ksf', x, kolmogorov(x))
 * # population metrics on the reference's decile bins: N(0,1) vs N(0.5,1) and vs N(0,1.5); category mixes
 * e = norm.ppf(np.arange(1, 10) / 10); p = np.full(10, 0.1)
 * def binned(mu, sd): return np.diff(np.concatenate([[0], norm.cdf((e - mu) / sd), [1]]))
 * for mu, sd in [(0.5, 1.0), (0.0, 1.5)]:
 *     q = binned(mu, sd)
 *     print(psi(p, q), jensenshannon(p, q, base=2), np.max(np.abs(np.cumsum(p) - np.cumsum(q))))
 * pc = np.array([0.5, 0.3, 0.2]); qc = np.array([0.3, 0.3, 0.4])
 * print(psi(pc, qc), jensenshannon(pc, qc, base=2))
 * ```
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CategoricalSketch, NumericSketch, quantileEdges } from '../src/monitoring/sketch.js';
import {
  buildProfile,
  defaultFeatures,
  DriftMonitor,
  jsDistance,
  kolmogorovSf,
  ksTest,
  psi,
  rowsFromRecords,
  rowsFromTensors,
  type FeatureDrift,
  type ReferenceProfile,
} from '../src/monitoring/drift.js';
import { readDataset } from '../src/monitoring/dataset.js';
import { DEFAULT_THRESHOLDS, type FeatureSpec, type PredictionRecord } from '../src/monitoring/types.js';
import { DTYPES, toHalfBits } from '../src/tensor/dtype.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { isSwitchyardError } from '../src/errors.js';
import { prng } from '../tools/onnx/graph.js';

const close = (a: number, b: number, tol: number, what = ''): void => assert.ok(Math.abs(a - b) <= tol, `${what} ${a} vs ${b} (tol ${tol})`);

// ── seeded PRNG: mulberry32 + Box-Muller ──
const rng = prng;
function normal(u: () => number): (mu: number, sd: number) => number {
  return (mu, sd) => {
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    return mu + sd * r * Math.cos(2 * Math.PI * u());
  };
}
function pick(u: () => number, mix: Readonly<Record<string, number>>): string {
  let x = u();
  const entries = Object.entries(mix);
  for (const [k, w] of entries) {
    if (x < w) return k;
    x -= w;
  }
  return entries[entries.length - 1]![0];
}

// ── metrics vs scipy ──

const CASES: Array<[number[], number[], number, number, number, number]> = [
  // ref, cur, psi, js (base 2), KS statistic, KS p-value (kolmogorov(sqrt(en) * D) == kstwobign.sf)
  [[10, 20, 30, 40, 0], [15, 25, 20, 30, 10], 0.7908299033974288, 0.26090528167116755, 0.1, 0.6993741991310154],
  [[100, 100, 100, 100], [100, 100, 100, 100], 0.0, 0.0, 0.0, 1.0],
  [[500, 300, 200], [300, 300, 400], 0.2407945608651872, 0.20673086033214078, 0.2, 8.496708510583118e-18],
  [
    [1000, 900, 1100, 950, 1050, 1000, 980, 1020, 990, 1010],
    [80, 95, 110, 100, 105, 98, 102, 97, 103, 110],
    0.006368084724508196,
    0.033862562973477645,
    0.02,
    0.8602552205267467,
  ],
];

test('psi, jsDistance and ksTest match scipy on count vectors', () => {
  for (const [ref, cur, p, j, d, pv] of CASES) {
    close(psi(ref, cur), p, 1e-12, 'psi');
    close(jsDistance(ref, cur), j, 1e-12, 'js');
    const k = ksTest(ref, cur);
    close(k.statistic, d, 1e-12, 'ks');
    assert.ok(Math.abs(k.pValue - pv) <= 1e-9 * Math.max(pv, 1e-300) || Math.abs(k.pValue - pv) < 1e-14, `p ${k.pValue} vs ${pv}`);
  }
  // typed arrays work as well; an empty side gives NaN
  close(psi(Float64Array.of(1, 1), Float64Array.of(1, 3)), psi([1, 1], [1, 3]), 0);
  assert.ok(Number.isNaN(psi([0, 0], [1, 2])));
  assert.ok(Number.isNaN(jsDistance([1, 2], [0, 0])));
  assert.ok(Number.isNaN(ksTest([1, 2], [0, 0]).pValue));
  assert.throws(
    () => psi([1, 2], [1, 2, 3]),
    (e: unknown) => isSwitchyardError(e) && e.status === 400,
  );
  // JS distance is bounded by 1 (disjoint supports)
  close(jsDistance([1, 0], [0, 1]), 1, 1e-15);
});

test('kolmogorovSf matches scipy.special.kolmogorov', () => {
  const expected: Array<[number, number]> = [
    [0.05, 1.0],
    [0.2, 0.999999999999495],
    [0.5, 0.9639452436648751],
    [0.8, 0.5441424115741981],
    [0.99, 0.2808738392255489],
    [1.0, 0.26999967167735456],
    [1.2, 0.11224966667072497],
    [1.5, 0.022217962616525127],
    [2.0, 0.0006709252557796953],
    [3.0, 3.045995948942526e-8],
  ];
  for (const [x, sf] of expected) close(kolmogorovSf(x), sf, 1e-13 + 1e-10 * sf, `x=${x}`);
  assert.equal(kolmogorovSf(0), 1);
  assert.equal(kolmogorovSf(-1), 1);
});

// ── sketches ──

test('NumericSketch bins by edges; merge of sketches equals the sketch of the union', () => {
  const s = new NumericSketch([0, 1, 2]);
  for (const x of [-5, 0, 0.5, 1, 1.99, 2, 7, NaN]) s.add(x);
  assert.deepEqual(Array.from(s.counts), [1, 2, 2, 2]);
  assert.equal(s.n, 7);
  assert.equal(s.nan, 1);
  assert.equal(s.min, -5);
  assert.equal(s.max, 7);

  const u = rng(7);
  const g = normal(u);
  const values = Array.from({ length: 5000 }, (_, i) => (i % 97 === 0 ? NaN : g(0, 1)));
  const edges = quantileEdges(values.slice(0, 1000));
  assert.equal(edges.length, 9);
  const all = new NumericSketch(edges);
  const a = new NumericSketch(edges);
  const b = new NumericSketch(edges);
  values.forEach((x, i) => {
    all.add(x);
    (i % 3 === 0 ? a : b).add(x);
  });
  all.addMissing(4);
  a.addMissing(1);
  b.addMissing(3);
  a.merge(b);
  assert.deepEqual(Array.from(a.counts), Array.from(all.counts));
  assert.equal(a.n, all.n);
  assert.equal(a.nan, all.nan);
  assert.equal(a.missing, all.missing);
  assert.equal(a.min, all.min);
  assert.equal(a.max, all.max);
  close(a.sum, all.sum, 1e-9);
  close(a.sumSq, all.sumSq, 1e-9);

  assert.throws(
    () => a.merge(new NumericSketch([0, 1])),
    (e: unknown) => isSwitchyardError(e) && e.code === 'SY_ERR_BAD_REQUEST',
  );
  assert.throws(() => new NumericSketch([1, 1]), /ascending/);

  // JSON round trip
  const back = NumericSketch.fromJSON(JSON.parse(JSON.stringify(all)));
  assert.deepEqual(back.toJSON(), all.toJSON());
  assert.throws(
    () => NumericSketch.fromJSON({ edges: [0], counts: [1] }),
    (e: unknown) => isSwitchyardError(e) && e.status === 400,
  );

  // clear
  all.clear();
  assert.equal(all.n, 0);
  assert.deepEqual(Array.from(all.counts), new Array(10).fill(0));
  assert.equal(all.min, Infinity);
});

test('quantileEdges: deciles (numpy linear), deduplicated, finite values only', () => {
  const v = Array.from({ length: 11 }, (_, i) => i * 10); // 0..100
  assert.deepEqual(quantileEdges(v), [10, 20, 30, 40, 50, 60, 70, 80, 90]);
  assert.deepEqual(quantileEdges(v, 4), [25, 50, 75]);
  // non-finite values are ignored; np.unique(np.quantile([0]*7 + [1, 2, 3], np.arange(1, 10) / 10))
  const q = quantileEdges([0, 0, 0, 0, 0, 0, 0, 1, 2, 3, NaN, Infinity]);
  assert.equal(q.length, 4);
  [0, 0.3, 1.2, 2.1].forEach((x, i) => close(q[i]!, x, 1e-12));
  assert.deepEqual(quantileEdges([5, 5, 5]), [5]);
  assert.deepEqual(quantileEdges([]), []);
  const e = quantileEdges([0, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
  assert.ok(e.every((x, i) => i === 0 || x > e[i - 1]!));
});

test('CategoricalSketch: counts, cap into __other__, merge equals union, JSON', () => {
  const u = rng(3);
  const mix = { a: 0.5, b: 0.3, c: 0.2 };
  const all = new CategoricalSketch();
  const a = new CategoricalSketch();
  const b = new CategoricalSketch();
  for (let i = 0; i < 3000; i++) {
    const v = pick(u, mix);
    all.add(v);
    (i % 2 === 0 ? a : b).add(v);
  }
  a.addMissing(2);
  all.addMissing(2);
  a.merge(b);
  assert.deepEqual(new Map([...a.counts()].sort()), new Map([...all.counts()].sort()));
  assert.equal(a.n, 3000);
  assert.equal(a.missing, 2);

  const capped = new CategoricalSketch(2);
  for (const v of ['x', 'y', 'z', 'x', 'w']) capped.add(v);
  assert.deepEqual(
    capped.counts(),
    new Map([
      ['x', 2],
      ['y', 1],
      ['__other__', 2],
    ]),
  );
  assert.equal(capped.n, 5);
  const back = CategoricalSketch.fromJSON(JSON.parse(JSON.stringify(capped)));
  assert.deepEqual(back.counts(), capped.counts());
  assert.equal(back.maxCategories, 2);
  back.clear();
  assert.equal(back.n, 0);
});

// ── known distributions ──

const SIG = {
  inputs: [
    { name: 'x', datatype: 'FP32', shape: [-1, 2] },
    { name: 'c', datatype: 'BYTES', shape: [-1, 1] },
  ],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
};
const FEATURES = defaultFeatures(SIG);
const REF_MIX = { a: 0.5, b: 0.3, c: 0.2 };

interface Gen {
  mean0?: number;
  sd1?: number;
  mix?: Readonly<Record<string, number>>;
}

function reference(seed: number, n: number): ReferenceProfile {
  const u = rng(seed);
  const g = normal(u);
  const rows = Array.from({ length: n }, () => ({ 'x[0]': g(0, 1), 'x[1]': g(5, 2), c: pick(u, REF_MIX), y: g(0, 1) }));
  return buildProfile(FEATURES, rows, { createdAt: new Date(0) });
}

function batch(u: () => number, n: number, o: Gen = {}): { inputs: { name: string; tensor: Tensor }[]; outputs: { name: string; tensor: Tensor }[] } {
  const g = normal(u);
  const x = new Float32Array(n * 2);
  const c: string[] = [];
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[2 * i] = g(o.mean0 ?? 0, 1);
    x[2 * i + 1] = g(5, 2 * (o.sd1 ?? 1));
    c.push(pick(u, o.mix ?? REF_MIX));
    y[i] = g(0, 1);
  }
  return {
    inputs: [
      { name: 'c', tensor: { dtype: DTYPES.BYTES, shape: [n, 1], data: c.map((x) => new Uint8Array(Buffer.from(x))) } },
      { name: 'x', tensor: { dtype: DTYPES.FP32, shape: [n, 2], data: x } },
    ],
    outputs: [{ name: 'y', tensor: { dtype: DTYPES.FP32, shape: [n], data: y } }],
  };
}

function feed(m: DriftMonitor, u: () => number, total: number, o: Gen = {}): void {
  for (let done = 0; done < total; done += 50) {
    const b = batch(u, 50, o);
    m.observe(b.inputs, b.outputs);
  }
}

const byName = (fs: readonly FeatureDrift[], name: string): FeatureDrift => fs.find((f) => f.name === name)!;

test('same distribution: every metric below its threshold, no dataset drift', () => {
  const profile = reference(11, 10_000);
  const m = new DriftMonitor(profile, { now: () => 1_000 });
  feed(m, rng(12), 5000);
  const r = m.report();
  assert.equal(r.rows, 5000);
  assert.equal(r.features.length, 4);
  for (const f of r.features) {
    assert.equal(f.count, 5000, f.name);
    assert.ok(f.psi! < DEFAULT_THRESHOLDS.psi, `${f.name} psi ${f.psi}`);
    assert.ok(f.js! < DEFAULT_THRESHOLDS.js, `${f.name} js ${f.js}`);
    if (f.kind === 'numeric') assert.ok(f.ksPValue! > DEFAULT_THRESHOLDS.ksPValue, `${f.name} p ${f.ksPValue}`);
    else assert.equal(f.ksPValue, null);
    assert.equal(f.drifted, false, f.name);
    assert.equal(f.quality.missingRate, 0);
  }
  assert.equal(r.driftedShare, 0);
  assert.equal(r.datasetDrift, false);
  assert.deepEqual(r.thresholds, DEFAULT_THRESHOLDS);
});

test('shifted mean, changed variance and changed category mix drift, near the population values', () => {
  const profile = reference(21, 10_000);
  const m = new DriftMonitor(profile, { now: () => 5_000 });
  feed(m, rng(22), 5000, { mean0: 0.5, sd1: 1.5, mix: { a: 0.3, b: 0.3, c: 0.4 } });
  const r = m.report();
  const x0 = byName(r.features, 'x[0]');
  const x1 = byName(r.features, 'x[1]');
  const c = byName(r.features, 'c');
  const y = byName(r.features, 'y');
  // population values on the reference's decile bins (scipy, see the header); sampling noise allows a margin
  close(x0.psi!, 0.2377492046862759, 0.04, 'x0 psi');
  close(x0.js!, 0.20468350706759234, 0.03, 'x0 js');
  close(x0.ks!, 0.1974115683984804, 0.03, 'x0 ks');
  assert.ok(x0.ksPValue! < 1e-10);
  assert.equal(x0.drifted, true);
  close(x1.psi!, 0.19354302533061873, 0.04, 'x1 psi');
  close(x1.js!, 0.18548891457822245, 0.03, 'x1 js');
  close(x1.ks!, 0.09645064053032962, 0.03, 'x1 ks');
  assert.equal(x1.drifted, true);
  close(c.psi!, 0.2407945608651872, 0.04, 'c psi');
  close(c.js!, 0.20673086033214078, 0.03, 'c js');
  assert.equal(c.ks, null);
  assert.equal(c.drifted, true);
  assert.equal(y.drifted, false);
  assert.equal(r.driftedShare, 0.75);
  assert.equal(r.datasetDrift, true);
});

test('bins(): the reference and window counts the metrics compare, numeric and categorical (an unseen category last)', () => {
  const profile = reference(41, 4000);
  const m = new DriftMonitor(profile, { now: () => 0, minRows: 10 });
  feed(m, rng(42), 1000, { mix: { a: 0.4, b: 0.3, z: 0.3 } });
  const bins = m.bins();
  const report = m.report();
  assert.equal(bins.rows, 1000);
  assert.equal(bins.windowStart, report.windowStart);
  for (const f of bins.features) {
    const d = byName(report.features, f.name);
    assert.equal(f.kind, d.kind);
    assert.equal(f.reference.length, f.current.length, f.name);
    assert.equal(
      f.current.reduce((s, c) => s + c, 0),
      1000,
      `${f.name}: every valid value is in a bin`,
    );
    close(psi(f.reference, f.current), d.psi!, 1e-12, `${f.name}: psi of the bins is the report's`);
    close(jsDistance(f.reference, f.current), d.js!, 1e-12, `${f.name}: js of the bins is the report's`);
    if (f.kind === 'numeric') {
      assert.equal(f.current.length, f.edges.length + 1);
      assert.equal(
        f.reference.reduce((s, c) => s + c, 0),
        4000,
      );
    }
  }
  const c = bins.features.find((f) => f.name === 'c')!;
  assert.ok(c.kind === 'categorical');
  assert.deepEqual(c.categories.slice(-1), ['z'], "a category only the window has comes after the reference's");
  assert.equal(c.reference[c.categories.indexOf('z')], 0);
  assert.equal(c.current[c.categories.indexOf('c')], 0, 'a reference category the window lacks counts 0');
});

test('monitor metrics equal psi/js/ks of independently binned counts', () => {
  const profile = reference(31, 4000);
  const m = new DriftMonitor(profile, { now: () => 0 });
  const u = rng(32);
  const b = batch(u, 1000, { mean0: 0.3 });
  m.observe(b.inputs, b.outputs);
  const fp = profile.features.find((f) => f.spec.name === 'x[0]')!;
  const ref = NumericSketch.fromJSON(fp.numeric);
  // bin the current x[0] values by a linear scan over the edges
  const counts = new Array<number>(ref.edges.length + 1).fill(0);
  const x = b.inputs[1]!.tensor.data as Float32Array;
  for (let i = 0; i < 1000; i++) {
    let k = 0;
    while (k < ref.edges.length && x[2 * i]! >= ref.edges[k]!) k++;
    counts[k]!++;
  }
  const f = byName(m.report().features, 'x[0]');
  assert.equal(f.psi, psi(ref.counts, counts));
  assert.equal(f.js, jsDistance(ref.counts, counts));
  assert.equal(f.ks, ksTest(ref.counts, counts).statistic);
  assert.equal(f.ksPValue, ksTest(ref.counts, counts).pValue);
});

test('thresholds: overrides per feature, minRows, datasetShare', () => {
  const profile = reference(41, 5000);
  const m = new DriftMonitor(profile, {
    now: () => 0,
    thresholds: { psi: 0.1 },
    overrides: { 'x[0]': { psi: 10, js: 10, ksPValue: 0 } },
    datasetShare: 0.3,
    minRows: 500,
  });
  feed(m, rng(42), 400, { mean0: 2 });
  let r = m.report();
  // 400 < minRows: null metrics, nothing drifts, no share
  for (const f of r.features) {
    assert.equal(f.psi, null);
    assert.equal(f.drifted, false);
    assert.equal(f.count, 400);
  }
  assert.equal(r.driftedShare, null);
  assert.equal(r.datasetDrift, false);
  feed(m, rng(43), 600, { mean0: 2, mix: { a: 0.1, b: 0.1, c: 0.8 } });
  r = m.report();
  assert.equal(byName(r.features, 'x[0]').drifted, false); // overridden away
  assert.ok(byName(r.features, 'x[0]').psi! > 1);
  assert.equal(byName(r.features, 'c').drifted, true);
  assert.equal(r.driftedShare, 0.25);
  assert.equal(r.datasetDrift, false); // 0.25 < 0.3
  assert.deepEqual(r.thresholds, { ...DEFAULT_THRESHOLDS, psi: 0.1 });
});

test('windows slide: data older than the window stops counting; reused buckets are cleared', () => {
  const profile = reference(51, 5000);
  let now = 0;
  const m = new DriftMonitor(profile, { now: () => now, windowMs: 60_000, buckets: 6, minRows: 100 });
  const u = rng(52);
  now = 1_000; // bucket 0: shifted data
  feed(m, u, 500, { mean0: 3 });
  now = 30_000; // bucket 3: reference-like data
  feed(m, u, 500);
  let r = m.report();
  assert.equal(r.rows, 1000);
  assert.equal(r.windowStart, new Date(-20_000).toISOString());
  assert.equal(r.windowEnd, new Date(30_000).toISOString());
  assert.equal(byName(r.features, 'x[0]').drifted, true);

  now = 59_999; // still inside: buckets 0..5
  assert.equal(m.report().rows, 1000);
  now = 60_000; // bucket 0 left the window
  r = m.report();
  assert.equal(r.rows, 500);
  assert.equal(r.windowStart, new Date(10_000).toISOString());
  assert.equal(byName(r.features, 'x[0]').count, 500);
  assert.equal(byName(r.features, 'x[0]').drifted, false);

  now = 65_000; // bucket 6 reuses bucket 0's ring slot: cleared before use
  feed(m, u, 200);
  r = m.report();
  assert.equal(r.rows, 700);
  assert.equal(byName(r.features, 'x[0]').count, 700);

  now = 200_000; // everything old
  r = m.report();
  assert.equal(r.rows, 0);
  assert.equal(byName(r.features, 'x[0]').count, 0);
  assert.equal(byName(r.features, 'x[0]').psi, null);
  assert.equal(byName(r.features, 'x[0]').quality.missingRate, null);
  assert.equal(r.driftedShare, null);
});

test('quality: NaN, missing and out-of-range rates; shape and type violations', () => {
  const rows = Array.from({ length: 200 }, (_, i) => ({ 'x[0]': i / 199, 'x[1]': 10 + (i % 10), c: i % 2 ? 'a' : 'b', y: i }));
  const profile = buildProfile(FEATURES, rows);
  const x0 = profile.features[0]!;
  assert.equal(x0.min, 0);
  assert.equal(x0.max, 1);
  const m = new DriftMonitor(profile, { now: () => 0, minRows: 1 });
  // 10 rows: x[0] has 2 NaN and 3 values outside [0, 1]; c has an unseen category twice
  const x = Float32Array.from([0.5, 10, NaN, 11, 2, 12, -1, 13, 0.2, 14, NaN, 15, 0.3, 16, 5, 17, 0.4, 18, 0.9, 19]);
  const c = ['a', 'b', 'zz', 'a', 'b', 'zz', 'a', 'b', 'a', 'b'];
  const y = new Float32Array(10).fill(3);
  m.observe(
    [
      { name: 'x', tensor: { dtype: DTYPES.FP32, shape: [10, 2], data: x } },
      { name: 'c', tensor: { dtype: DTYPES.BYTES, shape: [10, 1], data: c.map((x) => new Uint8Array(Buffer.from(x))) } },
    ],
    [{ name: 'y', tensor: { dtype: DTYPES.FP32, shape: [10], data: y } }],
  );
  // a request without input "c": its 5 rows count as missing for c
  m.observe([{ name: 'x', tensor: { dtype: DTYPES.FP32, shape: [5, 2], data: new Float32Array(10).fill(0.5) } }], []);
  // type violation: BYTES for the numeric tensor x; shape violation: too few columns; and two reported by the server
  m.observe([{ name: 'x', tensor: { dtype: DTYPES.BYTES, shape: [1, 2], data: [new Uint8Array([49]), new Uint8Array([50])] } }], []);
  m.observe([{ name: 'x', tensor: { dtype: DTYPES.FP32, shape: [2, 1], data: new Float32Array(2) } }], []);
  m.observe([{ name: 'x', tensor: { dtype: DTYPES.FP32, shape: [2, 2], data: new Float32Array(3) } }], []);
  m.violation('shape');
  m.violation('type');
  const r = m.report();
  const fx0 = byName(r.features, 'x[0]');
  assert.equal(fx0.count, 15);
  close(fx0.quality.nanRate!, 2 / 15, 1e-15);
  assert.equal(fx0.quality.missingRate, 0);
  close(fx0.quality.outOfRangeRate!, 3 / 13, 1e-15);
  const fc = byName(r.features, 'c');
  assert.equal(fc.count, 20); // c is absent from the 5-row request and from the three bad ones (1 + 2 + 2 rows)
  close(fc.quality.missingRate!, 10 / 20, 1e-15);
  assert.equal(fc.quality.nanRate, null);
  close(fc.quality.outOfRangeRate!, 2 / 10, 1e-15);
  const fy = byName(r.features, 'y');
  assert.equal(fy.count, 10); // absent outputs are not counted as missing
  assert.equal(fy.quality.outOfRangeRate, 0);
  assert.deepEqual(r.quality, { shapeViolations: 3, typeViolations: 2 });
});

test('observe reads FP16, INT64 and BOOL tensors', () => {
  const features: FeatureSpec[] = defaultFeatures({
    inputs: [
      { name: 'h', datatype: 'FP16', shape: [-1, 1] },
      { name: 'i', datatype: 'INT64', shape: [-1] },
      { name: 'b', datatype: 'BOOL', shape: [-1, 1] },
    ],
    outputs: [],
  });
  assert.deepEqual(
    features.map((f) => [f.name, f.kind]),
    [
      ['h', 'numeric'],
      ['i', 'numeric'],
      ['b', 'categorical'],
    ],
  );
  const rows = [
    { h: 0.5, i: 1, b: 'true' },
    { h: 1.5, i: 2, b: 'false' },
    { h: 2.5, i: 3, b: 'true' },
    { h: 3.5, i: 4, b: 'false' },
  ];
  const profile = buildProfile(features, rows, { bins: 4 });
  const m = new DriftMonitor(profile, { now: () => 0, minRows: 1 });
  const inputs = [
    { name: 'h', tensor: { dtype: DTYPES.FP16, shape: [4, 1], data: Uint16Array.from([0.5, 1.5, 2.5, 3.5].map(toHalfBits)) } },
    { name: 'i', tensor: { dtype: DTYPES.INT64, shape: [4], data: BigInt64Array.from([1n, 2n, 3n, 4n]) } },
    { name: 'b', tensor: { dtype: DTYPES.BOOL, shape: [4, 1], data: Uint8Array.from([1, 0, 1, 0]) } },
  ];
  assert.deepEqual(rowsFromTensors(features, inputs, []), rows);
  m.observe(inputs, []);
  for (const f of m.report().features) {
    assert.equal(f.psi, 0, f.name);
    assert.equal(f.js, 0, f.name);
    assert.equal(f.quality.outOfRangeRate, 0, f.name);
  }
});

// ── feature mapping ──

test('defaultFeatures: names, kinds, column limit, custom names', () => {
  const sig = {
    inputs: [
      { name: 'features', datatype: 'FP32', shape: [-1, 3] },
      { name: 'flag', datatype: 'BOOL', shape: [-1, 1] },
      { name: 'text', datatype: 'BYTES', shape: [-1] },
      { name: 'image', datatype: 'FP32', shape: [-1, 3, 224, 224] },
      { name: 'dyn', datatype: 'FP32', shape: [-1, -1] },
    ],
    outputs: [{ name: 'probs', datatype: 'FP64', shape: [-1, 2] }],
  };
  assert.deepEqual(
    defaultFeatures(sig).map((f) => `${f.source}:${f.name}:${f.tensor}:${f.column}:${f.kind}`),
    [
      'input:features[0]:features:0:numeric',
      'input:features[1]:features:1:numeric',
      'input:features[2]:features:2:numeric',
      'input:flag:flag:0:categorical',
      'input:text:text:0:categorical',
      'output:probs[0]:probs:0:numeric',
      'output:probs[1]:probs:1:numeric',
    ],
  );
  const custom = defaultFeatures(sig, { maxColumns: 2, names: { features: ['age', 'income'], dyn: ['a', 'b'] } });
  assert.deepEqual(
    custom.map((f) => f.name),
    ['flag', 'text', 'a', 'b', 'probs[0]', 'probs[1]'],
  );
  const named = defaultFeatures(sig, { names: { features: ['age', 'income'] } });
  assert.deepEqual(
    named.slice(0, 3).map((f) => f.name),
    ['age', 'income', 'features[2]'],
  );
});

// ── datasets ──

test('readDataset CSV: quoted fields, missing cells, numbers, CRLF; format from extension', async () => {
  const csv = 'age,city,"note"\r\n31.5,"Oslo, NO","said ""hi"""\r\n,Lima,"two\nlines"\r\n\r\n-2e3,"",NaN\r\n';
  const rows = await readDataset(Buffer.from(csv), 'csv');
  assert.deepEqual(rows, [
    { age: 31.5, city: 'Oslo, NO', note: 'said "hi"' },
    { age: null, city: 'Lima', note: 'two\nlines' },
    { age: -2000, city: '', note: NaN },
  ]);
  const dir = mkdtempSync(join(tmpdir(), 'sy-drift-'));
  const path = join(dir, 'ref.csv');
  writeFileSync(path, '\ufeffa,b\n1,x\n2,y\n');
  assert.deepEqual(await readDataset(path), [
    { a: 1, b: 'x' },
    { a: 2, b: 'y' },
  ]);
  assert.deepEqual(await readDataset(Readable.from(['a,b\n3,', 'z\n']), 'csv'), [{ a: 3, b: 'z' }]);
});

async function rejects400(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isSwitchyardError(e), String(e));
    assert.equal(e.code, 'SY_ERR_BAD_REQUEST');
    assert.equal(e.status, 400);
    assert.match(e.message, re);
    return true;
  });
}

test('readDataset: bad input is a 400 naming the line', async () => {
  await rejects400(readDataset(Buffer.from('a,b\n1,2\n3\n'), 'csv'), /line 3: expected 2 fields, got 1/);
  await rejects400(readDataset(Buffer.from('a,b\n1,"x\n2,3\n'), 'csv'), /line 2: unterminated quoted field/);
  await rejects400(readDataset(Buffer.from('a,b\n1,x"y\n'), 'csv'), /line 2: a quote inside an unquoted field/);
  await rejects400(readDataset(Buffer.from('a,a\n1,2\n'), 'csv'), /line 1: duplicate column "a"/);
  await rejects400(readDataset(Buffer.from('{"a":1}\n\n{"a":2,}\n'), 'jsonl'), /line 3: invalid JSON/);
  await rejects400(readDataset(Buffer.from('{"a":1}\n[1,2]\n'), 'jsonl'), /line 2: expected a JSON object/);
  await rejects400(readDataset(Buffer.from('{"a":{"b":1}}\n'), 'jsonl'), /line 1: value of "a"/);
  await rejects400(readDataset('/nonexistent/ref.csv'), /cannot read dataset file/);
  await rejects400(readDataset('/tmp/ref.txt'), /format unknown/);
  await rejects400(readDataset(Buffer.from('not parquet at all'), 'parquet'), /invalid Parquet/);
});

test('readDataset JSONL: tensor arrays map to <tensor>[i] or by feature specs; absent keys are null', async () => {
  const jsonl = '{"x":[1.5,2.5],"c":"a","flag":true}\n{"x":[[3,4]],"c":null}\n\n{"x":[5,6],"extra":7}\n';
  assert.deepEqual(await readDataset(Buffer.from(jsonl), 'jsonl'), [
    { 'x[0]': 1.5, 'x[1]': 2.5, c: 'a', flag: 'true', extra: null },
    { 'x[0]': 3, 'x[1]': 4, c: null, flag: null, extra: null },
    { 'x[0]': 5, 'x[1]': 6, c: null, flag: null, extra: 7 },
  ]);
  const features = defaultFeatures(
    {
      inputs: [
        { name: 'x', datatype: 'FP32', shape: [-1, 2] },
        { name: 'y', datatype: 'FP32', shape: [-1, 1] },
      ],
      outputs: [],
    },
    { names: { x: ['age', 'income'] } },
  );
  assert.deepEqual(await readDataset(Buffer.from('{"x":[30,1000],"y":[0.5]}\n{"x":[40,2000],"y":0.7}\n'), 'jsonl', { features }), [
    { age: 30, income: 1000, y: 0.5 },
    { age: 40, income: 2000, y: 0.7 },
  ]);
});

// Written with hyparquet-writer 0.17: columns age DOUBLE [31.5, null, 47], city STRING ['Oslo', 'Lima', null],
// n INT64 [1, 2, 3], ok BOOLEAN [true, false, true].
const PARQUET_B64 =
  'UEFSMRUGFSQVJlwVBhUCFQYVABUEFQAAAAMFEAAAAQEogD9AAAAAAACAR0AVBhUkFShcFQYVAhUGFQAVBBUAAAADAxA8BAAAAE9zbG8EAAAATGltYRUGFTQVLFwVBhUAFQYVABUEFQAAAAMHGAQBAAkBAAIJByAAAwAAAAAAAAAVBhUGFQpcFQYVABUGFQAVBBUAAAADBwEABRUEGVxIBHJvb3QVCAAVCiUCGANhZ2UAFQwlAhgEY2l0eSUAABUEJQIYAW4AFQAlAhgCb2sAFgYZHBlMJggcFQoZFQAZGANhZ2UVAhYGFk4WUCYIPDYCKAgAAAAAAIBHQBgIAAAAAACAP0A2AAAZHBUGFQAVAgAAACZYHBUMGRUAGRgEY2l0eRUCFgYWThZSJlg8NgIoBE9zbG8YBExpbWEAGRwVBhUAFQIAAAAmqgEcFQQZFQAZGAFuFQIWBhZeFlYmqgE8NgAoCAMAAAAAAAAAGAgBAAAAAAAAAAAZHBUGFQAVAgAAACaAAhwVABkVABkYAm9rFQIWBhYwFjQmgAI8NgAoAQEYAQAAGRwVBhUAFQIAAAAWqgIWBjasAgAoCWh5cGFycXVldBlMHAAAHAAAHAAAHAAAADgBAABQQVIx';

test('readDataset Parquet (hyparquet): buffer, file and stream', async () => {
  const buf = Buffer.from(PARQUET_B64, 'base64');
  const expected = [
    { age: 31.5, city: 'Oslo', n: 1, ok: 'true' },
    { age: null, city: 'Lima', n: 2, ok: 'false' },
    { age: 47, city: null, n: 3, ok: 'true' },
  ];
  assert.deepEqual(await readDataset(buf, 'parquet'), expected);
  const dir = mkdtempSync(join(tmpdir(), 'sy-drift-'));
  const path = join(dir, 'ref.parquet');
  writeFileSync(path, buf);
  assert.deepEqual(await readDataset(path), expected);
  assert.deepEqual(await readDataset(Readable.from([buf.subarray(0, 100), buf.subarray(100)]), 'parquet'), expected);
});

// ── profiles from records ──

test('buildProfile + rowsFromRecords round trip; profile JSON round trip; identical data does not drift', () => {
  const u = rng(61);
  const g = normal(u);
  const records: PredictionRecord[] = [];
  const tensors: Array<ReturnType<typeof batch>> = [];
  for (let k = 0; k < 40; k++) {
    const b = batch(u, 10);
    tensors.push(b);
    const x = b.inputs[1]!.tensor;
    const c = b.inputs[0]!.tensor;
    const y = b.outputs[0]!.tensor;
    records.push({
      at: new Date(k * 1000).toISOString(),
      model: 'm',
      version: 1,
      tenant: '',
      arm: null,
      requestId: `r${k}`,
      latencyMs: g(5, 1),
      inputs: [
        { name: 'x', datatype: 'FP32', shape: [10, 2], data: Array.from(x.data as Float32Array) },
        { name: 'c', datatype: 'BYTES', shape: [10, 1], data: (c.data as Uint8Array[]).map((b) => Buffer.from(b).toString()) },
      ],
      outputs: k === 39 ? [] : [{ name: 'y', datatype: 'FP32', shape: [10], data: Array.from(y.data as Float32Array) }],
    });
  }
  const rows = [...rowsFromRecords(FEATURES, records)];
  assert.equal(rows.length, 400);
  assert.deepEqual(rows[0], {
    'x[0]': (tensors[0]!.inputs[1]!.tensor.data as Float32Array)[0],
    'x[1]': (tensors[0]!.inputs[1]!.tensor.data as Float32Array)[1],
    c: Buffer.from((tensors[0]!.inputs[0]!.tensor.data as Uint8Array[])[0]!).toString(),
    y: (tensors[0]!.outputs[0]!.tensor.data as Float32Array)[0],
  });
  assert.equal(Object.hasOwn(rows[399]!, 'y'), false); // the last record has no outputs: not observed
  // rows read from the tensors directly are the same
  assert.deepEqual(rowsFromTensors(FEATURES, tensors[0]!.inputs, tensors[0]!.outputs), rows.slice(0, 10));

  const profile = buildProfile(FEATURES, rows);
  assert.equal(profile.format, 1);
  assert.equal(profile.rows, 400);
  const stored = JSON.parse(JSON.stringify(profile)) as ReferenceProfile;
  const fy = stored.features.find((f) => f.spec.name === 'y')!;
  assert.equal((fy.numeric as { n: number }).n, 390);

  // a truncated tensor is not observed; an absent input is missing
  const partial = [...rowsFromRecords(FEATURES, [{ ...records[0]!, inputs: [{ name: 'x', datatype: 'FP32', shape: [10, 2], data: [], truncated: true }] }])];
  assert.equal(partial.length, 10);
  assert.deepEqual(Object.keys(partial[0]!).sort(), ['c', 'y']);
  assert.equal(partial[0]!['c'], null);

  const m = new DriftMonitor(stored, { now: () => 0 });
  for (const b of tensors.slice(0, 39)) m.observe(b.inputs, b.outputs);
  m.observe(tensors[39]!.inputs, []);
  const r = m.report();
  for (const f of r.features) {
    assert.equal(f.psi, 0, f.name);
    assert.equal(f.js, 0, f.name);
    if (f.kind === 'numeric') {
      assert.equal(f.ks, 0, f.name);
      assert.equal(f.ksPValue, 1, f.name);
    }
    assert.equal(f.drifted, false);
  }
  // the same rows fed through observeRows give the same report
  const m2 = new DriftMonitor(stored, { now: () => 0 });
  m2.observeRows(rows);
  assert.deepEqual(m2.report().features, r.features);
});
