/**
 * @module
 * Sliding-window aggregation state for windowed feature views: in memory (the default) and in Redis (shared by
 * replicas), both deduplicating events by id.
 *
 * Semantics (both stores, and the brute-force reference in test/feature-windows.test.ts):
 * - Bucket size B: 1 minute for the 5m and 1h windows, 15 minutes for 24h (24h = 96 buckets). An event falls in
 *   the bucket starting at floor(eventTime / B) * B. A view keeps minute buckets only if it has a 5m or 1h
 *   aggregation, quarter-hour buckets only if it has a 24h one.
 * - A window W read at `now` covers the buckets whose start lies in (cur - W, cur], cur = floor(now / B) * B:
 *   the W / B most recent buckets, the current one included (sliding at bucket granularity). Buckets after
 *   `cur` (events up to 60 s ahead) are held but enter the window only once `now` reaches them.
 * - tooOld (checked first, per event, against the `now` of the add): eventTime is not finite, or lies more than
 *   60 s after `now` (clock skew guard; such events are counted as tooOld), or, for every bucket size the view
 *   uses, the event's bucket is outside the longest window of that size at `now` (start <= cur - W). A tooOld
 *   event changes nothing and its id is not remembered.
 * - Duplicates: an event whose id was applied to the same view less than H ago is skipped, where H = max over
 *   the view's aggregations of (W + B) (24h + 15 min with a 24h window). An id older than H is forgotten; such a
 *   redelivery is then always tooOld (with `now` non-decreasing), so it is never counted twice either.
 * - Values: an event always counts towards `count` without a field; a field's stats (count with a field, sum,
 *   mean, min, max) see only events carrying a finite number for it. mean = sum / count over the window.
 *   Over no (matching) events count is 0 and the others are null.
 * - `now` is the clock: expired buckets are pruned relative to the latest `now` seen, so reading at a `now`
 *   earlier than an earlier call's may miss pruned buckets. Default: Date.now().
 *
 * Memory layout: view → entity → {minute buckets, quarter buckets}, each bucket start → {events, per field
 * {c, s, mn, mx}}; per view a Map eventId → expiry. An entity's expired buckets are pruned when it receives
 * events (at most once per minute) and every minute by an unref'd timer (also expired ids).
 *
 * Redis layout, under `prefix` (default `sy:fw:`):
 * - `${prefix}e:${view}:${eventId}` = 1, PX H: the dedupe marker (SET NX).
 * - `${prefix}w:${view}:${entityKey}` hash, PEXPIRE H after every update: fields `${g}${bucketStart}:${f}:${s}`
 *   with g = `m` (1 min) or `q` (15 min), f a field or `*` (all events, stat `c` only), s = c | s | mn | mx;
 *   `n` = buckets held (for size()), `_p` = minute bucket of the last prune.
 * An add is one script call per chunk of 500 events (EVALSHA, EVAL after a script-cache flush): per event,
 * SET NX the marker and only when it is new update the buckets (HINCRBY, HINCRBYFLOAT, min/max compare-and-set)
 * — atomic, so a redelivered event is counted once even across replicas. Bucket starts and tooOld are computed
 * here from the caller's `now` (never Redis's clock); the script prunes an entity's expired buckets at most once
 * per minute bucket. A read is one pipeline of HGETALL. Redis Cluster is not supported (a chunk's keys may hash
 * to different slots).
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { AggregationDef, EntityKey, WindowEvent, WindowSpec, WindowStore, WindowViewDef } from './types.js';
import { WINDOW_MS } from './types.js';

/** Bucket size per window. */
export const BUCKET_MS: Readonly<Record<WindowSpec, number>> = Object.freeze({ '5m': 60_000, '1h': 60_000, '24h': 900_000 });
/** Events further than this ahead of `now` are rejected (counted as tooOld). */
export const FUTURE_TOLERANCE_MS = 60_000;
/** The all-events pseudo field (no aggregation field may be named so). */
const ALL = '*';
/** Events per script call. */
const ADD_CHUNK = 500;
const MINUTE = 60_000;

type Grain = 'm' | 'q';
const GRAIN_MS: Readonly<Record<Grain, number>> = { m: 60_000, q: 900_000 };
const grainOf = (w: WindowSpec): Grain => (w === '24h' ? 'q' : 'm');

/** Per-field stats of one bucket. */
interface Stats { c: number; s: number; mn: number; mx: number }
/** One bucket: events counted and per-field stats. */
interface Bucket { n: number; f: Map<string, Stats> }
type Buckets = Record<Grain, Map<number, Bucket>>;

interface Plan {
  /** Longest window per bucket size the view uses (absent = not kept). */
  readonly horizon: Partial<Record<Grain, number>>;
  readonly fields: readonly string[];
  /** Dedupe horizon H = max(W + B). */
  readonly dedupeMs: number;
  readonly aggs: readonly AggregationDef[];
}

const plans = new WeakMap<WindowViewDef, Plan>();

/** The view's bucket sizes, fields and horizons (cached per definition object); throws on an invalid aggregation. */
function planOf(view: WindowViewDef): Plan {
  const cached = plans.get(view);
  if (cached !== undefined) return cached;
  const horizon: Partial<Record<Grain, number>> = {};
  const fields = new Set<string>();
  let dedupeMs = 0;
  for (const a of view.aggregations) {
    const w = WINDOW_MS[a.window];
    if (w === undefined) throw new TypeError(`aggregation "${a.name}": unknown window ${String(a.window)}`);
    if (a.fn !== 'count' && a.field === undefined) throw new TypeError(`aggregation "${a.name}": ${a.fn} needs a field`);
    if (a.field === ALL) throw new TypeError(`aggregation "${a.name}": field "${ALL}" is reserved`);
    if (a.field !== undefined) fields.add(a.field);
    const g = grainOf(a.window);
    horizon[g] = Math.max(horizon[g] ?? 0, w);
    dedupeMs = Math.max(dedupeMs, w + GRAIN_MS[g]);
  }
  const plan: Plan = { horizon, fields: [...fields], dedupeMs, aggs: view.aggregations };
  plans.set(view, plan);
  return plan;
}

const floorTo = (t: number, b: number): number => Math.floor(t / b) * b;

/** Bucket starts (per kept bucket size) an event at `t` is added to at `now`; empty = tooOld. */
function bucketsFor(plan: Plan, t: number, now: number): { g: Grain; start: number }[] {
  if (!Number.isFinite(t) || t > now + FUTURE_TOLERANCE_MS) return [];
  const out: { g: Grain; start: number }[] = [];
  for (const g of ['m', 'q'] as const) {
    const w = plan.horizon[g];
    if (w === undefined) continue;
    const b = GRAIN_MS[g];
    const start = floorTo(t, b);
    if (start > floorTo(now, b) - w) out.push({ g, start });
  }
  return out;
}

/** Buckets with start <= this are expired for bucket size `g` (Infinity when the view keeps none of that size). */
function cutoff(plan: Plan, g: Grain, now: number): number {
  const w = plan.horizon[g];
  return w === undefined ? Infinity : floorTo(now, GRAIN_MS[g]) - w;
}

/** The finite numeric fields of an event the view aggregates. */
function fieldValues(plan: Plan, e: WindowEvent): [string, number][] {
  const out: [string, number][] = [];
  for (const f of plan.fields) {
    const v = e.values[f];
    if (typeof v === 'number' && Number.isFinite(v)) out.push([f, v]);
  }
  return out;
}

function addTo(bucket: Bucket, vals: readonly [string, number][]): void {
  bucket.n++;
  for (const [f, v] of vals) {
    const s = bucket.f.get(f);
    if (s === undefined) bucket.f.set(f, { c: 1, s: v, mn: v, mx: v });
    else {
      s.c++;
      s.s += v;
      if (v < s.mn) s.mn = v;
      if (v > s.mx) s.mx = v;
    }
  }
}

/** Aggregation values of one entity at `now` from its buckets. */
function aggregate(plan: Plan, buckets: Buckets | undefined, now: number): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const a of plan.aggs) {
    const g = grainOf(a.window);
    const cur = floorTo(now, GRAIN_MS[g]);
    const lo = cur - WINDOW_MS[a.window];
    let n = 0, c = 0, s = 0, mn = Infinity, mx = -Infinity;
    if (buckets !== undefined) {
      for (const [start, b] of buckets[g]) {
        if (start <= lo || start > cur) continue;
        n += b.n;
        if (a.field === undefined) continue;
        const st = b.f.get(a.field);
        if (st === undefined) continue;
        c += st.c;
        s += st.s;
        if (st.mn < mn) mn = st.mn;
        if (st.mx > mx) mx = st.mx;
      }
    }
    switch (a.fn) {
      case 'count': out[a.name] = a.field === undefined ? n : c; break;
      case 'sum': out[a.name] = c === 0 ? null : s; break;
      case 'mean': out[a.name] = c === 0 ? null : s / c; break;
      case 'min': out[a.name] = c === 0 ? null : mn; break;
      case 'max': out[a.name] = c === 0 ? null : mx; break;
    }
  }
  return out;
}

interface EntityState extends Buckets { prunedAt: number }
interface ViewState { plan: Plan; entities: Map<EntityKey, EntityState>; seen: Map<string, number> }

/** In-process window state (one replica). */
export class MemoryWindowStore implements WindowStore {
  readonly kind = 'memory' as const;
  readonly #views = new Map<string, ViewState>();
  readonly #now: () => number;
  readonly #timer: NodeJS.Timeout;

  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? Date.now;
    this.#timer = setInterval(() => this.prune(), MINUTE);
    this.#timer.unref();
  }

  async add(view: WindowViewDef, events: readonly WindowEvent[], now = this.#now()): Promise<{ applied: number; duplicates: number; tooOld: number }> {
    const plan = planOf(view);
    let vs = this.#views.get(view.name);
    if (vs === undefined) this.#views.set(view.name, (vs = { plan, entities: new Map(), seen: new Map() }));
    vs.plan = plan;
    const pruneTag = floorTo(now, MINUTE);
    let applied = 0, duplicates = 0, tooOld = 0;
    for (const e of events) {
      const targets = bucketsFor(plan, e.eventTime, now);
      if (targets.length === 0) { tooOld++; continue; }
      const exp = vs.seen.get(e.eventId);
      if (exp !== undefined && exp > now) { duplicates++; continue; }
      if (exp !== undefined) vs.seen.delete(e.eventId); // re-insert at the end: the map stays ordered by expiry
      vs.seen.set(e.eventId, now + plan.dedupeMs);
      let st = vs.entities.get(e.entityKey);
      if (st === undefined) vs.entities.set(e.entityKey, (st = { m: new Map(), q: new Map(), prunedAt: pruneTag }));
      else if (st.prunedAt < pruneTag) {
        pruneEntity(plan, st, now);
        st.prunedAt = pruneTag;
      }
      const vals = fieldValues(plan, e);
      for (const { g, start } of targets) {
        let b = st[g].get(start);
        if (b === undefined) st[g].set(start, (b = { n: 0, f: new Map() }));
        addTo(b, vals);
      }
      applied++;
    }
    return { applied, duplicates, tooOld };
  }

  async read(view: WindowViewDef, entityKeys: readonly EntityKey[], now = this.#now()): Promise<Record<string, number | null>[]> {
    const plan = planOf(view);
    const ents = this.#views.get(view.name)?.entities;
    return entityKeys.map((k) => aggregate(plan, ents?.get(k), now));
  }

  async size(): Promise<number> {
    let n = 0;
    for (const vs of this.#views.values()) for (const st of vs.entities.values()) n += st.m.size + st.q.size;
    return n;
  }

  /** Drops expired buckets, entities left without any and expired event ids; returns the buckets dropped. Runs every minute. */
  prune(now = this.#now()): number {
    let dropped = 0;
    for (const vs of this.#views.values()) {
      for (const [k, st] of vs.entities) {
        dropped += pruneEntity(vs.plan, st, now);
        if (st.m.size === 0 && st.q.size === 0) vs.entities.delete(k);
      }
      for (const [id, exp] of vs.seen) {
        if (exp > now) break;
        vs.seen.delete(id);
      }
    }
    return dropped;
  }

  async dropView(view: string): Promise<void> {
    this.#views.delete(view);
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
  }
}

function pruneEntity(plan: Plan, st: EntityState, now: number): number {
  let dropped = 0;
  for (const g of ['m', 'q'] as const) {
    const cut = cutoff(plan, g, now);
    for (const start of st[g].keys()) {
      if (start <= cut) {
        st[g].delete(start);
        dropped++;
      }
    }
  }
  return dropped;
}

/**
 * KEYS: per event i, KEYS[2i-1] its dedupe marker and KEYS[2i] its entity hash. ARGV: [1] H (ms, PX / PEXPIRE),
 * [2] current minute bucket (prune tag), [3] minute cutoff, [4] quarter cutoff (bucket start <= cutoff is
 * expired), [5] JSON [[bucketTags], [[field, value as string], ...]] per event. Returns {applied, duplicates}.
 */
const ADD_SCRIPT = `
local H = ARGV[1]
local tag = tonumber(ARGV[2])
local cuts = { m = tonumber(ARGV[3]), q = tonumber(ARGV[4]) }
local evs = cjson.decode(ARGV[5])
local applied, dups = 0, 0
local seen = {}
local function prune(hk)
  local last = redis.call('HGET', hk, '_p')
  if last and tonumber(last) >= tag then return end
  local keys = redis.call('HKEYS', hk)
  local del, gone = {}, 0
  for _, k in ipairs(keys) do
    local colon = string.find(k, ':', 1, true)
    if colon then
      local cut = cuts[string.sub(k, 1, 1)]
      local start = tonumber(string.sub(k, 2, colon - 1))
      if cut == nil or start == nil or start <= cut then
        del[#del + 1] = k
        if string.sub(k, -4) == ':*:c' then gone = gone + 1 end
        if #del >= 1000 then redis.call('HDEL', hk, unpack(del)); del = {} end
      end
    end
  end
  if #del > 0 then redis.call('HDEL', hk, unpack(del)) end
  if gone > 0 then redis.call('HINCRBY', hk, 'n', -gone) end
  redis.call('HSET', hk, '_p', ARGV[2])
end
for i, ev in ipairs(evs) do
  local hk = KEYS[2 * i]
  if redis.call('SET', KEYS[2 * i - 1], '1', 'NX', 'PX', H) then
    if not seen[hk] then
      seen[hk] = true
      prune(hk)
    end
    for _, b in ipairs(ev[1]) do
      if redis.call('HINCRBY', hk, b .. ':*:c', 1) == 1 then redis.call('HINCRBY', hk, 'n', 1) end
      for _, fv in ipairs(ev[2]) do
        local p = b .. ':' .. fv[1] .. ':'
        local v = fv[2]
        local x = tonumber(v)
        redis.call('HINCRBY', hk, p .. 'c', 1)
        redis.call('HINCRBYFLOAT', hk, p .. 's', v)
        local mn = redis.call('HGET', hk, p .. 'mn')
        if not mn or x < tonumber(mn) then redis.call('HSET', hk, p .. 'mn', v) end
        local mx = redis.call('HGET', hk, p .. 'mx')
        if not mx or x > tonumber(mx) then redis.call('HSET', hk, p .. 'mx', v) end
      end
    end
    redis.call('PEXPIRE', hk, H)
    applied = applied + 1
  else
    dups = dups + 1
  end
end
return { applied, dups }
`;

const ADD_SHA = createHash('sha1').update(ADD_SCRIPT).digest('hex');

/** Escapes glob characters for SCAN MATCH. */
const globEscape = (s: string): string => s.replace(/[*?[\]\\]/g, '\\$&');

/** Window state in Redis, shared by replicas. Does not own the connection (close() leaves it open). */
export class RedisWindowStore implements WindowStore {
  readonly kind = 'redis' as const;
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #now: () => number;

  constructor(opts: { redis: Redis; prefix?: string; now?: () => number }) {
    this.#redis = opts.redis;
    this.#prefix = opts.prefix ?? 'sy:fw:';
    this.#now = opts.now ?? Date.now;
  }

  async add(view: WindowViewDef, events: readonly WindowEvent[], now = this.#now()): Promise<{ applied: number; duplicates: number; tooOld: number }> {
    const plan = planOf(view);
    let applied = 0, duplicates = 0, tooOld = 0;
    let keys: string[] = [];
    let evs: [string[], [string, string][]][] = [];
    const flush = async (): Promise<void> => {
      if (evs.length === 0) return;
      const args = [String(plan.dedupeMs), String(floorTo(now, MINUTE)), String(cutoff(plan, 'm', now)), String(cutoff(plan, 'q', now)), JSON.stringify(evs)];
      const [a, d] = await this.#eval(keys, args);
      applied += a;
      duplicates += d;
      keys = [];
      evs = [];
    };
    for (const e of events) {
      const targets = bucketsFor(plan, e.eventTime, now);
      if (targets.length === 0) { tooOld++; continue; }
      keys.push(`${this.#prefix}e:${view.name}:${e.eventId}`, `${this.#prefix}w:${view.name}:${e.entityKey}`);
      evs.push([targets.map((t) => `${t.g}${t.start}`), fieldValues(plan, e).map(([f, v]) => [f, String(v)])]);
      if (evs.length >= ADD_CHUNK) await flush();
    }
    await flush();
    return { applied, duplicates, tooOld };
  }

  /** EVALSHA, or EVAL when Redis does not have the script cached (first use, after a flush or restart). */
  async #eval(keys: readonly string[], args: readonly string[]): Promise<[number, number]> {
    try {
      return (await this.#redis.evalsha(ADD_SHA, keys.length, ...keys, ...args)) as [number, number];
    } catch (e) {
      if (!String((e as Error).message).includes('NOSCRIPT')) throw e;
      return (await this.#redis.eval(ADD_SCRIPT, keys.length, ...keys, ...args)) as [number, number];
    }
  }

  async read(view: WindowViewDef, entityKeys: readonly EntityKey[], now = this.#now()): Promise<Record<string, number | null>[]> {
    const plan = planOf(view);
    if (entityKeys.length === 0) return [];
    const p = this.#redis.pipeline();
    for (const k of entityKeys) p.hgetall(`${this.#prefix}w:${view.name}:${k}`);
    const res = (await p.exec()) ?? [];
    return entityKeys.map((_, i) => {
      const [err, hash] = res[i] ?? [new Error('no reply'), null];
      if (err) throw err;
      return aggregate(plan, parseHash(hash as Record<string, string>), now);
    });
  }

  /** Buckets held: SCAN of the view hashes and their `n` fields (one pipeline per SCAN page). */
  async size(): Promise<number> {
    let total = 0;
    let cursor = '0';
    do {
      const [next, keys] = await this.#redis.scan(cursor, 'MATCH', `${globEscape(this.#prefix)}w:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) {
        const p = this.#redis.pipeline();
        for (const k of keys) p.hget(k, 'n');
        for (const [err, n] of (await p.exec()) ?? []) if (!err && n !== null) total += Number(n);
      }
    } while (cursor !== '0');
    return total;
  }

  async dropView(view: string): Promise<void> {
    for (const kind of ['w', 'e']) {
      let cursor = '0';
      do {
        const [next, keys] = await this.#redis.scan(cursor, 'MATCH', `${globEscape(`${this.#prefix}${kind}:${view}:`)}*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await this.#redis.unlink(...keys);
      } while (cursor !== '0');
    }
  }

  async close(): Promise<void> {
    // The connection belongs to the caller.
  }
}

/** Buckets from an entity hash (`${g}${start}:${field}:${stat}` fields). */
function parseHash(hash: Record<string, string> | null): Buckets | undefined {
  if (hash === null) return undefined;
  const out: Buckets = { m: new Map(), q: new Map() };
  let any = false;
  for (const [k, raw] of Object.entries(hash)) {
    const g = k[0];
    if (g !== 'm' && g !== 'q') continue;
    const c1 = k.indexOf(':');
    const c2 = k.lastIndexOf(':');
    if (c1 < 0 || c2 <= c1) continue;
    const start = Number(k.slice(1, c1));
    const field = k.slice(c1 + 1, c2);
    const stat = k.slice(c2 + 1);
    const v = Number(raw);
    let b = out[g].get(start);
    if (b === undefined) out[g].set(start, (b = { n: 0, f: new Map() }));
    any = true;
    if (field === ALL) {
      if (stat === 'c') b.n = v;
      continue;
    }
    let s = b.f.get(field);
    if (s === undefined) b.f.set(field, (s = { c: 0, s: 0, mn: Infinity, mx: -Infinity }));
    if (stat === 'c') s.c = v;
    else if (stat === 's') s.s = v;
    else if (stat === 'mn') s.mn = v;
    else if (stat === 'mx') s.mx = v;
  }
  return any ? out : undefined;
}
