/**
 * @module
 * Warmup as configuration (Triton's `model_warmup`): the samples every instance of a version runs before the
 * version is READY, each `count` times. Without a `model_warmup` key a version runs one row of zeros per input
 * (empty strings for BYTES); `model_warmup: []` turns warmup off. A sample's input values come from zeros,
 * random values, inline `data` (as a V2 JSON request's), or `binary_data` (base64 of the V2 binary layout, what
 * the repository import makes of an `input_data_file`). A sample that does not fit the signature fails the
 * load with a reason naming the sample and the input.
 */
import type { WarmupInput, WarmupSample } from '../config/index.js';
import { decodeBinaryData, decodeJsonData, elementCount, zeros, type DtypeInfo, type Tensor } from '../tensor/index.js';
import type { LoadedModel, Signature, TensorSpec } from '../runtimes/index.js';

/** Zeros for every input, dynamic dims set to 1 and a dynamic dim 0 to `rows`. */
export function zeroInputs(sig: Signature, rows: number): Tensor[] {
  return sig.inputs.map((s) =>
    zeros(
      s.dtype,
      s.shape.map((d, i) => (d === -1 ? (i === 0 ? rows : 1) : d)),
    ),
  );
}

/** Triton's config datatype name for a V2 datatype (`TYPE_FP32`; BYTES is `TYPE_STRING`). */
export function tritonDataType(dtype: DtypeInfo): string {
  return dtype.v2 === 'BYTES' ? 'TYPE_STRING' : `TYPE_${dtype.v2}`;
}

function randomTensor(dtype: DtypeInfo, shape: number[], name: string): Tensor {
  const n = elementCount(shape);
  if (dtype.array === null) {
    // BYTES: random decimal digit strings (a model that parses its string input still parses these).
    return {
      dtype,
      shape,
      data: decodeJsonData(
        name,
        dtype,
        n,
        Array.from({ length: n }, () => String(Math.floor(Math.random() * 10))),
      ),
    };
  }
  const values = Array.from({ length: n }, () => {
    if (dtype.v2 === 'FP32' || dtype.v2 === 'FP64' || dtype.v2 === 'FP16') return Math.random();
    if (dtype.v2 === 'BOOL') return Math.random() < 0.5;
    return Math.floor(Math.random() * 10);
  });
  return { dtype, shape, data: decodeJsonData(name, dtype, n, values) };
}

/** One sample's input tensor for `spec`, or throws an Error naming the sample and input. */
function sampleInput(what: string, spec: TensorSpec, input: WarmupInput, rows: number, batched: boolean): Tensor {
  const dtype = spec.dtype;
  if (input.data_type !== undefined) {
    const named = input.data_type.startsWith('TYPE_') ? input.data_type : `TYPE_${input.data_type}`;
    const want = tritonDataType(dtype);
    if (named !== want && !(named === 'TYPE_BYTES' && want === 'TYPE_STRING'))
      throw new Error(`${what}: data_type ${input.data_type} but the model's input is ${want}`);
  }
  const declared = batched ? spec.shape.slice(1) : spec.shape;
  const dims = input.dims ?? declared.map((d) => (d === -1 ? 1 : d));
  if (dims.length !== declared.length || dims.some((d, i) => declared[i] !== -1 && declared[i] !== d)) {
    throw new Error(`${what}: dims [${dims.join(',')}] do not fit the model's [${declared.join(',')}]${batched ? ' (batch dim excluded)' : ''}`);
  }
  const shape = batched ? [rows, ...dims] : dims;
  if (input.zero_data) return zeros(dtype, shape);
  if (input.random_data) return randomTensor(dtype, shape, spec.name);
  const one = elementCount(dims);
  let row: Tensor['data'];
  try {
    if (input.data !== undefined) row = decodeJsonData(spec.name, dtype, one, input.data);
    else if (input.binary_data !== undefined) row = decodeBinaryData(spec.name, dtype, one, Buffer.from(input.binary_data, 'base64'));
    else throw new Error('input_data_file is read by the repository import only; give data or binary_data in a registered config');
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`, { cause: e });
  }
  if (!batched || rows === 1) return { dtype, shape, data: row };
  // Repeat the one-row sample `rows` times.
  if (Array.isArray(row)) {
    const data = Array.from({ length: rows }, () => row as unknown[]).flat() as unknown as Tensor['data'];
    return { dtype, shape, data };
  }
  const out = new dtype.array!(one * rows);
  for (let r = 0; r < rows; r++) (out as Uint8Array).set(row as Uint8Array, r * one);
  return { dtype, shape, data: out };
}

/** The input tensors (signature order) of a warmup sample. */
export function warmupInputs(sig: Signature, sample: WarmupSample, index: number, batched: boolean): Tensor[] {
  const label = `model_warmup[${index}]${sample.name ? ` "${sample.name}"` : ''}`;
  for (const name of Object.keys(sample.inputs)) {
    if (!sig.inputs.some((s) => s.name === name))
      throw new Error(`${label}: the model has no input "${name}" (inputs: ${sig.inputs.map((s) => s.name).join(', ')})`);
  }
  const rows = batched ? (sample.batch_size ?? 1) : 1;
  return sig.inputs.map((spec) => {
    const input = sample.inputs[spec.name];
    if (input === undefined) throw new Error(`${label}: input "${spec.name}" is not given (every input needs a source)`);
    return sampleInput(`${label} input "${spec.name}"`, spec, input, rows, batched);
  });
}

/**
 * Run the configured samples (or the default row of zeros) through every instance. Returns the first failure
 * (a sample that does not fit the signature, or a run that failed), or null.
 * @param batched whether the version batches (samples then carry `batch_size` rows on dim 0).
 */
export async function runWarmup(loaded: LoadedModel, samples: readonly WarmupSample[] | null, batched: boolean): Promise<Error | null> {
  const sig = loaded.signature;
  for (const inst of loaded.instances) {
    try {
      if (samples === null) {
        await inst.run(zeroInputs(sig, 1));
        continue;
      }
      for (const [i, s] of samples.entries()) {
        for (let n = 0; n < (s.count ?? 1); n++) await inst.run(warmupInputs(sig, s, i, batched));
      }
    } catch (e) {
      return e as Error;
    }
  }
  return null;
}
