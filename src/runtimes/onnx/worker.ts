/**
 * @module
 * Worker-thread body of one ONNX instance. onnxruntime-node's `run` executes synchronously on the calling
 * thread, so each instance lives on its own worker: the HTTP event loop never blocks on inference.
 */
import { parentPort, workerData } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import type { FromWorker, ToWorker, WireTensor, WireValueMeta, WorkerInit } from './protocol.js';

const init = workerData as WorkerInit;
const port = parentPort!;
const post = (m: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(m, transfer);

function sessionOptions(provider: 'cpu' | 'cuda'): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: init.intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    executionProviders: provider === 'cuda' ? [{ name: 'cuda', deviceId: init.deviceId }, 'cpu'] : ['cpu'],
    // Spinning intra-op threads would steal the cores the HTTP thread needs between batches.
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

const meta = (m: readonly ort.InferenceSession.ValueMetadata[]): WireValueMeta[] =>
  m.map((v) => (v.isTensor ? { name: v.name, type: v.type, shape: [...v.shape] } : { name: v.name, type: null, shape: [] }));

async function load(): Promise<ort.InferenceSession | null> {
  let warning: string | null = null;
  let provider: 'cpu' | 'cuda' = init.executionProvider;
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(init.modelPath, sessionOptions(provider));
  } catch (e) {
    if (provider !== 'cuda') {
      post({ op: 'load-failed', message: (e as Error).message });
      return null;
    }
    warning = `CUDA execution provider unavailable (${(e as Error).message.split('\n')[0]}); using CPU`;
    provider = 'cpu';
    try {
      session = await ort.InferenceSession.create(init.modelPath, sessionOptions(provider));
    } catch (e2) {
      post({ op: 'load-failed', message: (e2 as Error).message });
      return null;
    }
  }
  post({ op: 'loaded', inputs: meta(session.inputMetadata), outputs: meta(session.outputMetadata), provider, warning });
  return session;
}

const session = await load();
if (session) {
  const names = session.inputNames;
  port.on('message', (m: ToWorker) => {
    const feeds: Record<string, ort.Tensor> = {};
    try {
      for (let i = 0; i < names.length; i++) {
        const t = m.inputs[i]!;
        feeds[names[i]!] = new ort.Tensor(t.type, t.data as never, t.dims);
      }
    } catch (e) {
      post({ op: 'failed', id: m.id, message: (e as Error).message });
      return;
    }
    session.run(feeds).then(
      (out) => {
        const outputs: WireTensor[] = [];
        const transfer: ArrayBuffer[] = [];
        for (const name of session.outputNames) {
          const t = out[name] as ort.Tensor;
          const data = t.data as WireTensor['data'];
          outputs.push({ type: t.type as WireTensor['type'], dims: [...t.dims], data });
          if (!Array.isArray(data) && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength) {
            transfer.push(data.buffer as ArrayBuffer);
          }
        }
        post({ op: 'result', id: m.id, outputs }, transfer);
      },
      (e: unknown) => post({ op: 'failed', id: m.id, message: (e as Error).message }),
    );
  });
} else {
  process.exit(0);
}
