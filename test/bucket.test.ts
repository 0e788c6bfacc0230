/**
 * The token-bucket math shared by the request limiter (rps / burst) and the LLM API's token limiter (rpm / tpm):
 * refill, holds, take, whole, the waits (retry-after, reset), the memory state, both memory limiters built on it
 * (injected clocks: exact values), and the Lua routine giving the same floats as the TypeScript on a real Redis.
 * Redis must be reachable in CI (CI=true); elsewhere that suite is skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import {
  BUCKET_LUA,
  ceilMs,
  EPS,
  heldLevel,
  holds,
  levelAt,
  msUntil,
  msUntilFull,
  refill,
  retryMs,
  take,
  whole,
  type BucketShape,
} from '../src/gateway/bucket.js';
import { MemoryLimiter, type LimitSpec } from '../src/gateway/limiter.js';
import { MemoryTokenLimiter } from '../src/gateway/token-limits.js';
import { deleteKeys, describeNeeding, REDIS_URL, redisReachable } from './registry-helpers.js';

/** burst 5, 2 per second (a request limiter's rate bucket). */
const RPS: BucketShape = { cap: 5, rate: 2, perMs: 1000 };
/** 600 per minute (an LLM tpm bucket: capacity = refill per minute). */
const TPM: BucketShape = { cap: 600, rate: 600, perMs: 60_000 };

describe('bucket math', () => {
  it('refills continuously at rate per perMs, capped, never for a negative elapsed time', () => {
    assert.equal(refill(RPS, 0, 250), 0.5);
    assert.equal(refill(RPS, 0, 1000), 2);
    assert.equal(refill(RPS, 4, 1000), 5, 'capped at cap');
    assert.equal(refill(RPS, 1, -500), 1, 'a clock going backwards refills nothing');
    assert.equal(refill(TPM, 0, 1000), 10);
    assert.equal(refill(TPM, -120, 6000), -60, 'a negative level refills from below zero');
  });

  it('holds a cost with float slack, and not below it', () => {
    assert.equal(holds(1, 1), true);
    assert.equal(holds(1 - EPS / 10, 1), true, '0.9999999999 holds one unit');
    assert.equal(holds(1 - EPS * 10, 1), false);
    assert.equal(holds(0, 0), true, 'a zero cost always fits a non-negative level');
    assert.equal(holds(-1, 0), false);
  });

  it('takes a cost; a refund (negative cost) never fills above cap', () => {
    assert.equal(take(RPS, 3, 1), 2);
    assert.equal(take(TPM, 100, 250), -150, 'may go negative (a charge beyond the reservation)');
    assert.equal(take(RPS, 3, -1), 4);
    assert.equal(take(RPS, 3, -10), 5);
  });

  it('counts whole units (floor with slack, never negative) for x-ratelimit-remaining', () => {
    assert.equal(whole(2.5), 2);
    assert.equal(whole(3 - EPS / 10), 3);
    assert.equal(whole(0.999), 0);
    assert.equal(whole(-4), 0);
  });

  it('waits: until a level holds a target, until full, and the retry delay (at least 1 ms)', () => {
    assert.equal(msUntil(RPS, 0.5, 1), 250);
    assert.equal(msUntil(RPS, 2, 1), 0, 'already holds: no wait');
    assert.equal(msUntilFull(RPS, 0.5), 2250);
    assert.equal(msUntilFull(RPS, 5), 0);
    assert.equal(retryMs(RPS, 0.5, 1), 250);
    assert.equal(retryMs(RPS, 1 - EPS / 10, 1), 1, 'a bucket that (almost) holds the cost still reports 1 ms');
    assert.equal(retryMs(TPM, 10, 100), 9000);
    assert.equal(retryMs(TPM, -30, 10), 4000, 'a negative level waits to refill from below zero');
  });

  it('ceilMs rounds a computed duration up, forgiving float noise, never below 0', () => {
    assert.equal(ceilMs(100.00000001), 100);
    assert.equal(ceilMs(100.01), 101);
    assert.equal(ceilMs(-5), 0);
    // 0.3 tokens short at 3 per second: (1 - 0.7) * 1000 / 3 is 100.00000000000001 in floats, and waits 100 ms.
    assert.equal(msUntil({ cap: 10, rate: 3, perMs: 1000 }, 0.7, 1), 100);
  });

  it('memory state: absent is full; a held level refills with the clock and knows when it is full again', () => {
    let now = 1_000_000;
    assert.equal(levelAt(RPS, undefined, now), 5, 'never used: full');
    let held = heldLevel(RPS, take(RPS, levelAt(RPS, undefined, now), 5), now);
    assert.deepEqual(held, { level: 0, at: now, fullAt: now + 2500 });
    now += 1000;
    assert.equal(levelAt(RPS, held, now), 2);
    held = heldLevel(RPS, take(RPS, levelAt(RPS, held, now), 1), now);
    assert.deepEqual(held, { level: 1, at: now, fullAt: now + 2000 });
    assert.equal(levelAt(RPS, held, held.fullAt), 5);
    assert.equal(levelAt(RPS, held, held.fullAt + 60_000), 5, 'stays at cap');
    assert.equal(levelAt(RPS, held, now - 10), 1, 'an earlier instant (clock step back) refills nothing');
  });
});

describe('both memory limiters follow the shared math (injected clock)', () => {
  const NONE: LimitSpec = { rps: null, burst: null, concurrency: null, dailyQuota: null, monthlyQuota: null };

  it('MemoryLimiter: headers and retry delays are the bucket functions of the observed level', async () => {
    let t = Date.parse('2024-01-15T12:00:00.000Z');
    const l = new MemoryLimiter({ now: () => t });
    const s = [{ key: 't:a', spec: { ...NONE, rps: 2, burst: 5 } }];
    let level = RPS.cap;
    for (let i = 0; i < 5; i++) {
      const a = await l.admit(s);
      level = take(RPS, level, 1);
      assert.deepEqual([a.allowed, a.limit, a.remaining, a.resetMs], [true, 5, whole(level), msUntilFull(RPS, level)]);
    }
    t += 100;
    level = refill(RPS, level, 100);
    const r = await l.admit(s);
    assert.deepEqual([r.allowed, r.reason, r.retryAfterMs, r.remaining, r.resetMs], [false, 'rate', retryMs(RPS, level, 1), 0, msUntilFull(RPS, level)]);
    assert.equal(r.retryAfterMs, 400);
    t += 400;
    assert.equal((await l.admit(s)).allowed, true, 'admitted exactly when the retry delay has passed');
  });

  it('MemoryTokenLimiter: headers and retry delays are the bucket functions of the observed level', async () => {
    let t = 0;
    const l = new MemoryTokenLimiter({ now: () => t });
    const s = [{ key: 't:a', rpm: null, tpm: 600 }];
    const full = await l.reserve(s, 600);
    assert.deepEqual(full.tokens, { limit: 600, remaining: 0, resetMs: msUntilFull(TPM, 0) });
    t += 1000;
    const r = await l.reserve(s, 100);
    assert.deepEqual([r.allowed, r.reason, r.retryAfterMs], [false, 'tokens', retryMs(TPM, refill(TPM, 0, 1000), 100)]);
    assert.equal(r.retryAfterMs, 9000);
    t += 9000;
    const ok = await l.reserve(s, 100);
    assert.equal(ok.allowed, true);
    await ok.settle(400); // charged 300 beyond the reservation: the level goes to -300
    assert.deepEqual((await l.reserve(s, 0)).tokens, { limit: 600, remaining: 0, resetMs: msUntilFull(TPM, -300) });
    assert.equal((await l.reserve(s, 1)).retryAfterMs, retryMs(TPM, -300, 1));
  });
});

describeNeeding('BUCKET_LUA on a real Redis', `Redis at ${REDIS_URL}`, await redisReachable(), () => {
  const prefix = `sy:bucket:test:${randomBytes(4).toString('hex')}:`;
  let redis: Redis;
  before(() => {
    redis = new Redis(REDIS_URL);
  });
  after(async () => {
    await deleteKeys(redis, prefix);
    redis.disconnect();
  });

  /** Runs the routine on KEYS[1] with ARGV cap, rate, per, cost; replies {now, level, holds, taken}. */
  const PROBE = `${BUCKET_LUA}
local cap, rate, per, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local l = bucket_level(KEYS[1], 'v', cap, rate, per)
return {nowStr, string.format('%.17g', l), bucket_holds(l, cost) and 1 or 0, string.format('%.17g', bucket_take(l, cost, cap))}
`;
  const probe = async (key: string, b: BucketShape, cost: number): Promise<{ now: number; level: number; holds: boolean; taken: number }> => {
    const [now, level, h, taken] = (await redis.eval(PROBE, 1, key, b.cap, b.rate, b.perMs, cost)) as [string, string, number, string];
    return { now: Number(now), level: Number(level), holds: h === 1, taken: Number(taken) };
  };

  it('an absent bucket is full', async () => {
    const p = await probe(`${prefix}absent`, RPS, 1);
    assert.deepEqual([p.level, p.holds, p.taken], [5, true, 4]);
  });

  it('refills, compares and takes to the same floats as the TypeScript, timed by the server clock', async () => {
    for (const [b, stored, ageMs, cost] of [
      [RPS, 0.3, 1234.5, 1],
      [TPM, -120.25, 7001, 37],
      [RPS, 4.9, 99_000, 1],
      [TPM, 3, 17, 600],
    ] as const) {
      const key = `${prefix}b:${b.perMs}:${stored}`;
      const [sec, usec] = await redis.time();
      const ts = Number(sec) * 1000 + Number(usec) / 1000 - ageMs;
      await redis.hset(key, 'v', String(stored), 'ts', String(ts));
      const p = await probe(key, b, cost);
      const level = refill(b, stored, p.now - ts);
      assert.equal(p.level, level, `level of ${JSON.stringify({ b, stored, ageMs })}`);
      assert.equal(p.holds, holds(level, cost));
      assert.equal(p.taken, take(b, level, cost));
    }
  });

  it('stores a level at the server time, expiring grace ms after the bucket would be full again', async () => {
    const key = `${prefix}store`;
    const STORE = `${BUCKET_LUA}
bucket_store(KEYS[1], 'v', tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
return nowStr`;
    const now = Number(await redis.eval(STORE, 1, key, 0.5, RPS.cap, RPS.rate, RPS.perMs, 1000));
    const h = await redis.hgetall(key);
    assert.deepEqual([h['v'], Number(h['ts'])], ['0.5', now]);
    const ttl = await redis.pttl(key);
    const expected = msUntilFull(RPS, 0.5) + 1000;
    assert.ok(ttl > 0 && ttl <= expected, `pttl ${ttl} within (0, ${expected}]`);
  });
});
