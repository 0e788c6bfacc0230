/**
 * Scheduler rules of the dynamic batcher, checked with a controllable instance (the test decides when a batch
 * finishes). Real onnxruntime batching is covered end to end in v2-api and serving tests.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Batcher } from '../src/serving/batcher.js';
import type { ModelInstance } from '../src/runtimes/types.js';
import { DTYPES, type Tensor } from '../src/tensor/index.js';

/** Echoes its input; each run waits until `finish()` is called. Records the rows of every batch. */
class GatedInstance implements ModelInstance {
  batches: number[] = [];
  #waiters: Array<() => void> = [];
  #inflight = 0;
  get inflight(): number { return this.#inflight; }
  async run(inputs: readonly Tensor[]): Promise<Tensor[]> {
    this.#inflight++;
    this.batches.push(inputs[0]!.shape[0]!);
    await new Promise<void>((r) => this.#waiters.push(r));
    this.#inflight--;
    return [...inputs];
  }
  finish(): void { this.#waiters.shift()?.(); }
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
    assert.deepEqual([ra[0]!.shape, rc[0]!.shape, rd[0]!.shape], [[1, 3], [1, 4], [1, 3]]);
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
    assert.throws(() => b.submit([rowsOf(1)], 1, 0), (e: { code: string; status: number; retryAfterS: number }) => e.code === 'SY_ERR_QUEUE_FULL' && e.status === 503 && e.retryAfterS > 0);
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
    assert.deepEqual([a.batches, c.batches], [[1, 4], [1, 4]]);
    a.finish();
    c.finish();
    await Promise.all(rest.map((j) => j.result));
  });
});
