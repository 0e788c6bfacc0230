/**
 * @module
 * One choice's generation on a llama.cpp sequence: text (with stop sequences, a response-format grammar, log
 * probabilities), and function calls in the model's own call syntax (its chat wrapper's prefix, name, params
 * prefix, arguments, suffix).
 *
 * ```
 *  prompt ─▶ text ──(the model writes its call prefix: tool_choice auto)──┐
 *     └──────(tool_choice required / named: the prefix is written for it)─┴─▶ name (grammar: one of the tools)
 *                                                                          ─▶ params prefix ─▶ arguments (grammar: the tool's schema)
 * ```
 *
 * Text is emitted as soon as it is complete UTF-8 and cannot be the start of a stop sequence (or of the call
 * prefix), so streams never show a stop sequence, a call prefix or a broken character. The sequence keeps
 * the tokens of its last request: the longest common prefix is reused and only the rest is evaluated. One call
 * per turn at most: with `parallel_tool_calls` true a model may call several tools, not must.
 */
import { randomUUID } from 'node:crypto';
import type { CancelSignal } from '../generation.js';
import type { EvaluateOptions, LlamaGrammar, LlamaModel, LlamaSequence, NodeLlamaCpp, Token } from './bindings.js';
import { StopScanner } from './stop-scanner.js';
import { tokenLogprob, type TokenLogprob } from './request.js';

export type GenEvent =
  | { readonly kind: 'text'; readonly text: string; readonly logprobs: readonly TokenLogprob[] }
  | { readonly kind: 'call'; readonly id: string; readonly name: string }
  | { readonly kind: 'args'; readonly text: string };

export interface Finished {
  readonly finishReason: 'stop' | 'length' | 'tool_calls';
  readonly completionTokens: number;
}

/** How the model writes a function call (its chat wrapper's syntax), as text to match and tokens to write. */
export interface CallSyntax {
  /** What starts a call in generated text (matched like a stop sequence). */
  readonly trigger: string;
  readonly prefix: (name: string) => Token[];
  readonly paramsPrefix: (name: string) => Token[];
}

export interface ToolPlan {
  /** 'auto': the model may write a call; else the call to write: any tool ('required') or the named one. */
  readonly choice: 'auto' | 'required' | { readonly name: string };
  readonly syntax: CallSyntax;
  /** Grammar of the tool names, and of each tool's arguments. */
  readonly names: LlamaGrammar;
  readonly args: ReadonlyMap<string, LlamaGrammar>;
}

export interface Plan {
  readonly prompt: readonly Token[];
  readonly maxTokens: number;
  readonly sampling: EvaluateOptions;
  readonly frequencyPenalty: number;
  readonly presencePenalty: number;
  /** Alternatives per token when log probabilities are asked for; null: none. */
  readonly topLogprobs: number | null;
  readonly stops: readonly string[];
  /** response_format's grammar; null: free text. */
  readonly grammar: LlamaGrammar | null;
  readonly tools: ToolPlan | null;
  readonly signal: CancelSignal;
}

/** Keep the sequence's longest common prefix with `tokens`; return what still has to be evaluated (never empty). */
export async function reusePrefix(seq: LlamaSequence, tokens: readonly Token[]): Promise<Token[]> {
  const have = seq.contextTokens;
  let common = 0;
  const n = Math.min(have.length, tokens.length - 1);
  while (common < n && have[common] === tokens[common]) common++;
  if (common === 0) await seq.clearHistory();
  else if (common < seq.nextTokenIndex) await seq.eraseContextTokenRanges([{ start: common, end: seq.nextTokenIndex }]);
  return tokens.slice(common);
}

/**
 * Whether `text` is one whole JSON value ending with a closing bracket, quote or literal: under a JSON grammar
 * nothing but whitespace may follow, so generation ends there (a model that never samples its end token would
 * otherwise write whitespace up to max_tokens).
 */
export function completeJson(text: string): boolean {
  const t = text.trimEnd();
  const last = t.at(-1);
  if (last !== '}' && last !== ']' && last !== '"' && last !== 'e' && last !== 'l') return false;
  try {
    JSON.parse(t);
    return true;
  } catch {
    return false;
  }
}

export class Generation {
  readonly #lib: NodeLlamaCpp;
  readonly #model: LlamaModel;
  readonly #seq: LlamaSequence;
  readonly #plan: Plan;
  readonly #generated: Token[] = [];

  constructor(lib: NodeLlamaCpp, model: LlamaModel, seq: LlamaSequence, plan: Plan) {
    this.#lib = lib;
    this.#model = model;
    this.#seq = seq;
    this.#plan = plan;
  }

  #options(grammar: LlamaGrammar | null): EvaluateOptions {
    const p = this.#plan;
    const o: EvaluateOptions = { ...p.sampling };
    if (grammar !== null) o.grammarEvaluationState = new this.#lib.LlamaGrammarEvaluationState({ model: this.#model, grammar });
    if (p.frequencyPenalty !== 0 || p.presencePenalty !== 0) {
      // penalty 1: no multiplicative repeat penalty, only OpenAI's additive ones, over the tokens generated so far.
      o.repeatPenalty = {
        punishTokens: () => this.#generated,
        maxPunishTokens: p.maxTokens,
        penalty: 1,
        frequencyPenalty: p.frequencyPenalty,
        presencePenalty: p.presencePenalty,
      };
    }
    return o;
  }

  get #full(): boolean {
    return this.#generated.length >= this.#plan.maxTokens;
  }

  async *run(): AsyncGenerator<GenEvent, Finished> {
    const p = this.#plan;
    let input = await reusePrefix(this.#seq, p.prompt);
    const tools = p.tools;
    if (tools !== null && tools.choice !== 'auto') return yield* this.#call(input, tools, true);
    const text = yield* this.#text(input, tools);
    if (text.call === null || p.signal.aborted || this.#full) return { finishReason: text.finish, completionTokens: this.#generated.length };
    input = [text.call];
    return yield* this.#call(input, tools!, false);
  }

  /** Free (or response-format) text until the end, a stop sequence, max tokens, or the model's call prefix (returns the token that completed it). */
  async *#text(input: Token[], tools: ToolPlan | null): AsyncGenerator<GenEvent, { finish: 'stop' | 'length'; call: Token | null }> {
    const p = this.#plan;
    const trigger = tools?.syntax.trigger ?? null;
    const stops = new StopScanner(trigger === null ? p.stops : [...p.stops, trigger]);
    const options = this.#options(p.grammar);
    const withLogprobs = p.topLogprobs !== null;
    const gen = withLogprobs ? this.#seq.evaluateWithMetadata(input, { probabilities: true }, options) : this.#seq.evaluate(input, options);
    const generated = this.#generated;
    let pending: Token[] = [];
    let logprobs: TokenLogprob[] = [];
    let finish: 'stop' | 'length' = 'length';
    let call: Token | null = null;
    /** The text so far when a grammar makes it JSON: it ends with the value (the grammar would allow only whitespace after it). */
    let json: string | null = p.grammar === null ? null : '';
    try {
      for await (const item of gen) {
        if (p.signal.aborted) break;
        const token = typeof item === 'number' ? item : item.token;
        if (this.#model.isEogToken(token)) {
          finish = 'stop';
          break;
        }
        if (withLogprobs) {
          const before = generated.slice(Math.max(0, generated.length - 4));
          logprobs.push(tokenLogprob(this.#model, token, (item as { probabilities?: Map<Token, number> }).probabilities, p.topLogprobs, before));
        }
        generated.push(token);
        pending.push(token);
        const before = generated.slice(Math.max(0, generated.length - pending.length - 4), generated.length - pending.length);
        const piece = this.#model.detokenize(pending, false, before);
        // An incomplete UTF-8 character decodes to U+FFFD: wait for its remaining bytes (at most 4 tokens).
        if (!piece.endsWith('\uFFFD') || pending.length >= 4) {
          pending = [];
          const safe = stops.push(piece);
          if (safe) {
            yield { kind: 'text', text: safe, logprobs };
            logprobs = [];
            if (json !== null && ((json += safe), completeJson(json))) {
              finish = 'stop';
              break;
            }
          }
          if (stops.stopped) {
            if (stops.matched === trigger) call = token;
            finish = 'stop';
            break;
          }
        }
        if (this.#full) break;
      }
    } finally {
      await gen.return();
    }
    if (!stops.stopped) {
      const rest = stops.flush();
      if (rest) yield { kind: 'text', text: rest, logprobs };
    }
    return { finish, call };
  }

  /** A function call: the name (written for it, or chosen under the names grammar), then the arguments under the tool's schema. */
  async *#call(input: Token[], tools: ToolPlan, writePrefix: boolean): AsyncGenerator<GenEvent, Finished> {
    const choice = tools.choice;
    let name: string;
    if (typeof choice === 'object') {
      name = choice.name;
      input = [...input, ...tools.syntax.prefix(name)];
    } else {
      if (writePrefix) input = [...input, ...tools.syntax.prefix('')];
      const tokens: Token[] = [];
      yield* this.#constrained(input, tools.names, (t) => {
        tokens.push(t);
        return null;
      });
      name = this.#model.detokenize(tokens, false).trim();
      input = [];
      if (!tools.args.has(name)) return { finishReason: 'length', completionTokens: this.#generated.length }; // cut by max tokens
    }
    yield { kind: 'call', id: `call_${randomUUID().replaceAll('-', '').slice(0, 24)}`, name };
    input = [...input, ...tools.syntax.paramsPrefix(name)];
    const ended = yield* this.#constrained(input, tools.args.get(name)!, (t, text) => (text ? { kind: 'args', text } : null));
    return { finishReason: ended ? 'tool_calls' : 'length', completionTokens: this.#generated.length };
  }

  /**
   * Generate under `grammar` until it is complete (true) or max tokens / the client leaving (false); `each` turns
   * every token (and its text, complete UTF-8 only) into an event, or null.
   */
  async *#constrained(input: Token[], grammar: LlamaGrammar, each: (token: Token, text: string) => GenEvent | null): AsyncGenerator<GenEvent, boolean> {
    const gen = this.#seq.evaluate(input, this.#options(grammar));
    let pending: Token[] = [];
    let complete = true;
    let json = '';
    try {
      if (this.#full || this.#plan.signal.aborted) return false;
      for await (const token of gen) {
        if (this.#model.isEogToken(token)) break; // the grammar is complete: only an end token was allowed
        this.#generated.push(token);
        pending.push(token);
        const text = this.#model.detokenize(pending, false);
        let e: GenEvent | null;
        let done = false;
        if (!text.endsWith('\uFFFD') || pending.length >= 4) {
          pending = [];
          e = each(token, text);
          json += text;
          done = completeJson(json);
        } else {
          e = each(token, '');
        }
        if (e !== null) yield e;
        if (done) break;
        if (this.#full || this.#plan.signal.aborted) {
          complete = false;
          break;
        }
      }
    } finally {
      await gen.return();
    }
    return complete;
  }
}
