/**
 * @module
 * What differs between kinds of batch job, behind one executor. The worker loop, the leases, the chunk commit,
 * cancel, expiry and finalizing are the same for every job (worker.ts); a {@link JobKind} says how a job's input
 * becomes chunks, how a chunk's lines run, how a line that never ran is reported and how the output file is
 * written. Two kinds: `openai` (the /v1/batches request lines, openai-kind.ts) and `v2` (rows of a JSONL, CSV or
 * Parquet file scored by an ONNX model, v2-kind.ts).
 */
import type { Flow } from '../serving/index.js';
import type { JobRecord, JobUsage, LeasedChunk, NewChunk } from './jobs.js';
import type { LineError } from './openai-format.js';
import type { LineUsage } from './types.js';

/** What a chunk's lines produced: output and error lines (each ending in '\n'), counts, usage. */
export interface ChunkRun {
  readonly output: string;
  readonly errorOutput: string;
  readonly succeeded: number;
  readonly failed: number;
  readonly usage: JobUsage;
  /** Per-line usage recorded for the tenant once the chunk commits. */
  readonly lineUsage: readonly LineUsage[];
}

/** A job's input checked and split: its chunks and line count, or the errors that fail the job. */
export type Prepared = { readonly chunks: readonly NewChunk[]; readonly total: number } | { readonly errors: readonly LineError[] };

export interface RunContext {
  /** The job's low-weight fair-queueing flow. */
  readonly flow: Flow;
  /** Aborted when the job stops or the lease was lost. */
  readonly signal: AbortSignal;
}

/** The output file of a finished job: its name and its bytes from the committed chunks' output lines, in order. */
export interface OutputFile {
  readonly filename: string;
  readonly content: AsyncIterable<Uint8Array>;
}

export interface JobKind {
  /** Metric label of the job's lines (`switchyard_batch_*{endpoint}`). */
  endpoint(job: JobRecord): string;
  /** Read and check the input; split it into chunks of `chunkLines` lines. */
  prepare(job: JobRecord, chunkLines: number): Promise<Prepared>;
  /** Run one leased chunk's lines. Never throws for a bad line (it goes to the error output). */
  runChunk(job: JobRecord, c: LeasedChunk, ctx: RunContext): Promise<ChunkRun>;
  /** Error lines (each ending in '\n') for a chunk's lines that never ran (`code`: batch_expired). */
  unrun(job: JobRecord, input: string, code: string, message: string): string;
  /** The output file from the committed output lines (JSONL text, in input order). */
  outputFile(job: JobRecord, lines: AsyncIterable<string>): OutputFile;
  /** Most failed lines before the job fails (null = no budget: failed lines never fail the job). */
  failureBudget(job: JobRecord): number | null;
}

/** Each line's text (chunk inputs and outputs are JSONL). */
export function linesOf(input: string): string[] {
  return input.split('\n').filter((l) => l !== '');
}

/** Text parts as bytes. */
export async function* utf8Parts(parts: AsyncIterable<string>): AsyncGenerator<Uint8Array> {
  for await (const p of parts) if (p !== '') yield Buffer.from(p);
}
