/**
 * @module
 * A V2 batch job as the API, the SSE stream and the webhook show it: its spec, status, counts and progress
 * (rows/s since it started running and an ETA from that rate), its files, and why it failed. Times are ISO 8601.
 */
import { TERMINAL, type JobTimes, type V2Job } from './jobs.js';

const iso = (ms: number | undefined | null): string | null => (ms === undefined || ms === null ? null : new Date(ms).toISOString());

export interface V2JobView {
  readonly [k: string]: unknown;
}

/** The job at `now` (epoch ms). */
export function v2JobView(j: V2Job, now: number): V2JobView {
  const s = j.spec;
  const t: JobTimes = j.times;
  const done = j.succeeded + j.failed;
  const started = t.in_progress_at ?? null;
  const end = t.completed_at ?? t.failed_at ?? t.cancelled_at ?? null;
  const seconds = started === null ? 0 : ((end ?? now) - started) / 1000;
  const rate = seconds > 0 ? done / seconds : null;
  const running = !TERMINAL.has(j.status);
  return {
    id: j.id,
    status: j.status,
    model: s.model,
    version: s.version,
    input: s.input,
    format: s.format,
    mapping: s.mapping,
    keyField: s.keyField,
    includedFields: s.includedFields,
    outputs: s.outputs,
    outputFormat: s.outputFormat,
    maxFailedRows: s.maxFailedRows,
    chunkRows: s.chunkRows,
    webhook: s.webhook,
    retryOf: s.retryOf,
    counts: { total: j.total, succeeded: j.succeeded, failed: j.failed, done },
    progress: {
      fraction: j.total > 0 ? done / j.total : 0,
      rowsPerSecond: rate,
      etaSeconds: running && rate !== null && rate > 0 && j.total > 0 ? (j.total - done) / rate : null,
    },
    outputFileId: j.outputFileId,
    errorFileId: j.errorFileId,
    errors: j.errors,
    createdAt: iso(j.createdAt),
    startedAt: iso(started),
    endedAt: iso(end),
  };
}
