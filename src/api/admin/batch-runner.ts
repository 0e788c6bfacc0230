/**
 * @module
 * V2 batch jobs' rows through the inference core: one `InferenceService.infer` per chunk (a body built from the
 * signature of the version that serves, split at its max batch size), in the job's low-weight fair-queueing
 * flow, for the job's tenant — so routing policies, fallbacks, the result cache, monitoring and tenancy usage
 * apply to batch rows as to online requests.
 */
import type { LineContext, RowRequest, RowRunner, RowSignature } from '../../batch/index.js';
import { err } from '../../errors.js';
import type { InferenceService } from '../../inference/index.js';
import type { ModelVersion } from '../../serving/index.js';
import { decodeJsonData, encodeJsonData, type Tensor } from '../../tensor/index.js';

export interface InferenceRowRunnerOptions {
  readonly inference: InferenceService;
  /** Whether `tenant` ('' = platform) may use `model`. */
  readonly canSee: (tenant: string, model: string) => boolean;
}

/** Row dims of an input (after the batch dim when batched) with a -1 resolved from the row's element count. */
function dimsFor(name: string, shape: readonly number[], batched: boolean, count: number): number[] {
  const dims = batched ? shape.slice(1) : [...shape];
  const free = dims.filter((d) => d < 0).length;
  const known = dims.filter((d) => d >= 0).reduce((a, b) => a * b, 1);
  if (free > 1) throw err('SY_ERR_INPUT_INVALID', `input "${name}": more than one dynamic dimension per row; a batch job cannot tell the shape of a flat row`);
  if (free === 0 ? count !== known : known === 0 || count % known !== 0)
    throw err('SY_ERR_INPUT_INVALID', `input "${name}": ${count} values per row do not fit the row shape [${dims.join(', ')}]`);
  return dims.map((d) => (d < 0 ? count / known : d));
}

export class InferenceRowRunner implements RowRunner {
  readonly #inference: InferenceService;
  readonly #canSee: (tenant: string, model: string) => boolean;

  constructor(opts: InferenceRowRunnerOptions) {
    this.#inference = opts.inference;
    this.#canSee = opts.canSee;
  }

  async signature(tenant: string, model: string, version: string | null): Promise<RowSignature> {
    const missing = (): never => {
      throw err('SY_ERR_MODEL_NOT_FOUND', `model "${model}"${version === null ? '' : ` version "${version}"`} is not served`);
    };
    if (!this.#canSee(tenant, model)) missing();
    let meta;
    let mv: ModelVersion;
    try {
      meta = await this.#inference.metadata(model, version ?? undefined);
      mv = this.#inference.manager.resolve(model, version ?? undefined);
    } catch (e) {
      if ((e as { status?: number }).status === 404) missing();
      throw e;
    }
    return { inputs: meta.inputs, outputs: meta.outputs, batched: mv!.maxBatchSize > 0 };
  }

  async run(req: RowRequest, ctx: LineContext): Promise<Array<{ name: string; rows: string[] }>> {
    const out = await this.#inference.infer({
      model: req.model,
      version: req.version,
      timeoutUs: 0,
      signal: ctx.signal,
      caller: { tenant: ctx.tenant, flow: ctx.flow, keyId: ctx.keyId, requestId: ctx.requestId, header: () => undefined },
      body: {
        kind: 'built',
        parameters: null,
        build: (mv) => {
          const sig = mv.signature!;
          const batched = mv.maxBatchSize > 0;
          if (!batched && req.rows > 1) throw err('SY_ERR_INPUT_INVALID', `model "${mv.model}" is unbatched (max_batch_size 0): one row per request`);
          const inputs: Tensor[] = sig.inputs.map((s) => {
            const rows = req.inputs.get(s.name);
            if (rows === undefined) throw err('SY_ERR_INPUT_INVALID', `input "${s.name}" has no mapped values`);
            const per = rows[0]!.length;
            if (rows.some((r) => r.length !== per)) throw err('SY_ERR_INPUT_INVALID', `input "${s.name}": rows of different lengths cannot share a request`);
            const dims = dimsFor(s.name, s.shape, batched, per);
            const shape = batched ? [req.rows, ...dims] : dims;
            return { dtype: s.dtype, shape, data: decodeJsonData(s.name, s.dtype, per * req.rows, rows.flat(), 1) };
          });
          return { inputs, rows: req.rows, maxRows: batched ? mv.maxBatchSize : 1 };
        },
      },
    });
    const picked = req.outputs === null ? out.outputSpecs.map((_, i) => i) : req.outputs.map((n) => out.outputSpecs.findIndex((s) => s.name === n));
    return picked.map((i) => {
      const t = out.outputs[i]!;
      const per = t.data.length / req.rows;
      const rows: string[] = new Array<string>(req.rows);
      for (let r = 0; r < req.rows; r++) {
        const slice = Array.isArray(t.data) ? t.data.slice(r * per, (r + 1) * per) : (t.data as Float32Array).subarray(r * per, (r + 1) * per);
        const text = encodeJsonData(t.dtype, slice, out.outputSpecs[i]!.name);
        rows[r] = per === 1 ? text.slice(1, -1) : text;
      }
      return { name: out.outputSpecs[i]!.name, rows };
    });
  }
}
