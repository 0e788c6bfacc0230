/**
 * @module
 * Open Inference Protocol (V2) request decoding and response writing, JSON and the binary tensor data
 * extension (Inference-Header-Content-Length, binary_data_size, binary_data, binary_data_output), and an
 * output's `parameters.classification` (the classification extension, applied by the core). Decoding
 * needs no model: it yields named tensors that the inference core checks against each version it tries.
 */
import { err } from '../../errors.js';
import {
  checkEntityRows,
  checkShape,
  classCount,
  NO_LIMITS,
  type InferOutcome,
  type NamedTensor,
  type RequestLimits,
  type TensorBody,
} from '../../inference/index.js';
import {
  decodeBinaryData,
  decodeJsonData,
  describeJson,
  dtypeFromV2,
  elementCount,
  encodeBinaryData,
  encodeJsonData,
  type Tensor,
} from '../../tensor/index.js';

export interface RequestedOutput {
  readonly name: string;
  readonly binary: boolean | null;
}

/** A decoded V2 infer request: the core's body plus what only the V2 response needs (id, binary flags). */
export interface V2Request {
  readonly id: string | null;
  readonly body: TensorBody;
  /** Requested outputs in order (with their binary flags), or null for all. */
  readonly outputs: readonly RequestedOutput[] | null;
  /** `parameters.binary_data_output`: default for outputs that do not say. */
  readonly binaryOutput: boolean;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function bad(message: string): never {
  throw err('SY_ERR_BAD_REQUEST', message);
}

function parseShape(name: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) bad(`input "${name}": "shape" must be an array of non-negative integers`);
  for (let i = 0; i < shape.length; i++) {
    const d: unknown = shape[i];
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
      bad(`input "${name}": "shape" must be an array of non-negative integers, got ${describeJson(d)} at index ${i}`);
    }
  }
  return shape as number[];
}

/**
 * The JSON part of a V2 infer request body (all of it, or the first `headerLength` bytes with the binary
 * extension), parsed once per request.
 */
function parseInferJson(body: Buffer, headerLength: number | null): Record<string, unknown> {
  if (headerLength !== null && headerLength > body.length) {
    bad(`Inference-Header-Content-Length ${headerLength} exceeds the body length ${body.length}`);
  }
  let req: unknown;
  try {
    req = JSON.parse(body.toString('utf8', 0, headerLength ?? body.length));
  } catch (e) {
    throw err('SY_ERR_INVALID_JSON', `request body is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(req)) bad('request body must be a JSON object');
  return req;
}

/** Every input's shape against the request limits, before any input's data is decoded (entries malformed otherwise are left to the decoder). */
function checkLimits(inputs: readonly unknown[], limits: RequestLimits): void {
  let total = 0;
  for (const raw of inputs) {
    if (!isObject(raw) || typeof raw['name'] !== 'string') continue;
    const shape = parseShape(raw['name'], raw['shape']);
    total = checkShape(limits, raw['name'], shape, elementCount(shape), total);
  }
}

/**
 * Decode a V2 infer request (JSON, or JSON header + binary data with the binary extension) into named tensors.
 * 400 naming the field for anything malformed; nothing here depends on the model.
 * @param headerLength the Inference-Header-Content-Length header (binary extension), or null for pure JSON.
 * @param limits rows and elements one request may carry: each input's shape is checked before its data is decoded (413).
 */
export function decodeInferRequest(body: Buffer, headerLength: number | null, limits: RequestLimits = NO_LIMITS): V2Request {
  const req = parseInferJson(body, headerLength);
  const jsonEnd = headerLength ?? body.length;
  const { id, inputs, outputs, parameters } = req;
  if (id !== undefined && typeof id !== 'string') bad('"id" must be a string');
  if (parameters !== undefined && !isObject(parameters)) bad('"parameters" must be an object');
  // A feature-joined request may send no inputs: the join fills them.
  const joins = parameters !== undefined && (parameters as Record<string, unknown>)['entities'] !== undefined;
  if (!(joins && inputs === undefined) && (!Array.isArray(inputs) || (inputs.length === 0 && !joins))) bad('"inputs" must be a non-empty array');
  if (joins) {
    const entities = (parameters as Record<string, unknown>)['entities'];
    if (Array.isArray(entities)) checkEntityRows(limits, entities.length);
  }

  if (limits.rows > 0 || limits.elements > 0) checkLimits((inputs ?? []) as unknown[], limits);
  const given: NamedTensor[] = [];
  let offset = jsonEnd;
  for (const raw of (inputs ?? []) as unknown[]) {
    if (!isObject(raw)) bad('each entry of "inputs" must be an object');
    const name = raw['name'];
    if (typeof name !== 'string') bad('each input needs a string "name"');
    const datatype = raw['datatype'];
    if (typeof datatype !== 'string') bad(`input "${name}": "datatype" must be a string`);
    const dtype = dtypeFromV2(datatype);
    if (!dtype) throw err('SY_ERR_INPUT_INVALID', `input "${name}": unknown datatype "${datatype}"`);
    const shape = parseShape(name, raw['shape']);
    const count = elementCount(shape);
    const p = raw['parameters'];
    if (p !== undefined && !isObject(p)) bad(`input "${name}": "parameters" must be an object`);
    if (p && 'shared_memory_region' in p) {
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
      data = decodeJsonData(name, dtype, count, raw['data'], shape.length);
    }
    given.push({ name, tensor: { dtype, shape, data } });
  }
  if (offset !== body.length) bad(`body holds ${body.length - offset} bytes of binary data that no input claims`);

  let requested: RequestedOutput[] | null = null;
  let classification: Map<string, number> | undefined;
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) bad('"outputs" must be an array');
    requested = outputs.map((o) => {
      if (!isObject(o) || typeof o['name'] !== 'string') bad('each entry of "outputs" needs a string "name"');
      const name = o['name'];
      const op = o['parameters'];
      if (op !== undefined && !isObject(op)) bad(`output "${name}": "parameters" must be an object`);
      if (op && op['classification'] !== undefined) (classification ??= new Map()).set(name, classCount(name, op['classification']));
      const b = op?.['binary_data'];
      if (b !== undefined && typeof b !== 'boolean') bad(`output "${name}": "binary_data" must be a boolean`);
      return { name, binary: b ?? null };
    });
  }

  const timeout = parameters?.['timeout'];
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 0)) {
    bad('"parameters.timeout" must be a non-negative integer number of microseconds');
  }
  const bdo = parameters?.['binary_data_output'];
  if (bdo !== undefined && typeof bdo !== 'boolean') bad('"parameters.binary_data_output" must be a boolean');

  return {
    id: id ?? null,
    body: {
      kind: 'tensors',
      inputs: given,
      outputs: requested === null ? null : requested.map((o) => o.name),
      parameters: parameters ?? null,
      timeoutUs: (timeout as number | undefined) ?? 0,
      ...(classification === undefined ? {} : { classification }),
    },
    outputs: requested,
    binaryOutput: bdo ?? false,
  };
}

export interface EncodedResponse {
  readonly body: string | Buffer;
  /** Set when the body carries binary output data (send as Inference-Header-Content-Length). */
  readonly headerLength: number | null;
}

/** Per signature (one per loaded version): the response's fixed start and the all-outputs selection. */
const FIXED = new WeakMap<object, { model: string; label: string; head: string; all: readonly number[] }>();

/**
 * Write the V2 infer response for an outcome, honoring requested outputs and binary flags.
 * `parameters`: response-level parameters (routing: which version and arm served), or null for none.
 */
export function encodeInferResponse(out: InferOutcome, req: V2Request, parameters: Readonly<Record<string, string | boolean>> | null = null): EncodedResponse {
  const specs = out.outputSpecs;
  let fixed = FIXED.get(specs);
  if (fixed === undefined || fixed.model !== out.model || fixed.label !== out.label) {
    fixed = {
      model: out.model,
      label: out.label,
      head: `{"model_name":${JSON.stringify(out.model)},"model_version":"${out.label}"`,
      all: specs.map((_, index) => index),
    };
    FIXED.set(specs, fixed);
  }
  const selected = out.selected ?? fixed.all;
  const outputs = out.outputs;
  let json = fixed.head;
  if (req.id !== null) json += `,"id":${JSON.stringify(req.id)}`;
  if (parameters !== null) json += `,"parameters":${JSON.stringify(parameters)}`;
  json += ',"outputs":[';
  const binaries: Uint8Array[] = [];
  for (let i = 0; i < selected.length; i++) {
    const index = selected[i]!;
    const name = specs[index]!.name;
    const t: Tensor = outputs[index]!;
    json += `${i ? ',' : ''}{"name":${JSON.stringify(name)},"datatype":"${t.dtype.v2}","shape":[${t.shape.join(',')}]`;
    if ((req.outputs === null ? null : req.outputs[i]!.binary) ?? req.binaryOutput) {
      const bytes = encodeBinaryData(t.dtype, t.data);
      binaries.push(bytes);
      json += `,"parameters":{"binary_data_size":${bytes.length}}}`;
    } else {
      json += `,"data":${encodeJsonData(t.dtype, t.data, `output "${name}"`)}}`;
    }
  }
  json += ']}';
  if (binaries.length === 0) return { body: json, headerLength: null };
  const head = Buffer.from(json, 'utf8');
  return { body: Buffer.concat([head, ...binaries]), headerLength: head.length };
}
