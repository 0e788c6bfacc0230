/**
 * @module
 * Batch lines of the OpenAI Batch API, run as their online endpoints run them: the same validation (a bad body
 * is the 400 the endpoint would answer, in the error file), the same model lookup and visibility (for the
 * batch's tenant), the same response bodies. Differences, by design: a line cannot stream (400), and lines do
 * not draw on the per-minute request and token limits (a batch is paced by its workers, in a low-weight
 * fair-queueing flow); their tokens and spend are recorded for the tenant when the line's chunk commits.
 */
import type { LlmModel, LlmService } from '../../serving/index.js';
import { LlmError, type Usage } from '../../runtimes/index.js';
import type { LineContext, LineOutcome, LineRunner } from '../../batch/index.js';
import { embeddingResponse, generationRequest, parseChat, parseCompletion, parseEmbedding, toLlmError } from './wire.js';

/** Whether `tenant` ('' = platform / open mode) may use LLM model `m`; `canSee` answers for the ONNX encoder behind an onnx-embeddings model. */
export function modelVisible(m: LlmModel, tenant: string, canSee: (model: string) => boolean): boolean {
  if (m.config.backend === 'onnx-embeddings' && !canSee(m.config.model)) return false;
  const allowed = m.config.tenants;
  return allowed === undefined || tenant === '' || allowed.includes(tenant);
}

/** The model, or the 404 a model that does not exist gets (the same for one the tenant may not see). */
export function modelFor(service: LlmService, name: string, tenant: string, canSee: (model: string) => boolean): LlmModel {
  const m = service.get(name);
  if (!m || !modelVisible(m, tenant, canSee))
    throw new LlmError('SY_ERR_MODEL_NOT_FOUND', `The model '${name}' does not exist or you do not have access to it.`, { param: 'model' });
  return m;
}

export function unsupported(m: LlmModel, what: string): LlmError {
  return new LlmError('SY_ERR_MODEL_NOT_SUPPORTED', `The model '${m.name}' does not support ${what}.`, { param: 'model' });
}

export interface OpenAiLineRunnerOptions {
  readonly service: LlmService;
  /** Whether `tenant` may see served (ONNX) model `model`. */
  readonly canSee: (tenant: string, model: string) => boolean;
}

export class OpenAiLineRunner implements LineRunner {
  readonly #service: LlmService;
  readonly #canSee: (tenant: string, model: string) => boolean;

  constructor(opts: OpenAiLineRunnerOptions) {
    this.#service = opts.service;
    this.#canSee = opts.canSee;
  }

  async run(url: string, body: Record<string, unknown>, ctx: LineContext): Promise<LineOutcome> {
    try {
      if (url === '/v1/embeddings') return await this.#embed(body, ctx);
      return await this.#generate(url === '/v1/chat/completions' ? 'chat' : 'completion', body, ctx);
    } catch (e) {
      const le = toLlmError(e);
      return { status: le.status, body: le.body(), usage: null };
    }
  }

  #model(name: string, ctx: LineContext): LlmModel {
    return modelFor(this.#service, name, ctx.tenant, (model) => this.#canSee(ctx.tenant, model));
  }

  async #generate(kind: 'chat' | 'completion', body: Record<string, unknown>, ctx: LineContext): Promise<LineOutcome> {
    const p = kind === 'chat' ? parseChat(body) : parseCompletion(body);
    if (p.stream)
      throw new LlmError('SY_ERR_BAD_REQUEST', "Invalid value for 'stream': a batch request cannot stream.", { param: 'stream', openaiCode: 'invalid_value' });
    const m = this.#model(p.model, ctx);
    if (kind === 'chat' ? !m.backend.capabilities.chat : !m.backend.capabilities.completions)
      throw unsupported(m, kind === 'chat' ? 'chat completions' : 'completions');
    const g = generationRequest(kind, p, m.name, body, ctx.signal, ctx.requestId, ctx.flow);
    await m.backend.estimate(g);
    const out = await m.backend.complete(g);
    out['model'] = m.name;
    const u = out['usage'] as Usage | undefined;
    const prompt = u?.prompt_tokens ?? 0;
    const completion = u?.completion_tokens ?? 0;
    return {
      status: 200,
      body: out,
      usage: { model: m.name, promptTokens: prompt, completionTokens: completion, cost: this.#service.cost(m, prompt, completion) },
    };
  }

  async #embed(body: Record<string, unknown>, ctx: LineContext): Promise<LineOutcome> {
    const p = parseEmbedding(body);
    const m = this.#model(p.model, ctx);
    if (!m.backend.capabilities.embeddings) throw unsupported(m, 'embeddings');
    const result = await m.backend.embed({
      model: m.name,
      input: p.input,
      dimensions: p.dimensions,
      body,
      signal: ctx.signal,
      requestId: ctx.requestId,
      caller: { tenant: ctx.tenant, flow: ctx.flow, keyId: ctx.keyId, requestId: ctx.requestId, header: () => undefined },
    });
    const prompt = result.usage.prompt_tokens;
    return {
      status: 200,
      body: embeddingResponse(result, p, m.name),
      usage: { model: m.name, promptTokens: prompt, completionTokens: 0, cost: this.#service.cost(m, prompt, 0) },
    };
  }
}
