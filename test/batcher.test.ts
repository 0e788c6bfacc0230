/**
 * Scheduler rules of the dynamic batcher, checked with a controllable instance (the test decides when a batch
 * finishes): batching, queue bounds, and fair queueing between flows. Real onnxruntime batching is covered end
 * to end in v2-api and serving tests, fairness under real load in fairness.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Batcher, DEFAULT_FLOW, type Flow, type Job } from '../src/serving/batcher.js';
import type { ModelInstance } from '../src/runtimes/types.js';
import { DTYPES, type Tensor } from '../src/tensor/index.js';

/** Echoes its input; each run waits until `finish()` is called. Records the rows and first input of every batch. */
class GatedInstance implements ModelInstance {
  batches: number[] = [];
  seen: Tensor[] = [];
  #waiters: Array<() => void> = [];
  #inflight = 0;
  get inflight(): number {
    return this.#inflight;
  }
  async run(inputs: readonly Tensor[]): Promise<Tensor[]> {
    this.#inflight++;
    this.batches.push(inputs[0]!.shape[0]!);
    this.seen.push(inputs[0]!);
    await new Promise<void>((r) => this.#waiters.push(r));
    this.#inflight--;
    return [...inputs];
  }
  finish(): void {
    this.#waiters.shift()?.();
  }
  async dispose(): Promise<void> {}
}

const rowsOf = (rows: number, width = 2, v = 0): Tensor => ({ dtype: DTYPES.FP32, shape: [rows, width], data: new Float32Array(rows * width).fill(v) });
const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));
const opts = { maxBatchSize: 8, preferredBatchSizes: [] as number[], maxQueueDelayUs: 0, maxQueueSize: 100 };

describe('dynamic batcher', () => {
  it('runs a request at once on an idle instance with an empty queue, even with a queue delay', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], { ...opts, maxQueueDelayUs: 10_000_000 });
    const j = b.submit([rowsOf(1)], 1, 0);
    assert.deepEqual(inst.batches, [1], 'dispatched synchronously');
    inst.finish();
    assert.deepEqual((await j.result)[0]!.shape, [1, 2]);
  });
  it('forms a batch from requests queued while the instance was busy, up to max rows', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], opts);
    const first = b.submit([rowsOf(1)], 1, 0);
    const queued = Array.from({ length: 6 }, (_, i) => b.submit([rowsOf(2, 2, i)], 2, 0));
    assert.equal(b.queued, 6);
    inst.finish();
    await first.result;
    assert.deepEqual(inst.batches, [1, 8], 'four 2-row requests fill max_batch_size 8');
    inst.finish();
    await tick();
    assert.deepEqual(inst.batches, [1, 8, 4]);
    inst.finish();
    const results = await Promise.all(queued.map((j) => j.result));
    results.forEach((r, i) => assert.deepEqual([...(r[0]!.data as Float32Array)], [i, i, i, i], `request ${i} got its own rows`));
  });
  it('only batches shape-compatible requests together', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], opts);
    const first = b.submit([rowsOf(1)], 1, 0);
    const a = b.submit([rowsOf(1, 3)], 1, 0);
    const c = b.submit([rowsOf(1, 4)], 1, 0);
    const d = b.submit([rowsOf(1, 3)], 1, 0);
    inst.finish();
    await first.result;
    assert.deepEqual(inst.batches, [1, 2], 'the two width-3 requests ran together');
    inst.finish();
    await tick();
    inst.finish();
    const [ra, rc, rd] = await Promise.all([a.result, c.result, d.result]);
    assert.deepEqual(
      [ra[0]!.shape, rc[0]!.shape, rd[0]!.shape],
      [
        [1, 3],
        [1, 4],
        [1, 3],
      ],
    );
  });
  it('waits up to max_queue_delay for a fuller batch, and sends at once at a preferred size', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], { ...opts, maxQueueDelayUs: 40_000, preferredBatchSizes: [4] });
    const first = b.submit([rowsOf(1)], 1, 0);
    inst.finish();
    await first.result;
    // Queue is empty and instance idle: the next one runs at once.
    b.submit([rowsOf(1)], 1, 0);
    inst.finish();
    await tick();
    // Put the batcher in "waiting" state: occupy the instance, queue 1, free the instance.
    const busy = b.submit([rowsOf(1)], 1, 0);
    const w = b.submit([rowsOf(1)], 1, 0);
    inst.finish();
    await busy.result;
    const n = inst.batches.length;
    assert.equal(b.queued, 1, 'one young request waits for the delay');
    b.submit([rowsOf(1)], 1, 0);
    b.submit([rowsOf(2)], 2, 0);
    assert.equal(inst.batches.length, n + 1, 'reaching preferred size 4 sends at once');
    assert.equal(inst.batches[n], 4);
    inst.finish();
    await w.result;
    const x = b.submit([rowsOf(1)], 1, 0);
    assert.equal(b.queued, 0, 'idle again: runs at once');
    inst.finish();
    await x.result;
    const busy2 = b.submit([rowsOf(1)], 1, 0);
    const y = b.submit([rowsOf(1)], 1, 0);
    inst.finish();
    await busy2.result;
    assert.equal(b.queued, 1);
    await tick(60);
    assert.equal(b.queued, 0, 'sent once the oldest waited max_queue_delay');
    inst.finish();
    await y.result;
  });
  it('rejects with 503 and Retry-After when the queue is full', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], { ...opts, maxQueueSize: 2 });
    b.submit([rowsOf(1)], 1, 0);
    b.submit([rowsOf(1)], 1, 0);
    b.submit([rowsOf(1)], 1, 0);
    assert.throws(
      () => b.submit([rowsOf(1)], 1, 0),
      (e: { code: string; status: number; retryAfterS: number }) => e.code === 'SY_ERR_QUEUE_FULL' && e.status === 503 && e.retryAfterS > 0,
    );
  });
  it('drops timed-out and abandoned requests from the queue without running them', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], opts);
    const first = b.submit([rowsOf(1)], 1, 0);
    const timed = b.submit([rowsOf(1)], 1, 5_000);
    let gone = false;
    const abandoned = b.submit([rowsOf(1)], 1, 0, () => gone);
    const kept = b.submit([rowsOf(1)], 1, 0);
    await assert.rejects(timed.result, (e: { code: string; status: number }) => e.code === 'SY_ERR_TIMEOUT' && e.status === 504);
    assert.equal(b.queued, 2);
    gone = true;
    inst.finish();
    await first.result;
    await assert.rejects(abandoned.result, (e: { code: string }) => e.code === 'SY_ERR_CLIENT_CLOSED');
    assert.deepEqual(inst.batches, [1, 1], 'only the kept request ran');
    inst.finish();
    await kept.result;
  });
  it('shares queued rows between instances instead of giving one everything', async () => {
    const a = new GatedInstance();
    const c = new GatedInstance();
    const b = new Batcher([a, c], { ...opts, maxBatchSize: 64 });
    const s1 = b.submit([rowsOf(1)], 1, 0);
    const s2 = b.submit([rowsOf(1)], 1, 0);
    const rest = Array.from({ length: 8 }, () => b.submit([rowsOf(1)], 1, 0));
    a.finish();
    c.finish();
    await Promise.all([s1.result, s2.result]);
    assert.deepEqual(
      [a.batches, c.batches],
      [
        [1, 4],
        [1, 4],
      ],
    );
    a.finish();
    c.finish();
    await Promise.all(rest.map((j) => j.result));
  });
});

/** Row values of batch `i` as seen by the instance (each test fills a request's rows with a value naming it). */
const rowValues = (inst: GatedInstance, i: number): number[] => {
  const t = inst.seen[i]!;
  return Array.from({ length: t.shape[0]! }, (_, r) => (t.data as Float32Array)[r * t.shape[1]!]!);
};
const count = (xs: number[], v: number): number => xs.filter((x) => x === v).length;
/** Finish the running batch and let the batcher dispatch the next (completion runs on microtasks). */
const step = async (inst: GatedInstance): Promise<void> => {
  inst.finish();
  await new Promise<void>((r) => setImmediate(r));
};
const isQueueFull = (e: { code: string; status: number; retryAfterS: number; message: string }): boolean =>
  e.code === 'SY_ERR_QUEUE_FULL' && e.status === 503 && e.retryAfterS === 1 && /^queue is full \(4 requests waiting/.test(e.message);

describe('fair queueing between flows', () => {
  const A: Flow = { id: 'A', weight: 1 };
  const B: Flow = { id: 'B', weight: 1 };
  const submit = (b: Batcher, flow: Flow, n: number, v: number, rows = 1): Job[] =>
    Array.from({ length: n }, () => b.submit([rowsOf(rows, 2, v)], rows, 0, null, flow));
  const drain = async (inst: GatedInstance, b: Batcher, jobs: Job[]): Promise<void> => {
    while (b.queued > 0 || b.running > 0) await step(inst);
    await Promise.allSettled(jobs.map((j) => j.result));
  };

  it("a light flow's requests go into the very next batch, ahead of a heavy flow's backlog", async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], opts);
    const a = submit(b, A, 20, 1); // the first runs at once, 19 wait
    const bs = submit(b, B, 2, 2);
    await step(inst);
    const next = rowValues(inst, 1);
    assert.equal(next.length, 8, 'a full batch');
    assert.equal(count(next, 2), 2, `both of B's requests are in the next batch (got ${next})`);
    await step(inst);
    await Promise.all(bs.map((j) => j.result));
    assert.equal(b.queued, 19 - 6 - 8, "A's backlog still waits");
    await drain(inst, b, a);
    // Contrast: the same arrivals in one flow are FIFO, B's requests wait behind all of A's.
    const fifo = new GatedInstance();
    const f = new Batcher([fifo], opts);
    const all = [...submit(f, DEFAULT_FLOW, 20, 1), ...submit(f, DEFAULT_FLOW, 2, 2)];
    await drain(fifo, f, all);
    assert.deepEqual(
      fifo.seen.map((_, i) => count(rowValues(fifo, i), 2)),
      [0, 0, 0, 2],
    );
  });

  it('the next request is the smallest tag across shape groups too', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], opts);
    const a = submit(b, A, 20, 1);
    const bj = b.submit([rowsOf(1, 3, 2)], 1, 0, null, B); // another shape, queued after A's backlog
    await step(inst);
    assert.deepEqual(inst.batches.slice(1), [1], "B's group goes next: its head has the smallest start tag");
    assert.deepEqual(rowValues(inst, 1), [2]);
    await step(inst);
    assert.deepEqual((await bj.result)[0]!.shape, [1, 3]);
    await drain(inst, b, a);
  });

  it('backlogged flows share dispatched rows by weight (3:1)', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], { ...opts, maxQueueSize: 1000 });
    const jobs = [...submit(b, { id: 'A', weight: 3 }, 60, 1), ...submit(b, { id: 'B', weight: 1 }, 60, 2)];
    for (let i = 0; i < 4; i++) await step(inst);
    const rows = [1, 2, 3, 4].flatMap((i) => rowValues(inst, i)); // 32 rows, both flows backlogged throughout
    assert.equal(rows.length, 32);
    const [ra, rb] = [count(rows, 1), count(rows, 2)];
    assert.ok(Math.abs(ra - 24) <= 1 && Math.abs(rb - 8) <= 1, `A:B rows ${ra}:${rb}, expected 24:8`);
    for (let i = 1; i <= 4; i++) assert.ok(count(rowValues(inst, i), 2) >= 1, `B is served in every batch (batch ${i})`);
    await drain(inst, b, jobs);
  });

  it("longest-queue-drop: an arrival from a shorter flow evicts the longest flow's newest request", async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], { ...opts, maxQueueSize: 4 });
    const a = submit(b, A, 5, 1); // one runs, four fill the queue
    assert.equal(b.queued, 4);
    const b1 = b.submit([rowsOf(1, 2, 2)], 1, 0, null, B);
    await assert.rejects(a[4]!.result, isQueueFull, "A's newest request is evicted");
    assert.equal(b.queued, 4, 'B admitted in its place');
    assert.throws(() => b.submit([rowsOf(1)], 1, 0, null, A), isQueueFull, 'A (holding the most) is rejected on arrival');
    const b2 = b.submit([rowsOf(1, 2, 2)], 1, 0, null, B); // B 1+1 < A 3: evicts again; now 2:2
    await assert.rejects(a[3]!.result, isQueueFull);
    assert.throws(() => b.submit([rowsOf(1)], 1, 0, null, B), isQueueFull, "B would hold 3 against A's 2: rejected");
    assert.throws(() => b.submit([rowsOf(1)], 1, 0, null, A), isQueueFull, 'equal shares: rejected');
    await step(inst);
    assert.deepEqual(rowValues(inst, 1), [2, 1, 2, 1], 'survivors run in fair order (B started at V, ahead of A)');
    await step(inst);
    await Promise.all([a[0]!.result, a[1]!.result, a[2]!.result, b1.result, b2.result]);
  });

  it('longest-queue-drop compares queued requests per unit weight', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], { ...opts, maxQueueSize: 4 });
    const heavy = { id: 'A', weight: 4 };
    const a = submit(b, heavy, 5, 1); // 4 queued at weight 4: one per unit weight
    assert.throws(() => b.submit([rowsOf(1)], 1, 0, null, B), isQueueFull, 'B (1 per unit weight with the arrival) is not shorter');
    const c = b.submit([rowsOf(1, 2, 3)], 1, 0, null, { id: 'C', weight: 2 }); // 0.5 per unit weight: evicts
    await assert.rejects(a[4]!.result, isQueueFull);
    await drain(inst, b, [...a.slice(0, 4), c]);
    await c.result;
  });

  it('a single flow, named or default, is FIFO exactly as before', async () => {
    const run = async (flow: Flow): Promise<{ batches: number[]; order: number[] }> => {
      const inst = new GatedInstance();
      const b = new Batcher([inst], opts);
      const jobs: Job[] = [b.submit([rowsOf(1, 2, 0)], 1, 0, null, flow)];
      for (let i = 1; i <= 20; i++) jobs.push(b.submit([rowsOf(1 + (i % 3), 2, i)], 1 + (i % 3), 0, null, flow));
      await drain(inst, b, jobs);
      return { batches: inst.batches, order: inst.seen.flatMap((_, i) => rowValues(inst, i)).filter((v, i, xs) => v !== xs[i - 1]) };
    };
    const dflt = await run(DEFAULT_FLOW);
    assert.deepEqual(
      dflt.order,
      Array.from({ length: 21 }, (_, i) => i),
      'submission order',
    );
    assert.deepEqual(dflt.batches, [1, 8, 6, 6, 6, 6, 6, 3], 'each batch stops at the first request that does not fit');
    assert.deepEqual(await run({ id: 'tenant', weight: 5 }), dflt);
  });

  it('an idle flow banks no credit: on return it shares with the backlogged flow instead of taking over', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], opts);
    const a = submit(b, A, 40, 1);
    const early = b.submit([rowsOf(1, 2, 2)], 1, 0, null, B); // B active once, then idle
    for (let i = 0; i < 3; i++) await step(inst);
    await early.result;
    const bs = submit(b, B, 10, 2); // B returns after A got ~24 rows alone
    await step(inst);
    const next = rowValues(inst, 4);
    assert.ok(count(next, 1) >= 3 && count(next, 2) <= 5, `A keeps its half of the next batch (got ${next})`);
    await drain(inst, b, [...a, ...bs]);
  });

  it('a flow with one large request in flight still pays for it before its next one runs', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], opts);
    const y = submit(b, B, 31, 2); // one runs, 30 wait
    const x1 = b.submit([rowsOf(8, 2, 1)], 8, 0, null, A);
    await step(inst);
    assert.deepEqual(rowValues(inst, 1), [1, 1, 1, 1, 1, 1, 1, 1], 'X starts at V: its request runs next');
    const x2 = b.submit([rowsOf(8, 2, 1)], 8, 0, null, A); // sent while the first runs; nothing of A is queued in between
    await step(inst);
    assert.equal(count(rowValues(inst, 2), 2), 8, 'Y gets the 8 rows X just used before X runs again');
    await step(inst);
    assert.equal(count(rowValues(inst, 3), 1), 8);
    await drain(inst, b, [...y, x1, x2]);
  });

  it('keeps flow bookkeeping bounded under sustained load with ever new flows', async () => {
    const inst = new GatedInstance();
    const b = new Batcher([inst], { ...opts, maxQueueSize: 10_000 });
    const jobs = submit(b, { id: 'bulk', weight: 1 }, 2, 1);
    let most = 0;
    for (let i = 0; i < 5000; i++) {
      jobs.push(b.submit([rowsOf(1, 2, 2)], 1, 0, null, { id: `t${i}`, weight: 1 }));
      jobs.push(...submit(b, { id: 'bulk', weight: 1 }, 2, 1));
      if (i % 4 === 3) await step(inst);
      most = Math.max(most, b.flows);
    }
    assert.ok(b.queued > 1000, 'never idle: the backlog grew');
    assert.ok(most < 600, `flow states stay bounded (peak ${most})`);
    await drain(inst, b, jobs);
    assert.ok(b.flows <= 8, `idle: at most a few kept (${b.flows})`);
  });

  it('rejects a weight that is not a positive finite number', () => {
    const b = new Batcher([new GatedInstance()], opts);
    for (const weight of [0, -1, Number.NaN, Infinity]) assert.throws(() => b.submit([rowsOf(1)], 1, 0, null, { id: 'x', weight }), RangeError);
  });
});
