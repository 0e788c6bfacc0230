/**
 * The feature store end to end on a live server (in-process stores; the Redis stores have their own suites):
 * definitions through the admin API, idempotent pushes, online reads with statuses and max age, windowed
 * aggregations from pushed events, point-in-time export, and feature-joined inference — which must equal
 * inference with the same values sent by hand.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mlp } from '../tools/onnx/zoo.js';
import { binaryBody, splitBinary, startSwitchyard, type TestServer } from './helpers.js';

const HOUR = 3_600_000;

describe('feature store on a live server', () => {
  let srv: TestServer;
  const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown, type = 'application/json') =>
    srv.sy.app.inject({
      method,
      url,
      ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : JSON.stringify(payload), headers: { 'content-type': type } }),
    });
  const ok = async (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown): Promise<Record<string, unknown>> => {
    const r = await call(method, url, payload);
    assert.ok(r.statusCode < 300, `${method} ${url}: ${r.statusCode} ${r.body}`);
    return r.body === '' ? {} : (r.json() as Record<string, unknown>);
  };
  const now = Date.now();
  const iso = (ms: number): string => new Date(ms).toISOString();
  /** 64 feature names: u:f0..u:f31 (a pushed view) and t:c5m, t:s1h,... mixed with defaults. */
  const FEATS = Array.from({ length: 62 }, (_, i) => `f${i}`);

  before(async () => {
    srv = await startSwitchyard({ mlp: { versions: { 1: mlp(7) } } });
    await ok('PUT', '/api/v1/features/entities/user', { joinKeys: [{ name: 'user_id', type: 'int64' }] });
    await ok('PUT', '/api/v1/features/views/profile', { entities: ['user'], features: FEATS.map((name) => ({ name, type: 'float32' })), ttlSeconds: 2 * 3600 });
    await ok('PUT', '/api/v1/features/views/txn', {
      kind: 'window',
      entities: ['user'],
      aggregations: [
        { name: 'count_1h', fn: 'count', window: '1h' },
        { name: 'amount_sum_24h', fn: 'sum', field: 'amount', window: '24h' },
      ],
    });
    await ok('PUT', '/api/v1/features/services/scorer', {
      model: 'mlp',
      features: [
        ...FEATS.map((f) => ({ ref: `profile:${f}`, input: 'features', default: 0 })),
        { ref: 'txn:count_1h', input: 'features' },
        { ref: 'txn:amount_sum_24h', input: 'features', default: 0 },
      ],
    });
  });
  after(() => srv.close());

  it('pushes are idempotent; an older event never overwrites a newer online value', async () => {
    const row = (user: number, t: number, base: number) => ({
      user_id: user,
      event_time: iso(t),
      ...Object.fromEntries(FEATS.map((f, i) => [f, base + i / 100])),
    });
    const first = await ok('POST', '/api/v1/features/push', { view: 'profile', rows: [row(1, now - HOUR, 1), row(2, now - 3 * HOUR, 2)] });
    assert.equal(first['offlineNew'], 2);
    const again = await ok('POST', '/api/v1/features/push', { view: 'profile', rows: [row(1, now - HOUR, 1), row(2, now - 3 * HOUR, 2)] });
    assert.equal(again['offlineNew'], 0, 'a retried push inserts nothing twice');
    const older = await ok('POST', '/api/v1/features/push', { view: 'profile', rows: [row(1, now - 2 * HOUR, 9)] });
    assert.equal(older['offlineNew'], 1, 'kept in the history');
    assert.equal(older['onlineApplied'], 0, 'but not served online');
    const bad = await call('POST', '/api/v1/features/push', { view: 'profile', rows: [{ user_id: 'x', event_time: iso(now), f0: 1 }] });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().error, /user_id/);
    assert.equal((await call('POST', '/api/v1/features/push', { view: 'nope', rows: [] })).statusCode, 404);
  });

  it('online reads report PRESENT / OUTSIDE_MAX_AGE / NOT_FOUND with event times', async () => {
    const r = await ok('POST', '/api/v1/features/online', {
      entities: [{ user_id: 1 }, { user_id: 2 }, { user_id: 3 }],
      features: ['profile:f0', 'profile:f5'],
    });
    const results = r['results'] as { features: Record<string, { value: number | null; status: string; eventTime: string | null }> }[];
    assert.equal(results[0]!.features['profile:f0']!.status, 'PRESENT');
    assert.ok(Math.abs(results[0]!.features['profile:f5']!.value! - 1.05) < 1e-6);
    assert.equal(results[0]!.features['profile:f0']!.eventTime, iso(now - HOUR));
    assert.equal(results[1]!.features['profile:f0']!.status, 'OUTSIDE_MAX_AGE', '3 h old, max age 2 h');
    assert.equal(results[2]!.features['profile:f0']!.status, 'NOT_FOUND');
    assert.equal((await call('POST', '/api/v1/features/online', { entities: [{ user_id: 1 }], features: ['profile:nope'] })).statusCode, 400);
  });

  it('windowed features count each event once (redelivered ids ignored), late events included', async () => {
    const ev = (id: string, t: number, amount: number) => ({ event_id: id, user_id: 1, event_time: iso(t), amount });
    const r1 = await ok('POST', '/api/v1/features/push', {
      view: 'txn',
      rows: [ev('a', now - 10 * 60_000, 5), ev('b', now - 2 * HOUR, 7), ev('c', now - 60_000, 1)],
    });
    assert.equal(r1['applied'], 3);
    const r2 = await ok('POST', '/api/v1/features/push', { view: 'txn', rows: [ev('a', now - 10 * 60_000, 500), ev('d', now - 30 * 60_000, 2)] });
    assert.equal(r2['duplicates'], 1);
    const r = await ok('POST', '/api/v1/features/online', { entities: [{ user_id: 1 }], features: ['txn:count_1h', 'txn:amount_sum_24h'] });
    const f = (r['results'] as { features: Record<string, { value: number | null }> }[])[0]!.features;
    assert.equal(f['txn:count_1h']!.value, 3, 'a, c, d within the hour');
    assert.equal(f['txn:amount_sum_24h']!.value, 15, '5 + 7 + 1 + 2; the redelivered "a" (500) is ignored');
  });

  it('exports point-in-time rows: no value from the future, none written after the row time, TTL applied', async () => {
    const r = await ok('POST', '/api/v1/features/export', {
      entities: [
        { user_id: 1, timestamp: iso(now - 90 * 60_000) }, // after the -2 h row (written later, a backfill) and before -1 h
        { user_id: 1, timestamp: iso(Date.now() + 1000) }, // after every write so far
        { user_id: 2, timestamp: iso(Date.now() + 1000) }, // -3 h row, TTL 2 h: expired
        { user_id: 2, timestamp: iso(now - 150 * 60_000) }, // 30 min after it, but that row was written just now
      ],
      features: ['profile:f0'],
    });
    const rows = r['rows'] as Record<string, unknown>[];
    assert.equal(rows[0]!['profile:f0'], null, 'the -2 h value was written after that time: it must not leak');
    assert.ok(Math.abs((rows[1]!['profile:f0'] as number) - 1) < 1e-6);
    assert.equal(rows[2]!['profile:f0'], null);
    assert.equal(rows[3]!['profile:f0'], null, 'not known yet at that time');
    const late = await ok('POST', '/api/v1/features/export', {
      entities: [{ user_id: 1, timestamp: iso(now - 90 * 60_000) }],
      features: ['profile:f0'],
      includeLateWrites: true,
    });
    assert.ok(Math.abs(((late['rows'] as Record<string, unknown>[])[0]!['profile:f0'] as number) - 9) < 1e-6, 'with late writes: the backfilled -2 h value');
    const csv = await call('POST', '/api/v1/features/export?features=profile:f0&format=csv', `user_id,timestamp\n1,${iso(Date.now() + 1000)}\n`, 'text/csv');
    assert.equal(csv.statusCode, 200, csv.body);
    assert.match(csv.body, /^user_id,timestamp,profile:f0\r\n1,/);
    // Parquet in and out: the same rows come back.
    const pq = await srv.sy.app.inject({
      method: 'POST',
      url: '/api/v1/features/export?format=parquet',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({
        entities: [
          { user_id: 1, timestamp: iso(Date.now() + 1000) },
          { user_id: 3, timestamp: iso(Date.now() + 1000) },
        ],
        features: ['profile:f0'],
      }),
    });
    assert.equal(pq.statusCode, 200);
    assert.equal(pq.headers['content-type'], 'application/vnd.apache.parquet');
    const back = await srv.sy.app.inject({
      method: 'POST',
      url: '/api/v1/features/export?features=profile:f1',
      headers: { 'content-type': 'application/vnd.apache.parquet' },
      payload: pq.rawPayload,
    });
    assert.equal(back.statusCode, 200, back.body);
    const rows2 = back.json().rows as Record<string, unknown>[];
    assert.equal(rows2.length, 2);
    assert.ok(Math.abs((rows2[0]!['profile:f0'] as number) - 1) < 1e-6, 'columns read back from the Parquet file');
    assert.ok(Math.abs((rows2[0]!['profile:f1'] as number) - 1.01) < 1e-6, 'and joined again');
    assert.equal(rows2[1]!['profile:f1'], null);
  });

  it('feature-joined inference equals inference with the same values sent by hand', async () => {
    const joined = await call('POST', '/v2/models/mlp/infer', { inputs: [], parameters: { entities: [{ user_id: 1 }, { user_id: 3 }] } });
    assert.equal(joined.statusCode, 200, joined.body);
    const online = await ok('POST', '/api/v1/features/online', { entities: [{ user_id: 1 }, { user_id: 3 }], service: 'scorer' });
    const rowsByHand = (online['results'] as { features: Record<string, { value: number | null; status: string }> }[]).map((r) =>
      Object.values(r.features).map((f) => (f.status === 'PRESENT' && f.value !== null ? f.value : 0)),
    );
    const manual = await call('POST', '/v2/models/mlp/infer', { inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 64], data: rowsByHand.flat() }] });
    assert.equal(manual.statusCode, 200, manual.body);
    assert.deepEqual(joined.json().outputs, manual.json().outputs);
    const missing = await call('POST', '/v2/models/mlp/infer', { inputs: [], parameters: { entities: [{ account: 1 }] } });
    assert.equal(missing.statusCode, 400);
    assert.match(missing.json().error, /user_id/);
  });

  it('a binary-extension request is feature-joined too (the join works on typed tensors), outputs in binary', async () => {
    const entities = [{ user_id: 1 }, { user_id: 3 }];
    const json = await call('POST', '/v2/models/mlp/infer', { inputs: [], parameters: { entities } });
    assert.equal(json.statusCode, 200, json.body);
    const { body, headerLength } = binaryBody({ inputs: [], parameters: { entities, binary_data_output: true } }, []);
    const bin = await srv.sy.app.inject({
      method: 'POST',
      url: '/v2/models/mlp/infer',
      payload: body,
      headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) },
    });
    assert.equal(bin.statusCode, 200, bin.body);
    const split = splitBinary(bin.rawPayload, Number(bin.headers['inference-header-content-length']));
    const out = split.json.outputs[0]!;
    assert.equal(out.parameters?.binary_data_size, split.rest.length);
    const values = new Float32Array(split.rest.buffer.slice(split.rest.byteOffset, split.rest.byteOffset + split.rest.length));
    const expected = (json.json().outputs as { data: number[] }[])[0]!.data;
    assert.deepEqual(out.shape, [2, expected.length / 2]);
    assert.deepEqual(
      Array.from(values),
      expected.map((x) => Math.fround(x)),
    );
  });

  it('definitions are versioned: every change is a revision in the history', async () => {
    await ok('PUT', '/api/v1/features/views/profile', { entities: ['user'], features: FEATS.map((name) => ({ name, type: 'float32' })), ttlSeconds: 3 * 3600 });
    const h = await ok('GET', '/api/v1/features/views/profile/history');
    const list = (Array.isArray(h) ? h : (h['history'] ?? h['revisions'])) as { revision: number }[];
    assert.deepEqual(
      list.map((r) => r.revision),
      [1, 2],
    );
    assert.equal((await call('DELETE', '/api/v1/features/entities/user')).statusCode, 409, 'still used by views');
  });

  it('a deleted view takes its data with it: re-created under the same name, it starts empty', async () => {
    await ok('PUT', '/api/v1/features/views/scratch', { entities: ['user'], features: [{ name: 'x', type: 'int64' }] });
    await ok('POST', '/api/v1/features/push', { view: 'scratch', rows: [{ user_id: 1, event_time: iso(Date.now()), x: 5 }] });
    const read = async (): Promise<string> =>
      (
        (await ok('POST', '/api/v1/features/online', { entities: [{ user_id: 1 }], features: ['scratch:x'] }))['results'] as {
          features: Record<string, { status: string }>;
        }[]
      )[0]!.features['scratch:x']!.status;
    assert.equal(await read(), 'PRESENT');
    assert.equal((await call('DELETE', '/api/v1/features/views/scratch')).statusCode, 204);
    await ok('PUT', '/api/v1/features/views/scratch', { entities: ['user'], features: [{ name: 'x', type: 'int64' }] });
    assert.equal(await read(), 'NOT_FOUND');
    const exported = await ok('POST', '/api/v1/features/export', { entities: [{ user_id: 1, timestamp: iso(Date.now() + 1000) }], features: ['scratch:x'] });
    assert.equal((exported['rows'] as Record<string, unknown>[])[0]!['scratch:x'], null, 'the offline history went too');
  });
});
