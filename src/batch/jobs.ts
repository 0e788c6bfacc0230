/**
 * @module
 * Batch jobs and their chunks in the metadata store, with the leases that let any number of replicas share the
 * work without doing a line twice:
 *
 * ```
 *  job:   validating ──► in_progress ──► finalizing ──► completed
 *             │              │  │
 *             ▼              │  └──(expires_at passed)──► expired      (partial output kept)
 *           failed           └──(cancel)──► cancelling ──► cancelled   (partial output kept)
 *
 *  chunk: pending ──lease──► running ──commit (output + state = done, one statement)──► done
 *                              │  └── lease not renewed in time (the replica died) ──► taken by another worker
 * ```
 *
 * A chunk is leased by one UPDATE: on Postgres its row is picked `FOR UPDATE SKIP LOCKED`, so concurrent workers
 * never wait for each other; on SQLite one process holds the store, so the statement is atomic by itself. The
 * lease (`lease_until`) is a visibility timeout the worker renews while it runs the chunk; a chunk whose lease
 * ran out is leased again by whoever asks next. A commit lands only while its worker still holds the lease and
 * the job still runs (the job row is read `FOR SHARE`): a worker that lost its lease, or a job that was cancelled
 * or expired meanwhile, discards the chunk's output. Job-level work (validation, finalizing, cancel, expiry) is
 * leased the same way on the job row; finalizing locks the job row `FOR UPDATE`, so no chunk commits while
 * the output files are written.
 *
 * Longer than our ~500-line guide on purpose: the job and chunk state machine above is one set of transactions
 * over the same two tables (claim, renew, commit, cancel, expire, finalize); splitting them would separate the
 * lease rules that must agree.
 */
import { sql, type ExpressionBuilder, type Kysely, type SelectQueryBuilder, type Transaction } from 'kysely';
import type { DB, Dialect } from '../storage/index.js';
import type { LineError } from './openai-format.js';
import type { V2Spec } from './v2-spec.js';

export type JobStatus = 'validating' | 'failed' | 'in_progress' | 'finalizing' | 'completed' | 'expired' | 'cancelling' | 'cancelled';
export const TERMINAL: ReadonlySet<JobStatus> = new Set(['failed', 'completed', 'expired', 'cancelled']);

/** When each status was entered (epoch ms). */
export interface JobTimes {
  in_progress_at?: number;
  finalizing_at?: number;
  completed_at?: number;
  failed_at?: number;
  expired_at?: number;
  cancelling_at?: number;
  cancelled_at?: number;
}

/** Token usage of a job's (committed) lines. */
export interface JobUsage {
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
}

/** An OpenAI batch's settings (the job's spec). */
export interface OpenAiSpec {
  readonly endpoint: string;
  readonly completion_window: string;
  readonly metadata: Record<string, string> | null;
  /** The API key that created it (usage is the tenant's), or null. */
  readonly keyId: string | null;
}

interface JobFields {
  readonly id: string;
  readonly tenant: string;
  readonly status: JobStatus;
  readonly inputFileId: string;
  readonly outputFileId: string | null;
  readonly errorFileId: string | null;
  readonly errors: readonly LineError[] | null;
  readonly total: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly usage: JobUsage | null;
  readonly chunks: number;
  readonly times: JobTimes;
  readonly createdAt: number;
  readonly expiresAt: number | null;
}

/** A /v1/batches batch. */
export interface OpenAiJob extends JobFields {
  readonly kind: 'openai';
  readonly spec: OpenAiSpec;
}

/** A V2 batch job (`/api/v1/batch/jobs`): rows of a file scored by a model. */
export interface V2Job extends JobFields {
  readonly kind: 'v2';
  readonly spec: V2Spec;
}

export type JobKindName = 'openai' | 'v2';
export type JobRecord = OpenAiJob | V2Job;

/** A chunk a worker holds the lease on. */
export interface LeasedChunk {
  readonly jobId: string;
  readonly seq: number;
  readonly firstLine: number;
  readonly lines: number;
  /** The chunk's input lines (JSONL). */
  readonly input: string;
  readonly attempts: number;
}

/** What a chunk's lines produced, committed with its completion. */
export interface ChunkResult {
  /** Output lines and error lines, each line ending in '\n' ('' = none). */
  readonly output: string;
  readonly errorOutput: string;
  readonly succeeded: number;
  readonly failed: number;
  readonly usage: JobUsage;
}

/** A new chunk at validation: its first line number and its lines. */
export interface NewChunk {
  readonly firstLine: number;
  readonly lines: number;
  readonly input: string;
}

type Row = DB['batch_jobs'];

function toRecord(r: Row): JobRecord {
  return {
    id: r.id,
    tenant: r.tenant,
    kind: r.kind as JobKindName,
    status: r.status as JobStatus,
    spec: JSON.parse(r.spec) as unknown,
    inputFileId: r.input_file_id,
    outputFileId: r.output_file_id,
    errorFileId: r.error_file_id,
    errors: r.errors === null ? null : (JSON.parse(r.errors) as LineError[]),
    total: Number(r.total),
    succeeded: Number(r.succeeded),
    failed: Number(r.failed),
    usage: r.usage === null ? null : (JSON.parse(r.usage) as JobUsage),
    chunks: Number(r.chunks),
    times: JSON.parse(r.times) as JobTimes,
    createdAt: Number(r.created_at),
    expiresAt: r.expires_at === null ? null : Number(r.expires_at),
  } as JobRecord;
}

export const ZERO_USAGE: JobUsage = Object.freeze({ input_tokens: 0, output_tokens: 0, total_tokens: 0 });

export function addUsage(a: JobUsage, b: JobUsage): JobUsage {
  return { input_tokens: a.input_tokens + b.input_tokens, output_tokens: a.output_tokens + b.output_tokens, total_tokens: a.total_tokens + b.total_tokens };
}

/** Rows per INSERT when chunks are created (6 parameters each: far under either driver's limit). */
const INSERT_ROWS = 200;
/** About this many characters of chunk input per INSERT. */
const INSERT_BYTES = 256 * 1024;

/** Let the event loop run queued work (online requests) before going on. */
export const yieldLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

export class JobStore {
  readonly #db: Kysely<DB>;
  readonly #dialect: Dialect;

  constructor(db: Kysely<DB>, dialect: Dialect) {
    this.#db = db;
    this.#dialect = dialect;
  }

  /** `q` with FOR UPDATE / FOR SHARE on Postgres (SQLite transactions are serialized already). */
  #lock<O>(q: SelectQueryBuilder<DB, 'batch_jobs', O>, mode: 'update' | 'share'): SelectQueryBuilder<DB, 'batch_jobs', O> {
    if (this.#dialect !== 'postgres') return q;
    return mode === 'update' ? q.forUpdate() : q.forShare();
  }

  async create(job: JobRecord): Promise<void> {
    await this.#db
      .insertInto('batch_jobs')
      .values({
        id: job.id,
        tenant: job.tenant,
        kind: job.kind,
        status: job.status,
        spec: JSON.stringify(job.spec),
        input_file_id: job.inputFileId,
        output_file_id: null,
        error_file_id: null,
        errors: null,
        total: 0,
        succeeded: 0,
        failed: 0,
        usage: null,
        chunks: 0,
        lease_owner: null,
        lease_until: null,
        times: JSON.stringify(job.times),
        created_at: job.createdAt,
        expires_at: job.expiresAt,
      })
      .execute();
  }

  /** The tenant's job of `kind` (with live counts while it runs), or null. */
  async get(tenant: string, id: string, kind: JobKindName): Promise<JobRecord | null> {
    const r = await this.#db.selectFrom('batch_jobs').selectAll().where('id', '=', id).where('tenant', '=', tenant).where('kind', '=', kind).executeTakeFirst();
    if (!r) return null;
    return (await this.#withLiveCounts([toRecord(r)]))[0]!;
  }

  /** Any tenant's job by id, as stored (workers). */
  async byId(id: string): Promise<JobRecord | null> {
    const r = await this.#db.selectFrom('batch_jobs').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toRecord(r) : null;
  }

  /** The tenant's jobs, newest first, after the job `after` (a cursor from the previous page). */
  async list(tenant: string, kind: JobKindName, limit: number, after: string | null): Promise<JobRecord[]> {
    let q = this.#db.selectFrom('batch_jobs').selectAll().where('tenant', '=', tenant).where('kind', '=', kind);
    if (after !== null) {
      const a = await this.#db.selectFrom('batch_jobs').select(['created_at', 'id']).where('id', '=', after).where('tenant', '=', tenant).executeTakeFirst();
      if (a) q = q.where((eb) => eb.or([eb('created_at', '<', a.created_at), eb.and([eb('created_at', '=', a.created_at), eb('id', '<', a.id)])]));
    }
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
    return this.#withLiveCounts(rows.map(toRecord));
  }

  /** Jobs that are running take their counts and usage from their committed chunks. */
  async #withLiveCounts(jobs: JobRecord[]): Promise<JobRecord[]> {
    const live = jobs.filter((j) => !TERMINAL.has(j.status) && j.chunks > 0).map((j) => j.id);
    if (live.length === 0) return jobs;
    const rows = await this.#db
      .selectFrom('batch_chunks')
      .select((eb) => ['job_id', eb.fn.sum<number>('succeeded').as('ok'), eb.fn.sum<number>('failed').as('bad')])
      .where('job_id', 'in', live)
      .where('state', '=', 'done')
      .groupBy('job_id')
      .execute();
    const by = new Map(rows.map((r) => [r.job_id, r]));
    return jobs.map((j) => {
      const r = by.get(j.id);
      return r ? { ...j, succeeded: Number(r.ok), failed: Number(r.bad) } : j;
    });
  }

  /**
   * Ask a job to stop: validating or in progress → cancelling (a worker then ends it as cancelled, keeping what
   * its committed chunks produced). Returns the job after the change, or the job unchanged with `changed: false`
   * when it is past cancelling (finalizing or ended); null when there is no such job.
   */
  async requestCancel(tenant: string, id: string, kind: JobKindName, now: number): Promise<{ job: JobRecord; changed: boolean } | null> {
    const changed = await this.#db.transaction().execute(async (t) => {
      const j = await this.#lock(
        t.selectFrom('batch_jobs').select(['status', 'times']).where('id', '=', id).where('tenant', '=', tenant).where('kind', '=', kind),
        'update',
      ).executeTakeFirst();
      if (!j) return null;
      if (j.status !== 'validating' && j.status !== 'in_progress') return j.status === 'cancelling';
      const times: JobTimes = { ...(JSON.parse(j.times) as JobTimes), cancelling_at: now };
      await t
        .updateTable('batch_jobs')
        .set({ status: 'cancelling', times: JSON.stringify(times) })
        .where('id', '=', id)
        .execute();
      return true;
    });
    if (changed === null) return null;
    const job = await this.get(tenant, id, kind);
    return job === null ? null : { job, changed };
  }

  // ---- job-level work: validation, finalizing, cancel, expiry ----

  /**
   * Lease a job that needs job-level work: validating, finalizing or cancelling, or in progress with every chunk
   * done or its completion window passed. Null when there is none (or others hold them all).
   */
  async claimJob(owner: string, now: number, leaseMs: number): Promise<JobRecord | null> {
    const free = (eb: ExpressionBuilder<DB, 'batch_jobs'>) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]);
    const candidates = await this.#db
      .selectFrom('batch_jobs')
      .selectAll()
      .where(free)
      .where((eb) =>
        eb.or([
          eb('status', 'in', ['validating', 'finalizing', 'cancelling']),
          eb.and([
            eb('status', '=', 'in_progress'),
            eb.or([
              eb('expires_at', '<', now),
              eb.not(eb.exists(eb.selectFrom('batch_chunks').select('seq').whereRef('batch_chunks.job_id', '=', 'batch_jobs.id').where('state', '<>', 'done'))),
            ]),
          ]),
        ]),
      )
      .orderBy('created_at')
      .limit(8)
      .execute();
    for (const c of candidates) {
      const r = await this.#db
        .updateTable('batch_jobs')
        .set({ lease_owner: owner, lease_until: now + leaseMs })
        .where('id', '=', c.id)
        .where('status', '=', c.status)
        .where(free)
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) === 1) return toRecord(c);
    }
    return null;
  }

  /** Extend the job lease; false when it is no longer `owner`'s. */
  async renewJob(id: string, owner: string, until: number): Promise<boolean> {
    const r = await this.#db.updateTable('batch_jobs').set({ lease_until: until }).where('id', '=', id).where('lease_owner', '=', owner).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async releaseJob(id: string, owner: string): Promise<void> {
    await this.#db.updateTable('batch_jobs').set({ lease_owner: null, lease_until: null }).where('id', '=', id).where('lease_owner', '=', owner).execute();
  }

  /**
   * Run `fn` in a transaction holding the job row (FOR UPDATE), if `owner` still leases it and it is in `from`;
   * `fn` returns the job's new fields. Returns false (nothing changed) otherwise.
   */
  async transition(
    id: string,
    owner: string,
    from: readonly JobStatus[],
    fn: (t: Transaction<DB>, times: JobTimes) => Promise<Partial<Row>>,
  ): Promise<boolean> {
    return this.#db.transaction().execute(async (t) => {
      const j = await this.#lock(t.selectFrom('batch_jobs').select(['status', 'lease_owner', 'times']).where('id', '=', id), 'update').executeTakeFirst();
      if (!j || j.lease_owner !== owner || !from.includes(j.status as JobStatus)) return false;
      const set = await fn(t, JSON.parse(j.times) as JobTimes);
      await t.updateTable('batch_jobs').set(set).where('id', '=', id).execute();
      return true;
    });
  }

  /** Insert a validated job's chunks (inside its transition). */
  static async insertChunks(t: Transaction<DB>, jobId: string, chunks: readonly NewChunk[]): Promise<void> {
    for (let i = 0; i < chunks.length;) {
      // At most INSERT_ROWS chunks or about INSERT_BYTES of input per statement, the event loop free in between
      // (SQLite's driver runs a statement synchronously: one huge INSERT would stall online requests).
      let j = i;
      let bytes = 0;
      while (j < chunks.length && j - i < INSERT_ROWS && (j === i || bytes + chunks[j]!.input.length <= INSERT_BYTES)) bytes += chunks[j++]!.input.length;
      await t
        .insertInto('batch_chunks')
        .values(
          chunks.slice(i, j).map((c, k) => ({
            job_id: jobId,
            seq: i + k,
            first_line: c.firstLine,
            lines: c.lines,
            input: c.input,
            state: 'pending',
            attempts: 0,
            succeeded: 0,
            failed: 0,
          })),
        )
        .execute();
      i = j;
      await yieldLoop();
    }
  }

  /**
   * A job's chunks in order, a page at a time, with what finalizing needs. `input` is read only for chunks that
   * are not done, or for every chunk with `allInputs` (inputs are the large column: finalizing a completed job
   * never reads them).
   */
  static async *chunksOf(
    t: Kysely<DB>,
    jobId: string,
    allInputs = false,
  ): AsyncGenerator<Pick<DB['batch_chunks'], 'seq' | 'state' | 'input' | 'output' | 'error_output' | 'succeeded' | 'failed' | 'usage'>> {
    const PAGE = 16;
    const input = allInputs ? sql<string>`input` : sql<string>`CASE WHEN state = 'done' THEN '' ELSE input END`;
    for (let seq = 0; ; seq += PAGE) {
      const rows = await t
        .selectFrom('batch_chunks')
        .select(['seq', 'state', input.as('input'), 'output', 'error_output', 'succeeded', 'failed', 'usage'])
        .where('job_id', '=', jobId)
        .where('seq', '>=', seq)
        .where('seq', '<', seq + PAGE)
        .orderBy('seq')
        .execute();
      yield* rows;
      if (rows.length < PAGE) return;
    }
  }

  /** A job's chunk inputs, in order (retry-failed reads them). */
  async *chunkInputs(jobId: string): AsyncGenerator<string> {
    for await (const c of JobStore.chunksOf(this.#db, jobId, true)) yield c.input;
  }

  // ---- chunks ----

  /** Lease the next runnable chunk of a job in progress (oldest job first): pending, or running with its lease run out. */
  async claimChunk(owner: string, now: number, leaseMs: number): Promise<LeasedChunk | null> {
    const skip = this.#dialect === 'postgres' ? sql`FOR UPDATE OF c SKIP LOCKED` : sql``;
    const r = await sql<{ job_id: string; seq: number; first_line: number; lines: number; input: string; attempts: number }>`
      UPDATE batch_chunks SET state = 'running', lease_owner = ${owner}, lease_until = ${now + leaseMs}, attempts = attempts + 1
      WHERE (job_id, seq) = (
        SELECT c.job_id, c.seq FROM batch_chunks c JOIN batch_jobs j ON j.id = c.job_id
        WHERE j.status = 'in_progress' AND (j.expires_at IS NULL OR j.expires_at >= ${now})
          AND (c.state = 'pending' OR (c.state = 'running' AND c.lease_until < ${now}))
        ORDER BY j.created_at, c.seq LIMIT 1 ${skip})
      RETURNING job_id, seq, first_line, lines, input, attempts`.execute(this.#db);
    const c = r.rows[0];
    return c
      ? { jobId: c.job_id, seq: Number(c.seq), firstLine: Number(c.first_line), lines: Number(c.lines), input: c.input, attempts: Number(c.attempts) }
      : null;
  }

  /** Extend a chunk lease: 'held' while `owner` has it and its job is in progress; 'lost' or 'stopped' (job no longer running) otherwise. */
  async renewChunk(c: LeasedChunk, owner: string, until: number): Promise<'held' | 'lost' | 'stopped'> {
    const r = await this.#db
      .updateTable('batch_chunks')
      .set({ lease_until: until })
      .where('job_id', '=', c.jobId)
      .where('seq', '=', c.seq)
      .where('lease_owner', '=', owner)
      .where('state', '=', 'running')
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) return 'lost';
    const j = await this.#db.selectFrom('batch_jobs').select('status').where('id', '=', c.jobId).executeTakeFirst();
    return j?.status === 'in_progress' ? 'held' : 'stopped';
  }

  /**
   * Commit a chunk: its output and its completion in one statement, while `owner` holds its lease and its job is
   * in progress (the job row read FOR SHARE: finalizing cannot start in between). False = discarded.
   */
  async commitChunk(c: LeasedChunk, owner: string, res: ChunkResult): Promise<boolean> {
    return this.#db.transaction().execute(async (t) => {
      const j = await this.#lock(t.selectFrom('batch_jobs').select('status').where('id', '=', c.jobId), 'share').executeTakeFirst();
      if (j?.status !== 'in_progress') return false;
      const r = await t
        .updateTable('batch_chunks')
        .set({
          state: 'done',
          output: res.output,
          error_output: res.errorOutput,
          succeeded: res.succeeded,
          failed: res.failed,
          usage: JSON.stringify(res.usage),
          done_by: owner,
          lease_owner: null,
          lease_until: null,
        })
        .where('job_id', '=', c.jobId)
        .where('seq', '=', c.seq)
        .where('lease_owner', '=', owner)
        .where('state', '=', 'running')
        .executeTakeFirst();
      return Number(r.numUpdatedRows) === 1;
    });
  }

  /**
   * A job in progress whose committed chunks failed more than `budget` lines stops taking chunks: it goes to
   * finalizing (which ends it as failed, keeping what committed). True when this call moved it.
   */
  async stopOverBudget(jobId: string, budget: number, now: number): Promise<boolean> {
    return this.#db.transaction().execute(async (t) => {
      const j = await this.#lock(t.selectFrom('batch_jobs').select(['status', 'times']).where('id', '=', jobId), 'update').executeTakeFirst();
      if (j?.status !== 'in_progress') return false;
      const r = await t
        .selectFrom('batch_chunks')
        .select((eb) => eb.fn.sum<number>('failed').as('bad'))
        .where('job_id', '=', jobId)
        .where('state', '=', 'done')
        .executeTakeFirst();
      if (Number(r?.bad ?? 0) <= budget) return false;
      const times: JobTimes = { ...(JSON.parse(j.times) as JobTimes), finalizing_at: now };
      await t
        .updateTable('batch_jobs')
        .set({ status: 'finalizing', times: JSON.stringify(times) })
        .where('id', '=', jobId)
        .execute();
      return true;
    });
  }

  /** Give a chunk back (pending again) when its worker stops without committing. */
  async releaseChunk(c: LeasedChunk, owner: string): Promise<void> {
    await this.#db
      .updateTable('batch_chunks')
      .set({ state: 'pending', lease_owner: null, lease_until: null })
      .where('job_id', '=', c.jobId)
      .where('seq', '=', c.seq)
      .where('lease_owner', '=', owner)
      .where('state', '=', 'running')
      .execute();
  }

  /** SQLite holds one process: chunks and jobs leased before a restart are free at once. */
  async releaseAllLeases(): Promise<void> {
    await this.#db.updateTable('batch_chunks').set({ state: 'pending', lease_owner: null, lease_until: null }).where('state', '=', 'running').execute();
    await this.#db.updateTable('batch_jobs').set({ lease_owner: null, lease_until: null }).where('lease_owner', 'is not', null).execute();
  }

  /** Which worker committed each of a job's chunks (tests and diagnostics). */
  async committers(jobId: string): Promise<Array<{ seq: number; doneBy: string | null; attempts: number }>> {
    const rows = await this.#db.selectFrom('batch_chunks').select(['seq', 'done_by', 'attempts']).where('job_id', '=', jobId).orderBy('seq').execute();
    return rows.map((r) => ({ seq: Number(r.seq), doneBy: r.done_by, attempts: Number(r.attempts) }));
  }
}
