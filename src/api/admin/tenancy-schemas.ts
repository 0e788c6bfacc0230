/**
 * @module
 * JSON schemas of the tenancy admin API (tenants, keys, model access, usage, audit), for validation,
 * serialization and the OpenAPI document. Field names are the records of src/gateway/types.ts.
 */
import { SCOPES, TENANT_NAME } from '../../gateway/index.js';

const str = (description: string): Record<string, unknown> => ({ type: 'string', description });
const time = (description: string): Record<string, unknown> => ({ type: 'string', format: 'date-time', description });
const limitNum = (description: string, integer = true): Record<string, unknown> => ({
  type: [integer ? 'integer' : 'number', 'null'],
  exclusiveMinimum: 0,
  description,
});

const limitProps = {
  rps: limitNum('Sustained requests per second (token bucket refill); null = no rate limit.', false),
  burst: limitNum('Bucket capacity: requests that may arrive at once; default = rps rounded up.'),
  concurrency: limitNum('Requests in flight at once.'),
  dailyQuota: limitNum('Requests per UTC day.'),
  monthlyQuota: limitNum('Requests per UTC calendar month.'),
  rpm: limitNum('LLM API (/v1/chat/completions, ...) requests per minute; not counted by the other limits.'),
  tpm: limitNum('LLM API tokens (prompt + completion) per minute.'),
};

export const limitsSchema = { type: 'object', additionalProperties: false, properties: limitProps } as const;
const fullLimitsSchema = { type: 'object', required: Object.keys(limitProps), properties: limitProps } as const;
export const tenantLimitsSchema = {
  type: 'object',
  additionalProperties: false,
  description: "Overrides of the tier's limits, and optional per-model limits (model name → limits).",
  properties: { ...limitProps, models: { type: 'object', additionalProperties: limitsSchema } },
} as const;

export const tenantSchema = {
  type: 'object',
  required: ['name', 'description', 'tier', 'weight', 'limits', 'effectiveLimits', 'disabled', 'createdAt', 'updatedAt'],
  properties: {
    name: str('Tenant name (lowercase, no dots; its models are named `<tenant>.<model>`).'),
    description: str('Free text.'),
    tier: { type: 'string', enum: ['free', 'standard', 'premium', 'unlimited'], description: 'Tier: default weight and limits.' },
    weight: { type: 'number', description: "Share of a busy model's capacity relative to other tenants (fair queueing)." },
    limits: tenantLimitsSchema,
    effectiveLimits: { ...fullLimitsSchema, description: 'Tier defaults with the overrides applied.' },
    disabled: { type: 'boolean', description: "A disabled tenant's keys are refused." },
    createdAt: time('Creation time.'),
    updatedAt: time('Last change.'),
  },
} as const;

export const tenantListSchema = { type: 'object', required: ['tenants'], properties: { tenants: { type: 'array', items: tenantSchema } } } as const;
export const tenantParams = { type: 'object', required: ['tenant'], properties: { tenant: str('Tenant name.') } } as const;

export const createTenantBody = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { type: 'string', pattern: TENANT_NAME.source, description: 'Tenant name.' },
    description: { type: 'string' },
    tier: { type: 'string', description: 'free, standard (default), premium or unlimited.' },
    weight: { type: 'number', exclusiveMinimum: 0, maximum: 1000 },
    limits: tenantLimitsSchema,
  },
} as const;

export const updateTenantBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    description: { type: 'string' },
    tier: { type: 'string' },
    weight: { type: 'number', exclusiveMinimum: 0, maximum: 1000 },
    limits: tenantLimitsSchema,
    disabled: { type: 'boolean' },
  },
} as const;

export const keySchema = {
  type: 'object',
  required: ['id', 'tenant', 'name', 'scopes', 'limits', 'createdBy', 'createdAt', 'expiresAt', 'revokedAt', 'status'],
  properties: {
    id: str('Public key id (the key prefix).'),
    tenant: { type: ['string', 'null'], description: 'Owning tenant; null for a platform admin key.' },
    name: str('Label.'),
    scopes: { type: 'array', items: { type: 'string', enum: [...SCOPES] } },
    limits: { type: ['object', 'null'], properties: limitProps, description: "Per-key limits on top of the tenant's." },
    createdBy: str('Who created it.'),
    createdAt: time('Creation time.'),
    expiresAt: { type: ['string', 'null'], format: 'date-time', description: 'Expiry, or null.' },
    revokedAt: { type: ['string', 'null'], format: 'date-time', description: 'When revoked, or null.' },
    status: { type: 'string', enum: ['active', 'revoked', 'expired'] },
  },
} as const;

export const createdKeySchema = {
  ...keySchema,
  required: [...keySchema.required, 'key'],
  properties: { ...keySchema.properties, key: str('The API key. Shown only in this response; store it now.') },
} as const;

export const keyListSchema = { type: 'object', required: ['keys'], properties: { keys: { type: 'array', items: keySchema } } } as const;
export const keyParams = { type: 'object', required: ['id'], properties: { id: str('Key id (prefix).') } } as const;

export const createKeyBody = {
  type: 'object',
  additionalProperties: false,
  required: ['scopes'],
  properties: {
    name: { type: 'string' },
    scopes: { type: 'array', minItems: 1, items: { type: 'string', enum: [...SCOPES] } },
    expiresAt: { type: ['string', 'null'], format: 'date-time' },
    limits: { ...limitsSchema, type: ['object', 'null'] },
  },
} as const;

export const whoamiSchema = {
  type: 'object',
  required: ['kind', 'actor', 'tenant', 'key'],
  properties: {
    kind: { type: 'string', enum: ['platform', 'tenant'] },
    actor: str('How this key appears in logs and the audit log.'),
    tenant: { anyOf: [tenantSchema, { type: 'null' }] },
    key: { anyOf: [keySchema, { type: 'null' }] },
  },
} as const;

export const accessSchema = {
  type: 'object',
  required: ['model', 'owner', 'shared'],
  properties: {
    model: str('Model name.'),
    owner: { type: ['string', 'null'], description: 'Owning tenant; null for a platform model.' },
    shared: { type: 'array', items: { type: 'string' }, description: 'Tenants it is shared with ("*" = all).' },
  },
} as const;

export const ownerBody = {
  type: 'object',
  additionalProperties: false,
  required: ['tenant'],
  properties: { tenant: { type: ['string', 'null'], description: 'New owner; null = the platform.' } },
} as const;

export const shareParams = {
  type: 'object',
  required: ['name', 'tenant'],
  properties: { name: str('Model name.'), tenant: str('Tenant name, or "*" for every tenant.') },
} as const;

/** The time range and grouping of the usage endpoints (inference and LLM usage). */
export const usageRangeProperties = {
  from: { type: 'string', description: 'ISO time, inclusive (hour buckets).' },
  to: { type: 'string', description: 'ISO time, exclusive.' },
  group_by: { type: 'string', enum: ['hour', 'day', 'total'], default: 'hour' },
} as const;

export const usageQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    tenant: { type: 'string' },
    model: { type: 'string' },
    version: { type: 'integer', minimum: 1 },
    key: { type: 'string', description: 'Only requests made with this API key id ("" = without a key); implies by_key.' },
    by_key: { type: 'boolean', default: false, description: 'One row per API key too (rows carry keyId); otherwise keys are summed over and keyId is null.' },
    ...usageRangeProperties,
  },
} as const;

export const usageListSchema = {
  type: 'object',
  required: ['usage'],
  properties: {
    usage: {
      type: 'array',
      items: {
        type: 'object',
        required: ['tenant', 'model', 'version', 'keyId', 'period', 'requests', 'rows', 'computeMs', 'errors', 'invalid'],
        properties: {
          tenant: str('Tenant ("" = unauthenticated / platform traffic).'),
          model: { type: 'string' },
          version: { type: 'integer' },
          keyId: { type: ['string', 'null'], description: 'API key id ("" = no key) with by_key or key; null when keys are summed over.' },
          period: time('Start of the hour or day (for group_by total: of the first).'),
          requests: { type: 'integer' },
          rows: { type: 'integer', description: 'Rows of the served requests.' },
          computeMs: { type: 'number' },
          errors: { type: 'integer', description: 'Requests that failed for a server-side reason (5xx).' },
          invalid: { type: 'integer', description: "Requests refused as the caller's fault (4xx: invalid input, unknown model or version, client gone)." },
        },
      },
    },
  },
} as const;

export const auditQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    tenant: { type: 'string' },
    actor: { type: 'string' },
    action: { type: 'string', description: 'Exact action, or a prefix ending in "*".' },
    from: { type: 'string' },
    to: { type: 'string' },
    limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
    before: { type: 'integer', description: 'Cursor: entries with id below this.' },
  },
} as const;

export const auditListSchema = {
  type: 'object',
  required: ['entries'],
  properties: {
    entries: {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'at', 'actor', 'tenant', 'action', 'target', 'status', 'ip'],
        properties: {
          id: { type: 'integer' },
          at: time('When.'),
          actor: str('Who (tenant/key id, admin, or unauthenticated).'),
          tenant: { type: ['string', 'null'] },
          action: str('Method and route, e.g. "POST /api/v1/tenants".'),
          target: { type: ['string', 'null'], description: 'Route parameters.' },
          status: { type: 'integer', description: 'HTTP status answered.' },
          ip: str('Client address.'),
          userAgent: { type: ['string', 'null'] },
          requestId: { type: ['string', 'null'] },
          detail: { type: ['object', 'null'], additionalProperties: true },
        },
      },
    },
  },
} as const;
