/**
 * @module
 * Experiment persistence (SQLite or Postgres through Kysely) and the experiment report.
 *
 * ```
 *  expose() ──► pending exposures: Map<exp\0unit, first arm>   ──flush()──► INSERT … ON CONFLICT DO NOTHING
 *          └──► pending traffic:   Map<exp\0arm\0assignment, n> ──flush()──► INSERT … ON CONFLICT DO UPDATE requests + n
 * ```
 *
 * The hot path (`expose`) only touches memory; a timer writes both maps in one transaction. A unit stays in the arm
 * it was first exposed to: in memory (the first pending arm wins) and in the database (insert-or-ignore on
 * (experiment, unit)). Units written recently are remembered in two generations of sets, so a hot unit is not
 * re-inserted every flush. On a failed flush the data goes back into the pending maps, within the same bound.
 * Reports aggregate in SQL: events are summed per (arm, metric, unit), then counted and summed (with squares) per
 * (arm, metric); means, standard deviations and tests come from those moments.
 */
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import { err } from '../errors.js';
import { iso } from '../storage/index.js';
import { MODEL_NAME } from '../registry/index.js';
import type { Database, DB } from '../storage/index.js';
import { aggregate, summarize } from './report.js';
import {
  EXPERIMENT_ID,
  MAX_EVENTS_PER_CALL,
  MAX_TIMELINE_POINTS,
  METRIC_NAME,
  type CreateExperimentInput,
  type ExperimentArm,
  type ExperimentPoint,
  type ExperimentRecord,
  type ExperimentReport,
  type ExperimentStatus,
  type ExperimentStoreOptions,
  type ExperimentTimeline,
  type OutcomeEvent,
} from './types.js';
import { bad, checkArms, checkGuardrails, isObject, isUniqueViolation, newId, toRecord, type StoredConfig } from './validation.js';

const MAX_UNIT = 256;
const MAX_TEXT = 1024;
/** Distinct (experiment, arm, assignment) counters kept pending at most. */
const MAX_TRAFFIC_KEYS = 10_000;
const ERROR_LOG_INTERVAL_MS = 10_000;
/** Rows per INSERT: at most 5 parameters each, well under SQLite's and Postgres' limits. */
const CHUNK = 500;
const SEP = '\u0000';
const STATUSES: readonly ExperimentStatus[] = ['running', 'stopped', 'rolled_back'];
const ISO_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})$/;

interface PendingExposure {
  readonly experiment: string;
  readonly unit: string;
  readonly arm: string;
  readonly at: number;
}
interface PendingTraffic {
  readonly experiment: string;
  readonly arm: string;
  readonly assignment: 'hash' | 'random';
  requests: number;
}

/**
 * Experiments, their exposures, traffic and outcome events.
 *
 * @example
 * const store = new ExperimentStore(database, { logger });
 * const exp = await store.create({ model: 'ranker', arms: [{ name: 'control', target: '3', weight: 1 }, { name: 'candidate', target: '4', weight: 1 }] }, 'alice');
 * store.expose(exp.id, 'candidate', 'user-42');        // routing time, no I/O
 * await store.addEvents(exp.id, [{ unit: 'user-42', metric: 'click', value: 1 }]);
 * const report = await store.report(exp.id);
 * await store.close();
 */
export class ExperimentStore {
  readonly #db: Kysely<DB>;
  readonly #dialect: Database['dialect'];
  readonly #log: Logger | null;
  readonly #maxPending: number;
  #pending = new Map<string, PendingExposure>();
  /** The batch a running flush is writing (its units count as seen). */
  #inflight: ReadonlyMap<string, PendingExposure> | null = null;
  #traffic = new Map<string, PendingTraffic>();
  /** Units written recently, two generations: a lookup checks both, the older is dropped when the newer fills. */
  #recent = new Set<string>();
  #recentOld = new Set<string>();
  #dropped = 0;
  #droppedTraffic = 0;
  #lastErrorLog = -Infinity;
  #timer: NodeJS.Timeout | null;
  #lock: Promise<void> = Promise.resolve();
  #flushing = false;

  constructor(database: Database, opts: ExperimentStoreOptions = {}) {
    const flushMs = opts.flushMs ?? 1000;
    const maxPending = opts.maxPendingUnits ?? 100_000;
    if (!Number.isFinite(flushMs) || flushMs <= 0) throw err('SY_ERR_CONFIG_INVALID', `experiment store: flushMs must be a positive number (got ${flushMs})`);
    if (!Number.isSafeInteger(maxPending) || maxPending < 1)
      throw err('SY_ERR_CONFIG_INVALID', `experiment store: maxPendingUnits must be a positive integer (got ${maxPending})`);
    this.#db = database.db;
    this.#dialect = database.dialect;
    this.#log = opts.logger ?? null;
    this.#maxPending = maxPending;
    this.#timer = setInterval(() => this.#tick(), flushMs);
    this.#timer.unref();
  }

  /** Exposures dropped because too many were pending (since this store was created). */
  get droppedExposures(): number {
    return this.#dropped;
  }

  async create(input: CreateExperimentInput, actor: string): Promise<ExperimentRecord> {
    if (!isObject(input)) throw bad('experiment: body must be an object');
    const id = input.id ?? newId();
    if (typeof id !== 'string' || !EXPERIMENT_ID.test(id)) throw bad(`experiment: "id" must match ${EXPERIMENT_ID.source}`);
    if (typeof input.model !== 'string' || !MODEL_NAME.test(input.model)) throw bad(`experiment: "model" must match ${MODEL_NAME.source}`);
    const description = input.description ?? '';
    if (typeof description !== 'string' || description.length > MAX_TEXT)
      throw bad(`experiment: "description" must be a string of at most ${MAX_TEXT} characters`);
    const arms = checkArms(input.arms);
    const control = input.control ?? (arms[0] as ExperimentArm).name;
    if (typeof control !== 'string' || !arms.some((a) => a.name === control)) throw bad(`experiment: control "${String(control)}" is not one of the arms`);
    const guardrails = checkGuardrails(input.guardrails);
    const model = input.model;
    const now = Date.now();
    const row = {
      id,
      model,
      description,
      status: 'running',
      config: JSON.stringify({ arms, control, guardrails } satisfies StoredConfig),
      created_by: actor,
      created_at: now,
      stopped_at: null,
      stop_reason: null,
    };
    try {
      await this.#db.transaction().execute(async (tx) => {
        // Postgres: serialise creates per model so two replicas cannot both start one (SQLite has one writer).
        if (this.#dialect === 'postgres') await sql`select pg_advisory_xact_lock(hashtext(${`switchyard.experiment:${model}`}))`.execute(tx);
        const taken = await tx.selectFrom('experiments').select('id').where('id', '=', id).executeTakeFirst();
        if (taken !== undefined) throw err('SY_ERR_EXPERIMENT_CONFLICT', `experiment "${id}" already exists`);
        const busy = await tx.selectFrom('experiments').select('id').where('model', '=', model).where('status', '=', 'running').executeTakeFirst();
        if (busy !== undefined) throw err('SY_ERR_EXPERIMENT_CONFLICT', `model "${model}" already runs experiment "${busy.id}"`);
        await tx.insertInto('experiments').values(row).execute();
      });
    } catch (e) {
      if (isUniqueViolation(e)) throw err('SY_ERR_EXPERIMENT_CONFLICT', `experiment "${id}" already exists`, { cause: e });
      throw e;
    }
    this.#forget(id);
    return toRecord(row);
  }

  async get(id: string): Promise<ExperimentRecord> {
    const row = await this.#db.selectFrom('experiments').selectAll().where('id', '=', id).executeTakeFirst();
    if (row === undefined) throw err('SY_ERR_EXPERIMENT_NOT_FOUND', `no experiment "${id}"`);
    return toRecord(row);
  }

  /** Newest first. */
  async list(filter: { model?: string; status?: ExperimentStatus } = {}): Promise<ExperimentRecord[]> {
    if (filter.status !== undefined && !STATUSES.includes(filter.status)) throw bad(`experiment: status must be one of ${STATUSES.join(', ')}`);
    let q = this.#db.selectFrom('experiments').selectAll();
    if (filter.model !== undefined) q = q.where('model', '=', filter.model);
    if (filter.status !== undefined) q = q.where('status', '=', filter.status);
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').execute();
    return rows.map(toRecord);
  }

  /** Every running experiment (the data plane caches these). */
  running(): Promise<ExperimentRecord[]> {
    return this.list({ status: 'running' });
  }

  /** Change status (running → stopped | rolled_back); 409 if not running. */
  async stop(id: string, status: 'stopped' | 'rolled_back', reason: string | null): Promise<ExperimentRecord> {
    if (status !== 'stopped' && status !== 'rolled_back') throw bad('experiment: a stop sets status "stopped" or "rolled_back"');
    if (reason !== null && (typeof reason !== 'string' || reason.length > MAX_TEXT))
      throw bad(`experiment: the stop reason must be at most ${MAX_TEXT} characters`);
    const res = await this.#db
      .updateTable('experiments')
      .set({ status, stopped_at: Date.now(), stop_reason: reason })
      .where('id', '=', id)
      .where('status', '=', 'running')
      .executeTakeFirst();
    const current = await this.get(id); // 404 when it does not exist
    if (Number(res.numUpdatedRows) === 0) throw err('SY_ERR_EXPERIMENT_CONFLICT', `experiment "${id}" is not running (status ${current.status})`);
    return current;
  }

  /** Delete the experiment with its exposures, traffic and events. */
  async delete(id: string): Promise<void> {
    const res = await this.#db.deleteFrom('experiments').where('id', '=', id).executeTakeFirst();
    if (Number(res.numDeletedRows) === 0) throw err('SY_ERR_EXPERIMENT_NOT_FOUND', `no experiment "${id}"`);
    this.#forget(id);
  }

  /**
   * HOT PATH, synchronous, no I/O: count one routed request for `arm` ('hash' when unit !== null, else 'random')
   * and remember the unit's first exposure (written by the next flush; a unit stays in the arm it was first
   * exposed to). Never throws. Units longer than 256 characters or empty are counted as traffic only.
   */
  expose(experiment: string, arm: string, unit: string | null): void {
    try {
      const assignment = unit === null ? 'random' : 'hash';
      const tk = experiment + SEP + arm + SEP + assignment;
      const t = this.#traffic.get(tk);
      if (t !== undefined) t.requests += 1;
      else if (this.#traffic.size < MAX_TRAFFIC_KEYS) this.#traffic.set(tk, { experiment, arm, assignment, requests: 1 });
      else this.#droppedTraffic += 1;
      if (unit === null || unit.length === 0 || unit.length > MAX_UNIT) return;
      const k = experiment + SEP + unit;
      if (this.#pending.has(k) || this.#recent.has(k) || this.#recentOld.has(k) || this.#inflight?.has(k) === true) return;
      if (this.#pending.size >= this.#maxPending) {
        this.#dropped += 1;
        return;
      }
      this.#pending.set(k, { experiment, unit, arm, at: Date.now() });
    } catch (e) {
      this.#log?.error({ err: e }, 'experiment exposure failed');
    }
  }

  /**
   * Validate and insert outcome events (all or none); 404 if the experiment does not exist; at most 1000 per call.
   * Returns how many were stored.
   */
  async addEvents(experiment: string, events: readonly OutcomeEvent[]): Promise<number> {
    if (!Array.isArray(events)) throw bad('events: must be a list');
    if (events.length > MAX_EVENTS_PER_CALL) throw bad(`events: at most ${MAX_EVENTS_PER_CALL} per call (got ${events.length})`);
    const now = Date.now();
    const rows = events.map((e: unknown, i) => {
      if (!isObject(e)) throw bad(`events[${i}]: must be an object`);
      const { unit, metric, value, at } = e;
      if (typeof unit !== 'string' || unit.length === 0 || unit.length > MAX_UNIT) throw bad(`events[${i}].unit must be 1 to ${MAX_UNIT} characters`);
      if (typeof metric !== 'string' || !METRIC_NAME.test(metric)) throw bad(`events[${i}].metric must match ${METRIC_NAME.source}`);
      if (typeof value !== 'number' || !Number.isFinite(value)) throw bad(`events[${i}].value must be a finite number`);
      let ms = now;
      if (at !== undefined) {
        ms = typeof at === 'string' && ISO_DATE.test(at) ? Date.parse(at) : Number.NaN;
        if (!Number.isFinite(ms)) throw bad(`events[${i}].at must be an ISO 8601 date-time`);
      }
      return { experiment, unit, metric, value, at: ms };
    });
    const exists = await this.#db.selectFrom('experiments').select('id').where('id', '=', experiment).executeTakeFirst();
    if (exists === undefined) throw err('SY_ERR_EXPERIMENT_NOT_FOUND', `no experiment "${experiment}"`);
    if (rows.length === 0) return 0;
    try {
      await this.#db.transaction().execute(async (tx) => {
        for (let i = 0; i < rows.length; i += CHUNK)
          await tx
            .insertInto('experiment_events')
            .values(rows.slice(i, i + CHUNK))
            .execute();
      });
    } catch (e) {
      // Deleted meanwhile: the foreign key refused the rows.
      const gone = await this.#db.selectFrom('experiments').select('id').where('id', '=', experiment).executeTakeFirst();
      if (gone === undefined) throw err('SY_ERR_EXPERIMENT_NOT_FOUND', `no experiment "${experiment}"`, { cause: e });
      throw e;
    }
    return rows.length;
  }

  /** Write pending exposures and traffic now. Rejects when the write fails (the data is kept for the next flush). */
  flush(): Promise<void> {
    return this.#exclusive(() => this.#flushNow());
  }

  /**
   * Flushes first, then aggregates in SQL: per arm, exposures and requests; per arm and metric, converting units
   * and the count, sum and sum of squares of their per-unit sums. Every non-control arm is compared with the
   * control on every metric seen.
   */
  async report(id: string): Promise<ExperimentReport> {
    await this.flush().catch(() => undefined); // logged in #flushNow; report what is stored
    const experiment = await this.get(id);
    const db = this.#db;
    const [agg, trafficRows, unattributedRow] = await Promise.all([
      aggregate(db, id),
      db.selectFrom('experiment_traffic').select(['arm', 'assignment', 'requests']).where('experiment', '=', id).execute(),
      db
        .selectFrom('experiment_events as e')
        .select((eb) => eb.fn.countAll<number | string>().as('n'))
        .where('e.experiment', '=', id)
        .where((eb) =>
          eb.not(
            eb.exists(
              eb
                .selectFrom('experiment_exposures as x')
                .select(sql`1`.as('one'))
                .whereRef('x.experiment', '=', 'e.experiment')
                .whereRef('x.unit', '=', 'e.unit'),
            ),
          ),
        )
        .executeTakeFirst(),
    ]);
    const requests = new Map<string, { hash: number; random: number }>();
    for (const r of trafficRows) {
      const cur = requests.get(r.arm) ?? { hash: 0, random: 0 };
      if (r.assignment === 'hash') cur.hash += Number(r.requests);
      else if (r.assignment === 'random') cur.random += Number(r.requests);
      requests.set(r.arm, cur);
    }
    const { arms, comparisons, srm } = summarize(experiment, agg);
    return {
      experiment,
      generatedAt: iso(Date.now()),
      arms: arms.map((a) => ({ ...a, requests: requests.get(a.name) ?? { hash: 0, random: 0 } })),
      comparisons,
      srm,
      unattributedEvents: Number(unattributedRow?.n ?? 0),
    };
  }

  /**
   * Results over time: the report's statistics computed cumulatively at `points` evenly spaced boundaries from
   * `from` (default: the experiment's creation) to `until` (default: when it stopped, else now) — each point
   * counts the units first exposed and the events that happened at or before its boundary. Request counters are
   * not kept per time and are absent. Flushes first, like {@link report}.
   */
  async timeline(id: string, q: { from?: number; until?: number; points?: number } = {}): Promise<ExperimentTimeline> {
    const points = q.points ?? 24;
    if (!Number.isSafeInteger(points) || points < 1 || points > MAX_TIMELINE_POINTS)
      throw bad(`timeline: "points" must be an integer from 1 to ${MAX_TIMELINE_POINTS}`);
    await this.flush().catch(() => undefined);
    const experiment = await this.get(id);
    const from = q.from ?? Date.parse(experiment.createdAt);
    const until = q.until ?? (experiment.stoppedAt === null ? Date.now() : Date.parse(experiment.stoppedAt));
    if (!Number.isFinite(from) || !Number.isFinite(until) || !(until > from)) throw bad('timeline: "until" must be after "from"');
    const stepMs = (until - from) / points;
    const out: ExperimentPoint[] = [];
    for (let i = 1; i <= points; i++) {
      const at = i === points ? until : Math.round(from + stepMs * i);
      out.push({ at: iso(at), ...summarize(experiment, await aggregate(this.#db, id, at)) });
    }
    return { experiment, from: iso(from), until: iso(until), stepMs, points: out };
  }

  /** Stop the timer and flush once (rejects if that flush fails; the data stays in memory). */
  async close(): Promise<void> {
    if (this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
    await this.flush();
  }

  #tick(): void {
    if (this.#flushing || (this.#pending.size === 0 && this.#traffic.size === 0)) return;
    this.flush().catch(() => undefined); // logged in #flushNow
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn);
    this.#lock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Drop what this replica holds for an experiment (deleted, or re-created under the same id). */
  #forget(experiment: string): void {
    const prefix = experiment + SEP;
    for (const k of this.#pending.keys()) if (k.startsWith(prefix)) this.#pending.delete(k);
    for (const k of this.#traffic.keys()) if (k.startsWith(prefix)) this.#traffic.delete(k);
    for (const s of [this.#recent, this.#recentOld]) for (const k of s) if (k.startsWith(prefix)) s.delete(k);
  }

  #remember(k: string): void {
    this.#recent.add(k);
    if (this.#recent.size >= this.#maxPending) {
      this.#recentOld = this.#recent;
      this.#recent = new Set();
    }
  }

  async #flushNow(): Promise<void> {
    if (this.#droppedTraffic > 0) {
      this.#log?.warn({ dropped: this.#droppedTraffic }, 'experiment traffic counters dropped: too many distinct experiment arms pending');
      this.#droppedTraffic = 0;
    }
    if (this.#pending.size === 0 && this.#traffic.size === 0) return;
    const batch = this.#pending;
    const traffic = this.#traffic;
    this.#pending = new Map();
    this.#traffic = new Map();
    this.#inflight = batch;
    this.#flushing = true;
    try {
      await this.#db.transaction().execute((tx) => this.#write(tx, batch, traffic));
      for (const k of batch.keys()) this.#remember(k);
    } catch (e) {
      this.#restore(batch, traffic);
      const now = Date.now();
      if (now - this.#lastErrorLog >= ERROR_LOG_INTERVAL_MS) {
        this.#lastErrorLog = now;
        this.#log?.error(
          { err: e, exposures: this.#pending.size, traffic: this.#traffic.size },
          'experiment flush failed; pending data kept for the next flush',
        );
      }
      throw e;
    } finally {
      this.#inflight = null;
      this.#flushing = false;
    }
  }

  async #write(tx: Transaction<DB>, batch: ReadonlyMap<string, PendingExposure>, traffic: ReadonlyMap<string, PendingTraffic>): Promise<void> {
    // Rows of deleted experiments would fail the foreign key: skip them.
    const ids = [...new Set([...[...batch.values()].map((p) => p.experiment), ...[...traffic.values()].map((t) => t.experiment)])];
    const live = new Set<string>();
    for (let i = 0; i < ids.length; i += CHUNK) {
      const rows = await tx
        .selectFrom('experiments')
        .select('id')
        .where('id', 'in', ids.slice(i, i + CHUNK))
        .execute();
      for (const r of rows) live.add(r.id);
    }
    // Sorted keys: concurrent Postgres transactions lock rows in one order and cannot deadlock.
    const exposures = [...batch.keys()]
      .sort()
      .map((k) => batch.get(k) as PendingExposure)
      .filter((p) => live.has(p.experiment));
    for (let i = 0; i < exposures.length; i += CHUNK) {
      await tx
        .insertInto('experiment_exposures')
        .values(exposures.slice(i, i + CHUNK).map((p) => ({ experiment: p.experiment, unit: p.unit, arm: p.arm, first_at: p.at })))
        .onConflict((oc) => oc.columns(['experiment', 'unit']).doNothing())
        .execute();
    }
    const counts = [...traffic.keys()]
      .sort()
      .map((k) => traffic.get(k) as PendingTraffic)
      .filter((t) => live.has(t.experiment));
    for (let i = 0; i < counts.length; i += CHUNK) {
      await tx
        .insertInto('experiment_traffic')
        .values(counts.slice(i, i + CHUNK).map((t) => ({ experiment: t.experiment, arm: t.arm, assignment: t.assignment, requests: t.requests })))
        .onConflict((oc) =>
          oc.columns(['experiment', 'arm', 'assignment']).doUpdateSet((eb) => ({
            requests: eb('experiment_traffic.requests', '+', eb.ref('excluded.requests')),
          })),
        )
        .execute();
    }
  }

  /** Put a failed batch back: its exposures came first (they win), then what arrived meanwhile, within the bound. */
  #restore(batch: Map<string, PendingExposure>, traffic: Map<string, PendingTraffic>): void {
    const merged = batch;
    for (const [k, p] of this.#pending) {
      if (merged.has(k)) continue;
      if (merged.size < this.#maxPending) merged.set(k, p);
      else this.#dropped += 1;
    }
    this.#pending = merged;
    for (const [k, t] of this.#traffic) {
      const cur = traffic.get(k);
      if (cur !== undefined) cur.requests += t.requests;
      else if (traffic.size < MAX_TRAFFIC_KEYS) traffic.set(k, t);
      else this.#droppedTraffic += 1;
    }
    this.#traffic = traffic;
  }
}
