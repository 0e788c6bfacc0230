/**
 * @module
 * The feature store, put together: definitions (kept as an in-memory catalog, reloaded on every change here
 * or — through Postgres NOTIFY — on another replica), the online store (memory or Redis), sliding-window
 * aggregations (memory or Redis) fed by pushes and optional NATS JetStream / Redis Streams consumers, the
 * offline history in the metadata store, point-in-time export, and the assembly of model input tensors from
 * entity keys for feature-joined inference.
 */
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry as PromRegistry } from 'prom-client';
import { err } from '../errors.js';
import { PgChannel } from '../storage/index.js';
import type { Database } from '../storage/index.js';
import { DefinitionStore, entityKey, type FeatureCatalog } from './definitions.js';
import { OfflineStore, pushRows } from './offline.js';
import { featureRead, MemoryOnlineStore, RedisOnlineStore } from './online.js';
import { natsConsumer, redisStreamConsumer, type StreamConsumer } from './streams.js';
import type {
  EntityKey,
  FeatureRead,
  FeatureRef,
  FeatureServiceDef,
  FeatureValue,
  FeatureViewDef,
  OnlineStore,
  PushRow,
  ValueType,
  WindowEvent,
  WindowStore,
  WindowViewDef,
} from './types.js';
import { MemoryWindowStore } from './window-memory.js';
import { RedisWindowStore } from './window-redis.js';

type Raw = Readonly<Record<string, unknown>>;

export interface FeatureStoreOptions {
  readonly database: Database;
  /** Shared Redis for the online store and window state (scale-out); null = in-process stores. */
  readonly redis: Redis | null;
  /** Redis URL, for stream consumers that need their own (blocking) connection. */
  readonly redisUrl: string | null;
  readonly natsUrl: string | null;
  readonly logger: Logger;
  readonly metrics: PromRegistry;
}

export interface OnlineResult {
  readonly entity: Raw;
  readonly features: Readonly<Record<FeatureRef, FeatureRead>>;
}

const CHANNEL = 'switchyard_features';
const MAX_ROWS = 10_000;

/** Event time from a pushed row: ISO-8601 text or epoch milliseconds. */
function timeOf(v: unknown, where: string): number {
  const ms = typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v) : Number.NaN;
  if (!Number.isFinite(ms)) throw err('SY_ERR_BAD_REQUEST', `${where}: event_time must be an ISO-8601 time or epoch milliseconds, got ${JSON.stringify(v)}`);
  return ms;
}

function checkValue(v: unknown, type: ValueType, where: string): FeatureValue | null {
  if (v === null || v === undefined) return null;
  const ok =
    type === 'string'
      ? typeof v === 'string'
      : type === 'bool'
        ? typeof v === 'boolean'
        : type === 'int64'
          ? typeof v === 'number' && Number.isSafeInteger(v)
          : typeof v === 'number' && Number.isFinite(v);
  if (!ok) throw err('SY_ERR_BAD_REQUEST', `${where}: expected ${type}, got ${JSON.stringify(v)}`);
  return v as FeatureValue;
}

export class FeatureStore {
  readonly defs: DefinitionStore;
  readonly online: OnlineStore;
  readonly windows: WindowStore;
  readonly offline: OfflineStore;
  #catalog: FeatureCatalog;
  readonly #opts: FeatureStoreOptions;
  readonly #log: Logger;
  #channel: PgChannel<{ changed: true }> | null = null;
  readonly #consumers = new Map<string, StreamConsumer>();
  /** The definition each running consumer was started with (a changed view restarts its consumer). */
  readonly #consumerSpecs = new Map<string, string>();
  #reloading: Promise<void> = Promise.resolve();
  readonly #m: {
    readLatency: Histogram;
    statuses: Counter;
    staleness: Histogram;
    pushLag: Histogram;
    pushed: Counter;
  };

  private constructor(opts: FeatureStoreOptions, defs: DefinitionStore, catalog: FeatureCatalog) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.defs = defs;
    this.#catalog = catalog;
    this.online = opts.redis ? new RedisOnlineStore({ redis: opts.redis }) : new MemoryOnlineStore();
    this.windows = opts.redis ? new RedisWindowStore({ redis: opts.redis }) : new MemoryWindowStore();
    this.offline = new OfflineStore(opts.database);
    const registers = [opts.metrics];
    const windows = this.windows;
    const consumers = this.#consumers;
    this.#m = {
      readLatency: new Histogram({
        name: 'switchyard_feature_online_read_seconds',
        help: 'Online feature reads (one round trip for all entities and views of a request).',
        labelNames: ['store'],
        buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
        registers,
      }),
      statuses: new Counter({
        name: 'switchyard_feature_reads_total',
        help: 'Online feature values read, by view and status (PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE).',
        labelNames: ['view', 'status'],
        registers,
      }),
      staleness: new Histogram({
        name: 'switchyard_feature_staleness_seconds',
        help: 'Age of the online values read (now − event time).',
        labelNames: ['view'],
        buckets: [1, 10, 60, 300, 900, 3600, 21600, 86400, 604800],
        registers,
      }),
      pushLag: new Histogram({
        name: 'switchyard_feature_push_lag_seconds',
        help: 'Delay between an event and its push (now − event time at ingestion).',
        labelNames: ['view'],
        buckets: [0.01, 0.1, 1, 10, 60, 300, 3600, 86400],
        registers,
      }),
      pushed: new Counter({
        name: 'switchyard_feature_rows_pushed_total',
        help: 'Rows pushed, by view and result (offline_new, online_applied, window_applied, duplicate, too_old).',
        labelNames: ['view', 'result'],
        registers,
      }),
    };
    new Gauge({
      name: 'switchyard_feature_window_state_size',
      help: 'Entity × bucket entries held for sliding-window features.',
      registers,
      async collect() {
        this.set(await windows.size().catch(() => 0));
      },
    });
    new Gauge({
      name: 'switchyard_feature_stream_lag_seconds',
      help: 'Delay between an event and its consumption from a stream (last seen), per view.',
      labelNames: ['view'],
      registers,
      collect() {
        this.reset();
        for (const [view, c] of consumers) if (c.lagMs !== null) this.set({ view }, c.lagMs / 1000);
      },
    });
  }

  static async create(opts: FeatureStoreOptions): Promise<FeatureStore> {
    let self: FeatureStore | null = null;
    const defs = new DefinitionStore(opts.database, { onChange: () => self?.changed() });
    const store = (self = new FeatureStore(opts, defs, await defs.catalog()));
    const db = opts.database;
    if (db.pgConfig !== null) {
      // A change announced by another replica, or (after a lost connection) maybe missed: re-read the catalog.
      store.#channel = await PgChannel.start<{ changed: true }>(db.pgConfig, CHANNEL, db.schema ?? '', {
        onMessage: () => void store.reload(),
        onReconnect: () => void store.reload(),
        logger: opts.logger,
      });
    }
    await store.#syncConsumers();
    return store;
  }

  get catalog(): FeatureCatalog {
    return this.#catalog;
  }

  /** A definition changed here: reload, and tell the other replicas. */
  async changed(): Promise<void> {
    await this.reload();
    await this.#channel
      ?.notify(this.#opts.database.db, { changed: true })
      .catch((e: unknown) => this.#log.warn({ err: e }, 'feature definition NOTIFY failed'));
  }

  /** Re-read the catalog (serialised) and start / stop stream consumers to match it. */
  reload(): Promise<void> {
    this.#reloading = this.#reloading
      .then(async () => {
        const before = this.#catalog;
        this.#catalog = await this.defs.catalog();
        // A deleted view's data goes with it (idempotent: every replica may do it), so a view re-created under the
        // same name starts empty.
        for (const name of before.views.keys()) {
          if (this.#catalog.views.has(name)) continue;
          await Promise.all([this.online.dropView(name), this.windows.dropView(name), this.offline.dropView(name)]).catch((e: unknown) =>
            this.#log.error({ err: e, view: name }, "dropping a deleted feature view's data failed"),
          );
        }
        await this.#syncConsumers();
      })
      .catch((e: unknown) => this.#log.error({ err: e }, 'reloading feature definitions failed'));
    return this.#reloading;
  }

  // ── ingestion ──

  #view(name: string): FeatureViewDef | WindowViewDef {
    const v = this.#catalog.views.get(name);
    if (v === undefined) throw err('SY_ERR_REGISTRY_NOT_FOUND', `no feature view "${name}"`);
    return v;
  }

  #key(view: string, raw: Raw): EntityKey {
    return entityKey(this.#catalog.joinKeys(view), raw);
  }

  /** Rows of a pushed batch as the stores take them (validated: join keys, event time, feature types). */
  #rows(view: FeatureViewDef, rows: readonly Raw[]): PushRow[] {
    return rows.map((r, i) => {
      const where = `rows[${i}]`;
      const values: Record<string, FeatureValue | null> = {};
      for (const f of view.features) if (Object.hasOwn(r, f.name)) values[f.name] = checkValue(r[f.name], f.type, `${where}.${f.name}`);
      return { entityKey: this.#key(view.name, r), eventTime: timeOf(r['event_time'], where), values };
    });
  }

  #events(view: WindowViewDef, rows: readonly Raw[]): WindowEvent[] {
    const fields = new Set(view.aggregations.flatMap((a) => (a.field === undefined ? [] : [a.field])));
    return rows.map((r, i) => {
      const where = `rows[${i}]`;
      const id = r['event_id'];
      if (typeof id !== 'string' || id.length === 0 || id.length > 256)
        throw err('SY_ERR_BAD_REQUEST', `${where}: event_id (1-256 characters) is required for windowed view "${view.name}" (it makes redelivery count once)`);
      const values: Record<string, number> = {};
      for (const f of fields) {
        const v = r[f];
        if (v === undefined || v === null) continue;
        if (typeof v !== 'number' || !Number.isFinite(v)) throw err('SY_ERR_BAD_REQUEST', `${where}.${f}: expected a number, got ${JSON.stringify(v)}`);
        values[f] = v;
      }
      return { eventId: id, entityKey: this.#key(view.name, r), eventTime: timeOf(r['event_time'], where), values };
    });
  }

  /**
   * Push rows into a view: offline history then online store for a feature view (idempotent: a retried push
   * changes nothing), or events into a windowed view's aggregations (deduplicated by event id).
   */
  async push(viewName: string, rows: readonly Raw[]): Promise<Record<string, number | string>> {
    if (rows.length > MAX_ROWS) throw err('SY_ERR_BAD_REQUEST', `at most ${MAX_ROWS} rows per push, got ${rows.length}`);
    const view = this.#view(viewName);
    const now = Date.now();
    if (view.kind === 'window') {
      const events = this.#events(view, rows);
      for (const e of events) this.#m.pushLag.labels(view.name).observe(Math.max(0, now - e.eventTime) / 1000);
      const r = await this.windows.add(view, events, now);
      this.#m.pushed.labels(view.name, 'window_applied').inc(r.applied);
      this.#m.pushed.labels(view.name, 'duplicate').inc(r.duplicates);
      this.#m.pushed.labels(view.name, 'too_old').inc(r.tooOld);
      return { view: view.name, rows: rows.length, ...r };
    }
    const parsed = this.#rows(view, rows);
    for (const r of parsed) this.#m.pushLag.labels(view.name).observe(Math.max(0, now - r.eventTime) / 1000);
    const r = await pushRows(view.offline ? this.offline : null, view.online ? this.online : null, view, parsed, now);
    this.#m.pushed.labels(view.name, 'offline_new').inc(r.offlineNew);
    this.#m.pushed.labels(view.name, 'online_applied').inc(r.onlineApplied);
    return { view: view.name, rows: rows.length, ...r };
  }

  // ── online reads ──

  /** The refs a request asks for: explicit, or a service's. */
  refsOf(features: readonly string[] | undefined, service: string | undefined): FeatureRef[] {
    if (service !== undefined) {
      const s = this.#catalog.services.get(service);
      if (s === undefined) throw err('SY_ERR_REGISTRY_NOT_FOUND', `no feature service "${service}"`);
      return s.features.map((f) => f.ref);
    }
    if (features === undefined || features.length === 0)
      throw err('SY_ERR_BAD_REQUEST', 'name the features ("features": ["view:feature", …]) or a feature service ("service")');
    for (const f of features) this.#catalog.resolve(f);
    return [...features];
  }

  /** Online values for entities × refs: every view's rows and window aggregations fetched at once (one round trip per store). */
  async read(entities: readonly Raw[], refs: readonly FeatureRef[], now = Date.now()): Promise<OnlineResult[]> {
    const t0 = performance.now();
    const resolved = refs.map((ref) => ({ ref, ...this.#catalog.resolve(ref) }));
    const views = [...new Map(resolved.map((r) => [r.view.name, r.view])).values()];
    // Entity key per (entity, view).
    const keys = entities.map((e) => new Map(views.map((v) => [v.name, this.#key(v.name, e)])));
    const plain = views.filter((v): v is FeatureViewDef => v.kind === 'view');
    const windowed = views.filter((v): v is WindowViewDef => v.kind === 'window');
    const lookups = plain.flatMap((v) => keys.map((k) => ({ view: v.name, entityKey: k.get(v.name)! })));
    const [rows, aggs] = await Promise.all([
      lookups.length === 0 ? Promise.resolve([]) : this.online.read(lookups),
      Promise.all(
        windowed.map((v) =>
          this.windows.read(
            v,
            keys.map((k) => k.get(v.name)!),
            now,
          ),
        ),
      ),
    ]);
    this.#m.readLatency.labels(this.online.kind).observe((performance.now() - t0) / 1000);
    const rowAt = new Map<string, (typeof rows)[number]>();
    lookups.forEach((l, i) => rowAt.set(`${l.view}\u0000${l.entityKey}`, rows[i] ?? null));
    const aggAt = new Map(windowed.map((v, i) => [v.name, aggs[i]!]));
    return entities.map((entity, ei) => {
      const features: Record<FeatureRef, FeatureRead> = {};
      for (const r of resolved) {
        let read: FeatureRead;
        if (r.view.kind === 'view') {
          read = featureRead(rowAt.get(`${r.view.name}\u0000${keys[ei]!.get(r.view.name)!}`) ?? null, r.feature, r.view.ttlSeconds, now);
          if (read.status !== 'NOT_FOUND' && read.eventTime !== null)
            this.#m.staleness.labels(r.view.name).observe(Math.max(0, now - Date.parse(read.eventTime)) / 1000);
        } else {
          const v = aggAt.get(r.view.name)?.[ei]?.[r.feature] ?? null;
          read = { value: v, status: v === null ? 'NOT_FOUND' : 'PRESENT', eventTime: v === null ? null : new Date(now).toISOString() };
        }
        this.#m.statuses.labels(r.view.name, read.status).inc();
        features[r.ref] = read;
      }
      return { entity, features };
    });
  }

  // ── offline export ──

  /** Point-in-time training rows: per entity row (join keys + timestamp), each feature as known at that time. */
  async export(entityRows: readonly Raw[], refs: readonly FeatureRef[], opts: { includeLateWrites?: boolean } = {}): Promise<Record<string, unknown>[]> {
    const resolved = refs.map((ref) => ({ ref, ...this.#catalog.resolve(ref) }));
    for (const r of resolved) {
      if (r.view.kind !== 'view')
        throw err('SY_ERR_BAD_REQUEST', `feature "${r.ref}" is a sliding-window aggregation: point-in-time export covers pushed feature views only`);
      if (!r.view.offline) throw err('SY_ERR_BAD_REQUEST', `feature view "${r.view.name}" keeps no offline history (offline: false)`);
    }
    const views = [...new Set(resolved.map((r) => r.view.name))];
    const requests = entityRows.map((row, i) => {
      const ts = timeOf(row['timestamp'] ?? row['event_time'], `entities[${i}] (timestamp)`);
      return { keys: Object.fromEntries(views.map((v) => [v, this.#key(v, row)])), ts };
    });
    const values = await this.offline.pointInTime(
      requests,
      resolved.map((r) => ({ view: r.view as FeatureViewDef, feature: r.feature })),
      opts,
    );
    return entityRows.map((row, i) => {
      const out: Record<string, unknown> = { ...row };
      resolved.forEach((r, j) => (out[r.ref] = values[i]![j] ?? null));
      return out;
    });
  }

  // ── feature-joined inference ──

  /**
   * Input tensors (V2 JSON) a model version's feature service fills for these entities (one per row), or null
   * when no service is bound. Missing values take the feature's default, else per the service's policy.
   */
  async assemble(
    model: string,
    version: number,
    entities: readonly Raw[],
    inputs: readonly { name: string; datatype: string; shape: readonly number[] }[],
  ): Promise<{ name: string; datatype: string; shape: number[]; data: (number | string | boolean)[] }[] | null> {
    const service = this.#catalog.serviceFor(model, version);
    if (service === undefined) return null;
    const bound = service.features.filter((f) => f.input !== undefined);
    if (bound.length === 0) return null;
    const results = await this.read(
      entities,
      bound.map((f) => f.ref),
    );
    const byInput = new Map<string, typeof bound>();
    for (const f of bound) byInput.set(f.input!, [...(byInput.get(f.input!) ?? []), f]);
    const out: { name: string; datatype: string; shape: number[]; data: (number | string | boolean)[] }[] = [];
    for (const [input, feats] of byInput) {
      const spec = inputs.find((s) => s.name === input);
      if (spec === undefined)
        throw err('SY_ERR_BAD_REQUEST', `feature service "${service.name}" fills input "${input}", which model "${model}" version ${version} does not have`);
      const cols = spec.shape.length >= 2 ? spec.shape[spec.shape.length - 1]! : 1;
      if (cols !== -1 && cols !== feats.length) {
        throw err('SY_ERR_BAD_REQUEST', `feature service "${service.name}" puts ${feats.length} features into input "${input}", which takes ${cols} per row`);
      }
      const data: (number | string | boolean)[] = [];
      results.forEach((r, row) => {
        for (const f of feats) data.push(this.#valueOrDefault(service, f, r.features[f.ref]!, entities[row]!, spec.datatype));
      });
      out.push({ name: input, datatype: spec.datatype, shape: spec.shape.length >= 2 ? [entities.length, feats.length] : [entities.length], data });
    }
    return out;
  }

  #valueOrDefault(
    service: FeatureServiceDef,
    f: FeatureServiceDef['features'][number],
    read: FeatureRead,
    entity: Raw,
    datatype: string,
  ): number | string | boolean {
    const missing = read.status === 'NOT_FOUND' || (read.status === 'OUTSIDE_MAX_AGE' && service.staleIsMissing) || read.value === null;
    if (!missing) return read.value!;
    if (f.default !== undefined) return f.default;
    if (service.onMissing === 'zero') return datatype === 'BYTES' ? '' : datatype === 'BOOL' ? false : 0;
    throw err(
      'SY_ERR_BAD_REQUEST',
      `feature "${f.ref}" is ${read.status === 'NOT_FOUND' ? 'missing' : 'stale (older than its max age)'} for entity ${JSON.stringify(entity)} and has no default (feature service "${service.name}")`,
    );
  }

  // ── streams ──

  async #syncConsumers(): Promise<void> {
    const wanted = new Map<string, WindowViewDef>();
    for (const v of this.#catalog.views.values()) if (v.kind === 'window' && v.source !== undefined) wanted.set(v.name, v);
    for (const [name, c] of this.#consumers) {
      const w = wanted.get(name);
      if (w === undefined || JSON.stringify(w) !== this.#consumerSpecs.get(name)) {
        await c.stop().catch(() => undefined);
        this.#consumers.delete(name);
        this.#consumerSpecs.delete(name);
      }
    }
    for (const [name, view] of wanted) {
      if (this.#consumers.has(name)) continue;
      const src = view.source!;
      const toEvent = (payload: Raw): WindowEvent => this.#events(view, [payload])[0]!;
      let c: StreamConsumer;
      if (src.type === 'nats') {
        if (this.#opts.natsUrl === null) {
          this.#log.warn({ view: name }, 'windowed view reads a NATS stream but no --nats URL is configured; its events can still be pushed');
          continue;
        }
        c = natsConsumer({
          url: this.#opts.natsUrl,
          view,
          stream: src.stream,
          subject: src.subject,
          durable: src.durable,
          toEvent: (p) => toEvent(p as Raw),
          store: this.windows,
          logger: this.#log,
        });
      } else {
        if (this.#opts.redisUrl === null) {
          this.#log.warn({ view: name }, 'windowed view reads a Redis stream but no --redis URL is configured; its events can still be pushed');
          continue;
        }
        c = redisStreamConsumer({
          redisUrl: this.#opts.redisUrl,
          view,
          stream: src.stream,
          group: src.group,
          consumer: `switchyard-${hostname()}`, // stable across restarts of the same host; XAUTOCLAIM recovers the pending entries of vanished ones
          toEvent: (fields) => toEvent(parseStreamFields(fields)),
          store: this.windows,
          logger: this.#log,
        });
      }
      this.#consumers.set(name, c);
      this.#consumerSpecs.set(name, JSON.stringify(view));
      c.start().catch((e: unknown) => this.#log.error({ err: e, view: name }, 'stream consumer failed to start'));
    }
  }

  async close(): Promise<void> {
    for (const c of this.#consumers.values()) await c.stop().catch(() => undefined);
    this.#consumers.clear();
    await this.#channel?.close();
    await this.online.close();
    await this.windows.close();
  }
}

/** A Redis Streams entry: either one `event` field holding JSON, or flat fields (numbers parsed). */
function parseStreamFields(fields: Record<string, string>): Raw {
  if (typeof fields['event'] === 'string') return JSON.parse(fields['event']) as Raw;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) out[k] = k !== 'event_id' && v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v;
  return out;
}
