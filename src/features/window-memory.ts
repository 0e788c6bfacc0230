/**
 * @module
 * In-process sliding-window state for windowed feature views (one replica); semantics in windows.ts.
 */
import type { EntityKey, WindowEvent, WindowStore, WindowViewDef } from './types.js';
import { addTo, aggregate, bucketsFor, cutoff, fieldValues, floorTo, MINUTE, planOf, type Buckets, type Plan } from './windows.js';

interface EntityState extends Buckets {
  prunedAt: number;
}
interface ViewState {
  plan: Plan;
  entities: Map<EntityKey, EntityState>;
  seen: Map<string, number>;
}

/** In-process window state (one replica). */
export class MemoryWindowStore implements WindowStore {
  readonly kind = 'memory' as const;
  readonly #views = new Map<string, ViewState>();
  readonly #now: () => number;
  readonly #timer: NodeJS.Timeout;

  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? Date.now;
    this.#timer = setInterval(() => this.prune(), MINUTE);
    this.#timer.unref();
  }

  async add(view: WindowViewDef, events: readonly WindowEvent[], now = this.#now()): Promise<{ applied: number; duplicates: number; tooOld: number }> {
    const plan = planOf(view);
    let vs = this.#views.get(view.name);
    if (vs === undefined) this.#views.set(view.name, (vs = { plan, entities: new Map(), seen: new Map() }));
    vs.plan = plan;
    const pruneTag = floorTo(now, MINUTE);
    let applied = 0,
      duplicates = 0,
      tooOld = 0;
    for (const e of events) {
      const targets = bucketsFor(plan, e.eventTime, now);
      if (targets.length === 0) {
        tooOld++;
        continue;
      }
      const exp = vs.seen.get(e.eventId);
      if (exp !== undefined && exp > now) {
        duplicates++;
        continue;
      }
      if (exp !== undefined) vs.seen.delete(e.eventId); // re-insert at the end: the map stays ordered by expiry
      vs.seen.set(e.eventId, now + plan.dedupeMs);
      let st = vs.entities.get(e.entityKey);
      if (st === undefined) vs.entities.set(e.entityKey, (st = { m: new Map(), q: new Map(), prunedAt: pruneTag }));
      else if (st.prunedAt < pruneTag) {
        pruneEntity(plan, st, now);
        st.prunedAt = pruneTag;
      }
      const vals = fieldValues(plan, e);
      for (const { g, start } of targets) {
        let b = st[g].get(start);
        if (b === undefined) st[g].set(start, (b = { n: 0, f: new Map() }));
        addTo(b, vals);
      }
      applied++;
    }
    return { applied, duplicates, tooOld };
  }

  async read(view: WindowViewDef, entityKeys: readonly EntityKey[], now = this.#now()): Promise<Record<string, number | null>[]> {
    const plan = planOf(view);
    const ents = this.#views.get(view.name)?.entities;
    return entityKeys.map((k) => aggregate(plan, ents?.get(k), now));
  }

  async size(): Promise<number> {
    let n = 0;
    for (const vs of this.#views.values()) for (const st of vs.entities.values()) n += st.m.size + st.q.size;
    return n;
  }

  /** Drops expired buckets, entities left without any and expired event ids; returns the buckets dropped. Runs every minute. */
  prune(now = this.#now()): number {
    let dropped = 0;
    for (const vs of this.#views.values()) {
      for (const [k, st] of vs.entities) {
        dropped += pruneEntity(vs.plan, st, now);
        if (st.m.size === 0 && st.q.size === 0) vs.entities.delete(k);
      }
      for (const [id, exp] of vs.seen) {
        if (exp > now) break;
        vs.seen.delete(id);
      }
    }
    return dropped;
  }

  async dropView(view: string): Promise<void> {
    this.#views.delete(view);
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
  }
}

function pruneEntity(plan: Plan, st: EntityState, now: number): number {
  let dropped = 0;
  for (const g of ['m', 'q'] as const) {
    const cut = cutoff(plan, g, now);
    for (const start of st[g].keys()) {
      if (start <= cut) {
        st[g].delete(start);
        dropped++;
      }
    }
  }
  return dropped;
}
