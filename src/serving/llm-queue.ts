/**
 * @module
 * The tenant-fair queue in front of a local model's sequences: a llama model generates for `sequences`
 * requests at once; the others wait here, ordered by the same start-time fair queueing as an ONNX version's
 * batcher (fair-queue.ts), so one tenant's burst of long generations cannot starve another tenant. A request
 * costs its flow the tokens it may take (prompt + `max_tokens` × `n`, the estimate the token limits reserve),
 * and flows share the sequences in proportion to their weights; a request of a flow with nothing queued runs
 * at the next free sequence, whatever another flow has queued.
 *
 * The queue holds at most `maxQueue` waiting requests; beyond it the longest flow's newest request is evicted
 * for a shorter flow's arrival, or the arrival is refused — 503 `model_overloaded` with `retry-after` either
 * way. A waiter whose client leaves is dropped at once (its flow is not charged). The backend's own slot pool
 * (runtimes/llama/slots.ts) then only picks which free sequence (the longest shared prompt prefix): it never
 * waits, since no more requests than sequences are let through.
 */
import {
  LlmError,
  type CancelSignal,
  type ChunkStream,
  type EmbeddingRequest,
  type EmbeddingResult,
  type GenerationRequest,
  type LlmBackend,
  type TokenEstimate,
} from '../runtimes/index.js';
import { DEFAULT_FLOW, FairQueue, type FairItem, type Flow, type Lane } from './fair-queue.js';

/** One request waiting for a sequence. */
class Waiter implements FairItem<Waiter> {
  readonly enqueuedAt = performance.now();
  start = 0;
  finish = 0;
  lane: Lane<Waiter> | null = null;
  prev: Waiter | null = null;
  next: Waiter | null = null;
  onAbort: (() => void) | null = null;

  constructor(
    readonly cost: number,
    readonly signal: CancelSignal,
    readonly resolve: () => void,
    readonly reject: (e: unknown) => void,
  ) {}

  /** Stop watching the client (granted, evicted or drained). */
  detach(): void {
    if (this.onAbort !== null) this.signal.removeEventListener('abort', this.onAbort);
    this.onAbort = null;
  }
}

/**
 * `size` permits handed out in fair order across flows.
 *
 * @example
 * ```ts
 * const slots = new FairSlots('tiny', 4, 64);
 * await slots.acquire({ id: 'acme', weight: 2 }, 300, signal);
 * try { await generate(); } finally { slots.release(); }
 * ```
 */
export class FairSlots {
  readonly #fq = new FairQueue<Waiter>();
  readonly #model: string;
  readonly #maxQueue: number;
  readonly size: number;
  #active = 0;
  #closed: unknown = null;

  constructor(model: string, size: number, maxQueue: number) {
    this.#model = model;
    this.size = size;
    this.#maxQueue = maxQueue;
  }

  /** Requests waiting for a permit. */
  get queued(): number {
    return this.#fq.queued;
  }
  /** Permits held. */
  get active(): number {
    return this.#active;
  }

  /**
   * Wait for a permit in `flow`'s fair turn; `cost` is what the request charges its flow (tokens). Rejects with
   * 503 `model_overloaded` when the queue is full (or the request is evicted later for a shorter flow), with
   * `client_closed` when `signal` aborts while waiting. A resolved permit must be given back with {@link release}.
   */
  acquire(flow: Flow, cost: number, signal: CancelSignal): Promise<void> {
    if (this.#closed !== null) return Promise.reject(this.#closed);
    if (signal.aborted) return Promise.reject(closedError());
    if (this.#active >= this.size && this.#fq.queued >= this.#maxQueue) {
      // it would wait, and the queue is full
      const victim = this.#fq.victim(flow);
      if (victim === null) return Promise.reject(this.#overloaded('retry shortly'));
      this.#fq.withdraw(victim);
      victim.detach();
      victim.reject(this.#overloaded('this request was evicted for a tenant with fewer requests waiting; retry shortly'));
    }
    return new Promise<void>((resolve, reject) => {
      const w = new Waiter(Math.max(cost, 1), signal, resolve, reject);
      this.#fq.push(w, '', flow);
      w.onAbort = (): void => {
        if (w.lane === null) return;
        this.#fq.withdraw(w);
        w.onAbort = null;
        this.#idle();
        reject(closedError());
      };
      signal.addEventListener('abort', w.onAbort, { once: true });
      this.#grant();
    });
  }

  /** Give a permit back: the next waiter in fair order takes it. */
  release(): void {
    this.#active--;
    this.#grant();
    this.#idle();
  }

  /** Refuse everything from now on and reject every waiter with `e` (shutdown). */
  close(e: unknown): void {
    this.#closed = e;
    for (let w = this.#fq.any(); w !== null; w = this.#fq.any()) {
      this.#fq.withdraw(w);
      w.detach();
      w.reject(e);
    }
  }

  #grant(): void {
    while (this.#active < this.size && this.#fq.queued > 0) {
      const g = this.#fq.nextGroup()!;
      const w = this.#fq.head(g)!;
      this.#fq.dispatch(w);
      w.detach();
      this.#active++;
      w.resolve();
    }
  }

  /** Nothing waiting or generating: no flow owes another anything. */
  #idle(): void {
    if (this.#fq.queued === 0 && this.#active === 0) this.#fq.forgive();
  }

  #overloaded(what: string): LlmError {
    return new LlmError('SY_ERR_MODEL_OVERLOADED', `model "${this.#model}" is at capacity (${this.size} sequences busy, ${this.#fq.queued} waiting); ${what}`, {
      retryAfterMs: 1000,
    });
  }
}

function closedError(): LlmError {
  return new LlmError('SY_ERR_CLIENT_CLOSED', 'client closed the request');
}

/**
 * A local model's backend behind a {@link FairSlots} queue: generation starts in the tenant's fair turn; the
 * permit is held until the response (or the stream, however it ends) is done.
 */
export class FairLlmBackend implements LlmBackend {
  readonly #inner: LlmBackend;
  readonly #slots: FairSlots;

  constructor(inner: LlmBackend, slots: FairSlots) {
    this.#inner = inner;
    this.#slots = slots;
  }

  get kind(): LlmBackend['kind'] {
    return this.#inner.kind;
  }
  get capabilities(): LlmBackend['capabilities'] {
    return this.#inner.capabilities;
  }
  get contextLength(): number | null {
    return this.#inner.contextLength;
  }

  estimate(req: GenerationRequest): Promise<TokenEstimate> {
    return this.#inner.estimate(req);
  }

  async complete(req: GenerationRequest): Promise<Record<string, unknown>> {
    await this.#turn(req);
    try {
      return await this.#inner.complete(req);
    } finally {
      this.#slots.release();
    }
  }

  async stream(req: GenerationRequest): Promise<ChunkStream> {
    await this.#turn(req);
    let inner: ChunkStream;
    try {
      inner = await this.#inner.stream(req);
    } catch (e) {
      this.#slots.release();
      throw e;
    }
    const slots = this.#slots;
    let held = true;
    const done = (): void => {
      if (held) slots.release();
      held = false;
    };
    const it = inner[Symbol.asyncIterator]();
    const iterator: AsyncIterator<Record<string, unknown>> = {
      async next() {
        try {
          const r = await it.next();
          if (r.done === true) done();
          return r;
        } catch (e) {
          done();
          throw e;
        }
      },
      async return() {
        try {
          await it.return?.();
        } finally {
          done();
        }
        return { done: true, value: undefined };
      },
    };
    return {
      get usage() {
        return inner.usage;
      },
      [Symbol.asyncIterator]: () => iterator,
    };
  }

  embed(req: EmbeddingRequest): Promise<EmbeddingResult> {
    return this.#inner.embed(req);
  }

  load(): { active: number; queued: number; slots: number | null } {
    const inner = this.#inner.load();
    return { active: inner.active, queued: this.#slots.queued + inner.queued, slots: inner.slots };
  }

  async close(): Promise<void> {
    this.#slots.close(new LlmError('SY_ERR_SHUTTING_DOWN', 'server is shutting down', { retryAfterMs: 1000 }));
    await this.#inner.close();
  }

  /** Wait for this request's fair turn at a sequence (its cost: the tokens it may take). */
  async #turn(req: GenerationRequest): Promise<void> {
    const est = await this.#inner.estimate(req);
    await this.#slots.acquire(req.flow ?? DEFAULT_FLOW, est.promptTokens + est.maxTokens, req.signal);
  }
}
