/**
 * @module
 * Transport-agnostic request checks against a model signature: names, datatypes, ranks, fixed dims and a
 * consistent batch dimension. Every failure is a 400 naming the tensor and what is wrong.
 */
import { err } from '../errors.js';
import type { Tensor } from '../tensor/index.js';
import type { Signature, TensorSpec } from '../runtimes/index.js';

const fmt = (s: readonly number[]): string => `[${s.join(',')}]`;

/** Look up the spec of input `name`, or throw a 400 listing the model's inputs. */
export function inputSpec(sig: Signature, model: string, name: string): TensorSpec {
  const spec = sig.inputs.find((i) => i.name === name);
  if (!spec) {
    throw err('SY_ERR_INPUT_INVALID', `unknown input "${name}" for model "${model}"; expected inputs: ${sig.inputs.map((i) => i.name).join(', ')}`);
  }
  return spec;
}

/** Check a declared datatype and shape against the spec (before any data is decoded). */
export function checkDeclared(spec: TensorSpec, datatype: string, shape: readonly number[]): void {
  if (datatype !== spec.dtype.v2) {
    throw err('SY_ERR_INPUT_INVALID', `input "${spec.name}": datatype ${datatype} does not match the model's ${spec.dtype.v2}`);
  }
  if (shape.length !== spec.shape.length) {
    throw err(
      'SY_ERR_INPUT_INVALID',
      `input "${spec.name}": shape ${fmt(shape)} has rank ${shape.length}, the model expects rank ${spec.shape.length} ${fmt(spec.shape)}`,
    );
  }
  for (let i = 0; i < shape.length; i++) {
    const want = spec.shape[i]!;
    if (want !== -1 && shape[i] !== want) {
      throw err('SY_ERR_INPUT_INVALID', `input "${spec.name}": shape ${fmt(shape)} does not match the model's ${fmt(spec.shape)} (dim ${i} must be ${want})`);
    }
  }
}

/**
 * Put decoded inputs in signature order and compute the request's rows (dim 0 when batching, else 1).
 * Throws when an input is missing or batch dims disagree.
 */
export function orderInputs(sig: Signature, model: string, given: ReadonlyMap<string, Tensor>, batching: boolean): { inputs: Tensor[]; rows: number } {
  const inputs: Tensor[] = [];
  let rows = -1;
  for (const spec of sig.inputs) {
    const t = given.get(spec.name);
    if (!t) throw err('SY_ERR_INPUT_INVALID', `missing input "${spec.name}" for model "${model}"`);
    if (batching) {
      const r = t.shape[0]!;
      if (rows === -1) rows = r;
      else if (r !== rows) {
        throw err('SY_ERR_INPUT_INVALID', `input "${spec.name}": batch dimension ${r} differs from ${rows} in "${sig.inputs[0]!.name}"`);
      }
    }
    inputs.push(t);
  }
  return { inputs, rows: batching ? rows : 1 };
}
