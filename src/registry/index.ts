/**
 * @module
 * The persisted model registry: records and contract, the service, and artifact storage.
 */
export type * from './types.js';
export { Registry, type RegistryOptions } from './registry.js';
export { LocalArtifactStore, type ArtifactLease, type ArtifactSource, type ArtifactStore } from './artifacts.js';
export { ArtifactCache, type ArtifactCacheOptions, type ArtifactCacheStats } from './artifact-cache.js';
export type { S3ArtifactStore, S3StoreOptions } from './s3-store.js';
export { openArtifactStore, type ArtifactStoreSettings } from './stores.js';
export { MAX_TAG_KEY } from './records.js';
export { ALIAS_NAME, MODEL_NAME } from './names.js';
export { NOTIFY_CHANNEL } from './registry.js';
export {
  ARM_NAME,
  KEY_SOURCE,
  parseRoutingPolicy,
  routingPolicySchema,
  type Arm,
  type CircuitBreakerSpec,
  type RoutingPolicy,
  type RoutingPolicyInput,
  type ShadowSpec,
} from './routing-policy.js';
