/**
 * @module
 * The floor for a Node.js LLM gateway: a bare Fastify server that forwards POST /v1/chat/completions to the
 * upstream through a keep-alive undici Pool and pipes the answer back unchanged (no validation, no auth, no
 * limits, no metrics, no parsing). What Switchyard adds beyond this is its own cost.
 * Usage: node bare-proxy.js PORT UPSTREAM_URL
 */
import Fastify from 'fastify';
import { Pool } from 'undici';

const port = Number(process.argv[2] ?? 0);
const upstream = new Pool(process.argv[3] ?? 'http://127.0.0.1:8000', { connections: 64 });
const app = Fastify({ logger: false });
app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => done(null, body));
app.post('/v1/chat/completions', async (req, reply) => {
  const res = await upstream.request({
    path: '/v1/chat/completions',
    method: 'POST',
    body: req.body as string,
    headers: { 'content-type': 'application/json' },
  });
  reply.code(res.statusCode).header('content-type', String(res.headers['content-type'] ?? 'application/json'));
  return reply.send(res.body);
});
app.get('/v2/health/ready', async () => ({ ready: true }));
await app.listen({ port, host: '127.0.0.1' });
process.stdout.write('ready\n');
