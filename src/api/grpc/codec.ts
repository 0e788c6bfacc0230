/**
 * @module
 * `ModelInferRequest` → named tensors (the core's TensorBody), and an outcome → `ModelInferResponse`.
 *
 * Inputs come either as `raw_input_contents` (one buffer per input, in order: little-endian elements, BYTES
 * with a 4-byte length before each element) or as typed `contents` (one field per datatype; FP16 has none and
 * must be raw), never both. Raw numeric inputs become typed arrays viewing the received buffer when its offset
 * is aligned for the element size (no copy), else one copy. Anything malformed — a raw buffer of the wrong size,
 * BYTES lengths running past the buffer, element counts that do not fit the shape, a value out of its
 * datatype's range — is SY_ERR_INPUT_INVALID / SY_ERR_BAD_REQUEST (gRPC INVALID_ARGUMENT), naming the input.
 *
 * Responses: Triton's gRPC server always answers in `raw_output_contents`; Switchyard answers raw when the
 * request sent raw inputs (every Triton client does), typed `contents` when it sent typed contents (so simple
 * clients need no byte decoding) — except when a selected output is FP16, which has no typed field: then the
 * whole response is raw, as the protocol requires raw for all outputs or none.
 */
import { err } from '../../errors.js';
import { checkShape, classCount, NO_LIMITS, type InferOutcome, type NamedTensor, type RequestLimits, type TensorBody } from '../../inference/index.js';
import {
  decodeBinaryData,
  dtypeFromV2,
  elementCount,
  encodeBinaryData,
  type DtypeInfo,
  type NumericArray,
  type Tensor,
  type TensorData,
} from '../../tensor/index.js';

/** `InferParameter` as the loader decodes it (64-bit values as decimal strings). */
export interface WireParameter {
  parameter_choice?: 'bool_param' | 'int64_param' | 'string_param' | 'double_param' | 'uint64_param';
  bool_param?: boolean;
  int64_param?: string;
  string_param?: string;
  double_param?: number;
  uint64_param?: string;
}

export interface WireContents {
  bool_contents: boolean[];
  int_contents: number[];
  int64_contents: string[];
  uint_contents: number[];
  uint64_contents: string[];
  fp32_contents: number[];
  fp64_contents: number[];
  bytes_contents: Buffer[];
}

export interface WireInput {
  name: string;
  datatype: string;
  shape: string[];
  parameters: Record<string, WireParameter>;
  contents: WireContents | null;
}

export interface WireInferRequest {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Record<string, WireParameter>;
  inputs: WireInput[];
  outputs: { name: string; parameters: Record<string, WireParameter> }[];
  raw_input_contents: Buffer[];
}

/** A decoded request: the core's body plus what only the gRPC response needs. */
export interface GrpcInferRequest {
  readonly body: TensorBody;
  /** The request sent raw inputs: answer raw. */
  readonly raw: boolean;
}

function bad(message: string): never {
  throw err('SY_ERR_BAD_REQUEST', message);
}
function invalid(message: string): never {
  throw err('SY_ERR_INPUT_INVALID', message);
}

/** An InferParameter as a plain value (int64 / uint64 as numbers when exact, else decimal strings). */
export function parameterValue(p: WireParameter): string | number | boolean | null {
  switch (p.parameter_choice) {
    case 'bool_param':
      return p.bool_param ?? false;
    case 'string_param':
      return p.string_param ?? '';
    case 'double_param':
      return p.double_param ?? 0;
    case 'int64_param':
    case 'uint64_param': {
      const s = p[p.parameter_choice] ?? '0';
      const n = Number(s);
      return Number.isSafeInteger(n) ? n : s;
    }
    default:
      return null;
  }
}

function parameters(map: Record<string, WireParameter>): Record<string, unknown> | null {
  let out: Record<string, unknown> | null = null;
  for (const k in map) (out ??= {})[k] = parameterValue(map[k]!);
  return out;
}

function parseShape(name: string, shape: readonly string[]): number[] {
  const out = new Array<number>(shape.length);
  for (let i = 0; i < shape.length; i++) {
    const d = Number(shape[i]);
    if (!Number.isSafeInteger(d) || d < 0) invalid(`input "${name}": shape must hold non-negative integers, got [${shape.join(', ')}]`);
    out[i] = d;
  }
  return out;
}

/** Raw little-endian elements of a numeric dtype: a view when aligned, else one aligned copy. */
function rawNumeric(name: string, dtype: DtypeInfo, count: number, bytes: Buffer): NumericArray {
  const want = count * dtype.size;
  if (bytes.length !== want) invalid(`input "${name}": shape and datatype ${dtype.v2} imply ${want} bytes but raw_input_contents holds ${bytes.length}`);
  const Ctor = dtype.array!;
  if (bytes.byteOffset % dtype.size === 0) return new Ctor(bytes.buffer, bytes.byteOffset, count);
  return decodeBinaryData(name, dtype, count, bytes) as NumericArray;
}

const INT_RANGE: Readonly<Record<string, readonly [number, number]>> = {
  INT8: [-128, 127],
  INT16: [-32768, 32767],
  INT32: [-(2 ** 31), 2 ** 31 - 1],
  UINT8: [0, 255],
  UINT16: [0, 65535],
  UINT32: [0, 2 ** 32 - 1],
};

/** Which typed `contents` field carries each datatype. */
const FIELD: Readonly<Record<string, keyof WireContents>> = {
  BOOL: 'bool_contents',
  INT8: 'int_contents',
  INT16: 'int_contents',
  INT32: 'int_contents',
  INT64: 'int64_contents',
  UINT8: 'uint_contents',
  UINT16: 'uint_contents',
  UINT32: 'uint_contents',
  UINT64: 'uint64_contents',
  FP32: 'fp32_contents',
  FP64: 'fp64_contents',
  BYTES: 'bytes_contents',
};

function typedContents(name: string, dtype: DtypeInfo, count: number, c: WireContents): TensorData {
  const field = FIELD[dtype.v2];
  if (field === undefined) invalid(`input "${name}": ${dtype.v2} has no typed contents field; send it in raw_input_contents`);
  for (const f of Object.keys(c) as (keyof WireContents)[]) {
    if (f !== field && c[f].length > 0) invalid(`input "${name}": datatype ${dtype.v2} is carried in contents.${field}, not contents.${f}`);
  }
  const values = c[field];
  if (values.length !== count) invalid(`input "${name}": shape implies ${count} elements but contents.${field} holds ${values.length}`);
  switch (dtype.v2) {
    case 'BOOL':
      return Uint8Array.from(values as boolean[], (b) => (b ? 1 : 0));
    case 'FP32':
      return Float32Array.from(values as number[]);
    case 'FP64':
      return Float64Array.from(values as number[]);
    case 'INT64':
      return BigInt64Array.from(values as string[], (s) => BigInt(s));
    case 'UINT64':
      return BigUint64Array.from(values as string[], (s) => BigInt(s));
    // BYTES elements are bytes: views of the received buffers, as sent.
    case 'BYTES':
      return (values as Buffer[]).map((b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
    default: {
      const [lo, hi] = INT_RANGE[dtype.v2]!;
      const nums = values as number[];
      for (let i = 0; i < nums.length; i++) {
        if (nums[i]! < lo || nums[i]! > hi) invalid(`input "${name}": element ${i} (${nums[i]}) is out of range for ${dtype.v2}`);
      }
      const out = new dtype.array!(count);
      out.set(nums as unknown as ArrayLike<number> & ArrayLike<bigint>);
      return out;
    }
  }
}

/** Decode a ModelInferRequest into the core's named tensors. Needs no model: the core checks the signature. */
export function decodeInferRequest(req: WireInferRequest, limits: RequestLimits = NO_LIMITS): GrpcInferRequest {
  const raw = req.raw_input_contents;
  const useRaw = raw.length > 0;
  if (req.inputs.length === 0) bad('"inputs" must not be empty');
  if (useRaw && raw.length !== req.inputs.length) {
    bad(`raw_input_contents holds ${raw.length} entries for ${req.inputs.length} inputs: send one per input, in order`);
  }
  const inputs: NamedTensor[] = new Array(req.inputs.length);
  let total = 0;
  for (let i = 0; i < req.inputs.length; i++) {
    const inp = req.inputs[i]!;
    const name = inp.name;
    if (name === '') bad(`inputs[${i}] has no name`);
    const dtype = dtypeFromV2(inp.datatype);
    if (dtype === undefined) invalid(`input "${name}": unknown datatype "${inp.datatype}"`);
    if ('shared_memory_region' in inp.parameters) invalid(`input "${name}": the shared-memory extension is not supported; send raw_input_contents or contents`);
    const shape = parseShape(name, inp.shape);
    const count = elementCount(shape);
    total = checkShape(limits, name, shape, count, total);
    let data: TensorData;
    if (useRaw) {
      if (inp.contents !== null && Object.values(inp.contents).some((v: unknown[]) => v.length > 0)) {
        bad(`input "${name}": contents given in a request that uses raw_input_contents; use one or the other for all inputs`);
      }
      const bytes = raw[i]!;
      data = dtype.array === null ? decodeBinaryData(name, dtype, count, bytes) : rawNumeric(name, dtype, count, bytes);
    } else {
      if (inp.contents === null) invalid(`input "${name}": no data: send contents or raw_input_contents`);
      data = typedContents(name, dtype, count, inp.contents);
    }
    inputs[i] = { name, tensor: { dtype, shape, data } };
  }
  let outputs: string[] | null = null;
  let classification: Map<string, number> | undefined;
  if (req.outputs.length > 0) {
    outputs = req.outputs.map((o, i) => {
      if (o.name === '') bad(`outputs[${i}] has no name`);
      // The classification extension: top-k "value:index[:label]" BYTES, applied by the core as for REST.
      const c = o.parameters['classification'];
      if (c !== undefined) (classification ??= new Map()).set(o.name, classCount(o.name, parameterValue(c)));
      if ('shared_memory_region' in o.parameters) bad(`output "${o.name}": the shared-memory extension is not supported`);
      return o.name;
    });
  }
  const params = parameters(req.parameters);
  const timeout = params?.['timeout'];
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 0)) {
    bad('parameters.timeout must be a non-negative int64_param of microseconds');
  }
  return {
    body: {
      kind: 'tensors',
      inputs,
      outputs,
      parameters: params,
      timeoutUs: (timeout as number | undefined) ?? 0,
      ...(classification === undefined ? {} : { classification }),
    },
    raw: useRaw,
  };
}

export interface WireOutput {
  name: string;
  datatype: string;
  shape: number[];
  parameters: Record<string, WireParameter>;
  contents: Partial<WireContents> | null;
}
export interface WireInferResponse {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Record<string, WireParameter>;
  outputs: WireOutput[];
  raw_output_contents: Uint8Array[];
}

function contentsOf(t: Tensor): Partial<WireContents> {
  const d = t.data;
  switch (t.dtype.v2) {
    case 'BOOL':
      return { bool_contents: Array.from(d as Uint8Array, (b) => b !== 0) };
    case 'INT8':
    case 'INT16':
    case 'INT32':
      return { int_contents: Array.from(d as Int32Array) };
    case 'UINT8':
    case 'UINT16':
    case 'UINT32':
      return { uint_contents: Array.from(d as Uint32Array) };
    case 'INT64':
      return { int64_contents: Array.from(d as BigInt64Array, String) };
    case 'UINT64':
      return { uint64_contents: Array.from(d as BigUint64Array, String) };
    case 'FP32':
      return { fp32_contents: Array.from(d as Float32Array) };
    case 'FP64':
      return { fp64_contents: Array.from(d as Float64Array) };
    case 'BYTES':
      return { bytes_contents: (d as Uint8Array[]).map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)) };
    default:
      throw err('SY_ERR_INTERNAL', `no typed contents field for ${t.dtype.v2}`);
  }
}

/** Response-level parameters as InferParameters. */
export function wireParameters(p: Readonly<Record<string, string | boolean>> | null): Record<string, WireParameter> {
  const out: Record<string, WireParameter> = {};
  if (p !== null) {
    for (const k in p) {
      const v = p[k]!;
      out[k] = typeof v === 'boolean' ? { parameter_choice: 'bool_param', bool_param: v } : { parameter_choice: 'string_param', string_param: v };
    }
  }
  return out;
}

const NO_PARAMS: Record<string, WireParameter> = Object.freeze({}) as Record<string, WireParameter>;

/** The ModelInferResponse for an outcome: raw or typed contents (see the module comment). */
export function encodeInferResponse(
  out: InferOutcome,
  id: string,
  raw: boolean,
  parameters: Readonly<Record<string, string | boolean>> | null,
): WireInferResponse {
  const specs = out.outputSpecs;
  const selected = out.selected;
  const n = selected === null ? specs.length : selected.length;
  let useRaw = raw;
  if (!useRaw) {
    for (let i = 0; i < n; i++) if (out.outputs[selected === null ? i : selected[i]!]!.dtype.v2 === 'FP16') useRaw = true;
  }
  const outputs: WireOutput[] = new Array(n);
  const rawOut: Uint8Array[] = useRaw ? new Array(n) : [];
  for (let i = 0; i < n; i++) {
    const index = selected === null ? i : selected[i]!;
    const t = out.outputs[index]!;
    outputs[i] = { name: specs[index]!.name, datatype: t.dtype.v2, shape: t.shape as number[], parameters: NO_PARAMS, contents: useRaw ? null : contentsOf(t) };
    if (useRaw) rawOut[i] = encodeBinaryData(t.dtype, t.data);
  }
  return { model_name: out.model, model_version: out.label, id, parameters: wireParameters(parameters), outputs, raw_output_contents: rawOut };
}
