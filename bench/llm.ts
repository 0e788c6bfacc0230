/**
 * @module
 * `npm run bench:llm`: the LLM gateway's own overhead. A canned OpenAI-compatible upstream (bench/servers/
 * openai-stub.ts, no model) is called directly and through Switchyard (`backend: upstream`), alternating
 * request by request on one keep-alive connection each, non-streaming and streaming (16 content chunks, time
 * until the whole stream is read). Overhead = Switchyard's latency percentile minus the direct one, measured
 * in the same run. For scale, the same against a bare Fastify + undici pass-through proxy (bench/servers/
 * bare-proxy.ts: no validation, auth, limits or metrics), the floor for any Node.js gateway on the machine.
 * Then throughput at 16 concurrent connections.
 * Env: BENCH_LATENCY_N (default 3000), BENCH_SECONDS (10), BENCH_CONNECTIONS (16).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Client } from 'undici';
import { benchPort, loadAverage, machineName, percentiles, Report, startServer, stopServer, throughput } from './lib.js';

const N = Number(process.env['BENCH_LATENCY_N'] ?? 3000);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 16);
const WARMUP = 300;
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const stubJs = fileURLToPath(new URL('./servers/openai-stub.js', import.meta.url));
const bareJs = fileURLToPath(new URL('./servers/bare-proxy.js', import.meta.url));

const messages = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Say something about switchyards.' },
];
const plain = JSON.stringify({ model: 'stub', messages, max_tokens: 16 });
const streamed = JSON.stringify({ model: 'stub', messages, max_tokens: 16, stream: true, stream_options: { include_usage: true } });

async function startStub(port: number): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [stubJs, String(port), '16'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', () => resolve());
    proc.once('exit', (c) => reject(new Error(`stub exited with ${c}`)));
  });
  return proc;
}

type Pct = ReturnType<typeof percentiles>;

/** Alternate requests to the two targets, one keep-alive connection each; the whole body is read each time. */
async function interleaved(direct: string, gateway: string, body: string): Promise<{ direct: Pct; gateway: Pct }> {
  const a = new Client(direct, { pipelining: 1 });
  const b = new Client(gateway, { pipelining: 1 });
  const da: number[] = [];
  const db: number[] = [];
  const one = async (c: Client): Promise<number> => {
    const t0 = performance.now();
    const res = await c.request({ path: '/v1/chat/completions', method: 'POST', body, headers: { 'content-type': 'application/json' } });
    const text = await res.body.text();
    if (res.statusCode !== 200 || (body === streamed && !text.endsWith('data: [DONE]\n\n'))) throw new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`);
    return performance.now() - t0;
  };
  try {
    for (let i = 0; i < N + WARMUP; i++) {
      const first = i % 2 === 0;
      const x = await one(first ? a : b);
      const y = await one(first ? b : a);
      if (i < WARMUP) continue;
      da.push(first ? x : y);
      db.push(first ? y : x);
    }
  } finally {
    await a.close();
    await b.close();
  }
  return { direct: percentiles(da), gateway: percentiles(db) };
}

const report = new Report();
const say = report.say;
const ms = (x: number): string => x.toFixed(3);

const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-llm-'));
const [stubPort, syPort, barePort] = [await benchPort(), await benchPort(), await benchPort()];
const stubUrl = `http://127.0.0.1:${stubPort}`;
const stub = await startStub(stubPort);
const config = join(dir, 'llm.json');
await writeFile(config, JSON.stringify({ models: [{ name: 'stub', backend: 'upstream', deployments: [{ url: `${stubUrl}/v1` }] }] }));
const bare = await startServer('bare proxy', [bareJs, String(barePort), stubUrl], barePort);
const sy = await startServer(
  'switchyard',
  [cli, 'serve', '--port', String(syPort), '--grpc-port', '0', '--log-level', 'warn', '--data-dir', join(dir, 'data'), '--llm-config', config],
  syPort,
);
try {
  say(`Switchyard LLM gateway benchmark — ${new Date().toISOString().slice(0, 10)} — ${machineName()}`);
  say(`NOTE: 2 vCPUs shared by the stub upstream, Switchyard and this client; load average at start: ${loadAverage()}.`);
  say(`Upstream: canned OpenAI-compatible stub (16 content chunks when streaming). ${N} requests per target after ${WARMUP} warmup,`);
  say('alternating direct / through Switchyard on one keep-alive connection each (c=1); a stream is timed until [DONE] is read.');
  for (const [name, body] of [
    ['non-streaming', plain],
    ['streaming + include_usage', streamed],
  ] as const) {
    const r = await interleaved(stubUrl, sy.url, body);
    const floor = await interleaved(stubUrl, bare.url, body);
    say(`  ${name.padEnd(28)} direct p50 ${ms(r.direct.p50)} p99 ${ms(r.direct.p99)} ms | via Switchyard p50 ${ms(r.gateway.p50)} p99 ${ms(r.gateway.p99)} ms`);
    say(
      `  ${''.padEnd(28)} overhead p50 ${ms(r.gateway.p50 - r.direct.p50)} ms, p90 ${ms(r.gateway.p90 - r.direct.p90)} ms, p99 ${ms(r.gateway.p99 - r.direct.p99)} ms (target p50 <= 0.5 ms)`,
    );
    say(
      `  ${''.padEnd(28)} bare pass-through proxy (the floor): overhead p50 ${ms(floor.gateway.p50 - floor.direct.p50)} ms, p99 ${ms(floor.gateway.p99 - floor.direct.p99)} ms`,
    );
  }
  say(`Throughput at ${CONNECTIONS} connections × ${SECONDS}s (non-streaming):`);
  const d = await throughput(stubUrl, '/v1/chat/completions', plain, CONNECTIONS, SECONDS);
  const g = await throughput(sy.url, '/v1/chat/completions', plain, CONNECTIONS, SECONDS);
  say(
    `  direct ${d.rps.toFixed(0)} req/s, via Switchyard ${g.rps.toFixed(0)} req/s (${(g.rps / d.rps).toFixed(2)}x; the stub and the gateway share 2 vCPUs); errors ${d.errors + g.errors}, non-2xx ${d.non2xx + g.non2xx}`,
  );
  await mkdir('.bench', { recursive: true });
  await report.save('.bench/llm.txt');
} finally {
  await stopServer(sy);
  await stopServer(bare);
  stub.kill('SIGTERM');
  await once(stub, 'exit');
  await rm(dir, { recursive: true, force: true });
}
