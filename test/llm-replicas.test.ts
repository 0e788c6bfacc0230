/**
 * LLM token limits exact across replicas: three `switchyard serve` processes sharing Postgres (tenants, keys,
 * LLM usage; a fresh schema, dropped after) and Redis (the token buckets), each serving the tiny local GGUF
 * model (tools/gguf/tiny-llama.ts). The tiny model never emits an end token, so a chat request always generates
 * exactly max_tokens tokens and its real usage equals its reservation (prompt tokens + max_tokens): admission
 * counts are exact. A tenant whose tpm holds k requests and half of another gets 60 concurrent requests
 * round-robin over the three replicas: exactly k are admitted (more only if the bucket's refill during the
 * burst could pay for another one, which the test computes and bounds), every other one is a 429 in OpenAI's
 * shape with retry-after(-ms), and the usage the replicas flush into Postgres sums to the admitted requests.
 * Redis and Postgres must be reachable in CI (CI=true); elsewhere the suite is skipped with a message.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { startReplica, stopReplica, type Replica } from './replica-helpers.js';
import { Redis } from 'ioredis';
import { writeTinyLlama } from '../tools/gguf/tiny-llama.js';
import { LLAMA, llamaMissing } from './llama-runtime.js';
import { deleteKeys, describeNeeding, PG_BASE, pgSchema, postgresReachable, REDIS_URL as REDIS, redisReachable } from './registry-helpers.js';

const ADMIN = 'llm-replica-test-admin-key-0123456789';
const MODEL = 'tiny-chat';
const MAX_TOKENS = 16;
/** Requests the tenant's tpm holds (plus half of one more). */
const K = 12;
const OFFERED = 60;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}

async function chat(r: Replica, key: string, content: string): Promise<Answer> {
  const res = await r.pool.request({
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content }], max_tokens: MAX_TOKENS, temperature: 0 }),
  });
  const text = await res.body.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { unparsed: text };
  }
  return { status: res.statusCode, headers: res.headers, body };
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

const down =
  [
    await postgresReachable().then((e) => e && `Postgres at ${PG_BASE}: ${e}`),
    await redisReachable().then((e) => e && `Redis at ${REDIS}: ${e}`),
    await llamaMissing(),
  ]
    .filter(Boolean)
    .join('; ') || null;

describeNeeding('LLM token limits across three replicas (Redis)', `Postgres, Redis and ${LLAMA}`, down, () => {
  const replicas: Replica[] = [];
  const schema = pgSchema();
  const tenant = `llmrep${Math.random().toString(36).slice(2, 10)}`;
  let dir = '';
  let key = '';
  let keyId = '';

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sy-llm-replicas-'));
    const gguf = join(dir, 'tiny.gguf');
    await writeTinyLlama(gguf);
    const cfg = join(dir, 'llm.json');
    // threads: 1 — three processes share the machine's cores; llama.cpp's spinning threads collapse when oversubscribed.
    await writeFile(cfg, JSON.stringify({ models: [{ name: MODEL, backend: 'llama', path: gguf, contextSize: 256, sequences: 4, threads: 1 }] }));
    const common = (i: number): string[] => [
      '--database',
      schema.url,
      '--data-dir',
      join(dir, `data${i}`),
      '--redis',
      REDIS,
      '--admin-key',
      ADMIN,
      '--llm-config',
      cfg,
      '--usage-flush-ms',
      '200',
      '--auth-cache-ms',
      '300',
      '--redis-timeout-ms',
      '2000',
      '--rate-limit-fail',
      'closed',
    ];
    // The first one migrates the schema; then the other two.
    replicas.push(await startReplica(common(0), OFFERED));
    replicas.push(...(await Promise.all([startReplica(common(1), OFFERED), startReplica(common(2), OFFERED)])));
  });

  after(async () => {
    await Promise.all(replicas.map((r) => stopReplica(r, 'SIGTERM')));
    if (down === null) {
      const redis = new Redis(REDIS);
      try {
        await deleteKeys(redis, `*${tenant}`); // SCAN MATCH `*<tenant>*`
        if (keyId) await deleteKeys(redis, `*${keyId}`);
      } finally {
        redis.disconnect();
      }
      await schema.drop();
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`admits exactly the tenant's tpm worth of requests (${K}) of ${OFFERED} concurrent ones sent round-robin, and the usage sums to them`, async (t) => {
    const prompt = 'how many tokens?';
    // One request's tokens, measured with the platform key (never limited).
    const probe = await chat(replicas[0]!, ADMIN, prompt);
    assert.equal(probe.status, 200, JSON.stringify(probe.body));
    const probeUsage = probe.body['usage'] as Usage;
    assert.equal(probeUsage.completion_tokens, MAX_TOKENS, 'the tiny model always generates max_tokens');
    const used = probeUsage.total_tokens;
    assert.equal(used, probeUsage.prompt_tokens + MAX_TOKENS);
    const tpm = K * used + Math.round(used / 2);

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
    await admin('POST', '/api/v1/tenants', { name: tenant, tier: 'unlimited', limits: { tpm } });
    const created = await admin('POST', `/api/v1/tenants/${tenant}/keys`, { scopes: ['infer', 'read'] });
    key = created['key'] as string;
    keyId = created['id'] as string;

    // Every replica knows the key (GET /v1/models reserves nothing, so the bucket stays full).
    for (const r of replicas) {
      // Until replica r knows the tenant's key (a 200); no deadline: a hang is the runner's timeout.
      while ((await fetch(`${r.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status !== 200) {
        await new Promise((res) => setTimeout(res, 100));
      }
    }

    const t0 = performance.now();
    const answers = await Promise.all(Array.from({ length: OFFERED }, (_, i) => chat(replicas[i % replicas.length]!, key, prompt)));
    const elapsedMs = performance.now() - t0;

    // The bucket starts full (tpm) and refills tpm per minute; every reservation happened within the burst.
    const refill = (tpm * elapsedMs) / 60_000;
    const most = Math.floor((tpm + refill) / used);
    const statuses = new Map<number, number>();
    for (const a of answers) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
    const admitted = statuses.get(200) ?? 0;
    const detail =
      `admitted ${admitted} of ${OFFERED} in ${elapsedMs.toFixed(0)} ms; ${used} tokens per request, tpm ${tpm}, ` +
      `refill during the burst ${refill.toFixed(2)} tokens, at most ${most}; statuses ${JSON.stringify([...statuses])}`;
    t.diagnostic(detail);
    assert.equal(K * used <= tpm && (K + 1) * used > tpm, true);
    assert.ok(admitted >= K && admitted <= most, detail);
    assert.equal(admitted + (statuses.get(429) ?? 0), OFFERED, `every other request is a 429: ${detail}`);
    if (refill < used - Math.round(used / 2)) assert.equal(admitted, K, `the refill cannot pay for another request: ${detail}`);

    const perReplica = replicas.map(() => 0);
    answers.forEach((a, i) => {
      if (a.status === 200) {
        perReplica[i % replicas.length]!++;
        const usage = a.body['usage'] as Usage;
        const counts = (u: Usage): number[] => [u.prompt_tokens, u.completion_tokens, u.total_tokens];
        assert.deepEqual(counts(usage), counts(probeUsage), 'usage equals the reservation: nothing refunded or overcharged');
        assert.equal((a.body['choices'] as Array<{ finish_reason: string }>)[0]!.finish_reason, 'length');
        assert.equal(a.headers['x-ratelimit-limit-tokens'], String(tpm));
      } else {
        const e = a.body['error'] as { message: string; type: string; param: unknown; code: string };
        assert.ok(e, `OpenAI error shape: ${JSON.stringify(a.body)}`);
        assert.equal(e.type, 'tokens');
        assert.equal(e.code, 'rate_limit_exceeded');
        assert.ok('param' in e);
        assert.match(e.message, /tokens per min \(TPM\): Limit \d+/);
        assert.match(e.message, new RegExp(`Limit ${tpm}, `));
        const retryAfter = Number(a.headers['retry-after']);
        const retryAfterMs = Number(a.headers['retry-after-ms']);
        assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `retry-after ${String(a.headers['retry-after'])}`);
        assert.ok(retryAfterMs > 0 && retryAfterMs <= 60_000, `retry-after-ms ${String(a.headers['retry-after-ms'])}`);
        assert.ok(retryAfter * 1000 >= retryAfterMs, `retry-after (s) ${retryAfter} rounds ${retryAfterMs} ms up`);
        assert.equal(a.headers['x-ratelimit-limit-tokens'], String(tpm));
      }
    });
    t.diagnostic(`admitted per replica ${JSON.stringify(perReplica)}`);

    // Usage: each replica flushes every 200 ms into the shared Postgres; every replica then reads the same sums.
    const expected = { requests: admitted, errors: 0, promptTokens: admitted * probeUsage.prompt_tokens, completionTokens: admitted * MAX_TOKENS };
    for (const r of replicas) {
      for (;;) {
        // no deadline (a loaded machine may be slow): a hang is the runner's timeout
        const res = await fetch(`${r.url}/api/v1/llm/usage?tenant=${tenant}&group_by=total`, { headers: { authorization: `Bearer ${ADMIN}` } });
        assert.equal(res.status, 200);
        const rows = ((await res.json()) as { usage: Array<Record<string, unknown>> }).usage;
        if (rows.length === 1 && rows[0]!['requests'] === admitted) {
          const row = rows[0]!;
          assert.deepEqual({ tenant: row['tenant'], model: row['model'] }, { tenant, model: MODEL });
          assert.deepEqual(
            { requests: row['requests'], errors: row['errors'], promptTokens: row['promptTokens'], completionTokens: row['completionTokens'] },
            expected,
          );
          break;
        }
        assert.ok(rows.length <= 1 && Number(rows[0]?.['requests'] ?? 0) < admitted, `usage never exceeds the admitted requests: ${JSON.stringify(rows)}`);
        await new Promise((res) => setTimeout(res, 100));
      }
    }
    // The tenant key sees its own usage too.
    const own = await fetch(`${replicas[2]!.url}/api/v1/llm/usage?group_by=total`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(own.status, 200);
    const ownRows = ((await own.json()) as { usage: Array<Record<string, unknown>> }).usage;
    assert.deepEqual(
      ownRows.map((r) => [r['tenant'], r['requests']]),
      [[tenant, admitted]],
    );
  });
});
