/**
 * @module
 * `npm run bench:batch`: V2 batch jobs against raw onnxruntime, in the same run.
 *
 * 1. Throughput, for the mlp and a small encoder: raw onnxruntime-node in this process (one session, default
 *    threads) over the same rows at batch sizes 16…1024, best rows/s kept; then a batch job of those rows
 *    (a JSONL file the server reads by path) on a `switchyard serve` process, timed from create to completed
 *    (reading and chunking the file, inference, commits and writing the output file all included). Ratio =
 *    job rows/s ÷ best raw rows/s.
 * 2. Online latency while a job runs: the mlp's p99 at moderate load (BENCH_CONNECTIONS concurrent V2 requests
 *    of one row for BENCH_SECONDS) alone, then while a large mlp job runs in its low-weight batch flow. Ratio =
 *    p99 with the job ÷ p99 alone.
 *
 * Env: BENCH_BATCH_ROWS (mlp rows, default 50000), BENCH_BATCH_ENCODER_ROWS (default 5000), BENCH_SECONDS (10),
 * BENCH_CONNECTIONS (4), BENCH_BATCH_WORKERS (server --batch-workers, default 2).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { encoder, mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { benchPort, fmt, loadAverage, machineName, Report, startServer, stopServer, throughput } from './lib.js';

const ROWS = Number(process.env['BENCH_BATCH_ROWS'] ?? 50_000);
const ENC_ROWS = Number(process.env['BENCH_BATCH_ENCODER_ROWS'] ?? 5_000);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 4);
const WORKERS = Number(process.env['BENCH_BATCH_WORKERS'] ?? 2);
const BATCH_SIZES = [16, 64, 256, 1024];
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ENC = { layers: 2, dModel: 64, heads: 4, seqLen: 32, ffn: 256, vocab: 1000 };

/** Deterministic pseudo-random values. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a / 2 ** 32;
  };
}

interface Workload {
  name: string;
  bytes: Uint8Array;
  rows: number;
  input: string;
  perRow: number;
  value: (r: () => number) => number;
  tensor: (flat: number[], n: number) => ort.Tensor;
}

/** Best rows/s of raw onnxruntime over `flat` (rows × perRow values) across batch sizes. */
async function raw(w: Workload, flat: number[], say: (s: string) => void): Promise<number> {
  const session = await ort.InferenceSession.create(w.bytes);
  let best = 0;
  try {
    for (const b of BATCH_SIZES) {
      // Tensors built outside the timed loop: the baseline is inference alone.
      const batches: ort.Tensor[] = [];
      for (let at = 0; at < w.rows; at += b) {
        const n = Math.min(b, w.rows - at);
        batches.push(w.tensor(flat.slice(at * w.perRow, (at + n) * w.perRow), n));
      }
      await session.run({ [w.input]: batches[0]! });
      const t0 = performance.now();
      for (const t of batches) await session.run({ [w.input]: t });
      const rps = w.rows / ((performance.now() - t0) / 1000);
      say(`    raw onnxruntime, batch ${String(b).padStart(4)}: ${fmt(rps)} rows/s`);
      best = Math.max(best, rps);
    }
  } finally {
    await session.release();
  }
  return best;
}

async function api(url: string, method: string, path: string, body?: unknown): Promise<any> {
  // A pooled keep-alive connection the server closed as idle while this process was busy: try once more.
  const res = await fetch(`${url}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? null : JSON.stringify(body),
  }).catch(() =>
    fetch(`${url}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? null : JSON.stringify(body),
    }),
  );
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function runJob(url: string, model: string, path: string, column: string): Promise<{ seconds: number; job: any }> {
  const t0 = performance.now();
  const created = await api(url, 'POST', '/api/v1/batch/jobs', { model, input: { path }, mapping: { [column]: 'x' }, chunkRows: 1000 });
  for (;;) {
    const j = await api(url, 'GET', `/api/v1/batch/jobs/${created.id}`);
    if (['completed', 'failed', 'cancelled'].includes(j.status)) {
      if (j.status !== 'completed' || j.counts.failed > 0) throw new Error(`job ended ${j.status}: ${JSON.stringify(j.counts)} ${JSON.stringify(j.errors)}`);
      return { seconds: (performance.now() - t0) / 1000, job: j };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  const report = new Report();
  const say = report.say;
  say(`# bench:batch — ${new Date().toISOString()} — ${machineName()} — load ${loadAverage()}`);
  say(`mlp rows ${ROWS}, encoder rows ${ENC_ROWS} (layers ${ENC.layers}, d ${ENC.dModel}, seq ${ENC.seqLen}), batch workers ${WORKERS}`);
  const dir = await mkdtemp(join(tmpdir(), 'sy-bench-batch-'));
  const mlpBytes = mlp();
  const encBytes = encoder(ENC);
  await writeModelRepository(join(dir, 'repo'), {
    mlp: { versions: { 1: mlpBytes }, config: { max_batch_size: 1024 } },
    encoder: { versions: { 1: encBytes }, config: { max_batch_size: 1024 } },
  });
  const workloads: Workload[] = [
    {
      name: 'mlp',
      bytes: mlpBytes,
      rows: ROWS,
      input: 'features',
      perRow: 64,
      value: (r) => r() * 2 - 1,
      tensor: (f, n) => new ort.Tensor('float32', Float32Array.from(f), [n, 64]),
    },
    {
      name: 'encoder',
      bytes: encBytes,
      rows: ENC_ROWS,
      input: 'input_ids',
      perRow: ENC.seqLen,
      value: (r) => Math.floor(r() * ENC.vocab),
      tensor: (f, n) => new ort.Tensor('int64', BigInt64Array.from(f.map(BigInt)), [n, ENC.seqLen]),
    },
  ];
  const port = await benchPort();
  const server = await startServer(
    'switchyard',
    [
      cli,
      'serve',
      '--port',
      String(port),
      '--grpc-port',
      '0',
      '--log-level',
      'warn',
      '--model-repository',
      join(dir, 'repo'),
      '--data-dir',
      join(dir, 'data'),
      '--batch-workers',
      String(WORKERS),
    ],
    port,
  );
  try {
    say('\n## Throughput: batch job vs raw onnxruntime (best batch size), same rows');
    for (const w of workloads) {
      const r = rng(w.rows);
      const flat = Array.from({ length: w.rows * w.perRow }, () => w.value(r));
      // Values as the file carries them (float32-exact decimals for the mlp), so both runs see the same inputs.
      const rows: string[] = [];
      for (let i = 0; i < w.rows; i++)
        rows.push(
          JSON.stringify({
            x:
              w.input === 'features'
                ? Array.from(Float32Array.from(flat.slice(i * w.perRow, (i + 1) * w.perRow)))
                : flat.slice(i * w.perRow, (i + 1) * w.perRow),
          }),
        );
      const file = join(dir, `${w.name}.jsonl`);
      await writeFile(file, `${rows.join('\n')}\n`);
      say(`  ${w.name}:`);
      const best = await raw(w, flat, say);
      const { seconds, job } = await runJob(server.url, w.name, file, w.input);
      const rps = w.rows / seconds;
      say(`    batch job: ${fmt(rps)} rows/s end to end (${fmt(seconds, 1)} s; while in progress ${fmt(job.progress.rowsPerSecond ?? 0)} rows/s)`);
      say(`    ratio job / best raw: ${fmt(rps / best, 2)}  (in progress: ${fmt((job.progress.rowsPerSecond ?? 0) / best, 2)})`);
    }

    say(`\n## Online mlp p99 at ${CONNECTIONS} connections for ${SECONDS} s, alone vs while a job runs`);
    const body = JSON.stringify({ inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', data: Array.from({ length: 64 }, (_, i) => (i % 7) / 7) }] });
    await throughput(server.url, '/v2/models/mlp/infer', body, CONNECTIONS, 2);
    const alone = await throughput(server.url, '/v2/models/mlp/infer', body, CONNECTIONS, SECONDS);
    say(`  alone:          p99 ${fmt(alone.p99Ms, 2)} ms, p50 ${fmt(alone.p50Ms, 2)} ms, ${fmt(alone.rps)} req/s, non-2xx ${alone.non2xx}`);
    const created = await api(server.url, 'POST', '/api/v1/batch/jobs', {
      model: 'mlp',
      input: { path: join(dir, 'mlp.jsonl') },
      mapping: { features: 'x' },
      chunkRows: 1000,
    });
    // Wait until the job is scoring rows (reading and chunking the file is not what this measures).
    for (;;) {
      const j = await api(server.url, 'GET', `/api/v1/batch/jobs/${created.id}`);
      if (j.counts.done > 0 || (j.status !== 'validating' && j.status !== 'in_progress')) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const during = await throughput(server.url, '/v2/models/mlp/infer', body, CONNECTIONS, SECONDS);
    const after = await api(server.url, 'GET', `/api/v1/batch/jobs/${created.id}`);
    say(
      `  with a job:     p99 ${fmt(during.p99Ms, 2)} ms, p50 ${fmt(during.p50Ms, 2)} ms, ${fmt(during.rps)} req/s, non-2xx ${during.non2xx} (job ${after.status}, ${after.counts.done}/${after.counts.total} rows, ${fmt(after.progress.rowsPerSecond ?? 0)} rows/s)`,
    );
    if (after.status !== 'completed') say('  (the job was still running at the end of the window: the whole window had it running)');
    else say('  (the job finished inside the window: raise BENCH_BATCH_ROWS for a window fully under load)');
    say(`  ratio p99 with job / alone: ${fmt(during.p99Ms / alone.p99Ms, 2)}`);
    await api(server.url, 'POST', `/api/v1/batch/jobs/${created.id}/cancel`).catch(() => undefined);
  } finally {
    await stopServer(server);
    await rm(dir, { recursive: true, force: true });
  }
  const out = process.env['BENCH_REPORT'];
  if (out) await report.save(out);
}

await main();
