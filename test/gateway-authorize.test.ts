/**
 * The gateway's decision without a transport: Authorizer.authorize(principal, rule, target) answers
 * visibility (404 as if absent), tenant (404), scope (403), ownership (403) and limits (an admission, refused
 * with its 429 error) for plain values, so gRPC interceptors and batch jobs reuse what the HTTP hooks use.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Authorizer, type AccessRule } from '../src/gateway/authorize.js';
import { Gateway } from '../src/gateway/gateway.js';
import { MemoryLimiter } from '../src/gateway/limiter.js';
import type { TenantStore } from '../src/gateway/store.js';
import { effectiveLimits, TIERS, type ApiKeyRecord, type ModelAccess, type Principal, type TenantLimits, type TenantRecord } from '../src/gateway/types.js';
import { isSwitchyardError } from '../src/errors.js';

const tenant = (name: string, limits: TenantLimits = {}): TenantRecord => ({
  name,
  description: '',
  tier: 'standard',
  weight: 1,
  limits,
  effectiveLimits: effectiveLimits(TIERS['standard']!.limits, limits),
  disabled: false,
  createdAt: '',
  updatedAt: '',
});
const key = (t: string, scopes: ApiKeyRecord['scopes']): ApiKeyRecord => ({
  id: `sy_${t.padEnd(12, 'x')}`,
  tenant: t,
  name: '',
  scopes,
  limits: null,
  createdBy: 'admin',
  createdAt: '',
  expiresAt: null,
  revokedAt: null,
  status: 'active',
});
const as = (t: TenantRecord, scopes: ApiKeyRecord['scopes']): Principal => ({ kind: 'tenant', actor: `${t.name}/k`, tenant: t, key: key(t.name, scopes) });
const platform: Principal = { kind: 'platform', actor: 'admin', key: null };

const INFER: AccessRule = {
  public: false,
  scopes: ['infer'],
  modelParam: 'model',
  tenantParam: null,
  notFound: 'v2',
  mutatesModel: false,
  createsModel: false,
  limited: true,
  audited: false,
};
const CHANGE: AccessRule = { ...INFER, scopes: ['admin'], notFound: 'registry', mutatesModel: true, limited: false };
const TENANT_READ: AccessRule = { ...INFER, scopes: ['read', 'admin'], modelParam: null, tenantParam: 'tenant', limited: false };

async function setup(): Promise<{ gateway: Gateway; authorizer: Authorizer }> {
  const access = new Map<string, ModelAccess>([
    ['acme.m', { model: 'acme.m', owner: 'acme', shared: ['beta'] }],
    ['beta.private', { model: 'beta.private', owner: 'beta', shared: [] }],
  ]);
  const store = { listAccess: async () => access } as unknown as TenantStore;
  const gateway = await Gateway.create({ store, authRequired: true, adminKey: null, limiter: new MemoryLimiter() });
  const authorizer = new Authorizer({ gateway, modelExists: async (name) => access.has(name) });
  return { gateway, authorizer };
}

async function code(f: () => unknown): Promise<string> {
  try {
    await f();
  } catch (e) {
    assert.ok(isSwitchyardError(e), String(e));
    return e.code;
  }
  return 'none';
}

describe('Authorizer (no transport)', () => {
  it('answers visibility, scope and ownership from the principal, rule and target alone', async () => {
    const { gateway, authorizer } = await setup();
    const acme = tenant('acme');
    const beta = tenant('beta');
    assert.equal(await authorizer.authorize(platform, INFER, { model: 'beta.private', tenant: null }), null, 'the platform sees everything, unlimited');
    assert.equal(
      await code(() => authorizer.authorize(as(acme, ['infer']), INFER, { model: 'beta.private', tenant: null })),
      'SY_ERR_MODEL_NOT_FOUND',
      'invisible = absent',
    );
    assert.equal(await code(() => authorizer.authorize(as(acme, ['read']), INFER, { model: 'acme.m', tenant: null })), 'SY_ERR_FORBIDDEN', 'scope');
    assert.equal(
      await code(() => authorizer.authorize(as(beta, ['admin']), CHANGE, { model: 'acme.m', tenant: null })),
      'SY_ERR_FORBIDDEN',
      'shared read-only',
    );
    assert.equal(await code(() => authorizer.authorize(as(beta, ['admin']), CHANGE, { model: 'beta.private', tenant: null })), 'none', 'the owner changes it');
    assert.equal(
      await code(() => authorizer.authorize(as(acme, ['read']), TENANT_READ, { model: null, tenant: 'beta' })),
      'SY_ERR_TENANT_NOT_FOUND',
      "another tenant's records",
    );
    await gateway.close();
  });

  it('returns the limit admission to release, and a refused one with its 429 error', async () => {
    const { gateway, authorizer } = await setup();
    const slow = tenant('acme', { rps: 1, burst: 1 });
    const p = as(slow, ['infer']);
    const first = await authorizer.authorize(p, INFER, { model: 'acme.m', tenant: null });
    assert.ok(first !== null && first.allowed, 'the burst admits one');
    first.release();
    const second = await authorizer.authorize(p, INFER, { model: 'acme.m', tenant: null });
    assert.ok(second !== null && !second.allowed, 'the second is refused');
    const e = authorizer.rejection(second, p);
    assert.equal(e.code, 'SY_ERR_RATE_LIMITED');
    assert.equal(e.status, 429);
    assert.ok((e.retryAfterS ?? 0) >= 1);
    await gateway.close();
  });
});
