/**
 * @module
 * Open Inference Protocol (KServe/Triton "V2") REST endpoints as an encapsulated Fastify plugin: health,
 * server and model metadata, readiness, and inference (JSON and the binary tensor data extension).
 */
import { promisify } from 'node:util';
import { gunzip, inflate } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { err } from '../../errors.js';
import { channels, type RequestEvent } from '../../events.js';
import type { Flow, Job } from '../../serving/batcher.js';
import { signatureJson, type ModelManager, type ModelVersion } from '../../serving/index.js';
import { failureReason, sendError, toWireError } from '../reply-error.js';
import { encodeInferResponse, parseInferRequest } from './codec.js';

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

/** This request's share of its batch's execution time (by rows). */
function computeShare(job: Job): number {
  return job.finishedAt > 0 && job.batchRows > 0 ? ((job.finishedAt - job.startedAt) * job.rows) / job.batchRows : 0;
}

export async function v2Routes(app: FastifyInstance, opts: V2Options): Promise<void> {
  const { manager } = opts;
  // Inference bodies are parsed by the codec (JSON, or JSON header + binary tensors): take raw bytes for any type.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: opts.bodyLimit }, (_req, body, done) => done(null, body));

  const serverMeta = JSON.stringify({ name: opts.serverName, version: opts.serverVersion, extensions: EXTENSIONS });
  const sendMeta = (_req: FastifyRequest, reply: FastifyReply): FastifyReply => reply.type('application/json').send(serverMeta);
  app.get('/v2', sendMeta);
  app.get('/v2/', sendMeta);
  app.get('/v2/health/live', (_req, reply) => reply.send({ live: true }));
  app.get('/v2/health/ready', (_req, reply) => {
    const ready = manager.ready();
    return reply.code(ready ? 200 : 503).send({ ready });
  });

  const modelMeta = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply): Promise<FastifyReply> => {
    const mv = manager.resolve(req.params.model, req.params.version);
    if (!mv.signature && mv.state !== 'UNAVAILABLE') {
      // Metadata needs the signature: load a lazy / evicted version (bounded wait), like an inference would.
      await manager.acquire(mv);
      manager.release(mv);
    }
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

  const infer = async (req: FastifyRequest<{ Params: ModelParams; Body: Buffer }>, reply: FastifyReply): Promise<FastifyReply> => {
    const t0 = performance.now();
    const mv = manager.resolve(req.params.model, req.params.version);
    let acquired = mv.tryAcquire();
    let job = null;
    try {
      if (!acquired) {
        await manager.acquire(mv); // not resident: load it (bounded wait)
        acquired = true;
      }
      if (!Buffer.isBuffer(req.body)) throw err('SY_ERR_BAD_REQUEST', 'request body is empty');
      const encoding = req.headers['content-encoding'];
      const body = encoding === undefined ? req.body : await decompress(req.body, encoding, opts.bodyLimit);
      const parsed = parseInferRequest(body, headerLength(req), mv);
      const timeoutUs = parsed.timeoutUs || timeoutHeader(req);
      const socket = req.raw.socket;
      job = mv.submit(parsed.inputs, parsed.rows, timeoutUs, () => socket.destroyed, opts.flowOf?.(req));
      const outputs = await job.result;
      opts.onInferred?.(req, mv, parsed.rows, computeShare(job), true);
      const res = encodeInferResponse(mv, parsed, outputs);
      if (channels.request.hasSubscribers) {
        channels.request.publish({
          model: mv.model, version: mv.label, ok: true, reason: null, totalMs: performance.now() - t0,
          queueMs: job.startedAt - job.enqueuedAt, computeMs: job.finishedAt - job.startedAt,
        } satisfies RequestEvent);
      }
      if (res.headerLength === null) return reply.type('application/json').send(res.body);
      return reply.header('inference-header-content-length', String(res.headerLength)).type('application/octet-stream').send(res.body);
    } catch (e) {
      if (channels.request.hasSubscribers) {
        const started = job !== null && job.startedAt > 0;
        channels.request.publish({
          model: mv.model, version: mv.label, ok: false, reason: failureReason(e), totalMs: performance.now() - t0,
          queueMs: job ? (started ? job.startedAt : performance.now()) - job.enqueuedAt : 0,
          computeMs: started && job!.finishedAt > 0 ? job!.finishedAt - job!.startedAt : 0,
        } satisfies RequestEvent);
      }
      opts.onInferred?.(req, mv, job?.rows ?? 0, job ? computeShare(job) : 0, false);
      return sendError(reply, toWireError(e));
    } finally {
      if (acquired) manager.release(mv);
    }
  };
  app.post('/v2/models/:model/infer', infer);
  app.post('/v2/models/:model/versions/:version/infer', infer);
}
