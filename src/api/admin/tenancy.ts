/**
 * @module
 * The tenancy admin API (`/api/v1`) as an encapsulated Fastify plugin: tenants, API keys (shown once, stored
 * hashed, revocable), model ownership and shares, usage and the audit log. Authentication, scopes and model
 * visibility are enforced by the gateway's hooks before a handler runs; the handlers add the rules that
 * depend on the record: platform-only actions, and a tenant key reaching only its own tenant (anything else
 * answers 404, as if absent).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { err } from '../../errors.js';
import type {
  AuditLog,
  AuditQuery,
  CreateKeyInput,
  CreateTenantInput,
  Gateway,
  Principal,
  UpdateTenantInput,
  UsageMeter,
  UsageQuery,
} from '../../gateway/index.js';
import { isoTime, strictValidation } from './routes.js';
import * as S from './schemas.js';
import * as T from './tenancy-schemas.js';

export interface TenancyRoutesOptions {
  gateway: Gateway;
  usage: UsageMeter;
  audit: AuditLog;
  /** Whether a model is registered. */
  modelExists: (name: string) => Promise<boolean>;
}

const TAGS = ['tenancy'];
type TenantP = { tenant: string };
type NameP = { name: string };

function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw err('SY_ERR_UNAUTHENTICATED', 'authentication required');
  return req.principal;
}

function requirePlatform(req: FastifyRequest): void {
  if (principalOf(req).kind !== 'platform') throw err('SY_ERR_FORBIDDEN', 'this action needs a platform admin key');
}

/** A tenant key reaches only its own tenant; any other name is absent. */
function checkTenantReach(req: FastifyRequest, tenant: string): void {
  const p = principalOf(req);
  if (p.kind === 'tenant' && p.tenant.name !== tenant) throw err('SY_ERR_TENANT_NOT_FOUND', `no tenant "${tenant}"`);
}

/**
 * The filters common to usage and audit queries: the tenant (a tenant key is held to its own; naming another is
 * 404) and the [from, to) time range from ISO query parameters.
 */
export function scopedRange(req: FastifyRequest, q: { tenant?: string; from?: string; to?: string }): { tenant?: string; from?: number; to?: number } {
  if (q.tenant !== undefined) checkTenantReach(req, q.tenant);
  const p = principalOf(req);
  const out: { tenant?: string; from?: number; to?: number } = {};
  const tenant = p.kind === 'tenant' ? p.tenant.name : q.tenant;
  if (tenant !== undefined) out.tenant = tenant;
  if (q.from !== undefined) out.from = Date.parse(isoTime(q.from, 'from'));
  if (q.to !== undefined) out.to = Date.parse(isoTime(q.to, 'to'));
  return out;
}

export async function tenancyRoutes(app: FastifyInstance, opts: TenancyRoutesOptions): Promise<void> {
  const { gateway, usage, audit } = opts;
  const store = gateway.store;
  strictValidation(app);

  app.get(
    '/api/v1/whoami',
    {
      schema: { tags: TAGS, summary: 'Who the presented key is', response: { 200: T.whoamiSchema, ...S.errors(401) } },
    },
    async (req) => {
      const p = principalOf(req);
      return p.kind === 'platform'
        ? { kind: 'platform', actor: p.actor, tenant: null, key: p.key }
        : { kind: 'tenant', actor: p.actor, tenant: p.tenant, key: p.key };
    },
  );

  // ---- tenants ----

  app.post<{ Body: CreateTenantInput }>(
    '/api/v1/tenants',
    {
      schema: {
        tags: TAGS,
        summary: 'Create a tenant (platform admin)',
        body: T.createTenantBody,
        response: { 201: T.tenantSchema, ...S.errors(400, 401, 403, 409) },
      },
    },
    async (req, reply) => {
      requirePlatform(req);
      return reply.code(201).send(await store.createTenant(req.body));
    },
  );

  app.get(
    '/api/v1/tenants',
    {
      schema: { tags: TAGS, summary: 'List tenants (a tenant key sees its own)', response: { 200: T.tenantListSchema, ...S.errors(401) } },
    },
    async (req) => {
      const p = principalOf(req);
      return { tenants: p.kind === 'platform' ? await store.listTenants() : [await store.getTenant(p.tenant.name)] };
    },
  );

  app.get<{ Params: TenantP }>(
    '/api/v1/tenants/:tenant',
    {
      schema: { tags: TAGS, summary: 'A tenant', params: T.tenantParams, response: { 200: T.tenantSchema, ...S.errors(401, 404) } },
    },
    async (req) => {
      checkTenantReach(req, req.params.tenant);
      return store.getTenant(req.params.tenant);
    },
  );

  app.patch<{ Params: TenantP; Body: UpdateTenantInput }>(
    '/api/v1/tenants/:tenant',
    {
      schema: {
        tags: TAGS,
        summary: 'Change a tenant: tier, weight, limits, disabled (platform admin)',
        params: T.tenantParams,
        body: T.updateTenantBody,
        response: { 200: T.tenantSchema, ...S.errors(400, 401, 403, 404) },
      },
    },
    async (req) => {
      requirePlatform(req);
      const t = await store.updateTenant(req.params.tenant, req.body);
      await gateway.changed({ kind: 'keys' });
      return t;
    },
  );

  app.delete<{ Params: TenantP }>(
    '/api/v1/tenants/:tenant',
    {
      schema: {
        tags: TAGS,
        summary: 'Delete a tenant and its keys; its models become platform models (platform admin)',
        params: T.tenantParams,
        response: { 204: S.noContent, ...S.errors(401, 403, 404) },
      },
    },
    async (req, reply) => {
      requirePlatform(req);
      await store.deleteTenant(req.params.tenant);
      await gateway.changed({ kind: 'keys' });
      await gateway.changed({ kind: 'access' });
      return reply.code(204).send();
    },
  );

  // ---- keys ----

  app.post<{ Params: TenantP; Body: CreateKeyInput }>(
    '/api/v1/tenants/:tenant/keys',
    {
      schema: {
        tags: TAGS,
        summary: 'Create an API key for a tenant; the key is in this response only',
        params: T.tenantParams,
        body: T.createKeyBody,
        response: { 201: T.createdKeySchema, ...S.errors(400, 401, 403, 404) },
      },
    },
    async (req, reply) => {
      checkTenantReach(req, req.params.tenant);
      const { record, key } = await store.createKey(req.params.tenant, req.body, principalOf(req).actor);
      return reply.code(201).send({ ...record, key });
    },
  );

  app.get<{ Params: TenantP }>(
    '/api/v1/tenants/:tenant/keys',
    {
      schema: {
        tags: TAGS,
        summary: "A tenant's API keys (ids and metadata, never the keys)",
        params: T.tenantParams,
        response: { 200: T.keyListSchema, ...S.errors(401, 404) },
      },
    },
    async (req) => {
      checkTenantReach(req, req.params.tenant);
      await store.getTenant(req.params.tenant);
      return { keys: await store.listKeys(req.params.tenant) };
    },
  );

  app.post<{ Body: CreateKeyInput }>(
    '/api/v1/admin-keys',
    {
      schema: {
        tags: TAGS,
        summary: 'Create a platform admin key (platform admin); the key is in this response only',
        body: T.createKeyBody,
        response: { 201: T.createdKeySchema, ...S.errors(400, 401, 403) },
      },
    },
    async (req, reply) => {
      requirePlatform(req);
      const { record, key } = await store.createKey(null, req.body, principalOf(req).actor);
      return reply.code(201).send({ ...record, key });
    },
  );

  app.get(
    '/api/v1/admin-keys',
    {
      schema: { tags: TAGS, summary: 'Platform admin keys (platform admin)', response: { 200: T.keyListSchema, ...S.errors(401, 403) } },
    },
    async (req) => {
      requirePlatform(req);
      return { keys: await store.listKeys(null) };
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/api/v1/keys/:id',
    {
      schema: {
        tags: TAGS,
        summary: 'Revoke an API key (kept, listed as revoked)',
        params: T.keyParams,
        response: { 200: T.keySchema, ...S.errors(401, 403, 404) },
      },
    },
    async (req) => {
      const p = principalOf(req);
      const found = await store.findKey(req.params.id);
      if (!found || (p.kind === 'tenant' && found.record.tenant !== p.tenant.name)) throw err('SY_ERR_TENANT_NOT_FOUND', `no API key "${req.params.id}"`);
      const revoked = await store.revokeKey(req.params.id);
      await gateway.changed({ kind: 'keys', id: req.params.id });
      return revoked;
    },
  );

  // ---- model access ----

  const ownerOnly = async (req: FastifyRequest, model: string): Promise<void> => {
    if (!(await opts.modelExists(model))) throw err('SY_ERR_REGISTRY_NOT_FOUND', `no registered model "${model}"`);
    if (!gateway.owns(principalOf(req), model))
      throw err('SY_ERR_FORBIDDEN', `only the owner of model "${model}" (or a platform admin) can see or change who may use it`);
  };

  app.get<{ Params: NameP }>(
    '/api/v1/models/:name/access',
    {
      schema: {
        tags: TAGS,
        summary: "A model's owner and the tenants it is shared with",
        params: S.nameParams,
        response: { 200: T.accessSchema, ...S.errors(401, 403, 404) },
      },
    },
    async (req) => {
      await ownerOnly(req, req.params.name);
      return store.getAccess(req.params.name);
    },
  );

  app.put<{ Params: NameP; Body: { tenant: string | null } }>(
    '/api/v1/models/:name/owner',
    {
      schema: {
        tags: TAGS,
        summary: 'Give a model to a tenant, or (null) to the platform (platform admin)',
        params: S.nameParams,
        body: T.ownerBody,
        response: { 200: T.accessSchema, ...S.errors(400, 401, 403, 404) },
      },
    },
    async (req) => {
      requirePlatform(req);
      await ownerOnly(req, req.params.name);
      const access = await store.setOwner(req.params.name, req.body.tenant);
      await gateway.changed({ kind: 'access' });
      return access;
    },
  );

  app.put<{ Params: NameP & TenantP }>(
    '/api/v1/models/:name/shares/:tenant',
    {
      schema: {
        tags: TAGS,
        summary: 'Share a model with a tenant ("*": every tenant); read and infer, never change',
        params: T.shareParams,
        response: { 200: T.accessSchema, ...S.errors(400, 401, 403, 404) },
      },
    },
    async (req) => {
      await ownerOnly(req, req.params.name);
      const access = await store.share(req.params.name, req.params.tenant);
      await gateway.changed({ kind: 'access' });
      return access;
    },
  );

  app.delete<{ Params: NameP & TenantP }>(
    '/api/v1/models/:name/shares/:tenant',
    {
      schema: {
        tags: TAGS,
        summary: 'Stop sharing a model with a tenant',
        params: T.shareParams,
        response: { 200: T.accessSchema, ...S.errors(401, 403, 404) },
      },
    },
    async (req) => {
      await ownerOnly(req, req.params.name);
      const access = await store.unshare(req.params.name, req.params.tenant);
      await gateway.changed({ kind: 'access' });
      return access;
    },
  );

  // ---- usage and audit ----

  app.get<{
    Querystring: {
      tenant?: string;
      model?: string;
      version?: number;
      key?: string;
      by_key?: boolean;
      from?: string;
      to?: string;
      group_by?: 'hour' | 'day' | 'total';
    };
  }>(
    '/api/v1/usage',
    {
      schema: {
        tags: TAGS,
        summary: 'Usage per tenant, model and version (and API key, with by_key): requests, rows, compute time, errors (a tenant key sees its own)',
        querystring: T.usageQuery,
        response: { 200: T.usageListSchema, ...S.errors(400, 401, 404) },
      },
    },
    async (req) => {
      const q = req.query;
      const query: UsageQuery = { ...scopedRange(req, q), groupBy: q.group_by ?? 'hour' };
      if (q.model !== undefined) query.model = q.model;
      if (q.version !== undefined) query.version = q.version;
      if (q.key !== undefined) query.keyId = q.key;
      if (q.by_key === true) query.byKey = true;
      const rows = await usage.query(query);
      return { usage: rows.map((r) => ({ ...r, period: new Date(r.period).toISOString() })) };
    },
  );

  app.get<{ Querystring: { tenant?: string; actor?: string; action?: string; from?: string; to?: string; limit?: number; before?: number } }>(
    '/api/v1/audit',
    {
      schema: {
        tags: TAGS,
        summary: 'The audit log of control-plane actions, newest first (a tenant admin key sees its own tenant)',
        querystring: T.auditQuery,
        response: { 200: T.auditListSchema, ...S.errors(400, 401, 403, 404) },
      },
    },
    async (req) => {
      const p = principalOf(req);
      if (!gateway.hasScope(p, 'admin')) throw err('SY_ERR_FORBIDDEN', 'reading the audit log needs the admin scope');
      const q = req.query;
      const query: AuditQuery = scopedRange(req, q);
      if (q.actor !== undefined) query.actor = q.actor;
      if (q.action !== undefined) query.action = q.action;
      if (q.limit !== undefined) query.limit = q.limit;
      if (q.before !== undefined) query.before = q.before;
      const entries = await audit.query(query);
      return { entries: entries.map((e) => ({ ...e, at: new Date(e.at).toISOString() })) };
    },
  );
}
