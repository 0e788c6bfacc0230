/**
 * @module
 * Worker-thread body of one ONNX instance. onnxruntime-node's `run` executes synchronously on the calling
 * thread, so each worker instance has its own thread: the HTTP event loop never blocks on inference.
 */
import { parentPort, workerData } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import type { FromWorker, ToWorker, WireTensor, WorkerInit } from './protocol.js';
import { feedsFor, openSession, wireMeta } from './session.js';

const port = parentPort!;
const post = (m: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(m, transfer);

let opened;
try {
  opened = await openSession(workerData as WorkerInit);
} catch (e) {
  post({ op: 'load-failed', message: (e as Error).message });
}
if (opened) {
  const { session } = opened;
  post({
    op: 'loaded',
    inputs: wireMeta(session.inputMetadata),
    outputs: wireMeta(session.outputMetadata),
    provider: opened.provider,
    warning: opened.warning,
  });
  port.on('message', (m: ToWorker) => {
    let feeds: Record<string, ort.Tensor>;
    try {
      feeds = feedsFor(session, m.inputs);
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
  port.close();
}
