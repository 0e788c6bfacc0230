/**
 * @module
 * The feature store's data plane over HTTP (`/api/v1/features`): push rows (feature views: offline history +
 * online store, idempotent; windowed views: events deduplicated by id), read online values with their
 * statuses, and export a point-in-time-correct training set (JSON, JSONL or CSV in and out).
 */
import { stringify } from 'csv-stringify/sync';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { err } from '../../errors.js';
import type { FeatureStore } from '../../features/index.js';
import { readDataset } from '../../monitoring/index.js';
import { strictValidation } from './routes.js';
import { slicedBody } from './sliced-body.js';
import * as S from './schemas.js';

export interface FeatureDataOptions {
  readonly features: FeatureStore;
  readonly access?: { platform(req: FastifyRequest): boolean };
}

const TAGS = ['features'];
const anyObject = { type: 'object', additionalProperties: true } as const;
const rowList = (description: string) => ({ type: 'array', maxItems: 10_000, items: anyObject, description }) as const;

type Raw = Record<string, unknown>;

/** Columns in first-seen order over all rows. */
function columnsOf(rows: readonly Raw[]): string[] {
  const cols: string[] = [];
  const seen = new Set<string>();
  for (const r of rows)
    for (const k of Object.keys(r))
      if (!seen.has(k)) {
        seen.add(k);
        cols.push(k);
      }
  return cols;
}

/** A Parquet file: boolean columns BOOLEAN, numeric ones DOUBLE, the rest STRING; missing values are nulls. */
function toParquet(rows: readonly Raw[]): Buffer {
  const columnData = columnsOf(rows).map((name) => {
    const values = rows.map((r) => r[name] ?? null);
    const present = values.filter((v) => v !== null);
    if (present.length > 0 && present.every((v) => typeof v === 'boolean')) return { name, data: values, type: 'BOOLEAN' as const };
    if (present.length > 0 && present.every((v) => typeof v === 'number')) return { name, data: values, type: 'DOUBLE' as const };
    return { name, data: values.map((v) => (v === null ? null : typeof v === 'string' ? v : JSON.stringify(v))), type: 'STRING' as const };
  });
  return Buffer.from(parquetWriteBuffer({ columnData }));
}

/** CSV with CRLF line ends; null and absent values as empty cells, objects and arrays as JSON; in parts of up to 256 lines. */
function* csvParts(rows: readonly Raw[]): Generator<string> {
  const cols = columnsOf(rows);
  const cell = (v: unknown): string => (v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));
  const options = { record_delimiter: 'windows', quoted_match: /[\r\n]/ } as const;
  yield stringify([cols], options);
  for (let i = 0; i < rows.length; i += 256)
    yield stringify(
      rows.slice(i, i + 256).map((r) => cols.map((c) => cell(r[c]))),
      options,
    );
}

/** One JSON object per line. */
function* jsonlParts(rows: readonly Raw[]): Generator<string> {
  for (const r of rows) yield `${JSON.stringify(r)}\n`;
}

/** `{"rows": [...]}` (what JSON.stringify writes), one row at a time. */
function* jsonParts(rows: readonly Raw[]): Generator<string> {
  yield '{"rows":[';
  for (let i = 0; i < rows.length; i++) yield (i === 0 ? '' : ',') + JSON.stringify(rows[i]);
  yield ']}';
}

export async function featureDataRoutes(app: FastifyInstance, opts: FeatureDataOptions): Promise<void> {
  const { features } = opts;
  const platform = opts.access?.platform ?? (() => true);
  strictValidation(app);
  // Entity dataframes may arrive as CSV or JSONL.
  app.addContentTypeParser(
    ['text/csv', 'application/x-ndjson', 'application/jsonl', 'application/vnd.apache.parquet'],
    { parseAs: 'buffer', bodyLimit: 256 * 1024 * 1024 },
    (_req, body, done) => done(null, body),
  );
  const onlyPlatform = (req: FastifyRequest): void => {
    if (!platform(req))
      throw err(
        'SY_ERR_FORBIDDEN',
        'the feature store is reached with a platform key (tenant keys use features through inference on models bound to a feature service)',
      );
  };

  app.post<{ Body: { view: string; rows: Raw[]; pushId?: string } }>(
    '/api/v1/features/push',
    {
      schema: {
        tags: TAGS,
        summary: 'Push rows into a feature view (offline history + online store, idempotent) or events into a windowed view',
        description:
          'Feature view rows: join keys, `event_time` (ISO-8601 or epoch ms) and feature values; a row older than the online value never overwrites it, and a retried push inserts nothing twice. ' +
          'Windowed view rows: join keys, `event_id` (redeliveries count once), `event_time` and the aggregated fields.',
        body: {
          type: 'object',
          required: ['view', 'rows'],
          additionalProperties: false,
          properties: {
            view: { type: 'string' },
            rows: rowList('Rows (at most 10000).'),
            pushId: {
              type: 'string',
              description:
                'Client label for the push, echoed in the response. Retries are safe without it: rows are idempotent by (view, entity, event time), events by event_id.',
            },
          },
        },
        response: { 200: anyObject, ...S.errors(400, 403, 404) },
      },
    },
    async (req) => {
      onlyPlatform(req);
      const r = await features.push(req.body.view, req.body.rows);
      return req.body.pushId === undefined ? r : { ...r, pushId: req.body.pushId };
    },
  );

  app.post<{ Body: { entities: Raw[]; features?: string[]; service?: string } }>(
    '/api/v1/features/online',
    {
      schema: {
        tags: TAGS,
        summary: 'Online feature values for entities, with status (PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE) and event time',
        body: {
          type: 'object',
          required: ['entities'],
          additionalProperties: false,
          properties: {
            entities: { type: 'array', minItems: 1, maxItems: 1000, items: anyObject, description: 'Join key values per entity, e.g. [{"user_id": 7}].' },
            features: { type: 'array', items: { type: 'string' }, description: '"view:feature" references.' },
            service: { type: 'string', description: 'A feature service (instead of features).' },
          },
        },
        response: { 200: anyObject, ...S.errors(400, 403, 404) },
      },
    },
    async (req) => {
      onlyPlatform(req);
      const refs = features.refsOf(req.body.features, req.body.service);
      return { results: await features.read(req.body.entities, refs) };
    },
  );

  app.post<{
    Body: unknown;
    Querystring: { features?: string; service?: string; format?: 'json' | 'jsonl' | 'csv' | 'parquet'; include_late_writes?: boolean };
  }>(
    '/api/v1/features/export',
    {
      schema: {
        tags: TAGS,
        summary: 'Point-in-time-correct training set for an entity dataframe (join keys + timestamp per row)',
        description:
          'Body: JSON `{entities: [{<join keys>, timestamp}], features | service, includeLateWrites}`, or the entity dataframe as CSV / JSONL / Parquet (`application/vnd.apache.parquet`) with `features` / `service` in the query; output JSON, JSONL, CSV or Parquet. ' +
          "Each row gets, per feature, the latest value with event time ≤ its timestamp, within the view's max age, and known (written) by that time — unless include_late_writes.",
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            features: { type: 'string', description: 'Comma-separated "view:feature" references (CSV / JSONL bodies).' },
            service: { type: 'string' },
            format: { type: 'string', enum: ['json', 'jsonl', 'csv', 'parquet'], description: 'Output (default json).' },
            include_late_writes: { type: 'boolean', description: "Let values written after a row's timestamp (backfills) count." },
          },
        },
        response: { 200: anyObject, ...S.errors(400, 403, 404, 415) },
      },
    },
    async (req, reply: FastifyReply) => {
      onlyPlatform(req);
      const q = req.query;
      let entities: Raw[];
      let refs: string[];
      let late = q.include_late_writes ?? false;
      if (Buffer.isBuffer(req.body)) {
        const type = String(req.headers['content-type'] ?? '')
          .split(';')[0]!
          .trim();
        entities = await readDataset(req.body, type === 'text/csv' ? 'csv' : type === 'application/vnd.apache.parquet' ? 'parquet' : 'jsonl');
        refs = features.refsOf(
          q.features
            ?.split(',')
            .map((s) => s.trim())
            .filter((s) => s !== ''),
          q.service,
        );
      } else {
        const b = (req.body ?? {}) as { entities?: unknown; features?: unknown; service?: unknown; includeLateWrites?: unknown };
        for (const k of Object.keys(b))
          if (!['entities', 'features', 'service', 'includeLateWrites'].includes(k))
            throw err('SY_ERR_BAD_REQUEST', `invalid request: body has unknown field "${k}"`);
        if (!Array.isArray(b.entities)) throw err('SY_ERR_BAD_REQUEST', 'invalid request: body.entities must be an array of {<join keys>, timestamp}');
        entities = b.entities as Raw[];
        refs = features.refsOf(Array.isArray(b.features) ? (b.features as string[]) : undefined, typeof b.service === 'string' ? b.service : undefined);
        if (b.includeLateWrites === true) late = true;
      }
      if (entities.length > 1_000_000) throw err('SY_ERR_BAD_REQUEST', 'at most 1000000 entity rows per export');
      const rows = await features.export(entities, refs, { includeLateWrites: late });
      // Text formats stream in slices and never hold the event loop (sliced-body.ts); Parquet is written whole.
      if (q.format === 'csv') return reply.type('text/csv; charset=utf-8').send(slicedBody(csvParts(rows)));
      if (q.format === 'parquet')
        return reply.type('application/vnd.apache.parquet').header('content-disposition', 'attachment; filename="training.parquet"').send(toParquet(rows));
      if (q.format === 'jsonl') return reply.type('application/x-ndjson').send(slicedBody(jsonlParts(rows)));
      return reply.type('application/json').send(slicedBody(jsonParts(rows)));
    },
  );
}
