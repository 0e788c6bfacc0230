/**
 * The LLM API's requests-per-minute and tokens-per-minute limiter, on both backends: exact admission counts,
 * atomicity across scopes and dimensions (a refused request charges nothing), the over-capacity refusal,
 * settle refunds and overcharges (once), headers and retry delays (exact with the memory backend's injected
 * clock); on a real Redis, three limiter instances and three processes reserving concurrently against the same
 * keys admit exactly the limit, keys expire, and an unreachable Redis answers by the fail mode.
 * Redis must be reachable in CI (CI=true); elsewhere its suite is skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import {
  MemoryTokenLimiter,
  OVER_CAPACITY_RETRY_MS,
  RedisTokenLimiter,
  type TokenLimiter,
  type TokenReservation,
  type TokenScope,
} from '../src/gateway/token-limits.js';
import { Gateway } from '../src/gateway/gateway.js';
import type { TenantStore } from '../src/gateway/store.js';
import { effectiveLimits, TIERS, type ApiKeyRecord, type Principal, type TenantLimits, type TenantRecord } from '../src/gateway/types.js';
import { closedPort, deleteKeys, describeNeeding, REDIS_URL, redisReachable, until } from './registry-helpers.js';

const scope = (key: string, rpm: number | null, tpm: number | null): TokenScope => ({ key, rpm, tpm });
const admitted = (rs: readonly TokenReservation[]): number => rs.filter((r) => r.allowed).length;

/** A limiter under test and what the test may assume about time. */
interface Subject {
  limiter: TokenLimiter;
  /** A scope key no other test uses (Redis keys outlive a test). */
  key(name: string): string;
  /**
   * True with an injected clock (waits and resets are exact); false on Redis, where the buckets refill while the
   * test runs: the assertions below then leave at least one unit of slack, i.e. ≥ 600 ms at 100 per minute.
   */
  exact: boolean;
}

/** ms a retry waits, exactly (memory) or a little less as time passes (Redis). */
function assertWait(s: Subject, actual: number, expected: number): void {
  if (s.exact) assert.equal(actual, expected);
  else assert.ok(actual <= expected && actual > expected - 1000, `retryAfterMs ${actual} ≈ ${expected}`);
}

/** Semantics both backends share. */
function semantics(make: () => Promise<Subject>): void {
  it('admits exactly rpm requests, then refuses with reason "requests"', async () => {
    const s = await make();
    const k = s.key('rpm');
    const rs: TokenReservation[] = [];
    for (let i = 0; i < 6; i++) rs.push(await s.limiter.reserve([scope(k, 5, null)], 1000));
    assert.deepEqual(
      rs.map((r) => r.allowed),
      [true, true, true, true, true, false],
    );
    assert.deepEqual(
      rs.map((r) => r.requests?.remaining),
      [4, 3, 2, 1, 0, 0],
    );
    assert.deepEqual([rs[0]!.requests?.limit, rs[0]!.tokens, rs[0]!.degraded], [5, null, false]);
    const no = rs[5]!;
    assert.deepEqual([no.reason, no.scope], ['requests', k]);
    assertWait(s, no.retryAfterMs, 12_000); // one request of 5 per minute
    assertWait(s, rs[4]!.requests!.resetMs, 60_000);
  });

  it('admits exactly tpm tokens, then refuses with reason "tokens" and the wait for the missing ones', async () => {
    const s = await make();
    const k = s.key('tpm');
    const rs: TokenReservation[] = [];
    for (let i = 0; i < 4; i++) rs.push(await s.limiter.reserve([scope(k, null, 100)], 30));
    assert.deepEqual(
      rs.map((r) => r.allowed),
      [true, true, true, false],
    );
    assert.deepEqual(
      rs.map((r) => r.tokens?.remaining),
      [70, 40, 10, 10],
    );
    assert.deepEqual([rs[3]!.reason, rs[3]!.scope, rs[3]!.requests], ['tokens', k, null]);
    assertWait(s, rs[3]!.retryAfterMs, 12_000); // 20 tokens at 100 per minute
    const last = await s.limiter.reserve([scope(k, null, 100)], 10);
    assert.deepEqual([last.allowed, last.tokens?.remaining], [true, 0]);
  });

  it('refuses a request over a scope\'s tpm for good (reason "tokens", 60 s) and charges nothing', async () => {
    const s = await make();
    const [t, kk] = [s.key('over-t'), s.key('over-k')];
    const no = await s.limiter.reserve([scope(t, 10, 1000), scope(kk, 10, 100)], 101);
    assert.deepEqual([no.allowed, no.reason, no.scope, no.retryAfterMs], [false, 'tokens', kk, OVER_CAPACITY_RETRY_MS]);
    assert.equal(OVER_CAPACITY_RETRY_MS, 60_000);
    const yes = await s.limiter.reserve([scope(t, 10, 1000), scope(kk, 10, 100)], 100);
    assert.deepEqual([yes.allowed, yes.requests?.remaining, yes.tokens?.remaining], [true, 9, 0]);
  });

  it('is atomic across scopes and dimensions: a refused request charges no scope', async () => {
    const s = await make();
    const [t, kk, m] = [s.key('tenant'), s.key('key'), s.key('model')];
    const scopes = [scope(t, 100, 100), scope(kk, null, 50), scope(m, 2, null)];
    assert.equal((await s.limiter.reserve(scopes, 40)).allowed, true);
    const byKey = await s.limiter.reserve(scopes, 20);
    assert.deepEqual([byKey.allowed, byKey.reason, byKey.scope], [false, 'tokens', kk]);
    assertWait(s, byKey.retryAfterMs, 12_000); // 10 tokens at 50 per minute
    assert.equal((await s.limiter.reserve(scopes, 10)).allowed, true, 'the refusal took nothing from the key');
    const byModel = await s.limiter.reserve(scopes, 0);
    assert.deepEqual([byModel.allowed, byModel.reason, byModel.scope], [false, 'requests', m]);
    assertWait(s, byModel.retryAfterMs, 30_000);
    // The tenant was charged 40 + 10 tokens and 2 requests, nothing for the two refusals.
    const over = await s.limiter.reserve([scope(t, 100, 100)], 51);
    assert.equal(over.allowed, false);
    const rest = await s.limiter.reserve([scope(t, 100, 100)], 50);
    assert.deepEqual([rest.allowed, rest.requests?.remaining, rest.tokens?.remaining], [true, 97, 0]);
  });

  it('reports the waits of the longest-failing bucket and the most constraining scope in headers', async () => {
    const s = await make();
    const [a, b] = [s.key('hdr-a'), s.key('hdr-b')];
    const r = await s.limiter.reserve([scope(a, 10, 1000), scope(b, 3, 100)], 60);
    assert.deepEqual([r.requests?.limit, r.requests?.remaining, r.tokens?.limit, r.tokens?.remaining], [3, 2, 100, 40]);
    assertWait(s, r.tokens!.resetMs, 36_000);
    await s.limiter.reserve([scope(b, 3, 100)], 0);
    await s.limiter.reserve([scope(b, 3, 100)], 0);
    // b: no request left (wait 20 s) and 40 tokens of the 90 asked (wait 30 s); a would admit.
    const no = await s.limiter.reserve([scope(a, 10, 1000), scope(b, 3, 100)], 90);
    assert.deepEqual([no.allowed, no.reason, no.scope], [false, 'tokens', b]);
    assertWait(s, no.retryAfterMs, 30_000);
  });

  it('settle refunds unused tokens, once', async () => {
    const s = await make();
    const k = s.key('refund');
    const r = await s.limiter.reserve([scope(k, null, 100)], 80);
    await r.settle(30);
    await r.settle(0); // no-op: settled already
    assert.equal((await s.limiter.reserve([scope(k, null, 100)], 71)).allowed, false);
    const again = await s.limiter.reserve([scope(k, null, 100)], 70);
    assert.deepEqual([again.allowed, again.tokens?.remaining], [true, 0]);
    await again.settle(0);
    assert.equal((await s.limiter.reserve([scope(k, null, 100)], 0)).tokens?.remaining, 70);
  });

  it('settle charges tokens used beyond the reservation: the bucket goes negative and later requests wait', async () => {
    const s = await make();
    const k = s.key('overcharge');
    const r = await s.limiter.reserve([scope(k, null, 100)], 10);
    await r.settle(150);
    const no = await s.limiter.reserve([scope(k, null, 100)], 0);
    assert.deepEqual([no.allowed, no.reason, no.tokens?.remaining], [false, 'tokens', 0]);
    assertWait(s, no.retryAfterMs, 30_000); // from -50 back to 0
  });

  it('a refused, or unlimited, reservation settles to nothing; no limit set admits without state', async () => {
    const s = await make();
    const k = s.key('noop');
    const first = await s.limiter.reserve([scope(k, null, 100)], 100);
    const no = await s.limiter.reserve([scope(k, null, 100)], 50);
    assert.equal(no.allowed, false);
    await no.settle(0);
    assert.equal((await s.limiter.reserve([scope(k, null, 100)], 1)).allowed, false, 'refused: nothing refunded');
    await first.settle(100);
    const free = await s.limiter.reserve([scope(s.key('free'), null, null)], 1e9);
    assert.deepEqual([free.allowed, free.requests, free.tokens, free.retryAfterMs, free.degraded], [true, null, null, 0, false]);
    await free.settle(5);
    assert.equal((await s.limiter.reserve([], 5)).allowed, true);
  });

  it('rejects invalid input with a RangeError', async () => {
    const s = await make();
    const k = s.key('bad');
    await assert.rejects(s.limiter.reserve([scope(k, 0, null)], 1), (e: unknown) => e instanceof RangeError && /bad.*rpm/.test(e.message));
    await assert.rejects(s.limiter.reserve([scope(k, null, -5)], 1), RangeError);
    await assert.rejects(s.limiter.reserve([scope(k, 1, null), scope(k, 2, null)], 1), /appears twice/);
    await assert.rejects(s.limiter.reserve([scope(k, 1, null)], Number.NaN), RangeError);
    const r = await s.limiter.reserve([scope(k, null, 10)], 1);
    await assert.rejects(r.settle(-1), RangeError);
    await r.settle(1);
  });
}

describe('MemoryTokenLimiter', () => {
  let t = 0;
  const now = (): number => t;
  semantics(async () => ({ limiter: new MemoryTokenLimiter({ now }), key: (n) => n, exact: true }));

  it('refills continuously: one request per 60000/rpm ms, tpm/60000 tokens per ms', async () => {
    t = 1_000_000;
    const l = new MemoryTokenLimiter({ now });
    const s = [scope('t:a', 60, 600)];
    assert.equal((await l.reserve(s, 600)).allowed, true);
    t += 2500; // 25 tokens back; the requests bucket is full again
    const short = await l.reserve(s, 26);
    assert.deepEqual([short.allowed, short.reason, short.retryAfterMs, short.tokens?.remaining], [false, 'tokens', 100, 25]);
    assert.equal((await l.reserve(s, 25)).allowed, true);
    for (let i = 0; i < 59; i++) assert.equal((await l.reserve(s, 0)).allowed, true);
    const none = await l.reserve(s, 0);
    assert.deepEqual([none.allowed, none.reason, none.retryAfterMs], [false, 'requests', 1000]);
    t += 999;
    assert.equal((await l.reserve(s, 0)).allowed, false);
    t += 1;
    assert.equal((await l.reserve(s, 0)).allowed, true);
  });

  it('a refund never fills a bucket past its capacity', async () => {
    t = 0;
    const l = new MemoryTokenLimiter({ now });
    const r = await l.reserve([scope('t:a', null, 100)], 10);
    t = 6000; // refilled: full again
    await r.settle(0);
    assert.equal((await l.reserve([scope('t:a', null, 100)], 0)).tokens?.remaining, 100);
    assert.equal((await l.reserve([scope('t:a', null, 100)], 101)).allowed, false);
  });

  it('forgets buckets once they are full again', async () => {
    t = 0;
    const l = new MemoryTokenLimiter({ now });
    for (let i = 0; i < 1000; i++) await l.reserve([scope(`t:${i}`, 10, null)], 1);
    assert.equal(l.size, 1000);
    t = 60_000;
    for (let i = 0; i < 24; i++) await l.reserve([scope('t:x', 10, null)], 1); // the 1024th reserve sweeps
    assert.equal(l.size, 1);
  });
});

describe('Gateway.tokenScopes', () => {
  const tenant = (limits: TenantLimits): TenantRecord => ({
    name: 'acme',
    description: '',
    tier: 'standard',
    weight: 2,
    limits,
    effectiveLimits: effectiveLimits(TIERS['standard']!.limits, limits),
    disabled: false,
    createdAt: '',
    updatedAt: '',
  });
  const key = (limits: ApiKeyRecord['limits']): ApiKeyRecord => ({
    id: 'sy_abcdefghijkl',
    tenant: 'acme',
    name: '',
    scopes: ['infer'],
    limits,
    createdBy: 'admin',
    createdAt: '',
    expiresAt: null,
    revokedAt: null,
    status: 'active',
  });
  const as = (t: TenantRecord, k: ApiKeyRecord): Principal => ({ kind: 'tenant', actor: 'acme/k', tenant: t, key: k });
  const gateway = (): Promise<Gateway> =>
    Gateway.create({
      store: { listAccess: async () => new Map() } as unknown as TenantStore,
      authRequired: true,
      adminKey: null,
      limiter: null,
    });

  it('no built-in tier sets rpm or tpm: nothing to enforce for existing tenants', async () => {
    for (const [name, tier] of Object.entries(TIERS)) assert.deepEqual([tier.limits.rpm, tier.limits.tpm], [null, null], name);
    const g = await gateway();
    assert.deepEqual(g.tokenScopes(as(tenant({}), key(null)), 'tiny'), []);
    await g.close();
  });

  it('lists the tenant, key and tenant×model limits that set rpm or tpm, under llm: keys; the request limiter ignores them', async () => {
    const g = await gateway();
    const t = tenant({ rpm: 600, models: { tiny: { tpm: 5000 }, other: { rpm: 1 }, fast: { rps: 5 } } });
    const p = as(t, key({ tpm: 20_000 }));
    assert.deepEqual(g.tokenScopes(p, 'tiny'), [
      { key: 'llm:t:acme', rpm: 600, tpm: null },
      { key: 'llm:k:sy_abcdefghijkl', rpm: null, tpm: 20_000 },
      { key: 'llm:m:acme:tiny', rpm: null, tpm: 5000 },
    ]);
    assert.deepEqual(
      g.tokenScopes(p, 'fast').map((s) => s.key),
      ['llm:t:acme', 'llm:k:sy_abcdefghijkl'],
    );
    assert.deepEqual(g.tokenScopes({ kind: 'platform', actor: 'admin', key: null }, 'tiny'), []);
    // A key or model limited only by rpm / tpm adds no request-limiter scope.
    assert.deepEqual(
      g.limitScopes(p, 'tiny').map((s) => s.key),
      ['t:acme'],
    );
    assert.deepEqual(
      g.limitScopes(p, 'fast').map((s) => s.key),
      ['t:acme', 'm:acme:fast'],
    );
    await g.close();
  });
});

/** One process reserving against Redis: connects, says "ready", waits for a line on stdin, reserves all at once. */
const RESERVER = `
const [limitsUrl, redisUrl, prefix, key, n, tokens, tpm] = process.argv.slice(1);
const { RedisTokenLimiter } = await import(limitsUrl);
const errors = [];
const l = new RedisTokenLimiter({ url: redisUrl, prefix, failMode: 'closed', timeoutMs: 5000, onBackendError: (e) => errors.push(e.message) });
while (!l.connected) await new Promise((r) => setTimeout(r, 5));
process.stdout.write('ready\\n');
await new Promise((r) => process.stdin.once('data', r));
const rs = await Promise.all(Array.from({ length: Number(n) }, () => l.reserve([{ key, rpm: null, tpm: Number(tpm) }], Number(tokens))));
process.stdout.write(JSON.stringify({ admitted: rs.filter((r) => r.allowed).length, errors }) + '\\n');
await l.close();
`;

interface ReserverProcess {
  ready: Promise<void>;
  result: Promise<{ admitted: number; errors: string[] }>;
  go(): void;
}

function reserver(args: readonly string[]): ReserverProcess {
  const limitsUrl = new URL('../src/gateway/token-limits.js', import.meta.url).href;
  const p = spawn(process.execPath, ['--input-type=module', '-e', RESERVER, limitsUrl, ...args], { stdio: ['pipe', 'pipe', 'pipe'], timeout: 30_000 });
  let out = '';
  let err = '';
  let onReady: () => void = () => {};
  const ready = new Promise<void>((r) => {
    onReady = r;
  });
  p.stdout.on('data', (b: Buffer) => {
    out += b.toString();
    if (out.startsWith('ready\n')) onReady();
  });
  p.stderr.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const result = new Promise<{ admitted: number; errors: string[] }>((resolve, reject) => {
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      if (code !== 0) return reject(new Error(`reserver exited ${code ?? signal}: ${err}`));
      resolve(JSON.parse(out.slice('ready\n'.length)) as { admitted: number; errors: string[] });
    });
  });
  return {
    ready: Promise.race([
      ready,
      result.then(() => {
        throw new Error('exited before ready');
      }),
    ]),
    result,
    go: () => p.stdin.end('go\n'),
  };
}

describeNeeding('RedisTokenLimiter on a real Redis', `Redis at ${REDIS_URL}`, await redisReachable(), () => {
  const prefix = `sy:tl:test:${randomBytes(4).toString('hex')}:`;
  let admin: Redis;
  let seq = 0;
  const open: RedisTokenLimiter[] = [];
  /** Backend errors of the limiters below: none expected while Redis is up (checked after each test). */
  const backendErrors: Error[] = [];
  const limiter = (): RedisTokenLimiter => {
    // A generous deadline: a loaded CI machine must not turn a slow answer into a refusal.
    const l = new RedisTokenLimiter({ url: REDIS_URL, prefix, failMode: 'closed', timeoutMs: 5000, onBackendError: (e) => backendErrors.push(e) });
    open.push(l);
    return l;
  };
  const connected = (...ls: RedisTokenLimiter[]): Promise<void> => until(() => ls.every((l) => l.connected));

  before(async () => {
    admin = new Redis(REDIS_URL, { lazyConnect: true });
    await admin.connect();
  });
  afterEach(() => {
    assert.deepEqual(
      backendErrors.splice(0).map((e) => e.message),
      [],
      'no backend errors',
    );
  });
  after(async () => {
    await Promise.all(open.map((l) => l.close()));
    await deleteKeys(admin, prefix);
    await admin.quit();
  });

  semantics(async () => {
    const l = limiter();
    await connected(l);
    return { limiter: l, key: (n) => `${n}:${seq++}`, exact: false };
  });

  it('three instances (three connections) reserving concurrently admit exactly the limit', async () => {
    const ls = [limiter(), limiter(), limiter()];
    await connected(...ls);
    const tokens = [scope(`hammer-tpm:${seq++}`, null, 1000)];
    const byTokens = await Promise.all(ls.flatMap((l) => Array.from({ length: 40 }, () => l.reserve(tokens, 30))));
    assert.equal(admitted(byTokens), 33, '1000 tokens / 30 per request');
    assert.ok(byTokens.every((r) => r.allowed || r.reason === 'tokens'));
    const requests = [scope(`hammer-rpm:${seq++}`, 50, null)];
    const byRequests = await Promise.all(ls.flatMap((l) => Array.from({ length: 40 }, () => l.reserve(requests, 30))));
    assert.equal(admitted(byRequests), 50);
  });

  it('three processes reserving concurrently against the same keys admit exactly the limit', async () => {
    const key = `procs:${seq++}`;
    const ps = [0, 1, 2].map(() => reserver([REDIS_URL, prefix, key, '40', '30', '1000']));
    await Promise.all(ps.map((p) => p.ready));
    for (const p of ps) p.go();
    const results = await Promise.all(ps.map((p) => p.result));
    assert.deepEqual(
      results.flatMap((r) => r.errors),
      [],
    );
    assert.equal(
      results.reduce((n, r) => n + r.admitted, 0),
      33,
      `admitted per process: ${results.map((r) => r.admitted).join(', ')}`,
    );
  });

  it('settles through Redis: a refund made on one instance is seen by another', async () => {
    const [a, b] = [limiter(), limiter()];
    await connected(a, b);
    const s = [scope(`settle:${seq++}`, null, 100)];
    const r = await a.reserve(s, 90);
    assert.equal((await b.reserve(s, 50)).allowed, false);
    await r.settle(20);
    const after = await b.reserve(s, 80);
    assert.deepEqual([after.allowed, after.tokens?.remaining], [true, 0]);
  });

  it('a settle after close() is dropped silently; reserves then answer by the fail mode', async () => {
    const l = limiter();
    await connected(l);
    const s = [scope(`closed:${seq++}`, null, 100)];
    const r = await l.reserve(s, 50);
    await l.close();
    await r.settle(0); // no error reported (checked after each test), no rejection
    const after = await l.reserve(s, 1);
    assert.deepEqual([after.allowed, after.reason], [false, 'unavailable']);
    assert.match(
      backendErrors
        .splice(0)
        .map((e) => e.message)
        .join(),
      /token limiter: closed/,
    );
  });

  it('keeps each bucket under its own key, expiring a minute after it is full again', async () => {
    const l = limiter();
    await connected(l);
    const k = `ttl:${seq++}`;
    await l.reserve([scope(k, 10, 100)], 50);
    const [r, t] = await Promise.all([admin.pttl(`${prefix}r:${k}`), admin.pttl(`${prefix}t:${k}`)]);
    assert.ok(r > 60_000 && r <= 66_000, `requests bucket: 1 of 10 used, full in 6 s (+60 s), PTTL ${r}`);
    assert.ok(t > 60_000 && t <= 90_000, `tokens bucket: half used, full in 30 s (+60 s), PTTL ${t}`);
  });
});

describe('RedisTokenLimiter when Redis is unreachable (no Redis needed)', () => {
  for (const failMode of ['open', 'closed'] as const) {
    it(`answers at once by the fail mode (${failMode}) and reports each failure`, async () => {
      const errors: Error[] = [];
      const l = new RedisTokenLimiter({ url: `redis://127.0.0.1:${await closedPort()}`, failMode, onBackendError: (e) => errors.push(e) });
      try {
        const r = await l.reserve([scope('t:a', 10, 100)], 5); // answers (a hang would be the runner's timeout)
        if (failMode === 'open') assert.deepEqual([r.allowed, r.degraded, r.reason, r.requests, r.tokens], [true, true, null, null, null]);
        else assert.deepEqual([r.allowed, r.degraded, r.reason, r.retryAfterMs], [false, false, 'unavailable', 1000]);
        await r.settle(50);
        assert.equal(errors.length, 1);
        assert.match(errors[0]!.message, /token limiter: Redis at 127\.0\.0\.1:\d+ is not connected/);
      } finally {
        await l.close();
      }
    });
  }

  it('fails open by default', async () => {
    const l = new RedisTokenLimiter({ url: `redis://127.0.0.1:${await closedPort()}` });
    try {
      assert.equal((await l.reserve([scope('t:a', 1, null)], 1)).degraded, true);
    } finally {
      await l.close();
    }
  });
});
