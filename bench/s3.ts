/**
 * @module
 * Cold start from S3 (`npm run bench:s3`): a ~100 MB model (one 5120×5120 FP32 MatMul) registered once, then
 * servers started on the same metadata, each timed from `createSwitchyard` until the first inference answers:
 *
 * 1. local  — artifacts on local disk (the baseline);
 * 2. s3 cold — artifacts in S3 (s3rver on loopback), an empty cache: download (parallel ranges), sha256 check,
 *    load;
 * 3. s3 warm — the same replica restarted: the cache has the file, no download (the server's GET count proves it).
 *
 * Rounds alternate the three so machine noise hits each alike; medians and ratios to the local baseline are
 * printed. Loopback S3 measures our overhead (download, verify, rename), not a network.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadServerConfig, type ServerConfig } from '../src/config/server-config.js';
import { createLogger, createSwitchyard } from '../src/server.js';
import { GraphBuilder } from '../tools/onnx/graph.js';
import { OnnxType } from '../tools/onnx/proto.js';
import { S3_CREDENTIALS, startS3 } from '../test/s3-helpers.js';
import { quantile } from './lib.js';

const DIM = Number(process.env['S3_BENCH_DIM'] ?? 5120);
const ROUNDS = Number(process.env['S3_BENCH_ROUNDS'] ?? 3);

function bigModel(): Uint8Array {
  const g = new GraphBuilder('big', 3);
  const x = g.input({ name: 'x', type: OnnxType.FLOAT, shape: ['batch', DIM] });
  g.op('MatMul', [x, g.randomInit([DIM, DIM], 1 / Math.sqrt(DIM))], undefined, 'y');
  g.output({ name: 'y', type: OnnxType.FLOAT, shape: ['batch', DIM] });
  return g.encode();
}

const BODY = { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, DIM], data: Array.from({ length: DIM }, (_, i) => Math.sin(i)) }] };

/** Start a server on `config`, infer once; milliseconds until the answer. */
async function coldStart(config: Partial<ServerConfig>): Promise<number> {
  const t0 = performance.now();
  const sy = await createSwitchyard(loadServerConfig({ port: 0, logLevel: 'silent', grpcPort: 0, ...config }, {}), createLogger('silent'));
  try {
    const r = await sy.app.inject({ method: 'POST', url: '/v2/models/big/infer', payload: BODY });
    if (r.statusCode !== 200) throw new Error(`infer: ${r.statusCode} ${r.body}`);
    return performance.now() - t0;
  } finally {
    await sy.close();
  }
}

async function main(): Promise<void> {
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey });
  const dir = await mkdtemp(join(tmpdir(), 'sy-bench-s3-'));
  const s3 = await startS3();
  try {
    const bytes = bigModel();
    console.log(`model: ${(bytes.length / 1e6).toFixed(1)} MB (MatMul ${DIM}×${DIM} FP32); ${ROUNDS} rounds`);
    const local: Partial<ServerConfig> = { dataDir: join(dir, 'local') };
    const remote = (cache: string): Partial<ServerConfig> => ({
      dataDir: join(dir, 's3'),
      artifacts: `s3://${s3.bucket}/bench`,
      s3Endpoint: s3.endpoint,
      s3PathStyle: true,
      artifactCacheDir: join(dir, cache),
    });
    // Register the model once in each metadata store (a push: to local disk, to S3 through a cache then dropped).
    for (const config of [local, remote('push-cache')]) {
      const sy = await createSwitchyard(loadServerConfig({ port: 0, grpcPort: 0, logLevel: 'silent', ...config }, {}), createLogger('silent'));
      await sy.registry.pushVersion('big', Buffer.from(bytes), {}, 'bench');
      await sy.close();
    }
    const sha = createHash('sha256').update(bytes).digest('hex');
    const key = `bench/${sha.slice(0, 2)}/${sha}.onnx`;
    const times = { local: [] as number[], cold: [] as number[], warm: [] as number[] };
    for (let i = 0; i < ROUNDS; i++) {
      times.local.push(await coldStart(local));
      const before = s3.count('GET', key);
      times.cold.push(await coldStart(remote(`cache-${i}`)));
      const downloaded = s3.count('GET', key) - before;
      times.warm.push(await coldStart(remote(`cache-${i}`)));
      const again = s3.count('GET', key) - before - downloaded;
      if (downloaded === 0 || again !== 0) throw new Error(`round ${i}: ${downloaded} GETs cold, ${again} warm (expected >0 and 0)`);
      console.log(
        `round ${i + 1}: local ${times.local[i]!.toFixed(0)} ms, s3 cold ${times.cold[i]!.toFixed(0)} ms (${downloaded} ranged GETs), s3 warm ${times.warm[i]!.toFixed(0)} ms (0 GETs)`,
      );
    }
    const med = (xs: number[]): number => quantile(xs, 0.5);
    const base = med(times.local);
    console.log(
      `median cold start to first answer: local ${base.toFixed(0)} ms | s3 cold ${med(times.cold).toFixed(0)} ms = ${(med(times.cold) / base).toFixed(2)}× local | s3 warm restart ${med(times.warm).toFixed(0)} ms = ${(med(times.warm) / base).toFixed(2)}× local`,
    );
  } finally {
    await s3.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
