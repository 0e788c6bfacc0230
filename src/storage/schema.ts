/**
 * @module
 * The metadata store's tables, as Kysely sees them: one interface per table and the database type (DB).
 * Types only; the migrations (migrations.ts) create exactly these.
 */
import type { Generated } from 'kysely';

export type Dialect = 'sqlite' | 'postgres';

/** Times are epoch milliseconds; JSON columns hold text. Booleans are 0/1 integers (portable). */
export interface ModelsTable {
  name: string;
  description: string;
  owner: string;
  tags: string;
  load_policy: string;
  pinned: number;
  config: string;
  latest_version: number;
  created_at: number;
  updated_at: number;
  /** Traffic policy JSON, null = none. */
  routing: string | null;
  routing_revision: number;
}

export interface VersionsTable {
  model: string;
  version: number;
  description: string;
  artifact_uri: string;
  sha256: string;
  size: number;
  signature: string | null;
  metrics: string;
  params: string;
  tags: string;
  lineage: string;
  created_by: string;
  created_at: number;
  status: string;
  status_reason: string | null;
  archived_at: number | null;
}

export interface AliasesTable {
  model: string;
  alias: string;
  version: number;
  updated_at: number;
}

export interface EventsTable {
  id: Generated<number>;
  model: string;
  type: string;
  version: number | null;
  alias: string | null;
  from_version: number | null;
  to_version: number | null;
  key: string | null;
  value: string | null;
  actor: string;
  at: number;
}

export interface TenantsTable {
  name: string;
  description: string;
  tier: string;
  weight: number;
  /** JSON: TenantLimits. */
  limits: string;
  disabled: number;
  created_at: number;
  updated_at: number;
}

export interface ApiKeysTable {
  /** The key's public prefix id (shown in listings). */
  id: string;
  /** Owning tenant; null for a platform admin key. */
  tenant: string | null;
  name: string;
  /** sha256 of the whole key, hex. The key itself is never stored. */
  hash: string;
  /** JSON array of scopes. */
  scopes: string;
  /** JSON: per-key limits, or null. */
  limits: string | null;
  created_by: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
}

export interface ModelAccessTable {
  model: string;
  tenant: string;
  role: string;
  created_at: number;
}

export interface UsageTable {
  tenant: string;
  model: string;
  version: number;
  /** The API key's id; '' for none (open mode, internal callers). */
  key_id: string;
  period: number;
  requests: number;
  rows: number;
  compute_ms: number;
  /** Requests that failed for a server-side reason (5xx). */
  errors: number;
  /** Requests refused as invalid (4xx: bad input, unknown model or version). */
  invalid: number;
}

export interface LlmUsageTable {
  tenant: string;
  model: string;
  period: number;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost: number;
}

export interface AuditLogTable {
  id: Generated<number>;
  at: number;
  actor: string;
  tenant: string | null;
  action: string;
  target: string | null;
  status: number;
  ip: string;
  user_agent: string | null;
  request_id: string | null;
  detail: string | null;
}

export interface ExperimentsTable {
  id: string;
  model: string;
  description: string;
  status: string;
  config: string;
  created_by: string;
  created_at: number;
  stopped_at: number | null;
  stop_reason: string | null;
}

export interface ExperimentExposuresTable {
  experiment: string;
  unit: string;
  arm: string;
  first_at: number;
}

export interface ExperimentTrafficTable {
  experiment: string;
  arm: string;
  assignment: string;
  requests: number;
}

export interface ExperimentEventsTable {
  id: Generated<number>;
  experiment: string;
  unit: string;
  metric: string;
  value: number;
  at: number;
}

export interface PredictionLogTable {
  id: Generated<number>;
  at: number;
  model: string;
  version: number;
  tenant: string;
  arm: string | null;
  request_id: string;
  latency_ms: number;
  inputs: string;
  outputs: string;
}

export interface ReferenceProfilesTable {
  model: string;
  version: number;
  profile: string;
  source: string;
  created_by: string;
  created_at: number;
}

export interface DriftReportsTable {
  id: Generated<number>;
  model: string;
  version: number;
  at: number;
  report: string;
}

export interface AlertRulesTable {
  id: string;
  /** The rule as JSON (kind, model, thresholds, webhook, …). */
  rule: string;
  created_by: string;
  created_at: number;
  updated_at: number;
}

export interface AlertEventsTable {
  id: Generated<number>;
  rule: string;
  /** firing | resolved */
  state: string;
  at: number;
  value: number | null;
  message: string;
  /** delivered | failed | none (no webhook) | pending */
  delivery: string;
  delivery_detail: string | null;
}

export interface FeatureDefinitionsTable {
  kind: string;
  name: string;
  revision: number;
  spec: string;
  deleted: number;
  created_by: string;
  created_at: number;
}

export interface FeatureRowsTable {
  view: string;
  entity_key: string;
  event_time: number;
  created_at: number;
  vals: string;
}

export interface BatchFilesTable {
  id: string;
  tenant: string;
  purpose: string;
  filename: string;
  bytes: number;
  created_at: number;
  expires_at: number | null;
}

export interface BatchFilePartsTable {
  file_id: string;
  seq: number;
  data: Uint8Array;
}

export interface BatchJobsTable {
  id: string;
  tenant: string;
  /** 'openai' (a /v1/batches batch) or 'v2'. */
  kind: string;
  status: string;
  /** JSON: what the job runs (endpoint, model, completion window, metadata, ...). */
  spec: string;
  input_file_id: string;
  output_file_id: string | null;
  error_file_id: string | null;
  /** JSON: validation errors ({code, line, message, param}[]), or null. */
  errors: string | null;
  /** Input lines; lines that succeeded and failed (final once the job ends; while it runs, the chunks have them). */
  total: number;
  succeeded: number;
  failed: number;
  /** JSON: the job's token usage once it ended, or null. */
  usage: string | null;
  chunks: number;
  /** Who validates or finalizes the job now (a worker id) and until when (epoch ms). */
  lease_owner: string | null;
  lease_until: number | null;
  /** JSON: status change times, epoch ms ({in_progress_at, finalizing_at, ...}). */
  times: string;
  created_at: number;
  expires_at: number | null;
}

export interface BatchChunksTable {
  job_id: string;
  seq: number;
  first_line: number;
  lines: number;
  /** The chunk's input lines (JSONL). */
  input: string;
  /** pending | running | done */
  state: string;
  lease_owner: string | null;
  lease_until: number | null;
  attempts: number;
  /** Committed with state = done: the output lines and the error lines (JSONL). */
  output: string | null;
  error_output: string | null;
  succeeded: number;
  failed: number;
  /** JSON: the tokens and spend of the chunk's lines, recorded once when it commits. */
  usage: string | null;
  done_by: string | null;
}

export interface DB {
  models: ModelsTable;
  versions: VersionsTable;
  aliases: AliasesTable;
  events: EventsTable;
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  model_access: ModelAccessTable;
  usage: UsageTable;
  llm_usage: LlmUsageTable;
  audit_log: AuditLogTable;
  experiments: ExperimentsTable;
  experiment_exposures: ExperimentExposuresTable;
  experiment_traffic: ExperimentTrafficTable;
  experiment_events: ExperimentEventsTable;
  prediction_log: PredictionLogTable;
  reference_profiles: ReferenceProfilesTable;
  drift_reports: DriftReportsTable;
  alert_rules: AlertRulesTable;
  alert_events: AlertEventsTable;
  feature_definitions: FeatureDefinitionsTable;
  feature_rows: FeatureRowsTable;
  batch_files: BatchFilesTable;
  batch_file_parts: BatchFilePartsTable;
  batch_jobs: BatchJobsTable;
  batch_chunks: BatchChunksTable;
}
