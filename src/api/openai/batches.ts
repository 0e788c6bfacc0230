/**
 * @module
 * OpenAI's Files and Batch APIs under /v1, in OpenAI's wire format (the official SDKs work unmodified):
 * `POST /v1/files` (multipart, `purpose=batch`), `GET /v1/files[/{id}[/content]]`, `DELETE /v1/files/{id}`,
 * `POST /v1/batches`, `GET /v1/batches[/{id}]`, `POST /v1/batches/{id}/cancel`. Files and batches belong to the
 * caller's tenant; another tenant's are "not found". Times on the wire are Unix seconds.
 */
import { Readable } from 'node:stream';
import multipart from '@fastify/multipart';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { BATCH_ENDPOINTS, newFileId, type BatchEndpoint, type BatchService, type FileRecord, type OpenAiJob } from '../../batch/index.js';
import { err } from '../../errors.js';
import { LlmError } from '../../runtimes/index.js';
import { installOpenAiErrors } from './routes.js';

export interface BatchRouteOptions {
  readonly batch: BatchService;
  /** '' for the platform / open mode. */
  readonly tenantOf: (req: FastifyRequest) => string;
  readonly keyIdOf: (req: FastifyRequest) => string | null;
  /** Largest file accepted, in bytes. */
  readonly maxFileBytes: number;
}

const TAGS = ['openai-batch'];
const sec = (ms: number | undefined | null): number | null => (ms === undefined || ms === null ? null : Math.floor(ms / 1000));
const nullable = (type: string): Record<string, unknown> => ({ type, nullable: true });

const FILE = {
  type: 'object',
  required: ['id', 'object', 'bytes', 'created_at', 'filename', 'purpose'],
  properties: {
    id: { type: 'string' },
    object: { type: 'string', enum: ['file'] },
    bytes: { type: 'integer' },
    created_at: { type: 'integer' },
    expires_at: nullable('integer'),
    filename: { type: 'string' },
    purpose: { type: 'string' },
    status: { type: 'string' },
    status_details: nullable('string'),
  },
} as const;

const LINE_ERROR = {
  type: 'object',
  properties: { code: { type: 'string' }, line: nullable('integer'), message: { type: 'string' }, param: nullable('string') },
} as const;

const BATCH = {
  type: 'object',
  required: ['id', 'object', 'endpoint', 'input_file_id', 'completion_window', 'status', 'created_at', 'request_counts'],
  properties: {
    id: { type: 'string' },
    object: { type: 'string', enum: ['batch'] },
    endpoint: { type: 'string' },
    errors: { type: 'object', nullable: true, properties: { object: { type: 'string' }, data: { type: 'array', items: LINE_ERROR } } },
    input_file_id: { type: 'string' },
    completion_window: { type: 'string' },
    status: { type: 'string', enum: ['validating', 'failed', 'in_progress', 'finalizing', 'completed', 'expired', 'cancelling', 'cancelled'] },
    output_file_id: nullable('string'),
    error_file_id: nullable('string'),
    created_at: { type: 'integer' },
    in_progress_at: nullable('integer'),
    expires_at: nullable('integer'),
    finalizing_at: nullable('integer'),
    completed_at: nullable('integer'),
    failed_at: nullable('integer'),
    expired_at: nullable('integer'),
    cancelling_at: nullable('integer'),
    cancelled_at: nullable('integer'),
    request_counts: { type: 'object', properties: { total: { type: 'integer' }, completed: { type: 'integer' }, failed: { type: 'integer' } } },
    usage: {
      type: 'object',
      nullable: true,
      properties: {
        input_tokens: { type: 'integer' },
        output_tokens: { type: 'integer' },
        total_tokens: { type: 'integer' },
        input_tokens_details: { type: 'object', properties: { cached_tokens: { type: 'integer' } } },
        output_tokens_details: { type: 'object', properties: { reasoning_tokens: { type: 'integer' } } },
      },
    },
    metadata: { type: 'object', nullable: true, additionalProperties: { type: 'string' } },
  },
} as const;

const ERROR = {
  type: 'object',
  properties: {
    error: { type: 'object', properties: { message: { type: 'string' }, type: { type: 'string' }, param: nullable('string'), code: nullable('string') } },
  },
} as const;
const ERRORS = { 400: ERROR, 401: ERROR, 404: ERROR, 409: ERROR, 413: ERROR };
const list = (item: object) => ({
  type: 'object',
  required: ['object', 'data', 'has_more'],
  properties: {
    object: { type: 'string', enum: ['list'] },
    data: { type: 'array', items: item },
    first_id: nullable('string'),
    last_id: nullable('string'),
    has_more: { type: 'boolean' },
  },
});
const PAGE = {
  type: 'object',
  properties: {
    limit: { type: 'integer', minimum: 1, maximum: 10_000, default: 20 },
    after: { type: 'string' },
  },
} as const;

export function fileObject(f: FileRecord): Record<string, unknown> {
  return {
    id: f.id,
    object: 'file',
    bytes: f.bytes,
    created_at: sec(f.createdAt),
    expires_at: sec(f.expiresAt),
    filename: f.filename,
    purpose: f.purpose,
    status: 'processed',
    status_details: null,
  };
}

export function batchObject(j: OpenAiJob): Record<string, unknown> {
  const t = j.times;
  const u = j.usage;
  return {
    id: j.id,
    object: 'batch',
    endpoint: j.spec.endpoint,
    errors: j.errors === null ? null : { object: 'list', data: j.errors },
    input_file_id: j.inputFileId,
    completion_window: j.spec.completion_window,
    status: j.status,
    output_file_id: j.outputFileId,
    error_file_id: j.errorFileId,
    created_at: sec(j.createdAt),
    in_progress_at: sec(t.in_progress_at),
    expires_at: sec(j.expiresAt),
    finalizing_at: sec(t.finalizing_at),
    completed_at: sec(t.completed_at),
    failed_at: sec(t.failed_at),
    expired_at: sec(t.expired_at),
    cancelling_at: sec(t.cancelling_at),
    cancelled_at: sec(t.cancelled_at),
    request_counts: { total: j.total, completed: j.succeeded, failed: j.failed },
    usage: u === null ? null : { ...u, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 0 } },
    metadata: j.spec.metadata,
  };
}

function page<T extends { id: string }>(items: T[], limit: number, render: (x: T) => Record<string, unknown>): Record<string, unknown> {
  const more = items.length > limit;
  const data = items.slice(0, limit);
  return { object: 'list', data: data.map(render), first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: more };
}

function badValue(param: string, message: string): LlmError {
  return new LlmError('SY_ERR_BAD_REQUEST', `Invalid value for '${param}': ${message}`, { param, openaiCode: 'invalid_value' });
}

/** Metadata: at most 16 string pairs, keys up to 64 and values up to 512 characters (as OpenAI's). */
function checkMetadata(v: unknown): Record<string, string> | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw badValue('metadata', 'expected an object of strings.');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > 16) throw badValue('metadata', 'at most 16 keys.');
  for (const [k, x] of entries) {
    if (typeof x !== 'string') throw badValue(`metadata.${k}`, 'expected a string.');
    if (k.length > 64 || x.length > 512) throw badValue(`metadata.${k}`, 'keys are at most 64 and values at most 512 characters.');
  }
  return Object.fromEntries(entries) as Record<string, string>;
}

export const batchRoutes: FastifyPluginAsync<BatchRouteOptions> = async (app, opts) => {
  const { batch } = opts;
  installOpenAiErrors(app);
  await app.register(multipart, { throwFileSizeLimit: true, limits: { fileSize: opts.maxFileBytes + 1, files: 1, fields: 4, fieldSize: 1024, parts: 8 } });
  const tooLarge = (): LlmError => new LlmError('SY_ERR_BODY_TOO_LARGE', `The file exceeds the largest accepted file (${opts.maxFileBytes} bytes).`);
  const fileOr404 = async (req: FastifyRequest, id: string): Promise<FileRecord> => {
    const f = await batch.files.get(opts.tenantOf(req), id);
    if (f === null) throw new LlmError('SY_ERR_FILE_NOT_FOUND', `No such File object: ${id}`, { param: 'id' });
    return f;
  };
  const jobOr404 = async (req: FastifyRequest, id: string): Promise<OpenAiJob> => {
    const j = (await batch.jobs.get(opts.tenantOf(req), id, 'openai')) as OpenAiJob | null;
    if (j === null) throw new LlmError('SY_ERR_BATCH_NOT_FOUND', `No such Batch object: ${id}`, { param: 'batch_id' });
    return j;
  };

  app.post(
    '/files',
    {
      schema: {
        tags: TAGS,
        summary: 'Upload a file (multipart/form-data: `purpose=batch` and `file`, a JSONL batch input)',
        consumes: ['multipart/form-data'],
        response: { 200: FILE, ...ERRORS },
      },
    },
    async (req) => {
      if (!req.isMultipart()) throw err('SY_ERR_UNSUPPORTED_MEDIA', 'upload the file as multipart/form-data with the fields "purpose" and "file"');
      let purpose: string | null = null;
      let file: { name: string; bytes: Buffer } | null = null;
      try {
        for await (const part of req.parts()) {
          if (part.type === 'field') {
            if (part.fieldname !== 'purpose') throw badValue(part.fieldname, 'unknown field (expected "purpose" and "file").');
            purpose = String(part.value);
          } else {
            if (part.fieldname !== 'file') throw badValue(part.fieldname, 'unknown file field (expected "file").');
            const bytes = await part.toBuffer();
            if (bytes.length > opts.maxFileBytes) throw tooLarge();
            file = { name: part.filename || 'file', bytes };
          }
        }
      } catch (e) {
        if ((e as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw tooLarge();
        throw e;
      }
      if (purpose === null)
        throw new LlmError('SY_ERR_BAD_REQUEST', "Missing required parameter: 'purpose'.", { param: 'purpose', openaiCode: 'missing_required_parameter' });
      if (purpose !== 'batch') throw badValue('purpose', "only 'batch' is supported.");
      if (file === null)
        throw new LlmError('SY_ERR_BAD_REQUEST', "Missing required parameter: 'file'.", { param: 'file', openaiCode: 'missing_required_parameter' });
      const f = await batch.files.put({ id: newFileId(), tenant: opts.tenantOf(req), purpose, filename: file.name, createdAt: batch.now(), expiresAt: null }, [
        file.bytes,
      ]);
      return fileObject(f);
    },
  );

  app.get(
    '/files',
    {
      schema: {
        tags: TAGS,
        summary: "List the tenant's files",
        response: { 200: list(FILE), ...ERRORS },
        querystring: {
          type: 'object',
          properties: { ...PAGE.properties, purpose: { type: 'string' }, order: { type: 'string', enum: ['asc', 'desc'], default: 'desc' } },
        },
      },
    },
    async (req) => {
      const q = req.query as { limit: number; after?: string; purpose?: string; order: 'asc' | 'desc' };
      const files = await batch.files.list(opts.tenantOf(req), { limit: q.limit + 1, after: q.after ?? null, purpose: q.purpose ?? null, order: q.order });
      return page(files, q.limit, fileObject);
    },
  );

  const fileParams = { type: 'object', required: ['file_id'], properties: { file_id: { type: 'string' } } } as const;
  app.get('/files/:file_id', { schema: { tags: TAGS, summary: 'A file', params: fileParams, response: { 200: FILE, ...ERRORS } } }, async (req) =>
    fileObject(await fileOr404(req, (req.params as { file_id: string }).file_id)),
  );

  app.get(
    '/files/:file_id/content',
    {
      schema: {
        tags: TAGS,
        summary: "A file's bytes (a batch's output and error files are JSONL)",
        params: fileParams,
        produces: ['application/octet-stream'],
      },
    },
    async (req, reply) => {
      const f = await fileOr404(req, (req.params as { file_id: string }).file_id);
      reply.header('content-type', 'application/octet-stream').header('content-length', String(f.bytes));
      return reply.send(Readable.from(batch.files.content(f.id)));
    },
  );

  app.delete(
    '/files/:file_id',
    {
      schema: {
        tags: TAGS,
        summary: 'Delete a file',
        params: fileParams,
        response: { 200: { type: 'object', properties: { id: { type: 'string' }, object: { type: 'string' }, deleted: { type: 'boolean' } } }, ...ERRORS },
      },
    },
    async (req) => {
      const id = (req.params as { file_id: string }).file_id;
      if (!(await batch.files.delete(opts.tenantOf(req), id))) throw new LlmError('SY_ERR_FILE_NOT_FOUND', `No such File object: ${id}`, { param: 'id' });
      return { id, object: 'file', deleted: true };
    },
  );

  app.post(
    '/batches',
    {
      schema: {
        tags: TAGS,
        summary: 'Create a batch from an uploaded JSONL file of requests',
        body: {
          type: 'object',
          required: ['input_file_id', 'endpoint', 'completion_window'],
          properties: {
            input_file_id: { type: 'string' },
            endpoint: { type: 'string', enum: [...BATCH_ENDPOINTS] },
            completion_window: { type: 'string', enum: ['24h'] },
            metadata: { type: 'object', nullable: true, additionalProperties: { type: 'string' } },
          },
        },
        response: { 200: BATCH, ...ERRORS },
      },
    },
    async (req) => {
      const b = req.body as { input_file_id: string; endpoint: BatchEndpoint; completion_window: string; metadata?: unknown };
      const metadata = checkMetadata(b.metadata);
      await fileOr404(req, b.input_file_id);
      const job = await batch.createOpenAi(opts.tenantOf(req), {
        inputFileId: b.input_file_id,
        endpoint: b.endpoint,
        completionWindow: b.completion_window,
        metadata,
        keyId: opts.keyIdOf(req),
      });
      return batchObject(job);
    },
  );

  app.get(
    '/batches',
    { schema: { tags: TAGS, summary: "List the tenant's batches, newest first", querystring: PAGE, response: { 200: list(BATCH), ...ERRORS } } },
    async (req) => {
      const q = req.query as { limit: number; after?: string };
      return page((await batch.jobs.list(opts.tenantOf(req), 'openai', q.limit + 1, q.after ?? null)) as OpenAiJob[], q.limit, batchObject);
    },
  );

  const batchParams = { type: 'object', required: ['batch_id'], properties: { batch_id: { type: 'string' } } } as const;
  app.get('/batches/:batch_id', { schema: { tags: TAGS, summary: 'A batch', params: batchParams, response: { 200: BATCH, ...ERRORS } } }, async (req) =>
    batchObject(await jobOr404(req, (req.params as { batch_id: string }).batch_id)),
  );

  app.post(
    '/batches/:batch_id/cancel',
    {
      schema: {
        tags: TAGS,
        summary: 'Cancel a batch (it goes to cancelling, then cancelled; finished lines stay in its output)',
        params: batchParams,
        response: { 200: BATCH, ...ERRORS },
      },
    },
    async (req) => {
      const id = (req.params as { batch_id: string }).batch_id;
      try {
        return batchObject((await batch.cancel(opts.tenantOf(req), id, 'openai')) as OpenAiJob);
      } catch (e) {
        if ((e as { code?: string }).code === 'SY_ERR_BATCH_NOT_FOUND')
          throw new LlmError('SY_ERR_BATCH_NOT_FOUND', `No such Batch object: ${id}`, { param: 'batch_id' });
        throw e;
      }
    },
  );
};
