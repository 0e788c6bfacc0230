/**
 * Bounded memory per request: rows and elements per request (server-wide and per model) are checked on the
 * shapes before any data is decoded (413 SY_ERR_TENSOR_TOO_LARGE), and decompression stops at --max-inflate-mb
 * (a bomb is 413 after inflating at most that much).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { deflateSync, gzipSync } from 'node:zlib';
import { mlp } from '../tools/onnx/zoo.js';
import { binaryBody, floats, startSwitchyard, type TestServer } from './helpers.js';

const INFLATE_MB = 1;

describe('per-request limits', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startSwitchyard(
      {
        mlp: { versions: { 1: mlp(1) } },
        small: { versions: { 1: mlp(2) }, config: { max_request_rows: 4 } },
        roomy: { versions: { 1: mlp(3) }, config: { max_request_rows: 0, max_request_elements: 0 } },
      },
      { config: { maxRequestRows: 16, maxRequestElements: 16 * 64, maxInflateMb: INFLATE_MB } },
    );
  });
  after(() => srv.close());

  const post = (model: string, payload: string | Buffer, headers: Record<string, string> = {}) =>
    srv.sy.app.inject({
      method: 'POST',
      url: `/v2/models/${model}/infer`,
      headers: { 'content-type': 'application/json', ...headers },
      payload,
    });
  const body = (rows: number, data: number[] = floats(rows * 64, rows)) =>
    JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 64], data }] });

  it('a request within the limits is served', async () => {
    const r = await post('mlp', body(16));
    assert.equal(r.statusCode, 200, r.body);
  });

  it('rows over the server limit: 413 before the data is decoded (the data here would be a 400 if it were)', async () => {
    const r = await post('mlp', body(100_000, [1]));
    assert.equal(r.statusCode, 413, r.body);
    assert.deepEqual(r.json(), { error: 'input "features" has 100000 rows; one request may carry at most 16', code: 'SY_ERR_TENSOR_TOO_LARGE' });
  });

  it('elements over the limit, over all inputs, and absurd shapes: 413 before decoding', async () => {
    const r = await post('mlp', JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 2 ** 40], data: [1] }] }));
    assert.equal(r.statusCode, 413, r.body);
    assert.match(r.json().error, /brings the request to 1099511627776 elements; one request may carry at most 1024/);
    const two = JSON.stringify({
      inputs: [
        { name: 'features', datatype: 'FP32', shape: [8, 64], data: [] },
        { name: 'extra', datatype: 'FP32', shape: [8, 64], data: [] },
        { name: 'more', datatype: 'FP32', shape: [1, 1], data: [] },
      ],
    });
    const r2 = await post('mlp', two);
    assert.equal(r2.statusCode, 413, r2.body);
    assert.match(r2.json().error, /input "more" brings the request to 1025 elements/);
  });

  it('the binary extension is checked the same way, before its bytes are read', async () => {
    const { body: b, headerLength } = binaryBody({ inputs: [{ name: 'features', datatype: 'FP32', shape: [17, 64], parameters: { binary_data_size: 4 } }] }, [
      new Uint8Array(4),
    ]);
    const r = await post('mlp', b, { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) });
    assert.equal(r.statusCode, 413, r.body);
    assert.equal(r.json().code, 'SY_ERR_TENSOR_TOO_LARGE');
  });

  it("a model's max_request_rows overrides the server's, both ways (0 = no limit)", async () => {
    const r = await post('small', body(5));
    assert.equal(r.statusCode, 413, r.body);
    assert.match(r.json().error, /at most 4$/);
    assert.equal((await post('small', body(4))).statusCode, 200);
    const roomy = await post('roomy', body(64));
    assert.equal(roomy.statusCode, 200, roomy.body);
  });

  it('feature-joined requests: entity rows count against the row limit', async () => {
    const entities = Array.from({ length: 17 }, (_, i) => ({ user_id: i }));
    const r = await post('mlp', JSON.stringify({ parameters: { entities } }));
    assert.equal(r.statusCode, 413, r.body);
    assert.match(r.json().error, /names 17 entities; one request may carry at most 16 rows/);
  });

  it('a gzip or deflate bomb is refused once inflating passes --max-inflate-mb; a normal compressed body is served', async () => {
    const bomb = Buffer.alloc(8 * 1024 * 1024, 0x20); // 8 MiB of spaces: ~8 KiB compressed
    for (const [encoding, packed] of [
      ['gzip', gzipSync(bomb)],
      ['deflate', deflateSync(bomb)],
    ] as const) {
      assert.ok(packed.length < 128 * 1024);
      const r = await post('mlp', packed, { 'content-encoding': encoding });
      assert.equal(r.statusCode, 413, r.body);
      assert.deepEqual(r.json(), {
        error: `decompressed request body is larger than the server limit of ${INFLATE_MB * 1048576} bytes (see --max-inflate-mb)`,
        code: 'SY_ERR_BODY_TOO_LARGE',
      });
    }
    const ok = await post('mlp', gzipSync(body(2)), { 'content-encoding': 'gzip' });
    assert.equal(ok.statusCode, 200, ok.body);
  });

  it('many bombs at once: all refused, the server keeps serving', async () => {
    const packed = gzipSync(Buffer.alloc(4 * 1024 * 1024, 0x5b));
    const all = await Promise.all(Array.from({ length: 32 }, () => post('mlp', packed, { 'content-encoding': 'gzip' })));
    assert.deepEqual(new Set(all.map((r) => r.statusCode)), new Set([413]));
    assert.equal((await post('mlp', body(1))).statusCode, 200);
  });
});
