/**
 * @module
 * The metadata store's schema, as one ordered list of migrations shared by SQLite and Postgres (a dialect
 * switch only where the two differ: the events id column). Applied by `openDatabase` through Kysely's Migrator.
 *
 * Longer than our ~500-line guide on purpose: migrations are one append-only, ordered list; splitting it
 * would hide their order.
 */
import { Migrator, sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import { err } from '../errors.js';
import type { DB, Dialect } from './schema.js';

type AnyDb = Kysely<unknown>;

/** Every migration, in order. Names sort lexically; never rename or edit one that has shipped. */
export function migrations(dialect: Dialect): Record<string, Migration> {
  return {
    '0001_registry': {
      async up(db: AnyDb): Promise<void> {
        await db.schema
          .createTable('models')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
          .addColumn('owner', 'text', (c) => c.notNull().defaultTo(''))
          .addColumn('tags', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('load_policy', 'text', (c) => c.notNull().defaultTo('preload'))
          .addColumn('pinned', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('config', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('latest_version', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('updated_at', 'bigint', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('versions')
          .addColumn('model', 'text', (c) => c.notNull().references('models.name').onDelete('cascade'))
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
          .addColumn('artifact_uri', 'text', (c) => c.notNull())
          .addColumn('sha256', 'text', (c) => c.notNull())
          .addColumn('size', 'bigint', (c) => c.notNull())
          .addColumn('signature', 'text')
          .addColumn('metrics', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('params', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('tags', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('lineage', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('status_reason', 'text')
          .addColumn('archived_at', 'bigint')
          .addPrimaryKeyConstraint('versions_pk', ['model', 'version'])
          .execute();
        await db.schema.createIndex('versions_sha256').on('versions').column('sha256').execute();

        await db.schema
          .createTable('aliases')
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('alias', 'text', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('updated_at', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('aliases_pk', ['model', 'alias'])
          .addForeignKeyConstraint('aliases_version_fk', ['model', 'version'], 'versions', ['model', 'version'], (fk) => fk.onDelete('cascade'))
          .execute();

        let events = db.schema.createTable('events');
        events =
          dialect === 'postgres'
            ? events.addColumn('id', 'bigserial', (c) => c.primaryKey())
            : events.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
        await events
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('version', 'integer')
          .addColumn('alias', 'text')
          .addColumn('from_version', 'integer')
          .addColumn('to_version', 'integer')
          .addColumn('key', 'text')
          .addColumn('value', 'text')
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('at', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('events_model_at').on('events').columns(['model', 'at']).execute();
        await db.schema.createIndex('events_model_alias_at').on('events').columns(['model', 'alias', 'at']).execute();
        await db.schema.createIndex('events_at').on('events').column('at').execute();
      },
      async down(db: AnyDb): Promise<void> {
        for (const t of ['events', 'aliases', 'versions', 'models']) await db.schema.dropTable(t).ifExists().execute();
      },
    },
    '0002_tenancy': {
      async up(db: AnyDb): Promise<void> {
        await db.schema
          .createTable('tenants')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
          .addColumn('tier', 'text', (c) => c.notNull())
          .addColumn('weight', 'real', (c) => c.notNull().defaultTo(1))
          .addColumn('limits', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('disabled', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('updated_at', 'bigint', (c) => c.notNull())
          .execute();

        // tenant NULL: a platform admin key.
        await db.schema
          .createTable('api_keys')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('tenant', 'text', (c) => c.references('tenants.name').onDelete('cascade'))
          .addColumn('name', 'text', (c) => c.notNull().defaultTo(''))
          .addColumn('hash', 'text', (c) => c.notNull())
          .addColumn('scopes', 'text', (c) => c.notNull())
          .addColumn('limits', 'text')
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint')
          .addColumn('revoked_at', 'bigint')
          .execute();
        await db.schema.createIndex('api_keys_tenant').on('api_keys').column('tenant').execute();

        // role: 'owner' (at most one per model) or 'shared'.
        await db.schema
          .createTable('model_access')
          .addColumn('model', 'text', (c) => c.notNull().references('models.name').onDelete('cascade'))
          // A tenant name or '*' (shared with every tenant), hence no foreign key; deleting a tenant deletes its rows.
          .addColumn('tenant', 'text', (c) => c.notNull())
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('model_access_pk', ['model', 'tenant'])
          .execute();
        await db.schema.createIndex('model_access_tenant').on('model_access').column('tenant').execute();

        // Usage per tenant ('' = unauthenticated / platform), model, version and hour (period = hour start, epoch ms).
        await db.schema
          .createTable('usage')
          .addColumn('tenant', 'text', (c) => c.notNull())
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('period', 'bigint', (c) => c.notNull())
          .addColumn('requests', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('rows', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('compute_ms', 'double precision', (c) => c.notNull().defaultTo(0))
          .addColumn('errors', 'bigint', (c) => c.notNull().defaultTo(0))
          .addPrimaryKeyConstraint('usage_pk', ['tenant', 'model', 'version', 'period'])
          .execute();
        await db.schema.createIndex('usage_period').on('usage').column('period').execute();

        let audit = db.schema.createTable('audit_log');
        audit =
          dialect === 'postgres'
            ? audit.addColumn('id', 'bigserial', (c) => c.primaryKey())
            : audit.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
        await audit
          .addColumn('at', 'bigint', (c) => c.notNull())
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('tenant', 'text')
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('target', 'text')
          .addColumn('status', 'integer', (c) => c.notNull())
          .addColumn('ip', 'text', (c) => c.notNull())
          .addColumn('user_agent', 'text')
          .addColumn('request_id', 'text')
          .addColumn('detail', 'text')
          .execute();
        await db.schema.createIndex('audit_log_at').on('audit_log').column('at').execute();
        await db.schema.createIndex('audit_log_tenant_at').on('audit_log').columns(['tenant', 'at']).execute();
        // Append-only, enforced by the database itself.
        if (dialect === 'postgres') {
          await sql`CREATE FUNCTION sy_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$`.execute(
            db,
          );
          await sql`CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION sy_audit_append_only()`.execute(db);
        } else {
          await sql`CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END`.execute(db);
          await sql`CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END`.execute(db);
        }
      },
      async down(db: AnyDb): Promise<void> {
        for (const t of ['audit_log', 'usage', 'model_access', 'api_keys', 'tenants']) await db.schema.dropTable(t).ifExists().execute();
        if (dialect === 'postgres') await sql`DROP FUNCTION IF EXISTS sy_audit_append_only()`.execute(db);
      },
    },
    '0003_routing': {
      async up(db: AnyDb): Promise<void> {
        // The model's traffic policy (JSON, null = none) and its revision (bumped by every change).
        await db.schema.alterTable('models').addColumn('routing', 'text').execute();
        await db.schema
          .alterTable('models')
          .addColumn('routing_revision', 'integer', (c) => c.notNull().defaultTo(0))
          .execute();

        await db.schema
          .createTable('experiments')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
          // running | stopped | rolled_back
          .addColumn('status', 'text', (c) => c.notNull())
          // JSON: arms (name, target, weight) as bound at creation, control arm, guardrails.
          .addColumn('config', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('stopped_at', 'bigint')
          .addColumn('stop_reason', 'text')
          .execute();
        await db.schema.createIndex('experiments_model').on('experiments').column('model').execute();

        // First exposure of each unit (routing key) to an arm; a unit stays in the arm it was first exposed to.
        await db.schema
          .createTable('experiment_exposures')
          .addColumn('experiment', 'text', (c) => c.notNull().references('experiments.id').onDelete('cascade'))
          .addColumn('unit', 'text', (c) => c.notNull())
          .addColumn('arm', 'text', (c) => c.notNull())
          .addColumn('first_at', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('experiment_exposures_pk', ['experiment', 'unit'])
          .execute();
        await db.schema.createIndex('experiment_exposures_arm').on('experiment_exposures').columns(['experiment', 'arm']).execute();

        // Requests routed per arm, by how they were assigned: 'hash' (routing key) or 'random' (no key).
        await db.schema
          .createTable('experiment_traffic')
          .addColumn('experiment', 'text', (c) => c.notNull().references('experiments.id').onDelete('cascade'))
          .addColumn('arm', 'text', (c) => c.notNull())
          .addColumn('assignment', 'text', (c) => c.notNull())
          .addColumn('requests', 'bigint', (c) => c.notNull().defaultTo(0))
          .addPrimaryKeyConstraint('experiment_traffic_pk', ['experiment', 'arm', 'assignment'])
          .execute();

        let events = db.schema.createTable('experiment_events');
        events =
          dialect === 'postgres'
            ? events.addColumn('id', 'bigserial', (c) => c.primaryKey())
            : events.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
        await events
          .addColumn('experiment', 'text', (c) => c.notNull().references('experiments.id').onDelete('cascade'))
          .addColumn('unit', 'text', (c) => c.notNull())
          .addColumn('metric', 'text', (c) => c.notNull())
          .addColumn('value', 'double precision', (c) => c.notNull())
          .addColumn('at', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('experiment_events_metric_unit').on('experiment_events').columns(['experiment', 'metric', 'unit']).execute();
      },
      async down(db: AnyDb): Promise<void> {
        for (const t of ['experiment_events', 'experiment_traffic', 'experiment_exposures', 'experiments']) await db.schema.dropTable(t).ifExists().execute();
        await db.schema.alterTable('models').dropColumn('routing_revision').execute();
        await db.schema.alterTable('models').dropColumn('routing').execute();
      },
    },
    '0004_monitoring': {
      async up(db: AnyDb): Promise<void> {
        // Sampled predictions: inputs/outputs as JSON tensors ({name, datatype, shape, data}[]).
        let log = db.schema.createTable('prediction_log');
        log =
          dialect === 'postgres'
            ? log.addColumn('id', 'bigserial', (c) => c.primaryKey())
            : log.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
        await log
          .addColumn('at', 'bigint', (c) => c.notNull())
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('tenant', 'text', (c) => c.notNull())
          .addColumn('arm', 'text')
          .addColumn('request_id', 'text', (c) => c.notNull())
          .addColumn('latency_ms', 'double precision', (c) => c.notNull())
          .addColumn('inputs', 'text', (c) => c.notNull())
          .addColumn('outputs', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('prediction_log_model_at').on('prediction_log').columns(['model', 'version', 'at']).execute();
        await db.schema.createIndex('prediction_log_at').on('prediction_log').column('at').execute();

        // The drift reference of a model version (JSON profile: per-feature bins/counts, categories, ranges).
        await db.schema
          .createTable('reference_profiles')
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('profile', 'text', (c) => c.notNull())
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('reference_profiles_pk', ['model', 'version'])
          .execute();

        // Drift reports as computed at the end of each evaluation (history).
        let drift = db.schema.createTable('drift_reports');
        drift =
          dialect === 'postgres'
            ? drift.addColumn('id', 'bigserial', (c) => c.primaryKey())
            : drift.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
        await drift
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('at', 'bigint', (c) => c.notNull())
          .addColumn('report', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('drift_reports_model_at').on('drift_reports').columns(['model', 'version', 'at']).execute();

        await db.schema
          .createTable('alert_rules')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('rule', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('updated_at', 'bigint', (c) => c.notNull())
          .execute();

        let alerts = db.schema.createTable('alert_events');
        alerts =
          dialect === 'postgres'
            ? alerts.addColumn('id', 'bigserial', (c) => c.primaryKey())
            : alerts.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
        await alerts
          .addColumn('rule', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('at', 'bigint', (c) => c.notNull())
          .addColumn('value', 'double precision')
          .addColumn('message', 'text', (c) => c.notNull())
          .addColumn('delivery', 'text', (c) => c.notNull())
          .addColumn('delivery_detail', 'text')
          .execute();
        await db.schema.createIndex('alert_events_rule_at').on('alert_events').columns(['rule', 'at']).execute();
      },
      async down(db: AnyDb): Promise<void> {
        for (const t of ['alert_events', 'alert_rules', 'drift_reports', 'reference_profiles', 'prediction_log'])
          await db.schema.dropTable(t).ifExists().execute();
      },
    },
    '0005_features': {
      async up(db: AnyDb): Promise<void> {
        // Every revision of every feature store definition (entity, view, service); the highest revision is current,
        // a revision with deleted = 1 removes the definition.
        await db.schema
          .createTable('feature_definitions')
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('revision', 'integer', (c) => c.notNull())
          .addColumn('spec', 'text', (c) => c.notNull())
          .addColumn('deleted', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('feature_definitions_pk', ['kind', 'name', 'revision'])
          .execute();

        // Offline history of pushed feature rows. (view, entity, event time) is unique: a retried push inserts
        // nothing twice. created_at is when the row became known, for point-in-time joins that exclude later writes.
        await db.schema
          .createTable('feature_rows')
          .addColumn('view', 'text', (c) => c.notNull())
          .addColumn('entity_key', 'text', (c) => c.notNull())
          .addColumn('event_time', 'bigint', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('vals', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('feature_rows_pk', ['view', 'entity_key', 'event_time'])
          .execute();
      },
      async down(db: AnyDb): Promise<void> {
        for (const t of ['feature_rows', 'feature_definitions']) await db.schema.dropTable(t).ifExists().execute();
      },
    },
    '0006_llm_usage': {
      async up(db: AnyDb): Promise<void> {
        // LLM API usage per tenant ('' = unauthenticated / platform), model and hour (period = hour start, epoch ms);
        // cost in the currency of the model catalog's prices.
        await db.schema
          .createTable('llm_usage')
          .addColumn('tenant', 'text', (c) => c.notNull())
          .addColumn('model', 'text', (c) => c.notNull())
          .addColumn('period', 'bigint', (c) => c.notNull())
          .addColumn('requests', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('errors', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('prompt_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('completion_tokens', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('cost', 'double precision', (c) => c.notNull().defaultTo(0))
          .addPrimaryKeyConstraint('llm_usage_pk', ['tenant', 'model', 'period'])
          .execute();
        await db.schema.createIndex('llm_usage_period').on('llm_usage').column('period').execute();
      },
      async down(db: AnyDb): Promise<void> {
        await db.schema.dropTable('llm_usage').ifExists().execute();
      },
    },
    '0007_batch': {
      async up(db: AnyDb): Promise<void> {
        // Batch files (OpenAI /v1/files and batch outputs): metadata here, content in batch_file_parts (so every
        // replica sharing the store can read every file). Times are epoch ms.
        await db.schema
          .createTable('batch_files')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('tenant', 'text', (c) => c.notNull())
          .addColumn('purpose', 'text', (c) => c.notNull())
          .addColumn('filename', 'text', (c) => c.notNull())
          .addColumn('bytes', 'bigint', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint')
          .execute();
        await db.schema.createIndex('batch_files_tenant').on('batch_files').columns(['tenant', 'created_at']).execute();
        await db.schema
          .createTable('batch_file_parts')
          .addColumn('file_id', 'text', (c) => c.notNull().references('batch_files.id').onDelete('cascade'))
          .addColumn('seq', 'integer', (c) => c.notNull())
          .addColumn('data', dialect === 'postgres' ? 'bytea' : 'blob', (c) => c.notNull())
          .addPrimaryKeyConstraint('batch_file_parts_pk', ['file_id', 'seq'])
          .execute();
        // Batch jobs: the record (state, times, counts of lines) and, per chunk of input lines, a leased unit of
        // work whose output is committed with its completion.
        await db.schema
          .createTable('batch_jobs')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('tenant', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('spec', 'text', (c) => c.notNull())
          .addColumn('input_file_id', 'text', (c) => c.notNull())
          .addColumn('output_file_id', 'text')
          .addColumn('error_file_id', 'text')
          .addColumn('errors', 'text')
          .addColumn('total', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('succeeded', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('failed', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('usage', 'text')
          .addColumn('chunks', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('lease_owner', 'text')
          .addColumn('lease_until', 'bigint')
          .addColumn('times', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint')
          .execute();
        await db.schema.createIndex('batch_jobs_tenant').on('batch_jobs').columns(['tenant', 'created_at']).execute();
        await db.schema.createIndex('batch_jobs_status').on('batch_jobs').column('status').execute();
        await db.schema
          .createTable('batch_chunks')
          .addColumn('job_id', 'text', (c) => c.notNull().references('batch_jobs.id').onDelete('cascade'))
          .addColumn('seq', 'integer', (c) => c.notNull())
          .addColumn('first_line', 'integer', (c) => c.notNull())
          .addColumn('lines', 'integer', (c) => c.notNull())
          .addColumn('input', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('lease_owner', 'text')
          .addColumn('lease_until', 'bigint')
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('output', 'text')
          .addColumn('error_output', 'text')
          .addColumn('succeeded', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('failed', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('usage', 'text')
          .addColumn('done_by', 'text')
          .addPrimaryKeyConstraint('batch_chunks_pk', ['job_id', 'seq'])
          .execute();
        await db.schema.createIndex('batch_chunks_state').on('batch_chunks').columns(['state', 'lease_until']).execute();
      },
      async down(db: AnyDb): Promise<void> {
        for (const t of ['batch_chunks', 'batch_jobs', 'batch_file_parts', 'batch_files']) await db.schema.dropTable(t).ifExists().execute();
      },
    },
    '0008_usage_invalid': {
      async up(db: AnyDb): Promise<void> {
        // Requests refused as invalid input (4xx) counted apart from server errors (5xx).
        await db.schema
          .alterTable('usage')
          .addColumn('invalid', 'bigint', (c) => c.notNull().defaultTo(0))
          .execute();
      },
      async down(db: AnyDb): Promise<void> {
        await db.schema.alterTable('usage').dropColumn('invalid').execute();
      },
    },
    '0009_usage_key': {
      async up(db: AnyDb): Promise<void> {
        // Usage per API key too ('' = no key: open mode, internal callers), for per-key breakdowns. The key is part
        // of the primary key, which SQLite cannot alter: the table is rebuilt (the same way on both dialects);
        // existing rows move over with key ''.
        await rebuildUsage(db, true);
      },
      async down(db: AnyDb): Promise<void> {
        await rebuildUsage(db, false);
      },
    },
  };
}

/** Rebuild `usage` with (`withKey`) or without the `key_id` column in its primary key; rows are summed per new key. */
async function rebuildUsage(db: AnyDb, withKey: boolean): Promise<void> {
  let t = db.schema
    .createTable('usage_next')
    .addColumn('tenant', 'text', (c) => c.notNull())
    .addColumn('model', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull());
  if (withKey) t = t.addColumn('key_id', 'text', (c) => c.notNull().defaultTo(''));
  await t
    .addColumn('period', 'bigint', (c) => c.notNull())
    .addColumn('requests', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('rows', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('compute_ms', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('errors', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('invalid', 'bigint', (c) => c.notNull().defaultTo(0))
    // A new constraint name: on Postgres the old table's usage_pk index still exists until it is dropped.
    .addPrimaryKeyConstraint(
      withKey ? 'usage_key_pk' : 'usage_pk',
      (withKey ? ['tenant', 'model', 'version', 'key_id', 'period'] : ['tenant', 'model', 'version', 'period']) as never,
    )
    .execute();
  const keys = sql.join(['tenant', 'model', 'version', 'period'].map((c) => sql.ref(c)));
  const counters = ['requests', 'rows', 'compute_ms', 'errors', 'invalid'].map((c) => sql.ref(c));
  await (
    withKey
      ? sql`insert into usage_next (${keys}, key_id, ${sql.join(counters)}) select ${keys}, '', ${sql.join(counters)} from usage`
      : sql`insert into usage_next (${keys}, ${sql.join(counters)}) select ${keys}, ${sql.join(counters.map((c) => sql`sum(${c})`))} from usage group by ${keys}`
  ).execute(db);
  await db.schema.dropTable('usage').execute();
  await db.schema.alterTable('usage_next').renameTo('usage').execute();
  await db.schema.createIndex('usage_period').on('usage').column('period').execute();
}

class InCodeProvider implements MigrationProvider {
  readonly #dialect: Dialect;
  constructor(dialect: Dialect) {
    this.#dialect = dialect;
  }
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations(this.#dialect);
  }
}

function migrator(db: Kysely<DB>, dialect: Dialect, schema: string | null): Migrator {
  return new Migrator({
    db,
    provider: new InCodeProvider(dialect),
    migrationTableName: 'sy_migrations',
    migrationLockTableName: 'sy_migrations_lock',
    // Kysely looks for its tables across every schema unless told which: without this, another schema's
    // migration tables on the same database would be taken for ours.
    ...(schema === null ? {} : { migrationTableSchema: schema }),
  });
}

/**
 * Apply every pending migration (Postgres: in `schema`, when one is set) and return the names applied; a
 * failure is a configuration error naming the migration. Safe to run from several processes at once: the
 * migrator holds a lock table while it works.
 */
export async function migrate(db: Kysely<DB>, dialect: Dialect, schema: string | null = null): Promise<string[]> {
  const { error, results } = await migrator(db, dialect, schema).migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? '(migrator)';
    throw err('SY_ERR_CONFIG_INVALID', `metadata store migration ${failed} failed: ${(error as Error).message ?? String(error)}`, { cause: error });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Every migration in order, with whether the store has it applied (nothing is changed). */
export async function migrationStatus(db: Kysely<DB>, dialect: Dialect, schema: string | null = null): Promise<{ name: string; applied: boolean }[]> {
  const all = await migrator(db, dialect, schema).getMigrations();
  return all.map((m) => ({ name: m.name, applied: m.executedAt !== undefined }));
}
