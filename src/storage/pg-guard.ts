/**
 * @module
 * Postgres faults, bounded and survivable. Every pooled client carries an `'error'` listener for its whole
 * life (a reset between two statements of a transaction can never end the process with `Unhandled 'error'
 * event`); every statement is bounded by the configured timeout (server-side `statement_timeout`, client-side
 * `query_timeout` for a database that stops answering, `connectionTimeoutMillis` for one that stops accepting);
 * a connection-level failure leaves as SY_ERR_DATABASE_UNAVAILABLE (503 + Retry-After) and drops the client
 * from the pool. {@link DatabaseHealth} follows the outcome of every statement: down at the first connection
 * fault, probed every second while down, up again at the first statement that succeeds.
 *
 * ```
 * Kysely ──connect()──▶ guarded pool ──▶ pg.Pool ──▶ pg.Client (+ permanent 'error' listener)
 *                         │ query(): ok → health.up()   connection fault → health.down(), 503, client destroyed
 * ```
 */
import type { PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';
import type { Logger } from 'pino';
import type pg from 'pg';
import { err, isSwitchyardError, type SwitchyardError } from '../errors.js';

/** Socket-level error codes of a lost or refused connection. */
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED']);
/** SQLSTATEs of an unavailable server: class 08 (connection exception), shutdown, cannot connect now, statement timeout, too many connections. */
const SERVER_CODES = new Set(['57P01', '57P02', '57P03', '57014', '53300']);
/** node-postgres' own messages for a lost, unusable or timed-out connection (it sets no code on them). */
const PG_MESSAGES = /Connection terminated|connection error|not queryable|timeout exceeded when trying to connect|Query read timeout|Connection ended/i;

/** Whether `e` says the database cannot be reached or did not answer in time (as opposed to a refused statement). */
export function isConnectionFault(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  if (isSwitchyardError(e)) return e.code === 'SY_ERR_DATABASE_UNAVAILABLE';
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'string' && (SOCKET_CODES.has(code) || SERVER_CODES.has(code) || code.startsWith('08'))) return true;
  const message = (e as { message?: unknown }).message;
  return typeof message === 'string' && PG_MESSAGES.test(message);
}

/** Seconds a client is told to wait (Retry-After) while the metadata store is unavailable. */
const RETRY_AFTER_S = 1;
const PROBE_MS = 1000;

/**
 * Whether the metadata store answers, as seen by the statements this process runs. Starts available; down at
 * the first connection fault; while down a probe runs every second until one succeeds.
 *
 * @example
 * database.health.onChange((up) => log.info({ up }, 'metadata store'));
 * if (!database.health.available) throw database.health.unavailable();
 */
export class DatabaseHealth {
  #available = true;
  #probe: (() => Promise<void>) | null = null;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  readonly #listeners = new Set<(available: boolean) => void>();
  readonly #logger: Logger | undefined;

  constructor(logger?: Logger) {
    this.#logger = logger;
  }

  get available(): boolean {
    return this.#available;
  }

  /** Follow changes (true: available again). Returns the unsubscribe function. */
  onChange(listener: (available: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /** The statement that checks the database while it is down (a guarded `select 1`). */
  setProbe(probe: () => Promise<void>): void {
    this.#probe = probe;
  }

  /** The error callers get while the store is unavailable: 503 + Retry-After, no internals. */
  unavailable(cause?: unknown): SwitchyardError {
    return err('SY_ERR_DATABASE_UNAVAILABLE', 'the metadata store (database) is unavailable; retry shortly', { retryAfterS: RETRY_AFTER_S, cause });
  }

  up(): void {
    if (this.#available) return;
    this.#available = true;
    this.#logger?.info('metadata store (database) available again');
    this.#emit(true);
  }

  /** A connection fault: mark down (once), start probing, and return the error to throw. */
  fault(cause: unknown): SwitchyardError {
    if (this.#available && !this.#closed) {
      this.#available = false;
      this.#logger?.error({ err: cause }, 'metadata store (database) unavailable; serving from memory, admin calls answer 503');
      this.#emit(false);
      this.#scheduleProbe();
    }
    return isSwitchyardError(cause) ? cause : this.unavailable(cause);
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #emit(available: boolean): void {
    for (const l of this.#listeners) {
      try {
        l(available);
      } catch (e) {
        this.#logger?.warn({ err: e }, 'a database health listener threw');
      }
    }
  }

  #scheduleProbe(): void {
    if (this.#closed || this.#timer !== null || this.#probe === null) return;
    const probe = this.#probe;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#available || this.#closed) return;
      probe().then(
        () => this.up(),
        () => this.#scheduleProbe(),
      );
    }, PROBE_MS);
    this.#timer.unref();
  }
}

/** Settings every Postgres client of a store gets: bounded connect and statements, TCP keep-alive. */
export function boundedClientConfig(timeoutMs: number): Pick<pg.ClientConfig, 'connectionTimeoutMillis' | 'statement_timeout' | 'query_timeout' | 'keepAlive'> {
  // The server cancels a slow statement at timeoutMs; the client gives up shortly after on one that never answers.
  return { connectionTimeoutMillis: timeoutMs, statement_timeout: timeoutMs, query_timeout: timeoutMs + 500, keepAlive: true };
}

/**
 * A Kysely pool over `pool` whose clients report to `health`: connection faults become 503s and the faulty
 * client is destroyed on release (never reused with a statement stuck on it).
 */
export function guardPool(pool: pg.Pool, health: DatabaseHealth, logger?: Logger): PostgresPool {
  // A client that errors while checked out (e.g. a reset between two statements of a transaction) would throw
  // "Unhandled 'error' event" without this; the statement in flight, or the next one, reports the fault.
  pool.on('connect', (client) => client.on('error', (e) => logger?.debug({ err: e }, 'Postgres client connection error')));
  pool.on('error', () => {
    /* idle client lost: the pool drops it; the next statement reports the fault */
  });
  // One wrapper per checkout: `broken` is about this use of the client.
  const wrap = (client: pg.PoolClient): PostgresPoolClient => {
    let broken = false;
    const run = async <R>(text: string, params: readonly unknown[]): Promise<PostgresQueryResult<R>> => {
      try {
        const r = await client.query(text, params as unknown[]);
        health.up();
        return r as unknown as PostgresQueryResult<R>;
      } catch (e) {
        if (!isConnectionFault(e)) throw e;
        broken = true;
        throw health.fault(e);
      }
    };
    return {
      query: (q: string | object, params?: readonly unknown[]) => (typeof q === 'string' ? run(q, params ?? []) : client.query(q as never)),
      release: () => client.release(broken ? true : undefined),
    } as PostgresPoolClient;
  };
  const guarded: PostgresPool = {
    async connect() {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (e) {
        throw health.fault(e);
      }
      return wrap(client);
    },
    end: async () => {
      health.close();
      await pool.end();
    },
  };
  health.setProbe(async () => {
    const c = await guarded.connect();
    try {
      await c.query('select 1', []);
    } finally {
      c.release();
    }
  });
  return guarded;
}
