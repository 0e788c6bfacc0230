/**
 * @module
 * The registry's reads, shared by the service's plain reads and its transactions: models with aliases, version
 * rows, row locks, alias history, event queries, the consistent snapshot and the check that a routing policy's
 * targets exist. Also the transaction runner
 * (`BEGIN IMMEDIATE` on SQLite so writers from several processes queue on busy_timeout instead of failing).
 */
import { sql, type Kysely } from 'kysely';
import { err } from '../errors.js';
import type { DB, Dialect, VersionsTable } from '../storage/index.js';
import { eventRecord, modelRecord, parseTime, versionRecord } from './records.js';
import type { RoutingPolicy } from './routing-policy.js';
import type { EventQuery, ModelRecord, RegistryEvent, RegistrySnapshot, VersionRecord } from './types.js';

/** A handle bound to one connection (inside a transaction) or the pool. */
export type Db = Kysely<DB>;

export const DEFAULT_EVENT_LIMIT = 1000;
export const MAX_EVENT_LIMIT = 10_000;

export function notFound(name: string): Error {
  return err('SY_ERR_REGISTRY_NOT_FOUND', `no registered model "${name}"`);
}

/** Run `fn` on one connection inside a transaction; commit when it resolves, roll back when it throws. */
export async function inTransaction<T>(db: Db, dialect: Dialect, fn: (tx: Db) => Promise<T>, mode: 'write' | 'snapshot' = 'write'): Promise<T> {
  const begin =
    dialect === 'sqlite' ? (mode === 'write' ? 'begin immediate' : 'begin') : mode === 'write' ? 'begin' : 'begin isolation level repeatable read read only';
  return db.connection().execute(async (conn) => {
    await sql.raw(begin).execute(conn);
    let out: T;
    try {
      out = await fn(conn);
    } catch (e) {
      await sql
        .raw('rollback')
        .execute(conn)
        .catch(() => undefined);
      throw e;
    }
    await sql.raw('commit').execute(conn);
    return out;
  });
}

export function groupAliases(rows: readonly { model: string; alias: string; version: number }[]): Map<string, Record<string, number>> {
  const out = new Map<string, Record<string, number>>();
  for (const r of rows) {
    const m = out.get(r.model) ?? {};
    m[r.alias] = Number(r.version);
    out.set(r.model, m);
  }
  return out;
}

export async function readModel(db: Db, name: string): Promise<ModelRecord> {
  const row = await db.selectFrom('models').selectAll().where('name', '=', name).executeTakeFirst();
  if (row === undefined) throw notFound(name);
  const aliases = await db.selectFrom('aliases').selectAll().where('model', '=', name).execute();
  return modelRecord(row, groupAliases(aliases).get(name) ?? {});
}

export async function readModels(db: Db): Promise<ModelRecord[]> {
  const models = await db.selectFrom('models').selectAll().orderBy('name').execute();
  const byModel = groupAliases(await db.selectFrom('aliases').selectAll().execute());
  return models.map((m) => modelRecord(m, byModel.get(m.name) ?? {}));
}

/** The model row, locked for the rest of the transaction on Postgres (SQLite transactions hold the write lock). */
export async function lockModel(tx: Db, dialect: Dialect, name: string): Promise<DB['models']> {
  const row = await tx
    .selectFrom('models')
    .selectAll()
    .where('name', '=', name)
    .$if(dialect === 'postgres', (q) => q.forUpdate())
    .executeTakeFirst();
  if (row === undefined) throw notFound(name);
  return row;
}

export async function readVersionRow(db: Db, name: string, version: number): Promise<VersionsTable> {
  const row = await db.selectFrom('versions').selectAll().where('model', '=', name).where('version', '=', version).executeTakeFirst();
  if (row !== undefined) return row;
  await readModel(db, name);
  throw err('SY_ERR_REGISTRY_NOT_FOUND', `model "${name}" has no version ${version}`);
}

/**
 * Insert a new model row unless the name exists; true when inserted. A re-created name continues after the
 * highest version ever created under it (from the event log), so version numbers are never reused.
 */
export async function insertModel(tx: Db, row: DB['models']): Promise<boolean> {
  const prior = await tx
    .selectFrom('events')
    .select((eb) => eb.fn.max('version').as('v'))
    .where('model', '=', row.name)
    .where('type', '=', 'version_created')
    .executeTakeFirst();
  const latest = prior?.v === null || prior?.v === undefined ? 0 : Number(prior.v);
  const made = await tx
    .insertInto('models')
    .values({ ...row, latest_version: latest })
    .onConflict((oc) => oc.column('name').doNothing())
    .returning('name')
    .executeTakeFirst();
  return made !== undefined;
}

export async function readAlias(db: Db, name: string, alias: string): Promise<number | null> {
  const row = await db.selectFrom('aliases').select('version').where('model', '=', name).where('alias', '=', alias).executeTakeFirst();
  return row === undefined ? null : Number(row.version);
}

/** The alias's target at `ms` from the event log: the last move/removal (or model deletion) at or before it. */
export async function readAliasAt(db: Db, name: string, alias: string, ms: number): Promise<number | null> {
  const last = await db
    .selectFrom('events')
    .select(['type', 'to_version'])
    .where('model', '=', name)
    .where('at', '<=', ms)
    .where((eb) => eb.or([eb.and([eb('alias', '=', alias), eb('type', 'in', ['alias_moved', 'alias_removed'])]), eb('type', '=', 'model_deleted')]))
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  return last?.type === 'alias_moved' && last.to_version !== null ? Number(last.to_version) : null;
}

export async function readEvents(db: Db, q: EventQuery): Promise<RegistryEvent[]> {
  const limit = q.limit ?? DEFAULT_EVENT_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 1) throw err('SY_ERR_BAD_REQUEST', `limit must be a positive integer (at most ${MAX_EVENT_LIMIT})`);
  const since = q.since === undefined ? undefined : parseTime(q.since, 'since');
  const until = q.until === undefined ? undefined : parseTime(q.until, 'until');
  const rows = await db
    .selectFrom('events')
    .selectAll()
    .$if(q.model !== undefined, (b) => b.where('model', '=', q.model ?? ''))
    .$if(since !== undefined, (b) => b.where('at', '>=', since ?? 0))
    .$if(until !== undefined, (b) => b.where('at', '<=', until ?? 0))
    .orderBy('id')
    .limit(Math.min(limit, MAX_EVENT_LIMIT))
    .execute();
  return rows.map(eventRecord);
}

export async function readEventsById(db: Db, ids: readonly number[]): Promise<RegistryEvent[]> {
  if (ids.length === 0) return [];
  const rows = await db
    .selectFrom('events')
    .selectAll()
    .where('id', 'in', [...ids])
    .orderBy('id')
    .execute();
  return rows.map(eventRecord);
}

/** Events with ids above `id`, in order (at most MAX_EVENT_LIMIT). */
export async function readEventsAfter(db: Db, id: number): Promise<RegistryEvent[]> {
  const rows = await db.selectFrom('events').selectAll().where('id', '>', id).orderBy('id').limit(MAX_EVENT_LIMIT).execute();
  return rows.map(eventRecord);
}

/** The highest event id (0: none). */
export async function readLastEventId(db: Db): Promise<number> {
  const row = await db
    .selectFrom('events')
    .select((eb) => eb.fn.max('id').as('id'))
    .executeTakeFirst();
  return Number(row?.id ?? 0);
}

/** Every model with aliases and versions (archived included), from one consistent read. */
export async function readSnapshot(db: Db, dialect: Dialect): Promise<RegistrySnapshot> {
  return inTransaction(
    db,
    dialect,
    async (tx) => {
      const models = await readModels(tx);
      const versions = await tx.selectFrom('versions').selectAll().orderBy('model').orderBy('version').execute();
      const byModel = new Map<string, VersionRecord[]>();
      for (const v of versions) {
        const list = byModel.get(v.model) ?? [];
        list.push(versionRecord(v));
        byModel.set(v.model, list);
      }
      return { models: models.map((m) => ({ ...m, versions: byModel.get(m.name) ?? [] })) };
    },
    'snapshot',
  );
}

/** Every version and alias a policy names must exist (an unknown target is a typo, not a plan): 400 naming it. */
export async function checkRoutingTargets(tx: Db, model: string, p: RoutingPolicy): Promise<void> {
  const refs: { where: string; model: string; ref: string | undefined }[] = [
    ...(p.arms ?? []).map((a, i) => ({ where: `arms.${i}.target`, model, ref: a.target })),
    ...(p.shadow ?? []).map((x, i) => ({ where: `shadow.${i}.target`, model, ref: x.target })),
    ...(p.fallback ?? []).map((f, i) => ({ where: `fallback.${i}`, model: f.model ?? model, ref: f.version })),
  ];
  for (const r of refs) {
    if (r.model !== model) {
      const m = await tx.selectFrom('models').select('name').where('name', '=', r.model).executeTakeFirst();
      if (m === undefined) throw err('SY_ERR_BAD_REQUEST', `invalid routing policy: ${r.where}: no registered model "${r.model}"`);
    }
    if (r.ref === undefined) continue;
    if (/^\d+$/.test(r.ref)) {
      const v = await tx.selectFrom('versions').select(['archived_at']).where('model', '=', r.model).where('version', '=', Number(r.ref)).executeTakeFirst();
      if (v === undefined || v.archived_at !== null)
        throw err('SY_ERR_BAD_REQUEST', `invalid routing policy: ${r.where}: model "${r.model}" has no version ${r.ref}${v ? ' (archived)' : ''}`);
    } else if ((await readAlias(tx, r.model, r.ref)) === null) {
      throw err('SY_ERR_BAD_REQUEST', `invalid routing policy: ${r.where}: model "${r.model}" has no alias "${r.ref}"`);
    }
  }
}
