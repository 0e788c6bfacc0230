/**
 * @module
 * The dynamic batcher of one model version: a bounded queue, grouped by shape (only requests whose trailing
 * dims match share a batch), shared fairly between flows (tenants), dispatched to the least-loaded free instance.
 *
 * A batch forms when an instance is free. It takes queued requests of one shape group in fair order (below) up
 * to `maxBatchSize` rows, and is sent at once when it reaches a preferred size or the max, otherwise when the
 * group's oldest request has waited `maxQueueDelayUs`. A request arriving at an empty queue with a free
 * instance runs immediately: batching adds no latency at low load. Outputs are sliced back per request by rows.
 *
 * Fairness: start-time fair queueing between flows (tenants), fair-queue.ts (shared with the LLM slot queue):
 * a request costs its rows; the next request to run is the queued one with the smallest start tag, its shape
 * group forms the batch, which keeps taking that group's requests in tag order up to the target rows (stopping
 * at the first that does not fit, as FIFO does). A light flow waits for the batches in flight plus its own
 * turn, not behind a heavy flow's backlog. With a single flow this is FIFO, and "the group with the smallest
 * head tag" is the group with the oldest head.
 *
 * Queue bound (longest-queue-drop): with `maxQueueSize` requests waiting, an arriving request whose flow,
 * counting the arrival, would still hold fewer queued requests per unit weight than the flow holding the most,
 * evicts that flow's newest queued request (rejected with SY_ERR_QUEUE_FULL) and is admitted; otherwise the
 * arrival is rejected with SY_ERR_QUEUE_FULL. A flooding flow fills the queue but cannot lock the others out.
 *
 * Ownership: once `submit` returns a Job, the batcher owns the request until the Job settles; a Job
 * cancelled while queued is dropped from the queue, one cancelled while running is discarded on completion.
 * A job whose client went away is found when its batch forms (`abandoned()` is polled, no listener per
 * request) and dropped without running.
 */
import { err, type SwitchyardError } from '../errors.js';
import { concatRows, sliceRows, type Tensor } from '../tensor/index.js';
import type { ModelInstance } from '../runtimes/index.js';
import { DEFAULT_FLOW, FairQueue, type Flow, type Group, type Lane } from './fair-queue.js';

export { DEFAULT_FLOW, type Flow } from './fair-queue.js';

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
  /** Fair-queueing tags, in virtual time (rows per unit weight), and its place in the queue (fair-queue.ts). */
  start = 0;
  finish = 0;
  lane: Lane<Job> | null = null;
  prev: Job | null = null;
  next: Job | null = null;
  /** What it costs its flow: its rows. */
  readonly cost: number;
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
    this.cost = rows;
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

export class Batcher {
  readonly #opts: BatcherOptions;
  readonly #instances: readonly ModelInstance[];
  readonly #fq = new FairQueue<Job>();
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
  get queued(): number {
    return this.#fq.queued;
  }
  /** Requests in batches currently executing. */
  get running(): number {
    return this.#running;
  }
  /** Flows with bookkeeping: requests queued, or an idle flow still owing service. */
  get flows(): number {
    return this.#fq.flows;
  }

  /**
   * Queue a request of `flow`. `inputs` are in signature order and already validated; `rows` is their dim 0
   * (1 for unbatched models). When the queue is full, either another flow's newest request is evicted to make
   * room (see the module comment) or this throws SY_ERR_QUEUE_FULL (caller keeps ownership). Throws a
   * RangeError when `flow.weight` is not a positive finite number.
   *
   * @example
   * ```ts
   * const job = batcher.submit(inputs, rows, 0, () => socket.destroyed, { id: 'tenant-a', weight: 2 });
   * const outputs = await job.result;
   * ```
   */
  submit(inputs: readonly Tensor[], rows: number, timeoutUs: number, abandoned: (() => boolean) | null = null, flow: Flow = DEFAULT_FLOW): Job {
    if (this.#closed) throw err('SY_ERR_SHUTTING_DOWN', 'server is shutting down');
    const weight = flow.weight;
    if (!(weight > 0 && weight < Infinity)) throw new RangeError(`flow "${flow.id}": weight must be a positive finite number, got ${weight}`);
    const wasEmpty = this.#fq.queued === 0;
    if (this.#fq.queued >= this.#opts.maxQueueSize) this.#makeRoom(flow);
    const job = new Job(inputs, rows, this.#opts.maxBatchSize > 0 ? shapeKey(inputs) : '', this, abandoned);
    this.#fq.push(job, job.key, flow);
    if (timeoutUs > 0) {
      const ms = timeoutUs / 1000;
      job.timer = setTimeout(() => this.cancel(job, err('SY_ERR_TIMEOUT', timeoutMessage(job, ms))), ms);
    }
    this.#schedule(wasEmpty);
    return job;
  }

  /**
   * Whether {@link submit} would take a request of `flow` now (room in the queue, or a longer flow to evict),
   * changing nothing: transports ask it before reading a request's body, so that a refusal costs no decoding.
   * True once closed (submit then answers why).
   */
  admits(flow: Flow = DEFAULT_FLOW): boolean {
    return this.#closed || this.#fq.queued < this.#opts.maxQueueSize || this.#fq.victim(flow) !== null;
  }

  /** The refusal of a request the queue has no room for (what submit throws; admission answers the same). */
  fullError(): SwitchyardError {
    return err('SY_ERR_QUEUE_FULL', `queue is full (${this.#opts.maxQueueSize} requests waiting)`, { retryAfterS: 1 });
  }

  cancel(job: Job, reason: SwitchyardError): void {
    if (job.state === DONE) return;
    if (job.lane !== null) {
      this.#fq.withdraw(job); // its flow is not charged for it
      if (this.#fq.queued === 0 && this.#running === 0) this.#fq.forgive();
    }
    this.#settle(job);
    job.reject(reason);
  }

  /** Stop admitting; queued requests still run unless `drain` is false, in which case they are rejected. */
  close(drain = true): void {
    this.#closed = true;
    if (!drain) {
      for (let j = this.#fq.any(); j !== null; j = this.#fq.any()) this.cancel(j, err('SY_ERR_SHUTTING_DOWN', 'server is shutting down'));
    }
  }

  /** Resolves once nothing is queued or running. */
  async idle(): Promise<void> {
    while (this.#fq.queued > 0 || this.#running > 0) await new Promise((r) => setTimeout(r, 5));
  }

  #settle(job: Job): void {
    job.state = DONE;
    if (job.timer) clearTimeout(job.timer);
  }

  /**
   * The queue is full: evict the newest request of the flow holding the most queued per unit weight, when the
   * arriving flow, counting the arrival, would still hold less; otherwise reject the arrival.
   */
  #makeRoom(flow: Flow): void {
    const victim = this.#fq.victim(flow);
    const max = this.#opts.maxQueueSize;
    if (victim === null) throw this.fullError();
    this.cancel(victim, err('SY_ERR_QUEUE_FULL', `queue is full (${max} requests waiting; evicted for a flow with fewer queued)`, { retryAfterS: 1 }));
  }

  #freeInstance(): ModelInstance | null {
    // Only a free instance takes a batch (a busy one would queue it internally and batches would shrink);
    // among free instances the first wins, which keeps the warmest instance busiest.
    for (const inst of this.#instances) if (inst.inflight === 0) return inst;
    return null;
  }

  #schedule(arrivedAtEmptyQueue = false): void {
    while (this.#fq.queued > 0) {
      const inst = this.#freeInstance();
      if (!inst) return;
      const g = this.#fq.nextGroup();
      if (!g) return;
      const target = this.#target(g, arrivedAtEmptyQueue);
      if (target === 0) return; // timer armed: wait for a fuller batch
      const jobs = this.#take(g, target);
      if (jobs.length > 0)
        this.#dispatch(inst, jobs); // empty when every candidate was abandoned
      else if (this.#fq.queued === 0 && this.#running === 0) this.#fq.forgive();
      arrivedAtEmptyQueue = false;
    }
  }

  /** Rows to take from group `g` now, or 0 to wait (arming the delay timer). */
  #target(g: Group<Job>, immediate: boolean): number {
    const { maxBatchSize: max, preferredBatchSizes: preferred, maxQueueDelayUs: delayUs } = this.#opts;
    if (max === 0) return 1;
    // Share queued rows across instances: one free instance must not take everything while others that
    // were already busy when these requests arrived are about to free up (they would idle until new
    // requests come). Instances that took their share of this backlog do not count.
    if (this.#instances.length > 1 && this.#fq.queued > 1) {
      const oldest = this.#fq.oldestAt(g);
      let takers = 0;
      for (const inst of this.#instances) if (inst.inflight === 0 || (this.#busySince.get(inst) ?? 0) < oldest) takers++;
      return Math.min(max, Math.ceil(g.cost / takers));
    }
    if (g.cost >= max) return max;
    for (let i = preferred.length - 1; i >= 0; i--) if (preferred[i]! <= g.cost) return preferred[i]!;
    if (delayUs === 0 || immediate) return max;
    const waitMs = this.#fq.oldestAt(g) + delayUs / 1000 - performance.now();
    if (waitMs <= 0) return max;
    this.#arm(waitMs);
    return 0;
  }

  #arm(ms: number): void {
    const at = performance.now() + ms;
    if (this.#timer && this.#timerAt <= at) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(
      () => {
        this.#timer = null;
        this.#schedule();
      },
      Math.max(0, ms),
    );
  }

  /** Pop jobs from `g` in fair order up to `target` rows (the first job always, even if larger). */
  #take(g: Group<Job>, target: number): Job[] {
    const jobs: Job[] = [];
    let rows = 0;
    for (let j = this.#fq.head(g); j; j = this.#fq.head(g)) {
      if (j.abandoned?.()) {
        // Not via cancel(): the jobs taken so far are not running yet, so the batcher must not look idle.
        this.#fq.unqueue(j);
        this.#settle(j);
        j.reject(err('SY_ERR_CLIENT_CLOSED', 'client closed the connection while the request was queued'));
        continue;
      }
      if (jobs.length > 0 && (rows + j.rows > target || this.#opts.maxBatchSize === 0)) break;
      this.#fq.dispatch(j);
      jobs.push(j);
      rows += j.rows;
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
      (e: SwitchyardError) => (jobs.length > 1 && e.code === 'SY_ERR_INFERENCE_FAILED' ? this.#isolate(inst, jobs, e) : this.#fail(jobs, e)),
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
    if (this.#fq.queued === 0 && this.#running === 0) this.#fq.forgive();
  }

  /**
   * A batch of several requests failed at run time: run each request alone on the same instance, one after
   * another (bounded: one run per request), so that only the requests that make the model fail get an error.
   * When some of them ran, the ones that failed are the caller's fault (their input values: 400
   * SY_ERR_INPUT_REJECTED, without the runtime's internals); when none ran, the model's (each keeps its error).
   * The batch's concatenated inputs were copies, so each request's own inputs are intact for its rerun.
   */
  #isolate(inst: ModelInstance, jobs: Job[], batchError: SwitchyardError): void {
    const outcomes: ({ outputs: Tensor[]; ms: number } | SwitchyardError | null)[] = new Array(jobs.length).fill(null);
    let i = 0;
    const next = (): void => {
      while (i < jobs.length && jobs[i]!.state !== RUNNING) i++; // cancelled or timed out meanwhile
      if (i >= jobs.length) return this.#isolated(jobs, outcomes, batchError);
      const k = i++;
      const start = performance.now();
      inst.run(jobs[k]!.inputs).then(
        (outputs) => {
          outcomes[k] = { outputs, ms: performance.now() - start };
          next();
        },
        (e: SwitchyardError) => {
          outcomes[k] = e;
          next();
        },
      );
    };
    next();
  }

  #isolated(jobs: Job[], outcomes: readonly ({ outputs: Tensor[]; ms: number } | SwitchyardError | null)[], batchError: SwitchyardError): void {
    const end = performance.now();
    this.#running -= jobs.length;
    const someRan = outcomes.some((o) => o !== null && !(o instanceof Error) && 'outputs' in o);
    for (let k = 0; k < jobs.length; k++) {
      const j = jobs[k]!;
      const o = outcomes[k];
      if (j.state !== RUNNING) continue;
      this.#settle(j);
      if (o === null || o === undefined) {
        j.reject(batchError);
      } else if ('outputs' in o) {
        this.onBatch?.(j.rows, 1, o.ms);
        j.finishedAt = end;
        j.startedAt = end - o.ms;
        j.batchRows = j.rows;
        j.resolve(o.outputs);
      } else {
        j.reject(
          someRan
            ? err(
                'SY_ERR_INPUT_REJECTED',
                "the model failed on this request's input values while the requests batched with it ran; check that they are in the range the model accepts (e.g. token ids within its vocabulary)",
              )
            : o,
        );
      }
    }
    this.#schedule();
    if (this.#fq.queued === 0 && this.#running === 0) this.#fq.forgive();
  }

  #fail(jobs: Job[], e: SwitchyardError): void {
    this.#running -= jobs.length;
    for (const j of jobs) {
      if (j.state !== RUNNING) continue;
      this.#settle(j);
      j.reject(e);
    }
    this.#schedule();
    if (this.#fq.queued === 0 && this.#running === 0) this.#fq.forgive();
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
