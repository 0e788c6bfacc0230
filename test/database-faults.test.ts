/**
 * The server against a failing Postgres: the real database behind a TCP proxy the test controls (refused,
 * hung, reset mid-connection). The data plane keeps serving known keys from memory; a key never seen gets
 * 503 + Retry-After; admin calls answer 503 SY_ERR_DATABASE_UNAVAILABLE within the statement bound; readiness
 * stays 200 with `controlPlane: "unavailable"`; nothing crashes (an unhandled 'error' event would end this
 * process); after the database returns, everything recovers by itself, including changes made by another
 * replica while this one could not hear them (LISTEN re-established, missed registry events re-read).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { Registry } from '../src/registry/index.js';
import { mlp } from '../tools/onnx/zoo.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';
import { describeNeeding, PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';

const ADMIN = 'db-faults-platform-admin-key-0123';
const AUTH_CACHE_MS = 200;
const body = { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, 3) }] };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describeNeeding('database faults (Postgres behind a fault proxy)', 'Postgres', await postgresReachable(), () => {
  const schema = pgSchema();
  let proxy: FaultProxy;
  let srv: TestServer;
  let other: Registry;
  const keys: string[] = [];

  const call = (method: 'GET' | 'POST', url: string, key: string, payload?: object): Promise<LightMyRequestResponse> =>
    srv.sy.app.inject({ method, url, headers: { authorization: `Bearer ${key}` }, ...(payload ? { payload } : {}) });
  const infer = (key: string): Promise<LightMyRequestResponse> => call('POST', '/v2/models/acme.m/infer', key, body);
  const ready = async (): Promise<{ status: number; controlPlane: string }> => {
    const r = await srv.sy.app.inject({ method: 'GET', url: '/v2/health/ready' });
    return { status: r.statusCode, controlPlane: (JSON.parse(r.body) as { controlPlane: string }).controlPlane };
  };
  /** Poll until `cond` holds (the test's own timeout bounds it: no wall-clock assertion). */
  const until = async (what: string, cond: () => Promise<boolean> | boolean): Promise<void> => {
    for (let i = 0; !(await cond()); i++) {
      if (i > 600) assert.fail(`${what}: not reached after 60 s`);
      await sleep(100);
    }
  };
  const aliasOf = (alias: string): number | undefined =>
    srv.sy.manager
      .list()
      .find((m) => m.name === 'acme.m')
      ?.aliases.get(alias)?.version;

  /** While the database is out: known keys serve, unknown keys and admin calls 503, readiness says so. */
  async function duringOutage(unknownKey: string): Promise<void> {
    await sleep(AUTH_CACHE_MS + 50); // every cached key is past the cache age now
    const results = await Promise.all(Array.from({ length: 20 }, () => infer(keys[0]!)));
    assert.deepEqual(
      results.map((r) => r.statusCode),
      Array(20).fill(200),
      'a known key keeps inferring while the database is out',
    );
    const admin = await call('GET', '/api/v1/tenants', ADMIN);
    assert.equal(admin.statusCode, 503, admin.body);
    assert.equal(JSON.parse(admin.body).code, 'SY_ERR_DATABASE_UNAVAILABLE');
    assert.equal(admin.headers['retry-after'], '1');
    const unknown = await infer(unknownKey);
    assert.equal(unknown.statusCode, 503, `a key this replica never saw: ${unknown.body}`);
    assert.equal(JSON.parse(unknown.body).code, 'SY_ERR_DATABASE_UNAVAILABLE');
    assert.ok(unknown.headers['retry-after'], 'Retry-After on the unknown key');
    assert.deepEqual(await ready(), { status: 200, controlPlane: 'unavailable' }, 'ready for traffic, control plane reported down');
    const after = await Promise.all(Array.from({ length: 20 }, () => infer(keys[0]!)));
    assert.deepEqual(
      after.map((r) => r.statusCode),
      Array(20).fill(200),
    );
  }

  /** After the database is back: readiness, admin calls, the unknown key, and a change made meanwhile elsewhere. */
  async function recovered(unknownKey: string, alias: string): Promise<void> {
    await until('control plane available again', async () => (await ready()).controlPlane === 'available');
    await until('admin calls answer', async () => (await call('GET', '/api/v1/tenants', ADMIN)).statusCode === 200);
    assert.equal((await infer(unknownKey)).statusCode, 200, 'the key unknown during the outage authenticates');
    await until(`alias "${alias}" set by another replica during the outage is seen (missed events re-read)`, () => aliasOf(alias) === 1);
  }

  before(async () => {
    const direct = new URL(schema.url);
    proxy = await startFaultProxy(direct.hostname, Number(direct.port || 5432));
    const proxied = new URL(schema.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    srv = await startSwitchyard(
      { 'acme.m': { versions: { 1: mlp(7) } } },
      {
        config: { adminKey: ADMIN, authCacheMs: AUTH_CACHE_MS, database: proxied.toString(), databaseTimeoutMs: 1000, usageFlushMs: 200 },
      },
    );
    const admin = (method: 'POST' | 'PUT', url: string, payload: object): Promise<LightMyRequestResponse> =>
      srv.sy.app.inject({ method, url, headers: { authorization: `Bearer ${ADMIN}` }, payload });
    assert.equal((await admin('POST', '/api/v1/tenants', { name: 'acme' })).statusCode, 201);
    assert.equal((await admin('PUT', '/api/v1/models/acme.m/owner', { tenant: 'acme' })).statusCode, 200);
    for (let i = 0; i < 4; i++) {
      const r = await admin('POST', '/api/v1/tenants/acme/keys', { scopes: ['infer', 'read'] });
      assert.equal(r.statusCode, 201, r.body);
      keys.push((JSON.parse(r.body) as { key: string }).key);
    }
    assert.equal((await infer(keys[0]!)).statusCode, 200); // keys[0] is cached; the others never used
    other = await Registry.open({ databaseUrl: schema.url, artifactDir: join(srv.dir, 'other-artifacts'), inspect: async () => ({ inputs: [], outputs: [] }) });
    assert.ok(PG_BASE);
  });
  after(async () => {
    await srv?.close();
    await other?.close();
    await proxy?.close();
    await schema.drop();
  });

  it('refused: serves known keys, 503 for the rest, recovers and re-reads what it missed', async () => {
    await proxy.refuse();
    await duringOutage(keys[1]!);
    await other.setAlias('acme.m', 'during-refused', 1, 'other-replica');
    await proxy.restore();
    await recovered(keys[1]!, 'during-refused');
  });

  it('hung: the same, with every statement bounded by --database-timeout-ms', async () => {
    proxy.hang();
    await duringOutage(keys[2]!);
    await other.setAlias('acme.m', 'during-hung', 1, 'other-replica');
    await proxy.restore();
    await recovered(keys[2]!, 'during-hung');
  });

  it('reset mid-connection: no crash, no 500, LISTEN re-established', async () => {
    const inflight = [...Array.from({ length: 10 }, () => call('GET', '/api/v1/tenants', ADMIN)), ...Array.from({ length: 10 }, () => infer(keys[0]!))];
    proxy.reset();
    const statuses = (await Promise.all(inflight)).map((r) => r.statusCode);
    assert.ok(
      statuses.every((s) => s === 200 || s === 503),
      `only 200 or 503 around a reset: ${statuses.join(',')}`,
    );
    await other.setAlias('acme.m', 'after-reset', 1, 'other-replica');
    await recovered(keys[3]!, 'after-reset');
  });
});
