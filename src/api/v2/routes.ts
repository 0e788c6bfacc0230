/**
 * @module
 * Open Inference Protocol (KServe/Triton "V2") REST endpoints as an encapsulated Fastify plugin: health,
 * server and model metadata, readiness, and inference (JSON and the binary tensor data extension). A transport
 * only: it decodes the wire into a call, runs it through the inference core and encodes the outcome.
 */
import { promisify } from 'node:util';
import { gunzip, inflate } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { err } from '../../errors.js';
import { routeParameters, type CancelSignal, type InferenceService, type InferOutcome, type TensorBody } from '../../inference/index.js';
import { RequestCaller } from '../caller.js';
import { sendError, toWireError } from '../reply-error.js';
import { decodeInferRequest, encodeInferResponse, type V2Request } from './codec.js';
import { EXTENSION_NAMES } from './extensions.js';

const gunzipAsync = promisify(gunzip);
const inflateAsync = promisify(inflate);

export interface V2Options {
  inference: InferenceService;
  serverName: string;
  serverVersion: string;
  bodyLimit: number;
  /**
   * Whether the control plane (the metadata store) answers; reported in the ready body as `controlPlane`
   * ("available" | "unavailable") without changing the status: a replica that can serve stays in rotation.
   */
  controlPlane?: () => boolean;
  /** Largest body after gzip/deflate decompression, in bytes (inflating stops there: 413). Default bodyLimit. */
  inflateLimit?: number;
}

/**
 * Decompressions running at once: as many as libuv's thread pool runs (zlib works there), so a burst of
 * compressed bodies (or bombs) holds at most this many inflate buffers; the rest wait their turn in order.
 */
const INFLATE_SLOTS = 4;
let inflating = 0;
const inflateWaiters: (() => void)[] = [];

async function inflateSlot<T>(work: () => Promise<T>): Promise<T> {
  if (inflating >= INFLATE_SLOTS) await new Promise<void>((r) => inflateWaiters.push(r));
  else inflating++;
  try {
    return await work();
  } finally {
    const next = inflateWaiters.shift();
    if (next) next();
    else inflating--;
  }
}

/** A refused request's body up to this size is read and discarded (keeping the connection); a larger one closes it. */
const DISCARD_BODY_BYTES = 64 * 1024;

type ModelParams = { model: string; version?: string };

const EXTENSIONS = ['binary_tensor_data', 'parameters', ...EXTENSION_NAMES];

/** Inflate a gzip/deflate body, stopping at `limit` bytes of output (a bomb is refused as soon as it passes it). */
async function decompress(body: Buffer, encoding: string, limit: number): Promise<Buffer> {
  if (encoding === 'identity') return body;
  const opts = { maxOutputLength: limit };
  try {
    if (encoding === 'gzip') return await inflateSlot(() => gunzipAsync(body, opts));
    if (encoding === 'deflate') return await inflateSlot(() => inflateAsync(body, opts));
  } catch (e) {
    const tooBig = (e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE';
    throw err(
      tooBig ? 'SY_ERR_BODY_TOO_LARGE' : 'SY_ERR_BAD_REQUEST',
      tooBig
        ? `decompressed request body is larger than the server limit of ${limit} bytes (see --max-inflate-mb)`
        : `request body is not valid ${encoding}: ${(e as Error).message}`,
    );
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

/** Aborted once the client's connection is gone (read when a queued request is about to run). */
class SocketSignal implements CancelSignal {
  constructor(readonly socket: { readonly destroyed: boolean }) {}
  get aborted(): boolean {
    return this.socket.destroyed;
  }
}

export async function v2Routes(app: FastifyInstance, opts: V2Options): Promise<void> {
  const { inference } = opts;
  const inflateLimit = Math.min(opts.inflateLimit ?? opts.bodyLimit, opts.bodyLimit);
  // Inference bodies are parsed by the codec (JSON, or JSON header + binary tensors): take raw bytes for any type.
  app.removeAllContentTypeParsers();
  // The usual types are named too: Fastify caches the parser of a named type, but parses the header of any other on every request.
  const raw = (_req: FastifyRequest, body: Buffer, done: (e: Error | null, b: Buffer) => void): void => done(null, body);
  for (const type of ['application/json', 'application/octet-stream', '*'])
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: opts.bodyLimit }, raw);

  const serverMeta = JSON.stringify({ name: opts.serverName, version: opts.serverVersion, extensions: EXTENSIONS });
  const sendMeta = (_req: FastifyRequest, reply: FastifyReply): FastifyReply => reply.type('application/json').send(serverMeta);
  app.get('/v2', sendMeta);
  app.get('/v2/', sendMeta);
  app.get('/v2/health/live', (_req, reply) => reply.send({ live: true }));
  const controlPlane = opts.controlPlane ?? (() => true);
  app.get('/v2/health/ready', (_req, reply) => {
    const ready = inference.ready();
    return reply.code(ready ? 200 : 503).send({ ready, controlPlane: controlPlane() ? 'available' : 'unavailable' });
  });

  const modelMeta = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply): Promise<FastifyReply> =>
    reply.send(await inference.metadata(req.params.model, req.params.version));
  app.get('/v2/models/:model', modelMeta);
  app.get('/v2/models/:model/versions/:version', modelMeta);

  const modelReady = (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply): FastifyReply => {
    const { reason, ...r } = inference.readiness(req.params.model, req.params.version);
    return reply.code(r.ready ? 200 : 503).send(reason ? { ...r, reason } : r);
  };
  app.get('/v2/models/:model/ready', modelReady);
  app.get('/v2/models/:model/versions/:version/ready', modelReady);

  const infer = async (req: FastifyRequest<{ Params: ModelParams; Body: Buffer }>, reply: FastifyReply): Promise<FastifyReply> => {
    let v2: V2Request | null = null;
    let out: InferOutcome;
    try {
      if (!Buffer.isBuffer(req.body)) throw err('SY_ERR_BAD_REQUEST', 'request body is empty');
      const encoding = req.headers['content-encoding'];
      const body = encoding === undefined ? req.body : await decompress(req.body, encoding, inflateLimit);
      const timeoutUs = timeoutHeader(req);
      const length = headerLength(req);
      // Decoded by the core on its first attempt, so a malformed body counts against the version it was sent to.
      const limits = inference.requestLimits(req.params.model);
      const decode = (): TensorBody => (v2 = decodeInferRequest(body, length, limits)).body;
      out = await inference.infer({
        model: req.params.model,
        version: req.params.version ?? null,
        body: { kind: 'deferred', decode },
        caller: new RequestCaller(req),
        timeoutUs,
        signal: new SocketSignal(req.raw.socket),
      });
    } catch (e) {
      return sendError(reply, toWireError(e));
    }
    const r = out.route;
    reply.header('x-switchyard-model-version', out.label);
    if (out.model !== req.params.model || r.routed) reply.header('x-switchyard-served-by', `${out.model}:${out.label}`);
    if (r.arm !== null) reply.header('x-switchyard-arm', r.arm);
    if (r.fallbackReason !== null) reply.header('x-switchyard-fallback', r.fallbackReason);
    if (r.cache !== null) reply.header('x-switchyard-cache', r.cache);
    const res = encodeInferResponse(out, v2!, routeParameters(out));
    if (res.headerLength === null) return reply.type('application/json').send(res.body);
    return reply.header('inference-header-content-length', String(res.headerLength)).type('application/octet-stream').send(res.body);
  };
  // Goodput under overload: a call that no queue would take now is refused from its headers (after the
  // gateway's authorize hook: the caller's flow counts), before its body is read or decoded, so that a refusal
  // costs far less than the work it protects. A body that may be large (or has no length) is not read at all:
  // the connection closes after the answer; a small one is discarded by node:http and the connection kept.
  const admission = (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply, done: () => void): void => {
    const refused = inference.admit(req.params.model, req.params.version ?? null, new RequestCaller(req));
    if (refused === null) return done();
    if (!(Number(req.headers['content-length']) <= DISCARD_BODY_BYTES)) reply.header('connection', 'close');
    sendError(reply, toWireError(refused));
  };
  app.post('/v2/models/:model/infer', { onRequest: admission }, infer);
  app.post('/v2/models/:model/versions/:version/infer', { onRequest: admission }, infer);
}
