/**
 * @module
 * The offline store: the history of pushed feature rows in the metadata store (`feature_rows`), point-in-time
 * joins for training sets, and the push that writes offline and online as one idempotent operation.
 *
 * (view, entity, event time) is unique and the first write wins: a retried push inserts nothing twice.
 * `created_at` is when a row became known; by default a join ignores rows not yet known at the row's
 * timestamp, so a value backfilled later for an earlier event time does not leak into older rows.
 */
import { sql } from 'kysely';
import type { Database } from '../storage/index.js';
import { checkRows } from './online.js';
import type { EntityKey, FeatureValue, FeatureViewDef, OnlineStore, PushRow, StoredRow } from './types.js';

/** Rows per multi-row INSERT (5 parameters each). */
const INSERT_CHUNK = 1000;
/** Entity keys per IN (...) list. */
const KEY_CHUNK = 500;

type Values = Readonly<Record<string, FeatureValue | null>>;

/** One stored history row of an entity (vals parsed on first use). */
interface Candidate {
  readonly eventTime: number;
  readonly createdAt: number;
  readonly raw: string;
  parsed?: Values;
}

function valsOf(c: Candidate): Values {
  return (c.parsed ??= JSON.parse(c.raw) as Values);
}

function chunks<T>(xs: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** The first row per (entity, event time), in order: what the store keeps of a batch with duplicates. */
function dedupe(rows: readonly PushRow[]): PushRow[] {
  const seen = new Set<string>();
  const out: PushRow[] = [];
  for (const r of rows) {
    const id = `${r.eventTime}\u0000${r.entityKey}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push(r);
  }
  return out;
}

/** Index of the last candidate with eventTime <= ts, or -1 (candidates ascending by event time). */
function lastAtOrBefore(cs: readonly Candidate[], ts: number): number {
  let lo = 0;
  let hi = cs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cs[mid]!.eventTime <= ts) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

export interface PointInTimeRequest {
  /** View name → entity key (a view without a key here yields nulls). */
  readonly keys: Readonly<Record<string, EntityKey>>;
  /** The row's timestamp, epoch ms. */
  readonly ts: number;
}

export interface PointInTimeFeature {
  readonly view: FeatureViewDef;
  readonly feature: string;
}

export interface PointInTimeOptions {
  /** Also use rows written (created_at) after the row's timestamp, i.e. values as known now. Default false. */
  readonly includeLateWrites?: boolean;
}

export class OfflineStore {
  readonly #database: Database;

  constructor(database: Database) {
    this.#database = database;
  }

  /** Inserts rows not stored yet (first write per (view, entity, event time) wins); returns how many were new. */
  async insert(view: string, rows: readonly PushRow[], knownAt: number = Date.now()): Promise<number> {
    return (await this.insertResolved(view, rows, knownAt)).inserted;
  }

  /**
   * Like insert, and also returns the batch (deduplicated, first row per entity and event time wins) as the
   * store holds it: a row that was already stored carries the stored values, which may differ from the pushed
   * ones when two pushes raced with the same event time. Pushing these online keeps both stores in agreement.
   */
  async insertResolved(view: string, rows: readonly PushRow[], knownAt: number = Date.now()): Promise<{ inserted: number; rows: PushRow[] }> {
    checkRows(rows);
    const unique = dedupe(rows);
    const { db } = this.#database;
    const inserted = new Set<string>();
    for (const chunk of chunks(unique, INSERT_CHUNK)) {
      const res = await db
        .insertInto('feature_rows')
        .values(chunk.map((r) => ({ view, entity_key: r.entityKey, event_time: r.eventTime, created_at: knownAt, vals: JSON.stringify(r.values) })))
        .onConflict((oc) => oc.columns(['view', 'entity_key', 'event_time']).doNothing())
        .returning(['entity_key', 'event_time'])
        .execute();
      for (const r of res) inserted.add(`${Number(r.event_time)}\u0000${r.entity_key}`);
    }
    if (inserted.size === unique.length) return { inserted: inserted.size, rows: unique };

    // Rows already stored: read their stored values back.
    const known = unique.filter((r) => !inserted.has(`${r.eventTime}\u0000${r.entityKey}`));
    const stored = new Map<string, string>();
    for (const chunk of chunks(known, KEY_CHUNK)) {
      const found = await db
        .selectFrom('feature_rows')
        .select(['entity_key', 'event_time', 'vals'])
        .where('view', '=', view)
        .where('entity_key', 'in', [...new Set(chunk.map((r) => r.entityKey))])
        .where('event_time', 'in', [...new Set(chunk.map((r) => r.eventTime))])
        .execute();
      for (const f of found) stored.set(`${Number(f.event_time)}\u0000${f.entity_key}`, f.vals);
    }
    const resolved = unique.map((r) => {
      const s = stored.get(`${r.eventTime}\u0000${r.entityKey}`);
      return s === undefined ? r : { entityKey: r.entityKey, eventTime: r.eventTime, values: JSON.parse(s) as Values };
    });
    return { inserted: inserted.size, rows: resolved };
  }

  /** Every stored row of `view` for the given entities, ascending by event time per entity. */
  async #candidates(view: string, entityKeys: readonly EntityKey[]): Promise<Map<EntityKey, Candidate[]>> {
    const out = new Map<EntityKey, Candidate[]>();
    for (const chunk of chunks(entityKeys, KEY_CHUNK)) {
      const rows = await this.#database.db
        .selectFrom('feature_rows')
        .select(['entity_key', 'event_time', 'created_at', 'vals'])
        .where('view', '=', view)
        .where('entity_key', 'in', chunk)
        .orderBy('entity_key')
        .orderBy('event_time')
        .execute();
      for (const r of rows) {
        let list = out.get(r.entity_key);
        if (list === undefined) out.set(r.entity_key, (list = []));
        list.push({ eventTime: Number(r.event_time), createdAt: Number(r.created_at), raw: r.vals });
      }
    }
    return out;
  }

  /**
   * Point-in-time join, `[request][feature]`. Per request and view: the row with the greatest event time such
   * that event time <= ts, within the view's TTL (ts - event time <= ttl, the online store's max-age rule; TTL 0 =
   * no limit) and — unless includeLateWrites — known by ts (created_at <= ts). The feature's value in that row,
   * or null (no such row, or the row lacks the feature: the row is taken as a whole, as online).
   */
  async pointInTime(
    requests: readonly PointInTimeRequest[],
    features: readonly PointInTimeFeature[],
    opts: PointInTimeOptions = {},
  ): Promise<(FeatureValue | null)[][]> {
    const late = opts.includeLateWrites ?? false;
    const out: (FeatureValue | null)[][] = requests.map(() => new Array<FeatureValue | null>(features.length).fill(null));
    // Views in first-use order, with the columns they fill.
    const views = new Map<string, { def: FeatureViewDef; cols: number[] }>();
    features.forEach((f, col) => {
      const v = views.get(f.view.name);
      if (v === undefined) views.set(f.view.name, { def: f.view, cols: [col] });
      else v.cols.push(col);
    });
    for (const [name, { def, cols }] of views) {
      const keys = new Set<EntityKey>();
      for (const r of requests) {
        const k = r.keys[name];
        if (k !== undefined) keys.add(k);
      }
      if (keys.size === 0) continue;
      const candidates = await this.#candidates(name, [...keys]);
      const ttlMs = def.ttlSeconds > 0 ? def.ttlSeconds * 1000 : Infinity;
      requests.forEach((r, i) => {
        const k = r.keys[name];
        const cs = k === undefined ? undefined : candidates.get(k);
        if (cs === undefined) return;
        let j = lastAtOrBefore(cs, r.ts);
        for (; j >= 0 && r.ts - cs[j]!.eventTime <= ttlMs; j--) {
          if (late || cs[j]!.createdAt <= r.ts) break;
        }
        if (j < 0 || r.ts - cs[j]!.eventTime > ttlMs) return;
        const vals = valsOf(cs[j]!);
        const row = out[i]!;
        for (const col of cols) row[col] = vals[features[col]!.feature] ?? null;
      });
    }
    return out;
  }

  /** The latest row (greatest event time) per entity, for repairing the online store from the history. */
  async latest(view: string, entityKeys: readonly EntityKey[]): Promise<Map<EntityKey, StoredRow>> {
    const out = new Map<EntityKey, StoredRow>();
    for (const chunk of chunks([...new Set(entityKeys)], KEY_CHUNK)) {
      const rows = await this.#database.db
        .selectFrom('feature_rows as f')
        .select(['f.entity_key', 'f.event_time', 'f.vals'])
        .where('f.view', '=', view)
        .where('f.entity_key', 'in', chunk)
        .where('f.event_time', '=', (eb) =>
          eb
            .selectFrom('feature_rows as g')
            .select((e) => e.fn.max('g.event_time').as('m'))
            .whereRef('g.view', '=', 'f.view')
            .whereRef('g.entity_key', '=', 'f.entity_key'),
        )
        .execute();
      for (const r of rows) out.set(r.entity_key, { eventTime: Number(r.event_time), values: JSON.parse(r.vals) as Values });
    }
    return out;
  }

  /** Deletes a view's history; returns the rows deleted. */
  async dropView(view: string): Promise<number> {
    const res = await this.#database.db.deleteFrom('feature_rows').where('view', '=', view).executeTakeFirst();
    return Number(res.numDeletedRows);
  }

  /** Rows stored for a view (all entities). */
  async count(view: string): Promise<number> {
    const r = await this.#database.db
      .selectFrom('feature_rows')
      .select(sql<number>`count(*)`.as('n'))
      .where('view', '=', view)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }
}

/**
 * Push: offline first (the history is the source of truth), then online, each only where the view and store
 * are enabled. Idempotent end to end: a retry after a failure anywhere re-applies both and converges (offline
 * skips known rows, online keeps the newest event). Online receives the newest row per entity of the batch, as
 * the history holds it, so two racing pushes with the same event time and different values still leave both
 * stores agreeing. `onlineApplied` counts entities whose online row changed.
 */
export async function pushRows(
  offline: OfflineStore | null,
  online: OnlineStore | null,
  view: FeatureViewDef,
  rows: readonly PushRow[],
  knownAt?: number,
): Promise<{ offlineNew: number; onlineApplied: number }> {
  checkRows(rows);
  let toOnline = dedupe(rows);
  let offlineNew = 0;
  if (offline !== null && view.offline) {
    const r = await offline.insertResolved(view.name, toOnline, knownAt ?? Date.now());
    offlineNew = r.inserted;
    toOnline = r.rows;
  }
  if (online === null || !view.online || toOnline.length === 0) return { offlineNew, onlineApplied: 0 };
  // Online keeps only the newest row per entity: send just that (event times per entity are distinct here).
  const newest = new Map<EntityKey, PushRow>();
  for (const r of toOnline) {
    const cur = newest.get(r.entityKey);
    if (cur === undefined || r.eventTime > cur.eventTime) newest.set(r.entityKey, r);
  }
  const onlineApplied = await online.write(view.name, [...newest.values()]);
  return { offlineNew, onlineApplied };
}
