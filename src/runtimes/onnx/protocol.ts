/**
 * @module
 * Messages between the serving thread and an ONNX instance's worker thread. Tensor buffers are transferred,
 * not copied, in both directions.
 */
import type { NumericArray, OrtType } from '../../tensor/index.js';

/** A tensor as onnxruntime's Node binding takes and gives it: typed arrays, or strings for string tensors. */
export interface WireTensor {
  type: OrtType;
  dims: number[];
  data: NumericArray | string[];
}

export interface WireValueMeta {
  name: string;
  type: string | null;
  shape: Array<number | string>;
}

export interface WorkerInit {
  modelPath: string;
  intraOpThreads: number;
  executionProvider: 'cpu' | 'cuda';
  deviceId: number;
  allowSpinning: boolean;
}

export type ToWorker = { op: 'run'; id: number; inputs: WireTensor[] };

export type FromWorker =
  | { op: 'loaded'; inputs: WireValueMeta[]; outputs: WireValueMeta[]; provider: string; warning: string | null }
  | { op: 'load-failed'; message: string }
  | { op: 'result'; id: number; outputs: WireTensor[] }
  | { op: 'failed'; id: number; message: string };
