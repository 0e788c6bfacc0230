import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import ort from 'onnxruntime-node';
import type { ErrorCode } from '../src/errors.js';
import { DTYPES, encodeBinaryData, fromHalfBits, toHalfBits } from '../src/tensor/index.js';
import { allTypes, ALL_TYPES, fixedAffine, mlp } from '../tools/onnx/zoo.js';
import { assertClose, binaryBody, floats, referenceRun, splitBinary, startSwitchyard, type TestServer } from './helpers.js';

const MLP1 = mlp(7);
const MLP2 = mlp(8);
/** Served vs direct onnxruntime: same library and CPU; batching may change GEMM blocking, hence a tolerance. */
const TOL = 1e-5;

let srv: TestServer;
before(async () => {
  srv = await startSwitchyard({
    mlp: { versions: { 1: MLP1, 2: MLP2 }, config: { version_policy: { all: {} } } },
    all_types: { versions: { 1: allTypes() } },
    fixed_affine: { versions: { 1: fixedAffine() } },
    // The same model on worker threads: inputs cross to another thread (decoded inputs are views on shared slabs).
    mlp_worker: { versions: { 1: MLP1 }, config: { instance_mode: 'worker', instances: 2 } },
  });
});
after(() => srv.close());

const post = (url: string, payload: unknown, headers: Record<string, string> = {}) =>
  srv.sy.app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json', ...headers },
    payload: typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload),
  });

const mlpRequest = (rows: number, seed: number) => ({ inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 64], data: floats(rows * 64, seed) }] });

async function mlpReference(bytes: Uint8Array, rows: number, seed: number): Promise<Float32Array> {
  const out = await referenceRun(bytes, { features: new ort.Tensor('float32', Float32Array.from(floats(rows * 64, seed)), [rows, 64]) });
  return out['score']!.data as Float32Array;
}

describe('V2 health and metadata', () => {
  it('GET /v2 returns server metadata with the supported extensions', async () => {
    const r = await srv.sy.app.inject('/v2');
    assert.equal(r.statusCode, 200);
    const body = r.json();
    assert.equal(body.name, 'switchyard');
    assert.equal(typeof body.version, 'string');
    assert.ok(body.extensions.includes('binary_tensor_data'));
  });
  it('live and ready are 200 when every model is ready', async () => {
    assert.equal((await srv.sy.app.inject('/v2/health/live')).statusCode, 200);
    assert.equal((await srv.sy.app.inject('/v2/health/ready')).statusCode, 200);
  });
  it('model metadata reads the signature from the ONNX file, -1 for dynamic dims', async () => {
    const r = await srv.sy.app.inject('/v2/models/mlp');
    assert.equal(r.statusCode, 200);
    assert.deepEqual(r.json(), {
      name: 'mlp',
      versions: ['1', '2'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 64] }],
      outputs: [{ name: 'score', datatype: 'FP32', shape: [-1, 1] }],
    });
    const fixed = (await srv.sy.app.inject('/v2/models/fixed_affine/versions/1')).json();
    assert.deepEqual(fixed.inputs, [{ name: 'x', datatype: 'FP32', shape: [2, 3] }]);
  });
  it('model and version readiness', async () => {
    assert.equal((await srv.sy.app.inject('/v2/models/mlp/ready')).statusCode, 200);
    assert.equal((await srv.sy.app.inject('/v2/models/mlp/versions/1/ready')).statusCode, 200);
    assert.equal((await srv.sy.app.inject('/v2/models/mlp/versions/9/ready')).statusCode, 404);
    assert.equal((await srv.sy.app.inject('/v2/models/nope/ready')).statusCode, 404);
  });
  it('every response carries an x-request-id, echoing a valid incoming one', async () => {
    const r = await srv.sy.app.inject({ url: '/v2', headers: { 'x-request-id': 'abc-123' } });
    assert.equal(r.headers['x-request-id'], 'abc-123');
    const generated = /^[0-9a-f]{16}-[0-9a-f]{8,}$/;
    assert.match(String((await srv.sy.app.inject('/v2/health/live')).headers['x-request-id']), generated);
    // An id that is not a sane token (spaces, over 128 characters) is replaced, not echoed into headers and logs.
    for (const bad of ['has spaces', 'x'.repeat(129)]) {
      assert.match(String((await srv.sy.app.inject({ url: '/v2', headers: { 'x-request-id': bad } })).headers['x-request-id']), generated);
    }
  });
});

describe('V2 inference (JSON)', () => {
  it('single and multi-row requests equal a direct onnxruntime run', async () => {
    for (const rows of [1, 5]) {
      const r = await post('/v2/models/mlp/versions/1/infer', { id: 'req-7', ...mlpRequest(rows, rows) });
      assert.equal(r.statusCode, 200, r.body);
      const body = r.json();
      assert.equal(body.model_name, 'mlp');
      assert.equal(body.model_version, '1');
      assert.equal(body.id, 'req-7');
      assert.deepEqual(body.outputs[0].shape, [rows, 1]);
      assertClose(body.outputs[0].data, await mlpReference(MLP1, rows, rows), TOL, `mlp rows=${rows}`);
    }
  });
  it('without a version the newest ready version serves, and versions differ', async () => {
    const latest = (await post('/v2/models/mlp/infer', mlpRequest(1, 3))).json();
    assert.equal(latest.model_version, '2');
    assertClose(latest.outputs[0].data, await mlpReference(MLP2, 1, 3), TOL, 'mlp v2');
    const v1 = (await post('/v2/models/mlp/versions/1/infer', mlpRequest(1, 3))).json();
    assert.notDeepEqual(v1.outputs[0].data, latest.outputs[0].data);
  });
  it('splits batched outputs back to the right callers under concurrency', async () => {
    const n = 120;
    const rowsOf = (i: number): number => 1 + (i % 3);
    const responses = await Promise.all(
      Array.from({ length: n }, (_, i) => post('/v2/models/mlp/versions/1/infer', { id: `c${i}`, ...mlpRequest(rowsOf(i), 1000 + i) })),
    );
    for (let i = 0; i < n; i++) {
      const r = responses[i]!;
      assert.equal(r.statusCode, 200, r.body);
      const body = r.json();
      assert.equal(body.id, `c${i}`);
      assertClose(body.outputs[0].data, await mlpReference(MLP1, rowsOf(i), 1000 + i), TOL, `caller ${i}`);
    }
    const metrics = (await srv.sy.app.inject('/metrics')).body;
    const sum = Number(/switchyard_batch_size_requests_sum\{model="mlp",version="1"\} (\d+)/.exec(metrics)?.[1]);
    const count = Number(/switchyard_batch_size_requests_count\{model="mlp",version="1"\} (\d+)/.exec(metrics)?.[1]);
    assert.ok(sum > count, `expected some batch to hold several requests (requests ${sum}, batches ${count})`);
  });
  it('worker-thread instances answer single and concurrent requests exactly as a direct run', async () => {
    for (const rows of [1, 3]) {
      const r = await post('/v2/models/mlp_worker/infer', mlpRequest(rows, 40 + rows));
      assert.equal(r.statusCode, 200, r.body);
      assertClose(r.json().outputs[0].data, await mlpReference(MLP1, rows, 40 + rows), TOL, `${rows} rows`);
    }
    const n = 40;
    const responses = await Promise.all(Array.from({ length: n }, (_, i) => post('/v2/models/mlp_worker/infer', mlpRequest(1 + (i % 2), 500 + i))));
    for (let i = 0; i < n; i++) {
      assert.equal(responses[i]!.statusCode, 200, responses[i]!.body);
      assertClose(responses[i]!.json().outputs[0].data, await mlpReference(MLP1, 1 + (i % 2), 500 + i), TOL, `caller ${i}`);
    }
  });
  it('round-trips every datatype, nested or flat', async () => {
    const values: Record<string, unknown[]> = {
      BOOL: [true, false, true, false],
      UINT8: [0, 1, 254, 255],
      UINT16: [0, 1, 65534, 65535],
      UINT32: [0, 1, 4294967294, 4294967295],
      UINT64: [0, 1, 2 ** 40, 2 ** 53 - 1],
      INT8: [-128, -1, 0, 127],
      INT16: [-32768, -1, 0, 32767],
      INT32: [-2147483648, -1, 0, 2147483647],
      INT64: [-(2 ** 53 - 1), -1, 0, 2 ** 53 - 1],
      FP16: [0, 1, -2, 0.5],
      FP32: [0.25, -1.5, 3, 1e-3],
      FP64: [0.1, -1e300, 3, Math.PI],
      BYTES: ['', 'a', 'héllo', 'x y'],
    };
    const inputs = ALL_TYPES.map(([v2], i) => ({
      name: `in_${v2.toLowerCase()}`,
      datatype: v2,
      shape: [2, 2],
      data: i % 2 ? values[v2] : [values[v2]!.slice(0, 2), values[v2]!.slice(2)],
    }));
    const r = await post('/v2/models/all_types/infer', { inputs });
    assert.equal(r.statusCode, 200, r.body);
    const outs = r.json().outputs as Array<{ name: string; datatype: string; shape: number[]; data: unknown[] }>;
    assert.equal(outs.length, ALL_TYPES.length);
    for (const [v2] of ALL_TYPES) {
      const o = outs.find((x) => x.name === `out_${v2.toLowerCase()}`)!;
      assert.equal(o.datatype, v2);
      assert.deepEqual(o.shape, [2, 2]);
      const expected = v2 === 'FP32' ? (values[v2] as number[]).map((v) => Math.fround(v)) : values[v2];
      assert.deepEqual(o.data, expected, v2);
    }
  });
  it('returns only the requested outputs, in the requested order', async () => {
    const inputs = ALL_TYPES.map(([v2]) => ({
      name: `in_${v2.toLowerCase()}`,
      datatype: v2,
      shape: [1, 1],
      data: [v2 === 'BOOL' ? true : v2 === 'BYTES' ? 'z' : 1],
    }));
    const r = await post('/v2/models/all_types/infer', { inputs, outputs: [{ name: 'out_int8' }, { name: 'out_bytes' }] });
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(
      r.json().outputs.map((o: { name: string }) => o.name),
      ['out_int8', 'out_bytes'],
    );
  });
  it('serves an unbatched model (fixed first dimension)', async () => {
    const r = await post('/v2/models/fixed_affine/infer', {
      inputs: [
        {
          name: 'x',
          datatype: 'FP32',
          shape: [2, 3],
          data: [
            [1, 2, 3],
            [4, 5, 6],
          ],
        },
      ],
    });
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(r.json().outputs[0].data, [3, 5, 7, 9, 11, 13]);
  });
  it('accepts a gzip-compressed body and custom parameters', async () => {
    const body = gzipSync(JSON.stringify({ parameters: { my_param: 42 }, ...mlpRequest(2, 9) }));
    const r = await post('/v2/models/mlp/versions/1/infer', body, { 'content-encoding': 'gzip' });
    assert.equal(r.statusCode, 200, r.body);
    assertClose(r.json().outputs[0].data, await mlpReference(MLP1, 2, 9), TOL, 'gzip');
  });
});

describe('V2 binary tensor data extension', () => {
  const typed: Record<string, () => Uint8Array> = {};
  const sample: Record<string, unknown[]> = {
    BOOL: [1, 0],
    UINT8: [1, 255],
    UINT16: [1, 65535],
    UINT32: [1, 4294967295],
    UINT64: [1n, 2n ** 63n],
    INT8: [-128, 127],
    INT16: [-32768, 32767],
    INT32: [-5, 5],
    INT64: [-(2n ** 62n), 3n],
    FP16: [toHalfBits(1.5), toHalfBits(-2)],
    FP32: [1.25, -0.5],
    FP64: [Math.E, -1e-300],
    BYTES: ['bin', 'ärY'],
  };
  for (const [v2] of ALL_TYPES) {
    typed[v2] = () => {
      const d = DTYPES[v2 as keyof typeof DTYPES];
      return encodeBinaryData(
        d,
        d.array === null
          ? (sample[v2] as string[]).map((x) => new Uint8Array(Buffer.from(x)))
          : new (d.array as unknown as new (a: unknown[]) => Uint8Array)(sample[v2]!),
      );
    };
  }

  it('takes binary inputs and returns binary outputs for every datatype', async () => {
    const chunks = ALL_TYPES.map(([v2]) => typed[v2]!());
    const { body, headerLength } = binaryBody(
      {
        inputs: ALL_TYPES.map(([v2], i) => ({
          name: `in_${v2.toLowerCase()}`,
          datatype: v2,
          shape: [1, 2],
          parameters: { binary_data_size: chunks[i]!.length },
        })),
        parameters: { binary_data_output: true },
      },
      chunks,
    );
    const r = await post('/v2/models/all_types/infer', body, {
      'inference-header-content-length': String(headerLength),
      'content-type': 'application/octet-stream',
    });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.headers['content-type'], 'application/octet-stream');
    const hl = Number(r.headers['inference-header-content-length']);
    const { json, rest } = splitBinary(r.rawPayload, hl);
    let offset = 0;
    for (const o of json.outputs) {
      const size = o.parameters!.binary_data_size!;
      assert.equal(o.data, undefined);
      const expected = typed[o.datatype]!();
      assert.deepEqual([...rest.subarray(offset, offset + size)], [...expected], o.name);
      offset += size;
    }
    assert.equal(offset, rest.length);
  });
  it('mixes binary inputs with JSON outputs, and per-output binary_data', async () => {
    const x = Float32Array.from(floats(128, 77));
    const { body, headerLength } = binaryBody(
      { inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 64], parameters: { binary_data_size: x.byteLength } }] },
      [new Uint8Array(x.buffer)],
    );
    const asJson = await post('/v2/models/mlp/versions/1/infer', body, { 'inference-header-content-length': String(headerLength) });
    assert.equal(asJson.statusCode, 200, asJson.body);
    assertClose(asJson.json().outputs[0].data, await mlpReference(MLP1, 2, 77), TOL, 'binary in, JSON out');

    const r = await post('/v2/models/mlp/versions/1/infer', { ...mlpRequest(2, 77), outputs: [{ name: 'score', parameters: { binary_data: true } }] });
    const { json, rest } = splitBinary(r.rawPayload, Number(r.headers['inference-header-content-length']));
    assert.equal(json.outputs[0]!.parameters!.binary_data_size, 8);
    assertClose(new Float32Array(rest.buffer.slice(rest.byteOffset, rest.byteOffset + 8)), await mlpReference(MLP1, 2, 77), TOL, 'JSON in, binary out');
  });
  it('FP16 JSON values are converted to half precision', async () => {
    const inputs = ALL_TYPES.map(([v2]) => ({
      name: `in_${v2.toLowerCase()}`,
      datatype: v2,
      shape: [1, 1],
      data: [v2 === 'BOOL' ? true : v2 === 'BYTES' ? 'z' : v2 === 'FP16' ? 0.1 : 1],
    }));
    const r = await post('/v2/models/all_types/infer', { inputs, outputs: [{ name: 'out_fp16' }] });
    assert.deepEqual(r.json().outputs[0].data, [fromHalfBits(toHalfBits(0.1))]);
  });
});

describe('V2 bad input: a precise 4xx, and the server keeps serving', () => {
  const cases: Array<{ what: string; url?: string; body: unknown; headers?: Record<string, string>; status: number; code: ErrorCode; match: RegExp }> = [
    { what: 'malformed JSON', body: '{"inputs": [', status: 400, code: 'SY_ERR_INVALID_JSON', match: /not valid JSON/ },
    { what: 'not an object', body: '[1,2]', status: 400, code: 'SY_ERR_BAD_REQUEST', match: /must be a JSON object/ },
    { what: 'no inputs', body: { inputs: [] }, status: 400, code: 'SY_ERR_BAD_REQUEST', match: /"inputs" must be a non-empty array/ },
    {
      what: 'wrong dtype',
      body: { inputs: [{ name: 'features', datatype: 'FP64', shape: [1, 64], data: floats(64, 1) }] },
      status: 400,
      code: 'SY_ERR_INPUT_INVALID',
      match: /input "features": datatype FP64 does not match the model's FP32/,
    },
    {
      what: 'unknown dtype',
      body: { inputs: [{ name: 'features', datatype: 'FLOAT', shape: [1, 64], data: [] }] },
      status: 400,
      code: 'SY_ERR_INPUT_INVALID',
      match: /unknown datatype "FLOAT"/,
    },
    {
      what: 'wrong shape',
      body: { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 63], data: floats(63, 1) }] },
      status: 400,
      code: 'SY_ERR_INPUT_INVALID',
      match: /shape \[1,63\] does not match the model's \[-1,64\] \(dim 1 must be 64\)/,
    },
    {
      what: 'wrong rank',
      body: { inputs: [{ name: 'features', datatype: 'FP32', shape: [64], data: floats(64, 1) }] },
      status: 400,
      code: 'SY_ERR_INPUT_INVALID',
      match: /rank 1, the model expects rank 2/,
    },
    {
      what: 'data length mismatch',
      body: { inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 64], data: floats(64, 1) }] },
      status: 400,
      code: 'SY_ERR_INPUT_INVALID',
      match: /shape implies 128 elements but data has 64/,
    },
    {
      what: 'bad element',
      body: { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: [...floats(63, 1), 'x'] }] },
      status: 400,
      code: 'SY_ERR_INPUT_INVALID',
      match: /element 63 is "x", expected a number/,
    },
    {
      what: 'unknown input name',
      body: { inputs: [{ name: 'feature', datatype: 'FP32', shape: [1, 64], data: floats(64, 1) }] },
      status: 400,
      code: 'SY_ERR_INPUT_INVALID',
      match: /unknown input "feature" for model "mlp"; expected inputs: features/,
    },
    {
      what: 'duplicate input',
      body: { inputs: [mlpRequest(1, 1).inputs[0], mlpRequest(1, 1).inputs[0]] },
      status: 400,
      code: 'SY_ERR_BAD_REQUEST',
      match: /appears more than once/,
    },
    {
      what: 'negative shape',
      body: { inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 64], data: [] }] },
      status: 400,
      code: 'SY_ERR_BAD_REQUEST',
      match: /non-negative integers/,
    },
    {
      what: 'unknown output',
      body: { ...mlpRequest(1, 1), outputs: [{ name: 'nope' }] },
      status: 400,
      code: 'SY_ERR_OUTPUT_UNKNOWN',
      match: /unknown output "nope" for model "mlp"; outputs are: score/,
    },
    {
      what: 'bad timeout parameter',
      body: { ...mlpRequest(1, 1), parameters: { timeout: -5 } },
      status: 400,
      code: 'SY_ERR_BAD_REQUEST',
      match: /parameters.timeout/,
    },
    {
      what: 'binary size without header',
      body: { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], parameters: { binary_data_size: 256 } }] },
      status: 400,
      code: 'SY_ERR_BAD_REQUEST',
      match: /no Inference-Header-Content-Length/,
    },
    {
      what: 'header length past body',
      body: mlpRequest(1, 1),
      headers: { 'inference-header-content-length': '999999' },
      status: 400,
      code: 'SY_ERR_BAD_REQUEST',
      match: /exceeds the body length/,
    },
    {
      what: 'unsupported encoding',
      body: mlpRequest(1, 1),
      headers: { 'content-encoding': 'br' },
      status: 415,
      code: 'SY_ERR_UNSUPPORTED_MEDIA',
      match: /Content-Encoding "br" is not supported/,
    },
    {
      what: 'unknown model',
      url: '/v2/models/nope/infer',
      body: mlpRequest(1, 1),
      status: 404,
      code: 'SY_ERR_MODEL_NOT_FOUND',
      match: /model "nope" not found/,
    },
    {
      what: 'unknown version',
      url: '/v2/models/mlp/versions/7/infer',
      body: mlpRequest(1, 1),
      status: 404,
      code: 'SY_ERR_MODEL_NOT_FOUND',
      match: /model "mlp" has no version "7"/,
    },
    { what: 'unknown route', url: '/v2/modelz', body: {}, status: 404, code: 'SY_ERR_ROUTE_NOT_FOUND', match: /no route for POST \/v2\/modelz/ },
  ];
  for (const c of cases) {
    it(`${c.what} → ${c.status}`, async () => {
      const r = await post(c.url ?? '/v2/models/mlp/versions/1/infer', c.body, c.headers);
      assert.equal(r.statusCode, c.status, r.body);
      const body = r.json();
      assert.equal(typeof body.error, 'string');
      assert.match(body.error, c.match);
      // Clients match on the stable code: it follows the message, in this key order.
      assert.deepEqual(Object.keys(body), ['error', 'code']);
      assert.equal(body.code, c.code);
    });
  }
  it('binary data size mismatch names the input', async () => {
    const { body, headerLength } = binaryBody({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], parameters: { binary_data_size: 8 } }] }, [
      new Uint8Array(8),
    ]);
    const r = await post('/v2/models/mlp/versions/1/infer', body, { 'inference-header-content-length': String(headerLength) });
    assert.equal(r.statusCode, 400);
    assert.match(r.json().error, /input "features": shape and datatype FP32 imply 256 bytes but binary_data_size is 8/);
  });
  it('a body over the limit → 413', async () => {
    const small = await startSwitchyard({ mlp: { versions: { 1: MLP1 } } });
    try {
      const huge = Buffer.alloc(65 * 1024 * 1024, 0x20);
      const r = await small.sy.app.inject({ method: 'POST', url: '/v2/models/mlp/infer', payload: huge, headers: { 'content-type': 'application/json' } });
      assert.equal(r.statusCode, 413);
      assert.deepEqual(r.json(), { error: 'request body is larger than the server limit (see --max-body-mb)', code: 'SY_ERR_BODY_TOO_LARGE' });
    } finally {
      await small.close();
    }
  });
  it('still serves correct answers after all of the above', async () => {
    const r = await post('/v2/models/mlp/versions/1/infer', mlpRequest(1, 4));
    assert.equal(r.statusCode, 200);
    assertClose(r.json().outputs[0].data, await mlpReference(MLP1, 1, 4), TOL, 'after bad input');
  });
});
