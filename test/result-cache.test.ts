/**
 * The result cache: key distinctness and stability, the memory LRU (hits, TTL, byte-bound eviction, oversize
 * entries, copy isolation), the binary (de)serialization, and the Redis backend against a real Redis on
 * 127.0.0.1:6379 (hits shared by two instances, PX expiry) plus a dead and a hung Redis (misses, never throws).
 * Redis must be reachable in CI (CI=true); elsewhere its suite is skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { cacheKey, decodeOutputs, encodeOutputs, MemoryResultCache, RedisResultCache, type CacheKeyParts } from '../src/routing/cache.js';
import { DTYPES, type TensorData, type V2Datatype } from '../src/tensor/dtype.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { REDIS_URL, redisReachable } from './registry-helpers.js';

const t = (dtype: V2Datatype, shape: number[], data: TensorData): Tensor => ({ dtype: DTYPES[dtype], shape, data });
const f32 = (values: number[], shape = [values.length]): Tensor => t('FP32', shape, Float32Array.from(values));
const bytes = (values: string[], shape = [values.length]): Tensor =>
  t(
    'BYTES',
    shape,
    values.map((x) => new Uint8Array(Buffer.from(x))),
  );

const BASE: CacheKeyParts = { tenant: 'acme', model: 'iris', version: 3, artifactSha256: 'a'.repeat(64), inputs: [f32([1, 2, 3, 4])] };
const key = (p: Partial<CacheKeyParts>): string => cacheKey({ ...BASE, ...p });

/** Plain values for deepEqual: dtype name, shape, elements as an array. */
function plain(ts: readonly Tensor[] | undefined): unknown {
  return ts?.map((x) => ({ dtype: x.dtype.v2, shape: [...x.shape], data: Array.from(x.data as ArrayLike<unknown>) }));
}

describe('cacheKey', () => {
  it('is stable, fixed-length and depends on contents, not object identity', () => {
    const k = key({});
    assert.match(k, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(key({}), k);
    assert.equal(key({ inputs: [f32([1, 2, 3, 4])] }), k);
    // Exactly the typed array's own bytes count, never its whole buffer.
    const big = Float32Array.from([9, 1, 2, 3, 4, 9]);
    assert.equal(key({ inputs: [t('FP32', [4], big.subarray(1, 5))] }), k);
    assert.equal(cacheKey({ tenant: 'acme', model: 'iris', version: 3, artifactSha256: 'a'.repeat(64), inputs: [f32([1, 2, 3, 4])] }), k);
  });

  it('differs for every part that differs', () => {
    const u8 = Uint8Array.from([0, 1, 0, 1]);
    const variants: Record<string, string> = {
      base: key({}),
      tenantNone: key({ tenant: '' }),
      tenantOther: key({ tenant: 'other' }),
      model: key({ model: 'iris2' }),
      version: key({ version: 4 }),
      sha: key({ artifactSha256: 'b'.repeat(64) }),
      // Same raw bytes, different dtype.
      int32: key({ inputs: [t('INT32', [4], new Int32Array(Float32Array.from([1, 2, 3, 4]).buffer))] }),
      uint8: key({ inputs: [t('UINT8', [4], u8)] }),
      bool: key({ inputs: [t('BOOL', [4], u8)] }),
      // Same bytes, different shape.
      shape2x2: key({ inputs: [f32([1, 2, 3, 4], [2, 2])] }),
      shape1x4: key({ inputs: [f32([1, 2, 3, 4], [1, 4])] }),
      data: key({ inputs: [f32([1, 2, 3, 5])] }),
      negZero: key({ inputs: [f32([-0, 2, 3, 4])] }),
      // Input boundaries: one input of 4 vs two of 2 (names are implied by order).
      split: key({ inputs: [f32([1, 2]), f32([3, 4])] }),
      noInputs: key({ inputs: [] }),
      bytesAB_C: key({ inputs: [bytes(['ab', 'c'])] }),
      bytesA_BC: key({ inputs: [bytes(['a', 'bc'])] }),
      bytesABC: key({ inputs: [bytes(['abc'], [1])] }),
      bytesUnicode: key({ inputs: [bytes(['ab', 'ç'])] }),
      bytesEmpty: key({ inputs: [bytes(['', 'abc'])] }),
      // String boundaries between fields.
      tenantModelShift: cacheKey({ ...BASE, tenant: 'acmei', model: 'ris' }),
    };
    const seen = new Map<string, string>();
    for (const [name, k] of Object.entries(variants)) {
      assert.equal(seen.get(k), undefined, `${name} collides with ${seen.get(k)}`);
      seen.set(k, name);
    }
  });
});

describe('MemoryResultCache', () => {
  it('hits and misses, with stats', async () => {
    const c = new MemoryResultCache({ maxBytes: 1 << 20 });
    assert.equal(c.kind, 'memory');
    assert.equal(await c.get('k1'), undefined);
    c.set('k1', [f32([1, 2]), bytes(['x'])], 60_000);
    assert.deepEqual(plain(await c.get('k1')), plain([f32([1, 2]), bytes(['x'])]));
    assert.equal(await c.get('k2'), undefined);
    const s = c.stats();
    assert.deepEqual([s.hits, s.misses, s.sets, s.evictions, s.errors, s.entries], [1, 2, 1, 0, 0, 1]);
    assert.ok(s.bytes > 8 + 1, `bytes ${s.bytes}`);
    c.clear();
    assert.equal(await c.get('k1'), undefined);
    assert.equal(c.stats().entries, 0);
    await c.close();
  });

  it('expires entries after their TTL', async () => {
    const c = new MemoryResultCache({ maxBytes: 1 << 20 });
    c.set('short', [f32([1])], 40);
    c.set('long', [f32([2])], 60_000);
    assert.ok(await c.get('short'));
    await sleep(80);
    assert.equal(await c.get('short'), undefined);
    assert.deepEqual(plain(await c.get('long')), plain([f32([2])]));
    assert.equal(c.stats().entries, 1);
    // A TTL that is not a positive finite number stores nothing (lru-cache would read 0 as "forever").
    c.set('zero', [f32([1])], 0);
    c.set('nan', [f32([1])], Number.NaN);
    assert.equal(await c.get('zero'), undefined);
    assert.equal(await c.get('nan'), undefined);
  });

  it('evicts the least recently used entry when the byte bound is exceeded', async () => {
    const value = (v: number): Tensor[] => [f32(new Array<number>(250).fill(v))]; // 1000 data bytes
    const probe = new MemoryResultCache({ maxBytes: 1 << 20 });
    probe.set('a', value(0), 60_000);
    const size = probe.stats().bytes;
    assert.ok(size >= 1000 && size < 1400, `entry size ${size}`);

    const maxBytes = Math.floor(3.5 * size);
    const c = new MemoryResultCache({ maxBytes, maxEntryBytes: maxBytes });
    for (const k of ['a', 'b', 'c']) c.set(k, value(k.charCodeAt(0)), 60_000);
    assert.equal(c.stats().entries, 3);
    assert.ok(await c.get('a')); // a is now more recent than b
    c.set('d', value(100), 60_000);
    assert.equal(await c.get('b'), undefined);
    for (const k of ['a', 'c', 'd']) assert.ok(await c.get(k), k);
    const s = c.stats();
    assert.equal(s.evictions, 1);
    assert.equal(s.entries, 3);
    assert.ok(s.bytes <= maxBytes);
  });

  it('skips entries larger than maxEntryBytes (default maxBytes / 8)', async () => {
    const c = new MemoryResultCache({ maxBytes: 10_000 });
    c.set('big', [f32(new Array<number>(500).fill(1))], 60_000); // 2000 bytes > 1250
    assert.equal(await c.get('big'), undefined);
    c.set('small', [f32(new Array<number>(100).fill(1))], 60_000);
    assert.ok(await c.get('small'));
    assert.equal(c.stats().sets, 1);
    const explicit = new MemoryResultCache({ maxBytes: 10_000, maxEntryBytes: 5000 });
    explicit.set('big', [f32(new Array<number>(500).fill(1))], 60_000);
    assert.ok(await explicit.get('big'));
  });

  it('keeps its own copy: mutating the source after set does not change the cached value', async () => {
    const c = new MemoryResultCache({ maxBytes: 1 << 20 });
    const backing = Float32Array.from([7, 1, 2, 3, 7]);
    const view = backing.subarray(1, 4);
    const strs = ['a', 'b'];
    const shape = [3];
    c.set('k', [t('FP32', shape, view), bytes(strs, [2])], 60_000);
    view[0] = 99;
    backing.fill(0);
    strs[0] = 'z';
    strs.push('c');
    shape[0] = 5;
    const got = await c.get('k');
    assert.deepEqual(plain(got), plain([f32([1, 2, 3]), bytes(['a', 'b'])]));
    const data = got![0]!.data as Float32Array;
    assert.equal(data.byteLength, 12, 'a copy of the view only, not its whole buffer');
    assert.ok(Object.isFrozen(got![0]!.shape));
    assert.ok(Object.isFrozen(got![1]!.data));
  });
});

describe('encodeOutputs / decodeOutputs', () => {
  const cases: Record<string, Tensor[]> = {
    fp32: [f32([1.5, -2, Number.POSITIVE_INFINITY, 3.25], [2, 2])],
    int64: [t('INT64', [3], BigInt64Array.from([0n, -9007199254740993n, 9223372036854775807n]))],
    uint64: [t('UINT64', [1], BigUint64Array.from([18446744073709551615n]))],
    fp16bits: [t('FP16', [4], Uint16Array.from([0x3c00, 0xc000, 0x7c00, 0x7e01]))],
    boolAndUint8: [t('BOOL', [3], Uint8Array.from([1, 0, 1])), t('UINT8', [1, 2], Uint8Array.from([255, 0]))],
    fp64Int8: [t('FP64', [1], Float64Array.from([Math.PI])), t('INT8', [2], Int8Array.from([-128, 127]))],
    bytes: [bytes(['', 'héllo', '日本語', 'a\u0000b'], [2, 2])],
    scalar: [f32([42], [])],
    zeroRows: [f32([], [0, 3]), bytes([], [0]), t('INT64', [0, 2], new BigInt64Array(0))],
    mixed: [bytes(['x']), f32([1, 2, 3]), t('INT16', [3], Int16Array.from([1, -1, 300]))],
    none: [],
  };
  for (const [name, outputs] of Object.entries(cases)) {
    it(`round-trips ${name}`, () => {
      const buf = encodeOutputs(outputs);
      const back = decodeOutputs(buf);
      assert.deepEqual(plain(back), plain(outputs));
      for (let i = 0; i < back.length; i++) {
        assert.equal(back[i]!.dtype, outputs[i]!.dtype);
        assert.equal(back[i]!.data.constructor, outputs[i]!.data.constructor);
      }
      // At an odd byte offset the numeric arrays must come back aligned (copied).
      const shifted = Buffer.alloc(buf.length + 1);
      buf.copy(shifted, 1);
      const odd = decodeOutputs(shifted.subarray(1));
      assert.deepEqual(plain(odd), plain(outputs));
      for (const x of odd) {
        if (x.dtype.array !== null) assert.equal((x.data as Float32Array).byteOffset % x.dtype.size, 0);
      }
    });
  }

  it('rejects malformed input', () => {
    const good = encodeOutputs([f32([1, 2, 3])]);
    assert.throws(() => decodeOutputs(Buffer.from('nope')), /malformed/);
    assert.throws(() => decodeOutputs(Buffer.from('XXXX\u0000\u0000\u0000\u0000')), /malformed/);
    assert.throws(() => decodeOutputs(good.subarray(0, good.length - 4)), /malformed/);
    assert.throws(() => decodeOutputs(Buffer.concat([good, Buffer.alloc(8)])), /malformed/);
    const hdr = (json: string): Buffer => {
      const j = Buffer.from(json);
      const b = Buffer.alloc(8 + j.length + 16);
      b.write('SYC1', 0, 'latin1');
      b.writeUInt32LE(j.length, 4);
      j.copy(b, 8);
      return b;
    };
    assert.throws(() => decodeOutputs(hdr('{')), /not JSON/);
    assert.throws(() => decodeOutputs(hdr('[{"d":"FP99","s":[1],"n":4}]')), /unknown dtype/);
    assert.throws(() => decodeOutputs(hdr('[{"d":"FP32","s":[-1],"n":4}]')), /bad shape/);
    assert.throws(() => decodeOutputs(hdr('[{"d":"FP32","s":[2],"n":4}]')), /imply|implies/);
  });
});

function redisSuite(): void {
  const prefix = `sy:test:cache:${randomBytes(6).toString('hex')}:`;
  const conns: Redis[] = [];
  const conn = (): Redis => {
    const r = new Redis(REDIS_URL, { maxRetriesPerRequest: 1, enableOfflineQueue: true });
    conns.push(r);
    return r;
  };
  let admin: Redis;

  before(() => {
    admin = conn();
  });
  after(async () => {
    const keys = await admin.keys(`${prefix}*`);
    if (keys.length > 0) await admin.del(...keys);
    for (const r of conns) r.disconnect();
  });

  /** Wait until the fire-and-forget writes have been acknowledged. */
  async function acked(c: RedisResultCache, sets: number): Promise<void> {
    while (c.stats().sets < sets) await sleep(5); // no deadline: the test runner's timeout bounds a hang
    assert.equal(c.stats().sets, sets);
  }

  it('hits and misses; two instances on separate connections share entries (as replicas do)', async () => {
    const a = new RedisResultCache({ redis: conn(), prefix, timeoutMs: 1000 });
    const b = new RedisResultCache({ redis: conn(), prefix, timeoutMs: 1000 });
    assert.equal(a.kind, 'redis');
    const k = cacheKey(BASE);
    assert.equal(await b.get(k), undefined);
    const outputs = [f32([0.1, 0.2, 0.7], [1, 3]), t('INT64', [1], BigInt64Array.from([2n])), bytes(['setosa'])];
    a.set(k, outputs, 60_000);
    await acked(a, 1);
    assert.deepEqual(plain(await b.get(k)), plain(outputs));
    assert.deepEqual(plain(await a.get(k)), plain(outputs));
    assert.equal(await a.get(cacheKey({ ...BASE, version: 4 })), undefined);
    assert.deepEqual(b.stats(), { hits: 1, misses: 1, sets: 0, evictions: 0, errors: 0, entries: 0, bytes: 0 });
    assert.deepEqual([a.stats().hits, a.stats().misses, a.stats().errors], [1, 1, 0]);
    const stored = await admin.getBuffer(prefix + k);
    assert.ok(stored && stored.length < 200, `compact encoding, ${stored?.length} bytes`);
    await a.close();
    await b.close();
    assert.equal(conns[1]!.status, 'ready', 'close() leaves the connection it was given open');
  });

  it('expires entries with PX', async () => {
    const c = new RedisResultCache({ redis: conn(), prefix, timeoutMs: 1000 });
    c.set('ttl', [f32([1])], 150);
    await acked(c, 1);
    const pttl = await admin.pttl(`${prefix}ttl`);
    assert.ok(pttl > 0 && pttl <= 150, `pttl ${pttl}`);
    assert.ok(await c.get('ttl'));
    await sleep(300);
    assert.equal(await c.get('ttl'), undefined);
  });

  it('skips oversize entries and reads a malformed value as a counted miss', async () => {
    const c = new RedisResultCache({ redis: conn(), prefix, timeoutMs: 1000, maxEntryBytes: 256 });
    c.set('big', [f32(new Array<number>(100).fill(1))], 60_000);
    c.set('small', [f32([1])], 60_000);
    await acked(c, 1);
    assert.equal(await admin.exists(`${prefix}big`), 0);
    await admin.set(`${prefix}junk`, 'not a cache entry', 'PX', 60_000);
    assert.equal(await c.get('junk'), undefined);
    assert.deepEqual([c.stats().misses, c.stats().errors], [1, 1]);
  });
}

const redisDown = await redisReachable();
const inCi = process.env['CI'] === 'true';
if (redisDown !== null && inCi) {
  describe('RedisResultCache on a real Redis', () => {
    it(`needs Redis at ${REDIS_URL} in CI`, () => assert.fail(`Redis is unreachable at ${REDIS_URL}: ${redisDown}`));
  });
} else {
  describe(
    'RedisResultCache on a real Redis',
    { skip: redisDown === null ? false : `Redis unreachable at ${REDIS_URL} (${redisDown}); set CI=true to make this fail` },
    () => {
      redisSuite();
    },
  );
}

describe('RedisResultCache when Redis is dead or hung (no Redis needed)', () => {
  it('a refused port: misses within the timeout, counts errors, never throws', async () => {
    const redis = new Redis({ host: '127.0.0.1', port: 1, lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
    redis.on('error', () => undefined);
    const c = new RedisResultCache({ redis, timeoutMs: 50 });
    try {
      for (let i = 0; i < 3; i++) {
        assert.equal(await c.get(`k${i}`), undefined); // resolves (a hang would be the test runner's timeout)
        c.set(`k${i}`, [f32([1])], 1000);
      }
      await sleep(20);
      const s = c.stats();
      assert.deepEqual([s.hits, s.misses, s.sets], [0, 3, 0]);
      assert.ok(s.errors >= 3, `errors ${s.errors}`);
    } finally {
      redis.disconnect();
    }
  });

  it('a server that never answers: each get is a miss after timeoutMs', async () => {
    const sockets = new Set<Socket>();
    const server: Server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const redis = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 0, enableReadyCheck: false, retryStrategy: () => null });
    redis.on('error', () => undefined);
    const c = new RedisResultCache({ redis, timeoutMs: 50 });
    try {
      const start = performance.now();
      assert.equal(await c.get('k'), undefined);
      const ms = performance.now() - start;
      assert.ok(ms >= 45, `waited the timeout, resolved in ${ms.toFixed(0)} ms`); // a hang: the runner's timeout
      c.set('k', [f32([1])], 1000);
      assert.deepEqual([c.stats().misses, c.stats().errors], [1, 1]);
    } finally {
      redis.disconnect();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
