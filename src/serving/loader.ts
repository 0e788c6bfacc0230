/**
 * @module
 * Loads one model version through a runtime: picks worker or main-thread instances, settles the batch size
 * against the signature, warms every instance up (a version is READY only after warmup succeeded) and builds
 * its batcher. Failures come back as a reason string; nothing here throws.
 */
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { DEFAULT_MAX_BATCH_SIZE } from '../config/index.js';
import { channels, type BatchEvent } from '../events.js';
import type { LoadedModel, Runtime, Signature } from '../runtimes/index.js';
import { Batcher } from './batcher.js';
import type { ModelVersion } from './model-version.js';
import { runWarmup, zeroInputs } from './warmup.js';

/** auto instance mode: models up to this file size are tried on the main thread... */
const INLINE_MAX_FILE_BYTES = 16 * 1024 * 1024;
/** ...and kept there when a full batch runs within this many milliseconds (the longest the event loop may block). */
const INLINE_BUDGET_MS = 1;

/** A model is batchable when every input and output has a dynamic first dimension. */
export function isBatchable(sig: Signature): boolean {
  const dyn = (s: { shape: readonly number[] }): boolean => s.shape.length > 0 && s.shape[0] === -1;
  return sig.inputs.every(dyn) && sig.outputs.every(dyn);
}

/**
 * Main-thread trials block the event loop while they run (a slow model for hundreds of milliseconds): one at
 * a time, so that each model's timing measures that model and not another's trial (startup loads run together).
 */
let trialTail: Promise<unknown> = Promise.resolve();
function oneTrialAtATime(fn: () => Promise<void>): Promise<void> {
  const run = trialTail.then(fn, fn);
  trialTail = run.catch(() => undefined);
  return run;
}

/** Load, warm up and attach a batcher to `mv`. Returns null on success, else why it failed (mv is left clean). */
export async function loadVersion(mv: ModelVersion, runtime: Runtime, log: Logger): Promise<string | null> {
  const c = mv.config;
  let loaded: LoadedModel | null = null;
  let lease: { readonly path: string; release(): void } | null = null;
  try {
    lease = await mv.artifact.open();
    const artifact = lease.path;
    const base = {
      instances: c.instances,
      intraOpThreads: c.intraOpThreads,
      executionProvider: c.executionProvider,
      deviceId: c.deviceId,
      allowSpinning: c.allowSpinning,
    };
    // auto: try the main thread for small CPU models, keep it only if a full batch is fast (measured below).
    const tryInline =
      c.instanceMode === 'inline' || (c.instanceMode === 'auto' && c.executionProvider === 'cpu' && (await stat(artifact)).size <= INLINE_MAX_FILE_BYTES);
    const trial = tryInline && c.instanceMode === 'auto';
    let maxBatchSize = 0;
    let warm: Error | null = null;
    const first = async (): Promise<void> => {
      loaded = await runtime.load(artifact, { ...base, inline: tryInline });
      if (loaded.warning) log.warn(loaded.warning);
      const batchable = isBatchable(loaded.signature);
      if (c.maxBatchSize !== null && c.maxBatchSize > 0 && !batchable) {
        throw new Error(`max_batch_size ${c.maxBatchSize} needs a dynamic first dimension on every input and output`);
      }
      maxBatchSize = c.maxBatchSize ?? (batchable ? DEFAULT_MAX_BATCH_SIZE : 0);
      warm = await runWarmup(loaded, c.warmup, maxBatchSize > 0);
      if (!warm && trial && (await timeBatch(loaded, Math.max(1, maxBatchSize))) > INLINE_BUDGET_MS) {
        await loaded.dispose();
        loaded = null;
      }
    };
    await (trial ? oneTrialAtATime(first) : first());
    if (loaded === null) {
      loaded = await runtime.load(artifact, { ...base, inline: false });
      warm = await runWarmup(loaded, c.warmup, maxBatchSize > 0);
    }
    if (warm) throw new Error(`warmup failed: ${warm.message}`);
    const batcher = new Batcher(loaded.instances, {
      maxBatchSize,
      preferredBatchSizes: c.preferredBatchSizes.filter((p) => maxBatchSize === 0 || p <= maxBatchSize),
      maxQueueDelayUs: c.maxQueueDelayUs,
      maxQueueSize: c.maxQueueSize,
    });
    const { model, label: version } = mv;
    const batchStats = mv.batchStats;
    batcher.onBatch = (rows, requests, computeMs) => {
      const s = batchStats.get(rows);
      if (s === undefined) batchStats.set(rows, { count: 1, ns: computeMs * 1e6 });
      else {
        s.count++;
        s.ns += computeMs * 1e6;
      }
      if (channels.batch.hasSubscribers) channels.batch.publish({ model, version, rows, requests, computeMs } satisfies BatchEvent);
    };
    mv.loaded = loaded;
    mv.maxBatchSize = maxBatchSize;
    mv.batcher = batcher;
    log.info(
      { provider: loaded.executionProvider, instances: loaded.instances.length, mode: loaded.inline ? 'inline' : 'worker', maxBatchSize },
      'model version loaded',
    );
    return null;
  } catch (e) {
    await loaded?.dispose().catch(() => undefined);
    return (e as Error).message;
  } finally {
    lease?.release();
  }
}

/** Stop admitting, let queued work finish, release the instances. */
export async function unloadVersion(mv: ModelVersion): Promise<void> {
  const { batcher, loaded } = mv;
  if (batcher) {
    batcher.close(true);
    await batcher.idle();
    batcher.close(false);
  }
  mv.batcher = null;
  mv.loaded = null;
  await loaded?.dispose();
}

/**
 * Best time (ms) of five `rows`-row batches of zeros on the first instance; Infinity if one fails. The minimum,
 * not the median: other work on the machine (several models loading at start) only ever adds time, and the
 * choice must not flip with it.
 */
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
  return Math.min(...times);
}
