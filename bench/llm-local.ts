/**
 * @module
 * `npm run bench:llm-local` (also the second half of `npm run bench:llm`): local generation through Switchyard
 * against node-llama-cpp driven directly, in the same run. The model is the test suite's tiny GGUF writer
 * (tools/gguf/tiny-llama.ts: random weights that never produce an end token, so every stream is exactly
 * `max_tokens` long), made a little wider so a token costs real compute. For 1, 4 and 8 concurrent streams:
 *
 * - direct: one llama.cpp context with 8 sequences in this process; each stream evaluates its prompt on its own
 *   sequence and takes BENCH_LLM_TOKENS greedy tokens (`sequence.evaluate`), the history cleared first;
 * - Switchyard: a server process with the same model and context (`sequences: 8`, the same threads), each
 *   stream a `POST /v1/completions` with `stream: true`, read to `[DONE]`, tokens counted from `usage`.
 *
 * Rounds alternate direct / Switchyard so the machine's noise lands on both. Reported: aggregate tokens/s
 * (median of rounds), Switchyard / direct, and aggregate at N streams / at 1 stream; and CPU time per token of
 * the process that generated (this one for direct, the server for Switchyard: /proc/<pid>/stat), which other
 * work on a shared machine disturbs far less than wall time: its ratio is Switchyard's per-token overhead.
 * Env: BENCH_LLM_TOKENS (128), BENCH_ROUNDS (5), BENCH_LLM_THREADS (max(1, cores − 1), both sides),
 * BENCH_LLM_EMBD (256), BENCH_LLM_LAYERS (4), BENCH_SAVE (a file for the report).
 */
import { cpus } from 'node:os';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'undici';
import { loadBindings } from '../src/runtimes/llama/bindings.js';
import { writeTinyLlama } from '../tools/gguf/tiny-llama.js';
import { benchPort, cpuUs, loadAverage, machineName, quantile, Report, startServer, stopServer } from './lib.js';

const TOKENS = Number(process.env['BENCH_LLM_TOKENS'] ?? 128);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const THREADS = Number(process.env['BENCH_LLM_THREADS'] ?? Math.max(1, cpus().length - 1));
const EMBD = Number(process.env['BENCH_LLM_EMBD'] ?? 256);
const LAYERS = Number(process.env['BENCH_LLM_LAYERS'] ?? 4);
const SEQUENCES = 8;
const CONCURRENCY = [1, 4, 8];
const CONTEXT = 512;
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const prompt = (i: number): string => `stream ${i} says hello to the switch yard`;

const report = new Report();
const say = report.say;
const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-llm-local-'));
const gguf = join(dir, 'tiny.gguf');
await writeTinyLlama(gguf, { embd: EMBD, layers: LAYERS, heads: 4, ff: EMBD * 2, context: CONTEXT });

// Direct: node-llama-cpp in this process, the way the llama backend loads it (CPU, same context shape).
const lib = await loadBindings();
const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error, progressLogs: false });
const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
const context = await model.createContext({ sequences: SEQUENCES, contextSize: CONTEXT * SEQUENCES, threads: THREADS });
const sequences = Array.from({ length: SEQUENCES }, () => context.getSequence());

/** What one round measured: tokens generated, wall seconds, and CPU seconds of the process that generated them. */
interface Round {
  tokens: number;
  seconds: number;
  cpu: number;
}

/** `streams` generations at once, one per sequence, in this process. */
async function direct(streams: number): Promise<Round> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const counts = await Promise.all(
    sequences.slice(0, streams).map(async (seq, i) => {
      await seq.clearHistory();
      const input = [model.tokens.bos!, ...model.tokenize(prompt(i), false)];
      let n = 0;
      const gen = seq.evaluate(input, { temperature: 0 });
      try {
        for await (const _ of gen) if (++n >= TOKENS) break;
      } finally {
        await gen.return();
      }
      return n;
    }),
  );
  const c = process.cpuUsage(c0);
  return { tokens: counts.reduce((a, b) => a + b, 0), seconds: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

// Switchyard: a server process serving the same file with the same context shape.
const config = join(dir, 'llm.json');
await writeFile(
  config,
  JSON.stringify({ models: [{ name: 'tiny', backend: 'llama', path: gguf, contextSize: CONTEXT, sequences: SEQUENCES, threads: THREADS }] }),
);
const port = await benchPort();
const sy = await startServer(
  'switchyard',
  [cli, 'serve', '--port', String(port), '--grpc-port', '0', '--log-level', 'warn', '--data-dir', join(dir, 'data'), '--llm-config', config],
  port,
);
const clients = Array.from({ length: SEQUENCES }, () => new Client(sy.url, { pipelining: 1 }));

/** `streams` streamed completions at once, each read to [DONE]; tokens from each stream's usage chunk. */
async function viaSwitchyard(streams: number): Promise<Round> {
  const t0 = performance.now();
  const c0 = await cpuUs(sy.proc.pid);
  const counts = await Promise.all(
    clients.slice(0, streams).map(async (c, i) => {
      const body = JSON.stringify({
        model: 'tiny',
        prompt: prompt(i),
        max_tokens: TOKENS,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      const res = await c.request({ path: '/v1/completions', method: 'POST', body, headers: { 'content-type': 'application/json' } });
      const text = await res.body.text();
      if (res.statusCode !== 200 || !text.endsWith('data: [DONE]\n\n')) throw new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`);
      const usage = text
        .split('\n\n')
        .map((e) => e.slice(6))
        .filter((e) => e.includes('"usage":{'))
        .at(-1);
      return (JSON.parse(usage!) as { usage: { completion_tokens: number } }).usage.completion_tokens;
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const c1 = await cpuUs(sy.proc.pid);
  return { tokens: counts.reduce((a, b) => a + b, 0), seconds, cpu: c0 === null || c1 === null ? NaN : (c1 - c0) / 1e6 };
}

try {
  say(`Switchyard local LLM benchmark — ${new Date().toISOString().slice(0, 10)} — ${machineName()}`);
  say(`NOTE: a 2 vCPU VM shared with other work (noisy); load average at start: ${loadAverage()}.`);
  say(`Model: tools/gguf/tiny-llama.ts, embd ${EMBD}, ${LAYERS} layers, ff ${EMBD * 2} (random weights, no end token); ${TOKENS} tokens per stream,`);
  say(
    `temperature 0; one context of ${SEQUENCES} sequences × ${CONTEXT} tokens, ${THREADS} llama.cpp thread(s) on both sides; ${ROUNDS} rounds, alternating, medians.`,
  );
  await direct(1); // warm-up: first evaluations, page faults
  await viaSwitchyard(1);
  const base = { direct: 0, sy: 0 };
  for (const n of CONCURRENCY) {
    const d: number[] = [];
    const s: number[] = [];
    const dc: number[] = [];
    const sc: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const first = r % 2 === 0;
      const a = first ? await direct(n) : await viaSwitchyard(n);
      const b = first ? await viaSwitchyard(n) : await direct(n);
      const [dr, sr] = first ? [a, b] : [b, a];
      if (dr.tokens !== n * TOKENS || sr.tokens !== n * TOKENS)
        throw new Error(`expected ${n * TOKENS} tokens, got direct ${dr.tokens}, Switchyard ${sr.tokens}`);
      d.push(dr.tokens / dr.seconds);
      s.push(sr.tokens / sr.seconds);
      dc.push((dr.cpu * 1000) / dr.tokens);
      sc.push((sr.cpu * 1000) / sr.tokens);
    }
    const dm = quantile(d, 0.5);
    const sm = quantile(s, 0.5);
    if (n === 1) {
      base.direct = dm;
      base.sy = sm;
    }
    say(
      `  ${String(n).padStart(2)} stream(s)  direct ${dm.toFixed(0).padStart(6)} tok/s | via Switchyard ${sm.toFixed(0).padStart(6)} tok/s | Switchyard/direct ${(sm / dm).toFixed(3)}` +
        ` | aggregate vs 1 stream: direct ${(dm / base.direct).toFixed(2)}x, Switchyard ${(sm / base.sy).toFixed(2)}x`,
    );
    const dcm = quantile(dc, 0.5);
    const scm = quantile(sc, 0.5);
    say(
      `  ${''.padStart(12)} CPU per token: direct ${dcm.toFixed(3)} ms (this process) | Switchyard ${scm.toFixed(3)} ms (server process) | Switchyard/direct ${(scm / dcm).toFixed(3)}`,
    );
  }
  if (process.env['BENCH_SAVE']) await report.save(process.env['BENCH_SAVE']);
} finally {
  await Promise.all(clients.map((c) => c.close()));
  await stopServer(sy);
  await context.dispose();
  await model.dispose();
  await rm(dir, { recursive: true, force: true });
}
