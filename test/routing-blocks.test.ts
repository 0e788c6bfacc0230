/**
 * Traffic-management building blocks: the circuit breaker's states under a fake clock, primary/shadow output
 * comparison, and windowed serving stats.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CircuitBreaker, type CircuitState } from '../src/routing/circuit.js';
import { compareOutputs } from '../src/routing/compare.js';
import type { CircuitBreakerSpec } from '../src/registry/routing-policy.js';
import { ShadowStats, WindowStats } from '../src/routing/window.js';
import { DTYPES, toHalfBits, type V2Datatype } from '../src/tensor/dtype.js';
import type { Tensor } from '../src/tensor/tensor.js';

const spec: CircuitBreakerSpec = { errorRate: 0.5, minRequests: 10, windowMs: 10_000, cooldownMs: 5_000 };

function breaker(s: Partial<CircuitBreakerSpec> = {}) {
  const clock = { t: 0 };
  const changes: Array<[CircuitState, CircuitState, string]> = [];
  const cb = new CircuitBreaker({ ...spec, ...s }, { now: () => clock.t, onChange: (f, t, why) => changes.push([f, t, why]) });
  return { cb, clock, changes };
}

function feed(cb: CircuitBreaker, ok: number, bad: number): void {
  for (let i = 0; i < ok; i++) cb.record(true);
  for (let i = 0; i < bad; i++) cb.record(false);
}

/** Trip a fresh breaker at t = clock.t. */
function trip(b: ReturnType<typeof breaker>): void {
  feed(b.cb, 0, 10);
  assert.equal(b.cb.state, 'open');
}

describe('CircuitBreaker', () => {
  it('stays closed below minRequests even at 100% errors', () => {
    const { cb } = breaker();
    feed(cb, 0, 9);
    assert.equal(cb.state, 'closed');
    assert.deepEqual(cb.window(), { requests: 9, errors: 9 });
    assert.equal(cb.allow(), true);
    cb.record(false);
    assert.equal(cb.state, 'open');
  });

  it('opens exactly at the error rate, not below', () => {
    const below = breaker();
    feed(below.cb, 11, 9); // 0.45
    assert.equal(below.cb.state, 'closed');
    const at = breaker();
    feed(at.cb, 10, 9);
    assert.equal(at.cb.state, 'closed');
    at.cb.record(false); // 10/20 = 0.5
    assert.equal(at.cb.state, 'open');
    assert.equal(at.changes.length, 1);
    assert.deepEqual(at.changes[0]!.slice(0, 2), ['closed', 'open']);
    assert.equal(at.changes[0]![2], 'error rate 0.50 over 20 requests in 10000 ms');
  });

  it('slides: old errors age out of the window', () => {
    const { cb, clock } = breaker();
    feed(cb, 0, 4);
    clock.t = 5_000;
    feed(cb, 5, 0);
    assert.deepEqual(cb.window(), { requests: 9, errors: 4 });
    clock.t = 10_500; // the first 4 errors (bucket 0) have left
    assert.deepEqual(cb.window(), { requests: 5, errors: 0 });
    feed(cb, 0, 4); // 4 / 9 in window, below minRequests
    feed(cb, 1, 0); // 4 / 10 = 0.4
    assert.equal(cb.state, 'closed');
    clock.t = 100_000;
    assert.deepEqual(cb.window(), { requests: 0, errors: 0 });
  });

  it('rejects while open, then admits exactly one probe after the cool-down', () => {
    const b = breaker();
    b.clock.t = 1_000;
    trip(b);
    assert.equal(b.cb.allow(), false);
    assert.equal(b.cb.retryAfterMs(), 5_000);
    b.clock.t = 5_999;
    assert.equal(b.cb.allow(), false);
    assert.equal(b.cb.retryAfterMs(), 1);
    b.clock.t = 6_000;
    assert.equal(b.cb.retryAfterMs(), 0);
    assert.equal(b.cb.state, 'half_open');
    assert.equal(b.cb.allow(), true);
    assert.equal(b.cb.allow(), false);
    assert.equal(b.cb.allow(), false);
  });

  it('probe success closes with a cleared window', () => {
    const b = breaker();
    trip(b);
    b.clock.t = 5_000;
    assert.equal(b.cb.allow(), true);
    b.cb.record(true);
    assert.equal(b.cb.state, 'closed');
    assert.deepEqual(b.cb.window(), { requests: 0, errors: 0 });
    assert.equal(b.cb.allow(), true);
    assert.equal(b.cb.allow(), true);
  });

  it('probe failure reopens with a fresh cool-down', () => {
    const b = breaker();
    trip(b);
    b.clock.t = 5_000;
    assert.equal(b.cb.allow(), true);
    b.clock.t = 5_200;
    b.cb.record(false);
    assert.equal(b.cb.state, 'open');
    assert.equal(b.cb.retryAfterMs(), 5_000);
    b.clock.t = 10_199;
    assert.equal(b.cb.allow(), false);
    b.clock.t = 10_200;
    assert.equal(b.cb.allow(), true);
  });

  it('an abandoned probe is replaced after the cool-down', () => {
    const b = breaker();
    trip(b);
    b.clock.t = 5_000;
    assert.equal(b.cb.allow(), true);
    b.clock.t = 7_000;
    assert.equal(b.cb.allow(), false);
    assert.equal(b.cb.retryAfterMs(), 3_000);
    b.clock.t = 10_000;
    assert.equal(b.cb.allow(), true);
    assert.equal(b.cb.allow(), false);
    assert.equal(b.cb.state, 'half_open');
  });

  it('reports every transition to onChange', () => {
    const b = breaker();
    trip(b);
    b.clock.t = 5_000;
    b.cb.allow();
    b.cb.record(false);
    b.clock.t = 10_000;
    b.cb.allow();
    b.cb.record(true);
    assert.deepEqual(b.changes, [
      ['closed', 'open', 'error rate 1.00 over 10 requests in 10000 ms'],
      ['open', 'half_open', 'cool-down elapsed'],
      ['half_open', 'open', 'probe failed'],
      ['open', 'half_open', 'cool-down elapsed'],
      ['half_open', 'closed', 'probe succeeded'],
    ]);
  });

  it('ignores late outcomes while open, and half-open outcomes with no probe out', () => {
    const b = breaker();
    trip(b);
    feed(b.cb, 50, 50);
    assert.equal(b.cb.state, 'open');
    b.clock.t = 5_000;
    b.cb.record(true); // late result, no probe admitted yet
    assert.equal(b.cb.state, 'half_open');
    assert.equal(b.cb.allow(), true);
    b.cb.record(true);
    assert.equal(b.cb.state, 'closed');
    assert.equal(b.changes.length, 3);
  });
});

function t(dtype: V2Datatype, shape: number[], values: ArrayLike<number | bigint> | string[]): Tensor {
  const info = DTYPES[dtype];
  if (info.array === null) return { dtype: info, shape, data: (values as string[]).map((x) => new Uint8Array(Buffer.from(x))) };
  const data = new info.array(values.length);
  for (let i = 0; i < values.length; i++) (data as unknown as Array<number | bigint>)[i] = (values as ArrayLike<number | bigint>)[i]!;
  return { dtype: info, shape, data };
}
const out = (name: string, tensor: Tensor) => ({ name, tensor });
const near = (a: number | null, b: number): void => assert.ok(a !== null && Math.abs(a - b) < 1e-6, `${a} vs ${b}`);

describe('compareOutputs', () => {
  it('identical outputs: 0 diff, full agreement', () => {
    const p = [out('probs', t('FP32', [2, 3], [0.1, 0.7, 0.2, 0.5, 0.3, 0.2])), out('label', t('BYTES', [2], ['cat', 'dog']))];
    const r = compareOutputs(p, p);
    assert.deepEqual(r, { maxAbsDiff: 0, agreement: 1, rows: 2, mismatches: [] });
  });

  it('known differences and argmax disagreement in k of n rows', () => {
    const p = t('FP32', [4, 3], [0.1, 0.8, 0.1, 0.6, 0.3, 0.1, 0.2, 0.2, 0.6, 0.3, 0.3, 0.4]);
    const s = t('FP32', [4, 3], [0.1, 0.7, 0.2, 0.2, 0.7, 0.1, 0.2, 0.2, 0.6, 0.5, 0.2, 0.3]);
    const r = compareOutputs([out('probs', p)], [out('probs', s)]);
    near(r.maxAbsDiff, 0.4);
    assert.equal(r.agreement, 2 / 4);
    assert.equal(r.rows, 4);
  });

  it('ties take the first maximum', () => {
    const r = compareOutputs([out('y', t('FP64', [1, 3], [1, 1, 0]))], [out('y', t('FP64', [1, 3], [1, 1, 0.5]))]);
    assert.equal(r.agreement, 1);
    near(r.maxAbsDiff, 0.5);
  });

  it('[n,1] outputs decide by threshold', () => {
    const p = out('score', t('FP32', [4, 1], [0.2, 0.6, 0.55, 0.9]));
    const s = out('score', t('FP32', [4, 1], [0.3, 0.4, 0.65, 0.8]));
    assert.equal(compareOutputs([p], [s]).agreement, 3 / 4);
    assert.equal(compareOutputs([p], [s], 0.25).agreement, 3 / 4); // row 0: 0.2 vs 0.3
    assert.equal(compareOutputs([p], [s], 0.58).agreement, 2 / 4); // rows 1 and 2
    assert.equal(compareOutputs([p], [s], 0.1).agreement, 1);
  });

  it('FP16 against FP32, INT64, BOOL', () => {
    const half = t('FP16', [2, 2], [1, 0.5, -2, 3].map(toHalfBits));
    const single = t('FP32', [2, 2], [1, 0.25, -2, 3.5]);
    const r = compareOutputs([out('x', single)], [out('x', half)]);
    assert.equal(r.maxAbsDiff, 0.5);
    assert.equal(r.agreement, 1);
    const i64 = compareOutputs([out('ids', t('INT64', [3], [1n, 5n, -7n]))], [out('ids', t('INT64', [3], [1n, 2n, -7n]))]);
    assert.equal(i64.maxAbsDiff, 3);
    assert.equal(i64.agreement, 1); // all three on the same side of 0.5
    const b = compareOutputs([out('m', t('BOOL', [3, 1], [1, 0, 1]))], [out('m', t('BOOL', [3, 1], [1, 1, 255]))]);
    assert.equal(b.maxAbsDiff, 1);
    assert.equal(b.agreement, 2 / 3);
  });

  it('BYTES rows compare by string equality', () => {
    const p = t('BYTES', [3, 2], ['a', 'b', 'c', 'd', 'e', 'f']);
    const s = t('BYTES', [3, 2], ['a', 'b', 'c', 'x', 'e', 'f']);
    const r = compareOutputs([out('tok', p)], [out('tok', s)]);
    assert.equal(r.maxAbsDiff, null);
    assert.equal(r.agreement, 2 / 3);
    assert.equal(r.rows, 3);
  });

  it('reports shape, dtype kind and missing outputs; agreement pools the rest', () => {
    const p = [
      out('probabilities', t('FP32', [4, 3], new Array(12).fill(0))),
      out('label', t('BYTES', [2], ['a', 'b'])),
      out('only_primary', t('FP32', [1], [1])),
      out('score', t('FP32', [2, 1], [0.9, 0.1])),
    ];
    const sh = [
      out('probabilities', t('FP32', [4, 2], new Array(8).fill(0))),
      out('label', t('INT32', [2], [1, 2])),
      out('score', t('FP32', [2, 1], [0.8, 0.7])),
      out('only_shadow', t('FP32', [1], [1])),
    ];
    const r = compareOutputs(p, sh);
    assert.deepEqual(r.mismatches, [
      'probabilities: shape [4,3] vs [4,2]',
      'label: dtype BYTES vs INT32',
      'only_primary: missing in shadow',
      'only_shadow: missing in primary',
    ]);
    near(r.maxAbsDiff, 0.6);
    assert.equal(r.agreement, 1 / 2);
    assert.equal(r.rows, 2);
  });

  it('nothing comparable: nulls', () => {
    const r = compareOutputs([out('a', t('FP32', [1], [1]))], [out('b', t('FP32', [1], [1]))]);
    assert.deepEqual(r, { maxAbsDiff: null, agreement: null, rows: 0, mismatches: ['a: missing in shadow', 'b: missing in primary'] });
  });

  it('NaN: one side → Infinity, both → equal', () => {
    const both = compareOutputs([out('x', t('FP32', [1, 2], [NaN, 1]))], [out('x', t('FP32', [1, 2], [NaN, 1]))]);
    assert.equal(both.maxAbsDiff, 0);
    assert.equal(both.agreement, 1);
    const one = compareOutputs([out('x', t('FP32', [1, 2], [NaN, 1]))], [out('x', t('FP32', [1, 2], [0, 1]))]);
    assert.equal(one.maxAbsDiff, Infinity);
    const half = compareOutputs([out('x', t('FP16', [2], [0x7e00, 0x3c00]))], [out('x', t('FP32', [2], [NaN, 2]))]);
    assert.equal(half.maxAbsDiff, 1);
    const inf = compareOutputs([out('x', t('FP32', [2], [Infinity, -Infinity]))], [out('x', t('FP32', [2], [Infinity, -Infinity]))]);
    assert.equal(inf.maxAbsDiff, 0);
  });
});

describe('WindowStats', () => {
  it('counts, error rate, mean and nearest-rank quantiles', () => {
    const w = new WindowStats({ now: () => 0 });
    for (let i = 1000; i >= 1; i--) w.record('a', i % 10 !== 0, i);
    const s = w.snapshot('a');
    assert.equal(s.requests, 1000);
    assert.equal(s.errors, 100);
    assert.equal(s.errorRate, 0.1);
    assert.equal(s.p50Ms, 500);
    assert.equal(s.p99Ms, 990);
    assert.equal(s.meanMs, 500.5);
    assert.deepEqual(w.snapshot('nobody'), { requests: 0, errors: 0, errorRate: null, p50Ms: null, p99Ms: null, meanMs: null });
    assert.deepEqual(w.keys(), ['a']);
  });

  it('expires old buckets and their latencies', () => {
    const clock = { t: 0 };
    const w = new WindowStats({ windowMs: 10_000, buckets: 10, now: () => clock.t });
    w.record('a', false, 100);
    clock.t = 5_000;
    w.record('a', true, 10);
    w.record('b', true, 1);
    let s = w.snapshot('a');
    assert.deepEqual([s.requests, s.errors, s.p99Ms, s.meanMs], [2, 1, 100, 55]);
    clock.t = 10_000; // the first bucket left the window
    s = w.snapshot('a');
    assert.deepEqual([s.requests, s.errors, s.errorRate, s.p50Ms, s.p99Ms, s.meanMs], [1, 0, 0, 10, 10, 10]);
    clock.t = 60_000;
    s = w.snapshot('a');
    assert.deepEqual([s.requests, s.errorRate, s.p50Ms, s.meanMs], [0, null, null, null]);
    w.record('a', true, 7);
    assert.equal(w.snapshot('a').p50Ms, 7);
    w.reset('a');
    assert.deepEqual(w.keys(), ['b']);
    w.reset();
    assert.deepEqual(w.keys(), []);
  });

  it('keeps at most `samples` latencies: the most recent', () => {
    const w = new WindowStats({ samples: 100, now: () => 0 });
    for (let i = 1; i <= 1000; i++) w.record('a', true, i);
    const s = w.snapshot('a');
    assert.equal(s.requests, 1000);
    assert.equal(s.p50Ms, 950); // samples 901..1000
    assert.equal(s.p99Ms, 999);
    assert.equal(s.meanMs, 500.5); // mean is over every request in the window
  });
});

describe('ShadowStats', () => {
  it('aggregates outcomes, differences, agreement and latency', () => {
    const st = new ShadowStats();
    assert.deepEqual(st.snapshot(), {
      copies: 0,
      ok: 0,
      errors: 0,
      timeouts: 0,
      dropped: 0,
      meanMaxAbsDiff: null,
      maxAbsDiff: null,
      agreement: null,
      p50Ms: null,
      p99Ms: null,
      mismatches: 0,
    });
    st.record('ok', 10, { maxAbsDiff: 0.1, agreement: 1, rows: 3, mismatches: [] });
    st.record('ok', 20, { maxAbsDiff: 0.3, agreement: 0, rows: 1, mismatches: ['x: missing in shadow'] });
    st.record('ok', 30, { maxAbsDiff: null, agreement: null, rows: 0, mismatches: ['y: missing in primary'] });
    st.record('error', 40, null);
    st.record('timeout', null, null);
    st.record('dropped', null, null);
    const s = st.snapshot();
    assert.deepEqual([s.copies, s.ok, s.errors, s.timeouts, s.dropped, s.mismatches], [6, 3, 1, 1, 1, 2]);
    near(s.meanMaxAbsDiff, 0.2);
    assert.equal(s.maxAbsDiff, 0.3);
    assert.equal(s.agreement, 3 / 4);
    assert.equal(s.p50Ms, 20);
    assert.equal(s.p99Ms, 40);
  });

  it('latency ring is bounded', () => {
    const st = new ShadowStats({ samples: 10 });
    for (let i = 1; i <= 100; i++) st.record('ok', i, null);
    assert.equal(st.snapshot().p50Ms, 95);
    assert.equal(st.snapshot().copies, 100);
  });
});
