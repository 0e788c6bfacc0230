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
import type { ChatMessage, EmbeddingResult, SamplingParams } from '../../runtimes/index.js';
import { toWireError } from '../reply-error.js';

const Stop = z.union([z.string(), z.array(z.string()).max(4, 'at most 4 stop sequences')]).nullish();
const StreamOptions = z.looseObject({ include_usage: z.boolean().nullish() }).nullish();

const Sampling = {
  model: z.string({ error: 'expected a string' }).min(1, 'must name a model'),
  max_tokens: z.int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  n: z.literal(1, 'only n=1 is supported').nullish(),
  seed: z.int().nullish(),
  stop: Stop,
  stream: z.boolean().nullish(),
  stream_options: StreamOptions,
};

const TextPart = z.looseObject({ type: z.literal('text', 'only text content parts are supported'), text: z.string() });
const Message = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(TextPart)]).nullish(),
  name: z.string().optional(),
});

const ChatBody = z.looseObject({
  ...Sampling,
  messages: z.array(Message).min(1, 'must hold at least one message'),
  max_completion_tokens: z.int().positive().nullish(),
});

const CompletionBody = z.looseObject({
  ...Sampling,
  prompt: z.union([z.string(), z.array(z.string()).length(1, 'only one prompt per request is supported')]),
  echo: z.literal(false, 'echo is not supported').nullish(),
  best_of: z.literal(1, 'only best_of=1 is supported').nullish(),
});

const EmbeddingBody = z.looseObject({
  model: z.string().min(1, 'must name a model'),
  input: z.union([z.string().min(1, 'must not be empty'), z.array(z.string().min(1, 'must not be empty')).min(1, 'must hold at least one input').max(2048, 'at most 2048 inputs')], {
    error: 'expected a string or an array of strings (token arrays are not supported)',
  }),
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
    param, openaiCode: missing ? 'missing_required_parameter' : 'invalid_value',
  });
}

function sampling(b: z.infer<z.ZodObject<typeof Sampling>>, maxTokens: number | null | undefined): SamplingParams {
  const stop = b.stop === null || b.stop === undefined ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop;
  return { maxTokens: maxTokens ?? null, temperature: b.temperature ?? 1, topP: b.top_p ?? 1, seed: b.seed ?? null, stop };
}

export interface ParsedGeneration {
  readonly model: string;
  readonly messages: readonly ChatMessage[];
  readonly prompt: string;
  readonly params: SamplingParams;
  readonly stream: boolean;
  readonly includeUsage: boolean;
}

export function parseChat(body: unknown): ParsedGeneration {
  const b = parse(ChatBody, body);
  const messages = b.messages.map((m): ChatMessage => ({
    role: m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join(''),
    ...(m.name !== undefined ? { name: m.name } : {}),
  }));
  return {
    model: b.model, messages, prompt: '', params: sampling(b, b.max_completion_tokens ?? b.max_tokens),
    stream: b.stream === true, includeUsage: b.stream_options?.include_usage === true,
  };
}

/** OpenAI's legacy default for /v1/completions when max_tokens is absent. */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

export function parseCompletion(body: unknown): ParsedGeneration {
  const b = parse(CompletionBody, body);
  return {
    model: b.model, messages: [], prompt: typeof b.prompt === 'string' ? b.prompt : b.prompt[0]!,
    params: sampling(b, b.max_tokens ?? COMPLETIONS_DEFAULT_MAX_TOKENS), stream: b.stream === true,
    includeUsage: b.stream_options?.include_usage === true,
  };
}

export interface ParsedEmbedding {
  readonly model: string;
  readonly input: readonly string[];
  readonly base64: boolean;
  readonly dimensions: number | null;
}

export function parseEmbedding(body: unknown): ParsedEmbedding {
  const b = parse(EmbeddingBody, body);
  return {
    model: b.model, input: typeof b.input === 'string' ? [b.input] : b.input, base64: b.encoding_format === 'base64',
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
