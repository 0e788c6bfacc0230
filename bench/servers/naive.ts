/**
 * @module
 * The naive server: Fastify plus one in-process onnxruntime session, `session.run` once per request, no batching.
 * Usage: node naive.js PORT MODEL_PATH
 */
import Fastify from 'fastify';
import ort from 'onnxruntime-node';

const port = Number(process.argv[2] ?? 0);
const session = await ort.InferenceSession.create(process.argv[3]!);
const [inputName] = session.inputNames;
const [outputName] = session.outputNames;
const [inputMeta] = session.inputMetadata;
const type = inputMeta && inputMeta.isTensor ? inputMeta.type : 'float32';
const app = Fastify({ logger: false });
app.post('/v2/models/:model/infer', async (req, reply) => {
  const b = req.body as { inputs: Array<{ shape: number[]; data: number[] }> };
  const inp = b.inputs[0]!;
  const data = type === 'int64' ? BigInt64Array.from(inp.data, (x) => BigInt(x)) : Float32Array.from(inp.data);
  const out = await session.run({ [inputName!]: new ort.Tensor(type, data, inp.shape) });
  const t = out[outputName!]!;
  const values = Array.from(t.data as Float32Array);
  return reply
    .type('application/json')
    .send(
      `{"model_name":"m","model_version":"1","outputs":[{"name":"${outputName}","datatype":"FP32","shape":[${t.dims.join(',')}],"data":[${values.join(',')}]}]}`,
    );
});
app.get('/v2/health/ready', async () => ({ ready: true }));
await app.listen({ port, host: '127.0.0.1' });
process.stdout.write('ready\n');
