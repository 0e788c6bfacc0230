/**
 * @module
 * The serving overview in the admin API (`GET /api/v1/overview`), what the web console's first page shows:
 * per model request rate, p50/p95/p99 latency, error rate, queue vs compute time and batch sizes over the last
 * hour (from the in-process ServingTimeline, so it works without Prometheus), and the resident model versions
 * against the memory budget. A tenant's key sees only the models it can see (and not the server-wide totals).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ServingTimeline } from '../../monitoring/index.js';
import { strictValidation } from './routes.js';
import * as S from './schemas.js';

/** One resident (or loading) model version and the bytes it holds. */
export interface ResidentVersion {
  readonly model: string;
  readonly version: string;
  readonly state: string;
  readonly bytes: number;
}

export interface OverviewOptions {
  readonly timeline: ServingTimeline;
  /** Models being served (in the model manager), whether or not they had traffic. */
  readonly served: () => string[];
  /** The residency budget (0 = unlimited), bytes used, and the versions holding memory. */
  readonly memory: () => { budgetBytes: number; usedBytes: number; resident: ResidentVersion[] };
  readonly access?: { visible(req: FastifyRequest, model: string): boolean; isTenant(req: FastifyRequest): boolean };
}

const num = { type: 'number' } as const;
const numOrNull = { type: ['number', 'null'] } as const;
const column = (items: object, description: string): object => ({ type: 'array', items, description });

const modelSeries = {
  type: 'object',
  required: ['model', 't', 'requests', 'errors', 'p50Ms', 'p95Ms', 'p99Ms', 'queueMs', 'computeMs', 'totals', 'batches'],
  properties: {
    model: { type: 'string' },
    t: column(num, 'Start of each step, ms since the epoch (oldest first).'),
    requests: column(num, 'Requests finished in the step.'),
    errors: column(num, 'Server-side failures in the step (bad input and cancellations are not counted).'),
    p50Ms: column(numOrNull, 'Latency quantiles of successful requests, ms (null: none in the step).'),
    p95Ms: column(numOrNull, ''),
    p99Ms: column(numOrNull, ''),
    queueMs: column(numOrNull, 'Mean time waiting in the queue, ms.'),
    computeMs: column(numOrNull, 'Mean execution time of the batch, ms.'),
    totals: {
      type: 'object',
      required: ['requests', 'errors', 'clientErrors', 'cached', 'rate', 'errorRate', 'p50Ms', 'p95Ms', 'p99Ms', 'queueMs', 'computeMs'],
      properties: {
        requests: num,
        errors: num,
        clientErrors: { type: 'number', description: 'Bad input or cancelled.' },
        cached: { type: 'number', description: 'Served from the result cache.' },
        rate: { type: 'number', description: 'Requests per second over the window.' },
        errorRate: { type: ['number', 'null'], description: 'errors / (requests - clientErrors).' },
        p50Ms: numOrNull,
        p95Ms: numOrNull,
        p99Ms: numOrNull,
        queueMs: numOrNull,
        computeMs: numOrNull,
      },
    },
    batches: {
      type: 'object',
      required: ['bounds', 'counts', 'total', 'meanRows'],
      description: 'Executed batches by size in rows.',
      properties: {
        bounds: column(num, 'Upper bounds of the bins (a last, open bin follows).'),
        counts: column(num, 'Batches per bin.'),
        total: num,
        meanRows: numOrNull,
      },
    },
  },
} as const;

const overviewSchema = {
  type: 'object',
  required: ['generatedAt', 'stepSeconds', 'windowSeconds', 'models', 'memory'],
  properties: {
    generatedAt: { type: 'string', format: 'date-time' },
    stepSeconds: num,
    windowSeconds: num,
    models: { type: 'array', items: modelSeries, description: 'Models served or with traffic in the window, by name.' },
    memory: {
      type: 'object',
      required: ['budgetBytes', 'usedBytes', 'resident'],
      properties: {
        budgetBytes: { type: 'number', description: 'Residency budget for all versions together (0 = unlimited).' },
        usedBytes: { type: ['number', 'null'], description: 'Bytes held by all resident and loading versions (null for tenant keys).' },
        resident: {
          type: 'array',
          description: 'Versions holding memory (for tenant keys: of the models they can see).',
          items: {
            type: 'object',
            required: ['model', 'version', 'state', 'bytes'],
            properties: { model: { type: 'string' }, version: { type: 'string' }, state: { type: 'string' }, bytes: num },
          },
        },
      },
    },
  },
} as const;

export async function overviewRoutes(app: FastifyInstance, opts: OverviewOptions): Promise<void> {
  const { timeline } = opts;
  const visible = opts.access?.visible ?? (() => true);
  const isTenant = opts.access?.isTenant ?? (() => false);
  strictValidation(app);

  app.get<{ Querystring: { minutes?: number } }>(
    '/api/v1/overview',
    {
      schema: {
        tags: ['monitoring'],
        summary: 'Serving overview: per-model rate, latency, errors, queue vs compute, batch sizes (last hour, in-process) and memory',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            minutes: {
              type: 'integer',
              minimum: 1,
              maximum: Math.floor((timeline.stepMs * timeline.steps) / 60_000),
              description: 'Window, minutes (default: all the timeline keeps, 60).',
            },
          },
        },
        response: { 200: overviewSchema, ...S.errors(400) },
      },
    },
    async (req) => {
      const windowMs = req.query.minutes === undefined ? timeline.stepMs * timeline.steps : req.query.minutes * 60_000;
      const names = [...new Set([...opts.served(), ...timeline.models()])].filter((m) => visible(req, m)).sort();
      const mem = opts.memory();
      const tenant = isTenant(req);
      return {
        generatedAt: new Date().toISOString(),
        stepSeconds: timeline.stepMs / 1000,
        windowSeconds: Math.ceil(windowMs / timeline.stepMs) * (timeline.stepMs / 1000),
        models: names.map((m) => timeline.read(m, windowMs)),
        memory: { budgetBytes: mem.budgetBytes, usedBytes: tenant ? null : mem.usedBytes, resident: mem.resident.filter((r) => visible(req, r.model)) },
      };
    },
  );
}
