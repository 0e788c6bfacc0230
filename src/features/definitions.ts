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
import { err } from '../errors.js';
import { isUniqueViolation, iso } from '../storage/index.js';
import type { Database, DB, FeatureDefinitionsTable } from '../storage/index.js';
import { bad, KIND_TEXT, parseDefinition, type AnyDefinition } from './definition-schemas.js';
import { bindingClash, Catalog, serviceProblem, viewProblem, type FeatureCatalog } from './feature-catalog.js';
import type { DefinitionKind, DefinitionRecord, EntityDef, FeatureServiceDef, ViewDef } from './types.js';

export {
  DEF_NAME,
  RESERVED_FIELDS,
  entityKey,
  entitySchema,
  featureViewSchema,
  parseDefinition,
  parseEntity,
  parseService,
  parseView,
  serviceSchema,
  windowViewSchema,
} from './definition-schemas.js';
export type { AnyDefinition, JoinKey } from './definition-schemas.js';
export { aggregationType, buildCatalog } from './feature-catalog.js';
export type { FeatureCatalog } from './feature-catalog.js';

/** What a put did. */
export type DefinitionChange = 'created' | 'updated' | 'unchanged';
/** A put's result: the current record and what changed. */
export type PutResult = DefinitionRecord<AnyDefinition> & { readonly change: DefinitionChange };
/** A revision in a definition's history; `deleted` marks a delete. */
export type DefinitionRevision = DefinitionRecord<AnyDefinition> & { readonly deleted: boolean };

// ---- store ----

/** Canonical JSON (sorted keys) for comparing specs. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

function record(row: FeatureDefinitionsTable): DefinitionRecord<AnyDefinition> {
  return {
    kind: row.kind as DefinitionKind,
    name: row.name,
    revision: Number(row.revision),
    spec: JSON.parse(row.spec) as AnyDefinition,
    createdBy: row.created_by,
    createdAt: iso(Number(row.created_at)),
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
        kind,
        name: def.name,
        revision: (cur ? Number(cur.revision) : 0) + 1,
        spec: JSON.stringify(def),
        deleted: 0,
        created_by: actor,
        created_at: Date.now(),
      };
      await db.insertInto('feature_definitions').values(row).execute();
      return { ...record(row), change: cur && cur.deleted === 0 ? ('updated' as const) : ('created' as const) };
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
    const rows = await this.#db
      .selectFrom('feature_definitions')
      .selectAll()
      .where('kind', '=', checkKind(kind))
      .where('name', '=', name)
      .orderBy('revision')
      .execute();
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
      await db
        .insertInto('feature_definitions')
        .values({
          kind,
          name,
          revision: Number(cur.revision) + 1,
          spec: cur.spec,
          deleted: 1,
          created_by: actor,
          created_at: Date.now(),
        })
        .execute();
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
        throw err(
          'SY_ERR_REGISTRY_CONFLICT',
          `${KIND_TEXT.service} "${other.name}" is already bound to model "${s.model}"${s.version === undefined ? ' (every version)' : ` version ${s.version}`}`,
        );
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
    return db
      .selectFrom('feature_definitions')
      .selectAll()
      .where('kind', '=', kind)
      .where('name', '=', name)
      .orderBy('revision', 'desc')
      .limit(1)
      .executeTakeFirst();
  }

  /** Current (latest, not deleted) rows, of one kind or all, by kind then name: one statement. */
  async #current(db: Kysely<DB>, kind?: DefinitionKind): Promise<FeatureDefinitionsTable[]> {
    let latest = db
      .selectFrom('feature_definitions')
      .select(['kind', 'name'])
      .select((eb) => eb.fn.max('revision').as('rev'))
      .groupBy(['kind', 'name']);
    if (kind !== undefined) latest = latest.where('kind', '=', kind);
    return db
      .selectFrom('feature_definitions as d')
      .innerJoin(latest.as('m'), (j) => j.onRef('m.kind', '=', 'd.kind').onRef('m.name', '=', 'd.name').onRef('m.rev', '=', 'd.revision'))
      .selectAll('d')
      .where('d.deleted', '=', 0)
      .orderBy('d.kind')
      .orderBy('d.name')
      .execute();
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
