/**
 * @module
 * Prometheus metrics of batch jobs, fed by the `switchyard:batch:*` diagnostics channels the batch workers
 * publish: lines and chunks this replica committed (rows/s is `rate(switchyard_batch_lines_total[1m])`), chunks
 * it discarded, chunk durations, and jobs it ended by status.
 */
import diagnostics from 'node:diagnostics_channel';
import { Counter, Histogram, type Registry } from 'prom-client';
import { channels, type BatchChunkEvent, type BatchJobEvent } from '../events.js';

/** Register the batch metrics on `registry` and subscribe; returns the unsubscribe function. */
export function watchBatch(registry: Registry): () => void {
  const registers = [registry];
  const lines = new Counter({
    name: 'switchyard_batch_lines_total',
    help: 'Batch lines committed by this replica, by endpoint and outcome (succeeded, failed).',
    labelNames: ['endpoint', 'outcome'],
    registers,
  });
  const chunks = new Counter({
    name: 'switchyard_batch_chunks_total',
    help: 'Batch chunks this replica ran, by outcome (committed, discarded: lease lost or job stopped).',
    labelNames: ['outcome'],
    registers,
  });
  const duration = new Histogram({
    name: 'switchyard_batch_chunk_duration_seconds',
    help: "Time to run a batch chunk's lines, lease to commit.",
    labelNames: ['endpoint'],
    registers,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
  });
  const jobs = new Counter({
    name: 'switchyard_batch_jobs_total',
    help: 'Batch jobs ended by this replica, by status (completed, failed, expired, cancelled).',
    labelNames: ['status'],
    registers,
  });
  const onChunk = (m: unknown): void => {
    const e = m as BatchChunkEvent;
    chunks.inc({ outcome: e.committed ? 'committed' : 'discarded' });
    if (!e.committed) return;
    duration.observe({ endpoint: e.endpoint }, e.seconds);
    if (e.succeeded > 0) lines.inc({ endpoint: e.endpoint, outcome: 'succeeded' }, e.succeeded);
    if (e.failed > 0) lines.inc({ endpoint: e.endpoint, outcome: 'failed' }, e.failed);
  };
  const onJob = (m: unknown): void => jobs.inc({ status: (m as BatchJobEvent).status });
  diagnostics.subscribe(channels.batchChunk.name as string, onChunk);
  diagnostics.subscribe(channels.batchJob.name as string, onJob);
  return () => {
    diagnostics.unsubscribe(channels.batchChunk.name as string, onChunk);
    diagnostics.unsubscribe(channels.batchJob.name as string, onJob);
  };
}
