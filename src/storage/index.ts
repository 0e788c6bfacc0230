/**
 * @module
 * The metadata store (SQLite or Postgres through Kysely) and its migrations.
 */
export {
  openDatabase,
  migrationSchema,
  type OpenDatabaseOptions,
  type Database,
  type DB,
  type Dialect,
  type ModelsTable,
  type VersionsTable,
  type AliasesTable,
  type EventsTable,
  type TenantsTable,
  type ApiKeysTable,
  type ModelAccessTable,
  type UsageTable,
  type LlmUsageTable,
  type AuditLogTable,
  type ExperimentsTable,
  type ExperimentExposuresTable,
  type ExperimentTrafficTable,
  type ExperimentEventsTable,
  type PredictionLogTable,
  type ReferenceProfilesTable,
  type DriftReportsTable,
  type AlertRulesTable,
  type AlertEventsTable,
  type FeatureDefinitionsTable,
  type FeatureRowsTable,
  type BatchFilesTable,
  type BatchFilePartsTable,
  type BatchJobsTable,
  type BatchChunksTable,
} from './database.js';
export { migrate, migrations, migrationStatus } from './migrations.js';
export { iso, isUniqueViolation } from './sql.js';
export { PgChannel } from './notify.js';
export { DatabaseHealth, isConnectionFault } from './pg-guard.js';
export { amount, type CounterTable, DAY_MS, HOUR_MS, HourlyCounters, type PeriodRange, type PeriodRow } from './hourly-counters.js';
