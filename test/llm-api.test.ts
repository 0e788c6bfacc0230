/**
 * The OpenAI-compatible API through the official `openai` SDK, unmodified: a local GGUF model the test
 * writes itself (tools/gguf/tiny-llama.ts; greedy decoding on random weights is deterministic), ONNX
 * embeddings through the serving core, and a second Switchyard proxying the first as its upstream.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import OpenAI from 'openai';
import { encoder } from '../tools/onnx/zoo.js';
import { describeNeeding } from './registry-helpers.js';
import { LLAMA, llamaMissing } from './llama-runtime.js';
import { writeTinyLlama } from '../tools/gguf/tiny-llama.js';
import { startSwitchyard, type TestServer } from './helpers.js';

const ADMIN = 'llm-test-admin-key-0123456789';

async function llmConfig(dir: string, models: unknown[]): Promise<string> {
  const file = join(dir, `llm-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, JSON.stringify({ models }));
  return file;
}

/** Token counts of a usage (cached_tokens depends on what the sequence held before). */
const counts = (u: OpenAI.CompletionUsage): number[] => [u.prompt_tokens, u.completion_tokens, u.total_tokens];

/** An x-ratelimit-reset-* value ("6s", "1m2s", "174ms") in ms. */
function durationMs(v: string): number {
  let ms = 0;
  for (const m of v.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) ms += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  assert.ok(v.length > 0 && ms >= 0, `a duration: ${v}`);
  return ms;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** A fake upstream that starts a stream, sends two chunks and drops the connection. */
async function brokenUpstream(): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (content: string): string =>
        `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
      res.write(chunk('par'));
      res.write(chunk('tial'));
      setTimeout(() => res.socket?.destroy(), 20);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1` };
}

describeNeeding('OpenAI-compatible API', LLAMA, await llamaMissing(), () => {
  let local: TestServer;
  let proxy: TestServer;
  let broken: { server: Server; url: string };
  let client: OpenAI;
  let viaProxy: OpenAI;
  let work: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'switchyard-llm-'));
    const gguf = join(work, 'tiny.gguf');
    await writeTinyLlama(gguf);
    const cfg = await llmConfig(work, [
      { name: 'tiny-chat', backend: 'llama', path: gguf, contextSize: 256, sequences: 2, pricing: { promptPer1k: 1, completionPer1k: 2 } },
      { name: 'embed', backend: 'onnx-embeddings', model: 'encoder', tenants: ['someone-else'] },
      { name: 'one-seat', backend: 'llama', path: gguf, contextSize: 256, sequences: 1, maxQueue: 0 },
    ]);
    local = await startSwitchyard(
      { encoder: { versions: { 1: encoder({ layers: 1, dModel: 32, heads: 2, seqLen: 32, ffn: 64, vocab: 300 }) } } },
      {
        listen: true,
        config: { adminKey: ADMIN, llmConfig: cfg },
      },
    );
    broken = await brokenUpstream();
    const proxyCfg = await llmConfig(work, [
      { name: 'proxied', backend: 'upstream', deployments: [{ url: `${local.url}/v1`, model: 'tiny-chat', apiKey: ADMIN }], embeddings: true },
      {
        name: 'with-fallback',
        backend: 'upstream',
        retries: 2,
        backoffMs: 1,
        deployments: [
          { url: 'http://127.0.0.1:9/v1', model: 'tiny-chat' },
          { url: `${local.url}/v1`, model: 'tiny-chat', apiKey: ADMIN },
        ],
      },
      { name: 'breaks', backend: 'upstream', deployments: [{ url: broken.url }] },
    ]);
    proxy = await startSwitchyard({}, { listen: true, config: { adminKey: ADMIN, llmConfig: proxyCfg } });
    client = new OpenAI({ baseURL: `${local.url}/v1`, apiKey: ADMIN, maxRetries: 0 });
    viaProxy = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: ADMIN, maxRetries: 0 });
  });

  after(async () => {
    await proxy?.close();
    await local?.close();
    await new Promise((r) => broken?.server.close(r));
    await rm(work, { recursive: true, force: true });
  });

  it('lists models', async () => {
    const models = await collect(client.models.list());
    assert.deepEqual(models.map((m) => m.id).sort(), ['embed', 'one-seat', 'tiny-chat']);
    assert.equal(models[0]!.object, 'model');
    const one = await client.models.retrieve('tiny-chat');
    assert.equal(one.id, 'tiny-chat');
    await assert.rejects(client.models.retrieve('nope'), (e: unknown) => e instanceof OpenAI.NotFoundError);
  });

  it('chat completion: usage, max_tokens, deterministic greedy decoding', async () => {
    const ask = (): Promise<OpenAI.ChatCompletion> =>
      client.chat.completions.create({
        model: 'tiny-chat',
        messages: [
          { role: 'system', content: 'be brief' },
          { role: 'user', content: 'hello world' },
        ],
        max_tokens: 12,
        temperature: 0,
      });
    const a = await ask();
    const b = await ask();
    assert.equal(a.object, 'chat.completion');
    assert.equal(a.model, 'tiny-chat');
    assert.match(a.id, /^chatcmpl-/);
    assert.equal(a.choices[0]!.message.role, 'assistant');
    assert.ok((a.choices[0]!.message.content ?? '').length > 0, 'generated text');
    assert.equal(a.choices[0]!.finish_reason, 'length');
    assert.equal(a.usage!.completion_tokens, 12);
    assert.ok(a.usage!.prompt_tokens > 5);
    assert.equal(a.usage!.total_tokens, a.usage!.prompt_tokens + 12);
    assert.equal(b.choices[0]!.message.content, a.choices[0]!.message.content, 'temperature 0 is deterministic');
  });

  it('streams the same text, ends with a usage chunk and [DONE]', async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'stream me' }];
    const whole = await client.chat.completions.create({ model: 'tiny-chat', messages, max_tokens: 10, temperature: 0 });
    const stream = await client.chat.completions.create({
      model: 'tiny-chat',
      messages,
      max_tokens: 10,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = await collect(stream);
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    assert.equal(text, whole.choices[0]!.message.content);
    assert.equal(chunks[0]!.choices[0]!.delta.role, 'assistant');
    const usage = chunks.at(-1)!;
    assert.deepEqual(usage.choices, [], 'the usage chunk has empty choices');
    assert.deepEqual(counts(usage.usage!), counts(whole.usage!));
    assert.equal(
      usage.usage!.prompt_tokens_details?.cached_tokens,
      whole.usage!.prompt_tokens - 1,
      'the same prompt again: all of it reused but the last token',
    );
    assert.equal(chunks.at(-2)!.choices[0]!.finish_reason, 'length');
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.model === 'tiny-chat' && c.id === chunks[0]!.id));

    // Raw wire: the last event is [DONE]; without include_usage there is no usage chunk.
    const res = await fetch(`${local.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ model: 'tiny-chat', messages, max_tokens: 3, stream: true }),
    });
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = (await res.text()).split('\n\n').filter(Boolean);
    assert.equal(events.at(-1), 'data: [DONE]');
    assert.ok(events.slice(0, -1).every((e) => e.startsWith('data: {') && !('usage' in JSON.parse(e.slice(6)))));
  });

  it('completions, streamed and not', async () => {
    const whole = await client.completions.create({ model: 'tiny-chat', prompt: 'The switch', max_tokens: 6, temperature: 0 });
    assert.equal(whole.object, 'text_completion');
    assert.equal(whole.usage!.completion_tokens, 6);
    const chunks = await collect(await client.completions.create({ model: 'tiny-chat', prompt: 'The switch', max_tokens: 6, temperature: 0, stream: true }));
    assert.equal(chunks.map((c) => c.choices[0]?.text ?? '').join(''), whole.choices[0]!.text);
  });

  it('stop sequences end the text before the first occurrence', async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'stop test' }];
    const full = (await client.chat.completions.create({ model: 'tiny-chat', messages, max_tokens: 24, temperature: 0 })).choices[0]!.message.content!;
    assert.ok(full.length >= 6, `need some text to cut: ${JSON.stringify(full)}`);
    const stop = full.slice(3, 5);
    const cut = full.slice(0, full.indexOf(stop));
    const r = await client.chat.completions.create({ model: 'tiny-chat', messages, max_tokens: 24, temperature: 0, stop: [stop] });
    assert.equal(r.choices[0]!.message.content, cut);
    assert.equal(r.choices[0]!.finish_reason, 'stop');
    const streamed = await collect(await client.chat.completions.create({ model: 'tiny-chat', messages, max_tokens: 24, temperature: 0, stop, stream: true }));
    assert.equal(streamed.map((c) => c.choices[0]?.delta.content ?? '').join(''), cut, 'a stream never shows the stop sequence');
  });

  it('serves concurrent sequences (more requests than sequences) with the same answers', async () => {
    const prompts = ['alpha', 'beta', 'gamma', 'delta', 'epsilon'];
    const one = (p: string): Promise<string> =>
      client.chat.completions
        .create({ model: 'tiny-chat', messages: [{ role: 'user', content: p }], max_tokens: 8, temperature: 0 })
        .then((r) => r.choices[0]!.message.content!);
    const sequential: string[] = [];
    for (const p of prompts) sequential.push(await one(p));
    const concurrent = await Promise.all(prompts.map(one));
    assert.deepEqual(concurrent, sequential);
  });

  it('a client that leaves mid-stream frees its sequence; a full model answers 503, never hangs', async () => {
    const backend = local.sy.llm.get('one-seat')!.backend;
    const ac = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'one-seat', messages: [{ role: 'user', content: 'long' }], max_tokens: 200, stream: true },
      { signal: ac.signal },
    );
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    assert.equal(backend.load().active, 1);
    // The one sequence is busy and no queue is allowed: 503 in OpenAI's shape, with retry-after.
    await assert.rejects(client.chat.completions.create({ model: 'one-seat', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.InternalServerError || (e instanceof OpenAI.APIError && e.status === 503), String(e));
      assert.equal((e as InstanceType<typeof OpenAI.APIError>).status, 503);
      assert.equal((e as InstanceType<typeof OpenAI.APIError>).code, 'model_overloaded');
      assert.ok(Number((e as InstanceType<typeof OpenAI.APIError>).headers?.get('retry-after')) >= 1);
      return true;
    });
    ac.abort();
    while (backend.load().active > 0) await new Promise((r) => setTimeout(r, 20)); // no deadline: the test runner's timeout bounds a hang
    assert.equal(backend.load().active, 0, 'the sequence is free again');
    const after = await client.chat.completions.create({ model: 'one-seat', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });
    assert.equal(after.usage!.completion_tokens, 2);
  });

  it('embeddings: float and base64 (the SDK default) agree', async () => {
    const input = ['hello', 'a longer piece of text'];
    const viaSdk = await client.embeddings.create({ model: 'embed', input });
    const asFloat = await client.embeddings.create({ model: 'embed', input, encoding_format: 'float' });
    assert.equal(viaSdk.data.length, 2);
    assert.equal(viaSdk.object, 'list');
    assert.ok(viaSdk.usage.prompt_tokens > 0);
    for (let i = 0; i < 2; i++) {
      const a = viaSdk.data[i]!.embedding;
      const b = asFloat.data[i]!.embedding;
      assert.equal(a.length, 32);
      for (let j = 0; j < a.length; j++) assert.ok(Math.abs(a[j]! - b[j]!) < 1e-6);
    }
    await assert.rejects(
      client.embeddings.create({ model: 'tiny-chat', input: 'x' }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'model',
    );
  });

  it('errors have the OpenAI shape and status', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'missing', messages: [{ role: 'user', content: 'x' }] }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.NotFoundError);
      assert.equal(e.param, 'model');
      assert.equal(e.code, 'model_not_found');
      return true;
    });
    await assert.rejects(
      client.chat.completions.create({ model: 'tiny-chat', messages: [{ role: 'user', content: 'x'.repeat(400) }], max_tokens: 10 }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError);
        assert.equal(e.code, 'context_length_exceeded');
        assert.match(e.message, /maximum context length is 256 tokens/);
        return true;
      },
    );
    await assert.rejects(client.chat.completions.create({ model: 'tiny-chat', messages: [{ role: 'user', content: 'x' }], temperature: 7 }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.param, 'temperature');
      return true;
    });
    await assert.rejects(
      new OpenAI({ baseURL: `${local.url}/v1`, apiKey: 'sy_wrong_key', maxRetries: 0 }).models.list(),
      (e: unknown) => e instanceof OpenAI.AuthenticationError,
    );
    const bad = await fetch(`${local.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: '{"model": ',
    });
    assert.equal(bad.status, 400);
    const body = (await bad.json()) as { error: { message: string; type: string; param: unknown; code: unknown } };
    assert.equal(body.error.type, 'invalid_request_error');
    assert.ok('param' in body.error && 'code' in body.error);
    const missing = await fetch(`${local.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: '{"model":"tiny-chat"}',
    });
    assert.equal(missing.status, 400);
    assert.equal(((await missing.json()) as { error: { param: string } }).error.param, 'messages');
    // The server is still serving.
    const ok = await client.chat.completions.create({ model: 'tiny-chat', messages: [{ role: 'user', content: 'still up?' }], max_tokens: 2 });
    assert.equal(ok.usage!.completion_tokens, 2);
  });

  it('token limits per tenant: 429 with retry-after, retry-after-ms and x-ratelimit-* headers', async () => {
    const admin = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
      const r = await fetch(`${local.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
        body: JSON.stringify(body),
      });
      assert.ok(r.ok, `${path}: ${r.status} ${await r.clone().text()}`);
      return (await r.json()) as Record<string, unknown>;
    };
    await admin('/api/v1/tenants', { name: 'tokens', tier: 'unlimited', limits: { tpm: 200 } });
    const key = (await admin('/api/v1/tenants/tokens/keys', { scopes: ['infer', 'read'] }))['key'] as string;
    const tenant = new OpenAI({ baseURL: `${local.url}/v1`, apiKey: key, maxRetries: 0 });
    // A model listed for other tenants only does not exist for this one.
    assert.deepEqual((await collect(tenant.models.list())).map((m) => m.id).sort(), ['one-seat', 'tiny-chat']);
    await assert.rejects(
      tenant.embeddings.create({ model: 'embed', input: 'x' }),
      (e: unknown) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found',
    );
    const req = { model: 'tiny-chat', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 40 };
    const first = await tenant.chat.completions.create(req).withResponse();
    assert.equal(first.response.headers.get('x-ratelimit-limit-tokens'), '200');
    const used = first.data.usage!.total_tokens;
    let admitted = 1;
    let rejected: InstanceType<typeof OpenAI.RateLimitError> | null = null;
    for (let i = 0; i < 10 && !rejected; i++) {
      try {
        await tenant.chat.completions.create(req);
        admitted++;
      } catch (e) {
        assert.ok(e instanceof OpenAI.RateLimitError, String(e));
        rejected = e;
      }
    }
    assert.ok(rejected, 'the token limit refused a request');
    assert.equal(admitted, Math.floor(200 / used), `each request uses ${used} tokens of 200 per minute`);
    assert.equal(rejected.code, 'rate_limit_exceeded');
    assert.ok(Number(rejected.headers?.get('retry-after')) >= 1);
    assert.ok(Number(rejected.headers?.get('retry-after-ms')) > 0);
    assert.equal(rejected.headers?.get('x-ratelimit-limit-tokens'), '200');
    assert.equal(rejected.type, 'tokens', "OpenAI's type for a tokens-per-minute refusal");
    // The headers describe the limit that refused, and agree with retry-after: not enough left, and full again no sooner than the retry.
    assert.ok(Number(rejected.headers?.get('x-ratelimit-remaining-tokens')) < 40 + 1);
    assert.ok(Number(rejected.headers?.get('retry-after-ms')) <= durationMs(rejected.headers?.get('x-ratelimit-reset-tokens') ?? ''));
    // A request that can never fit the limit: 429 without retry-after, x-should-retry false; the SDK sends it once.
    let sent = 0;
    const counting = new OpenAI({
      baseURL: `${local.url}/v1`,
      apiKey: key,
      maxRetries: 3,
      fetch: (url, init) => {
        sent++;
        return fetch(url, init);
      },
    });
    await assert.rejects(counting.chat.completions.create({ ...req, max_tokens: 200 }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.RateLimitError, String(e));
      assert.equal(e.code, 'request_too_large');
      assert.equal(e.type, 'tokens');
      assert.match(e.message, /Request too large for tiny-chat .* Limit 200, Requested \d+/);
      assert.equal(e.headers?.get('x-should-retry'), 'false');
      assert.equal(e.headers?.get('retry-after'), null);
      return true;
    });
    assert.equal(sent, 1, 'not retried');
    // Usage and spend were recorded for the tenant.
    await local.sy.llmUsage.flush();
    const r = await fetch(`${local.url}/api/v1/llm/usage?tenant=tokens&group_by=total`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(r.status, 200);
    const rows = JSON.stringify(await r.json());
    assert.match(rows, /tiny-chat/);
  });

  it('proxies an upstream Switchyard: same answers, streamed and not, usage included', async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'through the proxy' }];
    const direct = await client.chat.completions.create({ model: 'tiny-chat', messages, max_tokens: 9, temperature: 0 });
    const proxied = await viaProxy.chat.completions.create({ model: 'proxied', messages, max_tokens: 9, temperature: 0 });
    assert.equal(proxied.model, 'proxied');
    assert.equal(proxied.choices[0]!.message.content, direct.choices[0]!.message.content);
    assert.deepEqual(counts(proxied.usage!), counts(direct.usage!));
    const chunks = await collect(
      await viaProxy.chat.completions.create({
        model: 'proxied',
        messages,
        max_tokens: 9,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      }),
    );
    assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), direct.choices[0]!.message.content);
    assert.deepEqual(counts(chunks.at(-1)!.usage!), counts(direct.usage!));
    const plain = await collect(await viaProxy.chat.completions.create({ model: 'proxied', messages, max_tokens: 3, stream: true }));
    assert.ok(
      plain.every((c) => c.choices.length === 1),
      'no usage chunk when the client did not ask for one',
    );
    const emb = await viaProxy.embeddings.create({ model: 'proxied', input: 'x' }).catch((e: unknown) => e);
    assert.ok(emb instanceof OpenAI.APIError, 'the upstream model has no embeddings: its 400 is passed through');
    assert.equal((emb as InstanceType<typeof OpenAI.APIError>).status, 400);
  });

  it('falls back to the next deployment before the first byte', async () => {
    const r = await viaProxy.chat.completions.create({ model: 'with-fallback', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });
    assert.equal(r.usage!.completion_tokens, 2);
    const metrics = await (await fetch(`${proxy.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
    assert.match(metrics, /switchyard_llm_upstream_errors_total\{model="with-fallback",deployment="http:\/\/127\.0\.0\.1:9\/v1",reason="[a-z_]+"\} [1-9]/);
  });

  it('a stream that breaks upstream ends with an error event, never a silent end', async () => {
    const stream = await viaProxy.chat.completions.create({ model: 'breaks', messages: [{ role: 'user', content: 'x' }], stream: true });
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const c of stream) seen.push(c.choices[0]?.delta.content ?? '');
      })(),
      (e: unknown) => e instanceof OpenAI.APIError && /ended before \[DONE\]/.test(e.message),
    );
    assert.deepEqual(seen.join(''), 'partial');
    const raw = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ model: 'breaks', messages: [{ role: 'user', content: 'x' }], stream: true }),
    });
    const events = (await raw.text()).split('\n\n').filter(Boolean);
    assert.ok(!events.includes('data: [DONE]'));
    const last = JSON.parse(events.at(-1)!.slice(6)) as { error: { message: string; type: string; code: string } };
    assert.equal(last.error.code, 'upstream_stream_incomplete');
  });

  it('exports LLM metrics', async () => {
    const text = await (await fetch(`${local.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
    for (const name of [
      'switchyard_llm_time_to_first_token_seconds_bucket',
      'switchyard_llm_inter_token_latency_seconds_bucket',
      'switchyard_llm_requests_total',
      'switchyard_llm_active_sequences',
      'switchyard_llm_queue_length',
      'switchyard_llm_tokens_total',
    ]) {
      assert.match(text, new RegExp(`^${name}\\{[^}]*model="tiny-chat"`, 'm'), name);
    }
  });
});
