import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  concatRows,
  decodeBinaryData,
  decodeJsonData,
  DTYPES,
  encodeBinaryData,
  encodeJsonData,
  fromHalfBits,
  newArray,
  sliceRows,
  toHalfBits,
} from '../src/tensor/index.js';
import { SwitchyardError } from '../src/errors.js';

const utf8s = (xs: readonly string[]): Uint8Array[] => xs.map((x) => new Uint8Array(Buffer.from(x, 'utf8')));

describe('FP16 conversion', () => {
  it('round-trips exactly representable values and known bit patterns', () => {
    const cases: Array<[number, number]> = [
      [0, 0x0000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.5, 0x3800],
      [65504, 0x7bff],
      [2 ** -24, 0x0001],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
    ];
    for (const [v, bits] of cases) {
      assert.equal(toHalfBits(v), bits, `toHalfBits(${v})`);
      assert.equal(fromHalfBits(bits), v, `fromHalfBits(${bits})`);
    }
    assert.ok(Number.isNaN(fromHalfBits(toHalfBits(NaN))));
    assert.equal(toHalfBits(1e6), 0x7c00, 'overflow goes to +Inf');
    assert.equal(fromHalfBits(toHalfBits(0.1)), 0.0999755859375, 'rounds to nearest half');
  });
});

describe('JSON tensor data', () => {
  it('accepts nested and flat data equally', () => {
    const flat = decodeJsonData('x', DTYPES.FP32, 4, [1, 2, 3, 4]);
    const nested = decodeJsonData('x', DTYPES.FP32, 4, [
      [1, 2],
      [3, 4],
    ]);
    assert.deepEqual([...(nested as Float32Array)], [...(flat as Float32Array)]);
  });
  it('names the input, element and expected type on a bad element', () => {
    assert.throws(
      () => decodeJsonData('ids', DTYPES.INT32, 2, [1, 'a']),
      (e: SwitchyardError) => e.status === 400 && /input "ids": element 1 is "a", expected an integer/.test(e.message),
    );
    assert.throws(() => decodeJsonData('b', DTYPES.BOOL, 1, [1]), /expected true or false/);
    assert.throws(() => decodeJsonData('u', DTYPES.UINT8, 1, [256]), /expected an integer in \[0, 255\]/);
    assert.throws(() => decodeJsonData('i', DTYPES.INT8, 1, [1.5]), /element 0 is 1.5/);
    assert.throws(() => decodeJsonData('s', DTYPES.BYTES, 1, [3]), /expected a string/);
  });
  it('rejects a data length that does not match the shape', () => {
    assert.throws(() => decodeJsonData('x', DTYPES.FP32, 6, [1, 2, 3]), /shape implies 6 elements but data has 3/);
  });
  it('encodes every datatype exactly', () => {
    assert.equal(encodeJsonData(DTYPES.BOOL, new Uint8Array([1, 0])), '[true,false]');
    assert.equal(encodeJsonData(DTYPES.INT64, new BigInt64Array([-(2n ** 62n), 7n])), `[${-(2n ** 62n)},7]`);
    assert.equal(encodeJsonData(DTYPES.FP16, new Uint16Array([0x3c00, 0xc000])), '[1,-2]');
    assert.equal(encodeJsonData(DTYPES.FP32, new Float32Array([0.5, NaN])), '[0.5,null]');
    assert.equal(encodeJsonData(DTYPES.BYTES, utf8s(['a"b', 'ü'])), '["a\\"b","ü"]');
    assert.equal(encodeJsonData(DTYPES.UINT8, new Uint8Array(0)), '[]');
  });
});

describe('binary tensor data', () => {
  it('round-trips numeric and BYTES elements', () => {
    const f = new Float64Array([1.5, -2.25]);
    assert.deepEqual([...(decodeBinaryData('x', DTYPES.FP64, 2, encodeBinaryData(DTYPES.FP64, f)) as Float64Array)], [1.5, -2.25]);
    const strings = utf8s(['hello', '', 'wörld']);
    const bytes = encodeBinaryData(DTYPES.BYTES, strings);
    assert.equal(bytes.length, 3 * 4 + 5 + 0 + 6);
    assert.deepEqual(
      (decodeBinaryData('s', DTYPES.BYTES, 3, bytes) as Uint8Array[]).map((b) => new Uint8Array(b)),
      strings,
    );
  });
  it('decodes from an unaligned offset', () => {
    const buf = Buffer.alloc(9);
    buf.writeFloatLE(3.5, 1);
    buf.writeFloatLE(-1, 5);
    assert.deepEqual([...(decodeBinaryData('x', DTYPES.FP32, 2, buf.subarray(1)) as Float32Array)], [3.5, -1]);
  });
  it('rejects size mismatches and truncated BYTES', () => {
    assert.throws(() => decodeBinaryData('x', DTYPES.FP32, 3, new Uint8Array(8)), /imply 12 bytes but binary_data_size is 8/);
    assert.throws(() => decodeBinaryData('s', DTYPES.BYTES, 1, new Uint8Array([9, 0, 0, 0, 65])), /claims 9 bytes/);
    assert.throws(() => decodeBinaryData('s', DTYPES.BYTES, 2, encodeBinaryData(DTYPES.BYTES, utf8s(['a']))), /holds 1/);
  });
});

describe('row concat and slice', () => {
  it('concatenates along dim 0 and slices back without mixing rows', () => {
    const a = { dtype: DTYPES.INT32, shape: [1, 2], data: new Int32Array([1, 2]) };
    const b = { dtype: DTYPES.INT32, shape: [2, 2], data: new Int32Array([3, 4, 5, 6]) };
    const c = concatRows([a, b]);
    assert.deepEqual(c.shape, [3, 2]);
    assert.deepEqual([...(c.data as Int32Array)], [1, 2, 3, 4, 5, 6]);
    const s = sliceRows(c, 1, 2);
    assert.deepEqual(s.shape, [2, 2]);
    assert.deepEqual([...(s.data as Int32Array)], [3, 4, 5, 6]);
    const strs = concatRows([
      { dtype: DTYPES.BYTES, shape: [1], data: utf8s(['x']) },
      { dtype: DTYPES.BYTES, shape: [1], data: utf8s(['y']) },
    ]);
    assert.deepEqual(sliceRows(strs, 1, 1).data, utf8s(['y']));
  });
});

describe('newArray (small arrays on shared slabs)', () => {
  it('gives zeroed, aligned, non-overlapping views for small arrays and own buffers for large ones', () => {
    const fp32 = DTYPES.FP32;
    const int64 = DTYPES.INT64;
    const a = newArray(fp32, 3);
    const b = newArray(int64, 2);
    const c = newArray(fp32, 64);
    assert.ok(a instanceof Float32Array && b instanceof BigInt64Array && c instanceof Float32Array);
    for (const x of [a, b, c]) {
      assert.equal(x.byteOffset % 8, 0, 'aligned for every element size');
      assert.ok(
        Array.prototype.every.call(x, (v: number | bigint) => Number(v) === 0),
        'zeroed',
      );
    }
    (a as Float32Array).fill(1);
    (b as BigInt64Array).fill(2n);
    (c as Float32Array).fill(3);
    assert.deepEqual([...a], [1, 1, 1]);
    assert.deepEqual([...b], [2n, 2n]);
    assert.ok(
      (c as Float32Array).every((v) => v === 3),
      'writing one view leaves the others alone',
    );
    const big = newArray(fp32, 4096);
    assert.equal(big.byteOffset, 0);
    assert.equal(big.buffer.byteLength, 4096 * 4, 'a large array has its own buffer');
    // Many small arrays: when a slab is used up, a new one starts and the old views keep their values.
    const many = Array.from({ length: 2000 }, (_, i) => {
      const v = newArray(fp32, 16) as Float32Array;
      v.fill(i);
      return v;
    });
    many.forEach((v, i) =>
      assert.ok(
        v.every((x) => x === i),
        `array ${i} kept its values`,
      ),
    );
    assert.throws(() => newArray(DTYPES.BYTES, 1), /BYTES has no typed array/);
  });
});
