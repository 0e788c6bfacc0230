/**
 * Model monitoring end to end on a live server: sampled predictions logged and exported (JSON, JSONL, CSV),
 * a reference profile from an uploaded dataset and from the log, drift and data quality over the window
 * (no drift on the same distribution, drift on a shifted one), drift gauges, and an alert rule that fires and
 * resolves with signed webhook deliveries to a real local HTTP receiver.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { verifyWebhook } from '../src/monitoring/alerts.js';
import { mlp } from '../tools/onnx/zoo.js';
import { normals, startSwitchyard, startWebhookReceiver, type TestServer, type WebhookReceiver } from './helpers.js';

const ROWS = 100;
const batch = (seed: number, mean = 0, rows = ROWS) =>
  JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 64], data: normals(rows * 64, seed, mean) }] });

describe('model monitoring', () => {
  let srv: TestServer;
  let hook: WebhookReceiver;
  const inject = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: string | object, type = 'application/json') =>
    srv.sy.app.inject({
      method,
      url,
      ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : JSON.stringify(payload), headers: { 'content-type': type } }),
    });
  const send = async (n: number, seed: number, mean = 0, rows = ROWS): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const r = await inject('POST', '/v2/models/mlp/infer', batch(seed + i, mean, rows));
      assert.equal(r.statusCode, 200, r.body);
    }
  };

  before(async () => {
    hook = await startWebhookReceiver('/alerts');
    srv = await startSwitchyard({ mlp: { versions: { 1: mlp(7) } } }, { config: { monitorSampleRate: 1, alertEvalMs: 3_600_000, driftEvalMs: 3_600_000 } });
  });
  after(async () => {
    await srv.close();
    await hook.close();
  });

  it('logs sampled predictions with version, request id and tensors; exports JSON, JSONL and CSV', async () => {
    const r = await srv.sy.app.inject({
      method: 'POST',
      url: '/v2/models/mlp/infer',
      headers: { 'content-type': 'application/json', 'x-request-id': 'req-log-1' },
      payload: batch(1),
    });
    assert.equal(r.statusCode, 200);
    await srv.sy.monitoring.log.flush();
    const got = (await inject('GET', '/api/v1/predictions?model=mlp&limit=10')).json() as {
      predictions: {
        requestId: string;
        version: number;
        inputs: { name: string; shape: number[]; data: number[] }[];
        outputs: { name: string; shape: number[] }[];
        latencyMs: number;
      }[];
    };
    const rec = got.predictions.find((p) => p.requestId === 'req-log-1');
    assert.ok(rec, 'the request is in the log');
    assert.equal(rec.version, 1);
    assert.deepEqual(rec.inputs[0]!.shape, [ROWS, 64]);
    assert.equal(rec.inputs[0]!.data.length, 0, 'a tensor over the element bound is logged by shape only');
    assert.equal((rec.inputs[0] as { truncated?: boolean }).truncated, true);
    const small = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: normals(64, 3) }] });
    await srv.sy.app.inject({
      method: 'POST',
      url: '/v2/models/mlp/infer',
      headers: { 'content-type': 'application/json', 'x-request-id': 'req-log-2' },
      payload: small,
    });
    await srv.sy.monitoring.log.flush();
    const all = (await inject('GET', '/api/v1/predictions?model=mlp&limit=10')).json() as typeof got;
    const one = all.predictions.find((p) => p.requestId === 'req-log-2')!;
    assert.equal(one.inputs[0]!.data.length, 64);
    assert.ok(Math.abs(one.inputs[0]!.data[0]! - normals(64, 3)[0]!) < 1e-6, 'the logged input is what was sent');
    assert.equal(rec.outputs[0]!.name, 'score');
    assert.ok(rec.latencyMs > 0);
    const jsonl = await inject('GET', '/api/v1/predictions?model=mlp&format=jsonl');
    assert.match(String(jsonl.headers['content-type']), /ndjson/);
    assert.equal(JSON.parse(jsonl.body.trim().split('\n')[0]!).model, 'mlp');
    const csv = await inject('GET', '/api/v1/predictions?model=mlp&format=csv');
    assert.match(String(csv.headers['content-type']), /text\/csv/);
    assert.match(csv.body.split('\n')[0]!, /^at,model,version,tenant,arm,request_id,latency_ms/);
    assert.equal((await inject('GET', '/api/v1/predictions?since=not-a-time')).statusCode, 400);
  });

  it('drift: a dataset reference, no drift on the same distribution, drift and gauges on a shifted one', async () => {
    const header = Array.from({ length: 64 }, (_, i) => `features[${i}]`).join(',');
    const values = normals(5000 * 64, 99);
    const lines = [header];
    for (let r = 0; r < 5000; r++)
      lines.push(
        values
          .slice(r * 64, (r + 1) * 64)
          .map((v) => v.toFixed(5))
          .join(','),
      );
    const set = await inject('POST', '/api/v1/models/mlp/versions/1/profile', `${lines.join('\n')}\n`, 'text/csv');
    assert.equal(set.statusCode, 201, set.body);
    assert.equal(set.json().profile.rows, 5000);
    assert.equal((await inject('GET', '/api/v1/models/mlp/versions/1/profile')).statusCode, 200);

    await send(30, 1000); // 3000 rows, same distribution
    const calm = (await inject('GET', '/api/v1/models/mlp/drift')).json().reports[0].report;
    assert.equal(calm.rows, 3000);
    assert.equal(calm.datasetDrift, false, `no dataset drift (share ${calm.driftedShare})`);
    const f0 = calm.features.find((f: { name: string }) => f.name === 'features[0]');
    assert.ok(f0.psi < 0.2, `psi ${f0.psi}`);

    await send(60, 5000, 1.0); // shifted mean: now 2/3 of the window
    const drifted = (await inject('GET', '/api/v1/models/mlp/drift?version=1')).json().reports[0].report;
    assert.equal(drifted.datasetDrift, true);
    assert.ok(drifted.features.find((f: { name: string }) => f.name === 'features[0]').psi > 0.2);
    await srv.sy.monitoring.evaluateDrift();
    const metrics = (await inject('GET', '/metrics')).body;
    assert.match(metrics, /switchyard_drift_psi\{model="mlp",version="1",feature="features\[0\]"\} \d/);
    assert.match(metrics, /switchyard_drift_share\{model="mlp",version="1"\} (0\.[5-9]|1)/);
    const history = (await inject('GET', '/api/v1/models/mlp/drift/history')).json().history;
    assert.ok(history.length >= 1);
  });

  it('an alert rule fires on drift and resolves, with signed webhook deliveries recorded', async () => {
    const bad = await inject('PUT', '/api/v1/alerts/rules/x', { kind: 'drift', model: 'mlp' });
    assert.equal(bad.statusCode, 400, 'threshold is required');
    const put = await inject('PUT', '/api/v1/alerts/rules/mlp-drift', {
      kind: 'drift',
      model: 'mlp',
      threshold: 0.3,
      webhook: { url: hook.url, secret: 's3cret' },
    });
    assert.equal(put.statusCode, 200, put.body);
    assert.equal(put.json().webhook.secret, undefined, 'the secret is never shown');
    await srv.sy.monitoring.alerts.evaluate();
    await srv.sy.monitoring.alerts.idle();
    assert.equal(hook.received.length, 1);
    const msg = hook.received[0]!;
    assert.equal(JSON.parse(msg.body).state, 'firing');
    assert.ok(verifyWebhook('s3cret', String(msg.headers['x-switchyard-timestamp']), String(msg.headers['x-switchyard-signature']), msg.body));
    const states = (await inject('GET', '/api/v1/alerts')).json().alerts;
    assert.equal(states.find((s: { rule: string }) => s.rule === 'mlp-drift').state, 'firing');
    // A new reference built from logged (shifted) traffic: the same traffic no longer drifts.
    const since = new Date().toISOString();
    await send(40, 7000, 1.0, 50); // 50-row requests are logged whole (100-row ones exceed the element bound)
    await srv.sy.monitoring.log.flush();
    const fromLog = await inject('POST', '/api/v1/models/mlp/versions/1/profile', { source: 'log', since, limit: 1000 });
    assert.equal(fromLog.statusCode, 201, fromLog.body);
    assert.equal(fromLog.json().profile.rows, 2000);
    await send(40, 9000, 1.0, 50);
    await srv.sy.monitoring.evaluateDrift();
    await srv.sy.monitoring.alerts.evaluate();
    await srv.sy.monitoring.alerts.idle();
    const events = (await inject('GET', '/api/v1/alerts/events?rule=mlp-drift')).json().events as { state: string; delivery: string }[];
    assert.deepEqual(
      events.map((e) => e.state),
      ['resolved', 'firing'],
    );
    assert.ok(events.every((e) => e.delivery === 'delivered'));
    assert.equal(JSON.parse(hook.received.at(-1)!.body).state, 'resolved');
  });
});
