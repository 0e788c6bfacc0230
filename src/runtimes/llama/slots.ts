/**
 * @module
 * The sequences of one llama.cpp context as slots: a request takes a free one or waits in a bounded FIFO (beyond
 * `maxQueue`, 503 with retry-after); a waiter whose client leaves is dropped. llama.cpp evaluates the tokens of
 * every busy sequence together in shared batches (continuous batching: a request joins or leaves between two
 * decoding steps, never waiting for a whole batch to finish).
 */
import { LlmError, type CancelSignal } from '../generation.js';
import type { LlamaSequence } from './bindings.js';

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
