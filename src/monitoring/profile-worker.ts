/**
 * @module
 * Worker-thread entry that turns an uploaded reference dataset into a drift reference profile: parse (CSV /
 * JSONL) and profile run here, off the server's event loop, so health probes and inference keep answering
 * while a large dataset is profiled. Started per job by {@link profileDataset}; one message in, one out.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { isSwitchyardError } from '../errors.js';
import { readDataset } from './dataset.js';
import { buildProfile } from './drift-profile.js';
import type { ProfileJob, ProfileResult } from './profile-job.js';

const job = workerData as ProfileJob;
const port = parentPort!;

async function run(): Promise<ProfileResult> {
  const rows = await readDataset(Buffer.from(job.bytes.buffer, job.bytes.byteOffset, job.bytes.byteLength), job.format);
  if (!job.features.some((f) => rows.some((r) => r[f.name] !== undefined && r[f.name] !== null))) {
    return {
      error: {
        code: 'SY_ERR_BAD_REQUEST',
        message: `the dataset has none of the monitored features of ${job.target} (expected columns such as ${job.features
          .slice(0, 3)
          .map((f) => `"${f.name}"`)
          .join(', ')}; name them with "names" or match the tensor columns)`,
      },
    };
  }
  return { profile: buildProfile(job.features, rows), rows: rows.length };
}

run().then(
  (r) => port.postMessage(r),
  (e: unknown) =>
    port.postMessage({
      error: isSwitchyardError(e)
        ? { code: e.code, message: e.message }
        : { code: 'SY_ERR_BAD_REQUEST', message: `cannot read dataset: ${(e as Error).message}` },
    } satisfies ProfileResult),
);
