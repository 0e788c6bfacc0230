/**
 * A GenerationRequest for backend-level LLM tests: the neutral defaults a route would build for a request that
 * sets no sampling parameter (temperature 1, top_p 1, n 1, no penalties, no tools, text output), with the
 * fields a test cares about given.
 */
import { ClientSignal, type GenerationRequest } from '../src/runtimes/generation.js';

export function generationRequest(fields: Partial<Omit<GenerationRequest, 'params'>> & { params?: Partial<GenerationRequest['params']> }): GenerationRequest {
  const { params, ...rest } = fields;
  return {
    kind: 'chat',
    model: 'm',
    messages: [],
    prompt: '',
    signal: new ClientSignal(),
    requestId: 'req',
    flow: null,
    tools: [],
    toolChoice: 'none',
    parallelToolCalls: true,
    responseFormat: { type: 'text' },
    body: {},
    ...rest,
    params: {
      maxTokens: null,
      temperature: 1,
      topP: 1,
      seed: null,
      stop: [],
      n: 1,
      frequencyPenalty: 0,
      presencePenalty: 0,
      logitBias: new Map(),
      logprobs: false,
      topLogprobs: 0,
      ...params,
    },
  };
}
