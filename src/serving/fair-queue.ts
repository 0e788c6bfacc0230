/**
 * @module
 * Start-time fair queueing (SFQ) between flows (tenants), shared by every queue that serves several tenants
 * from one capacity: the dynamic batcher of an ONNX version (batcher.ts: cost = rows) and the LLM slot queue
 * (llm-queue.ts: cost = tokens a request may take). This file owns the ordering and the queue bound; what
 * "dispatch" means (a batch on an instance, a sequence of a llama.cpp context) is its user's.
 *
 * Every queued item belongs to a {@link Flow} (an id and a weight; {@link DEFAULT_FLOW} when the caller names
 * none). A flow's items run in FIFO order; backlogged flows share the cost dispatched in proportion to their
 * weights. On arrival an item is tagged `start = max(V, finish of its flow's previous item)` and
 * `finish = start + cost / weight`, where the virtual time V is the largest start tag dispatched so far. The
 * next item to run is the queued one with the smallest start tag (ties: the older). A light flow thus waits
 * for the work in flight plus its own turn, not behind a heavy flow's backlog. A flow that sent nothing for a
 * while starts at V: idling banks no credit. A flow whose last item was dispatched keeps its finish tag while
 * that is ahead of V (a client sending one large request at a time still pays for it); once nothing is queued
 * or running, the user calls {@link FairQueue.forgive}: V jumps past every finish tag (no flow owes another
 * anything any more). State of flows with nothing queued is dropped once V passes their finish tag (at once,
 * or by an amortized sweep). With a single flow, tags grow in arrival order: plain FIFO.
 *
 * Items are grouped by a key (the batcher's shape groups; one group '' when nothing needs grouping): the user
 * picks a group ({@link FairQueue.nextGroup}: the one holding the smallest head tag) and takes items from it in
 * tag order ({@link FairQueue.head}).
 *
 * Queue bound (longest-queue-drop), decided by {@link FairQueue.victim}: with the queue full, an arriving item
 * whose flow, counting the arrival, would still hold fewer queued items per unit weight than the flow holding
 * the most, evicts that flow's newest queued item and is admitted; otherwise the arrival is refused. A
 * flooding flow fills the queue but cannot lock the others out.
 *
 * Queues do not allocate per item: a lane (one flow's FIFO within a group) is an intrusive doubly-linked list
 * through the items' `prev` / `next`, so a cancelled or evicted item leaves its lane at once. Picking the next
 * item scans the group's lanes (one per flow with items queued there): O(1) with one flow, cheap for tens of
 * tenants per model; a heap of lane heads is the step up if thousands contend on one model.
 *
 * ```
 *  groups (by key)          lanes (flows with queued items)
 *  ┌──────────┐            ┌──────────────┐ head  ┌─────┐ next ┌─────┐ next ┌─────┐
 *  │ "64,;"   │ ─ lanes ─► │ flow A  w=1  │ ────► │ job │ ◄──► │ job │ ◄──► │ job │ ◄── tail
 *  └──────────┘            ├──────────────┤       └─────┘ prev └─────┘      └─────┘
 *  ┌──────────┐            │ flow B  w=3  │ ────► ┌─────┐
 *  │ "32,;"   │ ─ ...      └──────────────┘       │ job │
 *  └──────────┘                                   └─────┘
 *  flows: id → { weight, finish tag, queued count, its lanes }
 * ```
 */

/**
 * Who a request belongs to, for fair queueing: requests of one flow are FIFO; flows share capacity by weight.
 *
 * @example
 * ```ts
 * batcher.submit(inputs, rows, 0, null, { id: tenant.id, weight: tenant.weight });
 * ```
 * @see {@link FairQueue}
 */
export interface Flow {
  /** Flow identity; requests with equal ids share one FIFO and one share. */
  readonly id: string;
  /** Relative share (a positive finite number): weight 3 gets 3× the cost of weight 1 while both are backlogged. */
  readonly weight: number;
}

/** The flow of requests that name none: all of them share one FIFO, which is the queue without fairness. */
export const DEFAULT_FLOW: Flow = Object.freeze({ id: '', weight: 1 });

/** Idle flows (nothing queued) still owing service are kept at most this many; past it their debt is forgiven. */
const MAX_IDLE_FLOWS = 1024;

/** What an item carries for the queue (its user's item class declares these fields). */
export interface FairItem<J extends FairItem<J>> {
  /** When it was queued (performance.now() ms): the tie-break between equal tags. */
  readonly enqueuedAt: number;
  /** What it costs its flow, in the user's unit (rows, tokens); set before {@link FairQueue.push}. */
  readonly cost: number;
  /** Fair-queueing tags, in virtual time (cost per unit weight). */
  start: number;
  finish: number;
  /** The lane it waits in and its neighbours there, while queued; null otherwise. */
  lane: Lane<J> | null;
  prev: J | null;
  next: J | null;
}

/** Items of one key; `lanes` holds one non-empty lane per flow with items queued here. */
export interface Group<J extends FairItem<J>> {
  readonly lanes: Lane<J>[];
  /** Total cost queued here. */ cost: number;
}

/** One flow's queued items in one group, oldest at `head` (intrusive list through prev / next). */
export interface Lane<J extends FairItem<J>> {
  group: Group<J>;
  readonly flow: FlowState<J>;
  head: J | null;
  tail: J | null;
}

/** A flow's bookkeeping; present while it has items queued or owes service (`finish` ahead of V). */
interface FlowState<J extends FairItem<J>> {
  readonly id: string;
  /** Weight of its latest item (used to compare queue lengths). */
  weight: number;
  /** Finish tag of its newest item: the earliest start tag of its next one. */
  finish: number;
  /** Its items queued, all groups. */
  queued: number;
  /** Its non-empty lanes, one per group. */
  readonly lanes: Lane<J>[];
  /** Its last emptied lane, reused by its next item (no allocation when a flow goes idle and comes back). */
  spare: Lane<J> | null;
}

/** Fair order: smaller start tag first, then the older item. */
function before<J extends FairItem<J>>(a: J, b: J): boolean {
  return a.start < b.start || (a.start === b.start && a.enqueuedAt < b.enqueuedAt);
}

/** Remove `x` from an unordered array in O(1) after the lookup (lane order carries no meaning). */
function removeItem<T>(arr: T[], x: T): void {
  const last = arr.pop()!;
  if (last !== x) arr[arr.indexOf(x)] = last;
}

/**
 * The fair order of queued items. It never settles or rejects anything: its user does, around these calls.
 *
 * @example
 * ```ts
 * const q = new FairQueue<Waiter>();
 * if (q.queued >= max) { const v = q.victim(flow); if (v === null) throw full(); q.withdraw(v); v.reject(full()); }
 * q.push(item, '', flow);
 * const g = q.nextGroup(); const next = g && q.head(g); if (next) q.dispatch(next);
 * ```
 */
export class FairQueue<J extends FairItem<J>> {
  readonly #groups = new Map<string, Group<J>>();
  readonly #flows = new Map<string, FlowState<J>>();
  /** Virtual time: the largest start tag dispatched (or, after an idle moment, the largest finish tag given). */
  #vtime = 0;
  /** The largest finish tag given. */
  #maxFinish = 0;
  /** Sweep idle flows when a new flow arrives and the flow map has this many entries. */
  #sweepAt = 64;
  #queued = 0;

  /** Items queued. */
  get queued(): number {
    return this.#queued;
  }
  /** Flows with bookkeeping: items queued, or an idle flow still owing service. */
  get flows(): number {
    return this.#flows.size;
  }

  /**
   * Queue `job` (its `cost` set) under `key` for `flow`: tags it and links it last in its flow's lane. Throws a
   * RangeError when `flow.weight` is not a positive finite number. The caller checks the bound first
   * ({@link victim}).
   */
  push(job: J, key: string, flow: Flow): void {
    const weight = flow.weight;
    if (!(weight > 0 && weight < Infinity)) throw new RangeError(`flow "${flow.id}": weight must be a positive finite number, got ${weight}`);
    let g = this.#groups.get(key);
    if (!g) {
      g = { lanes: [], cost: 0 };
      this.#groups.set(key, g);
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
    job.finish = fs.finish = job.start + job.cost / weight;
    if (job.finish > this.#maxFinish) this.#maxFinish = job.finish;
    fs.weight = weight;
    job.lane = lane;
    job.prev = lane.tail;
    if (lane.tail) lane.tail.next = job;
    else lane.head = job;
    lane.tail = job;
    fs.queued++;
    g.cost += job.cost;
    this.#queued++;
  }

  /**
   * The queue is full and `flow` brings one more: the newest item of the flow holding the most queued per unit
   * weight when the arriving flow, counting the arrival, would still hold less (evict it: {@link withdraw},
   * then reject it); null when the arrival is the one to refuse.
   */
  victim(flow: Flow): J | null {
    const mine = this.#flows.get(flow.id);
    let load = ((mine?.queued ?? 0) + 1) / flow.weight;
    let longest: FlowState<J> | null = null;
    for (const fs of this.#flows.values()) {
      if (fs !== mine && fs.queued / fs.weight > load) {
        longest = fs;
        load = fs.queued / fs.weight;
      }
    }
    if (longest === null) return null;
    let victim = longest.lanes[0]!.tail!;
    for (const l of longest.lanes) if (before(victim, l.tail!)) victim = l.tail!;
    return victim;
  }

  /** Take a queued item out without running it (cancelled, evicted): its flow is not charged for it if it was its newest. */
  withdraw(j: J): void {
    const fs = j.lane!.flow;
    if (fs.finish === j.finish) fs.finish = j.start;
    this.unqueue(j);
  }

  /** Take the item out to run it: V advances to its start tag. */
  dispatch(j: J): void {
    if (j.start > this.#vtime) this.#vtime = j.start;
    this.unqueue(j);
  }

  /** Take a queued item out of its lane and the counts, its flow still charged (a client that left while queued). */
  unqueue(j: J): void {
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
    g.cost -= j.cost;
    this.#queued--;
    if (--fs.queued === 0 && fs.finish <= this.#vtime) this.#flows.delete(fs.id);
  }

  /** Some queued item (to drain the queue at shutdown), or null when none is. */
  any(): J | null {
    for (const g of this.#groups.values()) if (g.lanes.length > 0) return g.lanes[0]!.head;
    return null;
  }

  /**
   * Nothing queued or running (the caller knows what runs): no flow owes another anything. V jumps past every
   * finish tag, or, with more than a few flows known (or V large enough to cost float precision), all flow
   * state is dropped and V restarts at 0.
   */
  forgive(): void {
    this.#vtime = this.#maxFinish;
    if (this.#flows.size > 8 || this.#vtime > 2 ** 40) {
      this.#flows.clear(); // all idle now; a few are kept otherwise, so idle → request → idle allocates nothing
      this.#vtime = this.#maxFinish = 0;
    }
  }

  /** The next item of `g` in fair order: the smallest head tag among its lanes (one lane: its head). */
  head(g: Group<J>): J | null {
    const lanes = g.lanes;
    if (lanes.length <= 1) return lanes.length === 0 ? null : lanes[0]!.head;
    let best = lanes[0]!.head!;
    for (let i = 1; i < lanes.length; i++) {
      const h = lanes[i]!.head!;
      if (before(h, best)) best = h;
    }
    return best;
  }

  /** When the oldest item queued in `g` arrived. */
  oldestAt(g: Group<J>): number {
    const lanes = g.lanes;
    let at = lanes[0]!.head!.enqueuedAt;
    for (let i = 1; i < lanes.length; i++) at = Math.min(at, lanes[i]!.head!.enqueuedAt);
    return at;
  }

  /** The group holding the next item in fair order (with one flow: the oldest head); drops idle groups past 8. */
  nextGroup(): Group<J> | null {
    let best: Group<J> | null = null;
    let bestHead: J | null = null;
    for (const [key, g] of this.#groups) {
      const head = this.head(g);
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
}
