/**
 * @module
 * The metadata store's schema, as one ordered list of migrations shared by SQLite and Postgres (a dialect
 * switch only where the two differ: the events id column). Applied by `openDatabase` through Kysely's Migrator.
 */
import { Migrator, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import { err } from '../errors.js';
import type { DB, Dialect } from './database.js';

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
        events = dialect === 'postgres'
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
  };
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

/** Apply every pending migration; a failure is a configuration error naming the migration. */
export async function migrate(db: Kysely<DB>, dialect: Dialect): Promise<void> {
  const migrator = new Migrator({ db, provider: new InCodeProvider(dialect), migrationTableName: 'sy_migrations', migrationLockTableName: 'sy_migrations_lock' });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? '(migrator)';
    throw err('SY_ERR_CONFIG_INVALID', `metadata store migration ${failed} failed: ${(error as Error).message ?? String(error)}`, { cause: error });
  }
}
