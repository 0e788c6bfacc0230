/**
 * @module
 * The prediction log's export formats: JSONL (one record per line) and CSV (one line per request row).
 */
import { stringify, type Options as StringifyOptions } from 'csv-stringify/sync';
import type { PredictionRecord, TensorJson } from './types.js';

/** One JSON object per line (the key order of {@link PredictionRecord}), each line ending in "\n". */
export function toJsonl(records: readonly PredictionRecord[]): string {
  let out = '';
  for (const r of records) out += recordLine(r);
  return out;
}

/** {@link toJsonl}'s text, one line at a time (a response streams it in slices). */
export function* jsonlParts(records: readonly PredictionRecord[]): Generator<string> {
  for (const r of records) yield recordLine(r);
}

/** `{"predictions": [...]}` (what JSON.stringify writes), one record at a time. */
export function* jsonParts(records: readonly PredictionRecord[]): Generator<string> {
  yield '{"predictions":[';
  for (let i = 0; i < records.length; i++) yield (i === 0 ? '' : ',') + JSON.stringify(records[i]);
  yield ']}';
}

/** A record as one JSONL line, `at` first (readers may pick it out without parsing the line). */
export function recordLine(r: PredictionRecord): string {
  return (
    JSON.stringify({
      at: r.at,
      model: r.model,
      version: r.version,
      tenant: r.tenant,
      arm: r.arm,
      requestId: r.requestId,
      latencyMs: r.latencyMs,
      inputs: r.inputs,
      outputs: r.outputs,
    }) + '\n'
  );
}

/** Tensors with at most this many elements per row get one column per element. */
export const CSV_MAX_ELEMENT_COLUMNS = 64;

/** Empty strings quoted (`""`: an empty BYTES element), so that an empty cell means no value; CR and LF quoted too. */
const CSV_OPTIONS: StringifyOptions = {
  record_delimiter: 'windows',
  quoted_match: [/^$/, /[\r\n]/],
  cast: { boolean: (v) => String(v), number: (v) => String(v) },
};

type Cell = string | number | boolean | null;

/** Rows of a record: the dim 0 all its tensors share, or 1 (whole tensors) when they do not. */
function rowsOf(r: PredictionRecord): number {
  let rows = -1;
  for (const t of [...r.inputs, ...r.outputs]) {
    const d = t.shape[0];
    if (t.shape.length === 0 || d === undefined || d < 1) return 1;
    if (rows === -1) rows = d;
    else if (d !== rows) return 1;
  }
  return rows === -1 ? 1 : rows;
}

interface CsvTensor {
  readonly source: 'input' | 'output';
  readonly name: string;
  /** Elements per row when one column per element, else null (one JSON column). */
  perRow: number | null;
  headers: string[];
}

/**
 * CSV (RFC 4180: CRLF line ends, fields with `,` `"` CR or LF quoted, quotes doubled). One line per request
 * row: a request whose tensors all share dim 0 = N gives N lines (`row` 0..N-1); otherwise (a scalar, or
 * differing dim 0) one line with the whole tensors. Columns:
 *
 *   at, model, version, tenant, arm, request_id, latency_ms, row, then per tensor (inputs, then outputs, in
 *   first-seen order): `<tensor>[i]` for i < E when the tensor has the same number E ≤ 64 of elements per row in
 *   every record and is never truncated; else one column `<tensor>` holding the row's values as a JSON array
 *   (empty when the tensor was truncated).
 *
 * A header that would repeat another (an output named like an input, a tensor named like a fixed column) is
 * prefixed with `input:` / `output:`. Empty cell = no value (tensor absent, arm null, tenant ''); an empty
 * BYTES string is written quoted (`""`). Booleans are true/false; numbers in JavaScript's shortest form.
 */
export function toCsv(records: readonly PredictionRecord[]): string {
  let out = '';
  for (const part of csvParts(records)) out += part;
  return out;
}

/** Lines per csv-stringify call in {@link csvParts}. */
const CSV_SLICE_LINES = 256;

/** {@link toCsv}'s text in parts of up to 256 lines (the header first), produced as they are asked for. */
export function* csvParts(records: readonly PredictionRecord[]): Generator<string> {
  const fixed = ['at', 'model', 'version', 'tenant', 'arm', 'request_id', 'latency_ms', 'row'];
  const tensors = new Map<string, CsvTensor>();
  const rows = records.map(rowsOf);
  const survey = (source: 'input' | 'output', list: readonly TensorJson[], nRows: number): void => {
    for (const t of list) {
      const key = `${source}\u0000${t.name}`;
      const per = t.truncated === true || t.data.length % nRows !== 0 ? null : t.data.length / nRows;
      const cur = tensors.get(key);
      if (cur === undefined) tensors.set(key, { source, name: t.name, perRow: per !== null && per <= CSV_MAX_ELEMENT_COLUMNS ? per : null, headers: [] });
      else if (cur.perRow !== per) cur.perRow = null;
    }
  };
  for (const source of ['input', 'output'] as const) {
    records.forEach((r, i) => survey(source, source === 'input' ? r.inputs : r.outputs, rows[i]!));
  }
  const used = new Set(fixed);
  for (const t of tensors.values()) {
    const make = (base: string): string[] => (t.perRow === null ? [base] : Array.from({ length: t.perRow }, (_, i) => `${base}[${i}]`));
    let headers = make(t.name);
    if (headers.some((h) => used.has(h))) headers = make(`${t.source}:${t.name}`);
    for (let k = 2; headers.some((h) => used.has(h)); k++) headers = make(`${t.source}:${t.name}#${k}`);
    for (const h of headers) used.add(h);
    t.headers = headers;
  }
  const columns = [...tensors.values()];
  let lines: Cell[][] = [[...fixed, ...columns.flatMap((t) => t.headers)]];
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    const nRows = rows[i]!;
    const byKey = new Map<string, TensorJson>();
    for (const t of r.inputs) byKey.set(`input\u0000${t.name}`, t);
    for (const t of r.outputs) byKey.set(`output\u0000${t.name}`, t);
    const head: Cell[] = [r.at, r.model, r.version, r.tenant === '' ? null : r.tenant, r.arm, r.requestId, r.latencyMs];
    for (let row = 0; row < nRows; row++) {
      const cells: Cell[] = [...head, row];
      for (const c of columns) {
        const t = byKey.get(`${c.source}\u0000${c.name}`);
        if (c.perRow !== null) {
          const per = c.perRow;
          for (let e = 0; e < per; e++) cells.push(t === undefined ? null : (t.data[row * per + e] ?? null));
        } else if (t === undefined || t.truncated === true) {
          cells.push(null);
        } else {
          const per = t.data.length / nRows;
          cells.push(JSON.stringify(t.data.slice(row * per, (row + 1) * per)));
        }
      }
      lines.push(cells);
    }
    if (lines.length >= CSV_SLICE_LINES) {
      yield stringify(lines, CSV_OPTIONS);
      lines = [];
    }
  }
  if (lines.length > 0) yield stringify(lines, CSV_OPTIONS);
}
