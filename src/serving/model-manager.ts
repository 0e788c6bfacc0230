/**
 * @module
 * The data plane's view of the registry: which models and versions are servable, where each alias and each
 * model's default route point, and which versions are resident. It loads versions (preload at start or on
 * registration, lazily on first request), swaps aliases only once the new target is warm, drains and unloads
 * what nothing routes to any more, and keeps resident versions within a memory budget by unloading the least
 * recently used idle ones. It never reads the registry per request: registry events trigger a reconcile of
 * the one model they concern.
 *
 * Longer than our ~500-line guide on purpose: each version's lifecycle (LOADING → READY → UNLOADING, swaps,
 * the memory budget's evictions) is one state machine over the same per-model maps; loading, warmup and
 * import already live beside it.
 */
import type { Logger } from 'pino';
import { modelConfigSchema, resolveModelConfig, type ModelConfig, type VersionPolicy } from '../config/index.js';
import { err, isSwitchyardError } from '../errors.js';
import { channels, type ColdStartEvent, type LoadCause, type LoadEvent, type UnloadEvent, type UnloadReason } from '../events.js';
import type { LoadPolicy, ModelRecord, RegistryEvent, RegistrySnapshot, RoutingPolicy, VersionRecord, VersionStatus } from '../registry/index.js';
import { onnxRuntime } from '../runtimes/index.js';
import type { Runtime } from '../runtimes/index.js';
import { loadVersion, unloadVersion } from './loader.js';
import { ModelVersion } from './model-version.js';
import { selectVersions } from './repository.js';

export { ModelVersion, type VersionState } from './model-version.js';
export { isBatchable } from './loader.js';

/** What the manager needs from the registry (the Registry class satisfies it). */
export interface RegistrySource {
  snapshot(): Promise<RegistrySnapshot>;
  getModel(name: string): Promise<ModelRecord>;
  listVersions(name: string): Promise<VersionRecord[]>;
  openArtifact(v: VersionRecord): Promise<{ readonly path: string; release(): void }>;
  setVersionStatus(name: string, version: number, status: VersionStatus, reason: string | null, actor: string): Promise<void>;
  onChange(listener: (e: RegistryEvent) => void): () => void;
}

export interface ModelManagerOptions {
  registry: RegistrySource;
  logger: Logger;
  runtime?: Runtime;
  /** Default execution provider for models whose config names none. */
  executionProvider?: 'cpu' | 'cuda';
  /** Bytes all resident versions may hold together; 0 = unlimited. */
  memoryBudgetBytes?: number;
  /** Longest a request waits for its version to load before 503 + Retry-After, in ms. Default 30000. */
  loadWaitMs?: number;
  /** Models whose repository config failed to parse: their versions stay UNAVAILABLE with this reason. */
  configErrors?: ReadonlyMap<string, string>;
  /**
   * Server readiness: false (default) = start-up loading finished and the versions loaded at start-up are
   * servable (a version registered later that fails is unready on its own); true = every servable version is
   * (none UNAVAILABLE).
   */
  strictReadiness?: boolean;
}

/** One row of the repository index (Triton's model repository extension): a servable version and its state. */
export interface RepositoryEntry {
  readonly name: string;
  readonly version: string;
  /** READY, LOADING, UNLOADING, or UNAVAILABLE (failed, or not resident: the reason says which). */
  readonly state: 'READY' | 'LOADING' | 'UNLOADING' | 'UNAVAILABLE';
  readonly reason: string;
}

/** A servable model: its versions, the data plane's alias table and its load settings. */
export class ServedModel {
  /** Servable versions, ascending. */
  versions: ModelVersion[] = [];
  readonly byLabel = new Map<string, ModelVersion>();
  /** alias → version, switched only once the target is READY. */
  readonly aliases = new Map<string, ModelVersion>();
  /** alias → version number as the registry last said: where `aliases` is headed. */
  targetAliases: Readonly<Record<string, number>> = {};
  loadPolicy: LoadPolicy = 'preload';
  pinned = false;
  /** The config's explicit version policy (limits servable versions), or null for "every registered version". */
  policy: VersionPolicy | null = null;
  config: ModelConfig;
  configError: string | null = null;
  /** The registry's traffic policy for requests that name no version, and its revision. */
  routing: RoutingPolicy | null = null;
  routingRevision = 0;

  constructor(
    readonly name: string,
    config: ModelConfig,
  ) {
    this.config = config;
  }

  /**
   * `production` alias if set, else the newest version a request can use: READY, or loadable on demand (lazy
   * models; versions that were ready before and got evicted). A new version of a preload model becomes the
   * default only once it is warm.
   */
  defaultVersion(): ModelVersion | null {
    const prod = this.aliases.get('production');
    if (prod) return prod;
    const vs = this.versions;
    for (let i = vs.length - 1; i >= 0; i--) {
      const v = vs[i]!;
      if (v.state === 'READY' || (v.state !== 'UNAVAILABLE' && (v.everReady || this.loadPolicy === 'lazy'))) return v;
    }
    return vs[vs.length - 1] ?? null;
  }

  /** A version number or alias of this model, or undefined. */
  lookup(ref: string): ModelVersion | undefined {
    return this.byLabel.get(ref) ?? this.aliases.get(ref);
  }

  /**
   * Versions requests are routed to without naming a number: aliased ones, the default, and the versions the
   * traffic policy names by number (arms with weight, shadow targets, fallbacks within this model).
   */
  wanted(): Set<ModelVersion> {
    const w = new Set<ModelVersion>(this.aliases.values());
    const d = this.defaultVersion();
    if (d) w.add(d);
    for (const label of policyVersions(this.routing)) {
      const mv = this.byLabel.get(label);
      if (mv) w.add(mv);
    }
    return w;
  }
}

/** Version numbers (as labels) a traffic policy routes to within its own model. */
export function policyVersions(p: RoutingPolicy | null): string[] {
  if (p === null) return [];
  const out: string[] = [];
  for (const a of p.arms ?? []) if (a.weight > 0 && /^\d+$/.test(a.target)) out.push(a.target);
  for (const s of p.shadow ?? []) if (s.fraction > 0 && /^\d+$/.test(s.target)) out.push(s.target);
  for (const f of p.fallback ?? []) if (f.model === undefined && f.version !== undefined && /^\d+$/.test(f.version)) out.push(f.version);
  return out;
}

const DEFAULT_LOAD_WAIT_MS = 30_000;

export class ModelManager {
  readonly #models = new Map<string, ServedModel>();
  readonly #log: Logger;
  readonly #runtime: Runtime;
  readonly #registry: RegistrySource;
  readonly #opts: ModelManagerOptions;
  #budget: number;
  readonly #loadWaitMs: number;
  /** Resident size measured at the first load of each artifact (sha256 → bytes). */
  readonly #measured = new Map<string, number>();
  /** With a budget, loads run one at a time (the RSS growth of each is measured and the budget is checked). */
  #loadChain: Promise<void> = Promise.resolve();
  /** Resolved whenever a version is released or unloaded: wakes loads waiting for room. */
  #roomFreed = deferred();
  /** With a budget: the version whose (serialized) load is running now; its reservation counts as used. */
  #loadingNow: ModelVersion | null = null;
  /** Reconciles of registry changes, chained per model name (one at a time per model, in event order). */
  readonly #syncs = new Map<string, Promise<void>>();
  #unsubscribe: () => void = () => undefined;
  /** Versions start-up loaded (or found UNAVAILABLE): the server is ready once these are servable. */
  #startup = new Set<ModelVersion>();
  #started = false;
  #closed = false;

  private constructor(opts: ModelManagerOptions) {
    // Private: use ModelManager.create(), which reads the registry and preloads before resolving.
    this.#opts = opts;
    this.#log = opts.logger;
    this.#runtime = opts.runtime ?? onnxRuntime;
    this.#registry = opts.registry;
    this.#budget = opts.memoryBudgetBytes ?? 0;
    this.#loadWaitMs = opts.loadWaitMs ?? DEFAULT_LOAD_WAIT_MS;
  }

  /** Build the serving state from a registry snapshot, follow its changes, and preload what should be resident. */
  static async create(opts: ModelManagerOptions): Promise<ModelManager> {
    const m = new ModelManager(opts);
    m.#unsubscribe = opts.registry.onChange((e) => m.#onRegistryEvent(e));
    const snap = await opts.registry.snapshot();
    const preloads: Promise<void>[] = [];
    for (const rec of snap.models) {
      const sm = m.#apply(rec, rec.versions);
      preloads.push(m.#settleRoutes(sm, 'startup'));
    }
    await Promise.all(preloads);
    for (const sm of m.#models.values()) for (const v of sm.versions) if (v.state !== 'UNLOADED') m.#startup.add(v);
    m.#started = true;
    return m;
  }

  /** Served models, by name. */
  list(): ServedModel[] {
    return [...this.#models.values()];
  }

  /**
   * Change the residency budget at run time (0 = unlimited). Lowering it evicts nothing at once: the next load
   * makes room.
   */
  setMemoryBudget(bytes: number): void {
    this.#budget = bytes;
  }

  /** A served model by name, or undefined. */
  find(name: string): ServedModel | undefined {
    return this.#models.get(name);
  }

  /** A served model by name; 404 when there is none. */
  model(name: string): ServedModel {
    const m = this.#models.get(name);
    if (!m) throw err('SY_ERR_MODEL_NOT_FOUND', `model "${name}" not found`);
    return m;
  }

  /** Servable versions of a model (ascending), or none. */
  versionsOf(name: string): readonly ModelVersion[] {
    return this.#models.get(name)?.versions ?? [];
  }

  /** Bytes the budget allows (0 = unlimited) and bytes resident or reserved now. */
  memory(): { budgetBytes: number; usedBytes: number } {
    return { budgetBytes: this.#budget, usedBytes: this.#usedBytes() };
  }

  /**
   * Resolve a model reference: no version → the default route; a number → that version; else an alias.
   * Throws 404 naming the model or version when it is not servable.
   */
  resolve(name: string, ref?: string): ModelVersion {
    const m = this.model(name);
    if (ref === undefined || ref === '') {
      const d = m.defaultVersion();
      if (!d) throw err('SY_ERR_MODEL_NOT_FOUND', `model "${name}" has no servable version`);
      return d;
    }
    const mv = m.byLabel.get(ref) ?? m.aliases.get(ref);
    if (!mv) throw err('SY_ERR_MODEL_NOT_FOUND', `model "${name}" has no version ${/^\d+$/.test(ref) ? '' : 'or alias '}"${ref}"`);
    return mv;
  }

  /**
   * Take a reference on `mv` for one request, loading it first when it is not resident (waiting at most the
   * load bound). The fast path (`mv.tryAcquire()`) should be tried first; pair every success with `release`.
   */
  async acquire(mv: ModelVersion): Promise<void> {
    const t0 = performance.now();
    const deadline = t0 + this.#loadWaitMs;
    let waited = false;
    for (;;) {
      if (mv.tryAcquire()) {
        if (waited) this.#coldStart(mv, performance.now() - t0, true);
        return;
      }
      if (mv.removed) throw err('SY_ERR_MODEL_NOT_FOUND', `model "${mv.model}" has no version "${mv.label}"`);
      if (mv.state === 'UNAVAILABLE') {
        throw err('SY_ERR_MODEL_NOT_READY', `model "${mv.model}" version ${mv.version} is not ready (UNAVAILABLE: ${mv.reason ?? 'unknown'})`, {
          retryAfterS: 1,
        });
      }
      if (this.#closed) throw err('SY_ERR_SHUTTING_DOWN', 'the server is shutting down');
      waited = true;
      const left = deadline - performance.now();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.#ensureLoaded(mv, 'request').then(() => false),
        new Promise<boolean>((r) => (timer = setTimeout(r, Math.max(0, left), true))),
      ]).finally(() => clearTimeout(timer));
      if (timedOut) {
        this.#coldStart(mv, performance.now() - t0, false);
        throw err('SY_ERR_LOAD_TIMEOUT', `model "${mv.model}" version ${mv.label} is still loading after ${this.#loadWaitMs} ms`, { retryAfterS: 1 });
      }
    }
  }

  /** Drop a reference taken by `tryAcquire` / `acquire`. */
  release(mv: ModelVersion): void {
    mv.refs--;
    if (mv.refs > 0) return;
    if (mv.retiring || mv.removed) void this.#unload(mv, mv.removed ? 'removed' : 'retired');
    this.#wakeRoomWaiters();
  }

  /**
   * Whether the server can serve (V2 `/v2/health/ready`, gRPC ServerReady): start-up loading finished and every
   * version loaded at start-up that is still servable is not UNAVAILABLE (an evicted or unloaded one loads on
   * the next request). A version registered later that fails to load or warm up makes only itself unready.
   * With `strictReadiness`, no servable version may be UNAVAILABLE.
   */
  ready(): boolean {
    if (!this.#started) return false;
    if (this.#opts.strictReadiness === true) {
      for (const m of this.#models.values()) for (const v of m.versions) if (v.state === 'UNAVAILABLE') return false;
      return true;
    }
    for (const v of this.#startup) if (!v.removed && v.state === 'UNAVAILABLE') return false;
    return true;
  }

  // ── model repository control (Triton's model repository extension; transport-neutral) ──────────────────

  /** Every servable version and its state, by model name then version; `readyOnly` keeps only READY ones. */
  repositoryIndex(readyOnly = false, visible: (model: string) => boolean = () => true): RepositoryEntry[] {
    const out: RepositoryEntry[] = [];
    for (const m of [...this.#models.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      if (!visible(m.name)) continue;
      for (const v of m.versions) {
        if (readyOnly && v.state !== 'READY') continue;
        const state = v.state === 'UNLOADED' ? 'UNAVAILABLE' : v.state;
        const onDemand = !v.removed && (v.everReady || m.loadPolicy === 'lazy');
        const reason =
          v.state === 'UNLOADED'
            ? onDemand
              ? 'unloaded (loads on the next request)'
              : 'unloaded'
            : v.state === 'UNAVAILABLE'
              ? (v.reason ?? 'unavailable')
              : '';
        out.push({ name: m.name, version: v.label, state, reason });
      }
    }
    return out;
  }

  /**
   * Make a model resident (repository `load`): load the versions it serves (aliased ones, the default, the
   * version policy's selection and the traffic policy's targets). A version that failed before is tried again
   * (not one whose config is invalid). Resolves once the loads finished; throws SY_ERR_MODEL_NOT_READY (503)
   * naming the versions that failed and why.
   */
  async loadModel(name: string): Promise<ModelVersion[]> {
    const m = this.model(name);
    const targets = new Set<ModelVersion>(m.wanted());
    if (m.policy) for (const v of m.versions) targets.add(v);
    for (const label of Object.values(m.targetAliases)) {
      const mv = m.byLabel.get(String(label));
      if (mv) targets.add(mv);
    }
    const list = [...targets].sort((a, b) => a.version - b.version);
    await Promise.all(
      list.map((mv) => {
        if (mv.state === 'UNAVAILABLE' && m.configError === null) {
          mv.state = 'UNLOADED';
          mv.reason = null;
        }
        return this.#ensureLoaded(mv, 'request').catch(() => undefined);
      }),
    );
    const failed = list.filter((v) => v.state !== 'READY');
    if (failed.length > 0) {
      throw err('SY_ERR_MODEL_NOT_READY', `failed to load model "${name}": ${failed.map((v) => `version ${v.label}: ${v.reason ?? v.state}`).join('; ')}`);
    }
    // Aliases whose target is now warm switch to it.
    for (const [alias, version] of Object.entries(m.targetAliases)) {
      const mv = m.byLabel.get(String(version));
      if (mv?.state === 'READY') m.aliases.set(alias, mv);
    }
    return list;
  }

  /**
   * Release a model's residency (repository `unload`): every resident version is unloaded once idle (busy
   * ones when their last request finishes). The model stays servable: a later request, or `loadModel`, loads
   * it again (unlike Triton, where an unloaded model refuses requests; archive a version to stop serving it).
   * Resolves once the idle versions are unloaded.
   */
  async unloadModel(name: string): Promise<void> {
    const m = this.model(name);
    await Promise.all(
      m.versions.map(async (mv) => {
        if (mv.state === 'LOADING') await mv.transition?.catch(() => undefined);
        if (mv.state !== 'READY') return;
        if (mv.idle) return this.#unload(mv, 'requested');
        mv.retiring = true; // release() unloads it when the last request finishes
      }),
    );
  }

  /** Resolves once every registry change seen so far has been applied (loads and swaps included). */
  async settled(): Promise<void> {
    await Promise.all(this.#syncs.values());
  }

  /** Stop admitting, let queued work finish (bounded by `graceMs`), then dispose every instance. */
  async close(graceMs = 10_000): Promise<void> {
    this.#closed = true;
    this.#unsubscribe();
    const versions = [...this.#models.values()].flatMap((m) => m.versions);
    for (const v of versions) v.batcher?.close(true);
    const drained = Promise.all(versions.map((v) => v.batcher?.idle()));
    let t: NodeJS.Timeout | undefined;
    await Promise.race([drained, new Promise((r) => (t = setTimeout(r, graceMs)))]);
    clearTimeout(t);
    await Promise.allSettled(versions.map((v) => v.transition));
    for (const v of versions) {
      v.batcher?.close(false);
      v.state = 'UNLOADING';
    }
    await Promise.all(versions.map((v) => v.loaded?.dispose()));
  }

  // ── registry → serving state ──────────────────────────────────────────────────────────────────────────

  #onRegistryEvent(e: RegistryEvent): void {
    if (this.#closed) return;
    const run = async (): Promise<void> => {
      let rec: ModelRecord | null = null;
      let versions: VersionRecord[] = [];
      try {
        rec = await this.#registry.getModel(e.model);
        versions = await this.#registry.listVersions(e.model);
      } catch (x) {
        if (!isSwitchyardError(x) || x.status !== 404) throw x;
      }
      if (!rec) return this.#removeModel(e.model);
      await this.#settleRoutes(this.#apply(rec, versions), e.type === 'alias_moved' || e.type === 'version_created' ? 'swap' : 'startup');
    };
    const chain = (this.#syncs.get(e.model) ?? Promise.resolve()).then(run).catch((x: unknown) => {
      this.#log.error({ err: x, model: e.model, event: e.type }, 'applying a registry change failed');
    });
    this.#syncs.set(e.model, chain);
    void chain.then(() => {
      if (this.#syncs.get(e.model) === chain) this.#syncs.delete(e.model);
    });
  }

  /** Make the model's servable versions match the registry (new ones UNLOADED, gone ones retired). */
  #apply(rec: ModelRecord, records: readonly VersionRecord[]): ServedModel {
    const configError = this.#opts.configErrors?.get(rec.name) ?? null;
    const parsed = modelConfigSchema.safeParse(rec.config);
    const file = parsed.success ? parsed.data : {};
    const config = resolveModelConfig(file, this.#opts.executionProvider ? { executionProvider: this.#opts.executionProvider } : {});
    let m = this.#models.get(rec.name);
    if (!m) {
      m = new ServedModel(rec.name, config);
      this.#models.set(rec.name, m);
    }
    m.config = config;
    m.configError = configError ?? (parsed.success ? null : `invalid config: ${parsed.error.message}`);
    m.loadPolicy = rec.loadPolicy;
    m.pinned = rec.pinned;
    m.policy = file.version_policy ?? null;
    m.routing = rec.routing;
    m.routingRevision = rec.routingRevision;

    const live = records.filter((r) => r.archivedAt === null);
    const aliased = new Set(Object.values(rec.aliases));
    for (const label of policyVersions(rec.routing)) aliased.add(Number(label));
    const selected = m.policy
      ? new Set(
          selectVersions(
            live.map((r) => r.version),
            m.policy,
          ),
        )
      : null;
    const servable = live.filter((r) => !selected || selected.has(r.version) || aliased.has(r.version));
    const keep = new Set(servable.map((r) => String(r.version)));
    for (const [label, mv] of m.byLabel) {
      if (keep.has(label)) continue;
      m.byLabel.delete(label);
      mv.removed = true;
      void this.#unload(mv, 'removed');
    }
    for (const r of servable) {
      let mv = m.byLabel.get(String(r.version));
      if (!mv) {
        mv = new ModelVersion(rec.name, r.version, config, { sha256: r.artifact.sha256, size: r.artifact.size, open: () => this.#registry.openArtifact(r) });
        m.byLabel.set(mv.label, mv);
      }
      if (mv.state === 'UNLOADED') mv.config = config; // a config change applies from the next load
      if (m.configError && mv.state === 'UNLOADED') {
        mv.state = 'UNAVAILABLE';
        mv.reason = m.configError;
      }
    }
    m.versions = [...m.byLabel.values()].sort((a, b) => a.version - b.version);
    // Aliases the registry dropped, or whose target is gone, stop routing at once; moved ones switch in #settleRoutes.
    for (const [alias, mv] of m.aliases) {
      if (rec.aliases[alias] === undefined || mv.removed) m.aliases.delete(alias);
    }
    m.targetAliases = { ...rec.aliases };
    return m;
  }

  /**
   * Load what must be warm before routing to it (alias targets; for preload models the default and the
   * policy's selection), switch aliases to loaded targets, then retire versions nothing routes to any more.
   */
  async #settleRoutes(m: ServedModel, cause: LoadCause): Promise<void> {
    const before = m.wanted();
    const loads: Promise<void>[] = [];
    for (const [alias, version] of Object.entries(m.targetAliases)) {
      const mv = m.byLabel.get(String(version));
      if (!mv || m.aliases.get(alias) === mv) continue;
      loads.push(
        this.#ensureLoaded(mv, cause)
          .catch(() => undefined)
          .then(() => {
            // Never switch to a version that failed to load while another still serves the alias.
            if (mv.state === 'READY' || !m.aliases.has(alias)) m.aliases.set(alias, mv);
            else
              this.#log.error(
                { model: m.name, alias, version: mv.version, reason: mv.reason },
                'alias target failed to load; the alias keeps its previous version',
              );
          }),
      );
    }
    if (m.loadPolicy === 'preload') {
      // An explicit version policy preloads its whole selection; otherwise the newest version. Versions the
      // traffic policy routes to are warmed too.
      const newest = m.versions[m.versions.length - 1];
      const pre = m.policy ? [...m.versions] : newest ? [newest] : [];
      for (const label of policyVersions(m.routing)) {
        const mv = m.byLabel.get(label);
        if (mv && !pre.includes(mv)) pre.push(mv);
      }
      for (const mv of pre) if (mv.state === 'UNLOADED' && !mv.everReady) loads.push(this.#ensureLoaded(mv, cause).catch(() => undefined));
    }
    await Promise.all(loads);
    const after = m.wanted();
    // Without an explicit policy, what no alias or default routes to any more drains and unloads.
    if (!m.policy) for (const mv of before) if (!after.has(mv)) this.#retire(mv);
    for (const mv of after) mv.retiring = false;
  }

  #removeModel(name: string): void {
    const m = this.#models.get(name);
    if (!m) return;
    this.#models.delete(name);
    for (const mv of m.versions) {
      mv.removed = true;
      void this.#unload(mv, 'removed');
    }
  }

  /** Unload once idle: nothing routes here by default any more. */
  #retire(mv: ModelVersion): void {
    if (mv.state !== 'READY') return;
    mv.retiring = true;
    if (mv.idle) void this.#unload(mv, 'retired');
  }

  // ── loading, unloading, budget ────────────────────────────────────────────────────────────────────────

  /** Start (or join) the load of `mv`. Rejects with a 503 error when the budget cannot make room. */
  #ensureLoaded(mv: ModelVersion, cause: LoadCause): Promise<void> {
    mv.retiring = false;
    if (mv.state === 'READY' || mv.state === 'UNAVAILABLE') return Promise.resolve();
    if (mv.state === 'LOADING') return mv.transition!;
    if (mv.state === 'UNLOADING') return mv.transition!.then(() => this.#ensureLoaded(mv, cause));
    mv.state = 'LOADING';
    const run = (): Promise<void> => this.#load(mv, cause);
    const p = this.#budget > 0 ? (this.#loadChain = this.#loadChain.then(run, run)) : run();
    mv.transition = p.finally(() => {
      if (mv.transition === p) mv.transition = null;
    });
    return p;
  }

  async #load(mv: ModelVersion, cause: LoadCause): Promise<void> {
    const start = performance.now();
    const log = this.#log.child({ model: mv.model, version: mv.version });
    const floor = mv.artifact.size * Math.max(1, mv.config.instances);
    const estimate = this.#measured.get(mv.artifact.sha256) ?? floor;
    mv.residentBytes = estimate; // the reservation counts while loading
    this.#loadingNow = mv;
    let failure: string | null;
    try {
      if (this.#budget > 0) await this.#makeRoom(mv, estimate, start + this.#loadWaitMs);
      const rss0 = process.memoryUsage.rss();
      failure = await loadVersion(mv, this.#runtime, log);
      if (failure === null) {
        const known = this.#measured.get(mv.artifact.sha256);
        const instanceFloor = mv.artifact.size * Math.max(1, mv.loaded!.instances.length);
        // RSS growth is only this load's when loads run one at a time (with a budget); otherwise the floor.
        mv.residentBytes = known ?? (this.#budget > 0 ? Math.max(process.memoryUsage.rss() - rss0, instanceFloor) : instanceFloor);
        if (known === undefined && this.#budget > 0) this.#measured.set(mv.artifact.sha256, mv.residentBytes);
      }
    } catch (e) {
      // No room within the bound: the version stays UNLOADED (a later request may try again).
      mv.state = 'UNLOADED';
      mv.residentBytes = 0;
      mv.reason = (e as Error).message;
      log.warn({ reason: mv.reason }, 'model version not loaded');
      throw e;
    } finally {
      mv.loadMs = performance.now() - start;
      this.#loadingNow = null;
    }
    if (failure === null && this.#closed) {
      await unloadVersion(mv);
      mv.state = 'UNLOADED';
      return;
    }
    if (failure === null) {
      mv.state = 'READY';
      mv.everReady = true;
      mv.touch(); // most recently used: the requests waiting for it must get it before the next eviction
      mv.reason = null;
      log.info({ ms: Math.round(mv.loadMs), residentBytes: mv.residentBytes, cause }, 'model version ready');
    } else {
      mv.state = 'UNAVAILABLE';
      mv.reason = failure;
      mv.residentBytes = 0;
      log.error({ reason: failure }, 'model version unavailable');
      this.#registry
        .setVersionStatus(mv.model, mv.version, 'failed', failure, 'switchyard')
        .catch((e: unknown) => log.warn({ err: e }, 'recording the failed status in the registry failed'));
    }
    if (channels.load.hasSubscribers) {
      channels.load.publish({
        model: mv.model,
        version: mv.label,
        ok: failure === null,
        durationMs: mv.loadMs,
        cause,
        residentBytes: mv.residentBytes,
      } satisfies LoadEvent);
    }
  }

  /** Unload `mv` now if it is resident and idle; otherwise (busy) leave it for `release` to finish. */
  async #unload(mv: ModelVersion, reason: UnloadReason): Promise<void> {
    if (mv.state === 'LOADING' || mv.state === 'UNLOADING') {
      await mv.transition?.catch(() => undefined);
      if (reason !== 'evicted' && (mv.removed || mv.retiring)) return this.#unload(mv, reason);
      return;
    }
    if (mv.state !== 'READY' || !mv.idle) return;
    mv.state = 'UNLOADING';
    mv.retiring = false;
    const p = unloadVersion(mv).then(() => {
      mv.state = 'UNLOADED';
      this.#log.info({ model: mv.model, version: mv.version, reason }, 'model version unloaded');
      if (channels.unload.hasSubscribers) channels.unload.publish({ model: mv.model, version: mv.label, reason } satisfies UnloadEvent);
      this.#wakeRoomWaiters();
    });
    mv.transition = p.finally(() => {
      if (mv.transition === p) mv.transition = null;
    });
    await p;
  }

  #usedBytes(): number {
    let used = 0;
    for (const m of this.#models.values()) {
      for (const v of m.versions) {
        // Loads waiting their turn (budget: one at a time) reserve nothing yet.
        const counts = v.state === 'READY' || v.state === 'UNLOADING' || (v.state === 'LOADING' && (this.#budget === 0 || v === this.#loadingNow));
        if (counts) used += v.residentBytes;
      }
    }
    return used;
  }

  /** Evict least recently used idle, unpinned versions until `need` more bytes fit; wait for room until `deadline`. */
  async #makeRoom(loading: ModelVersion, need: number, deadline: number): Promise<void> {
    for (;;) {
      // `loading` already counts its reservation in #usedBytes.
      if (this.#usedBytes() <= this.#budget) return;
      if (need > this.#budget) {
        throw err(
          'SY_ERR_MEMORY_BUDGET',
          `model "${loading.model}" version ${loading.label} needs ${need} bytes, more than the whole memory budget (${this.#budget} bytes)`,
        );
      }
      let victim: ModelVersion | null = null;
      for (const m of this.#models.values()) {
        if (m.pinned) continue;
        for (const v of m.versions) {
          if (v === loading || v.state !== 'READY' || !v.idle) continue;
          if (!victim || v.lastUsed < victim.lastUsed) victim = v;
        }
      }
      if (victim) {
        await this.#unload(victim, 'evicted');
        continue;
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw err(
          'SY_ERR_MEMORY_BUDGET',
          `model "${loading.model}" version ${loading.label} needs ${need} bytes but the memory budget (${this.#budget} bytes) is held by pinned or busy versions`,
          { retryAfterS: 1 },
        );
      }
      let t: NodeJS.Timeout | undefined;
      await Promise.race([this.#roomFreed.promise, new Promise((r) => (t = setTimeout(r, left)))]);
      clearTimeout(t);
    }
  }

  #wakeRoomWaiters(): void {
    this.#roomFreed.resolve();
    this.#roomFreed = deferred();
  }

  #coldStart(mv: ModelVersion, waitMs: number, ok: boolean): void {
    if (channels.coldStart.hasSubscribers) channels.coldStart.publish({ model: mv.model, version: mv.label, waitMs, ok } satisfies ColdStartEvent);
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
