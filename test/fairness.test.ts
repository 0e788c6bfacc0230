/**
 * Fair queueing under real load (onnxruntime, no HTTP): tenant A sends at 10× tenant B's rate, more than the
 * model can serve. B's p99 must stay within 2× of its p99 alone while A gets the capacity B leaves; the same
 * traffic in one FIFO flow is the contrast that shows the test can fail.
 *
 * Why this setup. Batches are not preempted: even in perfect fair order B's request waits for a batch in
 * flight to finish, then runs in a full batch of A's rows. So B's latency with A is a residual wait plus a full
 * batch, against one one-row batch alone; that is within 2× only if a full batch costs about what one row
 * costs and the residual is short. Hence:
 * - The model's run time barely grows with rows and does not depend on memory bandwidth: a deep, narrow
 *   encoder (200 layers of width 32, one token per row, ~6000 small operators, ~5 MB of weights that stay in
 *   cache) spends its ~8 ms per run on per-operator overhead, for 1 row or 4. (A wide, weight-bandwidth-bound
 *   model was tried: its two instances slow each other down ~1.7× under load, which alone breaks the bound.)
 * - Two single-threaded instances on the 2 vCPUs (no oversubscription): B waits for the first of two busy
 *   instances to free up, not for one. Even so the residual's tail is most of a batch (p99 of the shorter of
 *   two uniform waits is 0.9 batch), so in theory the p99 ratio approaches ~1.9; measured it is ~0.8–1.7
 *   because both sides also carry fixed per-request costs and scheduling jitter.
 * - A queue of 128: under FIFO, B waits behind a full queue of A's requests (32 batches over 2 instances).
 *   Every A+B window starts with that backlog queued, as in a long overload (windows are its slices).
 * Load is open loop: a 2 ms timer submits what is due, and latency counts from when a request was due. Rates
 * come from a first capacity measurement (A flooding alone, best of three windows), so the test adapts to the
 * machine: B sends 20% of capacity, A 10× that (2× capacity, so A stays above capacity if the machine speeds up). The modes (A flooding alone, B alone, A+B fair,
 * A+B in one FIFO flow) run as short interleaved windows, rotated every round, so the background noise of a
 * shared 2-vCPU machine lands on all of them alike; a full garbage collection between windows keeps one
 * window's garbage from pausing (and being charged to) another, since load and server share this process.
 * When the machine's speed still swings too much during the run (flood-window capacities more than 2.5× apart,
 * or A no longer above capacity), latency and throughput bounds mean nothing: the test is skipped, printing
 * its numbers, instead of failing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { DEFAULT_FLOW, type Flow } from '../src/serving/batcher.js';
import type { ModelVersion } from '../src/serving/model-version.js';
import { DTYPES, type Tensor } from '../src/tensor/index.js';
import { encoder } from '../tools/onnx/zoo.js';
import { startSwitchyard, type TestServer } from './helpers.js';

const QUEUE = 128;
const MODEL = {
  versions: { 1: encoder({ layers: 200, dModel: 32, heads: 4, seqLen: 1, ffn: 32, vocab: 1000 }) },
  config: { instances: 2, instance_mode: 'worker', intra_op_threads: 1, max_batch_size: 4, max_queue_delay_us: 0, max_queue_size: QUEUE },
};
/** B's rate as a fraction of the measured capacity; A sends 10× B's rate. */
const B_SHARE = 0.2;
/** Window lengths, ms: warm-up, a first capacity estimate (sets the rates), then ROUNDS × one window of every mode. */
const WARMUP_MS = 500;
const ROUNDS = 7;
const FLOOD_MS = 400;
const WINDOW_MS = 500;
/** Completions this early in a window do not count towards throughput (instances filling up). */
const SETTLE_MS = 100;
const TICK_MS = 2;
/** Flood-window capacities further apart than this factor mean the machine's speed swung during the run. */
const MAX_CAPACITY_SWING = 2.5;

/** A full garbage collection, with V8's `gc` exposed at run time (no node flag needed). */
const collectGarbage: () => void = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

/** One row (one token). A fresh tensor per request: a worker instance takes ownership of the input buffers. */
const ids = (): Tensor => ({ dtype: DTYPES.INT64, shape: [1, 1], data: BigInt64Array.from([7n]) });

interface Stream {
  readonly flow: Flow;
  /** Requests per second, or 'flood': keep the queue full. */
  readonly rate: number | 'flood';
}
interface Outcome {
  /** Open-loop requests sent so far (the position in the schedule). */
  sent: number;
  /** Latencies of completed requests, ms, from when each was due. */
  readonly latencies: number[];
  /** Completions after the settle time. */
  settledDone: number;
  rejected: number;
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

/** Drive `streams` open loop for `ms`, then wait for what is in flight; `backlog` first queues that many of the first stream's. */
async function drive(mv: ModelVersion, streams: readonly Stream[], ms: number, backlog = 0): Promise<Outcome[]> {
  const out: Outcome[] = streams.map(() => ({ sent: 0, latencies: [], settledDone: 0, rejected: 0 }));
  const inFlight: Array<Promise<unknown>> = [];
  const t0 = performance.now();
  /** `due`: when the request was due; latency counts from then (a late timer delays the client too). */
  const send = (s: Stream, o: Outcome, due: number): void => {
    try {
      const job = mv.submit([ids()], 1, 0, null, s.flow);
      inFlight.push(job.result.then(() => {
        const now = performance.now();
        o.latencies.push(now - due);
        if (now - t0 >= SETTLE_MS && now - t0 <= ms) o.settledDone++;
      }, (e: { code?: string }) => {
        if (e.code !== 'SY_ERR_QUEUE_FULL') throw e;
        o.rejected++;
      }));
    } catch (e) {
      if ((e as { code?: string }).code !== 'SY_ERR_QUEUE_FULL') throw e;
      o.rejected++;
    }
  };
  for (let i = 0; i < backlog; i++) send(streams[0]!, out[0]!, t0);
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      try {
        const elapsed = Math.min(performance.now() - t0, ms);
        streams.forEach((s, i) => {
          const o = out[i]!;
          if (s.rate === 'flood') {
            while (mv.batcher!.queued < QUEUE) send(s, o, performance.now());
          } else {
            for (const due = Math.floor((s.rate * elapsed) / 1000); o.sent < due;) send(s, o, t0 + (++o.sent * 1000) / s.rate);
          }
        });
        if (elapsed >= ms) {
          clearInterval(timer);
          resolve();
        }
      } catch (e) {
        clearInterval(timer);
        reject(e);
      }
    }, TICK_MS);
  });
  await Promise.all(inFlight);
  return out;
}

const rate = (o: Outcome, ms: number): number => (o.settledDone * 1000) / (ms - SETTLE_MS);

type Mode = 'flood' | 'alone' | 'fair' | 'fifo';

describe('fair queueing under real load (onnxruntime)', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startSwitchyard({ deep: MODEL });
  });
  after(async () => {
    await srv?.close();
  });

  it("a 10× heavier tenant above capacity leaves the light tenant's p99 within 2× of alone, and gets the rest", { timeout: 60_000 }, async (t) => {
    const mv = srv.sy.manager.resolve('deep');
    const A: Flow = { id: 'A', weight: 1 };
    const B: Flow = { id: 'B', weight: 1 };
    await drive(mv, [{ flow: A, rate: 'flood' }], WARMUP_MS); // first runs and JIT are slower
    await mv.batcher!.idle();
    // Background noise only ever slows the machine down: the best of a few windows estimates its capacity.
    let estimate = 0;
    for (let i = 0; i < 3; i++) {
      const [o] = await drive(mv, [{ flow: A, rate: 'flood' }], FLOOD_MS);
      estimate = Math.max(estimate, rate(o!, FLOOD_MS));
      await mv.batcher!.idle();
    }
    const rateB = Math.round(estimate * B_SHARE);
    const rateA = 10 * rateB;
    const streams: Record<Mode, Stream[]> = {
      flood: [{ flow: A, rate: 'flood' }],
      alone: [{ flow: B, rate: rateB }],
      fair: [{ flow: A, rate: rateA }, { flow: B, rate: rateB }],
      fifo: [{ flow: DEFAULT_FLOW, rate: rateA }, { flow: DEFAULT_FLOW, rate: rateB }],
    };
    const modes: Mode[] = ['flood', 'alone', 'fair', 'fifo'];
    const latB: Record<Mode, number[]> = { flood: [], alone: [], fair: [], fifo: [] };
    const rejectedB: Record<Mode, number> = { flood: 0, alone: 0, fair: 0, fifo: 0 };
    /** Completions per second of the first stream (A, or B alone) in each window. */
    const thr: Record<Mode, number[]> = { flood: [], alone: [], fair: [], fifo: [] };
    let rejectedA = 0;
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < modes.length; i++) {
        const mode = modes[(i + r) % modes.length]!;
        const ms = mode === 'flood' ? FLOOD_MS : WINDOW_MS;
        const out = await drive(mv, streams[mode], ms, mode === 'fair' || mode === 'fifo' ? QUEUE : 0);
        thr[mode].push(rate(out[0]!, ms));
        if (mode !== 'flood') {
          const b = out[out.length - 1]!;
          latB[mode].push(...b.latencies);
          rejectedB[mode] += b.rejected;
        }
        if (mode === 'fair') rejectedA += out[0]!.rejected;
        await mv.batcher!.idle();
        collectGarbage();
      }
    }
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const capacity = mean(thr.flood);
    const swing = Math.max(...thr.flood) / Math.min(...thr.flood);
    const fairA = mean(thr.fair);
    const share = capacity - rateB;
    const p99 = { alone: pct(latB.alone, 99), fair: pct(latB.fair, 99), fifo: pct(latB.fifo, 99) };
    const fmt = (xs: number[]): string => `${pct(xs, 50).toFixed(1)}/${pct(xs, 99).toFixed(1)}`;
    const report = [
      `capacity ${capacity.toFixed(0)} req/s (windows ${Math.min(...thr.flood).toFixed(0)}..${Math.max(...thr.flood).toFixed(0)}, `
        + `first estimate ${estimate.toFixed(0)}); B sends ${rateB}/s, A ${rateA}/s`,
      `B p50/p99 ms: alone ${fmt(latB.alone)} (n=${latB.alone.length}), fair ${fmt(latB.fair)} (p99 ratio ${(p99.fair / p99.alone).toFixed(2)}), `
        + `fifo ${fmt(latB.fifo)} (${rejectedB.fifo} of B rejected)`,
      `A fair ${fairA.toFixed(0)} req/s vs capacity - B ${share.toFixed(0)} (${rejectedA} of A rejected); A fifo ${mean(thr.fifo).toFixed(0)} req/s`,
    ].join('\n');
    for (const line of report.split('\n')) t.diagnostic(line);

    assert.equal(rejectedB.alone + rejectedB.fair, 0, `B is never rejected while fair\n${report}`);
    if (swing > MAX_CAPACITY_SWING || rateA < 1.15 * capacity) {
      t.skip(`machine too unsteady for latency bounds (capacity swing ${swing.toFixed(2)}×, A at ${(rateA / capacity).toFixed(2)}× capacity)`);
      return;
    }
    assert.ok(p99.fair <= 2 * p99.alone, `B's p99 with A stays within 2× of alone\n${report}`);
    assert.ok(Math.abs(fairA - share) <= 0.25 * share, `A gets the capacity B leaves\n${report}`);
    assert.ok(rejectedA > 0, `A's excess is rejected\n${report}`);
    assert.ok(p99.fifo >= 3 * p99.fair, `without fairness B waits behind A's backlog\n${report}`);
  });
});
