/**
 * @module
 * `npm run bench:grpc`: one Switchyard process, the same models over three transports, measured in the same run.
 *  - mlp (64→256→256→1, FP32 [1,64]) at 64 concurrent streams, and the encoder (INT64 input_ids [1,64], 4 layers,
 *    d=256) at 16: HTTP V2 JSON (the baseline), HTTP V2 binary tensor extension, gRPC ModelInfer with
 *    raw_input_contents.
 *  - The load generators run in this process, the server in its own. HTTP load comes from autocannon (one
 *    connection per stream, a fixed request body, responses counted, not parsed). gRPC load comes from the same kind
 *    of generator over HTTP/2 (node:http2, 8 connections, the ModelInferRequest encoded once, every response's
 *    grpc-status checked, the first response decoded and checked). A grpc-js client is measured too, as what a real
 *    Node client gets: it costs several times the CPU per call of either generator, and on a small machine that
 *    shares its cores with the server it, not the server, sets the rate.
 *  - Per transport: requests/s, the server's CPU time per request (user + system of all its threads, from
 *    /proc/<pid>/stat: steadier than the rate on a shared machine) and the load generator's. Rounds are
 *    interleaved (json, binary, grpc, grpc-js, json, ...); medians, ratios to HTTP JSON's median of the same run.
 *    Goal: gRPC raw ≥ 1.0× HTTP JSON on mlp, ≥ 1.1× on the encoder.
 * Env: BENCH_ROUNDS (3), BENCH_ROUND_SECONDS (5), BENCH_ONLY (mlp|encoder).
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type ClientHttp2Session } from 'node:http2';
import autocannon from 'autocannon';
import { credentials, Metadata, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadProtos } from '../src/api/index.js';
import { encoder, mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { benchPort, cpuUs, fmt, noisyMachineHeader, Report, startServer, stopServer } from './lib.js';

const ROUNDS = Math.max(1, Number(process.env['BENCH_ROUNDS'] ?? 3));
const ROUND_SECONDS = Number(process.env['BENCH_ROUND_SECONDS'] ?? 5);
const ONLY = process.env['BENCH_ONLY'] ?? '';
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const report = new Report();
const say = report.say;

interface Workload {
  name: string;
  model: string;
  streams: number;
  input: string;
  datatype: 'FP32' | 'INT64';
  data: number[];
}
const rand = (n: number, f: (i: number) => number): number[] => Array.from({ length: n }, (_, i) => f(i));
const WORKLOADS: Workload[] = (
  [
    { name: 'mlp', model: 'mlp', streams: 64, input: 'features', datatype: 'FP32' as const, data: rand(64, (i) => Math.sin(i) / 2) },
    { name: 'encoder', model: 'encoder', streams: 16, input: 'input_ids', datatype: 'INT64' as const, data: rand(64, (i) => (i * 37) % 1000) },
  ] satisfies Workload[]
).filter((w) => ONLY === '' || w.name === ONLY);

const rawOf = (w: Workload): Buffer => {
  const a = w.datatype === 'FP32' ? Float32Array.from(w.data) : BigInt64Array.from(w.data, (x) => BigInt(x));
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
};

/** One measured round: completed requests per second and CPU µs per request (server, load generator). */
interface Round {
  rps: number;
  serverUs: number;
  clientUs: number;
}

/** Run `load` (returns completed requests) and charge the server's and this process's CPU time to its requests. */
async function measured(pid: number | undefined, load: () => Promise<number>): Promise<Round> {
  const s0 = await cpuUs(pid);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const n = await load();
  const dt = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const s1 = await cpuUs(pid);
  return { rps: n / dt, serverUs: s0 === null || s1 === null ? NaN : (s1 - s0) / n, clientUs: (c.user + c.system) / n };
}

async function http(url: string, body: string | Buffer, headers: Record<string, string>, streams: number, seconds: number): Promise<number> {
  // autocannon sends a Buffer body as is (its bundled types say string).
  const r = await autocannon({ url, method: 'POST', body: body as string, connections: streams, duration: seconds, pipelining: 1, headers });
  if (r.errors > 0 || r.non2xx > 0) throw new Error(`${url}: ${r.errors} errors, ${r.non2xx} non-2xx`);
  return r.requests.total;
}

/** The gRPC wire form of a message: 1 byte compressed flag (0), 4 bytes big-endian length, the message. */
function grpcFrame(message: Buffer): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

/**
 * gRPC's autocannon: `streams` unary calls in flight over `sessions` (HTTP/2 connections), each sending the same
 * encoded request; a call counts when its trailers say grpc-status 0 (anything else throws). Resolves with the
 * calls completed in `seconds`; with `keep`, the first response's message bytes go to it.
 */
async function h2Load(
  sessions: readonly ClientHttp2Session[],
  path: string,
  frame: Buffer,
  streams: number,
  seconds: number,
  keep?: (message: Buffer) => void,
): Promise<number> {
  const headers = { ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' };
  const end = performance.now() + seconds * 1000;
  let done = 0;
  const call = (s: ClientHttp2Session): Promise<void> =>
    new Promise((resolve, reject) => {
      const st = s.request(headers);
      let status: string | undefined;
      const chunks: Buffer[] | null = keep === undefined ? null : [];
      st.on('response', (h) => {
        status = h['grpc-status'] as string | undefined;
      }); // a trailers-only answer (an error)
      st.on('trailers', (t) => {
        status = t['grpc-status'] as string | undefined;
      });
      st.on('data', (d: Buffer) => chunks?.push(d));
      st.on('end', () => {
        if (status !== '0') return reject(new Error(`${path}: grpc-status ${status}`));
        if (chunks !== null && keep !== undefined) {
          keep(Buffer.concat(chunks).subarray(5));
          keep = undefined;
        }
        resolve();
      });
      st.on('error', reject);
      st.end(frame);
    });
  const loop = async (_: unknown, i: number): Promise<void> => {
    const s = sessions[i % sessions.length]!;
    while (performance.now() < end) {
      await call(s);
      done++;
    }
  };
  await Promise.all(Array.from({ length: streams }, loop));
  return done;
}

/** Closed loop through grpc-js clients: `streams` ModelInfer calls in flight for `seconds`; calls completed. */
async function grpcJsLoad(clients: readonly Client[], req: Record<string, unknown>, streams: number, seconds: number): Promise<number> {
  const infers = clients.map((c) =>
    (c as unknown as Record<string, (r: unknown, m: Metadata, cb: (e: ServiceError | null) => void) => void>)['ModelInfer']!.bind(c),
  );
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
  await Promise.all(Array.from({ length: streams }, loop));
  return done;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const dir = await mkdtemp(join(tmpdir(), 'sy-bench-grpc-'));
const repo = join(dir, 'repo');
await mkdir(repo, { recursive: true });
await writeModelRepository(repo, { mlp: { versions: { 1: mlp() } }, encoder: { versions: { 1: encoder() } } });
const port = await benchPort();
const grpcPort = await benchPort();
for (const line of noisyMachineHeader('gRPC transport benchmark')) say(line);
say(`rounds ${ROUNDS} × ${ROUND_SECONDS} s per transport, interleaved; medians; one server process (--grpc-port ${grpcPort}), the load`);
say("generators in this one; CPU µs per request: the server's (all its threads) and the load generator's");
const server = await startServer(
  'switchyard',
  [cli, 'serve', '--model-repository', repo, '--data-dir', join(dir, 'data'), '--port', String(port), '--grpc-port', String(grpcPort), '--log-level', 'warn'],
  port,
);
const pid = server.proc.pid;
// Several HTTP/2 connections, as autocannon opens one per stream (a single one serializes on one socket).
const CONNECTIONS = 8;
const protos = loadProtos();
const sessions = Array.from({ length: CONNECTIONS }, () => connect(`http://127.0.0.1:${grpcPort}`));
const clients = Array.from(
  { length: CONNECTIONS },
  () => new protos.InferenceClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }),
);
const modelInfer = protos.inference['ModelInfer']!;
try {
  for (const w of WORKLOADS) {
    const url = `${server.url}/v2/models/${w.model}/infer`;
    const json = JSON.stringify({ inputs: [{ name: w.input, datatype: w.datatype, shape: [1, 64], data: w.data }] });
    const raw = rawOf(w);
    const head = Buffer.from(
      JSON.stringify({
        inputs: [{ name: w.input, datatype: w.datatype, shape: [1, 64], parameters: { binary_data_size: raw.length } }],
        parameters: { binary_data_output: true },
      }),
    );
    const binary = Buffer.concat([head, raw]);
    const greq = { model_name: w.model, inputs: [{ name: w.input, datatype: w.datatype, shape: [1, 64] }], raw_input_contents: [raw] };
    const frame = grpcFrame(modelInfer.requestSerialize(greq));
    const runs = {
      json: () => http(url, json, { 'content-type': 'application/json' }, w.streams, ROUND_SECONDS),
      binary: () =>
        http(url, binary, { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) }, w.streams, ROUND_SECONDS),
      grpc: () => h2Load(sessions, modelInfer.path, frame, w.streams, ROUND_SECONDS),
      grpcjs: () => grpcJsLoad(clients, greq, w.streams, ROUND_SECONDS),
    };
    type Transport = keyof typeof runs;
    const transports: Transport[] = ['json', 'binary', 'grpc', 'grpcjs'];
    // Warm each path (model, JIT, connections) before measuring; check one gRPC answer in full.
    await http(url, json, { 'content-type': 'application/json' }, w.streams, 2);
    let answer: Buffer | null = null;
    await h2Load(sessions, modelInfer.path, frame, w.streams, 2, (m) => (answer = m));
    const res = modelInfer.responseDeserialize(answer!) as { model_name: string; outputs: unknown[]; raw_output_contents: Buffer[] };
    if (res.model_name !== w.model || res.outputs.length === 0 || res.raw_output_contents.length !== res.outputs.length) {
      throw new Error(`${w.model}: unexpected gRPC answer ${JSON.stringify(res)}`);
    }
    await grpcJsLoad(clients, greq, w.streams, 2);
    const got = Object.fromEntries(transports.map((k) => [k, [] as Round[]])) as Record<Transport, Round[]>;
    for (let r = 0; r < ROUNDS; r++) {
      for (const k of transports) {
        await new Promise((res) => setTimeout(res, 1000));
        got[k].push(await measured(pid, runs[k]));
      }
    }
    const base = median(got.json.map((x) => x.rps));
    const baseCpu = median(got.json.map((x) => x.serverUs));
    say(`\n${w.name} at ${w.streams} streams ([1,64] ${w.datatype} per request):`);
    say(`  ${''.padEnd(34)} ${'req/s'.padStart(8)}  ${'ratio'.padStart(6)}  ${'server µs/req'.padStart(13)}  ${'client µs/req'.padStart(13)}   rounds (req/s)`);
    const labels: Record<Transport, string> = {
      json: 'HTTP V2 JSON (baseline, autocannon)',
      binary: 'HTTP V2 binary (autocannon)',
      grpc: 'gRPC raw contents (HTTP/2 gen.)',
      grpcjs: 'gRPC raw contents (grpc-js client)',
    };
    for (const k of transports) {
      const m = median(got[k].map((x) => x.rps));
      const sv = median(got[k].map((x) => x.serverUs));
      const cl = median(got[k].map((x) => x.clientUs));
      say(
        `  ${labels[k].padEnd(34)} ${fmt(m).padStart(8)}  ${fmt(m / base, 2).padStart(5)}×  ${`${fmt(sv)} (${fmt(sv / baseCpu, 2)}×)`.padStart(13)}  ${fmt(cl).padStart(13)}   ${got[k].map((x) => fmt(x.rps)).join(', ')}`,
      );
    }
  }
} finally {
  for (const s of sessions) s.close();
  for (const c of clients) c.close();
  await stopServer(server);
  await rm(dir, { recursive: true, force: true });
}
await mkdir('.bench', { recursive: true });
await report.save('.bench/grpc.txt');
