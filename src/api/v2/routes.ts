/**
 * @module
 * Open Inference Protocol (KServe/Triton "V2") REST endpoints as an encapsulated Fastify plugin: health,
 * server and model metadata, readiness, and inference (JSON and the binary tensor data extension).
 */
import { promisify } from 'node:util';
import { gunzip, inflate } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { err, type SwitchyardError } from '../../errors.js';
import { channels, type CacheEvent, type FallbackEvent, type RequestEvent, type RouteEvent } from '../../events.js';
import { cacheKey, type ResultCache } from '../../routing/cache.js';
import type { ShadowSpec } from '../../routing/policy.js';
import { cloneTensor, countsAgainst, fallsBack, named, sameInputs, type Assignment, type FallbackStep, type TrafficRouter } from '../../routing/router.js';
import type { Flow, Job } from '../../serving/batcher.js';
import type { Tensor } from '../../tensor/index.js';
import { signatureJson, type ModelManager, type ModelVersion } from '../../serving/index.js';
import { tensorSpecJson } from '../../runtimes/types.js';
import { failureReason, sendError, toWireError } from '../reply-error.js';
import { encodeInferResponse, parseInferJson, parseInferRequest, type EncodedResponse, type InferRequest } from './codec.js';

const gunzipAsync = promisify(gunzip);
const inflateAsync = promisify(inflate);

export interface V2Options {
  manager: ModelManager;
  serverName: string;
  serverVersion: string;
  bodyLimit: number;
  /** The fair-queueing flow of a request (its tenant); undefined = the default flow. */
  flowOf?: (req: FastifyRequest) => Flow | undefined;
  /** Called once per inference that reached a model version, for usage accounting (rows 0 when the body was bad). */
  onInferred?: (req: FastifyRequest, mv: ModelVersion, rows: number, computeMs: number, ok: boolean) => void;
  /** Traffic policies (arms, fallback, circuit breakers, shadows); absent = every request takes the default route. */
  router?: TrafficRouter;
  /** Result cache for models whose policy enables it. */
  cache?: ResultCache | null;
  /** The tenant a cached result belongs to ('' = none): cache entries never cross tenants. */
  tenantOf?: (req: FastifyRequest) => string;
  /** A request was assigned an arm by its model's policy (experiments record the exposure). */
  onRouted?: (req: FastifyRequest, model: string, arm: string, unit: string | null, assignment: Assignment) => void;
  /** Model monitoring: asked before a request runs whether it will be logged / observed for drift, then given the request. */
  monitor?: {
    wants(model: string, version: number): { log: boolean; drift: boolean };
    observe(w: { log: boolean; drift: boolean }, p: {
      model: string; version: number; tenant: string; arm: string | null; requestId: string; latencyMs: number;
      inputs: readonly { name: string; tensor: Tensor }[]; outputs: readonly { name: string; tensor: Tensor }[];
    }): void;
  };
  /** Feature-joined inference: the input tensors a version's feature service fills for entities (one per row), or null when none is bound. */
  features?: {
    assemble(model: string, version: number, entities: readonly Readonly<Record<string, unknown>>[], inputs: readonly { name: string; datatype: string; shape: readonly number[] }[]):
      Promise<{ name: string; datatype: string; shape: number[]; data: (number | string | boolean)[] }[] | null>;
  };
  /** A request that named no version finished (ok, or failed on the server side), for guardrails. */
  onServed?: (req: FastifyRequest, model: string, arm: string | null, ok: boolean, latencyMs: number) => void;
}

type ModelParams = { model: string; version?: string };

const EXTENSIONS = ['binary_tensor_data', 'parameters'];

function metadata(mv: ModelVersion, versions: readonly ModelVersion[]): object {
  const sig = mv.signature ? signatureJson(mv.signature) : { inputs: [], outputs: [] };
  return { name: mv.model, versions: versions.map((v) => v.label), platform: mv.loaded?.platform ?? 'onnxruntime_onnx', ...sig };
}

async function decompress(body: Buffer, encoding: string, limit: number): Promise<Buffer> {
  if (encoding === 'identity') return body;
  const opts = { maxOutputLength: limit };
  try {
    if (encoding === 'gzip') return await gunzipAsync(body, opts);
    if (encoding === 'deflate') return await inflateAsync(body, opts);
  } catch (e) {
    const tooBig = (e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE';
    throw err(tooBig ? 'SY_ERR_BODY_TOO_LARGE' : 'SY_ERR_BAD_REQUEST', tooBig ? 'decompressed request body is larger than the server limit' : `request body is not valid ${encoding}: ${(e as Error).message}`);
  }
  throw err('SY_ERR_UNSUPPORTED_MEDIA', `Content-Encoding "${encoding}" is not supported (use gzip or deflate)`);
}

function headerLength(req: FastifyRequest): number | null {
  const h = req.headers['inference-header-content-length'];
  if (h === undefined) return null;
  const n = Number(h);
  if (!Number.isInteger(n) || n < 0) throw err('SY_ERR_BAD_REQUEST', `Inference-Header-Content-Length must be a non-negative integer, got "${String(h)}"`);
  return n;
}

function timeoutHeader(req: FastifyRequest): number {
  const h = req.headers['x-request-timeout-ms'];
  if (h === undefined) return 0;
  const n = Number(h);
  if (!Number.isFinite(n) || n <= 0) throw err('SY_ERR_BAD_REQUEST', `x-request-timeout-ms must be a positive number of milliseconds, got "${String(h)}"`);
  return Math.round(n * 1000);
}

/** Per-request state shared by the attempts of one inference: the body, its parses per signature, shadows. */
class InferContext {
  readonly #parses: { mv: ModelVersion; parsed: InferRequest }[] = [];
  /** Shadows sampled for this request, and the copy of its inputs they get (made before the primary runs). */
  shadows: ShadowSpec[] = [];
  shadowInputs: Tensor[] | null = null;

  /** Whether responses carry routing parameters (a policy routed the request), the arm, the version routed to, and why a fallback serves. */
  describe = false;
  arm: string | null = null;
  primary: ModelVersion | null = null;
  fallbackReason: string | null = null;

  /** Whether the entity join was considered (once, for the first version attempted). */
  #joined = false;
  #json: Record<string, unknown> | null = null;

  constructor(readonly body: Buffer, readonly headerLength: number | null, readonly timeoutUs: number, readonly cacheTtlMs: number) {}

  /** The request's JSON (header), parsed on first use: 400 when it is not a JSON object. */
  get json(): Record<string, unknown> {
    return (this.#json ??= parseInferJson(this.body, this.headerLength));
  }

  /** Whether the request asks for a feature join: a JSON request whose parameters list entities. */
  wantsJoin(): boolean {
    if (this.#joined) return false;
    this.#joined = true;
    const p = this.headerLength === null ? this.json['parameters'] : undefined;
    return typeof p === 'object' && p !== null && (p as Record<string, unknown>)['entities'] !== undefined;
  }

  /**
   * Feature join ({@link wantsJoin} first): the request's `parameters.entities` lists one entity per row; it gets
   * the input tensors the version's feature service fills (inputs the request sends itself are kept as sent).
   */
  async join(mv: ModelVersion, features: NonNullable<V2Options['features']>): Promise<void> {
    const req = this.json;
    const entities = (req['parameters'] as { entities: unknown }).entities;
    if (!Array.isArray(entities) || entities.length === 0 || !entities.every((e) => typeof e === 'object' && e !== null && !Array.isArray(e))) {
      throw err('SY_ERR_BAD_REQUEST', 'parameters.entities must be a non-empty array of join key objects, one per row (e.g. [{"user_id": 7}])');
    }
    const assembled = await features.assemble(mv.model, mv.version, entities as Record<string, unknown>[], mv.signature!.inputs.map(tensorSpecJson));
    if (assembled === null) throw err('SY_ERR_BAD_REQUEST', `parameters.entities: model "${mv.model}" version ${mv.label} has no feature service bound to its inputs`);
    const own = Array.isArray(req['inputs']) ? (req['inputs'] as { name?: unknown }[]) : [];
    const sent = new Set(own.map((i) => i.name));
    req['inputs'] = [...own, ...assembled.filter((t) => !sent.has(t.name))];
  }

  /** The V2 response, with routing parameters (which version and arm served, fallback, cache) when a policy is in play. */
  encode(mv: ModelVersion, parsed: InferRequest, outputs: readonly Tensor[], cache: 'hit' | 'miss' | null): EncodedResponse {
    const p = this.primary;
    const params = !this.describe && cache === null && this.fallbackReason === null
      ? null
      : {
        served_by: `${mv.model}:${mv.label}`,
        ...(this.arm === null ? {} : { arm: this.arm }),
        ...(this.fallbackReason === null || p === null ? {} : { fallback_reason: this.fallbackReason, fallback_from: `${p.model}:${p.label}` }),
        ...(cache === null ? {} : { cache_hit: cache === 'hit' }),
      };
    return encodeInferResponse(mv, parsed, outputs, params);
  }

  parsedFor(mv: ModelVersion): InferRequest {
    for (const p of this.#parses) if (p.mv === mv || sameInputs(p.mv, mv)) return p.parsed;
    const parsed = parseInferRequest(this.json, this.body, this.headerLength, mv);
    this.#parses.push({ mv, parsed });
    return parsed;
  }
}

interface Served { mv: ModelVersion; parsed: InferRequest; outputs: readonly Tensor[]; cache: 'hit' | 'miss' | null; response: EncodedResponse }

/** Wait for a job at most `ms`; on expiry drop it (if still queued) and fail with a timeout (which falls back). */
async function withTimeout(job: Job, ms: number, mv: ModelVersion): Promise<Tensor[]> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const e = err('SY_ERR_TIMEOUT', `model "${mv.model}" version ${mv.label} did not answer within the routing policy's ${ms} ms`);
      job.cancel(e);
      reject(e);
    }, ms);
  });
  try {
    return await Promise.race([job.result, expired]);
  } finally {
    clearTimeout(timer);
  }
}

function publishRequest(mv: ModelVersion, ok: boolean, e: unknown, t0: number, job: Job | null): void {
  if (!channels.request.hasSubscribers) return;
  const now = performance.now();
  const started = job !== null && job.startedAt > 0;
  channels.request.publish({
    model: mv.model, version: mv.label, ok, reason: ok ? null : failureReason(e), totalMs: now - t0,
    queueMs: job ? (started ? job.startedAt : now) - job.enqueuedAt : 0,
    computeMs: started && job!.finishedAt > 0 ? job!.finishedAt - job!.startedAt : 0,
  } satisfies RequestEvent);
}

/** This request's share of its batch's execution time (by rows). */
function computeShare(job: Job): number {
  return job.finishedAt > 0 && job.batchRows > 0 ? ((job.finishedAt - job.startedAt) * job.rows) / job.batchRows : 0;
}

export async function v2Routes(app: FastifyInstance, opts: V2Options): Promise<void> {
  const { manager } = opts;
  // Inference bodies are parsed by the codec (JSON, or JSON header + binary tensors): take raw bytes for any type.
  app.removeAllContentTypeParsers();
  // The usual types are named too: Fastify caches the parser of a named type, but parses the header of any other on every request.
  const raw = (_req: FastifyRequest, body: Buffer, done: (e: Error | null, b: Buffer) => void): void => done(null, body);
  for (const type of ['application/json', 'application/octet-stream', '*']) app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: opts.bodyLimit }, raw);

  const serverMeta = JSON.stringify({ name: opts.serverName, version: opts.serverVersion, extensions: EXTENSIONS });
  const sendMeta = (_req: FastifyRequest, reply: FastifyReply): FastifyReply => reply.type('application/json').send(serverMeta);
  app.get('/v2', sendMeta);
  app.get('/v2/', sendMeta);
  app.get('/v2/health/live', (_req, reply) => reply.send({ live: true }));
  app.get('/v2/health/ready', (_req, reply) => {
    const ready = manager.ready();
    return reply.code(ready ? 200 : 503).send({ ready });
  });

  /** Load a lazy / evicted version whose signature is needed (bounded wait), like an inference would. */
  const loadSignature = async (mv: ModelVersion): Promise<void> => {
    await manager.acquire(mv);
    manager.release(mv);
  };

  const modelMeta = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply): Promise<FastifyReply> => {
    const mv = manager.resolve(req.params.model, req.params.version);
    if (!mv.signature && mv.state !== 'UNAVAILABLE') await loadSignature(mv);
    return reply.send(metadata(mv, manager.versionsOf(mv.model)));
  };
  app.get('/v2/models/:model', modelMeta);
  app.get('/v2/models/:model/versions/:version', modelMeta);

  const modelReady = (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply): FastifyReply => {
    const mv = manager.resolve(req.params.model, req.params.version);
    // A version that is not resident but loads on demand can take requests: ready.
    const ready = mv.ready || ((mv.state === 'UNLOADED' || mv.state === 'UNLOADING') && !mv.removed);
    return reply.code(ready ? 200 : 503).send({ name: mv.model, version: mv.label, ready, state: mv.state, ...(mv.reason ? { reason: mv.reason } : {}) });
  };
  app.get('/v2/models/:model/ready', modelReady);
  app.get('/v2/models/:model/versions/:version/ready', modelReady);

  const router = opts.router ?? null;
  const cache = opts.cache ?? null;
  const monitor = opts.monitor ?? null;

  /** Hand a served request to monitoring (while the version is held: names come from its signature). */
  const watch = (req: FastifyRequest, ctx: InferContext, mv: ModelVersion, w: { log: boolean; drift: boolean }, inputs: readonly Tensor[], outputs: readonly Tensor[], t0: number): void => {
    const sig = mv.signature!;
    monitor!.observe(w, {
      model: mv.model, version: mv.version, tenant: opts.tenantOf?.(req) ?? '', arm: ctx.arm, requestId: req.id, latencyMs: performance.now() - t0,
      inputs: named(sig.inputs, inputs),
      outputs: named(sig.outputs, outputs),
    });
  };

  /**
   * One attempt on one version: take a reference (loading it if needed), parse the body for its signature
   * (reusing a parse made for a version with the same inputs), look up the result cache, run, fill the cache.
   */
  const attempt = async (
    req: FastifyRequest<{ Params: ModelParams; Body: Buffer }>, ctx: InferContext, mv: ModelVersion, timeoutMs: number | undefined,
  ): Promise<Served> => {
    const t0 = performance.now();
    let acquired = mv.tryAcquire();
    let job: Job | null = null;
    let parsed: InferRequest | null = null;
    try {
      if (!acquired) {
        await manager.acquire(mv); // not resident: load it (bounded wait)
        acquired = true;
      }
      if (opts.features !== undefined && ctx.wantsJoin()) await ctx.join(mv, opts.features);
      parsed = ctx.parsedFor(mv);
      let key: string | null = null;
      if (cache !== null && ctx.cacheTtlMs > 0) {
        key = cacheKey({ tenant: opts.tenantOf?.(req) ?? '', model: mv.model, version: mv.version, artifactSha256: mv.artifact.sha256, inputs: parsed.inputs });
        const hit = await cache.get(key);
        if (channels.cache.hasSubscribers) channels.cache.publish({ model: mv.model, hit: hit !== undefined } satisfies CacheEvent);
        if (hit !== undefined) {
          opts.onInferred?.(req, mv, parsed.rows, 0, true);
          publishRequest(mv, true, null, t0, null);
          const w = monitor?.wants(mv.model, mv.version);
          if (w !== undefined && (w.log || w.drift)) watch(req, ctx, mv, w, parsed.inputs, hit, t0);
          return { mv, parsed, outputs: hit, cache: 'hit', response: ctx.encode(mv, parsed, hit, 'hit') };
        }
      }
      const timeoutUs = parsed.timeoutUs || ctx.timeoutUs;
      const socket = req.raw.socket;
      const inputs = ctx.shadows.length > 0 && ctx.shadowInputs === null ? parsed.inputs.map(cloneTensor) : null;
      // The runtime may take ownership of the input buffers: monitoring gets its own copy, only when it looks.
      const w = monitor?.wants(mv.model, mv.version);
      const watched = w !== undefined && (w.log || w.drift) ? (inputs ?? parsed.inputs.map(cloneTensor)) : null;
      job = mv.submit(parsed.inputs, parsed.rows, timeoutUs, () => socket.destroyed, opts.flowOf?.(req));
      const outputs = timeoutMs === undefined ? await job.result : await withTimeout(job, timeoutMs, mv);
      if (inputs !== null) ctx.shadowInputs = inputs;
      if (watched !== null) watch(req, ctx, mv, w!, watched, outputs, t0);
      opts.onInferred?.(req, mv, parsed.rows, computeShare(job), true);
      publishRequest(mv, true, null, t0, job);
      if (key !== null) cache!.set(key, outputs, ctx.cacheTtlMs);
      const state = key === null ? null : 'miss';
      // Encoded while the version is still held: its signature goes with it once released and unloaded.
      return { mv, parsed, outputs, cache: state, response: ctx.encode(mv, parsed, outputs, state) };
    } catch (e) {
      publishRequest(mv, false, e, t0, job);
      opts.onInferred?.(req, mv, job?.rows ?? parsed?.rows ?? 0, job ? computeShare(job) : 0, false);
      throw e;
    } finally {
      if (acquired) manager.release(mv);
    }
  };

  const infer = async (req: FastifyRequest<{ Params: ModelParams; Body: Buffer }>, reply: FastifyReply): Promise<FastifyReply> => {
    const t0 = performance.now();
    const { model, version } = req.params;
    const served = manager.model(model);
    const policy = router?.policy(served) ?? null;
    // A request naming a version goes there; otherwise the policy (if any) picks an arm, else the default route.
    let primary = version === undefined ? null : manager.resolve(model, version);
    if (primary === null && (policy === null || policy.arms.length === 0)) primary = manager.resolve(model);
    let arm: string | null = null;
    try {
      if (!Buffer.isBuffer(req.body)) throw err('SY_ERR_BAD_REQUEST', 'request body is empty');
      const encoding = req.headers['content-encoding'];
      const body = encoding === undefined ? req.body : await decompress(req.body, encoding, opts.bodyLimit);
      const ctx = new InferContext(body, headerLength(req), timeoutHeader(req), policy?.spec.cache?.ttlMs ?? 0);
      if (primary === null) {
        // Routed by the policy. A routing key in the request parameters needs a parse first (for the first arm's
        // version; reused when the chosen version takes the same inputs).
        let key: string | undefined;
        if (policy!.keyHeader !== null) {
          const h = req.headers[policy!.keyHeader];
          key = Array.isArray(h) ? h[0] : h;
        } else if (policy!.needsParameters) {
          const first = router!.armVersion(served, policy!.arms[0]!);
          if (first.signature === null) await loadSignature(first); // needed to parse
          if (first.signature !== null && opts.features !== undefined && ctx.wantsJoin()) await ctx.join(first, opts.features);
          const p = first.signature === null ? null : ctx.parsedFor(first).parameters?.[policy!.keyParameter!];
          key = typeof p === 'string' ? p : typeof p === 'number' ? String(p) : undefined;
        }
        const a = policy!.assign(key);
        arm = a.arm.name;
        primary = router!.armVersion(served, a.arm);
        if (channels.route.hasSubscribers) channels.route.publish({ model, arm, assignment: a.assignment } satisfies RouteEvent);
        opts.onRouted?.(req, model, arm, a.unit, a.assignment);
      }
      if (version === undefined && policy !== null) ctx.shadows = router!.sampleShadows(policy);
      const breakerSpec = version === undefined ? policy?.spec.circuitBreaker : undefined;
      // The fallback chain is resolved only once the routed version could not serve.
      const hasFallback = version === undefined && (policy?.spec.fallback?.length ?? 0) > 0;
      const chain: FallbackStep[] = [{ mv: primary, error: null }];
      let last: unknown = null;
      let fallbackReason: string | null = null;
      ctx.describe = policy !== null;
      ctx.arm = arm;
      ctx.primary = primary;
      for (let i = 0; ; i++) {
        if (i === 1 && hasFallback) chain.push(...router!.fallbacks(served, policy!));
        if (i >= chain.length) break;
        const step = chain[i]!;
        ctx.fallbackReason = i > 0 ? fallbackReason ?? 'other' : null;
        if (step.mv === null) {
          last = step.error;
          fallbackReason ??= 'unresolved';
          continue;
        }
        const mv = step.mv;
        const breaker = breakerSpec === undefined ? null : router!.breaker(mv, breakerSpec);
        if (breaker !== null && !breaker.allow()) {
          last = err('SY_ERR_CIRCUIT_OPEN', `model "${mv.model}" version ${mv.label}: circuit open after repeated failures${hasFallback ? ' and no fallback could serve' : ''}`, { retryAfterS: Math.max(1, Math.ceil(breaker.retryAfterMs() / 1000)) });
          fallbackReason ??= 'circuit_open';
          continue;
        }
        let result: Served;
        try {
          result = await attempt(req, ctx, mv, policy?.spec.timeoutMs);
          breaker?.record(true);
        } catch (e) {
          if (breaker !== null) breaker.record(!countsAgainst(e));
          if ((e as SwitchyardError).code === 'SY_ERR_CLIENT_CLOSED') throw e;
          // Bad input is the caller's: no fallback (a fallback whose inputs differ is skipped instead).
          const incompatible = i > 0 && !fallsBack(e);
          if (!fallsBack(e) && !incompatible) throw e;
          last = e;
          fallbackReason ??= incompatible ? 'incompatible' : failureReason(e);
          continue;
        }
        if (i > 0 && channels.fallback.hasSubscribers) {
          channels.fallback.publish({ model, from: primary.label, to: `${mv.model}:${mv.label}`, reason: fallbackReason ?? 'other' } satisfies FallbackEvent);
        }
        // For guardrails, a request its arm could not serve counts as that arm's failure even when a fallback rescued it.
        opts.onServed?.(req, model, arm, i === 0, performance.now() - t0);
        for (const s of ctx.shadows) {
          if (result.mv === primary && ctx.shadowInputs !== null) router!.shadow(served, s, primary, ctx.shadowInputs, result.parsed.rows, result.outputs);
        }
        reply.header('x-switchyard-model-version', mv.label);
        if (mv.model !== model || ctx.describe) reply.header('x-switchyard-served-by', `${mv.model}:${mv.label}`);
        if (arm !== null) reply.header('x-switchyard-arm', arm);
        if (i > 0) reply.header('x-switchyard-fallback', fallbackReason ?? 'other');
        if (result.cache !== null) reply.header('x-switchyard-cache', result.cache);
        const res = result.response;
        if (res.headerLength === null) return reply.type('application/json').send(res.body);
        return reply.header('inference-header-content-length', String(res.headerLength)).type('application/octet-stream').send(res.body);
      }
      throw last ?? err('SY_ERR_INTERNAL', 'no target could serve');
    } catch (e) {
      if (fallsBack(e)) opts.onServed?.(req, model, arm, false, performance.now() - t0);
      return sendError(reply, toWireError(e));
    }
  };
  app.post('/v2/models/:model/infer', infer);
  app.post('/v2/models/:model/versions/:version/infer', infer);
}
