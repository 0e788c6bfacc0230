/**
 * @module
 * The persisted model registry: records and contract, the service, and artifact storage.
 */
export type * from './types.js';
export { Registry, type RegistryOptions } from './registry.js';
export { LocalArtifactStore, type ArtifactSource, type ArtifactStore } from './artifacts.js';
export { ALIAS_NAME, MAX_TAG_KEY } from './records.js';
export { NOTIFY_CHANNEL } from './registry.js';
