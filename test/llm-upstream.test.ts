/**
 * The upstream OpenAI-compatible backend against fake upstreams on loopback (node:http, real sockets):
 * pass-through, SSE parsing and usage, retries and fallback before the first byte, no retry after it,
 * load balancing, cooldown, timeouts, client aborts, embeddings and the token estimate.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { UpstreamBackend, type UpstreamBackendOptions } from '../src/runtimes/remote/upstream.js';
import { UpstreamModelSchema } from '../src/config/llm-config.js';
import { ClientSignal, LlmError, type CancelSignal, type ChunkStream, type EmbeddingRequest, type GenerationRequest } from '../src/runtimes/generation.js';
import { generationRequest } from './generation-request.js';

interface Hit {
  path: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
  /** The connection closed before the response was complete. */
  aborted: boolean;
}

/** What the fake does with one request; `n` counts the requests it got (from 0). */
type Handler = (res: ServerResponse, hit: Hit, n: number) => void;

/** A tiny OpenAI-compatible upstream whose behavior each test sets. */
class FakeUpstream {
  readonly hits: Hit[] = [];
  inflight = 0;
  maxInflight = 0;
  /** TCP connections accepted. */
  connections = 0;
  url = '';
  readonly #server: Server;

  constructor(public handler: Handler) {
    this.#server = createServer((req, res) => this.#serve(req, res));
    this.#server.on('connection', () => {
      this.connections++;
    });
  }

  static async start(handler: Handler = openai()): Promise<FakeUpstream> {
    const f = new FakeUpstream(handler);
    await new Promise<void>((r) => f.#server.listen(0, '127.0.0.1', r));
    f.url = `http://127.0.0.1:${(f.#server.address() as AddressInfo).port}/v1`;
    servers.push(f);
    return f;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }

  #serve(req: IncomingMessage, res: ServerResponse): void {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      text += c;
    });
    req.on('end', () => {
      const hit: Hit = { path: req.url ?? '', headers: req.headers, body: JSON.parse(text) as Record<string, unknown>, aborted: false };
      const n = this.hits.push(hit) - 1;
      this.inflight++;
      this.maxInflight = Math.max(this.maxInflight, this.inflight);
      res.on('close', () => {
        this.inflight--;
        if (!res.writableFinished) hit.aborted = true;
      });
      this.handler(res, hit, n);
    });
  }
}

const servers: FakeUpstream[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

const USAGE = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 };

function chunk(model: string, delta: Record<string, unknown>, finish: string | null = null): Record<string, unknown> {
  return { id: 'c1', object: 'chat.completion.chunk', created: 1, model, choices: [{ index: 0, delta, finish_reason: finish }] };
}

/** The chunks of a normal stream ("Hel", "lo"), each with `usage: null` and a usage chunk last when asked (as OpenAI does). */
function chunksFor(body: Record<string, unknown>): Record<string, unknown>[] {
  const model = String(body['model']);
  const withUsage = (body['stream_options'] as { include_usage?: boolean } | undefined)?.include_usage === true;
  const list = [chunk(model, { role: 'assistant', content: '' }), chunk(model, { content: 'Hel' }), chunk(model, { content: 'lo' }), chunk(model, {}, 'stop')];
  if (!withUsage) return list;
  return [...list.map((c) => ({ ...c, usage: null })), { id: 'c1', object: 'chat.completion.chunk', created: 1, model, choices: [], usage: USAGE }];
}

function sse(events: readonly unknown[]): string {
  return events.map((e) => `data: ${typeof e === 'string' ? e : JSON.stringify(e)}\n\n`).join('');
}

function startSse(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.flushHeaders();
}

/** A working upstream: chat completions (streaming or not) and embeddings (answered in reverse index order). */
function openai(delayMs = 0): Handler {
  return (res, hit) => {
    const reply = (): void => {
      const body = hit.body;
      if (hit.path.endsWith('/embeddings')) {
        const input = body['input'] as string[];
        const data = input.map((_, i) => ({ object: 'embedding', index: i, embedding: [i, i + 0.5, -1 - i] })).reverse();
        json(res, 200, { object: 'list', data, model: body['model'], usage: { prompt_tokens: 3, total_tokens: 3 } });
      } else if (body['stream'] === true) {
        startSse(res);
        res.end(`${sse(chunksFor(body))}data: [DONE]\n\n`);
      } else {
        json(res, 200, {
          id: 'x',
          object: 'chat.completion',
          created: 1,
          model: body['model'],
          choices: [{ index: 0, message: { role: 'assistant', content: 'Hello' }, finish_reason: 'stop' }],
          usage: USAGE,
        });
      }
    };
    if (delayMs > 0) setTimeout(reply, delayMs);
    else reply();
  };
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function status(
  code: number,
  body: unknown = { error: { message: `failure ${code}`, type: 'server_error', param: null, code: null } },
  headers: Record<string, string> = {},
): Handler {
  return (res) => json(res, code, body, headers);
}

/** The n-th request gets handlers[n] (the last one for all after). */
function sequence(...handlers: Handler[]): Handler {
  return (res, hit, n) => handlers[Math.min(n, handlers.length - 1)]!(res, hit, n);
}

const hang: Handler = () => {};

/** Raw SSE text written in pieces, each in its own write a few ms apart (so they arrive as separate reads). */
function pieces(parts: readonly string[], thenDestroy = false): Handler {
  return (res) => {
    startSse(res);
    let i = 0;
    const write = (): void => {
      if (i < parts.length) {
        res.write(parts[i++]);
        setTimeout(write, 3);
      } else if (thenDestroy) res.socket?.destroy();
      else res.end();
    };
    write();
  };
}

async function freeUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return `http://127.0.0.1:${port}/v1`;
}

const silent = pino({ level: 'silent' });
const backends: UpstreamBackend[] = [];
after(async () => {
  await Promise.all(backends.map((b) => b.close()));
});

function backend(
  deployments: ReadonlyArray<string | Record<string, unknown>>,
  extra: Record<string, unknown> = {},
  opts: Partial<UpstreamBackendOptions> = {},
): UpstreamBackend {
  const config = UpstreamModelSchema.parse({
    name: 'm',
    backend: 'upstream',
    backoffMs: 5,
    timeoutMs: 2000,
    ...extra,
    deployments: deployments.map((d) => (typeof d === 'string' ? { url: d, model: 'up-model' } : d)),
  });
  const b = new UpstreamBackend(config, { logger: silent, ...opts });
  backends.push(b);
  return b;
}

let ids = 0;
function chatReq(body: Record<string, unknown> = {}, signal: CancelSignal = new ClientSignal()): GenerationRequest {
  const messages = [{ role: 'user' as const, content: 'hi' }];
  return generationRequest({ messages, signal, requestId: `req-${++ids}`, body: { model: 'm', messages, ...body } });
}

async function collect(s: ChunkStream): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for await (const c of s) out.push(c);
  return out;
}

function contentOf(chunks: readonly Record<string, unknown>[]): string {
  return chunks.map((c) => (c['choices'] as Array<{ delta: { content?: string } }>)[0]?.delta.content ?? '').join('');
}

/** Polls `cond` every 5 ms. No deadline (a loaded machine may be slow): a hang is the test runner's timeout. */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

function isLlmError(props: { status: number; code?: string | null; type?: string }): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof LlmError, `expected an LlmError, got ${String(e)}`);
    assert.equal(e.status, props.status, e.message);
    if (props.code !== undefined) assert.equal(e.openaiCode, props.code);
    if (props.type !== undefined) assert.equal(e.type, props.type);
    return true;
  };
}

describe('upstream backend: pass-through', () => {
  it('forwards a non-streaming request with the deployment model, key and request id', async () => {
    const up = await FakeUpstream.start();
    process.env['SY_TEST_UPSTREAM_KEY'] = 'sk-from-env';
    const b = backend([{ url: up.url, model: 'up-model', apiKeyEnv: 'SY_TEST_UPSTREAM_KEY' }]);
    const req = chatReq({ temperature: 0.2, stream: true });
    const res = await b.complete(req);
    assert.equal(up.hits.length, 1);
    const hit = up.hits[0]!;
    assert.equal(hit.path, '/v1/chat/completions');
    assert.equal(hit.body['model'], 'up-model');
    assert.equal(hit.body['stream'], false);
    assert.equal(hit.body['temperature'], 0.2);
    assert.equal(hit.headers.authorization, 'Bearer sk-from-env');
    assert.equal(hit.headers['x-request-id'], req.requestId);
    assert.equal(res['model'], 'up-model');
    assert.deepEqual(res['usage'], USAGE);
    assert.equal((res['choices'] as Array<{ message: { content: string } }>)[0]!.message.content, 'Hello');
    assert.deepEqual(b.load(), { active: 0, queued: 0, slots: null });
    assert.equal(b.kind, 'upstream');
    assert.deepEqual(b.capabilities, { chat: true, completions: true, embeddings: false });
    assert.equal(b.contextLength, null);
  });

  it('posts completions to /completions and sends no Authorization without a key', async () => {
    const up = await FakeUpstream.start();
    const b = backend([up.url]);
    await b.complete({ ...chatReq(), kind: 'completion', prompt: 'Say hi', body: { model: 'm', prompt: 'Say hi' } });
    assert.equal(up.hits[0]!.path, '/v1/completions');
    assert.equal(up.hits[0]!.headers.authorization, undefined);
  });
});

describe('upstream backend: streaming', () => {
  it('yields the chunks, keeps usage instead of yielding it, and forces include_usage upstream', async () => {
    const up = await FakeUpstream.start();
    const b = backend([up.url]);
    const s = await b.stream(chatReq({ stream: true, stream_options: { include_usage: false, other: 1 } }));
    const chunks = await collect(s);
    assert.deepEqual(up.hits[0]!.body['stream_options'], { include_usage: true, other: 1 });
    assert.equal(up.hits[0]!.body['stream'], true);
    assert.equal(chunks.length, 4);
    assert.equal(contentOf(chunks), 'Hello');
    assert.ok(
      chunks.every((c) => !('usage' in c)),
      'no chunk carries usage',
    );
    assert.deepEqual(s.usage, USAGE);
    await until(() => b.load().active === 0);
  });

  it('reuses the keep-alive connection after streams and completions', async () => {
    // The response ends a few ms after [DONE]: the stream must read on to the end rather than destroy it.
    const up = await FakeUpstream.start((res, hit, n) => {
      if (hit.body['stream'] === true) pieces([sse(chunksFor(hit.body)), 'data: [DONE]\n\n'])(res, hit, n);
      else openai()(res, hit, n);
    });
    const b = backend([up.url]);
    for (let i = 0; i < 3; i++) {
      assert.equal(contentOf(await collect(await b.stream(chatReq()))), 'Hello');
      await until(() => b.load().active === 0); // the rest of the body (after [DONE]) is read in the background
      await b.complete(chatReq());
    }
    assert.equal(up.hits.length, 6);
    // undici's Pool may open a second connection for a request sent the instant the previous one completes.
    assert.ok(up.connections <= 2, `${up.connections} connections for 6 requests`);
  });

  it('parses SSE split across reads, with \\r\\n, comments, multi-byte text and usage on a content chunk', async () => {
    const model = 'up-model';
    const text = sse([chunk(model, { content: 'héllo ' }), { ...chunk(model, { content: '日本' }, 'stop'), usage: USAGE }, '[DONE]']).replace(/\n/g, '\r\n');
    const raw = `: keep-alive\r\n\r\n${text}`;
    // 7-byte pieces: cuts inside the multi-byte characters and between \r and \n.
    const bytes = Buffer.from(raw);
    const parts: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += 7) parts.push(bytes.subarray(i, i + 7));
    const up = await FakeUpstream.start((res) => {
      startSse(res);
      let i = 0;
      const write = (): void => {
        if (i < parts.length) {
          res.write(parts[i++]);
          setImmediate(write);
        } else res.end();
      };
      write();
    });
    const b = backend([up.url]);
    const chunks = await collect(await b.stream(chatReq()));
    assert.equal(contentOf(chunks), 'héllo 日本');
    assert.equal(chunks.length, 2);
    assert.ok(!('usage' in chunks[1]!));
    assert.equal((chunks[1]!['choices'] as Array<{ finish_reason: string }>)[0]!.finish_reason, 'stop');
  });

  it('throws upstream_stream_incomplete when the connection breaks mid-stream, and never retries', async () => {
    const model = 'up-model';
    const broken = await FakeUpstream.start(pieces([sse([chunk(model, { content: 'a' })]), sse([chunk(model, { content: 'b' })])], true));
    const spare = await FakeUpstream.start();
    const errors: string[] = [];
    const b = backend([broken.url, spare.url], {}, { onUpstreamError: (_d, reason) => errors.push(reason) });
    const s = await b.stream(chatReq());
    const got: Record<string, unknown>[] = [];
    await assert.rejects(
      async () => {
        for await (const c of s) got.push(c);
      },
      isLlmError({ status: 502, code: 'upstream_stream_incomplete' }),
    );
    assert.equal(contentOf(got), 'ab');
    assert.equal(spare.hits.length, 0);
    assert.deepEqual(errors, ['stream_broken']);
  });

  it('throws the upstream error event sent mid-stream', async () => {
    const model = 'up-model';
    const up = await FakeUpstream.start(
      pieces([sse([chunk(model, { content: 'a' })]), sse([{ error: { message: 'the model crashed', type: 'server_error', code: 'model_crashed' } }])]),
    );
    const b = backend([up.url]);
    const s = await b.stream(chatReq());
    const got: Record<string, unknown>[] = [];
    await assert.rejects(
      async () => {
        for await (const c of s) got.push(c);
      },
      (e) => {
        assert.ok(e instanceof LlmError);
        assert.equal(e.status, 502);
        assert.equal(e.openaiCode, 'model_crashed');
        assert.match(e.message, /the model crashed/);
        return true;
      },
    );
    assert.equal(got.length, 1);
  });

  it('throws when the stream ends without [DONE]', async () => {
    const up = await FakeUpstream.start(pieces([sse([chunk('up-model', { content: 'a' })])]));
    const b = backend([up.url]);
    const s = await b.stream(chatReq());
    await assert.rejects(collect(s), isLlmError({ status: 502, code: 'upstream_stream_incomplete' }));
  });
});

describe('upstream backend: retries and fallback', () => {
  it('falls back to the second deployment on a 500, streaming or not', async () => {
    const bad = await FakeUpstream.start(status(500));
    const good = await FakeUpstream.start();
    const reported: Array<[string, string]> = [];
    const onUpstreamError = (d: string, r: string): void => {
      reported.push([d, r]);
    };
    const res = await backend([bad.url, good.url], { balance: 'weighted' }, { onUpstreamError }).complete(chatReq());
    assert.equal(res['object'], 'chat.completion');
    const chunks = await collect(await backend([bad.url, good.url], { balance: 'weighted' }, { onUpstreamError }).stream(chatReq()));
    assert.equal(contentOf(chunks), 'Hello');
    assert.equal(bad.hits.length, 2);
    assert.equal(good.hits.length, 2);
    assert.deepEqual(reported, [
      [bad.url, 'server_error'],
      [bad.url, 'server_error'],
    ]);
  });

  it('falls back when the first deployment refuses connections', async () => {
    const good = await FakeUpstream.start();
    const b = backend([await freeUrl(), good.url]);
    assert.equal(contentOf(await collect(await b.stream(chatReq()))), 'Hello');
    assert.equal(good.hits.length, 1);
  });

  it('gives up with 502 naming the model after retries+1 attempts, without leaking the key', async () => {
    const bad = await FakeUpstream.start(status(503));
    const b = backend([{ url: bad.url, apiKey: 'sk-secret-123' }], { retries: 2, backoffMs: 1 });
    await assert.rejects(b.complete(chatReq()), (e) => {
      isLlmError({ status: 502, code: 'upstream_error' })(e);
      const err = e as LlmError;
      assert.match(err.message, /model "m"/);
      assert.match(err.message, /HTTP 503/);
      assert.doesNotMatch(err.message, /sk-secret/);
      return true;
    });
    assert.equal(bad.hits.length, 3);
  });

  it('waits for retry-after-ms on a 429 before retrying', async () => {
    const up = await FakeUpstream.start(sequence(status(429, { error: { message: 'slow down' } }, { 'retry-after-ms': '300' }), openai()));
    const b = backend([up.url], { backoffMs: 1 });
    const t0 = performance.now();
    const res = await b.complete(chatReq());
    const waited = performance.now() - t0;
    assert.equal(res['object'], 'chat.completion');
    assert.equal(up.hits.length, 2);
    assert.ok(waited >= 280, `waited ${waited} ms`);
  });

  // The retry-after is far longer than the runner's timeout for this test: waiting it out fails the test.
  it('stops waiting out a retry-after as soon as the client goes away, and does not retry', { timeout: 120_000 }, async () => {
    const up = await FakeUpstream.start(sequence(status(429, { error: { message: 'slow down' } }, { 'retry-after-ms': '3600000' }), openai()));
    const b = backend([up.url], { backoffMs: 1, maxRetryAfterMs: 3_600_000 });
    const gone = new ClientSignal();
    const p = b.complete(chatReq({}, gone));
    await until(() => up.hits.length === 1);
    setTimeout(() => gone.abort(), 50);
    await assert.rejects(p, isLlmError({ status: 499, code: 'client_closed_request' }));
    assert.equal(up.hits.length, 1);
  });

  it('ends with 429 rate_limit_exceeded and the upstream retry-after once retries are spent', async () => {
    const up = await FakeUpstream.start(status(429, { error: { message: 'slow down' } }, { 'retry-after': '0.05' }));
    const b = backend([up.url], { retries: 1 });
    await assert.rejects(b.complete(chatReq()), (e) => {
      isLlmError({ status: 429, code: 'rate_limit_exceeded', type: 'requests' })(e);
      assert.equal((e as LlmError).retryAfterMs, 50);
      return true;
    });
    assert.equal(up.hits.length, 2);
  });

  // The retry-after (an hour) is far longer than the runner's timeout for this test: waiting it out fails the test.
  it('does not wait for a retry-after over maxRetryAfterMs: fails over at once, or gives up', { timeout: 120_000 }, async () => {
    const limited = await FakeUpstream.start(status(429, { error: { message: 'quota' } }, { 'retry-after': '3600' }));
    const alone = backend([limited.url], { retries: 3, maxRetryAfterMs: 1000 });
    await assert.rejects(alone.complete(chatReq()), (e) => {
      isLlmError({ status: 429, code: 'rate_limit_exceeded' })(e);
      assert.equal((e as LlmError).retryAfterMs, 3_600_000);
      return true;
    });
    assert.equal(limited.hits.length, 1);

    const good = await FakeUpstream.start();
    const pair = backend([limited.url, good.url], { retries: 3, maxRetryAfterMs: 1000, balance: 'weighted' });
    await pair.complete(chatReq());
    assert.equal(limited.hits.length, 2);
    assert.equal(good.hits.length, 1);
  });

  it('passes an upstream 4xx through without retrying', async () => {
    const error = { message: 'temperature is out of range', type: 'invalid_request_error', param: 'temperature', code: 'invalid_value' };
    const bad = await FakeUpstream.start(status(400, { error }));
    const good = await FakeUpstream.start();
    const b = backend([bad.url, good.url], { balance: 'weighted' });
    await assert.rejects(b.stream(chatReq()), (e) => {
      assert.ok(e instanceof LlmError);
      assert.deepEqual(e.body(), { error });
      assert.equal(e.status, 400);
      return true;
    });
    assert.equal(bad.hits.length, 1);
    assert.equal(good.hits.length, 0);

    bad.handler = (res) => {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('Not Found');
    };
    await assert.rejects(backend([bad.url]).complete(chatReq()), (e) => {
      isLlmError({ status: 404, type: 'invalid_request_error' })(e);
      assert.match((e as LlmError).message, /HTTP 404/);
      return true;
    });
  });

  it("treats an upstream 401 as the gateway's credentials failing: fails over, else 502, never retried in place", async () => {
    const denied = await FakeUpstream.start(status(401, { error: { message: 'Incorrect API key provided: sk-ab**cd', type: 'invalid_request_error' } }));
    const alone = backend([{ url: denied.url, apiKey: 'sk-abcd' }], { retries: 2 });
    await assert.rejects(alone.complete(chatReq()), (e) => {
      isLlmError({ status: 502, code: 'upstream_error' })(e);
      assert.doesNotMatch((e as LlmError).message, /sk-/);
      return true;
    });
    assert.equal(denied.hits.length, 1);
    const good = await FakeUpstream.start();
    const pair = backend([denied.url, good.url], { balance: 'weighted' });
    assert.equal((await pair.complete(chatReq()))['object'], 'chat.completion');
  });

  it('times out before the headers: 504 alone, fallback when another deployment exists', async () => {
    const stuck = await FakeUpstream.start(hang);
    const alone = backend([stuck.url], { timeoutMs: 150, retries: 0 });
    const t0 = performance.now();
    await assert.rejects(alone.complete(chatReq()), isLlmError({ status: 504, code: 'upstream_timeout' }));
    const took = performance.now() - t0;
    assert.ok(took >= 140, `took ${took} ms`);

    const good = await FakeUpstream.start();
    const pair = backend([stuck.url, good.url], { timeoutMs: 150, balance: 'weighted' });
    assert.equal(contentOf(await collect(await pair.stream(chatReq()))), 'Hello');
    assert.equal(good.hits.length, 1);
  });

  it('times out waiting for the first chunk after the headers, and falls back', async () => {
    const silentStream = await FakeUpstream.start((res) => {
      startSse(res);
      res.write(': still thinking\n\n');
    });
    const good = await FakeUpstream.start();
    const b = backend([silentStream.url, good.url], { timeoutMs: 150, balance: 'weighted' });
    const t0 = performance.now();
    assert.equal(contentOf(await collect(await b.stream(chatReq()))), 'Hello');
    assert.ok(performance.now() - t0 >= 140);
    await until(() => silentStream.hits[0]!.aborted);
  });
});

describe('upstream backend: balancing and cooldown', () => {
  it('least-inflight spreads concurrent requests over the deployments', async () => {
    const a = await FakeUpstream.start(openai(80));
    const c = await FakeUpstream.start(openai(80));
    const b = backend([a.url, c.url]);
    const all = Array.from({ length: 10 }, () => b.complete(chatReq()));
    await until(() => a.inflight + c.inflight === 10);
    assert.equal(b.load().active, 10);
    await Promise.all(all);
    assert.equal(a.hits.length, 5);
    assert.equal(c.hits.length, 5);
    assert.equal(b.load().active, 0);
  });

  it('weighted splits 3:1', async () => {
    const heavy = await FakeUpstream.start();
    const light = await FakeUpstream.start();
    const b = backend(
      [
        { url: heavy.url, weight: 3 },
        { url: light.url, weight: 1 },
      ],
      { balance: 'weighted' },
    );
    for (let i = 0; i < 400; i++) await b.complete(chatReq());
    assert.ok(heavy.hits.length >= 270 && heavy.hits.length <= 330, `heavy got ${heavy.hits.length}`);
    assert.equal(heavy.hits.length + light.hits.length, 400);
  });

  it('skips a deployment in cooldown after failuresToCooldown failures, and tries it again after', async () => {
    let now = 1_000_000;
    const bad = await FakeUpstream.start(status(500));
    const good = await FakeUpstream.start();
    const b = backend([bad.url, good.url], { failuresToCooldown: 2, cooldownMs: 1000, retries: 1 }, { now: () => now });
    for (let i = 0; i < 8; i++) await b.complete(chatReq());
    assert.equal(bad.hits.length, 2, 'cooling down after 2 failures');
    assert.equal(good.hits.length, 8);
    now += 1001;
    for (let i = 0; i < 4; i++) await b.complete(chatReq());
    assert.equal(bad.hits.length, 3, 'one trial after the cooldown, then cooling again');
  });

  it('still uses a deployment when all of them cool down', async () => {
    const bad = await FakeUpstream.start(status(500));
    const b = backend([bad.url, bad.url], { failuresToCooldown: 1, cooldownMs: 60_000, retries: 0 });
    await assert.rejects(b.complete(chatReq()), isLlmError({ status: 502 }));
    await assert.rejects(b.complete(chatReq()), isLlmError({ status: 502 }));
    await assert.rejects(b.complete(chatReq()), isLlmError({ status: 502 }));
    assert.equal(bad.hits.length, 3);
  });
});

describe('upstream backend: client aborts', () => {
  // The routes pass a ClientSignal; an AbortSignal fits the same contract.
  const signals: [string, () => { signal: CancelSignal; abort(): void }][] = [
    [
      'ClientSignal',
      () => {
        const c = new ClientSignal();
        return { signal: c, abort: () => c.abort() };
      },
    ],
    [
      'AbortSignal',
      () => {
        const c = new AbortController();
        return { signal: c.signal, abort: () => c.abort() };
      },
    ],
  ];
  for (const [kind, make] of signals) {
    it(`aborts the upstream request when the client goes away before the response (${kind})`, async () => {
      const stuck = await FakeUpstream.start(hang);
      const spare = await FakeUpstream.start();
      const b = backend([stuck.url, spare.url], { balance: 'weighted' });
      const ac = make();
      const p = b.complete(chatReq({}, ac.signal));
      await until(() => stuck.hits.length === 1);
      ac.abort();
      await assert.rejects(p, isLlmError({ status: 499, code: 'client_closed_request' }));
      await until(() => stuck.hits[0]!.aborted);
      assert.equal(spare.hits.length, 0, 'no retry after the client left');
      await until(() => b.load().active === 0);
    });

    it(`ends iteration quietly and closes the upstream stream when the client goes away mid-stream (${kind})`, async () => {
      const model = 'up-model';
      const slow = await FakeUpstream.start((res) => {
        startSse(res);
        res.write(sse([chunk(model, { content: 'a' })]));
      });
      const b = backend([slow.url]);
      const ac = make();
      const s = await b.stream(chatReq({}, ac.signal));
      const got: Record<string, unknown>[] = [];
      for await (const c of s) {
        got.push(c);
        ac.abort();
      }
      assert.equal(got.length, 1);
      await until(() => slow.hits[0]!.aborted);
      await until(() => b.load().active === 0);
    });
  }
});

describe('upstream backend: embeddings and estimates', () => {
  function embedReq(input: string[]): EmbeddingRequest {
    return {
      model: 'm',
      input,
      dimensions: null,
      signal: new AbortController().signal,
      requestId: 'e1',
      body: { model: 'm', input, encoding_format: 'base64' },
    };
  }

  it('returns float vectors in input order with usage, asking the upstream for floats', async () => {
    const up = await FakeUpstream.start();
    const b = backend([up.url], { embeddings: true });
    assert.equal(b.capabilities.embeddings, true);
    const r = await b.embed(embedReq(['a', 'b', 'c']));
    assert.equal(up.hits[0]!.path, '/v1/embeddings');
    assert.equal(up.hits[0]!.body['encoding_format'], 'float');
    assert.equal(up.hits[0]!.body['model'], 'up-model');
    assert.equal(r.vectors.length, 3);
    r.vectors.forEach((v, i) => {
      assert.ok(v instanceof Float32Array);
      assert.deepEqual([...v], [i, i + 0.5, -1 - i]);
    });
    assert.deepEqual(r.usage, { prompt_tokens: 3, total_tokens: 3 });
  });

  it('refuses embeddings on a model that does not serve them', async () => {
    const up = await FakeUpstream.start();
    const b = backend([up.url]);
    await assert.rejects(b.embed(embedReq(['a'])), (e) => {
      isLlmError({ status: 400 })(e);
      assert.equal((e as LlmError).param, 'model');
      return true;
    });
    assert.equal(up.hits.length, 0);
  });

  it('estimates tokens and refuses what cannot fit the context', async () => {
    const b = backend(['http://127.0.0.1:9/v1'], { contextLength: 100, defaultMaxTokens: 16 });
    assert.deepEqual(await b.estimate(chatReq()), { promptTokens: 1 + 4, maxTokens: 16 });
    assert.deepEqual(await b.estimate(chatReq({ max_tokens: 20 })), { promptTokens: 5, maxTokens: 20 });
    assert.deepEqual(await b.estimate(chatReq({ max_tokens: 20, max_completion_tokens: 0 })), { promptTokens: 5, maxTokens: 0 });
    const long = { ...chatReq(), messages: [{ role: 'user' as const, content: 'x'.repeat(360) }] };
    await assert.rejects(b.estimate(long), (e) => {
      isLlmError({ status: 400, code: 'context_length_exceeded' })(e);
      const err = e as LlmError;
      assert.equal(err.param, 'messages');
      assert.match(err.message, /100/);
      assert.match(err.message, /94/);
      return true;
    });
    const prompt = { ...chatReq({ max_tokens: 50 }), kind: 'completion' as const, prompt: 'y'.repeat(204) };
    await assert.rejects(b.estimate(prompt), (e) => {
      isLlmError({ status: 400, code: 'context_length_exceeded' })(e);
      assert.equal((e as LlmError).param, 'prompt');
      return true;
    });
  });
});
