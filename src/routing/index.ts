/**
 * @module
 * Traffic management: routing policies (schema, compiled form), arm assignment, circuit breakers, fallback
 * chains, shadows, the result cache and output comparison. The data plane (inference/) drives it per call.
 */
export {
  CompiledPolicy,
  TrafficRouter,
  countsAgainst,
  fallsBack,
  sameInputs,
  type Assignment,
  type CompiledArm,
  type FallbackStep,
  type TrafficRouterOptions,
} from './router.js';
export { MemoryResultCache, RedisResultCache, cacheKey, type ResultCache } from './cache.js';
export { ARM_NAME, parseRoutingPolicy, routingPolicySchema, type RoutingPolicy, type RoutingPolicyInput, type ShadowSpec } from '../registry/index.js';
export { WindowStats, type WindowSnapshot } from './window.js';
