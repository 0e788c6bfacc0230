/**
 * @module
 * The registry's records and its service contract. The registry persists registered models, their versions
 * (artifact, signature, metrics, params, tags, lineage, status), aliases and an append-only event log in the
 * metadata store (SQLite by default, Postgres for scale-out). The data plane never reads it per request: it
 * builds in-memory state from `snapshot()` and keeps it current through `onChange`.
 */

/** Status of a registered version. `failed` carries a reason (e.g. the artifact failed warmup when served). */
export type VersionStatus = 'pending' | 'ready' | 'failed';

/** When the data plane loads a model's versions: at start / on registration, or on first request. */
export type LoadPolicy = 'preload' | 'lazy';

import type { RoutingPolicy } from './routing-policy.js';
import type { SignatureJson } from '../runtimes/index.js';

export type { SignatureJson, TensorSpecJson } from '../runtimes/index.js';

/** Where a version came from (free-form references). */
export interface Lineage {
  readonly sourceRun?: string;
  readonly dataset?: string;
  readonly codeRef?: string;
}

export interface ModelRecord {
  readonly name: string;
  readonly description: string;
  readonly owner: string;
  readonly tags: Readonly<Record<string, string>>;
  readonly loadPolicy: LoadPolicy;
  /** Pinned models are never evicted by the residency budget. */
  readonly pinned: boolean;
  /** Serving configuration: the keys of a repository `config.json` (validated by modelConfigSchema). */
  readonly config: Readonly<Record<string, unknown>>;
  /** Highest version number ever allocated (0 when none); numbers are never reused. */
  readonly latestVersion: number;
  /** alias → version number. */
  readonly aliases: Readonly<Record<string, number>>;
  /** Traffic policy for requests that name no version (null = the default route). */
  readonly routing: RoutingPolicy | null;
  /** Bumped by every policy change (0 = never set). */
  readonly routingRevision: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface ArtifactRef {
  /** Store-specific location, e.g. `file:///data/artifacts/ab/ab12….onnx`. */
  readonly uri: string;
  readonly sha256: string;
  readonly size: number;
}

export interface VersionRecord {
  readonly model: string;
  readonly version: number;
  readonly description: string;
  readonly artifact: ArtifactRef;
  readonly signature: SignatureJson | null;
  readonly metrics: Readonly<Record<string, number>>;
  readonly params: Readonly<Record<string, string>>;
  readonly tags: Readonly<Record<string, string>>;
  readonly lineage: Lineage;
  readonly createdBy: string;
  readonly createdAt: string;
  readonly status: VersionStatus;
  readonly statusReason: string | null;
  readonly archivedAt: string | null;
}

export type EventType =
  | 'model_created'
  | 'model_updated'
  | 'model_deleted'
  | 'version_created'
  | 'version_status'
  | 'version_archived'
  | 'alias_moved'
  | 'alias_removed'
  | 'tag_set'
  | 'tag_removed'
  | 'routing_set'
  | 'routing_removed'
  | 'experiment_started'
  | 'experiment_stopped';

/** One entry of the append-only event log. Times are ISO-8601 UTC with milliseconds. */
export interface RegistryEvent {
  readonly id: number;
  readonly model: string;
  readonly type: EventType;
  /** The version concerned (version_*, tag on a version), else null. */
  readonly version: number | null;
  /** alias_* events: the alias name. */
  readonly alias: string | null;
  /** alias_moved / alias_removed: the version the alias pointed at before (null when new). */
  readonly fromVersion: number | null;
  /** alias_moved: the version it points at now. */
  readonly toVersion: number | null;
  /**
   * tag_* events: the tag key and (tag_set) value; version_status: the new status in `value`; routing_*: `key`
   * is the new policy revision and `value` JSON `{policy, reason}` (policy null when removed); experiment_*:
   * `key` is the experiment id and `value` a note (why it stopped).
   */
  readonly key: string | null;
  readonly value: string | null;
  readonly actor: string;
  readonly at: string;
}

export interface CreateModelInput {
  readonly name: string;
  readonly description?: string;
  readonly owner?: string;
  readonly tags?: Readonly<Record<string, string>>;
  readonly loadPolicy?: LoadPolicy;
  readonly pinned?: boolean;
  readonly config?: Readonly<Record<string, unknown>>;
}

export type UpdateModelInput = Partial<Omit<CreateModelInput, 'name'>>;

export interface PushVersionInput {
  readonly description?: string;
  readonly metrics?: Readonly<Record<string, number>>;
  readonly params?: Readonly<Record<string, string>>;
  readonly tags?: Readonly<Record<string, string>>;
  readonly lineage?: Lineage;
  /** Explicit version number (repository import keeps directory numbers); must be unused. Default: next. */
  readonly version?: number;
  /** Create the registered model (with defaults) when it does not exist. Default true. */
  readonly createModel?: boolean;
}

export interface EventQuery {
  readonly model?: string;
  /** Only events at or after / at or before these ISO times. */
  readonly since?: string;
  readonly until?: string;
  readonly limit?: number;
}

/** Everything the data plane needs, in one read. */
export interface RegistrySnapshot {
  readonly models: readonly (ModelRecord & { readonly versions: readonly VersionRecord[] })[];
}

/** Reads an artifact and returns its signature; throws (any error) when it is not a loadable model. */
export type ArtifactInspector = (path: string) => Promise<SignatureJson>;
