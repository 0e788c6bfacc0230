/**
 * @module
 * Alerts on model monitoring signals. Rules (drift, feature drift, data quality, p99 latency, error rate) live in
 * the metadata store (`alert_rules`); the engine evaluates every enabled rule periodically through
 * inactive → pending → firing, records each firing/resolved transition in `alert_events` and POSTs it to the
 * rule's webhook (HMAC-signed, retried with backoff) off the evaluation path.
 * Rules are validated in alert-rules.ts; webhook signing and delivery live in alert-webhook.ts.
 *
 * Each engine evaluates on its own: run one per deployment, or every replica records and sends its own events.
 * Firing states survive a restart (recovered from the latest event of each rule); pending timers do not.
 */
import { sql, type Kysely, type Selectable } from 'kysely';
import type { Logger } from 'pino';
import { err } from '../errors.js';
import type { AlertEventsTable, Database, DB } from '../storage/index.js';
import { parseAlertRule, type AlertRule, type AlertSignals } from './alert-rules.js';
import { WebhookDelivery, type WebhookEvent } from './alert-webhook.js';

export { parseAlertRule, redactRule } from './alert-rules.js';
export type { AlertKind, AlertRule, AlertSignals, DriftMetric, QualityMetric } from './alert-rules.js';
export { MAX_RETRY_AFTER_MS, signWebhook, verifyWebhook } from './alert-webhook.js';

export interface AlertState {
  readonly rule: string;
  readonly state: 'inactive' | 'pending' | 'firing';
  /** ISO time the current pending/firing state began; null when inactive. */
  readonly since: string | null;
  /** Value at the latest evaluation (null: no data, or not evaluated yet). */
  readonly value: number | null;
}

export interface AlertEventRecord {
  readonly id: number;
  readonly rule: string;
  readonly state: 'firing' | 'resolved';
  /** ISO-8601 UTC. */
  readonly at: string;
  readonly value: number | null;
  readonly message: string;
  /** delivered | failed | none (no webhook) | pending */
  readonly delivery: string;
  /** e.g. "HTTP 200 after 2 attempts", "HTTP 400 after 1 attempt (not retried)", "queue full". */
  readonly deliveryDetail: string | null;
}

export interface AlertEventQuery {
  rule?: string;
  /** @default 100 (at most 1000) */
  limit?: number;
  /** Id cursor: only events with id < before. */
  before?: number;
}

export interface AlertEngineOptions {
  database: Database;
  signals: AlertSignals;
  /** Evaluation period. @default 15000 (timer unref'd) */
  evalMs?: number;
  logger?: Logger;
  fetchImpl?: typeof fetch;
  /** Webhook attempts in all (default 4) and the first backoff (default 500 ms, doubling). */
  retry?: { attempts?: number; baseMs?: number };
  /** Per-attempt webhook timeout. @default 5000 */
  webhookTimeoutMs?: number;
  /** Deliveries queued or in flight at most; beyond, an event is recorded as failed "queue full". @default 100 */
  maxQueue?: number;
  /** Clock for evaluation and event times (webhook timestamps use the wall clock). */
  now?: () => number;
}

export const DEFAULT_EVAL_MS = 15_000;
export const DEFAULT_EVENT_LIMIT = 100;
export const MAX_EVENT_LIMIT = 1000;

interface RuleState {
  state: 'inactive' | 'pending' | 'firing';
  since: number | null;
  value: number | null;
  /** The rule as last evaluated (for resolving after it is deleted). */
  rule: AlertRule;
}

function toEvent(r: Selectable<AlertEventsTable>): AlertEventRecord {
  return {
    id: Number(r.id),
    rule: r.rule,
    state: r.state === 'resolved' ? 'resolved' : 'firing',
    at: new Date(Number(r.at)).toISOString(),
    value: r.value === null ? null : Number(r.value),
    message: r.message,
    delivery: r.delivery,
    deliveryDetail: r.delivery_detail,
  };
}

function fmt(v: number): string {
  return String(Number(v.toPrecision(6)));
}

/** What the rule measures, for messages: `p99 latency (ms) of model "m" version 2`. */
function signalName(rule: AlertRule): string {
  const of = `model "${rule.model}"${rule.version === undefined ? '' : ` version ${rule.version}`}`;
  const feature = rule.feature === undefined ? 'the worst feature' : `feature "${rule.feature}"`;
  switch (rule.kind) {
    case 'drift':
      return `drift of ${of}`;
    case 'feature_drift':
      return `${rule.metric ?? 'psi'} drift of ${feature} of ${of}`;
    case 'quality':
      return `${rule.metric ?? 'missing_rate'} of ${feature} of ${of}`;
    case 'latency_p99':
      return `p99 latency (ms) of ${of}`;
    case 'error_rate':
      return `error rate of ${of}`;
  }
}

/**
 * Evaluates alert rules and delivers their transitions.
 *
 * @example
 * const alerts = new AlertEngine({ database, signals: monitoring, logger });
 * await alerts.start();
 * await alerts.putRule({ id: 'fraud-p99', kind: 'latency_p99', model: 'fraud', threshold: 250, forMs: 60_000,
 *   webhook: { url: 'https://hooks.example.com/sy', secret: 's3cret' } }, 'admin');
 * // … later
 * await alerts.close();
 */
export class AlertEngine {
  readonly #db: Kysely<DB>;
  readonly #signals: AlertSignals;
  readonly #evalMs: number;
  readonly #log: Logger | null;
  readonly #webhooks: WebhookDelivery;
  readonly #now: () => number;
  #rules = new Map<string, AlertRule>();
  readonly #states = new Map<string, RuleState>();
  #init: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  /** Serializes evaluation and rule changes. */
  #lock: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(opts: AlertEngineOptions) {
    this.#db = opts.database.db;
    this.#signals = opts.signals;
    this.#evalMs = opts.evalMs ?? DEFAULT_EVAL_MS;
    this.#log = opts.logger ?? null;
    this.#webhooks = new WebhookDelivery({
      ...(opts.fetchImpl === undefined ? {} : { fetchImpl: opts.fetchImpl }),
      ...(opts.retry === undefined ? {} : { retry: opts.retry }),
      ...(opts.webhookTimeoutMs === undefined ? {} : { timeoutMs: opts.webhookTimeoutMs }),
      ...(opts.maxQueue === undefined ? {} : { maxQueue: opts.maxQueue }),
      logger: this.#log,
      record: (id, delivery, detail) => this.#setDelivery(id, delivery, detail),
    });
    this.#now = opts.now ?? Date.now;
    if (!(this.#evalMs > 0)) throw err('SY_ERR_CONFIG_INVALID', `alerts: evalMs must be positive (got ${this.#evalMs})`);
  }

  /** Load the rules (and recover firing states), then evaluate every `evalMs`. */
  async start(): Promise<void> {
    await this.#ready();
    if (this.#timer !== null || this.#closed) return;
    this.#timer = setInterval(() => {
      this.evaluate().catch((e: unknown) => this.#log?.error({ err: e }, 'alert evaluation failed'));
    }, this.#evalMs);
    this.#timer.unref();
  }

  /** Create or replace a rule (validated; 400 on a bad one). */
  async putRule(rule: unknown, actor: string): Promise<AlertRule> {
    const r = parseAlertRule(rule);
    return this.#locked(async () => {
      const now = this.#now();
      const json = JSON.stringify(r);
      await this.#db
        .insertInto('alert_rules')
        .values({ id: r.id, rule: json, created_by: actor, created_at: now, updated_at: now })
        .onConflict((oc) => oc.column('id').doUpdateSet({ rule: json, updated_at: now }))
        .execute();
      this.#rules.set(r.id, r);
      return r;
    });
  }

  /** One rule; 404 (SY_ERR_REGISTRY_NOT_FOUND) when there is none. */
  async getRule(id: string): Promise<AlertRule> {
    const row = await this.#db.selectFrom('alert_rules').select('rule').where('id', '=', id).executeTakeFirst();
    if (!row) throw err('SY_ERR_REGISTRY_NOT_FOUND', `alert rule "${id}" not found`);
    return parseAlertRule(JSON.parse(row.rule));
  }

  /** Every stored rule, by id. */
  async listRules(): Promise<AlertRule[]> {
    return [...(await this.#load()).values()];
  }

  /** Delete a rule; a firing one is resolved ("rule deleted"). 404 when there is none. */
  async deleteRule(id: string): Promise<void> {
    await this.#ready();
    await this.#locked(async () => {
      const res = await this.#db.deleteFrom('alert_rules').where('id', '=', id).executeTakeFirst();
      if (Number(res.numDeletedRows) === 0) throw err('SY_ERR_REGISTRY_NOT_FOUND', `alert rule "${id}" not found`);
      this.#rules.delete(id);
      await this.#dropState(id, 'rule deleted');
    });
  }

  /**
   * Evaluate every enabled rule now. Above the threshold: inactive → pending (→ firing once held `forMs`; at once
   * when forMs is 0); at or below: pending → inactive, firing → resolved (recorded) → inactive. A null value (no
   * data, or the signal threw) keeps the state. Disabled or deleted rules that were firing are resolved. Webhook
   * deliveries run in the background (see {@link idle}).
   */
  async evaluate(): Promise<void> {
    if (this.#closed) return;
    await this.#ready();
    await this.#locked(async () => {
      if (this.#closed) return;
      try {
        this.#rules = await this.#load();
      } catch (e) {
        this.#log?.error({ err: e }, 'alert rules: reload failed; evaluating the cached rules');
      }
      for (const id of [...this.#states.keys()]) if (!this.#rules.has(id)) await this.#dropState(id, 'rule deleted');
      for (const rule of this.#rules.values()) {
        try {
          await this.#evaluateRule(rule);
        } catch (e) {
          this.#log?.error({ err: e, rule: rule.id }, 'alert rule evaluation failed');
        }
      }
    });
  }

  /** Every rule's state, by rule id. */
  states(): AlertState[] {
    return [...this.#rules.values()]
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((r) => {
        const s = this.#states.get(r.id);
        return {
          rule: r.id,
          state: s?.state ?? 'inactive',
          since: s?.since == null ? null : new Date(s.since).toISOString(),
          value: s?.value ?? null,
        };
      });
  }

  /** Recorded transitions, newest first. */
  async events(q: AlertEventQuery = {}): Promise<AlertEventRecord[]> {
    const limit = q.limit ?? DEFAULT_EVENT_LIMIT;
    if (!Number.isInteger(limit) || limit < 0) throw err('SY_ERR_BAD_REQUEST', `alert events: "limit" must be a non-negative integer (got ${limit})`);
    if (q.before !== undefined && !Number.isFinite(q.before)) throw err('SY_ERR_BAD_REQUEST', 'alert events: "before" must be a number');
    if (limit === 0) return [];
    let sel = this.#db.selectFrom('alert_events').selectAll();
    if (q.rule !== undefined) sel = sel.where('rule', '=', q.rule);
    if (q.before !== undefined) sel = sel.where('id', '<', q.before);
    const rows = await sel.orderBy('id', 'desc').limit(Math.min(limit, MAX_EVENT_LIMIT)).execute();
    return rows.map(toEvent);
  }

  /** Resolves when no webhook delivery is queued or in flight (for tests and shutdown). */
  idle(): Promise<void> {
    return this.#webhooks.idle();
  }

  /** Stop the timer, let a running evaluation finish, abort retries and in-flight deliveries (recorded as failed) and wait for them. */
  async close(): Promise<void> {
    if (this.#closed) return this.idle();
    this.#closed = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await this.#lock.catch(() => undefined);
    await this.#webhooks.close();
  }

  // ── internals ──

  #ready(): Promise<void> {
    this.#init ??= this.#initialize().catch((e: unknown) => {
      this.#init = null;
      throw e;
    });
    return this.#init;
  }

  /** Load rules; a rule whose latest event is "firing" starts out firing (no duplicate event after a restart). */
  async #initialize(): Promise<void> {
    await this.#locked(async () => {
      this.#rules = await this.#load();
      const latest = await this.#db
        .selectFrom('alert_events')
        .selectAll()
        .where(
          'id',
          'in',
          this.#db
            .selectFrom('alert_events')
            .select(sql<number>`max(id)`.as('id'))
            .groupBy('rule'),
        )
        .execute();
      for (const row of latest) {
        const rule = this.#rules.get(row.rule);
        if (rule === undefined || row.state !== 'firing' || this.#states.has(rule.id)) continue;
        this.#states.set(rule.id, { state: 'firing', since: Number(row.at), value: row.value === null ? null : Number(row.value), rule });
      }
    });
  }

  async #load(): Promise<Map<string, AlertRule>> {
    const rows = await this.#db.selectFrom('alert_rules').select(['id', 'rule']).execute();
    // Sorted here, not in SQL: the same (code unit) order on both dialects whatever the collation.
    rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const out = new Map<string, AlertRule>();
    for (const row of rows) {
      try {
        out.set(row.id, parseAlertRule(JSON.parse(row.rule)));
      } catch (e) {
        this.#log?.error({ err: e, rule: row.id }, 'alert rule: stored rule is invalid; skipped');
      }
    }
    return out;
  }

  #locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn, fn);
    this.#lock = run.catch(() => undefined);
    return run;
  }

  #signal(rule: AlertRule): number | null {
    try {
      const v = this.#signals.value(rule);
      return typeof v === 'number' && Number.isFinite(v) ? v : null;
    } catch (e) {
      this.#log?.warn({ err: e, rule: rule.id }, 'alert signal failed; treated as no data');
      return null;
    }
  }

  async #evaluateRule(rule: AlertRule): Promise<void> {
    let s = this.#states.get(rule.id);
    if (!rule.enabled) {
      if (s !== undefined) await this.#dropState(rule.id, 'rule disabled');
      return;
    }
    if (s === undefined) {
      s = { state: 'inactive', since: null, value: null, rule };
      this.#states.set(rule.id, s);
    }
    s.rule = rule;
    const value = this.#signal(rule);
    s.value = value;
    if (value === null) return;
    const now = this.#now();
    const above = value > rule.threshold;
    const name = signalName(rule);
    if (s.state === 'firing') {
      if (above) return;
      await this.#record(rule, 'resolved', now, value, `${name} is ${fmt(value)}, at or below the threshold ${fmt(rule.threshold)}`);
      s.state = 'inactive';
      s.since = null;
      return;
    }
    if (!above) {
      s.state = 'inactive';
      s.since = null;
      return;
    }
    if (s.state === 'inactive') {
      s.state = 'pending';
      s.since = now;
    }
    if (now - (s.since ?? now) >= rule.forMs) {
      const held = rule.forMs > 0 ? ` for ${fmt(rule.forMs / 1000)} s` : '';
      await this.#record(rule, 'firing', now, value, `${name} is ${fmt(value)}, above the threshold ${fmt(rule.threshold)}${held}`);
      s.state = 'firing';
      s.since = now;
    }
  }

  /** Forget a rule's state; resolve it first when it was firing. */
  async #dropState(id: string, why: string): Promise<void> {
    const s = this.#states.get(id);
    if (s === undefined) return;
    if (s.state === 'firing') await this.#record(s.rule, 'resolved', this.#now(), null, `${signalName(s.rule)}: ${why}`);
    this.#states.delete(id);
  }

  /** Write the event (throws when the write fails, so the transition is retried next time), then queue its delivery. */
  async #record(rule: AlertRule, state: 'firing' | 'resolved', at: number, value: number | null, message: string): Promise<void> {
    const row = await this.#db
      .insertInto('alert_events')
      .values({ rule: rule.id, state, at, value, message, delivery: rule.webhook ? 'pending' : 'none', delivery_detail: null })
      .returning('id')
      .executeTakeFirstOrThrow();
    const ev: WebhookEvent = { id: Number(row.id), state, at, value, message };
    this.#log?.info({ rule: rule.id, state, value, eventId: ev.id }, `alert ${state}: ${message}`);
    if (rule.webhook) this.#webhooks.enqueue(rule, rule.webhook, ev);
  }

  async #setDelivery(id: number, delivery: 'delivered' | 'failed', detail: string): Promise<void> {
    try {
      await this.#db.updateTable('alert_events').set({ delivery, delivery_detail: detail }).where('id', '=', id).execute();
    } catch (e) {
      this.#log?.error({ err: e, eventId: id, delivery, detail }, 'alert event: recording the delivery failed');
    }
  }
}
