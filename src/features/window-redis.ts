/**
 * @module
 * Sliding-window state for windowed feature views in Redis, shared by replicas (one Lua script per add batch);
 * semantics in windows.ts.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { EntityKey, WindowEvent, WindowStore, WindowViewDef } from './types.js';
import { ADD_CHUNK, aggregate, ALL, bucketsFor, cutoff, fieldValues, floorTo, MINUTE, planOf, type Buckets } from './windows.js';

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
    let applied = 0,
      duplicates = 0,
      tooOld = 0;
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
      if (targets.length === 0) {
        tooOld++;
        continue;
      }
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
