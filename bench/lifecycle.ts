/**
 * @module
 * Lifecycle benchmark (`npm run bench:lifecycle`): hot swap under load and memory-budgeted residency, each
 * against a baseline measured in the same run.
 *
 * 1. Hot swap: 16 connections of V2 JSON traffic to `fraud` (default route = production alias) for a steady
 *    phase, then the same while the alias flips between two versions every 200 ms. Prints failed requests and
 *    p99 during swaps as a ratio to the steady p99.
 * 2. Residency: 200 registered lazy models, random traffic across all of them, once with no budget (all end up
 *    resident: the baseline) and once with a budget that fits 20. Every model is touched once first (without a budget
 *    all stay resident). Prints failed requests, evictions, cold starts, the throughput ratio and server RSS.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { mlp } from '../tools/onnx/zoo.js';
import { benchPort, quantile, startServer, stopServer, type Target } from './lib.js';

const BODY = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: Array.from({ length: 64 }, (_, i) => Math.sin(i)) }] });

async function post(pool: Pool, path: string, body: string | Buffer, type = 'application/json'): Promise<{ status: number; text: string }> {
  const r = await pool.request({ path, method: 'POST', body, headers: { 'content-type': type } });
  return { status: r.statusCode, text: await r.body.text() };
}

async function put(pool: Pool, path: string, json: object): Promise<void> {
  const r = await pool.request({ path, method: 'PUT', body: JSON.stringify(json), headers: { 'content-type': 'application/json' } });
  const text = await r.body.text();
  if (r.statusCode >= 300) throw new Error(`PUT ${path}: ${r.statusCode} ${text}`);
}

async function metric(pool: Pool, pattern: RegExp): Promise<number> {
  const r = await pool.request({ path: '/metrics', method: 'GET' });
  const text = await r.body.text();
  return [...text.matchAll(pattern)].reduce((a, m) => a + Number(m[1]), 0);
}

/** `conns` closed loops for `ms`, each request to `path()`; latencies and failures. */
async function load(pool: Pool, conns: number, ms: number, path: () => string): Promise<{ lat: number[]; failed: number; n: number }> {
  const lat: number[] = [];
  let failed = 0;
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: conns }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const r = await post(pool, path(), BODY).catch(() => ({ status: 0, text: '' }));
        lat.push(performance.now() - t0);
        if (r.status !== 200) failed++;
      }
    }),
  );
  return { lat, failed, n: lat.length };
}

async function start(name: string, port: number, args: string[]): Promise<{ t: Target; pool: Pool; data: string }> {
  const data = await mkdtemp(join(tmpdir(), `sy-bench-${name}-`));
  const t = await startServer(
    name,
    ['dist/src/cli/main.js', 'serve', '--port', String(port), '--grpc-port', '0', '--data-dir', data, '--log-level', 'warn', ...args],
    port,
  );
  return { t, pool: new Pool(t.url, { connections: 32 }), data };
}

async function stop(s: { t: Target; pool: Pool; data: string }): Promise<void> {
  await s.pool.close();
  await stopServer(s.t);
  await rm(s.data, { recursive: true, force: true });
}

async function hotSwap(): Promise<void> {
  const s = await start('swap', await benchPort(), []);
  try {
    await post(s.pool, '/api/v1/models/fraud/versions?alias=production', Buffer.from(mlp(1)), 'application/octet-stream');
    await post(s.pool, '/api/v1/models/fraud/versions', Buffer.from(mlp(2)), 'application/octet-stream');
    await load(s.pool, 16, 1000, () => '/v2/models/fraud/infer'); // warm
    const steady = await load(s.pool, 16, 4000, () => '/v2/models/fraud/infer');
    let flips = 0;
    let stopFlips = false;
    const flipper = (async () => {
      while (!stopFlips) {
        await put(s.pool, '/api/v1/models/fraud/aliases/production', { version: (flips++ % 2) + 1 });
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const swapping = await load(s.pool, 16, 4000, () => '/v2/models/fraud/infer');
    stopFlips = true;
    await flipper;
    const p99s = quantile(steady.lat, 0.99);
    const p99w = quantile(swapping.lat, 0.99);
    console.log('hot swap (16 connections, alias flipped every 200 ms)');
    console.log(`  steady:   ${steady.n} requests, ${steady.failed} failed, p50 ${quantile(steady.lat, 0.5).toFixed(2)} ms, p99 ${p99s.toFixed(2)} ms`);
    console.log(
      `  swapping: ${swapping.n} requests, ${swapping.failed} failed, ${flips} flips, p50 ${quantile(swapping.lat, 0.5).toFixed(2)} ms, p99 ${p99w.toFixed(2)} ms`,
    );
    console.log(`  p99 during swaps / steady p99: ${(p99w / p99s).toFixed(2)}x; failed requests: ${swapping.failed}`);
  } finally {
    await stop(s);
  }
}

async function residency(): Promise<void> {
  const MODELS = 200;
  const BUDGET = 20 * 512 * 1024;
  const bytes = Buffer.from(mlp(5));
  const run = async (label: string, port: number, budget: number) => {
    const s = await start(label, port, ['--memory-budget', String(budget), '--load-wait-ms', '60000']);
    try {
      for (let i = 0; i < MODELS; i++) {
        const r = await s.pool.request({
          path: '/api/v1/models',
          method: 'POST',
          body: JSON.stringify({ name: `m${i}`, loadPolicy: 'lazy', config: { instances: 1 } }),
          headers: { 'content-type': 'application/json' },
        });
        await r.body.text();
        await post(s.pool, `/api/v1/models/m${i}/versions`, bytes, 'application/octet-stream');
      }
      // Touch every model once, one at a time: without a budget all 200 end up resident (the baseline).
      for (let i = 0; i < MODELS; i++) await post(s.pool, `/v2/models/m${i}/infer`, BODY);
      const rss0 = await metric(s.pool, /^process_resident_memory_bytes (\S+)$/gm);
      let seed = 7;
      const rand = (): number => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % MODELS;
      const colds0 = await metric(s.pool, /^switchyard_model_cold_start_wait_seconds_count\{[^}]*\} (\S+)$/gm);
      const evictions0 = await metric(s.pool, /^switchyard_model_unloads_total\{[^}]*reason="evicted"\} (\S+)$/gm);
      const res = await load(s.pool, 16, 6000, () => `/v2/models/m${rand()}/infer`);
      const rss1 = await metric(s.pool, /^process_resident_memory_bytes (\S+)$/gm);
      const evictions = await metric(s.pool, /^switchyard_model_unloads_total\{[^}]*reason="evicted"\} (\S+)$/gm);
      const colds = await metric(s.pool, /^switchyard_model_cold_start_wait_seconds_count\{[^}]*\} (\S+)$/gm);
      const used = await metric(s.pool, /^switchyard_memory_used_bytes (\S+)$/gm);
      return {
        ...res,
        rps: res.n / 6,
        p99: quantile(res.lat, 0.99),
        growth: rss1 - rss0,
        evictions: evictions - evictions0,
        colds: colds - colds0,
        used,
        rss1,
      };
    } finally {
      await stop(s);
    }
  };
  const all = await run('resident-all', await benchPort(), 0);
  const budgeted = await run('budget', await benchPort(), BUDGET);
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
  console.log(`residency (${MODELS} lazy models, random traffic, 16 connections, 6 s)`);
  for (const [name, r] of [
    ['no budget (all resident)', all],
    [`budget ${mib(BUDGET)} (~20 fit)`, budgeted],
  ] as const) {
    console.log(
      `  ${name}: ${r.n} requests (${r.rps.toFixed(0)} req/s), ${r.failed} failed, p99 ${r.p99.toFixed(1)} ms, cold starts ${r.colds}, evictions ${r.evictions}, accounted ${mib(r.used)}, RSS ${mib(r.rss1)}`,
    );
  }
  console.log(
    `  budget throughput / all-resident throughput: ${(budgeted.rps / all.rps).toFixed(2)}x; server RSS with budget ${mib(budgeted.rss1)} vs all resident ${mib(all.rss1)}: the budget saves ${mib(all.rss1 - budgeted.rss1)}`,
  );
}

console.log(`Switchyard lifecycle benchmark — ${new Date().toISOString()} — node ${process.version}`);
await hotSwap();
await residency();
