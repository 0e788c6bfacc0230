/**
 * @module
 * Event-loop benchmark (`npm run bench:event-loop`): does heavy control-plane work stall the data plane?
 * A server (child process) with one model; a probe client hits `GET /v2/health/live` every 5 ms and an
 * inference client runs a closed loop, first idle (the baseline), then while a ~100 MB CSV reference dataset
 * (generated here, never committed; `EVENT_LOOP_DATASET_MB` to change) is uploaded and profiled. Prints the
 * probe's and the inference's p50 / p99 / max in both phases and the ratios to the baseline.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { benchPort, noisyMachineHeader, quantile, startServer, stopServer } from './lib.js';

const MB = Number(process.env['EVENT_LOOP_DATASET_MB'] ?? 100);
const INFER = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: Array.from({ length: 64 }, (_, i) => Math.sin(i)) }] });

/** A CSV of `mb` MiB: the model's 64 input columns, seeded pseudo-random values. */
function dataset(mb: number): Buffer {
  const header = Array.from({ length: 64 }, (_, i) => `features[${i}]`).join(',') + '\n';
  const parts: string[] = [header];
  let size = header.length;
  let a = 1;
  while (size < mb * 1024 * 1024) {
    const cells: string[] = [];
    for (let i = 0; i < 64; i++) {
      a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
      cells.push((a / 2 ** 31 - 1).toFixed(6));
    }
    const line = cells.join(',') + '\n';
    parts.push(line);
    size += line.length;
  }
  return Buffer.from(parts.join(''));
}

interface Phase {
  probe: number[];
  infer: number[];
}

/** Probe every 5 ms and infer in a closed loop until `done` resolves. */
async function measure(url: string, done: Promise<unknown>): Promise<Phase> {
  const probePool = new Pool(url, { connections: 1 });
  const inferPool = new Pool(url, { connections: 1 });
  const out: Phase = { probe: [], infer: [] };
  let stop = false;
  void done.finally(() => {
    stop = true;
  });
  const probes = (async () => {
    while (!stop) {
      const t0 = performance.now();
      const r = await probePool.request({ path: '/v2/health/live', method: 'GET' });
      await r.body.text();
      out.probe.push(performance.now() - t0);
      await new Promise((res) => setTimeout(res, 5));
    }
  })();
  const infers = (async () => {
    while (!stop) {
      const t0 = performance.now();
      const r = await inferPool.request({ path: '/v2/models/mlp/infer', method: 'POST', body: INFER, headers: { 'content-type': 'application/json' } });
      await r.body.text();
      if (r.statusCode !== 200) throw new Error(`inference answered ${r.statusCode}`);
      out.infer.push(performance.now() - t0);
    }
  })();
  await Promise.all([probes, infers, done]);
  await Promise.all([probePool.close(), inferPool.close()]);
  return out;
}

const fmt = (xs: number[]): string =>
  `p50 ${quantile(xs, 0.5).toFixed(2)} ms, p99 ${quantile(xs, 0.99).toFixed(2)} ms, max ${xs.reduce((a, b) => Math.max(a, b), -Infinity).toFixed(1)} ms (n=${xs.length})`;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-el-'));
  const repo = join(dir, 'repo');
  await writeModelRepository(repo, { mlp: { versions: { 1: mlp() } } });
  const port = await benchPort();
  const cli = new URL('../src/cli/main.js', import.meta.url).pathname;
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
      repo,
      '--data-dir',
      join(dir, 'data'),
      '--max-body-mb',
      String(Math.ceil(MB * 1.2) + 8),
    ],
    port,
  );
  try {
    const csv = dataset(MB);
    const idle = await measure(server.url, new Promise((r) => setTimeout(r, 5000)));
    const upload = new Pool(server.url, { connections: 1, bodyTimeout: 0, headersTimeout: 0 });
    const t0 = performance.now();
    const profiling = (async () => {
      const r = await upload.request({ path: '/api/v1/models/mlp/versions/1/profile', method: 'POST', body: csv, headers: { 'content-type': 'text/csv' } });
      const text = await r.body.text();
      if (r.statusCode !== 201) throw new Error(`profile upload answered ${r.statusCode}: ${text.slice(0, 300)}`);
      return JSON.parse(text) as { profile: { rows: number } };
    })();
    const busy = await measure(server.url, profiling);
    const rec = await profiling;
    const seconds = (performance.now() - t0) / 1000;
    await upload.close();
    for (const line of noisyMachineHeader('event-loop benchmark')) console.log(line);
    console.log(
      `dataset: ${(csv.length / 2 ** 20).toFixed(1)} MiB CSV, ${rec.profile.rows} rows x 64 columns, uploaded and profiled in ${seconds.toFixed(1)} s`,
    );
    console.log(`live probe, idle:      ${fmt(idle.probe)}`);
    console.log(
      `live probe, profiling: ${fmt(busy.probe)}  (p99 ratio ${(quantile(busy.probe, 0.99) / quantile(idle.probe, 0.99)).toFixed(2)}x; target p99 < 50 ms)`,
    );
    console.log(`inference, idle:       ${fmt(idle.infer)}`);
    console.log(
      `inference, profiling:  ${fmt(busy.infer)}  (p99 ratio ${(quantile(busy.infer, 0.99) / quantile(idle.infer, 0.99)).toFixed(2)}x; target <= 2x)`,
    );
  } finally {
    await stopServer(server);
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
