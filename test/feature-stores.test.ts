/**
 * The feature store's storage: one contract suite for the online stores (in memory, and Redis on a real server
 * at 127.0.0.1:6379 with a unique key prefix per run: newest event wins, idempotent equal times, out-of-order
 * and concurrent writers converge, one round trip per read), read statuses at the TTL boundary, and the offline
 * history on SQLite and real Postgres (idempotent inserts, point-in-time joins against a brute-force reference
 * on seeded random data with late backfills, latest rows, push idempotence when the online write fails once).
 * Redis and Postgres must be reachable in CI (CI=true); elsewhere their suites are skipped with a message.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { OfflineStore, pushRows } from '../src/features/offline.js';
import { featureRead, MemoryOnlineStore, RedisOnlineStore } from '../src/features/online.js';
import type { EntityKey, FeatureValue, FeatureViewDef, OnlineStore, PushRow, StoredRow } from '../src/features/types.js';
import { openDatabase, type Database } from '../src/storage/index.js';
import { PG_BASE, pgSchema, postgresReachable, REDIS_URL, redisReachable } from './registry-helpers.js';

const T0 = Date.UTC(2025, 2, 4, 12);
const MIN = 60_000;
const inCi = process.env['CI'] === 'true';

/** mulberry32: a seeded PRNG; `rnd(m)` is an integer in [0, m), `real()` in [0, 1). */
function prng(seed: number): { real(): number; rnd(m: number): number; pick<T>(xs: readonly T[]): T } {
  let a = seed >>> 0;
  const real = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const rnd = (m: number): number => Math.floor(real() * m);
  return { real, rnd, pick: (xs) => xs[rnd(xs.length)]! };
}

function shuffle<T>(xs: T[], rnd: (m: number) => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rnd(i + 1);
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

const row = (entityKey: EntityKey, eventTime: number, values: Record<string, FeatureValue | null>): PushRow => ({ entityKey, eventTime, values });
const ent = (id: string | number): EntityKey => `user_id=${encodeURIComponent(String(id))}`;

function view(name: string, ttlSeconds: number, features: string[] = ['a', 'b', 'c']): FeatureViewDef {
  return {
    kind: 'view',
    name,
    description: '',
    entities: ['user'],
    features: features.map((f) => ({ name: f, type: 'float64' })),
    ttlSeconds,
    online: true,
    offline: true,
  };
}

/** The newest row per entity of all `rows`; the first of equal event times wins. */
function newest(rows: readonly PushRow[]): Map<EntityKey, StoredRow> {
  const out = new Map<EntityKey, StoredRow>();
  for (const r of rows) {
    const cur = out.get(r.entityKey);
    if (cur === undefined || r.eventTime > cur.eventTime) out.set(r.entityKey, { eventTime: r.eventTime, values: r.values });
  }
  return out;
}

const plain = (r: StoredRow | null): unknown => (r === null ? null : { eventTime: r.eventTime, values: { ...r.values } });

// ── online stores ──

interface OnlineTarget {
  store: OnlineStore;
  /** Socket writes to the server so far (Redis only; null for memory). */
  writes(): number | null;
  cleanup(): Promise<void>;
}

function onlineSuite(make: () => Promise<OnlineTarget>): void {
  it('writes and reads rows; unknown entities and views read as null; views are separate', async () => {
    const t = await make();
    try {
      const { store } = t;
      const values = { a: 1, b: 2.5, c: 'x é ✓', d: true, e: false, n: null, big: Number.MAX_SAFE_INTEGER, neg: -0.125 };
      assert.equal(await store.write('v1', [row(ent(1), T0, values), row(ent('a b|c'), T0 + 1, { a: 2 })]), 2);
      assert.equal(await store.write('v2', [row(ent(1), T0 + 5, { z: 'other' })]), 1);
      const got = await store.read([
        { view: 'v1', entityKey: ent(1) },
        { view: 'v1', entityKey: ent('a b|c') },
        { view: 'v1', entityKey: ent(2) },
        { view: 'v2', entityKey: ent(1) },
        { view: 'nope', entityKey: ent(1) },
      ]);
      assert.deepEqual(got.map(plain), [
        { eventTime: T0, values },
        { eventTime: T0 + 1, values: { a: 2 } },
        null,
        { eventTime: T0 + 5, values: { z: 'other' } },
        null,
      ]);
      assert.deepEqual(await store.read([]), []);
    } finally {
      await t.cleanup();
    }
  });

  it('never overwrites a newer event with an older one; a newer row replaces the stored row as a whole', async () => {
    const t = await make();
    try {
      const { store } = t;
      assert.equal(await store.write('v', [row(ent(1), T0 + 200, { a: 200, b: 1 })]), 1);
      assert.equal(await store.write('v', [row(ent(1), T0 + 100, { a: 100 })]), 0);
      assert.deepEqual((await store.read([{ view: 'v', entityKey: ent(1) }])).map(plain), [{ eventTime: T0 + 200, values: { a: 200, b: 1 } }]);
      assert.equal(await store.write('v', [row(ent(1), T0 + 300, { a: 300 })]), 1);
      assert.deepEqual((await store.read([{ view: 'v', entityKey: ent(1) }])).map(plain), [{ eventTime: T0 + 300, values: { a: 300 } }]);
    } finally {
      await t.cleanup();
    }
  });

  it('an equal event time is ignored: retries are idempotent and the first write wins', async () => {
    const t = await make();
    try {
      const { store } = t;
      const batch = [row(ent(1), T0, { a: 1 }), row(ent(2), T0, { a: 2 })];
      assert.equal(await store.write('v', batch), 2);
      assert.equal(await store.write('v', batch), 0);
      assert.equal(await store.write('v', [row(ent(1), T0, { a: 99 })]), 0);
      // Within one batch too: the second row for the same entity and time is ignored.
      assert.equal(await store.write('v', [row(ent(3), T0, { a: 3 }), row(ent(3), T0, { a: 33 })]), 1);
      assert.deepEqual(
        (await store.read([1, 2, 3].map((i) => ({ view: 'v', entityKey: ent(i) })))).map((r) => r?.values['a']),
        [1, 2, 3],
      );
    } finally {
      await t.cleanup();
    }
  });

  it('out-of-order batches (duplicates included) converge on the newest event per entity', async () => {
    const t = await make();
    try {
      const { store } = t;
      const r = prng(11);
      const rows: PushRow[] = [];
      for (let i = 0; i < 400; i++) {
        const e = r.rnd(25);
        rows.push(row(ent(e), T0 + r.rnd(50) * 1000 + e, { a: i, b: r.real(), c: `s${i}` }));
      }
      shuffle(rows, r.rnd);
      for (let i = 0; i < rows.length; i += 37) await store.write('v', rows.slice(i, i + 37));
      const want = newest(rows);
      const keys = [...want.keys()];
      const got = await store.read(keys.map((k) => ({ view: 'v', entityKey: k })));
      assert.deepEqual(
        got.map(plain),
        keys.map((k) => plain(want.get(k)!)),
      );
    } finally {
      await t.cleanup();
    }
  });

  it('concurrent writers of interleaved batches converge on the newest event', async () => {
    const t = await make();
    try {
      const { store } = t;
      const r = prng(23);
      const rows: PushRow[] = [];
      // Distinct event times per entity, so the expected winner is unique whatever the interleaving.
      const used = new Set<string>();
      while (rows.length < 600) {
        const e = r.rnd(30);
        const et = T0 + r.rnd(100_000);
        if (used.has(`${e}:${et}`)) continue;
        used.add(`${e}:${et}`);
        rows.push(row(ent(e), et, { a: et, w: rows.length }));
      }
      const writers = 8;
      const batches: PushRow[][] = [];
      for (let w = 0; w < writers; w++) batches.push(rows.filter((_, i) => i % writers === w));
      // Each writer sends its rows in small batches, all writers at once.
      await Promise.all(
        batches.map(async (b) => {
          for (let i = 0; i < b.length; i += 10) await store.write('v', b.slice(i, i + 10));
        }),
      );
      const want = newest(rows);
      const keys = [...want.keys()];
      const got = await store.read(keys.map((k) => ({ view: 'v', entityKey: k })));
      assert.deepEqual(
        got.map(plain),
        keys.map((k) => plain(want.get(k)!)),
      );
      // Same rows again, all at once in single-row writes: nothing applies.
      const again = await Promise.all(rows.map((x) => store.write('v', [x])));
      assert.equal(
        again.reduce((s, n) => s + n, 0),
        0,
      );
    } finally {
      await t.cleanup();
    }
  });

  it('reads many keys of several views in one call (one round trip for Redis), in request order', async () => {
    const t = await make();
    try {
      const { store } = t;
      const features = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`f${i}`, i * 1.5]));
      await store.write(
        'va',
        Array.from({ length: 100 }, (_, i) => row(ent(i), T0 + i, { ...features, id: i })),
      );
      await store.write(
        'vb',
        Array.from({ length: 100 }, (_, i) => row(ent(i), T0 - i, { id: 1000 - i })),
      );
      const keys = Array.from({ length: 250 }, (_, i) => ({ view: i % 2 === 0 ? 'va' : 'vb', entityKey: ent(i % 125) }));
      const before = t.writes();
      const got = await store.read(keys);
      const after = t.writes();
      if (before !== null) assert.equal(after! - before, 1, 'one socket write to Redis for the whole read');
      keys.forEach((k, i) => {
        const n = i % 125;
        if (n >= 100) return assert.equal(got[i], null);
        if (k.view === 'va') assert.deepEqual(plain(got[i]!), { eventTime: T0 + n, values: { ...features, id: n } });
        else assert.deepEqual(plain(got[i]!), { eventTime: T0 - n, values: { id: 1000 - n } });
      });
      // One key is one command.
      const b1 = t.writes();
      assert.equal((await store.read([{ view: 'va', entityKey: ent(7) }]))[0]?.values['id'], 7);
      if (b1 !== null) assert.equal(t.writes()! - b1, 1);
    } finally {
      await t.cleanup();
    }
  });

  it('drops one view and keeps the others', async () => {
    const t = await make();
    try {
      const { store } = t;
      await store.write('keep', [row(ent(1), T0, { a: 1 })]);
      await store.write(
        'drop',
        Array.from({ length: 30 }, (_, i) => row(ent(i), T0, { a: i })),
      );
      await store.dropView('drop');
      const got = await store.read([
        { view: 'drop', entityKey: ent(1) },
        { view: 'keep', entityKey: ent(1) },
      ]);
      assert.deepEqual(
        got.map((r) => r?.values['a'] ?? null),
        [null, 1],
      );
      // A dropped view starts over: an older event applies again.
      assert.equal(await store.write('drop', [row(ent(1), T0 - 1, { a: 'again' })]), 1);
    } finally {
      await t.cleanup();
    }
  });
}

describe('featureRead statuses', () => {
  const stored: StoredRow = { eventTime: T0, values: { a: 1.5, s: 'x', n: null, f: false } };
  const iso = new Date(T0).toISOString();
  it('NOT_FOUND without a row, for an absent feature and for a null value', () => {
    const nf = { value: null, status: 'NOT_FOUND', eventTime: null };
    assert.deepEqual(featureRead(null, 'a', 60, T0), nf);
    assert.deepEqual(featureRead(stored, 'zz', 60, T0), nf);
    assert.deepEqual(featureRead(stored, 'n', 60, T0), nf);
  });
  it('PRESENT up to and at the TTL boundary, OUTSIDE_MAX_AGE one millisecond after (value and event time kept)', () => {
    assert.deepEqual(featureRead(stored, 'a', 60, T0), { value: 1.5, status: 'PRESENT', eventTime: iso });
    assert.deepEqual(featureRead(stored, 'f', 60, T0 + 60_000), { value: false, status: 'PRESENT', eventTime: iso });
    assert.deepEqual(featureRead(stored, 'f', 60, T0 + 60_001), { value: false, status: 'OUTSIDE_MAX_AGE', eventTime: iso });
    assert.deepEqual(featureRead(stored, 's', 1, T0 + 86_400_000), { value: 'x', status: 'OUTSIDE_MAX_AGE', eventTime: iso });
    // No TTL: never stale. An event time in the future: present.
    assert.equal(featureRead(stored, 'a', 0, T0 + 10 * 365 * 86_400_000).status, 'PRESENT');
    assert.equal(featureRead(stored, 'a', 60, T0 - 5_000).status, 'PRESENT');
  });
});

describe('MemoryOnlineStore', () => {
  onlineSuite(async () => {
    const store = new MemoryOnlineStore();
    return { store, writes: () => null, cleanup: () => store.close() };
  });
  it('rejects a non-integer event time', async () => {
    await assert.rejects(new MemoryOnlineStore().write('v', [row(ent(1), 1.5, {})]), RangeError);
  });
});

/** A Redis client whose socket writes are counted. */
function countingRedis(): { redis: Redis; writes(): number } {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  let n = 0;
  let hooked: unknown = null;
  const hook = (): void => {
    const s = redis.stream;
    if (hooked === s) return;
    hooked = s;
    const write = s.write.bind(s) as (...a: unknown[]) => boolean;
    (s as unknown as { write: (...a: unknown[]) => boolean }).write = (...a: unknown[]) => {
      n++;
      return write(...a);
    };
  };
  redis.on('ready', hook);
  return {
    redis,
    writes: () => {
      hook();
      return n;
    },
  };
}

/** Deletes every key under `prefix` (a test run's own keys). */
async function unlinkPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.unlink(...keys);
  } while (cursor !== '0');
}

function redisSuite(): void {
  const runPrefix = `sy:fs:test:${randomBytes(4).toString('hex')}:`;
  let client: { redis: Redis; writes(): number };
  let seq = 0;
  before(async () => {
    client = countingRedis();
    await client.redis.ping();
  });
  after(async () => {
    await unlinkPrefix(client.redis, runPrefix);
    await client.redis.quit();
  });
  const make = async (): Promise<OnlineTarget> => {
    const store = new RedisOnlineStore({ redis: client.redis, prefix: `${runPrefix}${seq++}:` });
    return { store, writes: () => client.writes(), cleanup: () => store.close() };
  };
  onlineSuite(make);

  it('uses the documented layout: one hash per (view, entity), __t and JSON fields; one script call per write', async () => {
    const prefix = `${runPrefix}layout:`;
    const store = new RedisOnlineStore({ redis: client.redis, prefix });
    await store.write('v', [row(ent(1), T0, { a: 1 })]); // loads the script
    const w0 = client.writes();
    assert.equal(await store.write('v', [row(ent('x y'), T0, { a: 1, s: 'q', n: null, b: true })]), 1);
    assert.equal(client.writes() - w0, 1);
    assert.deepEqual(await client.redis.hgetall(`${prefix}v:user_id=x%20y`), { __t: String(T0), a: '1', s: '"q"', n: 'null', b: 'true' });
    // 1200 rows: three script calls (chunks of 500).
    const w1 = client.writes();
    assert.equal(
      await store.write(
        'v',
        Array.from({ length: 1200 }, (_, i) => row(ent(`k${i}`), T0, { a: i })),
      ),
      1200,
    );
    assert.equal(client.writes() - w1, 3);
    assert.equal(store.key('v', ent(1)), `${prefix}v:user_id=1`);
  });

  it("reads named features with HMGET; re-loads the script after SCRIPT FLUSH; does not close the caller's client", async () => {
    const store = new RedisOnlineStore({ redis: client.redis, prefix: `${runPrefix}hm:` });
    await store.write('v', [row(ent(1), T0, { a: 1, b: 'two', c: null })]);
    const got = await store.read([
      { view: 'v', entityKey: ent(1), features: ['b', 'c', 'zz'] },
      { view: 'v', entityKey: ent(2), features: ['a'] },
    ]);
    assert.deepEqual(got.map(plain), [{ eventTime: T0, values: { b: 'two', c: null } }, null]);
    const one = await store.read([{ view: 'v', entityKey: ent(1), features: ['a'] }]);
    assert.deepEqual(one.map(plain), [{ eventTime: T0, values: { a: 1 } }]);
    await client.redis.script('FLUSH');
    assert.equal(await store.write('v', [row(ent(1), T0 + 1, { a: 2 })]), 1);
    await store.close();
    assert.equal(await client.redis.ping(), 'PONG');
  });

  it('rejects the reserved field name and view names with ":"', async () => {
    const store = new RedisOnlineStore({ redis: client.redis, prefix: `${runPrefix}bad:` });
    await assert.rejects(store.write('v', [row(ent(1), T0, { __t: 1 })]), /reserved/);
    await assert.rejects(store.write('a:b', [row(ent(1), T0, { a: 1 })]), /must not contain ':'/);
  });
}

const redisDown = await redisReachable();
if (redisDown !== null && inCi) {
  describe('RedisOnlineStore on a real Redis', () => {
    it('needs Redis on 127.0.0.1:6379 in CI', () => assert.fail(`Redis is unreachable at ${REDIS_URL}: ${redisDown}`));
  });
} else {
  describe(
    'RedisOnlineStore on a real Redis',
    { skip: redisDown === null ? false : `Redis unreachable at ${REDIS_URL} (${redisDown}); set CI=true to make this fail` },
    () => {
      redisSuite();
    },
  );
}

// ── offline store ──

interface DbTarget {
  database: Database;
  cleanup(): Promise<void>;
}

async function sqliteDb(): Promise<DbTarget> {
  const database = await openDatabase('sqlite::memory:');
  return { database, cleanup: () => database.close() };
}

async function postgresDb(): Promise<DbTarget> {
  const schema = pgSchema();
  const database = await openDatabase(schema.url);
  return {
    database,
    async cleanup() {
      await database.close();
      await schema.drop();
    },
  };
}

/** An online store whose first `failures` writes throw (after doing nothing). */
class FlakyOnline implements OnlineStore {
  readonly kind = 'memory' as const;
  constructor(
    readonly inner: OnlineStore,
    private failures: number,
  ) {}
  async write(v: string, rows: readonly PushRow[]): Promise<number> {
    if (this.failures > 0) {
      this.failures--;
      throw new Error('online store down');
    }
    return this.inner.write(v, rows);
  }
  read(keys: readonly { readonly view: string; readonly entityKey: EntityKey }[]): Promise<(StoredRow | null)[]> {
    return this.inner.read(keys);
  }
  dropView(v: string): Promise<void> {
    return this.inner.dropView(v);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

interface RefRow {
  view: string;
  entityKey: EntityKey;
  eventTime: number;
  createdAt: number;
  values: Record<string, FeatureValue | null>;
}

/** Brute force: scan every stored row for each cell. */
function reference(
  stored: readonly RefRow[],
  requests: readonly { keys: Record<string, EntityKey>; ts: number }[],
  features: readonly { view: FeatureViewDef; feature: string }[],
  late: boolean,
): (FeatureValue | null)[][] {
  return requests.map((q) =>
    features.map(({ view: v, feature }) => {
      const key = q.keys[v.name];
      let best: RefRow | null = null;
      for (const r of stored) {
        if (r.view !== v.name || r.entityKey !== key) continue;
        if (r.eventTime > q.ts) continue;
        if (v.ttlSeconds > 0 && q.ts - r.eventTime > v.ttlSeconds * 1000) continue;
        if (!late && r.createdAt > q.ts) continue;
        if (best === null || r.eventTime > best.eventTime) best = r;
      }
      return best === null ? null : (best.values[feature] ?? null);
    }),
  );
}

function offlineSuite(open: () => Promise<DbTarget>): void {
  it('inserts each (view, entity, event time) once: the same push 3× stores its rows once, the first write wins', async () => {
    const t = await open();
    try {
      const off = new OfflineStore(t.database);
      const rows = Array.from({ length: 1500 }, (_, i) => row(ent(i % 40), T0 + i, { a: i }));
      assert.equal(await off.insert('v', rows, T0), 1500);
      assert.equal(await off.insert('v', rows, T0 + 1), 0);
      assert.equal(await off.insert('v', rows, T0 + 2), 0);
      assert.equal(await off.count('v'), 1500);
      // Partly new: only the new rows count; a duplicate within a batch counts once, its first row wins.
      const mixed = [row(ent(0), T0, { a: 'changed' }), row(ent(0), T0 - 1, { a: 'new' }), row(ent(0), T0 - 1, { a: 'dup' })];
      assert.equal(await off.insert('v', mixed, T0 + 3), 1);
      assert.equal(await off.count('v'), 1501);
      const pit = await off.pointInTime(
        [
          { keys: { v: ent(0) }, ts: T0 },
          { keys: { v: ent(0) }, ts: T0 - 1 },
        ],
        [{ view: view('v', 0), feature: 'a' }],
        { includeLateWrites: true },
      );
      assert.deepEqual(pit, [[0], ['new']]);
      // Another view is separate; dropView removes one view only.
      assert.equal(await off.insert('w', rows.slice(0, 10)), 10);
      assert.equal(await off.dropView('v'), 1501);
      assert.equal(await off.count('v'), 0);
      assert.equal(await off.count('w'), 10);
    } finally {
      await t.cleanup();
    }
  });

  it('latest returns the newest row per entity, whatever the insert order', async () => {
    const t = await open();
    try {
      const off = new OfflineStore(t.database);
      const r = prng(5);
      const rows = shuffle(
        Array.from({ length: 300 }, (_, i) => row(ent(i % 17), T0 + i * 1000, { a: i, s: `v${i}` })),
        r.rnd,
      );
      for (let i = 0; i < rows.length; i += 50) await off.insert('v', rows.slice(i, i + 50));
      const keys = [...Array.from({ length: 17 }, (_, i) => ent(i)), ent('missing')];
      const got = await off.latest('v', keys);
      const want = newest(rows);
      assert.equal(got.size, 17);
      for (const k of keys.slice(0, 17)) assert.deepEqual(plain(got.get(k)!), plain(want.get(k)!));
      assert.equal((await off.latest('v', [])).size, 0);
    } finally {
      await t.cleanup();
    }
  });

  it('point-in-time joins match a brute-force reference on seeded random data (late backfills, TTLs, as known / as of now)', async () => {
    const t = await open();
    try {
      const off = new OfflineStore(t.database);
      const r = prng(20251121);
      const views = [view('clicks', 1800, ['n', 'rate', 'label']), view('risk', 600, ['score', 'flag']), view('profile', 0, ['tier'])];
      const value = (f: string): FeatureValue | null | undefined => {
        const k = r.rnd(20);
        if (k === 0) return null;
        if (k === 1) return undefined; // absent from the row
        if (f === 'n') return r.rnd(1000);
        if (f === 'label' || f === 'tier') return r.pick(['a', 'b', 'c', 'ü ✓']);
        if (f === 'flag') return r.rnd(2) === 0;
        return r.real() * 100 - 50;
      };
      // Rows: event times on a minute grid over 6 h (TTL boundaries hit exactly); usually known soon after the
      // event, sometimes backfilled hours later (after later events); some re-pushes of an existing event time
      // with other values and a later created_at (the first write wins).
      const entities = Array.from({ length: 12 }, (_, i) => ent(`u${i}`));
      const pushed: RefRow[] = [];
      for (let i = 0; i < 450; i++) {
        const v = r.pick(views);
        const entityKey = r.pick(entities);
        const eventTime = T0 + r.rnd(360) * MIN;
        const createdAt = r.rnd(5) === 0 ? eventTime + (60 + r.rnd(240)) * MIN : eventTime + r.rnd(4) * MIN;
        const values: Record<string, FeatureValue | null> = {};
        for (const f of v.features) {
          const x = value(f.name);
          if (x !== undefined) values[f.name] = x;
        }
        pushed.push({ view: v.name, entityKey, eventTime, createdAt, values });
        if (r.rnd(15) === 0)
          pushed.push({ view: v.name, entityKey, eventTime, createdAt: createdAt + r.rnd(100) * MIN, values: { ...values, n: -1, score: -1, tier: 'late' } });
      }
      // Insert in created_at order, grouped by (view, created_at); the reference keeps the first per event.
      pushed.sort((a, b) => a.createdAt - b.createdAt);
      const stored: RefRow[] = [];
      const seen = new Set<string>();
      for (let i = 0; i < pushed.length;) {
        let j = i;
        while (j < pushed.length && pushed[j]!.createdAt === pushed[i]!.createdAt) j++;
        const group = pushed.slice(i, j);
        for (const v of views) {
          const rows = group.filter((p) => p.view === v.name);
          if (rows.length === 0) continue;
          let fresh = 0;
          for (const p of rows) {
            const id = `${p.view}|${p.entityKey}|${p.eventTime}`;
            if (seen.has(id)) continue;
            seen.add(id);
            stored.push(p);
            fresh++;
          }
          assert.equal(
            await off.insert(
              v.name,
              rows.map((p) => row(p.entityKey, p.eventTime, p.values)),
              pushed[i]!.createdAt,
            ),
            fresh,
          );
        }
        i = j;
      }
      assert.ok(stored.length > 400, `${stored.length} rows stored`);

      // Entity rows: timestamps on the same grid (and some off it) from before the first event to after the last
      // backfill; keys per view (sometimes missing, sometimes an unknown entity).
      const requests = Array.from({ length: 400 }, () => {
        const keys: Record<string, EntityKey> = {};
        for (const v of views) {
          const k = r.rnd(12);
          if (k === 0) continue;
          keys[v.name] = k === 1 ? ent('nobody') : r.pick(entities);
        }
        return { keys, ts: T0 + (r.rnd(600) - 30) * MIN + (r.rnd(4) === 0 ? r.rnd(MIN) : 0) };
      });
      const features = views.flatMap((v) => [...v.features.map((f) => ({ view: v, feature: f.name })), { view: v, feature: 'unknown' }]);
      // Mixed feature order across views.
      shuffle(features, r.rnd);

      const cells = { nonNull: 0, lateDiffers: 0 };
      for (const late of [false, true]) {
        const got = await off.pointInTime(requests, features, { includeLateWrites: late });
        const want = reference(stored, requests, features, late);
        assert.equal(got.length, requests.length);
        for (let i = 0; i < requests.length; i++) {
          for (let j = 0; j < features.length; j++) {
            assert.deepEqual(
              got[i]![j],
              want[i]![j],
              `late=${late} row ${i} (ts ${requests[i]!.ts - T0}) feature ${features[j]!.view.name}:${features[j]!.feature}`,
            );
            if (late && want[i]![j] !== null) cells.nonNull++;
          }
        }
        if (late) {
          const asKnown = reference(stored, requests, features, false);
          for (let i = 0; i < requests.length; i++) for (let j = 0; j < features.length; j++) if (asKnown[i]![j] !== want[i]![j]) cells.lateDiffers++;
        }
      }
      // The data exercises what it should: many values found, and late writes change some cells.
      assert.ok(cells.nonNull > 500, `${cells.nonNull} non-null cells`);
      assert.ok(cells.lateDiffers > 20, `${cells.lateDiffers} cells differ with late writes`);
      // Empty inputs.
      assert.deepEqual(await off.pointInTime([], features), []);
      assert.deepEqual(await off.pointInTime([{ keys: {}, ts: T0 }], []), [[]]);
    } finally {
      await t.cleanup();
    }
  });

  it('TTL boundary: a row exactly ttl old is used, one millisecond older is not (as online); created_at == ts is known', async () => {
    const t = await open();
    try {
      const off = new OfflineStore(t.database);
      const v = view('v', 60);
      await off.insert('v', [row(ent(1), T0, { a: 1 })], T0 + 10);
      const at = (ts: number): Promise<(FeatureValue | null)[][]> => off.pointInTime([{ keys: { v: ent(1) }, ts }], [{ view: v, feature: 'a' }]);
      assert.deepEqual(await at(T0 + 9), [[null]]);
      assert.deepEqual(await at(T0 + 10), [[1]]);
      assert.deepEqual(await at(T0 + 60_000), [[1]]);
      assert.deepEqual(await at(T0 + 60_001), [[null]]);
      assert.equal(featureRead({ eventTime: T0, values: { a: 1 } }, 'a', 60, T0 + 60_000).status, 'PRESENT');
      assert.equal(featureRead({ eventTime: T0, values: { a: 1 } }, 'a', 60, T0 + 60_001).status, 'OUTSIDE_MAX_AGE');
    } finally {
      await t.cleanup();
    }
  });

  it('pushRows: a push whose online write fails converges on retry (no double count; online row == offline latest)', async () => {
    const t = await open();
    try {
      const off = new OfflineStore(t.database);
      const inner = new MemoryOnlineStore();
      const online = new FlakyOnline(inner, 1);
      const v = view('v', 0);
      const r = prng(99);
      const rows = Array.from({ length: 200 }, (_, i) => row(ent(r.rnd(20)), T0 + r.rnd(10_000), { a: i, b: r.real() }));
      await assert.rejects(pushRows(off, online, v, rows, T0), /online store down/);
      const offlineCount = await off.count('v');
      assert.ok(offlineCount > 150, 'offline written before online');
      assert.deepEqual(await inner.read([{ view: 'v', entityKey: ent(0) }]), [null]);
      const retry = await pushRows(off, online, v, rows, T0 + 1);
      assert.equal(retry.offlineNew, 0);
      assert.equal(retry.onlineApplied, new Set(rows.map((x) => x.entityKey)).size);
      assert.equal(await off.count('v'), offlineCount);
      // And again: nothing new anywhere.
      assert.deepEqual(await pushRows(off, online, v, rows, T0 + 2), { offlineNew: 0, onlineApplied: 0 });
      // An older batch later: offline gains history, online keeps the newest.
      const older = rows.map((x) => row(x.entityKey, x.eventTime - 20_000, { a: 'old' }));
      const o = await pushRows(off, online, v, older, T0 + 3);
      assert.ok(o.offlineNew > 0);
      assert.equal(o.onlineApplied, 0);
      const keys = [...new Set(rows.map((x) => x.entityKey))];
      const latest = await off.latest('v', keys);
      const onl = await inner.read(keys.map((k) => ({ view: 'v', entityKey: k })));
      keys.forEach((k, i) => assert.deepEqual(plain(onl[i]!), plain(latest.get(k)!), k));
    } finally {
      await t.cleanup();
    }
  });

  it('pushRows: racing pushes with the same event time and different values leave both stores agreeing', async () => {
    const t = await open();
    try {
      const off = new OfflineStore(t.database);
      const online = new MemoryOnlineStore();
      const v = view('v', 0);
      const keys = Array.from({ length: 30 }, (_, i) => ent(i));
      const push = (tag: string): Promise<unknown> =>
        pushRows(
          off,
          online,
          v,
          keys.map((k) => row(k, T0, { a: tag })),
          T0,
        );
      await Promise.all([push('x'), push('y'), push('z')]);
      const latest = await off.latest('v', keys);
      const onl = await online.read(keys.map((k) => ({ view: 'v', entityKey: k })));
      keys.forEach((k, i) => assert.deepEqual(plain(onl[i]!), plain(latest.get(k)!), k));
      // Online-only and offline-only views write one side.
      const onlyOnline = { ...v, name: 'on', offline: false };
      assert.deepEqual(await pushRows(off, online, onlyOnline, [row(ent(1), T0, { a: 1 })]), { offlineNew: 0, onlineApplied: 1 });
      assert.equal(await off.count('on'), 0);
      const onlyOffline = { ...v, name: 'off', online: false };
      assert.deepEqual(await pushRows(off, online, onlyOffline, [row(ent(1), T0, { a: 1 })]), { offlineNew: 1, onlineApplied: 0 });
      assert.deepEqual(await online.read([{ view: 'off', entityKey: ent(1) }]), [null]);
    } finally {
      await t.cleanup();
    }
  });
}

describe('OfflineStore on SQLite', () => {
  offlineSuite(sqliteDb);
});

const pgDown = await postgresReachable();
if (pgDown !== null && inCi) {
  describe('OfflineStore on Postgres', () => {
    it('needs Postgres on 127.0.0.1:5432 in CI', () => assert.fail(`Postgres is unreachable at ${PG_BASE}: ${pgDown}`));
  });
} else {
  describe(
    'OfflineStore on Postgres',
    { skip: pgDown === null ? false : `Postgres unreachable at ${PG_BASE} (${pgDown}); set CI=true to make this fail` },
    () => {
      offlineSuite(postgresDb);
    },
  );
}

if (redisDown === null) {
  describe('pushRows with SQLite offline and Redis online', () => {
    let redis: Redis;
    const prefix = `sy:fs:test:${randomBytes(4).toString('hex')}:push:`;
    before(() => {
      redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    });
    after(async () => {
      await unlinkPrefix(redis, prefix);
      await redis.quit();
    });
    it('a failed online write, retried, leaves Redis equal to the offline latest', async () => {
      const t = await sqliteDb();
      try {
        const off = new OfflineStore(t.database);
        const inner = new RedisOnlineStore({ redis, prefix });
        const online = new FlakyOnline(inner, 1);
        const v = view('v', 0);
        const r = prng(7);
        const rows = Array.from({ length: 300 }, (_, i) => row(ent(r.rnd(25)), T0 + r.rnd(5_000), { a: i, s: `x${i}`, n: r.rnd(3) === 0 ? null : i }));
        await assert.rejects(pushRows(off, online, v, rows));
        const first = await off.count('v');
        await pushRows(off, online, v, rows);
        await pushRows(off, online, v, rows);
        assert.equal(await off.count('v'), first);
        const keys = [...new Set(rows.map((x) => x.entityKey))];
        const latest = await off.latest('v', keys);
        const onl = await inner.read(keys.map((k) => ({ view: 'v', entityKey: k })));
        keys.forEach((k, i) => assert.deepEqual(plain(onl[i]!), plain(latest.get(k)!), k));
      } finally {
        await t.cleanup();
      }
    });
  });
}
