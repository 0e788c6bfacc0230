/**
 * @module
 * The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, Triton's wire format) and the
 * standard health service (`grpc.health.v1.Health`), on @grpc/grpc-js. A transport only, like api/v2: each RPC
 * authenticates the `authorization` metadata (`Bearer <key>`) with the gateway, asks the transport-neutral
 * Authorizer (visibility → NOT_FOUND, scope → PERMISSION_DENIED, limits → RESOURCE_EXHAUSTED), decodes the
 * message into a call for the inference core, and encodes the outcome. Routing, fallback, the result cache,
 * fair queueing, usage and monitoring all happen in the core, exactly as for REST.
 *
 * ```
 * RPC                          needs (API key scope)   maps to
 * ServerLive, ServerReady      nothing (public)        InferenceService.ready()
 * ServerMetadata               any key                 name, version, extensions
 * ModelReady/Metadata/Config   read | infer            readiness(), metadata(), the version's config
 * ModelStatistics              read | infer            statistics() (visible models only)
 * ModelInfer, ModelStreamInfer infer (limited)         InferenceService.infer()
 * RepositoryIndex/ModelLoad    admin                   InferenceService.repositoryIndex / loadModel (make resident)
 * RepositoryModelUnload        admin                   InferenceService.unloadModel (release residency; loads again on demand)
 * grpc.health.v1.Health        nothing (public)        SERVING when the server is ready
 * ```
 *
 * Unary ModelInfer arrives through the HTTP/2 front (front.ts: a measured hot path) and everything else through
 * grpc-js; both call the same handlers. Limit state goes out as metadata (initial on success, trailing on refusal).
 *
 * Deadlines become the call's timeout (what is left of it when the request is queued); a cancelled call aborts
 * the call's signal (a queued request is dropped). Limit admissions are released when the call ends.
 *
 * Longer than our ~500-line guide on purpose: one handler per RPC of the service table above, each a thin
 * transport over the core; splitting the table would split one protocol.
 */
import {
  Metadata,
  Server,
  ServerCredentials,
  status as Status,
  type sendUnaryData,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceError,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { err } from '../../errors.js';
import { limitHeaders, type AccessRule, type AuditLog, type Authorizer, type Gateway, type Principal } from '../../gateway/index.js';
import { routeParameters, type CancelSignal, type InferenceService } from '../../inference/index.js';
import { requestIdGenerator } from '../request-scope.js';
import { toWireError } from '../reply-error.js';
import { GrpcCaller } from './caller.js';
import { decodeInferRequest, encodeInferResponse, type GrpcInferRequest, type WireInferRequest, type WireInferResponse } from './codec.js';
import { Http2Front, type FastMethod, type MetadataReader, type UnaryCall, type UnaryCallback } from './front.js';
import { loadProtos } from './proto.js';
import { toServiceError } from './status.js';

export interface GrpcOptions {
  readonly inference: InferenceService;
  readonly gateway: Gateway;
  /** The same Authorizer the HTTP hooks use (one set of limit counters). */
  readonly authorizer: Authorizer;
  /** Repository load / unload are recorded here; null = not audited. */
  readonly audit: AuditLog | null;
  readonly logger: Logger;
  readonly serverName: string;
  readonly serverVersion: string;
  /** Largest message received or sent, in bytes (an oversized one fails with RESOURCE_EXHAUSTED). */
  readonly maxMessageBytes: number;
}

type Admission = Exclude<Awaited<ReturnType<Authorizer['authorize']>>, null>;

const BASE: AccessRule = {
  public: false,
  scopes: ['read', 'infer', 'admin'],
  modelParam: null,
  tenantParam: null,
  notFound: 'v2',
  mutatesModel: false,
  createsModel: false,
  limited: false,
  audited: false,
};
/** Server metadata: any valid key (REST: GET /v2). */
const SERVER_READ = BASE;
/** Model metadata, readiness, config, statistics (REST: GET /v2/models/{m}...). */
const MODEL_READ: AccessRule = { ...BASE, scopes: ['read', 'infer'], modelParam: 'name', limited: true };
/** Inference (REST: POST /v2/models/{m}/infer). */
const INFER: AccessRule = { ...BASE, scopes: ['infer'], modelParam: 'model_name', limited: true };
/** Repository control: the model's owner with an admin key, audited. */
const REPOSITORY: AccessRule = { ...BASE, scopes: ['admin'], modelParam: 'model_name', mutatesModel: true, audited: true };
const REPOSITORY_INDEX: AccessRule = { ...BASE, scopes: ['admin'] };

const ACTOR = 'x-switchyard-actor';
const INFERENCE_SERVICE = 'inference.GRPCInferenceService';
const EXTENSIONS = ['parameters', 'model_configuration', 'statistics', 'model_repository', 'classification'];

function first(md: MetadataReader, key: string): string | undefined {
  const v = md.get(key)[0];
  return v === undefined ? undefined : typeof v === 'string' ? v : v.toString('utf8');
}

/** The microseconds left before a call's deadline (0 = none). */
function deadlineUs(deadline: Date | number): number {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(at)) return 0;
  return Math.max(1, Math.round((at - Date.now()) * 1000));
}

/**
 * A call's {@link CancelSignal}: aborted when the client cancels or its deadline passes. Not an AbortSignal:
 * grpc-js emits `cancelled` when every call's stream closes, finished ones included, and aborting an
 * AbortController builds a DOMException (a stack trace) each time — measurable at thousands of calls a second.
 * Here an abort only sets a flag and runs the listeners still attached (the core detaches its own when done).
 */
class CallSignal implements CancelSignal {
  #aborted = false;
  #listeners: (() => void)[] | null = null;

  constructor(call: { once(e: 'cancelled', l: () => void): unknown; readonly cancelled: boolean }) {
    if (call.cancelled) this.#aborted = true;
    else call.once('cancelled', () => this.#abort());
  }

  get aborted(): boolean {
    return this.#aborted;
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.#aborted) return; // as an AbortSignal: an already-aborted signal never fires again
    (this.#listeners ??= []).push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const ls = this.#listeners;
    if (ls === null) return;
    const i = ls.indexOf(listener);
    if (i >= 0) ls.splice(i, 1);
  }

  #abort(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    const ls = this.#listeners;
    this.#listeners = null;
    if (ls !== null) for (const l of ls) l();
  }
}

/** Limit state (x-ratelimit-*, quota, refusal reason) of a refused admission's error: sent in its trailers. */
const LIMIT_METADATA = new WeakMap<object, Record<string, string>>();

function metadataOf(h: Record<string, string>, into = new Metadata()): Metadata {
  for (const k in h) into.set(k, h[k]!);
  return into;
}

/** A gRPC status with no catalog code (e.g. UNIMPLEMENTED), answered as is. */
class GrpcStatusError extends Error implements ServiceError {
  readonly details: string;
  readonly metadata = new Metadata();
  constructor(
    readonly code: Status,
    message: string,
  ) {
    super(message);
    this.details = message;
  }
}

export class GrpcTransport {
  readonly #opts: GrpcOptions;
  readonly #server: Server;
  readonly #requestId = requestIdGenerator();
  readonly #watchers = new Set<ServerWritableStream<unknown, unknown>>();
  /** The HTTP/2 front answering unary ModelInfer itself (null: grpc-js binds its own listener). */
  readonly #front: Http2Front | null;
  #port: number | null = null;
  #closing: Promise<void> | null = null;

  constructor(opts: GrpcOptions) {
    this.#opts = opts;
    const max = opts.maxMessageBytes;
    // Channelz (grpc-js's per-call and per-socket bookkeeping for its introspection service) is off: Switchyard
    // does not serve that service, and the bookkeeping costs on every call.
    this.#server = new Server({ 'grpc.max_receive_message_length': max, 'grpc.max_send_message_length': max, 'grpc.enable_channelz': 0 });
    const protos = loadProtos();
    this.#server.addService(protos.inference, this.#inferenceService());
    this.#server.addService(protos.health, this.#healthService());
    const modelInfer = protos.inference['ModelInfer']!;
    const fast: FastMethod = {
      deserialize: modelInfer.requestDeserialize,
      serialize: modelInfer.responseSerialize as (v: unknown) => Buffer,
      handler: this.#modelInfer as FastMethod['handler'],
      undecodable: (e) => toServiceError(err('SY_ERR_BAD_REQUEST', `ModelInferRequest could not be decoded: ${e instanceof Error ? e.message : String(e)}`)),
    };
    this.#front = Http2Front.supported(this.#server)
      ? new Http2Front({ grpc: this.#server, fast: new Map([[modelInfer.path, fast]]), maxMessageBytes: max, logger: opts.logger })
      : null;
  }

  /** Whether unary ModelInfer is answered by the HTTP/2 front (front.ts) rather than through grpc-js. */
  get fastPath(): boolean {
    return this.#front !== null;
  }

  /** The bound port once listening, else null. */
  get port(): number | null {
    return this.#port;
  }

  /** Listen on `host:port` (port 0: any free port); resolves with the bound port. */
  async listen(port: number, host: string): Promise<number> {
    if (this.#front !== null) return (this.#port = await this.#front.listen(port, host));
    const address = host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
    return new Promise((resolve, reject) => {
      this.#server.bindAsync(address, ServerCredentials.createInsecure(), (e, bound) => {
        if (e) return reject(e);
        this.#port = bound;
        resolve(bound);
      });
    });
  }

  /** Stop accepting calls; let running ones finish for up to `graceMs`, then cancel them. Idempotent. */
  close(graceMs = 5000): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      for (const w of this.#watchers) w.end();
      this.#watchers.clear();
      if (this.#front !== null) {
        void this.#front
          .close(graceMs)
          .then(() => this.#server.forceShutdown())
          .then(resolve);
        return;
      }
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, graceMs);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.#closing;
  }

  // ── auth ─────────────────────────────────────────────────────────────────────────────────────────────

  #authenticate(md: MetadataReader): Principal | Promise<Principal> {
    const actor = first(md, ACTOR)?.trim();
    return this.#opts.gateway.authenticate(first(md, 'authorization'), actor ? actor : null);
  }

  /** Check `p` for `rule` on `model`; a refused admission throws its 429 / 503; an admitted one is returned to release. */
  async #admit(p: Principal, rule: AccessRule, model: string | null): Promise<Admission | null> {
    if (rule.modelParam !== null && model === '') throw err('SY_ERR_BAD_REQUEST', `${rule.modelParam} is empty`);
    const a = await this.#opts.authorizer.authorize(p, rule, { model, tenant: null });
    if (a !== null && !a.allowed) {
      const e = this.#opts.authorizer.rejection(a, p);
      const h = limitHeaders(a);
      if (h !== null) LIMIT_METADATA.set(e, h);
      throw e;
    }
    return a;
  }

  /**
   * A unary RPC: authenticate, authorize (`rule`, on the model `target` names), run `fn`, answer; errors go out
   * with their gRPC status and the catalog code in trailing metadata. A limited call's limit state (x-ratelimit-*,
   * x-switchyard-quota-*, as REST's headers) goes out as initial metadata on success, in the trailers on refusal.
   * Called by grpc-js, and by the HTTP/2 front for ModelInfer (front.ts).
   */
  #unary<Req, Res>(
    rule: AccessRule | null,
    target: (req: Req) => string | null,
    fn: (req: Req, p: Principal | null, call: UnaryCall<Req>) => Res | Promise<Res>,
  ) {
    return (call: UnaryCall<Req>, callback: UnaryCallback<Res>): void => {
      let admission: Admission | null = null;
      const run = async (): Promise<Res> => {
        if (rule === null) return fn(call.request, null, call);
        const p = await this.#authenticate(call.metadata);
        admission = await this.#admit(p, rule, target(call.request));
        return fn(call.request, p, call);
      };
      run().then(
        (res) => {
          const a = admission as Admission | null;
          if (a !== null) {
            a.release();
            const h = limitHeaders(a);
            if (h !== null) call.sendMetadata(metadataOf(h));
          }
          callback(null, res);
        },
        (e: unknown) => {
          admission?.release();
          callback(this.#error(e));
        },
      );
    };
  }

  #error(e: unknown): ServiceError {
    if (e instanceof GrpcStatusError) return e;
    const se = toServiceError(e);
    const limits = typeof e === 'object' && e !== null ? LIMIT_METADATA.get(e) : undefined;
    if (limits !== undefined) metadataOf(limits, se.metadata);
    if (se.code === Status.INTERNAL && toWireError(e).code === 'SY_ERR_INTERNAL') this.#opts.logger.error({ err: e }, 'gRPC call failed');
    return se;
  }

  // ── inference ────────────────────────────────────────────────────────────────────────────────────────

  /** One inference for an admitted principal: decode (on the core's first attempt), run, encode. */
  async #infer(req: WireInferRequest, p: Principal, md: MetadataReader, timeoutUs: number, signal: CancelSignal): Promise<WireInferResponse> {
    let decoded: GrpcInferRequest | null = null;
    const id = req.id;
    const inference = this.#opts.inference;
    const version = req.model_version === '' ? null : req.model_version;
    const caller = new GrpcCaller(p, md, id === '' ? this.#requestId(undefined) : id);
    // As on REST: a call no queue would take is refused before its tensors are decoded.
    const refused = inference.admit(req.model_name, version, caller);
    if (refused !== null) throw refused;
    const out = await inference.infer({
      model: req.model_name,
      version,
      body: { kind: 'deferred', decode: () => (decoded = decodeInferRequest(req, inference.requestLimits(req.model_name))).body },
      caller,
      timeoutUs,
      signal,
    });
    return encodeInferResponse(out, id, (decoded as GrpcInferRequest | null)?.raw ?? true, routeParameters(out));
  }

  /** ModelInfer: the unary path (authenticate, authorize, limit) around one inference. */
  readonly #modelInfer = this.#unary<WireInferRequest, WireInferResponse>(
    INFER,
    (r) => r.model_name,
    (req, p, call) => this.#infer(req, p!, call.metadata, deadlineUs(call.getDeadline()), new CallSignal(call)),
  );

  /**
   * The bidirectional stream: authenticated once (its metadata), each request authorized, limited and run on its
   * own, concurrently; responses are written in request order, one per request. A failed request answers
   * `error_message` ("SY_ERR_...: message") and the stream goes on; a stream whose key is refused ends with
   * UNAUTHENTICATED / PERMISSION_DENIED.
   */
  #modelStreamInfer(call: ServerDuplexStream<WireInferRequest, { error_message: string; infer_response: WireInferResponse | null }>): void {
    const signal = new CallSignal(call);
    let principal: Promise<Principal> | null = null;
    let tail: Promise<void> = Promise.resolve();
    let pending = 0;
    let ended = false;
    let failed = false;
    const finish = (): void => {
      if (ended && pending === 0 && !failed && !signal.aborted) call.end();
    };
    call.on('data', (req: WireInferRequest) => {
      if (failed) return;
      pending++;
      principal ??= Promise.resolve().then(() => this.#authenticate(call.metadata));
      const result = principal
        .then(async (p) => {
          const a = await this.#admit(p, INFER, req.model_name);
          try {
            return { error_message: '', infer_response: await this.#infer(req, p, call.metadata, deadlineUs(call.getDeadline()), signal) };
          } finally {
            a?.release();
          }
        })
        .catch((e: unknown) => {
          const w = toWireError(e);
          if (w.code === 'SY_ERR_INTERNAL') this.#opts.logger.error({ err: e }, 'gRPC stream request failed');
          return { error_message: `${w.code}: ${w.message}`, infer_response: null, failure: e };
        });
      tail = tail
        .then(() => result)
        .then((r) => {
          pending--;
          if (failed || signal.aborted) return;
          if ('failure' in r && principal !== null) {
            // A refused key ends the stream (every later request would fail the same way).
            const code = toWireError(r.failure).code;
            if (code === 'SY_ERR_UNAUTHENTICATED') {
              failed = true;
              call.emit('error', this.#error(r.failure));
              return;
            }
          }
          call.write({ error_message: r.error_message, infer_response: r.infer_response });
          finish();
        });
    });
    call.on('end', () => {
      ended = true;
      void tail.then(finish);
    });
    call.on('error', () => undefined);
  }

  #inferenceService(): UntypedServiceImplementation {
    const { inference, serverName, serverVersion } = this.#opts;
    const gateway = this.#opts.gateway;
    type Named = { name: string; version: string };
    const named = (r: Named): string => r.name;
    return {
      ServerLive: this.#unary(
        null,
        () => null,
        () => ({ live: true }),
      ),
      ServerReady: this.#unary(
        null,
        () => null,
        () => ({ ready: inference.ready() }),
      ),
      ServerMetadata: this.#unary(
        SERVER_READ,
        () => null,
        () => ({ name: serverName, version: serverVersion, extensions: EXTENSIONS }),
      ),
      ModelReady: this.#unary(MODEL_READ, named, (r: Named) => ({ ready: inference.readiness(r.name, r.version || undefined).ready })),
      ModelMetadata: this.#unary(MODEL_READ, named, async (r: Named) => {
        const m = await inference.metadata(r.name, r.version || undefined);
        return { name: m.name, versions: m.versions, platform: m.platform, inputs: m.inputs, outputs: m.outputs };
      }),
      ModelConfig: this.#unary(MODEL_READ, named, async (r: Named) => ({ config: await inference.modelConfig(r.name, r.version || undefined) })),
      ModelStatistics: this.#unary(
        MODEL_READ,
        (r: Named) => (r.name === '' ? null : r.name),
        (r: Named, p) =>
          inference.modelStatistics(r.name === '' ? undefined : r.name, r.version === '' ? undefined : r.version, (n) => p === null || gateway.canSee(p, n)),
      ),
      RepositoryIndex: this.#unary(
        REPOSITORY_INDEX,
        () => null,
        (r: { ready: boolean }, p) => ({
          models: inference.repositoryIndex(r.ready, (n) => p === null || gateway.canSee(p, n)).map((e) => ({ ...e, reason: e.reason ?? '' })),
        }),
      ),
      RepositoryModelLoad: this.#unary(
        REPOSITORY,
        (r: { model_name: string }) => r.model_name,
        (r: { model_name: string }, p, call) => this.#audited(p, call, 'RepositoryModelLoad', r.model_name, () => inference.loadModel(r.model_name)),
      ),
      RepositoryModelUnload: this.#unary(
        REPOSITORY,
        (r: { model_name: string }) => r.model_name,
        (r: { model_name: string }, p, call) => this.#audited(p, call, 'RepositoryModelUnload', r.model_name, () => inference.unloadModel(r.model_name)),
      ),
      ModelInfer: this.#modelInfer,
      ModelStreamInfer: this.#modelStreamInfer.bind(this),
    };
  }

  /** Run a repository action and record it in the audit log with its outcome's HTTP status (as the REST routes are). */
  async #audited(p: Principal | null, call: UnaryCall<unknown>, action: string, model: string, run: () => Promise<void>): Promise<object> {
    try {
      await run();
    } catch (e) {
      await this.#audit(p, call, action, model, toWireError(e).status);
      throw e;
    }
    await this.#audit(p, call, action, model, 200);
    return {};
  }

  async #audit(p: Principal | null, call: UnaryCall<unknown>, action: string, model: string, status: number): Promise<void> {
    const audit = this.#opts.audit;
    if (audit === null) return;
    try {
      await audit.append({
        at: Date.now(),
        actor: p?.actor ?? 'unauthenticated',
        tenant: p?.kind === 'tenant' ? p.tenant.name : null,
        action: `gRPC ${action}`,
        target: `model=${model}`,
        status,
        ip: call.getPeer(),
        userAgent: first(call.metadata, 'user-agent') ?? null,
        requestId: null,
        detail: null,
      });
    } catch (e) {
      this.#opts.logger.error({ err: e }, 'audit log write failed');
    }
  }

  // ── health ───────────────────────────────────────────────────────────────────────────────────────────

  #healthStatus(service: string): 'SERVING' | 'NOT_SERVING' | null {
    if (service !== '' && service !== INFERENCE_SERVICE) return null;
    return this.#opts.inference.ready() && this.#closing === null ? 'SERVING' : 'NOT_SERVING';
  }

  #healthService(): UntypedServiceImplementation {
    return {
      Check: (call: ServerUnaryCall<{ service: string }, unknown>, callback: sendUnaryData<unknown>) => {
        const s = this.#healthStatus(call.request.service);
        if (s === null)
          callback(
            Object.assign(new Error(`unknown service "${call.request.service}"`), {
              code: Status.NOT_FOUND,
              details: `unknown service "${call.request.service}"`,
            }),
          );
        else callback(null, { status: s });
      },
      Watch: (call: ServerWritableStream<{ service: string }, unknown>) => {
        // Sends the status now and again whenever it changes (checked every 500 ms), until the client cancels.
        let last: string | null = null;
        const tick = (): void => {
          const s = this.#healthStatus(call.request.service) ?? 'SERVICE_UNKNOWN';
          if (s !== last) call.write({ status: (last = s) });
        };
        tick();
        const timer = setInterval(tick, 500);
        timer.unref();
        this.#watchers.add(call as ServerWritableStream<unknown, unknown>);
        const stop = (): void => {
          clearInterval(timer);
          this.#watchers.delete(call as ServerWritableStream<unknown, unknown>);
        };
        call.on('cancelled', stop);
        call.on('finish', stop);
        call.on('close', stop);
      },
    };
  }
}
