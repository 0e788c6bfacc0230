/**
 * @module
 * Alerts on model monitoring signals. Rules (drift, feature drift, data quality, p99 latency, error rate) live in
 * the metadata store (`alert_rules`); the engine evaluates every enabled rule periodically through
 * inactive → pending → firing, records each firing/resolved transition in `alert_events` and POSTs it to the
 * rule's webhook (HMAC-signed, retried with backoff) off the evaluation path.
 *
 * Each engine evaluates on its own: run one per deployment, or every replica records and sends its own events.
 * Firing states survive a restart (recovered from the latest event of each rule); pending timers do not.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { sql, type Kysely, type Selectable } from 'kysely';
import type { Logger } from 'pino';
import { z } from 'zod';
import { err } from '../errors.js';
import { MODEL_NAME } from '../registry/index.js';
import type { AlertEventsTable, Database, DB } from '../storage/index.js';
import { VERSION } from '../version.js';

/**
 * What a rule watches. Units are the signal source's: drift is the drift score of a model version (share of
 * drifting features), feature_drift a per-feature distance (psi, js, or the KS statistic D), quality a
 * per-feature rate (0..1), latency_p99 milliseconds, error_rate a fraction of requests (0..1).
 */
export type AlertKind = 'drift' | 'feature_drift' | 'quality' | 'latency_p99' | 'error_rate';
export type DriftMetric = 'psi' | 'js' | 'ks';
export type QualityMetric = 'missing_rate' | 'nan_rate' | 'out_of_range_rate';

export interface AlertRule {
  /** /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/ */
  readonly id: string;
  readonly kind: AlertKind;
  /** The model it watches. */
  readonly model: string;
  /** Absent: the signal source decides (every served version; the worst wins). */
  readonly version?: number;
  /** feature_drift / quality only: which feature (absent: the worst feature). */
  readonly feature?: string;
  /** feature_drift (psi | js | ks, default psi) and quality (missing_rate | nan_rate | out_of_range_rate, default missing_rate) only. */
  readonly metric?: DriftMetric | QualityMetric;
  /** Fires when the value is above it. */
  readonly threshold: number;
  /** How long the value must stay above the threshold before the rule fires. Default 0. */
  readonly forMs: number;
  /** http(s) URL; with `secret`, deliveries are signed (see {@link signWebhook}). */
  readonly webhook?: { readonly url: string; readonly secret?: string };
  /** Default true. */
  readonly enabled: boolean;
  readonly description?: string;
}

/** Where signal values come from (the monitoring service implements it): the current value, or null when there is no data yet. */
export interface AlertSignals { value(rule: AlertRule): number | null }

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
/** Longest Retry-After honoured. */
export const MAX_RETRY_AFTER_MS = 30_000;

const RULE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const KINDS = ['drift', 'feature_drift', 'quality', 'latency_p99', 'error_rate'] as const;
const DRIFT_METRICS: readonly string[] = ['psi', 'js', 'ks'];
const QUALITY_METRICS: readonly string[] = ['missing_rate', 'nan_rate', 'out_of_range_rate'];
const PER_FEATURE: readonly string[] = ['feature_drift', 'quality'];

function httpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}

const ruleSchema = z.strictObject({
  id: z.string().regex(RULE_ID, 'letters, digits, _ . - (at most 64, starting with a letter or digit)'),
  kind: z.enum(KINDS),
  model: z.string().regex(MODEL_NAME, 'a model name'),
  version: z.number().int().min(1).optional(),
  feature: z.string().min(1).max(256).optional(),
  metric: z.enum(['psi', 'js', 'ks', 'missing_rate', 'nan_rate', 'out_of_range_rate']).optional(),
  threshold: z.number().min(0),
  forMs: z.number().int().min(0).max(7 * 86_400_000).default(0),
  webhook: z.strictObject({
    url: z.string().max(2048).refine(httpUrl, 'an http(s) URL'),
    secret: z.string().min(1).max(1024).optional(),
  }).optional(),
  enabled: z.boolean().default(true),
  description: z.string().max(1024).optional(),
}).superRefine((r, ctx) => {
  const perFeature = PER_FEATURE.includes(r.kind);
  if (r.feature !== undefined && !perFeature) ctx.addIssue({ code: 'custom', path: ['feature'], message: 'only for feature_drift and quality rules' });
  if (r.metric !== undefined) {
    if (!perFeature) ctx.addIssue({ code: 'custom', path: ['metric'], message: 'only for feature_drift and quality rules' });
    else if (r.kind === 'feature_drift' && !DRIFT_METRICS.includes(r.metric)) ctx.addIssue({ code: 'custom', path: ['metric'], message: 'psi, js or ks for feature_drift' });
    else if (r.kind === 'quality' && !QUALITY_METRICS.includes(r.metric)) ctx.addIssue({ code: 'custom', path: ['metric'], message: 'missing_rate, nan_rate or out_of_range_rate for quality' });
  }
  if ((r.kind === 'error_rate' || r.kind === 'quality') && r.threshold > 1) ctx.addIssue({ code: 'custom', path: ['threshold'], message: 'a rate: at most 1' });
});

/** Validate an alert rule and fill its defaults; a 400 naming each bad field. */
export function parseAlertRule(v: unknown): AlertRule {
  const r = ruleSchema.safeParse(v);
  if (!r.success) {
    const issues: string[] = [];
    for (const i of r.error.issues) {
      const at = i.path.map(String);
      if (i.code === 'unrecognized_keys') for (const k of i.keys) issues.push(`${[...at, k].join('.')}: unknown field`);
      else issues.push(`${at.length > 0 ? at.join('.') : '(rule)'}: ${i.message}`);
    }
    throw err('SY_ERR_BAD_REQUEST', `invalid alert rule: ${issues.join('; ')}`);
  }
  const p = r.data;
  const metric = p.metric ?? (p.kind === 'feature_drift' ? 'psi' : p.kind === 'quality' ? 'missing_rate' : undefined);
  return {
    id: p.id,
    kind: p.kind,
    model: p.model,
    ...(p.version === undefined ? {} : { version: p.version }),
    ...(p.feature === undefined ? {} : { feature: p.feature }),
    ...(metric === undefined ? {} : { metric }),
    threshold: p.threshold,
    forMs: p.forMs,
    ...(p.webhook === undefined ? {} : { webhook: { url: p.webhook.url, ...(p.webhook.secret === undefined ? {} : { secret: p.webhook.secret }) } }),
    enabled: p.enabled,
    ...(p.description === undefined ? {} : { description: p.description }),
  };
}

/** The rule without its webhook secret (for API responses and webhook payloads). */
export function redactRule(rule: AlertRule): AlertRule {
  if (rule.webhook?.secret === undefined) return rule;
  return { ...rule, webhook: { url: rule.webhook.url } };
}

/**
 * The `x-switchyard-signature` value: `sha256=` + hex HMAC-SHA256(secret, `${timestamp}.${body}`), timestamp in
 * unix seconds as sent in `x-switchyard-timestamp`. Receivers recompute it over the raw body bytes, compare in
 * constant time (crypto.timingSafeEqual) and reject stale timestamps (e.g. more than 5 minutes from their clock)
 * against replays. Every attempt is signed afresh; `eventId` in the body stays the same, for de-duplication.
 */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** Receiver-side check of {@link signWebhook}: constant-time comparison and a timestamp tolerance. */
export function verifyWebhook(secret: string, timestamp: string, signature: string, body: string,
  opts: { toleranceS?: number; nowS?: number } = {}): boolean {
  if (!/^\d{1,12}$/.test(timestamp)) return false;
  const nowS = opts.nowS ?? Math.floor(Date.now() / 1000);
  if (Math.abs(nowS - Number(timestamp)) > (opts.toleranceS ?? 300)) return false;
  const want = Buffer.from(signWebhook(secret, Number(timestamp), body));
  const got = Buffer.from(signature);
  return want.length === got.length && timingSafeEqual(want, got);
}

interface RuleState {
  state: 'inactive' | 'pending' | 'firing';
  since: number | null;
  value: number | null;
  /** The rule as last evaluated (for resolving after it is deleted). */
  rule: AlertRule;
}

interface PendingEvent { id: number; state: 'firing' | 'resolved'; at: number; value: number | null; message: string }

type Attempt = { status: number; retryAfterMs: number | null } | { error: string };

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
    case 'drift': return `drift of ${of}`;
    case 'feature_drift': return `${rule.metric ?? 'psi'} drift of ${feature} of ${of}`;
    case 'quality': return `${rule.metric ?? 'missing_rate'} of ${feature} of ${of}`;
    case 'latency_p99': return `p99 latency (ms) of ${of}`;
    case 'error_rate': return `error rate of ${of}`;
  }
}

function plural(n: number): string {
  return `${n} attempt${n === 1 ? '' : 's'}`;
}

/** Retry-After as delay-seconds or an HTTP date, in ms, capped; null when absent or unreadable. */
function retryAfterMs(h: string | null): number | null {
  if (h === null) return null;
  const s = h.trim();
  let ms: number;
  if (/^\d+$/.test(s)) ms = Number(s) * 1000;
  else {
    const t = Date.parse(s);
    if (Number.isNaN(t)) return null;
    ms = t - Date.now();
  }
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

function errorText(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  const cause = e instanceof Error ? (e.cause as { code?: unknown; message?: unknown } | undefined) : undefined;
  const c = cause === undefined || cause === null ? undefined : typeof cause.code === 'string' ? cause.code : typeof cause.message === 'string' ? cause.message : undefined;
  return c === undefined ? m : `${m} (${c})`;
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
  readonly #fetch: typeof fetch;
  readonly #attempts: number;
  readonly #baseMs: number;
  readonly #timeoutMs: number;
  readonly #maxQueue: number;
  readonly #now: () => number;
  #rules = new Map<string, AlertRule>();
  readonly #states = new Map<string, RuleState>();
  #init: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  /** Serializes evaluation and rule changes. */
  #lock: Promise<unknown> = Promise.resolve();
  /** Deliveries queued or in flight. */
  #queued = 0;
  /** Per rule: the tail of its delivery chain (one rule's events are delivered in order). */
  readonly #chains = new Map<string, Promise<void>>();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #closing = new AbortController();
  #closed = false;

  constructor(opts: AlertEngineOptions) {
    this.#db = opts.database.db;
    this.#signals = opts.signals;
    this.#evalMs = opts.evalMs ?? DEFAULT_EVAL_MS;
    this.#log = opts.logger ?? null;
    this.#fetch = opts.fetchImpl ?? fetch;
    this.#attempts = Math.max(1, Math.floor(opts.retry?.attempts ?? 4));
    this.#baseMs = Math.max(0, opts.retry?.baseMs ?? 500);
    this.#timeoutMs = opts.webhookTimeoutMs ?? 5000;
    this.#maxQueue = opts.maxQueue ?? 100;
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
      await this.#db.insertInto('alert_rules')
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
    return [...this.#rules.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((r) => {
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
  async idle(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  /** Stop the timer, let a running evaluation finish, abort retries and in-flight deliveries (recorded as failed) and wait for them. */
  async close(): Promise<void> {
    if (this.#closed) return this.idle();
    this.#closed = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await this.#lock.catch(() => undefined);
    this.#closing.abort();
    await this.idle();
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
      const latest = await this.#db.selectFrom('alert_events').selectAll()
        .where('id', 'in', this.#db.selectFrom('alert_events').select(sql<number>`max(id)`.as('id')).groupBy('rule'))
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
    const row = await this.#db.insertInto('alert_events')
      .values({ rule: rule.id, state, at, value, message, delivery: rule.webhook ? 'pending' : 'none', delivery_detail: null })
      .returning('id')
      .executeTakeFirstOrThrow();
    const ev: PendingEvent = { id: Number(row.id), state, at, value, message };
    this.#log?.info({ rule: rule.id, state, value, eventId: ev.id }, `alert ${state}: ${message}`);
    if (rule.webhook) this.#enqueue(rule, rule.webhook, ev);
  }

  #track(p: Promise<unknown>): void {
    this.#inflight.add(p);
    void p.finally(() => this.#inflight.delete(p)).catch(() => undefined);
  }

  #enqueue(rule: AlertRule, hook: { url: string; secret?: string }, ev: PendingEvent): void {
    if (this.#queued >= this.#maxQueue) {
      this.#log?.warn({ rule: rule.id, eventId: ev.id }, 'alert webhook queue full; delivery dropped');
      this.#track(this.#setDelivery(ev.id, 'failed', 'queue full'));
      return;
    }
    this.#queued += 1;
    const prev = this.#chains.get(rule.id) ?? Promise.resolve();
    const p: Promise<void> = prev
      .then(() => this.#deliver(rule, hook, ev))
      .catch((e: unknown) => this.#log?.error({ err: e, rule: rule.id, eventId: ev.id }, 'alert webhook delivery failed'))
      .finally(() => {
        this.#queued -= 1;
        if (this.#chains.get(rule.id) === p) this.#chains.delete(rule.id);
      });
    this.#chains.set(rule.id, p);
    this.#track(p);
  }

  async #deliver(rule: AlertRule, hook: { url: string; secret?: string }, ev: PendingEvent): Promise<void> {
    const body = JSON.stringify({
      version: 1, rule: redactRule(rule), state: ev.state, value: ev.value, threshold: rule.threshold, message: ev.message,
      at: new Date(ev.at).toISOString(), eventId: ev.id,
    });
    let attempts = 0;
    let outcome: { delivery: 'delivered' | 'failed'; detail: string };
    for (;;) {
      if (this.#closing.signal.aborted) {
        outcome = { delivery: 'failed', detail: `engine closed after ${plural(attempts)}` };
        break;
      }
      attempts += 1;
      const a = await this.#attempt(hook, body);
      if (this.#closing.signal.aborted && 'error' in a) continue;
      let retryable: boolean;
      let wait = this.#baseMs * 2 ** (attempts - 1);
      if ('error' in a) {
        retryable = true;
        outcome = { delivery: 'failed', detail: `${a.error} after ${plural(attempts)}` };
      } else if (a.status >= 200 && a.status < 300) {
        outcome = { delivery: 'delivered', detail: `HTTP ${a.status} after ${plural(attempts)}` };
        break;
      } else {
        retryable = a.status === 408 || a.status === 429 || a.status >= 500;
        outcome = { delivery: 'failed', detail: `HTTP ${a.status} after ${plural(attempts)}${retryable ? '' : ' (not retried)'}` };
        if (a.retryAfterMs !== null) wait = a.retryAfterMs;
      }
      if (!retryable || attempts >= this.#attempts) break;
      await this.#sleep(wait);
    }
    if (outcome.delivery === 'failed') this.#log?.warn({ rule: rule.id, eventId: ev.id, detail: outcome.detail }, 'alert webhook delivery failed');
    await this.#setDelivery(ev.id, outcome.delivery, outcome.detail);
  }

  async #attempt(hook: { url: string; secret?: string }, body: string): Promise<Attempt> {
    const ts = Math.floor(Date.now() / 1000);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': `switchyard/${VERSION}`,
      'x-switchyard-event': 'alert',
      'x-switchyard-timestamp': String(ts),
    };
    if (hook.secret !== undefined) headers['x-switchyard-signature'] = signWebhook(hook.secret, ts, body);
    const ac = new AbortController();
    const onClose = (): void => ac.abort(new Error('engine closed'));
    this.#closing.signal.addEventListener('abort', onClose, { once: true });
    const timer = setTimeout(() => ac.abort(new Error(`timed out after ${this.#timeoutMs} ms`)), this.#timeoutMs);
    try {
      const res = await this.#fetch(hook.url, { method: 'POST', headers, body, redirect: 'manual', signal: ac.signal });
      const retryAfter = retryAfterMs(res.headers.get('retry-after'));
      await res.body?.cancel().catch(() => undefined);
      return { status: res.status, retryAfterMs: retryAfter };
    } catch (e) {
      const reason: unknown = ac.signal.aborted ? ac.signal.reason : e;
      return { error: errorText(reason) };
    } finally {
      clearTimeout(timer);
      this.#closing.signal.removeEventListener('abort', onClose);
    }
  }

  #sleep(ms: number): Promise<void> {
    const signal = this.#closing.signal;
    if (signal.aborted || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  async #setDelivery(id: number, delivery: 'delivered' | 'failed', detail: string): Promise<void> {
    try {
      await this.#db.updateTable('alert_events').set({ delivery, delivery_detail: detail }).where('id', '=', id).execute();
    } catch (e) {
      this.#log?.error({ err: e, eventId: id, delivery, detail }, 'alert event: recording the delivery failed');
    }
  }
}
