/**
 * BYTES are bytes end to end: what a client sends comes back byte for byte, and what a path cannot carry
 * unaltered (non-UTF-8 or NUL bytes into onnxruntime's string tensors, an unpaired surrogate in JSON,
 * non-UTF-8 bytes out as a JSON string) is refused with 400 SY_ERR_NOT_REPRESENTABLE naming the tensor and the
 * element: never replaced by U+FFFD, never cut at a NUL. The refusal happens per request, before batching, so
 * a caller's unfit bytes never fail another caller's request in the same batch.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DTYPES, decodeBinaryData, encodeBinaryData, encodeJsonData } from '../src/tensor/index.js';
import { GraphBuilder } from '../tools/onnx/graph.js';
import { OnnxType } from '../tools/onnx/proto.js';
import { binaryBody, splitBinary, startSwitchyard, type TestServer } from './helpers.js';

/** Identity on a BYTES tensor `s` [N, -1]. */
function echo(): Uint8Array {
  const g = new GraphBuilder('echo');
  g.input({ name: 's', type: OnnxType.STRING, shape: ['batch', 'width'] });
  g.op('Identity', ['s'], undefined, 'out');
  g.output({ name: 'out', type: OnnxType.STRING, shape: ['batch', 'width'] });
  return g.encode();
}

/** The binary extension's BYTES encoding of `elements`. */
const bytesChunk = (elements: Uint8Array[]): Uint8Array => encodeBinaryData(DTYPES.BYTES, elements);

describe('BYTES carried faithfully', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startSwitchyard({ echo: { versions: { 1: echo() }, config: { max_batch_size: 8, max_queue_delay_us: 20_000 } } });
  });
  after(() => srv.close());

  const binary = (elements: Uint8Array[], out: 'binary' | 'json' = 'binary') => {
    const chunk = bytesChunk(elements);
    const { body, headerLength } = binaryBody(
      {
        inputs: [{ name: 's', datatype: 'BYTES', shape: [1, elements.length], parameters: { binary_data_size: chunk.length } }],
        parameters: { binary_data_output: out === 'binary' },
      },
      [chunk],
    );
    return srv.sy.app.inject({
      method: 'POST',
      url: '/v2/models/echo/infer',
      payload: body,
      headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) },
    });
  };

  it('round-trips multi-byte UTF-8, empty elements and every printable byte over the binary extension, byte for byte', async () => {
    const sent = [Buffer.from('héllo ✓ 𝄞'), new Uint8Array(0), Buffer.from(Array.from({ length: 95 }, (_, i) => 32 + i))].map((b) => new Uint8Array(b));
    const r = await binary(sent);
    assert.equal(r.statusCode, 200, r.body);
    const { json, rest } = splitBinary(r.rawPayload, Number(r.headers['inference-header-content-length']));
    assert.deepEqual(json.outputs[0]!.shape, [1, 3]);
    const got = decodeBinaryData('out', DTYPES.BYTES, 3, rest) as Uint8Array[];
    assert.deepEqual(
      got.map((b) => Buffer.from(b).toString('hex')),
      sent.map((b) => Buffer.from(b).toString('hex')),
    );
  });

  it('refuses a NUL byte or invalid UTF-8 for the ONNX runtime (400 naming the input and element), never alters it', async () => {
    const nul = await binary([new Uint8Array([97]), new Uint8Array([97, 0, 98])]);
    assert.equal(nul.statusCode, 400, nul.body);
    assert.equal(nul.json().code, 'SY_ERR_NOT_REPRESENTABLE');
    assert.match(nul.json().error, /input "s": BYTES element 1 contains a NUL byte/);
    const latin1 = await binary([new Uint8Array([0xff, 0xfe, 0x41])]);
    assert.equal(latin1.statusCode, 400, latin1.body);
    assert.match(latin1.json().error, /input "s": BYTES element 0 is not valid UTF-8/);
  });

  it("one caller's unfit bytes do not fail the requests it would have shared a batch with", async () => {
    const good = (i: number) => binary([new Uint8Array(Buffer.from(`ok ${i}`))]);
    const results = await Promise.all([good(0), binary([new Uint8Array([0xc3])]), good(1), good(2)]);
    assert.deepEqual(
      results.map((r) => r.statusCode),
      [200, 400, 200, 200],
    );
  });

  it('JSON: text in and out; an unpaired surrogate is refused rather than replaced', async () => {
    const r = await srv.sy.app.inject({
      method: 'POST',
      url: '/v2/models/echo/infer',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ inputs: [{ name: 's', datatype: 'BYTES', shape: [1, 2], data: ['a "quoted" ✓', '𝄞'] }] }),
    });
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(r.json().outputs[0].data, ['a "quoted" ✓', '𝄞']);
    const lone = await srv.sy.app.inject({
      method: 'POST',
      url: '/v2/models/echo/infer',
      headers: { 'content-type': 'application/json' },
      payload: '{"inputs":[{"name":"s","datatype":"BYTES","shape":[1,1],"data":["\\ud800x"]}]}',
    });
    assert.equal(lone.statusCode, 400, lone.body);
    assert.equal(lone.json().code, 'SY_ERR_NOT_REPRESENTABLE');
    assert.match(lone.json().error, /input "s": element 0 holds an unpaired UTF-16 surrogate/);
  });

  it('a BYTES value that is not UTF-8 is never written as a JSON string (the encoder refuses it)', () => {
    assert.throws(
      () => encodeJsonData(DTYPES.BYTES, [new Uint8Array([0x61]), new Uint8Array([0xff])], 'output "out"'),
      (e: Error & { code?: string }) => e.code === 'SY_ERR_NOT_REPRESENTABLE' && /output "out": BYTES element 1 is not valid UTF-8/.test(e.message),
    );
    assert.equal(encodeJsonData(DTYPES.BYTES, [new Uint8Array(Buffer.from('ü'))]), '["ü"]');
  });

  it('binary decoding never reads past the buffer and keeps the bytes as sent (views, no decoding)', () => {
    const body = bytesChunk([new Uint8Array([0, 0xff, 0x80]), new Uint8Array([1])]);
    const got = decodeBinaryData('s', DTYPES.BYTES, 2, body) as Uint8Array[];
    assert.deepEqual(
      got.map((b) => [...b]),
      [[0, 0xff, 0x80], [1]],
    );
    assert.throws(() => decodeBinaryData('s', DTYPES.BYTES, 1, new Uint8Array([255, 255, 255, 255, 1])), /claims 4294967295 bytes, only 1 left/);
    assert.throws(() => decodeBinaryData('s', DTYPES.BYTES, 1, new Uint8Array([1, 0])), /truncated BYTES element length/);
  });
});
