/**
 * Shutdown and slow clients. The grace period is an upper bound: with a runtime that never finishes (a gated
 * runtime whose gate stays shut), close() still completes — before the gate is ever opened — and the request
 * stuck in it has its connection closed. Requests that arrive while closing get the documented 503 +
 * Retry-After. Clients that send headers or a body too slowly are cut off by node:http's timeouts.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, describe, it } from 'node:test';
import { Client } from 'undici';
import { mlp } from '../tools/onnx/zoo.js';
import { gatedRuntime, until } from './gated-runtime.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';
import { createHash } from 'node:crypto';

const MLP = mlp(4);
const body = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, 1) }] });

describe('shutdown', () => {
  it('the grace period bounds close(): a run that never finishes does not hold the process; late arrivals get 503 + Retry-After', async () => {
    const gate = gatedRuntime([createHash('sha256').update(MLP).digest('hex')]);
    const srv = await startSwitchyard(
      { mlp: { versions: { 1: MLP }, config: { instances: 1 } } },
      { listen: true, runtime: gate.runtime, config: { shutdownGraceMs: 200 } },
    );
    gate.close();
    const warm = gate.ran.length; // rows the warmup ran
    const client = new Client(srv.url);
    try {
      const stuck = client.request({ method: 'POST', path: '/v2/models/mlp/infer', headers: { 'content-type': 'application/json' }, body }).then(
        (r) => ({ status: r.statusCode }),
        (e: Error) => ({ error: e.name }),
      );
      await until(() => gate.ran.length > warm); // the request is running inside the gated instance
      let closed = false;
      const closing = srv.sy.close().then(() => {
        closed = true;
      });
      // A request arriving while the server drains: the documented shape, Retry-After, connection closed.
      const late = await srv.sy.app.inject({ method: 'POST', url: '/v2/models/mlp/infer', headers: { 'content-type': 'application/json' }, payload: body });
      assert.equal(late.statusCode, 503, late.body);
      assert.deepEqual(late.json(), { error: 'the server is shutting down; retry on another replica', code: 'SY_ERR_SHUTTING_DOWN' });
      assert.equal(late.headers['retry-after'], '1');
      assert.equal(late.headers['connection'], 'close');
      assert.ok(late.headers['x-request-id']);
      await closing;
      // The gate was never opened: close() ended on its grace bound, not because the run finished.
      assert.equal(closed, true);
      assert.equal(gate.ran.length, warm + 1);
      assert.deepEqual(await stuck, { error: 'SocketError' }, 'the stuck request had its connection closed');
    } finally {
      gate.open();
      await client.close().catch(() => undefined);
      await srv.close();
    }
  });
});

describe('slow clients', () => {
  let srv: TestServer;
  after(() => srv.close());

  /** Open a raw connection, send `chunks` and resolve with what the server wrote once it closes the connection. */
  const slowClient = (url: string, first: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const { hostname, port } = new URL(url);
      const sock = connect(Number(port), hostname, () => sock.write(first));
      let got = '';
      sock.on('data', (d: Buffer) => (got += d.toString()));
      sock.on('close', () => resolve(got));
      sock.on('error', reject);
    });

  it('headers not completed within headersTimeoutMs, or a body not completed within requestTimeoutMs: 408 and the connection is closed', async () => {
    srv = await startSwitchyard({ mlp: { versions: { 1: MLP } } }, { listen: true, config: { headersTimeoutMs: 100, requestTimeoutMs: 300 } });
    const headers = await slowClient(srv.url, 'POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n');
    assert.match(headers, /^HTTP\/1\.1 408/);
    const bodyCut = await slowClient(
      srv.url,
      `POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
    );
    assert.match(bodyCut, /^HTTP\/1\.1 408/);
    // The server still serves.
    const ok = await fetch(`${srv.url}/v2/models/mlp/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    assert.equal(ok.status, 200);
  });
});
