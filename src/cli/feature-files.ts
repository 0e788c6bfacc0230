/**
 * @module
 * The files and flags of `switchyard features`: definition files (JSON or YAML), rows as CSV or JSON Lines (typed
 * by the view's columns), `--entity` and `--features` values, chunking of pushes, and CSV / JSON Lines output.
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { stringify } from 'csv-stringify/sync';
import { parse as parseYaml } from 'yaml';
import { CsvSyntaxError, csvRecordsSync, type CsvRecord } from '../csv.js';
import type { DefinitionKind, ValueType } from '../features/index.js';
import { CliError } from './client.js';

type Json = Record<string, unknown>;

export type KindPlural = 'entities' | 'views' | 'services';

export const KINDS: Readonly<Record<KindPlural, { kind: DefinitionKind; text: string }>> = {
  entities: { kind: 'entity', text: 'entity' },
  views: { kind: 'view', text: 'feature view' },
  services: { kind: 'service', text: 'feature service' },
};

/** A definition kind as typed on the command line (singular or plural). */
export function kindArg(v: string): KindPlural {
  const k = v.trim().toLowerCase();
  for (const [plural, info] of Object.entries(KINDS)) if (k === plural || k === info.kind) return plural as KindPlural;
  throw new InvalidArgumentError('must be entity, view or service (or entities, views, services)');
}
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function readText(path: string): Promise<string> {
  try {
    return path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

export const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Definitions to apply, in order: entities, then views, then services. */
export interface ApplyPlan {
  readonly entities: Json[];
  readonly views: Json[];
  readonly services: Json[];
}

/** A definitions file: `{entities: [...], views: [...], services: [...]}` as JSON (a .json name) or YAML; each definition has a name. */
export function parseApplyFile(text: string, source: string): ApplyPlan {
  let doc: unknown;
  const json = extname(source).toLowerCase() === '.json';
  try {
    doc = json ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new CliError(`${source}: not valid ${json ? 'JSON' : 'YAML'}: ${(e as Error).message}`);
  }
  if (!isObject(doc)) throw new CliError(`${source}: must be an object with "entities", "views" and/or "services" lists`);
  const extra = Object.keys(doc).filter((k) => !Object.hasOwn(KINDS, k));
  if (extra.length)
    throw new CliError(`${source}: unknown key${extra.length > 1 ? 's' : ''} ${extra.map((k) => `"${k}"`).join(', ')} (allowed: entities, views, services)`);
  const plan: Record<KindPlural, Json[]> = { entities: [], views: [], services: [] };
  for (const plural of Object.keys(KINDS) as KindPlural[]) {
    const list = doc[plural];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) throw new CliError(`${source}: "${plural}" must be a list`);
    const seen = new Set<string>();
    list.forEach((d: unknown, i) => {
      if (!isObject(d)) throw new CliError(`${source}: ${plural}[${i}] must be an object`);
      const name = d['name'];
      if (typeof name !== 'string' || name === '') throw new CliError(`${source}: ${plural}[${i}].name is required`);
      if (seen.has(name)) throw new CliError(`${source}: ${plural} has "${name}" twice`);
      seen.add(name);
      plan[plural].push(d);
    });
  }
  if (plan.entities.length + plan.views.length + plan.services.length === 0)
    throw new CliError(`${source}: no definitions (expected "entities", "views" and/or "services" lists)`);
  return plan;
}

/** One CSV record: cells by column; null = an empty unquoted cell. */
export type CsvRow = Record<string, string | null>;

/** RFC 4180 CSV with a header row (quotes, "" escapes, line breaks inside quotes); blank lines are skipped. */
export function parseCsv(text: string, where: string): CsvRow[] {
  let records: CsvRecord[];
  try {
    records = csvRecordsSync(text);
  } catch (e) {
    if (e instanceof CsvSyntaxError) throw new CliError(`${where} ${e.message}`);
    throw e;
  }
  const head = records.shift();
  if (head === undefined) throw new CliError(`${where}: empty (a CSV needs a header row)`);
  const header = head.cells.map((c) => c.text.trim());
  const seen = new Set<string>();
  for (const h of header) {
    if (h === '') throw new CliError(`${where} line ${head.line}: empty column name in the header`);
    if (seen.has(h)) throw new CliError(`${where} line ${head.line}: column "${h}" appears twice in the header`);
    seen.add(h);
  }
  return records.map((r) => {
    if (r.cells.length !== header.length) throw new CliError(`${where} line ${r.line}: expected ${header.length} fields, got ${r.cells.length}`);
    const row: CsvRow = {};
    header.forEach((h, i) => {
      const c = r.cells[i]!;
      row[h] = c.quoted ? c.text : c.text.trim() === '' ? null : c.text;
    });
    return row;
  });
}

/** JSON Lines: one object per line; blank lines are skipped. */
export function parseJsonl(text: string, where: string): Json[] {
  const out: Json[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new CliError(`${where} line ${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    if (!isObject(v)) throw new CliError(`${where} line ${i + 1}: must be a JSON object`);
    out.push(v);
  });
  return out;
}

export type RowFormat = 'csv' | 'jsonl';

/** csv for .csv, jsonl for .jsonl / .ndjson / .json; undefined otherwise. */
export function formatOf(path: string): RowFormat | undefined {
  const e = extname(path).toLowerCase();
  if (e === '.csv') return 'csv';
  if (e === '.jsonl' || e === '.ndjson' || e === '.json') return 'jsonl';
  return undefined;
}

/** Column types for CSV cells (pushed rows): join keys and features by their definitions. */
export type ColumnTypes = ReadonlyMap<string, ValueType>;

const INTEGER = /^[-+]?\d+$/;
const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

/**
 * CSV rows as JSON rows by column type: numbers for int64/float columns, booleans (true/false/1/0) for bool,
 * text for string columns and join keys (int64 join keys travel as integer strings), an epoch-ms `event_time`
 * or `timestamp` as a number; empty unquoted cells are left out. Columns without a type stay text.
 */
export function typedRows(rows: readonly CsvRow[], types: ColumnTypes, where: string, joinKeys: ReadonlySet<string> = new Set()): Json[] {
  return rows.map((r, i) => {
    const out: Json = {};
    for (const [col, cell] of Object.entries(r)) {
      if (cell === null) continue;
      const at = (): string => `${where} row ${i + 1}, column "${col}"`;
      const type = joinKeys.has(col) ? undefined : types.get(col);
      const t = cell.trim();
      if ((col === 'event_time' || col === 'timestamp') && INTEGER.test(t)) out[col] = Number(t);
      else if (type === 'int64') {
        if (!INTEGER.test(t) || !Number.isSafeInteger(Number(t))) throw new CliError(`${at()}: ${JSON.stringify(cell)} is not an integer`);
        out[col] = Number(t);
      } else if (type === 'float64' || type === 'float32') {
        if (!NUMBER.test(t)) throw new CliError(`${at()}: ${JSON.stringify(cell)} is not a number`);
        out[col] = Number(t);
      } else if (type === 'bool') {
        const b = t.toLowerCase();
        if (b === 'true' || b === '1') out[col] = true;
        else if (b === 'false' || b === '0') out[col] = false;
        else throw new CliError(`${at()}: ${JSON.stringify(cell)} is not a boolean (true, false, 1, 0)`);
      } else out[col] = cell;
    }
    return out;
  });
}

/** Split into chunks of at most `size`. */
export function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** The push id of chunk `n` (0-based) of `count`: the id itself for one chunk, else `<id>-<n+1>`. */
export const chunkPushId = (id: string, n: number, count: number): string => (count === 1 ? id : `${id}-${n + 1}`);

/** `--entity k=v[,k2=v2]`: one entity per flag (a composite key as comma-separated pairs). */
export function entityArg(v: string, prev: Json[] = []): Json[] {
  const e: Json = {};
  for (const part of v.split(',')) {
    const i = part.indexOf('=');
    const k = part.slice(0, i).trim();
    if (i <= 0 || k === '') throw new InvalidArgumentError('must be key=value (a composite key as k1=v1,k2=v2), e.g. user_id=42');
    if (Object.hasOwn(e, k)) throw new InvalidArgumentError(`join key "${k}" given twice`);
    e[k] = part.slice(i + 1).trim();
  }
  return [...prev, e];
}

/** Comma-separated feature refs ("view:feature"). */
export function featuresArg(v: string): string[] {
  const refs = v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (refs.length === 0) throw new InvalidArgumentError('give at least one feature as view:feature');
  for (const r of refs) if (!/^[^:]+:[^:]+$/.test(r)) throw new InvalidArgumentError(`"${r}" is not a feature reference (view:feature)`);
  return refs;
}

const cellText = (v: unknown): string =>
  v === null || v === undefined ? '' : typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);

/** Rows as CSV: columns in order of first appearance, null as an empty cell; text with edge spaces quoted. */
export function toCsv(rows: readonly Json[]): string {
  const cols: string[] = [];
  const seen = new Set<string>();
  for (const r of rows) {
    for (const k of Object.keys(r)) {
      if (seen.has(k)) continue;
      seen.add(k);
      cols.push(k);
    }
  }
  return stringify([cols, ...rows.map((r) => cols.map((c) => cellText(r[c])))], { quoted_match: [/[\r\n]/, /^\s|\s$/] });
}

export const toJsonl = (rows: readonly Json[]): string => rows.map((r) => JSON.stringify(r)).join('\n') + (rows.length ? '\n' : '');
