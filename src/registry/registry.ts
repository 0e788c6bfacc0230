/**
 * @module
 * The persisted model registry: registered models, versions, aliases and tags in the metadata store, every
 * change appended to the event log in the same transaction, artifacts in a content-addressed store. Listeners
 * (`onChange`) hear each event after commit — on Postgres also those appended by other processes (LISTEN).
 *
 * Longer than our ~500-line guide on purpose: the registry's write operations share one transaction-and-event-log
 * pattern; reads and routing checks already live in queries.ts.
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { err } from '../errors.js';
import { parseRoutingPolicy } from './routing-policy.js';
import { type Database, type Dialect, isUniqueViolation, openDatabase, PgChannel, type VersionsTable } from '../storage/index.js';
import { type ArtifactLease, LocalArtifactStore, type ArtifactStore } from './artifacts.js';
import {
  checkRoutingTargets,
  inTransaction,
  insertModel,
  lockModel,
  readAlias,
  readAliasAt,
  readEvents,
  readEventsById,
  readEventsAfter,
  readLastEventId,
  readModel,
  readModels,
  readSnapshot,
  readVersionRow,
  notFound,
  type Db,
} from './queries.js';
import {
  checkAlias,
  checkConfig,
  checkLoadPolicy,
  checkModelName,
  checkStatus,
  checkStringMap,
  checkTagKey,
  checkText,
  checkVersionNumber,
  eventRecord,
  newModelRow,
  parseTime,
  versionMetaColumns,
  versionRecord,
} from './records.js';
import type {
  ArtifactInspector,
  CreateModelInput,
  EventQuery,
  EventType,
  ModelRecord,
  PushVersionInput,
  RegistryEvent,
  RegistrySnapshot,
  UpdateModelInput,
  VersionRecord,
  VersionStatus,
} from './types.js';

export interface RegistryOptions {
  databaseUrl: string;
  artifactDir: string;
  inspect: ArtifactInspector;
  logger?: Logger;
  /** Another artifact backend; default a LocalArtifactStore on `artifactDir`. */
  artifactStore?: ArtifactStore;
  /** Largest artifact accepted by pushVersion, in bytes. Default unlimited. */
  maxArtifactBytes?: number;
  /** Postgres: longest a connection attempt or one statement may take, in ms (then 503). Default 5000. */
  databaseTimeoutMs?: number;
}

/** `message` with `path` and any other absolute file path replaced by "<artifact>" / "<path>". */
function withoutPaths(message: string, path: string): string {
  return message
    .split(path)
    .join('<artifact>')
    .replace(/(?:[A-Za-z]:)?(?:[\\/][\w.@+-]+){2,}/g, '<path>');
}

/** Event ids handed to listeners, remembered to re-read missed ones without repeating any (bounded). */
const MAX_RECENT_EVENTS = 10_000;

type NewEvent = {
  model: string;
  type: EventType;
  version?: number | null;
  alias?: string | null;
  fromVersion?: number | null;
  toVersion?: number | null;
  key?: string | null;
  value?: string | null;
};
type Append = (e: NewEvent) => Promise<void>;

/** Postgres channel on which registry transactions announce their event ids to other replicas. */
export const NOTIFY_CHANNEL = 'switchyard_registry';

export class Registry {
  readonly dialect: Dialect;
  readonly #database: Database;
  readonly #store: ArtifactStore;
  readonly #inspect: ArtifactInspector;
  readonly #logger: Logger | undefined;
  readonly #maxBytes: number | undefined;
  readonly #listeners = new Set<(e: RegistryEvent) => void>();
  #bridge: PgChannel<{ ids: number[] }> | null = null;
  /** Events with ids up to here are handled (read at open, or forgotten from `#recent`). */
  #floor = 0;
  /** Ids of events handed to listeners since, oldest first. */
  readonly #recent = new Set<number>();

  private constructor(database: Database, opts: RegistryOptions) {
    this.dialect = database.dialect;
    this.#database = database;
    this.#store = opts.artifactStore ?? new LocalArtifactStore(opts.artifactDir);
    this.#inspect = opts.inspect;
    this.#logger = opts.logger;
    this.#maxBytes = opts.maxArtifactBytes;
  }

  /** Open the metadata store (applying migrations) and, on Postgres, start listening for other processes' events. */
  static async open(opts: RegistryOptions): Promise<Registry> {
    const database = await openDatabase(opts.databaseUrl, {
      ...(opts.databaseTimeoutMs === undefined ? {} : { timeoutMs: opts.databaseTimeoutMs }),
      ...(opts.logger ? { logger: opts.logger } : {}),
    });
    const registry = new Registry(database, opts);
    if (database.pgConfig !== null) {
      try {
        registry.#floor = await readLastEventId(database.db);
        const warn = (e: unknown): void => opts.logger?.warn({ err: e }, 'could not read events appended by another instance');
        registry.#bridge = await PgChannel.start<{ ids: number[] }>(database.pgConfig, NOTIFY_CHANNEL, database.schema ?? '', {
          onMessage: (b) => {
            if (!Array.isArray(b.ids)) return;
            registry.#relay(b.ids.filter((x) => Number.isSafeInteger(x))).catch(warn);
          },
          // Notifications sent while the connection was down are lost: read what was appended meanwhile.
          onReconnect: () => void registry.#catchUp().catch(warn),
          logger: opts.logger,
        });
      } catch (e) {
        await database.close().catch(() => undefined);
        throw e;
      }
    }
    return registry;
  }

  get #db(): Db {
    return this.#database.db;
  }

  /** The metadata store this registry lives in, shared with the other control-plane stores (tenancy, usage, audit). */
  get database(): Database {
    return this.#database;
  }

  onChange(listener: (e: RegistryEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  // ---- models ----

  async createModel(input: CreateModelInput, actor: string): Promise<ModelRecord> {
    const name = checkModelName(input.name);
    const row = newModelRow(name, input, Date.now());
    return this.#tx(async (tx, append) => {
      if (!(await insertModel(tx, row))) throw err('SY_ERR_REGISTRY_CONFLICT', `model "${name}" already exists`);
      await append({ model: name, type: 'model_created' });
      return readModel(tx, name);
    }, actor);
  }

  async getModel(name: string): Promise<ModelRecord> {
    return readModel(this.#db, checkModelName(name));
  }

  async listModels(): Promise<ModelRecord[]> {
    return readModels(this.#db);
  }

  async updateModel(name: string, patch: UpdateModelInput, actor: string): Promise<ModelRecord> {
    checkModelName(name);
    const changes: Record<string, string | number> = {};
    if (patch.description !== undefined) changes['description'] = checkText(patch.description, 'description');
    if (patch.owner !== undefined) changes['owner'] = checkText(patch.owner, 'owner');
    if (patch.tags !== undefined) changes['tags'] = JSON.stringify(checkStringMap(patch.tags, 'tags', true));
    if (patch.loadPolicy !== undefined) changes['load_policy'] = checkLoadPolicy(patch.loadPolicy);
    if (patch.pinned !== undefined) changes['pinned'] = patch.pinned ? 1 : 0;
    if (patch.config !== undefined) changes['config'] = JSON.stringify(checkConfig(patch.config, name));
    return this.#tx(async (tx, append) => {
      const current = await lockModel(tx, this.dialect, name);
      const changed = Object.keys(changes).filter((k) => String((current as unknown as Record<string, unknown>)[k]) !== String(changes[k]));
      if (changed.length > 0) {
        await tx
          .updateTable('models')
          .set({ ...changes, updated_at: Date.now() })
          .where('name', '=', name)
          .execute();
        await append({ model: name, type: 'model_updated', value: changed.join(',') });
      }
      return readModel(tx, name);
    }, actor);
  }

  /** Remove the model, its versions and aliases. Events stay; artifacts stay (content-addressed, maybe shared). */
  async deleteModel(name: string, actor: string): Promise<void> {
    checkModelName(name);
    await this.#tx(async (tx, append) => {
      await lockModel(tx, this.dialect, name);
      await tx.deleteFrom('aliases').where('model', '=', name).execute();
      await tx.deleteFrom('versions').where('model', '=', name).execute();
      await tx.deleteFrom('models').where('name', '=', name).execute();
      await append({ model: name, type: 'model_deleted' });
    }, actor);
  }

  // ---- versions ----

  async pushVersion(name: string, artifact: Buffer | Readable, input: PushVersionInput, actor: string): Promise<VersionRecord> {
    checkModelName(name);
    const explicit = input.version === undefined ? undefined : checkVersionNumber(input.version);
    const meta = versionMetaColumns(input);
    const create = input.createModel !== false;
    if (!create) await readModel(this.#db, name);

    const ref = await this.#store.put(artifact, this.#maxBytes);
    let signature;
    const lease = await this.#store.open(ref);
    const path = lease.path;
    try {
      signature = await this.#inspect(path);
    } catch (e) {
      lease.release();
      await this.#dropUnreferenced(ref);
      // The runtime names the file it read: the client gets the reason without the server's paths.
      const reason = withoutPaths(e instanceof Error ? e.message : String(e), path);
      throw err('SY_ERR_ARTIFACT_INVALID', `model "${name}": the artifact is not a loadable model: ${reason}`, { cause: e });
    }
    lease.release();

    return this.#tx(async (tx, append) => {
      const now = Date.now();
      if (create) {
        if (await insertModel(tx, newModelRow(name, { name }, now))) await append({ model: name, type: 'model_created' });
      }
      let version: number;
      if (explicit === undefined) {
        const r = await tx
          .updateTable('models')
          .set((eb) => ({ latest_version: eb('latest_version', '+', 1), updated_at: now }))
          .where('name', '=', name)
          .returning('latest_version')
          .executeTakeFirst();
        if (r === undefined) throw notFound(name);
        version = Number(r.latest_version);
      } else {
        const current = await lockModel(tx, this.dialect, name);
        version = explicit;
        const taken = await tx.selectFrom('versions').select('version').where('model', '=', name).where('version', '=', version).executeTakeFirst();
        if (taken !== undefined) throw err('SY_ERR_REGISTRY_CONFLICT', `model "${name}" already has version ${version}`);
        await tx
          .updateTable('models')
          .set({ latest_version: Math.max(Number(current.latest_version), version), updated_at: now })
          .where('name', '=', name)
          .execute();
      }
      const row: VersionsTable = {
        model: name,
        version,
        ...meta,
        artifact_uri: ref.uri,
        sha256: ref.sha256,
        size: ref.size,
        signature: JSON.stringify(signature),
        created_by: actor,
        created_at: now,
        status: 'ready',
        status_reason: null,
        archived_at: null,
      };
      try {
        await tx.insertInto('versions').values(row).execute();
      } catch (e) {
        if (isUniqueViolation(e)) throw err('SY_ERR_REGISTRY_CONFLICT', `model "${name}" already has version ${version}`);
        throw e;
      }
      await append({ model: name, type: 'version_created', version });
      return versionRecord(row);
    }, actor);
  }

  async listVersions(name: string, opts: { includeArchived?: boolean } = {}): Promise<VersionRecord[]> {
    checkModelName(name);
    await readModel(this.#db, name);
    const rows = await this.#db
      .selectFrom('versions')
      .selectAll()
      .where('model', '=', name)
      .$if(opts.includeArchived !== true, (q) => q.where('archived_at', 'is', null))
      .orderBy('version')
      .execute();
    return rows.map(versionRecord);
  }

  async getVersion(name: string, version: number): Promise<VersionRecord> {
    checkModelName(name);
    return versionRecord(await readVersionRow(this.#db, name, checkVersionNumber(version)));
  }

  /** `ref` is a positive integer (a version number) or an alias name. */
  async resolveVersion(name: string, ref: string): Promise<VersionRecord> {
    checkModelName(name);
    if (/^[0-9]+$/.test(ref)) return this.getVersion(name, checkVersionNumber(Number(ref)));
    const alias = checkAlias(ref);
    const version = await readAlias(this.#db, name, alias);
    if (version === null) {
      await readModel(this.#db, name);
      throw err('SY_ERR_REGISTRY_NOT_FOUND', `model "${name}" has no alias "${alias}"`);
    }
    return this.getVersion(name, version);
  }

  /** Hide a version from default listings; refused (409) while an alias points at it. */
  async archiveVersion(name: string, version: number, actor: string): Promise<VersionRecord> {
    checkModelName(name);
    checkVersionNumber(version);
    return this.#tx(async (tx, append) => {
      await lockModel(tx, this.dialect, name);
      const row = await readVersionRow(tx, name, version);
      if (row.archived_at !== null) return versionRecord(row);
      const pointing = await tx.selectFrom('aliases').select('alias').where('model', '=', name).where('version', '=', version).orderBy('alias').execute();
      if (pointing.length > 0) {
        const names = pointing.map((a) => `"${a.alias}"`).join(', ');
        throw err('SY_ERR_REGISTRY_CONFLICT', `model "${name}" version ${version} cannot be archived: alias ${names} points at it`);
      }
      const now = Date.now();
      await tx.updateTable('versions').set({ archived_at: now }).where('model', '=', name).where('version', '=', version).execute();
      await append({ model: name, type: 'version_archived', version });
      return versionRecord({ ...row, archived_at: now });
    }, actor);
  }

  async setVersionStatus(name: string, version: number, status: VersionStatus, reason: string | null, actor: string): Promise<void> {
    checkModelName(name);
    checkVersionNumber(version);
    checkStatus(status);
    if (reason !== null) checkText(reason, 'reason');
    await this.#tx(async (tx, append) => {
      await lockModel(tx, this.dialect, name);
      const row = await readVersionRow(tx, name, version);
      if (row.status === status && row.status_reason === reason) return;
      await tx.updateTable('versions').set({ status, status_reason: reason }).where('model', '=', name).where('version', '=', version).execute();
      await append({ model: name, type: 'version_status', version, value: status });
    }, actor);
  }

  // ---- aliases ----

  /** Point `alias` at `version` (which must exist, be ready and not archived). No event when unchanged. */
  async setAlias(name: string, alias: string, version: number, actor: string): Promise<{ from: number | null; to: number }> {
    checkModelName(name);
    checkAlias(alias);
    checkVersionNumber(version);
    return this.#tx(async (tx, append) => {
      await lockModel(tx, this.dialect, name);
      const v = await readVersionRow(tx, name, version);
      if (v.archived_at !== null) throw err('SY_ERR_REGISTRY_CONFLICT', `model "${name}" version ${version} is archived; alias "${alias}" cannot point at it`);
      if (v.status !== 'ready')
        throw err('SY_ERR_REGISTRY_CONFLICT', `model "${name}" version ${version} is ${v.status}, not ready; alias "${alias}" cannot point at it`);
      const from = await readAlias(tx, name, alias);
      if (from === version) return { from, to: version };
      const now = Date.now();
      if (from === null) await tx.insertInto('aliases').values({ model: name, alias, version, updated_at: now }).execute();
      else await tx.updateTable('aliases').set({ version, updated_at: now }).where('model', '=', name).where('alias', '=', alias).execute();
      await append({ model: name, type: 'alias_moved', alias, fromVersion: from, toVersion: version });
      return { from, to: version };
    }, actor);
  }

  async removeAlias(name: string, alias: string, actor: string): Promise<void> {
    checkModelName(name);
    checkAlias(alias);
    await this.#tx(async (tx, append) => {
      await lockModel(tx, this.dialect, name);
      const from = await readAlias(tx, name, alias);
      if (from === null) throw err('SY_ERR_REGISTRY_NOT_FOUND', `model "${name}" has no alias "${alias}"`);
      await tx.deleteFrom('aliases').where('model', '=', name).where('alias', '=', alias).execute();
      await append({ model: name, type: 'alias_removed', alias, fromVersion: from });
    }, actor);
  }

  /** The version `alias` pointed at at time `at` (ISO), from the event log; null when it was unset then. */
  async aliasAt(name: string, alias: string, at: string): Promise<number | null> {
    checkModelName(name);
    checkAlias(alias);
    return readAliasAt(this.#db, name, alias, parseTime(at, 'at'));
  }

  // ---- routing policy ----

  /**
   * Replace the model's traffic policy (validated, defaults filled in) or remove it (null). Every change bumps
   * the revision and appends a `routing_set` / `routing_removed` event carrying the policy and `reason`, so
   * the event log holds the policy's whole history. No event when the policy is unchanged.
   */
  async setRouting(name: string, policy: unknown, actor: string, reason: string | null = null): Promise<ModelRecord> {
    checkModelName(name);
    const parsed = policy === null ? null : parseRoutingPolicy(policy);
    const text = parsed === null ? null : JSON.stringify(parsed);
    if (reason !== null) checkText(reason, 'reason');
    return this.#tx(async (tx, append) => {
      const current = await lockModel(tx, this.dialect, name);
      if (current.routing === null && text === null) throw err('SY_ERR_REGISTRY_NOT_FOUND', `model "${name}" has no routing policy`);
      if (current.routing === text) return readModel(tx, name);
      if (parsed !== null) await checkRoutingTargets(tx, name, parsed);
      const revision = Number(current.routing_revision) + 1;
      await tx.updateTable('models').set({ routing: text, routing_revision: revision, updated_at: Date.now() }).where('name', '=', name).execute();
      await append({
        model: name,
        type: parsed === null ? 'routing_removed' : 'routing_set',
        key: String(revision),
        value: JSON.stringify({ policy: parsed, reason }),
      });
      return readModel(tx, name);
    }, actor);
  }

  /** Note an experiment's start or stop in the model's event log (other replicas learn of it through it). */
  async recordExperimentEvent(
    name: string,
    type: 'experiment_started' | 'experiment_stopped',
    experiment: string,
    note: string | null,
    actor: string,
  ): Promise<void> {
    checkModelName(name);
    await this.#tx(async (_tx, append) => {
      await append({ model: name, type, key: experiment, value: note });
    }, actor);
  }

  // ---- tags ----

  /** Set a tag on the model (`version` null) or on one version. */
  async setTag(name: string, version: number | null, key: string, value: string, actor: string): Promise<void> {
    checkModelName(name);
    checkTagKey(key);
    checkText(value, `tag "${key}" value`);
    await this.#editTags(name, version, actor, (tags) => {
      if (tags[key] === value) return null;
      tags[key] = value;
      return { type: 'tag_set', key, value };
    });
  }

  async removeTag(name: string, version: number | null, key: string, actor: string): Promise<void> {
    checkModelName(name);
    checkTagKey(key);
    await this.#editTags(name, version, actor, (tags) => {
      if (!Object.hasOwn(tags, key)) {
        throw err('SY_ERR_REGISTRY_NOT_FOUND', `model "${name}"${version === null ? '' : ` version ${version}`} has no tag "${key}"`);
      }
      delete tags[key];
      return { type: 'tag_removed', key };
    });
  }

  async #editTags(
    name: string,
    version: number | null,
    actor: string,
    edit: (tags: Record<string, string>) => { type: EventType; key: string; value?: string } | null,
  ): Promise<void> {
    if (version !== null) checkVersionNumber(version);
    await this.#tx(async (tx, append) => {
      const model = await lockModel(tx, this.dialect, name);
      const text = version === null ? model.tags : (await readVersionRow(tx, name, version)).tags;
      const tags = JSON.parse(text) as Record<string, string>;
      const change = edit(tags);
      if (change === null) return;
      const json = JSON.stringify(tags);
      if (version === null) await tx.updateTable('models').set({ tags: json, updated_at: Date.now() }).where('name', '=', name).execute();
      else await tx.updateTable('versions').set({ tags: json }).where('model', '=', name).where('version', '=', version).execute();
      await append({ model: name, version, ...change });
    }, actor);
  }

  // ---- events, snapshot, artifacts ----

  /** Events ascending by id; default limit 1000, at most 10000. */
  async events(q: EventQuery = {}): Promise<RegistryEvent[]> {
    return readEvents(this.#db, q);
  }

  /** Every model with its aliases and versions (archived included), read consistently. */
  async snapshot(): Promise<RegistrySnapshot> {
    return readSnapshot(this.#db, this.dialect);
  }

  /** A local file holding the version's artifact (fetched into the cache for a remote store), valid while leased. */
  async openArtifact(v: VersionRecord): Promise<ArtifactLease> {
    return this.#store.open(v.artifact);
  }

  /** A local file holding the version's artifact, not leased (a cache may evict it later). */
  async artifactPath(v: VersionRecord): Promise<string> {
    const lease = await this.#store.open(v.artifact);
    lease.release();
    return lease.path;
  }

  async close(): Promise<void> {
    this.#listeners.clear();
    await this.#bridge?.close();
    this.#bridge = null;
    await this.#database.close();
    await this.#store.close();
  }

  // ---- internals ----

  /** Run `fn` in a transaction; its appended events reach listeners after commit (and other processes via NOTIFY). */
  async #tx<T>(fn: (tx: Db, append: Append) => Promise<T>, actor: string): Promise<T> {
    checkText(actor, 'actor');
    const appended: RegistryEvent[] = [];
    const result = await inTransaction(this.#db, this.dialect, async (tx) => {
      const at = Date.now();
      const out = await fn(tx, async (e) => {
        const row = {
          model: e.model,
          type: e.type,
          version: e.version ?? null,
          alias: e.alias ?? null,
          from_version: e.fromVersion ?? null,
          to_version: e.toVersion ?? null,
          key: e.key ?? null,
          value: e.value ?? null,
          actor,
          at,
        };
        const { id } = await tx.insertInto('events').values(row).returning('id').executeTakeFirstOrThrow();
        appended.push(eventRecord({ ...row, id: Number(id) }));
      });
      if (this.#bridge !== null && appended.length > 0) await this.#bridge.notify(tx, { ids: appended.map((e) => e.id) });
      return out;
    });
    for (const e of appended) this.#emit(e);
    return result;
  }

  #emit(e: RegistryEvent): void {
    this.#recent.add(e.id);
    if (this.#recent.size > MAX_RECENT_EVENTS) {
      const oldest = this.#recent.values().next().value as number;
      this.#recent.delete(oldest);
      this.#floor = Math.max(this.#floor, oldest);
    }
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch (x) {
        this.#logger?.error({ err: x, event: e.id }, 'registry change listener threw');
      }
    }
  }

  /** Events appended by another process (NOTIFY): read them and hand them to listeners. */
  async #relay(ids: readonly number[]): Promise<void> {
    if (this.#listeners.size === 0) return;
    for (const e of await readEventsById(this.#db, ids)) if (!this.#recent.has(e.id)) this.#emit(e);
  }

  /** After a lost LISTEN connection: hand listeners the events appended since that they have not seen. */
  async #catchUp(): Promise<void> {
    for (const e of await readEventsAfter(this.#db, this.#floor)) if (!this.#recent.has(e.id)) this.#emit(e);
  }

  /** After a failed inspection: delete the stored bytes unless a registered version uses them. */
  async #dropUnreferenced(ref: { uri: string; sha256: string; size: number }): Promise<void> {
    try {
      const used = await this.#db.selectFrom('versions').select('model').where('sha256', '=', ref.sha256).limit(1).executeTakeFirst();
      if (used === undefined) await this.#store.remove(ref);
    } catch (e) {
      this.#logger?.warn({ err: e, sha256: ref.sha256 }, 'could not remove a rejected artifact');
    }
  }
}
