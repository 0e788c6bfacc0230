/**
 * @module
 * The multi-tenant gateway: API keys and principals, access rules, limits (requests, rows, tokens), usage,
 * the audit log and the Fastify hooks that apply them to HTTP routes.
 */
export { AuditLog, type AuditQuery } from './audit.js';
export { Gateway, flowOf, tenantOf, type TenancyChange } from './gateway.js';
export { checkCreatable, installGateway } from './http.js';
export { Authorizer, formatDuration, limitHeaders, type AccessRule, type AccessTarget, type AuthorizerOptions } from './authorize.js';
export { MemoryLimiter, type Limiter } from './limiter.js';
export { RedisLimiter } from './redis-limiter.js';
export { TenantStore } from './store.js';
export { MemoryTokenLimiter, RedisTokenLimiter, type TokenLimiter, type TokenReservation, type TokenScope } from './token-limits.js';
export {
  LIMIT_FIELDS,
  SCOPES,
  TENANT_NAME,
  type ApiKeyRecord,
  type CreateKeyInput,
  type CreateTenantInput,
  type ModelAccess,
  type Principal,
  type TenantRecord,
  type UpdateTenantInput,
} from './types.js';
export { LlmUsageMeter, UsageMeter, type UsageQuery } from './usage.js';
export { meterRequests } from './accounting.js';
