/**
 * @module
 * The prediction log's JSONL sink: files in a directory with rotation (size, UTC day), a file count cap and
 * retention by whole files.
 */
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { err } from '../errors.js';
import { recordLine } from './prediction-export.js';
import { epochMs, normalizeQuery, packTensorJson, unpackTensor, type PredictionQuery, type PredictionSink } from './prediction-record.js';
import type { PredictionRecord, TensorJson } from './types.js';

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
    at: r.at,
    model: r.model,
    version: r.version,
    tenant: typeof r.tenant === 'string' ? r.tenant : '',
    arm: typeof r.arm === 'string' ? r.arm : null,
    requestId: typeof r.requestId === 'string' ? r.requestId : '',
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
      if (typeof olderThanMs !== 'number' || Number.isNaN(olderThanMs))
        throw err('SY_ERR_BAD_REQUEST', 'prediction log prune: cutoff must be epoch milliseconds');
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
    this.#lock = run.then(
      () => undefined,
      () => undefined,
    );
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
    this.#ready.catch(() => {
      this.#ready = null;
    });
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
      time,
      seq,
      day: Math.floor(now / DAY_MS),
      size: 0,
      min: Infinity,
      max: -Infinity,
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
