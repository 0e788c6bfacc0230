/**
 * @module
 * What the llama runtime makes of an OpenAI request before generating: which parameters it refuses (a 400
 * naming the parameter: nothing is silently ignored), the chat history with tool calls and results in
 * node-llama-cpp's form, the functions offered to the chat template, the logit bias, and the log probabilities
 * in OpenAI's two shapes.
 */
import { LlmError, type ChatMessage, type GenerationRequest, type ToolSpec } from '../generation.js';
import type { AvailableFunctions, HistoryFunctionCall, HistoryItem, LlamaModel, NodeLlamaCpp, Token, TokenBias } from './bindings.js';
import { grammarSchema } from './json-schema.js';

/** Parameters the llama runtime implements (the route validated their values). */
const CHAT_PARAMS = new Set([
  'model',
  'messages',
  'max_tokens',
  'max_completion_tokens',
  'temperature',
  'top_p',
  'n',
  'seed',
  'stop',
  'stream',
  'stream_options',
  'frequency_penalty',
  'presence_penalty',
  'logit_bias',
  'logprobs',
  'top_logprobs',
  'tools',
  'tool_choice',
  'parallel_tool_calls',
  'response_format',
  'user',
]);
const COMPLETION_PARAMS = new Set([
  'model',
  'prompt',
  'max_tokens',
  'temperature',
  'top_p',
  'n',
  'seed',
  'stop',
  'stream',
  'stream_options',
  'frequency_penalty',
  'presence_penalty',
  'logit_bias',
  'logprobs',
  'echo',
  'best_of',
  'user',
]);
/** Accepted when they ask for nothing this runtime would have to do. */
const NEUTRAL: Readonly<Record<string, (v: unknown) => boolean>> = {
  store: (v) => v === false,
  service_tier: (v) => v === 'auto' || v === 'default',
  modalities: (v) => Array.isArray(v) && v.length === 1 && v[0] === 'text',
  suffix: (v) => v === '',
};

function unsupported(param: string, model: string): LlmError {
  return new LlmError(
    'SY_ERR_BAD_REQUEST',
    `Unsupported parameter: '${param}' is not supported by model '${model}' (a local llama.cpp model; see docs/llm.md).`,
    {
      param,
      openaiCode: 'unsupported_parameter',
    },
  );
}

/** 400 for any parameter this runtime does not implement (null values ask for nothing and pass). */
export function checkParams(req: GenerationRequest): void {
  const known = req.kind === 'chat' ? CHAT_PARAMS : COMPLETION_PARAMS;
  for (const [k, v] of Object.entries(req.body)) {
    if (v === null || v === undefined || known.has(k)) continue;
    const neutral = NEUTRAL[k];
    if (neutral === undefined || !neutral(v)) throw unsupported(k, req.model);
  }
  for (let i = 0; i < req.messages.length; i++) {
    const m = req.messages[i]!;
    if (m.role === 'tool' && m.toolCallId === undefined)
      throw new LlmError('SY_ERR_BAD_REQUEST', `Missing required parameter: 'messages[${i}].tool_call_id'.`, {
        param: `messages[${i}].tool_call_id`,
        openaiCode: 'missing_required_parameter',
      });
  }
}

/** The tools' parameter schemas as grammar schemas (400 naming `tools[i].function.parameters` when one cannot be enforced). */
export function toolSchemas(tools: readonly ToolSpec[]): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  tools.forEach((t, i) => {
    out.set(t.name, t.parameters === null ? { type: 'object', properties: {} } : grammarSchema(t.parameters, `tools[${i}].function.parameters`));
  });
  return out;
}

/** The functions the chat template documents in the prompt. */
export function availableFunctions(tools: readonly ToolSpec[], schemas: ReadonlyMap<string, Record<string, unknown>>): AvailableFunctions {
  const out: AvailableFunctions = {};
  for (const t of tools) out[t.name] = { ...(t.description !== null ? { description: t.description } : {}), params: schemas.get(t.name) };
  return out;
}

function parseArguments(text: string, param: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new LlmError('SY_ERR_BAD_REQUEST', `Invalid value for '${param}': the arguments are not valid JSON.`, { param, openaiCode: 'invalid_value' });
  }
}

/**
 * The conversation as node-llama-cpp's chat history: an assistant message's tool calls become function calls
 * holding the results of the tool messages that answer them. Ends with the model turn to generate (the
 * assistant's turn continues after tool results).
 */
export function chatHistory(messages: readonly ChatMessage[]): HistoryItem[] {
  const history: HistoryItem[] = [];
  const calls = new Map<string, HistoryFunctionCall>();
  let last: ChatMessage | undefined;
  messages.forEach((m, i) => {
    last = m;
    if (m.role === 'system' || m.role === 'developer') history.push({ type: 'system', text: m.content });
    else if (m.role === 'user') history.push({ type: 'user', text: m.content });
    else if (m.role === 'assistant') {
      const response: Array<string | HistoryFunctionCall> = m.content ? [m.content] : [];
      (m.toolCalls ?? []).forEach((c, j) => {
        const call: HistoryFunctionCall = {
          type: 'functionCall',
          name: c.name,
          params: parseArguments(c.arguments, `messages[${i}].tool_calls[${j}].function.arguments`),
          result: null,
        };
        calls.set(c.id, call);
        response.push(call);
      });
      history.push({ type: 'model', response });
    } else {
      const call = calls.get(m.toolCallId!);
      if (call === undefined) {
        throw new LlmError(
          'SY_ERR_BAD_REQUEST',
          `Invalid value for 'messages[${i}].tool_call_id': no earlier assistant message made the call "${m.toolCallId}".`,
          {
            param: `messages[${i}].tool_call_id`,
            openaiCode: 'invalid_value',
          },
        );
      }
      call.result = m.content;
    }
  });
  if (last?.role !== 'tool') history.push({ type: 'model', response: [] });
  return history;
}

/** The vocabulary size (from the GGUF's token list), or null when the file does not list it. */
export function vocabularySize(model: LlamaModel): number | null {
  const meta = model.fileInfo.metadata as { tokenizer?: { ggml?: { tokens?: unknown } } };
  const tokens = meta.tokenizer?.ggml?.tokens;
  return Array.isArray(tokens) ? tokens.length : null;
}

/** `logit_bias` as node-llama-cpp's TokenBias; 400 for a token outside the vocabulary or an end token (whose bias it cannot set). */
export function tokenBias(lib: NodeLlamaCpp, model: LlamaModel, vocab: number | null, bias: ReadonlyMap<number, number>): TokenBias | undefined {
  if (bias.size === 0) return undefined;
  const tb = new lib.TokenBias(model.tokenizer);
  for (const [token, b] of bias) {
    if (vocab !== null && token >= vocab) {
      throw new LlmError('SY_ERR_BAD_REQUEST', `Invalid value for 'logit_bias': token ${token} is outside the vocabulary (${vocab} tokens).`, {
        param: 'logit_bias',
        openaiCode: 'invalid_value',
      });
    }
    if (model.isEogToken(token)) {
      throw new LlmError('SY_ERR_BAD_REQUEST', `Invalid value for 'logit_bias': token ${token} ends generation; this model cannot bias end tokens.`, {
        param: 'logit_bias',
        openaiCode: 'invalid_value',
      });
    }
    tb.set(token, { logit: b });
  }
  return tb;
}

/** One sampled token's log probability and its most likely alternatives (natural log, as OpenAI's). */
export interface TokenLogprob {
  readonly token: string;
  readonly logprob: number;
  readonly top: ReadonlyArray<{ readonly token: string; readonly logprob: number }>;
}

/** The lowest log probability sent (a probability of 0 has no finite log; JSON has no -Infinity). */
const MIN_LOGPROB = -9999;

function ln(p: number | undefined): number {
  return p !== undefined && p > 0 ? Math.max(MIN_LOGPROB, Math.log(p)) : MIN_LOGPROB;
}

/**
 * The log probability of `token` from the distribution it was sampled from, with the `top` most likely
 * alternatives; their text as it reads after `before` (the tokens generated just before: a leading space depends on them).
 */
export function tokenLogprob(
  model: LlamaModel,
  token: Token,
  probabilities: Map<Token, number> | undefined,
  top: number,
  before: readonly Token[],
): TokenLogprob {
  const text = (t: Token): string => model.detokenize([t], false, before);
  const alternatives: Array<{ token: string; logprob: number }> = [];
  if (probabilities !== undefined && top > 0) {
    // The map is sorted most likely first.
    for (const [t, p] of probabilities) {
      if (alternatives.length >= top) break;
      alternatives.push({ token: text(t), logprob: ln(p) });
    }
  }
  return { token: text(token), logprob: ln(probabilities?.get(token)), top: alternatives };
}

/** Chat's `logprobs.content[i]`. */
export function chatLogprob(l: TokenLogprob): Record<string, unknown> {
  const bytes = (s: string): number[] => [...Buffer.from(s, 'utf8')];
  return {
    token: l.token,
    logprob: l.logprob,
    bytes: bytes(l.token),
    top_logprobs: l.top.map((a) => ({ token: a.token, logprob: a.logprob, bytes: bytes(a.token) })),
  };
}

/** Completions' `logprobs` for `items`, whose text starts at `offset` characters into the completion. */
export function completionLogprobs(items: readonly TokenLogprob[], offset: number): Record<string, unknown> {
  const textOffset: number[] = [];
  let at = offset;
  for (const l of items) {
    textOffset.push(at);
    at += l.token.length;
  }
  return {
    tokens: items.map((l) => l.token),
    token_logprobs: items.map((l) => l.logprob),
    top_logprobs: items.map((l) => Object.fromEntries(l.top.map((a) => [a.token, a.logprob]))),
    text_offset: textOffset,
  };
}
