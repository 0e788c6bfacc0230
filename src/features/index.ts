/**
 * @module
 * The features/ folder's public surface: other folders import from here only.
 */
export { FeatureStore } from './store.js';
export { type AnyDefinition, type DefinitionStore, entitySchema, featureViewSchema, serviceSchema, windowViewSchema } from './definitions.js';
export { type DefinitionKind, type DefinitionRecord, type EntityDef, type FeatureRead, type FeatureServiceDef, type ValueType, type ViewDef } from './types.js';
