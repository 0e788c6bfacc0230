/**
 * @module
 * The OpenAI-compatible API under /v1: models, chat completions, completions (both streamed as server-sent
 * events or not) and embeddings, in OpenAI's exact wire format, so the official SDKs work unmodified.
 *
 * A generation request goes: validate (400 naming the field) → model (404, `param: "model"`) → count prompt
 * tokens and the most it may generate (400 `context_length_exceeded`) → reserve requests and tokens per
 * minute for the tenant, key and tenant×model (429 with retry-after, retry-after-ms and x-ratelimit-*) →
 * run → settle the reservation with the real usage and record usage and spend.
 *
 * Streams: `data: <chunk>` events, then, when `stream_options.include_usage` is set, a chunk with empty
 * `choices` and the usage, then `data: [DONE]`. A failure after the stream started is sent as a
 * `data: {"error": ...}` event and the stream ends without `[DONE]`: a client never mistakes a broken
 * stream for a complete one. Every error response, wherever it is raised (authentication, limits, bad
 * JSON), has OpenAI's shape `{"error": {"message", "type", "param", "code"}}`.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { LlmUsageMeter, TokenLimiter, TokenReservation, TokenScope } from '../../gateway/index.js';
import type { LlmModel, LlmService } from '../../serving/index.js';
import { ClientSignal, LlmError, RAW_JSON, type EmbeddingInput, type Usage } from '../../runtimes/index.js';
import { flowOf, formatDuration } from '../../gateway/index.js';
import { channels, type LlmRequestEvent, type LlmTokenEvent } from '../../events.js';
import { RequestCaller } from '../caller.js';
import { SseWriter } from './sse-writer.js';
import { modelFor, modelVisible, unsupported } from './line-runner.js';
import { embeddingResponse, errorHeaders, generationRequest, parseChat, parseCompletion, parseEmbedding, toLlmError, type ParsedGeneration } from './wire.js';

export interface LlmRouteOptions {
  readonly service: LlmService;
  /** Charges requests and tokens per minute; null: no token limits. */
  readonly limiter: TokenLimiter | null;
  /** Records tokens and spend per tenant and model; null: not recorded. */
  readonly usage: LlmUsageMeter | null;
  /** The request and token limits that apply to this request's tenant and key for `model` (empty: none). */
  readonly tokenScopes: (req: FastifyRequest, model: string) => readonly TokenScope[];
  /** '' for the platform / open mode. */
  readonly tenantOf: (req: FastifyRequest) => string;
  /** Whether the request's principal may see a served (ONNX) model: an onnx-embeddings model is visible exactly when its encoder is. */
  readonly canSee: (req: FastifyRequest, model: string) => boolean;
}

type Endpoint = 'chat.completions' | 'completions' | 'embeddings';

function sendError(reply: FastifyReply, e: LlmError): FastifyReply {
  return reply.code(e.status).headers(errorHeaders(e)).type('application/json').send(JSON.stringify(e.body()));
}

/** Aborted when the client goes away before the response is complete. */
function clientSignal(reply: FastifyReply): ClientSignal {
  const ac = new ClientSignal();
  // The response's 'close' comes when the connection closes or the response is done; only the first means gone.
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  return ac;
}

/** Publish a finished (or refused) request for the LLM metrics; `started` null = it never ran (no duration). */
function counted(model: string, endpoint: Endpoint, outcome: string, started: number | null, tpot: number | null = null): void {
  if (!channels.llmRequest.hasSubscribers) return;
  channels.llmRequest.publish({
    model,
    endpoint,
    outcome,
    seconds: started === null ? null : (performance.now() - started) / 1000,
    tpot,
  } satisfies LlmRequestEvent);
}

function outcomeOf(e: LlmError): string {
  if (e.status === 429) return 'rate_limited';
  if (e.status === 499) return 'cancelled';
  return e.status >= 500 ? 'server_error' : 'client_error';
}

function rateHeaders(r: TokenReservation): Record<string, string> {
  const h: Record<string, string> = {};
  if (r.requests) {
    h['x-ratelimit-limit-requests'] = String(r.requests.limit);
    h['x-ratelimit-remaining-requests'] = String(Math.max(0, Math.floor(r.requests.remaining)));
    h['x-ratelimit-reset-requests'] = formatDuration(r.requests.resetMs);
  }
  if (r.tokens) {
    h['x-ratelimit-limit-tokens'] = String(r.tokens.limit);
    h['x-ratelimit-remaining-tokens'] = String(Math.max(0, Math.floor(r.tokens.remaining)));
    h['x-ratelimit-reset-tokens'] = formatDuration(r.tokens.resetMs);
  }
  return h;
}

/**
 * The 429 for a refused reservation, worded as OpenAI's (type "tokens" or "requests"). A request that needs more
 * tokens than a tpm can never pass: no retry-after, and `x-should-retry: false` (the SDKs then do not retry).
 */
function rejection(model: string, r: TokenReservation, tokens: number, headers: Record<string, string>): LlmError {
  const scope = r.scope ?? 'this key';
  const wait = formatDuration(r.retryAfterMs);
  const t = r.tokens;
  const used = t === null ? '?' : String(Math.max(0, t.limit - Math.max(0, Math.floor(t.remaining))));
  if (r.reason === 'unavailable') {
    return new LlmError('SY_ERR_LIMITER_UNAVAILABLE', 'The rate-limit store is unavailable; please try again shortly.', {
      retryAfterMs: r.retryAfterMs,
      headers,
    });
  }
  if (r.tooLarge) {
    return new LlmError(
      'SY_ERR_REQUEST_TOO_LARGE',
      `Request too large for ${model} (${scope}) on tokens per min (TPM): Limit ${t?.limit ?? '?'}, Requested ${tokens}. The input or output tokens must be reduced in order to run successfully.`,
      {
        headers: { ...headers, 'x-should-retry': 'false' },
      },
    );
  }
  const message =
    r.reason === 'tokens'
      ? `Rate limit reached for ${model} (${scope}) on tokens per min (TPM): Limit ${t?.limit ?? '?'}, Used ${used}, Requested ${tokens}. Please try again in ${wait}.`
      : `Rate limit reached for ${model} (${scope}) on requests per min (RPM): Limit ${r.requests?.limit ?? '?'}, Used ${r.requests === null ? '?' : r.requests.limit - Math.max(0, Math.floor(r.requests.remaining))}, Requested 1. Please try again in ${wait}.`;
  return new LlmError('SY_ERR_RATE_LIMITED', message, { retryAfterMs: r.retryAfterMs, headers, type: r.reason === 'tokens' ? 'tokens' : 'requests' });
}

/** A rough count for inputs no tokenizer has seen yet (upstream embeddings): 4 UTF-8 bytes per token; token arrays as they are. */
function roughTokens(inputs: readonly EmbeddingInput[]): number {
  let n = 0;
  for (const t of inputs) n += typeof t === 'string' ? Math.ceil(Buffer.byteLength(t) / 4) : t.length;
  return n;
}

/**
 * A chunk's JSON with `model` set to `name`: the upstream's own text when it carries it (with the one
 * `"model":"…"` member renamed in place), else serialized.
 */
function chunkJson(chunk: Record<string | symbol, unknown>, name: string): string {
  const raw = chunk[RAW_JSON];
  const model = chunk['model'];
  if (typeof raw === 'string') {
    if (model === name) return raw;
    if (typeof model === 'string') {
      const member = `"model":${JSON.stringify(model)}`;
      const at = raw.indexOf(member);
      // Quotes inside JSON strings are escaped, so an unescaped match is a member; a second one (nested) is ambiguous.
      if (at >= 0 && raw.indexOf(member, at + member.length) < 0) return `${raw.slice(0, at)}"model":${JSON.stringify(name)}${raw.slice(at + member.length)}`;
    }
  }
  chunk['model'] = name;
  return JSON.stringify(chunk);
}

function hasText(chunk: Record<string, unknown>): boolean {
  const c = (chunk['choices'] as Array<Record<string, unknown>> | undefined)?.[0];
  if (!c) return false;
  const text = c['text'] ?? (c['delta'] as Record<string, unknown> | undefined)?.['content'];
  return typeof text === 'string' && text.length > 0;
}

/** Every error of this (encapsulated) context leaves in OpenAI's shape, with its retry headers. */
export function installOpenAiErrors(app: FastifyInstance): void {
  app.setErrorHandler((e, req, reply) => {
    const le = toLlmError(e);
    if (le.status >= 500) req.log.error({ err: e }, 'LLM API request failed');
    return sendError(reply, le);
  });
}

export const llmRoutes: FastifyPluginAsync<LlmRouteOptions> = async (app, opts) => {
  const { service } = opts;

  installOpenAiErrors(app);
  app.setNotFoundHandler((req, reply) => sendError(reply, new LlmError('SY_ERR_ROUTE_NOT_FOUND', `Invalid URL (${req.method} ${req.url.split('?')[0]})`)));

  /** A model the request's tenant may use; anything else is 404, exactly as a model that does not exist. */
  const visible = (req: FastifyRequest, m: LlmModel): boolean => modelVisible(m, opts.tenantOf(req), (model) => opts.canSee(req, model));
  const modelOrThrow = (req: FastifyRequest, name: string): LlmModel => modelFor(service, name, opts.tenantOf(req), (model) => opts.canSee(req, model));

  /** Reserve requests and `tokens` per minute; sets the x-ratelimit-* headers; 429 when refused. */
  async function admit(req: FastifyRequest, reply: FastifyReply, m: LlmModel, tokens: number): Promise<TokenReservation | null> {
    if (!opts.limiter) return null;
    const scopes = opts.tokenScopes(req, m.name);
    if (scopes.length === 0) return null;
    const r = await opts.limiter.reserve(scopes, tokens);
    const headers = rateHeaders(r);
    reply.headers(headers);
    if (!r.allowed) throw rejection(m.name, r, tokens, headers);
    return r;
  }

  /** After a request: settle the reservation, record usage and spend, count the outcome. */
  function finish(
    req: FastifyRequest,
    m: LlmModel,
    endpoint: Endpoint,
    started: number,
    r: TokenReservation | null,
    usage: Usage,
    outcome: string,
    tpot: number | null = null,
  ): void {
    r?.settle(usage.total_tokens).catch((e: unknown) => req.log.warn({ err: e }, 'settling a token reservation failed'));
    opts.usage?.record({
      tenant: opts.tenantOf(req),
      model: m.name,
      promptTokens: usage.prompt_tokens,
      completionTokens: usage.completion_tokens,
      cost: service.cost(m, usage.prompt_tokens, usage.completion_tokens),
      ok: outcome === 'success',
    });
    counted(m.name, endpoint, outcome, started, tpot);
  }

  async function generate(kind: 'chat' | 'completion', req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const started = performance.now();
    const endpoint: Endpoint = kind === 'chat' ? 'chat.completions' : 'completions';
    const p: ParsedGeneration = kind === 'chat' ? parseChat(req.body) : parseCompletion(req.body);
    const m = modelOrThrow(req, p.model);
    if (kind === 'chat' ? !m.backend.capabilities.chat : !m.backend.capabilities.completions)
      throw unsupported(m, kind === 'chat' ? 'chat completions' : 'completions');
    const g = generationRequest(kind, p, m.name, req.body as Record<string, unknown>, clientSignal(reply), req.id, flowOf(req.principal) ?? null);
    const est = await m.backend.estimate(g).catch((e: unknown) => {
      counted(m.name, endpoint, outcomeOf(toLlmError(e)), null);
      throw e;
    });
    const reservation = await admit(req, reply, m, est.promptTokens + est.maxTokens).catch((e: unknown) => {
      counted(m.name, endpoint, 'rate_limited', null);
      throw e;
    });
    const estimated: Usage = { prompt_tokens: est.promptTokens, completion_tokens: 0, total_tokens: est.promptTokens };
    if (!p.stream) {
      let body: Record<string, unknown>;
      try {
        body = await m.backend.complete(g);
      } catch (e) {
        finish(req, m, endpoint, started, reservation, estimated, outcomeOf(toLlmError(e)));
        throw e;
      }
      body['model'] = m.name;
      finish(req, m, endpoint, started, reservation, (body['usage'] as Usage | undefined) ?? estimated, 'success');
      return reply.send(body);
    }
    let stream;
    try {
      stream = await m.backend.stream(g);
    } catch (e) {
      finish(req, m, endpoint, started, reservation, estimated, outcomeOf(toLlmError(e)));
      throw e;
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string>),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    const sse = new SseWriter(res);
    let last: Record<string, unknown> | null = null;
    let textChunks = 0;
    let firstText = 0;
    let lastText = 0;
    let outcome = 'success';
    /** The stream's usage, or (upstream silent, client gone) the prompt estimate plus one token per text chunk. */
    const usageSoFar = (): Usage => stream.usage ?? { ...estimated, completion_tokens: textChunks, total_tokens: estimated.prompt_tokens + textChunks };
    try {
      for await (const chunk of stream) {
        const json = chunkJson(chunk, m.name);
        last = chunk;
        if (hasText(chunk)) {
          const now = performance.now();
          if (channels.llmToken.hasSubscribers) {
            channels.llmToken.publish({
              model: m.name,
              first: textChunks === 0,
              seconds: (now - (textChunks === 0 ? started : lastText)) / 1000,
            } satisfies LlmTokenEvent);
          }
          if (textChunks === 0) firstText = now;
          lastText = now;
          textChunks++;
        }
        const wait = sse.event(json);
        if (wait) await wait;
        if (g.signal.aborted) break;
      }
      if (g.signal.aborted) {
        outcome = 'cancelled';
        sse.end();
      } else {
        if (p.includeUsage) {
          const usage = usageSoFar();
          const head = last ?? {};
          const usageChunk: Record<string, unknown> = { id: head['id'], object: head['object'], created: head['created'], model: m.name, choices: [], usage };
          if (kind === 'chat') usageChunk['system_fingerprint'] = head['system_fingerprint'] ?? null;
          const wait = sse.event(JSON.stringify(usageChunk));
          if (wait) await wait;
        }
        sse.end('data: [DONE]\n\n');
      }
    } catch (e) {
      const le = toLlmError(e);
      outcome = 'stream_error';
      req.log.warn({ err: e, model: m.name }, 'LLM stream failed after it started; sent an error event');
      sse.end(`data: ${JSON.stringify(le.body())}\n\n`);
    }
    const final = usageSoFar();
    const tpot = textChunks > 0 && final.completion_tokens > 1 ? (lastText - firstText) / 1000 / (final.completion_tokens - 1) : null;
    finish(req, m, endpoint, started, reservation, final, outcome, tpot);
    return reply;
  }

  app.get('/models', async (req) => ({
    object: 'list',
    data: service
      .list()
      .filter((m) => visible(req, m))
      .map((m) => ({ id: m.name, object: 'model', created: m.created, owned_by: m.config.ownedBy })),
  }));
  app.get('/models/*', async (req) => {
    const m = modelOrThrow(req, (req.params as Record<string, string>)['*'] ?? '');
    return { id: m.name, object: 'model', created: m.created, owned_by: m.config.ownedBy };
  });
  app.post('/chat/completions', (req, reply) => generate('chat', req, reply));
  app.post('/completions', (req, reply) => generate('completion', req, reply));
  app.post('/embeddings', async (req, reply) => {
    const started = performance.now();
    const p = parseEmbedding(req.body);
    const m = modelOrThrow(req, p.model);
    if (!m.backend.capabilities.embeddings) throw unsupported(m, 'embeddings');
    const estimated = roughTokens(p.input);
    const reservation = await admit(req, reply, m, estimated).catch((e: unknown) => {
      counted(m.name, 'embeddings', 'rate_limited', null);
      throw e;
    });
    let result;
    try {
      result = await m.backend.embed({
        model: m.name,
        input: p.input,
        dimensions: p.dimensions,
        body: req.body as Record<string, unknown>,
        signal: clientSignal(reply),
        requestId: req.id,
        caller: new RequestCaller(req),
      });
    } catch (e) {
      finish(req, m, 'embeddings', started, reservation, { prompt_tokens: estimated, completion_tokens: 0, total_tokens: estimated }, outcomeOf(toLlmError(e)));
      throw e;
    }
    finish(req, m, 'embeddings', started, reservation, { ...result.usage, completion_tokens: 0 }, 'success');
    return reply.send(embeddingResponse(result, p, m.name));
  });
};
