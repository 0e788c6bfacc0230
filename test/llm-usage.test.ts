/**
 * LLM usage and spend accounting against real SQLite (temp file) and real Postgres (a fresh schema per test):
 * exact sums per (tenant, model, hour) in the table and through query, day and total grouping, filters,
 * unflushed deltas in reads, a failed flush kept and written once, errors and bad amounts, Prometheus counters;
 * and `GET /api/v1/llm/usage` on a bare Fastify app (a tenant key sees only its own tenant).
 * Postgres must be reachable in CI (CI=true); elsewhere its suite is skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { sql } from 'kysely';
import { Counter, Registry } from 'prom-client';
import { llmAdminRoutes } from '../src/api/admin/llm.js';
import { installErrorShape } from '../src/api/reply-error.js';
import { isSwitchyardError } from '../src/errors.js';
import { LlmUsageMeter, UsageMeter, type LlmUsageQuery, type LlmUsageRecord, type LlmUsageRow } from '../src/gateway/usage.js';
import { openDatabase, type Database, type Dialect } from '../src/storage/index.js';
import type { Principal } from '../src/gateway/types.js';
import { describeNeeding, PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;
/** 2025-06-10T00:00:00Z: a UTC day start. */
const T0 = Date.UTC(2025, 5, 10);
/** Only explicit flushes write (the timer is unref'd and never fires in these tests). */
const MANUAL = 3_600_000;

type Timed = LlmUsageRecord & { at: number };

/** A fresh store of `dialect`, closed and removed by the returned `drop`. */
async function freshStore(dialect: Dialect): Promise<{ d: Database; drop(): Promise<void> }> {
  if (dialect === 'postgres') {
    const schema = pgSchema();
    const d = await openDatabase(schema.url);
    return {
      d,
      drop: async () => {
        await d.close();
        await schema.drop();
      },
    };
  }
  const dir = await mkdtemp(join(tmpdir(), 'sy-llm-usage-'));
  const d = await openDatabase(`sqlite:${join(dir, 'meta.db')}`);
  return {
    d,
    drop: async () => {
      await d.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A deterministic workload: 3 tenants ('' included), 3 models, over `hours` hours from `start`. Costs are
 * multiples of 1/1024, so every sum is exact in doubles whatever the order.
 */
function workload(n: number, start: number, hours: number, seed: number): Timed[] {
  let s = seed >>> 0;
  const rnd = (m: number): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return Math.floor((s / 4294967296) * m);
  };
  return Array.from({ length: n }, () => ({
    tenant: ['', 'acme', 'beta'][rnd(3)]!,
    model: ['gpt-4o-mini', 'tiny-chat', 'llama-3'][rnd(3)]!,
    promptTokens: rnd(2000),
    completionTokens: rnd(500),
    cost: rnd(4096) / 1024,
    ok: rnd(9) !== 0,
    at: start + rnd(hours) * HOUR + rnd(HOUR),
  }));
}

/** Independent reference: sums per (tenant, model, bucket), in the documented order. */
function expected(recs: readonly Timed[], q: LlmUsageQuery = {}): LlmUsageRow[] {
  const groupBy = q.groupBy ?? 'hour';
  const out = new Map<string, LlmUsageRow>();
  for (const r of recs) {
    const hour = r.at - (r.at % HOUR);
    if ((q.tenant !== undefined && r.tenant !== q.tenant) || (q.model !== undefined && r.model !== q.model)) continue;
    if ((q.from !== undefined && hour < q.from) || (q.to !== undefined && hour >= q.to)) continue;
    const bucket = groupBy === 'day' ? hour - (hour % DAY) : hour;
    const k = `${r.tenant}|${r.model}|${groupBy === 'total' ? '' : bucket}`;
    const row = out.get(k) ?? { tenant: r.tenant, model: r.model, period: bucket, requests: 0, errors: 0, promptTokens: 0, completionTokens: 0, cost: 0 };
    out.set(k, row);
    row.period = Math.min(row.period, bucket);
    row.requests += 1;
    if (!r.ok) row.errors += 1;
    row.promptTokens += r.promptTokens;
    row.completionTokens += r.completionTokens;
    row.cost += r.cost;
  }
  return [...out.values()].sort((a, b) => a.period - b.period || a.tenant.localeCompare(b.tenant) || a.model.localeCompare(b.model));
}

/** Records `recs`, each at its own time. */
function feed(meter: LlmUsageMeter, clock: { t: number }, recs: readonly Timed[]): void {
  for (const { at, ...r } of recs) {
    clock.t = at;
    meter.record(r);
  }
}

async function tableRows(d: Database): Promise<LlmUsageRow[]> {
  const rows = await d.db.selectFrom('llm_usage').selectAll().execute();
  return rows
    .map((r) => ({
      tenant: r.tenant,
      model: r.model,
      period: Number(r.period),
      requests: Number(r.requests),
      errors: Number(r.errors),
      promptTokens: Number(r.prompt_tokens),
      completionTokens: Number(r.completion_tokens),
      cost: Number(r.cost),
    }))
    .sort((a, b) => a.period - b.period || a.tenant.localeCompare(b.tenant) || a.model.localeCompare(b.model));
}

/** A counter's value for `labels` (0 when never incremented). */
async function counterValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = registry.getSingleMetric(name);
  assert.ok(m instanceof Counter, `${name} is registered`);
  const { values } = await m.get();
  const hit = values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x));
  return hit?.value ?? 0;
}

function meterSuite(dialect: Dialect): void {
  const withMeter = async (fn: (meter: LlmUsageMeter, clock: { t: number }, d: Database) => Promise<void>, metrics?: Registry): Promise<void> => {
    const { d, drop } = await freshStore(dialect);
    const clock = { t: T0 };
    const meter = new LlmUsageMeter({ db: d.db, flushIntervalMs: MANUAL, now: () => clock.t, ...(metrics ? { metrics } : {}) });
    try {
      await fn(meter, clock, d);
    } finally {
      await meter.close().catch(() => undefined);
      await drop();
    }
  };

  it('sums exactly per (tenant, model, hour): in the table after a flush and through query', () =>
    withMeter(async (meter, clock, d) => {
      assert.equal(d.dialect, dialect);
      const recs = workload(3000, T0 + 20 * HOUR, 8, 1);
      feed(meter, clock, recs);
      await meter.flush();
      assert.equal(meter.pendingKeys, 0);
      const want = expected(recs);
      assert.ok(want.length > 40, `spread over many keys (${want.length})`);
      assert.deepEqual(await tableRows(d), want);
      assert.deepEqual(await meter.query({}), want);
    }));

  it("groups by UTC day and in total, filters by tenant ('' included), model and [from, to)", () =>
    withMeter(async (meter, clock) => {
      const recs = workload(2000, T0 + 20 * HOUR, 8, 2); // crosses the day boundary at T0 + 24 h
      feed(meter, clock, recs);
      await meter.flush();
      const day = await meter.query({ groupBy: 'day' });
      assert.deepEqual(day, expected(recs, { groupBy: 'day' }));
      assert.deepEqual([...new Set(day.map((r) => r.period))], [T0, T0 + DAY]);
      const total = await meter.query({ groupBy: 'total' });
      assert.equal(total.length, 9);
      assert.equal(
        total.reduce((n, r) => n + r.requests, 0),
        recs.length,
      );
      const queries: LlmUsageQuery[] = [
        { groupBy: 'total' },
        { tenant: '' },
        { tenant: 'acme' },
        { tenant: 'nobody' },
        { model: 'tiny-chat' },
        { tenant: 'beta', model: 'llama-3', groupBy: 'day' },
        { from: T0 + 22 * HOUR },
        { to: T0 + 22 * HOUR },
        { from: T0 + 21 * HOUR + 1, to: T0 + 25 * HOUR + 1 },
        { tenant: 'acme', from: T0 + 23 * HOUR, groupBy: 'total' },
      ];
      for (const q of queries) assert.deepEqual(await meter.query(q), expected(recs, q), JSON.stringify(q));
      await assert.rejects(
        meter.query({ groupBy: 'week' as 'day' }),
        (e: unknown) => isSwitchyardError(e) && e.code === 'SY_ERR_BAD_REQUEST' && /LLM usage query/.test(e.message),
      );
      await assert.rejects(meter.query({ from: Number.NaN }), (e: unknown) => isSwitchyardError(e) && e.code === 'SY_ERR_BAD_REQUEST');
    }));

  it('reads merge unflushed deltas with flushed rows, without double counting', () =>
    withMeter(async (meter, clock, d) => {
      const first = workload(500, T0, 4, 3);
      const second = workload(500, T0 + 2 * HOUR, 4, 4); // overlaps hours 2..3
      feed(meter, clock, first);
      assert.deepEqual(await meter.query({}), expected(first), 'nothing flushed yet');
      assert.deepEqual(await tableRows(d), []);
      await meter.flush();
      feed(meter, clock, second);
      const all = [...first, ...second];
      const [, during] = await Promise.all([meter.flush(), meter.query({ groupBy: 'total' })]);
      assert.deepEqual(during, expected(all, { groupBy: 'total' }));
      assert.deepEqual(await tableRows(d), expected(all));
    }));

  it('a failed flush keeps its deltas and a later flush writes them exactly once', () => {
    const registry = new Registry();
    return withMeter(async (meter, clock, d) => {
      if (dialect === 'postgres') {
        await sql`CREATE FUNCTION llm_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.tenant = 'zz' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$`.execute(
          d.db,
        );
        await sql`CREATE TRIGGER llm_poison BEFORE INSERT ON llm_usage FOR EACH ROW EXECUTE FUNCTION llm_poison()`.execute(d.db);
      } else {
        await sql`CREATE TRIGGER llm_poison BEFORE INSERT ON llm_usage WHEN NEW.tenant = 'zz' BEGIN SELECT RAISE(ABORT, 'poisoned'); END`.execute(d.db);
      }
      const recs = [...workload(700, T0, 2, 5), { tenant: 'zz', model: 'm', promptTokens: 1, completionTokens: 2, cost: 0.5, ok: false, at: T0 }];
      feed(meter, clock, recs);
      const keys = meter.pendingKeys;
      await assert.rejects(meter.flush(), /poisoned/);
      assert.equal(meter.pendingKeys, keys);
      assert.deepEqual(await tableRows(d), [], 'rolled back as a whole');
      assert.equal(await counterValue(registry, 'switchyard_usage_flush_failures_total', {}), 1);
      assert.deepEqual(await meter.query({}), expected(recs), 'reads still see the kept deltas');
      await sql.raw(dialect === 'postgres' ? 'DROP TRIGGER llm_poison ON llm_usage' : 'DROP TRIGGER llm_poison').execute(d.db);
      await meter.flush();
      await meter.flush();
      assert.deepEqual(await tableRows(d), expected(recs), 'written once');
    }, registry);
  });

  it('a new meter after a restart sees what the old one flushed on close', async () => {
    const { d, drop } = await freshStore(dialect);
    try {
      const clock = { t: T0 };
      const recs = workload(300, T0, 3, 6);
      const m1 = new LlmUsageMeter({ db: d.db, flushIntervalMs: MANUAL, now: () => clock.t });
      feed(m1, clock, recs);
      await m1.close();
      const m2 = new LlmUsageMeter({ db: d.db, flushIntervalMs: MANUAL });
      assert.deepEqual(await m2.query({ groupBy: 'total' }), expected(recs, { groupBy: 'total' }));
      await m2.close();
    } finally {
      await drop();
    }
  });
}

describe('LLM usage meter on SQLite', () => meterSuite('sqlite'));
describeNeeding('LLM usage meter on Postgres', `Postgres at ${PG_BASE}`, await postgresReachable(), () => meterSuite('postgres'));

describe('LLM usage meter (no database needed)', () => {
  const fakeDb = {} as Database['db'];

  it('counts tokens by kind and spend into Prometheus in record(), re-using registered counters', async () => {
    const registry = new Registry();
    const a = new LlmUsageMeter({ db: fakeDb, flushIntervalMs: MANUAL, metrics: registry });
    const b = new LlmUsageMeter({ db: fakeDb, flushIntervalMs: MANUAL, metrics: registry }); // a second meter: no re-registration error
    const tenancy = new UsageMeter({ db: fakeDb, flushIntervalMs: MANUAL, metrics: registry }); // shares the flush failure counter
    a.record({ tenant: 'acme', model: 'tiny', promptTokens: 100, completionTokens: 20, cost: 0.25, ok: true });
    b.record({ tenant: 'acme', model: 'tiny', promptTokens: 50, completionTokens: 0, cost: 0.125, ok: false });
    a.record({ tenant: '', model: 'tiny', promptTokens: 7, completionTokens: 3, cost: 0, ok: true });
    const acme = { tenant: 'acme', model: 'tiny' };
    assert.equal(await counterValue(registry, 'switchyard_llm_tokens_total', { ...acme, kind: 'prompt' }), 150);
    assert.equal(await counterValue(registry, 'switchyard_llm_tokens_total', { ...acme, kind: 'completion' }), 20);
    assert.equal(await counterValue(registry, 'switchyard_llm_spend_total', acme), 0.375);
    assert.equal(await counterValue(registry, 'switchyard_llm_tokens_total', { tenant: '', model: 'tiny', kind: 'completion' }), 3);
    assert.equal(a.pendingKeys, 2);
    assert.equal(tenancy.pendingKeys, 0);
  });

  it('never throws in record(): bad amounts count as 0, bad names are dropped', async () => {
    const meter = new LlmUsageMeter({ db: fakeDb, flushIntervalMs: MANUAL, now: () => T0 });
    meter.record({ tenant: 'acme', model: 'm', promptTokens: Number.NaN, completionTokens: -5, cost: Infinity, ok: false });
    meter.record({ tenant: 7 as unknown as string, model: 'm', promptTokens: 1, completionTokens: 1, cost: 1, ok: true });
    assert.equal(meter.pendingKeys, 1);
    assert.throws(() => new LlmUsageMeter({ db: fakeDb, flushIntervalMs: 0 }), /flushIntervalMs/);
  });
});

describe('GET /api/v1/llm/usage', () => {
  /** A bare app: the plugin, the error shape, and a stand-in for the gateway's authentication (x-test-tenant). */
  async function app(meter: LlmUsageMeter) {
    const a = Fastify({ logger: false });
    installErrorShape(a);
    a.decorateRequest('principal', null);
    a.addHook('onRequest', async (req) => {
      const t = req.headers['x-test-tenant'];
      req.principal =
        typeof t === 'string'
          ? ({ kind: 'tenant', actor: `${t}/k`, tenant: { name: t }, key: { id: 'k', scopes: ['read'] } } as unknown as Principal)
          : { kind: 'platform', actor: 'admin', key: null };
    });
    await a.register(llmAdminRoutes, { usage: meter });
    return a;
  }

  it('answers usage rows with ISO periods; a tenant key sees only its own tenant; bad input is 400', async () => {
    const { d, drop } = await freshStore('sqlite');
    const clock = { t: T0 };
    const meter = new LlmUsageMeter({ db: d.db, flushIntervalMs: MANUAL, now: () => clock.t });
    const a = await app(meter);
    try {
      const recs = workload(200, T0, 30, 9);
      feed(meter, clock, recs);
      await meter.flush();
      const get = async (url: string, tenant?: string) => {
        const r = await a.inject({ method: 'GET', url, headers: tenant === undefined ? {} : { 'x-test-tenant': tenant } });
        return { status: r.statusCode, body: r.json() as { usage: Array<LlmUsageRow & { period: string }>; error?: string } };
      };
      const iso = (rows: LlmUsageRow[]) => rows.map((r) => ({ ...r, period: new Date(r.period).toISOString() }));

      const all = await get('/api/v1/llm/usage?group_by=total');
      assert.equal(all.status, 200);
      assert.deepEqual(all.body.usage, iso(expected(recs, { groupBy: 'total' })));
      const hourly = await get(
        `/api/v1/llm/usage?tenant=beta&model=tiny-chat&from=${new Date(T0 + 3 * HOUR).toISOString()}&to=${new Date(T0 + DAY).toISOString()}`,
      );
      assert.deepEqual(hourly.body.usage, iso(expected(recs, { tenant: 'beta', model: 'tiny-chat', from: T0 + 3 * HOUR, to: T0 + DAY })));

      const own = await get('/api/v1/llm/usage?group_by=day', 'acme');
      assert.deepEqual(own.body.usage, iso(expected(recs, { tenant: 'acme', groupBy: 'day' })));
      assert.ok(own.body.usage.length > 0 && own.body.usage.every((r) => r.tenant === 'acme'));
      assert.equal((await get('/api/v1/llm/usage?tenant=beta', 'acme')).status, 404);

      assert.equal((await get('/api/v1/llm/usage?group_by=week')).status, 400);
      assert.equal((await get('/api/v1/llm/usage?from=yesterday')).status, 400);
      assert.equal((await get('/api/v1/llm/usage?version=1')).status, 400, 'unknown parameters are refused');
    } finally {
      await a.close();
      await meter.close();
      await drop();
    }
  });
});
