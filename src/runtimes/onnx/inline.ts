/**
 * @module
 * A main-thread ONNX instance for light models: no thread hop per batch. onnxruntime-node runs synchronously,
 * so this blocks the event loop for the duration of each batch; the runtime only chooses it (instance_mode
 * "auto") when a full batch measured at load time runs within a small budget.
 */
import ort from 'onnxruntime-node';
import { err } from '../../errors.js';
import type { OrtType, Tensor } from '../../tensor/index.js';
import type { ModelInstance } from '../types.js';
import type { InstanceInfo } from './instance.js';
import type { WireTensor, WorkerInit } from './protocol.js';
import { feedsFor, openSession, toTensor, toWire, wireMeta } from './session.js';

export class InlineInstance implements ModelInstance {
  readonly #session: ort.InferenceSession;
  #inflight = 0;
  #disposed = false;

  private constructor(session: ort.InferenceSession) {
    // Private: built by create(), once the session has loaded.
    this.#session = session;
  }

  static async create(init: WorkerInit): Promise<{ instance: InlineInstance; info: InstanceInfo }> {
    const o = await openSession(init);
    return {
      instance: new InlineInstance(o.session),
      info: { inputs: wireMeta(o.session.inputMetadata), outputs: wireMeta(o.session.outputMetadata), provider: o.provider, warning: o.warning },
    };
  }

  get inflight(): number {
    return this.#inflight;
  }

  async run(inputs: readonly Tensor[]): Promise<Tensor[]> {
    if (this.#disposed) throw err('SY_ERR_SHUTTING_DOWN', 'instance disposed');
    const s = this.#session;
    const feeds = feedsFor(
      s,
      inputs.map((t, i) => toWire(t, s.inputNames[i] ?? `#${i}`)),
    );
    this.#inflight++;
    let out: ort.InferenceSession.ReturnType;
    try {
      out = await s.run(feeds);
    } catch (e) {
      throw err('SY_ERR_INFERENCE_FAILED', `inference failed: ${(e as Error).message}`);
    } finally {
      this.#inflight--;
    }
    return s.outputNames.map((name) => {
      const t = out[name] as ort.Tensor;
      return toTensor({ type: t.type as OrtType, dims: [...t.dims], data: t.data as WireTensor['data'] });
    });
  }

  async dispose(): Promise<void> {
    this.#disposed = true;
    await this.#session.release();
  }
}
