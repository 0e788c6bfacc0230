/**
 * Scale-out and durability of the serving state: two Switchyard replicas sharing one Postgres registry (an
 * alias moved through one replica's admin API is served by the other), and a restart on the same embedded
 * data dir keeps models, versions and aliases. Postgres must be reachable in CI (CI=true).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';
import { PG_BASE, pgSchema, postgresReachable, REDIS_URL, redisReachable } from './registry-helpers.js';

const infer = async (srv: TestServer, path: string): Promise<{ status: number; version: string }> => {
  const r = await srv.sy.app.inject({
    method: 'POST',
    url: `/v2/models/${path}/infer`,
    payload: { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, 1) }] },
  });
  return { status: r.statusCode, version: r.json().model_version ?? r.json().error };
};

async function upload(srv: TestServer, name: string, bytes: Uint8Array, query = ''): Promise<number> {
  const r = await srv.sy.app.inject({
    method: 'POST',
    url: `/api/v1/models/${name}/versions${query}`,
    headers: { 'content-type': 'application/octet-stream' },
    payload: Buffer.from(bytes),
  });
  assert.equal(r.statusCode, 201, r.body);
  return r.json().version;
}

/** Polls `check` every 20 ms until it holds. No deadline (a loaded machine may be slow): a hang is the test runner's timeout; `what` says what it waits for. */
async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) {
    if (process.env['DEBUG_UNTIL']) process.stderr.write(`waiting until ${what}\n`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('restart on the embedded store', () => {
  it('models, versions and aliases pushed through the API survive a restart', async () => {
    const data = await mkdtemp(join(tmpdir(), 'sy-restart-'));
    try {
      let srv = await startSwitchyard({}, { dataDir: data });
      await upload(srv, 'churn', mlp(1));
      await upload(srv, 'churn', mlp(2), '?alias=production');
      await upload(srv, 'churn', mlp(3));
      await srv.sy.manager.settled();
      assert.equal((await infer(srv, 'churn')).version, '2', 'production wins over latest');
      await srv.close();
      srv = await startSwitchyard({}, { dataDir: data });
      try {
        assert.equal((await infer(srv, 'churn')).version, '2');
        assert.equal((await infer(srv, 'churn/versions/3')).version, '3');
        const events = (await srv.sy.app.inject('/api/v1/models/churn/events')).json().events as { type: string }[];
        assert.deepEqual(
          events.map((e) => e.type),
          ['model_created', 'version_created', 'version_created', 'alias_moved', 'version_created'],
        );
      } finally {
        await srv.close();
      }
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  });
});

const pgDown = await postgresReachable();
const redisDown = await redisReachable();
const inCi = process.env['CI'] === 'true';

describe(
  'two replicas sharing Postgres',
  { skip: pgDown !== null && !inCi ? `Postgres unreachable at ${PG_BASE} (${pgDown}); set CI=true to make this fail` : false },
  () => {
    it('an alias moved on one replica is served by the other (LISTEN/NOTIFY), after warmup there', async () => {
      assert.equal(pgDown, null, `Postgres must be reachable at ${PG_BASE}`);
      const schema = pgSchema();
      const shared = await mkdtemp(join(tmpdir(), 'sy-replicas-')); // artifacts on shared storage
      const a = await startSwitchyard({}, { dataDir: shared, config: { database: schema.url } });
      const b = await startSwitchyard({}, { dataDir: shared, config: { database: schema.url } });
      try {
        await upload(a, 'fraud', mlp(1), '?alias=production');
        await upload(a, 'fraud', mlp(2));
        await until('replica b serves fraud v1', async () => (await infer(b, 'fraud')).version === '1');
        const moved = await a.sy.app.inject({ method: 'PUT', url: '/api/v1/models/fraud/aliases/production', payload: { version: 2 } });
        assert.equal(moved.statusCode, 200, moved.body);
        assert.deepEqual(moved.json(), { alias: 'production', from: 1, to: 2 });
        await until('replica b follows the alias', async () => (await infer(b, 'fraud')).version === '2');
        await until('replica a follows the alias', async () => (await infer(a, 'fraud')).version === '2');
      } finally {
        await a.close();
        await b.close();
        await schema.drop();
        await rm(shared, { recursive: true, force: true });
      }
    });
    it('a key revoked or a model shared on one replica applies on the other at once (NOTIFY), not after the cache time', async () => {
      assert.equal(pgDown, null, `Postgres must be reachable at ${PG_BASE}`);
      const schema = pgSchema();
      const shared = await mkdtemp(join(tmpdir(), 'sy-replicas-'));
      const admin = 'replica-admin-key-0123456789abcdef';
      const config = { database: schema.url, adminKey: admin, authCacheMs: 600_000 };
      const a = await startSwitchyard({}, { dataDir: shared, config });
      const b = await startSwitchyard({}, { dataDir: shared, config });
      const call = (srv: TestServer, key: string, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) =>
        srv.sy.app.inject({ method, url, headers: { authorization: `Bearer ${key}` }, ...(payload === undefined ? {} : { payload: payload as object }) });
      try {
        const pushed = await a.sy.app.inject({
          method: 'POST',
          url: '/api/v1/models/fraud/versions',
          payload: Buffer.from(mlp(1)),
          headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/octet-stream' },
        });
        assert.equal(pushed.statusCode, 201, pushed.body);
        assert.equal((await call(a, admin, 'POST', '/api/v1/tenants', { name: 'acme' })).statusCode, 201);
        const created = await call(a, admin, 'POST', '/api/v1/tenants/acme/keys', { scopes: ['infer', 'read'] });
        const { id, key } = created.json() as { id: string; key: string };
        const meta = () => call(b, key, 'GET', '/v2/models/fraud');
        await until('replica b serves fraud', async () => (await call(b, admin, 'GET', '/v2/models/fraud')).statusCode === 200);
        assert.equal((await meta()).statusCode, 404, 'not shared yet (and b caches that for 10 minutes)');
        assert.equal((await call(a, admin, 'PUT', '/api/v1/models/fraud/shares/acme')).statusCode, 200);
        await until('replica b sees the share', async () => (await meta()).statusCode === 200);
        assert.equal((await call(a, admin, 'DELETE', `/api/v1/keys/${id}`)).statusCode, 200);
        await until('replica b refuses the revoked key', async () => (await meta()).statusCode === 401);
      } finally {
        await a.close();
        await b.close();
        await schema.drop();
        await rm(shared, { recursive: true, force: true });
      }
    });
    it('a routing policy and an experiment set on one replica route the other (NOTIFY): same arms for the same keys, exposures in one report', async () => {
      assert.equal(pgDown, null, `Postgres must be reachable at ${PG_BASE}`);
      const schema = pgSchema();
      const shared = await mkdtemp(join(tmpdir(), 'sy-replicas-'));
      const a = await startSwitchyard({}, { dataDir: shared, config: { database: schema.url } });
      const b = await startSwitchyard({}, { dataDir: shared, config: { database: schema.url } });
      const routed = async (srv: TestServer, user: string): Promise<string> => {
        const r = await srv.sy.app.inject({
          method: 'POST',
          url: '/v2/models/fraud/infer',
          headers: { 'x-user-id': user },
          payload: { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, 1) }] },
        });
        assert.equal(r.statusCode, 200, r.body);
        return `${String(r.headers['x-switchyard-arm'])}:${r.json().model_version as string}`;
      };
      try {
        await upload(a, 'fraud', mlp(1));
        await upload(a, 'fraud', mlp(2));
        const policy = {
          arms: [
            { name: 'control', target: '1', weight: 1 },
            { name: 'treatment', target: '2', weight: 1 },
          ],
          sticky: { key: 'header:x-user-id', seed: 'fraud-ab' },
        };
        assert.equal((await a.sy.app.inject({ method: 'PUT', url: '/api/v1/models/fraud/routing', payload: policy })).statusCode, 200);
        assert.equal((await a.sy.app.inject({ method: 'POST', url: '/api/v1/experiments', payload: { id: 'fraud-ab', model: 'fraud' } })).statusCode, 201);
        await until('replica b knows the experiment', async () => b.sy.tracker.running('fraud')?.id === 'fraud-ab');
        await until('replica b routes by the policy', async () => /^(control|treatment):/.test(await routed(b, 'probe')));
        for (let i = 0; i < 30; i++) assert.equal(await routed(b, `user-${i}`), await routed(a, `user-${i}`), `user-${i}: same arm on both replicas`);
        await a.sy.experiments.flush();
        await b.sy.experiments.flush();
        const report = (await a.sy.app.inject({ method: 'GET', url: '/api/v1/experiments/fraud-ab/report' })).json() as {
          arms: { exposures: number; requests: { hash: number } }[];
        };
        assert.equal(
          report.arms.reduce((n, x) => n + x.exposures, 0),
          31,
          '30 users + the probe, counted once across replicas',
        );
        assert.ok(report.arms.reduce((n, x) => n + x.requests.hash, 0) >= 60, 'requests from both replicas');
      } finally {
        await a.close();
        await b.close();
        await schema.drop();
        await rm(shared, { recursive: true, force: true });
      }
    });
    it('a drift profile and feature definitions set on one replica apply on the other; online features shared through Redis', async () => {
      assert.equal(pgDown, null, `Postgres must be reachable at ${PG_BASE}`);
      assert.equal(redisDown, null, `Redis must be reachable at ${REDIS_URL}`);
      const schema = pgSchema();
      const shared = await mkdtemp(join(tmpdir(), 'sy-replicas-'));
      const config = { database: schema.url, redis: REDIS_URL };
      const a = await startSwitchyard({}, { dataDir: shared, config });
      const b = await startSwitchyard({}, { dataDir: shared, config });
      const call = (srv: TestServer, method: 'GET' | 'POST' | 'PUT', url: string, payload?: string | object, type = 'application/json') =>
        srv.sy.app.inject({
          method,
          url,
          ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : JSON.stringify(payload), headers: { 'content-type': type } }),
        });
      const view = `v_${Math.random().toString(36).slice(2, 8)}`;
      try {
        await upload(a, 'fraud', mlp(1));
        await until('replica b serves fraud', async () => (await infer(b, 'fraud')).status === 200);
        const header = Array.from({ length: 64 }, (_, i) => `features[${i}]`).join(',');
        const rows = Array.from({ length: 200 }, (_, r) =>
          floats(64, r)
            .map((v) => v.toFixed(4))
            .join(','),
        );
        assert.equal((await call(a, 'POST', '/api/v1/models/fraud/versions/1/profile', `${header}\n${rows.join('\n')}\n`, 'text/csv')).statusCode, 201);
        await until(
          'replica b monitors drift against the profile',
          async () => ((await call(b, 'GET', '/api/v1/models/fraud/drift')).json() as { reports?: unknown[] }).reports?.length === 1,
        );

        assert.equal((await call(a, 'PUT', '/api/v1/features/entities/card', { joinKeys: [{ name: 'card_id', type: 'string' }] })).statusCode, 201);
        assert.equal(
          (await call(a, 'PUT', `/api/v1/features/views/${view}`, { entities: ['card'], features: [{ name: 'risk', type: 'float64' }] })).statusCode,
          201,
        );
        await until('replica b knows the view', async () => (await call(b, 'GET', `/api/v1/features/views/${view}`)).statusCode === 200);
        const pushed = await call(a, 'POST', '/api/v1/features/push', { view, rows: [{ card_id: 'c1', event_time: new Date().toISOString(), risk: 0.7 }] });
        assert.equal(pushed.statusCode, 200, pushed.body);
        await until('replica b reads the pushed value (from Redis)', async () => {
          const r = await call(b, 'POST', '/api/v1/features/online', { entities: [{ card_id: 'c1' }], features: [`${view}:risk`] });
          return (
            r.statusCode === 200 &&
            (r.json() as { results: { features: Record<string, { value: number }> }[] }).results[0]!.features[`${view}:risk`]!.value === 0.7
          );
        });
      } finally {
        await a.sy.features.online.dropView(view).catch(() => undefined);
        await a.close();
        await b.close();
        await schema.drop();
        await rm(shared, { recursive: true, force: true });
      }
    });
  },
);
