/**
 * @module
 * Batch workers: every replica runs `--batch-workers` of them over the shared metadata store. A worker loops:
 * lease job-level work (validate an input file into chunks, finalize, cancel, expire) or else a chunk; run the
 * chunk's lines concurrently through the {@link LineRunner} (inference runs in the serving core's instances, off
 * the event loop, so the lease is renewed on time); commit the chunk's output with its completion; record the
 * committed lines' usage for the job's tenant. A line is billed only once its chunk committed: a chunk redone
 * after a crash was never billed the first time.
 *
 * Test hook: with `stallAfterChunks: n` (env SWITCHYARD_TEST_BATCH_STALL_AFTER) a process commits n chunks, then
 * runs the next one and stalls before committing it, holding its lease, after logging
 * "batch worker stalled before commit": a crash test kills it there, deterministically.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { channels, type BatchChunkEvent, type BatchJobEvent } from '../events.js';
import type { Flow } from '../serving/index.js';
import { newFileId, type FileStore } from './files.js';
import { linesOf } from './kinds.js';
import { addUsage, JobStore, ZERO_USAGE, type JobKindName, type JobRecord, type JobStatus, type JobUsage, type LeasedChunk } from './jobs.js';
import type { JobKind } from './kinds.js';
import type { UsageSink } from './types.js';

/** The fair-queueing weight of batch flows (a tenant's online flow has its tenant weight, 1 by default). */
export const BATCH_FLOW_WEIGHT = 0.05;

export interface BatchWorkerOptions {
  readonly jobs: JobStore;
  readonly files: FileStore;
  /** What each kind of job does with its input, lines and output (one executor for all). */
  readonly kinds: Readonly<Record<JobKindName, JobKind>>;
  readonly logger: Logger;
  /** Concurrent workers in this process (0 = this replica runs no batch work). */
  readonly workers: number;
  /** Lease (visibility timeout) of a chunk or of job-level work, in ms; renewed every third of it. */
  readonly leaseMs: number;
  /** Lines per chunk (the unit of leasing and of commit). */
  readonly chunkLines: number;
  /** How often an idle worker looks for work, in ms. */
  readonly pollMs: number;
  readonly usage: UsageSink | null;
  /** Clock (epoch ms); tests inject one. */
  readonly now?: () => number;
  /** Test hook: commit this many chunks, then stall before committing the next. Null = never. */
  readonly stallAfterChunks?: number | null;
  /** Called once a job ended here (by this replica's finalize, cancel, expiry or validation failure). */
  readonly onEnded?: ((job: JobRecord) => void) | null;
}

export class BatchWorkers {
  /** This worker pool's id in leases (unique per process start). */
  readonly owner = `w-${randomBytes(6).toString('hex')}`;
  readonly #o: BatchWorkerOptions;
  readonly #now: () => number;
  #closed = false;
  #loops: Promise<void>[] = [];
  #wake: (() => void) | null = null;
  #committed = 0;
  #stalled = false;
  #stallTaken = false;
  #inflight = 0;
  readonly #stop = new AbortController();

  constructor(opts: BatchWorkerOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** Start the loops (SQLite: first free leases left by a previous run of this process, the store's only user). */
  async start(freeStaleLeases: boolean): Promise<void> {
    if (this.#o.workers === 0) return;
    if (freeStaleLeases) await this.#o.jobs.releaseAllLeases();
    for (let i = 0; i < this.#o.workers; i++) this.#loops.push(this.#loop());
  }

  /** Whether the test hook stalled this process (it still does job-level work, but takes no more chunks). */
  get stalled(): boolean {
    return this.#stalled;
  }

  /** Look for work now (a job was created or cancelled here). */
  wake(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  /** Stop taking work and wait for the loops; a chunk in flight is abandoned (its lease runs out, another worker redoes it). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stop.abort();
    this.wake();
    await Promise.all(this.#loops);
  }

  async #loop(): Promise<void> {
    while (!this.#closed) {
      let worked = false;
      try {
        worked = await this.#step();
      } catch (e) {
        this.#o.logger.error({ err: e }, 'batch worker step failed');
      }
      if (!worked && !this.#closed) await this.#idle();
    }
  }

  #idle(): Promise<void> {
    return new Promise((resolve) => {
      const prev = this.#wake;
      const t = setTimeout(done, this.#o.pollMs);
      t.unref();
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.#wake = () => {
        prev?.();
        done();
      };
    });
  }

  /** One unit of work: job-level first, else a chunk. False when there was none. */
  async #step(): Promise<boolean> {
    const { jobs, leaseMs } = this.#o;
    const job = await jobs.claimJob(this.owner, this.#now(), leaseMs);
    if (job) {
      await this.#leased(
        () => jobs.renewJob(job.id, this.owner, this.#now() + leaseMs),
        () => this.#jobWork(job),
      );
      await jobs.releaseJob(job.id, this.owner);
      return true;
    }
    // Test hook: the chunk claimed once n chunks are committed or running here is the one that stalls; no more after it.
    const hook = this.#o.stallAfterChunks ?? null;
    const stallThis = hook !== null && this.#committed + this.#inflight >= hook;
    if (stallThis && this.#stallTaken) return false;
    if (stallThis) this.#stallTaken = true;
    this.#inflight++;
    try {
      const chunk = await jobs.claimChunk(this.owner, this.#now(), leaseMs);
      if (!chunk) {
        if (stallThis) this.#stallTaken = false;
        return false;
      }
      await this.#runChunk(chunk, stallThis);
      return true;
    } finally {
      this.#inflight--;
    }
  }

  /** Run `work` while renewing a lease every third of its length. */
  async #leased<T>(renew: () => Promise<unknown>, work: () => Promise<T>): Promise<T> {
    const t = setInterval(
      () => void renew().catch((e: unknown) => this.#o.logger.warn({ err: e }, 'batch lease renewal failed')),
      Math.max(10, Math.floor(this.#o.leaseMs / 3)),
    );
    try {
      return await work();
    } finally {
      clearInterval(t);
    }
  }

  async #jobWork(job: JobRecord): Promise<void> {
    const now = this.#now();
    if (job.status === 'validating') return this.#validate(job);
    if (job.status === 'cancelling') return this.#finish(job, 'cancelled', ['cancelling']);
    if (job.status === 'finalizing') return this.#finish(job, 'completed', ['finalizing']);
    if (job.status !== 'in_progress') return;
    if (job.expiresAt !== null && job.expiresAt < now) return this.#finish(job, 'expired', ['in_progress']);
    const moved = await this.#o.jobs.transition(job.id, this.owner, ['in_progress'], async (_t, times) => ({
      status: 'finalizing',
      times: JSON.stringify({ ...times, finalizing_at: now }),
    }));
    if (moved) await this.#finish(job, 'completed', ['finalizing']);
  }

  /** Check the input and split it into chunks (in progress), or fail the job naming what is wrong. */
  async #validate(job: JobRecord): Promise<void> {
    const { jobs, chunkLines } = this.#o;
    const checked = await this.#kind(job).prepare(job, chunkLines);
    const now = this.#now();
    if ('errors' in checked) {
      const failed = await jobs.transition(job.id, this.owner, ['validating'], async (_t, times) => ({
        status: 'failed',
        errors: JSON.stringify(checked.errors),
        times: JSON.stringify({ ...times, failed_at: now }),
        lease_owner: null,
        lease_until: null,
      }));
      if (failed) await this.#ended(job, 'failed');
      return;
    }
    await jobs.transition(job.id, this.owner, ['validating'], async (t, times) => {
      await JobStore.insertChunks(t, job.id, checked.chunks);
      return { status: 'in_progress', total: checked.total, chunks: checked.chunks.length, times: JSON.stringify({ ...times, in_progress_at: now }) };
    });
    this.wake();
  }

  #kind(job: JobRecord): JobKind {
    return this.#o.kinds[job.kind];
  }

  /**
   * End a job as `to`: its output file (the committed chunks' output lines, in input order) and error file (their
   * error lines, and for an expired job a `batch_expired` line for each line that never ran) are written and the
   * job updated in one transaction holding the job row. File ids derive from the job id, so a finalizer that
   * died half-way is simply redone.
   */
  async #finish(job: JobRecord, to: Extract<JobStatus, 'completed' | 'cancelled' | 'expired'>, from: readonly JobStatus[]): Promise<void> {
    const { jobs, files } = this.#o;
    const kind = this.#kind(job);
    const budget = kind.failureBudget(job);
    const now = this.#now();
    let final: JobStatus = to;
    const ended = await jobs.transition(job.id, this.owner, from, async (t, times) => {
      let succeeded = 0;
      let failed = 0;
      let usage = ZERO_USAGE;
      const outputs = async function* (): AsyncGenerator<string> {
        for await (const c of JobStore.chunksOf(t, job.id)) {
          if (c.state !== 'done') continue;
          succeeded += Number(c.succeeded);
          failed += Number(c.failed);
          if (c.usage !== null) usage = addUsage(usage, JSON.parse(c.usage) as JobUsage);
          if (c.output) yield c.output;
        }
      };
      const errorLines = async function* (): AsyncGenerator<Uint8Array> {
        for await (const c of JobStore.chunksOf(t, job.id)) {
          if (c.state === 'done') {
            if (c.error_output) yield Buffer.from(c.error_output);
          } else if (to === 'expired') {
            const text = kind.unrun(job, c.input, 'batch_expired', 'This request could not be executed before the completion window expired.');
            failed += linesOf(text).length;
            yield Buffer.from(text);
          }
        }
      };
      const out = kind.outputFile(job, outputs());
      const meta = (k: string, filename: string) => ({
        id: derivedId(job.id, k),
        tenant: job.tenant,
        purpose: 'batch_output',
        filename,
        createdAt: now,
        expiresAt: null,
      });
      const outFile = await files.put(meta('output', out.filename), out.content, t);
      const errs = await files.put(meta('error', `${job.id}_error.jsonl`), errorLines(), t);
      const outId = outFile.bytes > 0 ? outFile.id : null;
      const errId = errs.bytes > 0 ? errs.id : null;
      if (outId === null) await t.deleteFrom('batch_files').where('id', '=', outFile.id).execute();
      if (errId === null) await t.deleteFrom('batch_files').where('id', '=', errs.id).execute();
      const over = to === 'completed' && budget !== null && failed > budget;
      final = over ? 'failed' : to;
      return {
        status: final,
        output_file_id: outId,
        error_file_id: errId,
        succeeded,
        failed,
        usage: JSON.stringify(usage),
        errors: over
          ? JSON.stringify([
              { code: 'failure_budget_exceeded', line: null, message: `${failed} rows failed; the job allows at most ${budget}.`, param: 'maxFailedRows' },
            ])
          : null,
        times: JSON.stringify({ ...times, [`${final}_at`]: now }),
        lease_owner: null,
        lease_until: null,
      };
    });
    if (ended) await this.#ended(job, final);
  }

  /** Metrics and the job's end hook (a webhook), once a job ended here. */
  async #ended(job: JobRecord, status: JobStatus): Promise<void> {
    if (channels.batchJob.hasSubscribers) channels.batchJob.publish({ endpoint: this.#kind(job).endpoint(job), status } satisfies BatchJobEvent);
    const hook = this.#o.onEnded;
    if (hook) {
      const done = await this.#o.jobs.byId(job.id);
      if (done !== null) hook(done);
    }
  }

  async #runChunk(c: LeasedChunk, stall: boolean): Promise<void> {
    const { jobs, leaseMs, logger } = this.#o;
    const job = await this.#jobOf(c.jobId);
    if (job === null) return;
    const started = performance.now();
    const publish = (committed: boolean, succeeded = 0, failed = 0): void => {
      if (channels.batchChunk.hasSubscribers) {
        channels.batchChunk.publish({
          endpoint: this.#kind(job).endpoint(job),
          committed,
          succeeded,
          failed,
          seconds: (performance.now() - started) / 1000,
        } satisfies BatchChunkEvent);
      }
    };
    const stop = new AbortController();
    const onClose = (): void => stop.abort();
    this.#stop.signal.addEventListener('abort', onClose, { once: true });
    const lease: { state: 'held' | 'lost' | 'stopped' } = { state: 'held' };
    const renew = async (): Promise<void> => {
      lease.state = await jobs.renewChunk(c, this.owner, this.#now() + leaseMs);
      if (lease.state !== 'held') stop.abort();
    };
    try {
      const flow: Flow = { id: `batch:${job.tenant}`, weight: BATCH_FLOW_WEIGHT };
      const result = await this.#leased(renew, () => this.#kind(job).runChunk(job, c, { flow, signal: stop.signal }));
      if (stall) {
        this.#stalled = true;
        logger.warn({ job: c.jobId, chunk: c.seq }, 'batch worker stalled before commit (test hook SWITCHYARD_TEST_BATCH_STALL_AFTER)');
        await this.#leased(renew, () => new Promise<void>((resolve) => this.#stop.signal.addEventListener('abort', () => resolve(), { once: true })));
        return;
      }
      if (stop.signal.aborted) {
        if (lease.state === 'stopped') await jobs.releaseChunk(c, this.owner);
        publish(false);
        return;
      }
      if (!(await jobs.commitChunk(c, this.owner, result))) {
        logger.info({ job: c.jobId, chunk: c.seq }, 'batch chunk discarded: its lease was lost or its job stopped');
        publish(false);
        return;
      }
      publish(true, result.succeeded, result.failed);
      this.#committed++;
      for (const u of result.lineUsage) this.#o.usage?.record({ tenant: job.tenant, ok: true, ...u });
      const budget = this.#kind(job).failureBudget(job);
      if (budget !== null && result.failed > 0) await jobs.stopOverBudget(job.id, budget, this.#now());
      this.wake();
    } finally {
      this.#stop.signal.removeEventListener('abort', onClose);
    }
  }

  readonly #jobCache = new Map<string, JobRecord>();

  async #jobOf(id: string): Promise<JobRecord | null> {
    let j = this.#jobCache.get(id);
    if (j === undefined) {
      const row = await this.#o.jobs.byId(id);
      if (row === null) return null;
      if (this.#jobCache.size > 256) this.#jobCache.clear();
      this.#jobCache.set(id, (j = row));
    }
    return j;
  }
}

/** The id of a job's output or error file: fixed by the job id, so a redone finalize overwrites, never duplicates. */
function derivedId(jobId: string, kind: string): string {
  return `file-${kind === 'output' ? 'o' : 'e'}${jobId.replace(/^(batch|bjob)_/, '')}`;
}

export { newFileId };
