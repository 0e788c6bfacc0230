/**
 * @module
 * The Lua script runner of the shared limiters (the request limiter, redis-limiter.ts, and the LLM API's
 * rpm / tpm limiter, token-limits.ts): a request's admission must never wait on Redis longer than a few
 * milliseconds, whatever Redis does, and a failure is answered the same way by both.
 *
 * ioredis is set to fail fast (no offline queue, no per-request retries, a backstop `commandTimeout`) and to
 * reconnect in the background with capped backoff; each decision races its own `timeoutMs` deadline
 * ({@link LuaRunner.timed}, {@link LuaRunner.run}). Scripts are ioredis custom commands: EVALSHA, falling back
 * to EVAL once after a script-cache flush (NOSCRIPT). A decision that fails goes through
 * {@link LuaRunner.fallback}: reported once to the `onBackendError` hook (which must not throw; a throwing hook
 * is ignored), then answered by the fail mode: 'open' admits unchecked, 'closed' refuses.
 */
import { Redis } from 'ioredis';

/** Options of {@link LuaRunner}. */
export interface LuaRunnerOptions<N extends string> {
  /** redis://[user:password@]host:port[/db] (rediss:// for TLS). */
  readonly url: string;
  /** Per-decision deadline. Must be > 0. @unit milliseconds */
  readonly timeoutMs: number;
  /** Names the client in CLIENT LIST. */
  readonly connectionName: string;
  /** Starts every error message, e.g. "rate limiter". */
  readonly label: string;
  /** Lua scripts by command name, defined as custom commands on the client. */
  readonly scripts: Readonly<Record<N, string>>;
  /** What a failed decision answers ({@link LuaRunner.fallback}): 'open' admits unchecked, 'closed' refuses. */
  readonly failMode: 'open' | 'closed';
  /** Called once per backend failure; must not throw. */
  readonly onBackendError?: ((e: Error) => void) | undefined;
}

/** Reconnect delay before attempt n (1, 2, ...): 50 ms doubling, capped at 2 s; never gives up until close(). */
const retryDelay = (times: number): number => Math.min(50 * 2 ** Math.min(times - 1, 6), 2000);
/** A socket with commands pending and no byte received for this long is dead: destroyed and reconnected. */
const SOCKET_TIMEOUT_MS = 2000;
const CONNECT_TIMEOUT_MS = 3000;

/** Ignores a rejection (connects and releases whose failure is reported elsewhere, or not at all). */
export const swallow = (): void => {};

/** A script's reply: numbers, and strings for floats (%.17g). */
export type LuaReply = Array<string | number>;

type Commands<N extends string> = Record<N, (...args: Array<string | number>) => Promise<LuaReply>>;

/**
 * One fail-fast connection and its scripts. The constructor never throws for an unreachable server and never
 * blocks: it connects in the background. `N` names the scripts.
 */
export class LuaRunner<N extends string> {
  readonly #redis: Redis;
  readonly timeoutMs: number;
  readonly #failOpen: boolean;
  readonly #label: string;
  readonly #where: string;
  readonly #onBackendError: ((e: Error) => void) | null;
  #lastConnError: Error | null = null;
  #closed = false;

  constructor(opts: LuaRunnerOptions<N>) {
    this.timeoutMs = opts.timeoutMs;
    this.#failOpen = opts.failMode === 'open';
    if (!(this.timeoutMs > 0)) throw new RangeError(`timeoutMs must be > 0, got ${this.timeoutMs}`);
    this.#label = opts.label;
    this.#onBackendError = opts.onBackendError ?? null;
    const redis = new Redis(opts.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // A backstop only (it would also fire before pending I/O is read): `timed` enforces timeoutMs itself.
      commandTimeout: 2 * this.timeoutMs + 100,
      socketTimeout: SOCKET_TIMEOUT_MS,
      connectTimeout: CONNECT_TIMEOUT_MS,
      retryStrategy: retryDelay,
      connectionName: opts.connectionName,
    });
    for (const [name, lua] of Object.entries<string>(opts.scripts)) redis.defineCommand(name, { lua });
    redis.on('error', (e: Error) => {
      this.#lastConnError = e;
    });
    redis.on('ready', () => {
      this.#lastConnError = null;
    });
    this.#redis = redis;
    // Credentials stay out of messages: name the server by host and port only.
    this.#where = `${redis.options.host ?? '?'}:${redis.options.port ?? '?'}`;
    redis.connect().catch(swallow);
  }

  /** Whether the connection is up (false while connecting or reconnecting, and after close()). */
  get ready(): boolean {
    return !this.#closed && this.#redis.status === 'ready';
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Why a command cannot be sent now (closed, or not connected and the last connection error). */
  unusable(): Error {
    if (this.#closed) return new Error(`${this.#label}: closed`);
    const why = this.#lastConnError === null ? '' : `: ${this.#lastConnError.message}`;
    return new Error(`${this.#label}: Redis at ${this.#where} is not connected (${this.#redis.status}${why})`);
  }

  /** An error naming this client, e.g. for a reply that makes no sense. */
  error(message: string): Error {
    return new Error(`${this.#label}: Redis at ${this.#where} ${message}`);
  }

  /**
   * `run()` raced against the `timeoutMs` deadline. On expiry it yields once to pending I/O (setImmediate runs
   * after the poll phase): a reply that arrived while this process was busy (GC, CPU saturation) is taken, not
   * counted as a timeout, since the script has then written what a failure would waste.
   */
  async timed<T>(run: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | null = null;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => setImmediate(() => reject(this.error(`did not answer within ${this.timeoutMs} ms`))), this.timeoutMs);
      timer.unref();
    });
    try {
      return await Promise.race([run(), deadline]);
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
  }

  /** Sends script `name` with `keys` and `argv` (EVALSHA, or EVAL after a flush), with no deadline of its own: run it within {@link timed}. */
  eval(name: N, keys: readonly string[], argv: ReadonlyArray<string | number>): Promise<LuaReply> {
    return (this.#redis as unknown as Commands<N>)[name](keys.length, ...keys, ...argv);
  }

  /** One script run within the deadline; rejects when not connected, on a Redis error or a timeout. */
  run(name: N, keys: readonly string[], argv: ReadonlyArray<string | number>): Promise<LuaReply> {
    if (!this.ready) return Promise.reject(this.unusable());
    return this.timed(() => this.eval(name, keys, argv));
  }

  /** A decision that failed (`e`): reports it once, then answers by the fail mode, `open` or `closed`. */
  fallback<T>(e: unknown, open: T, closed: T): T {
    this.report(e);
    return this.#failOpen ? open : closed;
  }

  /** Hands a failure to `onBackendError` (a throwing hook is ignored: it must not fail a request). */
  report(e: unknown): void {
    const cb = this.#onBackendError;
    if (cb === null) return;
    try {
      cb(e instanceof Error ? e : new Error(String(e)));
    } catch {
      // a throwing hook must not turn a limiter decision into a failed request
    }
  }

  /** QUIT bounded by the socket timeout when connected, then a hard disconnect that also stops reconnecting. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const redis = this.#redis;
    if (redis.status === 'ready') await redis.quit().catch(swallow);
    redis.disconnect(false);
  }
}
