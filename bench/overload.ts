/**
 * @module
 * Goodput under overload (`npm run bench:overload`): does a server offered far more than it can do still
 * complete about as much as it can? A server (child process) serves the example MLP with one instance and a
 * small queue (`OVERLOAD_QUEUE`, default 32). First its capacity: completed requests per second from a closed
 * loop of fewer connections than the queue holds (nothing refused). Then overload: autocannon offers
 * `OVERLOAD_FACTOR` (default 10) × that rate over 256 connections, so the queue stays full and most requests
 * are refused (503 SY_ERR_QUEUE_FULL, answered from the headers, before the body is read). Goodput is the
 * 2xx per second under overload, printed as a ratio to the capacity (the mean of a run before and one after).
 * Goal: ≥ 0.9. `OVERLOAD_SAVE=file` writes the report there too. Also printed: the rate autocannon really offered (on a small machine it may not reach the
 * target: the load generator shares the CPUs) and the refusals' latency.
 *
 * `OVERLOAD_MODEL=encoder` serves the zoo's transformer encoder instead (compute-bound, the issue's case).
 * `OVERLOAD_ROWS` (default 1) rows per request: larger bodies make decoding a larger share of a request's cost
 * (and so of a refusal's, when it is made after decoding). `OVERLOAD_SERVER=path/to/dist/src/cli/main.js`
 * runs another build's server, to compare before and after a change in the same conditions.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { encoder, mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { benchPort, fmt, noisyMachineHeader, Report, startServer, stopServer } from './lib.js';

const QUEUE = Number(process.env['OVERLOAD_QUEUE'] ?? 32);
const FACTOR = Number(process.env['OVERLOAD_FACTOR'] ?? 10);
const SECONDS = Number(process.env['OVERLOAD_SECONDS'] ?? 10);
const ROWS = Number(process.env['OVERLOAD_ROWS'] ?? 1);
const CONNECTIONS = 256;
/** `mlp` (default; cheap per row: the HTTP stack dominates a request's cost) or `encoder` (the case: compute dominates). */
const MODEL = process.env['OVERLOAD_MODEL'] ?? 'mlp';
const BODY =
  MODEL === 'encoder'
    ? JSON.stringify({
        inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [ROWS, 64], data: Array.from({ length: 64 * ROWS }, (_, i) => (i * 7) % 1000) }],
      })
    : JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [ROWS, 64], data: Array.from({ length: 64 * ROWS }, (_, i) => Math.sin(i)) }] });

interface Run {
  offered: number;
  goodput: number;
  refused: number;
  other: number;
  p50: number;
  p99: number;
}

async function run(url: string, connections: number, overallRate?: number): Promise<Run> {
  const r = await autocannon({
    url: `${url}/v2/models/${MODEL}/infer`,
    method: 'POST',
    body: BODY,
    connections,
    duration: SECONDS,
    pipelining: 1,
    headers: { 'content-type': 'application/json' },
    ...(overallRate === undefined ? {} : { overallRate }),
  });
  const s = r.duration;
  return {
    offered: r.requests.total / s,
    goodput: r['2xx'] / s,
    refused: r['5xx'] / s,
    other: r.errors + r.timeouts + (r.non2xx - r['5xx']),
    p50: r.latency.p50,
    p99: r.latency.p99,
  };
}

async function main(): Promise<void> {
  const report = new Report();
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-overload-'));
  const repo = join(dir, 'repo');
  await writeModelRepository(repo, {
    [MODEL]: {
      versions: { 1: MODEL === 'encoder' ? encoder() : mlp() },
      config: { instances: 1, max_batch_size: 64, max_queue_delay_us: 0, max_queue_size: QUEUE },
    },
  });
  const port = await benchPort();
  const cli = process.env['OVERLOAD_SERVER'] ?? new URL('../src/cli/main.js', import.meta.url).pathname;
  const server = await startServer(
    'switchyard',
    [cli, 'serve', '--port', String(port), '--grpc-port', '0', '--log-level', 'warn', '--model-repository', repo, '--data-dir', join(dir, 'data')],
    port,
  );
  try {
    for (const line of noisyMachineHeader('overload benchmark')) report.say(line);
    report.say(`server: ${cli}`);
    report.say(`${MODEL}, 1 instance, max_batch_size 64, queue ${QUEUE}; ${SECONDS} s per run; ${ROWS}-row JSON requests (${BODY.length} bytes)`);
    const closed = Math.max(1, Math.floor(QUEUE / 2));
    await run(server.url, closed); // warm up
    const before = await run(server.url, closed);
    report.say(
      `capacity (closed loop, ${closed} connections):       ${fmt(before.goodput)} req/s completed, p50 ${before.p50} ms, p99 ${before.p99} ms, other failures ${before.other}`,
    );
    const target = Math.round(FACTOR * before.goodput);
    const over = await run(server.url, CONNECTIONS, target);
    report.say(
      `overload (${CONNECTIONS} connections, target ${target} req/s): offered ${fmt(over.offered)} req/s (${fmt(over.offered / before.goodput, 1)}x capacity), completed ${fmt(over.goodput)} req/s, refused ${fmt(over.refused)} req/s, other failures ${over.other}; latency of all p50 ${over.p50} ms, p99 ${over.p99} ms`,
    );
    const after = await run(server.url, closed);
    report.say(`capacity again (closed loop, ${closed} connections): ${fmt(after.goodput)} req/s completed`);
    const capacity = (before.goodput + after.goodput) / 2;
    report.say(
      `goodput ratio under overload: ${fmt(over.goodput / capacity, 2)} of capacity (goal >= 0.9; capacity runs differ by ${fmt((Math.abs(before.goodput - after.goodput) / capacity) * 100, 0)}%)`,
    );
    if (process.env['OVERLOAD_SAVE'] !== undefined) await report.save(process.env['OVERLOAD_SAVE']);
  } finally {
    await stopServer(server);
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
