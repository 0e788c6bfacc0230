/**
 * @module
 * The contract between the OpenAI-compatible API (api/openai/routes.ts) and the LLM backends: local generation with
 * llama.cpp (backends/llama.ts), local embeddings from an ONNX encoder through the serving core
 * (backends/onnx-embeddings.ts) and upstream OpenAI-compatible providers (backends/upstream.ts).
 *
 * Backends speak OpenAI's own objects: a non-streaming call returns the response body a client gets (the
 * route only renames `model`), a streaming call yields the `chat.completion.chunk` / `text_completion`
 * objects a client gets, one per SSE event. Usage is never yielded as a chunk: the stream reports it in
 * `usage` when it ends, and the route decides whether the client asked for the usage chunk.
 *
 * Errors: anything a backend throws is an LlmError, a catalog error of src/errors.ts (or becomes a 500). A streaming call's promise
 * rejects for failures before the first chunk (so the route can still answer with a status code, and the
 * upstream backend can still fall back to another deployment); a failure after it is thrown from the
 * iterator and sent to the client as a `data: {"error": ...}` event.
 */
import type { OpenAiErrorType } from '../errors.js';

// The LLM errors are catalog errors (src/errors.ts); re-exported so backends take the whole contract from here.
export { defaultType, isLlmError, LlmError } from '../errors.js';

/** OpenAI `usage`. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Local models: prompt tokens reused from the sequence's previous request (not evaluated again). */
  prompt_tokens_details?: { cached_tokens: number };
}

/** OpenAI error `type` values. */
export type LlmErrorType = OpenAiErrorType;

/** A tool call an assistant message made (OpenAI's `tool_calls[i]`; `arguments` is the JSON text as sent). */
export interface ToolCall {
  readonly id: string;
  readonly name: string;
  readonly arguments: string;
}

/** A chat message after validation: text content only (parts of type "text" are joined). */
export interface ChatMessage {
  readonly role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  readonly content: string;
  readonly name?: string;
  /** role 'assistant': the calls it made. */
  readonly toolCalls?: readonly ToolCall[];
  /** role 'tool': the call this message answers. */
  readonly toolCallId?: string;
}

/** A function the model may call (`tools[i].function`). */
export interface ToolSpec {
  readonly name: string;
  readonly description: string | null;
  /** JSON Schema of the arguments object; null: no parameters. */
  readonly parameters: Readonly<Record<string, unknown>> | null;
}

/** `tool_choice`: a mode, or one function by name. Default: 'auto' with tools, 'none' without. */
export type ToolChoice = 'none' | 'auto' | 'required' | { readonly name: string };

/** `response_format`. */
export type ResponseFormat =
  | { readonly type: 'text' }
  | { readonly type: 'json_object' }
  | { readonly type: 'json_schema'; readonly name: string; readonly schema: Readonly<Record<string, unknown>> | null; readonly strict: boolean };

/** Sampling and stopping, as the request gave them (validated). */
export interface SamplingParams {
  /** Max tokens to generate per choice; null: the model entry's default (`defaultMaxTokens`). */
  readonly maxTokens: number | null;
  /** 0 = greedy. Default 1. */
  readonly temperature: number;
  /** Default 1. */
  readonly topP: number;
  readonly seed: number | null;
  /** Up to 4 stop sequences; the returned text ends before the first one found. */
  readonly stop: readonly string[];
  /** Choices to generate. Default 1. */
  readonly n: number;
  /** -2..2, OpenAI's: logit -= count × frequency + (count > 0) × presence, over the tokens generated so far. Default 0. */
  readonly frequencyPenalty: number;
  readonly presencePenalty: number;
  /** Token id → bias added to its logit (-100..100); empty: none. */
  readonly logitBias: ReadonlyMap<number, number>;
  /** Return the sampled tokens' log probabilities. */
  readonly logprobs: boolean;
  /** Alternatives per position (0..20 chat, 0..5 completions). */
  readonly topLogprobs: number;
}

/** A text generation request, validated and normalized by the route. */
/**
 * "The client went away": what backends watch to stop work. An AbortSignal fits; the routes pass a
 * {@link ClientSignal}.
 */
export interface CancelSignal {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/**
 * A {@link CancelSignal} for one API request. Node 20 takes several microseconds to build an AbortController
 * (an EventTarget), a visible share of the gateway's per-request cost; this is a flag and a listener list.
 * undici accepts it as a request signal (it needs `aborted`, `reason` and add/removeEventListener).
 */
export class ClientSignal implements CancelSignal {
  aborted = false;
  reason: unknown = undefined;
  #listeners: (() => void)[] = [];

  addEventListener(_type: 'abort', listener: () => void): void {
    // Every listener runs once: abort happens at most once.
    if (!this.aborted) this.#listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const i = this.#listeners.indexOf(listener);
    if (i >= 0) this.#listeners.splice(i, 1);
  }

  abort(reason: unknown = new Error('client closed the request')): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listeners = this.#listeners;
    this.#listeners = [];
    for (const l of listeners) l();
  }
}

export interface GenerationRequest {
  readonly kind: 'chat' | 'completion';
  /** The model name the client asked for (a configured LLM model). */
  readonly model: string;
  /** kind 'chat' */
  readonly messages: readonly ChatMessage[];
  /** kind 'completion' */
  readonly prompt: string;
  readonly params: SamplingParams;
  /** kind 'chat': the functions offered, the choice among them and whether several calls may come at once. */
  readonly tools: readonly ToolSpec[];
  readonly toolChoice: ToolChoice;
  readonly parallelToolCalls: boolean;
  readonly responseFormat: ResponseFormat;
  /** The client's body as sent (upstreams get it forwarded, with `model` replaced). */
  readonly body: Readonly<Record<string, unknown>>;
  /** Aborted when the client goes away: stop generating, free the sequence. */
  readonly signal: CancelSignal;
  readonly requestId: string;
  /** The fair-queueing flow waiting for a local model's sequence (the tenant and its weight); null = the default flow. */
  readonly flow: { readonly id: string; readonly weight: number } | null;
}

/**
 * A chunk may carry the exact JSON text it was parsed from under this key (a symbol: invisible to
 * JSON.stringify), valid as long as the object is unchanged; the route then forwards the text instead of
 * serializing the object again. A backend that changes a chunk deletes it.
 */
export const RAW_JSON: unique symbol = Symbol('raw JSON');

/** One streaming generation, after its first chunk is known to exist. */
export interface ChunkStream extends AsyncIterable<Record<string, unknown>> {
  /** Token usage; complete once iteration has finished (null if the backend could not tell). */
  readonly usage: Usage | null;
}

/**
 * Who asks, for embeddings that run through the inference core (tenant usage, fair-queueing flow, routing
 * keys); structurally the core's `Caller`.
 */
export interface EmbeddingCaller {
  /** Tenant name; '' for the platform / open mode. */
  readonly tenant: string;
  readonly flow: { readonly id: string; readonly weight: number } | undefined;
  readonly keyId: string | null;
  readonly requestId: string;
  header(name: string): string | undefined;
}

/** One embedding input: a text, or token ids used as they are. */
export type EmbeddingInput = string | readonly number[];

export interface EmbeddingRequest {
  readonly model: string;
  readonly input: readonly EmbeddingInput[];
  /** Requested output size (models that support truncation), or null. */
  readonly dimensions: number | null;
  readonly body: Readonly<Record<string, unknown>>;
  readonly signal: CancelSignal;
  readonly requestId: string;
  /** The caller; absent = the platform's default flow. */
  readonly caller?: EmbeddingCaller;
}

export interface EmbeddingResult {
  /** One vector per input, in input order. */
  readonly vectors: readonly Float32Array[];
  readonly usage: { prompt_tokens: number; total_tokens: number };
}

/** What the gateway needs to know before running a request: the tokens it will take (for limits). */
export interface TokenEstimate {
  /** Prompt tokens (exact for local models, an estimate for upstreams). */
  readonly promptTokens: number;
  /** The most tokens the request may generate (max_tokens, or the model's default), times n. */
  readonly maxTokens: number;
}

export interface LlmBackend {
  readonly kind: 'llama' | 'upstream' | 'onnx-embeddings';
  /** What the model can do (a request for something else is a 400 naming the model). */
  readonly capabilities: { readonly chat: boolean; readonly completions: boolean; readonly embeddings: boolean };
  /** Context window in tokens, or null when unknown (upstreams without a configured one). */
  readonly contextLength: number | null;
  /** Count (or estimate) the request's tokens; throws LlmError 400 `context_length_exceeded` when it cannot fit. */
  estimate(req: GenerationRequest): Promise<TokenEstimate>;
  /** Non-streaming: the full OpenAI response object (`chat.completion` / `text_completion`), with `usage`. */
  complete(req: GenerationRequest): Promise<Record<string, unknown>>;
  /** Streaming: resolves once the first chunk is ready (rejects before that with a status-bearing LlmError). */
  stream(req: GenerationRequest): Promise<ChunkStream>;
  embed(req: EmbeddingRequest): Promise<EmbeddingResult>;
  /** Counts for /metrics: sequences generating now, requests waiting for one, and the sequences there are (null: no fixed number). */
  load(): { active: number; queued: number; slots: number | null };
  close(): Promise<void>;
}
