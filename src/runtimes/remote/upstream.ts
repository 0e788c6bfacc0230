/**
 * @module
 * The upstream backend: a model served by OpenAI-compatible providers (OpenAI, vLLM, llama.cpp server, other
 * gateways). The client's body is forwarded as sent, with `model` replaced by the deployment's model name; the
 * response, or each SSE chunk, comes back as the provider sent it.
 *
 * Deployments: one keep-alive undici Pool each. A request picks one by `balance`: 'least-inflight' (fewest
 * requests in flight, ties in turn) or 'weighted' (smooth weighted round robin, as nginx does). A deployment
 * that failed `failuresToCooldown` times in a row is skipped for `cooldownMs` (a success resets the count;
 * after the cooldown one more failure starts the next one); when all cool down, the one whose cooldown ends
 * first is used rather than failing.
 *
 * Retries, only before anything reached the client: an attempt that fails with 429, 5xx, a connection error,
 * a timeout or a garbled response is retried up to `retries` times. A retry goes at once to a deployment not
 * tried yet when there is one; retrying a deployment already tried first waits `backoffMs * 2^n` (with
 * jitter), or that deployment's retry-after when longer. A retry-after over `maxRetryAfterMs` bars that
 * deployment for the request (and cools it down that long). Other upstream 4xx are the client's: passed
 * through, not retried. 401/403 are the gateway's own credentials failing upstream, so they count as a
 * deployment failure (failed over, else 502) instead of telling the client that its key is wrong.
 *
 * Timeouts: `timeoutMs` until the response headers arrive (undici's coarse timers: up to about a second late)
 * and, streaming, until the first chunk; after it, `timeoutMs` of silence between body chunks. Once a stream's first chunk is returned nothing is retried: a
 * break is an LlmError thrown from the iterator (`upstream_stream_incomplete`).
 *
 * Longer than our ~500-line guide on purpose: one upstream's request life (attempts, retries, timeouts, the
 * streaming body and its break) is one state machine whose parts share the same per-request fields.
 */
import { Buffer } from 'node:buffer';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { Pool, type Dispatcher } from 'undici';
import type { UpstreamModelConfig } from '../../config/index.js';
import { DONE, SseReader } from './sse-reader.js';
import {
  defaultType,
  LlmError,
  RAW_JSON,
  type CancelSignal,
  type ChunkStream,
  type EmbeddingRequest,
  type EmbeddingResult,
  type GenerationRequest,
  type LlmBackend,
  type LlmErrorType,
  type TokenEstimate,
  type Usage,
} from '../generation.js';

/** Why an attempt failed, as `onUpstreamError` reports it (low cardinality, for metrics). */
export type UpstreamErrorReason = 'rate_limited' | 'server_error' | 'auth' | 'connection' | 'timeout' | 'bad_response' | 'stream_broken';

export interface UpstreamBackendOptions {
  readonly logger: Logger;
  /** Called on every failed attempt (and broken stream) with the deployment's URL (no credentials) and why. */
  readonly onUpstreamError?: ((deployment: string, reason: UpstreamErrorReason) => void) | undefined;
  /** Clock for cooldowns, ms. Default Date.now. */
  readonly now?: (() => number) | undefined;
}

/** Error bodies read for their message are cut after this many bytes. */
const MAX_ERROR_BODY = 64 * 1024;
const INCLUDE_USAGE = Object.freeze({ include_usage: true });
const ERROR_TYPES: ReadonlySet<string> = new Set<LlmErrorType>([
  'invalid_request_error',
  'requests',
  'tokens',
  'insufficient_quota',
  'server_error',
  'timeout_error',
  'authentication_error',
  'permission_error',
  'not_found_error',
  'rate_limit_error',
  'api_error',
]);

/** Selection tiers of a deployment for one pick: lower is preferred. */
const FRESH = 0;
const TRIED = 1;
const COOLING = 2;
const BARRED = 3;

/** One upstream endpoint and its health. */
class Deployment {
  /** Origin and base path, for logs and metrics (never credentials). */
  readonly label: string;
  readonly model: string;
  readonly pool: Pool;
  readonly authorization: string | null;
  readonly weight: number;
  readonly chatPath: string;
  readonly completionPath: string;
  readonly embeddingsPath: string;
  inflight = 0;
  /** Failures in a row. */
  failures = 0;
  /** Skipped by picks until then (ms, the backend's clock). */
  cooldownUntil = 0;
  /** Smooth weighted round robin's running weight. */
  current = 0;

  constructor(label: string, model: string, pool: Pool, authorization: string | null, weight: number, basePath: string) {
    this.label = label;
    this.model = model;
    this.pool = pool;
    this.authorization = authorization;
    this.weight = weight;
    this.chatPath = `${basePath}/chat/completions`;
    this.completionPath = `${basePath}/completions`;
    this.embeddingsPath = `${basePath}/embeddings`;
  }
}

/** A failed attempt that may be retried. */
class Failure {
  constructor(
    readonly reason: UpstreamErrorReason,
    /** What failed, safe to show the client (no URL, no key). */
    readonly detail: string,
    readonly status: number | null = null,
    readonly retryAfterMs: number | null = null,
    /** The upstream's own error message, for the log only. */
    readonly upstreamMessage: string | null = null,
  ) {}
}

/** The `error` object of an OpenAI-shaped error body. */
interface UpstreamError {
  readonly message: string;
  readonly type: unknown;
  readonly param: unknown;
  readonly code: unknown;
}

/**
 * Models behind OpenAI-compatible HTTP APIs.
 *
 * @example
 * const backend = new UpstreamBackend(UpstreamModelSchema.parse(entry), { logger });
 * const res = await backend.complete(request);
 * @see UpstreamModelSchema for every setting and its default.
 */
export class UpstreamBackend implements LlmBackend {
  readonly kind = 'upstream';
  readonly capabilities: { readonly chat: boolean; readonly completions: boolean; readonly embeddings: boolean };
  readonly contextLength: number | null;
  readonly #config: UpstreamModelConfig;
  readonly #deployments: readonly Deployment[];
  readonly #logger: Logger;
  readonly #onUpstreamError: ((deployment: string, reason: UpstreamErrorReason) => void) | null;
  readonly #now: () => number;
  /** Where the next least-inflight scan starts (ties go round robin). */
  #next = 0;
  #inflight = 0;

  constructor(config: UpstreamModelConfig, opts: UpstreamBackendOptions) {
    this.#config = config;
    this.#logger = opts.logger;
    this.#onUpstreamError = opts.onUpstreamError ?? null;
    this.#now = opts.now ?? Date.now;
    this.capabilities = { chat: true, completions: true, embeddings: config.embeddings };
    this.contextLength = config.contextLength ?? null;
    this.#deployments = config.deployments.map((d) => {
      const url = new URL(d.url);
      const basePath = url.pathname.replace(/\/+$/, '');
      const key = d.apiKey ?? (d.apiKeyEnv === undefined ? undefined : process.env[d.apiKeyEnv]);
      if (d.apiKeyEnv !== undefined && key === undefined) {
        opts.logger.warn(
          { model: config.name, deployment: url.origin + basePath, env: d.apiKeyEnv },
          'upstream API key variable is not set; sending no Authorization',
        );
      }
      const pool = new Pool(url.origin, { connections: d.connections, connectTimeout: config.timeoutMs });
      return new Deployment(url.origin + basePath, d.model ?? config.name, pool, key === undefined ? null : `Bearer ${key}`, d.weight, basePath);
    });
  }

  /**
   * Prompt tokens are an estimate: UTF-8 bytes / 4 (rounded up) of the prompt or of all message contents, plus
   * 4 per chat message. The gateway reconciles with the upstream's reported usage afterwards.
   */
  async estimate(req: GenerationRequest): Promise<TokenEstimate> {
    const promptTokens = estimatePromptTokens(req);
    const maxTokens =
      numberField(req.body, 'max_completion_tokens') ?? numberField(req.body, 'max_tokens') ?? req.params.maxTokens ?? this.#config.defaultMaxTokens;
    const limit = this.contextLength;
    if (limit !== null && promptTokens + maxTokens > limit) {
      const where = req.kind === 'chat' ? 'messages' : 'prompt';
      throw new LlmError(
        'SY_ERR_CONTEXT_LENGTH_EXCEEDED',
        `This model's maximum context length is ${limit} tokens. However, you requested about ` +
          `${promptTokens + maxTokens} tokens (${promptTokens} in the ${where} (estimated), ${maxTokens} for the completion). ` +
          `Please reduce the length of the ${where} or max_tokens.`,
        { param: where },
      );
    }
    // Every choice may generate maxTokens: the limit reserves them all.
    return { promptTokens, maxTokens: maxTokens * req.params.n };
  }

  complete(req: GenerationRequest): Promise<Record<string, unknown>> {
    const body = req.body;
    const chat = req.kind === 'chat';
    return this.#withRetries(
      req.signal,
      req.requestId,
      (model) => JSON.stringify({ ...body, model, stream: false }),
      (dep, payload) => this.#postJson(dep, chat ? dep.chatPath : dep.completionPath, payload, req),
    );
  }

  stream(req: GenerationRequest): Promise<ChunkStream> {
    const body = req.body;
    const chat = req.kind === 'chat';
    const asked = body['stream_options'];
    const streamOptions = typeof asked === 'object' && asked !== null ? { ...asked, include_usage: true } : INCLUDE_USAGE;
    return this.#withRetries(
      req.signal,
      req.requestId,
      (model) => JSON.stringify({ ...body, model, stream: true, stream_options: streamOptions }),
      (dep, payload) => this.#openStream(dep, chat ? dep.chatPath : dep.completionPath, payload, req),
    );
  }

  async embed(req: EmbeddingRequest): Promise<EmbeddingResult> {
    if (!this.#config.embeddings) {
      throw new LlmError('SY_ERR_MODEL_NOT_SUPPORTED', `The model "${this.#config.name}" does not serve embeddings.`, { param: 'model', openaiCode: null });
    }
    const body = req.body;
    const count = req.input.length;
    return this.#withRetries(
      req.signal,
      req.requestId,
      (model) => JSON.stringify({ ...body, model, encoding_format: 'float' }),
      async (dep, payload) => {
        const res = await this.#postJson(dep, dep.embeddingsPath, payload, req);
        if (res instanceof Failure) return res;
        return toEmbeddings(res, count) ?? new Failure('bad_response', 'the embeddings response is malformed');
      },
    );
  }

  load(): { active: number; queued: number; slots: null } {
    return { active: this.#inflight, queued: 0, slots: null };
  }

  async close(): Promise<void> {
    await Promise.all(this.#deployments.map((d) => d.pool.close()));
  }

  /** Run attempts on picked deployments until one succeeds, a non-retryable error, or the retries run out. */
  async #withRetries<T>(
    signal: CancelSignal,
    requestId: string,
    build: (model: string) => string,
    attempt: (dep: Deployment, payload: string) => Promise<T | Failure>,
  ): Promise<T> {
    if (signal.aborted) throw clientGone();
    const cfg = this.#config;
    let tried: Deployment[] | null = null;
    let barred: Deployment[] | null = null;
    let last: Failure | null = null;
    let lastDep: Deployment | null = null;
    let payload = '';
    let payloadModel: string | null = null;
    for (let n = 0; ; n++) {
      const dep = this.#pick(tried, barred);
      if (dep === null) throw this.#exhausted(last!, n);
      if (tried !== null && tried.includes(dep)) {
        await this.#backoff(n - 1, dep === lastDep ? last!.retryAfterMs : null, signal);
      }
      if (dep.model !== payloadModel) {
        payload = build(dep.model);
        payloadModel = dep.model;
      }
      const result = await attempt(dep, payload);
      if (!(result instanceof Failure)) {
        dep.failures = 0;
        return result;
      }
      this.#failed(dep, result, requestId, n);
      last = result;
      lastDep = dep;
      (tried ??= []).push(dep);
      if (result.reason === 'auth' || (result.retryAfterMs !== null && result.retryAfterMs > cfg.maxRetryAfterMs)) {
        (barred ??= []).push(dep);
      }
      if (n >= cfg.retries) throw this.#exhausted(result, n + 1);
    }
  }

  /** The deployment for the next attempt: fresh ones first, then tried ones, then the first to leave cooldown. */
  #pick(tried: readonly Deployment[] | null, barred: readonly Deployment[] | null): Deployment | null {
    const deps = this.#deployments;
    if (deps.length === 1) return barred === null ? deps[0]! : null;
    const now = this.#now();
    let tier = BARRED;
    for (const d of deps) tier = Math.min(tier, tierOf(d, now, tried, barred));
    if (tier === BARRED) return null;
    if (tier === COOLING) return soonestOutOfCooldown(deps, barred);
    return this.#config.balance === 'weighted' ? this.#weighted(tier, now, tried, barred) : this.#leastInflight(tier, now, tried, barred);
  }

  #leastInflight(tier: number, now: number, tried: readonly Deployment[] | null, barred: readonly Deployment[] | null): Deployment {
    const deps = this.#deployments;
    const n = deps.length;
    const start = this.#next;
    this.#next = (start + 1) % n;
    let best: Deployment | null = null;
    for (let i = 0; i < n; i++) {
      const d = deps[(start + i) % n]!;
      if (tierOf(d, now, tried, barred) === tier && (best === null || d.inflight < best.inflight)) best = d;
    }
    return best!;
  }

  /** Smooth weighted round robin over the deployments of this tier. */
  #weighted(tier: number, now: number, tried: readonly Deployment[] | null, barred: readonly Deployment[] | null): Deployment {
    let best: Deployment | null = null;
    let total = 0;
    for (const d of this.#deployments) {
      if (tierOf(d, now, tried, barred) !== tier) continue;
      d.current += d.weight;
      total += d.weight;
      if (best === null || d.current > best.current) best = d;
    }
    best!.current -= total;
    return best!;
  }

  /** Wait before retrying a deployment already tried: exponential backoff with jitter, or its retry-after. */
  async #backoff(retry: number, retryAfterMs: number | null, signal: CancelSignal): Promise<void> {
    const backoff = this.#config.backoffMs * 2 ** retry * (0.5 + Math.random() / 2);
    const ms = retryAfterMs !== null && retryAfterMs > backoff ? retryAfterMs : backoff;
    if (ms <= 0) return;
    if (signal.aborted) throw clientGone();
    await new Promise<void>((resolve, reject) => {
      const gone = (): void => {
        clearTimeout(timer);
        reject(clientGone());
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', gone);
        resolve();
      }, ms);
      signal.addEventListener('abort', gone, { once: true });
    });
  }

  #failed(dep: Deployment, f: Failure, requestId: string | null, attempt: number | null): void {
    const cfg = this.#config;
    const now = this.#now();
    dep.failures++;
    if (dep.failures >= cfg.failuresToCooldown) dep.cooldownUntil = now + cfg.cooldownMs;
    if (f.retryAfterMs !== null && f.retryAfterMs > cfg.maxRetryAfterMs) dep.cooldownUntil = Math.max(dep.cooldownUntil, now + f.retryAfterMs);
    this.#logger.warn(
      {
        model: cfg.name,
        deployment: dep.label,
        reason: f.reason,
        detail: f.detail,
        upstreamMessage: f.upstreamMessage,
        requestId,
        attempt,
        failuresInARow: dep.failures,
        coolingDown: dep.cooldownUntil > now,
      },
      'upstream attempt failed',
    );
    this.#onUpstreamError?.(dep.label, f.reason);
  }

  /** The error once no attempt is left. */
  #exhausted(last: Failure, attempts: number): LlmError {
    const model = this.#config.name;
    const tries = `${attempts} attempt${attempts === 1 ? '' : 's'}`;
    if (last.status === 429) {
      return new LlmError('SY_ERR_UPSTREAM_RATE_LIMITED', `The upstream of model "${model}" is rate limiting requests (${tries}); try again later.`, {
        retryAfterMs: last.retryAfterMs,
      });
    }
    if (last.reason === 'timeout') {
      return new LlmError('SY_ERR_UPSTREAM_TIMEOUT', `The upstream of model "${model}" timed out: ${last.detail} (${tries}).`);
    }
    return new LlmError('SY_ERR_UPSTREAM_FAILED', `The upstream of model "${model}" failed: ${last.detail} (${tries}).`);
  }

  #begin(dep: Deployment): void {
    dep.inflight++;
    this.#inflight++;
  }

  #end(dep: Deployment): void {
    dep.inflight--;
    this.#inflight--;
  }

  #requestOptions(dep: Deployment, path: string, payload: string, signal: CancelSignal, requestId: string): Dispatcher.RequestOptions {
    const headers: Record<string, string> =
      dep.authorization === null
        ? { 'content-type': 'application/json', 'x-request-id': requestId }
        : { 'content-type': 'application/json', authorization: dep.authorization, 'x-request-id': requestId };
    const timeoutMs = this.#config.timeoutMs;
    // undici takes any EventTarget-like signal (it checks for addEventListener at run time); its typings say AbortSignal.
    return { path, method: 'POST', headers, body: payload, signal: signal as AbortSignal, headersTimeout: timeoutMs, bodyTimeout: timeoutMs };
  }

  /** One non-streaming attempt: the parsed JSON object. */
  async #postJson(
    dep: Deployment,
    path: string,
    payload: string,
    req: { signal: CancelSignal; requestId: string },
  ): Promise<Record<string, unknown> | Failure> {
    this.#begin(dep);
    try {
      const res = await dep.pool.request(this.#requestOptions(dep, path, payload, req.signal, req.requestId));
      if (res.statusCode >= 300) return await this.#refused(dep, res);
      let json: unknown;
      try {
        json = await res.body.json();
      } catch (e) {
        if (!(e instanceof SyntaxError)) throw e;
        return new Failure('bad_response', 'the response is not valid JSON');
      }
      return isObject(json) ? json : new Failure('bad_response', 'the response is not a JSON object');
    } catch (e) {
      return this.#transportFailure(e, req.signal);
    } finally {
      this.#end(dep);
    }
  }

  /** One streaming attempt: resolves with the stream once its first chunk is parsed. */
  async #openStream(dep: Deployment, path: string, payload: string, req: GenerationRequest): Promise<ChunkStream | Failure> {
    const started = performance.now();
    this.#begin(dep);
    let res: Dispatcher.ResponseData;
    try {
      res = await dep.pool.request(this.#requestOptions(dep, path, payload, req.signal, req.requestId));
    } catch (e) {
      this.#end(dep);
      return this.#transportFailure(e, req.signal);
    }
    const body = res.body;
    body.once('close', () => this.#end(dep));
    if (res.statusCode >= 300) return this.#refused(dep, res);
    let timedOut = false;
    const timer = setTimeout(
      () => {
        timedOut = true;
        body.destroy(new Error('no first chunk in time'));
      },
      Math.max(0, this.#config.timeoutMs - (performance.now() - started)),
    );
    try {
      return await this.#firstChunk(dep, body, req);
    } catch (e) {
      if (timedOut && !req.signal.aborted) return new Failure('timeout', `no first chunk within ${this.#config.timeoutMs} ms`);
      return this.#transportFailure(e, req.signal);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Read events up to the first chunk to yield (or [DONE]); a failure before it is retryable. */
  async #firstChunk(dep: Deployment, body: Readable, req: GenerationRequest): Promise<ChunkStream | Failure> {
    const sse = new SseReader(body[Symbol.asyncIterator]() as AsyncIterator<Buffer>);
    const stream = new UpstreamStream(sse, body, req.signal, this.#config.name, (detail) =>
      this.#failed(dep, new Failure('stream_broken', detail), req.requestId, null),
    );
    for (;;) {
      const data = await sse.next();
      if (data === null) return new Failure('bad_response', 'the stream ended before its first chunk');
      if (data === DONE) {
        stream.finish();
        return stream;
      }
      const chunk = parseChunk(data);
      if (chunk === null || chunk['error'] !== undefined) {
        body.destroy();
        const upstream = chunk === null ? null : errorOf(chunk['error']);
        return new Failure(
          chunk === null ? 'bad_response' : 'server_error',
          chunk === null ? 'the stream sent invalid JSON' : 'the stream sent an error event',
          null,
          null,
          upstream?.message ?? null,
        );
      }
      if (stream.take(chunk)) {
        stream.begin(chunk);
        return stream;
      }
    }
  }

  /** A non-2xx answer: a retryable Failure, or (other 4xx) the upstream's error re-thrown. */
  async #refused(dep: Deployment, res: Dispatcher.ResponseData): Promise<Failure> {
    const status = res.statusCode;
    const error = await readError(res.body);
    const message = error?.message ?? null;
    if (status === 429) return new Failure('rate_limited', 'HTTP 429', 429, retryAfterMs(res.headers), message);
    if (status >= 500) return new Failure('server_error', `HTTP ${status}`, status, retryAfterMs(res.headers), message);
    if (status === 401 || status === 403) {
      return new Failure('auth', `the upstream refused the gateway's credentials (HTTP ${status})`, status, null, message);
    }
    if (status < 400) return new Failure('bad_response', `unexpected HTTP ${status}`, status);
    dep.failures = 0;
    throw passthrough(status, error, this.#config.name);
  }

  /** An exception from undici: the client's abort (thrown on), else a retryable Failure. */
  #transportFailure(e: unknown, signal: CancelSignal): Failure {
    if (signal.aborted) throw clientGone();
    if (e instanceof LlmError) throw e;
    const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      return new Failure('timeout', `no response within ${this.#config.timeoutMs} ms`, null, null, String(code));
    }
    return new Failure(
      'connection',
      `connection failed (${typeof code === 'string' ? code : 'network error'})`,
      null,
      null,
      e instanceof Error ? e.message : String(e),
    );
  }
}

/**
 * The chunks of one upstream stream, from its first one on. Usage is kept, not yielded: a usage-only chunk
 * (empty `choices`) is dropped, a `usage` field on a chunk with choices is removed.
 */
class UpstreamStream implements ChunkStream {
  usage: Usage | null = null;
  readonly #sse: SseReader;
  readonly #body: Readable;
  readonly #signal: CancelSignal;
  readonly #model: string;
  readonly #onBroken: (detail: string) => void;
  #first: Record<string, unknown> | null = null;
  /** [DONE] was read. */
  #done = false;

  constructor(sse: SseReader, body: Readable, signal: CancelSignal, model: string, onBroken: (detail: string) => void) {
    this.#sse = sse;
    this.#body = body;
    this.#signal = signal;
    this.#model = model;
    this.#onBroken = onBroken;
  }

  /** Keep a chunk's usage; true when the chunk is to be yielded. */
  take(chunk: Record<string, unknown>): boolean {
    const usage = chunk['usage'];
    if (usage !== undefined) {
      if (isObject(usage)) this.usage = toUsage(usage);
      const choices = chunk['choices'];
      if (Array.isArray(choices) && choices.length === 0) return false;
      delete chunk['usage'];
      delete (chunk as Record<PropertyKey, unknown>)[RAW_JSON];
    }
    return true;
  }

  /** The first chunk, read before the stream was handed out. */
  begin(first: Record<string, unknown>): void {
    this.#first = first;
  }

  /** [DONE] came before any chunk: an empty stream; read the body to its end so the connection is reused. */
  finish(): void {
    this.#done = true;
    this.#sse.drain();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Record<string, unknown>, void, undefined> {
    try {
      if (this.#first !== null) {
        const first = this.#first;
        this.#first = null;
        yield first;
      }
      while (!this.#done) {
        let data: string | null | undefined = this.#sse.ready(); // events of one read are taken without an await
        try {
          data ??= await this.#sse.next();
        } catch (e) {
          if (this.#signal.aborted) return;
          throw this.#broken(`the connection failed (${codeOf(e)})`, e);
        }
        if (data === DONE) {
          this.#done = true;
          this.#sse.drain();
          return;
        }
        if (data === null) {
          if (this.#signal.aborted) return;
          throw this.#broken('the connection closed', null);
        }
        const chunk = parseChunk(data);
        if (chunk === null) throw new LlmError('SY_ERR_UPSTREAM_FAILED', `The upstream of model "${this.#model}" sent invalid JSON in its stream.`);
        if (chunk['error'] !== undefined) throw streamError(chunk['error'], this.#model);
        if (this.take(chunk)) yield chunk;
      }
    } finally {
      if (!this.#done) this.#body.destroy();
    }
  }

  #broken(what: string, cause: unknown): LlmError {
    const detail = `${what} before [DONE]`;
    this.#onBroken(detail);
    return new LlmError('SY_ERR_UPSTREAM_STREAM_INCOMPLETE', `upstream stream for model "${this.#model}" ended before [DONE]: ${what}`, { cause });
  }
}

function tierOf(d: Deployment, now: number, tried: readonly Deployment[] | null, barred: readonly Deployment[] | null): number {
  if (barred !== null && barred.includes(d)) return BARRED;
  if (d.cooldownUntil > now) return COOLING;
  return tried !== null && tried.includes(d) ? TRIED : FRESH;
}

function soonestOutOfCooldown(deps: readonly Deployment[], barred: readonly Deployment[] | null): Deployment {
  let best: Deployment | null = null;
  for (const d of deps) {
    if (barred !== null && barred.includes(d)) continue;
    if (best === null || d.cooldownUntil < best.cooldownUntil) best = d;
  }
  return best!;
}

function estimatePromptTokens(req: GenerationRequest): number {
  if (req.kind !== 'chat') return Math.ceil(Buffer.byteLength(req.prompt, 'utf8') / 4);
  let bytes = 0;
  for (const m of req.messages) bytes += Buffer.byteLength(m.content, 'utf8');
  return Math.ceil(bytes / 4) + 4 * req.messages.length;
}

function numberField(body: Readonly<Record<string, unknown>>, name: string): number | null {
  const v = body[name];
  return typeof v === 'number' ? v : null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseChunk(data: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(data);
    if (!isObject(v)) return null;
    (v as Record<PropertyKey, unknown>)[RAW_JSON] = data;
    return v;
  } catch {
    return null;
  }
}

function toUsage(u: Record<string, unknown>): Usage {
  const prompt = typeof u['prompt_tokens'] === 'number' ? u['prompt_tokens'] : 0;
  const completion = typeof u['completion_tokens'] === 'number' ? u['completion_tokens'] : 0;
  const total = typeof u['total_tokens'] === 'number' ? u['total_tokens'] : prompt + completion;
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: total };
}

/** `{"data": [{"embedding", "index"}], "usage"}` as vectors in index order, or null when malformed. */
function toEmbeddings(json: Record<string, unknown>, count: number): EmbeddingResult | null {
  const data = json['data'];
  if (!Array.isArray(data) || data.length !== count) return null;
  const vectors = new Array<Float32Array>(count);
  for (const item of data as unknown[]) {
    if (!isObject(item)) return null;
    const index = item['index'];
    const embedding = item['embedding'];
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= count) return null;
    if (Array.isArray(embedding)) vectors[index] = Float32Array.from(embedding as number[]);
    else if (typeof embedding === 'string') vectors[index] = new Float32Array(Uint8Array.from(Buffer.from(embedding, 'base64')).buffer);
    else return null;
  }
  for (let i = 0; i < count; i++) if (vectors[i] === undefined) return null;
  const u = isObject(json['usage']) ? toUsage(json['usage']) : null;
  return { vectors, usage: { prompt_tokens: u?.prompt_tokens ?? 0, total_tokens: u?.total_tokens ?? 0 } };
}

/** retry-after-ms (ms) or retry-after (seconds or an HTTP date), or null. */
function retryAfterMs(headers: Record<string, string | string[] | undefined>): number | null {
  const ms = headers['retry-after-ms'];
  if (typeof ms === 'string' && ms !== '') {
    const v = Number(ms);
    if (Number.isFinite(v) && v >= 0) return v;
  }
  const after = headers['retry-after'];
  if (typeof after !== 'string' || after === '') return null;
  const s = Number(after);
  if (Number.isFinite(s)) return s >= 0 ? s * 1000 : null;
  const at = Date.parse(after);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

/** The OpenAI-shaped error of an error body (`{"error": {...}}` or `{"error": "text"}`), or null. */
async function readError(body: Readable): Promise<UpstreamError | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk as Buffer);
      size += (chunk as Buffer).length;
      if (size > MAX_ERROR_BODY) break;
    }
    const json: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    return isObject(json) ? errorOf(json['error']) : null;
  } catch {
    return null;
  }
}

function errorOf(e: unknown): UpstreamError | null {
  if (typeof e === 'string') return { message: e, type: null, param: null, code: null };
  if (!isObject(e) || typeof e['message'] !== 'string') return null;
  return { message: e['message'], type: e['type'], param: e['param'], code: e['code'] };
}

/** An upstream 4xx (not 401/403/429) as the client's error. */
function passthrough(status: number, e: UpstreamError | null, model: string): LlmError {
  if (e === null)
    return new LlmError('SY_ERR_UPSTREAM_REJECTED', `The upstream of model "${model}" refused the request (HTTP ${status}).`, {
      status,
      type: defaultType(status),
    });
  return new LlmError('SY_ERR_UPSTREAM_REJECTED', e.message, {
    status,
    type: typeof e.type === 'string' && ERROR_TYPES.has(e.type) ? (e.type as LlmErrorType) : defaultType(status),
    param: typeof e.param === 'string' ? e.param : null,
    openaiCode: typeof e.code === 'string' ? e.code : null,
  });
}

/** A `data: {"error": ...}` event after the first chunk. */
function streamError(raw: unknown, model: string): LlmError {
  const e = errorOf(raw);
  return new LlmError('SY_ERR_UPSTREAM_FAILED', e?.message ?? `The upstream of model "${model}" sent an error in its stream.`, {
    openaiCode: typeof e?.code === 'string' ? e.code : 'upstream_error',
  });
}

function codeOf(e: unknown): string {
  const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : 'network error';
}

function clientGone(): LlmError {
  return new LlmError('SY_ERR_CLIENT_CLOSED', 'The client closed the request.', { openaiCode: 'client_closed_request' });
}
