/**
 * @module
 * The sequences of one llama.cpp context as slots: a request takes a free one or waits in a bounded FIFO (beyond
 * `maxQueue`, 503 with retry-after); a waiter whose client leaves is dropped. Served through the catalog, the
 * tenant-fair queue in front (serving/llm-queue.ts) lets no more requests through than there are sequences, so
 * this FIFO stays empty there and only the choice of sequence below matters. A request takes the free sequence
 * whose kept tokens share the longest prefix with its prompt when that covers at least half of it (that prefix
 * is not evaluated again: a shared system prompt, a conversation's earlier turns), else the least recently used. llama.cpp evaluates the tokens of
 * every busy sequence together in shared batches (continuous batching: a request joins or leaves between two
 * decoding steps, never waiting for a whole batch to finish).
 */
import { LlmError, type CancelSignal } from '../generation.js';
import type { LlamaSequence } from './bindings.js';

/** The share of a prompt a sequence's held prefix must cover to be chosen for it over the least recently used one. */
const REUSE_SIMILARITY = 0.5;

export class SequencePool {
  readonly #free: LlamaSequence[];
  readonly #waiters: Array<{ resolve: (s: LlamaSequence) => void; reject: (e: unknown) => void }> = [];
  readonly #maxQueue: number;
  readonly size: number;

  constructor(sequences: LlamaSequence[], maxQueue: number) {
    this.#free = sequences;
    this.size = sequences.length;
    this.#maxQueue = maxQueue;
  }

  get queued(): number {
    return this.#waiters.length;
  }
  get active(): number {
    return this.size - this.#free.length;
  }

  acquire(signal: CancelSignal, model: string, prompt: readonly number[]): Promise<LlamaSequence> {
    if (this.#free.length > 0) {
      // The sequence sharing the longest prefix when that is at least half the prompt (llama.cpp's server uses the
      // same similarity rule), else the least recently released one (the free list is in release order): a
      // short accidental match (a chat template's first tokens) never evicts a long prefix another request reuses.
      let best = 0;
      let bestLen = -1;
      for (let i = 0; i < this.#free.length; i++) {
        const n = sharedPrefix(this.#free[i]!.contextTokens, prompt);
        if (n > bestLen) {
          best = i;
          bestLen = n;
        }
      }
      if (bestLen < prompt.length * REUSE_SIMILARITY) best = 0;
      return Promise.resolve(this.#free.splice(best, 1)[0]!);
    }
    if (this.#waiters.length >= this.#maxQueue) {
      return Promise.reject(
        new LlmError(
          'SY_ERR_MODEL_OVERLOADED',
          `model "${model}" is at capacity (${this.size} sequences busy, ${this.#waiters.length} waiting); retry shortly`,
          {
            retryAfterMs: 1000,
          },
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      this.#waiters.push(w);
      signal.addEventListener(
        'abort',
        () => {
          const i = this.#waiters.indexOf(w);
          if (i >= 0) this.#waiters.splice(i, 1);
          reject(new LlmError('SY_ERR_CLIENT_CLOSED', 'client closed the request'));
        },
        { once: true },
      );
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

/** How many leading tokens `a` and `b` share. */
export function sharedPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
