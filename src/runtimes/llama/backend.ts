/**
 * @module
 * Local text generation with llama.cpp through node-llama-cpp (an optional dependency, loaded only when a
 * `backend: llama` model is configured).
 *
 * One GGUF model is loaded once, with one context holding `sequences` sequences: that many requests generate
 * at once and llama.cpp evaluates their tokens together in shared batches (continuous batching: a request
 * joins or leaves between two decoding steps, never waiting for a whole batch to finish). More requests wait
 * in a FIFO queue (bounded by `maxQueue`; beyond it, 503 with retry-after); a request whose client leaves is
 * dropped from the queue, or stops generating and frees its sequence.
 *
 * A sequence keeps the tokens of its last request: the next request reuses the longest common prefix (a shared
 * system prompt is evaluated once) and only the rest is erased and evaluated.
 *
 * Chat prompts are rendered with the model's own chat template (node-llama-cpp resolves a known format, or
 * runs the GGUF's Jinja template). Text is emitted as soon as it is complete UTF-8 and cannot be the start of a
 * stop sequence, so streams never show a stop sequence or a broken character.
 */
import { randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { err } from '../../errors.js';
import type { LlamaModelConfig } from '../../config/index.js';
import {
  LlmError, type CancelSignal, type ChatMessage, type ChunkStream, type EmbeddingResult, type GenerationRequest, type LlmBackend,
  type TokenEstimate, type Usage,
} from '../generation.js';

/*
 * The part of node-llama-cpp's API used here, declared locally: the package is optional, so the build must not
 * need its type declarations (an install with --omit=optional still compiles).
 */
type Token = number;
interface LlamaSequence {
  readonly contextTokens: readonly Token[];
  readonly nextTokenIndex: number;
  clearHistory(): Promise<void>;
  eraseContextTokenRanges(ranges: Array<{ start: number; end: number }>): Promise<void>;
  evaluate(tokens: Token[], options: { temperature?: number; topP?: number; seed?: number }): AsyncGenerator<Token, void, void>;
}
interface LlamaContext {
  readonly contextSize: number;
  getSequence(): LlamaSequence;
  dispose(): Promise<void>;
}
interface LlamaModel {
  readonly trainContextSize: number;
  readonly fileInfo: { readonly metadata: unknown };
  readonly tokens: { readonly bos: Token | null };
  readonly tokenizer: unknown;
  tokenize(text: string, specialTokens?: boolean): Token[];
  detokenize(tokens: readonly Token[], specialTokens?: boolean, lastTokens?: readonly Token[]): string;
  isEogToken(token: Token | undefined): boolean;
  createContext(options: { sequences: number; contextSize: number; threads: number }): Promise<LlamaContext>;
  dispose(): Promise<void>;
}
interface Llama {
  loadModel(options: { modelPath: string; gpuLayers: number | 'auto' }): Promise<LlamaModel>;
}
type HistoryItem = { type: 'system'; text: string } | { type: 'user'; text: string } | { type: 'model'; response: string[] };
interface ChatWrapper {
  readonly wrapperName: string;
  generateContextState(options: { chatHistory: HistoryItem[] }): { contextText: { tokenize(tokenizer: unknown): Token[] } };
}
interface NodeLlamaCpp {
  getLlama(options: { gpu: LlamaModelConfig['gpu']; build: 'never'; logLevel: unknown; progressLogs: boolean }): Promise<Llama>;
  readonly LlamaLogLevel: { readonly error: unknown };
  resolveChatWrapper(model: LlamaModel): ChatWrapper;
}

/** The package name in a variable: loaded at run time only, never resolved by the compiler. */
const PACKAGE = 'node-llama-cpp';

/** Once per process: the native bindings (CPU, or the GPU a model asks for). */
const llamas = new Map<string, Promise<Llama>>();

async function loadBindings(): Promise<NodeLlamaCpp> {
  try {
    return await import(PACKAGE) as NodeLlamaCpp;
  } catch (e) {
    throw err('SY_ERR_CONFIG_INVALID', 'a "backend: llama" model needs the optional package node-llama-cpp, which is not installed (npm install node-llama-cpp)', { cause: e });
  }
}

function llamaFor(lib: NodeLlamaCpp, gpu: LlamaModelConfig['gpu']): Promise<Llama> {
  const key = String(gpu);
  let l = llamas.get(key);
  if (!l) {
    // build 'never': use the prebuilt binaries from npm; never download or compile llama.cpp at run time.
    l = lib.getLlama({ gpu, build: 'never', logLevel: lib.LlamaLogLevel.error, progressLogs: false });
    llamas.set(key, l);
  }
  return l;
}

/** Default threads: leave a core for the HTTP server; llama.cpp's spin-waiting threads collapse when oversubscribed. */
function defaultThreads(): number {
  return Math.max(1, availableParallelism() - 1);
}

interface Prepared { tokens: Token[]; maxTokens: number }

/** A free-sequence pool with a bounded FIFO of waiters. */
class SequencePool {
  readonly #free: LlamaSequence[];
  readonly #waiters: Array<{ resolve: (s: LlamaSequence) => void; reject: (e: unknown) => void }> = [];
  readonly #maxQueue: number;
  readonly size: number;

  constructor(sequences: LlamaSequence[], maxQueue: number) {
    this.#free = sequences;
    this.size = sequences.length;
    this.#maxQueue = maxQueue;
  }

  get queued(): number { return this.#waiters.length; }
  get active(): number { return this.size - this.#free.length; }

  acquire(signal: CancelSignal, model: string): Promise<LlamaSequence> {
    const s = this.#free.pop();
    if (s) return Promise.resolve(s);
    if (this.#waiters.length >= this.#maxQueue) {
      return Promise.reject(new LlmError('SY_ERR_MODEL_OVERLOADED', `model "${model}" is at capacity (${this.size} sequences busy, ${this.#waiters.length} waiting); retry shortly`, {
        retryAfterMs: 1000,
      }));
    }
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      this.#waiters.push(w);
      signal.addEventListener('abort', () => {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(new LlmError('SY_ERR_CLIENT_CLOSED', 'client closed the request'));
      }, { once: true });
    });
  }

  release(s: LlamaSequence): void {
    const w = this.#waiters.shift();
    if (w) w.resolve(s);
    else this.#free.push(s);
  }

  /** Reject every waiter (shutdown). */
  drain(e: unknown): void {
    for (const w of this.#waiters.splice(0)) w.reject(e);
  }
}

/** What a generation produced, after it ended. */
interface Finished { finishReason: 'stop' | 'length'; completionTokens: number }

/** Holds back text that could still turn into a stop sequence. */
class StopScanner {
  readonly #stops: readonly string[];
  #held = '';
  stopped = false;

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** Text that is safe to emit now ('' while held back); sets `stopped` when a stop sequence appeared. */
  push(text: string): string {
    if (this.#stops.length === 0) return text;
    const buf = this.#held + text;
    let cut = -1;
    for (const s of this.#stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.#held = '';
      return buf.slice(0, cut);
    }
    let keep = 0;
    for (const s of this.#stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > keep; n--) {
        if (buf.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.#held = buf.slice(buf.length - keep);
    return buf.slice(0, buf.length - keep);
  }

  /** What is still held at the end of generation (no stop sequence followed). */
  flush(): string {
    const h = this.#held;
    this.#held = '';
    return h;
  }
}

export class LlamaBackend implements LlmBackend {
  readonly kind = 'llama' as const;
  readonly capabilities = { chat: true, completions: true, embeddings: false } as const;
  readonly contextLength: number;
  readonly #config: LlamaModelConfig;
  readonly #model: LlamaModel;
  readonly #context: LlamaContext;
  readonly #pool: SequencePool;
  readonly #wrapper: ChatWrapper;
  readonly #prepared = new WeakMap<GenerationRequest, Prepared>();
  readonly #addBos: boolean;

  private constructor(config: LlamaModelConfig, model: LlamaModel, context: LlamaContext, contextLength: number, wrapper: ChatWrapper) {
    this.#config = config;
    this.#model = model;
    this.#context = context;
    this.#wrapper = wrapper;
    this.contextLength = contextLength;
    const sequences = Array.from({ length: config.sequences }, () => context.getSequence());
    this.#pool = new SequencePool(sequences, config.maxQueue);
    const meta = model.fileInfo.metadata as { tokenizer?: { ggml?: { add_bos_token?: boolean } } };
    this.#addBos = meta.tokenizer?.ggml?.add_bos_token !== false && model.tokens.bos !== null;
  }

  static async create(config: LlamaModelConfig, opts: { logger: Logger }): Promise<LlamaBackend> {
    const lib = await loadBindings();
    const llama = await llamaFor(lib, config.gpu);
    let model: LlamaModel;
    try {
      model = await llama.loadModel({ modelPath: config.path, gpuLayers: config.gpu === false ? 0 : 'auto' });
    } catch (e) {
      throw err('SY_ERR_CONFIG_INVALID', `model "${config.name}": cannot load GGUF file ${config.path}: ${(e as Error).message}`, { cause: e });
    }
    const contextSize = Math.min(config.contextSize ?? Math.min(model.trainContextSize, 4096), model.trainContextSize);
    // One context per sequence of `contextSize` tokens: llama.cpp splits the context evenly among sequences.
    const context = await model.createContext({
      sequences: config.sequences, contextSize: contextSize * config.sequences, threads: config.threads ?? defaultThreads(),
    });
    const wrapper = lib.resolveChatWrapper(model);
    opts.logger.info({ model: config.name, path: config.path, contextSize, sequences: config.sequences, chatTemplate: wrapper.wrapperName }, 'LLM model loaded');
    return new LlamaBackend(config, model, context, contextSize, wrapper);
  }

  load(): { active: number; queued: number } {
    return { active: this.#pool.active, queued: this.#pool.queued };
  }

  async estimate(req: GenerationRequest): Promise<TokenEstimate> {
    const p = this.#prepare(req);
    return { promptTokens: p.tokens.length, maxTokens: p.maxTokens };
  }

  async complete(req: GenerationRequest): Promise<Record<string, unknown>> {
    const { tokens } = this.#prepare(req);
    const seq = await this.#pool.acquire(req.signal, this.#config.name);
    let text = '';
    let fin: Finished;
    try {
      const gen = this.#generate(req, seq);
      for (;;) {
        const r = await gen.next();
        if (r.done) {
          fin = r.value;
          break;
        }
        text += r.value;
      }
    } finally {
      this.#pool.release(seq);
    }
    const usage = usageOf(tokens.length, fin.completionTokens);
    const head = { id: responseId(req.kind), created: Math.floor(Date.now() / 1000), model: req.model };
    if (req.kind === 'chat') {
      return {
        ...head, object: 'chat.completion',
        choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: fin.finishReason }],
        usage, system_fingerprint: null,
      };
    }
    return { ...head, object: 'text_completion', choices: [{ text, index: 0, logprobs: null, finish_reason: fin.finishReason }], usage };
  }

  async stream(req: GenerationRequest): Promise<ChunkStream> {
    const { tokens } = this.#prepare(req);
    const seq = await this.#pool.acquire(req.signal, this.#config.name);
    const head = { id: responseId(req.kind), object: req.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created: Math.floor(Date.now() / 1000), model: req.model };
    const chunk = req.kind === 'chat'
      ? (delta: Record<string, unknown>, finish: string | null): Record<string, unknown> => ({ ...head, system_fingerprint: null, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] })
      : (delta: Record<string, unknown>, finish: string | null): Record<string, unknown> => ({ ...head, choices: [{ text: delta['content'] ?? '', index: 0, logprobs: null, finish_reason: finish }] });
    const pool = this.#pool;
    const gen = this.#generate(req, seq);
    let usage: Usage | null = null;
    async function* chunks(): AsyncGenerator<Record<string, unknown>> {
      try {
        if (req.kind === 'chat') yield chunk({ role: 'assistant', content: '' }, null);
        for (;;) {
          const r = await gen.next();
          if (r.done) {
            usage = usageOf(tokens.length, r.value.completionTokens);
            yield chunk({}, r.value.finishReason);
            return;
          }
          yield chunk({ content: r.value }, null);
        }
      } finally {
        await gen.return(undefined as never);
        pool.release(seq);
      }
    }
    return primed(chunks(), () => usage);
  }

  async embed(): Promise<EmbeddingResult> {
    throw new LlmError('SY_ERR_MODEL_NOT_SUPPORTED', `model "${this.#config.name}" generates text; it has no embeddings endpoint`, { param: 'model' });
  }

  async close(): Promise<void> {
    this.#pool.drain(new LlmError('SY_ERR_SHUTTING_DOWN', 'server is shutting down', { retryAfterMs: 1000 }));
    await this.#context.dispose();
    await this.#model.dispose();
  }

  /** Prompt tokens (rendered with the chat template) and the generation cap; 400 when they cannot fit. */
  #prepare(req: GenerationRequest): Prepared {
    const cached = this.#prepared.get(req);
    if (cached) return cached;
    const tokens = req.kind === 'chat' ? this.#chatTokens(req.messages) : this.#promptTokens(req.prompt);
    const room = this.contextLength - tokens.length;
    const asked = req.params.maxTokens;
    if (room <= 0 || (asked !== null && asked > room)) {
      const wanted = tokens.length + (asked ?? 1);
      throw new LlmError('SY_ERR_CONTEXT_LENGTH_EXCEEDED', `This model's maximum context length is ${this.contextLength} tokens. However, you requested ${wanted} tokens (${tokens.length} in the ${req.kind === 'chat' ? 'messages' : 'prompt'}, ${asked ?? 1} in the completion). Please reduce the length of the ${req.kind === 'chat' ? 'messages' : 'prompt'} or completion.`, {
        param: req.kind === 'chat' ? 'messages' : 'prompt',
      });
    }
    const p = { tokens, maxTokens: asked ?? Math.min(this.#config.defaultMaxTokens, room) };
    this.#prepared.set(req, p);
    return p;
  }

  #chatTokens(messages: readonly ChatMessage[]): Token[] {
    const history: HistoryItem[] = [];
    for (const m of messages) {
      if (m.role === 'system' || m.role === 'developer') history.push({ type: 'system', text: m.content });
      else if (m.role === 'assistant') history.push({ type: 'model', response: [m.content] });
      else history.push({ type: 'user', text: m.content });
    }
    history.push({ type: 'model', response: [] });
    const state = this.#wrapper.generateContextState({ chatHistory: history });
    return state.contextText.tokenize(this.#model.tokenizer);
  }

  #promptTokens(prompt: string): Token[] {
    const t = this.#model.tokenize(prompt, false);
    return this.#addBos ? [this.#model.tokens.bos!, ...t] : t;
  }

  /**
   * Evaluate the prompt on `seq` (reusing its common prefix) and yield text pieces until max tokens, an
   * end-of-generation token, a stop sequence or the client leaving.
   */
  async *#generate(req: GenerationRequest, seq: LlamaSequence): AsyncGenerator<string, Finished> {
    const { tokens, maxTokens } = this.#prepare(req);
    const input = await reusePrefix(seq, tokens);
    const p = req.params;
    const gen = seq.evaluate(input, {
      temperature: p.temperature, topP: p.topP, ...(p.seed !== null ? { seed: p.seed } : {}),
    });
    const stops = new StopScanner(p.stop);
    const generated: Token[] = [];
    let pending: Token[] = [];
    let finishReason: Finished['finishReason'] = 'length';
    try {
      for await (const token of gen) {
        if (req.signal.aborted) break;
        if (this.#model.isEogToken(token)) {
          finishReason = 'stop';
          break;
        }
        generated.push(token);
        pending.push(token);
        const text = this.#model.detokenize(pending, false, generated.slice(Math.max(0, generated.length - pending.length - 4), generated.length - pending.length));
        // An incomplete UTF-8 character decodes to U+FFFD: wait for its remaining bytes (at most 4 tokens).
        const complete = !text.endsWith('\uFFFD') || pending.length >= 4;
        if (complete) {
          pending = [];
          const safe = stops.push(text);
          if (safe) yield safe;
          if (stops.stopped) {
            finishReason = 'stop';
            break;
          }
        }
        if (generated.length >= maxTokens) break;
      }
    } finally {
      await gen.return();
    }
    if (!stops.stopped) {
      const rest = stops.flush();
      if (rest) yield rest;
    }
    return { finishReason, completionTokens: generated.length };
  }
}

/** Keep the sequence's longest common prefix with `tokens`; return what still has to be evaluated (never empty). */
async function reusePrefix(seq: LlamaSequence, tokens: Token[]): Promise<Token[]> {
  const have = seq.contextTokens;
  let common = 0;
  const n = Math.min(have.length, tokens.length - 1);
  while (common < n && have[common] === tokens[common]) common++;
  if (common === 0) await seq.clearHistory();
  else if (common < seq.nextTokenIndex) await seq.eraseContextTokenRanges([{ start: common, end: seq.nextTokenIndex }]);
  return tokens.slice(common);
}

/**
 * A stream whose first chunk has been produced: the generator is started, so its cleanup (`finally`) runs
 * even when the consumer stops before reading anything.
 */
async function primed(gen: AsyncGenerator<Record<string, unknown>>, usage: () => Usage | null): Promise<ChunkStream> {
  let first: IteratorResult<Record<string, unknown>> | null = await gen.next();
  const iterator: AsyncIterator<Record<string, unknown>> = {
    next: () => {
      if (first) {
        const r = first;
        first = null;
        return Promise.resolve(r);
      }
      return gen.next();
    },
    return: async () => {
      first = null;
      await gen.return(undefined);
      return { done: true, value: undefined };
    },
  };
  return { get usage() { return usage(); }, [Symbol.asyncIterator]: () => iterator };
}

function usageOf(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function responseId(kind: 'chat' | 'completion'): string {
  return `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`;
}
