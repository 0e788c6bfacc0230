/**
 * @module
 * A minimal OpenAI-compatible upstream with canned answers (no model): what the LLM gateway benchmark proxies
 * to, so the difference between calling it directly and through Switchyard is the gateway's own overhead.
 * Non-streaming chat: one fixed `chat.completion`. Streaming: CHUNKS content chunks, then a usage chunk when
 * asked (`stream_options.include_usage`), then `[DONE]`. Usage: node openai-stub.js PORT [CHUNKS]
 */
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 0);
const chunks = Number(process.argv[3] ?? 16);
const usage = { prompt_tokens: 12, completion_tokens: chunks, total_tokens: 12 + chunks };
const completion = JSON.stringify({
  id: 'chatcmpl-stub',
  object: 'chat.completion',
  created: 1,
  model: 'stub',
  choices: [{ index: 0, message: { role: 'assistant', content: 'tok '.repeat(chunks), refusal: null }, logprobs: null, finish_reason: 'length' }],
  usage,
});
const chunk = (delta: Record<string, unknown>, finish: string | null): string =>
  `data: ${JSON.stringify({ id: 'chatcmpl-stub', object: 'chat.completion.chunk', created: 1, model: 'stub', choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] })}\n\n`;
const stream = [
  chunk({ role: 'assistant', content: '' }, null),
  ...Array.from({ length: chunks }, () => chunk({ content: 'tok ' }, null)),
  chunk({}, 'length'),
].join('');
const usageChunk = `data: ${JSON.stringify({ id: 'chatcmpl-stub', object: 'chat.completion.chunk', created: 1, model: 'stub', choices: [], usage })}\n\n`;

createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d: string) => {
    body += d;
  });
  req.on('end', () => {
    if (req.url === '/health') {
      res.end('ok');
      return;
    }
    const b = JSON.parse(body) as { stream?: boolean; stream_options?: { include_usage?: boolean } };
    if (!b.stream) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(completion);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end(stream + (b.stream_options?.include_usage ? usageChunk : '') + 'data: [DONE]\n\n');
  });
}).listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
