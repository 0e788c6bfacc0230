/**
 * The gateway's rate limiter: the memory backend with an injected clock (exact refill, atomicity across
 * scopes, UTC quota rollover, concurrency, headers), the Redis backend against a real Redis on
 * 127.0.0.1:6379 (exactness and caps shared by three instances, lease expiry, atomic quotas, clock skew), and
 * Redis failures (refused port, a server that never answers, a Redis that freezes mid-session) in both fail
 * modes. Redis must be reachable in CI (CI=true); elsewhere its suite is skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, afterEach, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { MemoryLimiter, type Admission, type LimitScope, type LimitSpec } from '../src/gateway/limiter.js';
import { RedisLimiter, type RedisLimiterOptions } from '../src/gateway/redis-limiter.js';
import { closedPort, deleteKeys, REDIS_URL, redisReachable, until } from './registry-helpers.js';

const NONE: LimitSpec = { rps: null, burst: null, concurrency: null, dailyQuota: null, monthlyQuota: null };
const spec = (s: Partial<LimitSpec>): LimitSpec => ({ ...NONE, ...s });
const scope = (key: string, s: Partial<LimitSpec>): LimitScope => ({ key, spec: spec(s) });

/** A settable clock for the memory backend. */
function clock(iso: string): { now: () => number; set(iso: string): void; advance(ms: number): void } {
  let t = Date.parse(iso);
  return {
    now: () => t,
    set: (s) => {
      t = Date.parse(s);
    },
    advance: (ms) => {
      t += ms;
    },
  };
}

function headers(a: Admission): unknown {
  return { limit: a.limit, remaining: a.remaining, resetMs: a.resetMs };
}

describe('MemoryLimiter (injected clock)', () => {
  it('admits the burst at once, then refills exactly rps tokens per second', async () => {
    const c = clock('2024-01-15T12:00:00.000Z');
    const l = new MemoryLimiter({ now: c.now });
    const s = [scope('t:acme', { rps: 10, burst: 5 })];
    for (let i = 0; i < 5; i++) {
      const a = await l.admit(s);
      assert.equal(a.allowed, true);
      assert.deepEqual(headers(a), { limit: 5, remaining: 4 - i, resetMs: 100 * (i + 1) }, `request ${i}`);
      assert.equal(a.retryAfterMs, 0);
      assert.equal(a.reason, null);
    }
    const sixth = await l.admit(s);
    assert.equal(sixth.allowed, false);
    assert.equal(sixth.reason, 'rate');
    assert.equal(sixth.scope, 't:acme');
    assert.equal(sixth.retryAfterMs, 100);
    assert.deepEqual(headers(sixth), { limit: 5, remaining: 0, resetMs: 500 });

    // Try every millisecond for one second: exactly one admission per 100 ms, at the 100 ms marks.
    const admittedAt: number[] = [];
    for (let ms = 1; ms <= 1000; ms++) {
      c.advance(1);
      if ((await l.admit(s)).allowed) admittedAt.push(ms);
    }
    assert.deepEqual(admittedAt, [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);

    // An idle bucket refills to its capacity, not beyond.
    c.advance(60_000);
    let n = 0;
    while ((await l.admit(s)).allowed) n++;
    assert.equal(n, 5);
    await l.close();
  });

  it('defaults the burst to ceil(rps) and supports fractional rates', async () => {
    const c = clock('2024-01-15T12:00:00.000Z');
    const l = new MemoryLimiter({ now: c.now });
    const s = [scope('k:slow', { rps: 0.5 })];
    const a = await l.admit(s);
    assert.deepEqual(headers(a), { limit: 1, remaining: 0, resetMs: 2000 });
    const b = await l.admit(s);
    assert.equal(b.reason, 'rate');
    assert.equal(b.retryAfterMs, 2000);
    c.advance(1999);
    assert.equal((await l.admit(s)).retryAfterMs, 1);
    c.advance(1);
    assert.equal((await l.admit(s)).allowed, true);
  });

  it('a request rejected by one scope consumes nothing from the others', async () => {
    const c = clock('2024-01-15T12:00:00.000Z');
    const l = new MemoryLimiter({ now: c.now });
    const a = scope('t:acme', { rps: 100, burst: 10, concurrency: 5, dailyQuota: 100, monthlyQuota: 1000 });
    const b = scope('k:sy_ab12cd', { rps: 1, burst: 1 });
    assert.equal((await l.admit([b])).allowed, true, 'B is now empty');
    for (let i = 0; i < 3; i++) {
      const r = await l.admit([a, b]);
      assert.equal(r.allowed, false);
      assert.equal(r.reason, 'rate');
      assert.equal(r.scope, 'k:sy_ab12cd');
      r.release();
    }
    const alone = await l.admit([a]);
    assert.equal(alone.allowed, true);
    assert.equal(alone.remaining, 9, 'no token of A was taken by the rejected requests');
    assert.deepEqual(alone.quota, { period: 'day', limit: 100, remaining: 99, resetMs: 12 * 3_600_000 });
    // A's concurrency: 5 slots, one held by `alone`; the rejected requests held none.
    const held = [];
    for (let i = 0; i < 4; i++) held.push(await l.admit([a]));
    assert.ok(held.every((h) => h.allowed));
    assert.equal((await l.admit([a])).reason, 'concurrency');
  });

  it('daily quota: rejects with quota_daily until UTC midnight, then admits again', async () => {
    const c = clock('2024-03-10T23:59:58.000Z');
    const l = new MemoryLimiter({ now: c.now });
    const s = [scope('t:acme', { rps: 1000, dailyQuota: 3 })];
    for (let i = 0; i < 3; i++) {
      const a = await l.admit(s);
      assert.equal(a.allowed, true);
      assert.deepEqual(a.quota, { period: 'day', limit: 3, remaining: 2 - i, resetMs: 2000 });
    }
    const r = await l.admit(s);
    assert.equal(r.allowed, false);
    assert.equal(r.reason, 'quota_daily');
    assert.equal(r.retryAfterMs, 2000);
    assert.deepEqual(r.quota, { period: 'day', limit: 3, remaining: 0, resetMs: 2000 });
    assert.equal(r.remaining, 997, 'the rejection took no token');
    c.set('2024-03-10T23:59:59.999Z');
    assert.equal((await l.admit(s)).retryAfterMs, 1);
    c.set('2024-03-11T00:00:00.000Z');
    const next = await l.admit(s);
    assert.equal(next.allowed, true);
    assert.deepEqual(next.quota, { period: 'day', limit: 3, remaining: 2, resetMs: 86_400_000 });
  });

  it('monthly quota: quota_monthly until the 1st of the next month; rejected requests do not count', async () => {
    const c = clock('2024-02-29T23:00:00.000Z');
    const l = new MemoryLimiter({ now: c.now });
    const s = [scope('t:acme', { dailyQuota: 10, monthlyQuota: 2 })];
    assert.equal((await l.admit(s)).allowed, true);
    const second = await l.admit(s);
    assert.deepEqual(second.quota, { period: 'month', limit: 2, remaining: 0, resetMs: 3_600_000 });
    for (let i = 0; i < 5; i++) {
      const r = await l.admit(s);
      assert.equal(r.reason, 'quota_monthly');
      assert.equal(r.retryAfterMs, 3_600_000);
      assert.deepEqual(headers(r), { limit: null, remaining: null, resetMs: null }, 'no rate limit, no rate headers');
    }
    c.set('2024-03-01T00:00:00.000Z');
    const a = await l.admit(s);
    assert.equal(a.allowed, true);
    assert.deepEqual(a.quota, { period: 'month', limit: 2, remaining: 1, resetMs: 31 * 86_400_000 });
    // The daily count of Feb 29 was 2 (the 5 rejected did not count); March 1 starts at 0: 9 left today.
    c.set('2024-03-01T00:00:01.000Z');
    const b = await l.admit([scope('t:acme', { dailyQuota: 10 })]);
    assert.deepEqual(b.quota, { period: 'day', limit: 10, remaining: 8, resetMs: 86_399_000 });
  });

  it('reports the longest-lasting failure: monthly, daily, rate, concurrency; retryAfterMs is the largest wait', async () => {
    const c = clock('2024-05-31T23:59:00.000Z');
    const l = new MemoryLimiter({ now: c.now });
    const s = [scope('k:key', { rps: 1, burst: 1, concurrency: 1 }), scope('t:acme', { dailyQuota: 1 }), scope('m:acme:resnet', { monthlyQuota: 1 })];
    const first = await l.admit(s);
    assert.equal(first.allowed, true);
    let r = await l.admit(s);
    assert.deepEqual([r.reason, r.scope, r.retryAfterMs], ['quota_monthly', 'm:acme:resnet', 60_000]);
    r = await l.admit(s.slice(0, 2));
    assert.deepEqual([r.reason, r.scope, r.retryAfterMs], ['quota_daily', 't:acme', 60_000]);
    r = await l.admit(s.slice(0, 1));
    assert.deepEqual([r.reason, r.scope, r.retryAfterMs], ['rate', 'k:key', 1000]);
    c.advance(1000);
    r = await l.admit(s.slice(0, 1));
    assert.deepEqual([r.reason, r.scope, r.retryAfterMs], ['concurrency', 'k:key', 100]);
    first.release();
    assert.equal((await l.admit(s.slice(0, 1))).allowed, true);
  });

  it('concurrency: caps requests in flight; release frees one slot, once', async () => {
    const l = new MemoryLimiter();
    const s = [scope('t:acme', { concurrency: 2 })];
    const a = await l.admit(s);
    const b = await l.admit(s);
    assert.ok(a.allowed && b.allowed);
    const c = await l.admit(s);
    assert.deepEqual([c.allowed, c.reason, c.scope, c.retryAfterMs], [false, 'concurrency', 't:acme', 100]);
    c.release(); // a rejected admission holds nothing
    assert.equal((await l.admit(s)).allowed, false);
    a.release();
    a.release();
    a.release();
    const d = await l.admit(s);
    assert.equal(d.allowed, true, 'one slot freed');
    assert.equal((await l.admit(s)).allowed, false, 'releasing twice freed only one slot');
    b.release();
    d.release();
    assert.equal((await l.admit(s)).allowed, true);
  });

  it('headers come from the rate-limited scope with the fewest tokens left; no limits admit with nulls', async () => {
    const c = clock('2024-01-15T12:00:00.000Z');
    const l = new MemoryLimiter({ now: c.now });
    const s = [scope('t:acme', { rps: 100, burst: 50 }), scope('k:key', { rps: 2, burst: 3 }), scope('m:x', { concurrency: 9 })];
    const a = await l.admit(s);
    assert.deepEqual(headers(a), { limit: 3, remaining: 2, resetMs: 500 });
    assert.equal(a.quota, null);
    assert.equal(a.degraded, false);
    const free = await l.admit([scope('t:free', {})]);
    assert.deepEqual(
      [free.allowed, free.reason, free.limit, free.remaining, free.resetMs, free.quota, free.retryAfterMs],
      [true, null, null, null, null, null, 0],
    );
    assert.equal((await l.admit([])).allowed, true);
  });

  it('rejects invalid specs and repeated keys with a RangeError naming the scope', async () => {
    const l = new MemoryLimiter();
    await assert.rejects(l.admit([scope('t:a', { rps: 0 })]), (e: unknown) => e instanceof RangeError && /t:a.*rps/.test(e.message));
    await assert.rejects(l.admit([scope('t:a', { rps: 1, burst: 0 })]), RangeError);
    await assert.rejects(l.admit([scope('t:a', { concurrency: -1 })]), RangeError);
    await assert.rejects(l.admit([scope('t:a', { dailyQuota: 1.5 })]), RangeError);
    await assert.rejects(l.admit([scope('t:a', { rps: 1 }), scope('t:a', { rps: 2 })]), /twice/);
    const zero = await l.admit([scope('t:off', { dailyQuota: 0 })]);
    assert.equal(zero.reason, 'quota_daily', 'a quota of 0 admits nothing');
  });

  it('forgets idle scopes, so the state stays bounded by the scopes in use', async () => {
    const c = clock('2024-01-15T12:00:00.000Z');
    const l = new MemoryLimiter({ now: c.now });
    for (let i = 0; i < 3000; i++) await l.admit([scope(`k:${i}`, { rps: 10 })]);
    c.advance(2000);
    for (let i = 0; i < 1100; i++) await l.admit([scope('k:hot', { rps: 1e6 })]);
    assert.ok(l.size < 100, `idle buckets swept (${l.size} left)`);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Redis

const { hostname: REDIS_HOST, port: redisPort } = new URL(REDIS_URL);
const REDIS_PORT = Number(redisPort || 6379);

/** A TCP server; `onSocket` decides what happens to each connection. Close destroys every connection. */
async function tcpServer(onSocket: (s: Socket) => void, port = 0): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onSocket(s);
  });
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', r));
  return {
    port: (srv.address() as { port: number }).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** A TCP proxy to the real Redis on `port` (0: any); while `frozen`, Redis's replies are dropped (a hung Redis). */
async function redisProxy(port: number): Promise<{ port: number; frozen: boolean; close(): Promise<void> }> {
  const upstreams = new Set<Socket>();
  const state = { frozen: false };
  const srv = await tcpServer((client) => {
    const up = connect(REDIS_PORT, REDIS_HOST);
    upstreams.add(up);
    up.on('error', () => client.destroy());
    up.on('close', () => {
      upstreams.delete(up);
      client.destroy();
    });
    client.on('close', () => up.destroy());
    client.on('data', (d) => up.write(d));
    up.on('data', (d) => {
      if (!state.frozen) client.write(d);
    });
  }, port);
  return {
    port: srv.port,
    get frozen() {
      return state.frozen;
    },
    set frozen(v: boolean) {
      state.frozen = v;
    },
    close: async () => {
      for (const u of upstreams) u.destroy();
      await srv.close();
    },
  };
}

/** Admits through `l`, recording how long it took. */
async function timed(l: RedisLimiter, s: LimitScope[]): Promise<{ a: Admission; ms: number }> {
  const t0 = performance.now();
  const a = await l.admit(s);
  return { a, ms: performance.now() - t0 };
}

/** ms since epoch by Redis TIME. */
async function serverMs(r: Redis): Promise<number> {
  const [s, us] = await r.time();
  return Number(s) * 1000 + Number(us) / 1000;
}

function redisSuite(): void {
  const prefix = `sy:rl:test:${randomBytes(4).toString('hex')}:`;
  let admin: Redis;
  const open: RedisLimiter[] = [];
  /** Backend errors of the limiters below: none expected while Redis is up (checked after each test). */
  const backendErrors: Error[] = [];
  const limiter = (o: Partial<RedisLimiterOptions> = {}): RedisLimiter => {
    const l = new RedisLimiter({ url: REDIS_URL, prefix, failMode: 'closed', onBackendError: (e) => backendErrors.push(e), ...o });
    open.push(l);
    return l;
  };
  const connected = async (...ls: RedisLimiter[]): Promise<void> => until(() => ls.every((l) => l.connected));

  before(async () => {
    admin = new Redis(REDIS_URL, { lazyConnect: true });
    await admin.connect();
  });
  afterEach(() => {
    const errs = backendErrors.splice(0);
    assert.deepEqual(
      errs.map((e) => e.message),
      [],
      'no backend errors',
    );
  });
  after(async () => {
    await Promise.all(open.map((l) => l.close()));
    await deleteKeys(admin, prefix);
    await admin.quit();
  });

  it('three instances hammering one scope admit rps × seconds + burst, within 1%', async () => {
    const ls = [limiter(), limiter(), limiter()];
    await connected(...ls);
    const rps = 200;
    const burst = 40;
    const s = [scope('t:exact', { rps, burst })];
    // The window is measured on the server clock, from the first to the last token taken: the bucket's `ts`
    // (server ms of its latest consume) read as soon as the first admission returns (the burst is still being
    // spent), and again at the end. A full bucket loses refill while idle, so the window must start at the
    // first consume, not at some earlier instant.
    const bucket = `${prefix}b:t:exact`;
    let first: Promise<string | null> | null = null;
    let admitted = 0;
    let calls = 0;
    const stopAt = Date.now() + 3000;
    await Promise.all(
      ls.flatMap((l) =>
        Array.from({ length: 4 }, async () => {
          while (Date.now() < stopAt) {
            const a = await l.admit(s);
            calls++;
            if (a.allowed) {
              admitted++;
              first ??= admin.hget(bucket, 'ts');
            }
          }
        }),
      ),
    );
    const t0 = Number(await first);
    const t1 = Number(await admin.hget(bucket, 'ts'));
    const expected = burst + (rps * (t1 - t0)) / 1000;
    assert.ok(t1 - t0 > 2900, `a ~3 s window (${(t1 - t0).toFixed(0)} ms)`);
    assert.ok(calls > 5 * expected, `hammered well above the rate (${calls} calls)`);
    assert.ok(Math.abs(admitted - expected) <= 0.01 * expected, `admitted ${admitted}, expected ${expected.toFixed(1)} ± 1%`);
  });

  it('a concurrency cap holds across instances', async () => {
    const ls = [limiter(), limiter(), limiter()];
    await connected(...ls);
    const s = [scope('t:conc', { concurrency: 3 })];
    let inFlight = 0;
    let peak = 0;
    let served = 0;
    let rejected = 0;
    const stopAt = Date.now() + 600;
    await Promise.all(
      ls.flatMap((l) =>
        Array.from({ length: 6 }, async () => {
          while (Date.now() < stopAt) {
            const a = await l.admit(s);
            if (!a.allowed) {
              assert.equal(a.reason, 'concurrency');
              rejected++;
              await sleep(1);
              continue;
            }
            inFlight++;
            peak = Math.max(peak, inFlight);
            await sleep(2 + Math.random() * 6);
            inFlight--;
            served++;
            a.release();
          }
        }),
      ),
    );
    assert.equal(peak, 3, 'never more than 3 in flight across the 3 instances, and the cap was reached');
    assert.ok(served > 30 && rejected > 0, `served ${served}, rejected ${rejected}`);
    await sleep(50);
    assert.equal(await admin.zcard(`${prefix}c:t:conc`), 0, 'every lease was released');
  });

  it("a slot never released frees itself after leaseMs (a crashed replica's)", async () => {
    const crashed = limiter({ leaseMs: 300 });
    const other = limiter({ leaseMs: 300 });
    await connected(crashed, other);
    const s = [scope('t:lease', { concurrency: 1 })];
    const lost = await crashed.admit(s);
    assert.equal(lost.allowed, true);
    assert.equal((await other.admit(s)).reason, 'concurrency');
    await sleep(350);
    const b = await other.admit(s);
    assert.equal(b.allowed, true, 'the expired lease no longer counts');
    lost.release(); // late: removes only its own (expired) lease
    await sleep(20);
    assert.equal((await other.admit(s)).reason, 'concurrency', "b's slot is still held");
    b.release();
    await sleep(20);
    assert.equal(await admin.zcard(`${prefix}c:t:lease`), 0, 'release removed the lease');
  });

  it('quotas are shared and atomic: 90 concurrent requests on 3 instances, exactly the quota admitted', async () => {
    const ls = [limiter(), limiter(), limiter()];
    await connected(...ls);
    const s = [scope('t:quota', { dailyQuota: 40, monthlyQuota: 1000 })];
    const results = await Promise.all(ls.flatMap((l) => Array.from({ length: 30 }, () => l.admit(s))));
    assert.equal(results.filter((a) => a.allowed).length, 40);
    assert.ok(results.filter((a) => !a.allowed).every((a) => a.reason === 'quota_daily' && a.scope === 't:quota'));
    const now = new Date(await serverMs(admin));
    const day = now.toISOString().slice(0, 10);
    const dayKey = `${prefix}d:t:quota:${day}`;
    const monthKey = `${prefix}m:t:quota:${day.slice(0, 7)}`;
    assert.equal(await admin.get(dayKey), '40', 'rejected requests did not count');
    assert.equal(await admin.get(monthKey), '40');
    const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
    const ttl = await admin.pttl(dayKey);
    assert.ok(Math.abs(now.getTime() + ttl - (midnight + 3_600_000)) < 5000, 'the day counter expires an hour after UTC midnight');
    const r = results.find((a) => !a.allowed)!;
    assert.ok(Math.abs(r.retryAfterMs - (midnight - now.getTime())) < 5000, 'retry at UTC midnight');

    const m = [scope('t:monthly', { monthlyQuota: 5 })];
    const monthly = await Promise.all(ls.flatMap((l) => Array.from({ length: 4 }, () => l.admit(m))));
    assert.equal(monthly.filter((a) => a.allowed).length, 5);
    assert.ok(monthly.filter((a) => !a.allowed).every((a) => a.reason === 'quota_monthly' && a.quota?.period === 'month'));
  });

  it('a request rejected by one scope consumes nothing from the others', async () => {
    const l = limiter();
    await connected(l);
    const a = scope('t:atomic', { rps: 100, burst: 10, concurrency: 5, dailyQuota: 100 });
    const b = scope('k:atomic', { dailyQuota: 0 });
    for (let i = 0; i < 3; i++) {
      const r = await l.admit([a, b]);
      assert.deepEqual([r.allowed, r.reason, r.scope], [false, 'quota_daily', 'k:atomic']);
    }
    const ok = await l.admit([a]);
    assert.equal(ok.allowed, true);
    assert.equal(ok.remaining, 9);
    assert.equal(ok.quota?.remaining, 99);
    assert.equal(await admin.zcard(`${prefix}c:t:atomic`), 1);
    ok.release();
    assert.ok((await admin.pttl(`${prefix}b:t:atomic`)) > 0, 'the bucket key expires');
  });

  it('a replica with a skewed clock still counts in the server day', async () => {
    const l = limiter({ now: () => Date.now() + 3 * 86_400_000 });
    await connected(l);
    const a = await l.admit([scope('t:skew', { dailyQuota: 5 })]);
    assert.equal(a.allowed, true);
    assert.equal(a.degraded, false);
    const day = new Date(await serverMs(admin)).toISOString().slice(0, 10);
    assert.equal(await admin.get(`${prefix}d:t:skew:${day}`), '1');
    const skewedDay = new Date(Date.now() + 3 * 86_400_000).toISOString().slice(0, 10);
    assert.equal(await admin.exists(`${prefix}d:t:skew:${skewedDay}`), 0, 'nothing counted in the replica-local day');
    assert.equal((await l.admit([scope('t:skew', { dailyQuota: 5 })])).quota?.remaining, 3);
  });

  it('starts while Redis is unreachable, then recovers on its own when it comes up', async () => {
    const port = await closedPort();
    const errors: Error[] = [];
    const l = new RedisLimiter({ url: `redis://127.0.0.1:${port}`, prefix, failMode: 'closed', onBackendError: (e) => errors.push(e) });
    const s = [scope('t:recover', { rps: 100 })];
    try {
      assert.equal((await l.admit(s)).reason, 'unavailable');
      await sleep(200);
      assert.equal((await l.admit(s)).reason, 'unavailable');
      assert.equal(errors.length, 2);
      const proxy = await redisProxy(port);
      try {
        await until(() => l.connected);
        const a = await l.admit(s);
        assert.deepEqual([a.allowed, a.degraded, a.remaining], [true, false, 99]);
        assert.equal(errors.length, 2);
      } finally {
        await l.close();
        await proxy.close();
      }
    } finally {
      await l.close(); // a no-op when already closed above
    }
  });

  it('a Redis that freezes mid-session: admit resolves by the fail mode within the timeout', async () => {
    const proxy = await redisProxy(0);
    try {
      for (const failMode of ['open', 'closed'] as const) {
        proxy.frozen = false;
        const errors: Error[] = [];
        const l = new RedisLimiter({ url: `redis://127.0.0.1:${proxy.port}`, prefix, failMode, timeoutMs: 50, onBackendError: (e) => errors.push(e) });
        await until(() => l.connected);
        const s = [scope(`t:freeze-${failMode}`, { rps: 100, concurrency: 10 })];
        assert.equal((await l.admit(s)).allowed, true);
        proxy.frozen = true;
        const { a } = await timed(l, s); // resolves: a frozen Redis never answers, so a hang is the runner's timeout
        if (failMode === 'open') assert.deepEqual([a.allowed, a.degraded, a.limit, a.quota], [true, true, null, null]);
        else assert.deepEqual([a.allowed, a.reason, a.retryAfterMs, a.degraded], [false, 'unavailable', 1000, false]);
        assert.equal(errors.length, 1);
        assert.match(errors[0]!.message, /timed out|did not answer/);
        a.release();
        await l.close();
      }
    } finally {
      await proxy.close();
    }
  });
}

const redisDown = await redisReachable();
const inCi = process.env['CI'] === 'true';
if (redisDown !== null && inCi) {
  describe('RedisLimiter on a real Redis', () => {
    it(`needs Redis on ${REDIS_HOST}:${REDIS_PORT} in CI`, () => assert.fail(`Redis is unreachable at ${REDIS_URL}: ${redisDown}`));
  });
} else {
  describe(
    'RedisLimiter on a real Redis',
    { skip: redisDown === null ? false : `Redis unreachable at ${REDIS_URL} (${redisDown}); set CI=true to make this fail` },
    () => {
      redisSuite();
    },
  );
}

describe('RedisLimiter when Redis is unreachable or hung (no Redis needed)', () => {
  const s = [scope('t:acme', { rps: 10, concurrency: 2, dailyQuota: 5 })];

  for (const failMode of ['open', 'closed'] as const) {
    it(`a refused port: resolves at once (fail ${failMode}) and reports each failure`, async () => {
      const errors: Error[] = [];
      const l = new RedisLimiter({ url: `redis://127.0.0.1:${await closedPort()}`, prefix: 'sy:rl:none:', failMode, onBackendError: (e) => errors.push(e) });
      const results = [];
      for (let i = 0; i < 3; i++) {
        const { a } = await timed(l, s); // resolves: a frozen Redis never answers, so a hang is the runner's timeout
        results.push(a);
        if (i === 0) await sleep(50); // let the first connection attempt fail, so later errors name the cause
      }
      for (const a of results) {
        if (failMode === 'open')
          assert.deepEqual(
            [a.allowed, a.degraded, a.reason, a.limit, a.remaining, a.resetMs, a.quota, a.retryAfterMs],
            [true, true, null, null, null, null, null, 0],
          );
        else assert.deepEqual([a.allowed, a.reason, a.scope, a.retryAfterMs, a.degraded], [false, 'unavailable', null, 1000, false]);
        a.release();
        a.release();
      }
      assert.equal(errors.length, 3, 'onBackendError once per failed admit');
      assert.match(errors[2]!.message, /ECONNREFUSED/);
      assert.equal(l.connected, false);
      await l.close();
      await l.close();
      const late = await l.admit(s);
      assert.equal(late.allowed, failMode === 'open', 'after close: the fail mode answers');
    });

    it(`a server that accepts and never answers: resolves within the timeout (fail ${failMode})`, async () => {
      const srv = await tcpServer(() => {});
      const errors: Error[] = [];
      const l = new RedisLimiter({ url: `redis://127.0.0.1:${srv.port}`, failMode, timeoutMs: 50, onBackendError: (e) => errors.push(e) });
      try {
        await sleep(100); // connected at the TCP level, handshake unanswered
        for (let i = 0; i < 3; i++) {
          const { a } = await timed(l, s); // resolves: a frozen Redis never answers, so a hang is the runner's timeout
          assert.equal(a.allowed, failMode === 'open');
          assert.equal(a.reason, failMode === 'open' ? null : 'unavailable');
          assert.equal(a.degraded, failMode === 'open');
        }
        assert.equal(errors.length, 3);
      } finally {
        await l.close();
        await srv.close();
      }
    });
  }

  it('an admit with nothing to limit needs no backend', async () => {
    const l = new RedisLimiter({
      url: `redis://127.0.0.1:${await closedPort()}`,
      failMode: 'closed',
      onBackendError: () => assert.fail('no backend call expected'),
    });
    const a = await l.admit([scope('t:free', {})]);
    assert.deepEqual([a.allowed, a.degraded], [true, false]);
    await l.close();
  });
});
