/**
 * Limits exact across replicas: three Switchyard server processes sharing Postgres (tenants, keys) and Redis
 * (limits), a tenant whose bucket holds 300 tokens and refills at 1 per 1,000 s, and a client offering 900 requests
 * round-robin over the three. Exactly the tokens left after warm-up are admitted, the rest are 429, and every
 * replica refused some: no replica admits on its own. Timing-free; refill rates are tested with injected clocks.
 * Redis and Postgres must be reachable in CI (CI=true).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startReplica, stopReplica, type Replica } from './replica-helpers.js';
import { Redis } from 'ioredis';
import { mlp } from '../tools/onnx/zoo.js';
import { writeModelRepository } from '../tools/onnx/zoo.js';
import { floats } from './helpers.js';
import { PG_BASE, pgSchema, postgresReachable, REDIS_URL as REDIS, redisReachable } from './registry-helpers.js';

const BURST = 300;
const ADMIN = 'replica-test-admin-key-0123456789';

const pgDown = await postgresReachable();
const redisDown = await redisReachable();
const inCi = process.env['CI'] === 'true';
const down = [pgDown && `Postgres at ${PG_BASE}: ${pgDown}`, redisDown && `Redis at ${REDIS}: ${redisDown}`].filter(Boolean).join('; ');

describe('tenant limits across three replicas (Redis)', { skip: down && !inCi ? `${down}; set CI=true to make this fail` : false }, () => {
  const replicas: Replica[] = [];
  const schema = pgSchema();
  let dir = '';
  let key = '';
  const tenant = `rl${Math.random().toString(36).slice(2, 8)}`;
  const body = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, 1) }] });

  before(async () => {
    assert.equal(down, '', `services must be reachable: ${down}`);
    dir = await mkdtemp(join(tmpdir(), 'sy-limits-'));
    await writeModelRepository(join(dir, 'repo'), { [`${tenant}.m`]: { versions: { 1: mlp(7) } } });
    const common = [
      '--database',
      schema.url,
      '--data-dir',
      join(dir, 'data'),
      '--redis',
      REDIS,
      '--admin-key',
      ADMIN,
      '--auth-cache-ms',
      '300',
      '--redis-timeout-ms',
      '2000',
      '--rate-limit-fail',
      'closed',
    ];
    replicas.push(await startReplica([...common, '--model-repository', join(dir, 'repo')]));
    replicas.push(...(await Promise.all([startReplica(common), startReplica(common)])));
    const admin = async (method: string, path: string, payload: unknown): Promise<Record<string, unknown>> => {
      const r = await fetch(`${replicas[0]!.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify(payload),
      });
      const text = await r.text();
      assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
      return JSON.parse(text) as Record<string, unknown>;
    };
    await admin('POST', '/api/v1/tenants', { name: tenant, tier: 'unlimited', limits: { rps: 0.001, burst: BURST } });
    await admin('PUT', `/api/v1/models/${tenant}.m/owner`, { tenant });
    key = (await admin('POST', `/api/v1/tenants/${tenant}/keys`, { scopes: ['infer'] }))['key'] as string;
  });

  after(async () => {
    await Promise.all(replicas.map((r) => stopReplica(r, 'SIGTERM')));
    const redis = new Redis(REDIS);
    const keys = await redis.keys(`*${tenant}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await schema.drop();
    await rm(dir, { recursive: true, force: true });
  });

  async function send(r: Replica): Promise<number> {
    const res = await r.pool.request({
      method: 'POST',
      path: `/v2/models/${tenant}.m/infer`,
      body,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    });
    await res.body.dump();
    return res.statusCode;
  }

  it('admits exactly the shared burst across three replicas while three times as much is offered round-robin', async (t) => {
    // Exactness across replicas, independent of timing: the tenant's bucket refills at 1 token per 1,000 s (less than
    // one token over this test), so every admission spends the burst and nothing else. How fast a bucket refills is
    // proven with an injected clock (test/bucket.test.ts, test/limiter.test.ts), not against the wall clock here.
    let warmup = 0;
    // Every replica sees the tenant, the key and the model (access caches refresh every 300 ms). Requests refused
    // before the limiter (401 unknown key, 404 model not visible yet) spend no token; each replica's first 200 does.
    for (const r of replicas) {
      // Until replica r serves the tenant (a 200); no deadline: a hang is the runner's timeout.
      while ((await send(r)) !== 200) await new Promise((res) => setTimeout(res, 100));
      warmup++;
    }

    const offered = 3 * BURST;
    const counts = new Map<number, number>();
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < offered; i = next++) {
        const s = await send(replicas[i % replicas.length]!).catch(() => -1);
        counts.set(s, (counts.get(s) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: 24 }, worker));
    const admitted = counts.get(200) ?? 0;
    const detail = `admitted ${admitted} of ${offered} after ${warmup} warm-up requests, burst ${BURST}; statuses ${JSON.stringify([...counts])}`;
    t.diagnostic(detail);
    assert.equal(admitted, BURST - warmup, detail);
    assert.equal(admitted + (counts.get(429) ?? 0), offered, `every other request is a 429: ${detail}`);
    for (const r of replicas) {
      const m = await (await fetch(`${r.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
      assert.ok(
        /switchyard_ratelimit_decisions_total\{tenant="[^"]+",result="rate"\} [1-9]/.test(m),
        `replica ${r.url} rejected some: each enforces the shared limit`,
      );
    }
  });
});
