/**
 * @module
 * Prometheus metrics of the OpenAI-compatible API, fed by the `switchyard:llm:*` diagnostics channels (the
 * transport publishes requests and token timings, the catalog upstream failures) plus two gauges read from
 * the catalog's backends at scrape time. Per-request series are hot metrics (no label hashing per request).
 */
import diagnostics from 'node:diagnostics_channel';
import { Counter, Gauge, type Registry } from 'prom-client';
import { channels, type LlmRequestEvent, type LlmTokenEvent, type LlmUpstreamErrorEvent } from '../events.js';
import { HotCounter, HotHistogram } from '../hot-metrics.js';

/** Latency buckets for token timings, seconds: 1 ms .. 30 s. */
const TOKEN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** What the gauges read at scrape time: the catalog's models and their backends' load. */
export interface LlmModelsView {
  list(): readonly { readonly name: string; readonly backend: { load(): { active: number; queued: number; slots: number | null } } }[];
}

/** Register the LLM metrics on `registry` and subscribe to the LLM channels; returns the unsubscribe function. */
export function watchLlm(registry: Registry, models: LlmModelsView): () => void {
  const registers = [registry];
  const ttft = new HotHistogram({
    name: 'switchyard_llm_time_to_first_token_seconds',
    help: 'Time from request arrival to the first generated text of a streamed response.',
    labelNames: ['model'],
    buckets: TOKEN_BUCKETS,
    registers,
  });
  const tpot = new HotHistogram({
    name: 'switchyard_llm_time_per_output_token_seconds',
    help: 'Time per output token after the first, per streamed response of two or more tokens: (last token - first token) / (completion tokens - 1).',
    labelNames: ['model'],
    buckets: TOKEN_BUCKETS,
    registers,
  });
  const itl = new HotHistogram({
    name: 'switchyard_llm_inter_token_latency_seconds',
    help: 'Time between successive streamed text chunks (about one token each).',
    labelNames: ['model'],
    buckets: TOKEN_BUCKETS,
    registers,
  });
  const duration = new HotHistogram({
    name: 'switchyard_llm_request_duration_seconds',
    help: 'End-to-end duration of LLM API requests (streams: until the last event).',
    labelNames: ['model', 'endpoint'],
    buckets: TOKEN_BUCKETS,
    registers,
  });
  const requests = new HotCounter({
    name: 'switchyard_llm_requests_total',
    help: 'LLM API requests by model, endpoint and outcome (success, client_error, rate_limited, server_error, stream_error, cancelled).',
    labelNames: ['model', 'endpoint', 'outcome'],
    registers,
  });
  const upstreamErrors = new Counter({
    name: 'switchyard_llm_upstream_errors_total',
    help: 'Failed upstream attempts (each retry counts), by model, deployment and reason.',
    labelNames: ['model', 'deployment', 'reason'],
    registers,
  });
  const load = (pick: 'active' | 'queued') =>
    function collect(this: Gauge<'model'>): void {
      for (const m of models.list()) this.set({ model: m.name }, m.backend.load()[pick]);
    };
  new Gauge({
    name: 'switchyard_llm_active_sequences',
    help: 'Requests generating (local models) or in flight (upstreams, embeddings) now.',
    labelNames: ['model'],
    registers,
    collect: load('active'),
  });
  new Gauge({
    name: 'switchyard_llm_queue_length',
    help: 'Requests waiting for a free sequence (the tenant-fair queue of a local model).',
    labelNames: ['model'],
    registers,
    collect: load('queued'),
  });
  new Gauge({
    name: 'switchyard_llm_sequence_slots',
    help: 'Sequences a local model generates for at once (its configured `sequences`).',
    labelNames: ['model'],
    registers,
    collect(this: Gauge<'model'>): void {
      for (const m of models.list()) {
        const slots = m.backend.load().slots;
        if (slots !== null) this.set({ model: m.name }, slots);
      }
    },
  });
  new Gauge({
    name: 'switchyard_llm_slot_occupancy_ratio',
    help: "Share of a local model's sequences generating now (active / slots, 0..1).",
    labelNames: ['model'],
    registers,
    collect(this: Gauge<'model'>): void {
      for (const m of models.list()) {
        const l = m.backend.load();
        if (l.slots !== null && l.slots > 0) this.set({ model: m.name }, l.active / l.slots);
      }
    },
  });

  const onRequest = (m: unknown): void => {
    const e = m as LlmRequestEvent;
    requests.child(e.model, e.endpoint, e.outcome).inc();
    if (e.seconds !== null) duration.child(e.model, e.endpoint).observe(e.seconds);
    if (e.tpot !== null) tpot.child(e.model).observe(e.tpot);
  };
  const onToken = (m: unknown): void => {
    const e = m as LlmTokenEvent;
    (e.first ? ttft : itl).child(e.model).observe(e.seconds);
  };
  const onUpstreamError = (m: unknown): void => {
    const e = m as LlmUpstreamErrorEvent;
    upstreamErrors.inc({ model: e.model, deployment: e.deployment, reason: e.reason });
  };
  const subs: [string, (m: unknown) => void][] = [
    [channels.llmRequest.name as string, onRequest],
    [channels.llmToken.name as string, onToken],
    [channels.llmUpstreamError.name as string, onUpstreamError],
  ];
  for (const [name, f] of subs) diagnostics.subscribe(name, f);
  return () => {
    for (const [name, f] of subs) diagnostics.unsubscribe(name, f);
  };
}
