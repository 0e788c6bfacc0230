/**
 * @module
 * Open Inference Protocol (V2) request parsing and response writing, JSON and the binary tensor data
 * extension (Inference-Header-Content-Length, binary_data_size, binary_data, binary_data_output).
 * Parsing validates against the model signature before decoding data, so bad input fails fast with a 400.
 */
import { err } from '../../errors.js';
import type { ModelVersion } from '../../serving/index.js';
import { checkDeclared, inputSpec, orderInputs } from '../../serving/index.js';
import {
  decodeBinaryData, decodeJsonData, dtypeFromV2, elementCount, encodeBinaryData, encodeJsonData, type Tensor,
} from '../../tensor/index.js';

export interface RequestedOutput { readonly name: string; readonly index: number; readonly binary: boolean | null }

export interface InferRequest {
  readonly id: string | null;
  readonly inputs: Tensor[];
  readonly rows: number;
  /** Requested outputs in order, or null for all. */
  readonly outputs: RequestedOutput[] | null;
  /** `parameters.binary_data_output`: default for outputs that do not say. */
  readonly binaryOutput: boolean;
  /** `parameters.timeout` (schedule-policy extension), microseconds; 0 = none. */
  readonly timeoutUs: number;
  /** Request parameters as sent (custom keys pass through to later stages), or null. */
  readonly parameters: Record<string, unknown> | null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function bad(message: string): never {
  throw err('SY_ERR_BAD_REQUEST', message);
}

function parseShape(name: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) bad(`input "${name}": "shape" must be an array of non-negative integers`);
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
      bad(`input "${name}": "shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
  }
  return shape as number[];
}

/**
 * The JSON part of a V2 infer request body (all of it, or the first `headerLength` bytes with the binary
 * extension), parsed once per request and shared by every version it is validated for.
 */
export function parseInferJson(body: Buffer, headerLength: number | null): Record<string, unknown> {
  if (headerLength !== null && headerLength > body.length) {
    bad(`Inference-Header-Content-Length ${headerLength} exceeds the body length ${body.length}`);
  }
  let req: unknown;
  try {
    req = JSON.parse(body.toString('utf8', 0, headerLength ?? body.length));
  } catch (e) {
    bad(`request body is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(req)) bad('request body must be a JSON object');
  return req;
}

/**
 * Validate a parsed V2 infer request (from {@link parseInferJson}) against model version `mv`'s signature and
 * decode its tensors (JSON `data`, or binary data that follows the JSON header in `body`).
 * @param headerLength the Inference-Header-Content-Length header (binary extension), or null for pure JSON.
 */
export function parseInferRequest(req: Record<string, unknown>, body: Buffer, headerLength: number | null, mv: ModelVersion): InferRequest {
  const sig = mv.signature;
  if (!sig) throw err('SY_ERR_MODEL_NOT_READY', `model "${mv.model}" version ${mv.version} is not ready`, { retryAfterS: 1 });
  const jsonEnd = headerLength ?? body.length;
  const { id, inputs, outputs, parameters } = req;
  if (id !== undefined && typeof id !== 'string') bad('"id" must be a string');
  if (parameters !== undefined && !isObject(parameters)) bad('"parameters" must be an object');
  if (!Array.isArray(inputs) || inputs.length === 0) bad('"inputs" must be a non-empty array');

  const given = new Map<string, Tensor>();
  let offset = jsonEnd;
  for (const raw of inputs) {
    if (!isObject(raw)) bad('each entry of "inputs" must be an object');
    const name = raw['name'];
    if (typeof name !== 'string') bad('each input needs a string "name"');
    if (given.has(name)) bad(`input "${name}" appears more than once`);
    const datatype = raw['datatype'];
    if (typeof datatype !== 'string') bad(`input "${name}": "datatype" must be a string`);
    const dtype = dtypeFromV2(datatype);
    if (!dtype) throw err('SY_ERR_INPUT_INVALID', `input "${name}": unknown datatype "${datatype}"`);
    const shape = parseShape(name, raw['shape']);
    checkDeclared(inputSpec(sig, mv.model, name), datatype, shape);
    const count = elementCount(shape);
    const p = raw['parameters'];
    if (p !== undefined && !isObject(p)) bad(`input "${name}": "parameters" must be an object`);
    if (p && ('shared_memory_region' in p)) {
      throw err('SY_ERR_INPUT_INVALID', `input "${name}": the shared-memory extension is not supported; send data or binary_data_size`);
    }
    const size = p?.['binary_data_size'];
    let data;
    if (size !== undefined) {
      if (typeof size !== 'number' || !Number.isInteger(size) || size < 0) bad(`input "${name}": "binary_data_size" must be a non-negative integer`);
      if (headerLength === null) bad(`input "${name}": binary_data_size given but the request has no Inference-Header-Content-Length header`);
      if (raw['data'] !== undefined) bad(`input "${name}": give either "data" or binary_data_size, not both`);
      if (offset + size > body.length) {
        throw err('SY_ERR_INPUT_INVALID', `input "${name}": binary_data_size ${size} runs past the end of the body (${body.length - offset} bytes left)`);
      }
      data = decodeBinaryData(name, dtype, count, body.subarray(offset, offset + size));
      offset += size;
    } else {
      if (raw['data'] === undefined) throw err('SY_ERR_INPUT_INVALID', `input "${name}": "data" is missing`);
      data = decodeJsonData(name, dtype, count, raw['data']);
    }
    given.set(name, { dtype, shape, data });
  }
  if (offset !== body.length) bad(`body holds ${body.length - offset} bytes of binary data that no input claims`);

  let requested: RequestedOutput[] | null = null;
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) bad('"outputs" must be an array');
    requested = outputs.map((o) => {
      if (!isObject(o) || typeof o['name'] !== 'string') bad('each entry of "outputs" needs a string "name"');
      const name = o['name'];
      const index = sig.outputs.findIndex((s) => s.name === name);
      if (index < 0) {
        throw err('SY_ERR_OUTPUT_UNKNOWN', `unknown output "${name}" for model "${mv.model}"; outputs are: ${sig.outputs.map((s) => s.name).join(', ')}`);
      }
      const op = o['parameters'];
      if (op !== undefined && !isObject(op)) bad(`output "${name}": "parameters" must be an object`);
      if (op && 'classification' in op) throw err('SY_ERR_OUTPUT_UNKNOWN', `output "${name}": the classification extension is not supported`);
      const b = op?.['binary_data'];
      if (b !== undefined && typeof b !== 'boolean') bad(`output "${name}": "binary_data" must be a boolean`);
      return { name, index, binary: b ?? null };
    });
  }

  const timeout = parameters?.['timeout'];
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 0)) {
    bad('"parameters.timeout" must be a non-negative integer number of microseconds');
  }
  const bdo = parameters?.['binary_data_output'];
  if (bdo !== undefined && typeof bdo !== 'boolean') bad('"parameters.binary_data_output" must be a boolean');

  const { inputs: ordered, rows } = orderInputs(sig, mv.model, given, mv.maxBatchSize > 0);
  return {
    id: id ?? null,
    inputs: ordered,
    rows,
    outputs: requested,
    binaryOutput: bdo ?? false,
    timeoutUs: (timeout as number | undefined) ?? 0,
    parameters: parameters ?? null,
  };
}

export interface EncodedResponse {
  readonly body: string | Buffer;
  /** Set when the body carries binary output data (send as Inference-Header-Content-Length). */
  readonly headerLength: number | null;
}

/** Per signature (one per loaded version): the response's fixed start and the all-outputs selection. */
const FIXED = new WeakMap<object, { mv: ModelVersion; head: string; all: readonly RequestedOutput[] }>();

/**
 * Write the V2 infer response for `outputs` (in signature order), honoring requested outputs and binary flags.
 * `parameters`: response-level parameters (routing: which version and arm served), or null for none.
 */
export function encodeInferResponse(mv: ModelVersion, req: InferRequest, outputs: readonly Tensor[], parameters: Readonly<Record<string, string | boolean>> | null = null): EncodedResponse {
  const sig = mv.signature!;
  let fixed = FIXED.get(sig);
  if (fixed === undefined || fixed.mv !== mv) {
    fixed = { mv, head: `{"model_name":${JSON.stringify(mv.model)},"model_version":"${mv.label}"`, all: sig.outputs.map((o, index) => ({ name: o.name, index, binary: null })) };
    FIXED.set(sig, fixed);
  }
  const selected = req.outputs ?? fixed.all;
  let json = fixed.head;
  if (req.id !== null) json += `,"id":${JSON.stringify(req.id)}`;
  if (parameters !== null) json += `,"parameters":${JSON.stringify(parameters)}`;
  json += ',"outputs":[';
  const binaries: Uint8Array[] = [];
  for (let i = 0; i < selected.length; i++) {
    const o = selected[i]!;
    const t = outputs[o.index]!;
    json += `${i ? ',' : ''}{"name":${JSON.stringify(o.name)},"datatype":"${t.dtype.v2}","shape":[${t.shape.join(',')}]`;
    if (o.binary ?? req.binaryOutput) {
      const bytes = encodeBinaryData(t.dtype, t.data);
      binaries.push(bytes);
      json += `,"parameters":{"binary_data_size":${bytes.length}}}`;
    } else {
      json += `,"data":${encodeJsonData(t.dtype, t.data)}}`;
    }
  }
  json += ']}';
  if (binaries.length === 0) return { body: json, headerLength: null };
  const head = Buffer.from(json, 'utf8');
  return { body: Buffer.concat([head, ...binaries]), headerLength: head.length };
}
