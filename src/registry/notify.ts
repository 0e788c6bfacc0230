/**
 * @module
 * Cross-process change notification on Postgres. Each transaction that appends events also runs
 * `pg_notify('switchyard_registry', …)` (delivered at commit, dropped on rollback) with the event ids, the
 * sender's instance id and the schema; a dedicated client LISTENs and relays other instances' ids from the
 * same schema. After a lost connection the listener reconnects; events committed meanwhile are not replayed
 * (a consumer that must not miss any re-reads `snapshot()`).
 */
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import pg from 'pg';
import type { DB } from '../storage/index.js';

export const NOTIFY_CHANNEL = 'switchyard_registry';
const RECONNECT_MS = 1000;

/** Each registry transaction appends one or two events, far below the 8000-byte payload cap. */
interface Payload { i: string; s: string; ids: number[] }

export class PgEventBridge {
  readonly #config: pg.ClientConfig;
  readonly #instanceId: string;
  readonly #schema: string;
  readonly #relay: (ids: readonly number[]) => Promise<void>;
  readonly #logger: Logger | undefined;
  #client: pg.Client | null = null;
  #closed = false;
  #timer: NodeJS.Timeout | null = null;

  private constructor(config: pg.ClientConfig, instanceId: string, schema: string, relay: (ids: readonly number[]) => Promise<void>, logger: Logger | undefined) {
    this.#config = config;
    this.#instanceId = instanceId;
    this.#schema = schema;
    this.#relay = relay;
    this.#logger = logger;
  }

  static async start(config: pg.ClientConfig, instanceId: string, schema: string, relay: (ids: readonly number[]) => Promise<void>, logger?: Logger): Promise<PgEventBridge> {
    const bridge = new PgEventBridge(config, instanceId, schema, relay, logger);
    await bridge.#connect();
    return bridge;
  }

  /** Queue the notification inside the transaction: Postgres sends it only if the transaction commits. */
  async notify(tx: Kysely<DB>, ids: readonly number[]): Promise<void> {
    const payload: Payload = { i: this.#instanceId, s: this.#schema, ids: [...ids] };
    await sql`select pg_notify(${NOTIFY_CHANNEL}, ${JSON.stringify(payload)})`.execute(tx);
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
      this.#logger?.warn({ err: e }, 'registry LISTEN connection failed; reconnecting');
      if (this.#client === client) this.#client = null;
      client.end().catch(() => undefined);
      this.#scheduleReconnect();
    });
    await client.connect();
    await client.query(`LISTEN ${NOTIFY_CHANNEL}`);
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
        this.#logger?.warn({ err: e }, 'registry LISTEN reconnect failed');
        this.#scheduleReconnect();
      });
    }, RECONNECT_MS);
    this.#timer.unref();
  }

  #onNotification(text: string | undefined): void {
    if (text === undefined) return;
    let p: Payload;
    try {
      p = JSON.parse(text) as Payload;
    } catch {
      return;
    }
    if (p.i === this.#instanceId || p.s !== this.#schema) return;
    if (p.i === undefined || !Array.isArray(p.ids)) return;
    this.#relay(p.ids.filter((x) => Number.isSafeInteger(x))).catch((e: unknown) => this.#logger?.warn({ err: e }, 'could not read events notified by another instance'));
  }
}
