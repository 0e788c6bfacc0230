/**
 * @module
 * The data plane's side of experiments: which experiment is running on each model (kept in memory, refreshed
 * when the registry's event log says one started or stopped, on this replica or another), exposures recorded
 * at routing time, serving outcomes per arm in a sliding window, and the guardrail check that rolls a canary
 * back to its control when an arm breaches its error-rate or p99 latency threshold.
 */
import diagnostics from 'node:diagnostics_channel';
import type { Logger } from 'pino';
import { channels, type RouteEvent, type ServedEvent } from '../events.js';
import type { Registry, RegistryEvent } from '../registry/index.js';
import type { Assignment } from '../routing/index.js';
import { WindowStats, type WindowSnapshot } from '../routing/index.js';
import type { ExperimentStore } from './store.js';
import type { ExperimentRecord } from './types.js';

export interface GuardrailStatus {
  readonly arm: string;
  readonly control: boolean;
  readonly window: WindowSnapshot;
  /** Why this arm breaches its guardrails now, or null. */
  readonly breach: string | null;
}

export interface ExperimentTrackerOptions {
  readonly store: ExperimentStore;
  readonly registry: Registry;
  readonly logger: Logger;
  /** Guardrail window, ms. Default 300000 (5 minutes). */
  readonly windowMs?: number;
  /** How often guardrails are checked, ms. Default 1000. */
  readonly checkMs?: number;
}

const GUARDRAIL_ACTOR = 'switchyard:guardrail';

export class ExperimentTracker {
  readonly #store: ExperimentStore;
  readonly #registry: Registry;
  readonly #log: Logger;
  readonly #stats: WindowStats;
  /** model → its running experiment, with each arm's window key. */
  #byModel = new Map<string, { exp: ExperimentRecord; keys: Map<string, string> }>();
  readonly #rollingBack = new Set<string>();
  #refresh: Promise<void> = Promise.resolve();
  readonly #timer: NodeJS.Timeout;
  readonly #unsubscribe: () => void;
  #unlisten: () => void = () => undefined;

  private constructor(opts: ExperimentTrackerOptions) {
    this.#store = opts.store;
    this.#registry = opts.registry;
    this.#log = opts.logger;
    this.#stats = new WindowStats({ windowMs: opts.windowMs ?? 300_000 });
    this.#unsubscribe = opts.registry.onChange((e) => this.#onEvent(e));
    this.#timer = setInterval(() => void this.checkGuardrails(), opts.checkMs ?? 1000);
    this.#timer.unref();
  }

  static async create(opts: ExperimentTrackerOptions): Promise<ExperimentTracker> {
    const t = new ExperimentTracker(opts);
    await t.refresh();
    return t;
  }

  /** Re-read the running experiments (after a start or stop here or on another replica). */
  refresh(): Promise<void> {
    this.#refresh = this.#refresh
      .then(async () => {
        const next = new Map<string, { exp: ExperimentRecord; keys: Map<string, string> }>();
        for (const exp of await this.#store.running()) {
          next.set(exp.model, { exp, keys: new Map(exp.arms.map((a) => [a.name, `${exp.id}\u0000${a.name}`])) });
        }
        this.#byModel = next;
      })
      .catch((e: unknown) => this.#log.error({ err: e }, 'reading running experiments failed'));
    return this.#refresh;
  }

  /**
   * Follow the data plane of `origin` (an InferenceService): its route events record exposures, its served
   * events feed the guardrail windows. Events of other instances in the same process are ignored.
   */
  listen(origin: object): void {
    this.#unlisten();
    const onRoute = (m: unknown): void => {
      const e = m as RouteEvent;
      if (e.origin === origin) this.routed(e.model, e.arm, e.unit, e.assignment);
    };
    const onServed = (m: unknown): void => {
      const e = m as ServedEvent;
      if (e.origin === origin) this.served(e.model, e.arm, e.ok, e.latencyMs);
    };
    diagnostics.subscribe(channels.route.name as string, onRoute);
    diagnostics.subscribe(channels.served.name as string, onServed);
    this.#unlisten = () => {
      diagnostics.unsubscribe(channels.route.name as string, onRoute);
      diagnostics.unsubscribe(channels.served.name as string, onServed);
    };
  }

  /** The experiment running on `model`, if any. */
  running(model: string): ExperimentRecord | undefined {
    return this.#byModel.get(model)?.exp;
  }

  /** Hot path: a request was assigned `arm`. Records the exposure when the arm belongs to the model's running experiment. */
  routed(model: string, arm: string, unit: string | null, assignment: Assignment): void {
    const r = this.#byModel.get(model);
    // Outside the namespace / coverage, or a single-arm policy: not in the experiment.
    if (r === undefined || !r.keys.has(arm) || assignment === 'excluded' || assignment === 'fixed') return;
    this.#store.expose(r.exp.id, arm, assignment === 'hash' ? unit : null);
  }

  /** Hot path: a routed request finished (ok, or failed on the server side) after `latencyMs`. */
  served(model: string, arm: string | null, ok: boolean, latencyMs: number): void {
    if (arm === null) return;
    const key = this.#byModel.get(model)?.keys.get(arm);
    if (key !== undefined) this.#stats.record(key, ok, latencyMs);
  }

  /** Each arm's serving window and guardrail verdict (this replica's traffic). */
  guardrails(exp: ExperimentRecord): GuardrailStatus[] {
    const g = exp.guardrails;
    return exp.arms.map((a) => {
      const w = this.#stats.snapshot(`${exp.id}\u0000${a.name}`);
      const control = a.name === exp.control;
      let breach: string | null = null;
      if (!control && w.requests >= g.minRequests) {
        if (g.maxErrorRate !== undefined && w.errorRate !== null && w.errorRate > g.maxErrorRate) {
          breach = `arm "${a.name}" error rate ${w.errorRate.toFixed(3)} > ${g.maxErrorRate} over ${w.requests} requests`;
        } else if (g.maxP99Ms !== undefined && w.p99Ms !== null && w.p99Ms > g.maxP99Ms) {
          breach = `arm "${a.name}" p99 latency ${w.p99Ms.toFixed(1)} ms > ${g.maxP99Ms} ms over ${w.requests} requests`;
        }
      }
      return { arm: a.name, control, window: w, breach };
    });
  }

  /** Check every running experiment; roll back those that breach with auto-rollback on. */
  async checkGuardrails(): Promise<void> {
    for (const { exp } of this.#byModel.values()) {
      if (!exp.guardrails.autoRollback || this.#rollingBack.has(exp.id)) continue;
      const breach = this.guardrails(exp).find((s) => s.breach !== null)?.breach;
      if (breach === undefined || breach === null) continue;
      this.#rollingBack.add(exp.id);
      try {
        await this.rollback(exp, `guardrail breached: ${breach}`);
      } catch (e) {
        this.#log.error({ err: e, experiment: exp.id }, 'guardrail rollback failed');
      } finally {
        this.#rollingBack.delete(exp.id);
      }
    }
  }

  /**
   * Send all of the model's traffic to the control arm (a new policy revision whose event carries `reason`)
   * and mark the experiment rolled back. Idempotent across replicas: a replica that loses the race finds the
   * policy already rolled back and the experiment no longer running.
   */
  async rollback(exp: ExperimentRecord, reason: string): Promise<void> {
    const model = await this.#registry.getModel(exp.model);
    const policy = model.routing;
    if (policy?.arms !== undefined && policy.arms.some((a) => a.name === exp.control)) {
      const arms = policy.arms.map((a) => ({ ...a, weight: a.name === exp.control ? 1 : 0 }));
      await this.#registry.setRouting(exp.model, { ...policy, arms }, GUARDRAIL_ACTOR, reason);
    }
    try {
      await this.#store.stop(exp.id, 'rolled_back', reason);
      await this.#registry.recordExperimentEvent(exp.model, 'experiment_stopped', exp.id, `rolled_back: ${reason}`, GUARDRAIL_ACTOR);
    } catch (e) {
      if ((e as { code?: string }).code !== 'SY_ERR_EXPERIMENT_CONFLICT') throw e;
    }
    this.#log.warn({ experiment: exp.id, model: exp.model, reason }, 'experiment rolled back to its control arm');
    await this.refresh();
  }

  #onEvent(e: RegistryEvent): void {
    if (e.type === 'experiment_started' || e.type === 'experiment_stopped' || e.type === 'model_deleted') void this.refresh();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#unsubscribe();
    this.#unlisten();
  }
}
