/**
 * @module
 * Reading a version upload: metadata from the query string (raw `application/octet-stream` body) or from the
 * `metadata` JSON field (multipart), and a byte-counting pass-through that enforces the upload limit while the
 * artifact streams to the registry (the body is never buffered by the API unless a multipart `file` part
 * precedes its `metadata` field).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { err, isSwitchyardError } from '../../errors.js';
import type { Lineage, PushVersionInput } from '../../registry/index.js';

/** What an upload asks for: the registry's push input plus an alias to point at the new version. */
export interface UploadMeta {
  input: PushVersionInput;
  alias: string | null;
}

export interface UploadQuery {
  description?: string;
  alias?: string;
  tag?: string[];
  metric?: string[];
  param?: string[];
  source_run?: string;
  dataset?: string;
  code_ref?: string;
  version?: number;
}

function pairs(list: readonly string[] | undefined, field: string): [string, string][] {
  return (list ?? []).map((p) => {
    const i = p.indexOf('=');
    if (i <= 0) throw err('SY_ERR_BAD_REQUEST', `query parameter "${field}" must be key=value, got "${p}"`);
    return [p.slice(0, i), p.slice(i + 1)];
  });
}

function lineageOf(l: { sourceRun?: string | undefined; dataset?: string | undefined; codeRef?: string | undefined }): Lineage | undefined {
  const out: { sourceRun?: string; dataset?: string; codeRef?: string } = {};
  if (l.sourceRun !== undefined) out.sourceRun = l.sourceRun;
  if (l.dataset !== undefined) out.dataset = l.dataset;
  if (l.codeRef !== undefined) out.codeRef = l.codeRef;
  return Object.keys(out).length > 0 ? out : undefined;
}

function build(m: {
  description?: string | undefined;
  tags?: Record<string, string> | undefined;
  metrics?: Record<string, number> | undefined;
  params?: Record<string, string> | undefined;
  lineage?: Lineage | undefined;
  version?: number | undefined;
  alias?: string | undefined;
}): UploadMeta {
  const input: { -readonly [K in keyof PushVersionInput]: PushVersionInput[K] } = {};
  if (m.description !== undefined) input.description = m.description;
  if (m.tags !== undefined) input.tags = m.tags;
  if (m.metrics !== undefined) input.metrics = m.metrics;
  if (m.params !== undefined) input.params = m.params;
  if (m.lineage !== undefined) input.lineage = m.lineage;
  if (m.version !== undefined) input.version = m.version;
  if (m.alias !== undefined && m.alias === '') throw err('SY_ERR_BAD_REQUEST', 'alias must not be empty');
  return { input, alias: m.alias ?? null };
}

/** Metadata of a raw (octet-stream) upload from its query string. */
export function metaFromQuery(q: UploadQuery): UploadMeta {
  const metrics: Record<string, number> = {};
  for (const [k, v] of pairs(q.metric, 'metric')) {
    const n = v.trim() === '' ? Number.NaN : Number(v);
    if (!Number.isFinite(n)) throw err('SY_ERR_BAD_REQUEST', `query parameter "metric" ${k} must be a number, got "${v}"`);
    metrics[k] = n;
  }
  const tags = Object.fromEntries(pairs(q.tag, 'tag'));
  const params = Object.fromEntries(pairs(q.param, 'param'));
  return build({
    description: q.description,
    tags: q.tag?.length ? tags : undefined,
    metrics: q.metric?.length ? metrics : undefined,
    params: q.param?.length ? params : undefined,
    lineage: lineageOf({ sourceRun: q.source_run, dataset: q.dataset, codeRef: q.code_ref }),
    version: q.version,
    alias: q.alias,
  });
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function optString(o: Record<string, unknown>, key: string, where: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw err('SY_ERR_BAD_REQUEST', `${where}.${key} must be a string`);
  return v;
}

function map<T>(o: Record<string, unknown>, key: string, where: string, conv: (v: unknown) => T | undefined, what: string): Record<string, T> | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (!isObject(v)) throw err('SY_ERR_BAD_REQUEST', `${where}.${key} must be an object of ${what}s`);
  const out: Record<string, T> = {};
  for (const [k, x] of Object.entries(v)) {
    const c = conv(x);
    if (c === undefined) throw err('SY_ERR_BAD_REQUEST', `${where}.${key}.${k} must be a ${what}`);
    out[k] = c;
  }
  return out;
}

const asString = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const asScalarString = (v: unknown): string | undefined =>
  typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined;
const asNumber = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

const META_KEYS = new Set(['description', 'alias', 'tags', 'metrics', 'params', 'lineage', 'version']);
const LINEAGE_KEYS = new Set(['sourceRun', 'dataset', 'codeRef']);

/** Metadata of a multipart upload from its `metadata` field (JSON). */
export function metaFromJson(text: string): UploadMeta {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw err('SY_ERR_BAD_REQUEST', `metadata is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(raw)) throw err('SY_ERR_BAD_REQUEST', 'metadata must be a JSON object');
  for (const k of Object.keys(raw)) {
    if (!META_KEYS.has(k)) throw err('SY_ERR_BAD_REQUEST', `metadata has unknown field "${k}" (expected ${[...META_KEYS].join(', ')})`);
  }
  let lineage: Lineage | undefined;
  if (raw['lineage'] !== undefined) {
    const l = raw['lineage'];
    if (!isObject(l)) throw err('SY_ERR_BAD_REQUEST', 'metadata.lineage must be an object {sourceRun, dataset, codeRef}');
    for (const k of Object.keys(l)) {
      if (!LINEAGE_KEYS.has(k)) throw err('SY_ERR_BAD_REQUEST', `metadata.lineage has unknown field "${k}" (expected sourceRun, dataset, codeRef)`);
    }
    lineage = lineageOf({
      sourceRun: optString(l, 'sourceRun', 'metadata.lineage'),
      dataset: optString(l, 'dataset', 'metadata.lineage'),
      codeRef: optString(l, 'codeRef', 'metadata.lineage'),
    });
  }
  const version = raw['version'];
  if (version !== undefined && !(typeof version === 'number' && Number.isInteger(version) && version >= 1)) {
    throw err('SY_ERR_BAD_REQUEST', 'metadata.version must be a positive integer');
  }
  return build({
    description: optString(raw, 'description', 'metadata'),
    alias: optString(raw, 'alias', 'metadata'),
    tags: map(raw, 'tags', 'metadata', asString, 'string'),
    metrics: map(raw, 'metrics', 'metadata', asNumber, 'number'),
    params: map(raw, 'params', 'metadata', asScalarString, 'string'),
    lineage,
    version: version as number | undefined,
  });
}

export function tooLarge(limit: number): Error {
  return err('SY_ERR_BODY_TOO_LARGE', `model artifact is larger than the upload limit of ${limit} bytes`);
}

/** Pass-through that fails with SY_ERR_BODY_TOO_LARGE once more than `limit` bytes went through. */
export class ByteLimit extends Transform {
  bytes = 0;
  exceeded = false;
  constructor(private readonly limit: number) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      this.exceeded = true;
      cb(tooLarge(this.limit));
      return;
    }
    cb(null, chunk);
  }
}

/**
 * An error met while reading a multipart body (busboy's "Unexpected end of form", "Malformed part header", ...)
 * is the client's malformed upload: 400 naming it. Errors that already carry a catalog code or a status pass.
 */
export function multipartError(e: unknown): unknown {
  if (isSwitchyardError(e) || typeof (e as { statusCode?: unknown }).statusCode === 'number' || !(e instanceof Error)) return e;
  return err('SY_ERR_BAD_REQUEST', `multipart body is malformed: ${e.message}`);
}
