/**
 * Traffic management end to end: arm assignment (proportions over 100k keys, stickiness across replicas),
 * routing policies through the admin API, fallback chains and circuit breakers on a failing version, shadow
 * copies that never touch the primary response, the result cache (tenants, versions, errors), experiments
 * with exposures, outcomes, report and guardrail rollback. Failing and slow versions come from a runtime
 * wrapper that injects faults into chosen artifacts (by sha256) after they loaded.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { err } from '../src/errors.js';
import { parseRoutingPolicy } from '../src/registry/routing-policy.js';
import { CompiledPolicy } from '../src/routing/router.js';
import { chooseVariation, getBucketRange, hash } from '../src/routing/growthbook.js';
import { onnxRuntime } from '../src/runtimes/onnx/index.js';
import type { LoadedModel, Runtime } from '../src/runtimes/types.js';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

const V1 = mlp(7);
const V2 = mlp(8);
const V3 = mlp(9);
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

interface Fault {
  delayMs?: number;
  fail?: boolean;
}
/** Faults by artifact sha256, applied to runs after load (warmup is never affected: faults are set once serving). */
const faults = new Map<string, Fault>();

/** onnxruntime, with per-artifact injected delay and failure. */
const faultyRuntime: Runtime = {
  name: 'onnx-faulty',
  inspect: (p) => onnxRuntime.inspect(p),
  async load(path, options): Promise<LoadedModel> {
    const inner = await onnxRuntime.load(path, options);
    const key = [...faults.keys(), sha(V1), sha(V2), sha(V3)].find((s) => path.includes(s)) ?? '';
    return {
      ...inner,
      dispose: () => inner.dispose(),
      instances: inner.instances.map((inst) => ({
        get inflight() {
          return inst.inflight;
        },
        async run(inputs) {
          const f = faults.get(key);
          if (f?.delayMs) await sleep(f.delayMs);
          if (f?.fail) throw err('SY_ERR_INFERENCE_FAILED', 'injected failure');
          return inst.run(inputs);
        },
        dispose: () => inst.dispose(),
      })),
    };
  },
};

const request = (seed: number, params?: Record<string, unknown>) =>
  JSON.stringify({
    inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, seed) }],
    ...(params ? { parameters: params } : {}),
  });

describe('arm assignment', () => {
  const policy = parseRoutingPolicy({
    arms: [
      { name: 'a', target: '1', weight: 20 },
      { name: 'b', target: '2', weight: 30 },
      { name: 'c', target: '3', weight: 50 },
    ],
    sticky: { key: 'header:x-user-id', seed: 'exp-1' },
  });

  it('splits 100k routing keys in proportion to the weights (within 5 sigma)', () => {
    const p = new CompiledPolicy('m', 1, policy);
    const n = 100_000;
    const counts = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const a = p.assign(`user-${i}`);
      assert.equal(a.assignment, 'hash');
      counts.set(a.arm.name, (counts.get(a.arm.name) ?? 0) + 1);
    }
    for (const [arm, w] of [
      ['a', 0.2],
      ['b', 0.3],
      ['c', 0.5],
    ] as const) {
      const sigma = Math.sqrt(n * w * (1 - w));
      const got = counts.get(arm) ?? 0;
      assert.ok(Math.abs(got - n * w) < 5 * sigma, `arm ${arm}: ${got} of ${n}, expected ${n * w} ± ${Math.round(5 * sigma)}`);
    }
  });

  it('is sticky and agrees with GrowthBook: the same key gets the same arm in every replica', () => {
    const replicaA = new CompiledPolicy('m', 1, policy);
    const replicaB = new CompiledPolicy('m', 7, parseRoutingPolicy(JSON.parse(JSON.stringify(policy))));
    const ranges = getBucketRange(3, 1, [0.2, 0.3, 0.5]);
    for (let i = 0; i < 2000; i++) {
      const key = `u${i * 7919}`;
      const a = replicaA.assign(key).arm.name;
      assert.equal(replicaB.assign(key).arm.name, a);
      assert.equal(replicaA.assign(key).arm.name, a, 'repeat');
      assert.equal(['a', 'b', 'c'][chooseVariation(hash('exp-1', key, 2)!, ranges)], a, 'GrowthBook SDK assignment');
    }
  });

  it('without a key assigns at random by weight and says so', () => {
    const p = new CompiledPolicy('m', 1, policy);
    let seq = 0;
    const rnd = (): number => (seq++ * 0.6180339887) % 1;
    const counts = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const a = p.assign(undefined, rnd);
      assert.equal(a.assignment, 'random');
      assert.equal(a.unit, null);
      counts.set(a.arm.name, (counts.get(a.arm.name) ?? 0) + 1);
    }
    assert.ok(Math.abs((counts.get('c') ?? 0) / 10_000 - 0.5) < 0.02);
  });

  it('keys outside the namespace go to the first arm, excluded from the experiment', () => {
    const p = new CompiledPolicy('m', 1, parseRoutingPolicy({ ...policy, sticky: { ...policy.sticky, namespace: ['ns', 0, 0.5] } }));
    let excluded = 0;
    for (let i = 0; i < 4000; i++) {
      const a = p.assign(`k${i}`);
      if (a.assignment === 'excluded') {
        excluded++;
        assert.equal(a.arm.name, 'a');
      }
    }
    assert.ok(excluded > 1600 && excluded < 2400, `about half excluded, got ${excluded}`);
  });

  it('rejects bad policies with a message naming the field', () => {
    assert.throws(() => parseRoutingPolicy({ arms: [{ name: 'a', target: '1', weight: 0 }] }), /at least one arm needs a weight/);
    assert.throws(
      () =>
        parseRoutingPolicy({
          arms: [
            { name: 'a', target: '1', weight: 1 },
            { name: 'a', target: '2', weight: 1 },
          ],
        }),
      /duplicate arm name/,
    );
    assert.throws(() => parseRoutingPolicy({ sticky: { key: 'header:x' } }), /sticky: needs arms/);
    assert.throws(() => parseRoutingPolicy({ arms: [], bogus: 1 }), /invalid routing policy/);
    assert.throws(() => parseRoutingPolicy({ shadow: [{ target: '2', fraction: 2 }] }), /shadow\.0\.fraction/);
  });
});

describe('routing policies on a live server', () => {
  let srv: TestServer;
  const inject = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown, headers: Record<string, string> = {}) =>
    srv.sy.app.inject({
      method,
      url,
      headers: { ...(payload === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : JSON.stringify(payload) }),
    });
  const setPolicy = async (policy: unknown): Promise<void> => {
    const r = await inject('PUT', '/api/v1/models/mlp/routing', policy);
    assert.equal(r.statusCode, 200, r.body);
  };
  const infer = (seed = 1, headers: Record<string, string> = {}, params?: Record<string, unknown>) =>
    inject('POST', '/v2/models/mlp/infer', request(seed, params), headers);

  before(async () => {
    srv = await startSwitchyard({ mlp: { versions: { 1: V1, 2: V2, 3: V3 }, config: { version_policy: { all: {} } } } }, { runtime: faultyRuntime });
  });
  after(() => srv.close());

  it('a policy is validated, versioned in the event log, and routes sticky by header; responses name the version and arm', async () => {
    const bad = await inject('PUT', '/api/v1/models/mlp/routing', { arms: [{ name: 'a', target: '1', weight: -1 }] });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().error, /weight/);
    const typo = await inject('PUT', '/api/v1/models/mlp/routing', { arms: [{ name: 'a', target: '99', weight: 1 }], fallback: [{ version: 'prod' }] });
    assert.equal(typo.statusCode, 400);
    assert.match(typo.json().error, /arms\.0\.target: model "mlp" has no version 99/);
    assert.match((await inject('PUT', '/api/v1/models/mlp/routing', { fallback: [{ version: 'prod' }] })).json().error, /has no alias "prod"/);
    await setPolicy({
      arms: [
        { name: 'a', target: '1', weight: 1 },
        { name: 'b', target: '2', weight: 1 },
      ],
      sticky: { key: 'header:x-user-id', seed: 's1' },
    });
    const got = (await inject('GET', '/api/v1/models/mlp/routing')).json();
    assert.equal(got.revision, 1);
    assert.equal(got.policy.sticky.hashVersion, 2, 'defaults filled in');
    const seen = new Map<string, string>();
    for (let i = 0; i < 40; i++) {
      const user = `user-${i % 10}`;
      const r = await infer(i, { 'x-user-id': user });
      assert.equal(r.statusCode, 200, r.body);
      const arm = String(r.headers['x-switchyard-arm']);
      const body = r.json();
      assert.equal(body.model_version, arm === 'a' ? '1' : '2');
      assert.equal(r.headers['x-switchyard-model-version'], body.model_version);
      assert.deepEqual(body.parameters, { served_by: `mlp:${body.model_version}`, arm });
      if (seen.has(user)) assert.equal(arm, seen.get(user), `${user} stays in its arm`);
      seen.set(user, arm);
    }
    assert.equal(new Set(seen.values()).size, 2, 'both arms used');
    // Naming a version bypasses the policy.
    const direct = await inject('POST', '/v2/models/mlp/versions/3/infer', request(1));
    assert.equal(direct.json().model_version, '3');
    assert.equal(direct.headers['x-switchyard-arm'], undefined);
    const events = (await inject('GET', '/api/v1/models/mlp/events')).json() as { events: { type: string; key: string }[] } | { type: string; key: string }[];
    const list = Array.isArray(events) ? events : events.events;
    assert.ok(
      list.some((e) => e.type === 'routing_set' && e.key === '1'),
      'routing_set event with revision 1',
    );
  });

  it('routes by a request parameter; no key falls back to random and is counted separately', async () => {
    await setPolicy({
      arms: [
        { name: 'a', target: '1', weight: 1 },
        { name: 'b', target: '2', weight: 1 },
      ],
      sticky: { key: 'parameter:user_id' },
    });
    const first = await infer(1, {}, { user_id: 'alice' });
    for (let i = 0; i < 5; i++) assert.equal((await infer(i, {}, { user_id: 'alice' })).headers['x-switchyard-arm'], first.headers['x-switchyard-arm']);
    for (let i = 0; i < 5; i++) assert.equal((await infer(i)).statusCode, 200);
    const metrics = (await inject('GET', '/metrics')).body;
    assert.match(metrics, /switchyard_routing_requests_total\{model="mlp",arm="(a|b)",assignment="random"\} \d+/);
    assert.match(metrics, /switchyard_routing_requests_total\{model="mlp",arm="(a|b)",assignment="hash"\} \d+/);
  });

  it('falls back on a failing version, opens its circuit, skips it while open, and closes after a good probe', async () => {
    faults.set(sha(V2), { fail: true });
    try {
      await setPolicy({
        arms: [{ name: 'main', target: '2', weight: 1 }],
        fallback: [{ version: '1' }],
        circuitBreaker: { errorRate: 0.5, minRequests: 4, windowMs: 60_000, cooldownMs: 300 },
      });
      for (let i = 0; i < 4; i++) {
        const r = await infer(i);
        assert.equal(r.statusCode, 200, r.body);
        assert.equal(r.json().model_version, '1');
        assert.equal(r.headers['x-switchyard-fallback'], 'runtime_error');
        assert.equal(r.json().parameters.fallback_from, 'mlp:2');
      }
      const state = (await inject('GET', '/api/v1/models/mlp/routing')).json();
      assert.deepEqual(state.circuits.find((c: { version: string }) => c.version === '2')?.state, 'open');
      const skipped = await infer(9);
      assert.equal(skipped.headers['x-switchyard-fallback'], 'circuit_open');
      assert.match((await inject('GET', '/metrics')).body, /switchyard_circuit_state\{model="mlp",version="2"\} 1/);
      // Healthy again: after the cool-down one probe goes to version 2 and closes the circuit.
      faults.delete(sha(V2));
      await sleep(350);
      const probe = await infer(10);
      assert.equal(probe.json().model_version, '2');
      const after = (await inject('GET', '/api/v1/models/mlp/routing')).json();
      assert.equal(after.circuits.find((c: { version: string }) => c.version === '2')?.state, 'closed');
    } finally {
      faults.delete(sha(V2));
    }
  });

  it('with no fallback left, an open circuit answers 503 SY_ERR_CIRCUIT_OPEN with Retry-After', async () => {
    faults.set(sha(V3), { fail: true });
    try {
      await setPolicy({ arms: [{ name: 'main', target: '3', weight: 1 }], circuitBreaker: { errorRate: 0.5, minRequests: 2, cooldownMs: 60_000 } });
      assert.equal((await infer(1)).statusCode, 500);
      assert.equal((await infer(2)).statusCode, 500);
      const r = await infer(3);
      assert.equal(r.statusCode, 503);
      assert.match(r.json().error, /circuit open/);
      assert.ok(Number(r.headers['retry-after']) >= 1);
    } finally {
      faults.delete(sha(V3));
    }
  });

  it('falls back when the routed version exceeds the per-attempt timeout', async () => {
    faults.set(sha(V2), { delayMs: 1500 });
    try {
      await setPolicy({ arms: [{ name: 'main', target: '2', weight: 1 }], fallback: [{ version: '1' }], timeoutMs: 100 });
      const r = await infer(4);
      assert.equal(r.statusCode, 200, r.body);
      assert.equal(r.json().model_version, '1');
      assert.equal(r.headers['x-switchyard-fallback'], 'timeout');
    } finally {
      faults.delete(sha(V2));
    }
    await sleep(1500); // let the abandoned slow run finish before the next test
  });

  it('shadow copies never change the primary response, nor wait for a slow or failing shadow', async () => {
    await setPolicy({ arms: [{ name: 'main', target: '1', weight: 1 }] });
    const plain = (await infer(21)).json();
    faults.set(sha(V3), { delayMs: 800 });
    try {
      await setPolicy({ arms: [{ name: 'main', target: '1', weight: 1 }], shadow: [{ target: '3', fraction: 1, timeoutMs: 5000 }] });
      const r = await infer(21);
      // The response is complete while the shadow copy is still running (it takes 800 ms more).
      const during = (await inject('GET', '/api/v1/models/mlp/routing')).json().shadows.find((s: { target: string }) => s.target === '3');
      assert.equal(r.statusCode, 200);
      assert.deepEqual(r.json().outputs, plain.outputs, 'same outputs as without a shadow');
      assert.equal(during?.ok ?? 0, 0, 'shadow not finished when the primary answered');
      await sleep(1200);
      const done = (await inject('GET', '/api/v1/models/mlp/routing')).json().shadows.find((s: { target: string }) => s.target === '3');
      assert.equal(done.ok, 1);
      assert.ok(done.maxAbsDiff > 0, 'a different model: outputs differ');
      assert.equal(typeof done.agreement, 'number');
      faults.set(sha(V3), { fail: true });
      const r2 = await infer(21);
      assert.deepEqual(r2.json().outputs, plain.outputs, 'a failing shadow changes nothing either');
      await sleep(100);
      const failed = (await inject('GET', '/api/v1/models/mlp/routing')).json().shadows.find((s: { target: string }) => s.target === '3');
      assert.equal(failed.errors, 1);
      const metrics = (await inject('GET', '/metrics')).body;
      assert.match(metrics, /switchyard_shadow_requests_total\{model="mlp",target="3",outcome="ok"\} 1/);
      assert.match(metrics, /switchyard_shadow_requests_total\{model="mlp",target="3",outcome="error"\} 1/);
    } finally {
      faults.delete(sha(V3));
    }
  });

  it('caches results per version: a hit returns the same outputs, a new version never returns the old result, errors are never cached', async () => {
    await setPolicy({ arms: [{ name: 'main', target: '1', weight: 1 }], cache: { ttlMs: 60_000 } });
    const miss = await infer(31);
    assert.equal(miss.headers['x-switchyard-cache'], 'miss');
    const hit = await infer(31);
    assert.equal(hit.headers['x-switchyard-cache'], 'hit');
    assert.deepEqual(hit.json().outputs, miss.json().outputs);
    assert.equal(hit.json().parameters.cache_hit, true);
    await setPolicy({ arms: [{ name: 'main', target: '2', weight: 1 }], cache: { ttlMs: 60_000 } });
    const v2 = await infer(31);
    assert.equal(v2.json().model_version, '2');
    assert.equal(v2.headers['x-switchyard-cache'], 'miss');
    assert.notDeepEqual(v2.json().outputs, miss.json().outputs);
    faults.set(sha(V2), { fail: true });
    try {
      assert.equal((await infer(32)).statusCode, 500);
    } finally {
      faults.delete(sha(V2));
    }
    const after = await infer(32);
    assert.equal(after.statusCode, 200);
    assert.equal(after.headers['x-switchyard-cache'], 'miss', 'the error was not cached');
    assert.match((await inject('GET', '/metrics')).body, /switchyard_cache_requests_total\{model="mlp",result="hit"\} [1-9]/);
  });

  it('experiments: exposures at routing time, outcome events, a report with statistics, and stop', async () => {
    await setPolicy({
      arms: [
        { name: 'control', target: '1', weight: 1 },
        { name: 'treatment', target: '2', weight: 1 },
      ],
      sticky: { key: 'header:x-user-id', seed: 'exp' },
    });
    const created = await inject('POST', '/api/v1/experiments', { id: 'exp-ab', model: 'mlp', description: 'v2 vs v1' });
    assert.equal(created.statusCode, 201, created.body);
    assert.deepEqual(
      created.json().arms.map((a: { name: string }) => a.name),
      ['control', 'treatment'],
    );
    assert.equal((await inject('POST', '/api/v1/experiments', { model: 'mlp' })).statusCode, 409, 'one running experiment per model');
    const armOf = new Map<string, string>();
    for (let u = 0; u < 60; u++) {
      const r = await infer(u, { 'x-user-id': `u${u}` });
      armOf.set(`u${u}`, String(r.headers['x-switchyard-arm']));
    }
    await infer(1); // no key: random, not an exposure
    const events = [...armOf.keys()].filter((_, i) => i % 3 === 0).map((unit) => ({ unit, metric: 'converted' }));
    const posted = await inject('POST', '/api/v1/experiments/exp-ab/events', { events });
    assert.equal(posted.statusCode, 202, posted.body);
    assert.equal(posted.json().accepted, events.length);
    assert.equal((await inject('POST', '/api/v1/experiments/exp-ab/events', { unit: 'u1', metric: 'bad metric!' })).statusCode, 400);
    const report = (await inject('GET', '/api/v1/experiments/exp-ab/report')).json();
    const byArm = new Map<string, { exposures: number; requests: { hash: number; random: number }; metrics: Record<string, { units: number }> }>(
      report.arms.map((a: { name: string }) => [a.name, a]),
    );
    for (const arm of ['control', 'treatment']) {
      const expected = [...armOf.values()].filter((a) => a === arm).length;
      assert.equal(byArm.get(arm)!.exposures, expected, `${arm} exposures`);
      const conv = events.filter((e) => armOf.get(e.unit) === arm).length;
      assert.equal(byArm.get(arm)!.metrics['converted']?.units ?? 0, conv, `${arm} conversions`);
    }
    assert.equal(byArm.get('control')!.requests.random + byArm.get('treatment')!.requests.random, 1);
    const cmp = report.comparisons.find((c: { arm: string; metric: string }) => c.arm === 'treatment' && c.metric === 'converted');
    assert.ok(cmp.conversion === null || (cmp.conversion.pValue >= 0 && cmp.conversion.pValue <= 1));
    assert.equal(report.srm.mismatch, false);
    assert.equal(report.guardrails.length, 2);
    const stopped = await inject('POST', '/api/v1/experiments/exp-ab/stop', { reason: 'done' });
    assert.equal(stopped.json().status, 'stopped');
  });

  it('a guardrail breach on the canary rolls traffic back to the control and writes an event saying why', async () => {
    await setPolicy({
      arms: [
        { name: 'control', target: '1', weight: 1 },
        { name: 'canary', target: '3', weight: 1 },
      ],
    });
    const created = await inject('POST', '/api/v1/experiments', {
      id: 'canary-3',
      model: 'mlp',
      control: 'control',
      guardrails: { maxErrorRate: 0.2, minRequests: 5 },
    });
    assert.equal(created.statusCode, 201, created.body);
    faults.set(sha(V3), { fail: true });
    try {
      let canaryErrors = 0;
      for (let i = 0; i < 60 && canaryErrors < 6; i++) {
        const r = await infer(i);
        if (r.statusCode === 500) canaryErrors++;
      }
      assert.ok(canaryErrors >= 5, 'the canary failed');
      await srv.sy.tracker.checkGuardrails();
      const exp = (await inject('GET', '/api/v1/experiments/canary-3')).json();
      assert.equal(exp.status, 'rolled_back');
      assert.match(exp.stopReason, /error rate/);
      const policy = (await inject('GET', '/api/v1/models/mlp/routing')).json().policy;
      assert.deepEqual(
        policy.arms.map((a: { name: string; weight: number }) => [a.name, a.weight]),
        [
          ['control', 1],
          ['canary', 0],
        ],
      );
      await srv.sy.manager.settled();
      for (let i = 0; i < 10; i++) assert.equal((await infer(i)).json().model_version, '1', 'all traffic on the control');
      const log = (await inject('GET', '/api/v1/models/mlp/events')).json() as
        { type: string; value: string; actor: string }[] | { events: { type: string; value: string; actor: string }[] };
      const list = Array.isArray(log) ? log : log.events;
      const rollback = list.filter((e) => e.type === 'routing_set').at(-1)!;
      assert.equal(rollback.actor, 'switchyard:guardrail');
      assert.match(JSON.parse(rollback.value).reason, /guardrail breached: arm "canary" error rate/);
    } finally {
      faults.delete(sha(V3));
    }
  });
});

describe('result cache and tenants', () => {
  const ADMIN = 'routing-test-admin-key-0123456789';
  let srv: TestServer;
  const call = (key: string, method: 'GET' | 'POST' | 'PUT', url: string, payload?: unknown) =>
    srv.sy.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${key}`, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : JSON.stringify(payload) }),
    });
  before(async () => {
    srv = await startSwitchyard({ mlp: { versions: { 1: V1 } } }, { config: { adminKey: ADMIN } });
  });
  after(() => srv.close());

  it('never serves one tenant a result cached for another', async () => {
    const keys: string[] = [];
    for (const t of ['acme', 'beta']) {
      assert.equal((await call(ADMIN, 'POST', '/api/v1/tenants', { name: t, tier: 'standard' })).statusCode, 201);
      const k = await call(ADMIN, 'POST', `/api/v1/tenants/${t}/keys`, { scopes: ['infer', 'read'] });
      keys.push(k.json().key as string);
    }
    assert.equal((await call(ADMIN, 'PUT', '/api/v1/models/mlp/shares/*')).statusCode < 300, true);
    assert.equal((await call(ADMIN, 'PUT', '/api/v1/models/mlp/routing', { cache: { ttlMs: 60_000 } })).statusCode, 200);
    const [acme, beta] = keys as [string, string];
    const a1 = await call(acme, 'POST', '/v2/models/mlp/infer', request(5));
    assert.equal(a1.statusCode, 200, a1.body);
    assert.equal(a1.headers['x-switchyard-cache'], 'miss');
    assert.equal((await call(acme, 'POST', '/v2/models/mlp/infer', request(5))).headers['x-switchyard-cache'], 'hit');
    const b1 = await call(beta, 'POST', '/v2/models/mlp/infer', request(5));
    assert.equal(b1.headers['x-switchyard-cache'], 'miss', "beta does not see acme's entry");
    assert.deepEqual(b1.json().outputs, a1.json().outputs, 'same model, same answer: computed again');
    // A tenant may route its own model, but not fall back to a model it cannot see.
    const own = await call(ADMIN, 'POST', '/api/v1/tenants/acme/keys', { scopes: ['admin', 'infer', 'read'] });
    const acmeAdmin = own.json().key as string;
    const pushed = await srv.sy.app.inject({
      method: 'POST',
      url: '/api/v1/models/acme.scorer/versions',
      headers: { authorization: `Bearer ${acmeAdmin}`, 'content-type': 'application/octet-stream' },
      payload: Buffer.from(V1),
    });
    assert.equal(pushed.statusCode, 201, pushed.body);
    assert.equal((await call(ADMIN, 'POST', '/api/v1/models', { name: 'platform.secret' })).statusCode, 201);
    const leak = await call(acmeAdmin, 'PUT', '/api/v1/models/acme.scorer/routing', { fallback: [{ model: 'platform.secret' }] });
    assert.equal(leak.statusCode, 400);
    assert.match(leak.json().error, /fallback model "platform.secret" not found/);
    assert.equal(
      (await call(acmeAdmin, 'PUT', '/api/v1/models/acme.scorer/routing', { fallback: [{ model: 'mlp' }] })).statusCode,
      200,
      'a shared model is fine',
    );
    // A tenant cannot change the routing of a model it does not own.
    assert.equal((await call(acme, 'PUT', '/api/v1/models/mlp/routing', {})).statusCode, 403);
  });
});
