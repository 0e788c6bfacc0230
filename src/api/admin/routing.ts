/**
 * @module
 * Traffic management and experiments in the admin API (`/api/v1`): a model's routing policy (read, replace,
 * remove; every change is a new revision in the registry's event log) with its live circuit-breaker and
 * shadow state, and experiments (create on a model's arms, stop, delete, outcome events, report with
 * statistics and guardrails, results over time). Tenants see and change only what their models allow, as elsewhere.
 *
 * Longer than our ~500-line guide on purpose: a route table: each route is a schema plus a short handler over the
 * router and the experiment store.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { err } from '../../errors.js';
import {
  MAX_TIMELINE_POINTS,
  type ExperimentRecord,
  type ExperimentStatus,
  type ExperimentStore,
  type ExperimentTracker,
  type OutcomeEvent,
} from '../../experiments/index.js';
import type { ModelRecord, Registry } from '../../registry/index.js';
import { routingPolicySchema } from '../../registry/index.js';
import type { TrafficRouter } from '../../routing/index.js';
import { actorOf, isoTime, strictValidation } from './routes.js';
import * as S from './schemas.js';
import { checkCreatableId } from './tenant-scope.js';

export interface RoutingAdminOptions {
  readonly registry: Registry;
  readonly router: TrafficRouter;
  readonly experiments: ExperimentStore;
  readonly tracker: ExperimentTracker;
  readonly access?: {
    visible(req: FastifyRequest, model: string): boolean;
    /** May this request change the model (owner or platform)? */
    owns(req: FastifyRequest, model: string): boolean;
    /** The tenant a request acts for; null for the platform (and open mode). */
    tenant?(req: FastifyRequest): string | null;
  };
}

const TAGS = ['routing'];
const EXP_TAGS = ['experiments'];

/** The policy as JSON Schema (draft-07, from the zod schema that validates it). */
function policyJsonSchema(io: 'input' | 'output'): Record<string, unknown> {
  const { $schema: _, ...rest } = z.toJSONSchema(routingPolicySchema, { target: 'draft-7', io }) as Record<string, unknown>;
  return {
    ...rest,
    description:
      'A traffic policy: weighted arms (random or sticky by a hashed routing key), shadow copies, fallback chain, per-attempt timeout, circuit breaker, result cache.',
  };
}

const circuitSchema = {
  type: 'object',
  required: ['version', 'state'],
  properties: { version: { type: 'string' }, state: { type: 'string', enum: ['closed', 'open', 'half_open'] } },
} as const;

const nullableNumber = { type: ['number', 'null'] } as const;

const shadowSchema = {
  type: 'object',
  description: "A shadow target's running statistics on this replica.",
  properties: {
    target: { type: 'string' },
    copies: { type: 'integer' },
    ok: { type: 'integer' },
    errors: { type: 'integer' },
    timeouts: { type: 'integer' },
    dropped: { type: 'integer' },
    meanMaxAbsDiff: nullableNumber,
    maxAbsDiff: nullableNumber,
    agreement: nullableNumber,
    p50Ms: nullableNumber,
    p99Ms: nullableNumber,
    mismatches: { type: 'integer' },
  },
} as const;

const routingSchema = {
  type: 'object',
  description: "A model's routing policy, its revision, and live state on this replica.",
  required: ['model', 'revision', 'policy', 'circuits', 'shadows'],
  properties: {
    model: { type: 'string' },
    revision: { type: 'integer', description: 'Bumped by every change (0 = never set).' },
    policy: {
      anyOf: [{ type: 'null' }, { type: 'object', additionalProperties: true }],
      description: 'The policy with defaults filled in; null = the default route.',
    },
    circuits: { type: 'array', items: circuitSchema, description: 'Circuit-breaker state per version (this replica).' },
    shadows: { type: 'array', items: shadowSchema },
  },
} as const;

const armSchema = {
  type: 'object',
  required: ['name', 'target', 'weight'],
  properties: { name: { type: 'string' }, target: { type: 'string' }, weight: { type: 'number' } },
} as const;

const guardrailsProps = {
  maxErrorRate: { type: 'number', minimum: 0, maximum: 1, description: "Roll back when a non-control arm's error rate exceeds this." },
  maxP99Ms: { type: 'number', exclusiveMinimum: 0, description: "Roll back when a non-control arm's p99 latency exceeds this (ms)." },
  minRequests: { type: 'integer', minimum: 1, description: 'Judge an arm only with at least this many requests in the window (default 100).' },
  autoRollback: { type: 'boolean', description: 'Roll traffic back to the control on a breach (default true); else only report it.' },
} as const;

const experimentSchema = {
  type: 'object',
  required: ['id', 'model', 'description', 'status', 'arms', 'control', 'guardrails', 'createdBy', 'createdAt', 'stoppedAt', 'stopReason'],
  properties: {
    id: { type: 'string' },
    model: { type: 'string' },
    description: { type: 'string' },
    status: { type: 'string', enum: ['running', 'stopped', 'rolled_back'] },
    arms: { type: 'array', items: armSchema, description: "The model's arms as bound when the experiment was created." },
    control: { type: 'string', description: 'The control arm.' },
    guardrails: { type: 'object', properties: guardrailsProps },
    createdBy: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    stoppedAt: { type: ['string', 'null'], format: 'date-time' },
    stopReason: { type: ['string', 'null'] },
  },
} as const;

const testSchema = { type: ['object', 'null'], additionalProperties: true } as const;

const reportSchema = {
  type: 'object',
  description:
    'Per arm: exposures, requests, outcome metrics; each treatment arm vs the control with confidence intervals and p-values; sample-ratio-mismatch check; guardrails and shadow statistics from this replica.',
  required: ['experiment', 'generatedAt', 'arms', 'comparisons', 'srm', 'unattributedEvents', 'guardrails', 'shadows'],
  properties: {
    experiment: experimentSchema,
    generatedAt: { type: 'string', format: 'date-time' },
    arms: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          target: { type: 'string' },
          weight: { type: 'number' },
          control: { type: 'boolean' },
          exposures: { type: 'integer', description: 'Distinct routing keys first exposed to this arm.' },
          requests: {
            type: 'object',
            properties: { hash: { type: 'integer' }, random: { type: 'integer' } },
            description: 'Routed requests by assignment: by routing key (hash) or at random (no key).',
          },
          metrics: {
            type: 'object',
            additionalProperties: {
              type: 'object',
              properties: { units: { type: 'integer' }, conversionRate: nullableNumber, mean: nullableNumber, stddev: nullableNumber, sum: { type: 'number' } },
            },
          },
        },
      },
    },
    comparisons: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          arm: { type: 'string' },
          metric: { type: 'string' },
          conversion: { ...testSchema, description: 'Two-proportion z-test of conversion vs the control: rates, diff, CI, z, p.' },
          mean: { ...testSchema, description: "Welch's t-test of the per-unit mean vs the control: means, diff, CI, t, df, p." },
        },
      },
    },
    srm: { ...testSchema, description: 'Chi-square test of exposures per arm against the arm weights; mismatch = p < 0.001.' },
    unattributedEvents: { type: 'integer', description: 'Outcome events whose routing key was never exposed.' },
    guardrails: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          arm: { type: 'string' },
          control: { type: 'boolean' },
          breach: { type: ['string', 'null'] },
          window: {
            type: 'object',
            properties: {
              requests: { type: 'integer' },
              errors: { type: 'integer' },
              errorRate: nullableNumber,
              p50Ms: nullableNumber,
              p99Ms: nullableNumber,
              meanMs: nullableNumber,
            },
          },
        },
      },
    },
    shadows: { type: 'array', items: shadowSchema },
  },
} as const;

const timelineSchema = {
  type: 'object',
  description:
    "The report's statistics over time, computed cumulatively at evenly spaced boundaries: each point counts the units first exposed and the outcome events that happened at or before it (no request counters: those are not kept per time).",
  required: ['experiment', 'from', 'until', 'stepMs', 'points'],
  properties: {
    experiment: experimentSchema,
    from: { type: 'string', format: 'date-time' },
    until: { type: 'string', format: 'date-time' },
    stepMs: { type: 'number', description: 'Milliseconds between boundaries.' },
    points: {
      type: 'array',
      items: {
        type: 'object',
        required: ['at', 'arms', 'comparisons', 'srm'],
        properties: {
          at: { type: 'string', format: 'date-time' },
          arms: reportSchema.properties.arms,
          comparisons: reportSchema.properties.comparisons,
          srm: reportSchema.properties.srm,
        },
      },
    },
  },
} as const;

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', description: 'Experiment id.' } } } as const;

const createBody = {
  type: 'object',
  required: ['model'],
  additionalProperties: false,
  properties: {
    id: { type: 'string', description: 'Experiment id (default: generated).' },
    model: { type: 'string', description: 'The model whose routing arms the experiment binds (its policy needs at least 2 arms).' },
    description: { type: 'string' },
    control: { type: 'string', description: 'Control arm name (default: the first arm).' },
    guardrails: { type: 'object', additionalProperties: false, properties: guardrailsProps },
  },
} as const;

const eventItem = {
  type: 'object',
  required: ['unit', 'metric'],
  additionalProperties: false,
  properties: {
    unit: { type: 'string', description: 'The routing key the request was assigned by (e.g. the user id).' },
    metric: { type: 'string', description: 'Metric name, e.g. "converted" or "revenue".' },
    value: { type: 'number', description: 'Default 1 (a conversion).' },
    at: { type: 'string', format: 'date-time', description: 'When it happened (default: now).' },
  },
} as const;

const eventsBody = {
  type: 'object',
  additionalProperties: false,
  description: 'One event (unit, metric, value, at) or a batch as `events` (at most 1000).',
  properties: { ...eventItem.properties, events: { type: 'array', maxItems: 1000, items: eventItem } },
} as const;

type EventIn = { unit: string; metric: string; value?: number; at?: string };

export async function routingAdminRoutes(app: FastifyInstance, opts: RoutingAdminOptions): Promise<void> {
  const { registry, router, experiments, tracker } = opts;
  const visible = opts.access?.visible ?? (() => true);
  const owns = opts.access?.owns ?? (() => true);
  const tenantOf = opts.access?.tenant ?? (() => null);
  strictValidation(app);

  const routingOf = (m: ModelRecord): Record<string, unknown> => ({
    model: m.name,
    revision: m.routingRevision,
    policy: m.routing,
    circuits: router
      .circuits()
      .filter((c) => c.model === m.name)
      .map((c) => ({ version: c.version, state: c.state })),
    shadows: router.shadowsOf(m.name).map((s) => ({ target: s.target, ...s.stats })),
  });

  app.get<{ Params: { name: string } }>(
    '/api/v1/models/:name/routing',
    {
      schema: {
        tags: TAGS,
        summary: "A model's routing policy and live routing state",
        params: S.nameParams,
        response: { 200: routingSchema, ...S.errors(404) },
      },
    },
    async (req) => routingOf(await registry.getModel(req.params.name)),
  );

  app.put<{ Params: { name: string }; Querystring: { reason?: string } }>(
    '/api/v1/models/:name/routing',
    {
      schema: {
        tags: TAGS,
        summary: "Replace a model's routing policy (a new revision in the event log)",
        params: S.nameParams,
        headers: S.actorHeaders,
        querystring: { type: 'object', additionalProperties: false, properties: { reason: { type: 'string', description: 'Why (recorded in the event).' } } },
        body: policyJsonSchema('input'),
        response: { 200: routingSchema, ...S.errors(400, 404) },
      },
    },
    async (req) => {
      // A fallback may only name models the caller can see (a tenant cannot borrow another tenant's model).
      const fallback = (req.body as { fallback?: { model?: unknown }[] } | null)?.fallback ?? [];
      for (const f of fallback) {
        if (typeof f.model === 'string' && !visible(req, f.model))
          throw err('SY_ERR_BAD_REQUEST', `invalid routing policy: fallback model "${f.model}" not found`);
      }
      const model = await registry.setRouting(req.params.name, req.body, actorOf(req), req.query.reason ?? null);
      return routingOf(model);
    },
  );

  app.delete<{ Params: { name: string }; Querystring: { reason?: string } }>(
    '/api/v1/models/:name/routing',
    {
      schema: {
        tags: TAGS,
        summary: "Remove a model's routing policy (requests take the default route)",
        params: S.nameParams,
        headers: S.actorHeaders,
        querystring: { type: 'object', additionalProperties: false, properties: { reason: { type: 'string' } } },
        response: { 204: S.noContent, ...S.errors(404) },
      },
    },
    async (req, reply) => {
      await registry.setRouting(req.params.name, null, actorOf(req), req.query.reason ?? null);
      return reply.code(204).send();
    },
  );

  // ---- experiments ----

  /**
   * The experiment if this request may see it, else the same 404 as a missing one. An experiment belongs to its
   * model's owner: a tenant sees those on its own models (not on models merely shared with it).
   */
  const visibleExperiment = async (req: FastifyRequest, id: string): Promise<ExperimentRecord> => {
    const exp = await experiments.get(id);
    if (!owns(req, exp.model)) throw err('SY_ERR_EXPERIMENT_NOT_FOUND', `no experiment "${id}"`);
    return exp;
  };
  const ownedExperiment = visibleExperiment;

  app.get<{ Querystring: { model?: string; status?: ExperimentStatus } }>(
    '/api/v1/experiments',
    {
      schema: {
        tags: EXP_TAGS,
        summary: 'Experiments, newest first',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { model: { type: 'string' }, status: { type: 'string', enum: ['running', 'stopped', 'rolled_back'] } },
        },
        response: { 200: { type: 'array', items: experimentSchema }, ...S.errors(400) },
      },
    },
    async (req) => {
      const filter: { model?: string; status?: ExperimentStatus } = {};
      if (req.query.model !== undefined) filter.model = req.query.model;
      if (req.query.status !== undefined) filter.status = req.query.status;
      return (await experiments.list(filter)).filter((e) => owns(req, e.model));
    },
  );

  app.post<{ Body: { id?: string; model: string; description?: string; control?: string; guardrails?: Record<string, unknown> } }>(
    '/api/v1/experiments',
    {
      schema: {
        tags: EXP_TAGS,
        summary: "Start an experiment on a model's routing arms (exposures are recorded from now on)",
        headers: S.actorHeaders,
        body: createBody,
        response: { 201: experimentSchema, ...S.errors(400, 404, 409) },
      },
    },
    async (req, reply) => {
      const { model: name, ...rest } = req.body;
      // A tenant names its experiments in its namespace: an id taken by another tenant is never a 409 (no oracle).
      if (rest.id !== undefined) checkCreatableId(tenantOf(req), rest.id, 'experiment');
      if (!visible(req, name)) throw err('SY_ERR_REGISTRY_NOT_FOUND', `no registered model "${name}"`);
      if (!owns(req, name)) throw err('SY_ERR_FORBIDDEN', `only the owner of model "${name}" may start an experiment on it`);
      const model = await registry.getModel(name);
      const arms = model.routing?.arms ?? [];
      if (arms.length < 2)
        throw err(
          'SY_ERR_EXPERIMENT_CONFLICT',
          `model "${name}" routes to ${arms.length} arm(s); set a routing policy with at least 2 arms first (PUT /api/v1/models/${name}/routing)`,
        );
      const exp = await experiments.create({ ...rest, model: name, arms } as Parameters<ExperimentStore['create']>[0], actorOf(req));
      await registry.recordExperimentEvent(name, 'experiment_started', exp.id, null, actorOf(req));
      await tracker.refresh();
      return reply.code(201).send(exp);
    },
  );

  app.get<{ Params: { id: string } }>(
    '/api/v1/experiments/:id',
    {
      schema: { tags: EXP_TAGS, summary: 'An experiment', params: idParams, response: { 200: experimentSchema, ...S.errors(404) } },
    },
    async (req) => visibleExperiment(req, req.params.id),
  );

  app.post<{ Params: { id: string }; Body: { reason?: string } | undefined }>(
    '/api/v1/experiments/:id/stop',
    {
      schema: {
        tags: EXP_TAGS,
        summary: 'Stop an experiment (the routing policy is unchanged)',
        params: idParams,
        headers: S.actorHeaders,
        body: { type: 'object', additionalProperties: false, properties: { reason: { type: 'string' } } },
        response: { 200: experimentSchema, ...S.errors(404, 409) },
      },
    },
    async (req) => {
      const exp = await ownedExperiment(req, req.params.id);
      const reason = req.body?.reason ?? null;
      const stopped = await experiments.stop(exp.id, 'stopped', reason);
      await registry.recordExperimentEvent(exp.model, 'experiment_stopped', exp.id, reason, actorOf(req));
      await tracker.refresh();
      return stopped;
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/api/v1/experiments/:id',
    {
      schema: {
        tags: EXP_TAGS,
        summary: 'Delete an experiment and its data',
        params: idParams,
        headers: S.actorHeaders,
        response: { 204: S.noContent, ...S.errors(404) },
      },
    },
    async (req, reply) => {
      const exp = await ownedExperiment(req, req.params.id);
      await experiments.delete(exp.id);
      if (exp.status === 'running') await registry.recordExperimentEvent(exp.model, 'experiment_stopped', exp.id, 'deleted', actorOf(req));
      await tracker.refresh();
      return reply.code(204).send();
    },
  );

  app.post<{ Params: { id: string }; Body: EventIn & { events?: EventIn[] } }>(
    '/api/v1/experiments/:id/events',
    {
      schema: {
        tags: EXP_TAGS,
        summary: 'Record outcome events (conversions, values) by routing key',
        params: idParams,
        body: eventsBody,
        response: { 202: { type: 'object', properties: { accepted: { type: 'integer' } } }, ...S.errors(400, 404) },
      },
    },
    async (req, reply) => {
      const exp = await visibleExperiment(req, req.params.id);
      const b = req.body;
      const list: EventIn[] = b.events ?? [];
      if (b.events === undefined) {
        if (b.unit === undefined || b.metric === undefined)
          throw err('SY_ERR_BAD_REQUEST', 'invalid request: body needs "unit" and "metric" (one event) or "events" (a batch)');
        list.push({ unit: b.unit, metric: b.metric, ...(b.value === undefined ? {} : { value: b.value }), ...(b.at === undefined ? {} : { at: b.at }) });
      } else if (b.unit !== undefined || b.metric !== undefined) {
        throw err('SY_ERR_BAD_REQUEST', 'invalid request: send either one event (unit, metric, value, at) or "events", not both');
      }
      const events: OutcomeEvent[] = list.map((e) => ({ unit: e.unit, metric: e.metric, value: e.value ?? 1, ...(e.at === undefined ? {} : { at: e.at }) }));
      const accepted = await experiments.addEvents(exp.id, events);
      return reply.code(202).send({ accepted });
    },
  );

  app.get<{ Params: { id: string }; Querystring: { points?: number; from?: string; until?: string } }>(
    '/api/v1/experiments/:id/timeline',
    {
      schema: {
        tags: EXP_TAGS,
        summary: 'Experiment results over time: per-arm outcomes, lift with confidence intervals and SRM at evenly spaced times',
        params: idParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            points: {
              type: 'integer',
              minimum: 1,
              maximum: MAX_TIMELINE_POINTS,
              description: `Boundaries, evenly spaced, the last at \`until\` (default 24, at most ${MAX_TIMELINE_POINTS}).`,
            },
            from: { type: 'string', description: 'ISO-8601 start (default: when the experiment was created).' },
            until: { type: 'string', description: 'ISO-8601 end (default: when it stopped, else now).' },
          },
        },
        response: { 200: timelineSchema, ...S.errors(400, 404) },
      },
    },
    async (req) => {
      const exp = await visibleExperiment(req, req.params.id);
      const q = req.query;
      return experiments.timeline(exp.id, {
        ...(q.points === undefined ? {} : { points: q.points }),
        ...(q.from === undefined ? {} : { from: Date.parse(isoTime(q.from, 'from')) }),
        ...(q.until === undefined ? {} : { until: Date.parse(isoTime(q.until, 'until')) }),
      });
    },
  );

  app.get<{ Params: { id: string } }>(
    '/api/v1/experiments/:id/report',
    {
      schema: {
        tags: EXP_TAGS,
        summary: 'Experiment report: per-arm outcomes, statistics, SRM, guardrails, shadows',
        params: idParams,
        response: { 200: reportSchema, ...S.errors(404) },
      },
    },
    async (req) => {
      const exp = await visibleExperiment(req, req.params.id);
      const report = await experiments.report(exp.id);
      return {
        ...report,
        guardrails: tracker.guardrails(exp),
        shadows: router.shadowsOf(exp.model).map((s) => ({ target: s.target, ...s.stats })),
      };
    },
  );
}
