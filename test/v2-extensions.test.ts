/**
 * Triton's HTTP extensions beside V2: model statistics, model configuration, model repository (index, load,
 * unload, with auth) and classification. Real onnxruntime, embedded SQLite.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { failsWarmup, fixedAffine, mlp } from '../tools/onnx/zoo.js';
import { identity, startWithFiles } from './ext-helpers.js';
import { floats, type TestServer } from './helpers.js';

type Json = any; // response bodies read field by field

let srv: TestServer;
before(async () => {
  srv = await startWithFiles(
    {
      // One instance, no queue delay: sequential requests run as batches of exactly their rows.
      mlp: {
        versions: { 1: mlp(7), 2: mlp(8) },
        config: { version_policy: { all: {} }, instances: 1, instance_mode: 'worker', preferred_batch_sizes: [4, 8], max_queue_delay_us: 100 },
      },
      fixed_affine: { versions: { 1: fixedAffine() } },
      scores: { versions: { 1: identity(4) } },
      plain: { versions: { 1: identity(4) }, config: { labels: [] } },
      broken: { versions: { 1: failsWarmup() } },
    },
    { 'scores/labels.txt': 'cat\ndog\nbird\nfish\n' },
  );
});
after(() => srv.close());

const get = async (url: string): Promise<{ status: number; body: Json }> => {
  const r = await srv.sy.app.inject(url);
  return { status: r.statusCode, body: r.json() };
};
const post = async (url: string, payload?: unknown): Promise<{ status: number; body: Json }> => {
  const r = await srv.sy.app.inject({ method: 'POST', url, ...(payload === undefined ? {} : { payload: payload as Json }) });
  return { status: r.statusCode, body: r.body ? r.json() : {} };
};
const mlpBody = (rows: number) => ({ inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 64], data: floats(rows * 64, rows) }] });

describe('server metadata', () => {
  it('lists the implemented extensions', async () => {
    const { body } = await get('/v2');
    for (const e of ['binary_tensor_data', 'parameters', 'statistics', 'model_repository', 'model_configuration', 'classification'])
      assert.ok(body.extensions.includes(e), e);
  });
});

describe('model statistics extension', () => {
  it("counts known requests per version in Triton's shape, with batch_stats per batch size", async () => {
    const zero = (await get('/v2/models/mlp/versions/1/stats')).body;
    assert.equal(zero.model_stats.length, 1);
    const z = zero.model_stats[0];
    assert.deepEqual(
      { name: z.name, version: z.version, last: z.last_inference, n: z.inference_count, e: z.execution_count, b: z.batch_stats },
      { name: 'mlp', version: '1', last: 0, n: 0, e: 0, b: [] },
    );
    for (const key of ['success', 'fail', 'queue', 'compute_input', 'compute_infer', 'compute_output', 'cache_hit', 'cache_miss']) {
      assert.deepEqual(z.inference_stats[key], { count: 0, ns: 0 }, key);
    }
    for (const rows of [1, 1, 3]) assert.equal((await post('/v2/models/mlp/versions/1/infer', mlpBody(rows))).status, 200);
    // A body that does not fit the signature counts as a failure of the version it was sent to.
    assert.equal(
      (await post('/v2/models/mlp/versions/1/infer', { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }] })).status,
      400,
    );
    const s = (await get('/v2/models/mlp/versions/1/stats')).body.model_stats[0];
    assert.equal(s.inference_count, 5);
    assert.equal(s.execution_count, 3);
    assert.equal(s.inference_stats.success.count, 3);
    assert.ok(s.inference_stats.success.ns > 0 && Number.isInteger(s.inference_stats.success.ns));
    assert.equal(s.inference_stats.fail.count, 1);
    assert.equal(s.inference_stats.queue.count, 3);
    assert.equal(s.inference_stats.compute_infer.count, 3);
    assert.ok(s.last_inference > 0);
    assert.deepEqual(
      s.batch_stats.map((b: Json) => [b.batch_size, b.compute_infer.count]),
      [
        [1, 2],
        [3, 1],
      ],
    );
    assert.ok(s.batch_stats[0].compute_infer.ns > 0);
    assert.deepEqual(s.batch_stats[0].compute_input, { count: 0, ns: 0 });

    const model = (await get('/v2/models/mlp/stats')).body.model_stats;
    assert.deepEqual(
      model.map((x: Json) => [x.version, x.inference_count]),
      [
        ['1', 5],
        ['2', 0],
      ],
    );
    const all = (await get('/v2/models/stats')).body.model_stats;
    assert.deepEqual([...new Set(all.map((x: Json) => x.name))], ['broken', 'fixed_affine', 'mlp', 'plain', 'scores']);
    assert.equal((await get('/v2/models/nope/stats')).status, 404);
    assert.equal((await get('/v2/models/mlp/versions/9/stats')).status, 404);
  });
});

describe('model configuration extension', () => {
  it('a batched model: dims without the batch dim, dynamic batching, instance group', async () => {
    const { status, body } = await get('/v2/models/mlp/config');
    assert.equal(status, 200);
    assert.equal(body.name, 'mlp');
    assert.equal(body.platform, 'onnxruntime_onnx');
    assert.equal(body.backend, 'onnxruntime');
    assert.equal(body.max_batch_size, 64);
    assert.deepEqual(body.input, [{ name: 'features', data_type: 'TYPE_FP32', dims: [64] }]);
    assert.deepEqual(body.output, [{ name: 'score', data_type: 'TYPE_FP32', dims: [1] }]);
    assert.deepEqual(body.version_policy, { all: {} });
    assert.deepEqual(body.dynamic_batching.preferred_batch_size, [4, 8]);
    assert.equal(body.dynamic_batching.max_queue_delay_microseconds, 100);
    assert.equal(body.dynamic_batching.default_queue_policy.max_queue_size, 1024);
    assert.deepEqual(body.instance_group, [{ name: 'mlp_0', kind: 'KIND_CPU', count: 1, gpus: [] }]);
    assert.deepEqual(body.model_warmup, []);
  });
  it('an unbatched model: full dims, no dynamic batching; one version; unknown → 404', async () => {
    const { body } = await get('/v2/models/fixed_affine/versions/1/config');
    assert.equal(body.max_batch_size, 0);
    assert.deepEqual(body.input, [{ name: 'x', data_type: 'TYPE_FP32', dims: [2, 3] }]);
    assert.equal(body.dynamic_batching, undefined);
    assert.equal((await get('/v2/models/nope/config')).status, 404);
    assert.equal((await get('/v2/models/broken/config')).status, 503);
  });
});

describe('model repository extension', () => {
  it('index lists every servable version with its state; unload releases residency; load makes it resident', async () => {
    const index = (await post('/v2/repository/index')).body as Json[];
    assert.deepEqual(
      index.find((e) => e.name === 'fixed_affine'),
      { name: 'fixed_affine', version: '1', state: 'READY', reason: '' },
    );
    const broken = index.find((e) => e.name === 'broken')!;
    assert.equal(broken.state, 'UNAVAILABLE');
    assert.match(broken.reason, /warmup failed/);
    const ready = (await post('/v2/repository/index', { ready: true })).body as Json[];
    assert.ok(ready.every((e) => e.state === 'READY') && !ready.some((e) => e.name === 'broken'));

    assert.equal((await post('/v2/repository/models/fixed_affine/unload')).status, 200);
    const mv = srv.sy.manager.resolve('fixed_affine');
    assert.equal(mv.state, 'UNLOADED');
    assert.equal(mv.loaded, null);
    const after = ((await post('/v2/repository/index', {})).body as Json[]).find((e) => e.name === 'fixed_affine');
    assert.deepEqual(after, { name: 'fixed_affine', version: '1', state: 'UNAVAILABLE', reason: 'unloaded (loads on the next request)' });
    assert.equal(srv.sy.inference.readiness('fixed_affine').ready, true, 'an unloaded version loads on demand: still ready');

    assert.equal((await post('/v2/repository/models/fixed_affine/load')).status, 200);
    assert.equal(mv.state, 'READY');
    // Unloaded again, a request loads it back (the model stays servable).
    await post('/v2/repository/models/fixed_affine/unload');
    const r = await post('/v2/models/fixed_affine/infer', { inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 3], data: [1, 2, 3, 4, 5, 6] }] });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.outputs[0].data, [3, 5, 7, 9, 11, 13]);
    assert.equal(mv.state, 'READY');
  });
  it('load of a version that fails answers with the reason; unknown models 404; load overrides are refused', async () => {
    const r = await post('/v2/repository/models/broken/load');
    assert.equal(r.status, 503);
    assert.match(r.body.error, /failed to load model "broken": version 1: warmup failed/);
    assert.equal((await post('/v2/repository/models/nope/load')).status, 404);
    assert.equal((await post('/v2/repository/models/nope/unload')).status, 404);
    const o = await post('/v2/repository/models/mlp/load', { parameters: { config: '{}' } });
    assert.equal(o.status, 400);
    assert.match(o.body.error, /not supported/);
  });
});

describe('classification extension', () => {
  const x = [0.1, 0.7, 0.05, 0.15, 3, 1, 2, 0];
  const ask = (model: string, count: unknown, binary = false) =>
    post(`/v2/models/${model}/infer`, {
      inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 4], data: x }],
      outputs: [{ name: 'y', parameters: { classification: count, ...(binary ? { binary_data: true } : {}) } }],
    });
  it('top-k "value:index:label" per row, labels from labels.txt beside the model', async () => {
    const r = await ask('scores', 2);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body.outputs[0], {
      name: 'y',
      datatype: 'BYTES',
      shape: [2, 2],
      data: ['0.700000:1:dog', '0.150000:3:fish', '3.000000:0:cat', '2.000000:2:bird'],
    });
  });
  it('without labels: "value:index"; an unbatched output is one row', async () => {
    const r = await ask('plain', 1);
    assert.deepEqual(r.body.outputs[0].data, ['0.700000:1', '3.000000:0']);
    const f = await post('/v2/models/fixed_affine/infer', {
      inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 3], data: [1, 9, 3, 4, 5, 6] }],
      outputs: [{ name: 'y', parameters: { classification: 3 } }],
    });
    assert.deepEqual(f.body.outputs[0], { name: 'y', datatype: 'BYTES', shape: [3], data: ['19.000000:1', '13.000000:5', '11.000000:4'] });
  });
  it('refuses a bad class count and one larger than the output', async () => {
    const bad = await ask('plain', 0);
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /classification" must be a positive integer/);
    const big = await ask('plain', 5);
    assert.equal(big.status, 400);
    assert.match(big.body.error, /asks for 5 classes but the output has 4 per row/);
  });
});

describe('extensions with authentication', () => {
  const ADMIN = 'test-platform-admin-key-0123456789';
  it("repository control needs the admin scope and the model's owner; listings show only visible models", async () => {
    const a = await startWithFiles(
      { 'acme.m': { versions: { 1: mlp(1) } }, 'beta.m': { versions: { 1: mlp(2) } } },
      {},
      { adminKey: ADMIN, authCacheMs: 60_000 },
    );
    try {
      const call = async (key: string, method: 'GET' | 'POST' | 'PUT', url: string, payload?: Json) => {
        const r = await a.sy.app.inject({ method, url, headers: { authorization: `Bearer ${key}` }, ...(payload === undefined ? {} : { payload }) });
        return { status: r.statusCode, body: r.body ? r.json() : {} };
      };
      for (const t of ['acme', 'beta']) {
        assert.equal((await call(ADMIN, 'POST', '/api/v1/tenants', { name: t, tier: 'standard' })).status, 201);
        assert.equal((await call(ADMIN, 'PUT', `/api/v1/models/${t}.m/owner`, { tenant: t })).status, 200);
      }
      const key = async (scopes: string[]) => (await call(ADMIN, 'POST', '/api/v1/tenants/acme/keys', { scopes })).body.key as string;
      const reader = await key(['read', 'infer']);
      const admin = await key(['read', 'infer', 'admin']);
      assert.equal((await a.sy.app.inject({ method: 'POST', url: '/v2/repository/models/acme.m/unload' })).statusCode, 401);
      const denied = await call(reader, 'POST', '/v2/repository/models/acme.m/unload');
      assert.equal(denied.status, 403);
      assert.match(denied.body.error, /needs admin/);
      assert.equal(a.sy.manager.resolve('acme.m').state, 'READY');
      assert.equal((await call(admin, 'POST', '/v2/repository/models/acme.m/unload')).status, 200);
      assert.equal(a.sy.manager.resolve('acme.m').state, 'UNLOADED');
      assert.equal((await call(admin, 'POST', '/v2/repository/models/acme.m/load')).status, 200);
      assert.equal(a.sy.manager.resolve('acme.m').state, 'READY');
      // Another tenant's model: answered as if it did not exist.
      const other = await call(admin, 'POST', '/v2/repository/models/beta.m/unload');
      assert.equal(other.status, 404);
      assert.equal(a.sy.manager.resolve('beta.m').state, 'READY');
      assert.deepEqual(
        ((await call(reader, 'POST', '/v2/repository/index')).body as Json[]).map((e) => e.name),
        ['acme.m'],
      );
      assert.deepEqual(
        (await call(reader, 'GET', '/v2/models/stats')).body.model_stats.map((e: Json) => e.name),
        ['acme.m'],
      );
      assert.equal((await call(reader, 'GET', '/v2/models/beta.m/stats')).status, 404);
      assert.equal((await call(reader, 'GET', '/v2/models/beta.m/config')).status, 404);
      assert.equal((await call(reader, 'GET', '/v2/models/acme.m/config')).status, 200);
      // The platform key sees and controls everything.
      assert.deepEqual(
        ((await call(ADMIN, 'POST', '/v2/repository/index')).body as Json[]).map((e) => e.name),
        ['acme.m', 'beta.m'],
      );
    } finally {
      await a.close();
    }
  });
});
