/**
 * @module
 * The dynamic batcher of one model version: a bounded queue, grouped by shape (only requests whose trailing
 * dims match share a batch), dispatched to the least-loaded free instance.
 *
 * A batch forms when an instance is free. It takes queued requests of the oldest request's shape group up to
 * `maxBatchSize` rows, and is sent at once when it reaches a preferred size or the max, otherwise when the
 * oldest request has waited `maxQueueDelayUs`. A request arriving at an empty queue with a free instance runs
 * immediately: batching adds no latency at low load. Outputs are sliced back per request by rows.
 *
 * Ownership: once `submit` returns a Job, the batcher owns the request until the Job settles; a Job
 * cancelled while queued is dropped from the queue, one cancelled while running is discarded on completion.
 * A job whose client went away is found when its batch forms (`abandoned()` is polled, no listener per
 * request) and dropped without running.
 */
import { err, type SwitchyardError } from '../errors.js';
import { concatRows, sliceRows, type Tensor } from '../tensor/index.js';
import type { ModelInstance } from '../runtimes/types.js';
import { FixedQueue } from './fixed-queue.js';

export interface BatcherOptions {
  /** Rows per batch; 0 = no batching (each request runs alone). */
  readonly maxBatchSize: number;
  readonly preferredBatchSizes: readonly number[];
  readonly maxQueueDelayUs: number;
  readonly maxQueueSize: number;
}

const QUEUED = 0;
const RUNNING = 1;
const DONE = 2;

/** One submitted request. `result` settles exactly once. */
export class Job {
  state: 0 | 1 | 2 = QUEUED;
  /** When it was queued and when its batch started / finished (performance.now() ms). */
  readonly enqueuedAt = performance.now();
  startedAt = 0;
  finishedAt = 0;
  /** Rows of the batch this job ran in. */
  batchRows = 0;
  timer: NodeJS.Timeout | null = null;
  readonly result: Promise<Tensor[]>;
  resolve!: (t: Tensor[]) => void;
  reject!: (e: SwitchyardError) => void;

  constructor(
    readonly inputs: readonly Tensor[],
    readonly rows: number,
    readonly key: string,
    readonly batcher: Batcher,
    /** Polled when the job is about to run: true when its client went away (then it is dropped, not run). */
    readonly abandoned: (() => boolean) | null,
  ) {
    this.result = new Promise<Tensor[]>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
  }

  /** Drop the job: removed from the queue if still waiting; its result is rejected with `reason`. */
  cancel(reason: SwitchyardError): void {
    this.batcher.cancel(this, reason);
  }
}

/** Shape-group key: the trailing dims (after dim 0) of every input. */
export function shapeKey(inputs: readonly Tensor[]): string {
  let k = '';
  for (const t of inputs) {
    for (let i = 1; i < t.shape.length; i++) k += `${t.shape[i]},`;
    k += ';';
  }
  return k;
}

interface Group { readonly queue: FixedQueue<Job>; rows: number; live: number }

export class Batcher {
  readonly #opts: BatcherOptions;
  readonly #instances: readonly ModelInstance[];
  readonly #groups = new Map<string, Group>();
  #queued = 0;
  #running = 0;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = 0;
  /** When each instance's current batch started. */
  readonly #busySince = new Map<ModelInstance, number>();
  #closed = false;
  /** Called after every batch with its size in rows and requests, and compute time in ms. */
  onBatch: ((rows: number, requests: number, computeMs: number) => void) | null = null;

  constructor(instances: readonly ModelInstance[], opts: BatcherOptions) {
    this.#instances = instances;
    this.#opts = opts;
  }

  /** Requests waiting in the queue. */
  get queued(): number { return this.#queued; }
  /** Requests in batches currently executing. */
  get running(): number { return this.#running; }

  /**
   * Queue a request. `inputs` are in signature order and already validated; `rows` is their dim 0
   * (1 for unbatched models). Throws SY_ERR_QUEUE_FULL (caller keeps ownership) when the queue is full.
   */
  submit(inputs: readonly Tensor[], rows: number, timeoutUs: number, abandoned: (() => boolean) | null = null): Job {
    if (this.#closed) throw err('SY_ERR_SHUTTING_DOWN', 'server is shutting down');
    if (this.#queued >= this.#opts.maxQueueSize) {
      throw err('SY_ERR_QUEUE_FULL', `queue is full (${this.#opts.maxQueueSize} requests waiting)`, { retryAfterS: 1 });
    }
    const job = new Job(inputs, rows, this.#opts.maxBatchSize > 0 ? shapeKey(inputs) : '', this, abandoned);
    const wasEmpty = this.#queued === 0;
    let g = this.#groups.get(job.key);
    if (!g) {
      g = { queue: new FixedQueue<Job>(), rows: 0, live: 0 };
      this.#groups.set(job.key, g);
    }
    g.queue.push(job);
    g.rows += rows;
    g.live++;
    this.#queued++;
    if (timeoutUs > 0) {
      const ms = timeoutUs / 1000;
      job.timer = setTimeout(() => this.cancel(job, err('SY_ERR_TIMEOUT', timeoutMessage(job, ms))), ms);
    }
    this.#schedule(wasEmpty);
    return job;
  }

  cancel(job: Job, reason: SwitchyardError): void {
    if (job.state === DONE) return;
    if (job.state === QUEUED) {
      const g = this.#groups.get(job.key)!;
      g.rows -= job.rows;
      g.live--;
      this.#queued--;
    }
    this.#settle(job);
    job.reject(reason);
  }

  /** Stop admitting; queued requests still run unless `drain` is false, in which case they are rejected. */
  close(drain = true): void {
    this.#closed = true;
    if (!drain) {
      for (const g of this.#groups.values()) {
        for (let j = g.queue.shift(); j; j = g.queue.shift()) {
          if (j.state === QUEUED) this.cancel(j, err('SY_ERR_SHUTTING_DOWN', 'server is shutting down'));
        }
      }
    }
  }

  /** Resolves once nothing is queued or running. */
  async idle(): Promise<void> {
    while (this.#queued > 0 || this.#running > 0) await new Promise((r) => setTimeout(r, 5));
  }

  #settle(job: Job): void {
    job.state = DONE;
    if (job.timer) clearTimeout(job.timer);
  }

  #freeInstance(): ModelInstance | null {
    // Only a free instance takes a batch (a busy one would queue it internally and batches would shrink);
    // among free instances the first wins, which keeps the warmest instance busiest.
    for (const inst of this.#instances) if (inst.inflight === 0) return inst;
    return null;
  }

  /** The group whose live head is oldest; drops cancelled heads on the way. */
  #oldestGroup(): Group | null {
    let best: Group | null = null;
    let bestAt = Infinity;
    for (const [key, g] of this.#groups) {
      let head = g.queue.peek();
      while (head && head.state !== QUEUED) {
        g.queue.shift();
        head = g.queue.peek();
      }
      if (!head) {
        if (g.live === 0 && this.#groups.size > 8) this.#groups.delete(key);
        continue;
      }
      if (head.enqueuedAt < bestAt) {
        best = g;
        bestAt = head.enqueuedAt;
      }
    }
    return best;
  }

  #schedule(arrivedAtEmptyQueue = false): void {
    while (this.#queued > 0) {
      const inst = this.#freeInstance();
      if (!inst) return;
      const g = this.#oldestGroup();
      if (!g) return;
      const target = this.#target(g, arrivedAtEmptyQueue);
      if (target === 0) return; // timer armed: wait for a fuller batch
      const jobs = this.#take(g, target);
      if (jobs.length > 0) this.#dispatch(inst, jobs); // empty when every candidate was abandoned
      arrivedAtEmptyQueue = false;
    }
  }

  /** Rows to take from group `g` now, or 0 to wait (arming the delay timer). */
  #target(g: Group, immediate: boolean): number {
    const { maxBatchSize: max, preferredBatchSizes: preferred, maxQueueDelayUs: delayUs } = this.#opts;
    if (max === 0) return 1;
    // Share queued rows across instances: one free instance must not take everything while others that
    // were already busy when these requests arrived are about to free up (they would idle until new
    // requests come). Instances that took their share of this backlog do not count.
    if (this.#instances.length > 1 && this.#queued > 1) {
      const oldest = g.queue.peek()!.enqueuedAt;
      let takers = 0;
      for (const inst of this.#instances) if (inst.inflight === 0 || (this.#busySince.get(inst) ?? 0) < oldest) takers++;
      return Math.min(max, Math.ceil(g.rows / takers));
    }
    if (g.rows >= max) return max;
    for (let i = preferred.length - 1; i >= 0; i--) if (preferred[i]! <= g.rows) return preferred[i]!;
    if (delayUs === 0 || immediate) return max;
    const waitMs = g.queue.peek()!.enqueuedAt + delayUs / 1000 - performance.now();
    if (waitMs <= 0) return max;
    this.#arm(waitMs);
    return 0;
  }

  #arm(ms: number): void {
    const at = performance.now() + ms;
    if (this.#timer && this.#timerAt <= at) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#schedule();
    }, Math.max(0, ms));
  }

  /** Pop jobs from `g` up to `target` rows (the first job always, even if larger). */
  #take(g: Group, target: number): Job[] {
    const jobs: Job[] = [];
    let rows = 0;
    for (let j = g.queue.peek(); j; j = g.queue.peek()) {
      if (j.state !== QUEUED) {
        g.queue.shift();
        continue;
      }
      if (j.abandoned?.()) {
        g.queue.shift();
        this.cancel(j, err('SY_ERR_CLIENT_CLOSED', 'client closed the connection while the request was queued'));
        continue;
      }
      if (jobs.length > 0 && (rows + j.rows > target || this.#opts.maxBatchSize === 0)) break;
      g.queue.shift();
      jobs.push(j);
      rows += j.rows;
      g.rows -= j.rows;
      g.live--;
      this.#queued--;
      if (rows >= target) break;
    }
    return jobs;
  }

  #dispatch(inst: ModelInstance, jobs: Job[]): void {
    const n = jobs[0]!.inputs.length;
    const batched: Tensor[] = new Array<Tensor>(n);
    let rows = 0;
    const start = performance.now();
    for (const j of jobs) {
      j.state = RUNNING;
      j.startedAt = start;
      rows += j.rows;
    }
    for (let i = 0; i < n; i++) batched[i] = jobs.length === 1 ? jobs[0]!.inputs[i]! : concatRows(jobs.map((j) => j.inputs[i]!));
    this.#running += jobs.length;
    this.#busySince.set(inst, start);
    inst.run(batched).then(
      (outputs) => this.#complete(jobs, rows, outputs, start),
      (e: SwitchyardError) => this.#fail(jobs, e),
    );
  }

  #complete(jobs: Job[], rows: number, outputs: Tensor[], start: number): void {
    const end = performance.now();
    this.#running -= jobs.length;
    this.onBatch?.(rows, jobs.length, end - start);
    let offset = 0;
    for (const j of jobs) {
      if (j.state === RUNNING) {
        let sliced: Tensor[];
        try {
          sliced = jobs.length === 1 ? outputs : outputs.map((o) => splitOutput(o, rows, offset, j.rows));
        } catch (e) {
          this.#settle(j);
          j.reject(e as SwitchyardError);
          offset += j.rows;
          continue;
        }
        this.#settle(j);
        j.finishedAt = end;
        j.batchRows = rows;
        j.resolve(sliced);
      }
      offset += j.rows;
    }
    this.#schedule();
  }

  #fail(jobs: Job[], e: SwitchyardError): void {
    this.#running -= jobs.length;
    for (const j of jobs) {
      if (j.state !== RUNNING) continue;
      this.#settle(j);
      j.reject(e);
    }
    this.#schedule();
  }
}

function splitOutput(o: Tensor, rows: number, offset: number, n: number): Tensor {
  if (o.shape[0] !== rows) {
    throw err('SY_ERR_INFERENCE_FAILED', `model output dim 0 is ${o.shape[0]} for a batch of ${rows} rows; set max_batch_size: 0 for this model`);
  }
  return sliceRows(o, offset, n);
}

function timeoutMessage(job: Job, ms: number): string {
  const where = job.state === QUEUED ? 'waiting in the queue' : 'executing';
  return `request timed out after ${ms} ms (${where})`;
}
