/**
 * @module
 * `npm run bench:gateway`: what the multi-tenant gateway costs on the hot path. The small MLP served three
 * ways in the same run — open mode (no key; the baseline), a tenant key with in-process limits, and a tenant
 * key with limits in Redis (one Lua call per request) — at 64 connections (throughput) and at concurrency 1
 * (p50 latency). Limits are set high enough that nothing is rejected: this measures the checks, not
 * throttling. Env: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (64), BENCH_LATENCY_N (3000),
 * BENCH_REDIS (redis://127.0.0.1:6379).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { benchPort, fmt, Report, sequentialLatency, startServer, stopServer, throughput } from './lib.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 64);
const LATENCY_N = Number(process.env['BENCH_LATENCY_N'] ?? 3000);
const REDIS = process.env['BENCH_REDIS'] ?? 'redis://127.0.0.1:6379';
const ADMIN = 'bench-gateway-admin-key-0123456789';
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const body = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: Array.from({ length: 64 }, (_, i) => Math.sin(i) / 2) }] });

const report = new Report();
const say = report.say;

interface Run {
  rps: number;
  p50: number;
}

async function run(name: string, dir: string, repo: string, mode: 'open' | 'memory' | 'redis'): Promise<Run> {
  const p = await benchPort();
  const args = [
    cli,
    'serve',
    '--model-repository',
    repo,
    '--data-dir',
    join(dir, `data-${mode}`),
    '--port',
    String(p),
    '--grpc-port',
    '0',
    '--log-level',
    'warn',
  ];
  if (mode !== 'open') args.push('--admin-key', ADMIN);
  if (mode === 'redis') args.push('--redis', REDIS, '--rate-limit-fail', 'closed', '--redis-timeout-ms', '1000');
  const t = await startServer(name, args, p);
  try {
    const headers: Record<string, string> = {};
    if (mode !== 'open') {
      const tenant = `bench${Math.random().toString(36).slice(2, 8)}`;
      const admin = async (method: string, path: string, payload: unknown): Promise<Record<string, unknown>> => {
        const init: RequestInit = {
          method,
          headers: { authorization: `Bearer ${ADMIN}`, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) },
        };
        if (payload !== undefined) init.body = JSON.stringify(payload);
        const r = await fetch(`${t.url}${path}`, init);
        if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
        return (await r.json()) as Record<string, unknown>;
      };
      await admin('POST', '/api/v1/tenants', { name: tenant, tier: 'unlimited', limits: { rps: 1e6, burst: 1e6, concurrency: 100_000, dailyQuota: 1e9 } });
      await admin('PUT', '/api/v1/models/mlp/shares/*', undefined);
      headers['authorization'] = `Bearer ${(await admin('POST', `/api/v1/tenants/${tenant}/keys`, { scopes: ['infer'] }))['key'] as string}`;
    }
    const path = '/v2/models/mlp/infer';
    await throughput(t.url, path, body, CONNECTIONS, 2, headers);
    const r = await throughput(t.url, path, body, CONNECTIONS, SECONDS, headers);
    if (r.errors > 0 || r.non2xx > 0) throw new Error(`${name}: ${r.errors} errors, ${r.non2xx} non-2xx`);
    const l = await sequentialLatency(t.url, path, body, LATENCY_N, headers);
    say(`  ${name.padEnd(34)} ${fmt(r.rps).padStart(7)} req/s   p99 ${fmt(r.p99Ms, 1)} ms   | c=1 p50 ${fmt(l.p50, 3)} ms  p99 ${fmt(l.p99, 3)} ms`);
    return { rps: r.rps, p50: l.p50 };
  } finally {
    await stopServer(t);
  }
}

const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-gw-'));
try {
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'} × ${cpus().length} cores, Node ${process.version}`;
  say(`Switchyard gateway benchmark — ${new Date().toISOString().slice(0, 10)} — ${machine}`);
  const repo = join(dir, 'repo');
  await writeModelRepository(repo, { mlp: { versions: { 1: mlp() } } });
  say(`small MLP, V2 JSON, ${CONNECTIONS} connections × ${SECONDS}s, then ${LATENCY_N} sequential requests`);
  const open = await run('open mode (no key): baseline', dir, repo, 'open');
  const memory = await run('tenant key + in-process limits', dir, repo, 'memory');
  const redis = await run('tenant key + Redis limits', dir, repo, 'redis');
  say(`  in-process limits: ${fmt(memory.rps / open.rps, 2)}x throughput, +${fmt(memory.p50 - open.p50, 3)} ms p50`);
  say(`  Redis limits:      ${fmt(redis.rps / open.rps, 2)}x throughput, +${fmt(redis.p50 - open.p50, 3)} ms p50`);
  await mkdir('.bench', { recursive: true });
  await writeFile(
    '.bench/gateway.json',
    `${JSON.stringify({ date: new Date().toISOString(), machine, seconds: SECONDS, connections: CONNECTIONS, open, memory, redis }, null, 2)}\n`,
  );
  await report.save('.bench/gateway.txt');
} finally {
  await rm(dir, { recursive: true, force: true });
}
