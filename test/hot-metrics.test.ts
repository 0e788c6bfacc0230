import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Counter, Histogram, Registry } from 'prom-client';
import { HotCounter, HotHistogram } from '../src/hot-metrics.js';

/** The same metrics twice: prom-client's own in one registry, the hot ones in another. */
function pair(): { plain: Registry; hot: Registry; h: Histogram; hh: HotHistogram; c: Counter; hc: HotCounter } {
  const plain = new Registry();
  const hot = new Registry();
  const buckets = [0.001, 0.01, 0.1, 1];
  return {
    plain,
    hot,
    h: new Histogram({ name: 'x_seconds', help: 'latency', labelNames: ['model', 'version'], buckets, registers: [plain] }),
    hh: new HotHistogram({ name: 'x_seconds', help: 'latency', labelNames: ['model', 'version'], buckets, registers: [hot] }),
    c: new Counter({ name: 'y_total', help: 'count', labelNames: ['model'], registers: [plain] }),
    hc: new HotCounter({ name: 'y_total', help: 'count', labelNames: ['model'], registers: [hot] }),
  };
}

describe('hot metrics', () => {
  it('export exactly what prom-client exports for the same observations (text and JSON)', async () => {
    const m = pair();
    for (const v of [0.0005, 0.001, 0.05, 3, 0.2, 1]) {
      m.h.observe({ model: 'a"b\\', version: '1' }, v);
      m.hh.child('a"b\\', '1').observe(v);
    }
    m.h.observe({ model: 'c', version: '2' }, 0.01);
    m.hh.child('c', '2').observe(0.01);
    m.c.inc({ model: 'm' }, 2.5);
    m.hc.child('m').inc(2.5);
    m.c.inc({ model: 'n' });
    m.hc.child('n').inc();
    const text = await m.hot.metrics();
    assert.equal(text, await m.plain.metrics());
    assert.match(text, /^x_seconds_bucket\{le="0\.1",model="a\\"b\\\\",version="1"\} 3$/m);
    assert.match(text, /^x_seconds_count\{model="c",version="2"\} 1$/m);
    assert.deepEqual(await m.hot.getMetricsAsJSON(), await m.plain.getMetricsAsJSON());
  });

  it('a child is one series: the same object for the same label values', () => {
    const m = pair();
    assert.equal(m.hh.child('a', '1'), m.hh.child('a', '1'));
    assert.notEqual(m.hh.child('a', '1'), m.hh.child('a', '2'));
    assert.throws(() => m.hh.child('a'), /x_seconds: expected 2 label values \(model, version\), got 1/);
  });

  it('ignore NaN and non-positive increments instead of throwing', async () => {
    const m = pair();
    m.hc.child('m').inc(NaN);
    m.hc.child('m').inc(-1);
    m.hc.child('m').inc(0);
    m.hh.child('a', '1').observe(NaN);
    const text = await m.hot.metrics();
    assert.match(text, /^y_total\{model="m"\} 0$/m);
    assert.match(text, /^x_seconds_count\{model="a",version="1"\} 0$/m);
  });

  it('reset zeroes the series and children cached by callers keep counting', async () => {
    const m = pair();
    const child = m.hh.child('a', '1');
    child.observe(0.5);
    m.hot.resetMetrics();
    assert.match(await m.hot.metrics(), /^x_seconds_count\{model="a",version="1"\} 0$/m);
    child.observe(0.05);
    const text = await m.hot.metrics();
    assert.match(text, /^x_seconds_count\{model="a",version="1"\} 1$/m);
    assert.match(text, /^x_seconds_bucket\{le="0\.01",model="a",version="1"\} 0$/m);
    assert.match(text, /^x_seconds_bucket\{le="0\.1",model="a",version="1"\} 1$/m);
  });
});
