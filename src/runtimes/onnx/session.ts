/**
 * @module
 * onnxruntime session creation shared by worker and main-thread instances: thread settings, execution
 * provider with CUDA → CPU fallback, and metadata in wire form.
 */
import ort from 'onnxruntime-node';
import { err } from '../../errors.js';
import { dtypeFromOrt, fromRuntimeStrings, toRuntimeStrings, type Tensor } from '../../tensor/index.js';
import type { WireTensor, WireValueMeta, WorkerInit } from './protocol.js';

export function sessionOptions(init: WorkerInit, provider: 'cpu' | 'cuda'): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: init.intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    executionProviders: provider === 'cuda' ? [{ name: 'cuda', deviceId: init.deviceId }, 'cpu'] : ['cpu'],
    // Spinning keeps intra-op threads hot between the ops of a batch (faster heavy models) at the price of
    // CPU the HTTP thread could use; configurable per model (allow_spinning).
    extra: { session: { intra_op: { allow_spinning: init.allowSpinning ? '1' : '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

export const wireMeta = (m: readonly ort.InferenceSession.ValueMetadata[]): WireValueMeta[] =>
  m.map((v) => (v.isTensor ? { name: v.name, type: v.type, shape: [...v.shape] } : { name: v.name, type: null, shape: [] }));

/** Feeds for `session.run` from inputs in the session's input order. */
export function feedsFor(session: ort.InferenceSession, inputs: readonly WireTensor[]): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  const names = session.inputNames;
  for (let i = 0; i < names.length; i++) {
    const t = inputs[i]!;
    feeds[names[i]!] = new ort.Tensor(t.type, t.data as never, t.dims);
  }
  return feeds;
}

/** A runtime output (wire form) as a served tensor; unsupported element types are an inference failure. */
export function toTensor(w: WireTensor): Tensor {
  const dtype = dtypeFromOrt(w.type);
  if (!dtype) throw err('SY_ERR_INFERENCE_FAILED', `model produced unsupported tensor type ${w.type}`);
  return { dtype, shape: w.dims, data: Array.isArray(w.data) ? fromRuntimeStrings(w.data) : w.data };
}

/** A served tensor in the binding's form: BYTES elements become strings (checked: see toRuntimeStrings). */
export function toWire(t: Tensor, name: string): WireTensor {
  const data = Array.isArray(t.data) ? toRuntimeStrings(name, t.data) : t.data;
  return { type: t.dtype.ort, dims: t.shape as number[], data };
}

export interface OpenedSession {
  session: ort.InferenceSession;
  provider: 'cpu' | 'cuda';
  warning: string | null;
}

/** Create a session; a CUDA request that fails falls back to CPU with a warning. */
export async function openSession(init: WorkerInit): Promise<OpenedSession> {
  try {
    return {
      session: await ort.InferenceSession.create(init.modelPath, sessionOptions(init, init.executionProvider)),
      provider: init.executionProvider,
      warning: null,
    };
  } catch (e) {
    if (init.executionProvider !== 'cuda') throw e;
    const warning = `CUDA execution provider unavailable (${(e as Error).message.split('\n')[0]}); using CPU`;
    return { session: await ort.InferenceSession.create(init.modelPath, sessionOptions(init, 'cpu')), provider: 'cpu', warning };
  }
}
