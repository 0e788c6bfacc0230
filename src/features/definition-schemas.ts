/**
 * @module
 * Feature definition schemas: entities (typed join keys), feature views (pushed rows), windowed views
 * (sliding-window aggregations) and feature services (ordered features bound to a model version's inputs);
 * validation (zod, 400 naming each bad field) and canonical entity keys.
 */
import { z } from 'zod';
import { err } from '../errors.js';
import { MODEL_NAME } from '../registry/index.js';
import type {
  AggregationDef,
  DefinitionKind,
  EntityDef,
  EntityKey,
  FeatureDef,
  FeatureServiceDef,
  FeatureViewDef,
  ServiceFeature,
  ViewDef,
  WindowViewDef,
} from './types.js';

/** Names of entities, views, features, aggregations, services and join keys. */
export const DEF_NAME = /^[a-z][a-z0-9_]{0,62}$/;

/** Row fields with a meaning of their own in pushed rows and exports; no feature or join key may use them. */
export const RESERVED_FIELDS: readonly string[] = ['event_time', 'event_id', 'timestamp'];

export type AnyDefinition = EntityDef | ViewDef | FeatureServiceDef;
export type JoinKey = { readonly name: string; readonly type: 'string' | 'int64' };

const MAX_DESCRIPTION = 1024;
const MAX_TTL_SECONDS = 100 * 365 * 86_400;
const MAX_VALUE_TEXT = 1024;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

export const KIND_TEXT: Readonly<Record<DefinitionKind, string>> = { entity: 'entity', view: 'feature view', service: 'feature service' };

export function bad(message: string): never {
  throw err('SY_ERR_BAD_REQUEST', message);
}

// ---- schemas ----

const defName = z.string().regex(DEF_NAME, 'lowercase letters, digits and _, starting with a letter (at most 63)');
const description = z.string().max(MAX_DESCRIPTION).default('');
const valueType = z.enum(['int64', 'float64', 'float32', 'string', 'bool']);

export const entitySchema = z.strictObject({
  name: defName,
  description,
  /** The entity's identifying keys, in key order. */
  joinKeys: z
    .array(z.strictObject({ name: defName, type: z.enum(['string', 'int64']) }))
    .min(1)
    .max(8),
});

const entityNames = z.array(defName).min(1).max(8);

export const featureViewSchema = z.strictObject({
  kind: z.literal('view').default('view'),
  name: defName,
  description,
  entities: entityNames,
  features: z
    .array(z.strictObject({ name: defName, type: valueType, description: z.string().max(MAX_DESCRIPTION).optional() }))
    .min(1)
    .max(1000),
  /** Max age of an online value in seconds (by event time); 0 = no limit. */
  ttlSeconds: z.number().int().min(0).max(MAX_TTL_SECONDS).default(0),
  online: z.boolean().default(true),
  offline: z.boolean().default(true),
});

const streamText = z.string().min(1).max(256);

export const windowViewSchema = z.strictObject({
  kind: z.literal('window'),
  name: defName,
  description,
  entities: entityNames,
  aggregations: z
    .array(
      z.strictObject({
        name: defName,
        fn: z.enum(['count', 'sum', 'mean', 'min', 'max']),
        /** The numeric event field aggregated; required unless fn is count. */
        field: defName.optional(),
        window: z.enum(['5m', '1h', '24h']),
      }),
    )
    .min(1)
    .max(200),
  source: z
    .discriminatedUnion('type', [
      z.strictObject({ type: z.literal('nats'), stream: streamText, subject: streamText, durable: streamText }),
      z.strictObject({ type: z.literal('redis'), stream: streamText, group: streamText }),
    ])
    .optional(),
});

const featureValue = z.union([z.number(), z.string().max(MAX_VALUE_TEXT), z.boolean()]);

export const serviceSchema = z.strictObject({
  name: defName,
  description,
  features: z
    .array(
      z.strictObject({
        ref: z.string().regex(/^[a-z][a-z0-9_]{0,62}:[a-z][a-z0-9_]{0,62}$/, '"view:feature"'),
        /** The model input tensor the feature fills (its columns in service order). */
        input: z.string().min(1).max(256).optional(),
        default: featureValue.optional(),
      }),
    )
    .min(1)
    .max(1000),
  model: z.string().regex(MODEL_NAME, 'a registered model name').optional(),
  version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  onMissing: z.enum(['error', 'zero']).default('error'),
  staleIsMissing: z.boolean().default(true),
});

function issuesOf(error: z.ZodError): string {
  const out: string[] = [];
  for (const i of error.issues) {
    const at = i.path.map((p, n) => (typeof p === 'number' ? `[${p}]` : `${n === 0 ? '' : '.'}${String(p)}`)).join('');
    if (i.code === 'unrecognized_keys') for (const k of i.keys) out.push(`${at === '' ? k : `${at}.${k}`}: unknown field`);
    else out.push(`${at === '' ? '(definition)' : at}: ${i.message}`);
  }
  return out.join('; ');
}

function parseWith<S extends z.ZodType>(schema: S, v: unknown, what: string): z.output<S> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) bad(`invalid ${what}: must be a JSON object`);
  const r = schema.safeParse(v);
  if (!r.success) {
    const name = (v as Record<string, unknown>)['name'];
    bad(`invalid ${what}${typeof name === 'string' ? ` "${name}"` : ''}: ${issuesOf(r.error)}`);
  }
  return r.data;
}

function unique(names: readonly string[], what: string, where: string): void {
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) bad(`${where}: ${what} "${n}" appears twice`);
    seen.add(n);
  }
}

function reserved(names: readonly string[], what: string, where: string): void {
  for (const n of names)
    if (RESERVED_FIELDS.includes(n)) bad(`${where}: ${what} "${n}" is reserved (${RESERVED_FIELDS.join(', ')} have a meaning in pushed rows)`);
}

/** Validate an entity and fill defaults; 400 naming each bad field. */
export function parseEntity(v: unknown): EntityDef {
  const e = parseWith(entitySchema, v, 'entity');
  const where = `invalid entity "${e.name}"`;
  unique(
    e.joinKeys.map((k) => k.name),
    'join key',
    where,
  );
  reserved(
    e.joinKeys.map((k) => k.name),
    'join key',
    where,
  );
  return { name: e.name, description: e.description, joinKeys: e.joinKeys.map((k) => ({ name: k.name, type: k.type })) };
}

/** Validate a feature view (`kind` "view", the default) or a windowed view (`kind` "window"); 400 naming each bad field. */
export function parseView(v: unknown): ViewDef {
  const kind = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)['kind'] : undefined;
  if (kind === 'window') return parseWindowView(v);
  if (kind !== undefined && kind !== 'view') {
    const name = (v as Record<string, unknown>)['name'];
    bad(
      `invalid feature view${typeof name === 'string' ? ` "${name}"` : ''}: kind: must be "view" (pushed rows, the default) or "window" (sliding-window aggregations), got ${JSON.stringify(kind)}`,
    );
  }
  const p = parseWith(featureViewSchema, v, 'feature view');
  const where = `invalid feature view "${p.name}"`;
  unique(p.entities, 'entity', where);
  unique(
    p.features.map((f) => f.name),
    'feature',
    where,
  );
  reserved(
    p.features.map((f) => f.name),
    'feature',
    where,
  );
  const features: FeatureDef[] = p.features.map((f) =>
    f.description === undefined ? { name: f.name, type: f.type } : { name: f.name, type: f.type, description: f.description },
  );
  const out: FeatureViewDef = {
    kind: 'view',
    name: p.name,
    description: p.description,
    entities: [...p.entities],
    features,
    ttlSeconds: p.ttlSeconds,
    online: p.online,
    offline: p.offline,
  };
  return out;
}

function parseWindowView(v: unknown): WindowViewDef {
  const p = parseWith(windowViewSchema, v, 'windowed view');
  const where = `invalid windowed view "${p.name}"`;
  unique(p.entities, 'entity', where);
  unique(
    p.aggregations.map((a) => a.name),
    'aggregation',
    where,
  );
  reserved(
    p.aggregations.map((a) => a.name),
    'aggregation',
    where,
  );
  const aggregations: AggregationDef[] = p.aggregations.map((a, i) => {
    if (a.field === undefined) {
      if (a.fn !== 'count') bad(`${where}: aggregations[${i}].field: required for ${a.fn} (only count takes no field)`);
      return { name: a.name, fn: a.fn, window: a.window };
    }
    if (RESERVED_FIELDS.includes(a.field)) bad(`${where}: aggregations[${i}].field: "${a.field}" is reserved, not an event value`);
    return { name: a.name, fn: a.fn, field: a.field, window: a.window };
  });
  const out: WindowViewDef = { kind: 'window', name: p.name, description: p.description, entities: [...p.entities], aggregations };
  if (p.source === undefined) return out;
  const s = p.source;
  return {
    ...out,
    source:
      s.type === 'nats' ? { type: 'nats', stream: s.stream, subject: s.subject, durable: s.durable } : { type: 'redis', stream: s.stream, group: s.group },
  };
}

/** Validate a feature service (refs "view:feature", unique); 400 naming each bad field. */
export function parseService(v: unknown): FeatureServiceDef {
  const p = parseWith(serviceSchema, v, 'feature service');
  const where = `invalid feature service "${p.name}"`;
  unique(
    p.features.map((f) => f.ref),
    'feature',
    where,
  );
  if (p.version !== undefined && p.model === undefined) bad(`${where}: version: needs "model" (the model whose version the service is bound to)`);
  const features: ServiceFeature[] = p.features.map((f) => {
    const o: { ref: string; input?: string; default?: string | number | boolean } = { ref: f.ref };
    if (f.input !== undefined) o.input = f.input;
    if (f.default !== undefined) o.default = f.default;
    return o;
  });
  return {
    name: p.name,
    description: p.description,
    features,
    ...(p.model === undefined ? {} : { model: p.model }),
    ...(p.version === undefined ? {} : { version: p.version }),
    onMissing: p.onMissing,
    staleIsMissing: p.staleIsMissing,
  };
}

/** Validate a definition of a kind. */
export function parseDefinition(kind: DefinitionKind, v: unknown): AnyDefinition {
  if (kind === 'entity') return parseEntity(v);
  if (kind === 'view') return parseView(v);
  if (kind === 'service') return parseService(v);
  return bad(`unknown definition kind ${JSON.stringify(kind)} (entity, view or service)`);
}

// ---- entity keys ----

function int64Text(v: unknown): string | null {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? String(v) : null;
  if (typeof v === 'string' && /^[-+]?\d{1,19}$/.test(v.trim())) {
    const n = BigInt(v.trim());
    return n >= INT64_MIN && n <= INT64_MAX ? n.toString() : null;
  }
  if (typeof v === 'bigint') return v >= INT64_MIN && v <= INT64_MAX ? v.toString() : null;
  return null;
}

/**
 * The canonical entity key for join key values (order = the join keys' order): `k1=v1|k2=v2`, values
 * URI-encoded; int64 values as safe integers or integer strings (canonical decimal), strings non-empty.
 * Other fields of `values` are ignored. 400 naming the missing or bad key.
 */
export function entityKey(joinKeys: readonly JoinKey[], values: Readonly<Record<string, unknown>>): EntityKey {
  const parts: string[] = [];
  for (const k of joinKeys) {
    const v = Object.hasOwn(values, k.name) ? values[k.name] : undefined;
    if (v === undefined || v === null) bad(`join key "${k.name}" is missing (expected ${joinKeys.map((j) => j.name).join(', ')})`);
    let text: string | null;
    if (k.type === 'int64') {
      text = int64Text(v);
      if (text === null) bad(`join key "${k.name}" must be an int64 (a safe integer or an integer string), got ${JSON.stringify(v)}`);
    } else {
      // A number is taken as its decimal text (CSV entity dataframes type numeric-looking cells as numbers).
      const t = typeof v === 'number' && Number.isFinite(v) ? String(v) : v;
      if (typeof t !== 'string' || t.length === 0 || t.length > MAX_VALUE_TEXT)
        bad(`join key "${k.name}" must be a non-empty string (at most ${MAX_VALUE_TEXT} characters), got ${JSON.stringify(v)}`);
      text = t;
    }
    parts.push(`${k.name}=${encodeURIComponent(text)}`);
  }
  return parts.join('|');
}
