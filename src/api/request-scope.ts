/**
 * @module
 * Per-request scaffolding kept off the hot path: request ids and the request logger. Both run for every
 * request, most of which never log, so neither may cost more than a few hundred nanoseconds.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';

const VALID_ID = /^[\w.:-]{1,128}$/;

/**
 * Request ids: the client's `x-request-id` when it is a sane token (1-128 of `[A-Za-z0-9_.:-]`), else a
 * process-unique one: 16 random hex digits chosen at start (replicas differ) and a counter.
 */
export function requestIdGenerator(): (incoming: string | string[] | undefined) => string {
  const prefix = `${randomBytes(8).toString('hex')}-`;
  let n = 0;
  return (incoming) => (typeof incoming === 'string' && VALID_ID.test(incoming) ? incoming : prefix + (++n).toString(16).padStart(8, '0'));
}

type Bindings = Record<string, unknown>;
type Call = (...args: unknown[]) => void;

/**
 * A request logger that creates its pino child (bound to the request id) on first use. Fastify makes a child
 * per request; pino's child() copies bindings and serializers, which is wasted on requests that log nothing.
 */
class LazyChildLogger {
  #real: FastifyBaseLogger | null = null;
  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
    private readonly options: object,
  ) {}

  get real(): FastifyBaseLogger {
    return (this.#real ??= this.parent.child(this.bindings, this.options));
  }
  get level(): string {
    return this.#real?.level ?? this.parent.level;
  }
  set level(l: string) {
    this.real.level = l;
  }
  fatal(...a: unknown[]): void {
    (this.real.fatal as Call)(...a);
  }
  error(...a: unknown[]): void {
    (this.real.error as Call)(...a);
  }
  warn(...a: unknown[]): void {
    (this.real.warn as Call)(...a);
  }
  info(...a: unknown[]): void {
    (this.real.info as Call)(...a);
  }
  debug(...a: unknown[]): void {
    (this.real.debug as Call)(...a);
  }
  trace(...a: unknown[]): void {
    (this.real.trace as Call)(...a);
  }
  silent(...a: unknown[]): void {
    (this.real.silent as Call)(...a);
  }
  child(bindings: Bindings, options?: object): FastifyBaseLogger {
    return this.real.child(bindings, options);
  }
}

/** Fastify's `childLoggerFactory`: the per-request logger, created lazily. */
export function lazyChildLogger(parent: FastifyBaseLogger, bindings: Bindings, options: object): FastifyBaseLogger {
  return new LazyChildLogger(parent, bindings, options) as unknown as FastifyBaseLogger;
}
