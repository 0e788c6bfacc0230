/**
 * The multi-tenant gateway end to end (in process, embedded SQLite, in-memory limits): every endpoint probed
 * with no key, malformed headers, a revoked key, an expired key and another tenant's key; isolation (404
 * exactly as for a model that does not exist), scopes, sharing, tenant-created models, limits and quotas
 * with their headers, usage and the audit log, metrics filtering, bootstrap key and the secure default.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { HTTPMethods, InjectOptions, LightMyRequestResponse } from 'fastify';
import { loadServerConfig } from '../src/config/server-config.js';
import { createLogger, createSwitchyard } from '../src/server.js';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

const ADMIN = 'test-platform-admin-key-0123456789';
const MODEL = Buffer.from(mlp(7));
const inferBody = (seed = 1) => ({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, seed) }] });

type Json = Record<string, unknown>;

async function req(srv: TestServer, key: string | null, opts: InjectOptions & { header?: string }): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { ...(opts.headers as Record<string, string> | undefined) };
  if (opts.header !== undefined) headers['authorization'] = opts.header;
  else if (key !== null) headers['authorization'] = `Bearer ${key}`;
  const { header: _h, ...rest } = opts;
  return srv.sy.app.inject({ ...rest, headers });
}

const as = (srv: TestServer, key: string | null) => ({
  get: (url: string) => req(srv, key, { method: 'GET', url }),
  post: (url: string, payload?: unknown) => req(srv, key, { method: 'POST', url, ...(payload === undefined ? {} : { payload: payload as Json }) }),
  put: (url: string, payload?: unknown) => req(srv, key, { method: 'PUT', url, ...(payload === undefined ? {} : { payload: payload as Json }) }),
  patch: (url: string, payload: unknown) => req(srv, key, { method: 'PATCH', url, payload: payload as Json }),
  del: (url: string) => req(srv, key, { method: 'DELETE', url }),
});

function expect(r: LightMyRequestResponse, status: number, what: string): Json {
  assert.equal(r.statusCode, status, `${what}: expected ${status}, got ${r.statusCode}: ${r.body.slice(0, 300)}`);
  return r.body ? (JSON.parse(r.body) as Json) : {};
}

async function createKey(srv: TestServer, tenant: string, scopes: string[], extra: Json = {}): Promise<{ id: string; key: string }> {
  const k = expect(await as(srv, ADMIN).post(`/api/v1/tenants/${tenant}/keys`, { scopes, ...extra }), 201, `key for ${tenant}`);
  return { id: k['id'] as string, key: k['key'] as string };
}

describe('tenancy gateway', () => {
  let srv: TestServer;
  let acme: { id: string; key: string };
  let acmeAdmin: { id: string; key: string };
  let acmeRead: { id: string; key: string };
  let beta: { id: string; key: string };
  let revoked: { id: string; key: string };
  let expired: { id: string; key: string };

  before(async () => {
    srv = await startSwitchyard(
      {
        'acme.m': { versions: { 1: MODEL } },
        'beta.m': { versions: { 1: MODEL } },
        shared: { versions: { 1: MODEL } },
      },
      { config: { adminKey: ADMIN, authCacheMs: 60_000 } },
    );
    const admin = as(srv, ADMIN);
    expect(await admin.post('/api/v1/tenants', { name: 'acme', tier: 'standard' }), 201, 'create acme');
    expect(await admin.post('/api/v1/tenants', { name: 'beta', tier: 'standard' }), 201, 'create beta');
    expect(await admin.put('/api/v1/models/acme.m/owner', { tenant: 'acme' }), 200, 'give acme.m');
    expect(await admin.put('/api/v1/models/beta.m/owner', { tenant: 'beta' }), 200, 'give beta.m');
    acme = await createKey(srv, 'acme', ['infer', 'read']);
    acmeAdmin = await createKey(srv, 'acme', ['infer', 'read', 'admin']);
    acmeRead = await createKey(srv, 'acme', ['read']);
    beta = await createKey(srv, 'beta', ['infer', 'read', 'admin']);
    revoked = await createKey(srv, 'acme', ['infer', 'read', 'admin']);
    expect(await admin.del(`/api/v1/keys/${revoked.id}`), 200, 'revoke');
    expired = await createKey(srv, 'acme', ['infer', 'read', 'admin'], { expiresAt: new Date(Date.now() + 1000).toISOString() });
    await new Promise((r) => setTimeout(r, 1100));
  });
  after(() => srv.close());

  it('stores only a hash of each key and lists keys by prefix, never the secret', async () => {
    const r = expect(await as(srv, ADMIN).get('/api/v1/tenants/acme/keys'), 200, 'list keys');
    const keys = r['keys'] as Json[];
    assert.ok(keys.some((k) => k['id'] === acme.id && k['status'] === 'active'));
    assert.ok(keys.some((k) => k['id'] === revoked.id && k['status'] === 'revoked'));
    assert.ok(keys.some((k) => k['id'] === expired.id && k['status'] === 'expired'));
    assert.ok(!JSON.stringify(r).includes(acme.key.slice(16)), 'no secret in listings');
    assert.ok(acme.key.startsWith(`${acme.id}_`), 'the id is the key prefix');
    const row = await srv.sy.registry.database.db.selectFrom('api_keys').selectAll().where('id', '=', acme.id).executeTakeFirstOrThrow();
    assert.ok(!JSON.stringify(row).includes(acme.key.slice(16)), 'the database holds no secret');
    assert.match(row.hash, /^[0-9a-f]{64}$/);
  });

  it('probes every endpoint: no key, malformed header, revoked, expired → 401; another tenant → 404 as if absent', async () => {
    const doc = JSON.parse((await srv.sy.app.inject('/docs/json')).body) as { paths: Record<string, Record<string, unknown>> };
    const endpoints: Array<[string, string]> = [['GET', '/metrics']];
    for (const [path, ops] of Object.entries(doc.paths)) for (const m of Object.keys(ops)) endpoints.push([m.toUpperCase(), path]);
    assert.ok(endpoints.length > 30, `found ${endpoints.length} endpoints`);
    const publicPaths = new Set(['/v2/health/live', '/v2/health/ready']);
    const fill = (path: string, model: string, tenant: string): string =>
      path
        .replace('{model}', model)
        .replace('{name}', model)
        .replace('{version}', '1')
        .replace('{alias}', 'production')
        .replace('{key}', 'k')
        .replace('{tenant}', tenant)
        .replace('{id}', acme.id);
    let probed = 0;
    for (const [method, path] of endpoints) {
      if (publicPaths.has(path)) continue;
      const url = fill(path, 'acme.m', 'acme');
      const send = (header: string | undefined) =>
        req(srv, null, {
          method: method as HTTPMethods,
          url,
          ...(header === undefined ? {} : { header }),
          ...(method === 'GET' || method === 'DELETE' ? {} : { payload: {} }),
        });
      for (const [what, header, pattern] of [
        ['no key', undefined, /missing Authorization/],
        ['malformed (Basic)', 'Basic dXNlcjpwYXNz', /malformed/],
        ['malformed (empty bearer)', 'Bearer', /malformed/],
        ['malformed (two tokens)', `Bearer ${acme.key} extra`, /malformed/],
        ['garbage key', 'Bearer not-a-key', /invalid API key/],
        ['revoked', `Bearer ${revoked.key}`, /revoked/],
        ['expired', `Bearer ${expired.key}`, /expired/],
      ] as const) {
        const r = await send(header);
        assert.equal(r.statusCode, 401, `${method} ${url} with ${what}: ${r.statusCode} ${r.body.slice(0, 200)}`);
        // The OpenAI-compatible API (/v1) answers with OpenAI's error object, the rest with the V2 string.
        const error = JSON.parse(r.body).error as string | { message: string; type: string };
        if (url.startsWith('/v1/')) assert.equal(typeof error === 'object' && error.type, 'invalid_request_error', `${method} ${url} with ${what}`);
        assert.match(typeof error === 'string' ? error : error.message, pattern, `${method} ${url} with ${what}`);
        assert.equal(r.headers['www-authenticate'], 'Bearer');
      }
      // Another tenant's key (with every scope): a path naming acme's model or tenant answers exactly like one
      // naming a model / tenant that does not exist.
      const names = /\{(model|name|tenant|id)\}/.test(path);
      const other = await req(srv, beta.key, { method: method as HTTPMethods, url, ...(method === 'GET' || method === 'DELETE' ? {} : { payload: {} }) });
      if (names) {
        const ghostUrl = fill(path, 'acme.ghost', 'ghost').replace(acme.id, 'sy_aaaaaaaaaaaa');
        const ghost = await req(srv, beta.key, {
          method: method as HTTPMethods,
          url: ghostUrl,
          ...(method === 'GET' || method === 'DELETE' ? {} : { payload: {} }),
        });
        // 404, or 403 for platform-only actions, which refuse every tenant key whatever the target.
        assert.ok(
          other.statusCode === 404 || (other.statusCode === 403 && /platform admin key/.test(other.body)),
          `${method} ${url} with another tenant's key: ${other.statusCode} ${other.body.slice(0, 200)}`,
        );
        assert.equal(other.statusCode, ghost.statusCode, `${method} ${path}: same status as for a missing one`);
        assert.equal(
          other.body.replaceAll('acme.m', 'X').replaceAll('acme', 'X').replaceAll(acme.id, 'X'),
          ghost.body.replaceAll('acme.ghost', 'X').replaceAll('ghost', 'X').replaceAll('sy_aaaaaaaaaaaa', 'X'),
          `${method} ${path}: same body as for a missing one`,
        );
      } else if (path !== '/api/v1/audit') {
        // beta's audit entries name what beta itself tried, acme.m included
        assert.ok(!other.body.includes('acme.m'), `${method} ${path} with another tenant's key leaks acme.m: ${other.body.slice(0, 300)}`);
      }
      probed++;
    }
    assert.ok(probed > 30);
  });

  it('a tenant calls its own models; scopes are enforced on what it can see', async () => {
    const r = await as(srv, acme.key).post('/v2/models/acme.m/infer', inferBody());
    expect(r, 200, 'acme infers on its model');
    assert.ok(r.headers['x-ratelimit-limit-requests'], 'rate-limit headers on a limited response');
    expect(await as(srv, acme.key).get('/v2/models/acme.m'), 200, 'metadata');
    expect(await as(srv, acmeRead.key).post('/v2/models/acme.m/infer', inferBody()), 403, 'read-only key cannot infer');
    expect(await as(srv, acmeRead.key).get('/v2/models/acme.m/ready'), 200, 'read-only key reads readiness');
    expect(await as(srv, acme.key).put('/api/v1/models/acme.m/aliases/production', { version: 1 }), 403, 'no admin scope');
    expect(await as(srv, acmeAdmin.key).put('/api/v1/models/acme.m/aliases/production', { version: 1 }), 200, 'admin scope');
    const list = expect(await as(srv, acme.key).get('/api/v1/models'), 200, 'list');
    assert.deepEqual(
      (list['models'] as Json[]).map((m) => m['name']),
      ['acme.m'],
      'a tenant lists only its models',
    );
    expect(await as(srv, acme.key).post('/api/v1/tenants', { name: 'evil' }), 403, 'platform-only');
    expect(await as(srv, acme.key).get('/v2/models/shared'), 404, 'platform models are not visible until shared');
  });

  it('sharing gives read and infer, never change; "*" shares with every tenant', async () => {
    expect(await as(srv, beta.key).put('/api/v1/models/acme.m/shares/beta'), 404, 'beta cannot share what it cannot see');
    const a = expect(await as(srv, acmeAdmin.key).put('/api/v1/models/acme.m/shares/beta'), 200, 'acme shares with beta');
    assert.deepEqual(a, { model: 'acme.m', owner: 'acme', shared: ['beta'] });
    expect(await as(srv, beta.key).post('/v2/models/acme.m/infer', inferBody()), 200, 'beta calls the shared model');
    expect(await as(srv, beta.key).put('/api/v1/models/acme.m/aliases/canary', { version: 1 }), 403, 'beta cannot change it');
    expect(await as(srv, beta.key).get('/api/v1/models/acme.m/access'), 403, 'only the owner sees the share list');
    expect(await as(srv, acmeAdmin.key).del('/api/v1/models/acme.m/shares/beta'), 200, 'unshare');
    expect(await as(srv, beta.key).post('/v2/models/acme.m/infer', inferBody()), 404, 'gone again');
    expect(await as(srv, ADMIN).put('/api/v1/models/shared/shares/*'), 200, 'share with all');
    expect(await as(srv, acme.key).post('/v2/models/shared/infer', inferBody()), 200, 'acme sees it');
    expect(await as(srv, beta.key).post('/v2/models/shared/infer', inferBody()), 200, 'beta sees it');
  });

  it('a tenant creates models only in its namespace and owns them', async () => {
    const up = (key: string, name: string) =>
      req(srv, key, {
        method: 'POST',
        url: `/api/v1/models/${name}/versions`,
        payload: MODEL,
        headers: { 'content-type': 'application/octet-stream' },
      });
    expect(await up(acmeAdmin.key, 'acme.fresh'), 201, 'upload in own namespace');
    expect(await up(acme.key, 'acme.other'), 403, 'needs the admin scope');
    expect(await up(acmeAdmin.key, 'beta.sneaky'), 404, "another tenant's namespace");
    expect(await up(acmeAdmin.key, 'plain'), 404, 'outside any namespace');
    expect(await up(acmeAdmin.key, 'beta.m'), 404, "another tenant's existing model: as if absent");
    expect(await as(srv, acmeAdmin.key).post('/api/v1/models', { name: 'unprefixed' }), 403, 'create outside the namespace');
    expect(await as(srv, acmeAdmin.key).post('/api/v1/models', { name: 'acme.empty' }), 201, 'create inside');
    const access = expect(await as(srv, acmeAdmin.key).get('/api/v1/models/acme.fresh/access'), 200, 'access');
    assert.equal(access['owner'], 'acme');
    expect(await as(srv, beta.key).get('/api/v1/models/acme.fresh'), 404, 'invisible to beta');
  });

  it('revoking a key stops it at once', async () => {
    const k = await createKey(srv, 'acme', ['infer']);
    expect(await as(srv, k.key).post('/v2/models/acme.m/infer', inferBody()), 200, 'before');
    expect(await as(srv, acmeAdmin.key).del(`/api/v1/keys/${k.id}`), 200, 'tenant admin revokes its own key');
    expect(await as(srv, k.key).post('/v2/models/acme.m/infer', inferBody()), 401, 'after');
    expect(await as(srv, beta.key).del(`/api/v1/keys/${acme.id}`), 404, "another tenant's key is not found");
  });

  it('rate limits with a burst, quotas distinguishable from rate limiting, headers on every response', async () => {
    const admin = as(srv, ADMIN);
    expect(await admin.post('/api/v1/tenants', { name: 'slow', tier: 'unlimited', limits: { rps: 1, burst: 3 } }), 201, 'tenant');
    expect(await admin.post('/api/v1/tenants', { name: 'quota', tier: 'unlimited', limits: { dailyQuota: 2 } }), 201, 'tenant');
    expect(await admin.put('/api/v1/models/shared/shares/*'), 200, 'shared');
    const slow = await createKey(srv, 'slow', ['infer']);
    const quota = await createKey(srv, 'quota', ['infer']);
    const codes: number[] = [];
    let last!: LightMyRequestResponse;
    for (let i = 0; i < 4; i++) {
      last = await as(srv, slow.key).post('/v2/models/shared/infer', inferBody());
      codes.push(last.statusCode);
    }
    assert.deepEqual(codes, [200, 200, 200, 429], 'burst of 3, then limited');
    assert.equal(last.headers['x-ratelimit-limit-requests'], '3');
    assert.equal(last.headers['x-ratelimit-remaining-requests'], '0');
    assert.match(String(last.headers['x-ratelimit-reset-requests']), /^\d+(\.\d+)?(ms|s)$/);
    assert.ok(Number(last.headers['retry-after']) >= 1, 'Retry-After');
    assert.equal(last.headers['x-switchyard-limit-reason'], 'rate');
    assert.match(JSON.parse(last.body).error, /rate limit exceeded/);
    assert.equal(JSON.parse(last.body).code, 'SY_ERR_RATE_LIMITED');

    const q1 = await as(srv, quota.key).post('/v2/models/shared/infer', inferBody());
    assert.equal(q1.statusCode, 200);
    assert.equal(q1.headers['x-switchyard-quota-limit'], '2');
    assert.equal(q1.headers['x-switchyard-quota-remaining'], '1');
    expect(await as(srv, quota.key).post('/v2/models/shared/infer', inferBody()), 200, 'second');
    const q3 = await as(srv, quota.key).post('/v2/models/shared/infer', inferBody());
    assert.equal(q3.statusCode, 429);
    assert.equal(q3.headers['x-switchyard-limit-reason'], 'quota_daily');
    assert.match(JSON.parse(q3.body).error, /daily request quota exhausted/);
    assert.equal(JSON.parse(q3.body).code, 'SY_ERR_QUOTA_EXCEEDED');
    assert.ok(Number(q3.headers['retry-after']) > 1 && Number(q3.headers['retry-after']) <= 86_400, 'retry after the UTC day rolls over');
    // Per-key and per-model limits stack on the tenant's.
    const perKey = await createKey(srv, 'acme', ['infer'], { limits: { rps: 0.5, burst: 1 } });
    expect(await as(srv, perKey.key).post('/v2/models/acme.m/infer', inferBody()), 200, 'first');
    const k2 = await as(srv, perKey.key).post('/v2/models/acme.m/infer', inferBody());
    assert.equal(k2.statusCode, 429);
    assert.match(JSON.parse(k2.body).error, new RegExp(`key ${perKey.id}`));
    expect(await as(srv, acme.key).post('/v2/models/acme.m/infer', inferBody()), 200, "the tenant's other keys are unaffected");
    expect(await admin.patch('/api/v1/tenants/slow', { limits: { rps: 100, models: { shared: { rps: 1, burst: 1 } } } }), 200, 'per-model limit');
    await new Promise((r) => setTimeout(r, 100)); // the tenant's emptied bucket refills at its new rate
    expect(await as(srv, slow.key).post('/v2/models/shared/infer', inferBody()), 200, 'first on the model');
    const m2 = await as(srv, slow.key).post('/v2/models/shared/infer', inferBody());
    assert.equal(m2.statusCode, 429);
    assert.match(JSON.parse(m2.body).error, /model shared/);
    // The platform is never limited.
    for (let i = 0; i < 5; i++) expect(await as(srv, ADMIN).post('/v2/models/shared/infer', inferBody()), 200, 'platform');
  });

  it('accounts usage per tenant, model and version; a tenant reads only its own', async () => {
    const before = expect(await as(srv, acme.key).get('/api/v1/usage?group_by=total&model=acme.m'), 200, 'usage');
    const n0 = ((before['usage'] as Json[])[0]?.['requests'] as number | undefined) ?? 0;
    const byKey0 = expect(await as(srv, acme.key).get(`/api/v1/usage?group_by=total&model=acme.m&key=${acme.id}`), 200, 'usage of the key');
    const k0 = ((byKey0['usage'] as Json[])[0]?.['requests'] as number | undefined) ?? 0;
    for (let i = 0; i < 3; i++) expect(await as(srv, acme.key).post('/v2/models/acme.m/infer', inferBody(i)), 200, 'infer');
    expect(
      await as(srv, acme.key).post('/v2/models/acme.m/infer', { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }] }),
      400,
      'bad input',
    );
    const u = expect(await as(srv, acme.key).get('/api/v1/usage?group_by=total&model=acme.m'), 200, 'usage');
    const rows = u['usage'] as Json[];
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!['tenant'], 'acme');
    assert.equal(rows[0]!['requests'], n0 + 4);
    // The 400 is the caller's fault: counted as invalid, not as a (server) error, and its rows are not counted.
    assert.ok((rows[0]!['invalid'] as number) >= 1);
    assert.equal(rows[0]!['errors'], 0);
    const r0 = ((before['usage'] as Json[])[0]?.['rows'] as number | undefined) ?? 0;
    assert.equal(rows[0]!['rows'], r0 + 3, 'rows of the served requests only');
    assert.ok((rows[0]!['computeMs'] as number) > 0);
    assert.equal(rows[0]!['keyId'], null, 'summed over keys by default');
    // Per API key: the four requests are on the row of the key that made them; the rows add up to the total.
    const perKey = expect(await as(srv, acmeRead.key).get('/api/v1/usage?group_by=total&model=acme.m&by_key=true'), 200, 'by key')['usage'] as Json[];
    assert.equal(perKey.find((r) => r['keyId'] === acme.id)?.['requests'], k0 + 4);
    assert.equal(
      perKey.reduce((n, r) => n + (r['requests'] as number), 0),
      rows[0]!['requests'],
    );
    const oneKey = expect(await as(srv, ADMIN).get(`/api/v1/usage?group_by=total&key=${acme.id}`), 200, 'one key')['usage'] as Json[];
    assert.ok(oneKey.length > 0 && oneKey.every((r) => r['keyId'] === acme.id && r['tenant'] === 'acme'));
    const all = expect(await as(srv, acme.key).get('/api/v1/usage?group_by=total'), 200, 'all');
    assert.ok(
      (all['usage'] as Json[]).every((r) => r['tenant'] === 'acme'),
      'only its own tenant',
    );
    expect(await as(srv, acme.key).get('/api/v1/usage?tenant=beta'), 404, "another tenant's usage");
    const platform = expect(await as(srv, ADMIN).get('/api/v1/usage?group_by=total'), 200, 'platform');
    assert.ok(
      (platform['usage'] as Json[]).some((r) => r['tenant'] === 'beta'),
      'the platform sees every tenant',
    );
  });

  it('audits control-plane changes with who, what, when and from where; tenants read their own', async () => {
    const r = expect(await as(srv, ADMIN).get('/api/v1/audit?action=POST /api/v1/tenants'), 200, 'audit');
    const entries = r['entries'] as Json[];
    assert.ok(entries.length >= 2);
    const e = entries.at(-1)!;
    assert.equal(e['actor'], 'admin');
    assert.equal(e['status'], 201);
    assert.equal(e['ip'], '127.0.0.1');
    assert.ok(Date.parse(e['at'] as string) > Date.now() - 600_000);
    const denied = expect(await as(srv, ADMIN).get('/api/v1/audit?action=POST /api/v1/tenants&limit=1000'), 200, 'audit');
    assert.ok(
      (denied['entries'] as Json[]).some((x) => x['status'] === 403 && String(x['actor']).startsWith('acme/')),
      'refused attempts are recorded too',
    );
    const mine = expect(await as(srv, acmeAdmin.key).get('/api/v1/audit?limit=1000'), 200, 'tenant audit');
    assert.ok((mine['entries'] as Json[]).length > 0);
    assert.ok(
      (mine['entries'] as Json[]).every((x) => x['tenant'] === 'acme'),
      'only its own tenant',
    );
    expect(await as(srv, acme.key).get('/api/v1/audit'), 403, 'needs the admin scope');
  });

  it("a tenant's metrics scrape shows only its models and its tenant label", async () => {
    const all = (await as(srv, ADMIN).get('/metrics')).body;
    assert.match(all, /model="beta\.m"/);
    const mine = await as(srv, acme.key).get('/metrics');
    assert.equal(mine.statusCode, 200);
    assert.match(mine.body, /model="acme\.m"/);
    assert.doesNotMatch(mine.body, /model="beta\.m"/);
    assert.doesNotMatch(mine.body, /tenant="(?!acme")/);
    assert.match(mine.body, /switchyard_tenant_requests_total\{tenant="acme"/);
  });
});

describe('limit store unreachable', () => {
  for (const mode of ['open', 'closed'] as const) {
    it(`fails ${mode}: bounded wait, a metric, no crash`, async () => {
      const srv = await startSwitchyard(
        { 'acme.m': { versions: { 1: MODEL } } },
        {
          config: { adminKey: ADMIN, redis: 'redis://127.0.0.1:1', rateLimitFail: mode, redisTimeoutMs: 100 },
        },
      );
      try {
        const admin = as(srv, ADMIN);
        expect(await admin.post('/api/v1/tenants', { name: 'acme', limits: { rps: 1000 } }), 201, 'tenant');
        expect(await admin.put('/api/v1/models/acme.m/owner', { tenant: 'acme' }), 200, 'owner');
        const k = await createKey(srv, 'acme', ['infer']);
        for (let i = 0; i < 3; i++) {
          const r = await as(srv, k.key).post('/v2/models/acme.m/infer', inferBody());
          if (mode === 'open') expect(r, 200, 'admitted unchecked');
          else {
            expect(r, 503, 'refused');
            assert.match(JSON.parse(r.body).error, /limits fail closed/);
            assert.ok(Number(r.headers['retry-after']) >= 1);
          }
        }
        const m = (await admin.get('/metrics')).body;
        assert.match(m, /switchyard_ratelimit_store_errors_total [1-9]/);
        if (mode === 'open') assert.match(m, /switchyard_ratelimit_unchecked_total 3/);
        expect(await admin.get('/v2/health/live'), 200, 'still serving');
      } finally {
        await srv.close();
      }
    });
  }
});

describe('authentication modes', () => {
  it('generates a platform admin key once when auth is on and none is configured', async () => {
    const srv = await startSwitchyard({}, { config: { auth: true } });
    try {
      const key = srv.sy.bootstrapKey;
      assert.ok(key, 'generated');
      expect(await as(srv, key).get('/api/v1/whoami'), 200, 'works');
      expect(await as(srv, null).get('/api/v1/tenants'), 401, 'no key');
      const dataDir = join(srv.dir, 'data');
      await srv.sy.close();
      const again = await createSwitchyard(loadServerConfig({ dataDir, auth: true, logLevel: 'silent' }, {}), createLogger('silent'));
      try {
        assert.equal(again.bootstrapKey, null, 'not generated twice');
        const r = await again.app.inject({ url: '/api/v1/whoami', headers: { authorization: `Bearer ${key}` } });
        assert.equal(r.statusCode, 200, 'the stored key survives a restart');
      } finally {
        await again.close();
      }
    } finally {
      await srv.close();
    }
  });

  it('refuses a non-loopback address without auth unless --insecure', async () => {
    await assert.rejects(
      createSwitchyard(loadServerConfig({ host: '0.0.0.0', logLevel: 'silent' }, {})),
      /refusing to serve 0\.0\.0\.0 \(not loopback\) without authentication/,
    );
    await assert.rejects(createSwitchyard(loadServerConfig({ host: '10.1.2.3', logLevel: 'silent' }, {})), /--insecure/);
  });

  it('open mode on loopback: no key, or a token that is no key here, acts as the platform; a known key still counts', async () => {
    const srv = await startSwitchyard({ m: { versions: { 1: MODEL } } });
    try {
      assert.equal(srv.sy.gateway.authRequired, false);
      expect(await as(srv, null).post('/v2/models/m/infer', inferBody()), 200, 'open');
      expect(await as(srv, null).post('/api/v1/tenants', { name: 't1' }), 201, 'tenant');
      const k = expect(await as(srv, null).post('/api/v1/tenants/t1/keys', { scopes: ['infer'] }), 201, 'key');
      expect(await as(srv, k['key'] as string).post('/v2/models/m/infer', inferBody()), 404, 'a tenant key sees only its models');
      // The OpenAI SDKs always send a bearer token: one this server never issued acts as no key.
      expect(await as(srv, 'sy_bogus').get('/v2/models/m'), 200, 'a token that is no key here');
      expect(await as(srv, 'sk-no-key-required').post('/v2/models/m/infer', inferBody()), 200, 'any bearer token');
      expect(await as(srv, `${(k['key'] as string).slice(0, -4)}xxxx`).get('/v2/models/m'), 200, 'a known id with a wrong secret is no key either');
      // A key this server issued and revoked names a tenant that must not act: still refused.
      expect(await as(srv, null).del(`/api/v1/keys/${k['id'] as string}`), 200, 'revoke');
      expect(await as(srv, k['key'] as string).get('/v2/models/m'), 401, 'a revoked key is refused even in open mode');
    } finally {
      await srv.close();
    }
  });
});
