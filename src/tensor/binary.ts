/**
 * @module
 * The binary tensor data extension's element encoding: fixed-size little-endian elements for numeric types,
 * BOOL as one byte, BYTES as a 4-byte little-endian length followed by the bytes, per element.
 */
import { err } from '../errors.js';
import type { DtypeInfo, NumericArray, TensorData } from './dtype.js';
import { newArray } from './tensor.js';

const IS_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
if (!IS_LE) throw new Error('Switchyard requires a little-endian host');

/** Decode `bytes` holding `count` elements of `dtype`: numbers copied into aligned storage, BYTES elements as views. */
export function decodeBinaryData(input: string, dtype: DtypeInfo, count: number, bytes: Uint8Array): TensorData {
  if (dtype.array === null) {
    const out: Uint8Array[] = [];
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let o = 0;
    while (o < bytes.length) {
      if (o + 4 > bytes.length) throw err('SY_ERR_INPUT_INVALID', `input "${input}": truncated BYTES element length at byte ${o}`);
      const len = view.getUint32(o, true);
      o += 4;
      if (o + len > bytes.length)
        throw err('SY_ERR_INPUT_INVALID', `input "${input}": BYTES element ${out.length} claims ${len} bytes, only ${bytes.length - o} left`);
      out.push(new Uint8Array(bytes.buffer, bytes.byteOffset + o, len)); // a plain view: the bytes as sent, no decoding
      o += len;
    }
    if (out.length !== count) {
      throw err('SY_ERR_INPUT_INVALID', `input "${input}": shape implies ${count} elements but binary data holds ${out.length}`);
    }
    return out;
  }
  const want = count * dtype.size;
  if (bytes.length !== want) {
    throw err('SY_ERR_INPUT_INVALID', `input "${input}": shape and datatype ${dtype.v2} imply ${want} bytes but binary_data_size is ${bytes.length}`);
  }
  const out = newArray(dtype, count);
  new Uint8Array(out.buffer, out.byteOffset, want).set(bytes);
  return out;
}

/** Encode a tensor's elements into the binary wire format (a view, without copying, for numeric types). */
export function encodeBinaryData(dtype: DtypeInfo, data: TensorData): Uint8Array {
  if (dtype.array !== null) {
    const a = data as NumericArray;
    return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  }
  const elements = data as Uint8Array[];
  let size = 0;
  for (const b of elements) size += 4 + b.length;
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (const b of elements) {
    out.writeUInt32LE(b.length, o);
    out.set(b, o + 4);
    o += 4 + b.length;
  }
  return out;
}
