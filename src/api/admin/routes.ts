/**
 * @module
 * The registry admin API (`/api/v1`) as an encapsulated Fastify plugin: registered models, versions (upload,
 * archive, tags), aliases (including where an alias pointed at a past time), model tags and the event log.
 * Every route carries a JSON schema, so @fastify/swagger documents it (see `registerOpenApi`). Errors use the
 * server's `{"error": "...", "code": "SY_ERR_..."}` shape; validation failures are 400 SY_ERR_BAD_REQUEST naming the field. The acting user comes from
 * the `x-switchyard-actor` header ("anonymous" when absent) until authentication lands.
 *
 * Longer than our ~500-line guide on purpose: a route table: each registry route is a JSON schema (for validation
 * and OpenAPI) plus a short handler.
 */
import { pipeline, type Readable } from 'node:stream';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyRequest, FastifySchemaValidationError } from 'fastify';
import { err, isSwitchyardError } from '../../errors.js';
import { ALIAS_NAME, type Registry } from '../../registry/index.js';
import type { CreateModelInput, UpdateModelInput, VersionRecord } from '../../registry/index.js';
import * as S from './schemas.js';
import { ByteLimit, metaFromJson, metaFromQuery, multipartError, tooLarge, type UploadMeta, type UploadQuery } from './upload.js';

export { registerOpenApi, type OpenApiOptions } from './openapi.js';

export interface AdminOptions {
  registry: Registry;
  /** Live serving state per version of a model (state, resident bytes, …), shown as `serving` in the model detail. */
  serving?: (model: string) => Record<string, unknown>[];
  /** Largest accepted model artifact in bytes (default 2 GiB); larger uploads are answered 413. */
  maxArtifactBytes?: number;
  /** Tenancy: which models a request may see (lists and the event log are filtered) and may create. Default: all. */
  access?: {
    visible(req: FastifyRequest, model: string): boolean;
    /** Throws when the request may not create a model with this name. */
    checkCreate(req: FastifyRequest, name: string): void;
  };
}

export const DEFAULT_MAX_ARTIFACT_BYTES = 2 * 1024 ** 3;
export const ACTOR_HEADER = 'x-switchyard-actor';

const TAGS = ['registry'];

type NameP = { name: string };
type VersionP = { name: string; version: string };
type AliasP = { name: string; alias: string };
type EventsQ = { since?: string; until?: string; limit?: number };

/** The acting principal (see the tenancy gateway), else the x-switchyard-actor header, else "anonymous". */
export function actorOf(req: FastifyRequest): string {
  if (req.principal) return req.principal.actor;
  const h = req.headers[ACTOR_HEADER];
  const v = (Array.isArray(h) ? h[0] : h)?.trim();
  return v ? v : 'anonymous';
}

const ISO = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/** An ISO-8601 time as the registry stores it (UTC, milliseconds); a time without zone is UTC. */
export function isoTime(value: string, field: string): string {
  const v = value.trim();
  const m = ISO.exec(v);
  let ms = Number.NaN;
  if (m) {
    const hasZone = /(?:Z|[+-]\d{2}:?\d{2})$/i.test(v) && v.length > 10;
    ms = Date.parse(v.length > 10 && !hasZone ? `${v.replace(' ', 'T')}Z` : v.replace(' ', 'T'));
  }
  if (!Number.isFinite(ms)) throw err('SY_ERR_BAD_REQUEST', `query parameter "${field}" must be an ISO-8601 time such as 2025-01-31T12:00:00Z, got "${value}"`);
  return new Date(ms).toISOString();
}

function eventQuery(q: EventsQ, model?: string): { model?: string; since?: string; until?: string; limit?: number } {
  const out: { model?: string; since?: string; until?: string; limit?: number } = {};
  if (model !== undefined) out.model = model;
  if (q.since !== undefined) out.since = isoTime(q.since, 'since');
  if (q.until !== undefined) out.until = isoTime(q.until, 'until');
  if (q.limit !== undefined) out.limit = q.limit;
  return out;
}

/** Validation messages that name the field: `body.version must be integer`, `querystring.limit must be <= 10000`. */
function formatSchemaErrors(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const parts = errors.map((e) => {
    const path = e.instancePath.replace(/^\//, '').replace(/\//g, '.');
    const where = path ? `${dataVar}.${path}` : dataVar;
    const p = e.params as Record<string, unknown>;
    if (e.keyword === 'additionalProperties') return `${where} has unknown field "${String(p['additionalProperty'])}"`;
    if (e.keyword === 'required') return `${where}.${String(p['missingProperty'])} is required`;
    return `${where} ${e.message ?? 'is invalid'}`;
  });
  return err('SY_ERR_BAD_REQUEST', `invalid request: ${parts.join('; ')}`);
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  // fast-querystring's objects have a prototype whose own prototype is null.
  return proto === Object.prototype || proto === null || Object.getPrototypeOf(proto) === null;
};

const TYPE_OK: Record<string, (v: unknown) => boolean> = {
  string: (v) => typeof v === 'string',
  boolean: (v) => typeof v === 'boolean',
  integer: (v) => Number.isInteger(v),
  number: (v) => typeof v === 'number',
  object: isPlainObject,
};

/**
 * Strictness Fastify's default Ajv settings (removeAdditional, coerceTypes) do not give: unknown fields are an
 * error rather than silently dropped, and JSON body fields must have their declared type (no "true" → true).
 */
function checkStrict(value: unknown, schema: unknown, where: string, types: boolean): void {
  if (!isPlainObject(value) || !isPlainObject(schema)) return;
  const props = schema['properties'];
  if (!isPlainObject(props)) return;
  if (schema['additionalProperties'] === false) {
    for (const k of Object.keys(value)) {
      if (!Object.hasOwn(props, k))
        throw err('SY_ERR_BAD_REQUEST', `invalid request: ${where} has unknown field "${k}" (expected ${Object.keys(props).join(', ')})`);
    }
  }
  if (!types) return;
  for (const [k, v] of Object.entries(value)) {
    const p = props[k];
    const type = isPlainObject(p) ? p['type'] : undefined;
    const ok = typeof type === 'string' ? TYPE_OK[type] : undefined;
    if (ok && !ok(v)) throw err('SY_ERR_BAD_REQUEST', `invalid request: ${where}.${k} must be ${String(type)}`);
  }
}

/** Admin-API validation for an encapsulated plugin: errors that name the field, unknown fields refused, JSON types exact. */
export function strictValidation(app: FastifyInstance): void {
  app.setSchemaErrorFormatter(formatSchemaErrors);
  app.addHook('preValidation', async (req) => {
    const schema = req.routeOptions.schema;
    if (!schema) return;
    checkStrict(req.body, schema.body, 'body', true);
    checkStrict(req.query, schema.querystring, 'querystring', false);
  });
}

export async function adminRoutes(app: FastifyInstance, opts: AdminOptions): Promise<void> {
  const { registry } = opts;
  const maxBytes = opts.maxArtifactBytes ?? DEFAULT_MAX_ARTIFACT_BYTES;
  const visible = opts.access?.visible ?? (() => true);

  strictValidation(app);
  // Raw uploads: hand the request stream to the handler (no buffering here; the limit is enforced while streaming).
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
  await app.register(multipart, {
    throwFileSizeLimit: true,
    // One byte over the limit so ByteLimit (not a silent truncation) notices an oversized file.
    limits: { fileSize: maxBytes + 1, files: 1, fields: 4, fieldSize: 1024 * 1024, parts: 8 },
  });

  const resolve = (name: string, ref: string): Promise<VersionRecord> => registry.resolveVersion(name, ref);

  // ---- models ----

  app.get(
    '/api/v1/models',
    {
      schema: {
        tags: TAGS,
        summary: 'List registered models',
        response: { 200: { type: 'object', required: ['models'], properties: { models: { type: 'array', items: S.modelSchema } } }, ...S.errors() },
      },
    },
    async (req) => ({ models: (await registry.listModels()).filter((m) => visible(req, m.name)) }),
  );

  app.post<{ Body: CreateModelInput }>(
    '/api/v1/models',
    {
      schema: {
        tags: TAGS,
        summary: 'Register a model',
        headers: S.actorHeaders,
        body: S.createModelBody,
        response: { 201: S.modelSchema, ...S.errors(400, 409) },
      },
    },
    async (req, reply) => {
      opts.access?.checkCreate(req, req.body.name);
      return reply.code(201).send(await registry.createModel(req.body, actorOf(req)));
    },
  );

  app.get<{ Params: NameP }>(
    '/api/v1/models/:name',
    {
      schema: {
        tags: TAGS,
        summary: 'A model with its versions (and live serving state)',
        params: S.nameParams,
        response: { 200: S.modelDetailSchema, ...S.errors(404) },
      },
    },
    async (req) => {
      const { name } = req.params;
      const model = await registry.getModel(name);
      const versions = await registry.listVersions(name, { includeArchived: true });
      return { ...model, versions, ...(opts.serving ? { serving: opts.serving(name) } : {}) };
    },
  );

  app.patch<{ Params: NameP; Body: UpdateModelInput }>(
    '/api/v1/models/:name',
    {
      schema: {
        tags: TAGS,
        summary: 'Update a model',
        params: S.nameParams,
        headers: S.actorHeaders,
        body: S.updateModelBody,
        response: { 200: S.modelSchema, ...S.errors(400, 404) },
      },
    },
    async (req) => registry.updateModel(req.params.name, req.body, actorOf(req)),
  );

  app.delete<{ Params: NameP }>(
    '/api/v1/models/:name',
    {
      schema: {
        tags: TAGS,
        summary: 'Delete a model and its versions',
        params: S.nameParams,
        headers: S.actorHeaders,
        response: { 204: S.noContent, ...S.errors(404, 409) },
      },
    },
    async (req, reply) => {
      await registry.deleteModel(req.params.name, actorOf(req));
      return reply.code(204).send();
    },
  );

  // ---- versions ----

  app.get<{ Params: NameP; Querystring: { include_archived?: boolean } }>(
    '/api/v1/models/:name/versions',
    {
      schema: {
        tags: TAGS,
        summary: "List a model's versions",
        params: S.nameParams,
        querystring: S.listVersionsQuery,
        response: {
          200: { type: 'object', required: ['versions'], properties: { versions: { type: 'array', items: S.versionSchema } } },
          ...S.errors(400, 404),
        },
      },
    },
    async (req) => ({ versions: await registry.listVersions(req.params.name, { includeArchived: req.query.include_archived === true }) }),
  );

  app.post<{ Params: NameP; Querystring: UploadQuery }>(
    '/api/v1/models/:name/versions',
    {
      schema: {
        tags: TAGS,
        summary: 'Upload a new version',
        description:
          'Body: the ONNX file as `application/octet-stream` (metadata in the query string) or `multipart/form-data` with a `file` part ' +
          'and an optional `metadata` JSON field. The artifact is validated before anything is registered. Creates the model when it does not exist.',
        params: S.nameParams,
        headers: S.actorHeaders,
        querystring: S.uploadQuery,
        response: { 201: S.uploadedVersionSchema, ...S.errors(400, 404, 409, 413, 415) },
      },
      // An answer before the whole body was read (limit, bad metadata): close the connection rather than keep a
      // half-read request on it.
      onSend: async (req, reply) => {
        if (!req.raw.complete) reply.header('connection', 'close');
      },
      // The body is read by the handler (streamed); documented here for OpenAPI only.
      config: { swaggerTransform: ({ schema, url }) => ({ schema: { ...schema, body: S.uploadBodyDoc }, url }) },
    },
    async (req, reply) => {
      const name = req.params.name;
      const actor = actorOf(req);
      let pushed: VersionRecord;
      let meta: UploadMeta;
      if (req.isMultipart()) {
        ({ pushed, meta } = await pushMultipart(req, name, actor));
      } else if (req.body !== null && typeof req.body === 'object' && typeof (req.body as Readable).pipe === 'function') {
        meta = metaFromQuery(req.query);
        pushed = await pushRaw(req, req.body as Readable, name, meta, actor);
      } else {
        throw err(
          'SY_ERR_UNSUPPORTED_MEDIA',
          'upload the model as application/octet-stream (metadata in the query string) or multipart/form-data (fields "metadata" and "file")',
        );
      }
      if (meta.alias === null) return reply.code(201).send(pushed);
      await registry.setAlias(name, meta.alias, pushed.version, actor);
      return reply.code(201).send({ ...pushed, alias: meta.alias });
    },
  );

  /** Refuse a bad alias before anything is registered (the registry checks it again when setting it). */
  function checkUploadAlias(meta: UploadMeta): void {
    if (meta.alias !== null && !ALIAS_NAME.test(meta.alias)) {
      throw err('SY_ERR_BAD_REQUEST', `invalid alias ${JSON.stringify(meta.alias)}: must match ${ALIAS_NAME.source} (aliases are never numeric)`);
    }
  }

  async function pushRaw(req: FastifyRequest, source: Readable, name: string, meta: UploadMeta, actor: string): Promise<VersionRecord> {
    checkUploadAlias(meta);
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge(maxBytes);
    if (declared === 0) throw err('SY_ERR_BAD_REQUEST', 'request body is empty: send the ONNX model bytes');
    return pushLimited(source, name, meta, actor);
  }

  /** Stream `source` to the registry through the upload limit. */
  async function pushLimited(source: Readable, name: string, meta: UploadMeta, actor: string): Promise<VersionRecord> {
    const limiter = new ByteLimit(maxBytes);
    let sourceError: unknown = null;
    pipeline(source, limiter, (e) => {
      sourceError = e ?? null;
    });
    try {
      return await registry.pushVersion(name, limiter, meta.input, actor);
    } catch (e) {
      if (limiter.exceeded) throw tooLarge(maxBytes);
      // The body broke off or was malformed while streaming: the client's fault, not the registry's.
      if (sourceError !== null && !isSwitchyardError(e)) throw multipartError(sourceError);
      throw e;
    }
  }

  async function pushMultipart(req: FastifyRequest, name: string, actor: string): Promise<{ pushed: VersionRecord; meta: UploadMeta }> {
    let meta: UploadMeta | null = null;
    let pushed: VersionRecord | null = null;
    let buffered: Buffer | null = null;
    const parts = req.parts()[Symbol.asyncIterator]();
    try {
      for (;;) {
        let step: IteratorResult<Awaited<ReturnType<typeof parts.next>>['value']>;
        try {
          step = await parts.next();
        } catch (e) {
          throw multipartError(e);
        }
        if (step.done) break;
        const part = step.value;
        if (part.type === 'field') {
          if (part.fieldname !== 'metadata') throw err('SY_ERR_BAD_REQUEST', `unknown multipart field "${part.fieldname}" (expected "metadata" and "file")`);
          if (pushed) throw err('SY_ERR_BAD_REQUEST', 'multipart field "metadata" must come before "file"');
          if (meta) throw err('SY_ERR_BAD_REQUEST', 'multipart field "metadata" given twice');
          meta = metaFromJson(String(part.value));
          checkUploadAlias(meta);
          continue;
        }
        if (part.fieldname !== 'file') throw err('SY_ERR_BAD_REQUEST', `unknown multipart file part "${part.fieldname}" (expected "file")`);
        if (meta) {
          // Metadata already known: stream the file straight to the registry.
          pushed = await pushLimited(part.file, name, meta, actor);
        } else {
          // Metadata may follow: hold the file (bounded by the upload limit) until the body is read.
          const file: Buffer = await part.toBuffer().catch((e: unknown): never => {
            throw multipartError(e);
          });
          if (file.length > maxBytes) throw tooLarge(maxBytes);
          buffered = file;
        }
      }
    } catch (e) {
      if ((e as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw tooLarge(maxBytes);
      throw e;
    }
    meta ??= { input: {}, alias: null };
    if (!pushed) {
      if (!buffered) throw err('SY_ERR_BAD_REQUEST', 'multipart body has no "file" part with the ONNX model');
      pushed = await registry.pushVersion(name, buffered, meta.input, actor);
    }
    return { pushed, meta };
  }

  app.get<{ Params: VersionP }>(
    '/api/v1/models/:name/versions/:version',
    {
      schema: {
        tags: TAGS,
        summary: 'A version, by number or alias',
        params: S.versionParams,
        response: { 200: S.versionSchema, ...S.errors(404) },
      },
    },
    async (req) => resolve(req.params.name, req.params.version),
  );

  app.post<{ Params: VersionP }>(
    '/api/v1/models/:name/versions/:version/archive',
    {
      schema: {
        tags: TAGS,
        summary: 'Archive a version (kept, no longer listed or served)',
        params: S.versionParams,
        headers: S.actorHeaders,
        response: { 200: S.versionSchema, ...S.errors(404, 409) },
      },
    },
    async (req) => {
      const v = await resolve(req.params.name, req.params.version);
      return registry.archiveVersion(req.params.name, v.version, actorOf(req));
    },
  );

  app.put<{ Params: VersionP & { key: string }; Body: { value: string } }>(
    '/api/v1/models/:name/versions/:version/tags/:key',
    {
      schema: {
        tags: TAGS,
        summary: 'Set a version tag',
        params: S.versionTagParams,
        headers: S.actorHeaders,
        body: S.tagBody,
        response: { 200: S.versionSchema, ...S.errors(400, 404) },
      },
    },
    async (req) => {
      const { name, key } = req.params;
      const v = await resolve(name, req.params.version);
      await registry.setTag(name, v.version, key, req.body.value, actorOf(req));
      return registry.getVersion(name, v.version);
    },
  );

  app.delete<{ Params: VersionP & { key: string } }>(
    '/api/v1/models/:name/versions/:version/tags/:key',
    {
      schema: {
        tags: TAGS,
        summary: 'Remove a version tag',
        params: S.versionTagParams,
        headers: S.actorHeaders,
        response: { 204: S.noContent, ...S.errors(404) },
      },
    },
    async (req, reply) => {
      const { name, key } = req.params;
      const v = await resolve(name, req.params.version);
      await registry.removeTag(name, v.version, key, actorOf(req));
      return reply.code(204).send();
    },
  );

  // ---- aliases ----

  app.get<{ Params: NameP }>(
    '/api/v1/models/:name/aliases',
    {
      schema: {
        tags: TAGS,
        summary: "A model's aliases",
        params: S.nameParams,
        response: { 200: { type: 'object', required: ['aliases'], properties: { aliases: S.modelSchema.properties.aliases } }, ...S.errors(404) },
      },
    },
    async (req) => ({ aliases: (await registry.getModel(req.params.name)).aliases }),
  );

  app.put<{ Params: AliasP; Body: { version: number } }>(
    '/api/v1/models/:name/aliases/:alias',
    {
      schema: {
        tags: TAGS,
        summary: 'Point an alias at a version',
        params: S.aliasParams,
        headers: S.actorHeaders,
        body: S.aliasBody,
        response: {
          200: {
            type: 'object',
            required: ['alias', 'from', 'to'],
            properties: {
              alias: { type: 'string' },
              from: { type: ['integer', 'null'], description: 'Previous version (null when new).' },
              to: { type: 'integer' },
            },
          },
          ...S.errors(400, 404, 409),
        },
      },
    },
    async (req) => {
      const { name, alias } = req.params;
      const moved = await registry.setAlias(name, alias, req.body.version, actorOf(req));
      return { alias, from: moved.from, to: moved.to };
    },
  );

  app.delete<{ Params: AliasP }>(
    '/api/v1/models/:name/aliases/:alias',
    {
      schema: {
        tags: TAGS,
        summary: 'Remove an alias',
        params: S.aliasParams,
        headers: S.actorHeaders,
        response: { 204: S.noContent, ...S.errors(404) },
      },
    },
    async (req, reply) => {
      await registry.removeAlias(req.params.name, req.params.alias, actorOf(req));
      return reply.code(204).send();
    },
  );

  app.get<{ Params: AliasP; Querystring: { at?: string } }>(
    '/api/v1/models/:name/aliases/:alias',
    {
      schema: {
        tags: TAGS,
        summary: 'Where an alias points (now, or at a past time)',
        params: S.aliasParams,
        querystring: S.aliasAtQuery,
        response: {
          200: {
            type: 'object',
            required: ['alias', 'version', 'at'],
            properties: {
              alias: { type: 'string' },
              version: { type: ['integer', 'null'], description: 'null when the alias was unset at that time.' },
              at: { type: 'string', format: 'date-time' },
            },
          },
          ...S.errors(400, 404),
        },
      },
    },
    async (req) => {
      const { name, alias } = req.params;
      if (req.query.at === undefined) {
        const model = await registry.getModel(name);
        return { alias, version: Object.hasOwn(model.aliases, alias) ? (model.aliases[alias] ?? null) : null, at: new Date().toISOString() };
      }
      const at = isoTime(req.query.at, 'at');
      return { alias, version: await registry.aliasAt(name, alias, at), at };
    },
  );

  // ---- model tags ----

  app.put<{ Params: NameP & { key: string }; Body: { value: string } }>(
    '/api/v1/models/:name/tags/:key',
    {
      schema: {
        tags: TAGS,
        summary: 'Set a model tag',
        params: S.modelTagParams,
        headers: S.actorHeaders,
        body: S.tagBody,
        response: { 200: S.modelSchema, ...S.errors(400, 404) },
      },
    },
    async (req) => {
      const { name, key } = req.params;
      await registry.setTag(name, null, key, req.body.value, actorOf(req));
      return registry.getModel(name);
    },
  );

  app.delete<{ Params: NameP & { key: string } }>(
    '/api/v1/models/:name/tags/:key',
    {
      schema: {
        tags: TAGS,
        summary: 'Remove a model tag',
        params: S.modelTagParams,
        headers: S.actorHeaders,
        response: { 204: S.noContent, ...S.errors(404) },
      },
    },
    async (req, reply) => {
      await registry.removeTag(req.params.name, null, req.params.key, actorOf(req));
      return reply.code(204).send();
    },
  );

  // ---- events ----

  const eventsResponse = {
    200: { type: 'object', required: ['events'], properties: { events: { type: 'array', items: S.eventSchema } } },
    ...S.errors(400, 404),
  };

  app.get<{ Params: NameP; Querystring: EventsQ }>(
    '/api/v1/models/:name/events',
    {
      schema: { tags: TAGS, summary: "A model's event log", params: S.nameParams, querystring: S.modelEventsQuery, response: eventsResponse },
    },
    async (req) => ({ events: await registry.events(eventQuery(req.query, req.params.name)) }),
  );

  app.get<{ Querystring: EventsQ & { model?: string } }>(
    '/api/v1/events',
    {
      schema: { tags: TAGS, summary: 'The registry event log', querystring: S.eventsQuery, response: eventsResponse },
    },
    async (req) => {
      const model = req.query.model;
      if (model !== undefined && !visible(req, model)) return { events: [] };
      return { events: (await registry.events(eventQuery(req.query, model))).filter((e) => visible(req, e.model)) };
    },
  );
}
