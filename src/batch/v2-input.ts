/**
 * @module
 * Reading a V2 batch job's input as records: JSONL (one object per line, streamed), CSV (header row = column
 * names, streamed through csv-parse: an empty unquoted cell is missing, unquoted numbers are numbers, a cell
 * holding a JSON array is that array, quoted cells stay text) or Parquet (hyparquet; Parquet needs random access,
 * so the file is read whole). A record that cannot be read is yielded as an error for that row; a file that
 * cannot be read at all throws {@link InputError} (the job fails with it).
 */
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { parquetReadObjects, parquetMetadata, parquetSchema } from 'hyparquet';
import { CsvSyntaxError, csvRecords } from '../csv.js';
import type { InputFormat } from './v2-spec.js';

/** The whole input is unusable: the job fails with this code and message. */
export class InputError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'InputError';
    this.code = code;
  }
}

/** One data row (`row` is its 0-based index among the data rows) or why it could not be read. */
export type InputRecord =
  | { readonly row: number; readonly fields: Readonly<Record<string, unknown>>; readonly error: null }
  | { readonly row: number; readonly fields: null; readonly error: { readonly code: string; readonly message: string } };

/** Records and, for CSV and Parquet, the columns every record has (null for JSONL: each line has its own). */
export interface InputRecords {
  readonly columns: readonly string[] | null;
  readonly records: AsyncIterable<InputRecord>;
}

/** Where the bytes come from: a stored file's parts, or a local path. */
export type InputBytes = { readonly parts: () => AsyncIterable<Uint8Array> } | { readonly path: string };

const NUMBER = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;

/** An unquoted CSV cell: '' → null, a number → number, a JSON array → the array, else the text. */
function csvValue(text: string, quoted: boolean): unknown {
  if (quoted) return text;
  const t = text.trim();
  if (t === '') return null;
  if (NUMBER.test(t)) return Number(t);
  if (t === 'true' || t === 'false') return t === 'true';
  if (t.startsWith('[')) {
    try {
      return JSON.parse(t) as unknown;
    } catch {
      return text;
    }
  }
  return text;
}

async function streamOf(src: InputBytes): Promise<NodeJS.ReadableStream> {
  if ('parts' in src) return Readable.from(src.parts());
  await checkPath(src.path);
  return createReadStream(src.path);
}

async function checkPath(path: string): Promise<void> {
  try {
    if (!(await stat(path)).isFile()) throw new Error('not a regular file');
  } catch (e) {
    throw new InputError('input_unreadable', `cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Parquet values as JSON values: bigint → number when exact (else left a bigint: the row is refused later), Date → ISO text, typed arrays → arrays. */
function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v;
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map(plain);
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<unknown>, plain);
  return v;
}

export async function readInput(src: InputBytes, format: InputFormat): Promise<InputRecords> {
  if (format === 'parquet') return readParquet(src);
  const stream = await streamOf(src);
  if (format === 'csv') return readCsv(stream);
  return { columns: null, records: readJsonl(stream) };
}

async function* readJsonl(stream: NodeJS.ReadableStream): AsyncGenerator<InputRecord> {
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  let row = 0;
  try {
    for await (const text of lines) {
      if (text.trim() === '') continue;
      let v: unknown;
      try {
        v = JSON.parse(text);
      } catch {
        yield { row: row++, fields: null, error: { code: 'invalid_json', message: 'the line is not valid JSON' } };
        continue;
      }
      if (v === null || typeof v !== 'object' || Array.isArray(v))
        yield { row: row++, fields: null, error: { code: 'invalid_json', message: 'the line is not a JSON object' } };
      else yield { row: row++, fields: v as Record<string, unknown>, error: null };
    }
  } finally {
    lines.close();
  }
}

async function readCsv(stream: NodeJS.ReadableStream): Promise<InputRecords> {
  const it = csvRecords(stream)[Symbol.asyncIterator]();
  let first;
  try {
    first = await it.next();
  } catch (e) {
    throw new InputError('invalid_csv', e instanceof CsvSyntaxError ? `line ${e.line}: ${e.reason}` : (e as Error).message);
  }
  if (first.done) throw new InputError('empty_file', 'the CSV file is empty: it needs a header row');
  const header = first.value.cells.map((c) => c.text.trim());
  const seen = new Set<string>();
  for (const h of header) {
    if (h === '') throw new InputError('invalid_csv', 'an empty column name in the header');
    if (seen.has(h)) throw new InputError('invalid_csv', `column "${h}" appears twice in the header`);
    seen.add(h);
  }
  async function* records(): AsyncGenerator<InputRecord> {
    let row = 0;
    for (;;) {
      let r;
      try {
        r = await it.next();
      } catch (e) {
        // A syntax error ends the readable part of the file: the rest cannot be told apart reliably.
        throw new InputError('invalid_csv', e instanceof CsvSyntaxError ? `line ${e.line}: ${e.reason}` : (e as Error).message);
      }
      if (r.done) return;
      const { cells, line } = r.value;
      if (cells.length !== header.length) {
        yield { row: row++, fields: null, error: { code: 'invalid_row', message: `line ${line}: ${cells.length} fields, the header has ${header.length}` } };
        continue;
      }
      const fields: Record<string, unknown> = {};
      for (let i = 0; i < header.length; i++) fields[header[i]!] = csvValue(cells[i]!.text, cells[i]!.quoted);
      yield { row: row++, fields, error: null };
    }
  }
  return { columns: header, records: records() };
}

async function readParquet(src: InputBytes): Promise<InputRecords> {
  let buf: Buffer;
  if ('parts' in src) {
    const parts: Uint8Array[] = [];
    for await (const p of src.parts()) parts.push(p);
    buf = Buffer.concat(parts);
  } else {
    await checkPath(src.path);
    buf = await readFile(src.path);
  }
  const file = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
  let columns: string[];
  let rows: Array<Record<string, unknown>>;
  try {
    const metadata = parquetMetadata(file);
    columns = parquetSchema(metadata).children.map((c) => c.element.name);
    rows = await parquetReadObjects({ file, metadata });
  } catch (e) {
    throw new InputError('invalid_parquet', `cannot read the Parquet file: ${(e as Error).message}`);
  }
  async function* records(): AsyncGenerator<InputRecord> {
    for (let i = 0; i < rows.length; i++) {
      const fields: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(rows[i]!)) fields[k] = plain(v);
      yield { row: i, fields, error: null };
    }
  }
  return { columns, records: records() };
}
