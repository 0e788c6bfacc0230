/**
 * @module
 * Usage accounting follows the data plane's request events: every inference attempt, from any transport
 * (V2 REST, OpenAI embeddings on an ONNX encoder, gRPC, batch jobs), is charged to its tenant by rows and
 * compute share. Nothing on the hot path calls the meter.
 */
import diagnostics from 'node:diagnostics_channel';
import { channels, type FailureReason, type RequestEvent } from '../events.js';
import type { UsageMeter } from './usage.js';

/**
 * Record the request events published by `origin` (an InferenceService) into `meter`; events of other
 * instances in the same process are ignored. Returns the unsubscribe function.
 */
/** Failure reasons that are the caller's fault (answered 4xx): usage counts them as invalid, not as errors. */
const CALLER_FAULTS: ReadonlySet<FailureReason> = new Set(['invalid_input', 'not_found', 'cancelled']);

export function meterRequests(origin: object, meter: UsageMeter): () => void {
  const onRequest = (m: unknown): void => {
    const e = m as RequestEvent;
    if (e.origin !== origin) return;
    meter.record({
      tenant: e.tenant,
      model: e.model,
      version: e.versionNumber,
      keyId: e.keyId ?? '',
      rows: e.rows,
      computeMs: e.computeShareMs,
      ok: e.ok,
      invalid: e.reason !== null && CALLER_FAULTS.has(e.reason),
    });
  };
  diagnostics.subscribe(channels.request.name as string, onRequest);
  return () => diagnostics.unsubscribe(channels.request.name as string, onRequest);
}
