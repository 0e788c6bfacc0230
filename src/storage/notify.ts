/**
 * @module
 * Cross-process change notification on Postgres, for any control-plane store that caches: `notify` runs
 * `pg_notify(channel, …)` inside the caller's transaction (delivered at commit, dropped on rollback) with a
 * JSON body, the sender's instance id and the schema; a dedicated client LISTENs and hands other instances'
 * bodies from the same schema to `onMessage`. After a lost connection the listener reconnects; messages sent
 * meanwhile are not replayed (a consumer that must not miss any re-reads its source, or expires its cache).
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import pg from 'pg';
import type { DB } from './database.js';

const RECONNECT_MS = 1000;

/** Postgres caps a payload at 8000 bytes: bodies stay small (ids, not records). */
interface Payload<T> { i: string; s: string; b: T }

export class PgChannel<T> {
  readonly #config: pg.ClientConfig;
  readonly #channel: string;
  readonly #instanceId = randomUUID();
  readonly #schema: string;
  readonly #onMessage: (body: T) => void;
  readonly #logger: Logger | undefined;
  #client: pg.Client | null = null;
  #closed = false;
  #timer: NodeJS.Timeout | null = null;

  private constructor(config: pg.ClientConfig, channel: string, schema: string, onMessage: (body: T) => void, logger: Logger | undefined) {
    this.#config = config;
    this.#channel = channel;
    this.#schema = schema;
    this.#onMessage = onMessage;
    this.#logger = logger;
  }

  /** Start listening on `channel` (a plain identifier) for messages from other instances in `schema`. */
  static async start<T>(config: pg.ClientConfig, channel: string, schema: string, onMessage: (body: T) => void, logger?: Logger): Promise<PgChannel<T>> {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`invalid channel name "${channel}"`);
    const c = new PgChannel(config, channel, schema, onMessage, logger);
    await c.#connect();
    return c;
  }

  /** Queue a message inside the transaction (or send it at once on a plain handle). */
  async notify(db: Kysely<DB>, body: T): Promise<void> {
    const payload: Payload<T> = { i: this.#instanceId, s: this.#schema, b: body };
    await sql`select pg_notify(${this.#channel}, ${JSON.stringify(payload)})`.execute(db);
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    const c = this.#client;
    this.#client = null;
    await c?.end().catch(() => undefined);
  }

  async #connect(): Promise<void> {
    const client = new pg.Client(this.#config);
    client.on('notification', (m) => this.#onNotification(m.payload));
    client.on('error', (e) => {
      this.#logger?.warn({ err: e, channel: this.#channel }, 'LISTEN connection failed; reconnecting');
      if (this.#client === client) this.#client = null;
      client.end().catch(() => undefined);
      this.#scheduleReconnect();
    });
    await client.connect();
    await client.query(`LISTEN ${this.#channel}`);
    if (this.#closed) {
      await client.end();
      return;
    }
    this.#client = client;
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#timer !== null) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#closed) return;
      this.#connect().catch((e: unknown) => {
        this.#logger?.warn({ err: e, channel: this.#channel }, 'LISTEN reconnect failed');
        this.#scheduleReconnect();
      });
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
