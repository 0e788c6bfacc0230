/**
 * @module
 * `npm run bench:monitoring`: what model monitoring costs on the hot path. The small MLP served with monitoring
 * off (`--prediction-log off`, the baseline), the prediction log sampling 1% and 100% of requests into the
 * metadata store (SQLite), 100% into rotated JSONL files, drift monitoring on every request (a reference profile
 * set from a CSV dataset first; log off), and the production setting (log 1% + drift 100%) — at 64 connections
 * (throughput) and at concurrency 1 (p50 latency). Each scenario runs in a fresh server process. The baseline
 * runs first and last (the machine drifts); ratios are against their mean. Targets (the monitoring issue):
 * ≥ 0.9× baseline throughput with the log at 1%, ≥ 0.75× at 100%. After each run with the log on, checks that
 * records were written (GET /api/v1/predictions) and reports the written / dropped counters; with drift on,
 * the drift report's rows and drifted share. Also reports the server's CPU time per request (Linux /proc).
 * Env: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (64), BENCH_LATENCY_N (3000).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
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
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const body = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: Array.from({ length: 64 }, (_, i) => Math.sin(i) / 2) }] });
const PATH = '/v2/models/mlp/infer';
/** Rows of the reference dataset (uniform random in [-0.5, 0.5] per feature). */
const PROFILE_ROWS = 5000;
/** The prediction log flushes every second. */
const FLUSH_WAIT_MS = 1500;

const report = new Report();
const say = report.say;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const W = 47;

interface Run {
  rps: number;
  p99Ms: number;
  p50: number;
  p99: number;
  requests: number;
  cpuUsPerReq: number | null;
  note: string;
}

/** Counter values from /metrics whose line starts with `prefix` (labels included), summed. */
async function metric(url: string, prefix: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const l of text.split('\n'))
    if (l.startsWith(prefix) && (l[prefix.length] === ' ' || l[prefix.length] === '{')) sum += Number(l.slice(l.lastIndexOf(' ') + 1));
  return sum;
}

interface LogCounts {
  served: number;
  written: number;
  dropped: number;
}
async function logCounts(url: string): Promise<LogCounts> {
  return {
    served: await metric(url, 'switchyard_inference_success_total'),
    written: await metric(url, 'switchyard_prediction_log_written_total'),
    dropped: await metric(url, 'switchyard_prediction_log_dropped_total'),
  };
}

interface Scenario {
  readonly name: string;
  readonly args: readonly string[];
  /** The share of requests the prediction log samples (null: log off). */
  readonly logRate: number | null;
  /** Set a reference profile on mlp/1 before measuring (drift monitoring then observes requests). */
  readonly profile?: boolean;
  /** Throughput target vs baseline. */
  readonly target?: number;
}

/** A CSV reference dataset: header features[0..63], PROFILE_ROWS rows of uniform random values. */
function profileCsv(): string {
  let out = `${Array.from({ length: 64 }, (_, i) => `features[${i}]`).join(',')}\n`;
  for (let r = 0; r < PROFILE_ROWS; r++) out += `${Array.from({ length: 64 }, () => (Math.random() - 0.5).toFixed(5)).join(',')}\n`;
  return out;
}

async function setProfile(url: string): Promise<string> {
  const r = await fetch(`${url}/api/v1/models/mlp/versions/1/profile`, {
    method: 'POST',
    headers: { 'content-type': 'text/csv', 'x-switchyard-actor': 'bench' },
    body: profileCsv(),
  });
  const text = await r.text();
  if (r.status !== 201) throw new Error(`POST profile: ${r.status} ${text}`);
  const p = JSON.parse(text) as { source: string; profile: { rows: number; features: unknown[] } };
  return `profile: ${p.source}, ${p.profile.features.length} features`;
}

async function infer(url: string): Promise<void> {
  const r = await fetch(`${url}${PATH}`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
  if (r.status !== 200) throw new Error(`probe: ${r.status} ${await r.text()}`);
  await r.arrayBuffer();
}

/** After a run with the log on: records are queryable, and what was written / dropped. */
async function logCheck(url: string, underLoad: LogCounts): Promise<string> {
  await sleep(FLUSH_WAIT_MS);
  const r = await fetch(`${url}/api/v1/predictions?model=mlp&limit=5`);
  if (r.status !== 200) throw new Error(`GET /api/v1/predictions: ${r.status} ${await r.text()}`);
  const got = ((await r.json()) as { predictions: { model: string; inputs: { data: unknown[] }[] }[] }).predictions;
  if (got.length === 0) throw new Error('prediction log: GET /api/v1/predictions?model=mlp returned no records');
  const c = await logCounts(url);
  const share = c.served === 0 ? 0 : (100 * c.written) / c.served;
  return (
    `log: GET /api/v1/predictions?model=mlp&limit=5 → ${got.length} records (${got[0]!.inputs[0]?.data.length ?? 0} input values each)\n` +
    `      log: served ${c.served}, written_total ${c.written} (${fmt(share, 2)}%), dropped_total ${c.dropped} ` +
    `(end of throughput run: written ${underLoad.written}, dropped ${underLoad.dropped}, served ${underLoad.served})`
  );
}

async function driftCheck(url: string): Promise<string> {
  const r = await fetch(`${url}/api/v1/models/mlp/drift`);
  if (r.status !== 200) throw new Error(`GET drift: ${r.status} ${await r.text()}`);
  const d = (await r.json()) as {
    reports: { version: number; report: { rows: number; driftedShare: number | null; datasetDrift: boolean; features: unknown[] } }[];
  };
  const rep = d.reports[0];
  if (rep === undefined) throw new Error('drift: no monitored version');
  if (rep.report.rows === 0) throw new Error('drift: the window observed no rows');
  const share = rep.report.driftedShare === null ? 'null' : fmt(rep.report.driftedShare, 3);
  return `drift: mlp/${rep.version} window rows ${rep.report.rows}, drifted share ${share} of ${rep.report.features.length} features, dataset drift ${String(rep.report.datasetDrift)}`;
}

async function run(sc: Scenario, dir: string, repo: string): Promise<Run> {
  const p = await benchPort();
  const args = [
    cli,
    'serve',
    '--model-repository',
    repo,
    '--data-dir',
    join(dir, `data-${p}`),
    '--port',
    String(p),
    '--grpc-port',
    '0',
    '--log-level',
    'warn',
    ...sc.args,
  ];
  const t = await startServer(sc.name, args, p);
  try {
    const notes: string[] = [];
    if (sc.profile === true) notes.push(await setProfile(t.url));
    await infer(t.url);
    await throughput(t.url, PATH, body, CONNECTIONS, 2);
    const cpu0 = await cpuUs(t.proc.pid);
    const r = await throughput(t.url, PATH, body, CONNECTIONS, SECONDS);
    const cpu1 = await cpuUs(t.proc.pid);
    if (r.errors > 0 || r.non2xx > 0) throw new Error(`${sc.name}: ${r.errors} errors, ${r.non2xx} non-2xx`);
    const underLoad = sc.logRate === null ? null : await logCounts(t.url);
    const l = await sequentialLatency(t.url, PATH, body, LATENCY_N);
    const requests = Math.round(r.rps * SECONDS);
    const cpuUsPerReq = cpu0 === null || cpu1 === null || requests === 0 ? null : (cpu1 - cpu0) / requests;
    if (underLoad !== null) notes.push(await logCheck(t.url, underLoad));
    if (sc.profile === true) notes.push(await driftCheck(t.url));
    const cpu = cpuUsPerReq === null ? 'n/a' : fmt(cpuUsPerReq, 0);
    say(
      `  ${sc.name.padEnd(W)} ${fmt(r.rps).padStart(7)} req/s  p99 ${fmt(r.p99Ms, 1).padStart(5)} ms  server CPU ${cpu.padStart(4)} µs/req | c=1 p50 ${fmt(l.p50, 3)} ms  p99 ${fmt(l.p99, 3)} ms`,
    );
    for (const n of notes) say(`      ${n}`);
    return { rps: r.rps, p99Ms: r.p99Ms, p50: l.p50, p99: l.p99, requests, cpuUsPerReq, note: notes.join('; ') };
  } finally {
    await stopServer(t);
  }
}

const baseline: Scenario = { name: '1. monitoring off: baseline', args: ['--prediction-log', 'off'], logRate: null };
const scenarios: Scenario[] = [
  { name: '2. prediction log 1% (SQLite)', args: ['--prediction-log', 'database', '--monitor-sample-rate', '0.01'], logRate: 0.01, target: 0.9 },
  { name: '3. prediction log 100% (SQLite)', args: ['--prediction-log', 'database', '--monitor-sample-rate', '1'], logRate: 1, target: 0.75 },
  { name: '4. prediction log 100% (JSONL)', args: ['--prediction-log', 'jsonl', '--monitor-sample-rate', '1'], logRate: 1, target: 0.75 },
  { name: '5. drift 100%, log off', args: ['--prediction-log', 'off', '--drift-sample-rate', '1'], logRate: null, profile: true },
  {
    name: '6. log 1% (SQLite) + drift 100%',
    args: ['--prediction-log', 'database', '--monitor-sample-rate', '0.01', '--drift-sample-rate', '1'],
    logRate: 0.01,
    profile: true,
    target: 0.9,
  },
];

const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-monitoring-'));
try {
  for (const line of noisyMachineHeader('monitoring benchmark')) say(line);
  const repo = join(dir, 'repo');
  await writeModelRepository(repo, { mlp: { versions: { 1: mlp() } } });
  say(`small MLP (mlp/1), V2 JSON, 1 row, POST ${PATH}, ${CONNECTIONS} connections × ${SECONDS}s (after 2 s warmup), then`);
  say(`${LATENCY_N} sequential requests (c=1); 0 errors and 0 non-2xx checked in every run. One fresh server process per scenario.`);
  say('"server CPU" = the server process\'s user+system CPU time (all threads, /proc) during the throughput run ÷ requests served.');
  say(`Drift runs set a reference profile on mlp/1 first (POST .../versions/1/profile, text/csv, ${PROFILE_ROWS} rows of uniform`);
  say('random values in [-0.5, 0.5] for features[0..63]); every bench request sends the same row, so the drifted share is');
  say('expected to be high: this measures the cost of observing, not detection quality. With the log on, the checks run');
  say(`${FLUSH_WAIT_MS / 1000} s after the latency run (the log flushes every second); "served" counts every request of the run`);
  say('(probe, warmup, throughput, latency). Targets (monitoring issue): ≥ 0.90× baseline throughput at 1%, ≥ 0.75× at 100%.');
  const start = await run(baseline, dir, repo);
  const results: [Scenario, Run][] = [];
  for (const sc of scenarios) results.push([sc, await run(sc, dir, repo)]);
  const end = await run({ ...baseline, name: '1. monitoring off: baseline again (drift check)' }, dir, repo);
  const base = { rps: (start.rps + end.rps) / 2, p50: (start.p50 + end.p50) / 2 };
  say(
    `vs baseline (same run; mean of first and last: ${fmt(base.rps)} req/s, c=1 p50 ${fmt(base.p50, 3)} ms; last/first throughput ${fmt(end.rps / start.rps, 2)}x):`,
  );
  const verdicts: { name: string; ratio: number; target: number; pass: boolean }[] = [];
  for (const [sc, r] of results) {
    const ratio = r.rps / base.rps;
    let verdict = '';
    if (sc.target !== undefined) {
      const pass = ratio >= sc.target;
      verdicts.push({ name: sc.name, ratio, target: sc.target, pass });
      verdict = `  target ≥ ${fmt(sc.target, 2)}x: ${pass ? 'PASS' : 'FAIL'}`;
    }
    const baseCpu = start.cpuUsPerReq === null || end.cpuUsPerReq === null ? null : (start.cpuUsPerReq + end.cpuUsPerReq) / 2;
    const cpu =
      r.cpuUsPerReq === null || baseCpu === null
        ? ''
        : `, server CPU ${signed(r.cpuUsPerReq - baseCpu, 0).padStart(3)} µs/req (CPU-bound ${fmt(baseCpu / r.cpuUsPerReq, 2)}x)`;
    say(`  ${sc.name.padEnd(W)} ${fmt(ratio, 3)}x throughput, ${signed(r.p50 - base.p50, 3)} ms p50 (c=1)${cpu}${verdict}`);
  }
  const failed = verdicts.filter((v) => !v.pass);
  say(
    failed.length === 0
      ? `targets: all ${verdicts.length} met`
      : `targets: ${failed.length} of ${verdicts.length} NOT met — ${failed.map((v) => `${v.name.replace(/^\d+\. /, '')} ${fmt(v.ratio, 3)}x < ${fmt(v.target, 2)}x`).join('; ')}`,
  );
  say('"CPU-bound" = baseline server CPU per request ÷ this scenario\'s: the throughput ratio to expect where the server\'s CPU');
  say("is the bottleneck; less sensitive to the machine's noise than req/s. The PASS/FAIL verdicts use measured throughput.");
  say(`load average at end: ${loadAverage()}`);
  await mkdir('.bench', { recursive: true });
  await writeFile(
    '.bench/monitoring.json',
    `${JSON.stringify({ date: new Date().toISOString(), machine: machineName(), seconds: SECONDS, connections: CONNECTIONS, latencyN: LATENCY_N, baseline: { start, end }, results: Object.fromEntries(results.map(([sc, r]) => [sc.name, r])), verdicts }, null, 2)}\n`,
  );
  await report.save('.bench/monitoring.txt');
} finally {
  await rm(dir, { recursive: true, force: true });
}
