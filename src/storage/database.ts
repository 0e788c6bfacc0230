/**
 * @module
 * The metadata store: one Kysely handle over SQLite (`sqlite:PATH`, `sqlite::memory:`) or Postgres
 * (`postgres://…` / `postgresql://…`, optional `?schema=NAME`). Opening applies every pending migration.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { err } from '../errors.js';
import { migrate } from './migrations.js';
import { boundedClientConfig, DatabaseHealth, guardPool } from './pg-guard.js';
import type { Logger } from 'pino';
import type { DB, Dialect } from './schema.js';

export type * from './schema.js';

export interface Database {
  readonly db: Kysely<DB>;
  readonly dialect: Dialect;
  /** Postgres only: connection settings for extra dedicated clients (LISTEN); null on SQLite. */
  readonly pgConfig: pg.ClientConfig | null;
  /** Postgres `?schema=` (null when none, and on SQLite). */
  readonly schema: string | null;
  /** Whether the store answers (SQLite: always). */
  readonly health: DatabaseHealth;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** Postgres: longest a connection attempt or one statement may take, in ms (then 503). Default 5000. */
  readonly timeoutMs?: number;
  readonly logger?: Logger;
  /** Apply pending migrations after opening. Default true (`switchyard migrate --check` opens without). */
  readonly migrate?: boolean;
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
  return { db, dialect: 'sqlite', pgConfig: null, schema: null, health: new DatabaseHealth(), close: () => db.destroy() };
}

async function openPostgres(url: string, opts: OpenDatabaseOptions): Promise<Database> {
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
  const bounded = boundedClientConfig(opts.timeoutMs ?? 5000);
  if (schema !== null) {
    const admin = new pg.Client({ connectionString, ...bounded });
    admin.on('error', () => {
      /* the statement in flight reports it */
    });
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
    ...bounded,
    ...(schema === null ? {} : { options: `-c search_path="${schema}"` }),
  };
  const health = new DatabaseHealth(opts.logger);
  const pool = guardPool(new pg.Pool({ ...pgConfig, max: 10 }), health, opts.logger);
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  return { db, dialect: 'postgres', pgConfig, schema, health, close: () => db.destroy() };
}

/** Where the migrator keeps its tables: the Postgres schema (`public` when none is set); null on SQLite. */
export function migrationSchema(database: Database): string | null {
  return database.dialect === 'postgres' ? (database.schema ?? 'public') : null;
}

/** Open the metadata store named by `url` and bring its schema up to date (unless `migrate` is false). */
export async function openDatabase(url: string, opts: OpenDatabaseOptions = {}): Promise<Database> {
  const s = scheme(url);
  let database: Database;
  if (s === 'sqlite') database = await openSqlite(url);
  else if (s === 'postgres' || s === 'postgresql') database = await openPostgres(url, opts);
  else throw err('SY_ERR_CONFIG_INVALID', `database URL scheme "${s}:" is not supported (use sqlite: or postgres://)`);
  if (opts.migrate === false) return database;
  try {
    await migrate(database.db, database.dialect, migrationSchema(database));
  } catch (e) {
    await database.close().catch(() => undefined);
    throw e;
  }
  return database;
}
