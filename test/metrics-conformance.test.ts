import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Ajv } from 'ajv';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

let srv: TestServer;
before(async () => {
  srv = await startSwitchyard({ mlp: { versions: { 1: mlp() } } });
  for (let i = 0; i < 5; i++) {
    await srv.sy.app.inject({
      method: 'POST',
      url: '/v2/models/mlp/infer',
      payload: { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, i) }] },
    });
  }
  await srv.sy.app.inject({ method: 'POST', url: '/v2/models/mlp/infer', payload: { inputs: [] } });
});
after(() => srv.close());

describe('GET /metrics', () => {
  it('passes promtool check metrics', async (t) => {
    const text = (await srv.sy.app.inject('/metrics')).body;
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    if (r.error && process.env['CI'] !== 'true') {
      t.skip('promtool not installed (apt-get install prometheus); required in CI');
      return;
    }
    assert.ifError(r.error);
    assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
  });
  it('exposes per model+version counters, histograms and gauges', async () => {
    const text = (await srv.sy.app.inject('/metrics')).body;
    const expected = [
      'switchyard_inference_success_total{model="mlp",version="1"} 5',
      'switchyard_inference_failure_total{model="mlp",version="1",reason="invalid_input"} 1',
      'switchyard_inference_request_duration_seconds_bucket{le="+Inf",model="mlp",version="1"} 6',
      'switchyard_inference_queue_duration_seconds_count{model="mlp",version="1"} 5',
      'switchyard_inference_compute_duration_seconds_count{model="mlp",version="1"} 5',
      'switchyard_batch_size_rows_count{model="mlp",version="1"}',
      'switchyard_queue_depth{model="mlp",version="1"} 0',
      'switchyard_inflight_requests{model="mlp",version="1"} 0',
      'switchyard_model_ready{model="mlp",version="1",state="READY"} 1',
      'switchyard_model_load_duration_seconds{model="mlp",version="1"}',
    ];
    for (const line of expected) assert.ok(text.includes(line), `missing: ${line}`);
    assert.match(text, /# TYPE switchyard_inference_request_duration_seconds histogram/);
  });
  it('exports the standard process and Node.js metric names, unprefixed, and the build info', async () => {
    const text = (await srv.sy.app.inject('/metrics')).body;
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'process_start_time_seconds',
      'nodejs_heap_size_used_bytes',
      'nodejs_eventloop_lag_seconds',
      'nodejs_gc_duration_seconds',
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `missing ${name}`);
    }
    assert.doesNotMatch(text, /^switchyard_(process|nodejs)_/m, 'no prefixed copies of the standard names');
    assert.match(text, /^# TYPE switchyard_event_loop_lag_seconds histogram$/m, 'event-loop lag histogram');
    const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    assert.ok(text.includes(`switchyard_build_info{version="${version}",node_version="${process.version}"} 1`), 'build info');
  });
});

describe('Open Inference Protocol conformance (test/fixtures/open-inference-schemas.json)', () => {
  // The protocol's OpenAPI component schemas as JSON Schema definitions (the fixture's `source` names the spec).
  const fixture = new URL('../../test/fixtures/open-inference-schemas.json', import.meta.url);
  const schemas = (JSON.parse(readFileSync(fixture, 'utf8')) as { definitions: Record<string, object> }).definitions;
  const ajv = new Ajv({ strict: false, allErrors: true });
  const validator = (name: string) => ajv.compile({ $ref: `#/definitions/${name}`, definitions: schemas });
  const check = (name: string, body: unknown): void => {
    const v = validator(name);
    assert.ok(v(body), `${name}: ${ajv.errorsText(v.errors)} in ${JSON.stringify(body).slice(0, 300)}`);
  };

  it('server metadata', async () => check('metadata_server_response', (await srv.sy.app.inject('/v2')).json()));
  it('model metadata', async () => check('metadata_model_response', (await srv.sy.app.inject('/v2/models/mlp/versions/1')).json()));
  it('model metadata error', async () => check('metadata_model_error_response', (await srv.sy.app.inject('/v2/models/none')).json()));
  it('inference request (as sent) and response', async () => {
    const req = {
      id: 'x1',
      parameters: { p: 1 },
      inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 64], data: floats(128, 3) }],
      outputs: [{ name: 'score' }],
    };
    check('inference_request', req);
    const r = await srv.sy.app.inject({ method: 'POST', url: '/v2/models/mlp/infer', payload: req });
    assert.equal(r.statusCode, 200);
    check('inference_response', r.json());
  });
  it('inference error', async () => {
    const r = await srv.sy.app.inject({ method: 'POST', url: '/v2/models/mlp/infer', payload: '{', headers: { 'content-type': 'application/json' } });
    assert.equal(r.statusCode, 400);
    check('inference_error_response', r.json());
  });
});
