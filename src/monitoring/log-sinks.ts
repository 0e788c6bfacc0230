/**
 * @module
 * Where the prediction log writes: the metadata store's `prediction_log` table, or JSONL files in a directory
 * with rotation (size, UTC day), a file count cap and retention by whole files.
 */
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { sql, type Insertable, type Kysely, type Selectable } from 'kysely';
import { err } from '../errors.js';
import type { Database, DB, Dialect, PredictionLogTable } from '../storage/index.js';
import { bytesText } from '../tensor/index.js';
import {
  normalizeQuery, packTensorJson, recordLine, toRecord, unpackTensor,
  type BufferedPrediction, type BufferedTensor, type PredictionQuery, type PredictionSink,
} from './prediction-log.js';
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

function epochMs(rec: PredictionRecord): number {
  const at = Date.parse(rec.at);
  if (!Number.isFinite(at)) throw err('SY_ERR_BAD_REQUEST', `prediction record: "at" is not an ISO time (${String(rec.at)})`);
  return at;
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
      const e = err('SY_ERR_INTERNAL', `prediction log: the SQLite writer thread ${why}; the write was not committed`, failure === null ? {} : { cause: failure });
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
    return this.#begin(batch.length, (writer) =>
      (writer === null ? this.#insert(batch.map((p) => predictionRow(toRecord(p)))) : writer.writeBuffered(batch)));
  }

  async #insert(rows: readonly Insertable<PredictionLogTable>[]): Promise<void> {
    if (rows.length <= INSERT_CHUNK) {
      await this.#db.insertInto('prediction_log').values(rows).execute();
      return;
    }
    await this.#db.transaction().execute(async (tx) => {
      for (let i = 0; i < rows.length; i += INSERT_CHUNK) await tx.insertInto('prediction_log').values(rows.slice(i, i + INSERT_CHUNK)).execute();
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
    if (typeof olderThanMs !== 'number' || Number.isNaN(olderThanMs)) throw err('SY_ERR_BAD_REQUEST', 'prediction log prune: cutoff must be epoch milliseconds');
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

export interface JsonlPredictionSinkOptions {
  readonly dir: string;
  /** A file is rotated before it would grow past this. Default 64 MiB. */
  readonly maxFileBytes?: number;
  /** Files kept at most; the oldest are deleted beyond. Default 100. */
  readonly maxFiles?: number;
}

export const DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_FILES = 100;

const FILE_NAME = /^predictions-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})-(\d+)\.jsonl$/;
const AT_PREFIX = Buffer.from('{"at":"');
const QUOTE = 0x22;
const NEWLINE = 0x0a;
const DAY_MS = 86_400_000;

interface FileEntry {
  readonly name: string;
  /** The time in the name, epoch ms (whole seconds). */
  readonly time: number;
  readonly seq: number;
}

/** Exact `at` range of a file's records. */
interface Range {
  min: number;
  max: number;
}

interface Current extends FileEntry, Range {
  /** UTC day (epoch days) the file was opened on. */
  readonly day: number;
  size: number;
}

function parseName(name: string): FileEntry | null {
  const m = FILE_NAME.exec(name);
  if (m === null) return null;
  const [, y, mo, d, h, mi, s, seq] = m.map(Number) as number[];
  const time = Date.UTC(y!, mo! - 1, d!, h!, mi!, s!);
  return Number.isFinite(time) ? { name, time, seq: seq! } : null;
}

function stamp(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').slice(0, 15);
}

function isMissing(e: unknown): boolean {
  return (e as { code?: unknown } | null)?.code === 'ENOENT';
}

/** `at` of a JSONL line without parsing it (lines start with `{"at":"<ISO>"`), or null. */
function lineAt(line: Buffer): number | null {
  if (line.length < AT_PREFIX.length + 2 || line.compare(AT_PREFIX, 0, AT_PREFIX.length, 0, AT_PREFIX.length) !== 0) return null;
  const end = line.indexOf(QUOTE, AT_PREFIX.length);
  if (end < 0) return null;
  const at = Date.parse(line.toString('latin1', AT_PREFIX.length, end));
  return Number.isFinite(at) ? at : null;
}

function asRecord(v: unknown): PredictionRecord | null {
  if (v === null || typeof v !== 'object') return null;
  const r = v as Partial<PredictionRecord>;
  if (typeof r.at !== 'string' || typeof r.model !== 'string' || typeof r.version !== 'number') return null;
  return {
    at: r.at, model: r.model, version: r.version, tenant: typeof r.tenant === 'string' ? r.tenant : '',
    arm: typeof r.arm === 'string' ? r.arm : null, requestId: typeof r.requestId === 'string' ? r.requestId : '',
    latencyMs: typeof r.latencyMs === 'number' ? r.latencyMs : 0,
    inputs: Array.isArray(r.inputs) ? (r.inputs as TensorJson[]).map(unpackTensor) : [],
    outputs: Array.isArray(r.outputs) ? (r.outputs as TensorJson[]).map(unpackTensor) : [],
  };
}

/** Calls `onLine` for every complete line (ending in "\n") of a file; false when the file is gone. */
async function eachLine(path: string, onLine: (line: Buffer) => void): Promise<boolean> {
  let rest: Buffer | null = null;
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
      let buf = chunk as Buffer;
      let start = 0;
      for (let nl = buf.indexOf(NEWLINE); nl >= 0; nl = buf.indexOf(NEWLINE, start)) {
        if (rest !== null) {
          onLine(Buffer.concat([rest, buf.subarray(start, nl)]));
          rest = null;
        } else {
          onLine(buf.subarray(start, nl));
        }
        start = nl + 1;
      }
      if (start < buf.length) {
        buf = buf.subarray(start);
        rest = rest === null ? Buffer.from(buf) : Buffer.concat([rest, buf]);
      }
    }
  } catch (e) {
    if (isMissing(e)) return false;
    throw e;
  }
  // A last line without "\n" is an append in progress (or cut short by a failure): not a record.
  return true;
}

interface Hit {
  readonly at: number;
  /** Scan order: ties on `at` keep write order. */
  readonly order: number;
  readonly rec: PredictionRecord;
}

const byTime = (a: Hit, b: Hit): number => a.at - b.at || a.order - b.order;

/**
 * JSONL files `<dir>/predictions-<UTC yyyymmddThhmmss>-<seq>.jsonl`, one {@link PredictionRecord} per line
 * (`at` first; the same lines as `toJsonl`). One process writes a directory (replicas use their own).
 *
 * - Appends go to the current file, opened at the first write after start (a restart never appends to an older
 *   file, which may end in a cut-off line). A new file is started before one would grow past `maxFileBytes`
 *   (a record larger than that gets a file of its own), on a new UTC day, and after a failed append.
 * - Names sort in write order: the name's time is max(now, the newest `at` written before), so every record of a
 *   file is at most (the next file's name time + 1 s). Queries and retention use that bound; the exact range of
 *   the current file, of files rotated by this process and of files a query has read is kept in memory.
 * - Beyond `maxFiles`, the oldest files are deleted when a new one is opened.
 * - `prune(cutoff)` deletes whole files whose newest record is older than the cutoff (the current one too, if
 *   it is all old); returns the number of files.
 * - `query` reads only the files whose range can match, skipping lines out of the time range without parsing them.
 */
export class JsonlPredictionSink implements PredictionSink {
  readonly kind = 'jsonl' as const;
  readonly #dir: string;
  readonly #maxBytes: number;
  readonly #maxFiles: number;
  #ready: Promise<void> | null = null;
  #nextSeq = 0;
  /** At least every `at` written and every file name time so far: the next name's time is not below it. */
  #floor = -Infinity;
  #current: Current | null = null;
  readonly #ranges = new Map<string, Range>();
  #lock: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(opts: JsonlPredictionSinkOptions) {
    const maxFileBytes = opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    const maxFiles = opts.maxFiles ?? DEFAULT_MAX_FILES;
    const bad = (msg: string): Error => err('SY_ERR_CONFIG_INVALID', `prediction log (jsonl): ${msg}`);
    if (typeof opts.dir !== 'string' || opts.dir === '') throw bad('"dir" is required');
    if (!Number.isSafeInteger(maxFileBytes) || maxFileBytes < 1) throw bad(`maxFileBytes must be a positive integer (got ${maxFileBytes})`);
    if (!Number.isSafeInteger(maxFiles) || maxFiles < 1) throw bad(`maxFiles must be a positive integer (got ${maxFiles})`);
    this.#dir = opts.dir;
    this.#maxBytes = maxFileBytes;
    this.#maxFiles = maxFiles;
  }

  write(batch: readonly PredictionRecord[]): Promise<void> {
    return this.#exclusive(async () => {
      if (this.#closed) throw err('SY_ERR_INTERNAL', 'prediction log (jsonl): sink is closed');
      await this.#init();
      if (batch.length === 0) return;
      const lines = batch.map((r) => {
        // Numeric tensors packed, as in the database (a fraction of the bytes and of the CPU); unpacked by `query`.
        const text = recordLine({ ...r, inputs: r.inputs.map(packTensorJson), outputs: r.outputs.map(packTensorJson) });
        return { text, bytes: Buffer.byteLength(text), at: epochMs(r) };
      });
      const now = Date.now();
      if (this.#current !== null && this.#current.day !== Math.floor(now / DAY_MS)) this.#rotate();
      let parts: typeof lines = [];
      let size = this.#current?.size ?? 0;
      for (const l of lines) {
        if (parts.length > 0 && size + l.bytes > this.#maxBytes) {
          await this.#append(parts, now);
          this.#rotate();
          parts = [];
          size = 0;
        } else if (parts.length === 0 && size > 0 && size + l.bytes > this.#maxBytes) {
          this.#rotate();
          size = 0;
        }
        parts.push(l);
        size += l.bytes;
      }
      await this.#append(parts, now);
    });
  }

  async query(q: PredictionQuery): Promise<PredictionRecord[]> {
    const n = normalizeQuery(q);
    if (n.limit === 0) return [];
    await this.#exclusive(() => this.#init());
    const since = n.since ?? -Infinity;
    const until = n.until ?? Infinity;
    const current = this.#current === null ? null : { name: this.#current.name, min: this.#current.min, max: this.#current.max };
    const files = await this.#files();
    let hits: Hit[] = [];
    let order = 0;
    const trim = (): void => {
      hits.sort(byTime);
      if (hits.length > n.limit) hits = hits.slice(0, n.limit);
    };
    const needle = n.model === undefined ? null : Buffer.from(`,"model":${JSON.stringify(n.model)},`);
    for (let i = 0; i < files.length; i++) {
      const f = files[i]!;
      const isCurrent = current !== null && f.name === current.name;
      const known = isCurrent ? current : this.#ranges.get(f.name);
      const lo = known?.min ?? -Infinity;
      const hi = known?.max ?? this.#bound(files, i);
      if (hi < since || lo > until) continue;
      if (hits.length >= n.limit) {
        trim();
        if (lo > hits[n.limit - 1]!.at) continue;
      }
      let min = Infinity;
      let max = -Infinity;
      const found = await eachLine(join(this.#dir, f.name), (line) => {
        let at = lineAt(line);
        if (at !== null) {
          if (at < min) min = at;
          if (at > max) max = at;
          if (at < since || at > until) return;
        }
        if (needle !== null && line.indexOf(needle) < 0) return;
        let rec: PredictionRecord | null;
        try {
          rec = asRecord(JSON.parse(line.toString('utf8')));
        } catch {
          return;
        }
        if (rec === null) return;
        if (at === null) {
          at = Date.parse(rec.at);
          if (!Number.isFinite(at)) return;
          if (at < min) min = at;
          if (at > max) max = at;
          if (at < since || at > until) return;
        }
        if (n.model !== undefined && rec.model !== n.model) return;
        if (n.version !== undefined && rec.version !== n.version) return;
        hits.push({ at, order: order++, rec });
        if (hits.length >= 2 * n.limit + 1024) trim();
      });
      // A complete file read in full: remember its exact range.
      if (found && !isCurrent && known === undefined && this.#current?.name !== f.name) this.#ranges.set(f.name, { min, max });
    }
    trim();
    return hits.map((h) => h.rec);
  }

  prune(olderThanMs: number): Promise<number> {
    return this.#exclusive(async () => {
      if (typeof olderThanMs !== 'number' || Number.isNaN(olderThanMs)) throw err('SY_ERR_BAD_REQUEST', 'prediction log prune: cutoff must be epoch milliseconds');
      await this.#init();
      const cur = this.#current;
      if (cur !== null && cur.size > 0 && cur.max < olderThanMs) this.#rotate(); // all old: close it so it can go
      const files = await this.#files();
      let removed = 0;
      for (let i = 0; i < files.length; i++) {
        const f = files[i]!;
        if (f.name === this.#current?.name) continue;
        let hi = this.#ranges.get(f.name)?.max ?? this.#bound(files, i);
        // Opened before the cutoff but the bound is inconclusive: read it once for its exact range.
        if (hi >= olderThanMs && f.time < olderThanMs && !this.#ranges.has(f.name)) {
          const range = await this.#scanRange(f.name);
          if (range === null) continue;
          hi = range.max;
        }
        if (hi >= olderThanMs) continue;
        if (await this.#unlink(f.name)) removed++;
      }
      return removed;
    });
  }

  close(): Promise<void> {
    return this.#exclusive(async () => {
      this.#closed = true;
      this.#rotate();
    });
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn);
    this.#lock = run.then(() => undefined, () => undefined);
    return run;
  }

  /** Once: create the directory, continue the sequence, learn the newest existing file's exact range. */
  #init(): Promise<void> {
    this.#ready ??= (async () => {
      await mkdir(this.#dir, { recursive: true });
      const files = await this.#files();
      const last = files.at(-1);
      if (last === undefined) return;
      this.#nextSeq = Math.max(...files.map((f) => f.seq)) + 1;
      this.#floor = last.time;
      const range = await this.#scanRange(last.name);
      if (range !== null) this.#floor = Math.max(this.#floor, range.max);
    })();
    // A failed start (e.g. the directory cannot be created) is retried by the next call.
    this.#ready.catch(() => { this.#ready = null; });
    return this.#ready;
  }

  /** Read a whole (complete) file for its exact range and remember it; null when it is gone. An empty file reads as [+Inf, -Inf]. */
  async #scanRange(name: string): Promise<Range | null> {
    let min = Infinity;
    let max = -Infinity;
    const found = await eachLine(join(this.#dir, name), (line) => {
      let at = lineAt(line);
      if (at === null) {
        try {
          at = Date.parse((JSON.parse(line.toString('utf8')) as { at?: unknown }).at as string);
        } catch {
          return;
        }
        if (!Number.isFinite(at)) return;
      }
      if (at < min) min = at;
      if (at > max) max = at;
    });
    if (!found) return null;
    const range = { min, max };
    this.#ranges.set(name, range);
    return range;
  }

  /** Files in the directory, oldest first. */
  async #files(): Promise<FileEntry[]> {
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch (e) {
      if (isMissing(e)) return [];
      throw e;
    }
    const files: FileEntry[] = [];
    for (const n of names) {
      const f = parseName(n);
      if (f !== null) files.push(f);
    }
    return files.sort((a, b) => a.time - b.time || a.seq - b.seq);
  }

  /** Upper bound of the `at` of a file's records from the next file's name; Infinity for the newest. */
  #bound(files: readonly FileEntry[], i: number): number {
    const next = files[i + 1];
    if (next !== undefined) return next.time + 999;
    const cur = this.#current;
    return cur !== null && cur.name !== files[i]!.name && cur.time >= files[i]!.time ? cur.time + 999 : Infinity;
  }

  async #unlink(name: string): Promise<boolean> {
    this.#ranges.delete(name);
    try {
      await unlink(join(this.#dir, name));
      return true;
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  /** Close the current file (its range is kept); the next append opens a new one. */
  #rotate(): void {
    const cur = this.#current;
    if (cur === null) return;
    if (cur.size > 0 && cur.min <= cur.max) this.#ranges.set(cur.name, { min: cur.min, max: cur.max });
    this.#current = null;
  }

  async #open(now: number): Promise<Current> {
    const time = Math.floor(Math.max(now, this.#floor) / 1000) * 1000;
    this.#floor = Math.max(this.#floor, time);
    const seq = this.#nextSeq++;
    const cur: Current = {
      name: `predictions-${stamp(time)}-${String(seq).padStart(6, '0')}.jsonl`,
      time, seq, day: Math.floor(now / DAY_MS), size: 0, min: Infinity, max: -Infinity,
    };
    // Room for the new file within maxFiles.
    const files = await this.#files();
    for (let i = 0; i < files.length - (this.#maxFiles - 1); i++) await this.#unlink(files[i]!.name);
    this.#current = cur;
    return cur;
  }

  async #append(parts: readonly { text: string; bytes: number; at: number }[], now: number): Promise<void> {
    if (parts.length === 0) return;
    const cur = this.#current ?? (await this.#open(now));
    let bytes = 0;
    for (const p of parts) {
      bytes += p.bytes;
      if (p.at < cur.min) cur.min = p.at;
      if (p.at > cur.max) cur.max = p.at;
      if (p.at > this.#floor) this.#floor = p.at;
    }
    try {
      await appendFile(join(this.#dir, cur.name), parts.map((p) => p.text).join(''));
      cur.size += bytes;
    } catch (e) {
      // Part of it may be on disk, possibly a cut-off line: continue in a new file.
      cur.size += bytes;
      this.#rotate();
      throw e;
    }
  }
}

