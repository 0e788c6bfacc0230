/**
 * @module
 * Prometheus metrics (prom-client) fed by the data plane's diagnostics channels, plus gauges read from the
 * model manager at scrape time. Histograms (not summaries) so replicas aggregate.
 */
import diagnostics from 'node:diagnostics_channel';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import {
  channels,
  type BatchEvent,
  type CacheEvent,
  type CircuitEvent,
  type ColdStartEvent,
  type FallbackEvent,
  type LoadEvent,
  type RequestEvent,
  type RouteEvent,
  type ShadowEvent,
  type UnloadEvent,
} from '../events.js';
import type { ResultCache, TrafficRouter } from '../routing/index.js';
import { watchLlm, type LlmModelsView } from './llm-metrics.js';
import { watchBatch } from './batch-metrics.js';
import { HotCounter, HotHistogram, type HotCounterChild, type HotHistogramChild } from '../hot-metrics.js';
import type { ModelManager } from '../serving/index.js';
import { watchAutoscaling, type VersionCounters } from './autoscaling.js';

const SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const ROWS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

export interface Metrics {
  readonly registry: Registry;
  /** Expose the result cache's size and error counts as gauges (read at scrape time). */
  watchCache(cache: ResultCache): void;
  /** Expose the LLM API's metrics (requests, token timings, upstream errors, backend load) for this catalog. */
  watchLlm(models: LlmModelsView): void;
  /** Unsubscribe from the channels. */
  close(): void;
}

/** How often the event loop's lag is sampled. */
const LAG_SAMPLE_MS = 100;

/**
 * `switchyard_event_loop_lag_seconds`: how late a timer due every 100 ms fires — the time a request arriving
 * then waits before the server can even read it. A histogram, so p99 and the share of stalls over a bound
 * (e.g. a liveness probe's timeout) can be alerted on.
 */
function watchEventLoopLag(registry: Registry): () => void {
  const lag = new Histogram({
    name: 'switchyard_event_loop_lag_seconds',
    help: 'How late the event loop ran a timer due every 100 ms (time a new request waits before it is read).',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  let due = performance.now() + LAG_SAMPLE_MS;
  const timer = setInterval(() => {
    const now = performance.now();
    lag.observe(Math.max(0, now - due) / 1000);
    due = now + LAG_SAMPLE_MS;
  }, LAG_SAMPLE_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** Create a registry, subscribe to the serving channels and expose the manager's live state as gauges. */
export function createMetrics(
  manager: ModelManager,
  opts: { defaultMetrics?: boolean; router?: TrafficRouter; version?: string; now?: () => number } = {},
): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) {
    // The standard names (process_*, nodejs_*), unprefixed: stock Node.js dashboards and alerts read them as is.
    collectDefaultMetrics({ register: registry });
    // prom-client names these gauges *_total, which Prometheus' lint (promtool check metrics) rejects; the
    // same values stay exported as nodejs_active_handles, nodejs_active_requests, nodejs_active_resources.
    for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total']) {
      registry.removeSingleMetric(`nodejs_${name}`);
    }
  }
  const stopLag = watchEventLoopLag(registry);
  new Gauge({
    name: 'switchyard_build_info',
    help: 'Always 1; the labels say which build runs (Switchyard version, Node.js version).',
    labelNames: ['version', 'node_version'],
    registers: [registry],
  }).set({ version: opts.version ?? 'unknown', node_version: process.version }, 1);
  const mv = ['model', 'version'] as const;
  const success = new HotCounter({
    name: 'switchyard_inference_success_total',
    help: 'Inference requests that succeeded.',
    labelNames: mv,
    registers: [registry],
  });
  const failure = new Counter({
    name: 'switchyard_inference_failure_total',
    help: 'Inference requests that failed, by reason.',
    labelNames: [...mv, 'reason'],
    registers: [registry],
  });
  const total = new HotHistogram({
    name: 'switchyard_inference_request_duration_seconds',
    help: 'End-to-end inference request duration, from body received to response ready.',
    labelNames: mv,
    buckets: SECONDS,
    registers: [registry],
  });
  const queue = new HotHistogram({
    name: 'switchyard_inference_queue_duration_seconds',
    help: 'Time a request waited in the queue before its batch started.',
    labelNames: mv,
    buckets: SECONDS,
    registers: [registry],
  });
  const compute = new HotHistogram({
    name: 'switchyard_inference_compute_duration_seconds',
    help: 'Execution time of the batch a request ran in.',
    labelNames: mv,
    buckets: SECONDS,
    registers: [registry],
  });
  const batchRows = new HotHistogram({
    name: 'switchyard_batch_size_rows',
    help: 'Rows (dim 0) per executed batch.',
    labelNames: mv,
    buckets: ROWS,
    registers: [registry],
  });
  const batchRequests = new HotHistogram({
    name: 'switchyard_batch_size_requests',
    help: 'Requests per executed batch.',
    labelNames: mv,
    buckets: ROWS,
    registers: [registry],
  });
  const busy = new HotCounter({
    name: 'switchyard_instance_busy_seconds_total',
    help: 'Instance-seconds spent executing batches (rate / instances = utilization).',
    labelNames: mv,
    registers: [registry],
  });
  const loadTime = new Gauge({
    name: 'switchyard_model_load_duration_seconds',
    help: 'Time the last load of a model version took (including warmup).',
    labelNames: mv,
    registers: [registry],
  });
  const loads = new Counter({
    name: 'switchyard_model_loads_total',
    help: 'Model version loads, by cause (startup, request = cold start, swap) and result.',
    labelNames: ['model', 'cause', 'result'],
    registers: [registry],
  });
  const unloads = new Counter({
    name: 'switchyard_model_unloads_total',
    help: 'Model version unloads, by reason (evicted = memory budget, retired = no longer routed, removed = archived/deleted).',
    labelNames: ['model', 'reason'],
    registers: [registry],
  });
  const coldStart = new Histogram({
    name: 'switchyard_model_cold_start_wait_seconds',
    help: 'How long requests waited for their model version to load (cold starts).',
    labelNames: ['model'],
    buckets: SECONDS,
    registers: [registry],
  });
  new Gauge({
    name: 'switchyard_model_resident_bytes',
    help: 'Bytes held by each resident model version (measured at its first load).',
    labelNames: mv,
    registers: [registry],
    collect() {
      this.reset();
      for (const m of manager.list()) for (const v of m.versions) if (v.state === 'READY') this.set({ model: m.name, version: v.label }, v.residentBytes);
    },
  });
  new Gauge({
    name: 'switchyard_memory_budget_bytes',
    help: 'Residency budget for all model versions together (0 = unlimited).',
    registers: [registry],
    collect() {
      this.set(manager.memory().budgetBytes);
    },
  });
  new Gauge({
    name: 'switchyard_memory_used_bytes',
    help: 'Bytes held or reserved by resident and loading model versions.',
    registers: [registry],
    collect() {
      this.set(manager.memory().usedBytes);
    },
  });

  new Gauge({
    name: 'switchyard_queue_depth',
    help: 'Requests waiting in a model version queue.',
    labelNames: mv,
    registers: [registry],
    collect() {
      this.reset();
      for (const m of manager.list()) for (const v of m.versions) this.set({ model: m.name, version: v.label }, v.batcher?.queued ?? 0);
    },
  });
  new Gauge({
    name: 'switchyard_inflight_requests',
    help: 'Requests in batches currently executing.',
    labelNames: mv,
    registers: [registry],
    collect() {
      this.reset();
      for (const m of manager.list()) for (const v of m.versions) this.set({ model: m.name, version: v.label }, v.batcher?.running ?? 0);
    },
  });
  const loadedVersion = (model: string, label: string) => manager.versionsOf(model).find((v) => v.label === label);
  new Gauge({
    name: 'switchyard_model_instances',
    help: 'Execution instances of each loaded model version (0 while not loaded).',
    labelNames: mv,
    registers: [registry],
    collect() {
      this.reset();
      for (const m of manager.list()) for (const v of m.versions) this.set({ model: m.name, version: v.label }, v.loaded?.instances.length ?? 0);
    },
  });
  new Gauge({
    name: 'switchyard_model_ready',
    help: '1 when the model version is READY, else 0.',
    labelNames: [...mv, 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const m of manager.list()) for (const v of m.versions) this.set({ model: m.name, version: v.label, state: v.state }, v.ready ? 1 : 0);
    },
  });

  // Hot children, cached per model version: the hot path does no label handling at all. Created when a version
  // loads, so its series exist (at zero) before its first request.
  type Children = {
    success: HotCounterChild;
    total: HotHistogramChild;
    queue: HotHistogramChild;
    compute: HotHistogramChild;
    batchRows: HotHistogramChild;
    batchRequests: HotHistogramChild;
    busy: HotCounterChild;
    counters: VersionCounters;
  };
  const cache = new Map<string, Map<string, Children>>();
  const children = (model: string, version: string): Children => {
    let byVersion = cache.get(model);
    if (byVersion === undefined) cache.set(model, (byVersion = new Map()));
    let c = byVersion.get(version);
    if (!c) {
      c = {
        success: success.child(model, version),
        total: total.child(model, version),
        queue: queue.child(model, version),
        compute: compute.child(model, version),
        batchRows: batchRows.child(model, version),
        batchRequests: batchRequests.child(model, version),
        busy: busy.child(model, version),
        counters: {
          model,
          version,
          queueSeconds: () => c!.queue,
          busySeconds: () => c!.busy.value,
          instances: () => loadedVersion(model, version)?.loaded?.instances.length ?? 0,
        },
      };
      byVersion.set(version, c);
    }
    return c;
  };

  const onRequest = (m: unknown): void => {
    const e = m as RequestEvent;
    const c = children(e.model, e.version);
    c.total.observe(e.totalMs / 1000);
    if (e.ok) {
      c.success.inc();
      c.queue.observe(e.queueMs / 1000);
      c.compute.observe(e.computeMs / 1000);
    } else {
      failure.labels(e.model, e.version, e.reason ?? 'other').inc();
    }
  };
  const onBatch = (m: unknown): void => {
    const e = m as BatchEvent;
    const c = children(e.model, e.version);
    c.batchRows.observe(e.rows);
    c.batchRequests.observe(e.requests);
    c.busy.inc(e.computeMs / 1000);
  };
  const onLoad = (m: unknown): void => {
    const e = m as LoadEvent;
    loadTime.labels(e.model, e.version).set(e.durationMs / 1000);
    loads.labels(e.model, e.cause, e.ok ? 'ok' : 'failed').inc();
    if (e.ok) children(e.model, e.version);
  };
  const onUnload = (m: unknown): void => {
    const e = m as UnloadEvent;
    unloads.labels(e.model, e.reason).inc();
  };
  const onColdStart = (m: unknown): void => {
    const e = m as ColdStartEvent;
    coldStart.labels(e.model).observe(e.waitMs / 1000);
  };
  // ── traffic management ──
  const routed = new Counter({
    name: 'switchyard_routing_requests_total',
    help: 'Requests routed by a traffic policy, by arm and assignment (hash = by routing key, random = no key, excluded = outside coverage/namespace, fixed = one arm).',
    labelNames: ['model', 'arm', 'assignment'],
    registers: [registry],
  });
  const fallbacks = new Counter({
    name: 'switchyard_routing_fallbacks_total',
    help: 'Requests served by a fallback target, by the version that failed, the target that served and why.',
    labelNames: ['model', 'from', 'to', 'reason'],
    registers: [registry],
  });
  const circuitChanges = new Counter({
    name: 'switchyard_circuit_transitions_total',
    help: 'Circuit breaker state changes, by the state entered.',
    labelNames: [...mv, 'to'],
    registers: [registry],
  });
  const CIRCUIT_VALUE = { closed: 0, open: 1, half_open: 2 } as const;
  new Gauge({
    name: 'switchyard_circuit_state',
    help: 'Circuit breaker state per version: 0 closed, 1 open, 2 half-open.',
    labelNames: mv,
    registers: [registry],
    collect() {
      this.reset();
      for (const c of opts.router?.circuits() ?? []) this.set({ model: c.model, version: c.version }, CIRCUIT_VALUE[c.state]);
    },
  });
  const st = ['model', 'target'] as const;
  const shadowCopies = new Counter({
    name: 'switchyard_shadow_requests_total',
    help: 'Shadow copies by outcome (ok, error, timeout, dropped).',
    labelNames: [...st, 'outcome'],
    registers: [registry],
  });
  const shadowLatency = new Histogram({
    name: 'switchyard_shadow_duration_seconds',
    help: 'Shadow copy latency.',
    labelNames: st,
    buckets: SECONDS,
    registers: [registry],
  });
  const shadowDiff = new Histogram({
    name: 'switchyard_shadow_max_abs_diff',
    help: "Largest absolute difference between the shadow's and the primary's outputs, per copy.",
    labelNames: st,
    buckets: [0, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10, 100],
    registers: [registry],
  });
  const shadowRows = new Counter({
    name: 'switchyard_shadow_rows_total',
    help: 'Rows compared between shadow and primary outputs.',
    labelNames: st,
    registers: [registry],
  });
  const shadowAgree = new Counter({
    name: 'switchyard_shadow_agreeing_rows_total',
    help: 'Compared rows whose decision (argmax, or value > 0.5 for one score) agreed.',
    labelNames: st,
    registers: [registry],
  });
  const cacheLookups = new Counter({
    name: 'switchyard_cache_requests_total',
    help: 'Result cache lookups, by result (hit, miss).',
    labelNames: ['model', 'result'],
    registers: [registry],
  });

  const onRoute = (m: unknown): void => {
    const e = m as RouteEvent;
    routed.labels(e.model, e.arm, e.assignment).inc();
  };
  const onFallback = (m: unknown): void => {
    const e = m as FallbackEvent;
    fallbacks.labels(e.model, e.from, e.to, e.reason).inc();
  };
  const onCircuit = (m: unknown): void => {
    const e = m as CircuitEvent;
    circuitChanges.labels(e.model, e.version, e.to).inc();
  };
  const onShadow = (m: unknown): void => {
    const e = m as ShadowEvent;
    shadowCopies.labels(e.model, e.target, e.outcome).inc();
    if (e.latencyMs !== null) shadowLatency.labels(e.model, e.target).observe(e.latencyMs / 1000);
    if (e.maxAbsDiff !== null) shadowDiff.labels(e.model, e.target).observe(e.maxAbsDiff);
    if (e.agreement !== null && e.rows > 0) {
      shadowRows.labels(e.model, e.target).inc(e.rows);
      shadowAgree.labels(e.model, e.target).inc(Math.round(e.agreement * e.rows));
    }
  };
  const onCache = (m: unknown): void => {
    const e = m as CacheEvent;
    cacheLookups.labels(e.model, e.hit ? 'hit' : 'miss').inc();
  };
  const routingSubs: [{ name: string | symbol }, (m: unknown) => void][] = [
    [channels.route, onRoute],
    [channels.fallback, onFallback],
    [channels.circuit, onCircuit],
    [channels.shadow, onShadow],
    [channels.cache, onCache],
  ];
  for (const [c, f] of routingSubs) diagnostics.subscribe(c.name as string, f);

  const watchCache = (cache: ResultCache): void => {
    new Gauge({
      name: 'switchyard_cache_entries',
      help: 'Entries in the in-process result cache (0 for the Redis cache).',
      registers: [registry],
      collect() {
        this.set(cache.stats().entries);
      },
    });
    new Gauge({
      name: 'switchyard_cache_bytes',
      help: 'Bytes held by the in-process result cache (0 for the Redis cache).',
      registers: [registry],
      collect() {
        this.set(cache.stats().bytes);
      },
    });
    new Counter({
      name: 'switchyard_cache_errors_total',
      help: 'Result cache failures (Redis unreachable or slow, bad entries), each served as a miss.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(cache.stats().errors);
      },
    });
  };

  // Versions that loaded before we subscribed.
  for (const m of manager.list()) {
    for (const v of m.versions) {
      if (v.loadMs > 0) loadTime.labels(m.name, v.label).set(v.loadMs / 1000);
      if (v.ready) children(m.name, v.label);
      // Start-up loads finished before this subscribed: count them as the load events would have.
      if (v.ready || v.state === 'UNAVAILABLE') loads.labels(m.name, 'startup', v.ready ? 'ok' : 'failed').inc();
    }
  }
  watchAutoscaling(
    registry,
    function* () {
      for (const byVersion of cache.values()) for (const c of byVersion.values()) yield c.counters;
    },
    opts.now,
  );

  diagnostics.subscribe(channels.request.name as string, onRequest);
  diagnostics.subscribe(channels.batch.name as string, onBatch);
  diagnostics.subscribe(channels.load.name as string, onLoad);
  diagnostics.subscribe(channels.unload.name as string, onUnload);
  diagnostics.subscribe(channels.coldStart.name as string, onColdStart);
  let unwatchLlm = (): void => undefined;
  const unwatchBatch = watchBatch(registry);
  return {
    registry,
    watchCache,
    watchLlm(models) {
      unwatchLlm();
      unwatchLlm = watchLlm(registry, models);
    },
    close() {
      stopLag();
      unwatchLlm();
      unwatchBatch();
      for (const [c, f] of routingSubs) diagnostics.unsubscribe(c.name as string, f);
      diagnostics.unsubscribe(channels.request.name as string, onRequest);
      diagnostics.unsubscribe(channels.batch.name as string, onBatch);
      diagnostics.unsubscribe(channels.load.name as string, onLoad);
      diagnostics.unsubscribe(channels.unload.name as string, onUnload);
      diagnostics.unsubscribe(channels.coldStart.name as string, onColdStart);
    },
  };
}
