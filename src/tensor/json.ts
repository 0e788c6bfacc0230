/**
 * @module
 * V2 JSON tensor data: nested-or-flat `data` arrays → typed arrays (validated per element), and typed arrays →
 * the JSON text of a `data` array, written directly as a string (no intermediate arrays).
 */
import { err } from '../errors.js';
import { fromHalfBits, toHalfBits, type DtypeInfo, type NumericArray, type TensorData } from './dtype.js';
import { isWellFormed, utf8, utf8Text } from './bytes.js';
import { newArray } from './tensor.js';

const INT_RANGE: Record<string, readonly [number, number]> = {
  UINT8: [0, 0xff],
  UINT16: [0, 0xffff],
  UINT32: [0, 0xffffffff],
  INT8: [-0x80, 0x7f],
  INT16: [-0x8000, 0x7fff],
  INT32: [-0x80000000, 0x7fffffff],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  UINT64: [0, Number.MAX_SAFE_INTEGER],
};

/** Deepest nesting of a `data` array accepted when the caller does not give the shape's rank. */
const MAX_NESTING = 64;

/**
 * Nested `data` arrays → one flat array, iteratively (a hostile body nests thousands of levels: recursion would
 * overflow the stack). Nesting deeper than `maxDepth` levels is refused: a tensor of rank r nests at most r.
 */
function flatten(input: string, data: unknown[], maxDepth: number): unknown[] {
  if (data.length === 0 || !Array.isArray(data[0])) return data;
  const out: unknown[] = [];
  const arrays: unknown[][] = [data];
  const next: number[] = [0];
  while (arrays.length > 0) {
    const top = arrays.length - 1;
    const a = arrays[top]!;
    const i = next[top]!;
    if (i >= a.length) {
      arrays.pop();
      next.pop();
      continue;
    }
    next[top] = i + 1;
    const v = a[i];
    if (!Array.isArray(v)) {
      out.push(v);
      continue;
    }
    if (arrays.length >= maxDepth) {
      throw err('SY_ERR_INPUT_INVALID', `input "${input}": "data" nests arrays deeper than ${maxDepth} levels (at most one level per dimension of its shape)`);
    }
    arrays.push(v);
    next.push(0);
  }
  return out;
}

/** A short description of a JSON value for an error message (never the whole value: it may be huge or deep). */
export function describeJson(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.slice(0, 32));
  if (Array.isArray(v)) return 'an array';
  if (v !== null && typeof v === 'object') return 'an object';
  return String(v);
}

function bad(input: string, i: number, dtype: string, v: unknown, want: string): never {
  throw err('SY_ERR_INPUT_INVALID', `input "${input}": element ${i} is ${describeJson(v)}, expected ${want} for datatype ${dtype}`);
}

/**
 * Decode the `data` of one V2 JSON input.
 * @param count the element count the declared shape implies; a mismatch is a 400 naming both numbers.
 * @param rank the declared shape's rank, when known: `data` may nest at most that deep (a scalar's is flat).
 */
export function decodeJsonData(input: string, dtype: DtypeInfo, count: number, data: unknown, rank = MAX_NESTING): TensorData {
  if (!Array.isArray(data)) throw err('SY_ERR_INPUT_INVALID', `input "${input}": "data" must be an array`);
  const flat = flatten(input, data, Math.max(rank, 1));
  if (flat.length !== count) {
    throw err('SY_ERR_INPUT_INVALID', `input "${input}": shape implies ${count} elements but data has ${flat.length}`);
  }
  const v2 = dtype.v2;
  if (dtype.array === null) {
    const out: Uint8Array[] = new Array<Uint8Array>(count);
    for (let i = 0; i < count; i++) {
      const v = flat[i];
      if (typeof v !== 'string') bad(input, i, v2, v, 'a string');
      // A lone surrogate (JSON's "\ud800") has no UTF-8 encoding: refused rather than replaced by U+FFFD.
      if (!isWellFormed(v)) {
        throw err(
          'SY_ERR_NOT_REPRESENTABLE',
          `input "${input}": element ${i} holds an unpaired UTF-16 surrogate, which has no UTF-8 bytes; send arbitrary bytes with the binary tensor data extension`,
        );
      }
      out[i] = utf8(v);
    }
    return out;
  }
  const out = newArray(dtype, count);
  if (v2 === 'FP32' || v2 === 'FP64') {
    const o = out as Float32Array;
    for (let i = 0; i < count; i++) {
      const v = flat[i];
      if (typeof v !== 'number') bad(input, i, v2, v, 'a number');
      o[i] = v;
    }
  } else if (v2 === 'FP16') {
    const o = out as Uint16Array;
    for (let i = 0; i < count; i++) {
      const v = flat[i];
      if (typeof v !== 'number') bad(input, i, v2, v, 'a number');
      o[i] = toHalfBits(v);
    }
  } else if (v2 === 'BOOL') {
    const o = out as Uint8Array;
    for (let i = 0; i < count; i++) {
      const v = flat[i];
      if (typeof v !== 'boolean') bad(input, i, v2, v, 'true or false');
      o[i] = v ? 1 : 0;
    }
  } else {
    const [lo, hi] = INT_RANGE[v2]!;
    const want = `an integer in [${lo}, ${hi}]`;
    if (dtype.bigint) {
      const o = out as BigInt64Array;
      for (let i = 0; i < count; i++) {
        const v = flat[i];
        if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) bad(input, i, v2, v, want);
        o[i] = BigInt(v);
      }
    } else {
      const o = out as Int32Array;
      for (let i = 0; i < count; i++) {
        const v = flat[i];
        if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) bad(input, i, v2, v, want);
        o[i] = v;
      }
    }
  }
  return out;
}

/**
 * The JSON text of a flat `data` array for a tensor's elements. Non-finite floats are written as null. BYTES
 * elements are written as the strings their bytes encode in UTF-8; an element that is not valid UTF-8 cannot
 * be a JSON string and is refused (400 naming `name` and the element: ask for the output as binary data).
 */
export function encodeJsonData(dtype: DtypeInfo, data: TensorData, name = 'a tensor'): string {
  const n = data.length;
  if (n === 0) return '[]';
  if (dtype.array === null) {
    const elements = data as Uint8Array[];
    const texts = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const t = utf8Text(elements[i]!);
      if (t === null) {
        throw err(
          'SY_ERR_NOT_REPRESENTABLE',
          `${name}: BYTES element ${i} is not valid UTF-8 and cannot be carried in JSON; request it as binary data (parameters.binary_data: true)`,
        );
      }
      texts[i] = t;
    }
    return JSON.stringify(texts);
  }
  const a = data as NumericArray;
  let s = '[';
  switch (dtype.v2) {
    case 'BOOL':
      for (let i = 0; i < n; i++) s += (i ? ',' : '') + (a[i] ? 'true' : 'false');
      break;
    case 'FP16':
      for (let i = 0; i < n; i++) s += (i ? ',' : '') + num(fromHalfBits(a[i] as number));
      break;
    case 'FP32':
    case 'FP64':
      for (let i = 0; i < n; i++) s += (i ? ',' : '') + num(a[i] as number);
      break;
    default:
      // Integers (including bigint) print exactly.
      for (let i = 0; i < n; i++) s += (i ? ',' : '') + String(a[i]);
  }
  return s + ']';
}

function num(v: number): string {
  return Number.isFinite(v) ? String(v) : 'null';
}
