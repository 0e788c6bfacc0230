/**
 * @module
 * Online stores of the latest row per (view, entity): in memory (the default) and in Redis (scale-out), and
 * the read status of one feature value (PRESENT / NOT_FOUND / OUTSIDE_MAX_AGE).
 *
 * Both keep the row with the newest event time: a row whose event time is older than or equal to the stored
 * one is ignored, so retries, out-of-order batches and concurrent writers converge on the newest event. A newer
 * row replaces the stored row as a whole (a feature it lacks is then absent).
 *
 * Redis layout, under `prefix` (default `sy:fs:`): one hash per (view, entity) at `${prefix}${view}:${entityKey}`,
 * field `__t` = the event time (epoch ms, decimal), and one field per feature holding its JSON-encoded value
 * (`null` included). A write is one Lua script per chunk of 500 rows (EVALSHA, EVAL after a script-cache
 * flush): per row it compares `__t` and replaces the hash only when the row is newer, atomically. A read is one
 * round trip: a single HGETALL, or one pipeline of HGETALL (HMGET when the caller names the features) for all
 * keys. Redis Cluster is not supported (a write chunk's keys may hash to different slots).
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { EntityKey, FeatureRead, FeatureValue, OnlineStore, PushRow, StoredRow } from './types.js';

/** Hash field holding the row's event time (no feature may be named so). */
const TIME_FIELD = '__t';
/** Rows per script call. */
const WRITE_CHUNK = 500;
/** Largest |epoch ms| a Date can hold. */
const MAX_TIME = 8.64e15;

/** Throws unless every row has an integer epoch-ms event time. */
export function checkRows(rows: readonly PushRow[]): void {
  for (let i = 0; i < rows.length; i++) {
    const t = rows[i]!.eventTime;
    if (!Number.isSafeInteger(t) || Math.abs(t) > MAX_TIME) throw new RangeError(`row ${i}: eventTime must be an integer epoch ms, got ${t}`);
  }
}

/** The last event time formatted (a request reads many features of one row). */
let isoOf = { t: Number.NaN, iso: '' };

function iso(t: number): string {
  if (isoOf.t !== t) isoOf = { t, iso: new Date(t).toISOString() };
  return isoOf.iso;
}

/** Status of `feature` in `row` read at `now` (epoch ms); a value older than `ttlSeconds` (> 0) is OUTSIDE_MAX_AGE. */
export function featureRead(row: StoredRow | null, feature: string, ttlSeconds: number, now: number): FeatureRead {
  const value = row === null ? undefined : row.values[feature];
  if (row === null || value === undefined || value === null) return { value: null, status: 'NOT_FOUND', eventTime: null };
  const eventTime = iso(row.eventTime);
  if (ttlSeconds > 0 && now - row.eventTime > ttlSeconds * 1000) return { value, status: 'OUTSIDE_MAX_AGE', eventTime };
  return { value, status: 'PRESENT', eventTime };
}

/** The in-process store: view → entity key → latest row. */
export class MemoryOnlineStore implements OnlineStore {
  readonly kind = 'memory' as const;
  readonly #views = new Map<string, Map<EntityKey, StoredRow>>();

  async write(view: string, rows: readonly PushRow[]): Promise<number> {
    checkRows(rows);
    let byKey = this.#views.get(view);
    if (byKey === undefined) this.#views.set(view, (byKey = new Map()));
    let applied = 0;
    for (const r of rows) {
      const cur = byKey.get(r.entityKey);
      if (cur !== undefined && cur.eventTime >= r.eventTime) continue;
      byKey.set(r.entityKey, { eventTime: r.eventTime, values: Object.freeze({ ...r.values }) });
      applied++;
    }
    return applied;
  }

  async read(keys: readonly { readonly view: string; readonly entityKey: EntityKey }[]): Promise<(StoredRow | null)[]> {
    return keys.map((k) => this.#views.get(k.view)?.get(k.entityKey) ?? null);
  }

  async dropView(view: string): Promise<void> {
    this.#views.delete(view);
  }

  async close(): Promise<void> {
    this.#views.clear();
  }
}

/** KEYS: one hash per row. ARGV per row: event time, n, then n field/value pairs. Returns the rows applied. */
const WRITE_LUA = `
local applied = 0
local a = 1
for i = 1, #KEYS do
  local t = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  local cur = redis.call('HGET', KEYS[i], '${TIME_FIELD}')
  if (not cur) or tonumber(cur) < tonumber(t) then
    redis.call('DEL', KEYS[i])
    local args = {'${TIME_FIELD}', t}
    for j = 0, n - 1 do
      args[#args + 1] = ARGV[a + 2 + 2 * j]
      args[#args + 1] = ARGV[a + 3 + 2 * j]
      if #args >= 400 then
        redis.call('HSET', KEYS[i], unpack(args))
        args = {}
      end
    end
    if #args > 0 then redis.call('HSET', KEYS[i], unpack(args)) end
    applied = applied + 1
  end
  a = a + 2 + 2 * n
end
return applied
`;
const WRITE_SHA = createHash('sha1').update(WRITE_LUA).digest('hex');

export interface RedisOnlineStoreOptions {
  /** A connected client; the store does not own it (close() leaves it open). */
  readonly redis: Redis;
  /** Key prefix, default `sy:fs:`. */
  readonly prefix?: string;
}

/** A key to read; `features` (optional) limits the read to those features (HMGET instead of HGETALL). */
export interface RedisReadKey {
  readonly view: string;
  readonly entityKey: EntityKey;
  readonly features?: readonly string[];
}

function checkView(view: string): void {
  if (view.includes(':')) throw new RangeError(`view name "${view}" must not contain ':'`);
}

/** Escapes glob characters for SCAN MATCH. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

function decodeHash(h: Record<string, string>): StoredRow | null {
  const t = h[TIME_FIELD];
  if (t === undefined) return null;
  const values: Record<string, FeatureValue | null> = {};
  for (const f of Object.keys(h)) if (f !== TIME_FIELD) values[f] = JSON.parse(h[f]!) as FeatureValue | null;
  return { eventTime: Number(t), values };
}

function decodeFields(features: readonly string[], reply: readonly (string | null)[]): StoredRow | null {
  const t = reply[0];
  if (t === null || t === undefined) return null;
  const values: Record<string, FeatureValue | null> = {};
  for (let i = 0; i < features.length; i++) {
    const v = reply[i + 1];
    if (v !== null && v !== undefined) values[features[i]!] = JSON.parse(v) as FeatureValue | null;
  }
  return { eventTime: Number(t), values };
}

/** The shared store: one Redis hash per (view, entity); see the module comment for the layout. */
export class RedisOnlineStore implements OnlineStore {
  readonly kind = 'redis' as const;
  readonly #redis: Redis;
  readonly #prefix: string;

  constructor(opts: RedisOnlineStoreOptions) {
    this.#redis = opts.redis;
    this.#prefix = opts.prefix ?? 'sy:fs:';
  }

  /** The hash key of (view, entity). */
  key(view: string, entityKey: EntityKey): string {
    return `${this.#prefix}${view}:${entityKey}`;
  }

  async write(view: string, rows: readonly PushRow[]): Promise<number> {
    checkView(view);
    checkRows(rows);
    let applied = 0;
    for (let start = 0; start < rows.length; start += WRITE_CHUNK) {
      const chunk = rows.slice(start, start + WRITE_CHUNK);
      const keys: string[] = [];
      const args: string[] = [];
      for (const r of chunk) {
        keys.push(this.key(view, r.entityKey));
        const fields = Object.keys(r.values);
        args.push(String(r.eventTime), String(fields.length));
        for (const f of fields) {
          if (f === TIME_FIELD) throw new RangeError(`feature name "${TIME_FIELD}" is reserved`);
          args.push(f, JSON.stringify(r.values[f] ?? null));
        }
      }
      applied += Number(await this.#eval(keys, args));
    }
    return applied;
  }

  async #eval(keys: string[], args: string[]): Promise<unknown> {
    try {
      return await this.#redis.evalsha(WRITE_SHA, keys.length, ...keys, ...args);
    } catch (e) {
      if (!(e instanceof Error) || !e.message.startsWith('NOSCRIPT')) throw e;
      return this.#redis.eval(WRITE_LUA, keys.length, ...keys, ...args);
    }
  }

  /** One round trip for all keys. */
  async read(keys: readonly RedisReadKey[]): Promise<(StoredRow | null)[]> {
    if (keys.length === 0) return [];
    if (keys.length === 1) {
      const k = keys[0]!;
      const key = this.key(k.view, k.entityKey);
      if (k.features === undefined) return [decodeHash(await this.#redis.hgetall(key))];
      return [decodeFields(k.features, await this.#redis.hmget(key, TIME_FIELD, ...k.features))];
    }
    const p = this.#redis.pipeline();
    for (const k of keys) {
      const key = this.key(k.view, k.entityKey);
      if (k.features === undefined) p.hgetall(key);
      else p.hmget(key, TIME_FIELD, ...k.features);
    }
    const replies = await p.exec();
    if (replies === null) throw new Error('feature store: Redis pipeline was discarded');
    return keys.map((k, i) => {
      const [e, reply] = replies[i]!;
      if (e) throw e;
      return k.features === undefined ? decodeHash(reply as Record<string, string>) : decodeFields(k.features, reply as (string | null)[]);
    });
  }

  async dropView(view: string): Promise<void> {
    checkView(view);
    const match = `${globEscape(this.#prefix)}${globEscape(view)}:*`;
    let cursor = '0';
    do {
      const [next, found] = await this.#redis.scan(cursor, 'MATCH', match, 'COUNT', 1000);
      cursor = next;
      if (found.length > 0) await this.#redis.unlink(...found);
    } while (cursor !== '0');
  }

  /** Leaves the connection open (the caller owns it). */
  async close(): Promise<void> {}
}
