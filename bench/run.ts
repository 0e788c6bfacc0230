/**
 * @module
 * `npm run bench`: serving-core benchmark. Every number is printed next to a baseline measured in the same run:
 *  (a) small MLP 64→256→256→1: Switchyard V2 JSON throughput at 64 connections vs a bare Fastify server that
 *      parses the same JSON (HTTP ceiling) and vs a naive server (session.run per request, no batching);
 *      latency at concurrency 1: Switchyard p50 minus the ceiling's p50.
 *  (b) transformer encoder (int64 input_ids [N,64], 4 layers, d=256): Switchyard throughput vs raw in-process
 *      onnxruntime at its best batch size.
 * Env: BENCH_SECONDS (default 10, for (b)), BENCH_ROUNDS (5) and BENCH_ROUND_SECONDS (5) for (a), BENCH_CONNECTIONS (64), BENCH_LATENCY_N (3000), BENCH_ONLY (mlp|encoder).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { encoder, mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { benchPort, fmt, Report, sequentialLatency, startServer, stopServer, throughput, type Target } from './lib.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 64);
const LATENCY_N = Number(process.env['BENCH_LATENCY_N'] ?? 3000);
const ONLY = process.env['BENCH_ONLY'] ?? '';
const ROUNDS = Math.max(1, Number(process.env['BENCH_ROUNDS'] ?? 5));
const ROUND_SECONDS = Number(process.env['BENCH_ROUND_SECONDS'] ?? 5);
const here = fileURLToPath(new URL('.', import.meta.url));
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const rand = (n: number, f: (i: number) => number): number[] => Array.from({ length: n }, (_, i) => f(i));
const mlpBody = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: rand(64, (i) => Math.sin(i) / 2) }] });
const encBody = JSON.stringify({ inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, 64], data: rand(64, (i) => (i * 37) % 1000) }] });

const results: Record<string, unknown> = {};
const report = new Report();
const say = report.say;

/** Quiet time before each measurement: a server just measured (onnxruntime's spinning pool in the naive one) keeps a core busy for a moment. */
const SETTLE_MS = 3000;

async function measure(t: Target, path: string, body: string, warmS = 2, seconds = SECONDS): Promise<number> {
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  if (warmS > 0) await throughput(t.url, path, body, CONNECTIONS, warmS);
  const r = await throughput(t.url, path, body, CONNECTIONS, seconds);
  if (r.errors > 0 || r.non2xx > 0) throw new Error(`${t.name}: ${r.errors} errors, ${r.non2xx} non-2xx`);
  say(`  ${t.name.padEnd(28)} ${fmt(r.rps).padStart(8)} req/s   p50 ${fmt(r.p50Ms, 1)} ms   p99 ${fmt(r.p99Ms, 1)} ms`);
  return r.rps;
}

async function withServer<T>(name: string, args: string[], fn: (t: Target) => Promise<T>): Promise<T> {
  return withServers([[name, args]], ([t]) => fn(t!));
}

/** Start every server (idle ones cost no CPU), run `fn` with all of them, stop them. */
async function withServers<T>(specs: [string, string[]][], fn: (t: Target[]) => Promise<T>): Promise<T> {
  const started: Target[] = [];
  try {
    for (const [name, args] of specs) {
      const port = await benchPort();
      started.push(
        await startServer(
          name,
          args.map((a) => a.replace('{PORT}', String(port))),
          port,
        ),
      );
    }
    return await fn(started);
  } finally {
    for (const t of started) await stopServer(t);
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** A fresh data directory per server: the default (./data) would also load every model earlier runs registered. */
const switchyardArgs = (repo: string): string[] => [
  cli,
  'serve',
  '--model-repository',
  repo,
  '--data-dir',
  `${repo}-data`,
  '--port',
  '{PORT}',
  '--grpc-port',
  '0',
  '--log-level',
  'warn',
];

async function benchMlp(dir: string): Promise<void> {
  const repo = join(dir, 'mlp-repo');
  await writeModelRepository(repo, { mlp: { versions: { 1: mlp() } } });
  const path = '/v2/models/mlp/infer';
  say(`\n(a) small MLP 64→256→256→1, V2 JSON, ${CONNECTIONS} connections, ${ROUNDS} rounds of ${ROUND_SECONDS}s per server`);
  say('    (the three servers run side by side; each round measures ceiling and Switchyard back to back, in alternating order, then naive)');
  const servers: [string, string[]][] = [
    ['http ceiling (bare Fastify)', [join(here, 'servers/ceiling.js'), '{PORT}']],
    ['naive (run per request)', [join(here, 'servers/naive.js'), '{PORT}', join(repo, 'mlp/1/model.onnx')]],
    ['switchyard', switchyardArgs(repo)],
  ];
  await withServers(servers, async ([ceiling, naive, sy]) => {
    const rounds: { ceiling: number; naive: number; switchyard: number }[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      say(`  round ${r + 1}`);
      const warm = r === 0 ? 3 : 0;
      // Ceiling and Switchyard measured back to back, in alternating order: the machine's drift cancels out.
      const pair = r % 2 === 0 ? [ceiling!, sy!] : [sy!, ceiling!];
      const rps = new Map<Target, number>();
      for (const t of [...pair, naive!]) rps.set(t, await measure(t, path, mlpBody, warm, ROUND_SECONDS));
      const round = { ceiling: rps.get(ceiling!)!, naive: rps.get(naive!)!, switchyard: rps.get(sy!)! };
      say(
        `  ${''.padEnd(28)} switchyard / ceiling = ${fmt(round.switchyard / round.ceiling, 2)}x   switchyard / naive = ${fmt(round.switchyard / round.naive, 2)}x`,
      );
      rounds.push(round);
    }
    const ratioCeiling = median(rounds.map((x) => x.switchyard / x.ceiling));
    const ratioNaive = median(rounds.map((x) => x.switchyard / x.naive));
    say(
      `  median of ${ROUNDS} rounds: switchyard / ceiling = ${fmt(ratioCeiling, 2)}x (target ≥ 0.85)   switchyard / naive = ${fmt(ratioNaive, 2)}x (target ≥ 1.3)`,
    );

    say(`\n    latency at concurrency 1 (${LATENCY_N} sequential requests, one keep-alive connection)`);
    const lat = async (t: Target): Promise<number> => {
      const l = await sequentialLatency(t.url, path, mlpBody, LATENCY_N);
      say(`  ${t.name.padEnd(28)} p50 ${fmt(l.p50, 3)} ms   p90 ${fmt(l.p90, 3)} ms   p99 ${fmt(l.p99, 3)} ms`);
      return l.p50;
    };
    const ceilP50 = await lat(ceiling!);
    const syP50 = await lat(sy!);
    say(`  switchyard p50 − ceiling p50 = ${fmt(syP50 - ceilP50, 3)} ms (target ≤ 0.2)`);
    Object.assign(results, { mlp: { rounds, ratioCeiling, ratioNaive, ceilingP50Ms: ceilP50, switchyardP50Ms: syP50, addedP50Ms: syP50 - ceilP50 } });
  });
}

async function rawBestBatch(modelPath: string): Promise<{ best: number; batch: number }> {
  const session = await ort.InferenceSession.create(modelPath, { graphOptimizationLevel: 'all' });
  let best = 0;
  let bestBatch = 0;
  for (const b of [1, 4, 8, 16, 32, 64]) {
    const ids = new BigInt64Array(b * 64).map((_, i) => BigInt((i * 37) % 1000));
    const feeds = { input_ids: new ort.Tensor('int64', ids, [b, 64]) };
    await session.run(feeds);
    const until = performance.now() + Math.max(2000, SECONDS * 300);
    let rows = 0;
    const t0 = performance.now();
    while (performance.now() < until) {
      await session.run(feeds);
      rows += b;
    }
    const rps = rows / ((performance.now() - t0) / 1000);
    say(`  raw onnxruntime batch ${String(b).padStart(2)}        ${fmt(rps).padStart(8)} seq/s`);
    if (rps > best) {
      best = rps;
      bestBatch = b;
    }
  }
  await session.release();
  return { best, batch: bestBatch };
}

async function benchEncoder(dir: string): Promise<void> {
  const repo = join(dir, 'enc-repo');
  await writeModelRepository(repo, { encoder: { versions: { 1: encoder() } } });
  say(`\n(b) transformer encoder (input_ids [N,64] INT64, 4 layers, d=256), ${CONNECTIONS} connections, ${SECONDS}s`);
  const raw = await rawBestBatch(join(repo, 'encoder/1/model.onnx'));
  const syRps = await withServer('switchyard', switchyardArgs(repo), (t) => measure(t, '/v2/models/encoder/infer', encBody));
  say(`  switchyard / raw best batch (${raw.batch}) = ${fmt(syRps / raw.best, 2)}x (target ≥ 0.9)`);
  Object.assign(results, { encoder: { rawBest: raw.best, rawBestBatch: raw.batch, switchyardRps: syRps, ratioRaw: syRps / raw.best } });
}

const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-'));
try {
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'} × ${cpus().length} cores, Node ${process.version}`;
  say(`Switchyard serving benchmark — ${new Date().toISOString().slice(0, 10)} — ${machine}`);
  if (ONLY !== 'encoder') await benchMlp(dir);
  if (ONLY !== 'mlp') await benchEncoder(dir);
  await mkdir('.bench', { recursive: true });
  await writeFile(
    '.bench/results.json',
    `${JSON.stringify({ date: new Date().toISOString(), machine, seconds: SECONDS, connections: CONNECTIONS, ...results }, null, 2)}\n`,
  );
  await report.save('.bench/results.txt');
} finally {
  await rm(dir, { recursive: true, force: true });
}
