/**
 * @module
 * The data plane's traffic management: compiles each model's routing policy once per revision, assigns a
 * request to an arm (GrowthBook hashing of a routing key, or random), keeps a circuit breaker per version,
 * resolves fallback chains, and sends shadow copies off the request path. What happened is published on the
 * routing diagnostics channels (metrics subscribe); nothing here reads the database per request.
 */
import type { Logger } from 'pino';
import { err, type SwitchyardError } from '../errors.js';
import { channels, type ShadowEvent } from '../events.js';
import type { Flow, ModelManager, ModelVersion, ServedModel } from '../serving/index.js';
import { named, type Tensor } from '../tensor/index.js';
import { CircuitBreaker, type CircuitState } from './circuit.js';
import { compareOutputs } from './compare.js';
import { chooseVariation, getBucketRange, hash, inNamespace, type BucketRange, type Namespace } from './growthbook.js';
import type { CircuitBreakerSpec, RoutingPolicy, ShadowSpec } from '../registry/index.js';
import { ShadowStats } from './window.js';

/** How a request got its arm: by its routing key, at random (no key, or no sticky config), outside the experiment's coverage/namespace (first arm), or the only arm. */
export type Assignment = 'hash' | 'random' | 'excluded' | 'fixed';

export interface CompiledArm {
  readonly name: string;
  readonly target: string;
  /** Normalised weight (the arms' weights sum to 1). */
  readonly weight: number;
}

/** A routing policy prepared for the hot path: normalised weights, bucket ranges, key source. */
export class CompiledPolicy {
  readonly arms: readonly CompiledArm[];
  readonly ranges: readonly BucketRange[];
  /** Cumulative normalised weights, for random assignment. */
  readonly #cumulative: number[];
  readonly keyHeader: string | null;
  readonly keyParameter: string | null;
  readonly seed: string;
  readonly hashVersion: number;
  readonly namespace: Namespace | null;

  constructor(
    readonly model: string,
    readonly revision: number,
    readonly spec: RoutingPolicy,
  ) {
    const arms = spec.arms ?? [];
    const total = arms.reduce((a, b) => a + b.weight, 0);
    this.arms = arms.map((a) => ({ name: a.name, target: a.target, weight: total > 0 ? a.weight / total : 0 }));
    this.ranges = getBucketRange(
      this.arms.length,
      spec.sticky?.coverage ?? 1,
      this.arms.map((a) => a.weight),
    );
    let c = 0;
    this.#cumulative = this.arms.map((a) => (c += a.weight));
    const key = spec.sticky?.key ?? null;
    this.keyHeader = key?.startsWith('header:') ? key.slice(7).toLowerCase() : null;
    this.keyParameter = key?.startsWith('parameter:') ? key.slice(10) : null;
    this.seed = spec.sticky?.seed ?? model;
    this.hashVersion = spec.sticky?.hashVersion ?? 2;
    this.namespace = spec.sticky?.namespace ?? null;
  }

  /** Whether assignment needs the request's V2 parameters (the routing key is a parameter). */
  get needsParameters(): boolean {
    return this.keyParameter !== null;
  }

  /**
   * Pick an arm. With a sticky config and a routing key: GrowthBook's hash of (seed, key) picks the arm, so the
   * same key always lands on the same arm (across restarts and replicas, and in agreement with GrowthBook SDKs);
   * keys outside the namespace or coverage get the first arm. No key, or no sticky config: weighted random.
   * `random` is injectable for tests.
   */
  assign(key: string | undefined, random: () => number = Math.random): { arm: CompiledArm; assignment: Assignment; unit: string | null } {
    const arms = this.arms;
    if (arms.length === 1) return { arm: arms[0]!, assignment: 'fixed', unit: key ?? null };
    if (this.spec.sticky !== undefined && key !== undefined && key !== '') {
      if (this.namespace !== null && !inNamespace(key, this.namespace)) return { arm: arms[0]!, assignment: 'excluded', unit: key };
      const i = chooseVariation(hash(this.seed, key, this.hashVersion)!, this.ranges);
      return i < 0 ? { arm: arms[0]!, assignment: 'excluded', unit: key } : { arm: arms[i]!, assignment: 'hash', unit: key };
    }
    const r = random();
    const cum = this.#cumulative;
    for (let i = 0; i < cum.length; i++) if (r < cum[i]!) return { arm: arms[i]!, assignment: 'random', unit: null };
    // Rounding: the last arm with a weight.
    for (let i = arms.length - 1; i >= 0; i--) if (arms[i]!.weight > 0) return { arm: arms[i]!, assignment: 'random', unit: null };
    return { arm: arms[0]!, assignment: 'random', unit: null };
  }
}

/** Errors after which the next target in a fallback chain is tried: the version's fault or overload, never the caller's. */
export function fallsBack(e: unknown): boolean {
  const x = e as Partial<SwitchyardError>;
  if (typeof x.status !== 'number') return true; // unexpected: internal
  return x.status >= 500 && x.code !== 'SY_ERR_SHUTTING_DOWN';
}

/** Errors a circuit breaker counts against a version: execution failures and timeouts (not overload or bad input). */
export function countsAgainst(e: unknown): boolean {
  const x = e as Partial<SwitchyardError>;
  if (typeof x.status !== 'number') return true;
  return (
    x.code === 'SY_ERR_INFERENCE_FAILED' ||
    x.code === 'SY_ERR_TIMEOUT' ||
    x.code === 'SY_ERR_INTERNAL' ||
    x.code === 'SY_ERR_LOAD_TIMEOUT' ||
    x.code === 'SY_ERR_MODEL_NOT_READY'
  );
}

/** A fallback chain entry resolved against the serving state: a version, or why it cannot serve. */
export type FallbackStep = { readonly mv: ModelVersion; readonly error: null } | { readonly mv: null; readonly error: SwitchyardError };

const SHADOW_FLOW: Flow = Object.freeze({ id: '\u0000shadow', weight: 0.25 });
/** Shadow copies in flight per target beyond which new copies are dropped (counted), so a slow shadow cannot pile up memory. */
const MAX_SHADOW_INFLIGHT = 64;

interface BreakerEntry {
  readonly spec: CircuitBreakerSpec;
  readonly breaker: CircuitBreaker;
}

export interface TrafficRouterOptions {
  readonly manager: ModelManager;
  readonly logger: Logger;
}

export class TrafficRouter {
  readonly #manager: ModelManager;
  readonly #log: Logger;
  readonly #compiled = new WeakMap<ServedModel, CompiledPolicy>();
  readonly #breakers = new Map<string, BreakerEntry>();
  readonly #shadowInflight = new Map<string, number>();
  readonly #shadowStats = new Map<string, ShadowStats>();

  constructor(opts: TrafficRouterOptions) {
    this.#manager = opts.manager;
    this.#log = opts.logger;
  }

  /** The model's compiled policy (memoised per revision), or null when it has none. */
  policy(m: ServedModel): CompiledPolicy | null {
    if (m.routing === null) return null;
    const c = this.#compiled.get(m);
    if (c !== undefined && c.revision === m.routingRevision && c.spec === m.routing) return c;
    const fresh = new CompiledPolicy(m.name, m.routingRevision, m.routing);
    this.#compiled.set(m, fresh);
    return fresh;
  }

  /** The version an arm routes to; an arm whose target no longer resolves serves the model's default route. */
  armVersion(m: ServedModel, arm: CompiledArm): ModelVersion {
    return m.lookup(arm.target) ?? this.#manager.resolve(m.name);
  }

  /** The fallback chain after the routed version, resolved now (a target that cannot serve carries its error). */
  fallbacks(m: ServedModel, p: CompiledPolicy): FallbackStep[] {
    const out: FallbackStep[] = [];
    for (const f of p.spec.fallback ?? []) {
      try {
        out.push({ mv: this.#manager.resolve(f.model ?? m.name, f.version), error: null });
      } catch (e) {
        out.push({ mv: null, error: e as SwitchyardError });
      }
    }
    return out;
  }

  /** The circuit breaker of `mv` under `spec` (one per version; replaced when the spec changes). */
  breaker(mv: ModelVersion, spec: CircuitBreakerSpec): CircuitBreaker {
    const key = `${mv.model}:${mv.label}`;
    const e = this.#breakers.get(key);
    if (e !== undefined && e.spec === spec) return e.breaker;
    const breaker = new CircuitBreaker(spec, {
      onChange: (from, to, why) => {
        this.#log.warn({ model: mv.model, version: mv.version, from, to, why }, 'circuit breaker changed state');
        if (channels.circuit.hasSubscribers) channels.circuit.publish({ model: mv.model, version: mv.label, from, to });
      },
    });
    this.#breakers.set(key, { spec, breaker });
    return breaker;
  }

  /** Every breaker's state, for the circuit gauge and the admin API. */
  circuits(): { model: string; version: string; state: CircuitState }[] {
    const out: { model: string; version: string; state: CircuitState }[] = [];
    for (const [key, e] of this.#breakers) {
      const i = key.lastIndexOf(':');
      out.push({ model: key.slice(0, i), version: key.slice(i + 1), state: e.breaker.state });
    }
    return out;
  }

  /** Which shadows of the policy this request copies to (sampled by each shadow's fraction). */
  sampleShadows(p: CompiledPolicy, random: () => number = Math.random): ShadowSpec[] {
    const specs = p.spec.shadow;
    if (specs === undefined) return [];
    const out: ShadowSpec[] = [];
    for (const s of specs) if (s.fraction > 0 && random() < s.fraction) out.push(s);
    return out;
  }

  /**
   * Send a copy of a served request to `spec.target`, off the request path: the caller's response is already
   * decided. `inputs` must be the caller's copy (the runtime may take ownership). Outputs are compared with
   * the primary's; the outcome feeds the shadow statistics and metrics. Never throws.
   */
  shadow(m: ServedModel, spec: ShadowSpec, primary: ModelVersion, inputs: readonly Tensor[], rows: number, primaryOutputs: readonly Tensor[]): void {
    const mv = m.lookup(spec.target);
    const key = `${m.name}:${spec.target}`;
    const stats = this.shadowStats(m.name, spec.target);
    const publish = (e: Omit<ShadowEvent, 'model' | 'target'>): void => {
      if (channels.shadow.hasSubscribers) channels.shadow.publish({ model: m.name, target: spec.target, ...e } satisfies ShadowEvent);
    };
    if (mv === undefined || mv === primary || mv.signature === null || primary.signature === null || !sameInputs(mv, primary)) {
      stats.record('dropped', null, null);
      publish({ outcome: 'dropped', latencyMs: null, maxAbsDiff: null, agreement: null, rows: 0 });
      return;
    }
    const inflight = this.#shadowInflight.get(key) ?? 0;
    if (inflight >= MAX_SHADOW_INFLIGHT || !mv.tryAcquire()) {
      stats.record('dropped', null, null);
      publish({ outcome: 'dropped', latencyMs: null, maxAbsDiff: null, agreement: null, rows: 0 });
      return;
    }
    this.#shadowInflight.set(key, inflight + 1);
    const t0 = performance.now();
    let job: ReturnType<ModelVersion['submit']> | null = null;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(err('SY_ERR_TIMEOUT', `shadow copy to version ${mv.label} took over ${spec.timeoutMs} ms`)), spec.timeoutMs);
      timer.unref();
    });
    const run = async (): Promise<void> => {
      job = mv.submit(inputs, rows, 0, null, SHADOW_FLOW);
      const outputs = await Promise.race([job.result, timeout]);
      const latencyMs = performance.now() - t0;
      const cmp = compareOutputs(named(primary.signature!.outputs, primaryOutputs), named(mv.signature!.outputs, outputs));
      stats.record('ok', latencyMs, cmp);
      publish({ outcome: 'ok', latencyMs, maxAbsDiff: cmp.maxAbsDiff, agreement: cmp.agreement, rows: cmp.rows });
    };
    run()
      .catch((e: unknown) => {
        const timedOut = (e as SwitchyardError).code === 'SY_ERR_TIMEOUT';
        if (timedOut && job !== null) (job as { cancel(r: SwitchyardError): void }).cancel(e as SwitchyardError);
        const latencyMs = performance.now() - t0;
        stats.record(timedOut ? 'timeout' : 'error', latencyMs, null);
        publish({ outcome: timedOut ? 'timeout' : 'error', latencyMs, maxAbsDiff: null, agreement: null, rows: 0 });
      })
      .finally(() => {
        clearTimeout(timer);
        this.#shadowInflight.set(key, (this.#shadowInflight.get(key) ?? 1) - 1);
        this.#manager.release(mv);
      });
  }

  /** Running shadow statistics for (model, shadow target). */
  shadowStats(model: string, target: string): ShadowStats {
    const key = `${model}:${target}`;
    let s = this.#shadowStats.get(key);
    if (s === undefined) {
      s = new ShadowStats();
      this.#shadowStats.set(key, s);
    }
    return s;
  }

  /** Shadow statistics of every target of `model` that has any. */
  shadowsOf(model: string): { target: string; stats: ReturnType<ShadowStats['snapshot']> }[] {
    const out: { target: string; stats: ReturnType<ShadowStats['snapshot']> }[] = [];
    const prefix = `${model}:`;
    for (const [key, s] of this.#shadowStats) if (key.startsWith(prefix)) out.push({ target: key.slice(prefix.length), stats: s.snapshot() });
    return out;
  }
}

/** Whether two versions take the same inputs (a request parsed for one is valid, in the same order, for the other). */
export function sameInputs(a: ModelVersion, b: ModelVersion): boolean {
  if (a === b) return true;
  const x = a.signature;
  const y = b.signature;
  if (x === null || y === null) return false;
  if (x.inputs.length !== y.inputs.length || x.outputs.length !== y.outputs.length) return false;
  for (let i = 0; i < x.inputs.length; i++) {
    const p = x.inputs[i]!;
    const q = y.inputs[i]!;
    if (p.name !== q.name || p.dtype !== q.dtype || p.shape.length !== q.shape.length || p.shape.some((d, j) => d !== q.shape[j])) return false;
  }
  // Requested outputs are resolved to indices in signature order: the outputs must line up by name too.
  for (let i = 0; i < x.outputs.length; i++) if (x.outputs[i]!.name !== y.outputs[i]!.name) return false;
  return true;
}
