/**
 * The tenancy stores against real SQLite (temp file) and real Postgres (a fresh schema per test): usage
 * accounting (exact sums per tenant/model/version/hour, day and total grouping, filters, unflushed deltas in
 * reads, concurrent flushes from two meters and from two replica processes, failed flushes retried exactly once,
 * restart, Prometheus counters) and the append-only audit log (filters, prefix actions, time range, limit,
 * id cursor, UPDATE/DELETE refused by the database).
 * Postgres must be reachable in CI (CI=true); elsewhere its suites are skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { isSwitchyardError } from '../src/errors.js';
import { openDatabase, type Database, type Dialect } from '../src/storage/index.js';
import { AuditLog, type AuditEntry, type AuditRecord } from '../src/gateway/audit.js';
import { DAY_MS, HOUR_MS, UsageMeter, type UsageQuery, type UsageRecord, type UsageRow } from '../src/gateway/usage.js';
import { PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';

/** A fresh, empty metadata store; `url` opens more handles on it. */
interface Target {
  url: string;
  cleanup(): Promise<void>;
}

async function sqliteTarget(): Promise<Target> {
  const root = await mkdtemp(join(tmpdir(), 'sy-usage-'));
  return { url: `sqlite:${join(root, 'meta.db')}`, cleanup: () => rm(root, { recursive: true, force: true }) };
}

async function postgresTarget(): Promise<Target> {
  const schema = pgSchema();
  return { url: schema.url, cleanup: () => schema.drop() };
}

/** Long enough that only explicit flushes write (the timer is unref'd and never fires in these tests). */
const MANUAL = 3_600_000;
/** 2025-03-04T00:00:00Z: a UTC day start. */
const T0 = Date.UTC(2025, 2, 4);

class Clock {
  t = T0;
  readonly now = (): number => this.t;
}

const key = (r: { tenant: string; model: string; version: number }, keyId: string | null, period: number): string =>
  `${r.tenant}|${r.model}|${r.version}|${keyId}|${period}`;

/**
 * Independent reference: sums per (tenant, model, version, bucket) — and API key with `byKey` or `keyId` (the
 * table's rows are per key: compare them with `byKey: true`) — in the documented order.
 */
function expected(recs: readonly (UsageRecord & { at: number })[], q: UsageQuery = {}): UsageRow[] {
  const groupBy = q.groupBy ?? 'hour';
  const perKey = q.byKey === true || q.keyId !== undefined;
  const out = new Map<string, UsageRow>();
  for (const r of recs) {
    const hour = Math.floor(r.at / HOUR_MS) * HOUR_MS;
    if (q.tenant !== undefined && r.tenant !== q.tenant) continue;
    if (q.model !== undefined && r.model !== q.model) continue;
    if (q.version !== undefined && r.version !== q.version) continue;
    if (q.keyId !== undefined && (r.keyId ?? '') !== q.keyId) continue;
    if (q.from !== undefined && hour < q.from) continue;
    if (q.to !== undefined && hour >= q.to) continue;
    const bucket = groupBy === 'hour' ? hour : groupBy === 'day' ? Math.floor(hour / DAY_MS) * DAY_MS : -1;
    const keyId = perKey ? (r.keyId ?? '') : null;
    const k = key(r, keyId, bucket);
    let row = out.get(k);
    if (!row) {
      row = {
        tenant: r.tenant,
        model: r.model,
        version: r.version,
        keyId,
        period: groupBy === 'total' ? hour : bucket,
        requests: 0,
        rows: 0,
        computeMs: 0,
        errors: 0,
        invalid: 0,
      };
      out.set(k, row);
    }
    row.period = Math.min(row.period, groupBy === 'total' ? hour : bucket);
    row.requests += 1;
    if (r.ok) row.rows += r.rows; // rows of served requests only
    row.computeMs += r.computeMs;
    if (!r.ok && r.invalid === true) row.invalid += 1;
    else if (!r.ok) row.errors += 1;
  }
  return [...out.values()].sort(byRowOrder);
}

function byRowOrder(a: UsageRow, b: UsageRow): number {
  const str = (x: string | null, y: string | null): number => (x === null || y === null || x === y ? 0 : x < y ? -1 : 1);
  return a.period - b.period || str(a.tenant, b.tenant) || str(a.model, b.model) || a.version - b.version || str(a.keyId, b.keyId);
}

/** mulberry32: a seeded PRNG; `rnd(m)` is an integer in [0, m). The replica processes run its source too. */
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

const TENANTS = ['', 'acme', 'beta'] as const;
const MODELS = ['resnet', 'bert'] as const;

/**
 * A deterministic workload over 3 tenants ('' included), 2 models, 2 versions and `hours` hours from `start`.
 * computeMs are multiples of 0.25 with small sums: exact in Postgres' `real` column and in doubles.
 */
function workload(n: number, start = T0 + 20 * HOUR_MS, hours = 8, seed = 1): (UsageRecord & { at: number })[] {
  const out: (UsageRecord & { at: number })[] = [];
  const rnd = prng(seed);
  for (let i = 0; i < n; i++) {
    const r = {
      tenant: TENANTS[rnd(3)] as string,
      model: MODELS[rnd(2)] as string,
      version: 1 + rnd(2),
      rows: 1 + rnd(16),
      computeMs: rnd(40) / 4,
      ok: rnd(7) !== 0,
      at: start + rnd(hours) * HOUR_MS + rnd(HOUR_MS),
    };
    out.push({ ...r, invalid: !r.ok && i % 2 === 0 }); // half the failures the caller's (4xx)
  }
  return out;
}

function feed(meter: UsageMeter, clock: Clock, recs: readonly (UsageRecord & { at: number })[]): void {
  for (const r of recs) {
    clock.t = r.at;
    meter.record({
      tenant: r.tenant,
      model: r.model,
      version: r.version,
      ...(r.keyId === undefined ? {} : { keyId: r.keyId }),
      rows: r.rows,
      computeMs: r.computeMs,
      ok: r.ok,
      invalid: r.invalid === true,
    });
  }
}

async function rawUsage(d: Database): Promise<UsageRow[]> {
  const rows = await d.db.selectFrom('usage').selectAll().execute();
  return rows
    .map((r) => ({
      tenant: r.tenant,
      model: r.model,
      version: Number(r.version),
      keyId: r.key_id,
      period: Number(r.period),
      requests: Number(r.requests),
      rows: Number(r.rows),
      computeMs: Number(r.compute_ms),
      errors: Number(r.errors),
      invalid: Number(r.invalid),
    }))
    .sort(byRowOrder);
}

async function withStore(makeTarget: () => Promise<Target>, fn: (d: Database, target: Target) => Promise<void>): Promise<void> {
  const target = await makeTarget();
  let d: Database | null = null;
  try {
    d = await openDatabase(target.url);
    await fn(d, target);
  } finally {
    await d?.close().catch(() => undefined);
    await target.cleanup();
  }
}

function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = m[2] === undefined ? [] : m[2].split(',');
    if (got.length === want.length && want.every((w) => got.includes(w))) return Number(m[3]);
  }
  return undefined;
}

/** Source of one replica process: records `rounds × perRound` requests, flushing after each round (and on its timer). */
const REPLICA = `
const [usageUrl, storageUrl, dbUrl, seed, rounds, perRound, t0] = process.argv.slice(1);
const { UsageMeter } = await import(usageUrl);
const { openDatabase } = await import(storageUrl);
const d = await openDatabase(dbUrl);
let t = Number(t0);
const meter = new UsageMeter({ db: d.db, flushIntervalMs: 3, now: () => t });
const rnd = (${prng.toString()})(Number(seed));
for (let r = 0; r < Number(rounds); r++) {
  for (let i = 0; i < Number(perRound); i++) {
    t = Number(t0) + rnd(3) * 3600000;
    meter.record({ tenant: ['', 'acme', 'beta'][rnd(3)], model: 'm', version: 1 + rnd(2), rows: 2, computeMs: 0.5, ok: rnd(5) !== 0 });
  }
  await meter.flush();
  await new Promise((res) => setTimeout(res, rnd(5)));
}
await meter.flush();
await d.close();
// No meter.close(): the process must still exit, because the flush timer is unref'd.
`;

function replica(dbUrl: string, seed: number, rounds: number, perRound: number): Promise<void> {
  const usageUrl = new URL('../src/gateway/usage.js', import.meta.url).href;
  const storageUrl = new URL('../src/storage/index.js', import.meta.url).href;
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      ['--input-type=module', '-e', REPLICA, usageUrl, storageUrl, dbUrl, String(seed), String(rounds), String(perRound), String(T0)],
      { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 },
    );
    let stderr = '';
    p.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    p.on('error', reject);
    p.on('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`replica ${seed} exited ${code ?? signal}: ${stderr}`))));
  });
}

/** What REPLICA records, computed here independently. */
function replicaRecords(seed: number, rounds: number, perRound: number): (UsageRecord & { at: number })[] {
  const rnd = prng(seed);
  const out: (UsageRecord & { at: number })[] = [];
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < perRound; i++) {
      const at = T0 + rnd(3) * HOUR_MS;
      out.push({ at, tenant: ['', 'acme', 'beta'][rnd(3)] as string, model: 'm', version: 1 + rnd(2), rows: 2, computeMs: 0.5, ok: rnd(5) !== 0 });
    }
    rnd(5);
  }
  return out;
}

function usageSuite(dialect: Dialect, makeTarget: () => Promise<Target>): void {
  it('sums exactly per (tenant, model, version, hour) after a flush, in the table and through query', async () => {
    await withStore(makeTarget, async (d) => {
      assert.equal(d.dialect, dialect);
      const clock = new Clock();
      const meter = new UsageMeter({ db: d.db, flushIntervalMs: MANUAL, now: clock.now });
      const recs = workload(3000);
      feed(meter, clock, recs);
      await meter.flush();
      assert.equal(meter.pendingKeys, 0);
      const want = expected(recs);
      assert.ok(want.length > 50, `workload spreads over many keys (${want.length})`);
      assert.deepEqual(await rawUsage(d), expected(recs, { byKey: true }));
      assert.deepEqual(await meter.query({}), want);
      assert.deepEqual(await meter.query({ groupBy: 'hour' }), want);
      await meter.close();
    });
  });

  it("per API key: rows per key with byKey, a key filter ('' = no key), summed over keys otherwise", async () => {
    await withStore(makeTarget, async (d) => {
      const clock = new Clock();
      const meter = new UsageMeter({ db: d.db, flushIntervalMs: MANUAL, now: clock.now });
      const KEYS = ['', 'key_a', 'key_b'];
      const recs = workload(1500).map((r, i) => ({ ...r, keyId: KEYS[i % 3]! }));
      feed(meter, clock, recs.slice(0, 1000));
      await meter.flush();
      feed(meter, clock, recs.slice(1000)); // some unflushed: reads merge them per key too
      for (const q of [{}, { groupBy: 'total' }, { groupBy: 'day', tenant: 'acme' }] as UsageQuery[]) {
        assert.deepEqual(await meter.query(q), expected(recs, q), `summed over keys ${JSON.stringify(q)}`);
        assert.deepEqual(await meter.query({ ...q, byKey: true }), expected(recs, { ...q, byKey: true }), `per key ${JSON.stringify(q)}`);
      }
      for (const keyId of KEYS) assert.deepEqual(await meter.query({ keyId, groupBy: 'total' }), expected(recs, { keyId, groupBy: 'total' }), `key "${keyId}"`);
      const perKey = await meter.query({ byKey: true, groupBy: 'total', model: 'bert', version: 1, tenant: 'acme' });
      assert.deepEqual(
        perKey.map((r) => r.keyId),
        KEYS,
      );
      assert.equal(
        perKey.reduce((n, r) => n + r.requests, 0),
        (await meter.query({ groupBy: 'total', model: 'bert', version: 1, tenant: 'acme' }))[0]!.requests,
      );
      await meter.close();
      assert.deepEqual(await rawUsage(d), expected(recs, { byKey: true }));
    });
  });

  it('migration 0009 keeps the usage rows of an older store (key "") and 0009 down sums keys back', async () => {
    const target = await makeTarget();
    try {
      const d = await openDatabase(target.url);
      try {
        await d.db
          .insertInto('usage')
          .values({ tenant: 'acme', model: 'm', version: 1, key_id: 'k1', period: T0, requests: 2, rows: 3, compute_ms: 0.5, errors: 0, invalid: 1 })
          .execute();
        await d.db
          .insertInto('usage')
          .values({ tenant: 'acme', model: 'm', version: 1, key_id: 'k2', period: T0, requests: 5, rows: 7, compute_ms: 1.25, errors: 1, invalid: 0 })
          .execute();
        const { down, up } = (await import('../src/storage/migrations.js')).migrations(d.dialect)['0009_usage_key']!;
        await down!(d.db as never);
        const old = await sql<Record<string, unknown>>`select * from usage`.execute(d.db);
        assert.deepEqual(
          old.rows.map((r) => [
            r['tenant'],
            Number(r['requests']),
            Number(r['rows']),
            Number(r['compute_ms']),
            Number(r['errors']),
            Number(r['invalid']),
            'key_id' in r,
          ]),
          [['acme', 7, 10, 1.75, 1, 1, false]],
        );
        await up(d.db as never);
        assert.deepEqual(await rawUsage(d), [
          { tenant: 'acme', model: 'm', version: 1, keyId: '', period: T0, requests: 7, rows: 10, computeMs: 1.75, errors: 1, invalid: 1 },
        ]);
      } finally {
        await d.close();
      }
    } finally {
      await target.cleanup();
    }
  });

  it("groups by UTC day and in total, and filters by tenant ('' included), model, version and [from, to)", async () => {
    await withStore(makeTarget, async (d) => {
      const clock = new Clock();
      const meter = new UsageMeter({ db: d.db, flushIntervalMs: MANUAL, now: clock.now });
      const recs = workload(2000); // hours 20..27 after T0: crosses the day boundary at T0 + 24h
      feed(meter, clock, recs);
      await meter.flush();
      const day = await meter.query({ groupBy: 'day' });
      assert.deepEqual(day, expected(recs, { groupBy: 'day' }));
      assert.deepEqual([...new Set(day.map((r) => r.period))], [T0, T0 + DAY_MS]);
      const total = await meter.query({ groupBy: 'total' });
      assert.deepEqual(total, expected(recs, { groupBy: 'total' }));
      assert.equal(total.length, 3 * 2 * 2);
      assert.equal(
        total.reduce((n, r) => n + r.requests, 0),
        recs.length,
      );
      const queries: UsageQuery[] = [
        { tenant: '' },
        { tenant: 'acme' },
        { tenant: 'nobody' },
        { model: 'bert' },
        { version: 2 },
        { tenant: 'beta', model: 'resnet', version: 1 },
        { from: T0 + 22 * HOUR_MS },
        { to: T0 + 22 * HOUR_MS },
        { from: T0 + 21 * HOUR_MS, to: T0 + 25 * HOUR_MS },
        { from: T0 + 21 * HOUR_MS + 1, to: T0 + 25 * HOUR_MS + 1 }, // [from, to) on the hour start
        { tenant: '', from: T0 + 22 * HOUR_MS, to: T0 + 26 * HOUR_MS, groupBy: 'day' },
        { model: 'resnet', from: T0 + 23 * HOUR_MS, groupBy: 'total' },
      ];
      for (const q of queries) assert.deepEqual(await meter.query(q), expected(recs, q), JSON.stringify(q));
      assert.deepEqual(await meter.query({ tenant: 'nobody' }), []);
      await assert.rejects(meter.query({ groupBy: 'week' as 'day' }), (e: unknown) => isSwitchyardError(e) && e.code === 'SY_ERR_BAD_REQUEST');
      await meter.close();
    });
  });

  it('reads include unflushed deltas, merged with flushed rows, without double counting', async () => {
    await withStore(makeTarget, async (d) => {
      const clock = new Clock();
      const meter = new UsageMeter({ db: d.db, flushIntervalMs: MANUAL, now: clock.now });
      const first = workload(500, T0, 4, 7);
      const second = workload(500, T0 + 2 * HOUR_MS, 4, 8); // overlaps hours 2..3 with the first
      feed(meter, clock, first);
      assert.deepEqual(await meter.query({}), expected(first), 'nothing flushed yet');
      assert.deepEqual(await rawUsage(d), []);
      await meter.flush();
      feed(meter, clock, second);
      const all = [...first, ...second];
      for (const q of [{}, { groupBy: 'day' }, { groupBy: 'total' }, { tenant: 'acme', from: T0 + 3 * HOUR_MS }] as UsageQuery[]) {
        assert.deepEqual(await meter.query(q), expected(all, q), JSON.stringify(q));
      }
      // A query racing a flush sees each delta exactly once.
      const [, during] = await Promise.all([meter.flush(), meter.query({ groupBy: 'total' })]);
      assert.deepEqual(during, expected(all, { groupBy: 'total' }));
      assert.deepEqual(await rawUsage(d), expected(all, { byKey: true }));
      await meter.flush(); // nothing pending: no change
      assert.deepEqual(await meter.query({}), expected(all));
      await meter.close();
    });
  });

  it('two meters on one database flushing concurrently add up exactly', async () => {
    await withStore(makeTarget, async (d, target) => {
      // On Postgres each meter gets its own pool (two replicas); SQLite's driver is one connection per handle and
      // blocks the thread while waiting for a lock, so in-process meters share the handle (processes: next test).
      const other = dialect === 'postgres' ? await openDatabase(target.url) : d;
      try {
        const ca = new Clock();
        const cb = new Clock();
        const a = new UsageMeter({ db: d.db, flushIntervalMs: MANUAL, now: ca.now });
        const b = new UsageMeter({ db: other.db, flushIntervalMs: MANUAL, now: cb.now });
        const all: (UsageRecord & { at: number })[] = [];
        for (let round = 0; round < 10; round++) {
          const ra = workload(300, T0, 3, 100 + round);
          const rb = workload(300, T0, 3, 200 + round);
          feed(a, ca, ra);
          feed(b, cb, rb);
          all.push(...ra, ...rb);
          await Promise.all([a.flush(), b.flush(), a.flush()]);
        }
        assert.deepEqual(await rawUsage(d), expected(all, { byKey: true }));
        assert.deepEqual(await a.query({ groupBy: 'total' }), expected(all, { groupBy: 'total' }));
        await Promise.all([a.close(), b.close()]);
      } finally {
        if (other !== d) await other.close();
      }
    });
  });

  it('two replica processes flushing into one database (and on their timers) add up exactly', async () => {
    await withStore(makeTarget, async (d, target) => {
      const rounds = 15;
      const per = 200;
      await Promise.all([replica(target.url, 11, rounds, per), replica(target.url, 22, rounds, per), replica(target.url, 33, rounds, per)]);
      const all = [...replicaRecords(11, rounds, per), ...replicaRecords(22, rounds, per), ...replicaRecords(33, rounds, per)];
      assert.deepEqual(await rawUsage(d), expected(all, { byKey: true }));
      const total = await new UsageMeter({ db: d.db, flushIntervalMs: MANUAL }).query({ groupBy: 'total' });
      assert.equal(
        total.reduce((n, r) => n + r.requests, 0),
        3 * rounds * per,
      );
    });
  });

  it('a failed flush keeps its deltas (rolled back as a whole) and a later flush writes them exactly once', async () => {
    await withStore(makeTarget, async (d) => {
      const registry = new Registry();
      const clock = new Clock();
      const meter = new UsageMeter({ db: d.db, flushIntervalMs: MANUAL, now: clock.now, metrics: registry });
      // A trigger refuses one tenant; its key sorts last, after more than one statement's worth of rows.
      if (dialect === 'postgres') {
        await sql`CREATE FUNCTION usage_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.tenant = 'zz-poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$`.execute(
          d.db,
        );
        await sql`CREATE TRIGGER usage_poison BEFORE INSERT ON "usage" FOR EACH ROW EXECUTE FUNCTION usage_poison()`.execute(d.db);
      } else {
        await sql`CREATE TRIGGER usage_poison BEFORE INSERT ON "usage" WHEN NEW.tenant = 'zz-poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END`.execute(d.db);
      }
      const recs: (UsageRecord & { at: number })[] = [];
      for (let i = 0; i < 1200; i++)
        recs.push({ tenant: 'acme', model: `m${i % 600}`, version: 1, rows: 1, computeMs: 1, ok: true, at: T0 + Math.floor(i / 600) * HOUR_MS });
      recs.push({ tenant: 'zz-poison', model: 'm', version: 1, rows: 3, computeMs: 2, ok: false, at: T0 });
      feed(meter, clock, recs);
      await assert.rejects(meter.flush(), /poisoned/);
      assert.deepEqual(await rawUsage(d), [], 'the whole flush rolled back');
      assert.equal(meter.pendingKeys, 1201);
      assert.equal(metricValue(await registry.metrics(), 'switchyard_usage_flush_failures_total'), 1);
      assert.deepEqual(await meter.query({}), expected(recs), 'reads still see the kept deltas');
      // More usage arrives while the database refuses; then it recovers.
      const more = workload(300, T0, 2, 5);
      feed(meter, clock, more);
      await assert.rejects(meter.flush(), /poisoned/);
      assert.equal(metricValue(await registry.metrics(), 'switchyard_usage_flush_failures_total'), 2);
      await sql.raw(dialect === 'postgres' ? 'DROP TRIGGER usage_poison ON "usage"' : 'DROP TRIGGER usage_poison').execute(d.db);
      await meter.flush();
      await meter.flush();
      const all = [...recs, ...more];
      assert.deepEqual(await rawUsage(d), expected(all, { byKey: true }), 'written once');
      assert.equal(meter.pendingKeys, 0);
      await meter.close();
      assert.deepEqual(await rawUsage(d), expected(all, { byKey: true }));
    });
  });

  it('a database closed under the meter: flush and close reject, record never throws, deltas stay', async () => {
    await withStore(makeTarget, async (d, target) => {
      const extra = await openDatabase(target.url);
      const registry = new Registry();
      const clock = new Clock();
      const meter = new UsageMeter({ db: extra.db, flushIntervalMs: MANUAL, now: clock.now, metrics: registry });
      feed(meter, clock, workload(50));
      await extra.close();
      await assert.rejects(meter.flush());
      feed(meter, clock, workload(50, T0, 2, 3));
      await assert.rejects(meter.close());
      assert.ok(meter.pendingKeys > 0);
      assert.equal(metricValue(await registry.metrics(), 'switchyard_usage_flush_failures_total'), 2);
      assert.deepEqual(await rawUsage(d), []);
    });
  });

  it('a new meter after a restart sees what the old one flushed on close', async () => {
    await withStore(makeTarget, async (d, target) => {
      const recs = workload(400);
      let db = await openDatabase(target.url);
      const clock = new Clock();
      const m1 = new UsageMeter({ db: db.db, flushIntervalMs: MANUAL, now: clock.now });
      feed(m1, clock, recs);
      await m1.close(); // flushes
      await db.close();
      db = await openDatabase(target.url);
      try {
        const m2 = new UsageMeter({ db: db.db, flushIntervalMs: MANUAL });
        assert.deepEqual(await m2.query({}), expected(recs));
        assert.deepEqual(await m2.query({ groupBy: 'total', tenant: '' }), expected(recs, { groupBy: 'total', tenant: '' }));
        await m2.close();
      } finally {
        await db.close();
      }
      assert.deepEqual(await rawUsage(d), expected(recs, { byKey: true }));
    });
  });

  it('flushes on its timer', async () => {
    await withStore(makeTarget, async (d) => {
      const meter = new UsageMeter({ db: d.db, flushIntervalMs: 10, now: () => T0 });
      meter.record({ tenant: 'acme', model: 'm', version: 1, rows: 4, computeMs: 2.5, ok: true });
      const until = Date.now() + 5000;
      while ((await rawUsage(d)).length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(await rawUsage(d), [
        { tenant: 'acme', model: 'm', version: 1, keyId: '', period: T0, requests: 1, rows: 4, computeMs: 2.5, errors: 0, invalid: 0 },
      ]);
      await meter.close();
    });
  });
}

describe('usage meter (no database needed)', () => {
  const fakeDb = (): Database['db'] => ({}) as Database['db'];

  it('counts into the Prometheus registry in record(), with the version as a string label', async () => {
    const registry = new Registry();
    const meter = new UsageMeter({ db: fakeDb(), flushIntervalMs: MANUAL, metrics: registry });
    meter.record({ tenant: 'acme', model: 'resnet', version: 3, rows: 8, computeMs: 1500, ok: true });
    meter.record({ tenant: 'acme', model: 'resnet', version: 3, rows: 2, computeMs: 500, ok: true });
    meter.record({ tenant: 'acme', model: 'resnet', version: 3, rows: 1, computeMs: 250, ok: false });
    meter.record({ tenant: 'acme', model: 'resnet', version: 3, rows: 4, computeMs: 0, ok: false, invalid: true });
    meter.record({ tenant: '', model: 'resnet', version: 12, rows: 5, computeMs: 0, ok: true });
    const text = await registry.metrics();
    const acme = { tenant: 'acme', model: 'resnet', version: '3' };
    assert.equal(metricValue(text, 'switchyard_tenant_requests_total', { ...acme, outcome: 'success' }), 2);
    assert.equal(metricValue(text, 'switchyard_tenant_requests_total', { ...acme, outcome: 'error' }), 1);
    assert.equal(metricValue(text, 'switchyard_tenant_requests_total', { ...acme, outcome: 'invalid' }), 1);
    assert.equal(metricValue(text, 'switchyard_tenant_rows_total', acme), 10, 'rows of served requests only');
    assert.equal(metricValue(text, 'switchyard_tenant_compute_seconds_total', acme), 2.25);
    const anon = { tenant: '', model: 'resnet', version: '12' };
    assert.equal(metricValue(text, 'switchyard_tenant_requests_total', { ...anon, outcome: 'success' }), 1);
    assert.equal(metricValue(text, 'switchyard_tenant_rows_total', anon), 5);
    assert.equal(metricValue(text, 'switchyard_usage_flush_failures_total'), 0);
    assert.match(text, /# TYPE switchyard_tenant_compute_seconds_total counter/);
    // A second meter on the same registry re-uses the counters instead of throwing on re-registration.
    const again = new UsageMeter({ db: fakeDb(), flushIntervalMs: MANUAL, metrics: registry });
    again.record({ tenant: 'acme', model: 'resnet', version: 3, rows: 1, computeMs: 0, ok: true });
    assert.equal(metricValue(await registry.metrics(), 'switchyard_tenant_requests_total', { ...acme, outcome: 'success' }), 3);
    assert.equal(meter.pendingKeys, 2);
  });

  it('record() never throws: bad numbers count as 0, bad keys are dropped, a failing clock is contained', async () => {
    const registry = new Registry();
    let broken = false;
    const meter = new UsageMeter({
      db: fakeDb(),
      flushIntervalMs: MANUAL,
      metrics: registry,
      now: () => {
        if (broken) throw new Error('clock');
        return T0;
      },
    });
    meter.record({ tenant: 't', model: 'm', version: 1, rows: Number.NaN, computeMs: -5, ok: true });
    meter.record({ tenant: 't', model: 'm', version: 1, rows: Number.POSITIVE_INFINITY, computeMs: Number.NaN, ok: false });
    meter.record({ tenant: 't', model: 'm', version: 1.5, rows: 1, computeMs: 1, ok: true });
    meter.record({ tenant: null as unknown as string, model: 'm', version: 1, rows: 1, computeMs: 1, ok: true });
    broken = true;
    meter.record({ tenant: 't', model: 'm', version: 1, rows: 1, computeMs: 1, ok: true });
    assert.equal(meter.pendingKeys, 1);
    const text = await registry.metrics();
    assert.equal(metricValue(text, 'switchyard_tenant_requests_total', { tenant: 't', model: 'm', version: '1', outcome: 'success' }), 1);
    assert.equal(metricValue(text, 'switchyard_tenant_requests_total', { tenant: 't', model: 'm', version: '1', outcome: 'error' }), 1);
    // The series exists once its model version was used; bad numbers added nothing to it.
    assert.equal(metricValue(text, 'switchyard_tenant_rows_total', { tenant: 't', model: 'm', version: '1' }), 0);
  });

  it('rejects a non-positive flush interval instead of spinning or defaulting', () => {
    for (const flushIntervalMs of [0, -1, Number.NaN]) {
      assert.throws(
        () => new UsageMeter({ db: fakeDb(), flushIntervalMs }),
        (e: unknown) => isSwitchyardError(e) && e.code === 'SY_ERR_CONFIG_INVALID',
      );
    }
  });
});

const entry = (over: Partial<AuditEntry> = {}): AuditEntry => ({
  at: T0,
  actor: 'admin',
  tenant: null,
  action: 'tenant.create',
  target: null,
  status: 200,
  ip: '10.0.0.1',
  userAgent: null,
  requestId: null,
  detail: null,
  ...over,
});

function auditSuite(dialect: Dialect, makeTarget: () => Promise<Target>): void {
  it('appends and queries newest first by tenant, actor, action (exact and prefix) and [from, to)', async () => {
    await withStore(makeTarget, async (d) => {
      assert.equal(d.dialect, dialect);
      const audit = new AuditLog({ db: d.db });
      const specs: Partial<AuditEntry>[] = [
        { actor: 'root', tenant: null, action: 'tenant.create', target: 'acme', detail: { tier: 'gold', limits: { rps: 10, models: ['a', 'b'] } } },
        { actor: 'root', tenant: 'acme', action: 'key.create', target: 'key_1', userAgent: 'curl/8.5', requestId: 'req-2' },
        { actor: 'key_1', tenant: 'acme', action: 'POST /api/v1/models', target: 'resnet', status: 201 },
        { actor: 'key_1', tenant: 'acme', action: 'key.revoke', target: 'key_1', status: 200 },
        { actor: 'root', tenant: 'beta', action: 'key.create', target: 'key_2', status: 403, detail: { reason: 'quota' } },
        { actor: 'root', tenant: 'beta', action: 'keys.list', target: null },
        { actor: 'root', tenant: 'beta', action: 'KEY.create', target: null },
        { actor: 'root', tenant: 'beta', action: 'key%x', target: null },
      ];
      const stored: AuditRecord[] = [];
      for (const [i, s] of specs.entries()) stored.push(await audit.append(entry({ ...s, at: T0 + i * 1000 })));
      const ids = stored.map((r) => r.id);
      assert.deepEqual(
        [...ids].sort((a, b) => a - b),
        ids,
        'ids increase',
      );
      assert.deepEqual(stored[0], { ...entry({ ...specs[0], at: T0 }), id: ids[0] });
      const newest = [...stored].reverse();
      assert.deepEqual(await audit.query({}), newest);
      const only = (pred: (r: (typeof stored)[number]) => boolean): typeof stored => newest.filter(pred);
      assert.deepEqual(
        await audit.query({ tenant: 'acme' }),
        only((r) => r.tenant === 'acme'),
      );
      assert.deepEqual(
        await audit.query({ actor: 'key_1' }),
        only((r) => r.actor === 'key_1'),
      );
      assert.deepEqual(
        await audit.query({ action: 'key.create' }),
        only((r) => r.action === 'key.create'),
      );
      assert.deepEqual(
        await audit.query({ action: 'key.*' }),
        only((r) => r.action.startsWith('key.')),
        'prefix, case-sensitive',
      );
      assert.deepEqual(
        await audit.query({ action: 'key*' }),
        only((r) => r.action.startsWith('key')),
      );
      assert.deepEqual(
        await audit.query({ action: 'key%*' }),
        only((r) => r.action === 'key%x'),
        '% is literal',
      );
      assert.deepEqual(
        await audit.query({ action: 'POST /api/*' }),
        only((r) => r.action.startsWith('POST /api/')),
      );
      assert.deepEqual(await audit.query({ action: '*' }), newest);
      assert.deepEqual(await audit.query({ action: 'key' }), []);
      assert.deepEqual(
        await audit.query({ from: T0 + 2000, to: T0 + 5000 }),
        only((r) => r.at >= T0 + 2000 && r.at < T0 + 5000),
      );
      assert.deepEqual(
        await audit.query({ tenant: 'beta', actor: 'root', action: 'key.*', from: T0 + 4000 }),
        only((r) => r.id === ids[4]),
      );
      const withDetail = await audit.query({ tenant: 'beta', action: 'key.create' });
      assert.deepEqual(withDetail[0]?.detail, { reason: 'quota' });
      assert.equal(withDetail[0]?.status, 403);
    });
  });

  it('limits (default 100, at most 1000) and pages with the id cursor', async () => {
    await withStore(makeTarget, async (d) => {
      const audit = new AuditLog({ db: d.db });
      const rows = Array.from({ length: 1005 }, (_, i) => ({
        at: T0 + i,
        actor: `a${i % 3}`,
        tenant: 't',
        action: 'x.y',
        target: null,
        status: 200,
        ip: '::1',
        user_agent: null,
        request_id: null,
        detail: null,
      }));
      for (let i = 0; i < rows.length; i += 200)
        await d.db
          .insertInto('audit_log')
          .values(rows.slice(i, i + 200))
          .execute();
      assert.equal((await audit.query({})).length, 100);
      assert.equal((await audit.query({ limit: 5000 })).length, 1000);
      assert.deepEqual(await audit.query({ limit: 0 }), []);
      await assert.rejects(audit.query({ limit: -1 }), (e: unknown) => isSwitchyardError(e) && e.code === 'SY_ERR_BAD_REQUEST');
      const seen: number[] = [];
      let before: number | undefined;
      for (;;) {
        const page = await audit.query({ actor: 'a1', limit: 64, ...(before === undefined ? {} : { before }) });
        if (page.length === 0) break;
        seen.push(...page.map((r) => r.at));
        before = page.at(-1)?.id;
      }
      const want = rows
        .filter((r) => r.actor === 'a1')
        .map((r) => r.at)
        .reverse();
      assert.deepEqual(seen, want, 'every a1 entry once, newest first');
    });
  });

  it('the database refuses UPDATE and DELETE on audit_log', async () => {
    await withStore(makeTarget, async (d) => {
      const audit = new AuditLog({ db: d.db });
      const rec = await audit.append(entry({ tenant: 'acme', action: 'key.revoke', detail: { k: 1 } }));
      await assert.rejects(d.db.updateTable('audit_log').set({ actor: 'mallory' }).where('id', '=', rec.id).execute(), /append-only/);
      await assert.rejects(d.db.deleteFrom('audit_log').where('id', '=', rec.id).execute(), /append-only/);
      await assert.rejects(d.db.deleteFrom('audit_log').execute(), /append-only/);
      assert.deepEqual(await audit.query({}), [rec]);
    });
  });

  it('a failed append is counted, logged and rethrown', async () => {
    await withStore(makeTarget, async (_d, target) => {
      const extra = await openDatabase(target.url);
      const registry = new Registry();
      const logged: unknown[] = [];
      const logger = { error: (o: unknown) => logged.push(o) } as unknown as Logger;
      const audit = new AuditLog({ db: extra.db, metrics: registry, logger });
      await audit.append(entry());
      await extra.close();
      await assert.rejects(audit.append(entry({ action: 'key.revoke' })));
      assert.equal(metricValue(await registry.metrics(), 'switchyard_audit_write_failures_total'), 1);
      assert.equal(logged.length, 1);
    });
  });
}

describe('usage meter on SQLite', () => {
  usageSuite('sqlite', sqliteTarget);
});
describe('audit log on SQLite', () => {
  auditSuite('sqlite', sqliteTarget);
});

const pgDown = await postgresReachable();
const inCi = process.env['CI'] === 'true';
if (pgDown !== null && inCi) {
  describe('usage meter and audit log on Postgres', () => {
    it('needs Postgres on 127.0.0.1:5432 in CI', () => assert.fail(`Postgres is unreachable at ${PG_BASE}: ${pgDown}`));
  });
} else {
  const skip = pgDown === null ? false : `Postgres unreachable at ${PG_BASE} (${pgDown}); set CI=true to make this fail`;
  describe('usage meter on Postgres', { skip }, () => {
    usageSuite('postgres', postgresTarget);
  });
  describe('audit log on Postgres', { skip }, () => {
    auditSuite('postgres', postgresTarget);
  });
}
