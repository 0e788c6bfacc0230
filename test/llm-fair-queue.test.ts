/**
 * The tenant-fair queue in front of a local model's sequences (src/serving/llm-queue.ts, over the batcher's
 * fair-queue.ts), with generation whose length the test controls: a gated backend holds each generation until
 * the test finishes it, so "B is served within k of A's completions" is counted, never timed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FairLlmBackend, FairSlots } from '../src/serving/llm-queue.js';
import { generationRequest } from './generation-request.js';
import { ClientSignal, type ChunkStream, type GenerationRequest, type LlmBackend, type TokenEstimate } from '../src/runtimes/generation.js';

/** A flow (tenant) of weight `weight`. */
const flow = (id: string, weight = 1): { id: string; weight: number } => ({ id, weight });

/** Who has been granted, in order; each grant's permit is released by the test. */
function recorder(slots: FairSlots): {
  order: string[];
  ask(who: string, f: { id: string; weight: number }, cost?: number, signal?: ClientSignal): Promise<void>;
} {
  const order: string[] = [];
  return {
    order,
    ask: (who, f, cost = 100, signal = new ClientSignal()) =>
      slots.acquire(f, cost, signal).then(() => {
        order.push(who);
      }),
  };
}

/** Let every settled promise's callbacks run. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('FairSlots: sequences handed out fairly across tenants', () => {
  it("with tenant A holding N queued requests, B is served at the next completion (not after A's backlog)", async () => {
    const slots = new FairSlots('m', 2, 64);
    const r = recorder(slots);
    for (let i = 0; i < 10; i++) void r.ask(`A${i}`, flow('A'));
    await settle();
    assert.deepEqual(r.order, ['A0', 'A1'], 'two sequences: two generate');
    assert.equal(slots.queued, 8);
    void r.ask('B0', flow('B'));
    await settle();
    assert.equal(slots.queued, 9);
    slots.release(); // one of A's generations finishes
    await settle();
    assert.deepEqual(r.order, ['A0', 'A1', 'B0'], 'B goes next, ahead of 8 queued A requests');
    // With both backlogged at equal weights they alternate.
    for (let i = 1; i < 4; i++) void r.ask(`B${i}`, flow('B'));
    await settle();
    for (let i = 0; i < 6; i++) slots.release();
    await settle();
    assert.deepEqual(r.order.slice(3), ['A2', 'B1', 'A3', 'B2', 'A4', 'B3']);
  });

  it('the same backlog in one flow is served first in, first out (the contrast: B waits behind all of A)', async () => {
    const slots = new FairSlots('m', 2, 64);
    const r = recorder(slots);
    for (let i = 0; i < 10; i++) void r.ask(`A${i}`, flow('shared'));
    void r.ask('B0', flow('shared'));
    await settle();
    let completions = 0;
    while (!r.order.includes('B0')) {
      slots.release();
      completions++;
      await settle();
    }
    assert.equal(completions, 9, "B is served only after 9 of A's completions");
  });

  it("weights: a weight-3 tenant gets three sequences for each of a weight-1 tenant's while both are backlogged", async () => {
    const slots = new FairSlots('m', 1, 64);
    const r = recorder(slots);
    void r.ask('hold', flow('X'));
    for (let i = 0; i < 8; i++) void r.ask('L', flow('light', 1));
    for (let i = 0; i < 8; i++) void r.ask('H', flow('heavy', 3));
    await settle();
    for (let i = 0; i < 8; i++) {
      slots.release();
      await settle();
    }
    assert.equal(r.order.slice(1).join(''), 'LHHHLHHH');
  });

  it('cost counts: a tenant of long generations is charged their tokens', async () => {
    const slots = new FairSlots('m', 1, 64);
    const r = recorder(slots);
    void r.ask('hold', flow('X'));
    for (let i = 0; i < 4; i++) void r.ask('long', flow('A'), 1000);
    for (let i = 0; i < 4; i++) void r.ask('short', flow('B'), 250);
    await settle();
    for (let i = 0; i < 6; i++) {
      slots.release();
      await settle();
    }
    // A's first long request and B's first short one start level; then B's next three (750 tokens) fit before A's second.
    assert.deepEqual(r.order.slice(1), ['long', 'short', 'short', 'short', 'short', 'long']);
  });

  it("a full queue evicts the longest tenant's newest request for a shorter tenant; the longest tenant's own arrival is refused", async () => {
    const slots = new FairSlots('m', 1, 3);
    const r = recorder(slots);
    const outcomes: string[] = [];
    const track = (who: string, p: Promise<void>): void => {
      p.then(
        () => outcomes.push(`${who}:ok`),
        (e: { code: string; status: number; retryAfterMs: number | null }) => outcomes.push(`${who}:${e.code}:${e.status}:${e.retryAfterMs}`),
      );
    };
    for (let i = 0; i < 4; i++) track(`A${i}`, r.ask(`A${i}`, flow('A')));
    await settle();
    assert.equal(slots.queued, 3);
    track('A4', r.ask('A4', flow('A')));
    await settle();
    assert.deepEqual(outcomes, ['A0:ok', 'A4:SY_ERR_MODEL_OVERLOADED:503:1000'], 'A may not grow past the bound');
    track('B0', r.ask('B0', flow('B')));
    await settle();
    assert.deepEqual(outcomes.slice(2), ['A3:SY_ERR_MODEL_OVERLOADED:503:1000'], "B evicts A's newest");
    assert.equal(slots.queued, 3);
    slots.release();
    await settle();
    assert.equal(r.order.at(-1), 'B0');
  });

  it('maxQueue 0: a request runs when a sequence is free and is refused when it would wait', async () => {
    const slots = new FairSlots('m', 1, 0);
    await slots.acquire(flow('A'), 1, new ClientSignal());
    await assert.rejects(slots.acquire(flow('B'), 1, new ClientSignal()), { code: 'SY_ERR_MODEL_OVERLOADED' });
    slots.release();
    await slots.acquire(flow('B'), 1, new ClientSignal());
    assert.equal(slots.active, 1);
  });

  it('a client that leaves while queued is dropped at once and its tenant is not charged; closing rejects every waiter', async () => {
    const slots = new FairSlots('m', 1, 8);
    const r = recorder(slots);
    void r.ask('hold', flow('X'));
    const gone = new ClientSignal();
    const left = r.ask('A0', flow('A'), 100, gone).then(
      () => 'ok',
      (e: { code: string }) => e.code,
    );
    await settle();
    assert.equal(slots.queued, 1);
    gone.abort();
    assert.equal(await left, 'SY_ERR_CLIENT_CLOSED');
    assert.equal(slots.queued, 0);
    // Charged for A0, A's next request would start a turn behind B's; uncharged, the older one goes first.
    void r.ask('A1', flow('A'));
    const late = r.ask('B0', flow('B')).then(
      () => 'ok',
      (e: { code: string }) => e.code,
    );
    await settle();
    slots.release();
    await settle();
    assert.deepEqual(r.order, ['hold', 'A1']);
    slots.close(Object.assign(new Error('bye'), { code: 'SY_ERR_SHUTTING_DOWN' }));
    assert.equal(await late, 'SY_ERR_SHUTTING_DOWN');
    assert.equal(slots.queued, 0);
    assert.equal(
      await slots.acquire(flow('C'), 1, new ClientSignal()).then(
        () => 'ok',
        (e: { code: string }) => e.code,
      ),
      'SY_ERR_SHUTTING_DOWN',
    );
  });
});

/** A backend whose generations each wait until the test finishes them (stream: one chunk, then the gate). */
class GatedBackend implements LlmBackend {
  readonly kind = 'llama' as const;
  readonly capabilities = { chat: true, completions: true, embeddings: false } as const;
  readonly contextLength = 1000;
  /** Requests generating now, by request id, with the function that finishes each. */
  readonly running = new Map<string, () => void>();
  readonly started: string[] = [];

  async estimate(req: GenerationRequest): Promise<TokenEstimate> {
    return { promptTokens: 10, maxTokens: req.params.maxTokens ?? 100 };
  }

  async complete(req: GenerationRequest): Promise<Record<string, unknown>> {
    await this.#gate(req);
    return { id: req.requestId };
  }

  async stream(req: GenerationRequest): Promise<ChunkStream> {
    const gate = this.#gate(req);
    const running = this.running;
    async function* chunks(): AsyncGenerator<Record<string, unknown>> {
      try {
        yield { id: req.requestId };
        await gate;
      } finally {
        running.delete(req.requestId);
      }
    }
    return { usage: null, [Symbol.asyncIterator]: () => chunks() };
  }

  async embed(): Promise<never> {
    throw new Error('no');
  }
  load(): { active: number; queued: number; slots: number } {
    return { active: this.running.size, queued: 0, slots: 2 };
  }
  async close(): Promise<void> {}

  #gate(req: GenerationRequest): Promise<void> {
    this.started.push(req.requestId);
    return new Promise((resolve) =>
      this.running.set(req.requestId, () => {
        this.running.delete(req.requestId);
        resolve();
      }),
    );
  }

  finish(id: string): void {
    this.running.get(id)!();
  }
}

function request(id: string, tenant: string, maxTokens = 100): GenerationRequest {
  return generationRequest({ kind: 'completion', prompt: 'x', requestId: id, flow: flow(tenant), params: { maxTokens } });
}

describe('FairLlmBackend: a local model behind the fair queue', () => {
  it("tenant A's burst of long generations: B's request starts after one of A's completions; load() reports the queue", async () => {
    const inner = new GatedBackend();
    const b = new FairLlmBackend(inner, new FairSlots('m', 2, 64));
    const done: Promise<unknown>[] = [];
    for (let i = 0; i < 8; i++) done.push(b.complete(request(`A${i}`, 'A', 1000)));
    await settle();
    assert.deepEqual(inner.started, ['A0', 'A1']);
    assert.deepEqual(b.load(), { active: 2, queued: 6, slots: 2 });
    done.push(b.complete(request('B0', 'B', 1000)));
    await settle();
    inner.finish('A0');
    await settle();
    assert.deepEqual(inner.started, ['A0', 'A1', 'B0']);
    for (const id of ['A1', 'B0', 'A2', 'A3', 'A4', 'A5', 'A6', 'A7']) {
      await settle();
      inner.finish(id);
    }
    await Promise.all(done);
    assert.deepEqual(b.load(), { active: 0, queued: 0, slots: 2 });
  });

  it('a stream holds its sequence until it ends or its reader stops early', async () => {
    const inner = new GatedBackend();
    const b = new FairLlmBackend(inner, new FairSlots('m', 1, 64));
    const s1 = await b.stream(request('A0', 'A'));
    let second: ChunkStream | null = null;
    const p2 = b.stream(request('B0', 'B')).then((s) => {
      second = s;
    });
    await settle();
    assert.equal(second, null, "one sequence: B waits while A's stream is open");
    const it1 = s1[Symbol.asyncIterator]();
    assert.deepEqual((await it1.next()).value, { id: 'A0' });
    const end = it1.next();
    inner.finish('A0');
    assert.equal((await end).done, true);
    await p2;
    assert.notEqual(second, null, 'the ended stream gave its sequence to B');
    // B's reader stops after the first chunk (client gone): the sequence is free again.
    const it2 = (second as unknown as ChunkStream)[Symbol.asyncIterator]();
    await it2.next();
    await it2.return!();
    assert.equal(inner.running.size, 0);
    const s3 = await b.stream(request('C0', 'C'));
    assert.deepEqual(b.load(), { active: 1, queued: 0, slots: 2 });
    await s3[Symbol.asyncIterator]().return!();
  });
});
