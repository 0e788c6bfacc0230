/**
 * @module
 * Per-request tensor limits: rows and elements one request may carry, per server (--max-request-rows,
 * --max-request-elements) and per model (config `max_request_rows`, `max_request_elements`). Transports check
 * each input's shape against them as they read it, before any data is decoded or allocated, so an oversized
 * request costs its parse, not its tensors.
 */
import { err } from '../errors.js';

export interface RequestLimits {
  /** Most rows (dim 0 of each input); 0 = no limit. */
  readonly rows: number;
  /** Most elements over all inputs together; 0 = no limit. */
  readonly elements: number;
}

export const NO_LIMITS: RequestLimits = Object.freeze({ rows: 0, elements: 0 });

/**
 * Count one input (its shape and element count) against `limits`; returns the request's element total so far.
 * 413 SY_ERR_TENSOR_TOO_LARGE naming the input and the limit when it is over.
 * @example let total = 0; for (const i of inputs) total = checkShape(limits, i.name, i.shape, elementCount(i.shape), total);
 */
export function checkShape(limits: RequestLimits, name: string, shape: readonly number[], count: number, total: number): number {
  if (limits.rows > 0 && shape.length > 0 && shape[0]! > limits.rows) {
    throw err('SY_ERR_TENSOR_TOO_LARGE', `input "${name}" has ${shape[0]} rows; one request may carry at most ${limits.rows}`);
  }
  const sum = total + count;
  if (limits.elements > 0 && sum > limits.elements) {
    throw err('SY_ERR_TENSOR_TOO_LARGE', `input "${name}" brings the request to ${sum} elements; one request may carry at most ${limits.elements}`);
  }
  return sum;
}

/** Entity rows of a feature-joined request against the row limit. */
export function checkEntityRows(limits: RequestLimits, rows: number): void {
  if (limits.rows > 0 && rows > limits.rows) {
    throw err('SY_ERR_TENSOR_TOO_LARGE', `the request names ${rows} entities; one request may carry at most ${limits.rows} rows`);
  }
}
