/**
 * @module
 * Tenancy records as the API returns them: tenants with their tier, weight and limits, API keys (never the
 * secret), model access (owner and shares), and the principal a request acts as.
 */
import type { LimitSpec } from './limiter.js';

/** What a key may do. `infer`: call models; `read`: see models, metadata, usage; `admin`: change the tenant's models and keys. */
export const SCOPES = ['infer', 'read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Tenant names: lowercase, no dots, so `<tenant>.<model>` names a tenant's own model namespace unambiguously. */
export const TENANT_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** `model_access.tenant` value that shares a model with every tenant. */
export const ALL_TENANTS = '*';

/**
 * Limits of one scope; a null field means "no limit" (after tier defaults). The request limiter enforces the
 * {@link LimitSpec} fields on every limited route and ignores `rpm` / `tpm`, which only the LLM API enforces
 * (src/gateway/token-limits.ts).
 */
export interface Limits extends LimitSpec {
  /** LLM API requests per minute (a bucket of `rpm` refilled continuously); null = no limit. */
  readonly rpm: number | null;
  /** LLM API tokens (prompt + completion) per minute, same kind of bucket; null = no limit. */
  readonly tpm: number | null;
}

/** The fields of {@link Limits}, in one place for validation, merging and the CLI flags. */
export const LIMIT_FIELDS = ['rps', 'burst', 'concurrency', 'dailyQuota', 'monthlyQuota', 'rpm', 'tpm'] as const satisfies readonly (keyof Limits)[];

/** A tenant's limits as stored: overrides of its tier's defaults, plus optional per-model limits. */
export interface TenantLimits extends Partial<Limits> {
  readonly models?: Readonly<Record<string, Partial<Limits>>>;
}

export interface TierSpec {
  readonly weight: number;
  readonly limits: Limits;
}

/** No limit at all. */
export const NO_LIMITS: Limits = { rps: null, burst: null, concurrency: null, dailyQuota: null, monthlyQuota: null, rpm: null, tpm: null };

/**
 * Built-in tiers: a tenant starts from its tier's weight (its share of a busy model's capacity, see fair
 * queueing) and limits, and may override any of them. No tier limits the LLM API (rpm / tpm are null).
 */
export const TIERS: Readonly<Record<string, TierSpec>> = {
  free: { weight: 1, limits: { rps: 10, burst: 20, concurrency: 4, dailyQuota: 10_000, monthlyQuota: null, rpm: null, tpm: null } },
  standard: { weight: 2, limits: { rps: 100, burst: 200, concurrency: 32, dailyQuota: null, monthlyQuota: null, rpm: null, tpm: null } },
  premium: { weight: 4, limits: { rps: 1000, burst: 2000, concurrency: 256, dailyQuota: null, monthlyQuota: null, rpm: null, tpm: null } },
  unlimited: { weight: 1, limits: NO_LIMITS },
};
export const DEFAULT_TIER = 'standard';

export interface TenantRecord {
  readonly name: string;
  readonly description: string;
  readonly tier: string;
  /** Fair-queueing weight (tier default unless overridden). */
  readonly weight: number;
  /** Stored overrides. */
  readonly limits: TenantLimits;
  /** Effective limits: tier defaults with the overrides applied. */
  readonly effectiveLimits: Limits;
  readonly disabled: boolean;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface CreateTenantInput {
  name: string;
  description?: string;
  tier?: string;
  weight?: number;
  limits?: TenantLimits;
}
export type UpdateTenantInput = Partial<Omit<CreateTenantInput, 'name'>> & { disabled?: boolean };

export type KeyStatus = 'active' | 'revoked' | 'expired';

export interface ApiKeyRecord {
  /** Public id, the key's prefix (`sy_` + 12 characters); the key itself is `<id>_<secret>`. */
  readonly id: string;
  /** Owning tenant; null for a platform admin key. */
  readonly tenant: string | null;
  readonly name: string;
  readonly scopes: readonly Scope[];
  /** Per-key limits on top of the tenant's, or null. */
  readonly limits: Partial<Limits> | null;
  readonly createdBy: string;
  readonly createdAt: string;
  readonly expiresAt: string | null;
  readonly revokedAt: string | null;
  readonly status: KeyStatus;
}

export interface CreateKeyInput {
  name?: string;
  scopes: readonly Scope[];
  /** ISO time, or null for no expiry. */
  expiresAt?: string | null;
  limits?: Partial<Limits> | null;
}

export interface ModelAccess {
  readonly model: string;
  /** Owning tenant, or null for a platform model. */
  readonly owner: string | null;
  /** Tenants the model is shared with (`*` = all). */
  readonly shared: readonly string[];
}

/** Who a request acts as. */
export type Principal =
  /** A platform admin key, or any request when authentication is off (open developer mode). */
  | { readonly kind: 'platform'; readonly actor: string; readonly key: ApiKeyRecord | null }
  | { readonly kind: 'tenant'; readonly actor: string; readonly tenant: TenantRecord; readonly key: ApiKeyRecord };

/** Merge tier defaults with overrides (a field given as null removes the tier's limit). */
export function effectiveLimits(base: Limits, ...overrides: ReadonlyArray<Partial<Limits> | null | undefined>): Limits {
  const out: { -readonly [K in keyof Limits]: number | null } = { ...base };
  for (const o of overrides) {
    if (!o) continue;
    for (const k of LIMIT_FIELDS) if (o[k] !== undefined) out[k] = o[k];
  }
  return out;
}

/** Whether the request limiter has anything to enforce (rpm / tpm do not count: see {@link hasTokenLimit}). */
export function hasAnyLimit(l: Limits): boolean {
  return l.rps !== null || l.concurrency !== null || l.dailyQuota !== null || l.monthlyQuota !== null;
}

/** Whether the LLM API's per-minute limits have anything to enforce. */
export function hasTokenLimit(l: Limits): boolean {
  return l.rpm !== null || l.tpm !== null;
}
