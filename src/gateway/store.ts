/**
 * @module
 * Tenants, API keys and model access in the metadata store (SQLite or Postgres, the registry's database).
 * Pure storage: validation of inputs, no caching, no HTTP. Keys are stored as sha256 hashes only.
 */
import type { Kysely } from 'kysely';
import { err } from '../errors.js';
import { isUniqueViolation, iso } from '../storage/index.js';
import type { ApiKeysTable, DB, TenantsTable } from '../storage/index.js';
import { generateKey } from './keys.js';
import {
  ALL_TENANTS,
  DEFAULT_TIER,
  effectiveLimits,
  LIMIT_FIELDS,
  SCOPES,
  TENANT_NAME,
  TIERS,
  type ApiKeyRecord,
  type CreateKeyInput,
  type CreateTenantInput,
  type KeyStatus,
  type Limits,
  type ModelAccess,
  type Scope,
  type TenantLimits,
  type TenantRecord,
  type UpdateTenantInput,
} from './types.js';

function bad(message: string): never {
  throw err('SY_ERR_BAD_REQUEST', message);
}

export function checkTenantName(name: unknown): string {
  if (typeof name !== 'string' || !TENANT_NAME.test(name)) {
    bad(`invalid tenant name ${JSON.stringify(name)}: must match ${TENANT_NAME.source} (lowercase, no dots)`);
  }
  return name;
}

function checkTier(tier: unknown): string {
  if (typeof tier !== 'string' || !Object.hasOwn(TIERS, tier)) bad(`unknown tier ${JSON.stringify(tier)}; tiers are: ${Object.keys(TIERS).join(', ')}`);
  return tier;
}

function checkWeight(w: unknown): number {
  if (typeof w !== 'number' || !Number.isFinite(w) || w <= 0 || w > 1000) bad(`"weight" must be a number in (0, 1000], got ${JSON.stringify(w)}`);
  return w;
}

/** Limit overrides: each field a positive number (rps may be fractional) or null (no limit). */
export function checkLimits(v: unknown, what: string): Partial<Limits> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`${what} must be an object`);
  const out: { -readonly [K in keyof Limits]?: number | null } = {};
  for (const [k, x] of Object.entries(v)) {
    if (!(LIMIT_FIELDS as readonly string[]).includes(k)) bad(`${what} has unknown field "${k}" (expected ${LIMIT_FIELDS.join(', ')})`);
    const integer = k !== 'rps';
    if (x !== null && (typeof x !== 'number' || !Number.isFinite(x) || x <= 0 || (integer && !Number.isInteger(x)))) {
      bad(`${what}.${k} must be a positive ${integer ? 'integer' : 'number'} or null, got ${JSON.stringify(x)}`);
    }
    out[k as keyof Limits] = x as number | null;
  }
  return out;
}

function checkTenantLimits(v: unknown): TenantLimits {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad('"limits" must be an object');
  const { models, ...rest } = v as Record<string, unknown>;
  const out: { -readonly [K in keyof TenantLimits]: TenantLimits[K] } = checkLimits(rest, 'limits');
  if (models !== undefined) {
    if (typeof models !== 'object' || models === null || Array.isArray(models)) bad('"limits.models" must be an object of model name → limits');
    const m: Record<string, Partial<Limits>> = {};
    for (const [name, l] of Object.entries(models)) m[name] = checkLimits(l, `limits.models["${name}"]`);
    out.models = m;
  }
  return out;
}

function checkScopes(v: unknown): Scope[] {
  if (!Array.isArray(v) || v.length === 0) bad(`"scopes" must be a non-empty array of ${SCOPES.join(', ')}`);
  for (const s of v) if (!(SCOPES as readonly unknown[]).includes(s)) bad(`unknown scope ${JSON.stringify(s)}; scopes are: ${SCOPES.join(', ')}`);
  return [...new Set(v as Scope[])];
}

function tenantRecord(row: TenantsTable): TenantRecord {
  const limits = JSON.parse(row.limits) as TenantLimits;
  const tier = TIERS[row.tier] ?? TIERS[DEFAULT_TIER]!;
  return {
    name: row.name,
    description: row.description,
    tier: row.tier,
    weight: Number(row.weight),
    limits,
    effectiveLimits: effectiveLimits(tier.limits, limits),
    disabled: row.disabled === 1,
    createdAt: iso(Number(row.created_at)),
    updatedAt: iso(Number(row.updated_at)),
  };
}

export function keyStatus(row: Pick<ApiKeysTable, 'revoked_at' | 'expires_at'>, now = Date.now()): KeyStatus {
  if (row.revoked_at !== null) return 'revoked';
  if (row.expires_at !== null && Number(row.expires_at) <= now) return 'expired';
  return 'active';
}

export function keyRecord(row: ApiKeysTable): ApiKeyRecord {
  return {
    id: row.id,
    tenant: row.tenant,
    name: row.name,
    scopes: JSON.parse(row.scopes) as Scope[],
    limits: row.limits === null ? null : (JSON.parse(row.limits) as Partial<Limits>),
    createdBy: row.created_by,
    createdAt: iso(Number(row.created_at)),
    expiresAt: row.expires_at === null ? null : iso(Number(row.expires_at)),
    revokedAt: row.revoked_at === null ? null : iso(Number(row.revoked_at)),
    status: keyStatus(row),
  };
}

/** A stored key row with its hash, for verification. */
export interface StoredKey {
  readonly record: ApiKeyRecord;
  readonly hash: string;
  readonly expiresAt: number | null;
  readonly revoked: boolean;
}

export class TenantStore {
  readonly #db: Kysely<DB>;

  constructor(db: Kysely<DB>) {
    this.#db = db;
  }

  // ---- tenants ----

  async createTenant(input: CreateTenantInput): Promise<TenantRecord> {
    const name = checkTenantName(input.name);
    const tier = checkTier(input.tier ?? DEFAULT_TIER);
    const now = Date.now();
    const row: TenantsTable = {
      name,
      description: input.description ?? '',
      tier,
      weight: checkWeight(input.weight ?? TIERS[tier]!.weight),
      limits: JSON.stringify(checkTenantLimits(input.limits ?? {})),
      disabled: 0,
      created_at: now,
      updated_at: now,
    };
    try {
      await this.#db.insertInto('tenants').values(row).execute();
    } catch (e) {
      if (isUniqueViolation(e)) throw err('SY_ERR_TENANT_CONFLICT', `tenant "${name}" already exists`);
      throw e;
    }
    return tenantRecord(row);
  }

  async getTenant(name: string): Promise<TenantRecord> {
    const t = await this.findTenant(name);
    if (!t) throw err('SY_ERR_TENANT_NOT_FOUND', `no tenant "${name}"`);
    return t;
  }

  async findTenant(name: string): Promise<TenantRecord | null> {
    const row = await this.#db.selectFrom('tenants').selectAll().where('name', '=', name).executeTakeFirst();
    return row ? tenantRecord(row) : null;
  }

  async listTenants(): Promise<TenantRecord[]> {
    return (await this.#db.selectFrom('tenants').selectAll().orderBy('name').execute()).map(tenantRecord);
  }

  async updateTenant(name: string, patch: UpdateTenantInput): Promise<TenantRecord> {
    const set: Partial<TenantsTable> = { updated_at: Date.now() };
    if (patch.description !== undefined) set.description = patch.description;
    if (patch.tier !== undefined) set.tier = checkTier(patch.tier);
    if (patch.weight !== undefined) set.weight = checkWeight(patch.weight);
    if (patch.limits !== undefined) set.limits = JSON.stringify(checkTenantLimits(patch.limits));
    if (patch.disabled !== undefined) set.disabled = patch.disabled ? 1 : 0;
    const r = await this.#db.updateTable('tenants').set(set).where('name', '=', name).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw err('SY_ERR_TENANT_NOT_FOUND', `no tenant "${name}"`);
    return this.getTenant(name);
  }

  /** Delete a tenant with its keys and access rows (its models stay registered, owned by the platform). */
  async deleteTenant(name: string): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      await tx.deleteFrom('api_keys').where('tenant', '=', name).execute();
      await tx.deleteFrom('model_access').where('tenant', '=', name).execute();
      const r = await tx.deleteFrom('tenants').where('name', '=', name).executeTakeFirst();
      if (Number(r.numDeletedRows) === 0) throw err('SY_ERR_TENANT_NOT_FOUND', `no tenant "${name}"`);
    });
  }

  // ---- keys ----

  /** Create a key for `tenant` (null: a platform admin key). Returns the record and the key, which is never retrievable again. */
  async createKey(tenant: string | null, input: CreateKeyInput, actor: string): Promise<{ record: ApiKeyRecord; key: string }> {
    if (tenant !== null) await this.getTenant(tenant);
    const scopes = checkScopes(input.scopes);
    let expires: number | null = null;
    if (input.expiresAt !== undefined && input.expiresAt !== null) {
      expires = Date.parse(input.expiresAt);
      if (Number.isNaN(expires)) bad(`"expiresAt" must be an ISO-8601 time, got ${JSON.stringify(input.expiresAt)}`);
      if (expires <= Date.now()) bad('"expiresAt" must be in the future');
    }
    const limits = input.limits === undefined || input.limits === null ? null : checkLimits(input.limits, 'limits');
    const { id, key, hash } = generateKey();
    const row: ApiKeysTable = {
      id,
      tenant,
      name: input.name ?? '',
      hash,
      scopes: JSON.stringify(scopes),
      limits: limits === null ? null : JSON.stringify(limits),
      created_by: actor,
      created_at: Date.now(),
      expires_at: expires,
      revoked_at: null,
    };
    await this.#db.insertInto('api_keys').values(row).execute();
    return { record: keyRecord(row), key };
  }

  async findKey(id: string): Promise<StoredKey | null> {
    const row = await this.#db.selectFrom('api_keys').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) return null;
    return { record: keyRecord(row), hash: row.hash, expiresAt: row.expires_at === null ? null : Number(row.expires_at), revoked: row.revoked_at !== null };
  }

  /** Keys of a tenant (null: platform admin keys), newest first. */
  async listKeys(tenant: string | null): Promise<ApiKeyRecord[]> {
    let q = this.#db.selectFrom('api_keys').selectAll();
    q = tenant === null ? q.where('tenant', 'is', null) : q.where('tenant', '=', tenant);
    return (await q.orderBy('created_at', 'desc').orderBy('id').execute()).map(keyRecord);
  }

  /** Revoke a key (kept for the record). Revoking twice is a no-op. */
  async revokeKey(id: string): Promise<ApiKeyRecord> {
    await this.#db.updateTable('api_keys').set({ revoked_at: Date.now() }).where('id', '=', id).where('revoked_at', 'is', null).execute();
    const k = await this.findKey(id);
    if (!k) throw err('SY_ERR_TENANT_NOT_FOUND', `no API key "${id}"`);
    return k.record;
  }

  async hasActivePlatformKey(): Promise<boolean> {
    const rows = await this.#db.selectFrom('api_keys').select(['revoked_at', 'expires_at']).where('tenant', 'is', null).execute();
    return rows.some((r) => keyStatus(r) === 'active');
  }

  // ---- model access ----

  /** Every model's owner and shares (models nobody owns or shares are absent). */
  async listAccess(): Promise<Map<string, ModelAccess>> {
    const rows = await this.#db.selectFrom('model_access').select(['model', 'tenant', 'role']).execute();
    const out = new Map<string, { model: string; owner: string | null; shared: string[] }>();
    for (const r of rows) {
      let a = out.get(r.model);
      if (!a) out.set(r.model, (a = { model: r.model, owner: null, shared: [] }));
      if (r.role === 'owner') a.owner = r.tenant;
      else a.shared.push(r.tenant);
    }
    for (const a of out.values()) a.shared.sort();
    return out;
  }

  async getAccess(model: string): Promise<ModelAccess> {
    const rows = await this.#db.selectFrom('model_access').select(['tenant', 'role']).where('model', '=', model).execute();
    return {
      model,
      owner: rows.find((r) => r.role === 'owner')?.tenant ?? null,
      shared: rows
        .filter((r) => r.role !== 'owner')
        .map((r) => r.tenant)
        .sort(),
    };
  }

  /** Make `tenant` the owner of `model` (null: the platform). */
  async setOwner(model: string, tenant: string | null): Promise<ModelAccess> {
    if (tenant !== null) await this.getTenant(tenant);
    await this.#db.transaction().execute(async (tx) => {
      await tx.deleteFrom('model_access').where('model', '=', model).where('role', '=', 'owner').execute();
      if (tenant !== null) {
        await tx.deleteFrom('model_access').where('model', '=', model).where('tenant', '=', tenant).execute();
        await tx.insertInto('model_access').values({ model, tenant, role: 'owner', created_at: Date.now() }).execute();
      }
    });
    return this.getAccess(model);
  }

  /** Share `model` with `tenant` (`*`: every tenant). Sharing with the owner is a no-op. */
  async share(model: string, tenant: string): Promise<ModelAccess> {
    if (tenant !== ALL_TENANTS) await this.getTenant(checkTenantName(tenant));
    const current = await this.getAccess(model);
    if (current.owner !== tenant && !current.shared.includes(tenant)) {
      try {
        await this.#db.insertInto('model_access').values({ model, tenant, role: 'shared', created_at: Date.now() }).execute();
      } catch (e) {
        if (!isUniqueViolation(e)) throw e;
      }
    }
    return this.getAccess(model);
  }

  async unshare(model: string, tenant: string): Promise<ModelAccess> {
    await this.#db.deleteFrom('model_access').where('model', '=', model).where('tenant', '=', tenant).where('role', '=', 'shared').execute();
    return this.getAccess(model);
  }
}
