/**
 * @module
 * A small graph builder over {@link encodeModel}: named nodes, float/int64 initializers and a seeded PRNG
 * so generated weights are identical on every machine.
 */
import { prng } from '../prng.js';
import { encodeModel, OnnxType, type AttrValue, type GraphDef, type NodeDef, type TensorInit, type ValueInfo } from './proto.js';

export { prng };

export class GraphBuilder {
  readonly #nodes: NodeDef[] = [];
  readonly #inits: TensorInit[] = [];
  readonly #inputs: ValueInfo[] = [];
  readonly #outputs: ValueInfo[] = [];
  #counter = 0;
  readonly #rand: () => number;

  constructor(
    readonly name: string,
    seed = 1,
  ) {
    this.#rand = prng(seed);
  }

  input(v: ValueInfo): string {
    this.#inputs.push(v);
    return v.name;
  }
  output(v: ValueInfo): void {
    this.#outputs.push(v);
  }

  fresh(prefix: string): string {
    return `${prefix}_${this.#counter++}`;
  }

  /** Add a node; returns its (first) output name. */
  op(op: string, inputs: string[], attrs?: Record<string, AttrValue>, output?: string): string {
    const out = output ?? this.fresh(op.toLowerCase());
    this.#nodes.push({ op, inputs, outputs: [out], name: this.fresh(`n_${op}`), ...(attrs ? { attrs } : {}) });
    return out;
  }

  floatInit(dims: number[], values: Float32Array | number[], prefix = 'w'): string {
    const name = this.fresh(prefix);
    const data = values instanceof Float32Array ? values : Float32Array.from(values);
    this.#inits.push({ name, type: OnnxType.FLOAT, dims, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    return name;
  }

  /** Uniform random weights in [-scale, scale]. */
  randomInit(dims: number[], scale: number, prefix = 'w'): string {
    const n = dims.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = (this.#rand() * 2 - 1) * scale;
    return this.floatInit(dims, v, prefix);
  }

  int64Init(dims: number[], values: number[], prefix = 'c'): string {
    const name = this.fresh(prefix);
    const data = BigInt64Array.from(values.map((x) => BigInt(x)));
    this.#inits.push({ name, type: OnnxType.INT64, dims, raw: new Uint8Array(data.buffer) });
    return name;
  }

  build(): GraphDef {
    return { name: this.name, nodes: this.#nodes, inputs: this.#inputs, outputs: this.#outputs, initializers: this.#inits };
  }

  encode(opset?: number): Uint8Array {
    return encodeModel(this.build(), opset);
  }
}

export const attr = {
  int: (value: number): AttrValue => ({ kind: 'int', value }),
  float: (value: number): AttrValue => ({ kind: 'float', value }),
  ints: (value: number[]): AttrValue => ({ kind: 'ints', value }),
};
