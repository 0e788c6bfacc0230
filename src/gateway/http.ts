/**
 * @module
 * The gateway on the HTTP path, as route-level Fastify hooks: every route is classified once, when it is
 * registered (an AccessRule: public, which scope, which route parameter names a model, rate-limited or not,
 * audited or not); then each request is authenticated and handed to the transport-neutral Authorizer
 * (authorize.ts: visibility, tenant, scope, ownership, limits), before its body is read. Control-plane
 * changes are written to the audit log once answered.
 *
 * Order for a request: authenticate (401) → model or tenant visible? (404) → scope (403) → owner for changes (403) →
 * limits (429, with x-ratelimit-* headers on every limited response) → handler.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { err } from '../errors.js';
import type { AuditLog } from './audit.js';
import { Authorizer, limitHeaders, type AccessRule } from './authorize.js';
import type { Gateway } from './gateway.js';
import type { Admission } from './limiter.js';
import type { Principal } from './types.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who the request acts as; null on public routes. */
    principal: Principal | null;
    /** Audited changes: the target as a GET answered before the change, and what the change answered (JSON, bounded). */
    auditBefore: unknown;
    auditAfter: unknown;
  }
  interface FastifyContextConfig {
    access?: AccessRule;
  }
}

const PUBLIC_PATHS = new Set(['/v2/health/live', '/v2/health/ready']);
const AUTHENTICATED: AccessRule = {
  public: false,
  scopes: ['read', 'infer', 'admin'],
  modelParam: null,
  tenantParam: null,
  notFound: 'registry',
  mutatesModel: false,
  createsModel: false,
  limited: false,
  audited: false,
};
const ACTOR_HEADER = 'x-switchyard-actor';

/** The access rule of a route, from its method and URL pattern. One table for the whole server. */
export function classify(method: string, url: string): AccessRule {
  // The console's static files are public (no data in them): it signs in with a key and calls the API with it.
  if (PUBLIC_PATHS.has(url) || url === '/docs' || url.startsWith('/docs/') || url === '/ui' || url.startsWith('/ui/'))
    return { ...AUTHENTICATED, public: true };
  const read = method === 'GET' || method === 'HEAD';
  if (url === '/v2/models/stats') {
    // Statistics of every model the caller can see (the handler leaves out the others).
    return { ...AUTHENTICATED, scopes: ['read', 'infer'], limited: true };
  }
  if (url === '/v2/repository/index') return { ...AUTHENTICATED, scopes: ['read', 'admin'], notFound: 'v2' };
  if (url.startsWith('/v2/repository/models/:model')) {
    // Repository load / unload change a model's residency: admin scope, its owner (or the platform), audited.
    return { ...AUTHENTICATED, scopes: ['admin'], modelParam: 'model', notFound: 'v2', mutatesModel: true, audited: true };
  }
  if (url.startsWith('/v2/models/:model')) {
    const infer = url.endsWith('/infer');
    return {
      ...AUTHENTICATED,
      scopes: infer ? ['infer'] : ['read', 'infer'],
      modelParam: 'model',
      notFound: 'v2',
      limited: true,
    };
  }
  if (url.startsWith('/api/v1/models/:name')) {
    return {
      ...AUTHENTICATED,
      scopes: read ? ['read', 'admin'] : ['admin'],
      modelParam: 'name',
      notFound: 'registry',
      mutatesModel: !read,
      createsModel: method === 'POST' && url === '/api/v1/models/:name/versions',
      audited: !read,
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
  if (url.startsWith('/api/v1/batch/')) {
    // V2 batch jobs are inference (an infer key creates and reads its tenant's jobs); reading them is also a read.
    return { ...AUTHENTICATED, scopes: read ? ['read', 'infer', 'admin'] : ['infer', 'admin'], audited: !read };
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
  /** The Authorizer to use (shared with other transports, e.g. gRPC); default: one built from the options above. */
  readonly authorizer?: Authorizer;
}

function setLimitHeaders(reply: FastifyReply, a: Admission): void {
  const h = limitHeaders(a);
  if (h !== null) reply.headers(h);
}

/**
 * Install the gateway's hooks on the root instance. Call before registering any route plugin (routes are
 * classified as they are added).
 */
export function installGateway(app: FastifyInstance, opts: GatewayHttpOptions): void {
  const { gateway, audit, logger } = opts;
  const authorizer = opts.authorizer ?? new Authorizer({ gateway, modelExists: opts.modelExists, ...(opts.metrics ? { metrics: opts.metrics } : {}) });
  app.decorateRequest('principal', null);
  app.decorateRequest('auditBefore', null);
  app.decorateRequest('auditAfter', null);

  /** The decision (authorize.ts) for a request's route rule and parameters; limit headers on every limited response. */
  const admit = (req: FastifyRequest, reply: FastifyReply, rule: AccessRule, p: Principal): Promise<void> | undefined => {
    req.principal = p;
    const params = req.params as Record<string, string>;
    const target = {
      model: rule.modelParam === null ? null : (params[rule.modelParam] ?? null),
      tenant: rule.tenantParam === null ? null : (params[rule.tenantParam] ?? null),
    };
    const a = authorizer.authorize(p, rule, target);
    if (a === null) return undefined;
    if (!(a instanceof Promise)) return void limited(reply, a, p);
    return a.then((x) => {
      if (x !== null) limited(reply, x, p);
    });
  };

  const limited = (reply: FastifyReply, a: Admission, p: Principal): void => {
    setLimitHeaders(reply, a);
    if (!a.allowed) {
      throw authorizer.rejection(a, p);
    }
    reply.raw.once('close', () => a.release());
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
    let created: string | null;
    if (rule?.createsModel) created = (req.params as Record<string, string>)['name'] ?? null;
    else created = (req.body as { name?: string } | null)?.name ?? null;
    if (created !== null && !gateway.owns(p, created)) {
      await gateway.store.setOwner(created, p.tenant.name);
      await gateway.changed({ kind: 'access' });
    }
    return payload;
  };

  // An audited change records the state it replaced: what a GET of the same resource answered just before
  // (with the caller's own key, so nothing it could not read), and what the change answered.
  const captureBefore = async (req: FastifyRequest): Promise<void> => {
    const headers: Record<string, string> = {};
    for (const h of ['authorization', ACTOR_HEADER]) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const r = await app.inject({ method: 'GET', url: req.url.split('?')[0]!, headers }).catch(() => null);
    req.auditBefore = r !== null && r.statusCode === 200 ? boundedJson(r.body) : null;
  };
  const captureAfter = async (req: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> => {
    if (reply.statusCode < 300 && req.method !== 'DELETE' && typeof payload === 'string') req.auditAfter = boundedJson(payload);
    return payload;
  };

  // Control-plane changes are written to the audit log once answered.
  const record = async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const p = req.principal;
    const params = req.params as Record<string, string> | undefined;
    const target =
      params && Object.keys(params).length > 0
        ? Object.entries(params)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ')
        : null;
    const changed = reply.statusCode < 300 && (req.auditBefore !== null || req.auditAfter !== null);
    const entry = {
      at: Date.now(),
      actor: p?.actor ?? 'unauthenticated',
      tenant: p?.kind === 'tenant' ? p.tenant.name : null,
      action: `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`,
      target,
      status: reply.statusCode,
      ip: req.ip,
      userAgent: req.headers['user-agent'] ?? null,
      requestId: req.id,
      detail: changed ? { before: req.auditBefore, after: req.auditAfter } : null,
    };
    // Every control-plane change (and refused attempt) is in the server log too, beside the audit log's row.
    logger.info(
      { requestId: entry.requestId, actor: entry.actor, tenant: entry.tenant, action: entry.action, target, status: entry.status },
      entry.status < 400 ? 'control-plane change' : 'control-plane change refused',
    );
    try {
      await audit!.append(entry);
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
    if (audit && rule.audited) {
      if (methods.some((m) => m === 'PUT' || m === 'PATCH' || m === 'DELETE')) route.preHandler = [...hooks(route.preHandler), captureBefore];
      route.onSend = [...hooks(route.onSend), captureAfter];
      route.onResponse = [...hooks(route.onResponse), record];
    }
  });
}

/** Largest before / after value kept in an audit entry, in bytes of JSON; larger ones are noted, not stored. */
const MAX_AUDIT_VALUE_BYTES = 16 * 1024;

/** A JSON response body as a value for the audit log (null when not JSON; a note when too large). */
function boundedJson(text: string): unknown {
  if (text.length > MAX_AUDIT_VALUE_BYTES) return { truncated: true, bytes: Buffer.byteLength(text) };
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
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
