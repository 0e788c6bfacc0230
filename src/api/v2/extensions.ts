/**
 * @module
 * Triton's HTTP protocol extensions beside the V2 endpoints, as an encapsulated Fastify plugin: model
 * statistics, model configuration and the model repository (index, load, unload). A transport only: the
 * shapes and the operations are the inference core's (gRPC calls the same).
 *
 * ```
 * GET  /v2/models/stats                         model_stats of every model the caller can see
 * GET  /v2/models/{m}[/versions/{v}]/stats      one model's versions (or one version)
 * GET  /v2/models/{m}[/versions/{v}]/config     Triton model configuration (JSON)
 * POST /v2/repository/index                     [{name, version, state, reason}]; body {"ready": true} = READY only
 * POST /v2/repository/models/{m}/load           make the model's served versions resident (admin scope)
 * POST /v2/repository/models/{m}/unload         release its residency; it loads again on demand (admin scope)
 * ```
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { err } from '../../errors.js';
import type { InferenceService } from '../../inference/index.js';

export interface V2ExtensionOptions {
  inference: InferenceService;
  /** Whether the caller may see a model (aggregate listings leave out the others). */
  visible: (req: FastifyRequest, model: string) => boolean;
}

type ModelParams = { model: string; version?: string };

/** The extensions these routes implement (listed in the server metadata with the V2 ones). */
export const EXTENSION_NAMES = ['statistics', 'model_repository', 'model_configuration', 'classification'] as const;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A repository request's optional JSON body ({} when empty). */
function jsonBody(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null) return {};
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : String(body);
  if (text.trim() === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw err('SY_ERR_INVALID_JSON', `request body is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(v)) throw err('SY_ERR_BAD_REQUEST', 'request body must be a JSON object');
  return v;
}

export async function v2ExtensionRoutes(app: FastifyInstance, opts: V2ExtensionOptions): Promise<void> {
  const { inference, visible } = opts;
  // Bodies are optional and small: parsed here, so that an empty body with a JSON content type is accepted.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 1024 * 1024 }, (_req, body, done) => done(null, body));

  app.get('/v2/models/stats', (req, reply) => reply.send(inference.modelStatistics(undefined, undefined, (m) => visible(req, m))));
  const stats = (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply): FastifyReply =>
    reply.send(inference.modelStatistics(req.params.model, req.params.version));
  app.get('/v2/models/:model/stats', stats);
  app.get('/v2/models/:model/versions/:version/stats', stats);

  const config = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply): Promise<FastifyReply> =>
    reply.send(await inference.modelConfig(req.params.model, req.params.version));
  app.get('/v2/models/:model/config', config);
  app.get('/v2/models/:model/versions/:version/config', config);

  app.post('/v2/repository/index', (req, reply) => {
    const ready = jsonBody(req.body)['ready'];
    if (ready !== undefined && typeof ready !== 'boolean') throw err('SY_ERR_BAD_REQUEST', '"ready" must be a boolean');
    return reply.send(inference.repositoryIndex(ready === true, (m) => visible(req, m)));
  });
  app.post('/v2/repository/models/:model/load', async (req: FastifyRequest<{ Params: ModelParams }>, reply) => {
    const p = jsonBody(req.body)['parameters'];
    if (p !== undefined && !isObject(p)) throw err('SY_ERR_BAD_REQUEST', '"parameters" must be an object');
    // Loading with an override config or files is refused, not ignored: change the registered model instead.
    const unsupported = Object.keys(p ?? {}).filter((k) => k === 'config' || k.startsWith('file:'));
    if (unsupported.length > 0)
      throw err(
        'SY_ERR_BAD_REQUEST',
        `load parameters ${unsupported.join(', ')} are not supported: change the model's config or push a version through /api/v1/models instead`,
      );
    await inference.loadModel(req.params.model);
    return reply.send({});
  });
  app.post('/v2/repository/models/:model/unload', async (req: FastifyRequest<{ Params: ModelParams }>, reply) => {
    const p = jsonBody(req.body)['parameters'];
    if (p !== undefined && !isObject(p)) throw err('SY_ERR_BAD_REQUEST', '"parameters" must be an object');
    await inference.unloadModel(req.params.model);
    return reply.send({});
  });
}
