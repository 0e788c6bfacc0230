/**
 * @module
 * The gateway's decision for one request, with no transport types: given who asks (a principal), what the
 * action needs (an access rule) and what it touches (a target), answer visibility (404: what a tenant cannot
 * see is answered exactly as if it did not exist), tenant (404), scope (403), ownership (403) and limits (429).
 * The Fastify hooks (http.ts) call it for every non-public route; a gRPC interceptor or a batch job calls the same.
 *
 * @example
 * ```ts
 * const authorizer = new Authorizer({ gateway, modelExists });
 * const admission = await authorizer.authorize(principal, { ...rule, modelParam: 'model' }, { model: 'acme.m', tenant: null });
 * if (admission !== null && !admission.allowed) throw authorizer.rejection(admission, principal);
 * // ... run the request, then: admission?.release();
 * ```
 */
import { Counter, type Registry } from 'prom-client';
import { err, type SwitchyardError } from '../errors.js';
import type { Gateway } from './gateway.js';
import type { Admission } from './limiter.js';
import type { Principal, Scope } from './types.js';

export interface AccessRule {
  /** Public routes (health probes, API docs) need no key. */
  readonly public: boolean;
  /** Any of these scopes admits (the configured admin key and open mode hold all; a created platform key, its own). */
  readonly scopes: readonly Scope[];
  /** The route parameter holding a model name, or null (transports fill `AccessTarget.model` from it). */
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

/** What a request touches: a model and / or a tenant's records (null = none). */
export interface AccessTarget {
  readonly model: string | null;
  readonly tenant: string | null;
}

export interface AuthorizerOptions {
  readonly gateway: Gateway;
  /** Whether a model is registered (visible or not): creating one in a tenant's namespace must not take an existing name. */
  readonly modelExists: (name: string) => Promise<boolean>;
  /** Where the limit decision counters go. */
  readonly metrics?: Registry;
}

const REJECTION = {
  rate: 'SY_ERR_RATE_LIMITED',
  concurrency: 'SY_ERR_CONCURRENCY_LIMITED',
  quota_daily: 'SY_ERR_QUOTA_EXCEEDED',
  quota_monthly: 'SY_ERR_QUOTA_EXCEEDED',
  unavailable: 'SY_ERR_LIMITER_UNAVAILABLE',
} as const;

/**
 * The limit state of an admission as response headers (REST) or metadata (gRPC): `x-ratelimit-*-requests` from
 * the most restrictive rate-limited scope, `x-switchyard-quota-*` from the most constraining quota, and
 * `x-switchyard-limit-reason` on a refusal. Null when the admission carries none of them.
 */
export function limitHeaders(a: Admission): Record<string, string> | null {
  let h: Record<string, string> | null = null;
  if (a.limit !== null) {
    h = {
      'x-ratelimit-limit-requests': String(a.limit),
      'x-ratelimit-remaining-requests': String(a.remaining ?? 0),
      'x-ratelimit-reset-requests': formatDuration(a.resetMs ?? 0),
    };
  }
  if (a.quota !== null) {
    h ??= {};
    h['x-switchyard-quota-period'] = a.quota.period;
    h['x-switchyard-quota-limit'] = String(a.quota.limit);
    h['x-switchyard-quota-remaining'] = String(a.quota.remaining);
    h['x-switchyard-quota-reset'] = formatDuration(a.quota.resetMs);
  }
  if (!a.allowed) (h ??= {})['x-switchyard-limit-reason'] = a.reason ?? 'unavailable';
  return h;
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

function rejectionMessage(a: Admission, tenant: string): string {
  const scope = a.scope
    ? ` (${a.scope.startsWith('k:') ? `key ${a.scope.slice(2)}` : a.scope.startsWith('m:') ? `model ${a.scope.slice(2 + tenant.length + 1)}` : `tenant ${tenant}`})`
    : '';
  switch (a.reason) {
    case 'rate':
      return `rate limit exceeded${scope}, burst ${a.limit ?? '?'}; retry in ${formatDuration(a.retryAfterMs)}`;
    case 'concurrency':
      return `too many requests in flight${scope}; retry shortly`;
    case 'quota_daily':
      return `daily request quota exhausted${scope}; resets in ${formatDuration(a.retryAfterMs)}`;
    case 'quota_monthly':
      return `monthly request quota exhausted${scope}; resets in ${formatDuration(a.retryAfterMs)}`;
    default:
      return 'rate limiting is unavailable (shared limit store unreachable) and limits fail closed; retry shortly';
  }
}

function notVisible(rule: AccessRule, model: string): never {
  if (rule.notFound === 'v2') throw err('SY_ERR_MODEL_NOT_FOUND', `model "${model}" not found`);
  throw err('SY_ERR_REGISTRY_NOT_FOUND', `no registered model "${model}"`);
}

export class Authorizer {
  readonly #gateway: Gateway;
  readonly #modelExists: (name: string) => Promise<boolean>;
  readonly #decisions: Counter<'tenant' | 'result'>;
  readonly #degraded: Counter;
  readonly #children = new Map<string, { inc(): void }>();

  constructor(opts: AuthorizerOptions) {
    this.#gateway = opts.gateway;
    this.#modelExists = opts.modelExists;
    const registers = opts.metrics ? [opts.metrics] : [];
    this.#decisions = new Counter({
      name: 'switchyard_ratelimit_decisions_total',
      help: 'Limit checks of tenant requests, by result (admitted, rate, concurrency, quota_daily, quota_monthly, unavailable).',
      labelNames: ['tenant', 'result'],
      registers,
    });
    this.#degraded = new Counter({
      name: 'switchyard_ratelimit_unchecked_total',
      help: 'Requests admitted without a limit check because the limit store was unreachable (fail open).',
      registers,
    });
  }

  /**
   * Check `p` against `rule` for `target`. Throws the SwitchyardError to answer (404, 403); returns the limit
   * admission (null when the request is not limited): refused ones have `allowed: false` (answer with
   * {@link rejection}, after sending the limit headers), admitted ones must be `release()`d when the request
   * ends. Synchronous when no model must be looked up and no limit checked.
   */
  authorize(p: Principal, rule: AccessRule, target: AccessTarget): Admission | null | Promise<Admission | null> {
    const gateway = this.#gateway;
    const model = target.model;
    if (model !== null && !gateway.canSee(p, model)) {
      // Creating a new model in the tenant's own namespace is the one way to reach a model it cannot see.
      if (!(rule.createsModel && gateway.inNamespace(p, model))) notVisible(rule, model);
      return this.#modelExists(model).then((exists) => {
        if (exists) notVisible(rule, model);
        return this.#permit(p, rule, target, false);
      });
    }
    return this.#permit(p, rule, target, model !== null);
  }

  /** The error answering a refused admission (429 rate / concurrency / quota, 503 limits unavailable), with its retry hint. */
  rejection(a: Admission, p: Principal): SwitchyardError {
    const tenant = p.kind === 'tenant' ? p.tenant.name : '';
    return err(REJECTION[a.reason ?? 'unavailable'], rejectionMessage(a, tenant), { retryAfterS: Math.max(1, Math.ceil(a.retryAfterMs / 1000)) });
  }

  #permit(p: Principal, rule: AccessRule, target: AccessTarget, visible: boolean): Admission | null | Promise<Admission | null> {
    const gateway = this.#gateway;
    if (rule.tenantParam !== null && p.kind === 'tenant' && target.tenant !== p.tenant.name) {
      throw err('SY_ERR_TENANT_NOT_FOUND', `no tenant "${target.tenant}"`);
    }
    if (!gateway.hasScope(p, ...rule.scopes)) {
      throw err('SY_ERR_FORBIDDEN', `API key ${p.kind === 'tenant' ? p.key.id : ''} lacks the scope for this action (needs ${rule.scopes.join(' or ')})`);
    }
    if (rule.mutatesModel && target.model !== null && visible && !gateway.owns(p, target.model)) {
      throw err(
        'SY_ERR_FORBIDDEN',
        `model "${target.model}" is shared with tenant "${p.kind === 'tenant' ? p.tenant.name : ''}" read-only; only its owner can change it`,
      );
    }
    if (!rule.limited || !gateway.limiter || p.kind !== 'tenant') return null;
    const scopes = gateway.limitScopes(p, target.model);
    if (scopes.length === 0) return null;
    return gateway.limiter.admit(scopes).then((a) => {
      this.#decision(p.tenant.name, a.allowed ? 'admitted' : (a.reason ?? 'unavailable')).inc();
      if (a.degraded) this.#degraded.inc();
      return a;
    });
  }

  #decision(tenant: string, result: string): { inc(): void } {
    const k = `${tenant}\u0000${result}`;
    let c = this.#children.get(k);
    if (!c) {
      if (this.#children.size > 10_000) this.#children.clear();
      this.#children.set(k, (c = this.#decisions.labels({ tenant, result })));
    }
    return c;
  }
}
