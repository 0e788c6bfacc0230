/**
 * @module
 * The feature store's shapes, shared by its parts: definitions (entities, feature views, windowed views,
 * feature services bound to model inputs), stored values and their read statuses, and the online, window and
 * offline store contracts (in-memory and Redis implementations of the first two; the metadata store holds the
 * third).
 */

/** Scalar feature value types. int64 values travel as JSON numbers (safe integers). */
export type ValueType = 'int64' | 'float64' | 'float32' | 'string' | 'bool';
export type FeatureValue = number | string | boolean;

/** Entity: what features are about (a user, a card), identified by one or more typed join keys. */
export interface EntityDef {
  readonly name: string;
  readonly description: string;
  readonly joinKeys: readonly { readonly name: string; readonly type: 'string' | 'int64' }[];
}

export interface FeatureDef {
  readonly name: string;
  readonly type: ValueType;
  readonly description?: string;
}

/** A feature view whose rows are pushed (batch or streaming producers): the latest value per entity is served online. */
export interface FeatureViewDef {
  readonly kind: 'view';
  readonly name: string;
  readonly description: string;
  /** Entity names; the view's key is the concatenation of their join keys. */
  readonly entities: readonly string[];
  readonly features: readonly FeatureDef[];
  /** Max age in seconds: an online value older than this (by event time) reads as OUTSIDE_MAX_AGE; offline joins ignore older rows. 0 = no limit. */
  readonly ttlSeconds: number;
  readonly online: boolean;
  readonly offline: boolean;
}

export type AggregationFn = 'count' | 'sum' | 'mean' | 'min' | 'max';
export type WindowSpec = '5m' | '1h' | '24h';
export const WINDOW_MS: Readonly<Record<WindowSpec, number>> = Object.freeze({ '5m': 300_000, '1h': 3_600_000, '24h': 86_400_000 });

/** One windowed feature: `fn` of the event field `field` (none for count) over the sliding `window`. */
export interface AggregationDef {
  readonly name: string;
  readonly fn: AggregationFn;
  readonly field?: string;
  readonly window: WindowSpec;
}

/** A feature view computed from an event stream: sliding-window aggregations keyed by entity. */
export interface WindowViewDef {
  readonly kind: 'window';
  readonly name: string;
  readonly description: string;
  readonly entities: readonly string[];
  readonly aggregations: readonly AggregationDef[];
  /** Optional stream the server consumes (at least once, deduplicated by event id); events can also be pushed. */
  readonly source?:
    | { readonly type: 'nats'; readonly stream: string; readonly subject: string; readonly durable: string }
    | { readonly type: 'redis'; readonly stream: string; readonly group: string };
}

export type ViewDef = FeatureViewDef | WindowViewDef;

/** `view:feature` (a windowed view's aggregations are its features). */
export type FeatureRef = string;

/** One feature a service serves, and where it goes in the model's inputs. */
export interface ServiceFeature {
  readonly ref: FeatureRef;
  /** The model input tensor this feature fills (its columns, in service order); absent = served, not fed to a model. */
  readonly input?: string;
  /** Used when the value is missing (NOT_FOUND, or OUTSIDE_MAX_AGE unless `staleIsMissing` is false). */
  readonly default?: FeatureValue;
}

/** A named, ordered list of features, optionally bound to a model version's inputs. */
export interface FeatureServiceDef {
  readonly name: string;
  readonly description: string;
  readonly features: readonly ServiceFeature[];
  /** Bound model (and version; absent = every version) whose inputs the service fills. */
  readonly model?: string;
  readonly version?: number;
  /** A missing value without a default: 'error' (400 naming the feature and entity, default) or 'zero' (0 / '' / false). */
  readonly onMissing: 'error' | 'zero';
  /** Whether an OUTSIDE_MAX_AGE value counts as missing (default true). */
  readonly staleIsMissing: boolean;
}

export type DefinitionKind = 'entity' | 'view' | 'service';

/** A stored definition revision. */
export interface DefinitionRecord<T> {
  readonly kind: DefinitionKind;
  readonly name: string;
  readonly revision: number;
  readonly spec: T;
  readonly createdBy: string;
  readonly createdAt: string;
}

/** Read status of one feature value (Feast's vocabulary). */
export type FeatureStatus = 'PRESENT' | 'NOT_FOUND' | 'OUTSIDE_MAX_AGE';

export interface FeatureRead {
  readonly value: FeatureValue | null;
  readonly status: FeatureStatus;
  /** Event time of the value (ISO), null when NOT_FOUND. */
  readonly eventTime: string | null;
}

/** An entity's join key values, canonicalised: `key1=value1|key2=value2` (values URI-encoded) in join-key order. */
export type EntityKey = string;

/** One pushed row: entity key values, event time and feature values. */
export interface PushRow {
  readonly entityKey: EntityKey;
  /** Epoch ms. */
  readonly eventTime: number;
  readonly values: Readonly<Record<string, FeatureValue | null>>;
}

/** The latest stored row of a view for an entity. */
export interface StoredRow {
  readonly eventTime: number;
  readonly values: Readonly<Record<string, FeatureValue | null>>;
}

/** Online store of the latest row per (view, entity). */
export interface OnlineStore {
  readonly kind: 'memory' | 'redis';
  /** Write rows; a row older than (or as old as) what is stored for its entity is ignored. Returns how many were applied. */
  write(view: string, rows: readonly PushRow[]): Promise<number>;
  /** One round trip for every (view, entity) pair; null where nothing is stored. */
  read(keys: readonly { readonly view: string; readonly entityKey: EntityKey }[]): Promise<(StoredRow | null)[]>;
  /** Drop everything of a view (when it is deleted). */
  dropView(view: string): Promise<void>;
  close(): Promise<void>;
}

/** One event for windowed aggregation. */
export interface WindowEvent {
  /** Unique per event: a redelivered event with the same id is counted once. */
  readonly eventId: string;
  readonly entityKey: EntityKey;
  /** Epoch ms. */
  readonly eventTime: number;
  readonly values: Readonly<Record<string, number>>;
}

/** State of sliding-window aggregations per (view, entity), deduplicating events by id. */
export interface WindowStore {
  readonly kind: 'memory' | 'redis';
  /** Add events (late ones included, up to the longest window back from `now`); duplicates and too-old events are skipped. */
  add(view: WindowViewDef, events: readonly WindowEvent[], now?: number): Promise<{ applied: number; duplicates: number; tooOld: number }>;
  /** Aggregation values per entity at `now` (one round trip for all entities); null = no events in the window (count: 0). */
  read(view: WindowViewDef, entityKeys: readonly EntityKey[], now?: number): Promise<Record<string, number | null>[]>;
  /** Entities × buckets held (for the window state size metric). */
  size(): Promise<number>;
  dropView(view: string): Promise<void>;
  close(): Promise<void>;
}
