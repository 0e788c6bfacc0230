/**
 * @module
 * `npm run bench:routing`: what traffic management costs on the hot path. The small MLP (versions 1 and 2,
 * different weights) served in the same run — no routing policy (the baseline), a weighted canary (95/5,
 * random), a sticky A/B split (50/50 by a hashed `x-user-id`), one arm with a fallback chain and a circuit
 * breaker (healthy path: the bookkeeping only), and the result cache answering every request from memory and
 * from Redis — at 64 connections (throughput) and at concurrency 1 (p50 latency). Each scenario runs in a fresh
 * server process; requests name no version, so the policy routes them. The baseline runs first and last (the
 * machine drifts); ratios are against their mean. Also reports the server's CPU time per request (Linux /proc).
 * Env: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (64), BENCH_LATENCY_N (3000), BENCH_REDIS (redis://127.0.0.1:6379).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import {
  benchPort,
  cpuUs,
  fmt,
  loadAverage,
  machineName,
  noisyMachineHeader,
  Report,
  sequentialLatency,
  signed,
  startServer,
  stopServer,
  throughput,
} from './lib.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 64);
const LATENCY_N = Number(process.env['BENCH_LATENCY_N'] ?? 3000);
const REDIS = process.env['BENCH_REDIS'] ?? 'redis://127.0.0.1:6379';
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const body = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: Array.from({ length: 64 }, (_, i) => Math.sin(i) / 2) }] });
const PATH = '/v2/models/mlp/infer';
/** autocannon sends the same headers on every request: one routing key for the whole sticky run. */
const USER = 'bench-user-42';

const report = new Report();
const say = report.say;
const W = 44;

interface Run {
  rps: number;
  p99Ms: number;
  p50: number;
  p99: number;
  requests: number;
  cpuUsPerReq: number | null;
  note: string;
}

interface Scenario {
  readonly name: string;
  readonly policy?: Record<string, unknown>;
  readonly headers?: Record<string, string>;
  readonly redis?: boolean;
  /** Checks on the running server before measuring; returns a short note for the output. */
  readonly check?: (url: string) => Promise<string>;
  /** Checks after measuring (e.g. cache hit counts); returns a short note. */
  readonly after?: (url: string, requests: number) => Promise<string>;
}

async function infer(url: string, headers: Record<string, string> = {}): Promise<Response> {
  const r = await fetch(`${url}${PATH}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  if (r.status !== 200) throw new Error(`probe: ${r.status} ${await r.text()}`);
  await r.arrayBuffer();
  return r;
}

/** Served versions (x-switchyard-model-version) and arms over n probes, each with headers from `h(i)`. */
async function sample(
  url: string,
  n: number,
  h: (i: number) => Record<string, string> = () => ({}),
): Promise<{ versions: Map<string, number>; arms: Map<string, number> }> {
  const versions = new Map<string, number>();
  const arms = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = await infer(url, h(i));
    const v = r.headers.get('x-switchyard-model-version') ?? '?';
    const a = r.headers.get('x-switchyard-arm') ?? '(none)';
    versions.set(v, (versions.get(v) ?? 0) + 1);
    arms.set(a, (arms.get(a) ?? 0) + 1);
  }
  return { versions, arms };
}
const show = (m: Map<string, number>): string =>
  [...m]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}:${v}`)
    .join(' ');

/** Counter values from /metrics whose line starts with `prefix` (labels included), summed. */
async function metric(url: string, prefix: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const l of text.split('\n')) if (l.startsWith(prefix)) sum += Number(l.slice(l.lastIndexOf(' ') + 1));
  return sum;
}

async function cacheHitCheck(url: string): Promise<string> {
  const first = (await infer(url)).headers.get('x-switchyard-cache');
  const second = (await infer(url)).headers.get('x-switchyard-cache');
  if (second !== 'hit')
    throw new Error(`result cache: expected x-switchyard-cache: hit on a repeated request, got ${String(second)} (first: ${String(first)})`);
  return `probe: x-switchyard-cache ${String(first)} then ${second}`;
}

async function cacheCounts(url: string, requests: number): Promise<string> {
  const hits = await metric(url, 'switchyard_cache_requests_total{model="mlp",result="hit"}');
  const misses = await metric(url, 'switchyard_cache_requests_total{model="mlp",result="miss"}');
  const errors = await metric(url, 'switchyard_cache_errors_total');
  return `lookups: ${hits} hit, ${misses} miss, ${errors} cache errors (${requests} + warmup/latency requests)`;
}

async function redisReachable(url: string): Promise<boolean> {
  const u = new URL(url);
  return await new Promise<boolean>((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port || 6379) });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('error', () => done(false));
    s.once('connect', () => s.write('PING\r\n'));
    s.once('data', (d) => done(d.toString().startsWith('+PONG')));
  });
}

async function run(sc: Scenario, dir: string, repo: string): Promise<Run> {
  const p = await benchPort();
  const args = [cli, 'serve', '--model-repository', repo, '--data-dir', join(dir, `data-${p}`), '--port', String(p), '--grpc-port', '0', '--log-level', 'warn'];
  if (sc.redis === true) args.push('--redis', REDIS);
  const t = await startServer(sc.name, args, p);
  try {
    if (sc.policy !== undefined) {
      const r = await fetch(`${t.url}/api/v1/models/mlp/routing`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(sc.policy),
      });
      if (!r.ok) throw new Error(`${sc.name}: PUT routing: ${r.status} ${await r.text()}`);
      await r.arrayBuffer();
    }
    const note = sc.check === undefined ? '' : await sc.check(t.url);
    const headers = sc.headers ?? {};
    await throughput(t.url, PATH, body, CONNECTIONS, 2, headers);
    const cpu0 = await cpuUs(t.proc.pid);
    const r = await throughput(t.url, PATH, body, CONNECTIONS, SECONDS, headers);
    const cpu1 = await cpuUs(t.proc.pid);
    if (r.errors > 0 || r.non2xx > 0) throw new Error(`${sc.name}: ${r.errors} errors, ${r.non2xx} non-2xx`);
    const l = await sequentialLatency(t.url, PATH, body, LATENCY_N, headers);
    const requests = Math.round(r.rps * SECONDS);
    const cpuUsPerReq = cpu0 === null || cpu1 === null || requests === 0 ? null : (cpu1 - cpu0) / requests;
    const after = sc.after === undefined ? '' : await sc.after(t.url, requests);
    const cpu = cpuUsPerReq === null ? 'n/a' : fmt(cpuUsPerReq, 0);
    say(
      `  ${sc.name.padEnd(W)} ${fmt(r.rps).padStart(7)} req/s  p99 ${fmt(r.p99Ms, 1).padStart(5)} ms  server CPU ${cpu.padStart(4)} µs/req | c=1 p50 ${fmt(l.p50, 3)} ms  p99 ${fmt(l.p99, 3)} ms`,
    );
    for (const n of [note, after]) if (n !== '') say(`      ${n}`);
    return { rps: r.rps, p99Ms: r.p99Ms, p50: l.p50, p99: l.p99, requests, cpuUsPerReq, note: [note, after].filter((x) => x !== '').join('; ') };
  } finally {
    await stopServer(t);
  }
}

const scenarios: Scenario[] = [
  {
    name: '1. no policy: baseline',
    check: async (url) => {
      const s = await sample(url, 20);
      return `probe (20): versions ${show(s.versions)}, arms ${show(s.arms)}`;
    },
  },
  {
    name: '2. weighted canary 95/5 (random)',
    policy: {
      arms: [
        { name: 'control', target: '1', weight: 95 },
        { name: 'canary', target: '2', weight: 5 },
      ],
    },
    check: async (url) => {
      const s = await sample(url, 400);
      if ((s.versions.get('2') ?? 0) === 0 || (s.versions.get('1') ?? 0) === 0) throw new Error(`canary: both versions should serve, got ${show(s.versions)}`);
      return `probe (400): arms ${show(s.arms)}, versions ${show(s.versions)}`;
    },
  },
  {
    name: '3. sticky A/B 50/50 (header:x-user-id)',
    policy: {
      arms: [
        { name: 'a', target: '1', weight: 50 },
        { name: 'b', target: '2', weight: 50 },
      ],
      sticky: { key: 'header:x-user-id' },
    },
    headers: { 'x-user-id': USER },
    check: async (url) => {
      const many = await sample(url, 200, (i) => ({ 'x-user-id': `user-${i}` }));
      if (many.arms.size !== 2) throw new Error(`sticky: 200 distinct keys should reach both arms, got ${show(many.arms)}`);
      const one = await sample(url, 50, () => ({ 'x-user-id': USER }));
      if (one.arms.size !== 1) throw new Error(`sticky: one key should always reach the same arm, got ${show(one.arms)}`);
      return `probe: 200 distinct keys → arms ${show(many.arms)}; key "${USER}" ×50 → ${show(one.arms)}`;
    },
  },
  {
    name: '4. 1 arm + fallback + circuit breaker',
    policy: { arms: [{ name: 'a', target: '1', weight: 1 }], fallback: [{ version: '2' }], circuitBreaker: {} },
    check: async (url) => {
      const s = await sample(url, 20);
      if (s.versions.size !== 1 || !s.versions.has('1')) throw new Error(`fallback: a healthy arm should serve every request, got ${show(s.versions)}`);
      return `probe (20): arms ${show(s.arms)}, versions ${show(s.versions)}`;
    },
    after: async (url) => {
      const r = (await (await fetch(`${url}/api/v1/models/mlp/routing`)).json()) as { circuits: { version: string; state: string }[] };
      const fb = await metric(url, 'switchyard_routing_fallbacks_total');
      return `after: circuits ${r.circuits.map((c) => `${c.version}=${c.state}`).join(' ') || '(none)'}, fallbacks ${fb}`;
    },
  },
  {
    name: '5. result cache, all hits (in-process LRU)',
    policy: { cache: { ttlMs: 600_000 } },
    check: cacheHitCheck,
    after: cacheCounts,
  },
];

const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-routing-'));
try {
  for (const line of noisyMachineHeader('routing benchmark')) say(line);
  const repo = join(dir, 'repo');
  await writeModelRepository(repo, { mlp: { versions: { 1: mlp(7), 2: mlp(8) }, config: { version_policy: { all: {} } } } });
  say(`small MLP (mlp/1 seed 7, mlp/2 seed 8; version_policy all), V2 JSON, POST ${PATH} (no version, so the policy routes),`);
  say(`${CONNECTIONS} connections × ${SECONDS}s (after 2 s warmup), then ${LATENCY_N} sequential requests (c=1); 0 errors and 0 non-2xx checked in every run.`);
  say('One fresh server process per scenario. "server CPU" = the server process\'s user+system CPU time (all threads,');
  say('/proc) during the throughput run ÷ requests served.');
  say(`The sticky run sends one fixed x-user-id ("${USER}") on every request (autocannon cannot vary headers per request;`);
  say('hashing costs the same for any key); the probe before it checks that distinct keys reach both arms.');
  const [baseScenario, ...rest] = scenarios;
  const start = await run(baseScenario!, dir, repo);
  const results: [string, Run | null][] = [];
  for (const sc of rest) results.push([sc.name, await run(sc, dir, repo)]);
  const redisName = '6. result cache, all hits (Redis)';
  if (await redisReachable(REDIS)) {
    results.push([
      redisName,
      await run({ name: redisName, policy: { cache: { ttlMs: 600_000 } }, redis: true, check: cacheHitCheck, after: cacheCounts }, dir, repo),
    ]);
  } else {
    say(`  ${redisName.padEnd(W)} skipped: Redis unreachable (${REDIS})`);
    results.push([redisName, null]);
  }
  const end = await run({ ...baseScenario!, name: '1. no policy: baseline again (drift check)' }, dir, repo);
  const base = { rps: (start.rps + end.rps) / 2, p50: (start.p50 + end.p50) / 2 };
  say(
    `vs baseline (same run; mean of first and last: ${fmt(base.rps)} req/s, c=1 p50 ${fmt(base.p50, 3)} ms; last/first throughput ${fmt(end.rps / start.rps, 2)}x):`,
  );
  for (const [name, r] of results) {
    if (r === null) say(`  ${name.padEnd(W)} skipped: Redis unreachable`);
    else say(`  ${name.padEnd(W)} ${fmt(r.rps / base.rps, 2)}x throughput, ${signed(r.p50 - base.p50, 3)} ms p50 (c=1)`);
  }
  say(`load average at end: ${loadAverage()}`);
  await mkdir('.bench', { recursive: true });
  await writeFile(
    '.bench/routing.json',
    `${JSON.stringify({ date: new Date().toISOString(), machine: machineName(), seconds: SECONDS, connections: CONNECTIONS, latencyN: LATENCY_N, baseline: { start, end }, results: Object.fromEntries(results) }, null, 2)}\n`,
  );
  await report.save('.bench/routing.txt');
} finally {
  await rm(dir, { recursive: true, force: true });
}
