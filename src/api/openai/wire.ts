/**
 * @module
 * OpenAI's wire format: request validation for /v1/chat/completions, /v1/completions and /v1/embeddings
 * (errors name the field, as OpenAI's do: `param` is the JSON path), and the error body every /v1 failure
 * leaves with, including errors raised outside the LLM code (authentication, limits, bad JSON).
 *
 * Fields this server does not use are accepted and, for upstream models, forwarded as sent: clients and SDKs
 * send many optional fields, and an upstream may understand them.
 */
import { z } from 'zod';
import { isSwitchyardError, LlmError } from '../../errors.js';
import type {
  CancelSignal,
  ChatMessage,
  EmbeddingInput,
  EmbeddingResult,
  GenerationRequest,
  ResponseFormat,
  SamplingParams,
  ToolChoice,
  ToolSpec,
} from '../../runtimes/index.js';
import { toWireError } from '../reply-error.js';

const Stop = z.union([z.string(), z.array(z.string()).max(4, 'at most 4 stop sequences')]).nullish();
const StreamOptions = z.looseObject({ include_usage: z.boolean().nullish() }).nullish();
const Penalty = z.number().min(-2).max(2).nullish();
/** `{"<token id>": bias}`, bias -100..100. */
const LogitBias = z.record(z.string().regex(/^\d+$/, 'keys must be token ids'), z.number().min(-100).max(100)).nullish();

const Sampling = {
  model: z.string({ error: 'expected a string' }).min(1, 'must name a model'),
  max_tokens: z.int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  n: z.int().min(1).max(128).nullish(),
  seed: z.int().nullish(),
  stop: Stop,
  stream: z.boolean().nullish(),
  stream_options: StreamOptions,
  frequency_penalty: Penalty,
  presence_penalty: Penalty,
  logit_bias: LogitBias,
};

const TextPart = z.looseObject({ type: z.literal('text', 'only text content parts are supported'), text: z.string() });
/** OpenAI's function names: letters, digits, _ and -, up to 64. */
const FunctionName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a function name: letters, digits, _ and -, up to 64 characters');
const JsonSchemaObject = z.record(z.string(), z.unknown());
const ToolCallParam = z.looseObject({
  id: z.string(),
  type: z.literal('function'),
  function: z.looseObject({ name: z.string(), arguments: z.string() }),
});
const Message = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(TextPart)]).nullish(),
  name: z.string().optional(),
  tool_calls: z.array(ToolCallParam).nullish(),
  tool_call_id: z.string().nullish(),
});
const Tool = z.looseObject({
  type: z.literal('function', 'only function tools are supported'),
  function: z.looseObject({ name: FunctionName, description: z.string().nullish(), parameters: JsonSchemaObject.nullish(), strict: z.boolean().nullish() }),
});
const ToolChoiceParam = z.union(
  [z.enum(['none', 'auto', 'required']), z.looseObject({ type: z.literal('function'), function: z.looseObject({ name: FunctionName }) })],
  { error: 'expected "none", "auto", "required" or {"type": "function", "function": {"name": ...}}' },
);
const ResponseFormatParam = z.discriminatedUnion(
  'type',
  [
    z.looseObject({ type: z.literal('text') }),
    z.looseObject({ type: z.literal('json_object') }),
    z.looseObject({
      type: z.literal('json_schema'),
      json_schema: z.looseObject({
        name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and -, up to 64'),
        description: z.string().nullish(),
        schema: JsonSchemaObject.nullish(),
        strict: z.boolean().nullish(),
      }),
    }),
  ],
  { error: 'expected {"type": "text" | "json_object" | "json_schema"}' },
);

const ChatBody = z.looseObject({
  ...Sampling,
  messages: z.array(Message).min(1, 'must hold at least one message'),
  max_completion_tokens: z.int().positive().nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.int().min(0).max(20).nullish(),
  tools: z.array(Tool).max(128, 'at most 128 tools').nullish(),
  tool_choice: ToolChoiceParam.nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  response_format: ResponseFormatParam.nullish(),
});

const CompletionBody = z.looseObject({
  ...Sampling,
  prompt: z.union([z.string(), z.array(z.string()).length(1, 'only one prompt per request is supported')]),
  echo: z.literal(false, 'echo is not supported').nullish(),
  best_of: z.literal(1, 'only best_of=1 is supported').nullish(),
  logprobs: z.int().min(0).max(5).nullish(),
});

const TokenId = z.int().nonnegative();
const EmbeddingBody = z.looseObject({
  model: z.string().min(1, 'must name a model'),
  input: z.union(
    [
      z.string().min(1, 'must not be empty'),
      z.array(z.string().min(1, 'must not be empty')).min(1, 'must hold at least one input').max(2048, 'at most 2048 inputs'),
      z.array(TokenId).min(1, 'must hold at least one token'),
      z.array(z.array(TokenId).min(1, 'must hold at least one token')).min(1, 'must hold at least one input').max(2048, 'at most 2048 inputs'),
    ],
    { error: 'expected a string, an array of strings, an array of token ids or an array of token-id arrays' },
  ),
  encoding_format: z.enum(['float', 'base64']).nullish(),
  dimensions: z.int().positive().nullish(),
});

/** `messages[0].content`, as OpenAI names fields. */
function pathOf(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out;
}

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new LlmError('SY_ERR_BAD_REQUEST', 'the request body must be a JSON object', { openaiCode: 'invalid_request_body' });
  }
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const i = r.error.issues[0]!;
  const param = pathOf(i.path);
  const missing = i.code === 'invalid_type' && i.input === undefined;
  throw new LlmError('SY_ERR_BAD_REQUEST', missing ? `Missing required parameter: '${param}'.` : `Invalid value for '${param}': ${i.message}.`, {
    param,
    openaiCode: missing ? 'missing_required_parameter' : 'invalid_value',
  });
}

function sampling(b: z.infer<z.ZodObject<typeof Sampling>>, maxTokens: number | null | undefined, logprobs: boolean, topLogprobs: number): SamplingParams {
  const stop = b.stop === null || b.stop === undefined ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop;
  const logitBias = new Map<number, number>();
  for (const [k, v] of Object.entries(b.logit_bias ?? {})) logitBias.set(Number(k), v);
  return {
    maxTokens: maxTokens ?? null,
    temperature: b.temperature ?? 1,
    topP: b.top_p ?? 1,
    seed: b.seed ?? null,
    stop,
    n: b.n ?? 1,
    frequencyPenalty: b.frequency_penalty ?? 0,
    presencePenalty: b.presence_penalty ?? 0,
    logitBias,
    logprobs,
    topLogprobs,
  };
}

export interface ParsedGeneration {
  readonly model: string;
  readonly messages: readonly ChatMessage[];
  readonly prompt: string;
  readonly params: SamplingParams;
  readonly tools: readonly ToolSpec[];
  readonly toolChoice: ToolChoice;
  readonly parallelToolCalls: boolean;
  readonly responseFormat: ResponseFormat;
  readonly stream: boolean;
  readonly includeUsage: boolean;
}

function badValue(param: string, message: string): LlmError {
  return new LlmError('SY_ERR_BAD_REQUEST', `Invalid value for '${param}': ${message}.`, { param, openaiCode: 'invalid_value' });
}

export function parseChat(body: unknown): ParsedGeneration {
  const b = parse(ChatBody, body);
  const messages = b.messages.map((m): ChatMessage => ({
    role: m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join(''),
    ...(m.name !== undefined ? { name: m.name } : {}),
    ...(m.tool_calls ? { toolCalls: m.tool_calls.map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })) } : {}),
    ...(typeof m.tool_call_id === 'string' ? { toolCallId: m.tool_call_id } : {}),
  }));
  const tools: ToolSpec[] = (b.tools ?? []).map((t) => ({
    name: t.function.name,
    description: t.function.description ?? null,
    parameters: t.function.parameters ?? null,
  }));
  const choice = b.tool_choice ?? (tools.length > 0 ? 'auto' : 'none');
  const toolChoice: ToolChoice = typeof choice === 'string' ? choice : { name: choice.function.name };
  if (toolChoice !== 'none' && tools.length === 0) throw badValue('tool_choice', 'a tool choice needs "tools"');
  if (typeof toolChoice === 'object' && !tools.some((t) => t.name === toolChoice.name))
    throw badValue('tool_choice', `no tool named "${toolChoice.name}" in "tools"`);
  if (b.top_logprobs !== null && b.top_logprobs !== undefined && b.logprobs !== true) throw badValue('top_logprobs', 'top_logprobs needs "logprobs": true');
  const rf = b.response_format;
  const responseFormat: ResponseFormat =
    !rf || rf.type === 'text'
      ? { type: 'text' }
      : rf.type === 'json_object'
        ? { type: 'json_object' }
        : { type: 'json_schema', name: rf.json_schema.name, schema: rf.json_schema.schema ?? null, strict: rf.json_schema.strict === true };
  return {
    model: b.model,
    messages,
    prompt: '',
    params: sampling(b, b.max_completion_tokens ?? b.max_tokens, b.logprobs === true, b.top_logprobs ?? 0),
    tools,
    toolChoice,
    parallelToolCalls: b.parallel_tool_calls !== false,
    responseFormat,
    stream: b.stream === true,
    includeUsage: b.stream_options?.include_usage === true,
  };
}

/** The backends' request for a parsed generation body (the route and the batch line runner build it alike). */
export function generationRequest(
  kind: 'chat' | 'completion',
  p: ParsedGeneration,
  model: string,
  body: Record<string, unknown>,
  signal: CancelSignal,
  requestId: string,
  flow: GenerationRequest['flow'],
): GenerationRequest {
  return {
    kind,
    model,
    messages: p.messages,
    prompt: p.prompt,
    params: p.params,
    tools: p.tools,
    toolChoice: p.toolChoice,
    parallelToolCalls: p.parallelToolCalls,
    responseFormat: p.responseFormat,
    body,
    signal,
    requestId,
    flow,
  };
}

/** OpenAI's legacy default for /v1/completions when max_tokens is absent. */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

export function parseCompletion(body: unknown): ParsedGeneration {
  const b = parse(CompletionBody, body);
  const logprobs = b.logprobs ?? null;
  return {
    model: b.model,
    messages: [],
    prompt: typeof b.prompt === 'string' ? b.prompt : b.prompt[0]!,
    params: sampling(b, b.max_tokens ?? COMPLETIONS_DEFAULT_MAX_TOKENS, logprobs !== null, logprobs ?? 0),
    tools: [],
    toolChoice: 'none',
    parallelToolCalls: true,
    responseFormat: { type: 'text' },
    stream: b.stream === true,
    includeUsage: b.stream_options?.include_usage === true,
  };
}

export interface ParsedEmbedding {
  readonly model: string;
  readonly input: readonly EmbeddingInput[];
  readonly base64: boolean;
  readonly dimensions: number | null;
}

export function parseEmbedding(body: unknown): ParsedEmbedding {
  const b = parse(EmbeddingBody, body);
  return {
    model: b.model,
    input: typeof b.input === 'string' || typeof b.input[0] === 'number' ? [b.input as string | number[]] : (b.input as EmbeddingInput[]),
    base64: b.encoding_format === 'base64',
    dimensions: b.dimensions ?? null,
  };
}

/** The /v1/embeddings response body for `result`. */
export function embeddingResponse(result: EmbeddingResult, p: ParsedEmbedding, model: string): Record<string, unknown> {
  return {
    object: 'list',
    data: result.vectors.map((v, index) => ({ object: 'embedding', index, embedding: encodeEmbedding(v, p.base64) })),
    model,
    usage: result.usage,
  };
}

/** An embedding as the client asked: a number array, or base64 of the little-endian float32 bytes. */
export function encodeEmbedding(v: Float32Array, base64: boolean): number[] | string {
  if (!base64) return Array.from(v);
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
}

/**
 * Any error as an LlmError: Switchyard's own (gateway, serving core: their catalog entry gives OpenAI's type and
 * code), Fastify's (bad JSON, body too large) or unexpected ones (500, no internals). Fastify's and unknown
 * errors get their catalog code, status and message from the server's one mapping (toWireError).
 */
export function toLlmError(e: unknown): LlmError {
  if (isSwitchyardError(e)) return LlmError.from(e);
  const w = toWireError(e);
  if (w.status >= 500) return new LlmError('SY_ERR_INTERNAL', 'The server had an error while processing your request.');
  if (w.code === 'SY_ERR_INVALID_JSON') return new LlmError(w.code, `We could not parse the JSON body of your request: ${(e as Error).message}`);
  // Fastify's other client errors have sent no OpenAI code but request_too_large (413) since /v1 began: kept so.
  return new LlmError(w.code, w.message, { status: w.status, openaiCode: w.code === 'SY_ERR_BODY_TOO_LARGE' ? undefined : null });
}

/**
 * Headers for an error response: retry-after (seconds) and retry-after-ms, `x-should-retry: false` on a 429 or
 * 5xx that no retry can fix (the SDKs would otherwise retry it), plus the error's own.
 */
export function errorHeaders(e: LlmError): Record<string, string> {
  const h: Record<string, string> = { ...e.headers };
  if (!e.retryable && (e.status === 429 || e.status >= 500)) h['x-should-retry'] = 'false';
  if (e.retryAfterMs !== null) {
    h['retry-after'] = String(Math.max(1, Math.ceil(e.retryAfterMs / 1000)));
    h['retry-after-ms'] = String(Math.max(0, Math.ceil(e.retryAfterMs)));
  }
  return h;
}
