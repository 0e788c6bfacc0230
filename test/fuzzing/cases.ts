/**
 * @module
 * Seeded generators of hostile HTTP requests for the fuzz suite (in the spirit of undici's test/fuzzing/): each
 * case starts from a valid body of one surface (V2 JSON, V2 binary extension, compressed V2, OpenAI bodies,
 * admin JSON bodies, model uploads) and breaks it in one to three ways — values of the wrong type, deep
 * nesting, huge or negative shapes, truncation, byte flips, bad headers, compression bombs, malformed
 * multipart. The same seed always yields the same cases, so a failure is replayed by its seed and index.
 */
import { deflateSync, gzipSync } from 'node:zlib';
import { prng } from '../../tools/prng.js';

export interface FuzzCase {
  /** Which generator made it (for the report). */
  readonly kind: string;
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH';
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer | null;
}

/** A seeded random source with the helpers the generators use. */
export class Rand {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = prng(seed);
  }
  float(): number {
    return this.#next();
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.#next() * (hi - lo + 1));
  }
  bool(p = 0.5): boolean {
    return this.#next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.#next() * xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.#next() * 256);
    return b;
  }
}

const NASTY_STRINGS = [
  '',
  ' ',
  '\u0000',
  '\ud800',
  '\udfff',
  'é✓',
  '💥'.repeat(50),
  '"',
  '\\',
  '{"a":',
  '../../etc/passwd',
  '%00',
  'x'.repeat(4096),
  '__proto__',
  'constructor',
];
/** Path segments, already percent-encoded where needed. */
const PATH_STRINGS = ['%00', '%2e%2e', '..', '%F0%9F%92%A5', 'x'.repeat(2000), '%ff%fe', 'mlp%2Finfer', '__proto__', '%20'];
const NASTY_NUMBERS = [
  0,
  -0,
  -1,
  1,
  0.5,
  -0.5,
  1e308,
  -1e308,
  5e-324,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  2 ** 53 + 2,
  -(2 ** 53) - 2,
  2 ** 63,
  1e21,
  65536,
  255,
  256,
  299,
  300,
  1000,
];

/** A deeply nested JSON array around `leaf`, as text (JSON.stringify of such a value would itself overflow). */
export function nestedText(depth: number, leaf = '1'): string {
  return '['.repeat(depth) + leaf + ']'.repeat(depth);
}

const DEEP = '\u0000DEEP';

/** A random JSON value, sometimes hostile. Deep nesting is left as a placeholder spliced in as text. */
function randomValue(r: Rand, depth = 0): unknown {
  switch (r.int(0, depth > 2 ? 5 : 9)) {
    case 0:
      return null;
    case 1:
      return r.bool();
    case 2:
      return r.pick(NASTY_NUMBERS);
    case 3:
      return r.pick(NASTY_STRINGS);
    case 4:
      return r.int(-5, 70);
    case 5:
      return `s${r.int(0, 99)}`;
    case 6:
      return Array.from({ length: r.int(0, 4) }, () => randomValue(r, depth + 1));
    case 7:
      return Object.fromEntries(
        Array.from({ length: r.int(0, 3) }, () => [r.pick(['name', 'data', 'shape', 'datatype', 'parameters', 'x', '__proto__']), randomValue(r, depth + 1)]),
      );
    case 8:
      return `${DEEP}${r.int(2000, 12_000)}`;
    default:
      return Array.from({ length: r.int(0, 3) }, () => (r.int(0, 1) ? [randomValue(r, depth + 1)] : r.float()));
  }
}

/** Replace one random node of `v` (objects and arrays walked) with a random value, or delete a key. */
function mutate(v: unknown, r: Rand): unknown {
  if (Array.isArray(v) && v.length > 0 && r.bool(0.7)) {
    const i = r.int(0, v.length - 1);
    const copy = [...v];
    copy[i] = mutate(copy[i], r);
    return copy;
  }
  if (v !== null && typeof v === 'object' && !Array.isArray(v) && r.bool(0.75)) {
    const keys = Object.keys(v);
    if (keys.length === 0) return randomValue(r);
    const k = r.pick(keys);
    const copy: Record<string, unknown> = { ...(v as Record<string, unknown>) };
    if (r.bool(0.15)) delete copy[k];
    else copy[k] = mutate(copy[k], r);
    if (r.bool(0.1)) copy[r.pick(['extra', 'parameters', 'id', 'outputs'])] = randomValue(r);
    return copy;
  }
  return randomValue(r);
}

/** JSON text of `v` with DEEP placeholders expanded into deeply nested arrays. */
function toJson(v: unknown): string {
  return JSON.stringify(v).replace(/"\\u0000DEEP(\d+)"/g, (_, d: string) => nestedText(Number(d)));
}

/** Break serialized bytes: truncate, flip bytes, or splice garbage. */
function corrupt(b: Buffer, r: Rand): Buffer {
  switch (r.int(0, 2)) {
    case 0:
      return b.subarray(0, r.int(0, b.length));
    case 1: {
      const c = Buffer.from(b);
      for (let k = r.int(1, 8); k > 0 && c.length; k--) c[r.int(0, c.length - 1)] = r.int(0, 255);
      return c;
    }
    default:
      return Buffer.concat([b.subarray(0, r.int(0, b.length)), r.bytes(r.int(1, 64)), b.subarray(r.int(0, b.length))]);
  }
}

const JSON_HEADERS = { 'content-type': 'application/json' };

// ---- V2 ----

const V2_MODELS = ['mlp', 'encoder', 'all_types'] as const;
const SEQ = 16;

function v2Valid(r: Rand, model: (typeof V2_MODELS)[number]): Record<string, unknown> {
  const rows = r.int(1, 3);
  if (model === 'mlp') return { inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 64], data: Array.from({ length: rows * 64 }, () => r.float()) }] };
  if (model === 'encoder')
    return { inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [rows, SEQ], data: Array.from({ length: rows * SEQ }, () => r.int(0, 299)) }] };
  const type = r.pick(['BOOL', 'UINT8', 'INT32', 'INT64', 'FP16', 'FP32', 'FP64', 'BYTES']);
  const el = (): unknown =>
    type === 'BOOL' ? r.bool() : type === 'BYTES' ? r.pick(NASTY_STRINGS.slice(0, 8)) : type.startsWith('FP') ? r.float() : r.int(0, 100);
  return {
    inputs: [{ name: `in_${type.toLowerCase()}`, datatype: type, shape: [rows, 2], data: Array.from({ length: rows * 2 }, el) }],
    outputs: [{ name: `out_${type.toLowerCase()}`, parameters: r.bool() ? { binary_data: r.bool() } : {} }],
  };
}

function v2Path(r: Rand, model: string): string {
  if (r.bool(0.9)) return `/v2/models/${model}/infer`;
  return r.pick([
    `/v2/models/${model}/versions/${r.pick(['1', '0', '-1', 'abc', '99999999999999999999', '1.5'])}/infer`,
    `/v2/models/${r.pick(PATH_STRINGS)}/infer`,
    '/v2/models//infer',
  ]);
}

function v2Json(r: Rand): FuzzCase {
  const model = r.pick(V2_MODELS);
  let body: unknown = v2Valid(r, model);
  for (let k = r.int(1, 3); k > 0; k--) body = mutate(body, r);
  let bytes: Buffer = Buffer.from(toJson(body));
  if (r.bool(0.15)) bytes = corrupt(bytes, r);
  const headers: Record<string, string> = { ...JSON_HEADERS };
  if (r.bool(0.1)) headers['x-request-timeout-ms'] = String(r.pick(NASTY_NUMBERS));
  if (r.bool(0.05))
    headers['content-type'] = r.pick(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data', '', 'application/json; charset=latin1']);
  return { kind: 'v2-json', method: 'POST', path: v2Path(r, model), headers, body: bytes };
}

/** The binary extension: a JSON header naming binary_data_size per input, then raw little-endian bytes. */
function v2Binary(r: Rand): FuzzCase {
  const model = r.pick(['mlp', 'encoder'] as const);
  const rows = r.int(1, 2);
  const [name, datatype, width, size] = model === 'mlp' ? ['features', 'FP32', 64, 4] : ['input_ids', 'INT64', SEQ, 8];
  let data: Buffer = Buffer.alloc(rows * width * size);
  if (model === 'encoder')
    for (let i = 0; i < rows * width; i++)
      data.writeBigInt64LE(BigInt(r.bool(0.05) ? r.pick(NASTY_NUMBERS.filter(Number.isSafeInteger)) : r.int(0, 299)), i * 8);
  else for (let i = 0; i < rows * width; i++) data.writeFloatLE(r.float(), i * 4);
  let header: unknown = {
    inputs: [{ name, datatype, shape: [rows, width], parameters: { binary_data_size: data.length } }],
    outputs: [{ name: model === 'mlp' ? 'score' : 'embedding', parameters: { binary_data: r.bool() } }],
  };
  if (r.bool(0.6)) header = mutate(header, r);
  if (r.bool(0.2)) data = corrupt(data, r);
  const head = Buffer.from(toJson(header));
  const claimed = r.bool(0.7) ? head.length : r.pick([0, -1, head.length + r.int(-8, 8), 2 ** 40, Number.NaN]);
  return {
    kind: 'v2-binary',
    method: 'POST',
    path: v2Path(r, model),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(claimed) },
    body: Buffer.concat([head, data]),
  };
}

/** Compressed V2 bodies: valid, corrupt, the wrong encoding, and bombs (tiny bodies inflating past the limit). */
function v2Compressed(r: Rand, bombBytes: number): FuzzCase {
  const model = r.pick(['mlp', 'encoder'] as const);
  const json = Buffer.from(toJson(v2Valid(r, model)));
  const encoding = r.pick(['gzip', 'deflate', 'br', 'gzip, deflate', 'x-unknown', 'identity']);
  let body: Buffer;
  switch (r.int(0, 3)) {
    case 0:
      body = Buffer.alloc(bombBytes, r.bool() ? 0x20 : 0x5b);
      break; // a bomb: spaces or '[' repeated
    case 1:
      body = corrupt(json, r);
      break;
    default:
      body = json;
  }
  const packed = encoding === 'deflate' ? deflateSync(body) : encoding.startsWith('gzip') ? gzipSync(body) : body;
  const sent = r.bool(0.15) ? corrupt(packed, r) : packed;
  return { kind: 'v2-compressed', method: 'POST', path: `/v2/models/${model}/infer`, headers: { ...JSON_HEADERS, 'content-encoding': encoding }, body: sent };
}

// ---- OpenAI ----

function openai(r: Rand): FuzzCase {
  const path = r.pick(['/v1/embeddings', '/v1/embeddings', '/v1/chat/completions', '/v1/completions']);
  const valid =
    path === '/v1/embeddings'
      ? {
          model: 'text-embed',
          input: r.bool() ? 'hello world' : ['a', 'bb', 'é✓'],
          ...(r.bool() ? { dimensions: r.int(1, 32) } : {}),
          ...(r.bool() ? { encoding_format: r.pick(['float', 'base64']) } : {}),
        }
      : path === '/v1/completions'
        ? { model: 'text-embed', prompt: 'hi', max_tokens: 4 }
        : { model: r.pick(['text-embed', 'nope']), messages: [{ role: 'user', content: 'hi' }], stream: r.bool(), max_tokens: 4 };
  let body: unknown = valid;
  for (let k = r.int(0, 3); k > 0; k--) body = mutate(body, r);
  let bytes: Buffer = Buffer.from(toJson(body));
  if (r.bool(0.1)) bytes = corrupt(bytes, r);
  return { kind: 'openai', method: 'POST', path, headers: { ...JSON_HEADERS }, body: bytes };
}

// ---- admin ----

const ADMIN_BODIES: ReadonlyArray<(r: Rand) => { method: FuzzCase['method']; path: string; body: unknown }> = [
  (r) => ({ method: 'POST', path: '/api/v1/models', body: { name: `fz-${r.int(0, 50)}`, description: 'fuzz', tags: { team: 'a' } } }),
  (r) => ({ method: 'PATCH', path: `/api/v1/models/${r.pick(['aux', 'nope'])}`, body: { description: 'x', tags: { k: 'v' } } }),
  (r) => ({
    method: 'PUT',
    path: `/api/v1/models/aux/routing`,
    body: { arms: [{ name: 'a', target: '1', weight: r.int(0, 100) }], sticky: { key: 'header:x-user-id', seed: 's' } },
  }),
  (r) => ({ method: 'POST', path: '/api/v1/tenants', body: { name: `t-${r.int(0, 50)}`, tier: r.pick(['standard', 'free', 'x']) } }),
  (r) => ({ method: 'POST', path: `/api/v1/tenants/t-${r.int(0, 5)}/keys`, body: { scopes: ['infer'], name: 'k' } }),
  (r) => ({ method: 'POST', path: '/api/v1/experiments', body: { id: `e-${r.int(0, 50)}`, model: 'aux' } }),
  (r) => ({ method: 'PUT', path: `/api/v1/alerts/rules/r-${r.int(0, 20)}`, body: { kind: 'error_rate', model: 'aux', threshold: 0.5, forSeconds: 60 } }),
  (r) => ({ method: 'PUT', path: `/api/v1/features/entities/ent${r.int(0, 5)}`, body: { joinKeys: [{ name: 'user_id', type: 'int64' }] } }),
  (r) => ({
    method: 'POST',
    path: '/api/v1/features/push',
    body: { view: 'profile', rows: [{ user_id: r.int(0, 9), event_timestamp: '2026-01-01T00:00:00Z', f1: r.float() }] },
  }),
  (r) => ({ method: 'PUT', path: `/api/v1/models/aux/aliases/${r.pick(['prod', '1', '-'])}`, body: { version: r.int(0, 3) } }),
];

function admin(r: Rand): FuzzCase {
  const t = r.pick(ADMIN_BODIES)(r);
  let body: unknown = t.body;
  for (let k = r.int(1, 3); k > 0; k--) body = mutate(body, r);
  let bytes: Buffer = Buffer.from(toJson(body));
  if (r.bool(0.1)) bytes = corrupt(bytes, r);
  return { kind: 'admin', method: t.method, path: t.path, headers: { ...JSON_HEADERS }, body: bytes };
}

/** Model uploads: raw bytes that are no ONNX model, and multipart bodies broken in the ways clients break them. */
function upload(r: Rand): FuzzCase {
  const path = `/api/v1/models/up${r.int(0, 3)}/versions`;
  if (r.bool(0.3)) return { kind: 'upload-raw', method: 'POST', path, headers: { 'content-type': 'application/octet-stream' }, body: r.bytes(r.int(0, 2048)) };
  const boundary = `----fz${r.int(0, 1e6)}`;
  const metadata = toJson(r.bool(0.5) ? { description: 'x', alias: r.pick(['prod', '1', '']) } : mutate({ description: 'x' }, r));
  const parts = [
    `--${boundary}\r\nContent-Disposition: form-data; name="${r.pick(['metadata', 'metadata', 'other'])}"\r\n\r\n${metadata}\r\n`,
    `--${boundary}\r\nContent-Disposition: form-data; name="${r.pick(['file', 'file', 'x'])}"; filename="model.onnx"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  ];
  let body: Buffer = Buffer.concat([Buffer.from(parts.join('')), r.bytes(r.int(0, 512)), Buffer.from(`\r\n--${boundary}--\r\n`)]);
  body = r.bool(0.7) ? corrupt(body, r) : body;
  const ct = r.bool(0.85)
    ? `multipart/form-data; boundary=${r.bool(0.9) ? boundary : 'wrong'}`
    : r.pick(['multipart/form-data', 'multipart/form-data; boundary=', 'multipart/mixed; boundary=x']);
  return { kind: 'upload-multipart', method: 'POST', path, headers: { 'content-type': ct }, body };
}

/** A few requests that carry no body or an absurd one. */
function misc(r: Rand): FuzzCase {
  return r.pick<() => FuzzCase>([
    () => ({ kind: 'misc', method: 'POST', path: '/v2/models/mlp/infer', headers: { ...JSON_HEADERS }, body: null }),
    () => ({ kind: 'misc', method: 'POST', path: '/v2/models/mlp/infer', headers: { 'content-type': 'application/json' }, body: r.bytes(r.int(1, 256)) }),
    () => ({ kind: 'misc', method: 'GET', path: `/v2/models/${r.pick(PATH_STRINGS)}/ready`, headers: {}, body: null }),
    () => ({
      kind: 'misc',
      method: 'POST',
      path: '/v2/models/mlp/infer',
      headers: { ...JSON_HEADERS },
      body: Buffer.from(`{"inputs":[{"name":"features","datatype":"FP32","shape":[1,64],"data":${nestedText(r.int(1000, 20_000))}}]}`),
    }),
  ])();
}

/**
 * The `i`-th case of the stream for `seed`. Each case has its own PRNG (seed, i), so a case can be replayed alone.
 * @param bombBytes the inflated size of compression bombs (more than the server's body limit).
 */
export function fuzzCase(seed: number, i: number, bombBytes: number): FuzzCase {
  const r = new Rand((seed * 1_000_003 + i) >>> 0);
  const roll = r.float();
  if (roll < 0.3) return v2Json(r);
  if (roll < 0.42) return v2Binary(r);
  if (roll < 0.5) return v2Compressed(r, bombBytes);
  if (roll < 0.64) return openai(r);
  if (roll < 0.84) return admin(r);
  if (roll < 0.95) return upload(r);
  return misc(r);
}
