/**
 * The prediction log: tensor → JSON conversion per datatype, sampling, the bounded non-blocking buffer, batched
 * flushes, a failing sink (request path unaffected, failures counted and logged once per 10 s, retries bounded,
 * a record the sink refuses dropped), the database sink on SQLite (in memory, and a file through its writer
 * thread: conversion there, failed inserts and a thread failing at start, close) and Postgres (filters, time range,
 * limit, order, prune), the JSONL sink (rotation by size and UTC day, maxFiles, queries across files and restarts,
 * cut-off lines, prune) and the JSONL / CSV exports.
 * Postgres must be reachable in CI (CI=true); elsewhere its suite is skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { appendFile, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { isSwitchyardError } from '../src/errors.js';
import { DatabasePredictionSink } from '../src/monitoring/log-sink-database.js';
import { JsonlPredictionSink } from '../src/monitoring/log-sink-jsonl.js';
import {
  DEFAULT_MAX_ELEMENTS,
  DEFAULT_SAMPLE_RATE,
  packTensor,
  PredictionLog,
  tensorJson,
  toCsv,
  toJsonl,
  unpackTensor,
  type PredictionInput,
  type PredictionQuery,
  type PredictionSink,
} from '../src/monitoring/prediction-log.js';
import type { PredictionRecord } from '../src/monitoring/types.js';
import { openDatabase, type Database } from '../src/storage/index.js';
import { DTYPES, toHalfBits, type V2Datatype } from '../src/tensor/dtype.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';

const T0 = Date.UTC(2025, 2, 4, 12);
/** Long enough that only explicit flushes write (the timer is unref'd). */
const MANUAL = 3_600_000;

const f32 = (shape: number[], values: number[]): Tensor => ({ dtype: DTYPES.FP32, shape, data: Float32Array.from(values) });
const bytes = (shape: number[], values: string[]): Tensor => ({ dtype: DTYPES.BYTES, shape, data: values.map((x) => new Uint8Array(Buffer.from(x))) });

function input(i: number, over: Partial<PredictionInput> = {}): PredictionInput {
  return {
    model: 'm',
    version: 1,
    tenant: 'acme',
    arm: null,
    requestId: `r${i}`,
    latencyMs: 1.5,
    at: T0 + i,
    inputs: [{ name: 'x', tensor: f32([1, 2], [i, i + 0.5]) }],
    outputs: [{ name: 'y', tensor: f32([1], [i * 2]) }],
    ...over,
  };
}

function rec(i: number, over: Partial<PredictionRecord> = {}): PredictionRecord {
  return {
    at: new Date(T0 + i * 1000).toISOString(),
    model: 'm',
    version: 1,
    tenant: 'acme',
    arm: null,
    requestId: `r${i}`,
    latencyMs: 2.25,
    inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 2], data: [i, 0.5] }],
    outputs: [{ name: 'label', datatype: 'BYTES', shape: [1], data: [`v${i}`] }],
    ...over,
  };
}

/** An in-memory sink; `fail(batch)` decides whether a write throws. */
class MemorySink implements PredictionSink {
  readonly kind = 'database' as const;
  readonly records: PredictionRecord[] = [];
  readonly batches: number[] = [];
  pruned: number[] = [];
  closed = false;
  fail: (batch: readonly PredictionRecord[]) => boolean = () => false;
  hold: Promise<void> | null = null;
  async write(batch: readonly PredictionRecord[]): Promise<void> {
    if (this.hold !== null) await this.hold;
    if (this.fail(batch)) throw new Error('sink down');
    this.batches.push(batch.length);
    this.records.push(...batch);
  }
  async query(q: PredictionQuery): Promise<PredictionRecord[]> {
    return this.records.filter((r) => q.model === undefined || r.model === q.model);
  }
  async prune(cutoff: number): Promise<number> {
    this.pruned.push(cutoff);
    return 0;
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

interface Logged {
  level: string;
  obj: Record<string, unknown>;
  msg: string;
}
function fakeLogger(): { logger: Logger; lines: Logged[] } {
  const lines: Logged[] = [];
  const at =
    (level: string) =>
    (obj: Record<string, unknown>, msg: string): void =>
      void lines.push({ level, obj, msg });
  return { logger: { error: at('error'), warn: at('warn'), info: at('info') } as unknown as Logger, lines };
}

describe("packed tensors (the log's storage form)", () => {
  it('packs numeric tensors from their typed arrays and unpacks to exactly what tensorJson writes', () => {
    const cases: [V2Datatype, unknown][] = [
      ['FP32', Float32Array.of(0.1, -2.5, Number.NaN, Number.POSITIVE_INFINITY, 3e38)],
      ['FP64', Float64Array.of(Math.PI, -0, 1e-300)],
      ['FP16', Uint16Array.of(0x3c00, 0xc000, 0x7c00, 0x7e00)],
      ['INT32', Int32Array.of(-2147483648, 7)],
      ['UINT16', Uint16Array.of(0, 65535)],
    ];
    for (const [dt, data] of cases) {
      const t: Tensor = { dtype: DTYPES[dt], shape: [(data as ArrayLike<number>).length], data: data as never };
      const packed = packTensor('t', t);
      assert.equal(typeof packed.b64, 'string', dt);
      assert.deepEqual(packed.data, []);
      assert.deepEqual(unpackTensor(packed), tensorJson('t', t), dt);
    }
    for (const [dt, data] of [
      ['BOOL', Uint8Array.of(1, 0)],
      ['INT64', BigInt64Array.of(1n)],
      ['BYTES', [new Uint8Array([97])]],
    ] as [V2Datatype, unknown][]) {
      const t: Tensor = { dtype: DTYPES[dt], shape: [1], data: data as never };
      assert.deepEqual(packTensor('t', t), tensorJson('t', t), `${dt} stays JSON`);
    }
  });
});

describe('tensorJson', () => {
  it('FP32: numbers; non-finite as strings', () => {
    assert.deepEqual(tensorJson('x', f32([2, 2], [1.5, -2, 0.25, 1e10])), { name: 'x', datatype: 'FP32', shape: [2, 2], data: [1.5, -2, 0.25, 1e10] });
    assert.deepEqual(tensorJson('x', f32([3], [NaN, Infinity, -Infinity])).data, ['NaN', 'Infinity', '-Infinity']);
    assert.deepEqual(tensorJson('x', f32([1], [0.1])).data, [Math.fround(0.1)]);
  });

  it('FP16: half bits decoded', () => {
    const t: Tensor = { dtype: DTYPES.FP16, shape: [4], data: Uint16Array.from([1.5, -0.25, 65504, 1 / 3].map(toHalfBits)) };
    const j = tensorJson('h', t);
    assert.equal(j.datatype, 'FP16');
    assert.deepEqual(j.data.slice(0, 3), [1.5, -0.25, 65504]);
    assert.ok(Math.abs((j.data[3] as number) - 1 / 3) < 1e-3);
    const inf: Tensor = { dtype: DTYPES.FP16, shape: [1], data: Uint16Array.from([0x7c00]) };
    assert.deepEqual(tensorJson('h', inf).data, ['Infinity']);
  });

  it('INT64 / UINT64: numbers when safe, strings beyond 2^53', () => {
    const i64: Tensor = { dtype: DTYPES.INT64, shape: [4], data: BigInt64Array.from([-5n, 9007199254740991n, 9007199254740992n, -(2n ** 62n)]) };
    assert.deepEqual(tensorJson('i', i64).data, [-5, 9007199254740991, '9007199254740992', '-4611686018427387904']);
    const u64: Tensor = { dtype: DTYPES.UINT64, shape: [2], data: BigUint64Array.from([7n, 2n ** 64n - 1n]) };
    assert.deepEqual(tensorJson('u', u64).data, [7, '18446744073709551615']);
  });

  it('BOOL, BYTES and the integer types', () => {
    assert.deepEqual(tensorJson('b', { dtype: DTYPES.BOOL, shape: [3], data: Uint8Array.from([0, 1, 2]) }).data, [false, true, true]);
    assert.deepEqual(tensorJson('s', bytes([3], ['a,b', '"q"', ''])).data, ['a,b', '"q"', '']);
    for (const [dt, ctor] of [
      ['INT8', Int8Array],
      ['UINT16', Uint16Array],
      ['INT32', Int32Array],
      ['FP64', Float64Array],
    ] as const) {
      const t: Tensor = { dtype: DTYPES[dt as V2Datatype], shape: [2], data: ctor.from([3, 4]) };
      assert.deepEqual(tensorJson('t', t), { name: 't', datatype: dt, shape: [2], data: [3, 4] });
    }
  });

  it('truncates beyond maxElements to the shape', () => {
    assert.equal(DEFAULT_MAX_ELEMENTS, 4096);
    const t = f32([2, 2], [1, 2, 3, 4]);
    assert.deepEqual(tensorJson('x', t, 3), { name: 'x', datatype: 'FP32', shape: [2, 2], data: [], truncated: true });
    assert.equal(tensorJson('x', t, 4).truncated, undefined);
    const big: Tensor = { dtype: DTYPES.FP32, shape: [1, 4097], data: new Float32Array(4097) };
    assert.equal(tensorJson('x', big).truncated, true);
  });
});

describe('PredictionLog', () => {
  it('samples at the per-model rate (random < rate)', async () => {
    assert.equal(DEFAULT_SAMPLE_RATE, 0.01);
    const draws = [0.1, 0.3, 0.2499, 0.25];
    let calls = 0;
    const rates = new Map([
      ['a', 0.25],
      ['never', 0],
      ['always', 1],
    ]);
    const log = new PredictionLog({
      sink: new MemorySink(),
      flushMs: MANUAL,
      sampleRate: (m) => rates.get(m) ?? DEFAULT_SAMPLE_RATE,
      random: () => {
        calls++;
        return draws.shift() ?? 0.999;
      },
    });
    assert.deepEqual([log.sample('a'), log.sample('a'), log.sample('a'), log.sample('a')], [true, false, true, false]);
    assert.equal(calls, 4);
    assert.equal(log.sample('never'), false);
    assert.equal(log.sample('always'), true);
    assert.equal(calls, 4); // rate 0 and 1 need no draw
    assert.equal(log.sample('other'), false); // 0.999 ≥ 0.01
    await log.close();

    // The default rate with a seeded source: ~1%.
    let s = 42;
    const lcg = (): number => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
    const d = new PredictionLog({ sink: new MemorySink(), flushMs: MANUAL, random: lcg });
    let n = 0;
    for (let i = 0; i < 100_000; i++) if (d.sample('m')) n++;
    assert.ok(n > 850 && n < 1150, `sampled ${n} of 100000`);
    const throwing = new PredictionLog({
      sink: new MemorySink(),
      flushMs: MANUAL,
      sampleRate: () => {
        throw new Error('boom');
      },
    });
    assert.equal(throwing.sample('m'), false);
    await Promise.all([d.close(), throwing.close()]);
    assert.equal(d.sample('m'), false); // closed
  });

  it('record is synchronous and bounded: beyond maxBuffer records are dropped and counted', async () => {
    const sink = new MemorySink();
    let release!: () => void;
    sink.hold = new Promise((r) => {
      release = r;
    });
    const log = new PredictionLog({ sink, flushMs: MANUAL, maxBuffer: 5 });
    for (let i = 0; i < 3; i++) assert.equal(log.record(input(i)), undefined);
    const flushing = log.flush(); // the sink hangs: records in flight still count against the bound
    await new Promise((r) => setImmediate(r));
    for (let i = 3; i < 8; i++) log.record(input(i));
    assert.equal(log.pending, 5);
    assert.equal(log.dropped, 3);
    release();
    await flushing; // a flush also writes what arrived while it ran
    assert.equal(log.written, 5);
    assert.deepEqual(sink.batches, [3, 2]);
    assert.deepEqual(
      sink.records.map((r) => r.requestId),
      ['r0', 'r1', 'r2', 'r3', 'r4'],
    );
    // Malformed input never throws: dropped and counted.
    log.record({ ...input(9), inputs: undefined } as unknown as PredictionInput);
    log.record(null as unknown as PredictionInput);
    assert.equal(log.dropped, 5);
    assert.equal(log.pending, 0);
    await log.close();
    log.record(input(10));
    assert.equal(log.dropped, 6);
    assert.equal(sink.closed, true);
  });

  it('flush writes batches of at most 500 and converts at flush', async () => {
    const sink = new MemorySink();
    const log = new PredictionLog({ sink, flushMs: MANUAL, maxElements: 8 });
    for (let i = 0; i < 1200; i++) log.record(input(i));
    log.record(
      input(1200, {
        arm: 'canary',
        tenant: '',
        inputs: [
          { name: 'img', tensor: f32([1, 9], new Array<number>(9).fill(1)) },
          { name: 's', tensor: bytes([1], ['hi']) },
        ],
      }),
    );
    assert.equal(log.pending, 1201);
    await log.flush();
    assert.deepEqual(sink.batches, [500, 500, 201]);
    assert.equal(log.written, 1201);
    assert.equal(log.pending, 0);
    // Sinks get the storage form (numeric tensors packed); unpacked, it is the JSON form.
    const r7 = sink.records[7]!;
    assert.equal(typeof r7.inputs[0]!.b64, 'string');
    assert.deepEqual(
      { ...r7, inputs: r7.inputs.map(unpackTensor), outputs: r7.outputs.map(unpackTensor) },
      {
        at: new Date(T0 + 7).toISOString(),
        model: 'm',
        version: 1,
        tenant: 'acme',
        arm: null,
        requestId: 'r7',
        latencyMs: 1.5,
        inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 2], data: [7, 7.5] }],
        outputs: [{ name: 'y', datatype: 'FP32', shape: [1], data: [14] }],
      },
    );
    const last = sink.records[1200]!;
    assert.equal(last.arm, 'canary');
    assert.equal(last.tenant, '');
    assert.deepEqual(last.inputs[0], { name: 'img', datatype: 'FP32', shape: [1, 9], data: [], truncated: true });
    assert.deepEqual(last.inputs[1]!.data, ['hi']);
    // Large tensors: batches also stop at 262144 elements.
    const bigSink = new MemorySink();
    const bigLog = new PredictionLog({ sink: bigSink, flushMs: MANUAL, retentionMs: Infinity });
    const big = f32([1, 4096], new Array<number>(4096).fill(0.25));
    for (let i = 0; i < 100; i++) bigLog.record(input(i, { inputs: [{ name: 'a', tensor: big }], outputs: [{ name: 'b', tensor: big }] }));
    await bigLog.close();
    assert.deepEqual(bigSink.batches, [32, 32, 32, 4]);
    assert.equal(unpackTensor(bigSink.records.at(-1)!.inputs[0]!).data.length, 4096);
    // `at` defaults to now.
    const before = Date.now();
    const { at: _unused, ...noAt } = input(0);
    log.record(noAt);
    await log.flush();
    const at = Date.parse(sink.records.at(-1)!.at);
    assert.ok(at >= before && at <= Date.now());
    // query flushes first.
    log.record(input(5000, { model: 'other' }));
    assert.equal((await log.query({ model: 'other' })).length, 1);
    await assert.rejects(log.query({ limit: -1 }), (e) => isSwitchyardError(e) && e.code === 'SY_ERR_BAD_REQUEST');
    await log.close();
  });

  it('the timer flushes; prune runs at start with the retention cutoff', async () => {
    const sink = new MemorySink();
    const before = Date.now();
    const log = new PredictionLog({ sink, flushMs: 20, retentionMs: 3_600_000 });
    log.record(input(1));
    while (sink.records.length === 0) await new Promise((r) => setTimeout(r, 10)); // no deadline: the test runner's timeout bounds a hang
    assert.equal(sink.records.length, 1);
    assert.equal(sink.pruned.length, 1);
    assert.ok(sink.pruned[0]! >= before - 3_600_000 && sink.pruned[0]! <= Date.now() - 3_600_000);
    await log.close();
    const never = new PredictionLog({ sink: new MemorySink(), flushMs: MANUAL, retentionMs: Infinity });
    await never.close();
    assert.throws(
      () => new PredictionLog({ sink, maxBuffer: 0 }),
      (e) => isSwitchyardError(e) && e.code === 'SY_ERR_CONFIG_INVALID',
    );
  });

  it('a failing sink: requests unaffected, failures counted and logged once per 10 s, data kept (bounded) and retried', async () => {
    const sink = new MemorySink();
    let down = true;
    sink.fail = () => down;
    const { logger, lines } = fakeLogger();
    const log = new PredictionLog({ sink, flushMs: MANUAL, maxBuffer: 600, logger, retentionMs: Infinity, flushAtBatch: false });
    for (let i = 0; i < 550; i++) log.record(input(i));
    await assert.rejects(log.flush(), /sink down/);
    await assert.rejects(log.flush(), /sink down/);
    assert.equal(log.failures, 2); // one failed write per flush: the rest waits
    assert.equal(log.pending, 550);
    for (let i = 550; i < 700; i++) log.record(input(i)); // never throws, even while the sink fails
    assert.equal(log.pending, 600);
    assert.equal(log.dropped, 100);
    const errors = lines.filter((l) => l.level === 'error');
    assert.equal(errors.length, 1, 'one error line per 10 s');
    assert.match(errors[0]!.msg, /write failed/);
    down = false;
    await log.flush();
    assert.equal(log.written, 600);
    assert.equal(log.pending, 0);
    const ids = sink.records.map((r) => r.requestId);
    assert.equal(new Set(ids).size, 600, 'no duplicates');
    assert.deepEqual(ids.slice(0, 3), ['r0', 'r1', 'r2']);
    await log.close();
  });

  it('a full batch pending is written at once, not at the next tick; a failing sink is then left to the timer', async () => {
    const sink = new MemorySink();
    const log = new PredictionLog({ sink, flushMs: MANUAL, retentionMs: Infinity });
    for (let i = 0; i < 499; i++) log.record(input(i));
    await new Promise((r) => setImmediate(r));
    assert.equal(sink.records.length, 0, 'below a batch: waits for the timer');
    log.record(input(499));
    for (let k = 0; k < 5 && sink.records.length < 500; k++) await new Promise((r) => setImmediate(r));
    assert.equal(sink.records.length, 500);
    let calls = 0;
    sink.fail = () => (calls++, true);
    for (let i = 0; i < 500; i++) log.record(input(1000 + i));
    for (let k = 0; k < 5; k++) await new Promise((r) => setImmediate(r));
    for (let i = 0; i < 600; i++) log.record(input(2000 + i));
    for (let k = 0; k < 5; k++) await new Promise((r) => setImmediate(r));
    assert.equal(calls, 1, 'after a failure, full batches no longer trigger writes');
    sink.fail = () => false;
    await log.flush();
    assert.equal(sink.records.length, 1600);
    await log.close();
  });

  it('a record the sink refuses is isolated and dropped; the others are written', async () => {
    const sink = new MemorySink();
    sink.fail = (batch) => batch.some((r) => r.model === 'poison');
    const log = new PredictionLog({ sink, flushMs: MANUAL, retentionMs: Infinity });
    for (let i = 0; i < 10; i++) log.record(input(i, i === 3 ? { model: 'poison' } : {}));
    for (let k = 0; k < 3; k++) await assert.rejects(log.flush());
    assert.equal(log.written, 0);
    assert.equal(log.pending, 10);
    // Now written one by one: the poison fails alone, the others go through, so it is dropped.
    await assert.rejects(log.flush());
    await log.flush();
    assert.equal(log.written, 9);
    assert.equal(log.dropped, 1);
    assert.equal(log.pending, 0);
    assert.ok(!sink.records.some((r) => r.model === 'poison'));
    await log.close();
  });

  it('close: final flush, the sink closed; a failed final flush rejects and counts the loss', async () => {
    const sink = new MemorySink();
    sink.fail = () => true;
    const log = new PredictionLog({ sink, flushMs: MANUAL, retentionMs: Infinity });
    log.record(input(1));
    log.record(input(2));
    await assert.rejects(log.close(), /sink down/);
    assert.equal(sink.closed, true);
    assert.equal(log.dropped, 2);
    assert.equal(log.pending, 0);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Sinks.

function dataset(): PredictionRecord[] {
  const out: PredictionRecord[] = [];
  for (let i = 0; i < 300; i++) {
    out.push(
      rec(i, {
        model: i % 3 === 0 ? 'b' : 'a',
        version: 1 + (i % 2),
        arm: i % 5 === 0 ? 'canary' : null,
        tenant: i % 7 === 0 ? '' : 'acme',
        outputs: [{ name: 'label', datatype: 'BYTES', shape: [1], data: [`v${i},"q"\n`] }],
      }),
    );
  }
  return out;
}

/** The reference answer: filter, ascending by time (stable), limit. */
function expect(all: readonly PredictionRecord[], q: PredictionQuery): PredictionRecord[] {
  return all
    .filter(
      (r) =>
        (q.model === undefined || r.model === q.model) &&
        (q.version === undefined || r.version === q.version) &&
        (q.since === undefined || Date.parse(r.at) >= q.since) &&
        (q.until === undefined || Date.parse(r.at) <= q.until),
    )
    .map((r, i) => ({ r, i }))
    .sort((x, y) => Date.parse(x.r.at) - Date.parse(y.r.at) || x.i - y.i)
    .map((x) => x.r)
    .slice(0, q.limit ?? 1000);
}

async function checkQueries(sink: PredictionSink, all: readonly PredictionRecord[]): Promise<void> {
  const queries: PredictionQuery[] = [
    {},
    { model: 'a' },
    { model: 'b', version: 2 },
    { version: 1 },
    { model: 'nope' },
    { since: T0 + 100_000, until: T0 + 150_000 },
    { model: 'a', since: T0 + 100_000, until: T0 + 100_000 },
    { since: T0 + 100_500, until: T0 + 101_500 },
    { limit: 7 },
    { model: 'a', limit: 5, since: T0 + 200_000 },
    { limit: 0 },
  ];
  for (const q of queries) assert.deepEqual(await sink.query(q), expect(all, q), JSON.stringify(q));
}

function databaseSuite(name: string, url: () => Promise<{ url: string; drop(): Promise<void> }>): void {
  describe(`DatabasePredictionSink on ${name}`, () => {
    const withDb = async (fn: (d: Database) => Promise<void>): Promise<void> => {
      const target = await url();
      const d = await openDatabase(target.url);
      try {
        await fn(d);
      } finally {
        await d.close();
        await target.drop();
      }
    };

    it('stores numeric tensors packed (element bytes) and reads back exactly what was logged', () =>
      withDb(async (d) => {
        const sink = new DatabasePredictionSink(d);
        const t = (datatype: keyof typeof DTYPES, data: unknown, shape: number[]) =>
          tensorJson(datatype.toLowerCase(), { dtype: DTYPES[datatype], shape, data: data as never });
        const inputs = [
          t('FP32', Float32Array.of(0.1, -2.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 3e38), [1, 6]),
          t('FP64', Float64Array.of(Math.PI, -0, 1e-300), [3]),
          t('FP16', Uint16Array.of(0x3c00, 0xc000, 0x7c00), [3]),
          t('INT32', Int32Array.of(-2147483648, 7), [2]),
          t('UINT8', Uint8Array.of(0, 255), [2]),
          t('INT64', BigInt64Array.of(5n, 9007199254740993n), [2]), // beyond 2^53: a string, kept as JSON
          t('BOOL', Uint8Array.of(1, 0), [2]),
          t(
            'BYTES',
            ['a', 'b,"c'].map((x) => new Uint8Array(Buffer.from(x))),
            [2],
          ),
        ];
        const rec = {
          at: new Date(1_700_000_000_000).toISOString(),
          model: 'm',
          version: 1,
          tenant: '',
          arm: null,
          requestId: 'p',
          latencyMs: 1,
          inputs,
          outputs: [inputs[0]!],
        };
        await sink.write([rec]);
        assert.deepEqual(await sink.query({ model: 'm' }), [rec]);
        const stored = await d.db.selectFrom('prediction_log').select('inputs').executeTakeFirstOrThrow();
        const kinds = (JSON.parse(stored.inputs) as Record<string, unknown>[]).map((x) => ('b64' in x ? 'packed' : 'json'));
        assert.deepEqual(kinds, ['packed', 'packed', 'packed', 'packed', 'packed', 'json', 'json', 'json']);
        await sink.close();
      }));

    it('writes batches (chunked inserts), queries by model/version/time range/limit ascending, prunes', () =>
      withDb(async (d) => {
        const sink = new DatabasePredictionSink(d);
        assert.equal(sink.kind, 'database');
        const all = dataset();
        // Out of time order on purpose: queries sort by time.
        await sink.write(all.slice(150));
        await sink.write(all.slice(0, 150));
        await sink.write([]);
        const sorted = [...all].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
        await checkQueries(sink, sorted);
        assert.equal((await sink.query({ limit: 1_000_000 })).length, 300);
        await assert.rejects(sink.query({ since: Number.NaN }), (e) => isSwitchyardError(e) && e.code === 'SY_ERR_BAD_REQUEST');

        assert.equal(await sink.prune(T0 + 100_000), 100);
        assert.equal(await sink.prune(T0 + 100_000), 0);
        const rest = await sink.query({});
        assert.equal(rest.length, 200);
        assert.equal(rest[0]!.requestId, 'r100');
        await sink.close();
      }));

    it('with the PredictionLog: record → flush → query', () =>
      withDb(async (d) => {
        const log = new PredictionLog({ sink: new DatabasePredictionSink(d), flushMs: MANUAL, retentionMs: Infinity });
        for (let i = 0; i < 1100; i++) log.record(input(i, { version: 1 + (i % 3), inputs: [{ name: 's', tensor: bytes([1], [`a,b\n"${i}"`]) }] }));
        const got = await log.query({ version: 2, limit: 100_000 });
        assert.equal(got.length, 367);
        assert.deepEqual(got[0]!.inputs[0]!.data, ['a,b\n"1"']);
        assert.equal(got[0]!.at, new Date(T0 + 1).toISOString());
        assert.equal(log.written, 1100);
        await log.close();
      }));
  });
}

/** A SQLite database file in a fresh directory (the database sink writes it through its writer thread). */
async function sqliteFile(): Promise<{ url: string; file: string; drop(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'sy-predlog-db-'));
  const file = join(dir, 'meta.db');
  return { url: `sqlite:${file}`, file, drop: () => rm(dir, { recursive: true, force: true }) };
}

databaseSuite('SQLite', async () => ({ url: 'sqlite::memory:', drop: async () => undefined }));
databaseSuite('a SQLite file (writer thread)', sqliteFile);

describe('DatabasePredictionSink: the SQLite writer thread', () => {
  const withFile = async (fn: (d: Database, file: string) => Promise<void>): Promise<void> => {
    const target = await sqliteFile();
    const d = await openDatabase(target.url);
    try {
      await fn(d, target.file);
    } finally {
      await d.close();
      await target.drop();
    }
  };
  const rename = (from: string, to: string) => (d: Database) => sql`ALTER TABLE ${sql.table(from)} RENAME TO ${sql.table(to)}`.execute(d.db);
  const setAside = rename('prediction_log', 'prediction_log_aside');
  const putBack = rename('prediction_log_aside', 'prediction_log');
  const stored = (d: Database) => d.db.selectFrom('prediction_log').select(['request_id', 'inputs', 'outputs']).orderBy('id').execute();

  it('converts buffered records (every datatype, views, truncation) as the main thread does; rows are queryable', () =>
    withFile(async (d) => {
      const t = (name: string, datatype: V2Datatype, shape: number[], data: unknown) => ({
        name,
        tensor: { dtype: DTYPES[datatype], shape, data: data as never },
      });
      const inputs = [
        t('f32', 'FP32', [1, 3], Float32Array.of(0.1, Number.NaN, Number.NEGATIVE_INFINITY)),
        t('u8', 'UINT8', [3], Uint8Array.of(0, 255, 7)), // 3 bytes: the next tensor's elements start 8-aligned
        t('f64', 'FP64', [2], Float64Array.of(-0, Math.PI)),
        t('f16', 'FP16', [2], Uint16Array.of(0x3c00, 0x7e00)),
        t('i64', 'INT64', [2], BigInt64Array.of(-5n, 9007199254740993n)),
        t('b', 'BOOL', [2], Uint8Array.of(1, 0)),
        t(
          's',
          'BYTES',
          [2],
          ['a', 'b,"c\n'].map((x) => new Uint8Array(Buffer.from(x))),
        ),
        t('big', 'FP32', [1, 9], new Float32Array(9)), // beyond maxElements: shape only
      ];
      const scores = Float32Array.of(9, 8, 7); // a batch's output: each request's is a view into it
      const logged = (i: number) => input(i, { inputs, outputs: [t('y', 'FP32', [1, 1], scores.subarray(i, i + 1))] });
      const memory = await openDatabase('sqlite::memory:');
      try {
        for (const db of [d, memory]) {
          const log = new PredictionLog({ sink: new DatabasePredictionSink(db), flushMs: MANUAL, retentionMs: Infinity, maxElements: 8 });
          for (let i = 0; i < 3; i++) log.record(logged(i));
          await log.flush();
          assert.equal(log.written, 3);
          const expected = [0, 1, 2].map((i) => ({
            at: new Date(T0 + i).toISOString(),
            model: 'm',
            version: 1,
            tenant: 'acme',
            arm: null,
            requestId: `r${i}`,
            latencyMs: 1.5,
            inputs: inputs.map((x) => tensorJson(x.name, x.tensor, 8)),
            outputs: [{ name: 'y', datatype: 'FP32', shape: [1, 1], data: [9 - i] }],
          }));
          assert.deepEqual(await log.query({}), expected);
          await log.close();
        }
        assert.deepEqual(await stored(d), await stored(memory), 'the same rows as converted and inserted on the main thread');
      } finally {
        await memory.close();
      }
    }));

  it('a failed insert rejects the write: the log counts the failure, keeps the records and writes them later', () =>
    withFile(async (d) => {
      const log = new PredictionLog({ sink: new DatabasePredictionSink(d), flushMs: MANUAL, retentionMs: Infinity });
      log.record(input(0));
      await log.flush(); // the thread is up
      await setAside(d);
      for (let i = 1; i <= 3; i++) log.record(input(i));
      await assert.rejects(log.flush(), (e) => isSwitchyardError(e) && e.code === 'SY_ERR_INTERNAL' && /no such table: prediction_log/.test(e.message));
      assert.deepEqual([log.failures, log.pending, log.written, log.dropped], [1, 3, 1, 0]);
      await putBack(d);
      await log.flush();
      assert.deepEqual([log.failures, log.pending, log.written, log.dropped], [1, 0, 4, 0]);
      assert.deepEqual(
        (await log.query({})).map((r) => r.requestId),
        ['r0', 'r1', 'r2', 'r3'],
      );
      await log.close();
    }));

  it('a thread that fails at start rejects the write; the next write starts a new one; a bad record is refused', () =>
    withFile(async (d) => {
      const sink = new DatabasePredictionSink(d);
      await setAside(d); // the thread cannot prepare its INSERT
      await assert.rejects(
        sink.write([rec(1)]),
        (e) => isSwitchyardError(e) && e.code === 'SY_ERR_INTERNAL' && /writer thread failed: SQLITE_ERROR: no such table: prediction_log/.test(e.message),
      );
      await putBack(d);
      await sink.write([rec(2)]);
      await assert.rejects(sink.write([rec(3, { at: 'yesterday' })]), (e) => isSwitchyardError(e) && e.code === 'SY_ERR_BAD_REQUEST');
      assert.deepEqual(
        (await sink.query({})).map((r) => r.requestId),
        ['r2'],
      );
      await sink.close();
    }));

  it('close waits for the writes begun before it, ends the thread (its connection closed) and refuses later writes', () =>
    withFile(async (d, file) => {
      const sink = new DatabasePredictionSink(d);
      const all = dataset();
      const writes = [sink.write(all.slice(0, 150)), sink.write(all.slice(150))];
      await sink.close();
      await Promise.all(writes);
      assert.equal((await sink.query({ limit: 1000 })).length, 300);
      await assert.rejects(sink.write([rec(1)]), (e) => isSwitchyardError(e) && /sink is closed/.test(e.message));
      await d.close();
      // SQLite removes the WAL when its last connection closes: the thread's is closed too.
      assert.equal(existsSync(`${file}-wal`), false);
    }));
});

const pgDown = await postgresReachable();
const inCi = process.env['CI'] === 'true';
if (pgDown !== null && inCi) {
  describe('DatabasePredictionSink on Postgres', () => {
    it('needs Postgres on 127.0.0.1:5432 in CI', () => assert.fail(`Postgres is unreachable at ${PG_BASE}: ${pgDown}`));
  });
} else if (pgDown !== null) {
  describe('DatabasePredictionSink on Postgres', { skip: `Postgres unreachable at ${PG_BASE} (${pgDown}); set CI=true to make this fail` }, () => {
    it('skipped', () => undefined);
  });
} else {
  databaseSuite('Postgres', async () => pgSchema());
}

describe('JsonlPredictionSink', () => {
  const withDir = async (fn: (dir: string) => Promise<void>): Promise<void> => {
    const dir = await mkdtemp(join(tmpdir(), 'sy-predlog-'));
    try {
      await fn(dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
  const jsonlFiles = async (dir: string): Promise<string[]> => (await readdir(dir)).filter((n) => n.endsWith('.jsonl')).sort();

  it('rotates by size; names sort in write order; queries across files', () =>
    withDir(async (dir) => {
      const lineBytes = Buffer.byteLength(toJsonl([rec(0)]));
      const sink = new JsonlPredictionSink({ dir: join(dir, 'sub'), maxFileBytes: lineBytes * 10 });
      assert.equal(sink.kind, 'jsonl');
      const all = dataset();
      for (let i = 0; i < all.length; i += 37) await sink.write(all.slice(i, i + 37));
      const files = await jsonlFiles(join(dir, 'sub'));
      assert.ok(files.length >= 25, `${files.length} files`);
      for (const f of files) {
        assert.match(f, /^predictions-\d{8}T\d{6}-\d{6}\.jsonl$/);
        assert.ok((await stat(join(dir, 'sub', f))).size <= lineBytes * 10 + 200);
      }
      // Names sort in write order: reading the files in name order gives the records in order.
      let concat = '';
      for (const f of files) concat += await readFile(join(dir, 'sub', f), 'utf8');
      // (Numeric tensors are stored packed: base64 of their element bytes; queries unpack them.)
      const lines = concat
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { requestId: string; inputs: { b64?: string }[] });
      assert.deepEqual(
        lines.map((l) => l.requestId),
        all.map((r) => r.requestId),
      );
      assert.ok(
        lines.every((l) => typeof l.inputs[0]?.b64 === 'string'),
        'FP32 inputs packed',
      );
      await checkQueries(sink, all);
      await sink.close();
      await assert.rejects(sink.write([rec(1)]));
      // A new instance (restart) reads the same files and continues in a new one.
      const again = new JsonlPredictionSink({ dir: join(dir, 'sub'), maxFileBytes: lineBytes * 10 });
      await checkQueries(again, all);
      const more = [rec(400), rec(401)];
      await again.write(more);
      const after = await jsonlFiles(join(dir, 'sub'));
      assert.equal(after.length, files.length + 1);
      assert.ok(after.at(-1)! > files.at(-1)!);
      assert.deepEqual(await again.query({ since: T0 + 400_000 }), more);
      await again.close();
    }));

  it('a record larger than maxFileBytes gets a file of its own; maxFiles deletes the oldest', () =>
    withDir(async (dir) => {
      const sink = new JsonlPredictionSink({ dir, maxFileBytes: 100, maxFiles: 3 });
      const all = dataset().slice(0, 10);
      for (const r of all) await sink.write([r]);
      const files = await jsonlFiles(dir);
      assert.equal(files.length, 3);
      assert.deepEqual(await sink.query({}), all.slice(7));
      await sink.close();
      assert.throws(
        () => new JsonlPredictionSink({ dir, maxFiles: 0 }),
        (e) => isSwitchyardError(e) && e.code === 'SY_ERR_CONFIG_INVALID',
      );
    }));

  it('rotates at a new UTC day', () =>
    withDir(async (dir) => {
      const realNow = Date.now;
      try {
        Date.now = () => Date.UTC(2025, 2, 4, 23, 59, 58);
        const sink = new JsonlPredictionSink({ dir });
        await sink.write([rec(1, { at: '2025-03-04T23:59:57.000Z' })]);
        await sink.write([rec(2, { at: '2025-03-04T23:59:58.000Z' })]);
        Date.now = () => Date.UTC(2025, 2, 5, 0, 0, 1);
        await sink.write([rec(3, { at: '2025-03-05T00:00:00.500Z' })]);
        const files = await jsonlFiles(dir);
        assert.equal(files.length, 2);
        assert.match(files[0]!, /^predictions-20250304T235958-/);
        assert.match(files[1]!, /^predictions-20250305T000001-/);
        assert.deepEqual(
          (await sink.query({ since: Date.UTC(2025, 2, 5) })).map((r) => r.requestId),
          ['r3'],
        );
        await sink.close();
      } finally {
        Date.now = realNow;
      }
    }));

  it('ignores a cut-off last line and foreign files', () =>
    withDir(async (dir) => {
      const sink = new JsonlPredictionSink({ dir });
      await sink.write([rec(1), rec(2)]);
      const [file] = await jsonlFiles(dir);
      await appendFile(join(dir, file!), '{"at":"2025-03-04T12:00:03.000Z","model":"m","ver');
      await writeFile(join(dir, 'notes.jsonl'), 'not a prediction file\n');
      assert.deepEqual(
        (await sink.query({})).map((r) => r.requestId),
        ['r1', 'r2'],
      );
      await sink.close();
    }));

  it('prune deletes whole files whose newest record is older than the cutoff', () =>
    withDir(async (dir) => {
      // Files of an earlier process: their range is known from the names (and the newest one is read at start).
      const day = (d: number, h = 0): string => new Date(Date.UTC(2025, 0, d, h)).toISOString();
      await writeFile(join(dir, 'predictions-20250101T000000-000000.jsonl'), toJsonl([rec(1, { at: day(1) }), rec(2, { at: day(1, 23) })]));
      await writeFile(join(dir, 'predictions-20250102T000000-000001.jsonl'), toJsonl([rec(3, { at: day(2) }), rec(4, { at: day(2, 5) })]));
      await writeFile(join(dir, 'predictions-20250103T000000-000002.jsonl'), toJsonl([rec(5, { at: day(3) }), rec(6, { at: day(3, 5) })]));
      const sink = new JsonlPredictionSink({ dir, maxFileBytes: 1 << 20 });
      assert.deepEqual(
        (await sink.query({ since: Date.parse(day(2, 1)), until: Date.parse(day(3, 1)) })).map((r) => r.requestId),
        ['r4', 'r5'],
      );
      assert.equal(await sink.prune(Date.parse(day(1, 23))), 0); // the first file's newest record is at day 1, 23:00
      assert.equal(await sink.prune(Date.parse(day(2))), 1);
      assert.equal(await sink.prune(Date.parse(day(2, 1))), 0);
      assert.equal(await sink.prune(Date.parse(day(3, 4))), 1);
      assert.equal(await sink.prune(Date.parse(day(3, 5))), 0);
      // This process's files: exact ranges (names are max(now, newest at) so they do not help).
      await sink.write([rec(7, { at: day(10) }), rec(8, { at: day(10, 1) })]);
      await sink.close();
      const next = new JsonlPredictionSink({ dir, maxFileBytes: 100 });
      await next.write([rec(9, { at: day(11) })]);
      await next.write([rec(10, { at: day(12) })]);
      assert.equal((await jsonlFiles(dir)).length, 4);
      assert.equal(await next.prune(Date.parse(day(11, 1))), 3); // day 3, day 10 and day 11 files
      assert.deepEqual(
        (await next.query({})).map((r) => r.requestId),
        ['r10'],
      );
      // The current file goes too once all of it is old.
      assert.equal(await next.prune(Date.parse(day(13))), 1);
      assert.deepEqual(await jsonlFiles(dir), []);
      await next.write([rec(11, { at: day(14) })]);
      assert.equal((await next.query({})).length, 1);
      await next.close();
    }));

  it('with the PredictionLog', () =>
    withDir(async (dir) => {
      const log = new PredictionLog({ sink: new JsonlPredictionSink({ dir, maxFileBytes: 4096 }), flushMs: MANUAL, retentionMs: Infinity });
      for (let i = 0; i < 200; i++) log.record(input(i, { model: i % 2 ? 'a' : 'b' }));
      const got = await log.query({ model: 'a', since: T0 + 100 });
      assert.equal(got.length, 50);
      assert.equal(got[0]!.requestId, 'r101');
      assert.ok((await jsonlFiles(dir)).length > 1);
      await log.close();
    }));
});

// ---------------------------------------------------------------------------------------------------------------
// Export.

/** RFC 4180 parser: rows of fields; `null` marks a field that was empty and unquoted. */
function parseCsv(text: string): (string | null)[][] {
  const rows: (string | null)[][] = [];
  let row: (string | null)[] = [];
  let i = 0;
  while (i < text.length) {
    let field: string | null;
    if (text[i] === '"') {
      field = '';
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        assert.ok(q >= 0, 'unterminated quote');
        field += text.slice(i, q);
        i = q + 1;
        if (text[i] === '"') {
          field += '"';
          i++;
        } else break;
      }
    } else {
      let j = i;
      while (j < text.length && text[j] !== ',' && text[j] !== '\r' && text[j] !== '\n') j++;
      field = j === i ? null : text.slice(i, j);
      assert.ok(field === null || !field.includes('"'), 'quote in an unquoted field');
      i = j;
    }
    row.push(field);
    if (text[i] === ',') {
      i++;
    } else {
      assert.equal(text.slice(i, i + 2), '\r\n', 'rows end in CRLF');
      i += 2;
      rows.push(row);
      row = [];
    }
  }
  return rows;
}

describe('export', () => {
  const tricky = 'a,b "quoted"\nnext\r\nline';
  const records: PredictionRecord[] = [
    {
      at: '2025-03-04T12:00:00.000Z',
      model: 'm,1',
      version: 3,
      tenant: '',
      arm: 'canary',
      requestId: 'req "1"',
      latencyMs: 1.25,
      inputs: [
        { name: 'x', datatype: 'FP32', shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
        { name: 's', datatype: 'BYTES', shape: [2], data: [tricky, ''] },
        { name: 'wide', datatype: 'FP32', shape: [2, 65], data: new Array<number>(130).fill(0.5) },
      ],
      outputs: [
        { name: 'x', datatype: 'BOOL', shape: [2, 1], data: [true, false] },
        { name: 'big', datatype: 'INT64', shape: [2, 1], data: ['9007199254740993', -1] },
      ],
    },
    {
      at: '2025-03-04T12:00:01.000Z',
      model: 'm,1',
      version: 3,
      tenant: 'acme',
      arm: null,
      requestId: 'r2',
      latencyMs: 2,
      inputs: [
        { name: 'x', datatype: 'FP32', shape: [1, 3], data: [7, 8, 9] },
        { name: 'wide', datatype: 'FP32', shape: [1, 10000], data: [], truncated: true },
      ],
      outputs: [
        { name: 'x', datatype: 'BOOL', shape: [1, 1], data: [true] },
        { name: 'big', datatype: 'INT64', shape: [1, 1], data: [5] },
      ],
    },
    {
      // Dim 0 differs between tensors: one line with whole tensors.
      at: '2025-03-04T12:00:02.000Z',
      model: 'n',
      version: 1,
      tenant: 'acme',
      arm: null,
      requestId: 'r3',
      latencyMs: 3,
      inputs: [{ name: 'v', datatype: 'INT32', shape: [3], data: [1, 2, 3] }],
      outputs: [{ name: 'score', datatype: 'FP32', shape: [], data: [0.5] }],
    },
  ];

  it('toJsonl: one JSON record per line, round-trips', () => {
    const text = toJsonl(records);
    assert.ok(text.endsWith('\n'));
    const lines = text.split('\n');
    assert.equal(lines.pop(), '');
    assert.equal(lines.length, 3);
    assert.deepEqual(
      lines.map((l) => JSON.parse(l) as PredictionRecord),
      records,
    );
    assert.ok(lines.every((l) => l.startsWith('{"at":"')));
    assert.equal(toJsonl([]), '');
  });

  it('toCsv: one line per request row, element columns up to 64 per row, JSON columns beyond, RFC 4180 quoting', () => {
    const rows = parseCsv(toCsv(records));
    const [header, ...body] = rows;
    assert.deepEqual(header, [
      'at',
      'model',
      'version',
      'tenant',
      'arm',
      'request_id',
      'latency_ms',
      'row',
      'x[0]',
      'x[1]',
      'x[2]',
      's[0]',
      'wide',
      'v[0]',
      'v[1]',
      'v[2]',
      'output:x[0]',
      'big[0]',
      'score[0]',
    ]);
    assert.equal(body.length, 2 + 1 + 1);
    const col = (r: (string | null)[], name: string): string | null => r[header!.indexOf(name)]!;
    const [a0, a1, b0, c0] = body as (string | null)[][];
    assert.equal(col(a0!, 'model'), 'm,1');
    assert.equal(col(a0!, 'request_id'), 'req "1"');
    assert.equal(col(a0!, 'tenant'), null);
    assert.equal(col(a0!, 'arm'), 'canary');
    assert.equal(col(a0!, 'latency_ms'), '1.25');
    assert.deepEqual([col(a0!, 'row'), col(a1!, 'row'), col(b0!, 'row')], ['0', '1', '0']);
    assert.deepEqual(
      ['x[0]', 'x[1]', 'x[2]'].map((h) => col(a1!, h)),
      ['4', '5', '6'],
    );
    assert.equal(col(a0!, 's[0]'), tricky);
    assert.equal(col(a1!, 's[0]'), ''); // empty string: quoted, not absent
    assert.equal(col(b0!, 's[0]'), null); // absent
    assert.deepEqual(JSON.parse(col(a1!, 'wide')!), new Array<number>(65).fill(0.5));
    assert.equal(col(b0!, 'wide'), null); // truncated
    assert.deepEqual([col(a0!, 'output:x[0]'), col(a1!, 'output:x[0]')], ['true', 'false']);
    assert.deepEqual([col(a0!, 'big[0]'), col(a1!, 'big[0]'), col(b0!, 'big[0]')], ['9007199254740993', '-1', '5']);
    assert.equal(col(b0!, 'arm'), null);
    assert.deepEqual(
      ['v[0]', 'v[1]', 'v[2]', 'score[0]', 'row'].map((h) => col(c0!, h)),
      ['1', '2', '3', '0.5', '0'],
    );
    assert.equal(toCsv([]), 'at,model,version,tenant,arm,request_id,latency_ms,row\r\n');
  });

  it('toCsv over what a sink returns', () =>
    withTemp(async (dir) => {
      const sink = new JsonlPredictionSink({ dir });
      await sink.write(records);
      const back = await sink.query({});
      assert.deepEqual(back, records);
      assert.equal(toCsv(back), toCsv(records));
      await sink.close();
    }));
});

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sy-predlog-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
