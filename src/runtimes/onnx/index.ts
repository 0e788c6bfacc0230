/**
 * @module
 * The ONNX runtime (onnxruntime-node): loads N worker-thread instances of a model and reads its signature
 * (names, V2 dtypes, shapes with -1 for dynamic dims) from the ONNX file's metadata.
 */
import { stat } from 'node:fs/promises';
import ort from 'onnxruntime-node';
import { err } from '../../errors.js';
import { dtypeFromOrt, toRuntimeStrings } from '../../tensor/index.js';
import type { LoadedModel, LoadOptions, Runtime, Signature, TensorSpec } from '../types.js';
import { InlineInstance } from './inline.js';
import { OnnxInstance, type InstanceInfo } from './instance.js';
import type { WireValueMeta } from './protocol.js';
import { wireMeta } from './session.js';

function specs(meta: readonly WireValueMeta[], kind: string): TensorSpec[] {
  return meta.map((m) => {
    const dtype = m.type === null ? undefined : dtypeFromOrt(m.type);
    if (!dtype) throw err('SY_ERR_INFERENCE_FAILED', `${kind} "${m.name}" has unsupported type ${m.type ?? 'non-tensor'}`);
    return { name: m.name, dtype, shape: m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1)) };
  });
}

export function signatureOf(info: InstanceInfo): Signature {
  return { inputs: specs(info.inputs, 'input'), outputs: specs(info.outputs, 'output') };
}

export const onnxRuntime: Runtime = {
  name: 'onnxruntime_onnx',
  async inspect(artifactPath: string): Promise<Signature> {
    // Graph optimizations off: only the metadata is needed, and a broken file should fail here, fast.
    const session = await ort.InferenceSession.create(artifactPath, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1, interOpNumThreads: 1 });
    try {
      return { inputs: specs(wireMeta(session.inputMetadata), 'input'), outputs: specs(wireMeta(session.outputMetadata), 'output') };
    } finally {
      await session.release();
    }
  },
  async load(artifactPath: string, options: LoadOptions): Promise<LoadedModel> {
    const { size } = await stat(artifactPath);
    const init = {
      modelPath: artifactPath,
      intraOpThreads: options.intraOpThreads,
      executionProvider: options.executionProvider,
      deviceId: options.deviceId,
      allowSpinning: options.allowSpinning,
    };
    const created = options.inline
      ? await Promise.allSettled([InlineInstance.create({ ...init, intraOpThreads: 1, allowSpinning: false })])
      : await Promise.allSettled(Array.from({ length: options.instances }, () => OnnxInstance.create(init)));
    const ok = created.flatMap((c) => (c.status === 'fulfilled' ? [c.value] : []));
    const failed = created.find((c): c is PromiseRejectedResult => c.status === 'rejected');
    if (failed) {
      await Promise.all(ok.map((o) => o.instance.dispose()));
      throw failed.reason;
    }
    const first = ok[0]!.info;
    const instances = ok.map((o) => o.instance);
    return {
      platform: 'onnxruntime_onnx',
      signature: signatureOf(first),
      residentBytes: size * instances.length,
      instances,
      executionProvider: first.provider,
      inline: options.inline === true,
      ...(first.warning ? { warning: first.warning } : {}),
      check(inputs) {
        // The binding takes BYTES as C strings of UTF-8: refuse (per request, before batching) what it would alter.
        for (let i = 0; i < inputs.length; i++) {
          const t = inputs[i]!;
          if (Array.isArray(t.data)) toRuntimeStrings(first.inputs[i]?.name ?? `#${i}`, t.data);
        }
      },
      async dispose() {
        await Promise.all(instances.map((i) => i.dispose()));
      },
    };
  },
};
