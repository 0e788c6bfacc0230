/**
 * Sliding-window feature state: one contract suite run against MemoryWindowStore and RedisWindowStore (a real
 * Redis on 127.0.0.1:6379) — seeded random event streams (late, future, duplicate events, duplicates with other
 * values) checked against a brute-force reference of the semantics documented in src/features/windows.ts, for
 * every aggregation function and window at many `now`s; tooOld boundaries; concurrent overlapping adds; size()
 * and pruning. Then the stream consumers against real servers: NATS JetStream (127.0.0.1:4222) and Redis
 * Streams, each consumed to the brute-force aggregates, and a crash before the ack redelivered to a restarted
 * consumer without double counting. Redis and NATS must be reachable in CI (CI=true); elsewhere their suites
 * are skipped with a message when they are not.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { eventTimeMs, natsConsumer, redisStreamConsumer } from '../src/features/streams.js';
import type { AggregationDef, AggregationFn, EntityKey, WindowEvent, WindowSpec, WindowStore, WindowViewDef } from '../src/features/types.js';
import { MemoryWindowStore } from '../src/features/window-memory.js';
import { RedisWindowStore } from '../src/features/window-redis.js';
import { REDIS_URL, redisReachable } from './registry-helpers.js';
import { prng } from '../tools/onnx/graph.js';

const NATS_URL = process.env['SY_TEST_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const inCi = process.env['CI'] === 'true';

// ── brute-force reference: the documented semantics, written out independently ──

const WIN: Record<WindowSpec, number> = { '5m': 5 * 60_000, '1h': 60 * 60_000, '24h': 24 * 60 * 60_000 };
const BUCKET: Record<WindowSpec, number> = { '5m': 60_000, '1h': 60_000, '24h': 15 * 60_000 };
const FUTURE_MS = 60_000;
const floorTo = (t: number, b: number): number => Math.floor(t / b) * b;

class Reference {
  readonly accepted: WindowEvent[] = [];
  readonly #seen = new Map<string, number>();
  /** Bucket size → longest window with that bucket size. */
  readonly #horizon = new Map<number, number>();
  readonly #dedupeMs: number;

  constructor(readonly view: WindowViewDef) {
    let h = 0;
    for (const a of view.aggregations) {
      const b = BUCKET[a.window];
      this.#horizon.set(b, Math.max(this.#horizon.get(b) ?? 0, WIN[a.window]));
      h = Math.max(h, WIN[a.window] + b);
    }
    this.#dedupeMs = h;
  }

  tooOld(t: number, now: number): boolean {
    if (!Number.isFinite(t) || t > now + FUTURE_MS) return true;
    for (const [b, w] of this.#horizon) if (floorTo(t, b) > floorTo(now, b) - w) return false;
    return true;
  }

  add(events: readonly WindowEvent[], now: number): { applied: number; duplicates: number; tooOld: number } {
    const r = { applied: 0, duplicates: 0, tooOld: 0 };
    for (const e of events) {
      if (this.tooOld(e.eventTime, now)) r.tooOld++;
      else if ((this.#seen.get(e.eventId) ?? -Infinity) > now) r.duplicates++;
      else {
        this.#seen.set(e.eventId, now + this.#dedupeMs);
        this.accepted.push(e);
        r.applied++;
      }
    }
    return r;
  }

  read(entity: EntityKey, now: number): Record<string, number | null> {
    const out: Record<string, number | null> = {};
    for (const a of this.view.aggregations) {
      const b = BUCKET[a.window];
      const cur = floorTo(now, b);
      const inWindow = this.accepted.filter((e) => e.entityKey === entity && floorTo(e.eventTime, b) > cur - WIN[a.window] && floorTo(e.eventTime, b) <= cur);
      const vals = a.field === undefined ? [] : inWindow.map((e) => e.values[a.field!]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
      const sum = vals.reduce((x, y) => x + y, 0);
      switch (a.fn) {
        case 'count':
          out[a.name] = a.field === undefined ? inWindow.length : vals.length;
          break;
        case 'sum':
          out[a.name] = vals.length === 0 ? null : sum;
          break;
        case 'mean':
          out[a.name] = vals.length === 0 ? null : sum / vals.length;
          break;
        case 'min':
          out[a.name] = vals.length === 0 ? null : Math.min(...vals);
          break;
        case 'max':
          out[a.name] = vals.length === 0 ? null : Math.max(...vals);
          break;
      }
    }
    return out;
  }
}

function assertAggregates(actual: Record<string, number | null>, expected: Record<string, number | null>, where: string): void {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), where);
  for (const [k, e] of Object.entries(expected)) {
    const a = actual[k];
    if (e === null || a === null || a === undefined) assert.equal(a, e, `${where} ${k}`);
    else assert.ok(Math.abs(a - e) <= 1e-9 * Math.max(1, Math.abs(e)), `${where} ${k}: got ${a}, expected ${e}`);
  }
}

// ── seeded random streams ──

const mulberry32 = prng;

const FNS: readonly AggregationFn[] = ['count', 'sum', 'mean', 'min', 'max'];
const WINDOWS: readonly WindowSpec[] = ['5m', '1h', '24h'];

function fullView(name: string): WindowViewDef {
  const aggs: AggregationDef[] = [];
  for (const w of WINDOWS) {
    aggs.push({ name: `events_${w}`, fn: 'count', window: w });
    for (const fn of FNS) aggs.push({ name: `${fn}_amount_${w}`, fn, field: 'amount', window: w });
    aggs.push({ name: `count_qty_${w}`, fn: 'count', field: 'qty', window: w }, { name: `sum_qty_${w}`, fn: 'sum', field: 'qty', window: w });
  }
  return { kind: 'window', name, description: 'randomized', entities: ['user'], aggregations: aggs };
}

interface Arrival {
  e: WindowEvent;
  at: number;
}

/** ~30 h of events for a few entities, late (up to 27 h), a few ahead of the clock, ~10 % re-sent later (half with other values). */
function randomStream(seed: number, n: number): { arrivals: Arrival[]; entities: EntityKey[]; t0: number } {
  const rnd = mulberry32(seed);
  const t0 = Date.UTC(2024, 2, 10) + 12_345;
  const span = 30 * 3_600_000;
  const entities = Array.from({ length: 6 }, (_, i) => `user=u${i}`);
  const arrivals: Arrival[] = [];
  for (let i = 0; i < n; i++) {
    const eventTime = t0 + Math.floor(rnd() * span);
    const r = rnd();
    const late =
      r < 0.05 ? -rnd() * 120_000 : r < 0.75 ? rnd() * 20_000 : r < 0.9 ? rnd() * 900_000 : r < 0.98 ? rnd() * 4 * 3_600_000 : rnd() * 27 * 3_600_000;
    const values: Record<string, number> = { amount: Math.round((rnd() * 200 - 50) * 100) / 100 };
    if (rnd() < 0.6) values['qty'] = 1 + Math.floor(rnd() * 10);
    const e: WindowEvent = { eventId: `ev-${seed}-${i}`, entityKey: entities[Math.floor(rnd() ** 1.5 * entities.length)]!, eventTime, values };
    const at = Math.floor(eventTime + late);
    arrivals.push({ e, at });
    if (rnd() < 0.1) {
      const d = rnd();
      const delay = d < 0.2 ? 0 : d < 0.7 ? rnd() * 1_800_000 : d < 0.95 ? rnd() * 6 * 3_600_000 : rnd() * 30 * 3_600_000;
      const dupValues = rnd() < 0.5 ? values : { amount: values['amount']! + 1000, qty: 99 };
      arrivals.push({ e: { ...e, values: dupValues }, at: Math.floor(at + delay) });
    }
  }
  arrivals.sort((a, b) => a.at - b.at);
  return { arrivals, entities, t0 };
}

// ── the contract ──

interface StoreHandle {
  store: WindowStore;
  /** Removes what the store left behind. */
  cleanup(): Promise<void>;
}

function contract(kind: string, open: () => Promise<StoreHandle>): void {
  for (const seed of [1, 7, 42]) {
    it(`matches the brute-force reference over a random 30 h stream (seed ${seed})`, async () => {
      const h = await open();
      try {
        const view = fullView(`rand${seed}`);
        const ref = new Reference(view);
        const { arrivals, entities } = randomStream(seed, 2500);
        const rnd = mulberry32(seed * 1000 + 3);
        const all = [...entities, 'user=nobody'];
        let i = 0,
          chunkNo = 0,
          lastNow = 0;
        let totals = { applied: 0, duplicates: 0, tooOld: 0 };
        while (i < arrivals.length) {
          const size = 1 + Math.floor(rnd() * 60);
          const chunk = arrivals.slice(i, i + size);
          i += size;
          const now = Math.max(lastNow, chunk[chunk.length - 1]!.at);
          lastNow = now;
          const events = chunk.map((a) => a.e);
          const expected = ref.add(events, now);
          assert.deepEqual(await h.store.add(view, events, now), expected, `chunk ${chunkNo} at ${new Date(now).toISOString()}`);
          totals = { applied: totals.applied + expected.applied, duplicates: totals.duplicates + expected.duplicates, tooOld: totals.tooOld + expected.tooOld };
          if (chunkNo++ % 7 === 0) {
            const got = await h.store.read(view, all, now);
            all.forEach((k, j) => assertAggregates(got[j]!, ref.read(k, now), `${kind} seed ${seed} chunk ${chunkNo} ${k}`));
          }
        }
        // The streams must exercise every path.
        assert.ok(totals.duplicates > 50, `duplicates ${totals.duplicates}`);
        assert.ok(totals.tooOld > 20, `tooOld ${totals.tooOld}`);
        for (const dt of [0, 30_000, 3 * 60_000, 59 * 60_000, 2 * 3_600_000, 23 * 3_600_000, 24 * 3_600_000 + 10 * 60_000, 25 * 3_600_000]) {
          const now = lastNow + dt;
          const got = await h.store.read(view, all, now);
          all.forEach((k, j) => assertAggregates(got[j]!, ref.read(k, now), `${kind} seed ${seed} end+${dt} ${k}`));
        }
        const decayed = await h.store.read(view, entities, lastNow + 25 * 3_600_000);
        for (const r of decayed) assert.deepEqual([r['events_24h'], r['sum_amount_24h'], r['min_amount_5m']], [0, null, null]);
      } finally {
        await h.cleanup();
      }
    });
  }

  it('applies the tooOld and future bounds at bucket granularity', async () => {
    const h = await open();
    try {
      const view: WindowViewDef = {
        kind: 'window',
        name: 'bounds',
        description: '',
        entities: ['user'],
        aggregations: [{ name: 'n5', fn: 'count', window: '5m' }],
      };
      const now = Date.UTC(2024, 0, 1, 12, 0, 30); // cur = 12:00:00; the window holds buckets 11:56 … 12:00
      const cur = Date.UTC(2024, 0, 1, 12, 0, 0);
      const ev = (id: string, t: number): WindowEvent => ({ eventId: id, entityKey: 'user=a', eventTime: t, values: {} });
      const r = await h.store.add(
        view,
        [
          ev('oldest-in', cur - 4 * 60_000),
          ev('just-out', cur - 4 * 60_000 - 1),
          ev('ahead-60s', now + 60_000),
          ev('ahead-60001', now + 60_001),
          ev('nan', NaN),
          ev('cur', cur),
        ],
        now,
      );
      assert.deepEqual(r, { applied: 3, duplicates: 0, tooOld: 3 });
      // 11:56 and 12:00 are in; the event ahead lies in the 12:01 bucket, counted from 12:01 on.
      const at = async (t: number): Promise<unknown> => (await h.store.read(view, ['user=a'], t))[0];
      assert.deepEqual(await at(now), { n5: 2 });
      assert.deepEqual(await at(cur - 1), { n5: 1 });
      assert.deepEqual(await at(cur + 60_000), { n5: 2 });
      assert.deepEqual(await at(cur + 4 * 60_000 + 59_999), { n5: 2 });
      assert.deepEqual(await at(cur + 5 * 60_000), { n5: 1 });
      assert.deepEqual(await at(cur + 6 * 60_000), { n5: 0 });
      // A 24h aggregation keeps events up to 95 quarter-hours back, in quarter buckets only.
      const both: WindowViewDef = {
        ...view,
        name: 'bounds2',
        aggregations: [
          { name: 'n1h', fn: 'count', window: '1h' },
          { name: 'n24', fn: 'count', window: '24h' },
        ],
      };
      const q = Date.UTC(2024, 0, 1, 12, 0, 0);
      const r2 = await h.store.add(
        both,
        [ev('x1', q - 2 * 3_600_000), ev('x2', q - 95 * 900_000), ev('x3', q - 95 * 900_000 - 1), ev('x4', q - 59 * 60_000)],
        now,
      );
      assert.deepEqual(r2, { applied: 3, duplicates: 0, tooOld: 1 });
      assert.deepEqual(await h.store.read(both, ['user=a'], now), [{ n1h: 1, n24: 3 }]);
      // An id re-sent after its marker expired is tooOld, never counted twice.
      const later = now + 24 * 3_600_000 + 20 * 60_000;
      assert.deepEqual(await h.store.add(both, [ev('x1', q - 2 * 3_600_000), ev('x4', q - 59 * 60_000)], later), { applied: 0, duplicates: 0, tooOld: 2 });
    } finally {
      await h.cleanup();
    }
  });

  it('ignores a duplicate with other values, within and across batches', async () => {
    const h = await open();
    try {
      const view: WindowViewDef = {
        kind: 'window',
        name: 'dups',
        description: '',
        entities: ['user'],
        aggregations: [
          { name: 's', fn: 'sum', field: 'v', window: '1h' },
          { name: 'n', fn: 'count', window: '1h' },
        ],
      };
      const now = Date.UTC(2024, 0, 1, 12);
      const ev = (id: string, v: number): WindowEvent => ({ eventId: id, entityKey: 'user=a', eventTime: now - 1000, values: { v } });
      assert.deepEqual(await h.store.add(view, [ev('a', 1), ev('b', 2), ev('a', 100)], now), { applied: 2, duplicates: 1, tooOld: 0 });
      assert.deepEqual(await h.store.add(view, [ev('b', 200), ev('c', 4)], now + 1), { applied: 1, duplicates: 1, tooOld: 0 });
      assert.deepEqual(await h.store.read(view, ['user=a', 'user=b'], now + 1), [
        { s: 7, n: 3 },
        { s: null, n: 0 },
      ]);
    } finally {
      await h.cleanup();
    }
  });

  it('counts overlapping duplicates of concurrent adds once', async () => {
    const h = await open();
    try {
      const view = fullView('concurrent');
      const now = Date.UTC(2024, 0, 1, 12);
      const rnd = mulberry32(99);
      const pool: WindowEvent[] = Array.from({ length: 1500 }, (_, i) => ({
        eventId: `c${i}`,
        entityKey: `user=u${i % 4}`,
        eventTime: now - Math.floor(rnd() * 20 * 3_600_000),
        values: { amount: Math.round(rnd() * 1e4) / 100, qty: i % 7 },
      }));
      // Eight writers, each 700 events from an overlapping slice (chunked in 2 script calls in Redis).
      const batches = Array.from({ length: 8 }, (_, w) => Array.from({ length: 700 }, (_, j) => pool[(w * 150 + j) % pool.length]!));
      const results = await Promise.all(batches.map((b) => h.store.add(view, b, now)));
      const distinct = new Set(batches.flat().map((e) => e.eventId)).size;
      assert.equal(
        results.reduce((s, r) => s + r.applied, 0),
        distinct,
      );
      assert.equal(
        results.reduce((s, r) => s + r.duplicates, 0),
        8 * 700 - distinct,
      );
      const ref = new Reference(view);
      ref.add(
        pool.filter((e) => batches.flat().includes(e)),
        now,
      );
      const keys = ['user=u0', 'user=u1', 'user=u2', 'user=u3'];
      const got = await h.store.read(view, keys, now);
      keys.forEach((k, j) => assertAggregates(got[j]!, ref.read(k, now), `${kind} concurrent ${k}`));
    } finally {
      await h.cleanup();
    }
  });

  it('size() counts entity × bucket entries and shrinks when expired buckets are pruned; dropView forgets the view', async () => {
    const h = await open();
    try {
      const view: WindowViewDef = {
        kind: 'window',
        name: 'sized',
        description: '',
        entities: ['user'],
        aggregations: [
          { name: 'n5', fn: 'count', window: '5m' },
          { name: 'n24', fn: 'count', window: '24h' },
        ],
      };
      const t = Date.UTC(2024, 0, 1, 12, 0, 10);
      const ev = (id: string, k: string, time: number): WindowEvent => ({ eventId: id, entityKey: k, eventTime: time, values: {} });
      assert.equal(await h.store.size(), 0);
      await h.store.add(view, [ev('a1', 'user=a', t), ev('a2', 'user=a', t + 60_000), ev('a3', 'user=a', t + 120_000), ev('b1', 'user=b', t)], t + 120_000);
      assert.equal(await h.store.size(), 6); // a: 3 minute + 1 quarter bucket; b: 1 + 1
      // Two hours later a new event for a prunes its minute buckets (outside 5m) and adds a minute and a quarter bucket.
      await h.store.add(view, [ev('a4', 'user=a', t + 2 * 3_600_000)], t + 2 * 3_600_000);
      assert.equal(await h.store.size(), 5);
      assert.deepEqual(await h.store.read(view, ['user=a', 'user=b'], t + 2 * 3_600_000), [
        { n5: 1, n24: 4 },
        { n5: 0, n24: 1 },
      ]);
      await h.store.dropView('sized');
      assert.equal(await h.store.size(), 0);
      assert.deepEqual(await h.store.read(view, ['user=a'], t + 2 * 3_600_000), [{ n5: 0, n24: 0 }]);
      // The dropped view's event ids are forgotten too.
      assert.deepEqual(await h.store.add(view, [ev('a4', 'user=a', t + 2 * 3_600_000)], t + 2 * 3_600_000), { applied: 1, duplicates: 0, tooOld: 0 });
    } finally {
      await h.cleanup();
    }
  });
}

describe('MemoryWindowStore', () => {
  contract('memory', async () => {
    const store = new MemoryWindowStore();
    return { store, cleanup: () => store.close() };
  });

  it('prune() drops expired buckets, empty entities and expired ids (the minute timer runs it on its clock)', async () => {
    let now = Date.UTC(2024, 0, 1, 12);
    const store = new MemoryWindowStore({ now: () => now });
    const view: WindowViewDef = { kind: 'window', name: 'p', description: '', entities: ['user'], aggregations: [{ name: 'n', fn: 'count', window: '1h' }] };
    await store.add(view, [{ eventId: 'x', entityKey: 'user=a', eventTime: now, values: {} }]);
    assert.equal(await store.size(), 1);
    now += 30 * 60_000;
    assert.equal(store.prune(), 0);
    now += 31 * 60_000;
    assert.equal(store.prune(), 1);
    assert.equal(await store.size(), 0);
    assert.deepEqual(await store.read(view, ['user=a']), [{ n: 0 }]);
    await store.close();
  });

  it('rejects an aggregation other than count without a field', async () => {
    const store = new MemoryWindowStore();
    const view: WindowViewDef = { kind: 'window', name: 'bad', description: '', entities: ['user'], aggregations: [{ name: 's', fn: 'sum', window: '1h' }] };
    await assert.rejects(store.add(view, []), /sum needs a field/);
    await store.close();
  });
});

const redisDown = await redisReachable();
const natsDown = await natsReachable();

async function natsReachable(): Promise<string | null> {
  try {
    const nc = await natsConnect({ servers: NATS_URL, timeout: 2000, reconnect: false });
    try {
      await (await jetstreamManager(nc)).getAccountInfo();
    } finally {
      await nc.close();
    }
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** A describe that fails in CI when its server is down, and is skipped with a message elsewhere. */
function needs(server: string, down: string | null, name: string, body: () => void): void {
  if (down !== null && inCi) {
    describe(name, () => {
      it(`needs ${server} in CI`, () => assert.fail(`${server} is unreachable: ${down}`));
    });
  } else {
    describe(name, { skip: down === null ? false : `${server} unreachable (${down}); set CI=true to make this fail` }, body);
  }
}

/** Deletes every key under `prefix`. */
async function delPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== '0');
}

needs(`Redis at ${REDIS_URL}`, redisDown, 'RedisWindowStore on a real Redis', () => {
  let redis: Redis;
  const prefixes: string[] = [];
  before(() => {
    redis = new Redis(REDIS_URL);
  });
  after(async () => {
    for (const p of prefixes) await delPrefix(redis, p);
    redis.disconnect();
  });

  contract('redis', async () => {
    const prefix = `sy:test:fw:${randomBytes(4).toString('hex')}:`;
    prefixes.push(prefix);
    return { store: new RedisWindowStore({ redis, prefix }), cleanup: () => delPrefix(redis, prefix) };
  });

  it('keeps working after a script-cache flush, and sets expiries on what it writes', async () => {
    const prefix = `sy:test:fw:${randomBytes(4).toString('hex')}:`;
    prefixes.push(prefix);
    const store = new RedisWindowStore({ redis, prefix });
    const view: WindowViewDef = { kind: 'window', name: 'f', description: '', entities: ['user'], aggregations: [{ name: 'n', fn: 'count', window: '5m' }] };
    const now = Date.now();
    assert.equal((await store.add(view, [{ eventId: '1', entityKey: 'user=a', eventTime: now, values: {} }])).applied, 1);
    await redis.script('FLUSH');
    assert.equal((await store.add(view, [{ eventId: '2', entityKey: 'user=a', eventTime: now, values: {} }])).applied, 1);
    assert.deepEqual(await store.read(view, ['user=a']), [{ n: 2 }]);
    const pttlHash = await redis.pttl(`${prefix}w:f:user=a`);
    const pttlMark = await redis.pttl(`${prefix}e:f:1`);
    for (const ttl of [pttlHash, pttlMark]) assert.ok(ttl > 5 * 60_000 && ttl <= 6 * 60_000, `ttl ${ttl}`);
    await delPrefix(redis, prefix);
  });
});

// ── stream consumers ──

const streamView: WindowViewDef = {
  kind: 'window',
  name: 'txn',
  description: 'stream',
  entities: ['user'],
  aggregations: [
    { name: 'n_1h', fn: 'count', window: '1h' },
    { name: 'sum_24h', fn: 'sum', field: 'amount', window: '24h' },
    { name: 'max_5m', fn: 'max', field: 'amount', window: '5m' },
    { name: 'mean_24h', fn: 'mean', field: 'amount', window: '24h' },
  ],
};

/** Events within the last 3 h of `now` (some in the last 5 min), with ~12 % re-sent (half with other values). */
function streamEvents(seed: number, n: number, now: number): WindowEvent[] {
  const rnd = mulberry32(seed);
  const out: WindowEvent[] = [];
  for (let i = 0; i < n; i++) {
    const e: WindowEvent = {
      eventId: `s${seed}-${i}`,
      entityKey: `user=u${i % 5}`,
      eventTime: now - Math.floor(rnd() < 0.3 ? rnd() * 300_000 : rnd() * 3 * 3_600_000),
      values: { amount: Math.round(rnd() * 10_000) / 100 },
    };
    out.push(e);
    if (rnd() < 0.12) out.push(rnd() < 0.5 ? e : { ...e, values: { amount: 5000 } });
  }
  return out;
}

const STREAM_KEYS = ['user=u0', 'user=u1', 'user=u2', 'user=u3', 'user=u4'];

/** Poll until `cond` holds. No deadline (a loaded machine may be slow): a hang is the runner's timeout, which names the test; `what` is kept for debugging. */
async function until(cond: () => boolean, what: () => string): Promise<void> {
  while (!cond()) {
    if (process.env['DEBUG_UNTIL']) process.stderr.write(`waiting: ${what()}\n`);
    await sleep(20);
  }
}

async function checkAgainstReference(store: WindowStore, events: readonly WindowEvent[], now: number, where: string): Promise<void> {
  const ref = new Reference(streamView);
  ref.add(events, now);
  const got = await store.read(streamView, STREAM_KEYS, now);
  STREAM_KEYS.forEach((k, j) => assertAggregates(got[j]!, ref.read(k, now), `${where} ${k}`));
}

/** A store that applies the first batch and then throws ("crash before ack"), and fails every later batch (a dead process). */
function crashingStore(real: WindowStore): WindowStore & { crashed: boolean } {
  const s = {
    kind: real.kind,
    crashed: false,
    async add(view: WindowViewDef, events: readonly WindowEvent[], now?: number) {
      if (s.crashed) throw new Error('dead');
      await real.add(view, events, now);
      s.crashed = true;
      throw new Error('crashed after applying, before the ack');
    },
    read: real.read.bind(real),
    size: real.size.bind(real),
    dropView: real.dropView.bind(real),
    close: real.close.bind(real),
  };
  return s;
}

/** Payload → event, as the feature store builds it (entity from join keys, event time ISO or ms). */
function payloadToEvent(p: unknown): WindowEvent {
  const o = p as { eventId?: unknown; entity?: { user?: unknown }; eventTime?: unknown; values?: Record<string, number> };
  if (typeof o.eventId !== 'string' || typeof o.entity?.user !== 'string') throw new Error('eventId and entity.user are required');
  const eventTime = eventTimeMs(o.eventTime);
  if (!Number.isFinite(eventTime)) throw new Error('bad eventTime');
  return { eventId: o.eventId, entityKey: `user=${encodeURIComponent(o.entity.user)}`, eventTime, values: o.values ?? {} };
}

const toPayload = (e: WindowEvent, i: number): string =>
  JSON.stringify({
    eventId: e.eventId,
    entity: { user: e.entityKey.slice('user='.length) },
    eventTime: i % 2 === 0 ? new Date(e.eventTime).toISOString() : e.eventTime,
    values: e.values,
  });

needs(`NATS JetStream at ${NATS_URL}`, natsDown, 'NATS JetStream consumer on a real server', () => {
  const run = randomBytes(4).toString('hex');
  const streams: string[] = [];
  after(async () => {
    const nc = await natsConnect({ servers: NATS_URL });
    const jsm = await jetstreamManager(nc);
    for (const s of streams) await jsm.streams.delete(s).catch(() => false);
    await nc.close();
  });

  it('creates the stream and consumer, consumes published events (duplicates, ISO and ms times, bad payloads) to the reference aggregates', async () => {
    const stream = `SY_TEST_FW_${run}_A`;
    const subject = `sy.test.fw.${run}.a`;
    streams.push(stream);
    const now = Date.now();
    const store = new MemoryWindowStore({ now: () => now });
    const c = natsConsumer({ url: NATS_URL, view: streamView, stream, subject, durable: 'fw', toEvent: payloadToEvent, store, batch: 50 });
    await c.start();
    const nc = await natsConnect({ servers: NATS_URL });
    try {
      const js = jetstream(nc);
      const events = streamEvents(3, 300, now);
      for (const [i, e] of events.entries()) await js.publish(subject, toPayload(e, i));
      await js.publish(subject, 'not json');
      await js.publish(subject, JSON.stringify({ entity: { user: 'u1' } }));
      await until(
        () => c.consumed + c.rejected >= events.length + 2,
        () => `consumed ${c.consumed}, rejected ${c.rejected} of ${events.length + 2}`,
      );
      assert.equal(c.consumed, events.length);
      assert.equal(c.rejected, 2);
      assert.equal(c.redelivered, 0);
      assert.ok(c.lagMs !== null && c.lagMs >= 0);
      await checkAgainstReference(store, events, now, 'nats');
      await c.stop(); // drains the connection: every ack reaches the server
      const info = await (await jetstreamManager(nc)).consumers.info(stream, 'fw');
      assert.deepEqual([info.num_pending, info.num_ack_pending], [0, 0]);
    } finally {
      await c.stop();
      await nc.close();
      await store.close();
    }
  });

  it('redelivers a batch applied but not acked (crash) to the restarted consumer, without double counting', async () => {
    const stream = `SY_TEST_FW_${run}_B`;
    const subject = `sy.test.fw.${run}.b`;
    streams.push(stream);
    const now = Date.now();
    const real = new MemoryWindowStore({ now: () => now });
    const nc = await natsConnect({ servers: NATS_URL });
    try {
      await (await jetstreamManager(nc)).streams.add({ name: stream, subjects: [subject] }); // an existing stream is used as is
      const js = jetstream(nc);
      const events = streamEvents(5, 200, now);
      for (const [i, e] of events.entries()) await js.publish(subject, toPayload(e, i));
      const crashing = crashingStore(real);
      const a = natsConsumer({
        url: NATS_URL,
        view: streamView,
        stream,
        subject,
        durable: 'fw',
        toEvent: payloadToEvent,
        store: crashing,
        batch: 40,
        ackWaitMs: 2000,
        retryDelayMs: 300,
      });
      await a.start();
      await until(
        () => crashing.crashed,
        () => 'the first batch',
      );
      await a.stop();
      assert.equal(a.consumed, 0);
      // Held buckets, not a window's count: JetStream may hand out a first batch of only a few messages, all of
      // them older than the shortest window (this once made an n_1h sum of 0 fail the test).
      assert.ok((await real.size()) > 0, 'the crashed batch was applied');

      const b = natsConsumer({ url: NATS_URL, view: streamView, stream, subject, durable: 'fw', toEvent: payloadToEvent, store: real, batch: 40 });
      await b.start();
      try {
        await until(
          () => b.consumed >= events.length,
          () => `consumed ${b.consumed} of ${events.length}`,
        );
        assert.ok(b.redelivered > 0, `redelivered ${b.redelivered}`);
        await checkAgainstReference(real, events, now, 'nats after crash');
      } finally {
        await b.stop();
      }
    } finally {
      await nc.close();
      await real.close();
    }
  });
});

needs(`Redis at ${REDIS_URL}`, redisDown, 'Redis Streams consumer on a real Redis', () => {
  const run = randomBytes(4).toString('hex');
  let redis: Redis;
  const keys: string[] = [];
  const prefix = `sy:test:fws:${run}:`;
  before(() => {
    redis = new Redis(REDIS_URL);
  });
  after(async () => {
    if (keys.length > 0) await redis.del(...keys);
    await delPrefix(redis, prefix);
    redis.disconnect();
  });

  const xadd = async (stream: string, e: WindowEvent, i: number): Promise<void> => {
    await redis.xadd(
      stream,
      '*',
      'eventId',
      e.eventId,
      'user',
      e.entityKey.slice('user='.length),
      'eventTime',
      i % 2 === 0 ? new Date(e.eventTime).toISOString() : String(e.eventTime),
      'amount',
      String(e.values['amount']),
    );
  };
  const fieldsToEvent = (f: Record<string, string>): WindowEvent =>
    payloadToEvent({ eventId: f['eventId'], entity: { user: f['user'] }, eventTime: f['eventTime'], values: { amount: Number(f['amount']) } });

  // The blocking read (an hour) is far longer than the runner's timeout for this test: a stop() that waited it out fails the test.
  it('creates the group, consumes to the reference aggregates (Redis window store), and stops a blocked read at once', { timeout: 300_000 }, async () => {
    const stream = `${prefix}s1`;
    keys.push(stream);
    const now = Date.now();
    const store = new RedisWindowStore({ redis, prefix: `${prefix}w1:`, now: () => now });
    const events = streamEvents(11, 300, now);
    for (const [i, e] of events.entries()) await xadd(stream, e, i);
    await redis.xadd(stream, '*', 'garbage', '1');
    const c = redisStreamConsumer({
      redisUrl: REDIS_URL,
      view: streamView,
      stream,
      group: 'g',
      consumer: 'c1',
      toEvent: fieldsToEvent,
      store,
      batch: 64,
      blockMs: 3_600_000,
    });
    await c.start();
    try {
      await until(
        () => c.consumed + c.rejected >= events.length + 1,
        () => `consumed ${c.consumed} of ${events.length}`,
      );
      // Entries added while the consumer is blocked arrive too.
      const more = streamEvents(12, 20, now);
      for (const [i, e] of more.entries()) await xadd(stream, e, i);
      await until(
        () => c.consumed >= events.length + more.length,
        () => `consumed ${c.consumed}`,
      );
      assert.equal(c.rejected, 1);
      assert.equal(c.redelivered, 0);
      await checkAgainstReference(store, [...events, ...more], now, 'redis streams');
      const pending = (await redis.xpending(stream, 'g')) as [number, ...unknown[]];
      assert.equal(pending[0], 0);
    } finally {
      await c.stop(); // interrupts the 30 s blocking read (or the runner's timeout fails the test)
    }
  });

  // The retry delay (an hour) is far longer than the runner's timeout for this test: a stop() that waited it out fails the test.
  it('re-reads entries applied but not acked (crash) when the consumer restarts, without double counting', { timeout: 300_000 }, async () => {
    const stream = `${prefix}s2`;
    keys.push(stream);
    const now = Date.now();
    const real = new RedisWindowStore({ redis, prefix: `${prefix}w2:`, now: () => now });
    const events = streamEvents(13, 200, now);
    for (const [i, e] of events.entries()) await xadd(stream, e, i);
    const crashing = crashingStore(real);
    const opts = { redisUrl: REDIS_URL, view: streamView, stream, group: 'g', consumer: 'c1', toEvent: fieldsToEvent, batch: 50, blockMs: 1000 };
    const a = redisStreamConsumer({ ...opts, store: crashing, retryDelayMs: 3_600_000 });
    await a.start();
    await until(
      () => crashing.crashed,
      () => 'the first batch',
    );
    await a.stop(); // interrupts the retry delay
    assert.equal(a.consumed, 0);
    const b = redisStreamConsumer({ ...opts, store: real });
    await b.start();
    try {
      await until(
        () => b.consumed >= events.length,
        () => `consumed ${b.consumed} of ${events.length}`,
      );
      assert.equal(b.redelivered, 50);
      await checkAgainstReference(real, events, now, 'redis streams after crash');
    } finally {
      await b.stop();
    }
  });

  it('claims entries a crashed consumer of another name left pending (XAUTOCLAIM), without double counting', async () => {
    const stream = `${prefix}s3`;
    keys.push(stream);
    const now = Date.now();
    const real = new RedisWindowStore({ redis, prefix: `${prefix}w3:`, now: () => now });
    const events = streamEvents(17, 150, now);
    for (const [i, e] of events.entries()) await xadd(stream, e, i);
    const crashing = crashingStore(real);
    const opts = { redisUrl: REDIS_URL, view: streamView, stream, group: 'g', toEvent: fieldsToEvent, batch: 40, blockMs: 200 };
    const a = redisStreamConsumer({ ...opts, consumer: 'replica-1', store: crashing, retryDelayMs: 60_000 });
    await a.start();
    await until(
      () => crashing.crashed,
      () => 'the first batch',
    );
    await a.stop();
    const b = redisStreamConsumer({ ...opts, consumer: 'replica-2', store: real, claimIdleMs: 300 });
    await b.start();
    try {
      await until(
        () => b.consumed >= events.length,
        () => `consumed ${b.consumed} of ${events.length}`,
      );
      assert.equal(b.redelivered, 40);
      await checkAgainstReference(real, events, now, 'redis streams after claim');
      const pending = (await redis.xpending(stream, 'g')) as [number, ...unknown[]];
      assert.equal(pending[0], 0);
    } finally {
      await b.stop();
    }
  });
});
