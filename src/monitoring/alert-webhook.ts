/**
 * @module
 * Alert webhook delivery: HMAC signing (and the receiver-side check), and {@link WebhookDelivery}, which POSTs
 * each event to its rule's webhook off the evaluation path, one rule's events in order, retried with exponential
 * backoff (honouring Retry-After) on network errors, 408, 429 and 5xx, within a bounded queue.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { VERSION } from '../version.js';
import { redactRule, type AlertRule } from './alert-rules.js';

/** Longest Retry-After honoured. */
export const MAX_RETRY_AFTER_MS = 30_000;

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
export function verifyWebhook(secret: string, timestamp: string, signature: string, body: string, opts: { toleranceS?: number; nowS?: number } = {}): boolean {
  if (!/^\d{1,12}$/.test(timestamp)) return false;
  const nowS = opts.nowS ?? Math.floor(Date.now() / 1000);
  if (Math.abs(nowS - Number(timestamp)) > (opts.toleranceS ?? 300)) return false;
  const want = Buffer.from(signWebhook(secret, Number(timestamp), body));
  const got = Buffer.from(signature);
  return want.length === got.length && timingSafeEqual(want, got);
}

/** A recorded transition to deliver. */
export interface WebhookEvent {
  id: number;
  state: 'firing' | 'resolved';
  at: number;
  value: number | null;
  message: string;
}

export interface WebhookDeliveryOptions {
  fetchImpl?: typeof fetch;
  /** Attempts in all (default 4) and the first backoff (default 500 ms, doubling). */
  retry?: { attempts?: number; baseMs?: number };
  /** Per-attempt timeout. @default 5000 */
  timeoutMs?: number;
  /** Deliveries queued or in flight at most; beyond, an event is recorded as failed "queue full". @default 100 */
  maxQueue?: number;
  logger: Logger | null;
  /** Records an event's delivery outcome; must not throw. */
  record(eventId: number, delivery: 'delivered' | 'failed', detail: string): Promise<void>;
}

type Attempt = { status: number; retryAfterMs: number | null } | { error: string };

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
  const c =
    cause === undefined || cause === null
      ? undefined
      : typeof cause.code === 'string'
        ? cause.code
        : typeof cause.message === 'string'
          ? cause.message
          : undefined;
  return c === undefined ? m : `${m} (${c})`;
}

/** Delivers alert events to webhooks in the background. */
export class WebhookDelivery {
  readonly #log: Logger | null;
  readonly #fetch: typeof fetch;
  readonly #attempts: number;
  readonly #baseMs: number;
  readonly #timeoutMs: number;
  readonly #maxQueue: number;
  readonly #setDelivery: WebhookDeliveryOptions['record'];
  /** Deliveries queued or in flight. */
  #queued = 0;
  /** Per rule: the tail of its delivery chain (one rule's events are delivered in order). */
  readonly #chains = new Map<string, Promise<void>>();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #closing = new AbortController();

  constructor(opts: WebhookDeliveryOptions) {
    this.#log = opts.logger;
    this.#fetch = opts.fetchImpl ?? fetch;
    this.#attempts = Math.max(1, Math.floor(opts.retry?.attempts ?? 4));
    this.#baseMs = Math.max(0, opts.retry?.baseMs ?? 500);
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    this.#maxQueue = opts.maxQueue ?? 100;
    this.#setDelivery = opts.record;
  }

  /** Resolves when no delivery is queued or in flight. */
  async idle(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  /** Abort retries and in-flight deliveries (recorded as failed) and wait for them. */
  async close(): Promise<void> {
    this.#closing.abort();
    await this.idle();
  }

  /** Queue an event's delivery behind the rule's earlier ones (recorded as failed "queue full" past maxQueue). */
  enqueue(rule: AlertRule, hook: { url: string; secret?: string }, ev: WebhookEvent): void {
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

  #track(p: Promise<unknown>): void {
    this.#inflight.add(p);
    void p.finally(() => this.#inflight.delete(p)).catch(() => undefined);
  }

  async #deliver(rule: AlertRule, hook: { url: string; secret?: string }, ev: WebhookEvent): Promise<void> {
    const body = JSON.stringify({
      version: 1,
      rule: redactRule(rule),
      state: ev.state,
      value: ev.value,
      threshold: rule.threshold,
      message: ev.message,
      at: new Date(ev.at).toISOString(),
      eventId: ev.id,
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
}
