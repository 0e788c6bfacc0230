/**
 * The experiment store against real SQLite (in memory) and real Postgres (a fresh schema per test): create, get,
 * list, stop and delete with their 400/404/409s; exposures deduplicated per unit with the first arm winning (in
 * memory, across flushes and across two stores on one database), random traffic counted apart, bounded pending
 * exposures, failed flushes retried; outcome event validation; and report numbers checked against an independent
 * computation over seeded synthetic data (exposures, conversions, per-unit means and deviations, z- and t-tests,
 * SRM, unattributed events).
 * Postgres must be reachable in CI (CI=true); elsewhere its suite is skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { isSwitchyardError, type ErrorCode } from '../src/errors.js';
import {
  ExperimentStore,
  sampleRatioMismatch,
  twoProportionZTest,
  welchTTest,
  type ExperimentArm,
  type ExperimentReport,
  type Moments,
  type OutcomeEvent,
} from '../src/experiments/index.js';
import { openDatabase, type Database } from '../src/storage/index.js';
import { PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';

type Opener = () => Promise<{ database: Database; cleanup(): Promise<void> }>;

const openSqlite: Opener = async () => {
  const database = await openDatabase('sqlite::memory:');
  return { database, cleanup: () => database.close() };
};

const openPostgres: Opener = async () => {
  const schema = pgSchema();
  const database = await openDatabase(schema.url);
  return {
    database,
    async cleanup() {
      await database.close();
      await schema.drop();
    },
  };
};

/** Long enough that only explicit flushes write (the timer is unref'd). */
const MANUAL = 3_600_000;

const ARMS: ExperimentArm[] = [
  { name: 'control', target: '1', weight: 1 },
  { name: 'candidate', target: '2', weight: 1 },
];

/** mulberry32: a seeded PRNG; `rnd(m)` is an integer in [0, m). */
function prng(seed: number): (m: number) => number {
  let a = seed >>> 0;
  return (m) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * m);
  };
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isSwitchyardError(e), `expected a SwitchyardError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

function close(actual: number | null | undefined, expected: number, what: string): void {
  assert.equal(typeof actual, 'number', `${what}: got ${String(actual)}`);
  const tol = 1e-9 * Math.abs(expected) + 1e-12;
  assert.ok(Math.abs((actual as number) - expected) <= tol, `${what}: got ${String(actual)}, expected ${expected}`);
}

/** Every numeric field of `actual` close to `expected` (null where expected is null). */
function closeObj(actual: object | null, expected: object | null, what: string): void {
  if (expected === null) {
    assert.equal(actual, null, what);
    return;
  }
  assert.ok(actual !== null, `${what}: got null`);
  const a = actual as Record<string, unknown>;
  for (const [k, v] of Object.entries(expected)) {
    if (typeof v === 'number') close(a[k] as number, v, `${what}.${k}`);
    else assert.deepEqual(a[k], v, `${what}.${k}`);
  }
}

async function count(d: Database, table: 'experiment_exposures' | 'experiment_traffic' | 'experiment_events', experiment: string): Promise<number> {
  const r = await d.db
    .selectFrom(table)
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .where('experiment', '=', experiment)
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

async function exposureArms(d: Database, experiment: string): Promise<Map<string, string>> {
  const rows = await d.db.selectFrom('experiment_exposures').select(['unit', 'arm']).where('experiment', '=', experiment).execute();
  return new Map(rows.map((r) => [r.unit, r.arm]));
}

async function trafficOf(d: Database, experiment: string): Promise<Record<string, number>> {
  const rows = await d.db.selectFrom('experiment_traffic').select(['arm', 'assignment', 'requests']).where('experiment', '=', experiment).execute();
  return Object.fromEntries(rows.map((r) => [`${r.arm}/${r.assignment}`, Number(r.requests)]));
}

function silentLogger(logged: unknown[] = []): Logger {
  const push = (o: unknown): void => {
    logged.push(o);
  };
  return { error: push, warn: push, info: () => undefined, debug: () => undefined } as unknown as Logger;
}

/** Independent reference for one arm and metric: per-unit sums over the arm's converting units, two-pass statistics. */
interface RefMetric {
  units: number;
  values: number[];
  sum: number;
  mean: number | null;
  stddev: number | null;
}

function refMetric(values: number[]): RefMetric {
  const n = values.length;
  const sum = values.reduce((s, v) => s + v, 0);
  const mean = n > 0 ? sum / n : null;
  let ss = 0;
  for (const v of values) ss += (v - (mean ?? 0)) ** 2;
  return { units: n, values, sum, mean, stddev: n >= 2 ? Math.sqrt(ss / (n - 1)) : null };
}

function momentsOf(values: readonly number[]): Moments {
  let sum = 0;
  let sumSq = 0;
  for (const v of values) {
    sum += v;
    sumSq += v * v;
  }
  return { n: values.length, sum, sumSq };
}

function suite(open: Opener): void {
  async function withStore(
    fn: (store: ExperimentStore, d: Database) => Promise<void>,
    opts: ConstructorParameters<typeof ExperimentStore>[1] = {},
  ): Promise<void> {
    const { database, cleanup } = await open();
    const store = new ExperimentStore(database, { flushMs: MANUAL, logger: silentLogger(), ...opts });
    try {
      await fn(store, database);
    } finally {
      await store.close().catch(() => undefined);
      await cleanup();
    }
  }

  describe('lifecycle', () => {
    it('create with defaults, get, running', async () => {
      await withStore(async (store) => {
        const before = Date.now();
        const exp = await store.create({ model: 'ranker', arms: ARMS }, 'alice');
        assert.match(exp.id, /^exp_[0-9a-z]{10}$/);
        assert.equal(exp.model, 'ranker');
        assert.equal(exp.description, '');
        assert.equal(exp.status, 'running');
        assert.deepEqual(exp.arms, ARMS);
        assert.equal(exp.control, 'control');
        assert.deepEqual(exp.guardrails, { minRequests: 100, autoRollback: true });
        assert.equal(exp.createdBy, 'alice');
        assert.ok(Date.parse(exp.createdAt) >= before - 1 && Date.parse(exp.createdAt) <= Date.now());
        assert.equal(exp.stoppedAt, null);
        assert.equal(exp.stopReason, null);
        assert.deepEqual(await store.get(exp.id), exp);
        assert.deepEqual(await store.running(), [exp]);
        await rejectsWith(store.get('nope'), 'SY_ERR_EXPERIMENT_NOT_FOUND');
      });
    });

    it('create with id, description, control and guardrails', async () => {
      await withStore(async (store) => {
        const exp = await store.create(
          {
            id: 'checkout-v2.test_1',
            model: 'ranker',
            description: 'new ranking',
            arms: [...ARMS, { name: 'b', target: 'staging', weight: 0 }],
            control: 'candidate',
            guardrails: { maxErrorRate: 0.05, maxP99Ms: 250, minRequests: 20, autoRollback: false },
          },
          'bob',
        );
        assert.equal(exp.id, 'checkout-v2.test_1');
        assert.equal(exp.control, 'candidate');
        assert.deepEqual(exp.guardrails, { maxErrorRate: 0.05, maxP99Ms: 250, minRequests: 20, autoRollback: false });
        assert.deepEqual(await store.get(exp.id), exp);
        const partial = await store.create({ model: 'other', arms: ARMS, guardrails: { maxErrorRate: 0 } }, 'bob');
        assert.deepEqual(partial.guardrails, { maxErrorRate: 0, minRequests: 100, autoRollback: true });
      });
    });

    it('409: the id exists, or the model already runs an experiment', async () => {
      await withStore(async (store) => {
        const exp = await store.create({ id: 'e1', model: 'ranker', arms: ARMS }, 'alice');
        await rejectsWith(store.create({ id: 'e1', model: 'other', arms: ARMS }, 'alice'), 'SY_ERR_EXPERIMENT_CONFLICT');
        await rejectsWith(store.create({ id: 'e2', model: 'ranker', arms: ARMS }, 'alice'), 'SY_ERR_EXPERIMENT_CONFLICT');
        // Concurrent creates for one model: exactly one wins.
        const results = await Promise.allSettled(['c1', 'c2', 'c3', 'c4'].map((id) => store.create({ id, model: 'busy', arms: ARMS }, 'alice')));
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
        for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as { code: string }).code, 'SY_ERR_EXPERIMENT_CONFLICT');
        // Once stopped, the model may run a new one (the old id stays taken).
        await store.stop(exp.id, 'stopped', 'done');
        assert.equal((await store.create({ id: 'e2', model: 'ranker', arms: ARMS }, 'alice')).status, 'running');
        await rejectsWith(store.create({ id: 'e1', model: 'fresh', arms: ARMS }, 'alice'), 'SY_ERR_EXPERIMENT_CONFLICT');
      });
    });

    it('400 on invalid input', async () => {
      await withStore(async (store) => {
        const bad: unknown[] = [
          { id: '-x', model: 'm', arms: ARMS },
          { id: 'a'.repeat(65), model: 'm', arms: ARMS },
          { id: 'a b', model: 'm', arms: ARMS },
          { model: 'bad model', arms: ARMS },
          { model: 'm', arms: [ARMS[0]] },
          { model: 'm', arms: [] },
          { model: 'm', arms: 'x' },
          { model: 'm', arms: [ARMS[0], ARMS[0]] },
          {
            model: 'm',
            arms: [
              { name: 'a', target: '1', weight: -1 },
              { name: 'b', target: '1', weight: 1 },
            ],
          },
          {
            model: 'm',
            arms: [
              { name: 'a', target: '1', weight: 0 },
              { name: 'b', target: '1', weight: 0 },
            ],
          },
          {
            model: 'm',
            arms: [
              { name: 'a', target: '1', weight: Number.NaN },
              { name: 'b', target: '1', weight: 1 },
            ],
          },
          {
            model: 'm',
            arms: [
              { name: 'a', target: '', weight: 1 },
              { name: 'b', target: '1', weight: 1 },
            ],
          },
          {
            model: 'm',
            arms: [
              { name: 'a/b', target: '1', weight: 1 },
              { name: 'b', target: '1', weight: 1 },
            ],
          },
          { model: 'm', arms: ARMS, control: 'nobody' },
          { model: 'm', arms: ARMS, description: 7 },
          { model: 'm', arms: ARMS, guardrails: { maxErrorRate: 1.5 } },
          { model: 'm', arms: ARMS, guardrails: { maxErrorRate: -0.1 } },
          { model: 'm', arms: ARMS, guardrails: { maxP99Ms: 0 } },
          { model: 'm', arms: ARMS, guardrails: { minRequests: 0 } },
          { model: 'm', arms: ARMS, guardrails: { minRequests: 2.5 } },
          { model: 'm', arms: ARMS, guardrails: { autoRollback: 'yes' } },
          { model: 'm', arms: ARMS, guardrails: { maxErrorrate: 0.1 } },
        ];
        for (const input of bad) {
          await rejectsWith(store.create(input as Parameters<ExperimentStore['create']>[0], 'alice'), 'SY_ERR_BAD_REQUEST');
        }
        assert.deepEqual(await store.list(), []);
        await rejectsWith(store.list({ status: 'bogus' as 'running' }), 'SY_ERR_BAD_REQUEST');
      });
    });

    it('list: newest first, filtered by model and status', async () => {
      await withStore(async (store) => {
        const a = await store.create({ id: 'a', model: 'm1', arms: ARMS }, 'alice');
        await sleep(3);
        const b = await store.create({ id: 'b', model: 'm2', arms: ARMS }, 'alice');
        await sleep(3);
        const stoppedA = await store.stop(a.id, 'stopped', null);
        const c = await store.create({ id: 'c', model: 'm1', arms: ARMS }, 'alice');
        assert.deepEqual(
          (await store.list()).map((e) => e.id),
          ['c', 'b', 'a'],
        );
        assert.deepEqual(
          (await store.list({ model: 'm1' })).map((e) => e.id),
          ['c', 'a'],
        );
        assert.deepEqual(await store.list({ status: 'stopped' }), [stoppedA]);
        assert.deepEqual(await store.running(), [c, b]);
        assert.deepEqual(await store.list({ model: 'm1', status: 'running' }), [c]);
        assert.deepEqual(await store.list({ model: 'none' }), []);
      });
    });

    it('stop: running → stopped | rolled_back once; 404 and 409', async () => {
      await withStore(async (store) => {
        const a = await store.create({ id: 'a', model: 'm1', arms: ARMS }, 'alice');
        const before = Date.now();
        const s = await store.stop(a.id, 'rolled_back', 'guardrail breached');
        assert.equal(s.status, 'rolled_back');
        assert.equal(s.stopReason, 'guardrail breached');
        assert.ok(s.stoppedAt !== null && Date.parse(s.stoppedAt) >= before - 1);
        assert.deepEqual(await store.get(a.id), s);
        await rejectsWith(store.stop(a.id, 'stopped', null), 'SY_ERR_EXPERIMENT_CONFLICT');
        await rejectsWith(store.stop('nope', 'stopped', null), 'SY_ERR_EXPERIMENT_NOT_FOUND');
        const b = await store.create({ id: 'b', model: 'm1', arms: ARMS }, 'alice');
        await rejectsWith(store.stop(b.id, 'running' as 'stopped', null), 'SY_ERR_BAD_REQUEST');
        const sb = await store.stop(b.id, 'stopped', null);
        assert.equal(sb.status, 'stopped');
        assert.equal(sb.stopReason, null);
        // Concurrent stops: one wins.
        const c = await store.create({ id: 'c', model: 'm1', arms: ARMS }, 'alice');
        const results = await Promise.allSettled([store.stop(c.id, 'stopped', 'x'), store.stop(c.id, 'rolled_back', 'y')]);
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      });
    });

    it('delete cascades to exposures, traffic and events; 404 after', async () => {
      await withStore(async (store, d) => {
        const a = await store.create({ id: 'a', model: 'm1', arms: ARMS }, 'alice');
        const keep = await store.create({ id: 'keep', model: 'm2', arms: ARMS }, 'alice');
        for (const id of [a.id, keep.id]) {
          store.expose(id, 'control', 'u1');
          store.expose(id, 'candidate', null);
          await store.addEvents(id, [{ unit: 'u1', metric: 'click', value: 1 }]);
        }
        await store.flush();
        assert.equal(await count(d, 'experiment_exposures', a.id), 1);
        await store.delete(a.id);
        await rejectsWith(store.get(a.id), 'SY_ERR_EXPERIMENT_NOT_FOUND');
        await rejectsWith(store.delete(a.id), 'SY_ERR_EXPERIMENT_NOT_FOUND');
        for (const [t, n] of [
          ['experiment_exposures', 1],
          ['experiment_traffic', 2],
          ['experiment_events', 1],
        ] as const) {
          assert.equal(await count(d, t, a.id), 0, t);
          assert.equal(await count(d, t, keep.id), n, t);
        }
        // Re-created under the same id: starts clean, and its units are exposed again.
        await store.stop(keep.id, 'stopped', null);
        await store.create({ id: 'a', model: 'm1', arms: ARMS }, 'alice');
        store.expose('a', 'candidate', 'u1');
        await store.flush();
        assert.deepEqual([...(await exposureArms(d, 'a'))], [['u1', 'candidate']]);
      });
    });
  });

  describe('exposures and traffic', () => {
    it('a unit stays in the arm it was first exposed to: pending, across flushes and across stores', async () => {
      await withStore(async (store, d) => {
        const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
        store.expose(exp.id, 'control', 'u1');
        store.expose(exp.id, 'candidate', 'u1'); // pending: first wins
        store.expose(exp.id, 'candidate', 'u2');
        await store.flush();
        assert.deepEqual(Object.fromEntries(await exposureArms(d, exp.id)), { u1: 'control', u2: 'candidate' });
        store.expose(exp.id, 'candidate', 'u1'); // recently written: skipped
        await store.flush();
        // Another replica on the same database that never saw u1 or u2.
        const other = new ExperimentStore(d, { flushMs: MANUAL });
        other.expose(exp.id, 'candidate', 'u1');
        other.expose(exp.id, 'control', 'u2');
        other.expose(exp.id, 'control', 'u3');
        await other.close();
        assert.deepEqual(Object.fromEntries(await exposureArms(d, exp.id)), { u1: 'control', u2: 'candidate', u3: 'control' });
        const first = await d.db.selectFrom('experiment_exposures').select('first_at').where('unit', '=', 'u1').executeTakeFirstOrThrow();
        assert.ok(Math.abs(Number(first.first_at) - Date.now()) < 60_000);
        // Every routed request is counted, by its arm.
        assert.deepEqual(await trafficOf(d, exp.id), { 'control/hash': 3, 'candidate/hash': 4 });
      });
    });

    it('random traffic is counted apart and records no exposure; counts add up across flushes and stores', async () => {
      await withStore(async (store, d) => {
        const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
        for (let i = 0; i < 5; i++) store.expose(exp.id, 'control', null);
        for (let i = 0; i < 3; i++) store.expose(exp.id, 'candidate', null);
        store.expose(exp.id, 'candidate', 'u1');
        await store.flush();
        for (let i = 0; i < 2; i++) store.expose(exp.id, 'control', null);
        const other = new ExperimentStore(d, { flushMs: MANUAL });
        other.expose(exp.id, 'control', null);
        await Promise.all([store.flush(), other.flush()]);
        await other.close();
        assert.deepEqual(await trafficOf(d, exp.id), { 'control/random': 8, 'candidate/random': 3, 'candidate/hash': 1 });
        assert.equal(await count(d, 'experiment_exposures', exp.id), 1);
        const report = await store.report(exp.id);
        assert.deepEqual(
          report.arms.map((a) => [a.name, a.requests, a.exposures]),
          [
            ['control', { hash: 0, random: 8 }, 0],
            ['candidate', { hash: 1, random: 3 }, 1],
          ],
        );
      });
    });

    it('a hot unit is not re-inserted every flush', async () => {
      // maxPendingUnits 2: if u1 went back into the pending map, u4 would be dropped.
      await withStore(
        async (store, d) => {
          const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
          store.expose(exp.id, 'control', 'u1');
          store.expose(exp.id, 'control', 'u2');
          await store.flush();
          for (let i = 0; i < 100; i++) store.expose(exp.id, 'control', 'u1');
          store.expose(exp.id, 'control', 'u3');
          store.expose(exp.id, 'control', 'u4');
          assert.equal(store.droppedExposures, 0);
          await store.flush();
          assert.equal(await count(d, 'experiment_exposures', exp.id), 4);
          assert.deepEqual(await trafficOf(d, exp.id), { 'control/hash': 104 });
        },
        { maxPendingUnits: 2 },
      );
    });

    it('bounded: beyond maxPendingUnits new exposures are dropped and counted, traffic is not', async () => {
      await withStore(
        async (store, d) => {
          const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
          for (let i = 0; i < 15; i++) store.expose(exp.id, 'control', `u${i}`);
          assert.equal(store.droppedExposures, 5);
          await store.flush();
          assert.equal(await count(d, 'experiment_exposures', exp.id), 10);
          assert.deepEqual(await trafficOf(d, exp.id), { 'control/hash': 15 });
          store.expose(exp.id, 'control', 'u14');
          await store.flush();
          assert.equal(await count(d, 'experiment_exposures', exp.id), 11);
        },
        { maxPendingUnits: 10 },
      );
    });

    it('units that cannot carry outcome events (empty, over 256 characters) count as traffic only', async () => {
      await withStore(async (store, d) => {
        const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
        store.expose(exp.id, 'control', '');
        store.expose(exp.id, 'control', 'x'.repeat(257));
        store.expose(exp.id, 'control', 'x'.repeat(256));
        await store.flush();
        assert.deepEqual([...(await exposureArms(d, exp.id)).keys()], ['x'.repeat(256)]);
        assert.deepEqual(await trafficOf(d, exp.id), { 'control/hash': 3 });
      });
    });

    it('a failed flush keeps the data, logs once per 10 s and the next flush writes it', async () => {
      const logged: unknown[] = [];
      await withStore(
        async (store, d) => {
          const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
          store.expose(exp.id, 'control', 'u1');
          store.expose(exp.id, 'candidate', null);
          await sql`ALTER TABLE experiment_traffic RENAME TO experiment_traffic_away`.execute(d.db);
          await assert.rejects(store.flush());
          store.expose(exp.id, 'candidate', 'u1'); // still pending (in control): first arm wins
          store.expose(exp.id, 'candidate', 'u2');
          store.expose(exp.id, 'candidate', null);
          await assert.rejects(store.flush());
          assert.equal(logged.length, 1);
          await sql`ALTER TABLE experiment_traffic_away RENAME TO experiment_traffic`.execute(d.db);
          await store.flush();
          assert.deepEqual(Object.fromEntries(await exposureArms(d, exp.id)), { u1: 'control', u2: 'candidate' });
          assert.deepEqual(await trafficOf(d, exp.id), { 'control/hash': 1, 'candidate/hash': 2, 'candidate/random': 2 });
        },
        { logger: silentLogger(logged) },
      );
    });

    it('pending data of an experiment deleted elsewhere is skipped, not retried forever', async () => {
      await withStore(async (store, d) => {
        const gone = await store.create({ id: 'gone', model: 'm1', arms: ARMS }, 'alice');
        const kept = await store.create({ id: 'kept', model: 'm2', arms: ARMS }, 'alice');
        const other = new ExperimentStore(d, { flushMs: MANUAL });
        other.expose(gone.id, 'control', 'u1');
        other.expose(kept.id, 'control', 'u1');
        other.expose('never-existed', 'control', 'u1');
        await store.delete(gone.id);
        await other.close();
        assert.equal(await count(d, 'experiment_exposures', kept.id), 1);
        assert.equal(await count(d, 'experiment_exposures', gone.id), 0);
      });
    });

    it('the timer flushes', async () => {
      await withStore(
        async (store, d) => {
          const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
          store.expose(exp.id, 'control', 'u1');
          while ((await count(d, 'experiment_exposures', exp.id)) === 0) await sleep(10); // no deadline: the test runner's timeout bounds a hang
          assert.equal(await count(d, 'experiment_exposures', exp.id), 1);
        },
        { flushMs: 20 },
      );
    });
  });

  describe('outcome events', () => {
    it('stores valid events and reports how many', async () => {
      await withStore(async (store, d) => {
        const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
        assert.equal(await store.addEvents(exp.id, []), 0);
        const n = await store.addEvents(exp.id, [
          { unit: 'u1', metric: 'click', value: 1 },
          { unit: 'u'.repeat(256), metric: 'revenue.usd:net-2', value: -12.5, at: '2025-03-04T10:11:12.345Z' },
          { unit: 'u2', metric: 'latency', value: 0.25, at: '2025-03-04T12:00:00+02:00' },
        ]);
        assert.equal(n, 3);
        const rows = await d.db
          .selectFrom('experiment_events')
          .select(['unit', 'metric', 'value', 'at'])
          .where('experiment', '=', exp.id)
          .orderBy('id')
          .execute();
        assert.deepEqual(
          rows.map((r) => [r.metric, Number(r.value)]),
          [
            ['click', 1],
            ['revenue.usd:net-2', -12.5],
            ['latency', 0.25],
          ],
        );
        assert.ok(Math.abs(Number(rows[0]?.at) - Date.now()) < 60_000);
        assert.equal(Number(rows[1]?.at), Date.UTC(2025, 2, 4, 10, 11, 12, 345));
        assert.equal(Number(rows[2]?.at), Date.UTC(2025, 2, 4, 10));
        const batch: OutcomeEvent[] = Array.from({ length: 1000 }, (_, i) => ({ unit: `u${i}`, metric: 'm', value: i }));
        assert.equal(await store.addEvents(exp.id, batch), 1000);
        assert.equal(await count(d, 'experiment_events', exp.id), 1003);
      });
    });

    it('400 on invalid events (nothing stored), 404 for an unknown experiment', async () => {
      await withStore(async (store, d) => {
        const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
        const ok = { unit: 'u1', metric: 'click', value: 1 };
        const bad: unknown[] = [
          { ...ok, unit: '' },
          { ...ok, unit: 'u'.repeat(257) },
          { ...ok, unit: 7 },
          { ...ok, metric: '' },
          { ...ok, metric: '_x' },
          { ...ok, metric: 'a b' },
          { ...ok, metric: 'm'.repeat(65) },
          { ...ok, value: Number.NaN },
          { ...ok, value: Number.POSITIVE_INFINITY },
          { ...ok, value: '1' },
          { ...ok, at: 'yesterday' },
          { ...ok, at: '2025-03-04' },
          { ...ok, at: '2025-13-04T00:00:00Z' },
          { ...ok, at: 1741046400000 },
          null,
        ];
        for (const e of bad) await rejectsWith(store.addEvents(exp.id, [ok, e as OutcomeEvent]), 'SY_ERR_BAD_REQUEST');
        await rejectsWith(
          store.addEvents(
            exp.id,
            Array.from({ length: 1001 }, () => ok),
          ),
          'SY_ERR_BAD_REQUEST',
        );
        assert.equal(await count(d, 'experiment_events', exp.id), 0);
        await rejectsWith(store.addEvents('nope', [ok]), 'SY_ERR_EXPERIMENT_NOT_FOUND');
        await rejectsWith(store.addEvents('nope', []), 'SY_ERR_EXPERIMENT_NOT_FOUND');
      });
    });
  });

  describe('report', () => {
    it('404 for an unknown experiment; an empty experiment reports zeros', async () => {
      await withStore(async (store) => {
        await rejectsWith(store.report('nope'), 'SY_ERR_EXPERIMENT_NOT_FOUND');
        const exp = await store.create(
          {
            model: 'm',
            arms: [
              { name: 'a', target: '1', weight: 3 },
              { name: 'b', target: '2', weight: 1 },
            ],
          },
          'alice',
        );
        const before = Date.now();
        const r = await store.report(exp.id);
        assert.deepEqual(r.experiment, exp);
        assert.ok(Date.parse(r.generatedAt) >= before - 1);
        assert.deepEqual(r.arms, [
          { name: 'a', target: '1', weight: 0.75, control: true, exposures: 0, requests: { hash: 0, random: 0 }, metrics: {} },
          { name: 'b', target: '2', weight: 0.25, control: false, exposures: 0, requests: { hash: 0, random: 0 }, metrics: {} },
        ]);
        assert.deepEqual(r.comparisons, []);
        assert.equal(r.srm, null);
        assert.equal(r.unattributedEvents, 0);
      });
    });

    it('timeline: cumulative results at each boundary (exposures and events up to it); the last point is the report', async () => {
      await withStore(async (store) => {
        const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
        for (const [unit, arm] of [
          ['u1', 'control'],
          ['u2', 'control'],
          ['u3', 'candidate'],
          ['u4', 'candidate'],
        ] as const)
          store.expose(exp.id, arm, unit);
        const t0 = Date.parse(exp.createdAt);
        const at = (minutes: number): string => new Date(t0 + minutes * 60_000).toISOString();
        await store.addEvents(exp.id, [
          { unit: 'u1', metric: 'click', value: 1, at: at(30) },
          { unit: 'u3', metric: 'click', value: 1, at: at(90) },
          { unit: 'u4', metric: 'click', value: 2, at: at(90) },
        ]);
        const t = await store.timeline(exp.id, { from: t0, until: t0 + 7_200_000, points: 2 });
        assert.equal(t.stepMs, 3_600_000);
        assert.deepEqual(
          t.points.map((p) => p.at),
          [at(60), at(120)],
        );
        const [h1, h2] = t.points;
        assert.deepEqual(
          h1!.arms.map((a) => [a.name, a.exposures, a.metrics['click']?.units, a.metrics['click']?.conversionRate]),
          [
            ['control', 2, 1, 0.5],
            ['candidate', 2, 0, 0],
          ],
        );
        assert.deepEqual(
          h2!.arms.map((a) => [a.name, a.metrics['click']?.units, a.metrics['click']?.mean]),
          [
            ['control', 1, 1],
            ['candidate', 2, 1.5],
          ],
        );
        assert.equal(h1!.comparisons[0]?.conversion?.rateB, 0);
        assert.equal(h2!.comparisons[0]?.conversion?.rateB, 1);
        // Before the exposures: nothing yet.
        const early = await store.timeline(exp.id, { from: t0 - 7_200_000, until: t0 - 3_600_000, points: 1 });
        assert.deepEqual(
          early.points[0]!.arms.map((a) => a.exposures),
          [0, 0],
        );
        // Up to the end of the data, the last point says what the report says.
        const r = await store.report(exp.id);
        const last = (await store.timeline(exp.id, { until: t0 + 7_200_000 })).points.at(-1)!;
        assert.deepEqual(
          last.arms,
          r.arms.map(({ requests: _, ...a }) => a),
        );
        assert.deepEqual(last.comparisons, r.comparisons);
        assert.deepEqual(last.srm, r.srm);
        await rejectsWith(store.timeline(exp.id, { points: 0 }), 'SY_ERR_BAD_REQUEST');
        await rejectsWith(store.timeline(exp.id, { from: t0, until: t0 }), 'SY_ERR_BAD_REQUEST');
        await rejectsWith(store.timeline('nope'), 'SY_ERR_EXPERIMENT_NOT_FOUND');
      });
    });

    it('numbers match an independent computation over seeded synthetic data', async () => {
      await withStore(async (store) => {
        const arms: ExperimentArm[] = [
          { name: 'control', target: '1', weight: 1 },
          { name: 'treat', target: '2', weight: 1 },
          { name: 'alt', target: '3', weight: 2 },
        ];
        const exp = await store.create({ id: 'synthetic', model: 'm', arms }, 'alice');
        const rnd = prng(20250304);
        // Conversion probability (percent) per arm and metric.
        const rates: Record<string, Record<string, number>> = {
          control: { purchase: 20, click: 50 },
          treat: { purchase: 28, click: 55 },
          alt: { purchase: 22, click: 50 },
        };
        const names = arms.map((a) => a.name);
        const armOf = new Map<string, string>();
        const requests = new Map(names.map((n) => [n, { hash: 0, random: 0 }]));
        const perUnit = new Map<string, Map<string, number>>(); // metric → unit → summed value
        const events: OutcomeEvent[] = [];
        const emit = (unit: string, metric: string, value: number): void => {
          events.push({ unit, metric, value, at: '2025-03-04T10:00:00Z' });
          if (!armOf.has(unit)) return;
          let m = perUnit.get(metric);
          if (m === undefined) perUnit.set(metric, (m = new Map()));
          m.set(unit, (m.get(unit) ?? 0) + value);
        };
        const expose = (arm: string, unit: string | null): void => {
          store.expose(exp.id, arm, unit);
          const r = requests.get(arm) as { hash: number; random: number };
          if (unit === null) r.random += 1;
          else r.hash += 1;
        };
        for (let i = 0; i < 1200; i++) {
          const unit = `user-${i}`;
          const w = rnd(4);
          const arm = w === 0 ? 'control' : w === 1 ? 'treat' : 'alt';
          armOf.set(unit, arm);
          const times = 1 + rnd(3);
          for (let k = 0; k < times; k++) expose(arm, unit);
          // Every 10th unit is later routed to another arm too (e.g. after a weight change): it stays in its first arm.
          if (i % 10 === 0) expose(names[(names.indexOf(arm) + 1) % 3] as string, unit);
          const rate = rates[arm] as Record<string, number>;
          if (rnd(100) < (rate['purchase'] as number)) {
            const n = 1 + rnd(3);
            for (let k = 0; k < n; k++) emit(unit, 'purchase', (5 + rnd(200)) / 4);
          }
          if (rnd(100) < (rate['click'] as number)) {
            const n = 1 + rnd(2);
            for (let k = 0; k < n; k++) emit(unit, 'click', 1);
          }
          // A metric only a few treatment units have (control has no converting units).
          if (arm === 'treat' && rnd(40) === 0) emit(unit, 'refund', -(1 + rnd(20)));
        }
        for (const arm of names) for (let k = 0; k < 10 + rnd(50); k++) expose(arm, null);
        // Outcomes of units never exposed.
        let ghosts = 0;
        for (let i = 0; i < 25; i++) {
          const n = 1 + rnd(2);
          for (let k = 0; k < n; k++) emit(`ghost-${i}`, rnd(2) === 0 ? 'purchase' : 'click', 1 + rnd(5));
          ghosts += n;
        }
        for (let i = 0; i < events.length; i += 1000) assert.equal(await store.addEvents(exp.id, events.slice(i, i + 1000)), Math.min(1000, events.length - i));

        const report = await store.report(exp.id);

        // Independent expectations from the generated data.
        const exposures = new Map(names.map((n) => [n, [...armOf.values()].filter((a) => a === n).length]));
        const metrics = [...perUnit.keys()].sort();
        assert.deepEqual(metrics, ['click', 'purchase', 'refund']);
        const ref = (arm: string, metric: string): RefMetric =>
          refMetric([...(perUnit.get(metric) as Map<string, number>)].filter(([u]) => armOf.get(u) === arm).map(([, v]) => v));

        assert.equal(report.experiment.id, exp.id);
        assert.deepEqual(
          report.arms.map((a) => a.name),
          names,
        );
        for (const a of report.arms) {
          assert.equal(a.control, a.name === 'control');
          close(a.weight, a.name === 'alt' ? 0.5 : 0.25, `${a.name}.weight`);
          assert.equal(a.exposures, exposures.get(a.name), `${a.name}.exposures`);
          assert.deepEqual(a.requests, requests.get(a.name), `${a.name}.requests`);
          assert.deepEqual(Object.keys(a.metrics).sort(), metrics);
          for (const m of metrics) {
            const got = a.metrics[m];
            const want = ref(a.name, m);
            assert.ok(got !== undefined);
            assert.equal(got.units, want.units, `${a.name}.${m}.units`);
            close(got.conversionRate, want.units / (exposures.get(a.name) as number), `${a.name}.${m}.conversionRate`);
            close(got.sum, want.sum, `${a.name}.${m}.sum`);
            if (want.mean === null) assert.equal(got.mean, null);
            else close(got.mean, want.mean, `${a.name}.${m}.mean`);
            if (want.stddev === null) assert.equal(got.stddev, null);
            else close(got.stddev, want.stddev, `${a.name}.${m}.stddev`);
          }
        }
        assert.equal(report.arms.find((a) => a.name === 'control')?.metrics['refund']?.units, 0);

        assert.deepEqual(
          report.comparisons.map((c) => `${c.arm}/${c.metric}`),
          ['treat/click', 'treat/purchase', 'treat/refund', 'alt/click', 'alt/purchase', 'alt/refund'],
        );
        const cExp = exposures.get('control') as number;
        for (const c of report.comparisons) {
          const base = ref('control', c.metric);
          const arm = ref(c.arm, c.metric);
          closeObj(c.conversion, twoProportionZTest(base.units, cExp, arm.units, exposures.get(c.arm) as number), `${c.arm}/${c.metric}.conversion`);
          closeObj(c.mean, welchTTest(momentsOf(base.values), momentsOf(arm.values)), `${c.arm}/${c.metric}.mean`);
        }
        // The synthetic effect is visible: treatment converts better on purchase.
        const tp = report.comparisons.find((c) => c.arm === 'treat' && c.metric === 'purchase');
        assert.ok(tp?.conversion && tp.conversion.diff > 0);
        assert.equal(report.comparisons.find((c) => c.metric === 'refund')?.mean, null);

        closeObj(
          report.srm,
          sampleRatioMismatch(
            names.map((n) => exposures.get(n) as number),
            [1, 1, 2],
          ),
          'srm',
        );
        assert.equal(report.srm?.mismatch, false);
        assert.equal(report.unattributedEvents, ghosts);
      });
    });

    it('SRM: flags a 60/40 split of 10k exposures against 50/50 weights, not a fair split', async () => {
      await withStore(async (store) => {
        const skewed = await store.create({ id: 'skewed', model: 'm1', arms: ARMS }, 'alice');
        const fair = await store.create({ id: 'fair', model: 'm2', arms: ARMS }, 'alice');
        const rnd = prng(99);
        let fairControl = 0;
        for (let i = 0; i < 10_000; i++) {
          store.expose(skewed.id, i < 6000 ? 'control' : 'candidate', `u${i}`);
          const toControl = rnd(2) === 0;
          if (toControl) fairControl += 1;
          store.expose(fair.id, toControl ? 'control' : 'candidate', `u${i}`);
        }
        const s = await store.report(skewed.id);
        assert.deepEqual(
          s.arms.map((a) => a.exposures),
          [6000, 4000],
        );
        assert.ok(s.srm);
        close(s.srm.chiSquare, 400, 'chiSquare');
        assert.equal(s.srm.df, 1);
        assert.ok(s.srm.pValue < 1e-15);
        assert.equal(s.srm.mismatch, true);
        const f = await store.report(fair.id);
        assert.deepEqual(
          f.arms.map((a) => a.exposures),
          [fairControl, 10_000 - fairControl],
        );
        closeObj(f.srm, sampleRatioMismatch([fairControl, 10_000 - fairControl], [1, 1]), 'fair srm');
        assert.equal(f.srm?.mismatch, false);
      });
    });

    it('counts events of units never exposed as unattributed, and flushes pending exposures first', async () => {
      await withStore(async (store) => {
        const exp = await store.create({ model: 'm', arms: ARMS }, 'alice');
        store.expose(exp.id, 'control', 'seen');
        await store.addEvents(exp.id, [
          { unit: 'seen', metric: 'click', value: 1 },
          { unit: 'seen', metric: 'click', value: 2 },
          { unit: 'unseen', metric: 'click', value: 1 },
          { unit: 'unseen', metric: 'buy', value: 1 },
          { unit: 'other', metric: 'click', value: 1 },
        ]);
        const r: ExperimentReport = await store.report(exp.id);
        assert.equal(r.unattributedEvents, 3);
        // Only attributed events make metrics.
        assert.deepEqual(r.arms[0]?.metrics, { click: { units: 1, conversionRate: 1, mean: 3, stddev: null, sum: 3 } });
        assert.deepEqual(r.arms[1]?.metrics, { click: { units: 0, conversionRate: null, mean: null, stddev: null, sum: 0 } });
        assert.deepEqual(r.comparisons, [{ arm: 'candidate', metric: 'click', conversion: null, mean: null }]);
        closeObj(r.srm, sampleRatioMismatch([1, 0], [1, 1]), 'srm');
      });
    });
  });
}

describe('experiment store on SQLite', () => {
  suite(openSqlite);
});

const pgDown = await postgresReachable();
const inCi = process.env['CI'] === 'true';
if (pgDown !== null && inCi) {
  describe('experiment store on Postgres', () => {
    it('needs Postgres on 127.0.0.1:5432 in CI', () => assert.fail(`Postgres is unreachable at ${PG_BASE}: ${pgDown}`));
  });
} else {
  describe(
    'experiment store on Postgres',
    { skip: pgDown === null ? false : `Postgres unreachable at ${PG_BASE} (${pgDown}); set CI=true to make this fail` },
    () => {
      suite(openPostgres);
    },
  );
}
