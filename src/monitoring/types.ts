/**
 * @module
 * Shapes shared by model monitoring: the prediction log's records, reference profiles, drift reports and
 * alert rules. JSON-ready (they go to the metadata store, the admin API and webhooks as they are).
 */

/** A tensor as JSON: V2 datatype, shape, flat data (numbers; BYTES as strings; INT64 beyond 2^53 as strings). */
export interface TensorJson {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
  readonly data: readonly (number | string | boolean)[];
  /** Set when the tensor had more elements than the log keeps: `data` is empty. */
  readonly truncated?: boolean;
  /**
   * Storage form of numeric tensors (the log's sinks): base64 of the elements' little-endian bytes (FP16 as its
   * half-precision bits), `data` empty. Records read back through the API are unpacked into `data`.
   */
  readonly b64?: string;
}

/** One sampled prediction. */
export interface PredictionRecord {
  /** ISO-8601 UTC, milliseconds. */
  readonly at: string;
  readonly model: string;
  readonly version: number;
  /** '' = no tenant (open mode or platform key). */
  readonly tenant: string;
  readonly arm: string | null;
  readonly requestId: string;
  readonly latencyMs: number;
  readonly inputs: readonly TensorJson[];
  readonly outputs: readonly TensorJson[];
}

/** Which column of which tensor a monitored feature is, and how it is treated. */
export interface FeatureSpec {
  /** Feature name in reports and metrics (e.g. "age", or "features[3]" by default). */
  readonly name: string;
  readonly source: 'input' | 'output';
  /** Tensor name. */
  readonly tensor: string;
  /** Index along the last dimension (0 for a [N] or [N,1] tensor). */
  readonly column: number;
  readonly kind: 'numeric' | 'categorical';
}

/** Drift thresholds: a feature drifts when any metric crosses its threshold. */
export interface DriftThresholds {
  /** Population stability index. Default 0.2 ("significant drift"). */
  readonly psi: number;
  /** Jensen-Shannon distance (base 2, 0..1). Default 0.1. */
  readonly js: number;
  /** Kolmogorov-Smirnov p-value below this = drift (numeric features). Default 0.01. */
  readonly ksPValue: number;
}

export const DEFAULT_THRESHOLDS: DriftThresholds = Object.freeze({ psi: 0.2, js: 0.1, ksPValue: 0.01 });
