/**
 * Operability: the structured access log (every request at debug, a sampled share at info) and the log line of
 * every control-plane change; the OpenAPI document at /docs/json is valid OpenAPI 3.1 (checked with a
 * validator, and every schema in it compiled as JSON Schema 2020-12) and describes the V2 and /v1 data planes.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { pino, type Logger } from 'pino';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

const ADMIN = 'operability-admin-key-0123456789';
type Line = Record<string, unknown>;

/** A pino logger at `level` whose lines the test reads. */
function capture(level: string): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Line);
      cb();
    },
  });
  return { logger: pino({ level }, stream), lines };
}

async function withTenant(srv: TestServer): Promise<string> {
  const admin = (method: 'POST' | 'PUT', url: string, payload: object) =>
    srv.sy.app.inject({ method, url, headers: { authorization: `Bearer ${ADMIN}` }, payload });
  assert.equal((await admin('POST', '/api/v1/tenants', { name: 'acme' })).statusCode, 201);
  assert.equal((await admin('PUT', '/api/v1/models/acme.m/owner', { tenant: 'acme' })).statusCode, 200);
  const k = await admin('POST', '/api/v1/tenants/acme/keys', { scopes: ['infer', 'read'] });
  return (JSON.parse(k.body) as { key: string }).key;
}

const inferBody = { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, 1) }] };

describe('access log and control-plane log', () => {
  it('at debug: one line per request with request id, tenant, model, status and latency; control-plane changes at info', async () => {
    const { logger, lines } = capture('debug');
    const srv = await startSwitchyard({ 'acme.m': { versions: { 1: mlp(3) } } }, { logger, config: { adminKey: ADMIN } });
    try {
      const key = await withTenant(srv);
      const r = await srv.sy.app.inject({
        method: 'POST',
        url: '/v2/models/acme.m/infer',
        headers: { authorization: `Bearer ${key}`, 'x-request-id': 'probe-1' },
        payload: inferBody,
      });
      assert.equal(r.statusCode, 200);
      const bad = await srv.sy.app.inject({
        method: 'POST',
        url: '/v2/models/acme.m/infer',
        headers: { authorization: `Bearer ${key}`, 'x-request-id': 'probe-2' },
        payload: { inputs: [] },
      });
      assert.equal(bad.statusCode, 400);
      const access = lines.filter((l) => l['msg'] === 'request');
      const one = access.find((l) => l['requestId'] === 'probe-1');
      assert.ok(one, 'access line of probe-1');
      assert.equal(one['level'], 20);
      assert.equal(one['tenant'], 'acme');
      assert.equal(one['model'], 'acme.m');
      assert.equal(one['status'], 200);
      assert.equal(one['route'], '/v2/models/:model/infer');
      assert.equal(typeof one['latencyMs'], 'number');
      assert.equal(access.find((l) => l['requestId'] === 'probe-2')?.['status'], 400);
      const changes = lines.filter((l) => l['msg'] === 'control-plane change');
      assert.ok(
        changes.some((l) => l['action'] === 'POST /api/v1/tenants' && l['status'] === 201 && l['actor'] === 'admin' && l['level'] === 30),
        'tenant creation logged',
      );
      assert.ok(
        changes.some((l) => l['action'] === 'PUT /api/v1/models/:name/owner' && l['target'] === 'name=acme.m'),
        'ownership change logged',
      );
    } finally {
      await srv.close();
    }
  });

  it('at info: only the sampled share; nothing when the rate is 0', async () => {
    for (const [rate, expected] of [
      [1, 3],
      [0, 0],
    ] as const) {
      const { logger, lines } = capture('info');
      const srv = await startSwitchyard({ m: { versions: { 1: mlp(3) } } }, { logger, config: { accessLogSampleRate: rate } });
      try {
        for (let i = 0; i < 3; i++) assert.equal((await srv.sy.app.inject({ method: 'POST', url: '/v2/models/m/infer', payload: inferBody })).statusCode, 200);
        const access = lines.filter((l) => l['msg'] === 'request');
        assert.equal(access.length, expected, `rate ${rate}`);
        for (const l of access) assert.equal(l['level'], 30);
      } finally {
        await srv.close();
      }
    }
  });
});

describe('OpenAPI document (/docs/json)', () => {
  let srv: TestServer;
  let doc: { openapi: string; paths: Record<string, Record<string, Record<string, unknown>>> };
  before(async () => {
    srv = await startSwitchyard({});
    doc = (await srv.sy.app.inject('/docs/json')).json();
  });
  after(() => srv.close());

  it('is valid OpenAPI 3.1 (validator), every schema valid JSON Schema 2020-12', async () => {
    assert.equal(doc.openapi, '3.1.0');
    const r = await new Validator().validate(doc as never);
    assert.ok(r.valid, `invalid OpenAPI: ${String(JSON.stringify(r.errors)).slice(0, 1000)}`);
    // The validator checks the document's structure; its schemas are checked here against the 2020-12 meta-schema.
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    let n = 0;
    const walk = (node: unknown, path: string): void => {
      if (typeof node !== 'object' || node === null) return;
      for (const [k, v] of Object.entries(node)) {
        if (k === 'schema' && typeof v === 'object' && v !== null) {
          assert.ok(ajv.validateSchema(v), `${path}/schema: ${ajv.errorsText(ajv.errors)}`);
          n++;
        } else {
          walk(v, `${path}/${k}`);
        }
      }
    };
    walk(doc.paths, '');
    assert.ok(n > 100, `only ${n} schemas found`);
  });

  it('describes the V2 and /v1 data planes', () => {
    const infer = doc.paths['/v2/models/{model}/versions/{version}/infer']?.['post'] as {
      requestBody?: { content: Record<string, { schema: { required?: string[] } }> };
      responses: Record<string, unknown>;
      parameters: Array<{ name: string }>;
    };
    assert.ok(infer, 'V2 infer');
    assert.deepEqual(infer.requestBody?.content['application/json']?.schema.required, ['inputs']);
    assert.deepEqual(infer.parameters.map((p) => p.name).sort(), ['model', 'version']);
    assert.ok(infer.responses['200'] && infer.responses['4XX'] && infer.responses['5XX']);
    for (const [path, method] of [
      ['/v2/health/ready', 'get'],
      ['/v2/models/{model}', 'get'],
      ['/v2', 'get'],
      ['/v1/chat/completions', 'post'],
      ['/v1/embeddings', 'post'],
      ['/v1/models', 'get'],
      ['/v1/models/{model}', 'get'],
    ] as const) {
      const op = doc.paths[path]?.[method] as { responses?: Record<string, unknown> } | undefined;
      assert.ok(op?.responses?.['200'], `${method.toUpperCase()} ${path} has a described 200`);
    }
    const chat = doc.paths['/v1/chat/completions']!['post'] as { requestBody: { content: Record<string, { schema: { required: string[] } }> } };
    assert.deepEqual(chat.requestBody.content['application/json']!.schema.required, ['model', 'messages']);
  });
});
