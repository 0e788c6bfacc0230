/**
 * @module
 * `npm run bench:features`: online feature read latency for 1 entity × 50 features, sequential (c=1), on
 * loopback Redis: RedisOnlineStore.read plus featureRead for the 50 features (what a request costs the server),
 * against a raw ioredis pipeline of one HGETALL on the same hash, in the same run. The scenarios run in
 * interleaved rounds (each round in a rotated order) so machine drift hits them alike. Also the HMGET variant
 * (features named), a raw HGETALL without a pipeline, and the in-memory store for reference.
 * Target: p99 ≤ 1 ms for RedisOnlineStore.read + featureRead (PASS/FAIL).
 * Env: BENCH_N (samples per scenario, default 20000), BENCH_REDIS (redis://127.0.0.1:6379).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { Redis } from 'ioredis';
import { featureRead, MemoryOnlineStore, RedisOnlineStore } from '../src/features/online.js';
import type { FeatureValue, OnlineStore, StoredRow } from '../src/features/types.js';
import { fmt, Report } from './lib.js';

const N = Number(process.env['BENCH_N'] ?? 20_000);
const REDIS = process.env['BENCH_REDIS'] ?? 'redis://127.0.0.1:6379';
const WARMUP = 2_000;
const ROUNDS = 20;
const TARGET_P99_US = 1_000;
const TTL_SECONDS = 86_400;
const VIEW = 'user_stats';
const ENTITY = 'user_id=42';

const report = new Report();
const say = report.say;
const W = 60;

/** 50 features: 40 float64, 5 int64, 5 string. */
const FEATURES = Array.from({ length: 50 }, (_, i) => `f${String(i).padStart(2, '0')}`);
function values(): Record<string, FeatureValue> {
  const v: Record<string, FeatureValue> = {};
  FEATURES.forEach((f, i) => {
    v[f] = i < 40 ? Math.sin(i + 1) * 1000 : i < 45 ? i * 1_000_003 : `category-${i}`;
  });
  return v;
}

interface Scenario {
  readonly name: string;
  /** One request: read and decode; returns a check value (features present). */
  readonly once: () => Promise<number>;
  readonly samples: Float64Array;
  n: number;
}

function statuses(row: StoredRow | null, now: number): number {
  let present = 0;
  for (const f of FEATURES) if (featureRead(row, f, TTL_SECONDS, now).status === 'PRESENT') present++;
  return present;
}

function pct(s: Float64Array, p: number): number {
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

const redis = new Redis(REDIS, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000, retryStrategy: () => null });
const prefix = `sy:fs:bench:${randomBytes(4).toString('hex')}:`;
try {
  await redis.connect();
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'} × ${cpus().length} cores, Node ${process.version}`;
  const info = await redis.info('server');
  const redisVersion = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
  const load = (): string =>
    loadavg()
      .map((x) => x.toFixed(2))
      .join(' ');
  say(`Switchyard feature store benchmark — ${new Date().toISOString().slice(0, 10)} — ${machine}`);
  say(`NOTE: ${cpus().length} vCPUs shared by Redis and this process, on a noisy machine (other work may run beside it; load`);
  say(`      average at start: ${load()}): tail latencies (p99) move with the neighbours. All scenarios run interleaved in`);
  say(`      ${ROUNDS} rounds (rotated order), so drift hits them alike; ratios are within one run.`);
  say(`Redis ${redisVersion} at ${REDIS} (loopback). One entity × 50 features (40 float64, 5 int64, 5 string; JSON fields) in`);
  say(`one hash; sequential (c=1), ${N} samples per scenario after ${WARMUP} warmup; wall time per read in µs (performance.now).`);

  const online = new RedisOnlineStore({ redis, prefix });
  const memory: OnlineStore = new MemoryOnlineStore();
  const now = Date.now();
  const row = { entityKey: ENTITY, eventTime: now - 1_000, values: values() };
  await online.write(VIEW, [row]);
  await memory.write(VIEW, [row]);
  const key = online.key(VIEW, ENTITY);
  const keys = [{ view: VIEW, entityKey: ENTITY }];
  const named = [{ view: VIEW, entityKey: ENTITY, features: FEATURES }];

  // One read is one socket write (one round trip): count writes on the client's stream.
  let socketWrites = 0;
  const stream = redis.stream;
  const write = stream.write.bind(stream) as (...a: unknown[]) => boolean;
  (stream as unknown as { write: (...a: unknown[]) => boolean }).write = (...a: unknown[]) => {
    socketWrites++;
    return write(...a);
  };
  const w0 = socketWrites;
  const check = await online.read(keys);
  const w1 = socketWrites;
  await online.read([...keys, { view: VIEW, entityKey: 'user_id=43' }, { view: 'other', entityKey: ENTITY }]);
  const w2 = socketWrites;
  if (statuses(check[0] ?? null, now) !== 50) throw new Error('bench setup: expected 50 PRESENT features');
  say(`checked: 50/50 PRESENT; socket writes per RedisOnlineStore.read: ${w1 - w0} (1 key), ${w2 - w1} (3 keys, pipelined).`);

  const scenarios: Scenario[] = [
    {
      name: 'raw ioredis pipeline: HGETALL (baseline)',
      once: async () => {
        const r = await redis.pipeline().hgetall(key).exec();
        return Object.keys((r?.[0]?.[1] ?? {}) as Record<string, string>).length - 1;
      },
    },
    {
      name: 'raw ioredis HGETALL (no pipeline)',
      once: async () => Object.keys(await redis.hgetall(key)).length - 1,
    },
    {
      name: 'RedisOnlineStore.read + featureRead ×50',
      once: async () => statuses((await online.read(keys))[0] ?? null, Date.now()),
    },
    {
      name: 'RedisOnlineStore.read, 50 named (HMGET) + featureRead ×50',
      once: async () => statuses((await online.read(named))[0] ?? null, Date.now()),
    },
    {
      name: 'MemoryOnlineStore.read + featureRead ×50 (reference)',
      once: async () => statuses((await memory.read(keys))[0] ?? null, Date.now()),
    },
  ].map((s) => ({ ...s, samples: new Float64Array(N), n: 0 }));

  for (const s of scenarios) {
    for (let i = 0; i < WARMUP; i++) if ((await s.once()) !== 50) throw new Error(`${s.name}: expected 50 features`);
  }
  const perRound = Math.ceil(N / ROUNDS);
  for (let round = 0; round < ROUNDS; round++) {
    for (let k = 0; k < scenarios.length; k++) {
      const s = scenarios[(round + k) % scenarios.length]!;
      const end = Math.min(N, s.n + perRound);
      while (s.n < end) {
        const t0 = performance.now();
        const got = await s.once();
        s.samples[s.n++] = (performance.now() - t0) * 1000;
        if (got !== 50) throw new Error(`${s.name}: expected 50 features, got ${got}`);
      }
    }
  }

  const results: Record<string, { p50: number; p90: number; p99: number; max: number }> = {};
  say('');
  say(`${'scenario'.padEnd(W)}     p50     p90     p99     max  (µs)`);
  for (const s of scenarios) {
    s.samples.sort();
    const r = { p50: pct(s.samples, 0.5), p90: pct(s.samples, 0.9), p99: pct(s.samples, 0.99), max: s.samples[s.samples.length - 1]! };
    results[s.name] = r;
    say(`  ${s.name.padEnd(W - 2)} ${fmt(r.p50).padStart(7)} ${fmt(r.p90).padStart(7)} ${fmt(r.p99).padStart(7)} ${fmt(r.max).padStart(7)}`);
  }
  const raw = results[scenarios[0]!.name]!;
  const store = results[scenarios[2]!.name]!;
  const hm = results[scenarios[3]!.name]!;
  say('');
  say(
    `RedisOnlineStore.read + featureRead vs raw pipeline: p50 ${fmt(store.p50 / raw.p50, 2)}x (${fmt(store.p50 - raw.p50)} µs), p99 ${fmt(store.p99 / raw.p99, 2)}x (${fmt(store.p99 - raw.p99)} µs)`,
  );
  say(`  (HMGET variant: p50 ${fmt(hm.p50 / raw.p50, 2)}x, p99 ${fmt(hm.p99 / raw.p99, 2)}x)`);
  const pass = store.p99 <= TARGET_P99_US;
  say(`target p99 ≤ ${TARGET_P99_US} µs (1 entity × 50 features, loopback Redis): ${fmt(store.p99)} µs — ${pass ? 'PASS' : 'FAIL'}`);
  say(`load average at end: ${load()}`);
  await mkdir('.bench', { recursive: true });
  await writeFile(
    '.bench/features.json',
    `${JSON.stringify({ date: new Date().toISOString(), machine, redis: redisVersion, n: N, rounds: ROUNDS, results, targetP99Us: TARGET_P99_US, pass }, null, 2)}\n`,
  );
  await report.save('.bench/features.txt');
  if (!pass) process.exitCode = 1;
} finally {
  if (redis.status === 'ready') {
    await new RedisOnlineStore({ redis, prefix }).dropView(VIEW);
    await redis.quit();
  } else {
    redis.disconnect();
  }
}
