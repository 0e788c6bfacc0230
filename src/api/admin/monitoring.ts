/**
 * @module
 * Model monitoring in the admin API (`/api/v1`): the prediction log (query and export as JSON, JSONL or CSV),
 * reference profiles per model version (from an uploaded CSV / JSONL dataset or from logged predictions),
 * drift reports (current window and history) and alerting rules with their firing / resolved events.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { err } from '../../errors.js';
import { csvParts, jsonlParts, jsonParts, redactRule } from '../../monitoring/index.js';
import type { MonitoringService } from '../../monitoring/index.js';
import type { Registry } from '../../registry/index.js';
import { actorOf, isoTime, strictValidation } from './routes.js';
import { slicedBody } from './sliced-body.js';
import { checkCreatableId, inNamespace } from './tenant-scope.js';
import * as S from './schemas.js';

export interface MonitoringAdminOptions {
  readonly registry: Registry;
  readonly monitoring: MonitoringService;
  readonly access?: {
    visible(req: FastifyRequest, model: string): boolean;
    owns(req: FastifyRequest, model: string): boolean;
    /** A tenant's key (whose queries must name a model it can see). */
    isTenant(req: FastifyRequest): boolean;
    /** The tenant a request acts for; null for the platform (and open mode). */
    tenant?(req: FastifyRequest): string | null;
  };
}

const TAGS = ['monitoring'];
const ALERT_TAGS = ['alerts'];
const anyObject = { type: 'object', additionalProperties: true } as const;

const ms = (v: string | undefined, field: string): number | undefined => (v === undefined ? undefined : Date.parse(isoTime(v, field)));

const rangeQuery = {
  since: { type: 'string', description: 'ISO-8601 time, inclusive.' },
  until: { type: 'string', description: 'ISO-8601 time, inclusive.' },
} as const;

type Range = { since?: string; until?: string };

export async function monitoringAdminRoutes(app: FastifyInstance, opts: MonitoringAdminOptions): Promise<void> {
  const { registry, monitoring } = opts;
  const visible = opts.access?.visible ?? (() => true);
  const owns = opts.access?.owns ?? (() => true);
  const isTenant = opts.access?.isTenant ?? (() => false);
  const tenantOf = opts.access?.tenant ?? (() => null);
  strictValidation(app);
  // Reference datasets arrive as raw CSV / JSONL bodies.
  app.addContentTypeParser(['text/csv', 'application/x-ndjson', 'application/jsonl'], { parseAs: 'buffer', bodyLimit: 256 * 1024 * 1024 }, (_req, body, done) =>
    done(null, body),
  );

  const versionOf = async (name: string, ref: string): Promise<number> => (await registry.resolveVersion(name, ref)).version;

  // ---- prediction log ----

  app.get<{ Querystring: Range & { model?: string; version?: number; limit?: number; format?: 'json' | 'jsonl' | 'csv' } }>(
    '/api/v1/predictions',
    {
      schema: {
        tags: TAGS,
        summary: 'Logged (sampled) predictions, oldest first; as JSON, JSONL or CSV',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            model: { type: 'string', description: 'Only this model (required for tenant keys).' },
            version: { type: 'integer', minimum: 1 },
            ...rangeQuery,
            limit: { type: 'integer', minimum: 1, maximum: 100000, description: 'At most this many records (default 1000).' },
            format: { type: 'string', enum: ['json', 'jsonl', 'csv'], description: 'json (default): {predictions: [...]}; jsonl or csv: a download.' },
          },
        },
        response: { 200: { description: 'The records (see format).', ...anyObject }, ...S.errors(400, 404) },
      },
    },
    async (req, reply) => {
      const q = req.query;
      if (q.model === undefined && isTenant(req)) throw err('SY_ERR_BAD_REQUEST', 'querystring.model is required for tenant keys');
      if (q.model !== undefined && !visible(req, q.model)) throw err('SY_ERR_REGISTRY_NOT_FOUND', `no registered model "${q.model}"`);
      const since = ms(q.since, 'since');
      const until = ms(q.until, 'until');
      const records = await monitoring.log.query({
        ...(q.model === undefined ? {} : { model: q.model }),
        ...(q.version === undefined ? {} : { version: q.version }),
        ...(since === undefined ? {} : { since }),
        ...(until === undefined ? {} : { until }),
        limit: q.limit ?? 1000,
      });
      const shown = records.filter((r) => visible(req, r.model));
      // Streamed in slices: a 100,000-record export never holds the event loop (see sliced-body.ts).
      if (q.format === 'jsonl')
        return reply
          .type('application/x-ndjson')
          .header('content-disposition', 'attachment; filename="predictions.jsonl"')
          .send(slicedBody(jsonlParts(shown)));
      if (q.format === 'csv')
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', 'attachment; filename="predictions.csv"')
          .send(slicedBody(csvParts(shown)));
      return reply.type('application/json').send(slicedBody(jsonParts(shown)));
    },
  );

  // ---- reference profiles ----

  const profileParams = S.versionParams;

  app.post<{ Params: { name: string; version: string }; Querystring: { format?: 'csv' | 'jsonl' } }>(
    '/api/v1/models/:name/versions/:version/profile',
    {
      schema: {
        tags: TAGS,
        summary: 'Set the drift reference of a version: from a dataset (CSV / JSONL body) or from its logged predictions (JSON body)',
        description:
          'Body `text/csv` or `application/x-ndjson`: a reference dataset (CSV header = feature names; JSONL objects feature → value, or tensor name → array). ' +
          'Body `application/json`: `{"source": "log", "since", "until", "limit", "names": {"<tensor>": ["name", …]}}` builds it from the prediction log. ' +
          'Features default to every column of each input and output tensor (named `<tensor>[i]`), or the names given.',
        params: profileParams,
        headers: S.actorHeaders,
        querystring: { type: 'object', additionalProperties: false, properties: { format: { type: 'string', enum: ['csv', 'jsonl'] } } },
        response: { 201: anyObject, ...S.errors(400, 404, 409, 415) },
      },
    },
    async (req, reply) => {
      const { name } = req.params;
      const version = await versionOf(name, req.params.version);
      const type = String(req.headers['content-type'] ?? '')
        .split(';')[0]!
        .trim();
      let rec;
      if (type === 'application/json') {
        const b = (req.body ?? {}) as { source?: unknown; since?: unknown; until?: unknown; limit?: unknown; names?: unknown };
        for (const k of Object.keys(b))
          if (!['source', 'since', 'until', 'limit', 'names'].includes(k))
            throw err('SY_ERR_BAD_REQUEST', `invalid request: body has unknown field "${k}" (expected source, since, until, limit, names)`);
        if (b.source !== 'log')
          throw err('SY_ERR_BAD_REQUEST', 'invalid request: body.source must be "log" (or send a CSV / JSONL dataset as text/csv or application/x-ndjson)');
        const since = typeof b.since === 'string' ? ms(b.since, 'since') : undefined;
        const until = typeof b.until === 'string' ? ms(b.until, 'until') : undefined;
        const limit = typeof b.limit === 'number' && Number.isInteger(b.limit) && b.limit > 0 ? Math.min(b.limit, 100_000) : 10_000;
        rec = await monitoring.setProfile(
          name,
          version,
          { log: { ...(since === undefined ? {} : { since }), ...(until === undefined ? {} : { until }), limit } },
          names(b.names),
          actorOf(req),
        );
      } else {
        const format = req.query.format ?? (type === 'text/csv' ? 'csv' : type === 'application/x-ndjson' || type === 'application/jsonl' ? 'jsonl' : null);
        if (format === null)
          throw err('SY_ERR_UNSUPPORTED_MEDIA', `send the dataset as text/csv or application/x-ndjson (got "${type || 'none'}"), or JSON {"source":"log"}`);
        if (!Buffer.isBuffer(req.body)) throw err('SY_ERR_BAD_REQUEST', 'request body is empty');
        rec = await monitoring.setProfile(name, version, { dataset: req.body, format }, undefined, actorOf(req));
      }
      return reply.code(201).send(rec);
    },
  );

  app.get<{ Params: { name: string; version: string } }>(
    '/api/v1/models/:name/versions/:version/profile',
    {
      schema: { tags: TAGS, summary: "A version's drift reference profile", params: profileParams, response: { 200: anyObject, ...S.errors(404) } },
    },
    async (req) => monitoring.getProfile(req.params.name, await versionOf(req.params.name, req.params.version)),
  );

  app.delete<{ Params: { name: string; version: string } }>(
    '/api/v1/models/:name/versions/:version/profile',
    {
      schema: {
        tags: TAGS,
        summary: "Remove a version's reference profile (drift monitoring stops)",
        params: profileParams,
        headers: S.actorHeaders,
        response: { 204: S.noContent, ...S.errors(404) },
      },
    },
    async (req, reply) => {
      await monitoring.deleteProfile(req.params.name, await versionOf(req.params.name, req.params.version));
      return reply.code(204).send();
    },
  );

  // ---- drift ----

  app.get<{ Params: { name: string }; Querystring: { version?: string } }>(
    '/api/v1/models/:name/drift',
    {
      schema: {
        tags: TAGS,
        summary: 'Drift and data quality over the current window, per monitored version (PSI, Jensen-Shannon, KS per feature; dataset drift)',
        params: S.nameParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { version: { type: 'string', description: 'Version number or alias (default: every version with a profile).' } },
        },
        response: { 200: anyObject, ...S.errors(404) },
      },
    },
    async (req) => {
      const { name } = req.params;
      await registry.getModel(name);
      const versions = req.query.version === undefined ? monitoring.monitoredVersions(name) : [await versionOf(name, req.query.version)];
      return { model: name, reports: versions.map((version) => ({ version, report: monitoring.drift(name, version) })) };
    },
  );

  app.get<{ Params: { name: string }; Querystring: { version?: string; feature?: string } }>(
    '/api/v1/models/:name/drift/bins',
    {
      schema: {
        tags: TAGS,
        summary: 'Reference vs current-window histogram per feature (the bins PSI, JS and KS compare), per monitored version',
        description:
          'Per feature: `reference` and `current` counts per bin. Numeric features give `edges` (k-1 ascending edges make k bins; ' +
          "bin i holds edges[i-1] <= x < edges[i], the first and last bins open-ended); categorical ones `categories` (the reference's, then " +
          'those only the window has). Current counts are valid values in the drift window (NaN and missing values are in the drift report).',
        params: S.nameParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            version: { type: 'string', description: 'Version number or alias (default: every version with a profile).' },
            feature: { type: 'string', description: 'Only this feature (404 when no monitored version has it).' },
          },
        },
        response: { 200: anyObject, ...S.errors(404) },
      },
    },
    async (req) => {
      const { name } = req.params;
      await registry.getModel(name);
      const versions = req.query.version === undefined ? monitoring.monitoredVersions(name) : [await versionOf(name, req.query.version)];
      const { feature } = req.query;
      const bins = versions.map((version) => {
        const b = monitoring.driftBins(name, version);
        return { version, ...b, features: feature === undefined ? b.features : b.features.filter((f) => f.name === feature) };
      });
      if (feature !== undefined && !bins.some((b) => b.features.length > 0))
        throw err('SY_ERR_REGISTRY_NOT_FOUND', `model "${name}" has no monitored feature "${feature}"`);
      return { model: name, bins };
    },
  );

  app.get<{ Params: { name: string }; Querystring: Range & { version?: string; limit?: number } }>(
    '/api/v1/models/:name/drift/history',
    {
      schema: {
        tags: TAGS,
        summary: 'Drift reports as computed periodically (newest first)',
        params: S.nameParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { version: { type: 'string' }, ...rangeQuery, limit: { type: 'integer', minimum: 1, maximum: 1000 } },
        },
        response: { 200: anyObject, ...S.errors(400, 404) },
      },
    },
    async (req) => {
      const { name } = req.params;
      await registry.getModel(name);
      const q = req.query;
      const since = ms(q.since, 'since');
      const until = ms(q.until, 'until');
      const history = await monitoring.driftHistory({
        model: name,
        ...(q.version === undefined ? {} : { version: await versionOf(name, q.version) }),
        ...(since === undefined ? {} : { since }),
        ...(until === undefined ? {} : { until }),
        ...(q.limit === undefined ? {} : { limit: q.limit }),
      });
      return { model: name, history };
    },
  );

  // ---- alerts ----

  // Alert rules are the tenant's own: ids in its namespace ("<tenant>.<rule>"); a foreign id is answered exactly as a missing one.
  const ruleVisible = (req: FastifyRequest, id: string): boolean => inNamespace(tenantOf(req), id);
  const missingRule = (id: string): Error => err('SY_ERR_REGISTRY_NOT_FOUND', `alert rule "${id}" not found`);
  const ruleParams = { type: 'object', required: ['rule'], properties: { rule: { type: 'string', description: 'Rule id (a tenant\'s: "<tenant>.<name>").' } } };

  app.get(
    '/api/v1/alerts/rules',
    {
      schema: { tags: ALERT_TAGS, summary: 'Alerting rules (a tenant key: its own)', response: { 200: anyObject } },
    },
    async (req) => ({ rules: (await monitoring.alerts.listRules()).filter((r) => ruleVisible(req, r.id)).map(redactRule) }),
  );

  app.get<{ Params: { rule: string } }>(
    '/api/v1/alerts/rules/:rule',
    {
      schema: { tags: ALERT_TAGS, summary: 'An alerting rule', params: ruleParams, response: { 200: anyObject, ...S.errors(404) } },
    },
    async (req) => {
      if (!ruleVisible(req, req.params.rule)) throw missingRule(req.params.rule);
      return redactRule(await monitoring.alerts.getRule(req.params.rule));
    },
  );

  app.put<{ Params: { rule: string }; Body: Record<string, unknown> }>(
    '/api/v1/alerts/rules/:rule',
    {
      schema: {
        tags: ALERT_TAGS,
        summary:
          'Create or replace an alerting rule (drift, feature_drift, quality, latency_p99, error_rate; webhook with HMAC signature); a tenant key names it "<tenant>.<rule>"',
        params: ruleParams,
        headers: S.actorHeaders,
        body: anyObject,
        response: { 200: anyObject, ...S.errors(400, 403, 404) },
      },
    },
    async (req) => {
      checkCreatableId(tenantOf(req), req.params.rule, 'alert rule');
      const body: Record<string, unknown> = { ...req.body, id: req.params.rule };
      const model = typeof body['model'] === 'string' ? body['model'] : null;
      if (model !== null) {
        if (!visible(req, model)) throw err('SY_ERR_REGISTRY_NOT_FOUND', `no registered model "${model}"`);
        if (!owns(req, model)) throw err('SY_ERR_FORBIDDEN', `only the owner of model "${model}" may set alerts on it`);
      }
      return redactRule(await monitoring.alerts.putRule(body, actorOf(req)));
    },
  );

  app.delete<{ Params: { rule: string } }>(
    '/api/v1/alerts/rules/:rule',
    {
      schema: {
        tags: ALERT_TAGS,
        summary: 'Delete an alerting rule',
        params: ruleParams,
        headers: S.actorHeaders,
        response: { 204: S.noContent, ...S.errors(404) },
      },
    },
    async (req, reply) => {
      if (!ruleVisible(req, req.params.rule)) throw missingRule(req.params.rule);
      await monitoring.alerts.deleteRule(req.params.rule);
      return reply.code(204).send();
    },
  );

  app.get(
    '/api/v1/alerts',
    {
      schema: { tags: ALERT_TAGS, summary: 'Current state of every alerting rule (inactive, pending, firing)', response: { 200: anyObject } },
    },
    async (req) => {
      const rules = new Map((await monitoring.alerts.listRules()).map((r) => [r.id, r]));
      return { alerts: monitoring.alerts.states().filter((s) => rules.has(s.rule) && ruleVisible(req, s.rule)) };
    },
  );

  app.get<{ Querystring: { rule?: string; limit?: number; before?: number } }>(
    '/api/v1/alerts/events',
    {
      schema: {
        tags: ALERT_TAGS,
        summary: 'Firing and resolved transitions with webhook delivery status, newest first',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            rule: { type: 'string' },
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
            before: { type: 'integer', description: 'Only events with a smaller id (paging).' },
          },
        },
        response: { 200: anyObject },
      },
    },
    async (req) => {
      const q = req.query;
      const events = await monitoring.alerts.events({
        ...(q.rule === undefined ? {} : { rule: q.rule }),
        ...(q.limit === undefined ? {} : { limit: q.limit }),
        ...(q.before === undefined ? {} : { before: q.before }),
      });
      return { events: events.filter((e) => ruleVisible(req, e.rule)) };
    },
  );
}

/** `names`: tensor → column names, validated. */
function names(v: unknown): Record<string, string[]> | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw err('SY_ERR_BAD_REQUEST', 'invalid request: body.names must be an object tensor → array of column names');
  const out: Record<string, string[]> = {};
  for (const [k, arr] of Object.entries(v)) {
    if (!Array.isArray(arr) || !arr.every((x) => typeof x === 'string' && x.length > 0))
      throw err('SY_ERR_BAD_REQUEST', `invalid request: body.names.${k} must be an array of non-empty strings`);
    out[k] = arr as string[];
  }
  return out;
}
