/**
 * @module
 * Usage accounting follows the data plane's request events: every inference attempt, from any transport
 * (V2 REST, OpenAI embeddings on an ONNX encoder, gRPC, batch jobs), is charged to its tenant by rows and
 * compute share. Nothing on the hot path calls the meter.
 */
import diagnostics from 'node:diagnostics_channel';
import { channels, type RequestEvent } from '../events.js';
import type { UsageMeter } from './usage.js';

/**
 * Record the request events published by `origin` (an InferenceService) into `meter`; events of other
 * instances in the same process are ignored. Returns the unsubscribe function.
 */
export function meterRequests(origin: object, meter: UsageMeter): () => void {
  const onRequest = (m: unknown): void => {
    const e = m as RequestEvent;
    if (e.origin !== origin) return;
    meter.record({ tenant: e.tenant, model: e.model, version: e.versionNumber, rows: e.rows, computeMs: e.computeShareMs, ok: e.ok });
  };
  diagnostics.subscribe(channels.request.name as string, onRequest);
  return () => diagnostics.unsubscribe(channels.request.name as string, onRequest);
}
