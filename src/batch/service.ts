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
import { FileStore } from './files.js';
import { JobStore, type JobRecord } from './jobs.js';
import type { BatchEndpoint } from './openai-format.js';
import type { LineRunner, UsageSink } from './types.js';
import { BatchWorkers } from './worker.js';

/** How long a batch may take to complete, by its `completion_window` (OpenAI supports "24h"). */
export const COMPLETION_WINDOWS: Readonly<Record<string, number>> = { '24h': 24 * 3_600_000 };

export interface BatchServiceOptions {
  readonly database: Database;
  readonly runner: LineRunner;
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

  private constructor(opts: BatchServiceOptions) {
    const db = opts.database.db;
    this.files = new FileStore(db);
    this.jobs = new JobStore(db, opts.database.dialect);
    this.#now = opts.now ?? Date.now;
    this.workers = new BatchWorkers({
      jobs: this.jobs, files: this.files, runner: opts.runner, logger: opts.logger.child({ component: 'batch' }), workers: opts.workers,
      leaseMs: opts.leaseMs, chunkLines: opts.chunkLines, pollMs: opts.pollMs ?? 500, usage: opts.usage, now: this.#now,
      stallAfterChunks: opts.stallAfterChunks ?? null,
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
  async createOpenAi(tenant: string, b: NewOpenAiBatch): Promise<JobRecord> {
    const file = await this.files.get(tenant, b.inputFileId);
    if (file === null) throw err('SY_ERR_FILE_NOT_FOUND', `No such File object: ${b.inputFileId}`);
    const now = this.#now();
    const window = COMPLETION_WINDOWS[b.completionWindow];
    if (window === undefined) throw err('SY_ERR_BAD_REQUEST', `completion_window must be one of ${Object.keys(COMPLETION_WINDOWS).join(', ')}`);
    const job: JobRecord = {
      id: `batch_${randomBytes(16).toString('hex')}`, tenant, kind: 'openai', status: 'validating',
      spec: { endpoint: b.endpoint, completion_window: b.completionWindow, metadata: b.metadata, keyId: b.keyId },
      inputFileId: b.inputFileId, outputFileId: null, errorFileId: null, errors: null, total: 0, succeeded: 0, failed: 0, usage: null,
      chunks: 0, times: {}, createdAt: now, expiresAt: now + window,
    };
    await this.jobs.create(job);
    this.workers.wake();
    return job;
  }

  /** Cancel: the job after the request (cancelling), 404 when none, 409 when it already ended. */
  async cancel(tenant: string, id: string): Promise<JobRecord> {
    const r = await this.jobs.requestCancel(tenant, id, this.#now());
    if (r === null) throw err('SY_ERR_BATCH_NOT_FOUND', `No such Batch object: ${id}`);
    if (!r.changed) throw err('SY_ERR_BATCH_STATE', `Cannot cancel a batch with status '${r.job.status}'.`);
    this.workers.wake();
    return r.job;
  }

  /** Stop this replica's workers (jobs go on wherever other workers run, or here after a restart). */
  close(): Promise<void> {
    return this.workers.close();
  }
}
