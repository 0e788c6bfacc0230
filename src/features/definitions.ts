/**
 * @module
 * Feature store definitions: entities (typed join keys), feature views (pushed rows) and windowed views
 * (sliding-window aggregations), and feature services (ordered features bound to a model version's inputs).
 * Validation (zod, 400 naming each bad field), canonical entity keys, the in-memory catalog the data plane
 * reads, and the versioned store in the metadata database: every change appends a revision to
 * `feature_definitions`; a delete appends a revision marked deleted.
 *
 * Writes are serialised (SQLite: `BEGIN IMMEDIATE`; Postgres: a transaction-scoped advisory lock per schema), so
 * reference checks see a stable catalog and two writers never take the same revision; a primary-key conflict
 * anyway (a writer that does not lock) is retried once, then answered 409.
 */
import { sql, type Kysely } from 'kysely';
import { z } from 'zod';
import { err } from '../errors.js';
import { isUniqueViolation, iso } from '../storage/index.js';
import { MODEL_NAME } from '../registry/index.js';
import type { Database, DB, FeatureDefinitionsTable } from '../storage/index.js';
import type {
  AggregationDef, DefinitionKind, DefinitionRecord, EntityDef, EntityKey, FeatureDef, FeatureRef, FeatureServiceDef, FeatureViewDef,
  ServiceFeature, ValueType, ViewDef, WindowViewDef,
} from './types.js';

/** Names of entities, views, features, aggregations, services and join keys. */
export const DEF_NAME = /^[a-z][a-z0-9_]{0,62}$/;

/** Row fields with a meaning of their own in pushed rows and exports; no feature or join key may use them. */
export const RESERVED_FIELDS: readonly string[] = ['event_time', 'event_id', 'timestamp'];

export type AnyDefinition = EntityDef | ViewDef | FeatureServiceDef;
export type JoinKey = { readonly name: string; readonly type: 'string' | 'int64' };

/** What a put did. */
export type DefinitionChange = 'created' | 'updated' | 'unchanged';
/** A put's result: the current record and what changed. */
export type PutResult = DefinitionRecord<AnyDefinition> & { readonly change: DefinitionChange };
/** A revision in a definition's history; `deleted` marks a delete. */
export type DefinitionRevision = DefinitionRecord<AnyDefinition> & { readonly deleted: boolean };

const MAX_DESCRIPTION = 1024;
const MAX_TTL_SECONDS = 100 * 365 * 86_400;
const MAX_VALUE_TEXT = 1024;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

const KIND_TEXT: Readonly<Record<DefinitionKind, string>> = { entity: 'entity', view: 'feature view', service: 'feature service' };

function bad(message: string): never {
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
  joinKeys: z.array(z.strictObject({ name: defName, type: z.enum(['string', 'int64']) })).min(1).max(8),
});

const entityNames = z.array(defName).min(1).max(8);

export const featureViewSchema = z.strictObject({
  kind: z.literal('view').default('view'),
  name: defName,
  description,
  entities: entityNames,
  features: z.array(z.strictObject({ name: defName, type: valueType, description: z.string().max(MAX_DESCRIPTION).optional() })).min(1).max(1000),
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
  aggregations: z.array(z.strictObject({
    name: defName,
    fn: z.enum(['count', 'sum', 'mean', 'min', 'max']),
    /** The numeric event field aggregated; required unless fn is count. */
    field: defName.optional(),
    window: z.enum(['5m', '1h', '24h']),
  })).min(1).max(200),
  source: z.discriminatedUnion('type', [
    z.strictObject({ type: z.literal('nats'), stream: streamText, subject: streamText, durable: streamText }),
    z.strictObject({ type: z.literal('redis'), stream: streamText, group: streamText }),
  ]).optional(),
});

const featureValue = z.union([z.number(), z.string().max(MAX_VALUE_TEXT), z.boolean()]);

export const serviceSchema = z.strictObject({
  name: defName,
  description,
  features: z.array(z.strictObject({
    ref: z.string().regex(/^[a-z][a-z0-9_]{0,62}:[a-z][a-z0-9_]{0,62}$/, '"view:feature"'),
    /** The model input tensor the feature fills (its columns in service order). */
    input: z.string().min(1).max(256).optional(),
    default: featureValue.optional(),
  })).min(1).max(1000),
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
  for (const n of names) if (RESERVED_FIELDS.includes(n)) bad(`${where}: ${what} "${n}" is reserved (${RESERVED_FIELDS.join(', ')} have a meaning in pushed rows)`);
}

/** Validate an entity and fill defaults; 400 naming each bad field. */
export function parseEntity(v: unknown): EntityDef {
  const e = parseWith(entitySchema, v, 'entity');
  const where = `invalid entity "${e.name}"`;
  unique(e.joinKeys.map((k) => k.name), 'join key', where);
  reserved(e.joinKeys.map((k) => k.name), 'join key', where);
  return { name: e.name, description: e.description, joinKeys: e.joinKeys.map((k) => ({ name: k.name, type: k.type })) };
}

/** Validate a feature view (`kind` "view", the default) or a windowed view (`kind` "window"); 400 naming each bad field. */
export function parseView(v: unknown): ViewDef {
  const kind = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)['kind'] : undefined;
  if (kind === 'window') return parseWindowView(v);
  if (kind !== undefined && kind !== 'view') {
    const name = (v as Record<string, unknown>)['name'];
    bad(`invalid feature view${typeof name === 'string' ? ` "${name}"` : ''}: kind: must be "view" (pushed rows, the default) or "window" (sliding-window aggregations), got ${JSON.stringify(kind)}`);
  }
  const p = parseWith(featureViewSchema, v, 'feature view');
  const where = `invalid feature view "${p.name}"`;
  unique(p.entities, 'entity', where);
  unique(p.features.map((f) => f.name), 'feature', where);
  reserved(p.features.map((f) => f.name), 'feature', where);
  const features: FeatureDef[] = p.features.map((f) => (f.description === undefined ? { name: f.name, type: f.type } : { name: f.name, type: f.type, description: f.description }));
  const out: FeatureViewDef = {
    kind: 'view', name: p.name, description: p.description, entities: [...p.entities], features,
    ttlSeconds: p.ttlSeconds, online: p.online, offline: p.offline,
  };
  return out;
}

function parseWindowView(v: unknown): WindowViewDef {
  const p = parseWith(windowViewSchema, v, 'windowed view');
  const where = `invalid windowed view "${p.name}"`;
  unique(p.entities, 'entity', where);
  unique(p.aggregations.map((a) => a.name), 'aggregation', where);
  reserved(p.aggregations.map((a) => a.name), 'aggregation', where);
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
    source: s.type === 'nats' ? { type: 'nats', stream: s.stream, subject: s.subject, durable: s.durable } : { type: 'redis', stream: s.stream, group: s.group },
  };
}

/** Validate a feature service (refs "view:feature", unique); 400 naming each bad field. */
export function parseService(v: unknown): FeatureServiceDef {
  const p = parseWith(serviceSchema, v, 'feature service');
  const where = `invalid feature service "${p.name}"`;
  unique(p.features.map((f) => f.ref), 'feature', where);
  if (p.version !== undefined && p.model === undefined) bad(`${where}: version: needs "model" (the model whose version the service is bound to)`);
  const features: ServiceFeature[] = p.features.map((f) => {
    const o: { ref: string; input?: string; default?: string | number | boolean } = { ref: f.ref };
    if (f.input !== undefined) o.input = f.input;
    if (f.default !== undefined) o.default = f.default;
    return o;
  });
  return {
    name: p.name, description: p.description, features,
    ...(p.model === undefined ? {} : { model: p.model }),
    ...(p.version === undefined ? {} : { version: p.version }),
    onMissing: p.onMissing, staleIsMissing: p.staleIsMissing,
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
      if (typeof t !== 'string' || t.length === 0 || t.length > MAX_VALUE_TEXT) bad(`join key "${k.name}" must be a non-empty string (at most ${MAX_VALUE_TEXT} characters), got ${JSON.stringify(v)}`);
      text = t;
    }
    parts.push(`${k.name}=${encodeURIComponent(text)}`);
  }
  return parts.join('|');
}

// ---- catalog ----

/** An in-memory, consistent snapshot of every current definition: what the data plane reads (never the database per request). */
export interface FeatureCatalog {
  readonly entities: ReadonlyMap<string, EntityDef>;
  readonly views: ReadonlyMap<string, ViewDef>;
  readonly services: ReadonlyMap<string, FeatureServiceDef>;
  /** The join keys of a view (its entities' join keys, in order); 400 for an unknown view. */
  joinKeys(view: string): readonly JoinKey[];
  /** Resolve a feature ref to its view and feature (or aggregation) definition; 400 naming the ref when unknown. */
  resolve(ref: FeatureRef): { view: ViewDef; feature: string; type: ValueType };
  /** The service bound to a model version: version-specific binding first, else a model-wide one; undefined when none. */
  serviceFor(model: string, version: number): FeatureServiceDef | undefined;
}

/** The value type of a windowed view's aggregation: count is int64, the others float64. */
export const aggregationType = (a: AggregationDef): ValueType => (a.fn === 'count' ? 'int64' : 'float64');

class Catalog implements FeatureCatalog {
  readonly entities: ReadonlyMap<string, EntityDef>;
  readonly views: ReadonlyMap<string, ViewDef>;
  readonly services: ReadonlyMap<string, FeatureServiceDef>;
  readonly #keys = new Map<string, readonly JoinKey[] | string>();
  readonly #bindings = new Map<string, { all?: FeatureServiceDef; byVersion: Map<number, FeatureServiceDef> }>();

  constructor(entities: readonly EntityDef[], views: readonly ViewDef[], services: readonly FeatureServiceDef[]) {
    this.entities = new Map(entities.map((e) => [e.name, e]));
    this.views = new Map(views.map((v) => [v.name, v]));
    this.services = new Map(services.map((s) => [s.name, s]));
    for (const v of views) {
      const keys: JoinKey[] = [];
      let missing: string | null = null;
      for (const e of v.entities) {
        const ent = this.entities.get(e);
        if (ent === undefined) missing ??= `feature view "${v.name}" names entity "${e}", which is not defined`;
        else keys.push(...ent.joinKeys);
      }
      this.#keys.set(v.name, missing ?? keys);
    }
    for (const s of [...services].sort((a, b) => a.name.localeCompare(b.name))) {
      if (s.model === undefined) continue;
      let b = this.#bindings.get(s.model);
      if (!b) this.#bindings.set(s.model, b = { byVersion: new Map() });
      if (s.version === undefined) b.all ??= s;
      else if (!b.byVersion.has(s.version)) b.byVersion.set(s.version, s);
    }
  }

  joinKeys(view: string): readonly JoinKey[] {
    const k = this.#keys.get(view);
    if (k === undefined) bad(`unknown feature view "${view}"`);
    if (typeof k === 'string') bad(k);
    return k;
  }

  resolve(ref: FeatureRef): { view: ViewDef; feature: string; type: ValueType } {
    const i = typeof ref === 'string' ? ref.indexOf(':') : -1;
    if (i <= 0 || i === ref.length - 1) bad(`invalid feature reference ${JSON.stringify(ref)}: expected "view:feature"`);
    const viewName = ref.slice(0, i);
    const feature = ref.slice(i + 1);
    const view = this.views.get(viewName);
    if (view === undefined) bad(`unknown feature "${ref}": no feature view "${viewName}"`);
    if (view.kind === 'view') {
      const f = view.features.find((x) => x.name === feature);
      if (f === undefined) bad(`unknown feature "${ref}": feature view "${viewName}" has no feature "${feature}"`);
      return { view, feature, type: f.type };
    }
    const a = view.aggregations.find((x) => x.name === feature);
    if (a === undefined) bad(`unknown feature "${ref}": windowed view "${viewName}" has no aggregation "${feature}"`);
    return { view, feature, type: aggregationType(a) };
  }

  serviceFor(model: string, version: number): FeatureServiceDef | undefined {
    const b = this.#bindings.get(model);
    return b === undefined ? undefined : b.byVersion.get(version) ?? b.all;
  }
}

/** A catalog of these definitions (no reference checks: unknown entities make `joinKeys` of their views fail). */
export function buildCatalog(defs: { entities?: readonly EntityDef[]; views?: readonly ViewDef[]; services?: readonly FeatureServiceDef[] }): FeatureCatalog {
  return new Catalog(defs.entities ?? [], defs.views ?? [], defs.services ?? []);
}

// ---- reference checks ----

/** Why a view does not fit the catalog (unknown entity, clashing join keys or feature names), or null. */
function viewProblem(v: ViewDef, c: FeatureCatalog): string | null {
  const keys: string[] = [];
  for (const e of v.entities) {
    const ent = c.entities.get(e);
    if (ent === undefined) return `unknown entity "${e}"`;
    for (const k of ent.joinKeys) {
      if (keys.includes(k.name)) return `join key "${k.name}" comes from two of its entities (${v.entities.join(', ')})`;
      keys.push(k.name);
    }
  }
  const names = v.kind === 'view' ? v.features.map((f) => f.name) : [...v.aggregations.map((a) => a.name), ...v.aggregations.flatMap((a) => (a.field === undefined ? [] : [a.field]))];
  const clash = names.find((n) => keys.includes(n));
  if (clash !== undefined) return `"${clash}" is both a join key and a ${v.kind === 'view' ? 'feature' : 'aggregation or event field'}`;
  return null;
}

function defaultFits(value: string | number | boolean, type: ValueType): boolean {
  switch (type) {
    case 'int64': return typeof value === 'number' && Number.isSafeInteger(value);
    case 'float32':
    case 'float64': return typeof value === 'number';
    case 'string': return typeof value === 'string';
    case 'bool': return typeof value === 'boolean';
  }
}

/** Why a service does not fit the catalog (unknown ref, default of the wrong type, mixed input types), or null. */
function serviceProblem(s: FeatureServiceDef, c: FeatureCatalog): string | null {
  const inputs = new Map<string, { ref: string; text: boolean }>();
  for (const f of s.features) {
    let type: ValueType;
    try {
      type = c.resolve(f.ref).type;
    } catch (e) {
      return (e as Error).message;
    }
    if (f.default !== undefined && !defaultFits(f.default, type)) return `the default of "${f.ref}" (${JSON.stringify(f.default)}) is not a ${type}`;
    if (f.input !== undefined) {
      const text = type === 'string';
      const other = inputs.get(f.input);
      if (other !== undefined && other.text !== text) return `input "${f.input}" mixes a string feature with a non-string one ("${other.ref}", "${f.ref}")`;
      inputs.set(f.input, other ?? { ref: f.ref, text });
    }
  }
  return null;
}

/** The service already bound to the same model and version (or model-wide), if another one is. */
function bindingClash(s: FeatureServiceDef, c: FeatureCatalog): FeatureServiceDef | undefined {
  if (s.model === undefined) return undefined;
  for (const o of c.services.values()) if (o.name !== s.name && o.model === s.model && o.version === s.version) return o;
  return undefined;
}

// ---- store ----

/** Canonical JSON (sorted keys) for comparing specs. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

function record(row: FeatureDefinitionsTable): DefinitionRecord<AnyDefinition> {
  return {
    kind: row.kind as DefinitionKind, name: row.name, revision: Number(row.revision), spec: JSON.parse(row.spec) as AnyDefinition,
    createdBy: row.created_by, createdAt: iso(Number(row.created_at)),
  };
}

const notFound = (kind: DefinitionKind, name: string): Error => err('SY_ERR_REGISTRY_NOT_FOUND', `no ${KIND_TEXT[kind]} "${name}"`);

function checkKind(kind: unknown): DefinitionKind {
  if (kind !== 'entity' && kind !== 'view' && kind !== 'service') bad(`unknown definition kind ${JSON.stringify(kind)} (entity, view or service)`);
  return kind;
}

/** Advisory lock key (first half) for definition writes on Postgres; the second half is the schema's hash. */
const PG_LOCK_KEY = 0x5359_4644; // "SYFD"

export interface DefinitionStoreOptions {
  /** Called after every successful write (the server re-reads the catalog and tells replicas); awaited, so a write is served as soon as it is answered; must not throw. */
  onChange?: () => void | Promise<void>;
}

/** Versioned feature definitions in the metadata store. */
export class DefinitionStore {
  readonly #database: Database;
  readonly #db: Kysely<DB>;
  readonly #onChange: () => void | Promise<void>;

  constructor(database: Database, opts: DefinitionStoreOptions = {}) {
    this.#database = database;
    this.#db = database.db;
    this.#onChange = opts.onChange ?? (() => undefined);
  }

  /**
   * Create or update a definition: validated (400), references checked (a view's entities and a service's
   * features exist, 400; a change that breaks a referrer, or a second service bound to the same model
   * version, 409), appended as a new revision. An unchanged spec appends nothing (`change: "unchanged"`).
   */
  async put(kind: DefinitionKind, spec: unknown, actor: string): Promise<PutResult> {
    const def = parseDefinition(checkKind(kind), spec);
    const result = await this.#write(async (db) => {
      const cur = await this.#latest(db, kind, def.name);
      if (cur && cur.deleted === 0 && canonical(JSON.parse(cur.spec)) === canonical(def)) return { ...record(cur), change: 'unchanged' as const };
      const catalog = await this.#catalogOf(db);
      this.#checkPut(kind, def, catalog);
      const row: FeatureDefinitionsTable = {
        kind, name: def.name, revision: (cur ? Number(cur.revision) : 0) + 1, spec: JSON.stringify(def), deleted: 0, created_by: actor, created_at: Date.now(),
      };
      await db.insertInto('feature_definitions').values(row).execute();
      return { ...record(row), change: cur && cur.deleted === 0 ? 'updated' as const : 'created' as const };
    });
    if (result.change !== 'unchanged') await this.#onChange();
    return result;
  }

  /** The current definition; 404 when absent or deleted. */
  async get(kind: DefinitionKind, name: string): Promise<DefinitionRecord<AnyDefinition>> {
    const cur = await this.#latest(this.#db, checkKind(kind), name);
    if (!cur || cur.deleted !== 0) throw notFound(kind, name);
    return record(cur);
  }

  /** Current definitions of a kind (deleted ones left out), by name. */
  async list(kind: DefinitionKind): Promise<DefinitionRecord<AnyDefinition>[]> {
    return (await this.#current(this.#db, checkKind(kind))).map(record);
  }

  /** Every revision of a definition, oldest first, deletes included (marked); 404 when it never existed. */
  async history(kind: DefinitionKind, name: string): Promise<DefinitionRevision[]> {
    const rows = await this.#db.selectFrom('feature_definitions').selectAll()
      .where('kind', '=', checkKind(kind)).where('name', '=', name).orderBy('revision').execute();
    if (rows.length === 0) throw notFound(kind, name);
    return rows.map((r) => ({ ...record(r), deleted: r.deleted !== 0 }));
  }

  /** Delete a definition (a revision marked deleted, holding the last spec); 404 when absent, 409 while referenced. */
  async delete(kind: DefinitionKind, name: string, actor: string): Promise<void> {
    checkKind(kind);
    await this.#write(async (db) => {
      const cur = await this.#latest(db, kind, name);
      if (!cur || cur.deleted !== 0) throw notFound(kind, name);
      const catalog = await this.#catalogOf(db);
      if (kind === 'entity') {
        const v = [...catalog.views.values()].find((x) => x.entities.includes(name));
        if (v) throw err('SY_ERR_REGISTRY_CONFLICT', `entity "${name}" is used by ${KIND_TEXT.view} "${v.name}"; delete or change that first`);
      } else if (kind === 'view') {
        const s = [...catalog.services.values()].find((x) => x.features.some((f) => f.ref.startsWith(`${name}:`)));
        if (s) throw err('SY_ERR_REGISTRY_CONFLICT', `feature view "${name}" is used by ${KIND_TEXT.service} "${s.name}"; delete or change that first`);
      }
      await db.insertInto('feature_definitions').values({
        kind, name, revision: Number(cur.revision) + 1, spec: cur.spec, deleted: 1, created_by: actor, created_at: Date.now(),
      }).execute();
    });
    await this.#onChange();
  }

  /** One consistent read of every current definition. */
  async catalog(): Promise<FeatureCatalog> {
    return this.#catalogOf(this.#db);
  }

  // ---- internals ----

  #checkPut(kind: DefinitionKind, def: AnyDefinition, catalog: FeatureCatalog): void {
    const what = `${KIND_TEXT[kind]} "${def.name}"`;
    const entities = new Map(catalog.entities);
    const views = new Map(catalog.views);
    const services = new Map(catalog.services);
    if (kind === 'entity') entities.set(def.name, def as EntityDef);
    else if (kind === 'view') views.set(def.name, def as ViewDef);
    else services.set(def.name, def as FeatureServiceDef);
    const next = new Catalog([...entities.values()], [...views.values()], [...services.values()]);
    if (kind === 'view') {
      const p = viewProblem(def as ViewDef, next);
      if (p !== null) bad(`invalid ${what}: ${p}`);
    } else if (kind === 'service') {
      const s = def as FeatureServiceDef;
      const p = serviceProblem(s, next);
      if (p !== null) bad(`invalid ${what}: ${p}`);
      const other = bindingClash(s, next);
      if (other) {
        throw err('SY_ERR_REGISTRY_CONFLICT', `${KIND_TEXT.service} "${other.name}" is already bound to model "${s.model}"${s.version === undefined ? ' (every version)' : ` version ${s.version}`}`);
      }
    }
    // What refers to the changed definition must still fit.
    if (kind === 'entity') {
      const prev = catalog.entities.get(def.name);
      for (const v of views.values()) {
        if (!v.entities.includes(def.name)) continue;
        if (prev && canonical(prev.joinKeys) !== canonical((def as EntityDef).joinKeys)) {
          throw err('SY_ERR_REGISTRY_CONFLICT', `entity "${def.name}" is used by ${KIND_TEXT.view} "${v.name}": its join keys cannot change while it is`);
        }
        const p = viewProblem(v, next);
        if (p !== null) throw err('SY_ERR_REGISTRY_CONFLICT', `entity "${def.name}" is used by ${KIND_TEXT.view} "${v.name}": ${p}`);
      }
    } else if (kind === 'view') {
      for (const s of services.values()) {
        if (!s.features.some((f) => f.ref.startsWith(`${def.name}:`))) continue;
        const p = serviceProblem(s, next);
        if (p !== null) throw err('SY_ERR_REGISTRY_CONFLICT', `feature view "${def.name}" is used by ${KIND_TEXT.service} "${s.name}": ${p}`);
      }
    }
  }

  /** The latest revision of a definition (deleted or not), or undefined. */
  async #latest(db: Kysely<DB>, kind: DefinitionKind, name: string): Promise<FeatureDefinitionsTable | undefined> {
    return db.selectFrom('feature_definitions').selectAll()
      .where('kind', '=', kind).where('name', '=', name).orderBy('revision', 'desc').limit(1).executeTakeFirst();
  }

  /** Current (latest, not deleted) rows, of one kind or all, by kind then name: one statement. */
  async #current(db: Kysely<DB>, kind?: DefinitionKind): Promise<FeatureDefinitionsTable[]> {
    let latest = db.selectFrom('feature_definitions').select(['kind', 'name']).select((eb) => eb.fn.max('revision').as('rev')).groupBy(['kind', 'name']);
    if (kind !== undefined) latest = latest.where('kind', '=', kind);
    return db.selectFrom('feature_definitions as d')
      .innerJoin(latest.as('m'), (j) => j.onRef('m.kind', '=', 'd.kind').onRef('m.name', '=', 'd.name').onRef('m.rev', '=', 'd.revision'))
      .selectAll('d').where('d.deleted', '=', 0).orderBy('d.kind').orderBy('d.name').execute();
  }

  async #catalogOf(db: Kysely<DB>): Promise<FeatureCatalog> {
    const entities: EntityDef[] = [];
    const views: ViewDef[] = [];
    const services: FeatureServiceDef[] = [];
    for (const row of await this.#current(db)) {
      const spec = JSON.parse(row.spec) as AnyDefinition;
      if (row.kind === 'entity') entities.push(spec as EntityDef);
      else if (row.kind === 'view') views.push(spec as ViewDef);
      else if (row.kind === 'service') services.push(spec as FeatureServiceDef);
    }
    return new Catalog(entities, views, services);
  }

  /** Run a write serialised with every other definition write; a primary-key conflict is retried once, then 409. */
  async #write<T>(fn: (db: Kysely<DB>) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#locked(fn);
      } catch (e) {
        if (!isUniqueViolation(e)) throw e;
        if (attempt > 0) throw err('SY_ERR_REGISTRY_CONFLICT', 'a concurrent change to the same feature definition won; retry', { cause: e });
      }
    }
  }

  async #locked<T>(fn: (db: Kysely<DB>) => Promise<T>): Promise<T> {
    if (this.#database.dialect === 'postgres') {
      const schema = this.#database.schema ?? 'public';
      return this.#db.transaction().execute(async (tx) => {
        await sql`select pg_advisory_xact_lock(${PG_LOCK_KEY}, hashtext(${schema}))`.execute(tx);
        return fn(tx);
      });
    }
    // SQLite: take the write lock up front, so a second connection cannot read the same latest revision.
    return this.#db.connection().execute(async (conn) => {
      await sql`begin immediate`.execute(conn);
      try {
        const r = await fn(conn);
        await sql`commit`.execute(conn);
        return r;
      } catch (e) {
        await sql`rollback`.execute(conn).catch(() => undefined);
        throw e;
      }
    });
  }
}
