/**
 * @module
 * Stream consumers feeding a window store: NATS JetStream (durable pull consumer) and Redis Streams (consumer
 * group). Both are at-least-once: a batch is acknowledged only after the window store applied it, so a crash
 * or a store failure before the ack leads to redelivery, and the store's dedupe by event id keeps a redelivered
 * event from being counted twice.
 *
 * Redis Streams: this consumer's own pending entries are re-read at start; entries left pending by any other
 * consumer of the group for `claimIdleMs` (a crashed replica, or a restart under another consumer name) are
 * claimed with XAUTOCLAIM and re-read as well, so no entry stays unacknowledged forever.
 *
 * A message whose payload `toEvent` rejects is logged and acknowledged (NATS: terminated) so that it is not
 * redelivered forever; it counts in `rejected`. A batch the store fails to apply is not acknowledged: NATS gets
 * a NAK with `retryDelayMs` delay, Redis Streams re-reads this consumer's pending entries after `retryDelayMs`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  JetStreamApiCodes,
  JetStreamApiError,
  type ConsumerMessages,
  type JsMsg,
} from '@nats-io/jetstream';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { WindowEvent, WindowStore, WindowViewDef } from './types.js';

export interface StreamConsumer {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Messages processed and acknowledged (redeliveries and duplicates included; rejected payloads excluded). */
  readonly consumed: number;
  /** Messages that arrived as redeliveries (NATS: delivery count > 1; Redis: read back from the pending list). */
  readonly redelivered: number;
  /** Messages whose payload `toEvent` rejected (acknowledged and dropped). */
  readonly rejected: number;
  /** ms between an event's time and its processing, last seen */
  readonly lagMs: number | null;
}

/** Options both consumers share. */
interface CommonOptions {
  readonly view: WindowViewDef;
  readonly store: WindowStore;
  /** Messages per store batch. @default 100 */
  readonly batch?: number;
  /** Delay before a batch the store failed to apply is retried. @default 2000 @unit milliseconds */
  readonly retryDelayMs?: number;
  readonly logger?: Logger;
}

export interface NatsConsumerOptions extends CommonOptions {
  readonly url: string;
  readonly stream: string;
  readonly subject: string;
  readonly durable: string;
  readonly toEvent: (payload: unknown) => WindowEvent;
  /** ack_wait of the consumer when this creates it: an unacknowledged message is redelivered after it. @default 30000 @unit milliseconds */
  readonly ackWaitMs?: number;
}

export interface RedisStreamConsumerOptions extends CommonOptions {
  readonly redisUrl: string;
  readonly stream: string;
  readonly group: string;
  readonly consumer: string;
  readonly toEvent: (fields: Record<string, string>) => WindowEvent;
  /** XREADGROUP BLOCK timeout (stop() interrupts it). @default 5000 @unit milliseconds */
  readonly blockMs?: number;
  /**
   * Entries pending this long in any consumer of the group (one that crashed, or ran under another name) are
   * claimed (XAUTOCLAIM) and re-read here; checked at start and then at most every this often. 0 = never.
   * @default 60000 @unit milliseconds
   */
  readonly claimIdleMs?: number;
}

const silent = { debug() {}, info() {}, warn() {}, error() {} } as unknown as Logger;

/** Counters and the apply step both consumers share. */
abstract class BaseConsumer<M> implements StreamConsumer {
  consumed = 0;
  redelivered = 0;
  rejected = 0;
  lagMs: number | null = null;
  protected readonly log: Logger;
  protected readonly batch: number;
  protected readonly retryDelayMs: number;
  protected stopping = false;
  protected loop: Promise<void> | null = null;
  /** Aborted by stop(): cuts retry delays short. */
  protected abort = new AbortController();

  constructor(protected readonly base: CommonOptions) {
    this.log = base.logger ?? silent;
    this.batch = Math.max(1, base.batch ?? 100);
    this.retryDelayMs = base.retryDelayMs ?? 2000;
  }

  abstract start(): Promise<void>;
  abstract stop(): Promise<void>;

  /** Waits `ms`, or less when stop() is called. */
  protected async pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.abort.signal }).catch(() => undefined);
  }

  /** Marks the consumer as running again (after a stop). */
  protected reset(): void {
    this.stopping = false;
    if (this.abort.signal.aborted) this.abort = new AbortController();
  }

  /**
   * Converts messages to events (`onRejected` gets those `toEvent` rejects) and applies them as one batch;
   * `applied` is false when the store failed. `good` are the messages holding events.
   */
  protected async apply(
    msgs: readonly M[],
    toEvent: (m: M) => WindowEvent,
    isRedelivery: (m: M) => boolean,
    onRejected: (m: M) => void,
  ): Promise<{ applied: boolean; good: M[] }> {
    const events: WindowEvent[] = [];
    const good: M[] = [];
    for (const m of msgs) {
      if (isRedelivery(m)) this.redelivered++;
      try {
        events.push(toEvent(m));
        good.push(m);
      } catch (e) {
        this.rejected++;
        this.log.warn({ err: e, view: this.base.view.name }, 'stream message rejected (not an event of this view); acknowledged and dropped');
        onRejected(m);
      }
    }
    if (events.length > 0) {
      try {
        await this.base.store.add(this.base.view, events);
      } catch (e) {
        this.log.error({ err: e, view: this.base.view.name, events: events.length }, 'window store failed to apply a stream batch; it will be redelivered');
        return { applied: false, good };
      }
      this.lagMs = Date.now() - events[events.length - 1]!.eventTime;
    }
    this.consumed += good.length;
    return { applied: true, good };
  }
}

/** NATS JetStream durable pull consumer (stream and consumer created when missing). */
class NatsWindowConsumer extends BaseConsumer<JsMsg> {
  #nc: NatsConnection | null = null;
  #messages: ConsumerMessages | null = null;

  constructor(private readonly opts: NatsConsumerOptions) {
    super(opts);
  }

  async start(): Promise<void> {
    if (this.#nc !== null) return;
    this.reset();
    const o = this.opts;
    const nc = await connect({ servers: o.url, name: `switchyard-window-${o.view.name}`, maxReconnectAttempts: -1 });
    try {
      const jsm = await jetstreamManager(nc);
      try {
        await jsm.streams.info(o.stream);
      } catch (e) {
        if (!(e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamNotFound)) throw e;
        await jsm.streams.add({ name: o.stream, subjects: [o.subject] });
        this.log.info({ stream: o.stream, subject: o.subject }, 'created NATS JetStream stream');
      }
      try {
        await jsm.consumers.info(o.stream, o.durable);
      } catch (e) {
        if (!(e instanceof JetStreamApiError && e.code === JetStreamApiCodes.ConsumerNotFound)) throw e;
        await jsm.consumers.add(o.stream, {
          durable_name: o.durable,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          filter_subject: o.subject,
          ack_wait: nanos(o.ackWaitMs ?? 30_000),
        });
        this.log.info({ stream: o.stream, durable: o.durable }, 'created NATS JetStream consumer');
      }
      const consumer = await jetstream(nc).consumers.get(o.stream, o.durable);
      this.#messages = await consumer.consume({ max_messages: this.batch });
    } catch (e) {
      await nc.close().catch(() => undefined);
      throw e;
    }
    this.#nc = nc;
    this.loop = this.#run(this.#messages).catch((e: unknown) => this.log.error({ err: e, view: o.view.name }, 'NATS window consumer stopped'));
  }

  /**
   * Messages are applied in batches of up to `batch`, and a partial batch as soon as the messages that arrived
   * together have all been received: the flush is scheduled with setImmediate, which runs after the iterator
   * has yielded everything it holds (it yields through microtasks). The iterator's getPending() cannot tell:
   * the client queues its pull refills among the messages and counts them in flight without uncounting them,
   * so after the last message of such a chunk it stayed at 1 and the tail waited for ack_wait's redelivery.
   * Batches are applied one after another, in order; a full buffer waits for the batches before it.
   */
  async #run(iter: ConsumerMessages): Promise<void> {
    const buf: JsMsg[] = [];
    let applying: Promise<void> = Promise.resolve();
    let scheduled = false;
    const flush = (): Promise<void> => {
      scheduled = false;
      if (buf.length > 0) {
        const msgs = buf.splice(0);
        applying = applying
          .then(() => this.#process(msgs))
          .catch((e: unknown) => this.log.error({ err: e, view: this.opts.view.name }, 'NATS window consumer failed to apply a batch; it will be redelivered'));
      }
      return applying;
    };
    for await (const m of iter) {
      buf.push(m);
      if (buf.length >= this.batch) await flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    }
    await flush();
  }

  async #process(msgs: JsMsg[]): Promise<void> {
    const r = await this.apply(
      msgs,
      (m) => this.opts.toEvent(m.json()),
      (m) => m.redelivered,
      (m) => m.term(),
    );
    for (const m of r.good) {
      if (r.applied) m.ack();
      else m.nak(this.retryDelayMs);
    }
  }

  /** Stops pulling, applies and acknowledges what was already received, then drains the connection (flushing acks). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    const nc = this.#nc;
    if (nc === null) return;
    await this.#messages?.close();
    await this.loop;
    await nc.drain().catch(() => nc.close());
    this.#nc = null;
    this.#messages = null;
    this.loop = null;
  }
}

/** Redis Streams consumer group reader with its own (blocking) connection. */
class RedisStreamWindowConsumer extends BaseConsumer<Entry> {
  #redis: Redis | null = null;
  #blocking = false;

  constructor(private readonly opts: RedisStreamConsumerOptions) {
    super(opts);
  }

  async start(): Promise<void> {
    if (this.#redis !== null) return;
    this.reset();
    const redis = new Redis(this.opts.redisUrl, { lazyConnect: true, maxRetriesPerRequest: null, connectionName: `switchyard-window-${this.opts.view.name}` });
    redis.on('error', () => undefined); // reported by the failing command
    try {
      await redis.connect();
      await this.#createGroup(redis);
    } catch (e) {
      redis.disconnect();
      throw e;
    }
    this.#redis = redis;
    this.loop = this.#run(redis).catch((e: unknown) => this.log.error({ err: e, view: this.opts.view.name }, 'Redis stream window consumer stopped'));
  }

  /** XGROUP CREATE … 0 MKSTREAM (a new group reads the stream from its start); an existing group is kept. */
  async #createGroup(redis: Redis): Promise<void> {
    try {
      await redis.xgroup('CREATE', this.opts.stream, this.opts.group, '0', 'MKSTREAM');
      this.log.info({ stream: this.opts.stream, group: this.opts.group }, 'created Redis stream consumer group');
    } catch (e) {
      if (!String((e as Error).message).includes('BUSYGROUP')) throw e;
    }
  }

  /** Moves entries idle ≥ claimIdleMs in other consumers into this one's pending list; returns how many. */
  async #claim(redis: Redis, idleMs: number): Promise<number> {
    const o = this.opts;
    let cursor = '0-0',
      n = 0;
    do {
      const reply = (await redis.call('XAUTOCLAIM', o.stream, o.group, o.consumer, idleMs, cursor, 'COUNT', 1000, 'JUSTID')) as [string, string[]];
      cursor = String(reply[0]);
      n += Array.isArray(reply[1]) ? reply[1].length : 0;
    } while (cursor !== '0-0' && !this.stopping);
    return n;
  }

  /**
   * Reads this consumer's pending entries first (id 0, paged), then new ones (`>`) with BLOCK; entries long
   * pending elsewhere are claimed first and every `claimIdleMs`, then read as pending.
   */
  async #run(redis: Redis): Promise<void> {
    const o = this.opts;
    const claimIdleMs = o.claimIdleMs ?? 60_000;
    let claimedAt = -Infinity;
    /** Next pending id to read from, or null = read new entries. */
    let pendingFrom: string | null = '0';
    while (!this.stopping) {
      if (claimIdleMs > 0 && pendingFrom === null && Date.now() - claimedAt >= claimIdleMs) {
        claimedAt = Date.now();
        try {
          const n = await this.#claim(redis, claimIdleMs);
          if (n > 0) {
            this.log.info({ stream: o.stream, group: o.group, entries: n }, 'claimed entries left pending by another consumer');
            pendingFrom = '0';
          }
        } catch (e) {
          if (this.stopping) break;
          this.log.warn({ err: e, stream: o.stream }, 'XAUTOCLAIM failed');
        }
        continue;
      }
      let reply: unknown;
      const args =
        pendingFrom === null
          ? ['GROUP', o.group, o.consumer, 'COUNT', this.batch, 'BLOCK', o.blockMs ?? 5000, 'STREAMS', o.stream, '>']
          : ['GROUP', o.group, o.consumer, 'COUNT', this.batch, 'STREAMS', o.stream, pendingFrom];
      this.#blocking = pendingFrom === null;
      try {
        reply = await redis.call('XREADGROUP', ...args);
      } catch (e) {
        if (this.stopping) break;
        this.log.warn({ err: e, stream: o.stream }, 'Redis stream read failed; retrying');
        if (String((e as Error).message).includes('NOGROUP')) await this.#createGroup(redis).catch(() => undefined);
        await this.pause(this.retryDelayMs);
        pendingFrom = '0';
        continue;
      } finally {
        this.#blocking = false;
      }
      const entries = entriesOf(reply);
      if (pendingFrom !== null && entries.length === 0) {
        pendingFrom = null;
        continue;
      }
      const fromPending = pendingFrom !== null;
      const r = await this.apply(
        entries,
        (m) => o.toEvent(fieldsOf(m[1])),
        () => fromPending,
        () => undefined,
      );
      if (!r.applied) {
        await this.pause(this.retryDelayMs);
        pendingFrom = '0';
        continue;
      }
      try {
        // Rejected payloads and deleted entries (null fields) are acknowledged too.
        if (entries.length > 0) await redis.xack(o.stream, o.group, ...entries.map((m) => m[0]));
      } catch (e) {
        if (this.stopping) break;
        this.log.warn({ err: e, stream: o.stream }, 'XACK failed; the entries stay pending and are re-read');
        pendingFrom = '0';
        continue;
      }
      if (pendingFrom !== null) pendingFrom = entries[entries.length - 1]![0];
    }
  }

  /** Finishes the batch in progress (a blocked read is interrupted), then closes the connection. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    const redis = this.#redis;
    if (redis === null) return;
    if (this.#blocking) redis.disconnect();
    await this.loop;
    redis.disconnect();
    this.#redis = null;
    this.loop = null;
  }
}

type Entry = [string, string[] | null];

/** The entries of a one-stream XREADGROUP reply: [[stream, entries]] (RESP2) or [stream, entries] (a RESP3 map, flattened). */
function entriesOf(reply: unknown): Entry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  const entries: unknown = Array.isArray(reply[0]) ? (reply[0] as unknown[])[1] : reply[1];
  return Array.isArray(entries) ? (entries as Entry[]) : [];
}

/** A stream entry's flat [k, v, k, v, …] fields as a record (empty for a deleted entry). */
function fieldsOf(flat: readonly string[] | null): Record<string, string> {
  const out: Record<string, string> = {};
  if (flat === null) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

/**
 * NATS JetStream: durable pull consumer `durable` on `stream`, filtered to `subject` (the stream, with that
 * subject, and the consumer — explicit ack, deliver all, `ackWaitMs` — are created when missing; existing ones
 * are used as they are). Each message's payload is parsed as JSON and handed to `toEvent`, which defines the
 * payload shape and builds the entity key; messages are acked after the window store applied their batch
 * (at-least-once: a crash before the ack → redelivery after ack_wait → deduplicated by eventId).
 */
export function natsConsumer(opts: NatsConsumerOptions): StreamConsumer {
  return new NatsWindowConsumer(opts);
}

/**
 * Redis Streams: consumer group `group` (XGROUP CREATE … 0 MKSTREAM if missing), XREADGROUP BLOCK, apply, XACK;
 * this consumer's pending entries are re-read at start (XREADGROUP with id 0) and entries idle in other
 * consumers are claimed (XAUTOCLAIM), so a crash before XACK is redelivered and deduplicated by eventId. Each
 * entry's fields go to `toEvent`. Uses its own blocking Redis connection (`redisUrl`).
 */
export function redisStreamConsumer(opts: RedisStreamConsumerOptions): StreamConsumer {
  return new RedisStreamWindowConsumer(opts);
}

/** Epoch ms from an event time given as epoch ms (number or decimal string) or an ISO 8601 string; NaN when neither. */
export function eventTimeMs(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string' || v.trim() === '') return NaN;
  return /^-?\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : Date.parse(v);
}
