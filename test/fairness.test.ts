/**
 * Fair queueing through a served model version (real onnxruntime runs, no HTTP), with service time set by the
 * test instead of measured: a gated runtime holds both instances busy until the test releases them, so time
 * is counted in *steps* (one release of the batches in flight) and every number below is exact, on an idle
 * laptop or a loaded 2-core CI box alike. The wall-clock version of the same claim (B's p99 with A against
 * alone) is `npm run bench:fairness`.
 *
 * Capacity is 2 instances × 5 rows = 10 rows a step. Tenant B sends 2 one-row requests a step (20% of
 * capacity), tenant A 10× that (2× capacity) on top of a queue it has already filled (128 requests, a long
 * overload's backlog). Batches are not preempted, so B's request arriving while A's batches run can complete no
 * sooner than the release after next (the batch in flight, then its own): 2 steps, against 1 step alone: the
 * "within 2× of alone" bound, met exactly. The same arrivals in one FIFO flow are the contrast that shows the
 * test can fail: B waits behind A's whole backlog.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_FLOW, type Flow } from '../src/serving/batcher.js';
import type { ModelVersion } from '../src/serving/model-version.js';
import { DTYPES, type Tensor } from '../src/tensor/index.js';
import { encoder } from '../tools/onnx/zoo.js';
import { gatedRuntime, until } from './gated-runtime.js';
import { startSwitchyard, type TestServer } from './helpers.js';

const QUEUE = 128;
const INSTANCES = 2;
const BATCH = 5;
const CAPACITY = INSTANCES * BATCH;
const B_RATE = 2;
const A_RATE = 10 * B_RATE;
const STEPS = 20;
const MODEL = encoder({ layers: 1, dModel: 8, heads: 2, seqLen: 1, ffn: 16, vocab: 50, seed: 3 });
const gate = gatedRuntime([createHash('sha256').update(MODEL).digest('hex')]);

/** Row tags (the token id), so the gate's record shows whose row ran. */
const TAG = { A: 1, B: 2 } as const;
type Tenant = keyof typeof TAG;
/** One row (one token). A fresh tensor per request: an instance may take ownership of the input buffers. */
const ids = (tag: number): Tensor => ({ dtype: DTYPES.INT64, shape: [1, 1], data: BigInt64Array.from([BigInt(tag)]) });

interface Sent {
  readonly tenant: Tenant;
  /** The step during which it was sent. */
  readonly at: number;
  /** The step whose release completed it; null while pending or when rejected. */
  doneAt: number | null;
  rejected: boolean;
}

/** Drives one model version in steps: `send` queues requests, `step` releases the batches in flight and waits for their completions and the next batches to reach the gate. */
class Stepper {
  step = 0;
  completed = 0;
  readonly sent: Sent[] = [];
  constructor(readonly mv: ModelVersion) {}

  send(tenant: Tenant, flow: Flow, n: number): void {
    for (let i = 0; i < n; i++) {
      const s: Sent = { tenant, at: this.step, doneAt: null, rejected: false };
      this.sent.push(s);
      const refused = (e: { code?: string }): void => {
        if (e.code !== 'SY_ERR_QUEUE_FULL') throw e;
        s.rejected = true;
      };
      try {
        const job = this.mv.submit([ids(TAG[tenant])], 1, 0, null, flow);
        job.result.then(() => {
          s.doneAt = this.step;
          this.completed++;
        }, refused);
      } catch (e) {
        refused(e as { code?: string });
      }
    }
  }

  /** Release every run waiting at the gate; resolve once their rows completed and the instances are busy again (or the queue is empty). */
  async release(): Promise<void> {
    const rows = gate.batches.slice(gate.batches.length - gate.waiting).reduce((a, b) => a + b, 0);
    const expect = this.completed + rows;
    this.step++;
    gate.open();
    gate.close();
    const batcher = this.mv.batcher!;
    await until(() => this.completed === expect && (gate.waiting === INSTANCES || batcher.queued === 0));
  }

  /** Step until nothing is queued or running. */
  async drain(): Promise<void> {
    while (gate.waiting > 0 || this.mv.batcher!.queued > 0) await this.release();
  }

  /** Steps from sending to completion of `tenant`'s completed requests sent in steps [from, to). */
  latencies(tenant: Tenant, from = 0, to = Infinity): number[] {
    return this.sent.filter((s) => s.tenant === tenant && s.doneAt !== null && s.at >= from && s.at < to).map((s) => s.doneAt! - s.at);
  }

  completedIn(tenant: Tenant, step: number): number {
    return this.sent.filter((s) => s.tenant === tenant && s.doneAt === step).length;
  }

  rejected(tenant: Tenant, step?: number): number {
    return this.sent.filter((s) => s.tenant === tenant && s.rejected && (step === undefined || s.at === step)).length;
  }
}

describe('fair queueing through a served model version (service time set by the test)', () => {
  let srv: TestServer;
  let mv: ModelVersion;
  before(async () => {
    srv = await startSwitchyard(
      {
        tiny: {
          versions: { 1: MODEL },
          config: { instances: INSTANCES, instance_mode: 'worker', intra_op_threads: 1, max_batch_size: BATCH, max_queue_delay_us: 0, max_queue_size: QUEUE },
        },
      },
      { runtime: gate.runtime },
    );
    mv = srv.sy.manager.resolve('tiny');
  });
  after(async () => {
    gate.open();
    await srv?.close();
  });

  /** Run `STEPS` steps of B at B_RATE (and, unless alone, A at A_RATE on a queue A filled first), then drain. */
  async function run(mode: 'alone' | 'fair' | 'fifo'): Promise<Stepper> {
    await mv.batcher!.idle();
    gate.ran.length = 0;
    gate.batches.length = 0;
    gate.close();
    const s = new Stepper(mv);
    const A: Flow = mode === 'fifo' ? DEFAULT_FLOW : { id: 'A', weight: 1 };
    const B: Flow = mode === 'fifo' ? DEFAULT_FLOW : { id: 'B', weight: 1 };
    if (mode !== 'alone') {
      s.send('A', A, QUEUE + INSTANCES); // two run (held at the gate), the rest fill the queue
      await until(() => gate.waiting === INSTANCES && mv.batcher!.queued === QUEUE);
    }
    for (let i = 0; i < STEPS; i++) {
      s.send('B', B, B_RATE); // B's arrive first each step, so under FIFO they are admitted (and wait), not refused
      if (mode !== 'alone') s.send('A', A, A_RATE);
      if (mode === 'alone') await until(() => gate.waiting > 0 && mv.batcher!.queued === 0); // B's run at once
      await s.release();
    }
    await s.drain();
    gate.open();
    return s;
  }

  it("a tenant at 10× the light one's rate and 2× capacity leaves the light one within 2× of its latency alone, and gets the rest", async () => {
    const alone = await run('alone');
    const fair = await run('fair');
    const fifo = await run('fifo');
    const max = (xs: number[]): number => Math.max(...xs);
    const min = (xs: number[]): number => Math.min(...xs);
    const report =
      `B latency in steps: alone ${max(alone.latencies('B'))}, fair ${min(fair.latencies('B'))}..${max(fair.latencies('B'))}, ` +
      `fifo ${min(fifo.latencies('B'))}..${max(fifo.latencies('B'))}; rejected A ${fair.rejected('A')}, B fair ${fair.rejected('B')} fifo ${fifo.rejected('B')}`;

    assert.equal(alone.latencies('B').length, STEPS * B_RATE, report);
    assert.deepEqual(new Set(alone.latencies('B')), new Set([1]), `alone, B's request completes at the next release\n${report}`);
    assert.equal(fair.rejected('B'), 0, `B is never rejected while fair\n${report}`);
    assert.equal(fair.latencies('B').length, STEPS * B_RATE, report);
    assert.deepEqual(new Set(fair.latencies('B')), new Set([2]), `with A, B waits for the batch in flight, then runs in the next: 2× alone\n${report}`);
    // A gets the capacity B leaves: once the prefilled pair has run, every step completes exactly capacity − B rows of A.
    for (let k = 2; k <= STEPS; k++) assert.equal(fair.completedIn('A', k), CAPACITY - B_RATE, `A's rows completed in step ${k}\n${report}`);
    // A's excess is refused with SY_ERR_QUEUE_FULL: in step 0 (queue full) all it sends, plus the two of its queued
    // requests B's arrivals evict; from then on what it sends beyond the capacity B leaves.
    assert.equal(fair.rejected('A', 0), A_RATE + B_RATE, `step 0: A refused, two of its queued evicted\n${report}`);
    for (let k = 1; k < STEPS; k++) assert.equal(fair.rejected('A', k), A_RATE - (CAPACITY - B_RATE), `A's excess refused in step ${k}\n${report}`);
    // Contrast: the same arrivals in one FIFO flow put B behind A's backlog (the queue's 128 rows at 10 a step).
    assert.ok(min(fifo.latencies('B')) >= 3 * max(fair.latencies('B')), `without fairness B waits behind A's backlog\n${report}`);
  });

  it('backlogged tenants share completions by weight (3:1), the same in every stretch of steps', async () => {
    await mv.batcher!.idle();
    gate.batches.length = 0;
    gate.close();
    const s = new Stepper(mv);
    const heavy: Flow = { id: 'A', weight: 3 };
    const light: Flow = { id: 'B', weight: 1 };
    s.send('A', heavy, INSTANCES + QUEUE / 2);
    s.send('B', light, QUEUE / 2);
    await until(() => gate.waiting === INSTANCES && mv.batcher!.queued === QUEUE);
    await s.release(); // the first two (A's, sent to idle instances) complete; from here both are backlogged
    const shares: string[] = [];
    for (let k = 0; k < 4; k++) {
      let a = 0;
      let b = 0;
      for (let i = 0; i < 2; i++) {
        await s.release();
        a += s.completedIn('A', s.step);
        b += s.completedIn('B', s.step);
      }
      shares.push(`${a}:${b}`);
      assert.equal(a + b, 2 * CAPACITY, 'every batch is full');
      assert.ok(Math.abs(a - 15) <= 1 && Math.abs(b - 5) <= 1, `rows of A:B over two steps, expected 15:5, got ${shares.join(', ')}`);
    }
    await s.drain();
    gate.open();
    assert.equal(s.rejected('A') + s.rejected('B'), 0);
  });
});
