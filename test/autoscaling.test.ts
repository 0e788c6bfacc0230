/**
 * Autoscaling signals (src/monitoring/autoscaling.ts): the windowed ratio on explicit times; on a live server,
 * per-version series that exist from the load on (before any request, and for a version pushed while
 * running), queue time per request equal to Triton's formula over the exported counters, and utilization /
 * saturation over an injected clock.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { channels, type BatchEvent, type RequestEvent } from '../src/events.js';
import { SAMPLE_EVERY_MS, WINDOW_MS, WindowedRatio } from '../src/monitoring/autoscaling.js';
import { createMetrics } from '../src/monitoring/metrics.js';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

/** The value of one exposition line `name{labels} value` (labels as printed), or undefined. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  return undefined;
}

describe('WindowedRatio', () => {
  it('is Δnum / Δden since the newest sample at least a window old', () => {
    const w = new WindowedRatio();
    assert.equal(w.read(0, 0, 0), 0, 'nothing yet: 0, not NaN');
    assert.equal(w.read(1000, 2, 4), 0.5, 'from start-up until a sample is a window old');
    assert.equal(w.read(1500, 3, 5), 0.6, 'a read within SAMPLE_EVERY_MS still answers (against the same base)');
    assert.equal(w.read(WINDOW_MS + 1000, 13, 10), (13 - 2) / (10 - 4), 'the sample at 1000 is now a window old: it is the base');
    assert.equal(w.read(3 * WINDOW_MS, 13, 10), 0, 'nothing happened during the window: 0');
    assert.equal(w.read(3 * WINDOW_MS + SAMPLE_EVERY_MS, 14, 12), 0.5);
  });

  it('read often, covers between one window and one window plus a sample interval', () => {
    const w = new WindowedRatio();
    // den grows 1 per ms from 0; num grows 1 per ms from t = 100 s.
    const num = (t: number): number => Math.max(0, t - 100_000);
    let last = 0;
    for (let t = 0; t <= 100_000 + WINDOW_MS / 2; t += 7) last = w.read(t, num(t), t);
    // Half the window after the change: Δnum = W/2, Δden within [W, W + SAMPLE_EVERY_MS].
    assert.ok(last <= 0.5 + 1e-9 && last >= WINDOW_MS / 2 / (WINDOW_MS + SAMPLE_EVERY_MS), `ratio ${last}`);
    for (let t = 100_000 + WINDOW_MS / 2; t <= 100_000 + WINDOW_MS + 2 * SAMPLE_EVERY_MS; t += 7) last = w.read(t, num(t), t);
    assert.equal(last, 1, 'a window after the change, only the new rate counts');
  });
});

describe('autoscaling gauges on a live server', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startSwitchyard({ mlp: { versions: { 1: mlp() } } });
  });
  after(() => srv.close());
  const scrape = async (): Promise<string> => (await srv.sy.app.inject('/metrics')).body;
  const infer = (rows: number, seed: number) =>
    srv.sy.app.inject({
      method: 'POST',
      url: '/v2/models/mlp/infer',
      payload: { inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 64], data: floats(64 * rows, seed) }] },
    });

  it('exports every per-version series at zero from the load on, before the first request', async () => {
    const text = await scrape();
    const v1 = '{model="mlp",version="1"}';
    for (const s of [
      `switchyard_inference_success_total${v1}`,
      `switchyard_inference_request_duration_seconds_count${v1}`,
      `switchyard_inference_queue_duration_seconds_sum${v1}`,
      `switchyard_inference_compute_duration_seconds_count${v1}`,
      `switchyard_batch_size_rows_count${v1}`,
      `switchyard_batch_size_requests_count${v1}`,
      `switchyard_instance_busy_seconds_total${v1}`,
      `switchyard_queue_time_per_request_seconds${v1}`,
      `switchyard_instance_utilization${v1}`,
      `switchyard_queue_depth${v1}`,
      `switchyard_inflight_requests${v1}`,
    ])
      assert.equal(sample(text, s), 0, `${s} should be 0 before any request`);
    assert.equal(sample(text, 'switchyard_saturation'), 0);
    assert.ok((sample(text, `switchyard_model_instances${v1}`) ?? 0) >= 1);
  });

  it('creates the series of a version pushed while running when it loads', async () => {
    await srv.sy.registry.pushVersion('mlp', Buffer.from(mlp(11)), {}, 'test');
    await srv.sy.manager.settled();
    assert.equal(srv.sy.manager.versionsOf('mlp').find((v) => v.label === '2')?.state, 'READY');
    const text = await scrape();
    const v2 = '{model="mlp",version="2"}';
    assert.equal(sample(text, `switchyard_inference_request_duration_seconds_count${v2}`), 0);
    assert.equal(sample(text, `switchyard_queue_time_per_request_seconds${v2}`), 0);
  });

  it("queue time per request is Triton's formula over the exported counters", async () => {
    const sent = await Promise.all(Array.from({ length: 12 }, (_, i) => infer(1 + (i % 3), i)));
    for (const r of sent) assert.equal(r.statusCode, 200);
    const text = await scrape();
    let sum = 0;
    let count = 0;
    for (const v of ['1', '2']) {
      const labels = `{model="mlp",version="${v}"}`;
      const s = sample(text, `switchyard_inference_queue_duration_seconds_sum${labels}`) ?? NaN;
      const n = sample(text, `switchyard_inference_queue_duration_seconds_count${labels}`) ?? NaN;
      const gauge = sample(text, `switchyard_queue_time_per_request_seconds${labels}`) ?? NaN;
      // The first scrape's base is start-up, so the window holds every request so far.
      assert.ok(Math.abs(gauge - (n > 0 ? s / n : 0)) < 1e-12, `v${v}: gauge ${gauge} vs ${s}/${n}`);
      sum += n;
      count += sample(text, `switchyard_inference_success_total${labels}`) ?? NaN;
    }
    assert.equal(sum, 12);
    assert.equal(count, 12);
    assert.ok((sample(text, 'switchyard_instance_busy_seconds_total{model="mlp",version="2"}') ?? 0) > 0, 'the routed version was busy');
  });

  it('utilization and saturation over an injected clock; queue time per request slides with the window', async () => {
    // The version served now (pushing v2 retired v1): the only one a new registry sees loaded.
    const served = srv.sy.manager.versionsOf('mlp').find((v) => v.ready)!;
    const labels = `{model="mlp",version="${served.label}"}`;
    let now = 0;
    const m = createMetrics(srv.sy.manager, { defaultMetrics: false, now: () => now });
    try {
      const read = async () => {
        const text = await m.registry.metrics();
        return {
          util: sample(text, `switchyard_instance_utilization${labels}`),
          sat: sample(text, 'switchyard_saturation'),
          qt: sample(text, `switchyard_queue_time_per_request_seconds${labels}`),
        };
      };
      assert.deepEqual(await read(), { util: 0, sat: 0, qt: 0 });
      const instances = served.loaded!.instances.length;
      // A quarter of the instances' capacity over the next second, in four batches.
      const batch = { model: 'mlp', version: served.label, rows: 4, requests: 2, computeMs: (instances * 1000) / 16 } satisfies BatchEvent;
      for (let i = 0; i < 4; i++) channels.batch.publish(batch);
      const request = (queueMs: number): RequestEvent => ({
        origin: m,
        model: 'mlp',
        version: served.label,
        versionNumber: served.version,
        tenant: '',
        arm: null,
        ok: true,
        reason: null,
        rows: 1,
        cached: false,
        totalMs: queueMs + 1,
        queueMs,
        computeMs: 1,
        computeShareMs: 1,
        keyId: null,
      });
      for (let i = 0; i < 4; i++) channels.request.publish(request(10));
      now = 1000;
      const r1 = await read();
      assert.ok(Math.abs(r1.util! - 0.25) < 1e-9, `utilization ${r1.util}`);
      assert.ok(Math.abs(r1.sat! - 0.25) < 1e-9, `saturation ${r1.sat}`);
      assert.ok(Math.abs(r1.qt! - 0.01) < 1e-12, `queue time ${r1.qt}`);
      // Over a whole window later: only what happened since the sample at 1000 counts.
      for (let i = 0; i < 2; i++) channels.request.publish(request(40));
      for (let i = 0; i < 8; i++) channels.batch.publish({ ...batch, computeMs: (instances * 1000 * WINDOW_MS) / 1000 });
      now = 1000 + WINDOW_MS;
      const r2 = await read();
      assert.ok(Math.abs(r2.qt! - 0.04) < 1e-12, `queue time ${r2.qt}`);
      assert.equal(r2.util, 1, 'busy beyond the window is capped at 1');
      assert.equal(r2.sat, 1);
    } finally {
      m.close();
    }
  });
});
