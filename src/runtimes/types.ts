/**
 * @module
 * The runtime contract: a Runtime loads an artifact into a LoadedModel with a signature and one or more
 * instances; the serving layer owns queueing, batching and dispatch across those instances.
 */
import type { DtypeInfo, Tensor } from '../tensor/index.js';

/** One input or output: V2 dtype and shape, -1 for dynamic dims. */
export interface TensorSpec {
  readonly name: string;
  readonly dtype: DtypeInfo;
  readonly shape: readonly number[];
}

export interface Signature {
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
}

/** One input or output as JSON (V2 metadata, registry records): V2 datatype name and shape (-1 = dynamic). */
export interface TensorSpecJson {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
}

export interface SignatureJson {
  readonly inputs: readonly TensorSpecJson[];
  readonly outputs: readonly TensorSpecJson[];
}

export function tensorSpecJson(s: TensorSpec): TensorSpecJson {
  return { name: s.name, datatype: s.dtype.v2, shape: s.shape };
}

export function signatureJson(sig: Signature): SignatureJson {
  return { inputs: sig.inputs.map(tensorSpecJson), outputs: sig.outputs.map(tensorSpecJson) };
}

/** A single execution slot. `run` takes inputs in signature order; the instance owns them once called. */
export interface ModelInstance {
  /** Batches currently executing on this instance. */
  readonly inflight: number;
  run(inputs: readonly Tensor[]): Promise<Tensor[]>;
  dispose(): Promise<void>;
}

export interface LoadOptions {
  readonly instances: number;
  readonly intraOpThreads: number;
  readonly executionProvider: 'cpu' | 'cuda';
  readonly deviceId: number;
  /** Let onnxruntime's intra-op threads spin-wait between ops (faster for heavy models, costs idle CPU). */
  readonly allowSpinning: boolean;
  /** Run one instance on the calling (main) thread instead of worker threads. */
  readonly inline?: boolean;
}

export interface LoadedModel {
  readonly platform: string;
  readonly signature: Signature;
  /** Approximate bytes held by all instances. */
  readonly residentBytes: number;
  readonly instances: readonly ModelInstance[];
  /** Execution provider actually in use (`cuda` may fall back to `cpu`). */
  readonly executionProvider: string;
  /** Whether the (single) instance runs on the calling thread. */
  readonly inline: boolean;
  /**
   * Throws a 400 (SY_ERR_NOT_REPRESENTABLE) for inputs (signature order) this runtime cannot carry unaltered,
   * e.g. BYTES with a NUL for onnxruntime's string tensors. The core calls it per request, before batching, so
   * one caller's unfit input never fails a batch it shares with others. Absent = any valid input is taken.
   */
  check?(inputs: readonly Tensor[]): void;
  /** A load-time warning to log (e.g. CUDA requested but unavailable), or absent. */
  readonly warning?: string;
  dispose(): Promise<void>;
}

export interface Runtime {
  readonly name: string;
  load(artifactPath: string, options: LoadOptions): Promise<LoadedModel>;
  /** Open the artifact just long enough to read its signature; throws when it is not a loadable model. */
  inspect(artifactPath: string): Promise<Signature>;
}
