/**
 * @module
 * The HTTP ceiling: a bare Fastify server that parses the same V2 JSON request and answers a V2-shaped response
 * without inference. Nothing can serve faster over the same stack. Usage: node ceiling.js PORT
 */
import Fastify from 'fastify';

const port = Number(process.argv[2] ?? 0);
const app = Fastify({ logger: false });
const answer = (req: { body: unknown }): string => {
  const b = req.body as { inputs: Array<{ shape: number[] }>; id?: string };
  const rows = b.inputs[0]!.shape[0]!;
  return `{"model_name":"mlp","model_version":"1","outputs":[{"name":"score","datatype":"FP32","shape":[${rows},1],"data":[${new Array(rows).fill(0.5).join(',')}]}]}`;
};
app.post('/v2/models/:model/infer', async (req, reply) => reply.type('application/json').send(answer(req)));
app.get('/v2/health/ready', async () => ({ ready: true }));
await app.listen({ port, host: '127.0.0.1' });
process.stdout.write('ready\n');
