/**
 * @module
 * The LLM model catalog at run time: one backend per configured model (llama, upstream, or the inference
 * core's ONNX embeddings, built by a factory the server passes in), and the LLM metrics (time to first token,
 * inter-token latency, tokens, queue length, active sequences, upstream errors) through the
 * `switchyard:llm:*` diagnostics channels (monitoring/llm-metrics.ts subscribes). Token limits and usage are
 * the gateway's, charged by the OpenAI transport.
 */
import type { Logger } from 'pino';
import { channels, type LlmUpstreamErrorEvent } from '../events.js';
import { LlamaBackend, UpstreamBackend } from '../runtimes/index.js';
import type { LlmConfig, LlmModelConfig, OnnxEmbeddingModelConfig } from '../config/index.js';
import type { LlmBackend } from '../runtimes/index.js';
import { FairLlmBackend, FairSlots } from './llm-queue.js';

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
}

export class LlmService {
  readonly logger: Logger;
  readonly #models: ReadonlyMap<string, LlmModel>;

  private constructor(opts: LlmServiceOptions, models: Map<string, LlmModel>) {
    this.logger = opts.logger;
    this.#models = models;
  }

  static async create(opts: LlmServiceOptions): Promise<LlmService> {
    const created = Math.floor(Date.now() / 1000);
    const models = new Map<string, LlmModel>();
    try {
      for (const config of opts.config.models) {
        const onUpstreamError = (deployment: string, reason: string): void => {
          if (channels.llmUpstreamError.hasSubscribers)
            channels.llmUpstreamError.publish({ model: config.name, deployment, reason } satisfies LlmUpstreamErrorEvent);
        };
        const backend = await createBackend(config, opts, onUpstreamError);
        models.set(config.name, { name: config.name, config, backend, created });
      }
    } catch (e) {
      await Promise.allSettled([...models.values()].map((m) => m.backend.close()));
      throw e;
    }
    return new LlmService(opts, models);
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

function createBackend(
  config: LlmModelConfig,
  opts: LlmServiceOptions,
  onUpstreamError: (deployment: string, reason: string) => void,
): Promise<LlmBackend> | LlmBackend {
  const logger = opts.logger;
  switch (config.backend) {
    case 'llama':
      return LlamaBackend.create(config, { logger }).then((b) => new FairLlmBackend(b, new FairSlots(config.name, config.sequences, config.maxQueue)));
    case 'upstream':
      return new UpstreamBackend(config, { logger, onUpstreamError });
    case 'onnx-embeddings':
      if (opts.embeddings === undefined) throw new Error(`LLM model "${config.name}": onnx-embeddings models need the inference core (none given)`);
      return opts.embeddings(config, logger);
  }
}
