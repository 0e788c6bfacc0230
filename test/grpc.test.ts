/**
 * The Open Inference Protocol over gRPC, against a real in-process @grpc/grpc-js client loaded from the same
 * .proto files: every RPC, raw and typed contents for every datatype, streaming with interleaved errors, auth,
 * visibility and limits over metadata, malformed and oversized messages, the health service, and routing and
 * usage applied to gRPC traffic exactly as to REST (one core).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, type ClientHttp2Session } from 'node:http2';
import { after, before, describe, it } from 'node:test';
import protobuf from 'protobufjs';
import { credentials, Metadata, status as Status, type Client, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { GRPC_STATUS_BY_HTTP, grpcStatus, loadProtos } from '../src/api/index.js';
import { ERRORS, type ErrorCode } from '../src/errors.js';
import { GraphBuilder } from '../tools/onnx/graph.js';
import { ALL_TYPES, mlp, slow } from '../tools/onnx/zoo.js';
import { until } from './gated-runtime.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

const protos = loadProtos();
const ADMIN = 'grpc-test-admin-key-0123456789';

type Msg = Record<string, unknown>;
type Unary = (req: Msg, md: Metadata, opts: { deadline?: number }, cb: (e: ServiceError | null, r: Msg) => void) => void;

function clientFor(port: number): Client {
  return new protos.InferenceClient(`127.0.0.1:${port}`, credentials.createInsecure(), {
    'grpc.max_send_message_length': -1,
    'grpc.max_receive_message_length': -1,
  });
}
function healthFor(port: number): Client {
  return new protos.HealthClient(`127.0.0.1:${port}`, credentials.createInsecure());
}

function md(entries: Record<string, string> = {}): Metadata {
  const m = new Metadata();
  for (const [k, v] of Object.entries(entries)) m.set(k, v);
  return m;
}
const bearer = (key: string, extra: Record<string, string> = {}): Metadata => md({ authorization: `Bearer ${key}`, ...extra });

function rpc<T = Msg>(c: Client, method: string, req: Msg, meta: Metadata = new Metadata(), deadlineMs?: number): Promise<T> {
  const fn = (c as unknown as Record<string, Unary>)[method]!.bind(c);
  return new Promise((resolve, reject) =>
    fn(req, meta, deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs }, (e, r) => (e ? reject(e) : resolve(r as T))),
  );
}

async function fails(p: Promise<unknown>, code: Status, catalog?: ErrorCode, message?: RegExp): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    const se = e as ServiceError;
    assert.equal(se.code, code, `expected status ${Status[code]}, got ${Status[se.code]}: ${se.details}`);
    if (catalog !== undefined) assert.equal(se.metadata.get('x-switchyard-error-code')[0], catalog, se.details);
    if (message !== undefined) assert.match(se.details, message);
    return se;
  }
  assert.fail(`expected ${Status[code]}, the call succeeded`);
}

/** Identity model per datatype: `x` [N,-1] → `y`. */
function identity(v2: string, type: number): Uint8Array {
  const g = new GraphBuilder(`id_${v2.toLowerCase()}`);
  g.input({ name: 'x', type: type as never, shape: ['batch', 'width'] });
  g.op('Identity', ['x'], undefined, 'y');
  g.output({ name: 'y', type: type as never, shape: ['batch', 'width'] });
  return g.encode();
}

/** Six elements [2,3] per datatype, as typed contents (field, values) and as raw little-endian bytes. */
const SAMPLES: Record<string, { field: string | null; values: unknown[]; raw: Buffer }> = (() => {
  const le = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const big = (xs: string[], signed: boolean): Buffer => le(signed ? BigInt64Array.from(xs, BigInt) : BigUint64Array.from(xs, BigInt));
  const strs = [Buffer.from('a'), Buffer.alloc(0), Buffer.from('héllo'), Buffer.from('\u0001€'), Buffer.from('x'), Buffer.from('yz')];
  const framed = Buffer.concat(strs.flatMap((b) => [le(new Uint32Array([b.length])), b]));
  const i64 = ['-9223372036854775808', '9223372036854775807', '0', '-1', '42', '9007199254740993'];
  const u64 = ['0', '18446744073709551615', '1', '9007199254740993', '7', '1000'];
  return {
    BOOL: { field: 'bool_contents', values: [true, false, true, true, false, false], raw: Buffer.from([1, 0, 1, 1, 0, 0]) },
    UINT8: { field: 'uint_contents', values: [0, 1, 2, 200, 255, 7], raw: le(new Uint8Array([0, 1, 2, 200, 255, 7])) },
    UINT16: { field: 'uint_contents', values: [0, 1, 65535, 300, 5, 6], raw: le(new Uint16Array([0, 1, 65535, 300, 5, 6])) },
    UINT32: { field: 'uint_contents', values: [0, 4294967295, 2, 3, 4, 5], raw: le(new Uint32Array([0, 4294967295, 2, 3, 4, 5])) },
    UINT64: { field: 'uint64_contents', values: u64, raw: big(u64, false) },
    INT8: { field: 'int_contents', values: [-128, 127, 0, -1, 5, 6], raw: le(new Int8Array([-128, 127, 0, -1, 5, 6])) },
    INT16: { field: 'int_contents', values: [-32768, 32767, 0, -1, 5, 6], raw: le(new Int16Array([-32768, 32767, 0, -1, 5, 6])) },
    INT32: { field: 'int_contents', values: [-2147483648, 2147483647, 0, -1, 5, 6], raw: le(new Int32Array([-2147483648, 2147483647, 0, -1, 5, 6])) },
    INT64: { field: 'int64_contents', values: i64, raw: big(i64, true) },
    FP16: { field: null, values: [], raw: le(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0, 0x8000, 0x3555])) },
    FP32: { field: 'fp32_contents', values: [1.5, -2.25, 0, 1024, 0.125, -7], raw: le(new Float32Array([1.5, -2.25, 0, 1024, 0.125, -7])) },
    FP64: { field: 'fp64_contents', values: [Math.PI, -1e300, 0, 5e-324, 1, -2], raw: le(new Float64Array([Math.PI, -1e300, 0, 5e-324, 1, -2])) },
    BYTES: { field: 'bytes_contents', values: strs, raw: framed },
  };
})();

const mlpRaw = (rows: number, seed: number): Buffer => {
  const f = Float32Array.from(floats(rows * 64, seed));
  return Buffer.from(f.buffer, f.byteOffset, f.byteLength);
};
const mlpRequest = (model: string, rows: number, seed: number, extra: Msg = {}): Msg => ({
  model_name: model,
  inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 64] }],
  raw_input_contents: [mlpRaw(rows, seed)],
  ...extra,
});
const scores = (r: Msg): Float32Array => {
  const b = (r['raw_output_contents'] as Buffer[])[0]!;
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

describe('gRPC: the inference service', () => {
  let srv: TestServer;
  let client: Client;
  let port: number;
  const models: Record<string, { versions: Record<number, Uint8Array>; config?: object }> = {
    mlp: { versions: { 1: mlp(7), 2: mlp(8) }, config: { version_policy: { all: {} } } },
    slow: { versions: { 1: slow(48) }, config: { max_batch_size: 1, instances: 1 } },
  };
  for (const [v2, t] of ALL_TYPES) models[`id_${v2.toLowerCase()}`] = { versions: { 1: identity(v2, t) } };

  before(async () => {
    srv = await startSwitchyard(models);
    port = await srv.sy.grpc.listen(0, '127.0.0.1');
    client = clientFor(port);
  });
  after(async () => {
    client.close();
    await srv.close();
  });

  it('ServerLive, ServerReady, ServerMetadata', async () => {
    assert.deepEqual(await rpc(client, 'ServerLive', {}), { live: true });
    assert.deepEqual(await rpc(client, 'ServerReady', {}), { ready: true });
    const meta = await rpc(client, 'ServerMetadata', {});
    assert.equal(meta['name'], 'switchyard');
    assert.equal(typeof meta['version'], 'string');
    assert.ok((meta['extensions'] as string[]).includes('statistics'));
  });

  it('ModelReady and ModelMetadata (as REST: -1 for dynamic dims); an unknown model or version is NOT_FOUND', async () => {
    assert.deepEqual(await rpc(client, 'ModelReady', { name: 'mlp', version: '' }), { ready: true });
    assert.deepEqual(await rpc(client, 'ModelReady', { name: 'mlp', version: '2' }), { ready: true });
    const m = await rpc(client, 'ModelMetadata', { name: 'mlp' });
    assert.deepEqual(m, {
      name: 'mlp',
      versions: ['1', '2'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'features', datatype: 'FP32', shape: ['-1', '64'] }],
      outputs: [{ name: 'score', datatype: 'FP32', shape: ['-1', '1'] }],
    });
    const rest = (await srv.sy.app.inject('/v2/models/mlp')).json();
    assert.deepEqual(
      (m['inputs'] as Msg[]).map((t) => (t['shape'] as string[]).map(Number)),
      rest.inputs.map((t: { shape: number[] }) => t.shape),
    );
    await fails(rpc(client, 'ModelMetadata', { name: 'nope' }), Status.NOT_FOUND, 'SY_ERR_MODEL_NOT_FOUND', /model "nope" not found/);
    await fails(rpc(client, 'ModelReady', { name: 'mlp', version: '9' }), Status.NOT_FOUND, 'SY_ERR_MODEL_NOT_FOUND');
  });

  it('ModelInfer with raw FP32 inputs answers raw outputs equal to REST', async () => {
    const r = await rpc(client, 'ModelInfer', mlpRequest('mlp', 3, 5, { id: 'req-1' }));
    assert.equal(r['model_name'], 'mlp');
    assert.equal(r['model_version'], '2');
    assert.equal(r['id'], 'req-1');
    const outs = r['outputs'] as Msg[];
    assert.deepEqual(
      outs.map((o) => [o['name'], o['datatype'], o['shape'], o['contents']]),
      [['score', 'FP32', ['3', '1'], null]],
    );
    const rest = (
      await srv.sy.app.inject({
        method: 'POST',
        url: '/v2/models/mlp/infer',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [3, 64], data: floats(192, 5) }] }),
      })
    ).json();
    assert.deepEqual(Array.from(scores(r)), rest.outputs[0].data);
    // A named version, and typed contents in → typed contents out.
    const typed = await rpc(client, 'ModelInfer', {
      model_name: 'mlp',
      model_version: '2',
      inputs: [{ name: 'features', datatype: 'FP32', shape: [3, 64], contents: { fp32_contents: Array.from(Float32Array.from(floats(192, 5))) } }],
    });
    assert.deepEqual((typed['raw_output_contents'] as Buffer[]).length, 0);
    assert.deepEqual(((typed['outputs'] as Msg[])[0]!['contents'] as Msg)['fp32_contents'], rest.outputs[0].data);
    // Requested outputs by name; an unknown one is INVALID_ARGUMENT naming it.
    await fails(
      rpc(client, 'ModelInfer', mlpRequest('mlp', 1, 1, { outputs: [{ name: 'nope' }] })),
      Status.INVALID_ARGUMENT,
      'SY_ERR_OUTPUT_UNKNOWN',
      /unknown output "nope"/,
    );
  });

  for (const [v2] of ALL_TYPES) {
    it(`${v2}: raw in → raw out, typed in → typed out, byte for byte`, async () => {
      const s = SAMPLES[v2]!;
      const model = `id_${v2.toLowerCase()}`;
      const raw = await rpc(client, 'ModelInfer', { model_name: model, inputs: [{ name: 'x', datatype: v2, shape: [2, 3] }], raw_input_contents: [s.raw] });
      const out = (raw['outputs'] as Msg[])[0]!;
      assert.equal(out['datatype'], v2);
      assert.deepEqual(out['shape'], ['2', '3']);
      assert.deepEqual((raw['raw_output_contents'] as Buffer[])[0], s.raw);
      if (s.field === null) {
        // FP16 has no typed contents field: refused, naming raw_input_contents.
        await fails(
          rpc(client, 'ModelInfer', {
            model_name: model,
            inputs: [{ name: 'x', datatype: v2, shape: [2, 3], contents: { fp32_contents: [1, 2, 3, 4, 5, 6] } }],
          }),
          Status.INVALID_ARGUMENT,
          'SY_ERR_INPUT_INVALID',
          /FP16 has no typed contents field; send it in raw_input_contents/,
        );
        return;
      }
      const typed = await rpc(client, 'ModelInfer', {
        model_name: model,
        inputs: [{ name: 'x', datatype: v2, shape: [2, 3], contents: { [s.field]: s.values } }],
      });
      assert.equal((typed['raw_output_contents'] as Buffer[]).length, 0);
      const contents = (typed['outputs'] as Msg[])[0]!['contents'] as Record<string, unknown[]>;
      assert.deepEqual(contents[s.field], s.values);
      // Wrong element count, and the wrong contents field, are INVALID_ARGUMENT.
      await fails(
        rpc(client, 'ModelInfer', { model_name: model, inputs: [{ name: 'x', datatype: v2, shape: [2, 3], contents: { [s.field]: s.values.slice(1) } }] }),
        Status.INVALID_ARGUMENT,
        'SY_ERR_INPUT_INVALID',
        /shape implies 6 elements/,
      );
      const other = s.field === 'fp64_contents' ? 'fp32_contents' : 'fp64_contents';
      await fails(
        rpc(client, 'ModelInfer', { model_name: model, inputs: [{ name: 'x', datatype: v2, shape: [2, 3], contents: { [other]: [1, 2, 3, 4, 5, 6] } }] }),
        Status.INVALID_ARGUMENT,
        'SY_ERR_INPUT_INVALID',
        new RegExp(`carried in contents.${s.field}`),
      );
    });
  }

  it('raw inputs at any alignment decode the same (views when aligned, one copy when not)', async () => {
    const f = mlpRaw(2, 9);
    const shifted = Buffer.alloc(f.length + 1);
    f.copy(shifted, 1);
    const a = await rpc(client, 'ModelInfer', { ...mlpRequest('mlp', 2, 9), raw_input_contents: [f] });
    const b = await rpc(client, 'ModelInfer', { ...mlpRequest('mlp', 2, 9), raw_input_contents: [shifted.subarray(1)] });
    assert.deepEqual(scores(a), scores(b));
  });

  it('the HTTP/2 front answers ModelInfer itself; compressed calls and other RPCs go through grpc-js; bad frames are refused', async () => {
    assert.equal(srv.sy.grpc.fastPath, true, 'the grpc-js version in use no longer lets the front delegate streams (front.ts)');
    // A gzip-compressed call (grpc-encoding: gzip) is handed to grpc-js and answers the same.
    const gz = new protos.InferenceClient(`127.0.0.1:${port}`, credentials.createInsecure(), { 'grpc.default_compression_algorithm': 2 });
    try {
      assert.deepEqual(scores(await rpc(gz, 'ModelInfer', mlpRequest('mlp', 2, 4))), scores(await rpc(client, 'ModelInfer', mlpRequest('mlp', 2, 4))));
    } finally {
      gz.close();
    }
    // Raw HTTP/2 calls: what no grpc-js client sends.
    const session: ClientHttp2Session = connect(`http://127.0.0.1:${port}`);
    const call = (body: Buffer, extra: Record<string, string> = {}) =>
      new Promise<{ status: string; message: string; code: string | undefined }>((resolve, reject) => {
        const st = session.request({
          ':method': 'POST',
          ':path': '/inference.GRPCInferenceService/ModelInfer',
          'content-type': 'application/grpc',
          te: 'trailers',
          ...extra,
        });
        const done = (h: Record<string, unknown>): void =>
          resolve({
            status: String(h['grpc-status']),
            message: decodeURI(String(h['grpc-message'])),
            code: h['x-switchyard-error-code'] as string | undefined,
          });
        st.on('response', (h) => {
          if (h['grpc-status'] !== undefined) done(h);
        });
        st.on('trailers', done);
        st.on('data', () => undefined);
        st.on('error', reject);
        st.end(body);
      });
    const frame = (m: Buffer, flag = 0): Buffer => {
      const b = Buffer.alloc(5 + m.length);
      b[0] = flag;
      b.writeUInt32BE(m.length, 1);
      m.copy(b, 5);
      return b;
    };
    const good = protos.inference['ModelInfer']!.requestSerialize(mlpRequest('mlp', 1, 2));
    try {
      assert.equal((await call(frame(good))).status, '0');
      const garbage = await call(frame(Buffer.from([0x0a])));
      assert.deepEqual([garbage.status, garbage.code], [String(Status.INVALID_ARGUMENT), 'SY_ERR_BAD_REQUEST']);
      assert.match(garbage.message, /ModelInferRequest could not be decoded/);
      assert.equal((await call(Buffer.concat([frame(good), frame(good)]))).status, String(Status.UNIMPLEMENTED));
      assert.equal((await call(Buffer.alloc(0))).status, String(Status.UNIMPLEMENTED));
      assert.equal((await call(frame(good).subarray(0, 20))).status, String(Status.INTERNAL));
      assert.equal((await call(frame(good, 1))).status, String(Status.INTERNAL));
      assert.match((await call(frame(good), { 'grpc-timeout': 'soon' })).message, /Invalid grpc-timeout/);
      assert.equal((await call(frame(good), { 'grpc-timeout': '10S' })).status, '0');
    } finally {
      session.close();
    }
  });

  it('malformed messages are INVALID_ARGUMENT naming the problem, and the server keeps serving', async () => {
    const x = (extra: Msg) => ({ model_name: 'id_fp32', inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 3] }], ...extra });
    await fails(
      rpc(client, 'ModelInfer', x({ raw_input_contents: [Buffer.alloc(23)] })),
      Status.INVALID_ARGUMENT,
      'SY_ERR_INPUT_INVALID',
      /imply 24 bytes but raw_input_contents holds 23/,
    );
    await fails(
      rpc(client, 'ModelInfer', x({ raw_input_contents: [Buffer.alloc(24), Buffer.alloc(24)] })),
      Status.INVALID_ARGUMENT,
      'SY_ERR_BAD_REQUEST',
      /2 entries for 1 inputs/,
    );
    await fails(rpc(client, 'ModelInfer', x({})), Status.INVALID_ARGUMENT, 'SY_ERR_INPUT_INVALID', /no data/);
    await fails(rpc(client, 'ModelInfer', { model_name: 'id_fp32', inputs: [] }), Status.INVALID_ARGUMENT, 'SY_ERR_BAD_REQUEST', /"inputs" must not be empty/);
    await fails(
      rpc(client, 'ModelInfer', { model_name: 'id_fp32', inputs: [{ name: 'x', datatype: 'FP99', shape: [1] }], raw_input_contents: [Buffer.alloc(4)] }),
      Status.INVALID_ARGUMENT,
      'SY_ERR_INPUT_INVALID',
      /unknown datatype "FP99"/,
    );
    await fails(
      rpc(client, 'ModelInfer', {
        ...x({ raw_input_contents: [Buffer.alloc(24)] }),
        inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 3], contents: { fp32_contents: [1] } }],
      }),
      Status.INVALID_ARGUMENT,
      'SY_ERR_BAD_REQUEST',
      /use one or the other/,
    );
    // BYTES length prefixes that run past the buffer, or hold the wrong number of elements.
    const bytes = (raw: Buffer) => ({ model_name: 'id_bytes', inputs: [{ name: 'x', datatype: 'BYTES', shape: [1, 2] }], raw_input_contents: [raw] });
    await fails(rpc(client, 'ModelInfer', bytes(Buffer.from([5, 0, 0, 0, 97]))), Status.INVALID_ARGUMENT, 'SY_ERR_INPUT_INVALID', /claims 5 bytes/);
    await fails(rpc(client, 'ModelInfer', bytes(Buffer.from([255, 255, 255, 255]))), Status.INVALID_ARGUMENT, 'SY_ERR_INPUT_INVALID');
    await fails(rpc(client, 'ModelInfer', bytes(Buffer.from([1, 0, 0, 0, 97]))), Status.INVALID_ARGUMENT, 'SY_ERR_INPUT_INVALID', /shape implies 2 elements/);
    await fails(rpc(client, 'ModelInfer', bytes(Buffer.from([1, 0]))), Status.INVALID_ARGUMENT, 'SY_ERR_INPUT_INVALID', /truncated/);
    // Bytes the ONNX runtime cannot take unaltered (a NUL, invalid UTF-8) are refused, typed or raw, never cut or replaced.
    await fails(
      rpc(client, 'ModelInfer', {
        model_name: 'id_bytes',
        inputs: [{ name: 'x', datatype: 'BYTES', shape: [1, 2], contents: { bytes_contents: [Buffer.from('ok'), Buffer.from([97, 0, 98])] } }],
      }),
      Status.INVALID_ARGUMENT,
      'SY_ERR_NOT_REPRESENTABLE',
      /BYTES element 1 contains a NUL byte/,
    );
    await fails(
      rpc(client, 'ModelInfer', bytes(Buffer.from([1, 0, 0, 0, 0xff, 1, 0, 0, 0, 97]))),
      Status.INVALID_ARGUMENT,
      'SY_ERR_NOT_REPRESENTABLE',
      /BYTES element 0 is not valid UTF-8/,
    );
    // Values out of their datatype's range, a shape that does not fit the model.
    await fails(
      rpc(client, 'ModelInfer', { model_name: 'id_int8', inputs: [{ name: 'x', datatype: 'INT8', shape: [1, 1], contents: { int_contents: [300] } }] }),
      Status.INVALID_ARGUMENT,
      'SY_ERR_INPUT_INVALID',
      /out of range for INT8/,
    );
    await fails(
      rpc(client, 'ModelInfer', { model_name: 'mlp', inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3] }], raw_input_contents: [Buffer.alloc(12)] }),
      Status.INVALID_ARGUMENT,
      'SY_ERR_INPUT_INVALID',
    );
    await fails(
      rpc(client, 'ModelInfer', {
        model_name: 'mlp',
        inputs: [{ name: 'features', datatype: 'INT32', shape: [1, 64] }],
        raw_input_contents: [Buffer.alloc(256)],
      }),
      Status.INVALID_ARGUMENT,
      'SY_ERR_INPUT_INVALID',
    );
    await fails(rpc(client, 'ModelInfer', { model_name: '', inputs: [] }), Status.INVALID_ARGUMENT, 'SY_ERR_BAD_REQUEST', /model_name is empty/);
    assert.deepEqual(await rpc(client, 'ServerLive', {}), { live: true });
  });

  it('ModelStreamInfer: one response per request, in order, errors in error_message without ending the stream', async () => {
    const stream = (client as unknown as { ModelStreamInfer(m: Metadata): ClientDuplexStream<Msg, Msg> }).ModelStreamInfer(new Metadata());
    const got: Msg[] = [];
    const done = new Promise<void>((resolve, reject) => {
      stream.on('data', (m: Msg) => got.push(m));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    stream.write(mlpRequest('mlp', 1, 1, { id: 'a' }));
    stream.write(mlpRequest('nope', 1, 1, { id: 'b' }));
    stream.write({ model_name: 'id_fp32', id: 'c', inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 3] }], raw_input_contents: [Buffer.alloc(5)] });
    stream.write(mlpRequest('mlp', 2, 2, { id: 'd' }));
    stream.end();
    await done;
    assert.equal(got.length, 4);
    assert.deepEqual(
      got.map((m) => (m['infer_response'] as Msg | null)?.['id'] ?? null),
      ['a', null, null, 'd'],
    );
    assert.equal(got[0]!['error_message'], '');
    assert.match(got[1]!['error_message'] as string, /^SY_ERR_MODEL_NOT_FOUND: model "nope" not found/);
    assert.match(got[2]!['error_message'] as string, /^SY_ERR_INPUT_INVALID: /);
    assert.deepEqual(((got[3]!['infer_response'] as Msg)['outputs'] as Msg[])[0]!['shape'], ['2', '1']);
  });

  it('ModelConfig, ModelStatistics (Triton shapes), RepositoryIndex, RepositoryModelLoad and Unload', async () => {
    const { config } = await rpc<{ config: Msg }>(client, 'ModelConfig', { name: 'mlp', version: '1' });
    assert.equal(config['name'], 'mlp');
    assert.equal(config['platform'], 'onnxruntime_onnx');
    assert.ok((config['max_batch_size'] as number) > 0);
    assert.deepEqual(config['input'], [{ name: 'features', data_type: 'TYPE_FP32', dims: ['64'] }]);
    assert.deepEqual(config['output'], [{ name: 'score', data_type: 'TYPE_FP32', dims: ['1'] }]);
    assert.deepEqual(config['version_policy'], { all: {}, policy_choice: 'all' });
    // The version's batching settings and Switchyard's own parameters, as over REST.
    const batching = config['dynamic_batching'] as Msg;
    assert.deepEqual(batching['preferred_batch_size'], []);
    assert.equal(typeof batching['max_queue_delay_microseconds'], 'string');
    assert.deepEqual(batching['default_queue_policy'], {
      timeout_action: 'REJECT',
      default_timeout_microseconds: '0',
      allow_timeout_override: true,
      max_queue_size: 1024,
    });
    assert.equal(
      (config['parameters'] as Record<string, Msg>)['intra_op_threads']!['string_value'],
      String(Number((config['parameters'] as Record<string, Msg>)['intra_op_threads']!['string_value'])),
    );
    assert.ok(['inline', 'worker'].includes((config['parameters'] as Record<string, Msg>)['instance_mode']!['string_value'] as string));
    assert.equal(((await rpc<{ config: Msg }>(client, 'ModelConfig', { name: 'id_bytes' })).config['input'] as Msg[])[0]!['data_type'], 'TYPE_STRING');

    await rpc(client, 'ModelInfer', mlpRequest('mlp', 4, 3));
    const { model_stats: stats } = await rpc<{ model_stats: Msg[] }>(client, 'ModelStatistics', { name: 'mlp', version: '2' });
    assert.equal(stats.length, 1);
    const s = stats[0]!;
    assert.equal(s['name'], 'mlp');
    assert.equal(s['version'], '2');
    assert.ok(Number(s['inference_count']) >= 4, `inference_count ${String(s['inference_count'])}`);
    const is = s['inference_stats'] as Record<string, { count: string; ns: string }>;
    assert.ok(Number(is['success']!.count) >= 1 && Number(is['success']!.ns) > 0);
    assert.ok(Number(s['last_inference']) > Date.now() - 600_000);
    const all = await rpc<{ model_stats: Msg[] }>(client, 'ModelStatistics', {});
    assert.ok(all.model_stats.some((x) => x['name'] === 'id_fp32'));
    await fails(rpc(client, 'ModelStatistics', { name: 'nope' }), Status.NOT_FOUND);

    const index = await rpc<{ models: Msg[] }>(client, 'RepositoryIndex', {});
    assert.deepEqual(
      index.models.filter((m) => m['name'] === 'mlp'),
      [
        { name: 'mlp', version: '1', state: 'READY', reason: '' },
        { name: 'mlp', version: '2', state: 'READY', reason: '' },
      ],
    );
    assert.deepEqual(await rpc(client, 'RepositoryModelLoad', { model_name: 'mlp' }), {});
    await fails(rpc(client, 'RepositoryModelLoad', { model_name: 'nope' }), Status.NOT_FOUND);
    // Unload releases residency (the model stays servable: the next request loads it again).
    assert.deepEqual(await rpc(client, 'RepositoryModelUnload', { model_name: 'mlp' }), {});
    await until(() => srv.sy.manager.versionsOf('mlp').every((v) => v.state === 'UNLOADED'));
    const after = await rpc<{ models: Msg[] }>(client, 'RepositoryIndex', {});
    for (const m of after.models.filter((x) => x['name'] === 'mlp')) assert.notEqual(m['state'], 'READY');
    await rpc(client, 'ModelInfer', mlpRequest('mlp', 1, 5));
    await fails(rpc(client, 'RepositoryModelUnload', { model_name: 'nope' }), Status.NOT_FOUND);
  });

  it('the classification extension over gRPC: an output asked with classification comes back as top-k BYTES', async () => {
    const plain = await rpc<Msg>(client, 'ModelInfer', mlpRequest('mlp', 2, 11));
    const values = scores(plain);
    const classified = await rpc<Msg>(
      client,
      'ModelInfer',
      mlpRequest('mlp', 2, 11, { outputs: [{ name: 'score', parameters: { classification: { int64_param: '1' } } }] }),
    );
    const out = (classified['outputs'] as Msg[])[0]!;
    assert.equal(out['datatype'], 'BYTES');
    assert.deepEqual(out['shape'], ['2', '1']);
    const raw = (classified['raw_output_contents'] as Buffer[])[0]!;
    const texts: string[] = [];
    for (let o = 0; o < raw.length;) {
      const n = raw.readUInt32LE(o);
      texts.push(raw.toString('utf8', o + 4, o + 4 + n));
      o += 4 + n;
    }
    assert.deepEqual(
      texts,
      Array.from(values, (v) => `${v.toFixed(6)}:0`),
    );
  });

  it('a deadline bounds the call (DEADLINE_EXCEEDED); a cancelled call is dropped', async () => {
    const req = (n: number) => ({
      model_name: 'slow',
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 512] }],
      raw_input_contents: [Buffer.alloc(2048)],
      id: String(n),
    });
    // Keep the single instance busy, then a request with a short deadline cannot be served in time.
    const busy = Array.from({ length: 4 }, (_, i) => rpc(client, 'ModelInfer', req(i)));
    await fails(rpc(client, 'ModelInfer', req(9), new Metadata(), 1), Status.DEADLINE_EXCEEDED);
    await Promise.all(busy);
    const call = (client as unknown as Record<string, (r: Msg, m: Metadata, cb: (e: ServiceError | null) => void) => { cancel(): void }>)['ModelInfer']!.bind(
      client,
    );
    const cancelled = new Promise<ServiceError | null>((resolve) => call(req(10), new Metadata(), resolve).cancel());
    assert.equal((await cancelled)?.code, Status.CANCELLED);
    assert.deepEqual(await rpc(client, 'ServerReady', {}), { ready: true });
  });

  it('grpc.health.v1.Health: Check is SERVING when ready; unknown service NOT_FOUND; Watch streams the status', async () => {
    const health = healthFor(port);
    try {
      assert.deepEqual(await rpc(health, 'Check', { service: '' }), { status: 'SERVING' });
      assert.deepEqual(await rpc(health, 'Check', { service: 'inference.GRPCInferenceService' }), { status: 'SERVING' });
      await fails(rpc(health, 'Check', { service: 'nope' }), Status.NOT_FOUND);
      const watch = (health as unknown as { Watch(r: Msg): NodeJS.ReadableStream & { cancel(): void } }).Watch({ service: '' });
      const first = await new Promise<Msg>((resolve) => watch.once('data', resolve));
      assert.deepEqual(first, { status: 'SERVING' });
      watch.on('error', () => undefined);
      watch.cancel();
    } finally {
      health.close();
    }
  });
});

describe('gRPC: auth, visibility, limits and message size over metadata', () => {
  let srv: TestServer;
  let client: Client;
  const keys: Record<string, string> = {};
  const admin = (method: string, url: string, payload?: unknown) =>
    srv.sy.app.inject({
      method: method as 'POST',
      url,
      headers: { authorization: `Bearer ${ADMIN}`, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }),
    });
  const key = async (tenant: string, scopes: string[], extra: Msg = {}): Promise<string> => {
    const r = await admin('POST', `/api/v1/tenants/${tenant}/keys`, { scopes, ...extra });
    assert.equal(r.statusCode, 201, r.body);
    return r.json().key as string;
  };

  before(async () => {
    const M = mlp(7);
    srv = await startSwitchyard(
      { 'acme.m': { versions: { 1: M } }, 'beta.m': { versions: { 1: M } } },
      { config: { adminKey: ADMIN, grpcMaxMessageMb: 0.05 } },
    );
    for (const t of ['acme', 'beta']) assert.equal((await admin('POST', '/api/v1/tenants', { name: t, tier: 'standard' })).statusCode, 201);
    assert.equal((await admin('PUT', '/api/v1/models/acme.m/owner', { tenant: 'acme' })).statusCode, 200);
    assert.equal((await admin('PUT', '/api/v1/models/beta.m/owner', { tenant: 'beta' })).statusCode, 200);
    keys['acme'] = await key('acme', ['infer', 'read']);
    keys['acmeRead'] = await key('acme', ['read']);
    keys['acmeAdmin'] = await key('acme', ['infer', 'read', 'admin']);
    keys['limited'] = await key('acme', ['infer'], { limits: { rps: 0.01, burst: 1 } });
    client = clientFor(await srv.sy.grpc.listen(0, '127.0.0.1'));
  });
  after(async () => {
    client.close();
    await srv.close();
  });

  it('no key, a malformed header or an unknown key is UNAUTHENTICATED; health and liveness need none', async () => {
    await fails(rpc(client, 'ModelInfer', mlpRequest('acme.m', 1, 1)), Status.UNAUTHENTICATED, 'SY_ERR_UNAUTHENTICATED', /missing Authorization/);
    await fails(
      rpc(client, 'ModelMetadata', { name: 'acme.m' }, md({ authorization: 'Basic x' })),
      Status.UNAUTHENTICATED,
      'SY_ERR_UNAUTHENTICATED',
      /malformed/,
    );
    await fails(rpc(client, 'ServerMetadata', {}, bearer('sy_nope_0123456789abcdef')), Status.UNAUTHENTICATED, 'SY_ERR_UNAUTHENTICATED');
    assert.deepEqual(await rpc(client, 'ServerLive', {}), { live: true });
    assert.deepEqual(await rpc(client, 'ServerReady', {}), { ready: true });
    assert.equal((await rpc(client, 'ServerMetadata', {}, bearer(keys['acmeRead']!)))['name'], 'switchyard');
  });

  it("another tenant's model is NOT_FOUND exactly as a missing one; scope is PERMISSION_DENIED", async () => {
    const hidden = await fails(rpc(client, 'ModelInfer', mlpRequest('beta.m', 1, 1), bearer(keys['acme']!)), Status.NOT_FOUND, 'SY_ERR_MODEL_NOT_FOUND');
    const missing = await fails(rpc(client, 'ModelInfer', mlpRequest('zzz.m', 1, 1), bearer(keys['acme']!)), Status.NOT_FOUND, 'SY_ERR_MODEL_NOT_FOUND');
    assert.equal(hidden.details.replace('beta.m', 'X'), missing.details.replace('zzz.m', 'X'));
    await fails(rpc(client, 'ModelMetadata', { name: 'beta.m' }, bearer(keys['acme']!)), Status.NOT_FOUND);
    await fails(rpc(client, 'ModelStatistics', { name: 'beta.m' }, bearer(keys['acme']!)), Status.NOT_FOUND);
    const visible = await rpc<{ model_stats: Msg[] }>(client, 'ModelStatistics', {}, bearer(keys['acme']!));
    assert.ok(
      visible.model_stats.every((s) => s['name'] === 'acme.m'),
      'statistics list only visible models',
    );
    await fails(
      rpc(client, 'ModelInfer', mlpRequest('acme.m', 1, 1), bearer(keys['acmeRead']!)),
      Status.PERMISSION_DENIED,
      'SY_ERR_FORBIDDEN',
      /lacks the scope/,
    );
    assert.equal((await rpc(client, 'ModelMetadata', { name: 'acme.m' }, bearer(keys['acmeRead']!)))['name'], 'acme.m');
    assert.equal((await rpc(client, 'ModelInfer', mlpRequest('acme.m', 1, 1), bearer(keys['acme']!)))['model_name'], 'acme.m');
    // Repository control needs admin; a tenant admin sees only its own models.
    await fails(rpc(client, 'RepositoryIndex', {}, bearer(keys['acme']!)), Status.PERMISSION_DENIED);
    const idx = await rpc<{ models: Msg[] }>(client, 'RepositoryIndex', {}, bearer(keys['acmeAdmin']!));
    assert.deepEqual(
      idx.models.map((m) => m['name']),
      ['acme.m'],
    );
    await fails(rpc(client, 'RepositoryModelLoad', { model_name: 'beta.m' }, bearer(keys['acmeAdmin']!)), Status.NOT_FOUND);
    assert.deepEqual(await rpc(client, 'RepositoryModelLoad', { model_name: 'acme.m' }, bearer(keys['acmeAdmin']!)), {});
    assert.deepEqual((await rpc<{ models: Msg[] }>(client, 'RepositoryIndex', {}, bearer(ADMIN))).models.map((m) => m['name']).sort(), ['acme.m', 'beta.m']);
  });

  it('a limited key gets x-ratelimit-* metadata as REST headers; refused: RESOURCE_EXHAUSTED with retry-after and the limit state in the trailers, in a stream as error_message', async () => {
    // Success: the limit state as initial metadata (REST: response headers).
    const headers = await new Promise<Metadata>((resolve, reject) => {
      const c = (
        client as unknown as Record<
          string,
          (r: Msg, m: Metadata, cb: (e: ServiceError | null) => void) => { on(e: 'metadata', l: (m: Metadata) => void): void }
        >
      )['ModelInfer']!.call(client, mlpRequest('acme.m', 1, 1), bearer(keys['limited']!), (e) => (e ? reject(e) : undefined));
      c.on('metadata', resolve);
    });
    assert.deepEqual([headers.get('x-ratelimit-limit-requests')[0], headers.get('x-ratelimit-remaining-requests')[0]], ['1', '0']);
    assert.match(String(headers.get('x-ratelimit-reset-requests')[0]), /^\d/);
    const unlimited = await new Promise<Metadata>((resolve, reject) => {
      const c = (
        client as unknown as Record<
          string,
          (r: Msg, m: Metadata, cb: (e: ServiceError | null) => void) => { on(e: 'metadata', l: (m: Metadata) => void): void }
        >
      )['ModelInfer']!.call(client, mlpRequest('acme.m', 1, 1), bearer(ADMIN), (e) => (e ? reject(e) : undefined));
      c.on('metadata', resolve);
    });
    assert.deepEqual(unlimited.get('x-ratelimit-limit-requests'), [], 'the platform key (no tenant limits) gets no limit metadata');
    const e = await fails(
      rpc(client, 'ModelInfer', mlpRequest('acme.m', 1, 1), bearer(keys['limited']!)),
      Status.RESOURCE_EXHAUSTED,
      'SY_ERR_RATE_LIMITED',
      /rate limit exceeded/,
    );
    assert.ok(Number(e.metadata.get('retry-after')[0]) >= 1);
    assert.deepEqual([e.metadata.get('x-ratelimit-remaining-requests')[0], e.metadata.get('x-switchyard-limit-reason')[0]], ['0', 'rate']);
    // gRPC's rich error model: google.rpc.Status with ErrorInfo and RetryInfo, decoded from our own reading of the published definitions.
    const rpcProto = protobuf.parse(
      `syntax = "proto3"; package google.rpc;
      message Any { string type_url = 1; bytes value = 2; }
      message Duration { int64 seconds = 1; int32 nanos = 2; }
      message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
      message RetryInfo { Duration retry_delay = 1; }
      message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }`,
      { keepCase: true },
    ).root;
    const st = rpcProto
      .lookupType('google.rpc.Status')
      .toObject(rpcProto.lookupType('google.rpc.Status').decode(e.metadata.get('grpc-status-details-bin')[0] as Buffer), { longs: Number }) as {
      code: number;
      message: string;
      details: { type_url: string; value: Uint8Array }[];
    };
    assert.equal(st.code, Status.RESOURCE_EXHAUSTED);
    assert.match(st.message, /rate limit exceeded/);
    const detail = (t: string): Record<string, unknown> => {
      const d = st.details.find((x) => x.type_url === `type.googleapis.com/google.rpc.${t}`);
      assert.ok(d, `${t} in the status details`);
      return rpcProto.lookupType(`google.rpc.${t}`).toObject(rpcProto.lookupType(`google.rpc.${t}`).decode(d.value), { longs: Number });
    };
    assert.deepEqual(detail('ErrorInfo'), { reason: 'SY_ERR_RATE_LIMITED', domain: 'switchyard' });
    assert.equal((detail('RetryInfo')['retry_delay'] as { seconds: number }).seconds, Number(e.metadata.get('retry-after')[0]));
    const stream = (client as unknown as { ModelStreamInfer(m: Metadata): ClientDuplexStream<Msg, Msg> }).ModelStreamInfer(bearer(keys['limited']!));
    const got: Msg[] = [];
    const done = new Promise<void>((resolve, reject) => {
      stream.on('data', (m: Msg) => got.push(m));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    stream.write(mlpRequest('acme.m', 1, 1));
    stream.end();
    await done;
    assert.match(got[0]!['error_message'] as string, /^SY_ERR_RATE_LIMITED: /);
  });

  it('a stream without a valid key ends with UNAUTHENTICATED', async () => {
    const stream = (client as unknown as { ModelStreamInfer(m: Metadata): ClientDuplexStream<Msg, Msg> }).ModelStreamInfer(new Metadata());
    const ended = new Promise<ServiceError>((resolve) => stream.on('error', resolve));
    stream.on('data', () => undefined);
    stream.write(mlpRequest('acme.m', 1, 1));
    assert.equal((await ended).code, Status.UNAUTHENTICATED);
  });

  it('a message over --grpc-max-message-mb is RESOURCE_EXHAUSTED; the server keeps serving', async () => {
    const big = { model_name: 'acme.m', inputs: [{ name: 'features', datatype: 'FP32', shape: [400, 64] }], raw_input_contents: [Buffer.alloc(400 * 64 * 4)] };
    await fails(rpc(client, 'ModelInfer', big, bearer(keys['acme']!)), Status.RESOURCE_EXHAUSTED);
    assert.equal((await rpc(client, 'ModelInfer', mlpRequest('acme.m', 2, 1), bearer(keys['acme']!)))['model_name'], 'acme.m');
  });
});

describe('gRPC: one core with REST', () => {
  let srv: TestServer;
  let client: Client;
  before(async () => {
    srv = await startSwitchyard({ mlp: { versions: { 1: mlp(7), 2: mlp(8) }, config: { version_policy: { all: {} } } } }, { config: { adminKey: ADMIN } });
    client = clientFor(await srv.sy.grpc.listen(0, '127.0.0.1'));
    assert.equal(
      (
        await srv.sy.app.inject({
          method: 'POST',
          url: '/api/v1/tenants',
          headers: { authorization: `Bearer ${ADMIN}` },
          payload: { name: 'acme', tier: 'standard' },
        })
      ).statusCode,
      201,
    );
    assert.equal(
      (await srv.sy.app.inject({ method: 'PUT', url: '/api/v1/models/mlp/owner', headers: { authorization: `Bearer ${ADMIN}` }, payload: { tenant: 'acme' } }))
        .statusCode,
      200,
    );
  });
  after(async () => {
    client.close();
    await srv.close();
  });

  it('a canary policy keyed on a header routes each key to the same arm over gRPC metadata and REST headers; usage counts both', async () => {
    const r = await srv.sy.app.inject({
      method: 'PUT',
      url: '/api/v1/models/mlp/routing',
      headers: { authorization: `Bearer ${ADMIN}` },
      payload: {
        arms: [
          { name: 'stable', target: '1', weight: 80 },
          { name: 'canary', target: '2', weight: 20 },
        ],
        sticky: { key: 'header:x-user-id', seed: 'grpc' },
      },
    });
    assert.equal(r.statusCode, 200, r.body);
    const k = await srv.sy.app.inject({
      method: 'POST',
      url: '/api/v1/tenants/acme/keys',
      headers: { authorization: `Bearer ${ADMIN}` },
      payload: { scopes: ['infer'] },
    });
    const acme = k.json().key as string;
    const arms = new Set<string>();
    const N = 40;
    for (let u = 0; u < N; u++) {
      const user = `user-${u}`;
      const g = await rpc(client, 'ModelInfer', mlpRequest('mlp', 1, u), bearer(acme, { 'x-user-id': user }));
      const p = g['parameters'] as Record<string, { string_param?: string }>;
      const rest = await srv.sy.app.inject({
        method: 'POST',
        url: '/v2/models/mlp/infer',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${acme}`, 'x-user-id': user },
        payload: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, u) }] }),
      });
      assert.equal(rest.statusCode, 200, rest.body);
      assert.equal(p['arm']!.string_param, rest.headers['x-switchyard-arm'], user);
      assert.equal(p['served_by']!.string_param, rest.headers['x-switchyard-served-by'], user);
      assert.equal(g['model_version'], rest.json().model_version);
      assert.deepEqual(Array.from(scores(g)), rest.json().outputs[0].data);
      arms.add(p['arm']!.string_param!);
    }
    assert.deepEqual([...arms].sort(), ['canary', 'stable']);
    const rows = await srv.sy.usage.query({ tenant: 'acme', model: 'mlp' } as Parameters<typeof srv.sy.usage.query>[0]);
    assert.equal(
      rows.reduce((n, row) => n + row.requests, 0),
      2 * N,
      'gRPC and REST requests are metered alike',
    );
  });
});

describe('gRPC status mapping', () => {
  it('every catalog code maps to a gRPC status, as docs/errors.md lists', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const table = new Map<number, string>();
    for (const m of doc.matchAll(/^\| (\d{3}) \| `([A-Z_]+)` \|/gm)) table.set(Number(m[1]), m[2]!);
    for (const [http, code] of Object.entries(GRPC_STATUS_BY_HTTP)) assert.equal(table.get(Number(http)), Status[code], `docs/errors.md: HTTP ${http}`);
    for (const [code, spec] of Object.entries(ERRORS)) {
      assert.ok(GRPC_STATUS_BY_HTTP[spec.status] !== undefined, `${code}: HTTP ${spec.status} has no gRPC status`);
      assert.ok(Status[grpcStatus(code as ErrorCode, spec.status)], code);
    }
    assert.equal(grpcStatus('SY_ERR_REGISTRY_CONFLICT', 409), Status.ALREADY_EXISTS);
    assert.equal(grpcStatus('SY_ERR_EXPERIMENT_CONFLICT', 409), Status.FAILED_PRECONDITION);
  });
});
