/**
 * @module
 * The prediction log's database sink: the metadata store's `prediction_log` table, written by a worker thread
 * when the store is SQLite on disk (or in-process otherwise), pruned by age in short DELETE statements.
 */
import { Worker } from 'node:worker_threads';
import { sql, type Insertable, type Kysely, type Selectable } from 'kysely';
import { err } from '../errors.js';
import type { Database, DB, Dialect, PredictionLogTable } from '../storage/index.js';
import { bytesText } from '../tensor/index.js';
import {
  epochMs,
  normalizeQuery,
  packTensorJson,
  toRecord,
  unpackTensor,
  type BufferedPrediction,
  type BufferedTensor,
  type PredictionQuery,
  type PredictionSink,
} from './prediction-record.js';
import type { BufferedBatch, FromWriter, SqlValue, ToWriter, WireValue, WriterInit } from './writer-protocol.js';
import type { PredictionRecord, TensorJson } from './types.js';

/** Rows per INSERT: 9 parameters each = 900, under SQLite's smallest parameter limit (999). */
const INSERT_CHUNK = 100;
/** Rows per DELETE statement when pruning (short statements: writers are not held up). */
const DELETE_CHUNK = 10_000;
const WRITER_URL = new URL('./prediction-log-worker.js', import.meta.url);

function parseTensors(text: string): TensorJson[] {
  try {
    const v: unknown = JSON.parse(text);
    return Array.isArray(v) ? (v as TensorJson[]).map(unpackTensor) : [];
  } catch {
    return [];
  }
}

/** A record as its `prediction_log` row: numeric tensors packed, tensors as JSON text. */
export function predictionRow(r: PredictionRecord): Insertable<PredictionLogTable> {
  return {
    at: epochMs(r),
    model: r.model,
    version: r.version,
    tenant: r.tenant,
    arm: r.arm,
    request_id: r.requestId,
    latency_ms: r.latencyMs,
    inputs: JSON.stringify(r.inputs.map(packTensorJson)),
    outputs: JSON.stringify(r.outputs.map(packTensorJson)),
  };
}

/** The `prediction_log` columns of a record, in the order {@link flatRows} lists them. */
export const PREDICTION_COLUMNS = ['at', 'model', 'version', 'tenant', 'arm', 'request_id', 'latency_ms', 'inputs', 'outputs'] as const;

/** Records as their rows' values, one flat list (PREDICTION_COLUMNS per record): a cheap message to post. */
export function flatRows(records: readonly PredictionRecord[]): SqlValue[] {
  const out = new Array<SqlValue>(records.length * PREDICTION_COLUMNS.length);
  let i = 0;
  for (const rec of records) {
    const row = predictionRow(rec);
    for (const c of PREDICTION_COLUMNS) out[i++] = row[c] ?? null;
  }
  return out;
}

function fromRow(r: Selectable<PredictionLogTable>): PredictionRecord {
  return {
    at: new Date(Number(r.at)).toISOString(),
    model: r.model,
    version: Number(r.version),
    tenant: r.tenant,
    arm: r.arm,
    requestId: r.request_id,
    latencyMs: Number(r.latency_ms),
    inputs: parseTensors(r.inputs),
    outputs: parseTensors(r.outputs),
  };
}

const align8 = (n: number): number => (n + 7) & ~7;

/** Buffered predictions as a {@link BufferedBatch}: numeric tensor elements copied into one transferable buffer. */
function encodeBuffered(batch: readonly BufferedPrediction[]): BufferedBatch {
  let size = 0;
  for (const p of batch) {
    for (const t of p.inputs) if ('tensor' in t && !Array.isArray(t.tensor.data)) size += align8(t.tensor.data.byteLength);
    for (const t of p.outputs) if ('tensor' in t && !Array.isArray(t.tensor.data)) size += align8(t.tensor.data.byteLength);
  }
  const bytes = new Uint8Array(size);
  const meta: WireValue[] = [];
  let offset = 0;
  const put = (list: readonly BufferedTensor[]): void => {
    meta.push(list.length);
    for (const t of list) {
      if (!('tensor' in t)) {
        meta.push(t);
        continue;
      }
      const { dtype, shape, data } = t.tensor;
      meta.push(t.name, dtype.v2, shape.length, ...shape);
      if (Array.isArray(data)) {
        meta.push(data.map(bytesText)); // text crosses to the writer thread (a view would copy its whole buffer)
      } else {
        bytes.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
        meta.push(offset, data.length);
        offset += align8(data.byteLength);
      }
    }
  };
  for (const p of batch) {
    meta.push(p.at, p.model, p.version, p.tenant, p.arm, p.requestId, p.latencyMs);
    put(p.inputs);
    put(p.outputs);
  }
  return { meta, bytes: bytes.buffer };
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

/**
 * The main-thread end of the SQLite writer thread (prediction-log-worker.ts): one thread, started at the first
 * write and again at the next write after it died. A write resolves once its batch is committed and rejects with
 * the thread's error; writes pending when the thread dies are rejected. The thread keeps the process alive only
 * while a write or `close` is pending.
 */
class SqliteWriter {
  readonly #file: string;
  #worker: Worker | null = null;
  #nextId = 0;
  readonly #pending = new Map<number, Waiter>();

  constructor(file: string) {
    this.#file = file;
  }

  write(records: readonly PredictionRecord[]): Promise<void> {
    return this.#send((id) => ({ id, rows: flatRows(records) }), []);
  }

  writeBuffered(batch: readonly BufferedPrediction[]): Promise<void> {
    const buffered = encodeBuffered(batch);
    return this.#send((id) => ({ id, buffered }), [buffered.bytes]);
  }

  /** After the writes sent so far: the thread closes its connection and ends. */
  async close(): Promise<void> {
    const worker = this.#worker;
    if (worker === null) return;
    this.#worker = null;
    worker.ref();
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    worker.postMessage({ id: null } satisfies ToWriter);
    await exited;
  }

  #send(message: (id: number) => ToWriter, transfer: ArrayBuffer[]): Promise<void> {
    const worker = this.#worker ?? this.#start();
    const id = this.#nextId++;
    return new Promise<void>((resolve, reject) => {
      if (this.#pending.size === 0) worker.ref();
      this.#pending.set(id, { resolve, reject });
      try {
        worker.postMessage(message(id), transfer);
      } catch (e) {
        this.#settle(worker, id, e as Error);
      }
    });
  }

  #start(): Worker {
    const worker = new Worker(WRITER_URL, { workerData: { file: this.#file } satisfies WriterInit });
    worker.unref();
    let failure: Error | null = null;
    worker.on('message', (m: FromWriter) => this.#settle(worker, m.id, m.error === null ? null : err(m.error.code, m.error.message)));
    worker.on('error', (e) => {
      failure = e;
    });
    worker.on('exit', (code) => {
      if (this.#worker === worker) this.#worker = null;
      const why = failure === null ? `exited (code ${code})` : `failed: ${failure.message}`;
      const e = err(
        'SY_ERR_INTERNAL',
        `prediction log: the SQLite writer thread ${why}; the write was not committed`,
        failure === null ? {} : { cause: failure },
      );
      for (const id of [...this.#pending.keys()]) this.#settle(worker, id, e);
    });
    this.#worker = worker;
    return worker;
  }

  #settle(worker: Worker, id: number, error: Error | null): void {
    const w = this.#pending.get(id);
    if (w === undefined) return;
    this.#pending.delete(id);
    if (this.#pending.size === 0) worker.unref();
    if (error === null) w.resolve();
    else w.reject(error);
  }
}

/** The database's file when it is SQLite on disk (another connection can open it), else null. */
async function sqliteFile(db: Kysely<DB>, dialect: Dialect): Promise<string | null> {
  if (dialect !== 'sqlite') return null;
  const { rows } = await sql<{ name: string; file: string }>`PRAGMA database_list`.execute(db);
  const file = rows.find((r) => r.name === 'main')?.file ?? '';
  return file === '' ? null : file;
}

/**
 * The `prediction_log` table (SQLite or Postgres). A batch is inserted in one transaction; numeric tensors are
 * stored packed (base64 of their element bytes) and unpacked on query; queries use the (model, version, at) and
 * (at) indexes. On SQLite with a file, batches go to a writer thread with its own connection, which also converts
 * the log's buffered records (`writeBuffered`: packing, JSON), so the event loop waits on neither; queries and
 * prunes stay on the caller's connection (WAL: they see what the thread committed). In-memory SQLite and Postgres
 * insert on the caller's connection (multi-row INSERTs of 100 rows). `close` waits for the writes begun before
 * it, ends the writer thread and leaves the database open (the caller owns it); later writes are refused.
 */
export class DatabasePredictionSink implements PredictionSink {
  readonly kind = 'database' as const;
  readonly #db: Kysely<DB>;
  readonly #dialect: Dialect;
  /** Resolved at the first write: the writer thread, or null (insert on the caller's connection). */
  #writer: Promise<SqliteWriter | null> | null = null;
  /** Settles once every write begun so far has (`close` waits for it). */
  #writes: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(database: Database) {
    this.#db = database.db;
    this.#dialect = database.dialect;
  }

  write(batch: readonly PredictionRecord[]): Promise<void> {
    return this.#begin(batch.length, (writer) => (writer === null ? this.#insert(batch.map(predictionRow)) : writer.write(batch)));
  }

  /** The writer thread converts the batch (packing, JSON) too; without it, converted here. */
  writeBuffered(batch: readonly BufferedPrediction[]): Promise<void> {
    return this.#begin(batch.length, (writer) => (writer === null ? this.#insert(batch.map((p) => predictionRow(toRecord(p)))) : writer.writeBuffered(batch)));
  }

  async #insert(rows: readonly Insertable<PredictionLogTable>[]): Promise<void> {
    if (rows.length <= INSERT_CHUNK) {
      await this.#db.insertInto('prediction_log').values(rows).execute();
      return;
    }
    await this.#db.transaction().execute(async (tx) => {
      for (let i = 0; i < rows.length; i += INSERT_CHUNK)
        await tx
          .insertInto('prediction_log')
          .values(rows.slice(i, i + INSERT_CHUNK))
          .execute();
    });
  }

  /** Ascending by `at` (then insertion order), the first `limit`. */
  async query(q: PredictionQuery): Promise<PredictionRecord[]> {
    const n = normalizeQuery(q);
    if (n.limit === 0) return [];
    let sel = this.#db.selectFrom('prediction_log').selectAll();
    if (n.model !== undefined) sel = sel.where('model', '=', n.model);
    if (n.version !== undefined) sel = sel.where('version', '=', n.version);
    // `at` is an integer column: bind integers (Postgres refuses a fractional bigint parameter).
    if (n.since !== undefined) sel = sel.where('at', '>=', Math.ceil(n.since));
    if (n.until !== undefined) sel = sel.where('at', '<=', Math.floor(n.until));
    const rows = await sel.orderBy('at').orderBy('id').limit(n.limit).execute();
    return rows.map(fromRow);
  }

  /** Deletes rows with `at` < cutoff, 10000 per statement; returns how many. */
  async prune(olderThanMs: number): Promise<number> {
    if (typeof olderThanMs !== 'number' || Number.isNaN(olderThanMs))
      throw err('SY_ERR_BAD_REQUEST', 'prediction log prune: cutoff must be epoch milliseconds');
    if (olderThanMs === -Infinity) return 0;
    let total = 0;
    for (;;) {
      let victims = this.#db.selectFrom('prediction_log').select('id').limit(DELETE_CHUNK);
      if (olderThanMs !== Infinity) victims = victims.where('at', '<', Math.ceil(olderThanMs));
      const r = await this.#db.deleteFrom('prediction_log').where('id', 'in', victims).executeTakeFirst();
      const n = Number(r.numDeletedRows);
      total += n;
      if (n < DELETE_CHUNK) return total;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#writes;
    // The database belongs to the caller.
    if (this.#writer !== null) await (await this.#writer.catch(() => null))?.close();
  }

  /** A write, refused once closing; `close` waits for the ones begun before it. */
  #begin(rows: number, write: (writer: SqliteWriter | null) => Promise<void>): Promise<void> {
    if (this.#closed) return Promise.reject(err('SY_ERR_INTERNAL', 'prediction log (database): sink is closed'));
    if (rows === 0) return Promise.resolve();
    const done = this.#resolveWriter().then(write);
    this.#writes = Promise.allSettled([this.#writes, done]);
    return done;
  }

  #resolveWriter(): Promise<SqliteWriter | null> {
    if (this.#writer === null) {
      this.#writer = sqliteFile(this.#db, this.#dialect).then((file) => (file === null ? null : new SqliteWriter(file)));
      // A failed lookup (database closed?) is tried again at the next write.
      this.#writer.catch(() => {
        this.#writer = null;
      });
    }
    return this.#writer;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// JSONL files.
