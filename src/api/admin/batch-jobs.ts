/**
 * @module
 * V2 batch jobs under `/api/v1/batch`: upload an input file, create a job (a model, a JSONL / CSV / Parquet input
 * from an upload or a server path, a column → input mapping, key and pass-through fields, output format, a row
 * failure budget, a webhook), list, read, cancel, retry its failed rows, download its output and error files,
 * and follow its progress as server-sent events. Jobs and files belong to the caller's tenant; another tenant's
 * are 404. The jobs run on the same executor as /v1/batches (see src/batch).
 */
import { Readable } from 'node:stream';
import multipart from '@fastify/multipart';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { INPUT_FORMATS, newFileId, OUTPUT_FORMATS, TERMINAL, v2JobView, type BatchService, type V2Job, type V2SpecRequest } from '../../batch/index.js';
import { err } from '../../errors.js';

export interface BatchJobRouteOptions {
  readonly batch: BatchService;
  /** The caller's tenant ('' = the platform / open mode). */
  readonly tenantOf: (req: FastifyRequest) => string;
  readonly keyIdOf: (req: FastifyRequest) => string | null;
  /** Whether the caller may name a server path as input (the platform, not a tenant). */
  /** Whether the caller may name a server path or a webhook URL (platform keys and open mode; tenant keys may not). */
  readonly mayReadPaths: (req: FastifyRequest) => boolean;
  /** Largest upload, in bytes. */
  readonly maxFileBytes: number;
}

const TAGS = ['batch'];
const nullable = (type: string): Record<string, unknown> => ({ type, nullable: true });
const ERROR = { type: 'object', properties: { error: { type: 'string' }, code: { type: 'string' } } } as const;
const ERRORS = { 400: ERROR, 401: ERROR, 403: ERROR, 404: ERROR, 409: ERROR, 413: ERROR };
const STATUS = ['validating', 'failed', 'in_progress', 'finalizing', 'completed', 'cancelling', 'cancelled'];

const FILE = {
  type: 'object',
  required: ['id', 'filename', 'bytes', 'createdAt'],
  properties: { id: { type: 'string' }, filename: { type: 'string' }, bytes: { type: 'integer' }, createdAt: { type: 'string', format: 'date-time' } },
} as const;

const MAPPING = { type: 'object', additionalProperties: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, minItems: 1 }] } } as const;

const JOB = {
  type: 'object',
  required: ['id', 'status', 'model', 'counts', 'progress'],
  properties: {
    id: { type: 'string' },
    status: { type: 'string', enum: STATUS },
    model: { type: 'string' },
    version: nullable('string'),
    input: { type: 'object', properties: { fileId: { type: 'string' }, path: { type: 'string' } } },
    format: { type: 'string', enum: [...INPUT_FORMATS] },
    mapping: MAPPING,
    keyField: nullable('string'),
    includedFields: { type: 'array', items: { type: 'string' } },
    outputs: { type: 'array', nullable: true, items: { type: 'string' } },
    outputFormat: { type: 'string', enum: [...OUTPUT_FORMATS] },
    maxFailedRows: nullable('integer'),
    chunkRows: { type: 'integer' },
    webhook: nullable('string'),
    retryOf: nullable('string'),
    counts: {
      type: 'object',
      properties: { total: { type: 'integer' }, succeeded: { type: 'integer' }, failed: { type: 'integer' }, done: { type: 'integer' } },
    },
    progress: { type: 'object', properties: { fraction: { type: 'number' }, rowsPerSecond: nullable('number'), etaSeconds: nullable('number') } },
    outputFileId: nullable('string'),
    errorFileId: nullable('string'),
    errors: {
      type: 'array',
      nullable: true,
      items: { type: 'object', properties: { code: { type: 'string' }, line: nullable('integer'), message: { type: 'string' }, param: nullable('string') } },
    },
    createdAt: { type: 'string', format: 'date-time' },
    startedAt: { type: 'string', format: 'date-time', nullable: true },
    endedAt: { type: 'string', format: 'date-time', nullable: true },
  },
} as const;

const CREATE = {
  type: 'object',
  required: ['model', 'input'],
  additionalProperties: false,
  properties: {
    model: { type: 'string', minLength: 1 },
    version: nullable('string'),
    input: { type: 'object', additionalProperties: false, properties: { fileId: { type: 'string', minLength: 1 }, path: { type: 'string', minLength: 1 } } },
    format: { type: 'string', enum: [...INPUT_FORMATS] },
    mapping: { ...MAPPING, nullable: true },
    keyField: nullable('string'),
    includedFields: { type: 'array', items: { type: 'string', minLength: 1 } },
    outputs: { type: 'array', nullable: true, items: { type: 'string' } },
    outputFormat: { type: 'string', enum: [...OUTPUT_FORMATS] },
    maxFailedRows: { type: 'integer', minimum: 0, nullable: true },
    chunkRows: { type: 'integer', minimum: 1, maximum: 100_000 },
    webhook: { type: 'object', nullable: true, required: ['url'], additionalProperties: false, properties: { url: { type: 'string' } } },
  },
} as const;

const ID = { type: 'object', required: ['id'], properties: { id: { type: 'string' } } } as const;

export const batchJobRoutes: FastifyPluginAsync<BatchJobRouteOptions> = async (app, opts) => {
  const { batch } = opts;
  await app.register(multipart, { throwFileSizeLimit: true, limits: { fileSize: opts.maxFileBytes + 1, files: 1, fields: 2, parts: 4 } });
  const view = (j: V2Job): Record<string, unknown> => v2JobView(j, batch.now());
  // Open progress streams end when the server starts closing (a stream would otherwise hold shutdown until its job ended).
  const streams = new Set<() => void>();
  app.addHook('preClose', (done) => {
    for (const stop of streams) stop();
    done();
  });
  const jobOr404 = async (req: FastifyRequest): Promise<V2Job> => {
    const id = (req.params as { id: string }).id;
    const j = (await batch.jobs.get(opts.tenantOf(req), id, 'v2')) as V2Job | null;
    if (j === null) throw err('SY_ERR_BATCH_NOT_FOUND', `No such batch job: ${id}`);
    return j;
  };
  const tooLarge = () => err('SY_ERR_BODY_TOO_LARGE', `the file exceeds the largest accepted upload (${opts.maxFileBytes} bytes)`);

  app.post(
    '/api/v1/batch/files',
    {
      schema: {
        tags: TAGS,
        summary: 'Upload a batch input file (multipart/form-data, field `file`: JSONL, CSV or Parquet)',
        consumes: ['multipart/form-data'],
        response: { 200: FILE, ...ERRORS },
      },
    },
    async (req) => {
      if (!req.isMultipart()) throw err('SY_ERR_UNSUPPORTED_MEDIA', 'upload the file as multipart/form-data with the field "file"');
      let file: { name: string; bytes: Buffer } | null = null;
      try {
        for await (const part of req.parts()) {
          if (part.type !== 'file' || part.fieldname !== 'file')
            throw err('SY_ERR_BAD_REQUEST', `unknown field "${part.fieldname}" (expected the file as "file")`);
          const bytes = await part.toBuffer();
          if (bytes.length > opts.maxFileBytes) throw tooLarge();
          file = { name: part.filename || 'input', bytes };
        }
      } catch (e) {
        if ((e as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw tooLarge();
        throw e;
      }
      if (file === null) throw err('SY_ERR_BAD_REQUEST', 'no "file" part in the upload');
      const f = await batch.files.put(
        { id: newFileId(), tenant: opts.tenantOf(req), purpose: 'batch_input', filename: file.name, createdAt: batch.now(), expiresAt: null },
        [file.bytes],
      );
      return { id: f.id, filename: f.filename, bytes: f.bytes, createdAt: new Date(f.createdAt).toISOString() };
    },
  );

  app.post(
    '/api/v1/batch/jobs',
    {
      schema: { tags: TAGS, summary: 'Create a batch job: score every row of a file with a model', body: CREATE, response: { 201: JOB, ...ERRORS } },
    },
    async (req, reply) => {
      const body = req.body as V2SpecRequest;
      if (body.input.path !== undefined && !opts.mayReadPaths(req))
        throw err('SY_ERR_FORBIDDEN', 'input.path: only a platform key may name a server path; upload the file instead');
      // A webhook makes the server send a request wherever the URL points (internal addresses included): like a
      // server path, only a platform key may name one.
      if (body.webhook && !opts.mayReadPaths(req))
        throw err('SY_ERR_FORBIDDEN', "webhook: only a platform key may set a completion webhook; follow the job's /events stream instead");
      const job = await batch.createV2(opts.tenantOf(req), body, opts.keyIdOf(req));
      return reply.code(201).send(view(job));
    },
  );

  app.get(
    '/api/v1/batch/jobs',
    {
      schema: {
        tags: TAGS,
        summary: "The tenant's batch jobs, newest first",
        querystring: { type: 'object', properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 50 }, after: { type: 'string' } } },
        response: { 200: { type: 'object', properties: { jobs: { type: 'array', items: JOB }, hasMore: { type: 'boolean' } } }, ...ERRORS },
      },
    },
    async (req) => {
      const q = req.query as { limit: number; after?: string };
      const jobs = (await batch.jobs.list(opts.tenantOf(req), 'v2', q.limit + 1, q.after ?? null)) as V2Job[];
      return { jobs: jobs.slice(0, q.limit).map(view), hasMore: jobs.length > q.limit };
    },
  );

  app.get(
    '/api/v1/batch/jobs/:id',
    { schema: { tags: TAGS, summary: 'A batch job: status, counts, rows/s and ETA, files', params: ID, response: { 200: JOB, ...ERRORS } } },
    async (req) => view(await jobOr404(req)),
  );

  app.post(
    '/api/v1/batch/jobs/:id/cancel',
    {
      schema: {
        tags: TAGS,
        summary: 'Cancel a batch job (cancelling, then cancelled; committed rows stay in its output)',
        params: ID,
        response: { 200: JOB, ...ERRORS },
      },
    },
    async (req) => view((await batch.cancel(opts.tenantOf(req), (req.params as { id: string }).id, 'v2')) as V2Job),
  );

  app.post(
    '/api/v1/batch/jobs/:id/retry-failed',
    {
      schema: { tags: TAGS, summary: 'A new job over the rows of an ended job that failed when they ran', params: ID, response: { 201: JOB, ...ERRORS } },
    },
    async (req, reply) => reply.code(201).send(view(await batch.retryFailed(opts.tenantOf(req), (req.params as { id: string }).id, opts.keyIdOf(req)))),
  );

  const download = (which: 'output' | 'errors') => async (req: FastifyRequest, reply: FastifyReply) => {
    const j = await jobOr404(req);
    const id = which === 'output' ? j.outputFileId : j.errorFileId;
    if (id === null)
      throw err(
        'SY_ERR_FILE_NOT_FOUND',
        `job ${j.id} has no ${which === 'output' ? 'output' : 'error'} file${TERMINAL.has(j.status) ? '' : ' yet (it is written when the job ends)'}`,
      );
    const f = await batch.files.get(j.tenant, id);
    if (f === null) throw err('SY_ERR_FILE_NOT_FOUND', `file ${id} no longer exists`);
    const type = f.filename.endsWith('.parquet') ? 'application/vnd.apache.parquet' : 'application/x-ndjson';
    reply.header('content-type', type).header('content-length', String(f.bytes)).header('content-disposition', `attachment; filename="${f.filename}"`);
    return reply.send(Readable.from(batch.files.content(f.id)));
  };
  app.get(
    '/api/v1/batch/jobs/:id/output',
    {
      schema: {
        tags: TAGS,
        summary: "The job's output file (JSONL or Parquet: one row per scored input row, in input order)",
        params: ID,
        produces: ['application/x-ndjson', 'application/vnd.apache.parquet'],
      },
    },
    download('output'),
  );
  app.get(
    '/api/v1/batch/jobs/:id/errors',
    {
      schema: { tags: TAGS, summary: "The job's error file (JSONL: each failed row with its reason)", params: ID, produces: ['application/x-ndjson'] },
    },
    download('errors'),
  );

  app.get(
    '/api/v1/batch/jobs/:id/events',
    {
      schema: {
        tags: TAGS,
        summary: 'Progress as server-sent events: `progress` (the job) whenever it changes, `end` (the job) once it ended, then the stream closes',
        params: ID,
        querystring: { type: 'object', properties: { intervalMs: { type: 'integer', minimum: 50, maximum: 60_000, default: 1000 } } },
        produces: ['text/event-stream'],
      },
    },
    async (req, reply) => {
      let job = await jobOr404(req);
      const { intervalMs } = req.query as { intervalMs: number };
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-request-id': req.id });
      let closed = false;
      let wake: (() => void) | null = null;
      const stop = (): void => {
        closed = true;
        wake?.();
      };
      streams.add(stop);
      req.raw.on('close', stop);
      let last = '';
      try {
        for (;;) {
          const data = JSON.stringify(view(job));
          const ended = TERMINAL.has(job.status);
          if (data !== last || ended) res.write(`event: ${ended ? 'end' : 'progress'}\ndata: ${data}\n\n`);
          last = data;
          if (ended || closed) break;
          await new Promise<void>((r) => {
            const t = setTimeout(r, intervalMs);
            wake = () => {
              clearTimeout(t);
              r();
            };
          });
          if (closed) break;
          const next = await batch.jobs.get(job.tenant, job.id, 'v2').catch(() => null);
          if (next === null) break;
          job = next as V2Job;
        }
      } finally {
        streams.delete(stop);
        res.end();
      }
    },
  );
};
