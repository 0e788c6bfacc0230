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
import { addUsage, JobStore, ZERO_USAGE, type JobRecord, type JobStatus, type JobUsage, type LeasedChunk, type NewChunk } from './jobs.js';
import { checkInput, responseLine, unrunLine, type BatchEndpoint } from './openai-format.js';
import type { LineRunner, UsageSink } from './types.js';

/** The fair-queueing weight of batch flows (a tenant's online flow has its tenant weight, 1 by default). */
export const BATCH_FLOW_WEIGHT = 0.05;
/** A line refused for load (429, 503) is tried again this many times, after its retry hint. */
const LOAD_RETRIES = 8;

export interface BatchWorkerOptions {
  readonly jobs: JobStore;
  readonly files: FileStore;
  readonly runner: LineRunner;
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
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

function usageOf(u: { promptTokens: number; completionTokens: number } | null): JobUsage {
  return u === null ? ZERO_USAGE : { input_tokens: u.promptTokens, output_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens };
}

/** Each line's text (the chunk input is JSONL). */
function linesOf(input: string): string[] {
  return input.split('\n').filter((l) => l !== '');
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
      await this.#leased(() => jobs.renewJob(job.id, this.owner, this.#now() + leaseMs), () => this.#jobWork(job));
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
    const t = setInterval(() => void renew().catch((e: unknown) => this.#o.logger.warn({ err: e }, 'batch lease renewal failed')), Math.max(10, Math.floor(this.#o.leaseMs / 3)));
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
    const moved = await this.#o.jobs.transition(job.id, this.owner, ['in_progress'], async (_t, times) => ({ status: 'finalizing', times: JSON.stringify({ ...times, finalizing_at: now }) }));
    if (moved) await this.#finish(job, 'completed', ['finalizing']);
  }

  /** Check the input file and split it into chunks (in progress), or fail the job naming every bad line. */
  async #validate(job: JobRecord): Promise<void> {
    const { jobs, files, chunkLines } = this.#o;
    const meta = await files.get(job.tenant, job.inputFileId);
    const checked = meta === null
      ? { lines: [], model: null, errors: [{ code: 'file_not_found', line: null, message: `The input file ${job.inputFileId} no longer exists.`, param: 'input_file_id' }] }
      : checkInput((await files.read(job.inputFileId)).toString('utf8'), job.spec.endpoint as BatchEndpoint);
    const now = this.#now();
    if (checked.errors.length > 0) {
      const failed = await jobs.transition(job.id, this.owner, ['validating'], async (_t, times) => ({
        status: 'failed', errors: JSON.stringify(checked.errors), times: JSON.stringify({ ...times, failed_at: now }), lease_owner: null, lease_until: null,
      }));
      if (failed) jobEnded(job, 'failed');
      return;
    }
    const chunks: NewChunk[] = [];
    for (let i = 0; i < checked.lines.length; i += chunkLines) {
      const part = checked.lines.slice(i, i + chunkLines);
      chunks.push({ firstLine: part[0]!.line, lines: part.length, input: part.map((l) => `${l.text}\n`).join('') });
    }
    await jobs.transition(job.id, this.owner, ['validating'], async (t, times) => {
      await JobStore.insertChunks(t, job.id, chunks);
      return { status: 'in_progress', total: checked.lines.length, chunks: chunks.length, times: JSON.stringify({ ...times, in_progress_at: now }) };
    });
    this.wake();
  }

  /**
   * End a job as `to`: its output file (the committed chunks' output lines, in input order) and error file (their
   * error lines, and for an expired job a `batch_expired` line for each line that never ran) are written and the
   * job updated in one transaction holding the job row. File ids derive from the job id, so a finalizer that
   * died half-way is simply redone.
   */
  async #finish(job: JobRecord, to: Extract<JobStatus, 'completed' | 'cancelled' | 'expired'>, from: readonly JobStatus[]): Promise<void> {
    const { jobs, files } = this.#o;
    const now = this.#now();
    const ended = await jobs.transition(job.id, this.owner, from, async (t, times) => {
      let succeeded = 0;
      let failed = 0;
      let usage = ZERO_USAGE;
      const pass = async function* (what: 'output' | 'errors'): AsyncGenerator<Uint8Array> {
        for await (const c of JobStore.chunksOf(t, job.id)) {
          if (c.state === 'done') {
            if (what === 'output') {
              succeeded += Number(c.succeeded);
              failed += Number(c.failed);
              if (c.usage !== null) usage = addUsage(usage, JSON.parse(c.usage) as JobUsage);
              if (c.output) yield Buffer.from(c.output);
            } else if (c.error_output) yield Buffer.from(c.error_output);
          } else if (what === 'errors' && to === 'expired') {
            const lines = linesOf(c.input).map((l) => `${unrunLine((JSON.parse(l) as { custom_id: string }).custom_id, 'batch_expired', 'This request could not be executed before the completion window expired.')}\n`);
            failed += lines.length;
            yield Buffer.from(lines.join(''));
          }
        }
      };
      const meta = (kind: string) => ({ id: derivedId(job.id, kind), tenant: job.tenant, purpose: 'batch_output', filename: `${job.id}_${kind}.jsonl`, createdAt: now, expiresAt: null });
      const out = await files.put(meta('output'), pass('output'), t);
      const errs = await files.put(meta('error'), pass('errors'), t);
      const outId = out.bytes > 0 ? out.id : null;
      const errId = errs.bytes > 0 ? errs.id : null;
      if (outId === null) await t.deleteFrom('batch_files').where('id', '=', out.id).execute();
      if (errId === null) await t.deleteFrom('batch_files').where('id', '=', errs.id).execute();
      return {
        status: to, output_file_id: outId, error_file_id: errId, succeeded, failed, usage: JSON.stringify(usage),
        times: JSON.stringify({ ...times, [`${to}_at`]: now }), lease_owner: null, lease_until: null,
      };
    });
    if (ended) jobEnded(job, to);
  }

  async #runChunk(c: LeasedChunk, stall: boolean): Promise<void> {
    const { jobs, leaseMs, logger } = this.#o;
    const job = await this.#jobOf(c.jobId);
    if (job === null) return;
    const started = performance.now();
    const publish = (committed: boolean, succeeded = 0, failed = 0): void => {
      if (channels.batchChunk.hasSubscribers) {
        channels.batchChunk.publish({ endpoint: job.spec.endpoint, committed, succeeded, failed, seconds: (performance.now() - started) / 1000 } satisfies BatchChunkEvent);
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
      const result = await this.#leased(renew, () => this.#runLines(job, c, stop.signal));
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
      this.#jobCache.set(id, j = row);
    }
    return j;
  }

  async #runLines(job: JobRecord, c: LeasedChunk, signal: AbortSignal): Promise<{ output: string; errorOutput: string; succeeded: number; failed: number; usage: JobUsage; lineUsage: Array<{ model: string; promptTokens: number; completionTokens: number; cost: number }> }> {
    const flow: Flow = { id: `batch:${job.tenant}`, weight: BATCH_FLOW_WEIGHT };
    const lines = linesOf(c.input);
    const outcomes = await Promise.all(lines.map(async (text) => {
      const line = JSON.parse(text) as { custom_id: string; url: string; body: Record<string, unknown> };
      const requestId = `req_${randomBytes(12).toString('hex')}`;
      for (let attempt = 0; ; attempt++) {
        let o;
        try {
          o = await this.#o.runner.run(line.url, line.body, { tenant: job.tenant, keyId: job.spec.keyId, requestId, flow, signal });
        } catch (e) {
          this.#o.logger.error({ err: e, job: job.id }, 'batch line runner threw');
          o = { status: 500, body: { error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } }, usage: null };
        }
        if ((o.status === 429 || o.status === 503) && attempt < LOAD_RETRIES && !signal.aborted) {
          await sleep(Math.min(5000, 100 * 2 ** attempt));
          continue;
        }
        return { customId: line.custom_id, requestId, ...o };
      }
    }));
    let output = '';
    let errorOutput = '';
    let succeeded = 0;
    let failed = 0;
    let usage = ZERO_USAGE;
    const lineUsage = [];
    for (const o of outcomes) {
      const text = `${responseLine(o.customId, o.status, o.requestId, o.body)}\n`;
      if (o.status >= 200 && o.status < 300) {
        output += text;
        succeeded++;
      } else {
        errorOutput += text;
        failed++;
      }
      if (o.usage !== null) {
        usage = addUsage(usage, usageOf(o.usage));
        lineUsage.push(o.usage);
      }
    }
    return { output, errorOutput, succeeded, failed, usage, lineUsage };
  }
}

function jobEnded(job: JobRecord, status: JobStatus): void {
  if (channels.batchJob.hasSubscribers) channels.batchJob.publish({ endpoint: job.spec.endpoint, status } satisfies BatchJobEvent);
}

/** The id of a job's output or error file: fixed by the job id, so a redone finalize overwrites, never duplicates. */
function derivedId(jobId: string, kind: string): string {
  return `file-${kind === 'output' ? 'o' : 'e'}${jobId.replace(/^batch_/, '')}`;
}

export { newFileId };
