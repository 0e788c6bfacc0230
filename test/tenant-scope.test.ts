/**
 * Tenant-owned objects addressed per tenant (alert rules, experiments): a tenant creates them only in its
 * namespace, sees only its own, and another tenant's answer exactly as a missing one (no existence oracle),
 * even on a model shared with it. The audit log keeps what a change replaced and what it set.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { mlp } from '../tools/onnx/zoo.js';
import { startSwitchyard, type TestServer } from './helpers.js';

const ADMIN = 'tenant-scope-admin-key-0123456789';
type Json = Record<string, unknown>;

describe('tenant-scoped addressing', () => {
  let srv: TestServer;
  let acme: string;
  let beta: string;
  const call = (key: string, method: 'GET' | 'PUT' | 'DELETE' | 'POST' | 'PATCH', url: string, payload?: object): Promise<LightMyRequestResponse> =>
    srv.sy.app.inject({ method, url, headers: { authorization: `Bearer ${key}` }, ...(payload ? { payload } : {}) });
  const body = (r: LightMyRequestResponse): Json => JSON.parse(r.body) as Json;
  /** Same status, code and message, with the id in the message standing for itself. */
  const sameAnswer = (a: LightMyRequestResponse, b: LightMyRequestResponse, aId: string, bId: string, what: string): void => {
    assert.equal(a.statusCode, b.statusCode, `${what}: ${a.body} vs ${b.body}`);
    assert.deepEqual(
      { ...body(a), error: String(body(a)['error']).replace(aId, 'ID') },
      { ...body(b), error: String(body(b)['error']).replace(bId, 'ID') },
      what,
    );
  };

  before(async () => {
    srv = await startSwitchyard({ 'acme.m': { versions: { 1: mlp(3) } }, 'beta.m': { versions: { 1: mlp(4) } } }, { config: { adminKey: ADMIN } });
    for (const t of ['acme', 'beta']) {
      assert.equal((await call(ADMIN, 'POST', '/api/v1/tenants', { name: t })).statusCode, 201);
      assert.equal((await call(ADMIN, 'PUT', `/api/v1/models/${t}.m/owner`, { tenant: t })).statusCode, 200);
    }
    const key = async (t: string): Promise<string> =>
      body(await call(ADMIN, 'POST', `/api/v1/tenants/${t}/keys`, { scopes: ['infer', 'read', 'admin'] }))['key'] as string;
    acme = await key('acme');
    beta = await key('beta');
    // acme shares its model with beta (read + infer): its alert rules and experiments stay acme's.
    assert.equal((await call(acme, 'PUT', '/api/v1/models/acme.m/shares/beta')).statusCode, 200);
  });
  after(() => srv.close());

  it('a platform key created with the read scope reads everything and changes nothing (it cannot mint admin keys)', async () => {
    const created = await call(ADMIN, 'POST', '/api/v1/admin-keys', { name: 'prometheus', scopes: ['read'] });
    assert.equal(created.statusCode, 201, created.body);
    const reader = body(created)['key'] as string;
    assert.equal((await call(reader, 'GET', '/api/v1/tenants')).statusCode, 200);
    assert.equal((await call(reader, 'GET', '/api/v1/models/beta.m')).statusCode, 200, 'a platform reader sees every model');
    const mint = await call(reader, 'POST', '/api/v1/admin-keys', { scopes: ['read', 'infer', 'admin'] });
    assert.equal(mint.statusCode, 403, mint.body);
    assert.equal(body(mint)['code'], 'SY_ERR_FORBIDDEN');
    assert.equal((await call(reader, 'POST', '/api/v1/tenants', { name: 'gamma' })).statusCode, 403);
    const full = body(await call(ADMIN, 'POST', '/api/v1/admin-keys', { scopes: ['read', 'infer', 'admin'] }))['key'] as string;
    assert.equal((await call(full, 'POST', '/api/v1/admin-keys', { scopes: ['read'] })).statusCode, 201, 'an admin-scoped platform key still mints keys');
  });

  it('batch jobs: a tenant key may name neither a server path nor a webhook URL (403, checked before the job is made)', async () => {
    const path = await call(acme, 'POST', '/api/v1/batch/jobs', { model: 'acme.m', input: { path: '/etc/passwd' } });
    assert.equal(path.statusCode, 403, path.body);
    assert.equal(body(path)['code'], 'SY_ERR_FORBIDDEN');
    assert.match(String(body(path)['error']), /^input\.path: /);
    const hook = await call(acme, 'POST', '/api/v1/batch/jobs', {
      model: 'acme.m',
      input: { fileId: 'file-x' },
      webhook: { url: 'http://169.254.169.254/latest' },
    });
    assert.equal(hook.statusCode, 403, hook.body);
    assert.equal(body(hook)['code'], 'SY_ERR_FORBIDDEN');
    assert.match(String(body(hook)['error']), /^webhook: /);
    // The platform key passes both checks (the unknown file is what it is refused for).
    const admin = await call(ADMIN, 'POST', '/api/v1/batch/jobs', {
      model: 'acme.m',
      input: { fileId: 'file-x' },
      webhook: { url: 'http://127.0.0.1:9/done' },
    });
    assert.notEqual(admin.statusCode, 403, admin.body);
  });

  it("alert rules: created in the tenant namespace only; another tenant's answer as a missing one", async () => {
    const rule = { kind: 'error_rate', model: 'acme.m', threshold: 0.5 };
    assert.equal((await call(acme, 'PUT', '/api/v1/alerts/rules/acme.errors', rule)).statusCode, 200);
    // Outside its namespace: 403 whether the id exists or not.
    const taken = await call(beta, 'PUT', '/api/v1/alerts/rules/acme.errors', { ...rule, model: 'beta.m' });
    const free = await call(beta, 'PUT', '/api/v1/alerts/rules/acme.nothing', { ...rule, model: 'beta.m' });
    assert.equal(taken.statusCode, 403);
    sameAnswer(taken, free, 'acme.errors', 'acme.nothing', 'PUT outside the namespace');
    assert.equal(body(await call(acme, 'GET', '/api/v1/alerts/rules/acme.errors'))['threshold'], 0.5, 'not overwritten');
    // Read and delete: the same 404 as a rule that does not exist, though beta can see acme.m.
    for (const method of ['GET', 'DELETE'] as const) {
      sameAnswer(
        await call(beta, method, '/api/v1/alerts/rules/acme.errors'),
        await call(beta, method, '/api/v1/alerts/rules/beta.none'),
        'acme.errors',
        'beta.none',
        `${method} a foreign rule`,
      );
      assert.equal((await call(beta, method, '/api/v1/alerts/rules/acme.errors')).statusCode, 404);
    }
    assert.deepEqual(
      (body(await call(beta, 'GET', '/api/v1/alerts/rules'))['rules'] as Json[]).map((r) => r['id']),
      [],
      "beta lists none of acme's",
    );
    assert.deepEqual(body(await call(beta, 'GET', '/api/v1/alerts'))['alerts'] as Json[], []);
    assert.deepEqual(
      (body(await call(acme, 'GET', '/api/v1/alerts/rules'))['rules'] as Json[]).map((r) => r['id']),
      ['acme.errors'],
    );
    assert.ok(
      (body(await call(ADMIN, 'GET', '/api/v1/alerts/rules'))['rules'] as Json[]).some((r) => r['id'] === 'acme.errors'),
      'the platform sees every rule',
    );
  });

  it('experiments: a tenant picks ids in its namespace only (a taken id is never a 409 to another tenant)', async () => {
    const a = await call(beta, 'POST', '/api/v1/experiments', { id: 'acme.exp', model: 'beta.m' });
    const b = await call(beta, 'POST', '/api/v1/experiments', { id: 'other.exp', model: 'beta.m' });
    assert.equal(a.statusCode, 403);
    sameAnswer(a, b, 'acme.exp', 'other.exp', 'experiment id outside the namespace');
    // In its namespace, the request goes on to the model's checks (no routing arms here: 409 about the model, not the id).
    const mine = await call(beta, 'POST', '/api/v1/experiments', { id: 'beta.exp', model: 'beta.m' });
    assert.equal(mine.statusCode, 409);
    assert.match(String(body(mine)['error']), /routes to/);
  });

  it('the audit log stores the values a change replaced and set', async () => {
    assert.equal((await call(acme, 'PUT', '/api/v1/alerts/rules/acme.audited', { kind: 'error_rate', model: 'acme.m', threshold: 0.2 })).statusCode, 200);
    assert.equal((await call(acme, 'PUT', '/api/v1/alerts/rules/acme.audited', { kind: 'error_rate', model: 'acme.m', threshold: 0.3 })).statusCode, 200);
    assert.equal((await call(ADMIN, 'PATCH', '/api/v1/tenants/beta', { weight: 3 })).statusCode, 200);
    const entries = body(await call(ADMIN, 'GET', '/api/v1/audit?limit=50'))['entries'] as Array<
      Json & { detail: { before: Json | null; after: Json | null } | null }
    >;
    const put = entries.find((e) => e['action'] === 'PUT /api/v1/alerts/rules/:rule' && e['target'] === 'rule=acme.audited' && e.detail?.before !== null);
    assert.ok(put, 'the replacing PUT is audited with its before value');
    assert.equal(put.detail!.before!['threshold'], 0.2);
    assert.equal(put.detail!.after!['threshold'], 0.3);
    const patch = entries.find((e) => e['action'] === 'PATCH /api/v1/tenants/:tenant');
    assert.ok(patch?.detail, 'tenant update audited with values');
    assert.notEqual(patch.detail.before!['weight'], 3);
    assert.equal(patch.detail.after!['weight'], 3);
  });
});
