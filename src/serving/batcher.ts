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
 * Fairness: start-time fair queueing (SFQ) between flows. Every request belongs to a {@link Flow} (a tenant:
 * an id and a weight; {@link DEFAULT_FLOW} when the caller names none). A flow's requests run in FIFO order;
 * backlogged flows share the rows dispatched in proportion to their weights. On arrival a request is tagged
 * `start = max(V, finish of its flow's previous request)` and `finish = start + rows / weight`, where the
 * virtual time V is the largest start tag dispatched so far. The next request to run is the queued one with
 * the smallest start tag (ties: the older); its group forms the batch, which keeps taking that group's requests
 * in tag order up to the target rows (stopping at the first that does not fit, as FIFO does). A light flow thus
 * waits for the batches in flight plus its own turn, not behind a heavy flow's backlog. A flow that sent
 * nothing for a while starts at V: idling banks no credit. A flow whose last request was dispatched keeps its
 * finish tag while that is ahead of V (a client sending one large request at a time still pays for it); once
 * nothing is queued or running, V jumps past every finish tag (no flow owes another anything any more). State
 * of flows with nothing queued is dropped once V passes their finish tag (at once, or by an amortized sweep).
 * With a single flow, tags grow in arrival order: the smallest tag is the oldest request, i.e. plain FIFO, and
 * "the group with the smallest head tag" is the group with the oldest head.
 *
 * Queue bound (longest-queue-drop): with `maxQueueSize` requests waiting, an arriving request whose flow,
 * counting the arrival, would still hold fewer queued requests per unit weight than the flow holding the most,
 * evicts that flow's newest queued request (rejected with SY_ERR_QUEUE_FULL) and is admitted; otherwise the
 * arrival is rejected with SY_ERR_QUEUE_FULL. A flooding flow fills the queue but cannot lock the others out.
 *
 * Queues do not allocate per request: a lane (one flow's FIFO within a group) is an intrusive doubly-linked
 * list through `Job.prev` / `Job.next`, so a cancelled or evicted request leaves its lane at once. Picking the
 * next request scans the group's lanes (one per flow with requests queued there): O(1) with one flow, cheap
 * for tens of tenants per model; a heap of lane heads is the step up if thousands contend on one model.
 *
 * ```
 *  groups (by shape key)    lanes (flows with queued requests)
 *  ┌──────────┐            ┌──────────────┐ head  ┌─────┐ next ┌─────┐ next ┌─────┐
 *  │ "64,;"   │ ─ lanes ─► │ flow A  w=1  │ ────► │ job │ ◄──► │ job │ ◄──► │ job │ ◄── tail
 *  └──────────┘            ├──────────────┤       └─────┘ prev └─────┘      └─────┘
 *  ┌──────────┐            │ flow B  w=3  │ ────► ┌─────┐
 *  │ "32,;"   │ ─ ...      └──────────────┘       │ job │
 *  └──────────┘                                   └─────┘
 *  flows (per batcher): id → { weight, finish tag, queued count, its lanes }
 * ```
 *
 * Ownership: once `submit` returns a Job, the batcher owns the request until the Job settles; a Job
 * cancelled while queued is dropped from the queue, one cancelled while running is discarded on completion.
 * A job whose client went away is found when its batch forms (`abandoned()` is polled, no listener per
 * request) and dropped without running.
 */
import { err, type SwitchyardError } from '../errors.js';
import { concatRows, sliceRows, type Tensor } from '../tensor/index.js';
import type { ModelInstance } from '../runtimes/index.js';

export interface BatcherOptions {
  /** Rows per batch; 0 = no batching (each request runs alone). */
  readonly maxBatchSize: number;
  readonly preferredBatchSizes: readonly number[];
  readonly maxQueueDelayUs: number;
  readonly maxQueueSize: number;
}

/**
 * Who a request belongs to, for fair queueing: requests of one flow are FIFO; flows share capacity by weight.
 *
 * @example
 * ```ts
 * batcher.submit(inputs, rows, 0, null, { id: tenant.id, weight: tenant.weight });
 * ```
 * @see {@link Batcher.submit}
 */
export interface Flow {
  /** Flow identity; requests with equal ids share one FIFO and one share. */
  readonly id: string;
  /** Relative share (a positive finite number): weight 3 gets 3× the rows of weight 1 while both are backlogged. */
  readonly weight: number;
}

/** The flow of requests that name none: all of them share one FIFO, which is the batcher without fairness. */
export const DEFAULT_FLOW: Flow = Object.freeze({ id: '', weight: 1 });

const QUEUED = 0;
const RUNNING = 1;
const DONE = 2;

/** Idle flows (nothing queued) still owing service are kept at most this many; past it their debt is forgiven. */
const MAX_IDLE_FLOWS = 1024;

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
  /** Fair-queueing tags, in virtual time (rows per unit weight). */
  start = 0;
  finish = 0;
  /** The lane it waits in and its neighbours there, while queued; null otherwise. */
  lane: Lane | null = null;
  prev: Job | null = null;
  next: Job | null = null;
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

/** Requests of one shape; `lanes` holds one non-empty lane per flow with requests queued here. */
interface Group { readonly lanes: Lane[]; rows: number }

/** One flow's queued requests in one group, oldest at `head` (intrusive list through Job.prev / Job.next). */
interface Lane { group: Group; readonly flow: FlowState; head: Job | null; tail: Job | null }

/** A flow's bookkeeping; present while it has requests queued or owes service (`finish` ahead of V). */
interface FlowState {
  readonly id: string;
  /** Weight of its latest request (used to compare queue lengths). */
  weight: number;
  /** Finish tag of its newest request: the earliest start tag of its next one. */
  finish: number;
  /** Its requests queued, all groups. */
  queued: number;
  /** Its non-empty lanes, one per group. */
  readonly lanes: Lane[];
  /** Its last emptied lane, reused by its next request (no allocation when a flow goes idle and comes back). */
  spare: Lane | null;
}

/** Fair order: smaller start tag first, then the older request. */
function before(a: Job, b: Job): boolean {
  return a.start < b.start || (a.start === b.start && a.enqueuedAt < b.enqueuedAt);
}

/** Remove `x` from an unordered array in O(1) after the lookup (lane order carries no meaning). */
function removeItem<T>(arr: T[], x: T): void {
  const last = arr.pop()!;
  if (last !== x) arr[arr.indexOf(x)] = last;
}

export class Batcher {
  readonly #opts: BatcherOptions;
  readonly #instances: readonly ModelInstance[];
  readonly #groups = new Map<string, Group>();
  readonly #flows = new Map<string, FlowState>();
  /** Virtual time: the largest start tag dispatched (or, after an idle moment, the largest finish tag given). */
  #vtime = 0;
  /** The largest finish tag given. */
  #maxFinish = 0;
  /** Sweep idle flows when a new flow arrives and the flow map has this many entries. */
  #sweepAt = 64;
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
  /** Flows with bookkeeping: requests queued, or an idle flow still owing service. */
  get flows(): number { return this.#flows.size; }

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
    const wasEmpty = this.#queued === 0;
    if (this.#queued >= this.#opts.maxQueueSize) this.#makeRoom(flow);
    const job = new Job(inputs, rows, this.#opts.maxBatchSize > 0 ? shapeKey(inputs) : '', this, abandoned);
    let g = this.#groups.get(job.key);
    if (!g) {
      g = { lanes: [], rows: 0 };
      this.#groups.set(job.key, g);
    }
    let fs = this.#flows.get(flow.id);
    if (!fs) {
      if (this.#flows.size >= this.#sweepAt) this.#sweep();
      fs = { id: flow.id, weight, finish: 0, queued: 0, lanes: [], spare: null };
      this.#flows.set(flow.id, fs);
    }
    let lane = fs.lanes[0];
    if (lane && lane.group !== g) lane = fs.lanes.find((l) => l.group === g);
    if (!lane) {
      lane = fs.spare ?? { group: g, flow: fs, head: null, tail: null };
      lane.group = g;
      fs.spare = null;
      g.lanes.push(lane);
      fs.lanes.push(lane);
    }
    job.start = fs.finish > this.#vtime ? fs.finish : this.#vtime;
    job.finish = fs.finish = job.start + rows / weight;
    if (job.finish > this.#maxFinish) this.#maxFinish = job.finish;
    fs.weight = weight;
    job.lane = lane;
    job.prev = lane.tail;
    if (lane.tail) lane.tail.next = job;
    else lane.head = job;
    lane.tail = job;
    fs.queued++;
    g.rows += rows;
    this.#queued++;
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
    return this.#closed || this.#queued < this.#opts.maxQueueSize || this.#longerThan(flow) !== null;
  }

  cancel(job: Job, reason: SwitchyardError): void {
    if (job.state === DONE) return;
    if (job.lane !== null) {
      const fs = job.lane.flow;
      if (fs.finish === job.finish) fs.finish = job.start; // its newest: the flow is not charged for it
      this.#unqueue(job);
      if (this.#queued === 0 && this.#running === 0) this.#forgive();
    }
    this.#settle(job);
    job.reject(reason);
  }

  /** Stop admitting; queued requests still run unless `drain` is false, in which case they are rejected. */
  close(drain = true): void {
    this.#closed = true;
    if (!drain) {
      for (const g of this.#groups.values()) {
        while (g.lanes.length > 0) this.cancel(g.lanes[0]!.head!, err('SY_ERR_SHUTTING_DOWN', 'server is shutting down'));
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

  /** Take a queued job out of its lane and the counts. */
  #unqueue(j: Job): void {
    const lane = j.lane!;
    if (j.prev) j.prev.next = j.next;
    else lane.head = j.next;
    if (j.next) j.next.prev = j.prev;
    else lane.tail = j.prev;
    j.lane = j.prev = j.next = null;
    const g = lane.group;
    const fs = lane.flow;
    if (lane.head === null) {
      removeItem(g.lanes, lane);
      removeItem(fs.lanes, lane);
      fs.spare = lane;
    }
    g.rows -= j.rows;
    this.#queued--;
    if (--fs.queued === 0 && fs.finish <= this.#vtime) this.#flows.delete(fs.id);
  }

  /**
   * Nothing queued or running: no flow owes another anything. V jumps past every finish tag, or, with more than
   * a few flows known (or V large enough to cost float precision), all flow state is dropped and V restarts at 0.
   */
  #forgive(): void {
    this.#vtime = this.#maxFinish;
    if (this.#flows.size > 8 || this.#vtime > 2 ** 40) {
      this.#flows.clear(); // all idle now; a few are kept otherwise, so idle → request → idle allocates nothing
      this.#vtime = this.#maxFinish = 0;
    }
  }

  /** Drop idle flows that no longer owe service; if too many still do, forgive them (bounded bookkeeping). */
  #sweep(): void {
    let owing = 0;
    for (const [id, fs] of this.#flows) {
      if (fs.queued > 0) continue;
      if (fs.finish <= this.#vtime) this.#flows.delete(id);
      else owing++;
    }
    if (owing > MAX_IDLE_FLOWS) for (const [id, fs] of this.#flows) if (fs.queued === 0) this.#flows.delete(id);
    this.#sweepAt = Math.max(64, 2 * this.#flows.size);
  }

  /**
   * The queue is full: evict the newest request of the flow holding the most queued per unit weight, when the
   * arriving flow, counting the arrival, would still hold less; otherwise reject the arrival.
   */
  #makeRoom(flow: Flow): void {
    const longest = this.#longerThan(flow);
    const max = this.#opts.maxQueueSize;
    if (longest === null) throw err('SY_ERR_QUEUE_FULL', `queue is full (${max} requests waiting)`, { retryAfterS: 1 });
    let victim = longest.lanes[0]!.tail!;
    for (const l of longest.lanes) if (before(victim, l.tail!)) victim = l.tail!;
    this.cancel(victim, err('SY_ERR_QUEUE_FULL', `queue is full (${max} requests waiting; evicted for a flow with fewer queued)`, { retryAfterS: 1 }));
  }

  /** The flow holding the most queued requests per unit weight, if it holds more than `flow` would with one more; else null. */
  #longerThan(flow: Flow): FlowState | null {
    const mine = this.#flows.get(flow.id);
    let load = ((mine?.queued ?? 0) + 1) / flow.weight;
    let longest: FlowState | null = null;
    for (const fs of this.#flows.values()) {
      if (fs !== mine && fs.queued / fs.weight > load) {
        longest = fs;
        load = fs.queued / fs.weight;
      }
    }
    return longest;
  }

  #freeInstance(): ModelInstance | null {
    // Only a free instance takes a batch (a busy one would queue it internally and batches would shrink);
    // among free instances the first wins, which keeps the warmest instance busiest.
    for (const inst of this.#instances) if (inst.inflight === 0) return inst;
    return null;
  }

  /** The next job of `g` in fair order: the smallest head tag among its lanes (one lane: its head). */
  #head(g: Group): Job | null {
    const lanes = g.lanes;
    if (lanes.length <= 1) return lanes.length === 0 ? null : lanes[0]!.head;
    let best = lanes[0]!.head!;
    for (let i = 1; i < lanes.length; i++) {
      const h = lanes[i]!.head!;
      if (before(h, best)) best = h;
    }
    return best;
  }

  /** When the oldest request queued in `g` arrived. */
  #oldestAt(g: Group): number {
    const lanes = g.lanes;
    let at = lanes[0]!.head!.enqueuedAt;
    for (let i = 1; i < lanes.length; i++) at = Math.min(at, lanes[i]!.head!.enqueuedAt);
    return at;
  }

  /** The group holding the next job in fair order (with one flow: the oldest head); drops idle groups past 8. */
  #nextGroup(): Group | null {
    let best: Group | null = null;
    let bestHead: Job | null = null;
    for (const [key, g] of this.#groups) {
      const head = this.#head(g);
      if (!head) {
        if (this.#groups.size > 8) this.#groups.delete(key);
        continue;
      }
      if (bestHead === null || before(head, bestHead)) {
        best = g;
        bestHead = head;
      }
    }
    return best;
  }

  #schedule(arrivedAtEmptyQueue = false): void {
    while (this.#queued > 0) {
      const inst = this.#freeInstance();
      if (!inst) return;
      const g = this.#nextGroup();
      if (!g) return;
      const target = this.#target(g, arrivedAtEmptyQueue);
      if (target === 0) return; // timer armed: wait for a fuller batch
      const jobs = this.#take(g, target);
      if (jobs.length > 0) this.#dispatch(inst, jobs); // empty when every candidate was abandoned
      else if (this.#queued === 0 && this.#running === 0) this.#forgive();
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
      const oldest = this.#oldestAt(g);
      let takers = 0;
      for (const inst of this.#instances) if (inst.inflight === 0 || (this.#busySince.get(inst) ?? 0) < oldest) takers++;
      return Math.min(max, Math.ceil(g.rows / takers));
    }
    if (g.rows >= max) return max;
    for (let i = preferred.length - 1; i >= 0; i--) if (preferred[i]! <= g.rows) return preferred[i]!;
    if (delayUs === 0 || immediate) return max;
    const waitMs = this.#oldestAt(g) + delayUs / 1000 - performance.now();
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

  /** Pop jobs from `g` in fair order up to `target` rows (the first job always, even if larger). */
  #take(g: Group, target: number): Job[] {
    const jobs: Job[] = [];
    let rows = 0;
    for (let j = this.#head(g); j; j = this.#head(g)) {
      if (j.abandoned?.()) {
        // Not via cancel(): the jobs taken so far are not running yet, so the batcher must not look idle.
        this.#unqueue(j);
        this.#settle(j);
        j.reject(err('SY_ERR_CLIENT_CLOSED', 'client closed the connection while the request was queued'));
        continue;
      }
      if (jobs.length > 0 && (rows + j.rows > target || this.#opts.maxBatchSize === 0)) break;
      if (j.start > this.#vtime) this.#vtime = j.start;
      this.#unqueue(j);
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
    if (this.#queued === 0 && this.#running === 0) this.#forgive();
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
        j.reject(someRan
          ? err('SY_ERR_INPUT_REJECTED', 'the model failed on this request\'s input values while the requests batched with it ran; check that they are in the range the model accepts (e.g. token ids within its vocabulary)')
          : o);
      }
    }
    this.#schedule();
    if (this.#queued === 0 && this.#running === 0) this.#forgive();
  }

  #fail(jobs: Job[], e: SwitchyardError): void {
    this.#running -= jobs.length;
    for (const j of jobs) {
      if (j.state !== RUNNING) continue;
      this.#settle(j);
      j.reject(e);
    }
    this.#schedule();
    if (this.#queued === 0 && this.#running === 0) this.#forgive();
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
