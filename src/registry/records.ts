/**
 * @module
 * The registry's validation rules (names, aliases, tag keys, config, metadata maps) and the mapping between
 * stored rows (epoch ms, JSON text) and the API records (ISO times, objects).
 */
import { describeConfigIssues, modelConfigSchema } from '../config/index.js';
import { err } from '../errors.js';
import { iso } from '../storage/index.js';
import { ALIAS_NAME, MODEL_NAME } from './names.js';
import type { RoutingPolicy } from './routing-policy.js';
import type { EventsTable, ModelsTable, VersionsTable } from '../storage/index.js';
import type {
  ArtifactRef,
  CreateModelInput,
  EventType,
  PushVersionInput,
  Lineage,
  LoadPolicy,
  ModelRecord,
  RegistryEvent,
  SignatureJson,
  VersionRecord,
  VersionStatus,
} from './types.js';

/** Alias names: start with a letter, so a path segment that is all digits is always a version number. */
export const MAX_TAG_KEY = 128;
export const VERSION_STATUSES: readonly VersionStatus[] = ['pending', 'ready', 'failed'];
const LOAD_POLICIES: readonly LoadPolicy[] = ['preload', 'lazy'];

export function checkModelName(name: unknown): string {
  if (typeof name !== 'string' || !MODEL_NAME.test(name)) {
    throw err('SY_ERR_BAD_REQUEST', `invalid model name ${JSON.stringify(name)}: must match ${MODEL_NAME.source}`);
  }
  return name;
}

export function checkAlias(alias: unknown): string {
  if (typeof alias !== 'string' || !ALIAS_NAME.test(alias)) {
    throw err('SY_ERR_BAD_REQUEST', `invalid alias ${JSON.stringify(alias)}: must match ${ALIAS_NAME.source} (aliases are never numeric)`);
  }
  return alias;
}

export function checkVersionNumber(version: unknown, what = 'version'): number {
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
    throw err('SY_ERR_BAD_REQUEST', `invalid ${what} ${JSON.stringify(version)}: must be a positive integer`);
  }
  return version;
}

export function checkTagKey(key: unknown): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_TAG_KEY) {
    throw err('SY_ERR_BAD_REQUEST', `invalid tag key ${JSON.stringify(key)}: must be 1-${MAX_TAG_KEY} characters`);
  }
  return key;
}

export function checkStatus(status: unknown): VersionStatus {
  if (!VERSION_STATUSES.includes(status as VersionStatus)) {
    throw err('SY_ERR_BAD_REQUEST', `invalid version status ${JSON.stringify(status)}: one of ${VERSION_STATUSES.join(', ')}`);
  }
  return status as VersionStatus;
}

export function checkLoadPolicy(p: unknown): LoadPolicy {
  if (!LOAD_POLICIES.includes(p as LoadPolicy)) {
    throw err('SY_ERR_BAD_REQUEST', `invalid loadPolicy ${JSON.stringify(p)}: one of ${LOAD_POLICIES.join(', ')}`);
  }
  return p as LoadPolicy;
}

export function checkText(v: unknown, what: string): string {
  if (typeof v !== 'string') throw err('SY_ERR_BAD_REQUEST', `${what} must be a string`);
  return v;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A string → string map (tags, params); tag maps also check key lengths. */
export function checkStringMap(v: unknown, what: string, tagKeys = false): Record<string, string> {
  if (!isPlainObject(v)) throw err('SY_ERR_BAD_REQUEST', `${what} must be an object of strings`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (tagKeys) checkTagKey(k);
    if (typeof val !== 'string') throw err('SY_ERR_BAD_REQUEST', `${what}.${k} must be a string`);
    out[k] = val;
  }
  return out;
}

export function checkMetrics(v: unknown): Record<string, number> {
  if (!isPlainObject(v)) throw err('SY_ERR_BAD_REQUEST', 'metrics must be an object of numbers');
  const out: Record<string, number> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'number' || !Number.isFinite(val)) throw err('SY_ERR_BAD_REQUEST', `metrics.${k} must be a finite number`);
    out[k] = val;
  }
  return out;
}

export function checkLineage(v: unknown): Lineage {
  if (!isPlainObject(v)) throw err('SY_ERR_BAD_REQUEST', 'lineage must be an object');
  const out: { sourceRun?: string; dataset?: string; codeRef?: string } = {};
  for (const [k, val] of Object.entries(v)) {
    if (k !== 'sourceRun' && k !== 'dataset' && k !== 'codeRef') throw err('SY_ERR_BAD_REQUEST', `lineage: unknown key "${k}" (sourceRun, dataset, codeRef)`);
    if (val === undefined) continue;
    out[k] = checkText(val, `lineage.${k}`);
  }
  return out;
}

/** Validate a serving config with modelConfigSchema; the error names the offending key. */
export function checkConfig(v: unknown, model: string): Record<string, unknown> {
  const r = modelConfigSchema.safeParse(v ?? {});
  if (!r.success) throw err('SY_ERR_BAD_REQUEST', `model "${model}": invalid config: ${describeConfigIssues(r.error)}`);
  return r.data as Record<string, unknown>;
}

/** A validated new models row (defaults for what the input leaves out). */
export function newModelRow(name: string, input: CreateModelInput, now: number): ModelsTable {
  return {
    name,
    description: checkText(input.description ?? '', 'description'),
    owner: checkText(input.owner ?? '', 'owner'),
    tags: JSON.stringify(checkStringMap(input.tags ?? {}, 'tags', true)),
    load_policy: checkLoadPolicy(input.loadPolicy ?? 'preload'),
    pinned: input.pinned === true ? 1 : 0,
    config: JSON.stringify(checkConfig(input.config ?? {}, name)),
    latest_version: 0,
    routing: null,
    routing_revision: 0,
    created_at: now,
    updated_at: now,
  };
}

/** A pushed version's validated metadata columns. */
export function versionMetaColumns(input: PushVersionInput): Pick<VersionsTable, 'description' | 'metrics' | 'params' | 'tags' | 'lineage'> {
  return {
    description: checkText(input.description ?? '', 'description'),
    metrics: JSON.stringify(checkMetrics(input.metrics ?? {})),
    params: JSON.stringify(checkStringMap(input.params ?? {}, 'params')),
    tags: JSON.stringify(checkStringMap(input.tags ?? {}, 'tags', true)),
    lineage: JSON.stringify(checkLineage(input.lineage ?? {})),
  };
}

const parse = <T>(text: string | null, fallback: T): T => (text === null || text === '' ? fallback : (JSON.parse(text) as T));

export function modelRecord(row: ModelsTable, aliases: Readonly<Record<string, number>>): ModelRecord {
  return {
    name: row.name,
    description: row.description,
    owner: row.owner,
    tags: parse(row.tags, {}),
    loadPolicy: row.load_policy as LoadPolicy,
    pinned: Number(row.pinned) !== 0,
    config: parse(row.config, {}),
    latestVersion: Number(row.latest_version),
    aliases,
    routing: parse<RoutingPolicy | null>(row.routing, null),
    routingRevision: Number(row.routing_revision),
    createdAt: iso(Number(row.created_at)),
    updatedAt: iso(Number(row.updated_at)),
  };
}

export function versionRecord(row: VersionsTable): VersionRecord {
  const artifact: ArtifactRef = { uri: row.artifact_uri, sha256: row.sha256, size: Number(row.size) };
  return {
    model: row.model,
    version: Number(row.version),
    description: row.description,
    artifact,
    signature: parse<SignatureJson | null>(row.signature, null),
    metrics: parse(row.metrics, {}),
    params: parse(row.params, {}),
    tags: parse(row.tags, {}),
    lineage: parse(row.lineage, {}),
    createdBy: row.created_by,
    createdAt: iso(Number(row.created_at)),
    status: row.status as VersionStatus,
    statusReason: row.status_reason,
    archivedAt: row.archived_at === null ? null : iso(Number(row.archived_at)),
  };
}

const num = (v: number | null): number | null => (v === null ? null : Number(v));

export function eventRecord(row: Omit<EventsTable, 'id'> & { id: number }): RegistryEvent {
  return {
    id: Number(row.id),
    model: row.model,
    type: row.type as EventType,
    version: num(row.version),
    alias: row.alias,
    fromVersion: num(row.from_version),
    toVersion: num(row.to_version),
    key: row.key,
    value: row.value,
    actor: row.actor,
    at: iso(Number(row.at)),
  };
}

/** An ISO time as epoch ms; 400 naming the parameter when unparsable. */
export function parseTime(v: string, what: string): number {
  const ms = Date.parse(v);
  if (Number.isNaN(ms)) throw err('SY_ERR_BAD_REQUEST', `${what}: not an ISO-8601 time: ${JSON.stringify(v)}`);
  return ms;
}
