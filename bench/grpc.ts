/**
 * @module
 * `npm run bench:grpc`: one Switchyard process, three transports to the same models, measured in the same run.
 *  - mlp (64→256→256→1, FP32 [1,64]) at 64 concurrent streams, and the encoder (INT64 input_ids [1,64], 4 layers,
 *    d=256) at 16: HTTP V2 JSON (the baseline), HTTP V2 binary tensor extension, gRPC ModelInfer with
 *    raw_input_contents. HTTP load comes from autocannon (one connection per stream); gRPC from grpc-js clients in
 *    this process with that many calls in flight over 8 HTTP/2 connections.
 *  - Rounds are interleaved (json, binary, grpc, json, ...) and the median per transport is reported, with its ratio
 *    to HTTP JSON. Goal: gRPC raw ≥ 1.0× HTTP JSON on mlp, ≥ 1.1× on the encoder.
 * Env: BENCH_ROUNDS (3), BENCH_ROUND_SECONDS (5), BENCH_ONLY (mlp|encoder).
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { credentials, Metadata, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadProtos } from '../src/api/index.js';
import { encoder, mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { fmt, noisyMachineHeader, Report, startServer, stopServer } from './lib.js';

const ROUNDS = Math.max(1, Number(process.env['BENCH_ROUNDS'] ?? 3));
const ROUND_SECONDS = Number(process.env['BENCH_ROUND_SECONDS'] ?? 5);
const ONLY = process.env['BENCH_ONLY'] ?? '';
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const report = new Report();
const say = report.say;

interface Workload {
  name: string; model: string; streams: number; input: string; datatype: 'FP32' | 'INT64'; data: number[];
}
const rand = (n: number, f: (i: number) => number): number[] => Array.from({ length: n }, (_, i) => f(i));
const WORKLOADS: Workload[] = ([
  { name: 'mlp', model: 'mlp', streams: 64, input: 'features', datatype: 'FP32' as const, data: rand(64, (i) => Math.sin(i) / 2) },
  { name: 'encoder', model: 'encoder', streams: 16, input: 'input_ids', datatype: 'INT64' as const, data: rand(64, (i) => (i * 37) % 1000) },
] satisfies Workload[]).filter((w) => ONLY === '' || w.name === ONLY);

const rawOf = (w: Workload): Buffer => {
  const a = w.datatype === 'FP32' ? Float32Array.from(w.data) : BigInt64Array.from(w.data, (x) => BigInt(x));
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
};

async function http(url: string, body: string | Buffer, headers: Record<string, string>, streams: number, seconds: number): Promise<number> {
  // autocannon sends a Buffer body as is (its bundled types say string).
  const r = await autocannon({ url, method: 'POST', body: body as string, connections: streams, duration: seconds, pipelining: 1, headers });
  if (r.errors > 0 || r.non2xx > 0) throw new Error(`${url}: ${r.errors} errors, ${r.non2xx} non-2xx`);
  return r.requests.average;
}

/** Closed loop: `streams` ModelInfer calls in flight for `seconds`; completed calls per second. */
async function grpcLoad(clients: readonly Client[], req: Record<string, unknown>, streams: number, seconds: number): Promise<number> {
  const infers = clients.map((c) => (c as unknown as Record<string, (r: unknown, m: Metadata, cb: (e: ServiceError | null) => void) => void>)['ModelInfer']!.bind(c));
  const md = new Metadata();
  const end = performance.now() + seconds * 1000;
  let done = 0;
  const loop = async (_: unknown, i: number): Promise<void> => {
    const infer = infers[i % infers.length]!;
    while (performance.now() < end) {
      await new Promise<void>((resolve, reject) => infer(req, md, (e) => (e ? reject(e) : resolve())));
      done++;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: streams }, loop));
  return done / ((performance.now() - t0) / 1000);
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const dir = await mkdtemp(join(tmpdir(), 'sy-bench-grpc-'));
const repo = join(dir, 'repo');
await mkdir(repo, { recursive: true });
await writeModelRepository(repo, { mlp: { versions: { 1: mlp() } }, encoder: { versions: { 1: encoder() } } });
const port = 19_000 + Math.floor(Math.random() * 1000);
const grpcPort = port + 1;
for (const line of noisyMachineHeader('gRPC transport benchmark')) say(line);
say(`rounds ${ROUNDS} × ${ROUND_SECONDS} s per transport, interleaved; medians; one server process (--grpc-port ${grpcPort})`);
const server = await startServer('switchyard', [cli, 'serve', '--model-repository', repo, '--data-dir', join(dir, 'data'), '--port', String(port), '--grpc-port', String(grpcPort), '--log-level', 'warn'], port);
// Several HTTP/2 connections (own subchannels), as autocannon opens one per stream: one channel tops out early in grpc-js.
const CHANNELS = 8;
const clients = Array.from({ length: CHANNELS }, () => new (loadProtos().InferenceClient)(`127.0.0.1:${grpcPort}`, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
try {
  for (const w of WORKLOADS) {
    const url = `${server.url}/v2/models/${w.model}/infer`;
    const json = JSON.stringify({ inputs: [{ name: w.input, datatype: w.datatype, shape: [1, 64], data: w.data }] });
    const raw = rawOf(w);
    const head = Buffer.from(JSON.stringify({ inputs: [{ name: w.input, datatype: w.datatype, shape: [1, 64], parameters: { binary_data_size: raw.length } }], parameters: { binary_data_output: true } }));
    const binary = Buffer.concat([head, raw]);
    const greq = { model_name: w.model, inputs: [{ name: w.input, datatype: w.datatype, shape: [1, 64] }], raw_input_contents: [raw] };
    const runs: Record<'json' | 'binary' | 'grpc', () => Promise<number>> = {
      json: () => http(url, json, { 'content-type': 'application/json' }, w.streams, ROUND_SECONDS),
      binary: () => http(url, binary, { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) }, w.streams, ROUND_SECONDS),
      grpc: () => grpcLoad(clients, greq, w.streams, ROUND_SECONDS),
    };
    // Warm each path (model, JIT, connections) before measuring.
    await http(url, json, { 'content-type': 'application/json' }, w.streams, 2);
    await grpcLoad(clients, greq, w.streams, 2);
    const got: Record<string, number[]> = { json: [], binary: [], grpc: [] };
    for (let r = 0; r < ROUNDS; r++) {
      for (const k of ['json', 'binary', 'grpc'] as const) {
        await new Promise((res) => setTimeout(res, 1000));
        got[k]!.push(await runs[k]());
      }
    }
    const base = median(got['json']!);
    say(`\n${w.name} at ${w.streams} streams ([1,64] ${w.datatype} per request):`);
    for (const [k, label] of [['json', 'HTTP V2 JSON (baseline)'], ['binary', 'HTTP V2 binary extension'], ['grpc', 'gRPC ModelInfer, raw contents']] as const) {
      const m = median(got[k]!);
      say(`  ${label.padEnd(32)} ${fmt(m).padStart(8)} req/s   ${fmt(m / base, 2)}×   (rounds: ${got[k]!.map((x) => fmt(x)).join(', ')})`);
    }
  }
} finally {
  for (const c of clients) c.close();
  await stopServer(server);
  await rm(dir, { recursive: true, force: true });
}
await mkdir('.bench', { recursive: true });
await report.save('.bench/grpc.txt');
