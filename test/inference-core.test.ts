/**
 * The inference core is the one data plane: OpenAI embeddings on an ONNX encoder go through the same
 * InferenceService as V2 REST, so they get the caller's fair-queueing flow, the encoder's routing policy, the
 * prediction log and tenancy usage. Timing is controlled, not measured: a gated runtime holds the encoder's
 * only instance busy while the queue fills, then the order in which queued rows run is read off the runtime.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseRoutingPolicy } from '../src/registry/routing-policy.js';
import { CompiledPolicy } from '../src/routing/router.js';
import { encoder } from '../tools/onnx/zoo.js';
import { gatedRuntime, until } from './gated-runtime.js';
import { startSwitchyard, type TestServer } from './helpers.js';

const ADMIN = 'inference-core-admin-key-0123456789';
const SEQ = 8;
const ENCODER_V1 = encoder({ layers: 1, dModel: 16, heads: 2, seqLen: SEQ, ffn: 32, vocab: 300, seed: 1 });
const ENCODER_V2 = encoder({ layers: 1, dModel: 16, heads: 2, seqLen: SEQ, ffn: 32, vocab: 300, seed: 2 });
const GATED = encoder({ layers: 1, dModel: 16, heads: 2, seqLen: SEQ, ffn: 32, vocab: 300, seed: 3 });
const GATED_SHA = createHash('sha256').update(GATED).digest('hex');

const gate = gatedRuntime([GATED_SHA]);

describe('inference core: every entry goes through one data plane', () => {
  let srv: TestServer;
  let work: string;
  const keys: Record<string, string> = {};
  const inject = (key: string, method: 'GET' | 'POST' | 'PUT', url: string, payload?: unknown, headers: Record<string, string> = {}) =>
    srv.sy.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${key}`, ...headers },
      ...(payload === undefined ? {} : { payload: payload as object }),
    });
  const ok = async (key: string, method: 'GET' | 'POST' | 'PUT', url: string, payload?: unknown, headers: Record<string, string> = {}) => {
    const r = await inject(key, method, url, payload, headers);
    assert.ok(r.statusCode < 300, `${method} ${url}: ${r.statusCode} ${r.body}`);
    return r.json() as Record<string, unknown>;
  };
  const embed = (tenant: string, model: string, input: string, headers: Record<string, string> = {}) =>
    inject(keys[tenant]!, 'POST', '/v1/embeddings', { model, input }, headers);

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'switchyard-core-'));
    const llmConfig = join(work, 'llm.json');
    await writeFile(
      llmConfig,
      JSON.stringify({
        models: [
          { name: 'embed', backend: 'onnx-embeddings', model: 'encoder', maxLength: SEQ },
          { name: 'embed-gated', backend: 'onnx-embeddings', model: 'gated', maxLength: SEQ },
          { name: 'embed-private', backend: 'onnx-embeddings', model: 'private', maxLength: SEQ },
        ],
      }),
    );
    srv = await startSwitchyard(
      {
        encoder: { versions: { 1: ENCODER_V1, 2: ENCODER_V2 }, config: { version_policy: { all: {} }, instances: 1 } },
        gated: { versions: { 1: GATED }, config: { instances: 1, max_batch_size: 1, max_queue_delay_us: 0, max_queue_size: 64 } },
        private: { versions: { 1: ENCODER_V1 }, config: { instances: 1 } },
      },
      { runtime: gate.runtime, config: { adminKey: ADMIN, llmConfig, monitorSampleRate: 1, usageFlushMs: 3_600_000 } },
    );
    for (const t of ['acme', 'beta']) {
      await ok(ADMIN, 'POST', '/api/v1/tenants', { name: t, tier: 'unlimited' });
      keys[t] = (await ok(ADMIN, 'POST', `/api/v1/tenants/${t}/keys`, { scopes: ['infer', 'read'] }))['key'] as string;
    }
    await ok(ADMIN, 'PUT', '/api/v1/models/encoder/shares/*');
    await ok(ADMIN, 'PUT', '/api/v1/models/gated/shares/*');
  });
  after(async () => {
    gate.open();
    await srv.close();
    await rm(work, { recursive: true, force: true });
  });

  /**
   * Hold the gated model's one instance with a request of acme, queue 12 more of acme and then 4 of beta, open
   * the gate: the first token of each row that ran, in order (after the one that held the instance).
   */
  async function contend(send: (tenant: string, token: string) => Promise<{ statusCode: number; body: string }>): Promise<string[]> {
    const batcher = srv.sy.manager.resolve('gated').batcher!;
    gate.ran.length = 0;
    gate.close();
    const pending = [send('acme', 'a')];
    await until(() => gate.ran.length === 1);
    for (let i = 0; i < 12; i++) pending.push(send('acme', 'a'));
    await until(() => batcher.queued === 12);
    for (let i = 0; i < 4; i++) pending.push(send('beta', 'b'));
    await until(() => batcher.queued === 16);
    gate.open();
    for (const r of await Promise.all(pending)) assert.equal(r.statusCode, 200, r.body);
    return gate.ran.slice(1).map((id) => String.fromCharCode(id - 3));
  }

  it('two tenants driving /v1/embeddings above capacity get fair shares, as on V2', async () => {
    const viaEmbeddings = await contend((tenant, token) => embed(tenant, 'embed-gated', token));
    const ids = (token: string): number[] => Array.from({ length: SEQ }, (_, j) => (j === 0 ? token.charCodeAt(0) + 3 : 0));
    const viaV2 = await contend((tenant, token) =>
      inject(keys[tenant]!, 'POST', '/v2/models/gated/infer', {
        inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, SEQ], data: ids(token) }],
      }),
    );
    for (const [what, order] of [
      ['embeddings', viaEmbeddings],
      ['V2', viaV2],
    ] as const) {
      assert.equal(order.length, 16, `${what}: every queued row ran once`);
      assert.deepEqual(order.filter((t) => t === 'b').length, 4);
      // One FIFO lane would run beta's rows after all 12 of acme's (positions 12..15); fair queueing interleaves them.
      assert.ok(order.lastIndexOf('b') <= 8, `${what}: beta's rows ran among the first 9, not behind acme's backlog: ${order.join('')}`);
    }
  });

  it('a canary policy on the encoder splits embedding traffic by its sticky key, like V2 traffic', async () => {
    const policy = {
      arms: [
        { name: 'stable', target: '1', weight: 3 },
        { name: 'canary', target: '2', weight: 1 },
      ],
      sticky: { key: 'header:x-user' },
    };
    await ok(ADMIN, 'PUT', '/api/v1/models/encoder/routing', policy);
    const compiled = new CompiledPolicy('encoder', 1, parseRoutingPolicy(policy));
    const served = (): Record<string, number> => Object.fromEntries(srv.sy.inference.statistics('encoder').map((s) => [s.version, s.success.count]));
    const before = served();
    const expected: Record<string, number> = { 1: 0, 2: 0 };
    for (let u = 0; u < 40; u++) {
      const r = await embed('acme', 'embed', `hi ${u}`, { 'x-user': `user-${u}` });
      assert.equal(r.statusCode, 200, r.body);
      expected[compiled.assign(`user-${u}`).arm.target]! += 1;
    }
    const after = served();
    assert.ok(expected['1']! > 0 && expected['2']! > 0, `both arms drawn: ${JSON.stringify(expected)}`);
    assert.equal((after['1'] ?? 0) - (before['1'] ?? 0), expected['1'], 'stable arm');
    assert.equal((after['2'] ?? 0) - (before['2'] ?? 0), expected['2'], 'canary arm');
    // The same user gets the same version's vector every time (sticky), and the two versions differ.
    const vec = async (user: string): Promise<number[]> => {
      const r = await embed('acme', 'embed', 'same', { 'x-user': user });
      assert.equal(r.statusCode, 200, r.body);
      return r.json().data[0].embedding as number[];
    };
    const users = Array.from({ length: 40 }, (_, u) => `user-${u}`);
    const onStable = users.find((u) => compiled.assign(u).arm.target === '1')!;
    const onCanary = users.find((u) => compiled.assign(u).arm.target === '2')!;
    assert.deepEqual(await vec(onStable), await vec(onStable));
    assert.notDeepEqual(await vec(onStable), await vec(onCanary));
  });

  it('embeddings are in the prediction log (tenant, version, arm) and in tenancy usage (rows, compute)', async () => {
    const usage = async (): Promise<{ requests: number; rows: number; computeMs: number }> => {
      const u = (await ok(keys['beta']!, 'GET', '/api/v1/usage?group_by=total&model=encoder'))['usage'] as {
        requests: number;
        rows: number;
        computeMs: number;
      }[];
      return u[0] ?? { requests: 0, rows: 0, computeMs: 0 };
    };
    const before = await usage();
    const r = await inject(
      keys['beta']!,
      'POST',
      '/v1/embeddings',
      { model: 'embed', input: ['one', 'two', 'three'] },
      { 'x-request-id': 'emb-log-1', 'x-user': 'user-1' },
    );
    assert.equal(r.statusCode, 200, r.body);
    const after = await usage();
    assert.equal(after.requests, before.requests + 1);
    assert.equal(after.rows, before.rows + 3, 'three inputs are three rows');
    assert.ok(after.computeMs > before.computeMs, 'compute share charged');
    await srv.sy.monitoring.log.flush();
    const got = await ok(ADMIN, 'GET', '/api/v1/predictions?model=encoder&limit=100');
    const rec = (
      got['predictions'] as { requestId: string; tenant: string; version: number; arm: string | null; inputs: { name: string; shape: number[] }[] }[]
    ).find((p) => p.requestId === 'emb-log-1');
    assert.ok(rec, 'the embedding request is in the prediction log');
    assert.equal(rec.tenant, 'beta');
    assert.ok(rec.arm === 'stable' || rec.arm === 'canary', `routed by the policy: ${rec.arm}`);
    assert.equal(rec.version, rec.arm === 'stable' ? 1 : 2);
    assert.deepEqual(rec.inputs[0]!.shape, [3, SEQ]);
  });

  it("an embedding model is visible exactly when its encoder is: the tenant's model access, not the catalog", async () => {
    const list = (await ok(keys['acme']!, 'GET', '/v1/models'))['data'] as { id: string }[];
    assert.deepEqual(list.map((m) => m.id).sort(), ['embed', 'embed-gated']);
    const hidden = await embed('acme', 'embed-private', 'x');
    assert.equal(hidden.statusCode, 404, hidden.body);
    assert.equal(hidden.json().error.code, 'model_not_found');
    assert.equal((await inject(ADMIN, 'POST', '/v1/embeddings', { model: 'embed-private', input: 'x' })).statusCode, 200, 'the platform sees it');
  });
});
