/**
 * Alerts: rule validation; the engine's transitions with an injected clock and fake signals (inactive → pending →
 * firing after forMs → resolved, no duplicate events while firing, restart recovery, disable/delete of a firing
 * rule); webhook delivery to a real local HTTP receiver (payload, HMAC signature checked here, retries after 5xx,
 * Retry-After on 429, no retry on 400, failure after the attempts, timeouts, order per rule, queue full, close);
 * event records on SQLite and on real Postgres; and the Prometheus rules file through `promtool check rules` and
 * `promtool test rules`.
 * Postgres and promtool must be there in CI (CI=true); elsewhere their tests are skipped with a message.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { isSwitchyardError } from '../src/errors.js';
import {
  AlertEngine,
  parseAlertRule,
  signWebhook,
  verifyWebhook,
  type AlertEngineOptions,
  type AlertRule,
  type AlertSignals,
} from '../src/monitoring/alerts.js';
import { openDatabase, type Database } from '../src/storage/index.js';
import { PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';

const inCi = process.env['CI'] === 'true';
const T0 = Date.UTC(2025, 4, 6, 12, 0, 0);
const SECRET = 'whsec_test_0123456789';

// ── helpers ──

interface Target {
  url: string;
  cleanup(): Promise<void>;
}

async function sqliteTarget(): Promise<Target> {
  const root = await mkdtemp(join(tmpdir(), 'sy-alerts-'));
  return { url: `sqlite:${join(root, 'meta.db')}`, cleanup: () => rm(root, { recursive: true, force: true }) };
}

async function postgresTarget(): Promise<Target> {
  const s = pgSchema();
  return { url: s.url, cleanup: () => s.drop() };
}

class FakeSignals implements AlertSignals {
  readonly values = new Map<string, number | null | Error>();
  readonly calls: string[] = [];
  value(rule: AlertRule): number | null {
    this.calls.push(rule.id);
    const v = this.values.get(rule.id);
    if (v instanceof Error) throw v;
    return v ?? null;
  }
}

class Clock {
  t = T0;
  readonly now = (): number => this.t;
}

interface Env {
  engine: AlertEngine;
  db: Database;
  signals: FakeSignals;
  clock: Clock;
  /** Another engine on the same database (a restart). */
  reopen(opts?: Partial<AlertEngineOptions>): AlertEngine;
}

async function withEngine(target: () => Promise<Target>, opts: Partial<AlertEngineOptions>, fn: (env: Env) => Promise<void>): Promise<void> {
  const t = await target();
  const db = await openDatabase(t.url);
  const signals = new FakeSignals();
  const clock = new Clock();
  const engines: AlertEngine[] = [];
  const make = (o: Partial<AlertEngineOptions> = {}): AlertEngine => {
    const e = new AlertEngine({ database: db, signals, now: clock.now, retry: { attempts: 4, baseMs: 10 }, ...opts, ...o });
    engines.push(e);
    return e;
  };
  try {
    await fn({ engine: make(), db, signals, clock, reopen: make });
  } finally {
    for (const e of engines) await e.close();
    await db.close();
    await t.cleanup();
  }
}

interface Received {
  method: string;
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}
type Reply = { status: number; headers?: Record<string, string> } | 'hang';

/** A real HTTP receiver on 127.0.0.1: replies are taken in order (then 200); 'hang' never answers. */
class Receiver {
  readonly received: Received[] = [];
  /** Resolvers waiting for a number of receipts. */
  readonly #waiters: Array<{ n: number; resolve: () => void }> = [];
  readonly replies: Reply[] = [];
  readonly #hung: ServerResponse[] = [];
  readonly #server: Server;
  url = '';

  private constructor() {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.received.push({ method: req.method ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() });
        for (const w of this.#waiters.filter((x) => this.received.length >= x.n)) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          w.resolve();
        }
        const reply = this.replies.shift() ?? { status: 200 };
        if (reply === 'hang') {
          this.#hung.push(res);
          return;
        }
        res.writeHead(reply.status, { 'content-type': 'text/plain', ...reply.headers });
        res.end('ok');
      });
    });
  }

  static async start(): Promise<Receiver> {
    const r = new Receiver();
    await new Promise<void>((resolve) => r.#server.listen(0, '127.0.0.1', resolve));
    r.url = `http://127.0.0.1:${(r.#server.address() as AddressInfo).port}/hook`;
    return r;
  }

  /** Resolves once `n` requests have been received (an event, not a poll: the test runner's timeout bounds a hang). */
  receivedAtLeast(n: number): Promise<void> {
    if (this.received.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }

  bodies(): Record<string, unknown>[] {
    return this.received.map((r) => JSON.parse(r.body) as Record<string, unknown>);
  }

  async close(): Promise<void> {
    for (const res of this.#hung) res.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

async function withReceiver(fn: (r: Receiver) => Promise<void>): Promise<void> {
  const r = await Receiver.start();
  try {
    await fn(r);
  } finally {
    await r.close();
  }
}

/** A loopback URL nothing listens on. */
async function deadUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return `http://127.0.0.1:${port}/hook`;
}

function rule(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { id: 'fraud-p99', kind: 'latency_p99', model: 'fraud', threshold: 250, ...over };
}

/** Independent check of the signature, as a receiver would do it. */
function signatureOk(r: Received, secret: string): boolean {
  const ts = String(r.headers['x-switchyard-timestamp']);
  const want = Buffer.from(`sha256=${createHmac('sha256', secret).update(`${ts}.${r.body}`).digest('hex')}`);
  const got = Buffer.from(String(r.headers['x-switchyard-signature']));
  return want.length === got.length && timingSafeEqual(want, got);
}

function badRequest(fn: () => unknown, ...fields: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isSwitchyardError(e), String(e));
    assert.equal(e.code, 'SY_ERR_BAD_REQUEST');
    assert.equal(e.status, 400);
    for (const f of fields) assert.match(e.message, new RegExp(`(^|[ ;])${f.replace(/\./g, '\\.')}: `), `message names ${f}: ${e.message}`);
    return true;
  });
}

async function firing(env: Env, id: string, value = 999): Promise<void> {
  env.signals.values.set(id, value);
  await env.engine.evaluate();
}

// ── rule validation ──

describe('parseAlertRule', () => {
  it('fills defaults and keeps the given fields', () => {
    assert.deepEqual(parseAlertRule(rule()), { id: 'fraud-p99', kind: 'latency_p99', model: 'fraud', threshold: 250, forMs: 0, enabled: true });
    assert.deepEqual(parseAlertRule({ id: 'age.drift_1', kind: 'feature_drift', model: 'fraud', feature: 'age', threshold: 0.2 }), {
      id: 'age.drift_1',
      kind: 'feature_drift',
      model: 'fraud',
      feature: 'age',
      metric: 'psi',
      threshold: 0.2,
      forMs: 0,
      enabled: true,
    });
    assert.equal(parseAlertRule({ id: 'q', kind: 'quality', model: 'm', threshold: 0.1 }).metric, 'missing_rate');
    assert.equal(parseAlertRule({ id: 'q', kind: 'quality', model: 'm', threshold: 0.1, metric: 'nan_rate' }).metric, 'nan_rate');
    assert.equal(parseAlertRule({ id: 'd', kind: 'drift', model: 'm', threshold: 0.3 }).metric, undefined);
    const full = {
      id: 'E',
      kind: 'error_rate',
      model: 'm',
      version: 3,
      threshold: 0.05,
      forMs: 60_000,
      enabled: false,
      description: 'errors',
      webhook: { url: 'https://hooks.example.com/a?b=c', secret: 's' },
    };
    assert.deepEqual(parseAlertRule(full), full);
  });

  it('rejects bad rules with a 400 naming each bad field', () => {
    badRequest(() => parseAlertRule(rule({ id: '-bad' })), 'id');
    badRequest(() => parseAlertRule(rule({ id: 'x'.repeat(65) })), 'id');
    badRequest(() => parseAlertRule(rule({ kind: 'cpu' })), 'kind');
    badRequest(() => parseAlertRule(rule({ model: '' })), 'model');
    badRequest(() => parseAlertRule(rule({ threshold: undefined })), 'threshold');
    badRequest(() => parseAlertRule(rule({ threshold: '1' })), 'threshold');
    badRequest(() => parseAlertRule(rule({ threshold: Number.NaN })), 'threshold');
    badRequest(() => parseAlertRule(rule({ threshold: -1 })), 'threshold');
    badRequest(() => parseAlertRule(rule({ kind: 'error_rate', threshold: 2 })), 'threshold');
    badRequest(() => parseAlertRule(rule({ forMs: -5 })), 'forMs');
    badRequest(() => parseAlertRule(rule({ forMs: 1.5 })), 'forMs');
    badRequest(() => parseAlertRule(rule({ version: 0 })), 'version');
    badRequest(() => parseAlertRule(rule({ enabled: 'yes' })), 'enabled');
    badRequest(() => parseAlertRule(rule({ webhook: { url: 'ftp://example.com/x' } })), 'webhook.url');
    badRequest(() => parseAlertRule(rule({ webhook: { url: 'not a url' } })), 'webhook.url');
    badRequest(() => parseAlertRule(rule({ webhook: { url: 'http://x.example', secret: '' } })), 'webhook.secret');
    badRequest(() => parseAlertRule(rule({ webhook: { url: 'http://x.example', token: 't' } })), 'webhook.token');
    badRequest(() => parseAlertRule(rule({ metric: 'psi' })), 'metric');
    badRequest(() => parseAlertRule(rule({ feature: 'age' })), 'feature');
    badRequest(() => parseAlertRule(rule({ kind: 'feature_drift', metric: 'missing_rate' })), 'metric');
    badRequest(() => parseAlertRule(rule({ kind: 'quality', metric: 'psi' })), 'metric');
    badRequest(() => parseAlertRule(rule({ kind: 'quality', metric: 'mean' })), 'metric');
    badRequest(() => parseAlertRule(rule({ colour: 'red' })), 'colour');
    badRequest(() => parseAlertRule(null), '\\(rule\\)');
    badRequest(() => parseAlertRule([]), '\\(rule\\)');
    // Several at once: every one is named.
    badRequest(() => parseAlertRule({ id: '', kind: 'x', model: 'm', threshold: 'high', forMs: -1, extra: 1 }), 'id', 'kind', 'threshold', 'forMs', 'extra');
  });
});

describe('webhook signature helpers', () => {
  it('signWebhook is HMAC-SHA256 over "timestamp.body"; verifyWebhook checks it and the timestamp', () => {
    const body = '{"a":1}';
    const sig = signWebhook(SECRET, 1_700_000_000, body);
    assert.equal(sig, `sha256=${createHmac('sha256', SECRET).update(`1700000000.${body}`).digest('hex')}`);
    assert.equal(verifyWebhook(SECRET, '1700000000', sig, body, { nowS: 1_700_000_100 }), true);
    assert.equal(verifyWebhook('other', '1700000000', sig, body, { nowS: 1_700_000_100 }), false);
    assert.equal(verifyWebhook(SECRET, '1700000000', sig, '{"a":2}', { nowS: 1_700_000_100 }), false);
    assert.equal(verifyWebhook(SECRET, '1700000000', sig, body, { nowS: 1_700_000_301 }), false, 'stale');
    assert.equal(verifyWebhook(SECRET, '1700000000', 'sha256=00', body, { nowS: 1_700_000_000 }), false);
    assert.equal(verifyWebhook(SECRET, 'abc', sig, body, { nowS: 1_700_000_000 }), false);
  });
});

// ── the engine ──

function engineSuite(target: () => Promise<Target>): void {
  it('inactive → pending → firing after forMs → resolved; one event per transition', () =>
    withEngine(target, {}, async (env) => {
      const { engine, signals, clock } = env;
      await engine.putRule(rule({ forMs: 60_000 }), 'admin');
      assert.deepEqual(engine.states(), [{ rule: 'fraud-p99', state: 'inactive', since: null, value: null }]);

      await engine.evaluate(); // no data yet
      assert.equal(engine.states()[0]?.state, 'inactive');

      signals.values.set('fraud-p99', 300);
      await engine.evaluate();
      assert.deepEqual(engine.states(), [{ rule: 'fraud-p99', state: 'pending', since: new Date(T0).toISOString(), value: 300 }]);

      clock.t = T0 + 59_999;
      await engine.evaluate();
      assert.equal(engine.states()[0]?.state, 'pending');
      assert.deepEqual(await engine.events(), []);

      clock.t = T0 + 60_000;
      signals.values.set('fraud-p99', 312.5);
      await engine.evaluate();
      assert.deepEqual(engine.states(), [{ rule: 'fraud-p99', state: 'firing', since: new Date(T0 + 60_000).toISOString(), value: 312.5 }]);
      let events = await engine.events();
      assert.equal(events.length, 1);
      const fired = events[0];
      assert.ok(fired);
      assert.equal(fired.rule, 'fraud-p99');
      assert.equal(fired.state, 'firing');
      assert.equal(fired.at, new Date(T0 + 60_000).toISOString());
      assert.equal(fired.value, 312.5);
      assert.equal(fired.delivery, 'none');
      assert.equal(fired.deliveryDetail, null);
      assert.match(fired.message, /p99 latency \(ms\) of model "fraud" is 312\.5, above the threshold 250 for 60 s/);

      // Still above, or no data: stays firing, no new event.
      for (const v of [400, null, 251, Number.NaN]) {
        clock.t += 15_000;
        signals.values.set('fraud-p99', v);
        await engine.evaluate();
        assert.equal(engine.states()[0]?.state, 'firing');
      }
      assert.equal((await engine.events()).length, 1);
      assert.equal(engine.states()[0]?.value, null, 'NaN reads as no data');

      clock.t = T0 + 200_000;
      signals.values.set('fraud-p99', 250); // at the threshold: not above
      await engine.evaluate();
      assert.deepEqual(engine.states(), [{ rule: 'fraud-p99', state: 'inactive', since: null, value: 250 }]);
      events = await engine.events();
      assert.deepEqual(
        events.map((e) => e.state),
        ['resolved', 'firing'],
      );
      assert.ok(events[0]);
      assert.equal(events[0].at, new Date(T0 + 200_000).toISOString());
      assert.equal(events[0].value, 250);
      assert.match(events[0].message, /is 250, at or below the threshold 250/);
      assert.ok(events[0].id > fired.id);

      // Pending that drops back below never fires.
      clock.t += 1000;
      signals.values.set('fraud-p99', 500);
      await engine.evaluate();
      assert.equal(engine.states()[0]?.state, 'pending');
      clock.t += 120_000;
      signals.values.set('fraud-p99', 10);
      await engine.evaluate();
      assert.equal(engine.states()[0]?.state, 'inactive');
      // Above again: the hold starts over.
      clock.t += 1000;
      signals.values.set('fraud-p99', 500);
      await engine.evaluate();
      clock.t += 59_000;
      await engine.evaluate();
      assert.equal(engine.states()[0]?.state, 'pending');
      assert.equal((await engine.events()).length, 2);
    }));

  it('forMs 0 fires at once; rules are evaluated independently; a throwing signal reads as no data', () =>
    withEngine(target, {}, async (env) => {
      const { engine, signals } = env;
      await engine.putRule(rule({ id: 'b-errors', kind: 'error_rate', threshold: 0.05 }), 'admin');
      await engine.putRule(rule({ id: 'a-drift', kind: 'drift', threshold: 0.3 }), 'admin');
      await engine.putRule(rule({ id: 'c-age', kind: 'feature_drift', feature: 'age', threshold: 0.2, version: 2 }), 'admin');
      signals.values.set('b-errors', 0.2);
      signals.values.set('a-drift', 0.1);
      signals.values.set('c-age', new Error('no reference profile'));
      await engine.evaluate();
      assert.deepEqual(
        engine.states().map((s) => [s.rule, s.state]),
        [
          ['a-drift', 'inactive'],
          ['b-errors', 'firing'],
          ['c-age', 'inactive'],
        ],
      );
      const events = await engine.events();
      assert.equal(events.length, 1);
      assert.match(events[0]?.message ?? '', /^error rate of model "fraud" is 0\.2, above the threshold 0\.05$/);
      signals.values.set('c-age', 0.25);
      await engine.evaluate();
      const [age] = await engine.events({ rule: 'c-age' });
      assert.match(age?.message ?? '', /^psi drift of feature "age" of model "fraud" version 2 is 0\.25, above the threshold 0\.2$/);
    }));

  it('rules: put (create/replace), get, list, delete; 404s', () =>
    withEngine(target, {}, async (env) => {
      const { engine, db, clock } = env;
      const r = await engine.putRule(rule({ id: 'z', webhook: { url: 'http://127.0.0.1:9/x', secret: SECRET } }), 'alice');
      assert.equal(r.forMs, 0);
      await engine.putRule(rule({ id: 'a' }), 'alice');
      clock.t = T0 + 5000;
      await engine.putRule(rule({ id: 'a', threshold: 100, description: 'tighter' }), 'bob');
      assert.deepEqual(await engine.getRule('a'), {
        id: 'a',
        kind: 'latency_p99',
        model: 'fraud',
        threshold: 100,
        forMs: 0,
        enabled: true,
        description: 'tighter',
      });
      assert.deepEqual((await engine.getRule('z')).webhook, { url: 'http://127.0.0.1:9/x', secret: SECRET });
      assert.deepEqual(
        (await engine.listRules()).map((x) => x.id),
        ['a', 'z'],
      );
      const row = await db.db.selectFrom('alert_rules').selectAll().where('id', '=', 'a').executeTakeFirstOrThrow();
      assert.equal(row.created_by, 'alice', 'replacing keeps the creator');
      assert.equal(Number(row.created_at), T0);
      assert.equal(Number(row.updated_at), T0 + 5000);
      await assert.rejects(engine.putRule(rule({ id: 'a', threshold: 'x' }), 'bob'), (e: unknown) => isSwitchyardError(e) && e.status === 400);
      await engine.deleteRule('a');
      await assert.rejects(engine.getRule('a'), (e: unknown) => isSwitchyardError(e) && e.status === 404 && /alert rule "a" not found/.test(e.message));
      await assert.rejects(engine.deleteRule('a'), (e: unknown) => isSwitchyardError(e) && e.status === 404);
      assert.deepEqual(
        (await engine.listRules()).map((x) => x.id),
        ['z'],
      );
    }));

  it('disabling or deleting a firing rule resolves it; rules changed in the store are picked up', () =>
    withEngine(target, {}, async (env) => {
      const { engine, signals } = env;
      await engine.putRule(rule({ id: 'one' }), 'admin');
      await engine.putRule(rule({ id: 'two' }), 'admin');
      await firing(env, 'one');
      signals.values.set('two', 999);
      await engine.evaluate();
      assert.deepEqual(
        engine.states().map((s) => s.state),
        ['firing', 'firing'],
      );

      await engine.putRule(rule({ id: 'one', enabled: false }), 'admin');
      await engine.evaluate();
      assert.deepEqual(
        engine.states().map((s) => [s.rule, s.state]),
        [
          ['one', 'inactive'],
          ['two', 'firing'],
        ],
      );
      const [disabled] = await engine.events({ rule: 'one' });
      assert.equal(disabled?.state, 'resolved');
      assert.equal(disabled?.value, null);
      assert.match(disabled?.message ?? '', /rule disabled$/);
      await engine.evaluate();
      assert.equal((await engine.events({ rule: 'one' })).length, 2, 'a disabled rule stays quiet');

      await engine.deleteRule('two');
      const [deleted] = await engine.events({ rule: 'two' });
      assert.equal(deleted?.state, 'resolved');
      assert.match(deleted?.message ?? '', /rule deleted$/);
      assert.deepEqual(
        engine.states().map((s) => s.rule),
        ['one'],
      );

      // Another engine (replica) edits the store: this one sees it at its next evaluation.
      const other = env.reopen();
      await other.putRule(rule({ id: 'three' }), 'admin');
      signals.values.set('three', 999);
      await engine.evaluate();
      assert.equal(engine.states().find((s) => s.rule === 'three')?.state, 'firing');
      await env.db.db.deleteFrom('alert_rules').where('id', '=', 'three').execute();
      await engine.evaluate();
      const [gone] = await engine.events({ rule: 'three' });
      assert.equal(gone?.state, 'resolved');
      assert.match(gone?.message ?? '', /rule deleted$/);
    }));

  it('a restarted engine recovers firing states: no duplicate firing event, then resolves', () =>
    withEngine(target, {}, async (env) => {
      await env.engine.putRule(rule({ forMs: 30_000 }), 'admin');
      env.signals.values.set('fraud-p99', 999);
      await env.engine.evaluate();
      env.clock.t += 30_000;
      await env.engine.evaluate();
      assert.equal((await env.engine.events()).length, 1);
      await env.engine.close();

      const again = env.reopen();
      await again.start();
      assert.deepEqual(again.states(), [{ rule: 'fraud-p99', state: 'firing', since: new Date(T0 + 30_000).toISOString(), value: 999 }]);
      env.clock.t += 60_000;
      await again.evaluate();
      assert.equal((await again.events()).length, 1);
      env.signals.values.set('fraud-p99', 1);
      await again.evaluate();
      assert.deepEqual(
        (await again.events()).map((e) => e.state),
        ['resolved', 'firing'],
      );
      await again.evaluate();
      assert.equal((await again.events()).length, 2);
      // evaluate() after close() does nothing.
      await env.engine.evaluate();
    }));

  it('events: newest first, rule filter, limit, id cursor, bad queries', () =>
    withEngine(target, {}, async (env) => {
      const { engine, signals, clock } = env;
      await engine.putRule(rule({ id: 'x' }), 'admin');
      await engine.putRule(rule({ id: 'y' }), 'admin');
      for (let i = 0; i < 3; i++) {
        clock.t += 1000;
        signals.values.set('x', 999);
        signals.values.set('y', i === 1 ? 999 : 0);
        await engine.evaluate();
        clock.t += 1000;
        signals.values.set('x', 0);
        await engine.evaluate();
      }
      const all = await engine.events();
      assert.equal(all.length, 8);
      assert.deepEqual(
        all.map((e) => e.id),
        [...all.map((e) => e.id)].sort((a, b) => b - a),
      );
      const xs = await engine.events({ rule: 'x' });
      assert.equal(xs.length, 6);
      assert.ok(xs.every((e) => e.rule === 'x'));
      assert.deepEqual(
        (await engine.events({ rule: 'y' })).map((e) => e.state),
        ['resolved', 'firing'],
      );
      const page1 = await engine.events({ limit: 3 });
      const page2 = await engine.events({ limit: 3, before: page1.at(-1)?.id ?? 0 });
      assert.deepEqual(
        [...page1, ...page2].map((e) => e.id),
        all.slice(0, 6).map((e) => e.id),
      );
      assert.deepEqual(await engine.events({ limit: 0 }), []);
      assert.deepEqual(await engine.events({ rule: 'nope' }), []);
      await assert.rejects(engine.events({ limit: -1 }), (e: unknown) => isSwitchyardError(e) && e.status === 400);
      await assert.rejects(engine.events({ limit: 1.5 }), (e: unknown) => isSwitchyardError(e) && e.status === 400);
    }));

  it('start() evaluates on its timer', () =>
    withEngine(target, { now: Date.now, evalMs: 20 }, async (env) => {
      await env.engine.putRule(rule({ id: 'tick', kind: 'error_rate', threshold: 0.01 }), 'admin');
      env.signals.values.set('tick', 0.5);
      await env.engine.start();
      // The timer is what is under test, so this polls; no deadline (the test runner's timeout bounds a hang).
      while ((await env.engine.events()).length === 0) await new Promise((r) => setTimeout(r, 20));
      assert.equal((await env.engine.events()).length, 1);
      assert.ok(env.signals.calls.length >= 1);
    }));

  // ── webhooks against a real HTTP receiver ──

  it('webhook: JSON payload, headers and a valid HMAC signature; delivery recorded', () =>
    withReceiver((recv) =>
      withEngine(target, {}, async (env) => {
        const { engine } = env;
        await engine.putRule(rule({ forMs: 0, description: 'p99 SLO', webhook: { url: recv.url, secret: SECRET } }), 'admin');
        await firing(env, 'fraud-p99', 312.5);
        const [pending] = await engine.events();
        assert.ok(pending);
        assert.ok(pending.delivery === 'pending' || pending.delivery === 'delivered');
        await engine.idle();

        assert.equal(recv.received.length, 1);
        const req = recv.received[0];
        assert.ok(req);
        assert.equal(req.method, 'POST');
        assert.match(String(req.headers['content-type']), /^application\/json/);
        assert.equal(req.headers['x-switchyard-event'], 'alert');
        const ts = Number(req.headers['x-switchyard-timestamp']);
        assert.ok(Number.isInteger(ts) && Math.abs(ts - Date.now() / 1000) < 60, `timestamp ${ts} is the wall clock in seconds`);
        assert.match(String(req.headers['x-switchyard-signature']), /^sha256=[0-9a-f]{64}$/);
        assert.ok(signatureOk(req, SECRET), 'signature verifies with the secret');
        assert.ok(!signatureOk(req, 'wrong-secret'));
        assert.ok(verifyWebhook(SECRET, String(req.headers['x-switchyard-timestamp']), String(req.headers['x-switchyard-signature']), req.body));

        const [ev] = await engine.events();
        assert.ok(ev);
        assert.deepEqual(JSON.parse(req.body), {
          version: 1,
          rule: {
            id: 'fraud-p99',
            kind: 'latency_p99',
            model: 'fraud',
            threshold: 250,
            forMs: 0,
            webhook: { url: recv.url },
            enabled: true,
            description: 'p99 SLO',
          },
          state: 'firing',
          value: 312.5,
          threshold: 250,
          message: ev.message,
          at: new Date(T0).toISOString(),
          eventId: ev.id,
        });
        assert.ok(!req.body.includes(SECRET), 'the secret is never sent');
        assert.equal(ev.delivery, 'delivered');
        assert.equal(ev.deliveryDetail, 'HTTP 200 after 1 attempt');

        // Resolved goes to the same hook.
        env.signals.values.set('fraud-p99', 1);
        await engine.evaluate();
        await engine.idle();
        const bodies = recv.bodies();
        assert.equal(bodies.length, 2);
        assert.equal(bodies[1]?.['state'], 'resolved');
        assert.equal(bodies[1]?.['value'], 1);
        assert.deepEqual(
          (await engine.events()).map((e) => e.delivery),
          ['delivered', 'delivered'],
        );
      }),
    ));

  it('webhook without a secret: no signature header', () =>
    withReceiver((recv) =>
      withEngine(target, {}, async (env) => {
        await env.engine.putRule(rule({ webhook: { url: recv.url } }), 'admin');
        await firing(env, 'fraud-p99');
        await env.engine.idle();
        assert.equal(recv.received.length, 1);
        assert.equal(recv.received[0]?.headers['x-switchyard-signature'], undefined);
        assert.ok(recv.received[0]?.headers['x-switchyard-timestamp']);
      }),
    ));

  it('webhook: retried with backoff after 500s, then delivered; each attempt signed afresh, same eventId', () =>
    withReceiver((recv) =>
      withEngine(target, { retry: { attempts: 4, baseMs: 60 } }, async (env) => {
        recv.replies.push({ status: 500 }, { status: 502 });
        await env.engine.putRule(rule({ webhook: { url: recv.url, secret: SECRET } }), 'admin');
        await firing(env, 'fraud-p99');
        await env.engine.idle();
        assert.equal(recv.received.length, 3);
        assert.ok(recv.received.every((r) => signatureOk(r, SECRET)));
        const ids = new Set(recv.bodies().map((b) => b['eventId']));
        assert.equal(ids.size, 1);
        const [a, b, c] = recv.received.map((r) => r.at);
        assert.ok(a !== undefined && b !== undefined && c !== undefined);
        assert.ok(b - a >= 50, `first backoff ~60 ms (was ${b - a})`);
        assert.ok(c - b >= 110, `second backoff ~120 ms (was ${c - b})`);
        const [ev] = await env.engine.events();
        assert.equal(ev?.delivery, 'delivered');
        assert.equal(ev?.deliveryDetail, 'HTTP 200 after 3 attempts');
      }),
    ));

  it('webhook: 429 honours Retry-After (seconds)', () =>
    withReceiver((recv) =>
      withEngine(target, { retry: { attempts: 3, baseMs: 5 } }, async (env) => {
        recv.replies.push({ status: 429, headers: { 'retry-after': '1' } });
        await env.engine.putRule(rule({ webhook: { url: recv.url } }), 'admin');
        await firing(env, 'fraud-p99');
        await env.engine.idle();
        assert.equal(recv.received.length, 2);
        const gap = (recv.received[1]?.at ?? 0) - (recv.received[0]?.at ?? 0);
        assert.ok(gap >= 950, `waited Retry-After 1 s, not the 5 ms backoff (was ${gap} ms)`);
        const [ev] = await env.engine.events();
        assert.equal(ev?.delivery, 'delivered');
        assert.equal(ev?.deliveryDetail, 'HTTP 200 after 2 attempts');
      }),
    ));

  it('webhook: 408 is retried; 400 is not', () =>
    withReceiver((recv) =>
      withEngine(target, {}, async (env) => {
        recv.replies.push({ status: 408 }, { status: 400 });
        await env.engine.putRule(rule({ webhook: { url: recv.url } }), 'admin');
        await firing(env, 'fraud-p99');
        await env.engine.idle();
        assert.equal(recv.received.length, 2);
        const [ev] = await env.engine.events();
        assert.equal(ev?.delivery, 'failed');
        assert.equal(ev?.deliveryDetail, 'HTTP 400 after 2 attempts (not retried)');
      }),
    ));

  it('webhook: failure recorded once the attempts are used up (5xx, connection refused)', () =>
    withReceiver((recv) =>
      withEngine(target, { retry: { attempts: 3, baseMs: 5 } }, async (env) => {
        recv.replies.push({ status: 503 }, { status: 503 }, { status: 503 }, { status: 200 });
        await env.engine.putRule(rule({ id: 'a', webhook: { url: recv.url } }), 'admin');
        await env.engine.putRule(rule({ id: 'b', webhook: { url: await deadUrl() } }), 'admin');
        env.signals.values.set('a', 999);
        env.signals.values.set('b', 999);
        await env.engine.evaluate();
        await env.engine.idle();
        assert.equal(recv.received.length, 3, 'three attempts, no fourth');
        const [a] = await env.engine.events({ rule: 'a' });
        assert.equal(a?.delivery, 'failed');
        assert.equal(a?.deliveryDetail, 'HTTP 503 after 3 attempts');
        const [b] = await env.engine.events({ rule: 'b' });
        assert.equal(b?.delivery, 'failed');
        assert.match(b?.deliveryDetail ?? '', /ECONNREFUSED.* after 3 attempts$/);
      }),
    ));

  // A receiver that never answers: each attempt times out whatever the machine's speed (the outcome does not
  // depend on how long anything took). That evaluation does not wait for a delivery is shown in the queue test.
  it('webhook: failure recorded once every attempt timed out', () =>
    withReceiver((recv) =>
      withEngine(target, { retry: { attempts: 3, baseMs: 5 }, webhookTimeoutMs: 150 }, async (env) => {
        recv.replies.push('hang', 'hang', 'hang');
        await env.engine.putRule(rule({ id: 'c', webhook: { url: recv.url } }), 'admin');
        env.signals.values.set('c', 999);
        await env.engine.evaluate();
        await env.engine.idle();
        const [c] = await env.engine.events({ rule: 'c' });
        assert.equal(c?.delivery, 'failed');
        assert.match(c?.deliveryDetail ?? '', /timed out after 150 ms after 3 attempts$/);
      }),
    ));

  // No per-attempt timeout that a loaded machine could reach (10 min): the hung deliveries end only by close().
  it("webhook: one rule's events are delivered in order; evaluate does not wait; queue bound; close() aborts and records", () =>
    withReceiver((recv) =>
      withEngine(target, { retry: { attempts: 4, baseMs: 30 }, maxQueue: 3, webhookTimeoutMs: 600_000 }, async (env) => {
        const { engine, signals } = env;
        recv.replies.push({ status: 500 });
        await engine.putRule(rule({ id: 'ord', webhook: { url: recv.url } }), 'admin');
        await firing(env, 'ord');
        signals.values.set('ord', 0);
        await engine.evaluate(); // resolved while firing is still being retried
        await engine.idle();
        assert.deepEqual(
          recv.bodies().map((b) => b['state']),
          ['firing', 'firing', 'resolved'],
        );
        assert.deepEqual(
          (await engine.events({ rule: 'ord' })).map((e) => e.delivery),
          ['delivered', 'delivered'],
        );

        // Three deliveries hang; the fourth event finds the queue full.
        recv.received.length = 0;
        recv.replies.push('hang', 'hang', 'hang');
        for (const id of ['q1', 'q2', 'q3', 'q4']) {
          await engine.putRule(rule({ id, webhook: { url: recv.url } }), 'admin');
          signals.values.set(id, 999);
        }
        await engine.evaluate();
        for (const id of ['q1', 'q2', 'q3']) {
          const [ev] = await engine.events({ rule: id });
          assert.equal(ev?.delivery, 'pending', `${id}: evaluate returned while its delivery hangs`);
        }
        await recv.receivedAtLeast(3);
        const [q4] = await engine.events({ rule: 'q4' });
        assert.equal(q4?.delivery, 'failed');
        assert.equal(q4?.deliveryDetail, 'queue full');

        await engine.close();
        for (const id of ['q1', 'q2', 'q3']) {
          const [ev] = await engine.events({ rule: id });
          assert.equal(ev?.delivery, 'failed', id);
          assert.equal(ev?.deliveryDetail, 'engine closed after 1 attempt', id);
        }
        assert.equal(recv.received.length, 3);
      }),
    ));
}

describe('alert engine on SQLite', () => {
  engineSuite(sqliteTarget);
});

const pgDown = await postgresReachable();
if (pgDown !== null && inCi) {
  describe('alert engine on Postgres', () => {
    it('needs Postgres on 127.0.0.1:5432 in CI', () => assert.fail(`Postgres is unreachable at ${PG_BASE}: ${pgDown}`));
  });
} else {
  const skip = pgDown === null ? false : `Postgres unreachable at ${PG_BASE} (${pgDown}); set CI=true to make this fail`;
  describe('alert engine on Postgres', { skip }, () => {
    engineSuite(postgresTarget);
  });
}

// ── Prometheus rules ──

const RULES_DIR = fileURLToPath(new URL('../../deploy/prometheus/', import.meta.url));

function findPromtool(): string | null {
  const env = process.env['PROMTOOL'];
  if (env !== undefined && env !== '') return env;
  const probe = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (probe.error === undefined) return 'promtool';
  return existsSync('/usr/bin/promtool') ? '/usr/bin/promtool' : null;
}

const promtool = findPromtool();
describe(
  'Prometheus alerting rules (deploy/prometheus)',
  { skip: promtool === null && !inCi ? 'promtool is not installed; set CI=true to make this fail' : false },
  () => {
    const run = (args: string[]): { status: number | null; out: string } => {
      assert.ok(promtool !== null, 'promtool must be installed in CI (apt-get install prometheus, or set PROMTOOL)');
      const r = spawnSync(promtool, args, { cwd: RULES_DIR, encoding: 'utf8' });
      assert.equal(r.error, undefined, String(r.error));
      return { status: r.status, out: `${r.stdout}${r.stderr}` };
    };

    it('promtool check rules switchyard-rules.yml', () => {
      const r = run(['check', 'rules', 'switchyard-rules.yml']);
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, /SUCCESS: \d+ rules found/);
    });

    it('promtool test rules switchyard-rules.test.yml', () => {
      const r = run(['test', 'rules', 'switchyard-rules.test.yml']);
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, /SUCCESS/);
    });
  },
);
