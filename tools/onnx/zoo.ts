/**
 * @module
 * The models Switchyard's examples, tests and benchmarks use, generated deterministically (seeded weights).
 * Each builder returns ONNX bytes. `writeModelRepository` lays them out as `DIR/<model>/<version>/model.onnx`.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { attr, GraphBuilder } from './graph.js';
import { OnnxType, type OnnxTypeCode } from './proto.js';

/** MLP 64 → 256 → 256 → 1 with ReLU and a sigmoid score; input `features` [N,64] FP32, output `score` [N,1]. */
export function mlp(seed = 7): Uint8Array {
  const g = new GraphBuilder('mlp', seed);
  let x = g.input({ name: 'features', type: OnnxType.FLOAT, shape: ['batch', 64] });
  const layer = (inp: string, fanIn: number, fanOut: number, act: 'Relu' | 'Sigmoid'): string => {
    const w = g.randomInit([fanIn, fanOut], 1 / Math.sqrt(fanIn));
    const b = g.randomInit([fanOut], 0.1, 'b');
    return g.op(act, [g.op('Add', [g.op('MatMul', [inp, w]), b])]);
  };
  x = layer(x, 64, 256, 'Relu');
  x = layer(x, 256, 256, 'Relu');
  const w = g.randomInit([256, 1], 1 / 16);
  const b = g.randomInit([1], 0.1, 'b');
  g.op('Sigmoid', [g.op('Add', [g.op('MatMul', [x, w]), b])], undefined, 'score');
  g.output({ name: 'score', type: OnnxType.FLOAT, shape: ['batch', 1] });
  return g.encode();
}

export interface EncoderOptions {
  layers?: number;
  dModel?: number;
  heads?: number;
  seqLen?: number;
  ffn?: number;
  vocab?: number;
  seed?: number;
}

/**
 * Transformer text encoder: `input_ids` [N,seq] INT64 → `embedding` [N,d] FP32 (mean-pooled),
 * pre-LayerNorm blocks with multi-head self-attention and a ReLU feed-forward.
 */
export function encoder(opts: EncoderOptions = {}): Uint8Array {
  const { layers = 4, dModel: d = 256, heads = 4, seqLen: s = 64, ffn = 1024, vocab = 1000, seed = 11 } = opts;
  const hd = d / heads;
  const g = new GraphBuilder('encoder', seed);
  const ids = g.input({ name: 'input_ids', type: OnnxType.INT64, shape: ['batch', s] });
  let x = g.op('Gather', [g.randomInit([vocab, d], 0.5, 'emb'), ids], { axis: attr.int(0) });
  x = g.op('Add', [x, g.randomInit([s, d], 0.1, 'pos')]);
  const ones = (n: number): string => g.floatInit([n], new Float32Array(n).fill(1), 'gamma');
  const zeros = (n: number): string => g.floatInit([n], new Float32Array(n), 'beta');
  const ln = (inp: string): string => g.op('LayerNormalization', [inp, ones(d), zeros(d)], { axis: attr.int(-1), epsilon: attr.float(1e-5) });
  const dense = (inp: string, i: number, o: number): string =>
    g.op('Add', [g.op('MatMul', [inp, g.randomInit([i, o], 1 / Math.sqrt(i))]), g.randomInit([o], 0.02, 'b')]);
  const splitShape = g.int64Init([4], [0, s, heads, hd], 'shape');
  const mergeShape = g.int64Init([3], [0, s, d], 'shape');
  const scale = g.floatInit([], [1 / Math.sqrt(hd)], 'scale');
  for (let l = 0; l < layers; l++) {
    const h = ln(x);
    const heads4 = (t: string, perm: number[]): string => g.op('Transpose', [g.op('Reshape', [t, splitShape])], { perm: attr.ints(perm) });
    const q = heads4(dense(h, d, d), [0, 2, 1, 3]);
    const k = heads4(dense(h, d, d), [0, 2, 3, 1]);
    const v = heads4(dense(h, d, d), [0, 2, 1, 3]);
    const scores = g.op('Softmax', [g.op('Mul', [g.op('MatMul', [q, k]), scale])], { axis: attr.int(-1) });
    const ctx = g.op('Transpose', [g.op('MatMul', [scores, v])], { perm: attr.ints([0, 2, 1, 3]) });
    x = g.op('Add', [x, dense(g.op('Reshape', [ctx, mergeShape]), d, d)]);
    const f = dense(g.op('Relu', [dense(ln(x), d, ffn)]), ffn, d);
    x = g.op('Add', [x, f]);
  }
  g.op('ReduceMean', [ln(x)], { axes: attr.ints([1]), keepdims: attr.int(0) }, 'embedding');
  g.output({ name: 'embedding', type: OnnxType.FLOAT, shape: ['batch', d] });
  return g.encode();
}

/** Every V2 datatype the ONNX runtime supports, by V2 name, with the ONNX element type it maps to. */
export const ALL_TYPES: ReadonlyArray<readonly [string, OnnxTypeCode]> = [
  ['BOOL', OnnxType.BOOL],
  ['UINT8', OnnxType.UINT8],
  ['UINT16', OnnxType.UINT16],
  ['UINT32', OnnxType.UINT32],
  ['UINT64', OnnxType.UINT64],
  ['INT8', OnnxType.INT8],
  ['INT16', OnnxType.INT16],
  ['INT32', OnnxType.INT32],
  ['INT64', OnnxType.INT64],
  ['FP16', OnnxType.FLOAT16],
  ['FP32', OnnxType.FLOAT],
  ['FP64', OnnxType.DOUBLE],
  ['BYTES', OnnxType.STRING],
];

/** Identity per datatype: input `in_<type>` [N,-1] → output `out_<type>` (lower-case V2 name). */
export function allTypes(): Uint8Array {
  const g = new GraphBuilder('all_types');
  for (const [v2, t] of ALL_TYPES) {
    const n = v2.toLowerCase();
    g.input({ name: `in_${n}`, type: t, shape: ['batch', 'width'] });
    g.op('Identity', [`in_${n}`], undefined, `out_${n}`);
    g.output({ name: `out_${n}`, type: t, shape: ['batch', 'width'] });
  }
  return g.encode();
}

/** Not batchable (fixed first dimension): `x` [2,3] FP32 → `y` = x * 2 + 1. */
export function fixedAffine(): Uint8Array {
  const g = new GraphBuilder('fixed_affine');
  const x = g.input({ name: 'x', type: OnnxType.FLOAT, shape: [2, 3] });
  g.op('Add', [g.op('Mul', [x, g.floatInit([], [2])]), g.floatInit([], [1])], undefined, 'y');
  g.output({ name: 'y', type: OnnxType.FLOAT, shape: [2, 3] });
  return g.encode();
}

/** Loads fine but fails at run time when the dynamic dim is 1 (Reshape to [2,-1]): warmup must fail. */
export function failsWarmup(): Uint8Array {
  const g = new GraphBuilder('fails_warmup');
  const x = g.input({ name: 'x', type: OnnxType.FLOAT, shape: ['n'] });
  g.op('Reshape', [x, g.int64Init([2], [2, -1], 'shape')], undefined, 'y');
  g.output({ name: 'y', type: OnnxType.FLOAT, shape: [2, 'm'] });
  return g.encode();
}

/** CPU-heavy per row: `x` [N,512] FP32 through `depth` 512×512 MatMuls → `y` [N,512]. For queue/timeout tests. */
export function slow(depth = 24): Uint8Array {
  const g = new GraphBuilder('slow', 3);
  let x = g.input({ name: 'x', type: OnnxType.FLOAT, shape: ['batch', 512] });
  const w = g.randomInit([512, 512], 1 / Math.sqrt(512));
  for (let i = 0; i < depth; i++) x = g.op('MatMul', [x, w]);
  g.op('Identity', [x], undefined, 'y');
  g.output({ name: 'y', type: OnnxType.FLOAT, shape: ['batch', 512] });
  return g.encode();
}

/** Lay out models as a repository: `{ name: { version: bytes } }` plus optional per-model config.json. */
export async function writeModelRepository(dir: string, models: Record<string, { versions: Record<number, Uint8Array>; config?: object }>): Promise<void> {
  for (const [name, m] of Object.entries(models)) {
    for (const [v, bytes] of Object.entries(m.versions)) {
      await mkdir(join(dir, name, v), { recursive: true });
      await writeFile(join(dir, name, v, 'model.onnx'), bytes);
    }
    if (m.config) await writeFile(join(dir, name, 'config.json'), `${JSON.stringify(m.config, null, 2)}\n`);
  }
}
