/**
 * @module
 * The LLM model catalog at run time: one backend per configured model (llama, upstream, or the inference
 * core's ONNX embeddings, built by a factory the server passes in), and the LLM metrics (time to first token,
 * inter-token latency, tokens, queue length, active sequences, upstream errors). Token limits and usage are
 * the gateway's, charged by the OpenAI transport.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { HotCounter, HotHistogram } from '../hot-metrics.js';
import { LlamaBackend, UpstreamBackend } from '../runtimes/index.js';
import type { LlmConfig, LlmModelConfig, OnnxEmbeddingModelConfig } from '../config/index.js';
import type { LlmBackend } from '../runtimes/index.js';

export interface LlmModel {
  readonly name: string;
  readonly config: LlmModelConfig;
  readonly backend: LlmBackend;
  /** When the catalog was loaded (GET /v1/models `created`), epoch seconds. */
  readonly created: number;
}

export interface LlmServiceOptions {
  readonly config: LlmConfig;
  /** Builds the backend of an `onnx-embeddings` model (the inference core's embeddings path); absent = such models are refused. */
  readonly embeddings?: (config: OnnxEmbeddingModelConfig, logger: Logger) => LlmBackend;
  readonly logger: Logger;
  readonly metrics: Registry;
}

/** Latency buckets for token timings, seconds: 1 ms .. 30 s. */
const TOKEN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class LlmService {
  readonly logger: Logger;
  readonly #models: ReadonlyMap<string, LlmModel>;
  /** Per-request metrics are hot (children per series, no label hashing per observation): `child(model, …)`. */
  readonly ttft: HotHistogram<'model'>;
  readonly itl: HotHistogram<'model'>;
  readonly duration: HotHistogram<'model' | 'endpoint'>;
  readonly requests: HotCounter<'model' | 'endpoint' | 'outcome'>;
  readonly upstreamErrors: Counter<'model' | 'deployment' | 'reason'>;

  private constructor(opts: LlmServiceOptions, models: Map<string, LlmModel>, upstreamErrors: Counter<'model' | 'deployment' | 'reason'>) {
    this.logger = opts.logger;
    this.#models = models;
    this.upstreamErrors = upstreamErrors;
    const registers = [opts.metrics];
    this.ttft = new HotHistogram({ name: 'switchyard_llm_time_to_first_token_seconds', help: 'Time from request arrival to the first generated text of a streamed response.', labelNames: ['model'], buckets: TOKEN_BUCKETS, registers });
    this.itl = new HotHistogram({ name: 'switchyard_llm_inter_token_latency_seconds', help: 'Time between successive streamed text chunks (about one token each).', labelNames: ['model'], buckets: TOKEN_BUCKETS, registers });
    this.duration = new HotHistogram({ name: 'switchyard_llm_request_duration_seconds', help: 'End-to-end duration of LLM API requests (streams: until the last event).', labelNames: ['model', 'endpoint'], buckets: TOKEN_BUCKETS, registers });
    this.requests = new HotCounter({ name: 'switchyard_llm_requests_total', help: 'LLM API requests by model, endpoint and outcome (success, client_error, rate_limited, server_error, stream_error, cancelled).', labelNames: ['model', 'endpoint', 'outcome'], registers });
    const load = (pick: 'active' | 'queued') => function collect(this: Gauge<'model'>): void {
      for (const m of models.values()) this.set({ model: m.name }, m.backend.load()[pick]);
    };
    new Gauge({ name: 'switchyard_llm_active_sequences', help: 'Requests generating (local models) or in flight (upstreams, embeddings) now.', labelNames: ['model'], registers, collect: load('active') });
    new Gauge({ name: 'switchyard_llm_queue_length', help: 'Requests waiting for a free sequence.', labelNames: ['model'], registers, collect: load('queued') });
  }

  static async create(opts: LlmServiceOptions): Promise<LlmService> {
    const upstreamErrors = new Counter({
      name: 'switchyard_llm_upstream_errors_total', help: 'Failed upstream attempts (each retry counts), by model, deployment and reason.',
      labelNames: ['model', 'deployment', 'reason'], registers: [opts.metrics],
    });
    const created = Math.floor(Date.now() / 1000);
    const models = new Map<string, LlmModel>();
    try {
      for (const config of opts.config.models) {
        const backend = await createBackend(config, opts, (deployment, reason) => upstreamErrors.inc({ model: config.name, deployment, reason }));
        models.set(config.name, { name: config.name, config, backend, created });
      }
    } catch (e) {
      await Promise.allSettled([...models.values()].map((m) => m.backend.close()));
      throw e;
    }
    return new LlmService(opts, models, upstreamErrors);
  }

  list(): LlmModel[] {
    return [...this.#models.values()];
  }

  get(name: string): LlmModel | undefined {
    return this.#models.get(name);
  }

  /** Spend of one request in the model's pricing unit. */
  cost(model: LlmModel, promptTokens: number, completionTokens: number): number {
    const p = model.config.pricing;
    return p ? (promptTokens * p.promptPer1k + completionTokens * p.completionPer1k) / 1000 : 0;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#models.values()].map((m) => m.backend.close()));
  }
}

function createBackend(config: LlmModelConfig, opts: LlmServiceOptions, onUpstreamError: (deployment: string, reason: string) => void): Promise<LlmBackend> | LlmBackend {
  const logger = opts.logger;
  switch (config.backend) {
    case 'llama': return LlamaBackend.create(config, { logger });
    case 'upstream': return new UpstreamBackend(config, { logger, onUpstreamError });
    case 'onnx-embeddings':
      if (opts.embeddings === undefined) throw new Error(`LLM model "${config.name}": onnx-embeddings models need the inference core (none given)`);
      return opts.embeddings(config, logger);
  }
}
