/**
 * @module
 * Feature store definitions in the admin API (`/api/v1/features/{entities,views,services}`): list, read, history,
 * create or update (PUT, a new revision unless unchanged), delete (refused while referenced). Reads are open to
 * any authenticated key; writes need a platform admin key. Bodies are validated by the definition parsers
 * (messages name each bad field); the JSON schemas here come from the same zod schemas and document the API.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { err } from '../../errors.js';
import { entitySchema, featureViewSchema, serviceSchema, windowViewSchema, type AnyDefinition, type DefinitionStore } from '../../features/index.js';
import type { DefinitionKind, DefinitionRecord, FeatureServiceDef } from '../../features/index.js';
import { actorOf, strictValidation } from './routes.js';
import * as S from './schemas.js';

export interface FeatureDefinitionOptions {
  readonly store: DefinitionStore;
  readonly access?: {
    /** Whether the request holds a platform admin key (writes need one). */
    platform(req: FastifyRequest): boolean;
    /** Whether the request may see a model; a service bound to a model it cannot see reads as absent. Default: all. */
    visible?(req: FastifyRequest, model: string): boolean;
  };
}

const TAGS = ['features'];

type Json = Record<string, unknown>;

/** A zod schema as draft-07 JSON Schema (no `$schema`). */
function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Json {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { target: 'draft-7', io }) as Json;
  return rest;
}

/** A definition's JSON Schema as a PUT body: `name` optional (the path names it). */
function bodyOf(schema: z.ZodType): Json {
  const s = jsonSchema(schema, 'input');
  const props = { ...(s['properties'] as Json) };
  props['name'] = { type: 'string', description: 'Optional: when present it must equal the name in the path.' };
  const required = (s['required'] as string[] | undefined)?.filter((r) => r !== 'name') ?? [];
  return { ...s, properties: props, required };
}

interface KindInfo {
  readonly kind: DefinitionKind;
  /** Path segment and parameter name. */
  readonly plural: string;
  readonly param: string;
  readonly text: string;
  readonly body: Json;
  readonly spec: Json;
}

const KINDS: readonly KindInfo[] = [
  {
    kind: 'entity',
    plural: 'entities',
    param: 'entity',
    text: 'entity',
    body: { ...bodyOf(entitySchema), description: 'An entity: what features are about, identified by typed join keys (in key order).' },
    spec: jsonSchema(entitySchema, 'output'),
  },
  {
    kind: 'view',
    plural: 'views',
    param: 'view',
    text: 'feature view',
    body: {
      description:
        'A feature view (`kind` "view", the default: pushed rows, latest value per entity online, history offline) or a windowed view (`kind` "window": sliding-window aggregations over events).',
      anyOf: [bodyOf(featureViewSchema), bodyOf(windowViewSchema)],
    },
    spec: { anyOf: [jsonSchema(featureViewSchema, 'output'), jsonSchema(windowViewSchema, 'output')] },
  },
  {
    kind: 'service',
    plural: 'services',
    param: 'service',
    text: 'feature service',
    body: {
      ...bodyOf(serviceSchema),
      description:
        'A feature service: an ordered list of features ("view:feature"), optionally bound to a model (and version) whose inputs it fills, with defaults for missing values.',
    },
    spec: jsonSchema(serviceSchema, 'output'),
  },
];

const recordProps = (spec: Json): Json => ({
  kind: { type: 'string', enum: ['entity', 'view', 'service'] },
  name: { type: 'string' },
  revision: { type: 'integer', description: 'Revision number (1, 2, …; a delete is a revision too).' },
  spec,
  createdBy: { type: 'string', description: 'Who made this revision.' },
  createdAt: { type: 'string', format: 'date-time' },
});

const RECORD_REQUIRED = ['kind', 'name', 'revision', 'spec', 'createdBy', 'createdAt'];

export async function featureDefinitionRoutes(app: FastifyInstance, opts: FeatureDefinitionOptions): Promise<void> {
  const { store } = opts;
  const platform = opts.access?.platform ?? (() => true);
  const visible = opts.access?.visible ?? (() => true);
  strictValidation(app);

  const requirePlatform = (req: FastifyRequest): void => {
    if (!platform(req)) throw err('SY_ERR_FORBIDDEN', 'feature definitions are managed with a platform admin key');
  };
  /** Whether the request may see this definition (a service bound to a model it cannot see is hidden). */
  const sees = (req: FastifyRequest, r: DefinitionRecord<AnyDefinition>): boolean => {
    if (r.kind !== 'service') return true;
    const model = (r.spec as FeatureServiceDef).model;
    return model === undefined || visible(req, model);
  };

  for (const k of KINDS) {
    const base = `/api/v1/features/${k.plural}`;
    const item = `${base}/:${k.param}`;
    const params = { type: 'object', required: [k.param], properties: { [k.param]: { type: 'string', description: `The ${k.text} name.` } } };
    const recordSchema = { type: 'object', description: `A ${k.text} revision.`, required: RECORD_REQUIRED, properties: recordProps(k.spec) };
    const notFound = (name: string): Error => err('SY_ERR_REGISTRY_NOT_FOUND', `no ${k.text} "${name}"`);
    type P = Record<string, string>;
    const nameOf = (req: FastifyRequest): string => (req.params as P)[k.param] ?? '';

    app.get(
      base,
      {
        schema: { tags: TAGS, summary: `Current ${k.plural}, by name`, response: { 200: { type: 'array', items: recordSchema }, ...S.errors(401) } },
      },
      async (req) => (await store.list(k.kind)).filter((r) => sees(req, r)),
    );

    app.get(
      item,
      {
        schema: { tags: TAGS, summary: `A ${k.text} (its current revision)`, params, response: { 200: recordSchema, ...S.errors(404) } },
      },
      async (req) => {
        const r = await store.get(k.kind, nameOf(req));
        if (!sees(req, r)) throw notFound(r.name);
        return r;
      },
    );

    app.get(
      `${item}/history`,
      {
        schema: {
          tags: TAGS,
          summary: `Every revision of a ${k.text}, oldest first (deletes included)`,
          params,
          response: {
            200: {
              type: 'array',
              items: {
                ...recordSchema,
                required: [...RECORD_REQUIRED, 'deleted'],
                properties: { ...recordProps(k.spec), deleted: { type: 'boolean', description: 'This revision deleted the definition (spec: the last one).' } },
              },
            },
            ...S.errors(404),
          },
        },
      },
      async (req) => {
        const h = await store.history(k.kind, nameOf(req));
        const last = h[h.length - 1];
        if (last !== undefined && !sees(req, last)) throw notFound(last.name);
        return h;
      },
    );

    app.put(
      item,
      {
        schema: {
          tags: TAGS,
          summary: `Create or update a ${k.text} (platform admin; a new revision unless unchanged)`,
          description: 'The name comes from the path. Created → 201, updated or unchanged → 200; `change` says which.',
          params,
          headers: S.actorHeaders,
          body: k.body,
          response: {
            200: {
              ...recordSchema,
              required: [...RECORD_REQUIRED, 'change'],
              properties: { ...recordProps(k.spec), change: { type: 'string', enum: ['created', 'updated', 'unchanged'] } },
            },
            201: {
              ...recordSchema,
              required: [...RECORD_REQUIRED, 'change'],
              properties: { ...recordProps(k.spec), change: { type: 'string', enum: ['created', 'updated', 'unchanged'] } },
            },
            ...S.errors(400, 403, 409),
          },
        },
        // The definition parsers validate the body (naming each bad field; no coercion, nothing dropped).
        validatorCompiler: () => () => true,
        onRequest: async (req) => requirePlatform(req),
      },
      async (req, reply) => {
        const name = nameOf(req);
        const body = req.body;
        if (body === null || typeof body !== 'object' || Array.isArray(body))
          throw err('SY_ERR_BAD_REQUEST', `invalid request: body must be a JSON object (the ${k.text} without its name)`);
        const b = body as Json;
        if (b['name'] !== undefined && b['name'] !== name) {
          throw err('SY_ERR_BAD_REQUEST', `invalid request: body.name ${JSON.stringify(b['name'])} does not match the ${k.text} name in the path ("${name}")`);
        }
        const r = await store.put(k.kind, { ...b, name }, actorOf(req));
        return reply.code(r.change === 'created' ? 201 : 200).send(r);
      },
    );

    app.delete(
      item,
      {
        schema: {
          tags: TAGS,
          summary: `Delete a ${k.text} (platform admin; refused while referenced)`,
          params,
          headers: S.actorHeaders,
          response: { 204: S.noContent, ...S.errors(403, 404, 409) },
        },
        onRequest: async (req) => requirePlatform(req),
      },
      async (req, reply) => {
        await store.delete(k.kind, nameOf(req), actorOf(req));
        return reply.code(204).send();
      },
    );
  }
}
