/**
 * @module
 * The gateway on the HTTP path, as route-level Fastify hooks: every route is classified once, when it is
 * registered (public, which scope, which route parameter names a model, rate-limited or not, audited or
 * not); then each request is authenticated, checked for model visibility (what a tenant cannot see is 404
 * exactly as if it did not exist), scope and limits, before its body is read. Control-plane changes are
 * written to the audit log once answered.
 *
 * Order for a request: authenticate (401) → model or tenant visible? (404) → scope (403) → owner for changes (403) →
 * limits (429, with x-ratelimit-* headers on every limited response) → handler.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { err } from '../errors.js';
import type { AuditLog } from './audit.js';
import type { Gateway } from './gateway.js';
import type { Admission } from './limiter.js';
import type { Principal, Scope } from './types.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who the request acts as; null on public routes. */
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    access?: AccessRule;
  }
}

export interface AccessRule {
  /** Public routes (health probes, API docs) need no key. */
  readonly public: boolean;
  /** Any of these scopes admits (platform keys have all). */
  readonly scopes: readonly Scope[];
  /** The route parameter holding a model name, or null. */
  readonly modelParam: string | null;
  /** The route parameter naming a tenant whose records the route reaches (a tenant key reaches only its own), or null. */
  readonly tenantParam: string | null;
  /** How "not visible" is answered: as the data plane's or the registry's not-found. */
  readonly notFound: 'v2' | 'registry';
  /** A change to the model: needs its owner (or the platform). */
  readonly mutatesModel: boolean;
  /** May create the model (uploads): allowed for a model that does not exist yet in the tenant's namespace. */
  readonly createsModel: boolean;
  /** Counted against the tenant's limits. */
  readonly limited: boolean;
  /** Recorded in the audit log. */
  readonly audited: boolean;
}

const PUBLIC_PATHS = new Set(['/v2/health/live', '/v2/health/ready']);
const AUTHENTICATED: AccessRule = {
  public: false, scopes: ['read', 'infer', 'admin'], modelParam: null, tenantParam: null, notFound: 'registry', mutatesModel: false, createsModel: false, limited: false, audited: false,
};
const ACTOR_HEADER = 'x-switchyard-actor';

/** The access rule of a route, from its method and URL pattern. One table for the whole server. */
export function classify(method: string, url: string): AccessRule {
  if (PUBLIC_PATHS.has(url) || url === '/docs' || url.startsWith('/docs/')) return { ...AUTHENTICATED, public: true };
  const read = method === 'GET' || method === 'HEAD';
  if (url.startsWith('/v2/models/:model')) {
    const infer = url.endsWith('/infer');
    return {
      ...AUTHENTICATED, scopes: infer ? ['infer'] : ['read', 'infer'], modelParam: 'model', notFound: 'v2', limited: true,
    };
  }
  if (url.startsWith('/api/v1/models/:name')) {
    return {
      ...AUTHENTICATED, scopes: read ? ['read', 'admin'] : ['admin'], modelParam: 'name', notFound: 'registry',
      mutatesModel: !read, createsModel: method === 'POST' && url === '/api/v1/models/:name/versions', audited: !read,
    };
  }
  if (url.startsWith('/api/v1/tenants/:tenant')) {
    return { ...AUTHENTICATED, scopes: read ? ['read', 'admin'] : ['admin'], tenantParam: 'tenant', audited: !read };
  }
  if (url === '/api/v1/features/online' || url === '/api/v1/features/export') {
    // Reads, though POSTed (entity lists can be long).
    return { ...AUTHENTICATED, scopes: ['read', 'admin'], limited: true };
  }
  if (url === '/api/v1/experiments/:id/events') {
    // Outcome events come from applications (infer keys); the handler checks the experiment's model is visible.
    return { ...AUTHENTICATED, scopes: ['infer', 'admin'], limited: true };
  }
  if (url.startsWith('/v1/')) {
    // The OpenAI-compatible API: listing models is a read; generating and embedding are inference.
    if (url.startsWith('/v1/models')) return { ...AUTHENTICATED, scopes: ['read', 'infer'] };
    return { ...AUTHENTICATED, scopes: ['infer'], limited: true };
  }
  if (url.startsWith('/api/v1/')) return { ...AUTHENTICATED, scopes: read ? ['read', 'admin'] : ['admin'], audited: !read };
  return AUTHENTICATED;
}

export interface GatewayHttpOptions {
  readonly gateway: Gateway;
  readonly audit: AuditLog | null;
  readonly logger: Logger;
  /** Whether a model is registered (visible or not). */
  readonly modelExists: (name: string) => Promise<boolean>;
  /** Where the limit decision counters go. */
  readonly metrics?: Registry;
}

function notVisible(rule: AccessRule, model: string): never {
  if (rule.notFound === 'v2') throw err('SY_ERR_MODEL_NOT_FOUND', `model "${model}" not found`);
  throw err('SY_ERR_REGISTRY_NOT_FOUND', `no registered model "${model}"`);
}

/** Go-style duration, as OpenAI's x-ratelimit-reset-* headers: 20ms, 1.5s, 6m0s, 1h2m3s. */
export function formatDuration(ms: number): string {
  const v = Math.max(0, Math.ceil(ms));
  if (v < 1000) return `${v}ms`;
  const s = v / 1000;
  if (s < 60) return `${Number(s.toFixed(3))}s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = Math.round(s % 60);
  return h > 0 ? `${h}h${m}m${rest}s` : `${m}m${rest}s`;
}

const REJECTION = {
  rate: 'SY_ERR_RATE_LIMITED',
  concurrency: 'SY_ERR_CONCURRENCY_LIMITED',
  quota_daily: 'SY_ERR_QUOTA_EXCEEDED',
  quota_monthly: 'SY_ERR_QUOTA_EXCEEDED',
  unavailable: 'SY_ERR_LIMITER_UNAVAILABLE',
} as const;

function rejectionMessage(a: Admission, tenant: string): string {
  const scope = a.scope ? ` (${a.scope.startsWith('k:') ? `key ${a.scope.slice(2)}` : a.scope.startsWith('m:') ? `model ${a.scope.slice(2 + tenant.length + 1)}` : `tenant ${tenant}`})` : '';
  switch (a.reason) {
    case 'rate': return `rate limit exceeded${scope}, burst ${a.limit ?? '?'}; retry in ${formatDuration(a.retryAfterMs)}`;
    case 'concurrency': return `too many requests in flight${scope}; retry shortly`;
    case 'quota_daily': return `daily request quota exhausted${scope}; resets in ${formatDuration(a.retryAfterMs)}`;
    case 'quota_monthly': return `monthly request quota exhausted${scope}; resets in ${formatDuration(a.retryAfterMs)}`;
    default: return 'rate limiting is unavailable (shared limit store unreachable) and limits fail closed; retry shortly';
  }
}

function setLimitHeaders(reply: FastifyReply, a: Admission): void {
  if (a.limit !== null) {
    reply.header('x-ratelimit-limit-requests', String(a.limit));
    reply.header('x-ratelimit-remaining-requests', String(a.remaining ?? 0));
    reply.header('x-ratelimit-reset-requests', formatDuration(a.resetMs ?? 0));
  }
  if (a.quota !== null) {
    reply.header('x-switchyard-quota-period', a.quota.period);
    reply.header('x-switchyard-quota-limit', String(a.quota.limit));
    reply.header('x-switchyard-quota-remaining', String(a.quota.remaining));
    reply.header('x-switchyard-quota-reset', formatDuration(a.quota.resetMs));
  }
}

/**
 * Install the gateway's hooks on the root instance. Call before registering any route plugin (routes are
 * classified as they are added).
 */
export function installGateway(app: FastifyInstance, opts: GatewayHttpOptions): void {
  const { gateway, audit, logger, modelExists } = opts;
  const registers = opts.metrics ? [opts.metrics] : [];
  const decisions = new Counter({
    name: 'switchyard_ratelimit_decisions_total', help: 'Limit checks of tenant requests, by result (admitted, rate, concurrency, quota_daily, quota_monthly, unavailable).',
    labelNames: ['tenant', 'result'], registers,
  });
  const children = new Map<string, { inc(): void }>();
  const decision = (tenant: string, result: string): { inc(): void } => {
    const k = `${tenant}\u0000${result}`;
    let c = children.get(k);
    if (!c) {
      if (children.size > 10_000) children.clear();
      children.set(k, c = decisions.labels({ tenant, result }));
    }
    return c;
  };
  const degraded = new Counter({
    name: 'switchyard_ratelimit_unchecked_total', help: 'Requests admitted without a limit check because the limit store was unreachable (fail open).', registers,
  });
  app.decorateRequest('principal', null);

  /** The checks after authentication: visibility (404), tenant (404), scope (403), ownership (403), limits (429). */
  const admit = (req: FastifyRequest, reply: FastifyReply, rule: AccessRule, p: Principal): Promise<void> | undefined => {
    req.principal = p;
    let model: string | null = null;
    let visible = false;
    if (rule.modelParam !== null) {
      model = (req.params as Record<string, string>)[rule.modelParam] ?? null;
      visible = model !== null && gateway.canSee(p, model);
      if (model !== null && !visible) {
        // Creating a new model in the tenant's own namespace is the one way to reach a model it cannot see.
        if (!(rule.createsModel && gateway.inNamespace(p, model))) notVisible(rule, model);
        const name = model;
        return modelExists(name).then((exists) => {
          if (exists) notVisible(rule, name);
          return permit(req, reply, rule, p, name, false);
        });
      }
    }
    return permit(req, reply, rule, p, model, visible);
  };

  const permit = (req: FastifyRequest, reply: FastifyReply, rule: AccessRule, p: Principal, model: string | null, visible: boolean): Promise<void> | undefined => {
    if (rule.tenantParam !== null && p.kind === 'tenant') {
      const t = (req.params as Record<string, string>)[rule.tenantParam];
      if (t !== p.tenant.name) throw err('SY_ERR_TENANT_NOT_FOUND', `no tenant "${t}"`);
    }
    if (!gateway.hasScope(p, ...rule.scopes)) {
      throw err('SY_ERR_FORBIDDEN', `API key ${p.kind === 'tenant' ? p.key.id : ''} lacks the scope for this action (needs ${rule.scopes.join(' or ')})`);
    }
    if (rule.mutatesModel && model !== null && visible && !gateway.owns(p, model)) {
      throw err('SY_ERR_FORBIDDEN', `model "${model}" is shared with tenant "${p.kind === 'tenant' ? p.tenant.name : ''}" read-only; only its owner can change it`);
    }
    if (!rule.limited || !gateway.limiter || p.kind !== 'tenant') return undefined;
    const scopes = gateway.limitScopes(p, model);
    if (scopes.length === 0) return undefined;
    return gateway.limiter.admit(scopes).then((a) => {
      decision(p.tenant.name, a.allowed ? 'admitted' : a.reason ?? 'unavailable').inc();
      if (a.degraded) degraded.inc();
      setLimitHeaders(reply, a);
      if (!a.allowed) {
        reply.header('x-switchyard-limit-reason', a.reason ?? 'unavailable');
        throw err(REJECTION[a.reason ?? 'unavailable'], rejectionMessage(a, p.tenant.name), { retryAfterS: Math.max(1, Math.ceil(a.retryAfterMs / 1000)) });
      }
      reply.raw.once('close', () => a.release());
    });
  };

  /**
   * The gateway's onRequest hook. Callback style, and synchronous when it can be (no key to load, no limit to
   * check): an open or cached-key request costs no promise.
   */
  const authorize = (req: FastifyRequest, reply: FastifyReply, done: (e?: Error) => void): void => {
    let pending: Promise<void> | undefined;
    try {
      const rule = req.routeOptions.config.access ?? AUTHENTICATED;
      if (gateway.authRequired) reply.header('www-authenticate', 'Bearer');
      const hint = req.headers[ACTOR_HEADER];
      const p = gateway.authenticate(req.headers.authorization, typeof hint === 'string' && hint.trim() ? hint.trim() : null);
      pending = p instanceof Promise ? p.then((q) => admit(req, reply, rule, q)) : admit(req, reply, rule, p);
    } catch (e) {
      done(e as Error);
      return;
    }
    if (pending === undefined) done();
    else pending.then(() => done(), done);
  };

  // Models a tenant creates are its own: record ownership before the client sees the 201.
  const recordOwner = async (req: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> => {
    const p = req.principal;
    if (p?.kind !== 'tenant' || reply.statusCode !== 201) return payload;
    const rule = req.routeOptions.config.access;
    let created: string | null = null;
    if (rule?.createsModel) created = (req.params as Record<string, string>)['name'] ?? null;
    else created = (req.body as { name?: string } | null)?.name ?? null;
    if (created !== null && !gateway.owns(p, created)) {
      await gateway.store.setOwner(created, p.tenant.name);
      await gateway.changed({ kind: 'access' });
    }
    return payload;
  };

  // Control-plane changes are written to the audit log once answered.
  const record = async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const p = req.principal;
    const params = req.params as Record<string, string> | undefined;
    const target = params && Object.keys(params).length > 0 ? Object.entries(params).map(([k, v]) => `${k}=${v}`).join(' ') : null;
    try {
      await audit!.append({
        at: Date.now(), actor: p?.actor ?? 'unauthenticated', tenant: p?.kind === 'tenant' ? p.tenant.name : null,
        action: `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`, target, status: reply.statusCode,
        ip: req.ip, userAgent: req.headers['user-agent'] ?? null, requestId: req.id, detail: null,
      });
    } catch (e) {
      logger.error({ err: e, requestId: req.id }, 'audit log write failed');
    }
  };

  // Each route gets only the hooks its rule needs (route-level hooks: other routes pay nothing for them).
  app.addHook('onRoute', (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const rule = classify(methods[0]!, route.url);
    route.config = { ...route.config, access: rule };
    if (!rule.public) route.onRequest = [authorize, ...hooks(route.onRequest)];
    if (rule.createsModel || (methods.includes('POST') && route.url === '/api/v1/models')) route.onSend = [...hooks(route.onSend), recordOwner];
    if (audit && rule.audited) route.onResponse = [...hooks(route.onResponse), record];
  });
}

/** A route option's hooks as an array. */
function hooks<T>(h: T | T[] | undefined): T[] {
  return h === undefined ? [] : Array.isArray(h) ? h : [h];
}

/** Tenant-created models: refuse a name outside the tenant's namespace (checked before the body is used). */
export function checkCreatable(gateway: Gateway, req: FastifyRequest, name: string): void {
  const p = req.principal;
  if (p && !gateway.inNamespace(p, name)) {
    throw err('SY_ERR_FORBIDDEN', `tenant keys create models only in their namespace: name it "${p.kind === 'tenant' ? p.tenant.name : ''}.<model>"`);
  }
}
