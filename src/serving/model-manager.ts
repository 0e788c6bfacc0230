/**
 * @module
 * Owns every served model version: loads them from a repository according to each model's version policy,
 * warms each instance up (a version is READY only after warmup succeeded), resolves `name[/version]`
 * references for the data plane, and drains everything on close.
 */
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { DEFAULT_MAX_BATCH_SIZE, resolveModelConfig, type ModelConfig } from '../config/model-config.js';
import { err, type SwitchyardError } from '../errors.js';
import { channels, type BatchEvent, type LoadEvent } from '../events.js';
import { onnxRuntime } from '../runtimes/onnx/index.js';
import type { LoadedModel, Runtime, Signature } from '../runtimes/types.js';
import { zeros, type Tensor } from '../tensor/index.js';
import { Batcher, type Job } from './batcher.js';
import { scanRepository, selectVersions, type RepositoryModel } from './repository.js';

/** auto instance mode: models up to this file size are tried on the main thread... */
const INLINE_MAX_FILE_BYTES = 16 * 1024 * 1024;
/** ...and kept there when a full batch runs within this many milliseconds (the longest the event loop may block). */
const INLINE_BUDGET_MS = 1;

/** Lifecycle of a model version. */
export type VersionState = 'LOADING' | 'READY' | 'UNAVAILABLE' | 'UNLOADING';

export class ModelVersion {
  state: VersionState = 'LOADING';
  /** Why the version is UNAVAILABLE, or null. */
  reason: string | null = null;
  loaded: LoadedModel | null = null;
  batcher: Batcher | null = null;
  /** Rows per batch after resolving config against the signature (0 = unbatched). */
  maxBatchSize = 0;
  loadMs = 0;
  readonly label: string;

  constructor(readonly model: string, readonly version: number, readonly config: ModelConfig) {
    this.label = String(version);
  }

  get signature(): Signature | null {
    return this.loaded?.signature ?? null;
  }

  get ready(): boolean {
    return this.state === 'READY';
  }

  /** Queue a request; inputs in signature order. Throws 503 when not ready or the queue is full. */
  submit(inputs: readonly Tensor[], rows: number, timeoutUs: number, abandoned: (() => boolean) | null = null): Job {
    if (this.state !== 'READY' || !this.batcher) {
      throw err('SY_ERR_MODEL_NOT_READY', `model "${this.model}" version ${this.version} is not ready (${this.state}${this.reason ? `: ${this.reason}` : ''})`, { retryAfterS: 1 });
    }
    return this.batcher.submit(inputs, rows, timeoutUs || this.config.defaultTimeoutUs, abandoned);
  }
}

export interface ServedModel {
  readonly name: string;
  /** Served versions, ascending. */
  readonly versions: readonly ModelVersion[];
}

export interface ModelManagerOptions {
  repository: string;
  logger: Logger;
  runtime?: Runtime;
  /** Default execution provider for models whose config names none. */
  executionProvider?: 'cpu' | 'cuda';
}

/** A model is batchable when every input and output has a dynamic first dimension. */
export function isBatchable(sig: Signature): boolean {
  const dyn = (s: { shape: readonly number[] }): boolean => s.shape.length > 0 && s.shape[0] === -1;
  return sig.inputs.every(dyn) && sig.outputs.every(dyn);
}

export class ModelManager {
  readonly #models = new Map<string, ServedModel>();
  readonly #log: Logger;
  readonly #runtime: Runtime;

  private constructor(log: Logger, runtime: Runtime) {
    // Private: use ModelManager.create(), which scans and loads before resolving.
    this.#log = log;
    this.#runtime = runtime;
  }

  /** Scan the repository and load every selected version (in parallel). Failures leave versions UNAVAILABLE. */
  static async create(opts: ModelManagerOptions): Promise<ModelManager> {
    const m = new ModelManager(opts.logger, opts.runtime ?? onnxRuntime);
    const repo = await scanRepository(opts.repository);
    const loads: Promise<void>[] = [];
    for (const rm of repo) {
      const config = resolveModelConfig(rm.config, opts.executionProvider ? { executionProvider: opts.executionProvider } : {});
      const versions = selectVersions(rm.versions, config.versionPolicy).map((v) => new ModelVersion(rm.name, v, config));
      m.#models.set(rm.name, { name: rm.name, versions });
      for (const mv of versions) loads.push(m.#load(rm, mv));
    }
    await Promise.all(loads);
    return m;
  }

  /** Served models, by name. */
  list(): ServedModel[] {
    return [...this.#models.values()];
  }

  /**
   * Resolve a model reference. Without a version: the newest READY version (else the newest).
   * Throws 404 naming the model or version when it is not served.
   */
  resolve(name: string, version?: string): ModelVersion {
    const m = this.#models.get(name);
    if (!m || m.versions.length === 0) throw err('SY_ERR_MODEL_NOT_FOUND', `model "${name}" not found`);
    if (version === undefined || version === '') {
      for (let i = m.versions.length - 1; i >= 0; i--) if (m.versions[i]!.ready) return m.versions[i]!;
      return m.versions[m.versions.length - 1]!;
    }
    const mv = m.versions.find((v) => v.label === version);
    if (!mv) throw err('SY_ERR_MODEL_NOT_FOUND', `model "${name}" has no version "${version}"`);
    return mv;
  }

  /** True when every served version is READY. */
  ready(): boolean {
    for (const m of this.#models.values()) for (const v of m.versions) if (!v.ready) return false;
    return true;
  }

  /** Stop admitting, let queued work finish (bounded by `graceMs`), then dispose every instance. */
  async close(graceMs = 10_000): Promise<void> {
    const versions = [...this.#models.values()].flatMap((m) => m.versions);
    for (const v of versions) v.batcher?.close(true);
    const drained = Promise.all(versions.map((v) => v.batcher?.idle()));
    let t: NodeJS.Timeout | undefined;
    await Promise.race([drained, new Promise((r) => (t = setTimeout(r, graceMs)))]);
    clearTimeout(t);
    for (const v of versions) {
      v.batcher?.close(false);
      v.state = 'UNLOADING';
    }
    await Promise.all(versions.map((v) => v.loaded?.dispose()));
  }

  async #load(rm: RepositoryModel, mv: ModelVersion): Promise<void> {
    const start = performance.now();
    const log = this.#log.child({ model: mv.model, version: mv.version });
    const fail = (reason: string): void => {
      mv.state = 'UNAVAILABLE';
      mv.reason = reason;
      log.error({ reason }, 'model version unavailable');
    };
    try {
      if (rm.configError) return fail(rm.configError);
      const c = mv.config;
      const artifact = rm.artifact(mv.version);
      const base = { instances: c.instances, intraOpThreads: c.intraOpThreads, executionProvider: c.executionProvider, deviceId: c.deviceId, allowSpinning: c.allowSpinning };
      // auto: try the main thread for small CPU models, keep it only if a full batch is fast (measured below).
      const tryInline = c.instanceMode === 'inline' ||
        (c.instanceMode === 'auto' && c.executionProvider === 'cpu' && (await stat(artifact)).size <= INLINE_MAX_FILE_BYTES);
      let loaded = await this.#runtime.load(artifact, { ...base, inline: tryInline });
      mv.loaded = loaded;
      if (loaded.warning) log.warn(loaded.warning);
      const batchable = isBatchable(loaded.signature);
      if (c.maxBatchSize !== null && c.maxBatchSize > 0 && !batchable) {
        return fail(`max_batch_size ${c.maxBatchSize} needs a dynamic first dimension on every input and output`);
      }
      mv.maxBatchSize = c.maxBatchSize ?? (batchable ? DEFAULT_MAX_BATCH_SIZE : 0);
      let warm = await warmup(loaded);
      if (!warm && tryInline && c.instanceMode === 'auto') {
        const ms = await timeBatch(loaded, Math.max(1, mv.maxBatchSize));
        if (ms > INLINE_BUDGET_MS) {
          await loaded.dispose();
          loaded = await this.#runtime.load(artifact, { ...base, inline: false });
          mv.loaded = loaded;
          warm = await warmup(loaded);
        }
      }
      if (warm) return fail(`warmup failed: ${warm.message}`);
      const batcher = new Batcher(loaded.instances, {
        maxBatchSize: mv.maxBatchSize,
        preferredBatchSizes: c.preferredBatchSizes.filter((p) => mv.maxBatchSize === 0 || p <= mv.maxBatchSize),
        maxQueueDelayUs: c.maxQueueDelayUs,
        maxQueueSize: c.maxQueueSize,
      });
      const { model, label: version } = mv;
      batcher.onBatch = (rows, requests, computeMs) => {
        if (channels.batch.hasSubscribers) channels.batch.publish({ model, version, rows, requests, computeMs } satisfies BatchEvent);
      };
      mv.batcher = batcher;
      mv.state = 'READY';
      log.info({ provider: loaded.executionProvider, instances: loaded.instances.length, mode: loaded.inline ? 'inline' : 'worker', maxBatchSize: mv.maxBatchSize, ms: Math.round(performance.now() - start) }, 'model version ready');
    } catch (e) {
      fail((e as Error).message);
    } finally {
      mv.loadMs = performance.now() - start;
      if (channels.load.hasSubscribers) {
        channels.load.publish({ model: mv.model, version: mv.label, ok: mv.state === 'READY', durationMs: mv.loadMs } satisfies LoadEvent);
      }
    }
  }
}

/** Zeros for every input, dynamic dims set to 1 and a dynamic dim 0 to `rows`. */
function zeroInputs(sig: Signature, rows: number): Tensor[] {
  return sig.inputs.map((s) => zeros(s.dtype, s.shape.map((d, i) => (d === -1 ? (i === 0 ? rows : 1) : d))));
}

/** Run one row of zeros through every instance; returns the first failure, or null. */
async function warmup(loaded: LoadedModel): Promise<SwitchyardError | Error | null> {
  for (const inst of loaded.instances) {
    try {
      await inst.run(zeroInputs(loaded.signature, 1));
    } catch (e) {
      return e as Error;
    }
  }
  return null;
}

/** Median time (ms) of a `rows`-row batch of zeros on the first instance; Infinity if it fails. */
async function timeBatch(loaded: LoadedModel, rows: number): Promise<number> {
  const inst = loaded.instances[0]!;
  const times: number[] = [];
  try {
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await inst.run(zeroInputs(loaded.signature, rows));
      times.push(performance.now() - t0);
    }
  } catch {
    return Infinity;
  }
  return times.sort((a, b) => a - b)[2]!;
}
