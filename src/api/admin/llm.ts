/**
 * @module
 * The LLM API's admin endpoint as an encapsulated Fastify plugin: usage and spend per tenant, model and hour
 * (`GET /api/v1/llm/usage`). Authentication and the read scope are enforced by the gateway's hooks; a tenant
 * key sees only its own tenant (naming another answers 404), as with `GET /api/v1/usage`.
 */
import type { FastifyInstance } from 'fastify';
import type { LlmUsageMeter } from '../../gateway/index.js';
import { strictValidation } from './routes.js';
import * as S from './schemas.js';
import { usageRangeProperties } from './tenancy-schemas.js';
import { scopedRange } from './tenancy.js';

export interface LlmAdminRoutesOptions {
  usage: LlmUsageMeter;
}

const TAGS = ['tenancy'];

const llmUsageQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    tenant: { type: 'string' },
    model: { type: 'string', description: 'The model name clients send in "model".' },
    ...usageRangeProperties,
  },
} as const;

const llmUsageListSchema = {
  type: 'object',
  required: ['usage'],
  properties: {
    usage: {
      type: 'array',
      items: {
        type: 'object',
        required: ['tenant', 'model', 'period', 'requests', 'errors', 'promptTokens', 'completionTokens', 'cost'],
        properties: {
          tenant: { type: 'string', description: 'Tenant ("" = unauthenticated / platform traffic).' },
          model: { type: 'string' },
          period: { type: 'string', format: 'date-time', description: 'Start of the hour or day (for group_by total: of the first).' },
          requests: { type: 'integer' },
          errors: { type: 'integer', description: 'Requests that failed (counted in requests too).' },
          promptTokens: { type: 'integer' },
          completionTokens: { type: 'integer' },
          cost: { type: 'number', description: "Spend by the model catalog's prices (per 1000 tokens), in their currency." },
        },
      },
    },
  },
} as const;

type UsageQ = { tenant?: string; model?: string; from?: string; to?: string; group_by?: 'hour' | 'day' | 'total' };

export async function llmAdminRoutes(app: FastifyInstance, opts: LlmAdminRoutesOptions): Promise<void> {
  const { usage } = opts;
  strictValidation(app);

  app.get<{ Querystring: UsageQ }>(
    '/api/v1/llm/usage',
    {
      schema: {
        tags: TAGS,
        summary: 'LLM API usage per tenant and model: requests, errors, prompt and completion tokens, spend (a tenant key sees its own)',
        querystring: llmUsageQuery,
        response: { 200: llmUsageListSchema, ...S.errors(400, 401, 404) },
      },
    },
    async (req) => {
      const q = req.query;
      const rows = await usage.query({ ...scopedRange(req, q), ...(q.model === undefined ? {} : { model: q.model }), groupBy: q.group_by ?? 'hour' });
      return { usage: rows.map((r) => ({ ...r, period: new Date(r.period).toISOString() })) };
    },
  );
}
