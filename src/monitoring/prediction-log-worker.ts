/**
 * @module
 * Worker-thread body of the database prediction sink on SQLite. better-sqlite3 runs synchronously on the calling
 * thread, so the batch inserts, and turning buffered predictions into rows (packing, JSON), run here, on the
 * thread's own connection to the metadata store's file (WAL: the server's connection reads what this one
 * commits), and the HTTP event loop does not wait on them.
 *
 * Messages, handled in order: `{ id, rows }` or `{ id, buffered }` → one transaction (BEGIN IMMEDIATE, a prepared
 * INSERT per row) → `{ id, error: null }` once committed, or `{ id, error }` when it failed (rolled back; the
 * thread stays up). `{ id: null }` closes the connection and ends the thread. Opening the database or preparing
 * the INSERT fails the thread at start; the sink rejects the pending writes with that error.
 */
import { parentPort, workerData } from 'node:worker_threads';
import BetterSqlite3 from 'better-sqlite3';
import { isSwitchyardError } from '../errors.js';
import { DTYPES, utf8, type V2Datatype } from '../tensor/index.js';
import { flatRows, PREDICTION_COLUMNS } from './log-sink-database.js';
import { toRecord, type BufferedPrediction, type BufferedTensor } from './prediction-record.js';
import type { TensorJson } from './types.js';
import type { BufferedBatch, FromWriter, SqlValue, ToWriter, WireValue, WriterInit } from './writer-protocol.js';

const WIDTH = PREDICTION_COLUMNS.length;
const INSERT = `INSERT INTO prediction_log (${PREDICTION_COLUMNS.join(', ')}) VALUES (${PREDICTION_COLUMNS.map(() => '?').join(', ')})`;

/** An error's message, after its code when it has one (SQLite's: `SQLITE_BUSY: database is locked`). */
function reason(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  const message = e instanceof Error ? e.message : String(e);
  return typeof code === 'string' ? `${code}: ${message}` : message;
}

function describe(e: unknown): NonNullable<FromWriter['error']> {
  if (isSwitchyardError(e)) return { code: e.code, message: e.message };
  return { code: 'SY_ERR_INTERNAL', message: `prediction log (SQLite writer thread): ${reason(e)}` };
}

/** A connection with the server's pragmas (the file exists: the server opened and migrated it). */
function connect(file: string): BetterSqlite3.Database {
  const db = new BetterSqlite3(file, { fileMustExist: true });
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  db.pragma('synchronous = NORMAL');
  return db;
}

function decodeBuffered({ meta, bytes }: BufferedBatch): BufferedPrediction[] {
  let i = 0;
  const next = <T extends WireValue>(): T => meta[i++] as T;
  const tensors = (): BufferedTensor[] => {
    const out = new Array<BufferedTensor>(next<number>());
    for (let k = 0; k < out.length; k++) {
      const head = next();
      if (typeof head !== 'string') {
        out[k] = head as TensorJson;
        continue;
      }
      const dtype = DTYPES[next<V2Datatype>()];
      const rank = next<number>();
      const shape = meta.slice(i, i + rank) as number[];
      i += rank;
      const data = dtype.array === null ? next<readonly string[]>().map(utf8) : new dtype.array(bytes, next<number>(), next<number>());
      out[k] = { name: head, tensor: { dtype, shape, data } };
    }
    return out;
  };
  const out: BufferedPrediction[] = [];
  while (i < meta.length) {
    out.push({
      at: next(),
      model: next(),
      version: next(),
      tenant: next(),
      arm: next(),
      requestId: next(),
      latencyMs: next(),
      inputs: tensors(),
      outputs: tensors(),
    });
  }
  return out;
}

const port = parentPort!;
let db: BetterSqlite3.Database;
let insertAll: BetterSqlite3.Transaction<(rows: readonly SqlValue[]) => void>;
try {
  db = connect((workerData as WriterInit).file);
  const insert = db.prepare(INSERT);
  insertAll = db.transaction((rows: readonly SqlValue[]) => {
    for (let i = 0; i < rows.length; i += WIDTH) insert.run(rows.slice(i, i + WIDTH));
  });
} catch (e) {
  // A plain Error: the `error` event carries its message (a SqliteError would arrive as `{ code }` only).
  // eslint-disable-next-line preserve-caught-error -- a worker's error event carries a plain Error (no cause) faithfully
  throw new Error(reason(e));
}

port.on('message', (m: ToWriter) => {
  if (m.id === null) {
    db.close();
    port.close();
    return;
  }
  let reply: FromWriter;
  try {
    insertAll.immediate('rows' in m ? m.rows : flatRows(decodeBuffered(m.buffered).map(toRecord)));
    reply = { id: m.id, error: null };
  } catch (e) {
    reply = { id: m.id, error: describe(e) };
  }
  port.postMessage(reply);
});
