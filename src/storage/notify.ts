/**
 * @module
 * Cross-process change notification on Postgres, for any control-plane store that caches: `notify` runs
 * `pg_notify(channel, …)` inside the caller's transaction (delivered at commit, dropped on rollback) with a
 * JSON body, the sender's instance id and the schema; a dedicated client LISTENs and hands other instances'
 * bodies from the same schema to `onMessage`. A heartbeat (`select 1` every 2 s, bounded by the client's
 * `query_timeout`) finds a connection that silently stopped answering; after a lost connection the listener
 * reconnects every second until it succeeds. Messages sent meanwhile are not replayed: `onReconnect` runs after
 * each re-established LISTEN so that the consumer re-reads its source (what it may have missed).
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import pg from 'pg';
import type { DB } from './database.js';

const RECONNECT_MS = 1000;
const HEARTBEAT_MS = 2000;

export interface PgChannelOptions<T> {
  readonly onMessage: (body: T) => void;
  /** After the LISTEN connection was lost and is back: re-read what notifications may have been missed. */
  readonly onReconnect?: () => void;
  readonly logger?: Logger | undefined;
}

/** Postgres caps a payload at 8000 bytes: bodies stay small (ids, not records). */
interface Payload<T> {
  i: string;
  s: string;
  b: T;
}

export class PgChannel<T> {
  readonly #config: pg.ClientConfig;
  readonly #channel: string;
  readonly #instanceId = randomUUID();
  readonly #schema: string;
  readonly #onMessage: (body: T) => void;
  readonly #onReconnect: (() => void) | undefined;
  readonly #logger: Logger | undefined;
  #client: pg.Client | null = null;
  #closed = false;
  #timer: NodeJS.Timeout | null = null;
  readonly #heartbeat: NodeJS.Timeout;

  private constructor(config: pg.ClientConfig, channel: string, schema: string, opts: PgChannelOptions<T>) {
    this.#config = config;
    this.#channel = channel;
    this.#schema = schema;
    this.#onMessage = opts.onMessage;
    this.#onReconnect = opts.onReconnect;
    this.#logger = opts.logger;
    this.#heartbeat = setInterval(() => this.#beat(), HEARTBEAT_MS);
    this.#heartbeat.unref();
  }

  /**
   * Start listening on `channel` (a plain identifier) for messages from other instances in `schema`.
   *
   * @example
   * const ch = await PgChannel.start<{ id: string }>(db.pgConfig, 'switchyard_things', 'public', { onMessage: (b) => drop(b.id), onReconnect: () => dropAll() });
   */
  static async start<T>(config: pg.ClientConfig, channel: string, schema: string, opts: PgChannelOptions<T>): Promise<PgChannel<T>> {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`invalid channel name "${channel}"`);
    const c = new PgChannel(config, channel, schema, opts);
    try {
      await c.#connect();
    } catch (e) {
      clearInterval(c.#heartbeat);
      throw e;
    }
    return c;
  }

  /** Queue a message inside the transaction (or send it at once on a plain handle). */
  async notify(db: Kysely<DB>, body: T): Promise<void> {
    const payload: Payload<T> = { i: this.#instanceId, s: this.#schema, b: body };
    await sql`select pg_notify(${this.#channel}, ${JSON.stringify(payload)})`.execute(db);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#heartbeat);
    if (this.#timer !== null) clearTimeout(this.#timer);
    const c = this.#client;
    this.#client = null;
    await c?.end().catch(() => undefined);
  }

  async #connect(): Promise<void> {
    const client = new pg.Client(this.#config);
    client.on('notification', (m) => this.#onNotification(m.payload));
    client.on('error', (e) => this.#lost(client, e));
    client.on('end', () => this.#lost(client, new Error('connection ended')));
    try {
      await client.connect();
      await client.query(`LISTEN ${this.#channel}`);
    } catch (e) {
      client.end().catch(() => undefined);
      throw e;
    }
    if (this.#closed) {
      await client.end();
      return;
    }
    this.#client = client;
  }

  /** The LISTEN connection failed or ended: drop it and reconnect (once per client). */
  #lost(client: pg.Client, e: Error): void {
    if (this.#client !== client) return;
    this.#client = null;
    this.#logger?.warn({ err: e, channel: this.#channel }, 'LISTEN connection lost; reconnecting');
    client.end().catch(() => undefined);
    this.#scheduleReconnect();
  }

  /** A connection that stopped answering raises no error by itself: ask it something, bounded by query_timeout. */
  #beat(): void {
    const client = this.#client;
    if (client === null) return;
    client.query('select 1').catch((e: unknown) => this.#lost(client, e instanceof Error ? e : new Error(String(e))));
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#timer !== null) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#closed) return;
      this.#connect().then(
        () => {
          this.#logger?.info({ channel: this.#channel }, 'LISTEN connection re-established');
          if (this.#closed) return;
          try {
            this.#onReconnect?.();
          } catch (e) {
            this.#logger?.warn({ err: e, channel: this.#channel }, 'a reconnect handler threw');
          }
        },
        (e: unknown) => {
          this.#logger?.debug({ err: e, channel: this.#channel }, 'LISTEN reconnect failed');
          this.#scheduleReconnect();
        },
      );
    }, RECONNECT_MS);
    this.#timer.unref();
  }

  #onNotification(text: string | undefined): void {
    if (text === undefined) return;
    let p: Payload<T>;
    try {
      p = JSON.parse(text) as Payload<T>;
    } catch {
      return;
    }
    if (p.i === this.#instanceId || p.s !== this.#schema || p.b === undefined) return;
    try {
      this.#onMessage(p.b);
    } catch (e) {
      this.#logger?.warn({ err: e, channel: this.#channel }, 'a notification handler threw');
    }
  }
}
