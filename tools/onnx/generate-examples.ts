/**
 * @module
 * Regenerates the example model repository shipped in examples/models (deterministic: same bytes every run).
 * Usage: `npm run examples` (or `node dist/tools/onnx/generate-examples.js [DIR]`).
 */
import { rm } from 'node:fs/promises';
import { allTypes, fixedAffine, mlp, writeModelRepository } from './zoo.js';

const dir = process.argv[2] ?? 'examples/models';
await rm(dir, { recursive: true, force: true });
await writeModelRepository(dir, {
  mlp: { versions: { 1: mlp(7), 2: mlp(8) }, config: { version_policy: { all: {} }, max_batch_size: 64, max_queue_delay_us: 0 } },
  all_types: { versions: { 1: allTypes() } },
  fixed_affine: { versions: { 1: fixedAffine() } },
});
console.log(`wrote example model repository to ${dir}`);
