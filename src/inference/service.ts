/**
 * @module
 * The data plane: {@link InferenceService.infer} is the one entry every transport calls (V2 REST, V2 gRPC,
 * OpenAI embeddings, batch jobs). Per call:
 *
 * ```
 * plan      explicit version │ routing policy → arm (header / parameter key, GrowthBook hashing) → version
 * attempts  per version of [routed, ...fallback chain]:
 *             breaker.allow → acquire (load if evicted) → join features (once) → inputs for the signature
 *             → result cache → submit(caller's flow) → wait (policy timeout) → breaker.record
 * shadows   copies of the inputs to the policy's shadow targets, off the request path
 * ```
 *
 * What happened is published on the diagnostics channels (events.ts): `request` per attempt (tenant, arm,
 * rows, compute share: usage and metrics subscribe), `route`, `served` (experiments subscribe), `fallback`,
 * `cache`. Monitoring samples requests through {@link PredictionSampler}. Nothing here knows a transport.
 *
 * Longer than our ~500-line guide on purpose: the one entry of the data plane (plan, attempts, admission,
 * accounting) reads best in one place; the pieces that stand alone live beside it (limits, extensions).
 */
import { err, type SwitchyardError } from '../errors.js';
import { channels, type CacheEvent, type FailureReason, type FallbackEvent, type RequestEvent, type RouteEvent, type ServedEvent } from '../events.js';
import { cacheKey, countsAgainst, type FallbackStep, fallsBack, type ResultCache, sameInputs, type TrafficRouter } from '../routing/index.js';
import type { ShadowSpec } from '../registry/index.js';
import { signatureJson, tensorSpecJson, type SignatureJson, type TensorSpecJson } from '../runtimes/index.js';
import { checkDeclared, inputSpec, orderInputs, type Job, type ModelManager, type ModelVersion, type RepositoryEntry } from '../serving/index.js';
import { cloneTensor, concatRows, decodeJsonData, dtypeFromV2, elementCount, named, sliceRows, type Tensor } from '../tensor/index.js';
import { classifyOutcome, tritonModelConfig, tritonStats, type TritonModelConfig, type TritonModelStats } from './extensions.js';
import type { Caller, InferBody, InferCall, InferOutcome, NamedTensor } from './types.js';
import { NO_LIMITS, type RequestLimits } from './limits.js';
import type { ModelConfig } from '../config/index.js';

/** The feature store's join: the input tensors a version's feature service fills for entities (one per row), or null when none is bound. */
export interface FeatureJoin {
  assemble(
    model: string,
    version: number,
    entities: readonly Readonly<Record<string, unknown>>[],
    inputs: readonly TensorSpecJson[],
  ): Promise<{ name: string; datatype: string; shape: number[]; data: (number | string | boolean)[] }[] | null>;
}

/** Monitoring's sampling seam: asked before a request runs whether it will be logged / observed for drift, then given it. */
export interface PredictionSampler {
  wants(model: string, version: number): { log: boolean; drift: boolean };
  observe(
    w: { log: boolean; drift: boolean },
    p: {
      model: string;
      version: number;
      tenant: string;
      arm: string | null;
      requestId: string;
      latencyMs: number;
      inputs: readonly { name: string; tensor: Tensor }[];
      outputs: readonly { name: string; tensor: Tensor }[];
    },
  ): void;
}

export interface InferenceServiceOptions {
  readonly manager: ModelManager;
  /** Traffic policies (arms, fallback, circuit breakers, shadows); null = every call takes the default route. */
  readonly router?: TrafficRouter | null;
  /** Result cache for models whose policy enables it. */
  readonly cache?: ResultCache | null;
  readonly features?: FeatureJoin | null;
  readonly monitor?: PredictionSampler | null;
  /** Injectable for tests: the arm draw of unkeyed requests. */
  readonly random?: () => number;
  /** Server-wide per-request tensor limits (a model's config may override each); default none. */
  readonly limits?: RequestLimits;
}

/** Model metadata (V2 `GET /v2/models/{m}`, gRPC ModelMetadata). */
export interface ModelMetadata extends SignatureJson {
  readonly name: string;
  readonly versions: string[];
  readonly platform: string;
}

/** Readiness of one version (V2 `.../ready`, gRPC ModelReady). */
export interface ModelReadiness {
  readonly name: string;
  readonly version: string;
  readonly ready: boolean;
  readonly state: string;
  readonly reason: string | null;
}

/** Triton-style cumulative statistics of one version since it was first served by this process (durations in ns). */
export interface VersionStatistics {
  readonly name: string;
  readonly version: string;
  /** Epoch ms of the last successful inference, 0 = none. */
  lastInference: number;
  /** Rows inferred (Triton's inference_count) and jobs executed (execution_count). */
  inferenceCount: number;
  executionCount: number;
  success: { count: number; ns: number };
  fail: { count: number; ns: number };
  queue: { count: number; ns: number };
  computeInfer: { count: number; ns: number };
  cacheHit: { count: number; ns: number };
  cacheMiss: { count: number; ns: number };
}

/** A version's inputs for one call: checked against its signature and in its order, requested outputs resolved. */
interface Prepared {
  readonly mv: ModelVersion;
  readonly inputs: Tensor[];
  readonly rows: number;
  /** Rows per job (Infinity = one job). */
  readonly maxRows: number;
  readonly selected: readonly number[] | null;
}

function bad(message: string): never {
  throw err('SY_ERR_BAD_REQUEST', message);
}

const MS_NS = 1e6;

/** Per-call state shared by its attempts: inputs prepared per signature, the joined tensors, shadows, route facts. */
class CallState {
  /** Inputs prepared per signature: the first one, then (rarely: a fallback with other inputs) the rest. */
  #first: Prepared | null = null;
  #more: Prepared[] | null = null;
  /** Named inputs after the feature join (the body's when none), decided on the first attempt. */
  #inputs: readonly NamedTensor[] | null = null;
  /** Shadow targets sampled for this call, and the copy of its inputs they get (made before the primary runs). */
  shadows: readonly ShadowSpec[] = [];
  shadowInputs: Tensor[] | null = null;
  arm: string | null = null;
  primary: ModelVersion | null = null;
  fallbackReason: string | null = null;

  #body: InferBody | null = null;

  constructor(
    readonly call: InferCall,
    readonly cacheTtlMs: number,
  ) {}

  /** The call's body, decoded on first use (a deferred body's decoding errors are the caller's 4xx). */
  get body(): InferBody {
    if (this.#body === null) {
      const b = this.call.body;
      this.#body = b.kind === 'deferred' ? b.decode() : b;
    }
    return this.#body;
  }

  async prepare(mv: ModelVersion, features: FeatureJoin | null): Promise<Prepared> {
    const f = this.#first;
    if (f !== null && (f.mv === mv || sameInputs(f.mv, mv))) return f;
    if (this.#more !== null) for (const p of this.#more) if (p.mv === mv || sameInputs(p.mv, mv)) return p;
    const sig = mv.signature;
    if (sig === null) throw err('SY_ERR_MODEL_NOT_READY', `model "${mv.model}" version ${mv.version} is not ready`, { retryAfterS: 1 });
    const body = this.body;
    let prepared: Prepared;
    if (body.kind === 'built') {
      const b = body.build(mv);
      prepared = { mv, inputs: b.inputs, rows: b.rows, maxRows: b.maxRows, selected: null };
    } else {
      this.#inputs ??= features !== null && body.parameters?.['entities'] !== undefined ? await this.#join(mv, features) : body.inputs;
      const given = new Map<string, Tensor>();
      for (const { name, tensor } of this.#inputs) {
        if (given.has(name)) bad(`input "${name}" appears more than once`);
        checkDeclared(inputSpec(sig, mv.model, name), tensor.dtype.v2, tensor.shape);
        given.set(name, tensor);
      }
      const { inputs, rows } = orderInputs(sig, mv.model, given, mv.maxBatchSize > 0);
      let selected: number[] | null = null;
      if (body.outputs !== null) {
        selected = body.outputs.map((name) => {
          const index = sig.outputs.findIndex((s) => s.name === name);
          if (index < 0)
            throw err('SY_ERR_OUTPUT_UNKNOWN', `unknown output "${name}" for model "${mv.model}"; outputs are: ${sig.outputs.map((s) => s.name).join(', ')}`);
          return index;
        });
      }
      prepared = { mv, inputs, rows, maxRows: Infinity, selected };
    }
    // What the runtime cannot carry unaltered is refused here, per request, never in a shared batch.
    mv.loaded?.check?.(prepared.inputs);
    if (this.#first === null) this.#first = prepared;
    else (this.#more ??= []).push(prepared);
    return prepared;
  }

  /**
   * Feature join: `parameters.entities` lists one entity per row; the version's feature service fills the
   * inputs the request does not send itself (those it sends are kept as sent). Works on typed tensors, so a
   * request of any encoding (JSON, binary, gRPC) can join.
   */
  async #join(mv: ModelVersion, features: FeatureJoin): Promise<NamedTensor[]> {
    const body = this.body;
    if (body.kind !== 'tensors') return [];
    const entities = body.parameters!['entities'];
    if (!Array.isArray(entities) || entities.length === 0 || !entities.every((e) => typeof e === 'object' && e !== null && !Array.isArray(e))) {
      bad('parameters.entities must be a non-empty array of join key objects, one per row (e.g. [{"user_id": 7}])');
    }
    const assembled = await features.assemble(mv.model, mv.version, entities as Record<string, unknown>[], mv.signature!.inputs.map(tensorSpecJson));
    if (assembled === null) bad(`parameters.entities: model "${mv.model}" version ${mv.label} has no feature service bound to its inputs`);
    const sent = new Set(body.inputs.map((i) => i.name));
    const joined: NamedTensor[] = [...body.inputs];
    for (const t of assembled) {
      if (sent.has(t.name)) continue;
      const dtype = dtypeFromV2(t.datatype);
      if (dtype === undefined) throw err('SY_ERR_INTERNAL', `feature join produced unknown datatype "${t.datatype}" for input "${t.name}"`);
      joined.push({ name: t.name, tensor: { dtype, shape: t.shape, data: decodeJsonData(t.name, dtype, elementCount(t.shape), t.data) } });
    }
    return joined;
  }
}

/** This request's share of its batch's execution time (by rows). */
function computeShare(job: Job): number {
  return job.finishedAt > 0 && job.batchRows > 0 ? ((job.finishedAt - job.startedAt) * job.rows) / job.batchRows : 0;
}

/** Wait for jobs at most `ms` (0 = no bound); on expiry drop them (if still queued) and fail with a timeout (which falls back). */
async function waitJobs(jobs: readonly Job[], ms: number, mv: ModelVersion): Promise<Tensor[][]> {
  const all = jobs.length === 1 ? jobs[0]!.result.then((r) => [r]) : Promise.all(jobs.map((j) => j.result));
  if (ms <= 0) return all;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const e = err('SY_ERR_TIMEOUT', `model "${mv.model}" version ${mv.label} did not answer within the routing policy's ${ms} ms`);
      for (const j of jobs) j.cancel(e);
      reject(e);
    }, ms);
  });
  try {
    return await Promise.race([all, expired]);
  } finally {
    clearTimeout(timer);
  }
}

interface Attempted {
  readonly prepared: Prepared;
  readonly outputs: readonly Tensor[];
  readonly cache: 'hit' | 'miss' | null;
  readonly outputSpecs: InferOutcome['outputSpecs'];
}

export class InferenceService {
  readonly #manager: ModelManager;
  readonly #router: TrafficRouter | null;
  readonly #cache: ResultCache | null;
  readonly #features: FeatureJoin | null;
  readonly #monitor: PredictionSampler | null;
  readonly #random: () => number;
  readonly #stats = new Map<ModelVersion, VersionStatistics>();
  readonly #limits: RequestLimits;
  /** Limits per model config object (a config reload makes a new object, so this never goes stale). */
  readonly #modelLimits = new WeakMap<ModelConfig, RequestLimits>();

  constructor(opts: InferenceServiceOptions) {
    this.#limits = opts.limits ?? NO_LIMITS;
    this.#manager = opts.manager;
    this.#router = opts.router ?? null;
    this.#cache = opts.cache ?? null;
    this.#features = opts.features ?? null;
    this.#monitor = opts.monitor ?? null;
    this.#random = opts.random ?? Math.random;
  }

  /** The model manager the service runs on (for transports' lifecycle queries). */
  get manager(): ModelManager {
    return this.#manager;
  }

  /**
   * The tensor limits for one request to `model`: the model config's max_request_rows / max_request_elements
   * where set, else the server's. Transports check shapes against them before decoding any data.
   */
  requestLimits(model: string): RequestLimits {
    const config = this.#manager.find(model)?.config;
    if (config === undefined || (config.maxRequestRows === null && config.maxRequestElements === null)) return this.#limits;
    let l = this.#modelLimits.get(config);
    if (l === undefined) {
      l = Object.freeze({ rows: config.maxRequestRows ?? this.#limits.rows, elements: config.maxRequestElements ?? this.#limits.elements });
      this.#modelLimits.set(config, l);
    }
    return l;
  }

  /** Whether the server can take inference requests (V2 `/v2/health/ready`). */
  ready(): boolean {
    return this.#manager.ready();
  }

  /** A model's (or one version's) metadata; loads a lazy / evicted version whose signature is needed (bounded wait). */
  async metadata(model: string, version?: string): Promise<ModelMetadata> {
    const mv = await this.#withSignature(model, version);
    const sig = mv.signature ? signatureJson(mv.signature) : { inputs: [], outputs: [] };
    return { name: mv.model, versions: this.#manager.versionsOf(mv.model).map((v) => v.label), platform: mv.loaded?.platform ?? 'onnxruntime_onnx', ...sig };
  }

  /** The version named (or the default), loaded first when it is lazy or evicted and its signature is needed (bounded wait). */
  async #withSignature(model: string, version: string | undefined): Promise<ModelVersion> {
    const mv = this.#manager.resolve(model, version);
    if (!mv.signature && mv.state !== 'UNAVAILABLE') {
      await this.#manager.acquire(mv);
      this.#manager.release(mv);
    }
    return mv;
  }

  /** Readiness of a model's default version, or of one version. A version that loads on demand can take requests: ready. */
  readiness(model: string, version?: string): ModelReadiness {
    const mv = this.#manager.resolve(model, version);
    const ready = mv.ready || ((mv.state === 'UNLOADED' || mv.state === 'UNLOADING') && !mv.removed);
    return { name: mv.model, version: mv.label, ready, state: mv.state, reason: mv.reason };
  }

  /**
   * Triton's model statistics extension: every servable version (of every model `visible` admits, of one
   * model, or one version), with zeros for versions not served yet, ordered by model name then version.
   * 404 for an unknown model or version.
   */
  modelStatistics(model?: string, version?: string, visible: (model: string) => boolean = () => true): { model_stats: TritonModelStats[] } {
    const manager = this.#manager;
    let versions: readonly ModelVersion[];
    if (model === undefined) {
      versions = manager
        .list()
        .filter((m) => visible(m.name))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        .flatMap((m) => m.versions);
    } else if (version === undefined) {
      versions = manager.model(model).versions;
    } else {
      versions = [manager.resolve(model, version)];
    }
    return { model_stats: versions.map((mv) => tritonStats(this.#stats.get(mv) ?? null, mv)) };
  }

  /** Triton's model configuration of a model's default version (or one version); loads it if its signature is needed. */
  async modelConfig(model: string, version?: string): Promise<TritonModelConfig> {
    const mv = await this.#withSignature(model, version);
    return tritonModelConfig(this.#manager.model(model), mv);
  }

  /** Triton's model repository extension: the index (every servable version and its state). */
  repositoryIndex(readyOnly = false, visible: (model: string) => boolean = () => true): RepositoryEntry[] {
    return this.#manager.repositoryIndex(readyOnly, visible);
  }

  /** Repository `load`: make the model's served versions resident (see ModelManager.loadModel). */
  async loadModel(model: string): Promise<void> {
    await this.#manager.loadModel(model);
  }

  /** Repository `unload`: release the model's residency; it stays servable and loads again on demand (see ModelManager.unloadModel). */
  async unloadModel(model: string): Promise<void> {
    await this.#manager.unloadModel(model);
  }

  /** Cumulative statistics of the versions served so far (all, or one model's). */
  statistics(model?: string): VersionStatistics[] {
    const out: VersionStatistics[] = [];
    for (const s of this.#stats.values()) if (model === undefined || s.name === model) out.push(s);
    return out;
  }

  /**
   * Admission before a transport reads the body: SY_ERR_QUEUE_FULL (503, Retry-After) when no version this call
   * could be served by would queue it now, else null. The candidates are the named version; else every arm of
   * the model's policy (the arm may depend on a key in the body) and its fallback chain, or the default route.
   * Only a certain refusal is answered early: whatever does not resolve here (unknown model or version, a
   * version loading) is admitted and {@link infer} answers it as usual; and an admitted call may still be
   * refused at submit when the queue filled meanwhile. The refusal is counted like one at submit.
   */
  admit(model: string, version: string | null, caller: Caller): SwitchyardError | null {
    const flow = caller.flow;
    let first: ModelVersion;
    try {
      const manager = this.#manager;
      if (version !== null) {
        first = manager.resolve(model, version);
        if (first.admits(flow)) return null;
      } else {
        const served = manager.model(model);
        const policy = this.#router?.policy(served) ?? null;
        if (policy === null || policy.arms.length === 0) {
          first = manager.resolve(model);
          if (first.admits(flow)) return null;
        } else {
          first = this.#router!.armVersion(served, policy.arms[0]!);
          for (const arm of policy.arms) if (this.#router!.armVersion(served, arm).admits(flow)) return null;
        }
        if (policy !== null && (policy.spec.fallback?.length ?? 0) > 0) {
          for (const f of this.#router!.fallbacks(served, policy)) if (f.mv === null || f.mv.admits(flow)) return null;
        }
      }
    } catch {
      return null;
    }
    const e = first.batcher?.fullError() ?? err('SY_ERR_QUEUE_FULL', 'queue is full', { retryAfterS: 1 });
    this.#refused(first, caller, e);
    return e;
  }

  /** Count a call refused before it was read (as #request counts a failed attempt). */
  #refused(mv: ModelVersion, caller: Caller, e: SwitchyardError): void {
    const s = this.#stats.get(mv);
    if (s !== undefined) s.fail.count++;
    if (!channels.request.hasSubscribers) return;
    channels.request.publish({
      origin: this,
      model: mv.model,
      version: mv.label,
      versionNumber: mv.version,
      tenant: caller.tenant,
      keyId: caller.keyId,
      arm: null,
      ok: false,
      reason: failureReason(e),
      rows: 0,
      cached: false,
      totalMs: 0,
      queueMs: 0,
      computeMs: 0,
      computeShareMs: 0,
    } satisfies RequestEvent);
  }

  /**
   * Run one inference: plan (explicit version or the model's routing policy), try the routed version and then
   * its fallback chain, send shadows. Throws a SwitchyardError (bad input 4xx, overload 503, ...).
   *
   * @example
   * ```ts
   * const out = await service.infer({ model: 'iris', version: null, body: { kind: 'tensors', inputs, outputs: null, parameters: null, timeoutUs: 0 },
   *   caller: { tenant: '', flow: undefined, keyId: null, requestId: '1', header: () => undefined }, timeoutUs: 0, signal: null });
   * ```
   */
  async infer(call: InferCall): Promise<InferOutcome> {
    const t0 = performance.now();
    const { model, version } = call;
    const manager = this.#manager;
    const router = this.#router;
    const served = manager.model(model);
    const policy = router?.policy(served) ?? null;
    // A call naming a version goes there; otherwise the policy (if any) picks an arm, else the default route.
    let primary = version === null ? null : manager.resolve(model, version);
    if (primary === null && (policy === null || policy.arms.length === 0)) primary = manager.resolve(model);
    const ctx = new CallState(call, policy?.spec.cache?.ttlMs ?? 0);
    try {
      if (primary === null) {
        let key: string | undefined;
        if (policy!.keyHeader !== null) key = call.caller.header(policy!.keyHeader);
        else if (policy!.keyParameter !== null) {
          const p = ctx.body.parameters?.[policy!.keyParameter];
          key = typeof p === 'string' ? p : typeof p === 'number' ? String(p) : undefined;
        }
        const a = policy!.assign(key, this.#random);
        ctx.arm = a.arm.name;
        primary = router!.armVersion(served, a.arm);
        if (channels.route.hasSubscribers)
          channels.route.publish({ origin: this, model, arm: ctx.arm, unit: a.unit, assignment: a.assignment } satisfies RouteEvent);
      }
      if (version === null && policy !== null) ctx.shadows = router!.sampleShadows(policy);
      const breakerSpec = version === null ? policy?.spec.circuitBreaker : undefined;
      // The fallback chain is resolved only once the routed version could not serve.
      const hasFallback = version === null && (policy?.spec.fallback?.length ?? 0) > 0;
      const chain: FallbackStep[] = [{ mv: primary, error: null }];
      let last: unknown = null;
      let fallbackReason: string | null = null;
      ctx.primary = primary;
      for (let i = 0; ; i++) {
        if (i === 1 && hasFallback) chain.push(...router!.fallbacks(served, policy!));
        if (i >= chain.length) break;
        const step = chain[i]!;
        ctx.fallbackReason = i > 0 ? (fallbackReason ?? 'other') : null;
        if (step.mv === null) {
          last = step.error;
          fallbackReason ??= 'unresolved';
          continue;
        }
        const mv = step.mv;
        const breaker = breakerSpec === undefined ? null : router!.breaker(mv, breakerSpec);
        if (breaker !== null && !breaker.allow()) {
          last = err(
            'SY_ERR_CIRCUIT_OPEN',
            `model "${mv.model}" version ${mv.label}: circuit open after repeated failures${hasFallback ? ' and no fallback could serve' : ''}`,
            { retryAfterS: Math.max(1, Math.ceil(breaker.retryAfterMs() / 1000)) },
          );
          fallbackReason ??= 'circuit_open';
          continue;
        }
        let result: Attempted;
        try {
          result = await this.#attempt(ctx, mv, policy?.spec.timeoutMs ?? 0);
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
        this.#served(model, ctx.arm, i === 0, t0);
        for (const s of ctx.shadows) {
          if (mv === primary && ctx.shadowInputs !== null) router!.shadow(served, s, primary, ctx.shadowInputs, result.prepared.rows, result.outputs);
        }
        const outcome: InferOutcome = {
          model: mv.model,
          version: mv.version,
          label: mv.label,
          outputSpecs: result.outputSpecs,
          outputs: result.outputs,
          selected: result.prepared.selected,
          rows: result.prepared.rows,
          route: {
            routed: policy !== null,
            arm: ctx.arm,
            fallbackReason: i > 0 ? (fallbackReason ?? 'other') : null,
            fallbackFrom: i > 0 ? `${primary.model}:${primary.label}` : null,
            cache: result.cache,
          },
        };
        // Classification extension: requested outputs replaced by their top-k "value:index[:label]" strings.
        const classes = ctx.body.kind === 'tensors' ? ctx.body.classification : undefined;
        return classes === undefined || classes.size === 0 ? outcome : classifyOutcome(outcome, classes, mv.maxBatchSize > 0, mv.config.labels);
      }
      throw last ?? err('SY_ERR_INTERNAL', 'no target could serve');
    } catch (e) {
      if (fallsBack(e)) this.#served(model, ctx.arm, false, t0);
      throw e;
    }
  }

  #served(model: string, arm: string | null, ok: boolean, t0: number): void {
    // Only routed requests have an arm to account to (guardrails); the rest publish nothing.
    if (arm !== null && channels.served.hasSubscribers)
      channels.served.publish({ origin: this, model, arm, ok, latencyMs: performance.now() - t0 } satisfies ServedEvent);
  }

  /**
   * One attempt on one version: take a reference (loading it if needed), prepare the inputs for its signature
   * (reusing those made for a version with the same inputs), look up the result cache, run, fill the cache.
   */
  async #attempt(ctx: CallState, mv: ModelVersion, timeoutMs: number): Promise<Attempted> {
    const t0 = performance.now();
    const manager = this.#manager;
    const call = ctx.call;
    let acquired = mv.tryAcquire();
    let jobs: Job[] | null = null;
    let prepared: Prepared | null = null;
    try {
      if (!acquired) {
        await manager.acquire(mv); // not resident: load it (bounded wait)
        acquired = true;
      }
      // Refused before the body is decoded (transports check at arrival too; the queue may have filled since,
      // e.g. while the body was read): under overload a refusal must cost much less than the work it protects.
      if (!mv.admits(call.caller.flow)) throw mv.batcher!.fullError();
      prepared = await ctx.prepare(mv, this.#features);
      const sig = mv.signature!;
      const monitor = this.#monitor;
      let key: string | null = null;
      if (this.#cache !== null && ctx.cacheTtlMs > 0) {
        key = cacheKey({ tenant: call.caller.tenant, model: mv.model, version: mv.version, artifactSha256: mv.artifact.sha256, inputs: prepared.inputs });
        const hit = await this.#cache.get(key);
        if (channels.cache.hasSubscribers) channels.cache.publish({ model: mv.model, hit: hit !== undefined } satisfies CacheEvent);
        if (hit !== undefined) {
          this.#request(ctx, mv, prepared.rows, true, null, t0, null, true);
          const w = monitor?.wants(mv.model, mv.version);
          if (w !== undefined && (w.log || w.drift)) this.#watch(ctx, mv, w, prepared.inputs, hit, t0);
          return { prepared, outputs: hit, cache: 'hit', outputSpecs: sig.outputs };
        }
      }
      const body = ctx.body;
      const timeoutUs = (body.kind === 'tensors' ? body.timeoutUs : 0) || call.timeoutUs;
      const inputs = ctx.shadows.length > 0 && ctx.shadowInputs === null ? prepared.inputs.map(cloneTensor) : null;
      // The runtime may take ownership of the input buffers: monitoring gets its own copy, only when it looks.
      const w = monitor?.wants(mv.model, mv.version);
      const watched = w !== undefined && (w.log || w.drift) ? (inputs ?? prepared.inputs.map(cloneTensor)) : null;
      const signal = call.signal;
      const abandoned = signal === null ? null : () => signal.aborted;
      const flow = call.caller.flow;
      if (prepared.rows <= prepared.maxRows) {
        jobs = [mv.submit(prepared.inputs, prepared.rows, timeoutUs, abandoned, flow)];
      } else {
        jobs = [];
        try {
          for (let from = 0; from < prepared.rows; from += prepared.maxRows) {
            const n = Math.min(prepared.maxRows, prepared.rows - from);
            const job = mv.submit(
              prepared.inputs.map((t) => sliceRows(t, from, n)),
              n,
              timeoutUs,
              abandoned,
              flow,
            );
            job.result.catch(() => undefined); // a job cancelled after a later one failed is never awaited
            jobs.push(job);
          }
        } catch (e) {
          for (const j of jobs) j.cancel(err('SY_ERR_QUEUE_FULL', 'another part of the request could not be queued'));
          throw e;
        }
      }
      let outputs: Tensor[];
      const submitted = jobs;
      const onAbort =
        signal?.addEventListener === undefined
          ? null
          : (): void => {
              for (const j of submitted) j.cancel(err('SY_ERR_CLIENT_CLOSED', 'client closed the connection before the response was ready'));
            };
      if (onAbort !== null) signal!.addEventListener!('abort', onAbort, { once: true });
      try {
        const results = await waitJobs(jobs, timeoutMs, mv);
        outputs = results.length === 1 ? results[0]! : results[0]!.map((_, o) => concatRows(results.map((r) => r[o]!)));
      } catch (e) {
        if (jobs.length > 1) for (const j of jobs) j.cancel(err('SY_ERR_CLIENT_CLOSED', 'another part of the request failed'));
        throw e;
      } finally {
        if (onAbort !== null) signal!.removeEventListener?.('abort', onAbort);
      }
      if (inputs !== null) ctx.shadowInputs = inputs;
      if (watched !== null) this.#watch(ctx, mv, w!, watched, outputs, t0);
      this.#request(ctx, mv, prepared.rows, true, null, t0, jobs, false);
      if (key !== null) this.#cache!.set(key, outputs, ctx.cacheTtlMs);
      return { prepared, outputs, cache: key === null ? null : 'miss', outputSpecs: sig.outputs };
    } catch (e) {
      this.#request(ctx, mv, jobs?.[0]?.rows ?? prepared?.rows ?? 0, false, e, t0, jobs, false);
      throw e;
    } finally {
      if (acquired) manager.release(mv);
    }
  }

  /** Hand a served request to monitoring (while the version is held: names come from its signature). */
  #watch(ctx: CallState, mv: ModelVersion, w: { log: boolean; drift: boolean }, inputs: readonly Tensor[], outputs: readonly Tensor[], t0: number): void {
    const sig = mv.signature!;
    this.#monitor!.observe(w, {
      model: mv.model,
      version: mv.version,
      tenant: ctx.call.caller.tenant,
      arm: ctx.arm,
      requestId: ctx.call.caller.requestId,
      latencyMs: performance.now() - t0,
      inputs: named(sig.inputs, inputs),
      outputs: named(sig.outputs, outputs),
    });
  }

  /** Publish one attempt's request event and count it in the version's statistics. */
  #request(ctx: CallState, mv: ModelVersion, rows: number, ok: boolean, e: unknown, t0: number, jobs: readonly Job[] | null, cached: boolean): void {
    const now = performance.now();
    const job = jobs?.[0] ?? null;
    const started = job !== null && job.startedAt > 0;
    const queueMs = job ? (started ? job.startedAt : now) - job.enqueuedAt : 0;
    const computeMs = started && job!.finishedAt > 0 ? job!.finishedAt - job!.startedAt : 0;
    let share = 0;
    if (jobs !== null) for (const j of jobs) share += computeShare(j);
    const totalMs = now - t0;
    let s = this.#stats.get(mv);
    if (s === undefined) {
      s = {
        name: mv.model,
        version: mv.label,
        lastInference: 0,
        inferenceCount: 0,
        executionCount: 0,
        success: { count: 0, ns: 0 },
        fail: { count: 0, ns: 0 },
        queue: { count: 0, ns: 0 },
        computeInfer: { count: 0, ns: 0 },
        cacheHit: { count: 0, ns: 0 },
        cacheMiss: { count: 0, ns: 0 },
      };
      this.#stats.set(mv, s);
    }
    const ns = totalMs * MS_NS;
    if (ok) {
      s.success.count++;
      s.success.ns += ns;
      s.lastInference = Date.now();
      s.inferenceCount += rows;
      if (cached) {
        s.cacheHit.count++;
        s.cacheHit.ns += ns;
      } else {
        s.executionCount += jobs?.length ?? 0;
        s.queue.count++;
        s.queue.ns += queueMs * MS_NS;
        s.computeInfer.count++;
        s.computeInfer.ns += computeMs * MS_NS;
        if (ctx.cacheTtlMs > 0 && this.#cache !== null) {
          s.cacheMiss.count++;
          s.cacheMiss.ns += ns;
        }
      }
    } else {
      s.fail.count++;
      s.fail.ns += ns;
    }
    if (!channels.request.hasSubscribers) return;
    channels.request.publish({
      origin: this,
      model: mv.model,
      version: mv.label,
      versionNumber: mv.version,
      tenant: ctx.call.caller.tenant,
      keyId: ctx.call.caller.keyId,
      arm: ctx.arm,
      ok,
      reason: ok ? null : failureReason(e),
      rows,
      cached,
      totalMs,
      queueMs,
      computeMs,
      computeShareMs: share,
    } satisfies RequestEvent);
  }
}

/** The `reason` label for a failed inference. */
export function failureReason(e: unknown): FailureReason {
  const code = (e as Partial<SwitchyardError>).code;
  if (code === undefined) return 'other';
  return REASONS[code] ?? 'other';
}

const REASONS: Partial<Record<SwitchyardError['code'], FailureReason>> = {
  SY_ERR_BAD_REQUEST: 'invalid_input',
  SY_ERR_INPUT_INVALID: 'invalid_input',
  SY_ERR_OUTPUT_UNKNOWN: 'invalid_input',
  SY_ERR_INPUT_REJECTED: 'invalid_input',
  SY_ERR_NOT_REPRESENTABLE: 'invalid_input',
  SY_ERR_MODEL_NOT_READY: 'not_ready',
  SY_ERR_LOAD_TIMEOUT: 'not_ready',
  SY_ERR_MEMORY_BUDGET: 'not_ready',
  SY_ERR_QUEUE_FULL: 'queue_full',
  SY_ERR_TIMEOUT: 'timeout',
  SY_ERR_SHUTTING_DOWN: 'shutting_down',
  SY_ERR_INFERENCE_FAILED: 'runtime_error',
  SY_ERR_CLIENT_CLOSED: 'cancelled',
};
