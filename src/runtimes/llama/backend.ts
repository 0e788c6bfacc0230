/**
 * @module
 * Local text generation with llama.cpp through node-llama-cpp (an optional install, loaded only when a
 * `backend: llama` model is configured).
 *
 * One GGUF model is loaded once, with one context holding `sequences` sequences (slots.ts): that many requests
 * generate at once, batched together by llama.cpp; more wait in a bounded queue. Chat prompts are rendered with
 * the model's own chat template (node-llama-cpp resolves a known format, or runs the GGUF's Jinja template),
 * tools included.
 *
 * Every OpenAI parameter is implemented or refused with a 400 naming it (request.ts): `response_format`
 * (json_object, json_schema) and tool arguments are enforced with grammars, `tool_choice` required / named
 * writes the model's call syntax for it, `n` choices are generated one after another on the same sequence (the
 * prompt is evaluated once: later choices reuse it), logprobs come from the distribution each token was sampled
 * from, penalties and logit bias go to llama.cpp's sampler.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { err } from '../../errors.js';
import type { LlamaModelConfig } from '../../config/index.js';
import { LlmError, type ChunkStream, type EmbeddingResult, type GenerationRequest, type LlmBackend, type TokenEstimate, type Usage } from '../generation.js';
import {
  defaultThreads,
  llamaFor,
  loadBindings,
  type ChatWrapper,
  type Llama,
  type LlamaContext,
  type LlamaGrammar,
  type LlamaModel,
  type NodeLlamaCpp,
  type Token,
} from './bindings.js';
import { Generation, type CallSyntax, type Finished, type GenEvent, type Plan } from './generate.js';
import { grammarSchema } from './json-schema.js';
import {
  availableFunctions,
  chatHistory,
  chatLogprob,
  checkParams,
  completionLogprobs,
  tokenBias,
  toolSchemas,
  vocabularySize,
  type TokenLogprob,
} from './request.js';
import { SequencePool, sharedPrefix } from './slots.js';

/** A request made ready to run: prompt tokens, the per-choice cap and the plan's request-wide parts. */
interface Prepared {
  readonly tokens: Token[];
  readonly maxTokens: number;
  readonly plan: Omit<Plan, 'sampling'> & { readonly seed: number | null; readonly base: Plan['sampling'] };
}

/** Compiled grammars kept (by schema text); compiling one takes milliseconds, requests reuse a few schemas. */
const MAX_GRAMMARS = 64;

/** What one choice produced. */
interface Choice {
  text: string;
  logprobs: TokenLogprob[];
  call: { id: string; name: string; arguments: string } | null;
  fin: Finished;
}

export class LlamaBackend implements LlmBackend {
  readonly kind = 'llama' as const;
  readonly capabilities = { chat: true, completions: true, embeddings: false } as const;
  readonly contextLength: number;
  readonly #config: LlamaModelConfig;
  readonly #lib: NodeLlamaCpp;
  readonly #llama: Llama;
  readonly #model: LlamaModel;
  readonly #context: LlamaContext;
  readonly #pool: SequencePool;
  readonly #wrapper: ChatWrapper;
  readonly #syntax: CallSyntax;
  readonly #vocab: number | null;
  readonly #prepared = new WeakMap<GenerationRequest, Promise<Prepared>>();
  readonly #grammars = new Map<string, Promise<LlamaGrammar>>();
  readonly #addBos: boolean;

  private constructor(config: LlamaModelConfig, lib: NodeLlamaCpp, llama: Llama, model: LlamaModel, context: LlamaContext, contextLength: number) {
    this.#config = config;
    this.#lib = lib;
    this.#llama = llama;
    this.#model = model;
    this.#context = context;
    this.#wrapper = lib.resolveChatWrapper(model);
    this.contextLength = contextLength;
    const sequences = Array.from({ length: config.sequences }, () => context.getSequence());
    this.#pool = new SequencePool(sequences, config.maxQueue);
    const meta = model.fileInfo.metadata as { tokenizer?: { ggml?: { add_bos_token?: boolean } } };
    this.#addBos = meta.tokenizer?.ggml?.add_bos_token !== false && model.tokens.bos !== null;
    this.#vocab = vocabularySize(model);
    this.#syntax = this.#callSyntax();
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
      sequences: config.sequences,
      contextSize: contextSize * config.sequences,
      threads: config.threads ?? defaultThreads(),
    });
    const backend = new LlamaBackend(config, lib, llama, model, context, contextSize);
    opts.logger.info(
      { model: config.name, path: config.path, contextSize, sequences: config.sequences, chatTemplate: backend.#wrapper.wrapperName },
      'LLM model loaded',
    );
    return backend;
  }

  load(): { active: number; queued: number; slots: number } {
    return { active: this.#pool.active, queued: this.#pool.queued, slots: this.#pool.size };
  }

  async estimate(req: GenerationRequest): Promise<TokenEstimate> {
    const p = await this.#prepare(req);
    return { promptTokens: p.tokens.length, maxTokens: p.maxTokens * req.params.n };
  }

  async complete(req: GenerationRequest): Promise<Record<string, unknown>> {
    const prepared = await this.#prepare(req);
    const seq = await this.#pool.acquire(req.signal, this.#config.name, prepared.tokens);
    const choices: Choice[] = [];
    const cached = cachedTokens(seq.contextTokens, prepared.tokens);
    try {
      for (let i = 0; i < req.params.n && !req.signal.aborted; i++) {
        const c: Choice = { text: '', logprobs: [], call: null, fin: { finishReason: 'length', completionTokens: 0 } };
        const gen = new Generation(this.#lib, this.#model, seq, this.#plan(prepared, i)).run();
        for (;;) {
          const r = await gen.next();
          if (r.done) {
            c.fin = r.value;
            break;
          }
          const e = r.value;
          if (e.kind === 'text') {
            c.text += e.text;
            c.logprobs.push(...e.logprobs);
          } else if (e.kind === 'call') c.call = { id: e.id, name: e.name, arguments: '' };
          else c.call!.arguments += e.text;
        }
        choices.push(c);
      }
    } finally {
      this.#pool.release(seq);
    }
    const usage = usageOf(
      prepared.tokens.length,
      choices.reduce((n, c) => n + c.fin.completionTokens, 0),
      cached,
    );
    const head = { id: responseId(req.kind), created: Math.floor(Date.now() / 1000), model: req.model };
    const withLogprobs = req.params.logprobs;
    if (req.kind === 'chat') {
      return {
        ...head,
        object: 'chat.completion',
        choices: choices.map((c, index) => ({
          index,
          message: {
            role: 'assistant',
            content: c.call !== null && c.text === '' ? null : c.text,
            refusal: null,
            ...(c.call !== null ? { tool_calls: [{ id: c.call.id, type: 'function', function: { name: c.call.name, arguments: c.call.arguments } }] } : {}),
          },
          logprobs: withLogprobs ? { content: c.logprobs.map(chatLogprob), refusal: null } : null,
          finish_reason: c.fin.finishReason,
        })),
        usage,
        system_fingerprint: null,
      };
    }
    return {
      ...head,
      object: 'text_completion',
      choices: choices.map((c, index) => ({
        text: c.text,
        index,
        logprobs: withLogprobs ? completionLogprobs(c.logprobs, 0) : null,
        finish_reason: c.fin.finishReason,
      })),
      usage,
    };
  }

  async stream(req: GenerationRequest): Promise<ChunkStream> {
    const prepared = await this.#prepare(req);
    const seq = await this.#pool.acquire(req.signal, this.#config.name, prepared.tokens);
    const chat = req.kind === 'chat';
    const cached = cachedTokens(seq.contextTokens, prepared.tokens);
    const head = {
      id: responseId(req.kind),
      object: chat ? 'chat.completion.chunk' : 'text_completion',
      created: Math.floor(Date.now() / 1000),
      model: req.model,
    };
    const withLogprobs = req.params.logprobs;
    const chunk = (
      index: number,
      delta: Record<string, unknown>,
      finish: string | null,
      logprobs: readonly TokenLogprob[] | null,
      offset = 0,
    ): Record<string, unknown> => {
      if (chat) {
        const lp = withLogprobs && logprobs !== null ? { content: logprobs.map(chatLogprob), refusal: null } : null;
        return { ...head, system_fingerprint: null, choices: [{ index, delta, logprobs: lp, finish_reason: finish }] };
      }
      const lp = withLogprobs && logprobs !== null ? completionLogprobs(logprobs, offset) : null;
      return { ...head, choices: [{ text: delta['content'] ?? '', index, logprobs: lp, finish_reason: finish }] };
    };
    const pool = this.#pool;
    const runs = (i: number): AsyncGenerator<GenEvent, Finished> => new Generation(this.#lib, this.#model, seq, this.#plan(prepared, i)).run();
    let usage: Usage | null = null;
    async function* chunks(): AsyncGenerator<Record<string, unknown>> {
      let completion = 0;
      let gen: AsyncGenerator<GenEvent, Finished> | null = null;
      try {
        for (let i = 0; i < req.params.n; i++) {
          if (chat) yield chunk(i, { role: 'assistant', content: '', refusal: null }, null, null);
          gen = runs(i);
          let offset = 0;
          for (;;) {
            const r = await gen.next();
            if (r.done) {
              completion += r.value.completionTokens;
              yield chunk(i, {}, r.value.finishReason, null);
              break;
            }
            const e = r.value;
            if (e.kind === 'text') {
              yield chunk(i, { content: e.text }, null, e.logprobs, offset);
              offset += e.text.length;
            } else if (e.kind === 'call') {
              yield chunk(i, { tool_calls: [{ index: 0, id: e.id, type: 'function', function: { name: e.name, arguments: '' } }] }, null, null);
            } else {
              yield chunk(i, { tool_calls: [{ index: 0, function: { arguments: e.text } }] }, null, null);
            }
          }
          gen = null;
          if (req.signal.aborted) return;
        }
        usage = usageOf(prepared.tokens.length, completion, cached);
      } finally {
        await gen?.return(undefined as never);
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

  /** The plan of choice `i`: its own seed (seed + i), so choices differ but a seeded request repeats. */
  #plan(p: Prepared, i: number): Plan {
    const seed = p.plan.seed;
    return { ...p.plan, sampling: { ...p.plan.base, ...(seed !== null ? { seed: seed + i } : {}) } };
  }

  #prepare(req: GenerationRequest): Promise<Prepared> {
    let p = this.#prepared.get(req);
    if (p === undefined) {
      p = this.#build(req);
      this.#prepared.set(req, p);
    }
    return p;
  }

  /** Check the parameters, render the prompt, compile the grammars; 400 naming what cannot be done or cannot fit. */
  async #build(req: GenerationRequest): Promise<Prepared> {
    checkParams(req);
    const params = req.params;
    const tools = req.toolChoice === 'none' ? [] : req.tools;
    if (tools.length > 0 && req.responseFormat.type !== 'text') {
      throw new LlmError(
        'SY_ERR_BAD_REQUEST',
        `Unsupported parameter: 'response_format' cannot be combined with tools on model '${req.model}' (a local llama.cpp model); use tool_choice "none" or drop response_format.`,
        {
          param: 'response_format',
          openaiCode: 'unsupported_parameter',
        },
      );
    }
    const schemas = toolSchemas(tools);
    const tokens = req.kind === 'chat' ? this.#chatTokens(req, schemas) : this.#promptTokens(req.prompt);
    const room = this.contextLength - tokens.length;
    const asked = params.maxTokens;
    if (room <= 0 || (asked !== null && asked > room)) {
      const where = req.kind === 'chat' ? 'messages' : 'prompt';
      const wanted = tokens.length + (asked ?? 1);
      throw new LlmError(
        'SY_ERR_CONTEXT_LENGTH_EXCEEDED',
        `This model's maximum context length is ${this.contextLength} tokens. However, you requested ${wanted} tokens (${tokens.length} in the ${where}, ${asked ?? 1} in the completion). Please reduce the length of the ${where} or completion.`,
        {
          param: where,
        },
      );
    }
    const maxTokens = asked ?? Math.min(this.#config.defaultMaxTokens, room);
    const rf = req.responseFormat;
    const grammar =
      rf.type === 'text'
        ? null
        : rf.type === 'json_object' || rf.schema === null
          ? await this.#grammar('json', () => this.#llama.getGrammarFor('json'))
          : await this.#jsonGrammar(grammarSchema(rf.schema, 'response_format.json_schema.schema'));
    let toolPlan: Plan['tools'] = null;
    if (tools.length > 0) {
      const names = tools.map((t) => JSON.stringify(t.name)).join(' | ');
      const args = new Map<string, LlamaGrammar>();
      for (const [name, schema] of schemas) args.set(name, await this.#jsonGrammar(schema));
      const choice = req.toolChoice as 'auto' | 'required' | { name: string };
      toolPlan = {
        choice,
        syntax: this.#syntax,
        names: await this.#grammar(`names:${names}`, () => this.#llama.createGrammar({ grammar: `root ::= " "? (${names})` })),
        args,
      };
    }
    const bias = tokenBias(this.#lib, this.#model, this.#vocab, params.logitBias);
    return {
      tokens,
      maxTokens,
      plan: {
        prompt: tokens,
        maxTokens,
        seed: params.seed,
        base: { temperature: params.temperature, topP: params.topP, ...(bias !== undefined ? { tokenBias: bias } : {}) },
        frequencyPenalty: params.frequencyPenalty,
        presencePenalty: params.presencePenalty,
        topLogprobs: params.logprobs ? params.topLogprobs : null,
        stops: params.stop,
        grammar,
        tools: toolPlan,
        signal: req.signal,
      },
    };
  }

  #jsonGrammar(schema: Record<string, unknown>): Promise<LlamaGrammar> {
    return this.#grammar(`schema:${JSON.stringify(schema)}`, () => this.#llama.createGrammarForJsonSchema(schema));
  }

  /** A compiled grammar from the bounded cache (a failed compile is not kept). */
  #grammar(key: string, compile: () => Promise<LlamaGrammar>): Promise<LlamaGrammar> {
    let g = this.#grammars.get(key);
    if (g === undefined) {
      if (this.#grammars.size >= MAX_GRAMMARS) this.#grammars.delete(this.#grammars.keys().next().value!);
      g = compile().catch((e: unknown) => {
        this.#grammars.delete(key);
        throw new LlmError('SY_ERR_BAD_REQUEST', `Invalid schema: this model's grammar compiler refused it: ${(e as Error).message}`, {
          param: 'response_format',
          openaiCode: 'invalid_value',
        });
      });
      this.#grammars.set(key, g);
    }
    return g;
  }

  #chatTokens(req: GenerationRequest, schemas: ReadonlyMap<string, Record<string, unknown>>): Token[] {
    const functions =
      schemas.size > 0
        ? availableFunctions(
            req.tools.filter((t) => schemas.has(t.name)),
            schemas,
          )
        : undefined;
    const state = this.#wrapper.generateContextState({
      chatHistory: chatHistory(req.messages),
      ...(functions !== undefined ? { availableFunctions: functions, documentFunctionParams: true } : {}),
    });
    return state.contextText.tokenize(this.#model.tokenizer);
  }

  #promptTokens(prompt: string): Token[] {
    const t = this.#model.tokenize(prompt, false);
    return this.#addBos ? [this.#model.tokens.bos!, ...t] : t;
  }

  /** The chat wrapper's function-call syntax: `{{functionName}}` in its strings is the called function's name. */
  #callSyntax(): CallSyntax {
    const call = this.#wrapper.settings.functions.call;
    const text = (v: unknown, name: string): Token[] =>
      this.#lib
        .LlamaText(v)
        .mapValues((x) => (typeof x === 'string' ? x.replaceAll('{{functionName}}', name) : x))
        .tokenize(this.#model.tokenizer);
    return {
      trigger: this.#lib.LlamaText(call.prefix).toString().trim(),
      prefix: (name) => [...text(call.prefix, name), ...(name ? this.#model.tokenize(name, false) : [])],
      paramsPrefix: (name) => text(call.paramsPrefix, name),
    };
  }
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
  return {
    get usage() {
      return usage();
    },
    [Symbol.asyncIterator]: () => iterator,
  };
}

/** Prompt tokens the sequence already holds (reused, not evaluated again; the last prompt token always is). */
function cachedTokens(held: readonly Token[], prompt: readonly Token[]): number {
  return Math.min(sharedPrefix(held, prompt), prompt.length - 1);
}

/** OpenAI's usage, with `prompt_tokens_details.cached_tokens`: the prompt's prefix reused from the sequence. */
function usageOf(prompt: number, completion: number, cached: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } };
}

function responseId(kind: 'chat' | 'completion'): string {
  return `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`;
}
