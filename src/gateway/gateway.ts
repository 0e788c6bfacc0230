/**
 * @module
 * The tenancy gateway's decisions, independent of HTTP: who a bearer key is (a principal), which models a
 * principal can see, which limits apply to a request and which fair-queueing flow it joins.
 *
 * Keys, tenants and model access are read from the metadata store and cached for `cacheMs` (default 5 s):
 * a change made through this replica applies at once (its caches are invalidated) and is published (on
 * Postgres, NOTIFY) so other replicas drop theirs within milliseconds; `cacheMs` bounds staleness when a
 * notification is lost. Expiry is checked on every request against the clock, never cached.
 *
 * The data plane outlives its database: a cached key past `cacheMs` is re-read, but when the store fails or is
 * known to be down (`storeAvailable`), the last known record keeps authenticating (a refresh waits at most
 * {@link STALE_WAIT_MS}); a key never seen by this replica gets 503 SY_ERR_DATABASE_UNAVAILABLE + Retry-After.
 * After the store's notification channel reconnects, every cached key is re-read on its next use ({@link resync}).
 */
import type { Logger } from 'pino';
import { err, type SwitchyardError } from '../errors.js';
import type { TokenScope } from './token-limits.js';
import type { Flow } from '../serving/index.js';
import { digestKey, digestMatches, hashKey, keyId } from './keys.js';
import type { Limiter, LimitScope } from './limiter.js';
import type { StoredKey, TenantStore } from './store.js';
import { ALL_TENANTS, hasAnyLimit, hasTokenLimit, effectiveLimits, NO_LIMITS, type Limits, type Principal, type Scope, type TenantRecord } from './types.js';

export interface GatewayOptions {
  readonly store: TenantStore;
  /** Refuse requests without a valid key (otherwise: open developer mode, a request without a key acts as the platform). */
  readonly authRequired: boolean;
  /** A platform admin key given by configuration (never stored; compared by hash). */
  readonly adminKey: string | null;
  /** Enforces tenant limits; null: none. */
  readonly limiter: Limiter | null;
  readonly cacheMs?: number;
  readonly logger?: Logger;
  /** Tell other replicas about a change (Postgres NOTIFY); absent on a single process. */
  readonly publish?: (c: TenancyChange) => Promise<void>;
  /** Whether the metadata store answers now (default: always); while not, known keys are served from memory at once. */
  readonly storeAvailable?: () => boolean;
}

/** What changed, for cache invalidation: keys (one by id, or all: a tenant changed) or model access. */
export type TenancyChange = { readonly kind: 'keys'; readonly id?: string } | { readonly kind: 'access' };

interface CachedKey {
  readonly stored: StoredKey | null;
  readonly tenant: TenantRecord | null;
  readonly at: number;
}
interface Access {
  readonly owner: string | null;
  readonly shared: ReadonlySet<string>;
}

const BEARER = /^Bearer +(\S+) *$/i;
const MAX_CACHED_KEYS = 10_000;
/** Longest a request with a known key waits for its record to be re-read before the last known one is used. */
export const STALE_WAIT_MS = 1000;

function storeUnavailable(cause?: unknown): SwitchyardError {
  return err('SY_ERR_DATABASE_UNAVAILABLE', 'the metadata store (database) is unavailable and this API key is not cached on this replica; retry shortly', {
    retryAfterS: 1,
    cause,
  });
}

function isStoreFault(e: unknown): boolean {
  return (e as { code?: unknown } | null)?.code === 'SY_ERR_DATABASE_UNAVAILABLE';
}

function unauthenticated(message: string): never {
  throw err('SY_ERR_UNAUTHENTICATED', message);
}

/**
 * The tenant's, the key's and the tenant×model limits that apply to a request by `p` to `model`, keyed
 * `t:<tenant>`, `k:<key id>`, `m:<tenant>:<model>`; only those for which `limited` holds.
 */
function scopedLimits(p: Principal, model: string | null, limited: (l: Limits) => boolean): Array<[string, Limits]> {
  if (p.kind === 'platform') return [];
  const t = p.tenant;
  const out: Array<[string, Limits]> = [];
  if (limited(t.effectiveLimits)) out.push([`t:${t.name}`, t.effectiveLimits]);
  if (p.key.limits) {
    const l = effectiveLimits(NO_LIMITS, p.key.limits);
    if (limited(l)) out.push([`k:${p.key.id}`, l]);
  }
  const perModel = model === null ? undefined : t.limits.models?.[model];
  if (perModel) {
    const l = effectiveLimits(NO_LIMITS, perModel);
    if (limited(l)) out.push([`m:${t.name}:${model}`, l]);
  }
  return out;
}

export class Gateway {
  readonly authRequired: boolean;
  readonly limiter: Limiter | null;
  readonly #store: TenantStore;
  readonly #adminKeyHash: string | null;
  readonly #cacheMs: number;
  readonly #keys = new Map<string, CachedKey>();
  /** Key reads in flight, by key id: one per key however many requests wait for it. */
  readonly #loading = new Map<string, Promise<CachedKey>>();
  readonly #storeAvailable: () => boolean;
  #access = new Map<string, Access>();
  #accessLoading: Promise<void> | null = null;
  readonly #timer: NodeJS.Timeout;
  readonly #publish: ((c: TenancyChange) => Promise<void>) | undefined;
  readonly #logger: Logger | undefined;

  private constructor(opts: GatewayOptions) {
    this.#publish = opts.publish;
    this.#storeAvailable = opts.storeAvailable ?? (() => true);
    this.#logger = opts.logger;
    this.authRequired = opts.authRequired;
    this.limiter = opts.limiter;
    this.#store = opts.store;
    this.#adminKeyHash = opts.adminKey === null ? null : hashKey(opts.adminKey);
    this.#cacheMs = opts.cacheMs ?? 5000;
    this.#timer = setInterval(() => {
      this.refreshAccess().catch((e: unknown) => opts.logger?.warn({ err: e }, 'model access refresh failed; keeping the last known'));
    }, this.#cacheMs);
    this.#timer.unref();
  }

  static async create(opts: GatewayOptions): Promise<Gateway> {
    const g = new Gateway(opts);
    await g.refreshAccess();
    return g;
  }

  get store(): TenantStore {
    return this.#store;
  }

  // ---- authentication ----

  /**
   * The principal for an Authorization header value. Throws SY_ERR_UNAUTHENTICATED for a missing (when
   * authentication is required) or malformed header, an unknown, revoked or expired key. `actorHint` names the
   * actor of unauthenticated requests in open mode (the x-switchyard-actor header).
   *
   * Open mode (authentication off): a bearer token that is no key of this server (the OpenAI SDKs always send
   * one, e.g. "sk-no-key") acts as the anonymous platform, like no header; a key the server knows still acts as
   * its tenant, and one that is revoked or expired is still refused (it names a tenant that must not act).
   */
  authenticate(header: string | undefined, actorHint: string | null = null): Principal | Promise<Principal> {
    if (header === undefined || header === '') {
      if (this.authRequired) unauthenticated('missing Authorization header: send "Authorization: Bearer <API key>"');
      return { kind: 'platform', actor: actorHint ?? 'anonymous', key: null };
    }
    const m = BEARER.exec(header);
    if (!m) unauthenticated('malformed Authorization header: expected "Bearer <API key>"');
    const key = m[1]!;
    const digest = digestKey(key);
    if (this.#adminKeyHash !== null && digestMatches(digest, this.#adminKeyHash)) return { kind: 'platform', actor: 'admin', key: null };
    const id = keyId(key);
    if (id === null) {
      digestMatches(digest, null); // same work as a wrong secret
      if (!this.authRequired) return { kind: 'platform', actor: actorHint ?? 'anonymous', key: null };
      unauthenticated('invalid API key');
    }
    const cached = this.#keys.get(id);
    if (cached && performance.now() - cached.at < this.#cacheMs) return this.#principal(digest, cached, actorHint);
    return this.#current(id, cached).then((c) => this.#principal(digest, c, actorHint));
  }

  /** The record of key `id`, re-read; the stale `cached` one when the store cannot answer (in time). */
  async #current(id: string, cached: CachedKey | undefined): Promise<CachedKey> {
    if (cached === undefined) {
      if (!this.#storeAvailable()) throw storeUnavailable();
      return this.#loadKey(id).catch((e: unknown) => {
        throw isStoreFault(e) ? e : storeUnavailable(e);
      });
    }
    if (!this.#storeAvailable()) return cached;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<CachedKey>((resolve) => {
      timer = setTimeout(resolve, STALE_WAIT_MS, cached);
    });
    try {
      return await Promise.race([this.#loadKey(id), late]);
    } catch (e) {
      this.#logger?.warn({ err: e, key: id }, 'could not re-read an API key; using the last known record');
      return cached;
    } finally {
      clearTimeout(timer);
    }
  }

  #loadKey(id: string): Promise<CachedKey> {
    let p = this.#loading.get(id);
    if (p === undefined) {
      p = (async () => {
        try {
          const stored = await this.#store.findKey(id);
          const tenant = stored?.record.tenant ? await this.#store.findTenant(stored.record.tenant) : null;
          const c: CachedKey = { stored, tenant, at: performance.now() };
          if (this.#keys.size >= MAX_CACHED_KEYS) this.#keys.clear();
          this.#keys.set(id, c);
          return c;
        } finally {
          this.#loading.delete(id);
        }
      })();
      p.catch(() => undefined); // a caller that stopped waiting (stale record used) leaves no unhandled rejection
      this.#loading.set(id, p);
    }
    return p;
  }

  /** Notifications may have been missed (the channel reconnected): re-read every key at its next use, and model access now. */
  async resync(): Promise<void> {
    for (const [id, c] of this.#keys) this.#keys.set(id, { ...c, at: -Infinity });
    await this.refreshAccess();
  }

  #principal(digest: Buffer, c: CachedKey, actorHint: string | null): Principal {
    const s = c.stored;
    if (!digestMatches(digest, s?.hash ?? null) || !s) {
      if (!this.authRequired) return { kind: 'platform', actor: actorHint ?? 'anonymous', key: null };
      unauthenticated('invalid API key');
    }
    if (s.revoked) unauthenticated(`API key ${s.record.id} has been revoked`);
    if (s.expiresAt !== null && s.expiresAt <= Date.now()) unauthenticated(`API key ${s.record.id} expired at ${s.record.expiresAt}`);
    if (s.record.tenant === null) return { kind: 'platform', actor: `admin/${s.record.id}`, key: s.record };
    if (!c.tenant) unauthenticated('invalid API key'); // tenant deleted
    if (c.tenant.disabled) throw err('SY_ERR_FORBIDDEN', `tenant "${c.tenant.name}" is disabled`);
    return { kind: 'tenant', actor: `${c.tenant.name}/${s.record.id}`, tenant: c.tenant, key: s.record };
  }

  /** A change made through this replica: apply it to the caches here, then tell the other replicas. */
  async changed(c: TenancyChange): Promise<void> {
    await this.apply(c);
    try {
      await this.#publish?.(c);
    } catch (e) {
      this.#logger?.warn({ err: e }, 'could not notify other replicas of a tenancy change; they see it within the cache time');
    }
  }

  /** Apply a change to the caches (one made here, or announced by another replica). */
  async apply(c: TenancyChange): Promise<void> {
    if (c.kind === 'access') return this.refreshAccess();
    // One key, or all of them: after a tenant changed, every cached key holds a stale tenant record.
    if (c.id === undefined) this.#keys.clear();
    else this.#keys.delete(c.id);
  }

  // ---- authorization ----

  hasScope(p: Principal, ...anyOf: Scope[]): boolean {
    // The configured admin key and open mode have no record and hold every scope; a platform key created through
    // the API holds only the scopes it was created with (a 'read' platform key, e.g. for Prometheus, only reads).
    if (p.key === null) return true;
    const held = p.key.scopes;
    return anyOf.some((s) => held.includes(s));
  }

  /** Whether `p` may see model `model` (platform: all; a tenant: what it owns or what is shared with it). */
  canSee(p: Principal, model: string): boolean {
    return p.kind === 'platform' || this.tenantCanSee(p.tenant.name, model);
  }

  /** Whether tenant `t` may see model `model` ('' = the platform: all), e.g. for a batch job running for it. */
  tenantCanSee(t: string, model: string): boolean {
    if (t === '') return true;
    const a = this.#access.get(model);
    return a !== undefined && (a.owner === t || a.shared.has(t) || a.shared.has(ALL_TENANTS));
  }

  /** Whether `p` may change model `model` (platform, or the owning tenant). */
  owns(p: Principal, model: string): boolean {
    return p.kind === 'platform' || this.#access.get(model)?.owner === p.tenant.name;
  }

  /** A tenant creates models only in its namespace, `<tenant>.<name>`: names can never collide across tenants. */
  inNamespace(p: Principal, model: string): boolean {
    return p.kind === 'platform' || (model.startsWith(`${p.tenant.name}.`) && model.length > p.tenant.name.length + 1);
  }

  async refreshAccess(): Promise<void> {
    this.#accessLoading ??= (async () => {
      try {
        const rows = await this.#store.listAccess();
        const next = new Map<string, Access>();
        for (const [model, a] of rows) next.set(model, { owner: a.owner, shared: new Set(a.shared) });
        this.#access = next;
      } finally {
        this.#accessLoading = null;
      }
    })();
    return this.#accessLoading;
  }

  // ---- limits and fairness ----

  /** The limits a request by `p` to `model` must pass (none for the platform). */
  limitScopes(p: Principal, model: string | null): LimitScope[] {
    return scopedLimits(p, model, hasAnyLimit).map(([key, spec]) => ({ key, spec }));
  }

  /**
   * The LLM API's per-minute limits for a request by `p` to `model` (none for the platform), keyed `llm:t:<tenant>`,
   * `llm:k:<key id>`, `llm:m:<tenant>:<model>`: never the request limiter's keys, whatever the backend's prefix.
   */
  tokenScopes(p: Principal, model: string): TokenScope[] {
    return scopedLimits(p, model, hasTokenLimit).map(([key, l]) => ({ key: `llm:${key}`, rpm: l.rpm, tpm: l.tpm }));
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.limiter?.close();
  }
}

/** The tenant a principal acts for ('' for the platform or open mode): usage, cache isolation, the prediction log. */
export function tenantOf(p: Principal | null): string {
  return p?.kind === 'tenant' ? p.tenant.name : '';
}

/** A principal's fair-queueing flow: its tenant, weighted by the tenant's weight; the platform takes the default flow. */
export function flowOf(p: Principal | null): Flow | undefined {
  return p?.kind === 'tenant' ? { id: p.tenant.name, weight: p.tenant.weight } : undefined;
}
