/**
 * @module
 * Sliding-window aggregation state for windowed feature views: in memory (the default, window-memory.ts) and in
 * Redis (shared by replicas, window-redis.ts), both deduplicating events by id. This file holds their shared
 * bucket plan and aggregation.
 *
 * Semantics (both stores, and the brute-force reference in test/feature-windows.test.ts):
 * - Bucket size B: 1 minute for the 5m and 1h windows, 15 minutes for 24h (24h = 96 buckets). An event falls in
 *   the bucket starting at floor(eventTime / B) * B. A view keeps minute buckets only if it has a 5m or 1h
 *   aggregation, quarter-hour buckets only if it has a 24h one.
 * - A window W read at `now` covers the buckets whose start lies in (cur - W, cur], cur = floor(now / B) * B:
 *   the W / B most recent buckets, the current one included (sliding at bucket granularity). Buckets after
 *   `cur` (events up to 60 s ahead) are held but enter the window only once `now` reaches them.
 * - tooOld (checked first, per event, against the `now` of the add): eventTime is not finite, or lies more than
 *   60 s after `now` (clock skew guard; such events are counted as tooOld), or, for every bucket size the view
 *   uses, the event's bucket is outside the longest window of that size at `now` (start <= cur - W). A tooOld
 *   event changes nothing and its id is not remembered.
 * - Duplicates: an event whose id was applied to the same view less than H ago is skipped, where H = max over
 *   the view's aggregations of (W + B) (24h + 15 min with a 24h window). An id older than H is forgotten; such a
 *   redelivery is then always tooOld (with `now` non-decreasing), so it is never counted twice either.
 * - Values: an event always counts towards `count` without a field; a field's stats (count with a field, sum,
 *   mean, min, max) see only events carrying a finite number for it. mean = sum / count over the window.
 *   Over no (matching) events count is 0 and the others are null.
 * - `now` is the clock: expired buckets are pruned relative to the latest `now` seen, so reading at a `now`
 *   earlier than an earlier call's may miss pruned buckets. Default: Date.now().
 *
 * Memory layout: view → entity → {minute buckets, quarter buckets}, each bucket start → {events, per field
 * {c, s, mn, mx}}; per view a Map eventId → expiry. An entity's expired buckets are pruned when it receives
 * events (at most once per minute) and every minute by an unref'd timer (also expired ids).
 *
 * Redis layout, under `prefix` (default `sy:fw:`):
 * - `${prefix}e:${view}:${eventId}` = 1, PX H: the dedupe marker (SET NX).
 * - `${prefix}w:${view}:${entityKey}` hash, PEXPIRE H after every update: fields `${g}${bucketStart}:${f}:${s}`
 *   with g = `m` (1 min) or `q` (15 min), f a field or `*` (all events, stat `c` only), s = c | s | mn | mx;
 *   `n` = buckets held (for size()), `_p` = minute bucket of the last prune.
 * An add is one script call per chunk of 500 events (EVALSHA, EVAL after a script-cache flush): per event,
 * SET NX the marker and only when it is new update the buckets (HINCRBY, HINCRBYFLOAT, min/max compare-and-set)
 * — atomic, so a redelivered event is counted once even across replicas. Bucket starts and tooOld are computed
 * here from the caller's `now` (never Redis's clock); the script prunes an entity's expired buckets at most once
 * per minute bucket. A read is one pipeline of HGETALL. Redis Cluster is not supported (a chunk's keys may hash
 * to different slots).
 */
import type { AggregationDef, WindowEvent, WindowSpec, WindowViewDef } from './types.js';
import { WINDOW_MS } from './types.js';

/** Bucket size per window. */
export const BUCKET_MS: Readonly<Record<WindowSpec, number>> = Object.freeze({ '5m': 60_000, '1h': 60_000, '24h': 900_000 });
/** Events further than this ahead of `now` are rejected (counted as tooOld). */
export const FUTURE_TOLERANCE_MS = 60_000;
/** The all-events pseudo field (no aggregation field may be named so). */
export const ALL = '*';
/** Events per script call. */
export const ADD_CHUNK = 500;
export const MINUTE = 60_000;

export type Grain = 'm' | 'q';
const GRAIN_MS: Readonly<Record<Grain, number>> = { m: 60_000, q: 900_000 };
const grainOf = (w: WindowSpec): Grain => (w === '24h' ? 'q' : 'm');

/** Per-field stats of one bucket. */
export interface Stats {
  c: number;
  s: number;
  mn: number;
  mx: number;
}
/** One bucket: events counted and per-field stats. */
export interface Bucket {
  n: number;
  f: Map<string, Stats>;
}
export type Buckets = Record<Grain, Map<number, Bucket>>;

export interface Plan {
  /** Longest window per bucket size the view uses (absent = not kept). */
  readonly horizon: Partial<Record<Grain, number>>;
  readonly fields: readonly string[];
  /** Dedupe horizon H = max(W + B). */
  readonly dedupeMs: number;
  readonly aggs: readonly AggregationDef[];
}

const plans = new WeakMap<WindowViewDef, Plan>();

/** The view's bucket sizes, fields and horizons (cached per definition object); throws on an invalid aggregation. */
export function planOf(view: WindowViewDef): Plan {
  const cached = plans.get(view);
  if (cached !== undefined) return cached;
  const horizon: Partial<Record<Grain, number>> = {};
  const fields = new Set<string>();
  let dedupeMs = 0;
  for (const a of view.aggregations) {
    const w = WINDOW_MS[a.window];
    if (w === undefined) throw new TypeError(`aggregation "${a.name}": unknown window ${String(a.window)}`);
    if (a.fn !== 'count' && a.field === undefined) throw new TypeError(`aggregation "${a.name}": ${a.fn} needs a field`);
    if (a.field === ALL) throw new TypeError(`aggregation "${a.name}": field "${ALL}" is reserved`);
    if (a.field !== undefined) fields.add(a.field);
    const g = grainOf(a.window);
    horizon[g] = Math.max(horizon[g] ?? 0, w);
    dedupeMs = Math.max(dedupeMs, w + GRAIN_MS[g]);
  }
  const plan: Plan = { horizon, fields: [...fields], dedupeMs, aggs: view.aggregations };
  plans.set(view, plan);
  return plan;
}

export const floorTo = (t: number, b: number): number => Math.floor(t / b) * b;

/** Bucket starts (per kept bucket size) an event at `t` is added to at `now`; empty = tooOld. */
export function bucketsFor(plan: Plan, t: number, now: number): { g: Grain; start: number }[] {
  if (!Number.isFinite(t) || t > now + FUTURE_TOLERANCE_MS) return [];
  const out: { g: Grain; start: number }[] = [];
  for (const g of ['m', 'q'] as const) {
    const w = plan.horizon[g];
    if (w === undefined) continue;
    const b = GRAIN_MS[g];
    const start = floorTo(t, b);
    if (start > floorTo(now, b) - w) out.push({ g, start });
  }
  return out;
}

/** Buckets with start <= this are expired for bucket size `g` (Infinity when the view keeps none of that size). */
export function cutoff(plan: Plan, g: Grain, now: number): number {
  const w = plan.horizon[g];
  return w === undefined ? Infinity : floorTo(now, GRAIN_MS[g]) - w;
}

/** The finite numeric fields of an event the view aggregates. */
export function fieldValues(plan: Plan, e: WindowEvent): [string, number][] {
  const out: [string, number][] = [];
  for (const f of plan.fields) {
    const v = e.values[f];
    if (typeof v === 'number' && Number.isFinite(v)) out.push([f, v]);
  }
  return out;
}

export function addTo(bucket: Bucket, vals: readonly [string, number][]): void {
  bucket.n++;
  for (const [f, v] of vals) {
    const s = bucket.f.get(f);
    if (s === undefined) bucket.f.set(f, { c: 1, s: v, mn: v, mx: v });
    else {
      s.c++;
      s.s += v;
      if (v < s.mn) s.mn = v;
      if (v > s.mx) s.mx = v;
    }
  }
}

/** Aggregation values of one entity at `now` from its buckets. */
export function aggregate(plan: Plan, buckets: Buckets | undefined, now: number): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const a of plan.aggs) {
    const g = grainOf(a.window);
    const cur = floorTo(now, GRAIN_MS[g]);
    const lo = cur - WINDOW_MS[a.window];
    let n = 0,
      c = 0,
      s = 0,
      mn = Infinity,
      mx = -Infinity;
    if (buckets !== undefined) {
      for (const [start, b] of buckets[g]) {
        if (start <= lo || start > cur) continue;
        n += b.n;
        if (a.field === undefined) continue;
        const st = b.f.get(a.field);
        if (st === undefined) continue;
        c += st.c;
        s += st.s;
        if (st.mn < mn) mn = st.mn;
        if (st.mx > mx) mx = st.mx;
      }
    }
    switch (a.fn) {
      case 'count':
        out[a.name] = a.field === undefined ? n : c;
        break;
      case 'sum':
        out[a.name] = c === 0 ? null : s;
        break;
      case 'mean':
        out[a.name] = c === 0 ? null : s / c;
        break;
      case 'min':
        out[a.name] = c === 0 ? null : mn;
        break;
      case 'max':
        out[a.name] = c === 0 ? null : mx;
        break;
    }
  }
  return out;
}
