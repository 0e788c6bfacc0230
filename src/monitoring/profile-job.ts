/**
 * @module
 * Reference profiles from uploaded datasets, built in a worker thread ({@link profileDataset}): the bytes are
 * transferred (not copied) to a fresh worker that parses and profiles them; one job at a time, so a burst of
 * uploads uses one core, never the event loop.
 */
import { Worker } from 'node:worker_threads';
import { err, type ErrorCode } from '../errors.js';
import type { DatasetFormat } from './dataset.js';
import type { ReferenceProfile } from './drift-profile.js';
import type { FeatureSpec } from './types.js';

export interface ProfileJob {
  readonly bytes: Uint8Array;
  readonly format: DatasetFormat;
  readonly features: readonly FeatureSpec[];
  /** For messages: `model "m" version 1`. */
  readonly target: string;
}

export type ProfileResult = { profile: ReferenceProfile; rows: number } | { error: { code: ErrorCode; message: string } };

const WORKER_URL = new URL('./profile-worker.js', import.meta.url);
let chain: Promise<unknown> = Promise.resolve();

/**
 * Parse `bytes` as a `format` dataset and profile `features` over it, in a worker thread. The buffer is
 * transferred to the worker: the caller must not use it afterwards. Rejects with the worker's 400 for a bad
 * dataset.
 */
export function profileDataset(job: ProfileJob): Promise<{ profile: ReferenceProfile; rows: number }> {
  const run = (): Promise<{ profile: ReferenceProfile; rows: number }> =>
    new Promise((resolve, reject) => {
      const bytes = job.bytes.byteOffset === 0 && job.bytes.byteLength === job.bytes.buffer.byteLength ? job.bytes : job.bytes.slice();
      const worker = new Worker(WORKER_URL, { workerData: { ...job, bytes } satisfies ProfileJob, transferList: [bytes.buffer as ArrayBuffer] });
      let settled = false;
      worker.once('message', (r: ProfileResult) => {
        settled = true;
        if ('error' in r) reject(err(r.error.code, r.error.message));
        else resolve(r);
        void worker.terminate();
      });
      worker.once('error', (e) => {
        if (!settled) reject(err('SY_ERR_INTERNAL', `profiling failed: ${e.message}`, { cause: e }));
        settled = true;
      });
      worker.once('exit', (code) => {
        if (!settled) reject(err('SY_ERR_INTERNAL', `profiling worker exited with code ${code}`));
      });
    });
  const p = chain.then(run, run);
  chain = p.catch(() => undefined);
  return p;
}
