/**
 * @module
 * Benchmark helpers: spawn a server process and wait until it is ready, drive it with autocannon at N
 * connections, and measure sequential (concurrency 1) latency with high-resolution timers.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import autocannon from 'autocannon';
import { Client } from 'undici';

export interface Target {
  name: string;
  url: string;
  proc: ChildProcess;
}

let portsHanded = 0;

/**
 * A port for a benchmark server. With BENCH_PORT set: BENCH_PORT, BENCH_PORT + 1, … in the order asked (to
 * pin them, e.g. behind a firewall); otherwise one the OS reports free (listen on port 0, read it, close), so
 * benchmarks run beside tests and each other without colliding.
 */
export async function benchPort(): Promise<number> {
  const base = process.env['BENCH_PORT'];
  if (base !== undefined && base !== '') {
    const n = Number(base);
    if (!Number.isInteger(n) || n < 1 || n > 65_000) throw new Error(`BENCH_PORT must be a port number (1..65000), got "${base}"`);
    return n + portsHanded++;
  }
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function startServer(name: string, args: string[], port: number): Promise<Target> {
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${name} exited with ${proc.exitCode}`);
    try {
      const r = await fetch(`${url}/v2/health/ready`);
      if (r.ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`${name} did not become ready`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { name, url, proc };
}

export async function stopServer(t: Target): Promise<void> {
  if (t.proc.exitCode !== null) return;
  t.proc.kill('SIGTERM');
  await once(t.proc, 'exit');
}

export interface Throughput {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  non2xx: number;
}

/** Requests per second at `connections` concurrent keep-alive connections over `seconds`. */
export async function throughput(
  url: string,
  path: string,
  body: string,
  connections: number,
  seconds: number,
  headers: Record<string, string> = {},
): Promise<Throughput> {
  const r = await autocannon({
    url: url + path,
    method: 'POST',
    body,
    connections,
    duration: seconds,
    pipelining: 1,
    headers: { 'content-type': 'application/json', ...headers },
  });
  return { rps: r.requests.average, p50Ms: r.latency.p50, p99Ms: r.latency.p99, errors: r.errors, non2xx: r.non2xx };
}

/** Sequential requests on one keep-alive connection; returns latency percentiles in ms. */
export async function sequentialLatency(
  url: string,
  path: string,
  body: string,
  n: number,
  headers: Record<string, string> = {},
): Promise<{ p50: number; p90: number; p99: number }> {
  const client = new Client(url, { pipelining: 1 });
  const samples: number[] = [];
  try {
    for (let i = 0; i < n + 200; i++) {
      const t0 = performance.now();
      const res = await client.request({ path, method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
      await res.body.text();
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
      if (i >= 200) samples.push(performance.now() - t0); // first 200 warm up
    }
  } finally {
    await client.close();
  }
  return percentiles(samples);
}

/** The value at quantile p (0..1) of ascending `sorted`: index ⌊p·n⌋; NaN when empty. */
const at = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
const ascending = (xs: readonly number[]): number[] => [...xs].sort((a, b) => a - b);

/** The p-quantile (0..1) of `xs`. */
export function quantile(xs: readonly number[], p: number): number {
  return at(ascending(xs), p);
}

/** p50, p90 and p99 of `xs` (one sort). */
export function percentiles(xs: readonly number[]): { p50: number; p90: number; p99: number } {
  const s = ascending(xs);
  return { p50: at(s, 0.5), p90: at(s, 0.9), p99: at(s, 0.99) };
}

/** Clock ticks per second for /proc/<pid>/stat (Linux). */
const CLK_TCK = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU time of a process (all its threads) in µs, or null where /proc is not available. */
export async function cpuUs(pid: number | undefined): Promise<number | null> {
  if (pid === undefined) return null;
  try {
    const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK;
  } catch {
    return null;
  }
}

/**
 * The header lines of a benchmark with a server process on a small shared machine: date, CPU, Node, and how to
 * read its numbers (the baseline runs first and last).
 */
export function noisyMachineHeader(title: string): string[] {
  return [
    `Switchyard ${title} — ${new Date().toISOString().slice(0, 10)} — ${machineName()}`,
    `NOTE: ${cpus().length} vCPUs shared by the server, autocannon and this process, on a noisy machine (other work may run`,
    `      beside it; load average at start: ${loadAverage()}): throughput differences of ~10-20% are within noise. The baseline`,
    '      runs first and again last; ratios are against the mean of the two, and their spread shows the drift.',
  ];
}

/** CPU model, core count and Node version. */
export const machineName = (): string => `${cpus()[0]?.model ?? 'unknown CPU'} × ${cpus().length} cores, Node ${process.version}`;

/** The 1, 5 and 15 minute load averages. */
export const loadAverage = (): string =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');

/** Benchmark output: each line printed as it comes and kept, to be written to a file at the end. */
export class Report {
  readonly #lines: string[] = [];
  readonly say = (s: string): void => {
    this.#lines.push(s);
    process.stdout.write(`${s}\n`);
  };

  /** Write every line said so far to `file`. */
  async save(file: string): Promise<void> {
    await writeFile(file, `${this.#lines.join('\n')}\n`);
  }
}

/** `n` with `d` decimals. */
export const fmt = (n: number, d = 0): string => n.toFixed(d);
/** `n` with `d` decimals and an explicit sign. */
export const signed = (n: number, d: number): string => `${n >= 0 ? '+' : ''}${n.toFixed(d)}`;
