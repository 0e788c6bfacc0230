/**
 * @module
 * The metadata store: one Kysely handle over SQLite (`sqlite:PATH`, `sqlite::memory:`) or Postgres
 * (`postgres://…` / `postgresql://…`, optional `?schema=NAME`). Opening applies every pending migration.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, type Generated } from 'kysely';
import pg from 'pg';
import { err } from '../errors.js';
import { migrate } from './migrations.js';

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
  period: number;
  requests: number;
  rows: number;
  compute_ms: number;
  errors: number;
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
}

export interface Database {
  readonly db: Kysely<DB>;
  readonly dialect: Dialect;
  /** Postgres only: connection settings for extra dedicated clients (LISTEN); null on SQLite. */
  readonly pgConfig: pg.ClientConfig | null;
  /** Postgres `?schema=` (null when none, and on SQLite). */
  readonly schema: string | null;
  close(): Promise<void>;
}

const SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
const PG_INT8_OID = 20;

/** Per-pool type parsers: int8/bigint as JS numbers (epoch ms, sizes and ids fit in 2^53). */
const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === PG_INT8_OID && format !== 'binary'
      ? (v: string) => Number(v)
      : (pg.types.getTypeParser as (o: number, f?: string) => unknown)(oid, format)) as pg.CustomTypesConfig['getTypeParser'],
};

function scheme(url: string): string {
  const i = url.indexOf(':');
  return i < 0 ? '(none)' : url.slice(0, i);
}

async function openSqlite(url: string): Promise<Database> {
  const target = url.slice('sqlite:'.length);
  if (target === '') throw err('SY_ERR_CONFIG_INVALID', `database URL "${url}": sqlite URL needs a file path or :memory:`);
  const memory = target === ':memory:';
  const file = memory ? ':memory:' : resolve(target.startsWith('//') ? target.slice(2) : target);
  if (!memory) mkdirSync(dirname(file), { recursive: true });
  const sqlite = new BetterSqlite3(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('synchronous = NORMAL');
  const db = new Kysely<DB>({ dialect: new SqliteDialect({ database: sqlite }) });
  return { db, dialect: 'sqlite', pgConfig: null, schema: null, close: () => db.destroy() };
}

async function openPostgres(url: string): Promise<Database> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw err('SY_ERR_CONFIG_INVALID', `database URL is not a valid postgres URL`);
  }
  const schema = parsed.searchParams.get('schema');
  parsed.searchParams.delete('schema');
  if (schema !== null && !SCHEMA_NAME.test(schema)) {
    throw err('SY_ERR_CONFIG_INVALID', `database URL: schema "${schema}" must match ${SCHEMA_NAME.source}`);
  }
  const connectionString = parsed.toString();
  if (schema !== null) {
    const admin = new pg.Client({ connectionString });
    await admin.connect();
    try {
      await admin.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    } catch (e) {
      // Two processes creating the same schema at once: the loser sees a unique violation; the schema exists.
      if ((e as { code?: string }).code !== '23505') throw e;
    } finally {
      await admin.end();
    }
  }
  const pgConfig: pg.ClientConfig = {
    connectionString,
    types: pgTypes,
    ...(schema === null ? {} : { options: `-c search_path="${schema}"` }),
  };
  const pool = new pg.Pool({ ...pgConfig, max: 10 });
  pool.on('error', () => { /* idle client errors surface on the next query */ });
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  return { db, dialect: 'postgres', pgConfig, schema, close: () => db.destroy() };
}

/** Open the metadata store named by `url` and bring its schema up to date. */
export async function openDatabase(url: string): Promise<Database> {
  const s = scheme(url);
  let database: Database;
  if (s === 'sqlite') database = await openSqlite(url);
  else if (s === 'postgres' || s === 'postgresql') database = await openPostgres(url);
  else throw err('SY_ERR_CONFIG_INVALID', `database URL scheme "${s}:" is not supported (use sqlite: or postgres://)`);
  try {
    await migrate(database.db, database.dialect, database.dialect === 'postgres' ? database.schema ?? 'public' : null);
  } catch (e) {
    await database.close().catch(() => undefined);
    throw e;
  }
  return database;
}
