/**
 * Goodput under overload: a call for a model whose queue is full is refused from its headers, before its body
 * is read or decoded. Timing is set by the test, never measured: a gated runtime holds the one instance busy
 * while the queue fills, so "full" is a state the test builds, not a race it hopes to win.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { credentials, Metadata, status as Status, type Client as GrpcClient, type ServiceError } from '@grpc/grpc-js';
import { Client } from 'undici';
import { loadProtos } from '../src/api/index.js';
import { Batcher } from '../src/serving/batcher.js';
import type { ModelInstance } from '../src/runtimes/index.js';
import { mlp } from '../tools/onnx/zoo.js';
import { gatedRuntime, until, type Gate } from './gated-runtime.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

const V1 = mlp(4);
const V2 = mlp(5);
const QUEUE = 2;
const body = (seed: number): string => JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, seed) }] });
const JSON_HEADERS = { 'content-type': 'application/json' };

/**
 * Send the headers of a POST announcing `length` bytes of body and only `sent` of them, then wait: resolves with
 * what the server answered once it closes the connection. A server that waited for the body would never answer
 * (the test then fails on its timeout); the client never sends more than `sent` bytes.
 */
function partialPost(url: string, path: string, length: number, sent: number): Promise<{ response: string; sent: number }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname, () => {
      sock.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`);
      sock.write(Buffer.alloc(sent, 0x20));
    });
    let response = '';
    sock.on('data', (d: Buffer) => (response += d.toString()));
    sock.on('close', () => resolve({ response, sent }));
    sock.on('error', reject);
  });
}

describe('admission before the body is read', () => {
  let srv: TestServer;
  let gate: Gate;
  let client: Client;
  const inject = (url: string, payload: string) => srv.sy.app.inject({ method: 'POST', url, headers: JSON_HEADERS, payload });
  const queued = (): number => srv.sy.manager.resolve('mlp', '1').batcher!.queued;

  before(async () => {
    gate = gatedRuntime([createHash('sha256').update(V1).digest('hex')]);
    srv = await startSwitchyard(
      {
        mlp: {
          versions: { 1: V1, 2: V2 },
          config: { version_policy: { all: {} }, instances: 1, max_batch_size: 1, max_queue_delay_us: 0, max_queue_size: QUEUE },
        },
      },
      { listen: true, runtime: gate.runtime },
    );
    client = new Client(srv.url);
  });
  after(async () => {
    gate.open();
    await client.close().catch(() => undefined);
    await srv.close();
  });

  it('with version 1 busy and its queue full, a request for it is refused with 503 + Retry-After before its body is read; others still serve', async () => {
    gate.close();
    const warm = gate.ran.length;
    // One request runs (held at the gate), QUEUE more wait: the queue is full.
    const held = [0, 1, 2].map((i) => inject('/v2/models/mlp/versions/1/infer', body(i)));
    await until(() => gate.ran.length > warm && queued() === QUEUE);

    // A body that is not even JSON: refused for the queue, not parsed (400 would mean it was decoded).
    const bad = await client.request({ method: 'POST', path: '/v2/models/mlp/versions/1/infer', headers: JSON_HEADERS, body: '{not json' });
    const badBody = (await bad.body.json()) as { code: string };
    assert.equal(bad.statusCode, 503, JSON.stringify(badBody));
    assert.equal(badBody.code, 'SY_ERR_QUEUE_FULL');
    assert.equal(bad.headers['retry-after'], '1');
    assert.notEqual(bad.headers['connection'], 'close', 'a small body is discarded; the connection is kept');

    // 8 MiB announced, 1 KiB sent: the answer comes while the client still owes the rest, and the connection closes.
    const big = await partialPost(srv.url, '/v2/models/mlp/versions/1/infer', 8 * 1024 * 1024, 1024);
    assert.match(big.response, /^HTTP\/1\.1 503 /);
    assert.match(big.response, /\r\nretry-after: 1\r\n/i);
    assert.match(big.response, /\r\nconnection: close\r\n/i);
    assert.match(big.response, /"code":"SY_ERR_QUEUE_FULL"/);

    // Another version of the same model has room: served (admission is per target, not per model name).
    const v2 = await inject('/v2/models/mlp/versions/2/infer', body(7));
    assert.equal(v2.statusCode, 200, v2.body);

    // Nothing refused ever reached the runtime; the held ones complete once the gate opens.
    assert.equal(gate.ran.length, warm + 1);
    gate.open();
    for (const r of await Promise.all(held)) assert.equal(r.statusCode, 200, r.body);
    // The connection that carried a small refused body still serves.
    const again = await client.request({ method: 'POST', path: '/v2/models/mlp/versions/1/infer', headers: JSON_HEADERS, body: body(3) });
    assert.equal(again.statusCode, 200, await again.body.text());
  });

  it('gRPC ModelInfer for a full queue: UNAVAILABLE + SY_ERR_QUEUE_FULL before its tensors are decoded', async () => {
    const port = await srv.sy.grpc.listen(0, '127.0.0.1');
    const grpc = new (loadProtos().InferenceClient)(`127.0.0.1:${port}`, credentials.createInsecure()) as GrpcClient;
    gate.close();
    const warm = gate.ran.length;
    const held = [0, 1, 2].map((i) => inject('/v2/models/mlp/versions/1/infer', body(i)));
    try {
      await until(() => gate.ran.length > warm && queued() === QUEUE);
      // 23 bytes for a [1,64] FP32 input: INVALID_ARGUMENT had the tensors been decoded.
      const call = (grpc as unknown as Record<string, (r: object, m: Metadata, cb: (e: ServiceError | null) => void) => void>)['ModelInfer']!.bind(grpc);
      const e = await new Promise<ServiceError | null>((resolve) =>
        call(
          { model_name: 'mlp', model_version: '1', inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64] }], raw_input_contents: [Buffer.alloc(23)] },
          new Metadata(),
          resolve,
        ),
      );
      assert.ok(e !== null, 'refused');
      assert.equal(e.code, Status.UNAVAILABLE, e.details);
      assert.equal(e.metadata.get('x-switchyard-error-code')[0], 'SY_ERR_QUEUE_FULL', e.details);
      assert.equal(gate.ran.length, warm + 1, 'the refused call never reached the runtime');
    } finally {
      gate.open();
      for (const r of await Promise.all(held)) assert.equal(r.statusCode, 200, r.body);
      grpc.close();
    }
  });

  it('a routing policy admits on the capacity of all its arms: one arm full, the other free → admitted', async () => {
    const put = await srv.sy.app.inject({
      method: 'PUT',
      url: '/api/v1/models/mlp/routing',
      headers: JSON_HEADERS,
      payload: JSON.stringify({
        arms: [
          { name: 'a', target: '1', weight: 1 },
          { name: 'b', target: '2', weight: 0 },
        ],
      }),
    });
    assert.equal(put.statusCode, 200, put.body);
    gate.close();
    const warm = gate.ran.length;
    const held = [0, 1, 2].map((i) => inject('/v2/models/mlp/versions/1/infer', body(i)));
    await until(() => gate.ran.length > warm && queued() === QUEUE);
    // Arm "a" (every request's arm: b has weight 0) is full, arm "b" is free: admitted, then refused at submit
    // by the queue as before (the arm is chosen after the body is read) — the early check never refuses a call
    // that some target could take.
    assert.equal(srv.sy.inference.admit('mlp', null, { tenant: '', flow: undefined, keyId: null, requestId: 't', header: () => undefined }), null);
    // Without the free arm (policy removed: the default route is version 2, the newest) ...
    const del = await srv.sy.app.inject({ method: 'DELETE', url: '/api/v1/models/mlp/routing' });
    assert.ok(del.statusCode < 300, del.body);
    assert.equal(srv.sy.inference.admit('mlp', null, { tenant: '', flow: undefined, keyId: null, requestId: 't', header: () => undefined }), null);
    // ... and a policy whose only arm is the full version refuses early.
    const only = await srv.sy.app.inject({
      method: 'PUT',
      url: '/api/v1/models/mlp/routing',
      headers: JSON_HEADERS,
      payload: JSON.stringify({ arms: [{ name: 'a', target: '1', weight: 1 }] }),
    });
    assert.equal(only.statusCode, 200, only.body);
    const refused = await inject('/v2/models/mlp/infer', '{not json');
    assert.equal(refused.statusCode, 503, refused.body);
    assert.equal(refused.json().code, 'SY_ERR_QUEUE_FULL');
    // With a fallback that has room, it is admitted again.
    const fb = await srv.sy.app.inject({
      method: 'PUT',
      url: '/api/v1/models/mlp/routing',
      headers: JSON_HEADERS,
      payload: JSON.stringify({ arms: [{ name: 'a', target: '1', weight: 1 }], fallback: [{ version: '2' }] }),
    });
    assert.equal(fb.statusCode, 200, fb.body);
    const served = await inject('/v2/models/mlp/infer', body(9));
    assert.equal(served.statusCode, 200, served.body);
    assert.equal(served.headers['x-switchyard-fallback'], 'queue_full');
    gate.open();
    for (const r of await Promise.all(held)) assert.equal(r.statusCode, 200, r.body);
  });
});

describe('Batcher.admits agrees with submit', () => {
  it('a full queue refuses the flow holding the most and admits a flow that would evict it', () => {
    const instance: ModelInstance = { inflight: 1, run: () => new Promise(() => undefined), dispose: async () => undefined };
    const b = new Batcher([instance], { maxBatchSize: 0, maxQueueDelayUs: 0, maxQueueSize: 2, preferredBatchSizes: [] } as unknown as ConstructorParameters<
      typeof Batcher
    >[1]);
    const t = { dtype: { v2: 'FP32' }, shape: [1], data: new Float32Array(1) } as unknown as Parameters<Batcher['submit']>[0][number];
    const a = { id: 'a', weight: 1 };
    const c = { id: 'c', weight: 1 };
    assert.equal(b.admits(a), true);
    for (let i = 0; i < 2; i++) b.submit([t], 1, 0, null, a).result.catch(() => undefined);
    assert.equal(b.queued, 2);
    assert.equal(b.admits(a), false);
    assert.throws(() => b.submit([t], 1, 0, null, a), /queue is full/);
    assert.equal(b.admits(c), true, 'c holds fewer: it would evict one of a');
    b.submit([t], 1, 0, null, c).result.catch(() => undefined);
    assert.equal(b.admits(c), false, 'a and c now hold one each: c would hold more');
    assert.throws(() => b.submit([t], 1, 0, null, c), /queue is full/);
    assert.equal(b.queued, 2);
  });
});
