/**
 * @module
 * The `v2` job kind (`/api/v1/batch/jobs`): rows of a JSONL, CSV or Parquet file scored by a model. Preparing
 * reads the file once (streamed, except Parquet), maps each record's columns to the model's inputs (the element
 * count per row from the serving version's signature), and stores each chunk as JSONL of mapped rows; a record
 * that cannot be mapped is kept in its chunk as a failed row with the reason, so it lands in the error file in
 * order and counts against the failure budget. Running a chunk stacks its rows into one request in the job's
 * low-weight flow; when that request fails (other than for load), its rows are run one by one so only the rows
 * that fail alone fail.
 *
 * Chunk line: `{"r": row, "k": key, "p": {pass-through}, "x": {input: [values]}}` or, for a failed row, `"e":
 * {code, message}` instead of `"x"`. Output line: `{"row", "key"?, ...pass-through, <output>: value}`; error
 * line: `{"row", "key"?, ...pass-through, "error": {code, message}}`.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ByteWriter, parquetWriteRows } from 'hyparquet-writer';
import { isSwitchyardError } from '../errors.js';
import type { TensorSpecJson } from '../runtimes/index.js';
import type { FileStore } from './files.js';
import { yieldLoop, ZERO_USAGE, type JobRecord, type LeasedChunk, type NewChunk, type V2Job } from './jobs.js';
import { linesOf, utf8Parts, type ChunkRun, type JobKind, type OutputFile, type Prepared, type RunContext } from './kinds.js';
import { LOAD_RETRIES, sleep } from './openai-kind.js';
import type { LineContext, RowRunner, RowSignature } from './types.js';
import { InputError, readInput, type InputBytes } from './v2-input.js';
import { MAX_JOB_ROWS, rowShape, type V2Spec } from './v2-spec.js';

interface ChunkRow {
  readonly r: number;
  readonly k?: unknown;
  readonly p?: Record<string, unknown>;
  readonly x?: Record<string, unknown[]>;
  readonly e?: { code: string; message: string };
}

/** How one input's per-row values are read from a record. */
interface InputPlan {
  readonly name: string;
  readonly columns: string | readonly string[];
  /** Elements per row: fixed (no -1 in the row shape) or a multiple of `unit` (a -1 in it). */
  readonly fixed: boolean;
  readonly unit: number;
  readonly bytes: boolean;
  readonly bool: boolean;
}

function plan(spec: V2Spec, sig: RowSignature): InputPlan[] {
  return sig.inputs.map((i: TensorSpecJson) => {
    const dims = rowShape(i, sig.batched);
    const unit = dims.filter((d) => d >= 0).reduce((a, b) => a * b, 1);
    return {
      name: i.name,
      columns: spec.mapping[i.name] ?? i.name,
      fixed: !dims.includes(-1),
      unit,
      bytes: i.datatype === 'BYTES',
      bool: i.datatype === 'BOOL',
    };
  });
}

/** Flatten nested arrays; null when an element is itself an object. */
function flat(v: readonly unknown[], out: unknown[]): boolean {
  for (const x of v) {
    if (Array.isArray(x)) {
      if (!flat(x, out)) return false;
    } else if (x !== null && typeof x === 'object') return false;
    else out.push(x);
  }
  return true;
}

/** One record's values for one input, or the reason it has none. */
function valuesOf(p: InputPlan, fields: Readonly<Record<string, unknown>>): unknown[] | { code: string; message: string } {
  let values: unknown[] = [];
  if (typeof p.columns === 'string') {
    const col = p.columns;
    if (!Object.hasOwn(fields, col)) return { code: 'missing_field', message: `input "${p.name}": the row has no field "${col}"` };
    const v = fields[col];
    if (v === null || v === undefined) return { code: 'missing_value', message: `input "${p.name}": field "${col}" is empty` };
    if (Array.isArray(v)) {
      if (!flat(v, values)) return { code: 'invalid_value', message: `input "${p.name}": field "${col}" holds an object inside its array` };
    } else values = [v];
  } else {
    for (const col of p.columns) {
      if (!Object.hasOwn(fields, col)) return { code: 'missing_field', message: `input "${p.name}": the row has no field "${col}"` };
      const v = fields[col];
      if (v === null || v === undefined) return { code: 'missing_value', message: `input "${p.name}": field "${col}" is empty` };
      if (typeof v === 'object') return { code: 'invalid_value', message: `input "${p.name}": field "${col}" must hold one value (it maps to one element)` };
      values.push(v);
    }
  }
  const n = values.length;
  if (p.fixed ? n !== p.unit : n === 0 || n % p.unit !== 0) {
    return { code: 'wrong_element_count', message: `input "${p.name}": ${n} values per row, the model takes ${p.fixed ? p.unit : `a multiple of ${p.unit}`}` };
  }
  for (const v of values) {
    const ok = p.bytes ? typeof v === 'string' : typeof v === 'number' || (p.bool && typeof v === 'boolean');
    if (!ok) {
      const what = typeof v === 'bigint' ? `${String(v)} (an integer beyond ±2^53, not carried exactly)` : JSON.stringify(v);
      return { code: 'invalid_value', message: `input "${p.name}": ${what} is not a ${p.bytes ? 'string' : 'number'}` };
    }
  }
  return values;
}

/** A field's value for the output: as it was read (JSON-safe). */
function passValue(v: unknown): unknown {
  return typeof v === 'bigint' ? String(v) : (v ?? null);
}

export class V2Kind implements JobKind {
  readonly #files: FileStore;
  readonly #runner: RowRunner;
  readonly #logger: Logger;

  constructor(files: FileStore, runner: RowRunner, logger: Logger) {
    this.#files = files;
    this.#runner = runner;
    this.#logger = logger;
  }

  endpoint(): string {
    return '/api/v1/batch/jobs';
  }

  failureBudget(job: JobRecord): number | null {
    return (job as V2Job).spec.maxFailedRows;
  }

  async prepare(job: JobRecord): Promise<Prepared> {
    const spec = (job as V2Job).spec;
    const fail = (code: string, message: string, param: string | null = null): Prepared => ({ errors: [{ code, line: null, message, param }] });
    let sig: RowSignature;
    try {
      sig = await this.#runner.signature(job.tenant, spec.model, spec.version);
    } catch (e) {
      return fail('model_not_found', (e as Error).message, 'model');
    }
    let src: InputBytes;
    if ('fileId' in spec.input) {
      const id = spec.input.fileId;
      if ((await this.#files.get(job.tenant, id)) === null) return fail('file_not_found', `The input file ${id} no longer exists.`, 'input.fileId');
      src = { parts: () => this.#files.content(id) };
    } else src = { path: spec.input.path };
    const plans = plan(spec, sig);
    const chunks: NewChunk[] = [];
    let total = 0;
    try {
      const input = await readInput(src, spec.format);
      if (input.columns !== null) {
        const have = new Set(input.columns);
        const need: Array<[string, string]> = [];
        for (const p of plans) for (const c of typeof p.columns === 'string' ? [p.columns] : p.columns) need.push([c, `mapping.${p.name}`]);
        if (spec.keyField !== null) need.push([spec.keyField, 'keyField']);
        for (const f of spec.includedFields) need.push([f, 'includedFields']);
        for (const [c, param] of need) {
          if (!have.has(c)) return fail('missing_column', `the file has no column "${c}" (${param}; columns: ${input.columns.join(', ')})`, param);
        }
      }
      let text = '';
      let lines = 0;
      let first = 0;
      for await (const rec of input.records) {
        if (total >= MAX_JOB_ROWS) return fail('too_many_rows', `the file has more than ${MAX_JOB_ROWS} rows`);
        if (lines === 0) first = rec.row;
        total++;
        const row: { -readonly [K in keyof ChunkRow]: ChunkRow[K] } = { r: rec.row };
        if (rec.error !== null) row.e = rec.error;
        else {
          const f = rec.fields;
          if (spec.keyField !== null) row.k = passValue(f[spec.keyField]);
          if (spec.includedFields.length > 0) row.p = Object.fromEntries(spec.includedFields.map((n) => [n, passValue(f[n])]));
          const x: Record<string, unknown[]> = {};
          for (const p of plans) {
            const v = valuesOf(p, f);
            if (!Array.isArray(v)) {
              row.e = v;
              break;
            }
            x[p.name] = v;
          }
          if (row.e === undefined) row.x = x;
        }
        text += `${JSON.stringify(row)}\n`;
        if (++lines === spec.chunkRows) {
          chunks.push({ firstLine: first, lines, input: text });
          text = '';
          lines = 0;
        }
        if (total % 256 === 0) await yieldLoop();
      }
      if (lines > 0) chunks.push({ firstLine: first, lines, input: text });
    } catch (e) {
      if (e instanceof InputError) return fail(e.code, e.message, 'input');
      throw e;
    }
    if (total === 0) return fail('empty_file', 'the input has no rows', 'input');
    return { chunks, total };
  }

  unrun(job: JobRecord, input: string, code: string, message: string): string {
    return linesOf(input)
      .map((l) => `${errorLine(job as V2Job, JSON.parse(l) as ChunkRow, { code, message })}\n`)
      .join('');
  }

  outputFile(job: JobRecord, lines: AsyncIterable<string>): OutputFile {
    const spec = (job as V2Job).spec;
    if (spec.outputFormat === 'jsonl') return { filename: `${job.id}_output.jsonl`, content: utf8Parts(lines) };
    return { filename: `${job.id}_output.parquet`, content: parquetOf(lines) };
  }

  async runChunk(job: JobRecord, c: LeasedChunk, ctx: RunContext): Promise<ChunkRun> {
    const j = job as V2Job;
    const lines = linesOf(c.input);
    const rows: ChunkRow[] = new Array<ChunkRow>(lines.length);
    // Parsed in slices with the event loop free in between: a chunk's JSON never stalls online requests for long.
    for (let i = 0; i < lines.length; i++) {
      rows[i] = JSON.parse(lines[i]!) as ChunkRow;
      if (i % 128 === 127) await yieldLoop();
    }
    const results = new Map<ChunkRow, Record<string, string> | Failure>();
    const good = rows.filter((r) => r.x !== undefined);
    for (const r of rows) if (r.e !== undefined) results.set(r, { failure: true, code: r.e.code, message: r.e.message });
    if (good.length > 0) await this.#score(j, good, results, ctx, true);
    let output = '';
    let errorOutput = '';
    let succeeded = 0;
    let failed = 0;
    for (let i = 0; i < rows.length; i++) {
      if (i % 256 === 255) await yieldLoop();
      const r = rows[i]!;
      const res = results.get(r)!;
      if (isFailure(res)) {
        errorOutput += `${errorLine(j, r, res)}\n`;
        failed++;
      } else {
        output += `${outputLine(j, r, res)}\n`;
        succeeded++;
      }
    }
    return { output, errorOutput, succeeded, failed, usage: ZERO_USAGE, lineUsage: [] };
  }

  /** Score `rows` together; a failure other than load (429, 503) is retried row by row so only the failing rows fail. */
  async #score(
    job: V2Job,
    rows: readonly ChunkRow[],
    results: Map<ChunkRow, Record<string, string> | Failure>,
    ctx: RunContext,
    split: boolean,
  ): Promise<void> {
    const spec = job.spec;
    const inputs = new Map<string, unknown[][]>();
    for (const name of Object.keys(rows[0]!.x!))
      inputs.set(
        name,
        rows.map((r) => r.x![name]!),
      );
    const lineCtx: LineContext = {
      tenant: job.tenant,
      keyId: spec.keyId,
      requestId: `bjr_${randomBytes(12).toString('hex')}`,
      flow: ctx.flow,
      signal: ctx.signal,
    };
    for (let attempt = 0; ; attempt++) {
      try {
        const out = await this.#runner.run({ model: spec.model, version: spec.version, inputs, rows: rows.length, outputs: spec.outputs }, lineCtx);
        rows.forEach((r, i) => results.set(r, Object.fromEntries(out.map((o) => [o.name, o.rows[i]!]))));
        return;
      } catch (e) {
        const status = isSwitchyardError(e) ? e.status : 500;
        if ((status === 429 || status === 503) && attempt < LOAD_RETRIES && !ctx.signal.aborted) {
          await sleep(Math.min(5000, 100 * 2 ** attempt));
          continue;
        }
        // Bad input, or a runtime failure that one row's values may cause (an id beyond a vocabulary): run the
        // rows one by one, so only the rows that fail alone fail.
        if (split && rows.length > 1 && status >= 400 && status !== 429 && status !== 503 && !ctx.signal.aborted) {
          await Promise.all(rows.map((r) => this.#score(job, [r], results, ctx, false)));
          return;
        }
        if (!isSwitchyardError(e)) this.#logger.error({ err: e, job: job.id }, 'batch row runner threw');
        const failure: Failure = {
          failure: true,
          code: isSwitchyardError(e) ? e.code : 'SY_ERR_INTERNAL',
          message: isSwitchyardError(e) ? e.message : 'internal error while scoring the rows',
        };
        for (const r of rows) results.set(r, failure);
        return;
      }
    }
  }
}

interface Failure {
  readonly failure: true;
  readonly code: string;
  readonly message: string;
}

function isFailure(v: unknown): v is Failure {
  return (v as Failure).failure === true;
}

function prefix(spec: V2Spec, r: ChunkRow): string {
  let s = `{"row":${r.r}`;
  if (spec.keyField !== null) s += `,"key":${JSON.stringify(r.k ?? null)}`;
  if (r.p) for (const n of spec.includedFields) s += `,${JSON.stringify(n)}:${JSON.stringify(r.p[n] ?? null)}`;
  return s;
}

function outputLine(job: V2Job, r: ChunkRow, outs: Record<string, string>): string {
  let s = prefix(job.spec, r);
  for (const [name, text] of Object.entries(outs)) s += `,${JSON.stringify(name)}:${text}`;
  return `${s}}`;
}

function errorLine(job: V2Job, r: ChunkRow, e: { code: string; message: string }): string {
  return `${prefix(job.spec, r)},"error":${JSON.stringify({ code: e.code, message: e.message })}}`;
}

/** Output rows (JSONL text parts) as one Parquet file: one column per field of the first row, in its order. */
async function* parquetOf(parts: AsyncIterable<string>): AsyncGenerator<Uint8Array> {
  let columns: string[] | null = null;
  const rows = async function* (): AsyncGenerator<Record<string, unknown>> {
    for await (const p of parts) {
      for (const l of linesOf(p)) {
        const row = JSON.parse(l) as Record<string, unknown>;
        columns ??= Object.keys(row);
        yield row;
      }
    }
  };
  // The columns are known once the first row is read: peek it, then write every row.
  const it = rows();
  const first = await it.next();
  if (first.done) return;
  const all = async function* (): AsyncGenerator<Record<string, unknown>> {
    yield first.value;
    yield* it;
  };
  const writer = new ByteWriter();
  await parquetWriteRows({ writer, rows: all(), columns: columns!.map((name) => ({ name })), rowGroupSize: 10_000 });
  yield writer.getBytes();
}
