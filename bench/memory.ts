/**
 * @module
 * Memory after large requests (`npm run bench:memory`): does the server's resident memory return after the
 * large-request probes of issue 23? A server (child process) serves the example MLP; its RSS is read from
 * /proc (Linux) once warm, sampled every 50 ms during the probes (peak), and read again after they end and the
 * server has been idle for `MEMORY_SETTLE_S` seconds (default 30). Goal: RSS after within 10% of before.
 *
 * Probes (in this order, each waited for):
 *  - 40 valid 1024-row requests (the default row limit; ~1.3 MB JSON each), 4 at a time;
 *  - 4 concurrent 60 MiB JSON bodies (49,000 rows: refused 413 from their shapes, before their data is decoded);
 *  - 64 concurrent gzip bombs (99 KiB that inflate to ~100 MiB: refused 413 at --max-inflate-mb);
 *  - 20 invalid 5 MiB JSON bodies (400), 4 at a time.
 * Prints each probe's status counts and RSS, RSS before / peak / after, the ratio after ÷ before, and the V8 heap
 * and external memory (from /metrics), to tell which part holds what did not return; then RSS and heap after
 * 2,000 light requests (allocation makes V8 collect what an idle heap still held).
 * `MEMORY_SERVER=<other build>/dist/src/cli/main.js` runs another build's server. The server inherits this
 * process's environment: run it with and without `MALLOC_ARENA_MAX=2` (what the container image sets) to compare.
 */
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Pool } from 'undici';
import { mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { cpus } from 'node:os';
import { loadAverage, machineName, Report, startServer, stopServer } from './lib.js';

const SETTLE_S = Number(process.env['MEMORY_SETTLE_S'] ?? 30);
const MiB = 1024 * 1024;

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function rss(pid: number): Promise<number> {
  const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error('no VmRSS in /proc/<pid>/status');
  return Number(m[1]) * 1024;
}

/** A V2 request of `rows` rows of the MLP's 64 features. */
function inferBody(rows: number): Buffer {
  const data: string[] = [];
  for (let i = 0; i < rows * 64; i++) data.push(Math.sin(i).toFixed(6));
  return Buffer.from(`{"inputs":[{"name":"features","datatype":"FP32","shape":[${rows},64],"data":[${data.join(',')}]}]}`);
}

/** Send `n` requests, `parallel` at a time; count the statuses. */
async function probe(pool: Pool, n: number, parallel: number, body: Buffer, headers: Record<string, string>): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++;
      let key: string;
      try {
        const r = await pool.request({ path: '/v2/models/mlp/infer', method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
        await r.body.dump();
        key = String(r.statusCode);
      } catch (e) {
        // The server answered (413) and closed the connection before the whole body was sent.
        key = `closed early (${(e as { code?: string }).code ?? (e as Error).message})`;
      }
      counts[key] = (counts[key] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return counts;
}

async function main(): Promise<void> {
  const report = new Report();
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-memory-'));
  const repo = join(dir, 'repo');
  await writeModelRepository(repo, { mlp: { versions: { 1: mlp() } } });
  const port = await freePort();
  const cli = process.env['MEMORY_SERVER'] ?? new URL('../src/cli/main.js', import.meta.url).pathname;
  const server = await startServer(
    'switchyard',
    [cli, 'serve', '--port', String(port), '--grpc-port', '0', '--log-level', 'warn', '--model-repository', repo, '--data-dir', join(dir, 'data')],
    port,
  );
  const pid = server.proc.pid!;
  const pool = new Pool(server.url, { connections: 64, bodyTimeout: 0, headersTimeout: 0 });
  try {
    report.say(`Switchyard memory benchmark — ${new Date().toISOString().slice(0, 10)} — ${machineName()}`);
    report.say(`NOTE: ${cpus().length} vCPUs shared with other work (load average at start: ${loadAverage()}); RSS is the server process's.`);
    report.say(`MALLOC_ARENA_MAX=${process.env['MALLOC_ARENA_MAX'] ?? '(unset: glibc default)'} (inherited by the server; the container image sets 2)`);
    const mib = (b: number): string => `${(b / MiB).toFixed(0)} MiB`;
    const heap = async (): Promise<string> => {
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const gauge = (name: string): string => {
        const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(metrics);
        return m === null ? '?' : mib(Number(m[1]));
      };
      return `V8 heap used ${gauge('nodejs_heap_size_used_bytes')} of ${gauge('nodejs_heap_size_total_bytes')} committed, external ${gauge('nodejs_external_memory_bytes')}`;
    };
    // Warm: the same kinds of request at a small size, so that code paths and pools exist before "before".
    await probe(pool, 200, 4, inferBody(16), {});
    await new Promise((r) => setTimeout(r, 2000));
    const before = await rss(pid);
    report.say(`before: RSS ${mib(before)}; ${await heap()}`);
    let peak = before;
    const sampler = setInterval(
      () =>
        void rss(pid).then(
          (v) => {
            peak = Math.max(peak, v);
          },
          () => undefined,
        ),
      50,
    );
    const big = inferBody(1024);
    report.say(
      `40 x 1024-row requests (${(big.length / MiB).toFixed(1)} MiB): ${JSON.stringify(await probe(pool, 40, 4, big, {}))}; RSS now ${mib(await rss(pid))}`,
    );
    const huge = inferBody(49_000);
    report.say(
      `4 concurrent ${(huge.length / MiB).toFixed(0)} MiB bodies: ${JSON.stringify(await probe(pool, 4, 4, huge, {}))}; RSS now ${mib(await rss(pid))}`,
    );
    const bomb = gzipSync(Buffer.alloc(100 * MiB, 0x20), { level: 9 });
    report.say(
      `64 concurrent gzip bombs (${(bomb.length / 1024).toFixed(0)} KiB -> 100 MiB): ${JSON.stringify(await probe(pool, 64, 64, bomb, { 'content-encoding': 'gzip' }))}; RSS now ${mib(await rss(pid))}`,
    );
    const junk = Buffer.concat([Buffer.from('{"inputs":[{"name":"features","datatype":"FP32","shape":[1,64],"data":['), Buffer.alloc(5 * MiB, 0x31)]);
    report.say(`20 invalid 5 MiB bodies: ${JSON.stringify(await probe(pool, 20, 4, junk, {}))}; RSS now ${mib(await rss(pid))}`);
    const ended = await rss(pid);
    await new Promise((r) => setTimeout(r, SETTLE_S * 1000));
    clearInterval(sampler);
    const after = await rss(pid);
    report.say(`after ${SETTLE_S} s idle: ${await heap()}`);
    report.say(
      `RSS before ${mib(before)}, peak ${mib(peak)}, at the end of the probes ${mib(ended)}, after ${SETTLE_S} s idle ${mib(after)}: after / before = ${(after / before).toFixed(2)} (goal <= 1.10)`,
    );
    // A server seldom idles: light traffic allocates, so V8 collects what the idle heap still held.
    await probe(pool, 2000, 4, inferBody(1), {});
    await new Promise((r) => setTimeout(r, 2000));
    const light = await rss(pid);
    report.say(`after 2,000 light requests: RSS ${mib(light)} (${(light / before).toFixed(2)} x before); ${await heap()}`);
    if (process.env['MEMORY_SAVE'] !== undefined) await report.save(process.env['MEMORY_SAVE']);
  } finally {
    await pool.close();
    await stopServer(server);
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
