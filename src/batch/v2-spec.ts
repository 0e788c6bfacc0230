/**
 * @module
 * A V2 batch job's spec: which model scores which file, how the file's columns map to the model's inputs, what
 * passes through to the output, the output format and the row-failure budget. {@link checkSpec} checks a spec
 * against the serving version's signature when the job is created (a bad spec is a 400 `SY_ERR_BATCH_SPEC`
 * naming the field); the file's content is checked when a worker reads it.
 */
import { extname } from 'node:path';
import { err } from '../errors.js';
import type { TensorSpecJson } from '../runtimes/index.js';

export const INPUT_FORMATS = ['jsonl', 'csv', 'parquet'] as const;
export type InputFormat = (typeof INPUT_FORMATS)[number];
export const OUTPUT_FORMATS = ['jsonl', 'parquet'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** Rows per chunk of a V2 job unless the spec says otherwise (rows are cheap next to LLM lines). */
export const DEFAULT_CHUNK_ROWS = 1000;
/** Most rows in one V2 job. */
export const MAX_JOB_ROWS = 2_000_000;
/** Output row fields the job itself writes (pass-through fields may not take these names). */
export const RESERVED_FIELDS = ['row', 'key', 'error'] as const;

/** Where the input comes from: an uploaded file (its id) or a path the server reads. */
export type InputSource = { readonly fileId: string } | { readonly path: string };

export interface V2Spec {
  readonly model: string;
  /** A version or alias, or null: the model's default route. */
  readonly version: string | null;
  readonly input: InputSource;
  readonly format: InputFormat;
  /** Model input → the column holding its values (an array, or a scalar for a one-element input) or the columns holding one element each. */
  readonly mapping: Readonly<Record<string, string | readonly string[]>>;
  /** A column copied to each output row as `key`, or null. */
  readonly keyField: string | null;
  /** Columns copied to each output (and error) row as they are. */
  readonly includedFields: readonly string[];
  /** Outputs to write, in order (null = all, in signature order). */
  readonly outputs: readonly string[] | null;
  readonly outputFormat: OutputFormat;
  /** Most failed rows before the job fails (null = never: failed rows are counted, the job completes). */
  readonly maxFailedRows: number | null;
  readonly chunkRows: number;
  /** POSTed the job (JSON) when it ends, or null. */
  readonly webhook: string | null;
  /** The API key that created it, or null. */
  readonly keyId: string | null;
  /** The job whose error file this job retries, or null. */
  readonly retryOf: string | null;
}

/** What a client sends to create a job (the API body, after JSON-schema checks of the types). */
export interface V2SpecRequest {
  readonly model: string;
  readonly version?: string | null;
  readonly input: { fileId?: string; path?: string };
  readonly format?: InputFormat;
  readonly mapping?: Readonly<Record<string, string | readonly string[]>> | null;
  readonly keyField?: string | null;
  readonly includedFields?: readonly string[];
  readonly outputs?: readonly string[] | null;
  readonly outputFormat?: OutputFormat;
  readonly maxFailedRows?: number | null;
  readonly chunkRows?: number;
  readonly webhook?: { url: string } | null;
}

function bad(param: string, message: string): never {
  throw err('SY_ERR_BATCH_SPEC', `${param}: ${message}`);
}

/** The input format from a file name's extension, or undefined. */
export function formatOf(name: string): InputFormat | undefined {
  const e = extname(name).toLowerCase();
  if (e === '.csv') return 'csv';
  if (e === '.jsonl' || e === '.ndjson') return 'jsonl';
  if (e === '.parquet' || e === '.pq') return 'parquet';
  return undefined;
}

/** Elements per row of an input (its shape after the batch dimension; -1 = any, as long as the rest fit). */
export function rowShape(spec: TensorSpecJson, batched: boolean): number[] {
  return batched ? spec.shape.slice(1) : [...spec.shape];
}

/**
 * Check a job request against the model's signature and return the spec. `filename` is the uploaded file's
 * name (its extension gives the default format). Throws SY_ERR_BATCH_SPEC naming the field.
 */
export function checkSpec(
  req: V2SpecRequest,
  sig: { inputs: readonly TensorSpecJson[]; outputs: readonly TensorSpecJson[] },
  ctx: { filename: string; keyId: string | null; retryOf?: string | null },
): V2Spec {
  const input: InputSource =
    req.input.fileId !== undefined && req.input.path === undefined
      ? { fileId: req.input.fileId }
      : req.input.path !== undefined && req.input.fileId === undefined
        ? { path: req.input.path }
        : bad('input', 'give exactly one of fileId (an uploaded file) and path (a file the server reads)');
  const format =
    req.format ??
    formatOf(ctx.filename) ??
    bad('format', `cannot tell the format of "${ctx.filename}" from its name: give format (${INPUT_FORMATS.join(', ')})`);
  const inputNames = new Set(sig.inputs.map((i) => i.name));
  const mapping: Record<string, string | readonly string[]> = {};
  for (const [name, cols] of Object.entries(req.mapping ?? {})) {
    if (!inputNames.has(name)) bad(`mapping.${name}`, `model "${req.model}" has no input "${name}" (inputs: ${[...inputNames].join(', ')})`);
    if (Array.isArray(cols) && cols.length === 0) bad(`mapping.${name}`, 'an empty list of columns');
    mapping[name] = cols;
  }
  // An input left out of the mapping reads the column with its own name.
  for (const i of sig.inputs) mapping[i.name] ??= i.name;
  const outputNames = sig.outputs.map((o) => o.name);
  const outputs = req.outputs ?? null;
  for (const o of outputs ?? []) if (!outputNames.includes(o)) bad('outputs', `model "${req.model}" has no output "${o}" (outputs: ${outputNames.join(', ')})`);
  if (outputs !== null && new Set(outputs).size !== outputs.length) bad('outputs', 'an output is named twice');
  const included = req.includedFields ?? [];
  const written = new Set<string>([...RESERVED_FIELDS, ...(outputs ?? outputNames)]);
  const seen = new Set<string>();
  for (const f of included) {
    if (written.has(f)) bad('includedFields', `"${f}" would clash with a field the job writes (${[...written].join(', ')})`);
    if (seen.has(f)) bad('includedFields', `"${f}" is listed twice`);
    seen.add(f);
  }
  const maxFailedRows = req.maxFailedRows ?? null;
  if (maxFailedRows !== null && (!Number.isInteger(maxFailedRows) || maxFailedRows < 0)) bad('maxFailedRows', 'a whole number ≥ 0, or null for no budget');
  const chunkRows = req.chunkRows ?? DEFAULT_CHUNK_ROWS;
  if (!Number.isInteger(chunkRows) || chunkRows < 1 || chunkRows > 100_000) bad('chunkRows', 'a whole number from 1 to 100000');
  let webhook: string | null = null;
  if (req.webhook) {
    let u: URL;
    try {
      u = new URL(req.webhook.url);
    } catch {
      bad('webhook.url', 'not a URL');
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') bad('webhook.url', 'must be http or https');
    webhook = u.href;
  }
  return {
    model: req.model,
    version: req.version ?? null,
    input,
    format,
    mapping,
    keyField: req.keyField ?? null,
    includedFields: included,
    outputs,
    outputFormat: req.outputFormat ?? 'jsonl',
    maxFailedRows,
    chunkRows,
    webhook,
    keyId: ctx.keyId,
    retryOf: ctx.retryOf ?? null,
  };
}
