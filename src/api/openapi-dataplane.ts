/**
 * @module
 * The OpenAPI description of the data planes — the Open Inference Protocol (V2) REST routes and the
 * OpenAI-compatible `/v1` routes — for the document only. These routes parse their own bodies (raw bytes:
 * JSON or the binary tensor extension; OpenAI bodies checked field by field with OpenAI's messages) and send
 * precompiled bytes, so their Fastify routes carry no schema; {@link documentRoute} adds these to the
 * document, by route, and makes every route schema valid OpenAPI 3.1 (JSON Schema 2020-12: a tuple
 * `items: [...]`, which Fastify's draft-07 validator needs, is written `prefixItems`).
 */

type Schema = Record<string, unknown>;

const V2_ERROR: Schema = {
  type: 'object',
  description: 'An error (the V2 error shape plus the stable catalog code, docs/errors.md).',
  required: ['error'],
  properties: { error: { type: 'string' }, code: { type: 'string', pattern: '^SY_ERR_[A-Z_]+$' } },
};
const OPENAI_ERROR: Schema = {
  type: 'object',
  description: "OpenAI's error shape.",
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['message', 'type'],
      properties: { message: { type: 'string' }, type: { type: 'string' }, param: { type: ['string', 'null'] }, code: { type: ['string', 'null'] } },
    },
  },
};
const errorsOf = (schema: Schema): Schema => ({
  '4XX': { description: 'Client error', ...json(schema) },
  '5XX': { description: 'Server error (503 with Retry-After when a retry can succeed)', ...json(schema) },
});
const json = (schema: Schema): Schema => ({ content: { 'application/json': { schema } } });
const ok = (description: string, schema: Schema, errors: Schema = V2_ERROR): Schema => ({ 200: { description, ...json(schema) }, ...errorsOf(errors) });

const DATATYPE = {
  type: 'string',
  enum: ['BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP16', 'FP32', 'FP64', 'BYTES', 'BF16'],
};
const SHAPE = { type: 'array', items: { type: 'integer' }, description: 'Dimensions; -1 for a variable one in metadata.' };
const PARAMETERS = { type: 'object', additionalProperties: true, description: 'Protocol parameters (e.g. binary_data_size, binary_data).' };
const TENSOR_META = { type: 'object', required: ['name', 'datatype', 'shape'], properties: { name: { type: 'string' }, datatype: DATATYPE, shape: SHAPE } };
const TENSOR = {
  type: 'object',
  required: ['name', 'datatype', 'shape'],
  properties: {
    name: { type: 'string' },
    datatype: DATATYPE,
    shape: SHAPE,
    parameters: PARAMETERS,
    data: { type: 'array', description: 'Row-major elements (flat or nested); absent when sent as binary data.', items: {} },
  },
};
const INFER_REQUEST: Schema = {
  type: 'object',
  description:
    'An Open Inference Protocol inference request. With the binary tensor extension the body is this JSON header followed by raw tensor bytes (Inference-Header-Content-Length says where the header ends).',
  required: ['inputs'],
  properties: {
    id: { type: 'string' },
    parameters: PARAMETERS,
    inputs: { type: 'array', items: TENSOR },
    outputs: { type: 'array', items: { type: 'object', required: ['name'], properties: { name: { type: 'string' }, parameters: PARAMETERS } } },
  },
};
const INFER_RESPONSE: Schema = {
  type: 'object',
  required: ['model_name', 'outputs'],
  properties: {
    model_name: { type: 'string' },
    model_version: { type: 'string' },
    id: { type: 'string' },
    parameters: PARAMETERS,
    outputs: { type: 'array', items: TENSOR },
  },
};
const MODEL_PARAMS = { model: { type: 'string', description: 'Model name.' } };
const VERSION_PARAMS = { ...MODEL_PARAMS, version: { type: 'string', description: 'Version number, or an alias.' } };
const params = (props: Schema): Schema => ({ type: 'object', required: Object.keys(props), properties: props });
const ANY_OBJECT = { type: 'object', additionalProperties: true };

const v2: Record<string, Schema> = {
  'GET /v2': {
    summary: 'Server metadata',
    response: ok('Name, version and protocol extensions.', {
      type: 'object',
      required: ['name', 'version', 'extensions'],
      properties: { name: { type: 'string' }, version: { type: 'string' }, extensions: { type: 'array', items: { type: 'string' } } },
    }),
  },
  'GET /v2/health/live': { summary: 'Liveness', response: ok('The process answers.', { type: 'object', properties: { live: { type: 'boolean' } } }) },
  'GET /v2/health/ready': {
    summary: 'Readiness',
    description:
      '200 while the models can serve, 503 otherwise. `controlPlane` says whether the metadata store answers; it never changes the status (a replica that can serve stays in rotation).',
    response: {
      ...ok('Ready.', {
        type: 'object',
        required: ['ready', 'controlPlane'],
        properties: { ready: { type: 'boolean' }, controlPlane: { type: 'string', enum: ['available', 'unavailable'] } },
      }),
      503: { description: 'Not ready.', ...json({ type: 'object', properties: { ready: { type: 'boolean' }, controlPlane: { type: 'string' } } }) },
    },
  },
  'GET /v2/models/:model': {
    summary: 'Model metadata',
    params: params(MODEL_PARAMS),
    response: ok('Signature of the default version.', {
      type: 'object',
      required: ['name', 'platform', 'inputs', 'outputs'],
      properties: {
        name: { type: 'string' },
        versions: { type: 'array', items: { type: 'string' } },
        platform: { type: 'string' },
        inputs: { type: 'array', items: TENSOR_META },
        outputs: { type: 'array', items: TENSOR_META },
      },
    }),
  },
  'GET /v2/models/:model/ready': {
    summary: 'Model readiness',
    params: params(MODEL_PARAMS),
    response: ok('Ready (503 when not).', {
      type: 'object',
      properties: { name: { type: 'string' }, version: { type: 'string' }, ready: { type: 'boolean' }, reason: { type: 'string' } },
    }),
  },
  'POST /v2/models/:model/infer': {
    summary: 'Inference',
    description:
      'Runs the request through routing, the feature join, the result cache and the dynamic batcher. Send JSON, or the binary tensor extension (application/octet-stream with Inference-Header-Content-Length). Content-Encoding gzip or deflate is accepted.',
    params: params(MODEL_PARAMS),
    body: INFER_REQUEST,
    response: ok('Outputs (binary tensors follow the JSON header when requested; Inference-Header-Content-Length says where).', INFER_RESPONSE),
  },
  'GET /v2/models/stats': { summary: 'Statistics of every visible model (Triton statistics extension)', response: ok('Per model and version.', ANY_OBJECT) },
  'GET /v2/models/:model/stats': {
    summary: 'Model statistics (Triton statistics extension)',
    params: params(MODEL_PARAMS),
    response: ok('Per version.', ANY_OBJECT),
  },
  'GET /v2/models/:model/config': {
    summary: 'Model configuration (Triton model configuration extension)',
    params: params(MODEL_PARAMS),
    response: ok('The configuration.', ANY_OBJECT),
  },
  'POST /v2/repository/index': {
    summary: 'Repository index (Triton repository extension)',
    body: { type: 'object', properties: { ready: { type: 'boolean' } } },
    response: ok('Models and versions with their state.', { type: 'array', items: ANY_OBJECT }),
  },
  'POST /v2/repository/models/:model/load': {
    summary: 'Load a model (Triton repository extension)',
    params: params(MODEL_PARAMS),
    response: ok('Loaded.', ANY_OBJECT),
  },
  'POST /v2/repository/models/:model/unload': {
    summary: 'Unload a model (Triton repository extension)',
    params: params(MODEL_PARAMS),
    response: ok('Unloaded.', ANY_OBJECT),
  },
};

const MESSAGE = {
  type: 'object',
  required: ['role'],
  properties: {
    role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
    content: { description: 'Text, or content parts.' },
    name: { type: 'string' },
  },
};
const USAGE = { type: 'object', properties: { prompt_tokens: { type: 'integer' }, completion_tokens: { type: 'integer' }, total_tokens: { type: 'integer' } } };
const SAMPLING = {
  model: { type: 'string' },
  max_tokens: { type: 'integer', minimum: 1 },
  max_completion_tokens: { type: 'integer', minimum: 1 },
  temperature: { type: 'number', minimum: 0, maximum: 2 },
  top_p: { type: 'number', minimum: 0, maximum: 1 },
  n: { type: 'integer', minimum: 1 },
  stop: { description: 'A string or up to 4 strings.' },
  seed: { type: 'integer' },
  stream: { type: 'boolean', description: 'Server-sent events (text/event-stream), ending with `data: [DONE]`.' },
  stream_options: { type: 'object', properties: { include_usage: { type: 'boolean' } } },
  user: { type: 'string' },
};
const MODEL_OBJECT = {
  type: 'object',
  required: ['id', 'object', 'created', 'owned_by'],
  properties: { id: { type: 'string' }, object: { type: 'string', enum: ['model'] }, created: { type: 'integer' }, owned_by: { type: 'string' } },
};
const streamed = (schema: Schema): Schema => ({
  200: {
    description: 'The completion; with `stream: true`, server-sent events of chunks.',
    content: { 'application/json': { schema }, 'text/event-stream': { schema: { type: 'string' } } },
  },
  ...errorsOf(OPENAI_ERROR),
});

const v1: Record<string, Schema> = {
  'GET /v1/models': {
    summary: 'List models (OpenAI)',
    response: ok(
      'The models this key can use.',
      {
        type: 'object',
        required: ['object', 'data'],
        properties: { object: { type: 'string', enum: ['list'] }, data: { type: 'array', items: MODEL_OBJECT } },
      },
      OPENAI_ERROR,
    ),
  },
  'GET /v1/models/*': {
    summary: 'Retrieve a model (OpenAI); the id may contain slashes',
    params: params({ model: { type: 'string', description: 'Model id (may contain slashes).' } }),
    response: ok('The model.', MODEL_OBJECT, OPENAI_ERROR),
  },
  'POST /v1/chat/completions': {
    summary: 'Chat completion (OpenAI)',
    body: { type: 'object', required: ['model', 'messages'], properties: { ...SAMPLING, messages: { type: 'array', minItems: 1, items: MESSAGE } } },
    response: streamed({
      type: 'object',
      required: ['id', 'object', 'created', 'model', 'choices'],
      properties: {
        id: { type: 'string' },
        object: { type: 'string', enum: ['chat.completion'] },
        created: { type: 'integer' },
        model: { type: 'string' },
        choices: {
          type: 'array',
          items: { type: 'object', properties: { index: { type: 'integer' }, message: MESSAGE, finish_reason: { type: ['string', 'null'] } } },
        },
        usage: USAGE,
      },
    }),
  },
  'POST /v1/completions': {
    summary: 'Text completion (OpenAI, legacy)',
    body: { type: 'object', required: ['model', 'prompt'], properties: { ...SAMPLING, prompt: { description: 'A string or an array of strings.' } } },
    response: streamed({
      type: 'object',
      required: ['id', 'object', 'created', 'model', 'choices'],
      properties: {
        id: { type: 'string' },
        object: { type: 'string', enum: ['text_completion'] },
        created: { type: 'integer' },
        model: { type: 'string' },
        choices: {
          type: 'array',
          items: { type: 'object', properties: { index: { type: 'integer' }, text: { type: 'string' }, finish_reason: { type: ['string', 'null'] } } },
        },
        usage: USAGE,
      },
    }),
  },
  'POST /v1/embeddings': {
    summary: 'Embeddings (OpenAI)',
    body: {
      type: 'object',
      required: ['model', 'input'],
      properties: {
        model: { type: 'string' },
        input: { description: 'A string, an array of strings, or token arrays.' },
        encoding_format: { type: 'string', enum: ['float', 'base64'] },
        dimensions: { type: 'integer', minimum: 1 },
        user: { type: 'string' },
      },
    },
    response: ok(
      'One embedding per input.',
      {
        type: 'object',
        required: ['object', 'data', 'model', 'usage'],
        properties: {
          object: { type: 'string', enum: ['list'] },
          data: {
            type: 'array',
            items: {
              type: 'object',
              properties: {
                object: { type: 'string', enum: ['embedding'] },
                index: { type: 'integer' },
                embedding: { description: 'Floats, or a base64 string of little-endian float32.' },
              },
            },
          },
          model: { type: 'string' },
          usage: USAGE,
        },
      },
      OPENAI_ERROR,
    ),
  },
};

/** Doc schemas of the data-plane routes, by "METHOD url" (the versioned V2 routes share the unversioned ones'). */
function dataPlaneSchema(method: string, url: string): Schema | undefined {
  const key = `${method} ${url.replace('/versions/:version', '')}`;
  const s = v2[key === 'GET /v2/' ? 'GET /v2' : key] ?? v1[key];
  if (s === undefined) return undefined;
  const tags = url.startsWith('/v1') ? ['openai'] : ['inference'];
  return url.includes('/versions/:version') ? { ...s, tags, params: params(VERSION_PARAMS) } : { ...s, tags };
}

/** A copy of `schema` in JSON Schema 2020-12 terms: tuple `items: [...]` → `prefixItems` (+ `items: false` when closed). */
export function to2020(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(to2020);
  if (typeof schema !== 'object' || schema === null) return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k === 'items' && Array.isArray(v)) {
      out['prefixItems'] = v.map(to2020);
      const extra = (schema as { additionalItems?: unknown }).additionalItems;
      if (extra !== undefined) out['items'] = to2020(extra);
    } else if (k !== 'additionalItems' || !Array.isArray((schema as { items?: unknown }).items)) {
      out[k] = to2020(v);
    }
  }
  return out;
}

/** @fastify/swagger's `transform`: the data planes' doc schemas, and every schema in OpenAPI 3.1 terms. */
export function documentRoute({ schema, url, route }: { schema: unknown; url: string; route: { method: string | string[] } }): { schema: Schema; url: string } {
  const method = Array.isArray(route.method) ? route.method[0]! : route.method;
  const given = (schema ?? undefined) as Schema | undefined;
  const doc = given === undefined || Object.keys(given).length === 0 ? (dataPlaneSchema(method, url) ?? given) : given;
  // A wildcard is no OpenAPI path template: name it.
  return { schema: (doc === undefined ? {} : to2020(doc)) as Schema, url: url.endsWith('/*') ? `${url.slice(0, -2)}/:model` : url };
}
