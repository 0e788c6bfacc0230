import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, it } from 'node:test';
import { failsWarmup, mlp, slow } from '../tools/onnx/zoo.js';
import { onnxRuntime } from '../src/runtimes/onnx/index.js';
import type { Runtime } from '../src/runtimes/types.js';
import { floats, startSwitchyard } from './helpers.js';

const slowReq = (rows: number) => JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [rows, 512], data: floats(rows * 512, rows) }] });
/** One worker instance, no batching across requests: each request occupies the instance for a while. */
const SLOW = { versions: { 1: slow(48) }, config: { instances: 1, instance_mode: 'worker', max_batch_size: 64, max_queue_size: 2 } };

describe('model lifecycle', () => {
  it('a version is ready only after warmup succeeded; a failing warmup leaves it UNAVAILABLE with the reason', async () => {
    const srv = await startSwitchyard({ broken: { versions: { 1: failsWarmup() } }, mlp: { versions: { 1: mlp() } } });
    try {
      const app = srv.sy.app;
      const ready = await app.inject('/v2/models/broken/ready');
      assert.equal(ready.statusCode, 503);
      assert.equal(ready.json().state, 'UNAVAILABLE');
      assert.match(ready.json().reason, /warmup failed/);
      assert.equal((await app.inject('/v2/health/ready')).statusCode, 503, 'server not ready while a model is not');
      assert.equal((await app.inject('/v2/models/mlp/ready')).statusCode, 200);
      const r = await app.inject({
        method: 'POST',
        url: '/v2/models/broken/infer',
        payload: { inputs: [{ name: 'x', datatype: 'FP32', shape: [4], data: [1, 2, 3, 4] }] },
      });
      assert.equal(r.statusCode, 503);
      assert.equal(r.headers['retry-after'], '1');
      assert.match(r.json().error, /not ready \(UNAVAILABLE: warmup failed/);
    } finally {
      await srv.close();
    }
  });
  it('applies version policies: latest N (default 1), all, specific', async () => {
    const v = { 1: mlp(1), 2: mlp(2), 3: mlp(3) };
    const srv = await startSwitchyard({
      dflt: { versions: v },
      latest2: { versions: v, config: { version_policy: { latest: { num_versions: 2 } } } },
      every: { versions: v, config: { version_policy: { all: {} } } },
      pick: { versions: v, config: { version_policy: { specific: { versions: [1, 3] } } } },
    });
    try {
      const versions = async (m: string): Promise<string[]> => (await srv.sy.app.inject(`/v2/models/${m}`)).json().versions;
      assert.deepEqual(await versions('dflt'), ['3']);
      assert.deepEqual(await versions('latest2'), ['2', '3']);
      assert.deepEqual(await versions('every'), ['1', '2', '3']);
      assert.deepEqual(await versions('pick'), ['1', '3']);
      assert.equal((await srv.sy.app.inject('/v2/models/pick/versions/2')).statusCode, 404);
    } finally {
      await srv.close();
    }
  });
  it('an invalid config.json leaves the model UNAVAILABLE naming the bad key', async () => {
    const srv = await startSwitchyard({ bad: { versions: { 1: mlp() }, config: { max_batch_sise: 8 } } });
    try {
      const r = await srv.sy.app.inject('/v2/models/bad/ready');
      assert.equal(r.statusCode, 503);
      assert.match(r.json().reason, /config\.json: .*max_batch_sise/);
    } finally {
      await srv.close();
    }
  });
});

describe('queue limits and timeouts (real onnxruntime)', () => {
  it('a full queue answers 503 with Retry-After; admitted requests still succeed', async () => {
    const srv = await startSwitchyard({ slow: SLOW });
    try {
      const rs = await Promise.all(
        Array.from({ length: 12 }, () =>
          srv.sy.app.inject({ method: 'POST', url: '/v2/models/slow/infer', payload: slowReq(16), headers: { 'content-type': 'application/json' } }),
        ),
      );
      const ok = rs.filter((r) => r.statusCode === 200);
      const full = rs.filter((r) => r.statusCode === 503);
      assert.ok(full.length > 0, 'some requests were rejected');
      assert.ok(ok.length >= 3, `running + 2 queued succeed (got ${ok.length})`);
      assert.equal(ok.length + full.length, 12);
      for (const r of full) {
        assert.equal(r.headers['retry-after'], '1');
        assert.match(r.json().error, /queue is full \(2 requests waiting\)/);
      }
      for (const r of ok) assert.deepEqual(r.json().outputs[0].shape, [16, 512]);
      const metrics = (await srv.sy.app.inject('/metrics')).body;
      assert.match(metrics, new RegExp(`switchyard_inference_failure_total\\{model="slow",version="1",reason="queue_full"\\} ${full.length}`));
    } finally {
      await srv.close();
    }
  });
  it('a request that outlives its timeout (parameter in µs, or header in ms) gets 504 naming the timeout', async () => {
    const srv = await startSwitchyard({ slow: SLOW });
    try {
      const app = srv.sy.app;
      const blocker = app.inject({ method: 'POST', url: '/v2/models/slow/infer', payload: slowReq(256), headers: { 'content-type': 'application/json' } });
      // Wait until the blocker occupies the only instance, so the timed requests must queue behind it.
      const batcher = srv.sy.manager.resolve('slow').batcher!;
      while (batcher.running === 0) await new Promise((r) => setTimeout(r, 1));
      const viaParam = app.inject({
        method: 'POST',
        url: '/v2/models/slow/infer',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify({ ...JSON.parse(slowReq(1)), parameters: { timeout: 1000 } }),
      });
      const viaHeader = app.inject({
        method: 'POST',
        url: '/v2/models/slow/infer',
        headers: { 'content-type': 'application/json', 'x-request-timeout-ms': '1' },
        payload: slowReq(1),
      });
      const [b, p, h] = await Promise.all([blocker, viaParam, viaHeader]);
      assert.equal(b.statusCode, 200);
      for (const r of [p, h]) {
        assert.equal(r.statusCode, 504, r.body);
        assert.match(r.json().error, /timed out after 1 ms/);
      }
    } finally {
      await srv.close();
    }
  });
  it('a client that disconnects while queued is dropped and never runs', async () => {
    const srv = await startSwitchyard({ slow: SLOW }, { listen: true });
    try {
      const { port } = new URL(srv.url);
      const blocker = fetch(`${srv.url}/v2/models/slow/infer`, { method: 'POST', body: slowReq(256), headers: { 'content-type': 'application/json' } });
      const batcher = srv.sy.manager.resolve('slow').batcher!;
      while (batcher.running === 0) await new Promise((r) => setTimeout(r, 1));
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v2/models/slow/infer', headers: { 'content-type': 'application/json' } });
      req.on('error', () => {});
      req.end(slowReq(3));
      while (batcher.queued === 0) await new Promise((r) => setTimeout(r, 1));
      req.destroy();
      assert.equal((await blocker).status, 200);
      await new Promise((r) => setTimeout(r, 50));
      const metrics = await (await fetch(`${srv.url}/metrics`)).text();
      assert.match(metrics, /switchyard_inference_failure_total\{model="slow",version="1",reason="cancelled"\} 1/);
      const rows = Number(/switchyard_batch_size_rows_sum\{model="slow",version="1"\} (\d+)/.exec(metrics)?.[1]);
      assert.equal(rows, 256, 'only the blocker ran; the abandoned 3 rows never executed');
    } finally {
      await srv.close();
    }
  });
});

describe('instance mode auto', () => {
  it('keeps a fast model on the main thread while a slow one loads at the same time (trials do not overlap)', async () => {
    // The "heavy" model's main-thread runs block the event loop for 30 ms each (far over the 1 ms budget), as a
    // large model would; "light" is the small MLP (~0.1 ms a batch). Both load together at startup. Before trials
    // were serialized, light's timing waited behind heavy's blocking runs and light went to worker threads too.
    const blocking: Runtime = {
      name: onnxRuntime.name,
      inspect: (p) => onnxRuntime.inspect(p),
      async load(path, options) {
        const loaded = await onnxRuntime.load(path, options);
        // (the artifact path is the registry's, so the heavy model is told apart by its input: slow() takes "x")
        if (!options.inline || loaded.signature.inputs[0]?.name !== 'x') return loaded;
        const instances = loaded.instances.map((i) => ({
          get inflight() {
            return i.inflight;
          },
          run: (inputs: Parameters<typeof i.run>[0]) => {
            const until = performance.now() + 30;
            while (performance.now() < until) {
              /* a slow synchronous model */
            }
            return i.run(inputs);
          },
          dispose: () => i.dispose(),
        }));
        return { ...loaded, instances };
      },
    };
    const srv = await startSwitchyard({ heavy: { versions: { 1: slow(4) } }, light: { versions: { 1: mlp(4) } } }, { runtime: blocking });
    try {
      assert.equal(srv.sy.manager.resolve('light').loaded?.inline, true, 'the fast model runs on the main thread');
      assert.equal(srv.sy.manager.resolve('heavy').loaded?.inline, false, 'the slow one moved to worker threads');
    } finally {
      await srv.close();
    }
  });
});
