/**
 * @module
 * One ONNX execution instance: a worker thread holding its own InferenceSession. Built by the async
 * `OnnxInstance.create()` factory, which resolves only once the session has loaded.
 */
import { Worker } from 'node:worker_threads';
import { err } from '../../errors.js';
import type { Tensor } from '../../tensor/index.js';
import type { ModelInstance } from '../types.js';
import type { FromWorker, WireTensor, WireValueMeta, WorkerInit } from './protocol.js';
import { toTensor, toWire } from './session.js';

const WORKER_URL = new URL('./worker.js', import.meta.url);

interface Pending {
  resolve: (t: Tensor[]) => void;
  reject: (e: Error) => void;
}

export interface InstanceInfo {
  inputs: WireValueMeta[];
  outputs: WireValueMeta[];
  provider: string;
  warning: string | null;
}

export class OnnxInstance implements ModelInstance {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #failure: Error | null = null;

  private constructor(worker: Worker) {
    // Private: instances exist only once their session has loaded (see create()).
    this.#worker = worker;
    worker.on('message', (m: FromWorker) => this.#onMessage(m));
    worker.on('error', (e) => this.#fail(e));
    worker.on('exit', (code) => this.#fail(new Error(`instance worker exited with code ${code}`)));
  }

  static create(init: WorkerInit): Promise<{ instance: OnnxInstance; info: InstanceInfo }> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(WORKER_URL, { workerData: init });
      const onError = (e: Error): void => reject(e);
      worker.once('error', onError);
      worker.once('message', (m: FromWorker) => {
        worker.off('error', onError);
        if (m.op === 'loaded') {
          resolve({ instance: new OnnxInstance(worker), info: m });
        } else {
          void worker.terminate();
          reject(err('SY_ERR_INFERENCE_FAILED', m.op === 'load-failed' ? m.message : `unexpected ${m.op} before load`));
        }
      });
    });
  }

  get inflight(): number {
    return this.#pending.size;
  }

  run(inputs: readonly Tensor[]): Promise<Tensor[]> {
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    const wire: WireTensor[] = [];
    const transfer: ArrayBuffer[] = [];
    try {
      for (let i = 0; i < inputs.length; i++) {
        const t = inputs[i]!;
        if (Array.isArray(t.data)) {
          wire.push(toWire(t, `#${i}`)); // strings are cloned to the thread
          continue;
        }
        // Transfer the buffer; a view on a larger one (a slab, a batch) is copied first: posting it would clone
        // the whole buffer, and transferring it would take the other views' memory away.
        let a = t.data;
        if (a.byteOffset !== 0 || a.byteLength !== a.buffer.byteLength) a = a.slice();
        transfer.push(a.buffer as ArrayBuffer);
        wire.push({ type: t.dtype.ort, dims: t.shape as number[], data: a });
      }
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ op: 'run', id, inputs: wire }, transfer);
    });
  }

  async dispose(): Promise<void> {
    this.#failure ??= err('SY_ERR_SHUTTING_DOWN', 'instance disposed');
    await this.#worker.terminate();
  }

  #onMessage(m: FromWorker): void {
    if (m.op !== 'result' && m.op !== 'failed') return;
    const p = this.#pending.get(m.id);
    if (!p) return;
    this.#pending.delete(m.id);
    if (m.op === 'failed') {
      p.reject(err('SY_ERR_INFERENCE_FAILED', `inference failed: ${m.message}`));
      return;
    }
    try {
      p.resolve(m.outputs.map(toTensor));
    } catch (e) {
      p.reject(e as Error);
    }
  }

  #fail(e: Error): void {
    this.#failure ??= e;
    for (const p of this.#pending.values()) p.reject(err('SY_ERR_INFERENCE_FAILED', `instance failed: ${e.message}`));
    this.#pending.clear();
  }
}
