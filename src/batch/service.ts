/**
 * @module
 * The batch service: files and jobs in the metadata store and this replica's workers. Transports call it to
 * upload files, create, read, list and cancel jobs; the work itself is done by whichever replica's workers
 * lease it (see jobs.ts for the leases and worker.ts for the loop).
 *
 * @example
 * ```ts
 * const batch = await BatchService.create({ database, runner, usage, logger, workers: 2, leaseMs: 30_000, chunkLines: 100 });
 * const file = await batch.files.put({ id: newFileId(), tenant: '', purpose: 'batch', filename: 'in.jsonl', createdAt: Date.now(), expiresAt: null }, [bytes]);
 * const job = await batch.createOpenAi('', { inputFileId: file.id, endpoint: '/v1/embeddings', completionWindow: '24h', metadata: null, keyId: null });
 * ```
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { err } from '../errors.js';
import type { Database } from '../storage/index.js';
import { FileStore, newFileId } from './files.js';
import { JobStore, type JobKindName, type JobRecord, type OpenAiJob, type V2Job } from './jobs.js';
import { linesOf } from './kinds.js';
import type { BatchEndpoint } from './openai-format.js';
import { OpenAiKind } from './openai-kind.js';
import type { LineRunner, RowRunner, UsageSink } from './types.js';
import { V2Kind } from './v2-kind.js';
import { checkSpec, type V2SpecRequest } from './v2-spec.js';
import { v2JobView } from './v2-view.js';
import { deliverWebhook } from './webhook.js';
import { BatchWorkers } from './worker.js';

/** How long a batch may take to complete, by its `completion_window` (OpenAI supports "24h"). */
export const COMPLETION_WINDOWS: Readonly<Record<string, number>> = { '24h': 24 * 3_600_000 };

export interface BatchServiceOptions {
  readonly database: Database;
  readonly runner: LineRunner;
  /** Runs V2 jobs' rows (null: this server takes no V2 jobs). */
  readonly rowRunner?: RowRunner | null;
  /** Webhook retries: tries in all and the first backoff, in ms. @default { attempts: 5, backoffMs: 1000 } */
  readonly webhook?: { readonly attempts: number; readonly backoffMs: number };
  readonly usage: UsageSink | null;
  readonly logger: Logger;
  /** Workers in this replica (`--batch-workers`); 0 = none here. */
  readonly workers: number;
  /** Chunk and job lease, in ms (`--batch-lease-ms`). */
  readonly leaseMs: number;
  /** Lines per chunk (`--batch-chunk-lines`). */
  readonly chunkLines: number;
  /** Idle poll, in ms. @default 500 */
  readonly pollMs?: number;
  readonly now?: () => number;
  readonly stallAfterChunks?: number | null;
}

export interface NewOpenAiBatch {
  readonly inputFileId: string;
  readonly endpoint: BatchEndpoint;
  readonly completionWindow: string;
  readonly metadata: Record<string, string> | null;
  readonly keyId: string | null;
}

export class BatchService {
  readonly files: FileStore;
  readonly jobs: JobStore;
  readonly workers: BatchWorkers;
  readonly #now: () => number;
  readonly #rows: RowRunner | null;
  readonly #webhooks = new Set<Promise<boolean>>();

  private constructor(opts: BatchServiceOptions) {
    const db = opts.database.db;
    this.files = new FileStore(db);
    this.jobs = new JobStore(db, opts.database.dialect);
    this.#now = opts.now ?? Date.now;
    this.#rows = opts.rowRunner ?? null;
    const logger = opts.logger.child({ component: 'batch' });
    const rowRunner: RowRunner = this.#rows ?? {
      signature: () => Promise.reject(err('SY_ERR_MODEL_NOT_FOUND', 'this server runs no V2 batch jobs')),
      run: () => Promise.reject(err('SY_ERR_MODEL_NOT_FOUND', 'this server runs no V2 batch jobs')),
    };
    this.workers = new BatchWorkers({
      jobs: this.jobs,
      files: this.files,
      logger,
      workers: opts.workers,
      kinds: { openai: new OpenAiKind(this.files, opts.runner, logger), v2: new V2Kind(this.files, rowRunner, logger) },
      leaseMs: opts.leaseMs,
      chunkLines: opts.chunkLines,
      pollMs: opts.pollMs ?? 500,
      usage: opts.usage,
      now: this.#now,
      stallAfterChunks: opts.stallAfterChunks ?? null,
      onEnded: (job) => {
        if (job.kind !== 'v2' || job.spec.webhook === null) return;
        const w = opts.webhook ?? { attempts: 5, backoffMs: 1000 };
        const sent = deliverWebhook(job.spec.webhook, v2JobView(job, this.#now()), { ...w, timeoutMs: 10_000, logger });
        this.#webhooks.add(sent);
        void sent.finally(() => this.#webhooks.delete(sent));
      },
    });
  }

  /** Build the service and start this replica's workers. */
  static async create(opts: BatchServiceOptions): Promise<BatchService> {
    const s = new BatchService(opts);
    await s.workers.start(opts.database.dialect === 'sqlite');
    return s;
  }

  now(): number {
    return this.#now();
  }

  /** Create an OpenAI batch (validating); 404 when the input file is not the tenant's. */
  async createOpenAi(tenant: string, b: NewOpenAiBatch): Promise<OpenAiJob> {
    const file = await this.files.get(tenant, b.inputFileId);
    if (file === null) throw err('SY_ERR_FILE_NOT_FOUND', `No such File object: ${b.inputFileId}`);
    const now = this.#now();
    const window = COMPLETION_WINDOWS[b.completionWindow];
    if (window === undefined) throw err('SY_ERR_BAD_REQUEST', `completion_window must be one of ${Object.keys(COMPLETION_WINDOWS).join(', ')}`);
    const job: OpenAiJob = {
      id: `batch_${randomBytes(16).toString('hex')}`,
      tenant,
      kind: 'openai',
      status: 'validating',
      spec: { endpoint: b.endpoint, completion_window: b.completionWindow, metadata: b.metadata, keyId: b.keyId },
      inputFileId: b.inputFileId,
      outputFileId: null,
      errorFileId: null,
      errors: null,
      total: 0,
      succeeded: 0,
      failed: 0,
      usage: null,
      chunks: 0,
      times: {},
      createdAt: now,
      expiresAt: now + window,
    };
    await this.jobs.create(job);
    this.workers.wake();
    return job;
  }

  /**
   * Create a V2 job (validating): the spec checked against the serving version's signature (400
   * SY_ERR_BATCH_SPEC naming the field; 404 for a model the tenant cannot use or an input file not its own).
   */
  async createV2(tenant: string, req: V2SpecRequest, keyId: string | null, retryOf: string | null = null): Promise<V2Job> {
    if (this.#rows === null) throw err('SY_ERR_MODEL_NOT_FOUND', 'this server runs no V2 batch jobs');
    let filename = req.input.path ?? '';
    if (req.input.fileId !== undefined) {
      const f = await this.files.get(tenant, req.input.fileId);
      if (f === null) throw err('SY_ERR_FILE_NOT_FOUND', `No such file: ${req.input.fileId}`);
      filename = f.filename;
    }
    const sig = await this.#rows.signature(tenant, req.model, req.version ?? null);
    const spec = checkSpec(req, sig, { filename, keyId, retryOf });
    const now = this.#now();
    const job: V2Job = {
      id: `bjob_${randomBytes(16).toString('hex')}`,
      tenant,
      kind: 'v2',
      status: 'validating',
      spec,
      inputFileId: 'fileId' in spec.input ? spec.input.fileId : '',
      outputFileId: null,
      errorFileId: null,
      errors: null,
      total: 0,
      succeeded: 0,
      failed: 0,
      usage: null,
      chunks: 0,
      times: {},
      createdAt: now,
      expiresAt: null,
    };
    await this.jobs.create(job);
    this.workers.wake();
    return job;
  }

  /**
   * A new job over the rows of an ended job that failed when they ran (the rows refused while the file was read
   * would fail the same way again and are left out): its input is a JSONL file of those rows' mapped values, with
   * the original row number as `source_row`. 409 when the job has not ended or no row can be retried.
   */
  async retryFailed(tenant: string, id: string, keyId: string | null): Promise<V2Job> {
    const job = (await this.jobs.get(tenant, id, 'v2')) as V2Job | null;
    if (job === null) throw err('SY_ERR_BATCH_NOT_FOUND', `No such batch job: ${id}`);
    if (!['completed', 'failed', 'cancelled'].includes(job.status))
      throw err('SY_ERR_BATCH_STATE', `job ${id} is ${job.status}: retry its failed rows once it ended`);
    const failed = new Set<number>();
    if (job.errorFileId !== null) {
      let rest = '';
      for await (const part of this.files.content(job.errorFileId)) {
        const lines = (rest + Buffer.from(part).toString('utf8')).split('\n');
        rest = lines.pop()!;
        for (const l of lines) if (l !== '') failed.add((JSON.parse(l) as { row: number }).row);
      }
      if (rest !== '') failed.add((JSON.parse(rest) as { row: number }).row);
    }
    const spec = job.spec;
    if (spec.includedFields.includes('source_row'))
      throw err('SY_ERR_BATCH_SPEC', 'includedFields: "source_row" is taken by retry-failed for the original row number');
    let text = '';
    let n = 0;
    for await (const input of this.jobs.chunkInputs(id)) {
      for (const l of linesOf(input)) {
        const r = JSON.parse(l) as { r: number; k?: unknown; p?: Record<string, unknown>; x?: Record<string, unknown[]> };
        if (r.x === undefined || !failed.has(r.r)) continue;
        text += `${JSON.stringify({ source_row: r.r, ...(spec.keyField === null ? {} : { key: r.k ?? null }), ...r.p, ...r.x })}\n`;
        n++;
      }
    }
    if (n === 0) throw err('SY_ERR_BATCH_STATE', `job ${id} has no failed rows that reached the model to retry`);
    const file = await this.files.put(
      { id: newFileId(), tenant, purpose: 'batch_input', filename: `${id}_retry.jsonl`, createdAt: this.#now(), expiresAt: null },
      [Buffer.from(text)],
    );
    const mapping = Object.fromEntries(Object.keys(spec.mapping).map((name) => [name, name]));
    return this.createV2(
      tenant,
      {
        model: spec.model,
        version: spec.version,
        input: { fileId: file.id },
        format: 'jsonl',
        mapping,
        keyField: spec.keyField === null ? null : 'key',
        includedFields: ['source_row', ...spec.includedFields],
        outputs: spec.outputs,
        outputFormat: spec.outputFormat,
        maxFailedRows: spec.maxFailedRows,
        chunkRows: spec.chunkRows,
        webhook: spec.webhook === null ? null : { url: spec.webhook },
      },
      keyId,
      id,
    );
  }

  /** Cancel: the job after the request (cancelling), 404 when none, 409 when it already ended. */
  async cancel(tenant: string, id: string, kind: JobKindName = 'openai'): Promise<JobRecord> {
    const r = await this.jobs.requestCancel(tenant, id, kind, this.#now());
    if (r === null) throw err('SY_ERR_BATCH_NOT_FOUND', `No such Batch object: ${id}`);
    if (!r.changed) throw err('SY_ERR_BATCH_STATE', `Cannot cancel a batch with status '${r.job.status}'.`);
    this.workers.wake();
    return r.job;
  }

  /** Stop this replica's workers (jobs go on wherever other workers run, or here after a restart). */
  async close(): Promise<void> {
    await this.workers.close();
    await Promise.all(this.#webhooks);
  }
}
