/**
 * @module
 * Reading a reference dataset into rows keyed by feature name: CSV (streamed through csv-parse), JSONL (streamed
 * line by line) and Parquet (through hyparquet, a dependency-free pure-JS reader; Parquet needs random access, so
 * the whole file is held in memory). Bad input throws SY_ERR_BAD_REQUEST naming the line (CSV/JSONL) or row (Parquet).
 */
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { parquetReadObjects } from 'hyparquet';
import { CsvSyntaxError, csvRecords } from '../csv.js';
import { err, isSwitchyardError } from '../errors.js';
import type { FeatureSpec } from './types.js';

export type DatasetFormat = 'csv' | 'jsonl' | 'parquet';
export type DatasetRow = Record<string, number | string | null>;

export interface ReadDatasetOptions {
  /**
   * Feature specs used to map array values: an array under a key that is a feature's tensor name goes to that
   * feature by column (so custom names and single-column "<tensor>" names apply). Without them, element i of an
   * array under key k becomes "k[i]".
   */
  readonly features?: readonly FeatureSpec[];
}

/** Format from a file name's extension (.csv; .jsonl / .ndjson / .json; .parquet / .pq), or undefined. */
export function formatFromPath(path: string): DatasetFormat | undefined {
  switch (extname(path).toLowerCase()) {
    case '.csv':
      return 'csv';
    case '.jsonl':
    case '.ndjson':
    case '.json':
      return 'jsonl';
    case '.parquet':
    case '.pq':
      return 'parquet';
    default:
      return undefined;
  }
}

/**
 * Parse a reference dataset: CSV (header row = feature names; an empty unquoted cell = missing, unquoted numbers
 * and NaN/Infinity become numbers, quoted cells stay text; RFC 4180 quoting, including "" and line breaks inside
 * quotes) or JSONL (one object per line, feature → value; booleans become "true"/"false"; arrays map to
 * `<tensor>[i]`, or per `opts.features`; keys absent from a line are null) or Parquet. `input` is a file path, a
 * stream or the file's bytes; `format` defaults to the path's extension. Returns rows keyed by feature name.
 */
export async function readDataset(
  input: string | NodeJS.ReadableStream | Buffer,
  format?: DatasetFormat,
  opts: ReadDatasetOptions = {},
): Promise<DatasetRow[]> {
  const fmt = format ?? (typeof input === 'string' ? formatFromPath(input) : undefined);
  if (fmt === undefined) throw err('SY_ERR_BAD_REQUEST', 'dataset format unknown: pass csv, jsonl or parquet (or use a .csv/.jsonl/.parquet file)');
  if (typeof input === 'string') {
    try {
      const s = await stat(input);
      if (!s.isFile()) throw new Error('not a file');
    } catch (e) {
      throw err('SY_ERR_BAD_REQUEST', `cannot read dataset file ${input}: ${(e as Error).message}`, { cause: e });
    }
  }
  if (fmt === 'parquet') return readParquet(input, opts);
  const stream = typeof input === 'string' ? createReadStream(input) : Buffer.isBuffer(input) ? Readable.from([input]) : input;
  if (fmt === 'csv') return readCsv(stream);
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  try {
    return await readJsonl(lines, opts);
  } catch (e) {
    throw readError(e);
  } finally {
    lines.close();
  }
}

function readError(e: unknown): unknown {
  if (isSwitchyardError(e)) return e;
  return err('SY_ERR_BAD_REQUEST', `cannot read dataset: ${(e as Error).message}`, { cause: e });
}

const NUMBER = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;
const SPECIAL: Readonly<Record<string, number>> = {
  nan: NaN,
  NaN: NaN,
  NAN: NaN,
  inf: Infinity,
  Inf: Infinity,
  Infinity: Infinity,
  '+inf': Infinity,
  '+Infinity': Infinity,
  '-inf': -Infinity,
  '-Inf': -Infinity,
  '-Infinity': -Infinity,
};

/** An unquoted CSV cell: '' → null, numbers (and NaN/Infinity spellings) → number, otherwise the text. */
function csvCell(text: string, quoted: boolean): number | string | null {
  if (quoted) return text;
  if (text.trim() === '') return null;
  if (NUMBER.test(text)) return Number(text);
  const t = text.trim();
  return Object.hasOwn(SPECIAL, t) ? SPECIAL[t]! : text;
}

function bad(line: number, what: string): never {
  throw err('SY_ERR_BAD_REQUEST', `dataset line ${line}: ${what}`);
}

async function readCsv(input: NodeJS.ReadableStream): Promise<DatasetRow[]> {
  const rows: DatasetRow[] = [];
  let header: string[] | null = null;
  try {
    for await (const { cells, line } of csvRecords(input)) {
      if (header === null) {
        header = cells.map((c) => c.text.trim());
        const seen = new Set<string>();
        for (const h of header) {
          if (h === '') bad(line, 'empty column name in the header');
          if (seen.has(h)) bad(line, `duplicate column "${h}" in the header`);
          seen.add(h);
        }
        continue;
      }
      if (cells.length !== header.length) bad(line, `expected ${header.length} fields, got ${cells.length}`);
      const row: DatasetRow = {};
      for (let i = 0; i < header.length; i++) row[header[i]!] = csvCell(cells[i]!.text, cells[i]!.quoted);
      rows.push(row);
    }
  } catch (e) {
    if (e instanceof CsvSyntaxError) bad(e.line, e.reason);
    throw readError(e);
  }
  if (header === null) throw err('SY_ERR_BAD_REQUEST', 'dataset is empty: a CSV needs a header row');
  return rows;
}

type Scalar = number | string | null;

/** A JSON/Parquet scalar as a row value; undefined when it is not a scalar. */
function scalar(v: unknown): Scalar | undefined {
  if (v === null || v === undefined) return null;
  if (typeof v === 'number' || typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof Date) return v.toISOString();
  return undefined;
}

/** Flatten nested arrays into `out`; false when an element is not a scalar. */
function flatten(v: readonly unknown[], out: Scalar[]): boolean {
  for (const x of v) {
    if (Array.isArray(x)) {
      if (!flatten(x, out)) return false;
      continue;
    }
    const s = scalar(x);
    if (s === undefined) return false;
    out.push(s);
  }
  return true;
}

/** Puts one key's value into a row (arrays spread per {@link ReadDatasetOptions.features}); an error message or null. */
function assign(row: DatasetRow, key: string, v: unknown, byTensor: ReadonlyMap<string, readonly FeatureSpec[]>): string | null {
  const mapped = byTensor.get(key);
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    const flat: Scalar[] = [];
    const arr = ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<unknown>) : (v as unknown[]);
    if (!flatten(arr, flat)) return `array "${key}" holds a value that is not a number, string, boolean or null`;
    if (mapped) for (const f of mapped) row[f.name] = f.column < flat.length ? flat[f.column]! : null;
    else flat.forEach((x, i) => (row[`${key}[${i}]`] = x));
    return null;
  }
  const s = scalar(v);
  if (s === undefined) return `value of "${key}" must be a number, string, boolean, null or array`;
  const single = mapped?.find((f) => f.column === 0);
  if (mapped && single && !mapped.some((f) => f.name === key)) row[single.name] = s;
  else row[key] = s;
  return null;
}

function tensorMap(opts: ReadDatasetOptions): Map<string, FeatureSpec[]> {
  const m = new Map<string, FeatureSpec[]>();
  for (const f of opts.features ?? []) {
    const l = m.get(f.tensor);
    if (l) l.push(f);
    else m.set(f.tensor, [f]);
  }
  return m;
}

/** Gives every row every key seen in any row (absent → null). */
function fillMissing(rows: DatasetRow[], keys: ReadonlySet<string>): DatasetRow[] {
  for (const row of rows) for (const k of keys) if (!Object.hasOwn(row, k)) row[k] = null;
  return rows;
}

async function readJsonl(lines: AsyncIterable<string>, opts: ReadDatasetOptions): Promise<DatasetRow[]> {
  const byTensor = tensorMap(opts);
  const rows: DatasetRow[] = [];
  const keys = new Set<string>();
  let lineNo = 0;
  for await (let line of lines) {
    lineNo++;
    if (lineNo === 1 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
    if (line.trim() === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      bad(lineNo, `invalid JSON (${(e as Error).message})`);
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) bad(lineNo, 'expected a JSON object');
    const row: DatasetRow = {};
    for (const [k, v] of Object.entries(obj)) {
      const problem = assign(row, k, v, byTensor);
      if (problem !== null) bad(lineNo, problem);
    }
    for (const k of Object.keys(row)) keys.add(k);
    rows.push(row);
  }
  return fillMissing(rows, keys);
}

async function readParquet(input: string | NodeJS.ReadableStream | Buffer, opts: ReadDatasetOptions): Promise<DatasetRow[]> {
  let buf: Buffer;
  if (typeof input === 'string') buf = await readFile(input);
  else if (Buffer.isBuffer(input)) buf = input;
  else {
    const chunks: Buffer[] = [];
    for await (const c of input as AsyncIterable<Buffer | string>) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
    buf = Buffer.concat(chunks);
  }
  const file = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
  let objects: Record<string, unknown>[];
  try {
    objects = await parquetReadObjects({ file, rowFormat: 'object' });
  } catch (e) {
    throw err('SY_ERR_BAD_REQUEST', `invalid Parquet dataset: ${(e as Error).message}`, { cause: e });
  }
  const byTensor = tensorMap(opts);
  const keys = new Set<string>();
  const rows = objects.map((o, i) => {
    const row: DatasetRow = {};
    for (const [k, v] of Object.entries(o)) {
      const problem = assign(row, k, v, byTensor);
      if (problem !== null) throw err('SY_ERR_BAD_REQUEST', `dataset row ${i + 1}: ${problem}`);
    }
    for (const k of Object.keys(row)) keys.add(k);
    return row;
  });
  return fillMissing(rows, keys);
}
