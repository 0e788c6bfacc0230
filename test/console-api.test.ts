/**
 * What the web console reads and how it is served: the in-process serving timeline (steps, quantiles, errors,
 * batch sizes, the ring wrapping around; an injected clock), GET /api/v1/overview (schema, tenant isolation,
 * bad input) and the static files at /ui (public, CSP, --no-ui).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { BatchEvent, RequestEvent } from '../src/events.js';
import { binnedQuantile, LATENCY_BOUNDS_MS, ServingTimeline } from '../src/monitoring/timeline.js';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

const req = (model: string, totalMs: number, extra: Partial<RequestEvent> = {}): RequestEvent => ({
  origin: {},
  model,
  version: '1',
  versionNumber: 1,
  tenant: '',
  arm: null,
  ok: true,
  reason: null,
  rows: 1,
  cached: false,
  totalMs,
  queueMs: totalMs / 4,
  computeMs: totalMs / 2,
  computeShareMs: totalMs / 2,
  keyId: null,
  ...extra,
});
const batch = (model: string, rows: number): BatchEvent => ({ model, version: '1', rows, requests: rows, computeMs: 1 });

describe('serving timeline', () => {
  it('counts requests, errors and batches per 10 s step; quantiles from the bins; the ring forgets the oldest step', () => {
    let now = 1_000_000_000_000; // a step boundary
    const tl = new ServingTimeline({ stepMs: 10_000, steps: 6, now: () => now, tickMs: 0 });
    for (let i = 1; i <= 100; i++) tl.record(req('m', i === 100 ? 800 : 2)); // 99 at 2 ms, one at 800 ms
    tl.record(req('m', 5, { ok: false, reason: 'runtime_error' }));
    tl.record(req('m', 1, { ok: false, reason: 'invalid_input' }));
    tl.record(req('m', 1, { cached: true }));
    tl.recordBatch(batch('m', 1));
    tl.recordBatch(batch('m', 3));
    tl.recordBatch(batch('m', 3));
    now += 20_000; // two steps later
    tl.record(req('m', 2));
    assert.equal(tl.read('m', 10_000).requests[0], 0, 'until the clock is read again, events count in the step of the last tick');
    tl.tick();
    tl.record(req('m', 20));
    const r = tl.read('m');
    assert.equal(r.t.length, 6);
    assert.equal(r.t[5], now);
    assert.deepEqual(r.requests, [0, 0, 0, 104, 0, 1]);
    assert.deepEqual(r.errors, [0, 0, 0, 1, 0, 0]);
    assert.equal(r.p50Ms[4], null, 'a step without requests has no quantile');
    // 102 successes in step 3: 101 at ≤ 2.5 ms (bin 1..2.5), one in the 500..1000 bin.
    assert.ok(r.p50Ms[3]! > 1 && r.p50Ms[3]! <= 2.5, `p50 ${r.p50Ms[3]}`);
    assert.ok(r.p99Ms[3]! <= 2.5, 'the 99th percentile of 102 is still a fast one');
    assert.equal(r.totals.requests, 105);
    assert.equal(r.totals.errors, 1);
    assert.equal(r.totals.clientErrors, 1);
    assert.equal(r.totals.cached, 1);
    assert.equal(r.totals.errorRate, Math.round((1 / 104) * 1000) / 1000, "errors over requests that were not the caller's fault");
    assert.equal(r.totals.rate, Math.round((105 / 60) * 1e6) / 1e6);
    assert.deepEqual(r.batches.counts.slice(0, 3), [1, 0, 2], 'rows 1 → bin ≤1; rows 3 → bin ≤4');
    assert.equal(r.batches.meanRows, Math.round((7 / 3) * 1000) / 1000);
    assert.equal(r.queueMs[5], 5);
    assert.equal(r.computeMs[5], 10);
    // Six steps later the first step's slot is reused: its counts are gone, not added to.
    now += 60_000;
    tl.tick();
    tl.record(req('m', 3));
    const later = tl.read('m');
    assert.deepEqual(later.requests, [0, 0, 0, 0, 0, 1]);
    assert.equal(later.totals.requests, 1);
    assert.equal(tl.read('m', 20_000).t.length, 2, 'a shorter window');
    assert.equal(tl.read('nothing').totals.requests, 0, 'a model without traffic reads as zeros');
  });

  it('interpolates quantiles within a bin like histogram_quantile; the open last bin answers its lower bound', () => {
    const counts = new Array(LATENCY_BOUNDS_MS.length + 1).fill(0);
    counts[3] = 10; // 10 values in (0.5, 1] ms
    assert.equal(binnedQuantile(counts, 0, LATENCY_BOUNDS_MS, 0.5), 0.75);
    counts.fill(0);
    counts[LATENCY_BOUNDS_MS.length] = 4;
    assert.equal(binnedQuantile(counts, 0, LATENCY_BOUNDS_MS, 0.99), 10_000);
    assert.equal(binnedQuantile(new Array(17).fill(0), 0, LATENCY_BOUNDS_MS, 0.5), null);
  });

  it('bounds the number of models it keeps', () => {
    const tl = new ServingTimeline({ maxModels: 2, tickMs: 0 });
    for (const m of ['a', 'b', 'c']) tl.record(req(m, 1));
    assert.deepEqual(tl.models().sort(), ['a', 'b']);
  });
});

describe('GET /api/v1/overview and /ui', () => {
  const ADMIN = 'console-api-platform-admin-key-0123';
  let srv: TestServer;
  let acme = '';
  const get = (url: string, key: string | null = ADMIN) => srv.sy.app.inject({ method: 'GET', url, headers: key ? { authorization: `Bearer ${key}` } : {} });
  const send = (method: 'POST' | 'PUT', url: string, payload: object) =>
    srv.sy.app.inject({ method, url, payload, headers: { authorization: `Bearer ${ADMIN}` } });

  before(async () => {
    srv = await startSwitchyard({ 'acme.m': { versions: { 1: mlp(7) } }, 'beta.m': { versions: { 1: mlp(8) } } }, { config: { adminKey: ADMIN } });
    await send('POST', '/api/v1/tenants', { name: 'acme' });
    await send('POST', '/api/v1/tenants', { name: 'beta' });
    await send('PUT', '/api/v1/models/acme.m/owner', { tenant: 'acme' });
    await send('PUT', '/api/v1/models/beta.m/owner', { tenant: 'beta' });
    acme = (await send('POST', '/api/v1/tenants/acme/keys', { scopes: ['read', 'infer'] })).json().key;
    for (let i = 0; i < 3; i++) {
      const r = await send('POST', '/v2/models/acme.m/infer', { inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 64], data: floats(128, i) }] });
      assert.equal(r.statusCode, 200, r.body);
    }
    await send('POST', '/v2/models/acme.m/infer', { inputs: [{ name: 'nope', datatype: 'FP32', shape: [1, 64], data: floats(64, 9) }] });
  });
  after(() => srv.close());

  it("per-model series from the data plane's events, memory, and the platform's totals", async () => {
    const r = await get('/api/v1/overview');
    assert.equal(r.statusCode, 200, r.body);
    const o = r.json();
    assert.equal(o.stepSeconds, 10);
    assert.equal(o.windowSeconds, 3600);
    assert.deepEqual(
      o.models.map((m: { model: string }) => m.model),
      ['acme.m', 'beta.m'],
    );
    const a = o.models[0];
    assert.equal(a.t.length, 360);
    assert.equal(a.totals.requests, 4);
    assert.equal(a.totals.clientErrors, 1, "the bad input is the caller's");
    assert.equal(a.totals.errors, 0);
    assert.equal(a.batches.total, 3);
    assert.equal(a.batches.counts[1], 3, 'three batches of 2 rows');
    assert.ok(a.totals.p99Ms > 0);
    assert.equal(o.models[1].totals.requests, 0);
    assert.equal(typeof o.memory.usedBytes, 'number');
    assert.deepEqual(o.memory.resident.map((x: { model: string }) => x.model).sort(), ['acme.m', 'beta.m']);
    assert.equal((await get('/api/v1/overview?minutes=5')).json().models[0].t.length, 30);
  });

  it("a tenant's key sees only its models, and not the server-wide memory use", async () => {
    const o = (await get('/api/v1/overview', acme)).json();
    assert.deepEqual(
      o.models.map((m: { model: string }) => m.model),
      ['acme.m'],
    );
    assert.deepEqual(
      o.memory.resident.map((x: { model: string }) => x.model),
      ['acme.m'],
    );
    assert.equal(o.memory.usedBytes, null);
    assert.equal((await get('/api/v1/overview', null)).statusCode, 401);
  });

  it('bad input is a 400 naming the field', async () => {
    for (const q of ['minutes=0', 'minutes=61', 'minutes=abc', 'window=5']) {
      const r = await get(`/api/v1/overview?${q}`);
      assert.equal(r.statusCode, 400, q);
      assert.equal(r.json().code, 'SY_ERR_BAD_REQUEST');
      assert.match(r.json().error, /querystring/);
    }
  });

  it('the overview is in the OpenAPI document', async () => {
    const doc = (await get('/docs/json')).json();
    assert.ok(doc.paths['/api/v1/overview']?.get, 'documented');
  });

  it('drift bins: reference vs window counts per feature, only for models the key sees, documented', async () => {
    const header = Array.from({ length: 64 }, (_, i) => `features[${i}]`).join(',');
    const rows = Array.from({ length: 50 }, (_, r) =>
      floats(64, 100 + r)
        .map((v) => v.toFixed(5))
        .join(','),
    );
    const set = await srv.sy.app.inject({
      method: 'POST',
      url: '/api/v1/models/acme.m/versions/1/profile',
      payload: `${[header, ...rows].join('\n')}\n`,
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'text/csv' },
    });
    assert.equal(set.statusCode, 201, set.body);
    const r = await send('POST', '/v2/models/acme.m/infer', { inputs: [{ name: 'features', datatype: 'FP32', shape: [4, 64], data: floats(256, 5) }] });
    assert.equal(r.statusCode, 200, r.body);
    const b = await get('/api/v1/models/acme.m/drift/bins?feature=features%5B3%5D', acme);
    assert.equal(b.statusCode, 200, b.body);
    const [v1] = b.json().bins;
    assert.equal(v1.version, 1);
    assert.equal(v1.rows, 4);
    assert.deepEqual(
      v1.features.map((f: { name: string }) => f.name),
      ['features[3]'],
    );
    const f = v1.features[0];
    assert.equal(f.kind, 'numeric');
    assert.equal(f.reference.length, f.edges.length + 1);
    assert.equal(
      f.reference.reduce((s: number, c: number) => s + c, 0),
      50,
    );
    assert.equal(
      f.current.reduce((s: number, c: number) => s + c, 0),
      4,
    );
    assert.equal((await get('/api/v1/models/acme.m/drift/bins?feature=nope', acme)).statusCode, 404);
    assert.equal((await get('/api/v1/models/beta.m/drift/bins', acme)).statusCode, 404, "another tenant's model is not found");
    assert.ok((await get('/docs/json')).json().paths['/api/v1/models/{name}/drift/bins']?.get, 'documented');
  });

  it('serves the built console at /ui/ without a key, with a CSP; /ui redirects', async (t) => {
    if (!existsSync(fileURLToPath(new URL('../web/index.html', import.meta.url)))) {
      if (process.env['CI'] === 'true') assert.fail('the console is not built (npm ci runs prepare: vite build)');
      t.skip('the console is not built: npm run build:web');
      return;
    }
    const page = await get('/ui/', null);
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /text\/html/);
    assert.match(String(page.headers['content-security-policy']), /default-src 'self'/);
    assert.equal(page.headers['cache-control'], 'no-cache');
    const asset = /src="(\/ui\/assets\/[^"]+\.js)"/.exec(page.body)?.[1];
    assert.ok(asset, 'index.html names its script');
    const js = await get(asset, null);
    assert.equal(js.statusCode, 200);
    assert.match(String(js.headers['cache-control']), /immutable/);
    assert.ok(
      !/https?:\/\/(?!127\.0\.0\.1|localhost|www\.w3\.org)[a-z0-9.-]+\.[a-z]{2,}\/[^"'\s]*\.(?:js|css)/i.test(js.body),
      'no script or style from elsewhere',
    );
    const redirect = await get('/ui', null);
    assert.equal(redirect.statusCode, 301);
    assert.equal(redirect.headers['location'], '/ui/');
    assert.equal((await get('/ui/../package.json', null)).statusCode, 404);
  });

  it('--no-ui serves no console', async () => {
    const off = await startSwitchyard({}, { config: { ui: false } });
    try {
      assert.equal((await off.sy.app.inject({ method: 'GET', url: '/ui/' })).statusCode, 404);
    } finally {
      await off.close();
    }
  });
});
