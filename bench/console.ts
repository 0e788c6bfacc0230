/**
 * @module
 * `npm run bench:console`: what the web console's overview time series costs on the request path. The
 * ServingTimeline is fed inside the monitoring service's existing `request` subscriber, so its whole cost is
 * `timeline.record(event)` per request (and `recordBatch` per batch). Measured two ways in one process:
 *  1. `record()` alone: ns per event over 2M events spread over 8 models, against the same loop calling a
 *     no-op (the baseline), 3 rounds each, alternating;
 *  2. served requests: the small MLP through the whole server (in-process `app.inject`, sequential), CPU µs
 *     per request with the timeline recording vs with `record` replaced by a no-op, ABAB… (BENCH_ROUNDS pairs
 *     of BENCH_REQUESTS each); ratios are recording / no-op.
 * Env: BENCH_REQUESTS (default 2000), BENCH_ROUNDS (3).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadServerConfig } from '../src/config/index.js';
import type { RequestEvent } from '../src/events.js';
import { ServingTimeline } from '../src/monitoring/index.js';
import { createLogger, createSwitchyard } from '../src/server.js';
import { mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { fmt, machineName, loadAverage, Report } from './lib.js';

const REQUESTS = Number(process.env['BENCH_REQUESTS'] ?? 2000);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const EVENTS = 2_000_000;

const report = new Report();
const say = report.say;

function events(): RequestEvent[] {
  return Array.from({ length: 64 }, (_, i) => ({
    origin: {},
    model: `model-${i % 8}`,
    version: '1',
    versionNumber: 1,
    tenant: '',
    arm: null,
    ok: i % 50 !== 0,
    reason: i % 50 === 0 ? 'runtime_error' : null,
    rows: 1,
    cached: false,
    totalMs: 0.2 + (i % 13) * 0.37,
    queueMs: 0.05,
    computeMs: 0.1,
    computeShareMs: 0.1,
    keyId: null,
  }));
}

function nsPerEvent(f: (e: RequestEvent) => void, evs: RequestEvent[]): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < EVENTS; i++) f(evs[i & 63]!);
  return Number(process.hrtime.bigint() - t0) / EVENTS;
}

async function main(): Promise<void> {
  say(`Switchyard console overview bench — ${new Date().toISOString().slice(0, 10)} — ${machineName()}; load average ${loadAverage()}`);
  const evs = events();
  const tl = new ServingTimeline();
  let sink = 0;
  const noop = (e: RequestEvent): void => {
    sink += e.rows;
  };
  const record = (e: RequestEvent): void => tl.record(e);
  nsPerEvent(record, evs);
  nsPerEvent(noop, evs);
  const base: number[] = [];
  const rec: number[] = [];
  for (let r = 0; r < 3; r++) {
    base.push(nsPerEvent(noop, evs));
    rec.push(nsPerEvent(record, evs));
  }
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const added = med(rec) - med(base);
  say(
    `record(): ${fmt(med(rec), 1)} ns/event vs ${fmt(med(base), 1)} ns for the no-op loop → ${fmt(added, 1)} ns added per request (median of 3 × ${EVENTS / 1e6}M)`,
  );
  if (sink < 0) say(String(sink));

  const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-console-'));
  await writeModelRepository(join(dir, 'repo'), { mlp: { versions: { 1: mlp(7) } } });
  const config = loadServerConfig({ modelRepository: join(dir, 'repo'), dataDir: join(dir, 'data'), port: 0, logLevel: 'silent', predictionLog: 'off' }, {});
  const sy = await createSwitchyard(config, createLogger('silent'));
  const payload = JSON.stringify({
    inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: Array.from({ length: 64 }, (_, i) => Math.sin(i) / 2) }],
  });
  const real = sy.monitoring.timeline.record.bind(sy.monitoring.timeline);
  const serve = async (on: boolean): Promise<number> => {
    sy.monitoring.timeline.record = on ? real : () => undefined;
    const c0 = process.cpuUsage();
    for (let i = 0; i < REQUESTS; i++) {
      const r = await sy.app.inject({ method: 'POST', url: '/v2/models/mlp/infer', payload, headers: { 'content-type': 'application/json' } });
      if (r.statusCode !== 200) throw new Error(`infer: ${r.statusCode} ${r.body}`);
    }
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / REQUESTS;
  };
  try {
    await serve(true);
    const off: number[] = [];
    const on: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      off.push(await serve(false));
      on.push(await serve(true));
    }
    say(
      `served request (in-process, sequential, ${REQUESTS} × ${ROUNDS} each): ${fmt(med(on), 1)} CPU µs/request recording vs ${fmt(med(off), 1)} µs with record() a no-op → ratio ${fmt(med(on) / med(off), 3)}`,
    );
    say(`  per round, recording: ${on.map((x) => fmt(x, 1)).join(' ')}; no-op: ${off.map((x) => fmt(x, 1)).join(' ')}`);
    say(`record()'s ${fmt(added, 1)} ns is ${fmt((100 * added) / 1000 / med(off), 3)}% of a request's ${fmt(med(off), 1)} CPU µs`);
    say(`timeline after the run: ${sy.monitoring.timeline.read('mlp').totals.requests} requests of mlp in the last hour`);
  } finally {
    await sy.close();
    await rm(dir, { recursive: true, force: true });
  }
  if (process.env['BENCH_SAVE']) await report.save(process.env['BENCH_SAVE']);
}

await main();
