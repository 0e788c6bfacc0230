/**
 * @module
 * The gRPC port's HTTP/2 front: a node:http2 server that answers unary ModelInfer calls itself and hands every
 * other stream (the other RPCs, ModelStreamInfer, the health service, compressed calls) to @grpc/grpc-js.
 *
 * Hand-written on a measured hot path (bench/grpc.ts, docs/grpc.md): grpc-js spends ~30-60 µs of CPU per unary
 * call around the handler (interceptor chain, stream decoder, Metadata objects, per-call closures) — more than
 * the HTTP/1 JSON transport's whole per-request cost — while a bare node:http2 exchange costs about what an
 * HTTP/1 one does. For ModelInfer, the one RPC called at high rates, this front does the little gRPC needs of a
 * unary call on an identity-encoded stream: the 5-byte message frame (one message, size-limited before it is
 * buffered), `grpc-timeout` (a deadline timer answering DEADLINE_EXCEEDED, as grpc-js does), metadata read
 * straight from the request headers, cancellation on stream close, and the response as headers + one frame +
 * trailers (or trailers-only for an error). The handler is the transport's own, the same function grpc-js
 * calls, so auth, limits and the core are shared, not copied.
 *
 * Delegation uses grpc-js's stream handler (`Server#_streamHandler`, not part of its typed API). Where a grpc-js
 * version lacks it, {@link Http2Front.supported} is false and the transport binds grpc-js's own listener
 * instead (every RPC through grpc-js); a test asserts the front is in use, so an upgrade that drops it is noticed.
 */
import { constants as h2, createServer, type Http2Server, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { Metadata, status as Status, type MetadataValue, type Server, type ServiceError } from '@grpc/grpc-js';
import type { Logger } from 'pino';

/** The call a unary handler sees: the part of grpc-js's ServerUnaryCall the transport uses. */
export interface UnaryCall<Req> {
  readonly request: Req;
  readonly metadata: MetadataReader;
  readonly cancelled: boolean;
  getDeadline(): Date | number;
  getPeer(): string;
  /** Initial metadata (response headers) to send with the answer. */
  sendMetadata(md: Metadata): void;
  once(event: 'cancelled', listener: () => void): unknown;
}

/** Reading request metadata: grpc-js's Metadata, or the front's view of the request headers. */
export interface MetadataReader {
  get(key: string): MetadataValue[];
}

export type UnaryCallback<Res> = (e: ServiceError | null, value?: Res | null) => void;
export type UnaryHandler<Req, Res> = (call: UnaryCall<Req>, callback: UnaryCallback<Res>) => void;

/** A unary method the front answers itself. */
export interface FastMethod {
  readonly deserialize: (b: Buffer) => unknown;
  readonly serialize: (v: unknown) => Buffer;
  readonly handler: UnaryHandler<unknown, unknown>;
  /** A request that cannot be decoded, as the ServiceError to answer. */
  readonly undecodable: (e: unknown) => ServiceError;
}

type StreamHandler = (this: Server, extraInterceptors: unknown[], stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void;

const DEADLINE = /^(\d{1,8})\s*([HMSmun])$/;
const UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
const RESPONSE_HEADERS = {
  [h2.HTTP2_HEADER_STATUS]: 200,
  [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
  'grpc-accept-encoding': 'identity,deflate,gzip',
  'grpc-encoding': 'identity',
} as const;
const OK_TRAILERS = { 'grpc-status': '0', 'grpc-message': 'OK' } as const;
const noop = (): void => undefined;

/** Request headers as metadata (what grpc-js's Metadata.fromHttp2Headers gives, read lazily): `-bin` values base64-decoded. */
class HeaderMetadata implements MetadataReader {
  constructor(private readonly headers: IncomingHttpHeaders) {}
  get(key: string): MetadataValue[] {
    const v = this.headers[key];
    if (v === undefined) return [];
    const values = Array.isArray(v) ? v : [v];
    if (!key.endsWith('-bin')) return values;
    return values.flatMap((x) => x.split(',')).map((x) => Buffer.from(x.trim(), 'base64'));
  }
}

/** One unary call on the front. */
class FrontCall implements UnaryCall<unknown> {
  request: unknown = null;
  readonly metadata: MetadataReader;
  cancelled = false;
  #done = false;
  #deadline = Infinity;
  #timer: NodeJS.Timeout | null = null;
  #initial: Metadata | null = null;
  #onCancel: (() => void)[] | null = null;
  #chunks: Buffer[] = [];
  #size = 0;

  constructor(
    readonly stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    readonly method: FastMethod,
    readonly max: number,
  ) {
    this.metadata = new HeaderMetadata(headers);
  }

  getDeadline(): number {
    return this.#deadline;
  }

  getPeer(): string {
    const s = this.stream.session?.socket;
    if (s?.remoteAddress === undefined) return 'unknown';
    return s.remoteAddress.includes(':') ? `[${s.remoteAddress}]:${s.remotePort}` : `${s.remoteAddress}:${s.remotePort}`;
  }

  sendMetadata(md: Metadata): void {
    if (this.#initial === null) this.#initial = md;
    else this.#initial.merge(md);
  }

  once(_event: 'cancelled', listener: () => void): this {
    (this.#onCancel ??= []).push(listener);
    return this;
  }

  /** Start the deadline from a `grpc-timeout` header; false (call answered) when the header is invalid. */
  timeout(header: string): boolean {
    const m = DEADLINE.exec(header);
    if (m === null) {
      this.fail(Status.INTERNAL, `Invalid grpc-timeout value "${header}"`);
      return false;
    }
    const ms = (Number(m[1]) * UNIT_MS[m[2]!]!) | 0;
    this.#deadline = Date.now() + ms;
    this.#timer = setTimeout(() => {
      this.fail(Status.DEADLINE_EXCEEDED, 'Deadline exceeded');
      this.#cancel();
    }, ms);
    return true;
  }

  data(chunk: Buffer): void {
    if (this.#done) return;
    this.#size += chunk.length;
    if (this.max >= 0 && this.#size > this.max + 5) {
      this.#chunks = [];
      return this.fail(Status.RESOURCE_EXHAUSTED, `Received message larger than max (${this.#size - 5} vs. ${this.max})`);
    }
    this.#chunks.push(chunk);
    // Refuse an oversized message from its length prefix, before buffering it.
    if (this.#chunks.length === 1 ? chunk.length >= 5 : this.#size >= 5 && this.#size - chunk.length < 5) {
      const head = this.#chunks.length === 1 ? chunk : Buffer.concat(this.#chunks);
      const length = head.readUInt32BE(1);
      if (this.max >= 0 && length > this.max) {
        this.fail(Status.RESOURCE_EXHAUSTED, `Received message larger than max (${length} vs. ${this.max})`);
        this.#chunks = [];
      }
    }
  }

  end(): void {
    if (this.#done) return;
    const buf = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#size);
    this.#chunks = [];
    if (buf.length < 5) {
      if (buf.length === 0) return this.fail(Status.UNIMPLEMENTED, 'Received no request message for unary call');
      return this.fail(Status.INTERNAL, 'Incomplete gRPC message frame');
    }
    const length = buf.readUInt32BE(1);
    if (buf.length < 5 + length) return this.fail(Status.INTERNAL, 'Incomplete gRPC message frame');
    if (buf.length > 5 + length) return this.fail(Status.UNIMPLEMENTED, 'Received a second request message for unary call');
    if (buf[0] !== 0) return this.fail(Status.INTERNAL, 'Compressed message received without a grpc-encoding');
    try {
      this.request = this.method.deserialize(buf.subarray(5));
    } catch (e) {
      return this.error(this.method.undecodable(e));
    }
    this.method.handler(this, (e, value) => (e ? this.error(e) : this.#answer(value)));
  }

  /** The stream closed: a call not answered yet is cancelled. */
  closed(): void {
    if (this.#done) return;
    this.#done = true;
    this.#cancel();
  }

  #cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    const ls = this.#onCancel;
    this.#onCancel = null;
    if (ls !== null) for (const l of ls) l();
  }

  #finish(): boolean {
    if (this.#done) return false;
    this.#done = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    return !this.stream.destroyed && !this.stream.closed;
  }

  #answer(value: unknown): void {
    let message: Buffer;
    try {
      message = this.method.serialize(value);
    } catch {
      return this.fail(Status.INTERNAL, 'Error serializing response');
    }
    if (this.max >= 0 && message.length > this.max) {
      return this.fail(Status.RESOURCE_EXHAUSTED, `Sent message larger than max (${message.length} vs. ${this.max})`);
    }
    if (!this.#finish()) return;
    const frame = Buffer.allocUnsafe(5 + message.length);
    frame[0] = 0;
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    const stream = this.stream;
    const headers = this.#initial === null ? RESPONSE_HEADERS : { ...RESPONSE_HEADERS, ...this.#initial.toHttp2Headers() };
    stream.respond(headers, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers(OK_TRAILERS));
    stream.end(frame);
  }

  error(e: ServiceError): void {
    const md = this.#initial === null ? e.metadata : this.#initial.clone();
    if (this.#initial !== null && e.metadata) md.merge(e.metadata);
    this.fail(e.code ?? Status.UNKNOWN, e.details ?? e.message, md);
  }

  /** Answer trailers-only with `code` (the call ends; later answers are ignored). */
  fail(code: Status, details: string, md?: Metadata): void {
    if (!this.#finish()) return;
    this.stream.respond(
      {
        ...RESPONSE_HEADERS,
        ...(md ? md.toHttp2Headers() : {}),
        'grpc-status': String(code),
        'grpc-message': encodeURI(details),
      },
      { endStream: true },
    );
  }
}

export class Http2Front {
  readonly #server: Http2Server;
  readonly #sessions = new Set<Http2Session>();
  readonly #fast: ReadonlyMap<string, FastMethod>;
  readonly #grpc: Server;
  readonly #delegate: StreamHandler;
  readonly #max: number;

  /** Whether this grpc-js can take streams from the front (its per-stream handler is there). */
  static supported(grpc: Server): boolean {
    return typeof (grpc as unknown as { _streamHandler?: unknown })._streamHandler === 'function';
  }

  constructor(opts: { grpc: Server; fast: ReadonlyMap<string, FastMethod>; maxMessageBytes: number; logger: Logger }) {
    this.#grpc = opts.grpc;
    this.#delegate = (opts.grpc as unknown as { _streamHandler: StreamHandler })._streamHandler;
    this.#fast = opts.fast;
    this.#max = opts.maxMessageBytes;
    // As grpc-js configures its own: no header block limit, no session memory limit (Node degrades at it).
    this.#server = createServer({ maxSendHeaderBlockLength: Number.MAX_SAFE_INTEGER, maxSessionMemory: Number.MAX_SAFE_INTEGER });
    this.#server.setTimeout(0, noop);
    this.#server.on('session', (s: Http2Session) => {
      this.#sessions.add(s);
      s.once('close', () => this.#sessions.delete(s));
    });
    this.#server.on('sessionError', (e) => opts.logger.debug({ err: e }, 'gRPC session error'));
    this.#server.on('stream', (stream, headers) => this.#onStream(stream, headers));
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    const method = this.#fast.get(headers[h2.HTTP2_HEADER_PATH] as string);
    const ct = headers[h2.HTTP2_HEADER_CONTENT_TYPE];
    const encoding = headers['grpc-encoding'];
    if (method === undefined || (ct !== 'application/grpc' && ct !== 'application/grpc+proto') || (encoding !== undefined && encoding !== 'identity')) {
      this.#delegate.call(this.#grpc, [], stream, headers);
      return;
    }
    stream.once('error', noop);
    const call = new FrontCall(stream, headers, method, this.#max);
    stream.once('close', () => call.closed());
    const timeout = headers['grpc-timeout'];
    if (typeof timeout === 'string' && !call.timeout(timeout)) return;
    stream.on('data', (chunk: Buffer) => call.data(chunk));
    stream.once('end', () => call.end());
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        const a = this.#server.address();
        resolve(typeof a === 'object' && a !== null ? a.port : port);
      });
    });
  }

  /** Stop accepting connections; GOAWAY every session (running calls finish); destroy what is left after `graceMs`. */
  close(graceMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        for (const s of this.#sessions) s.destroy();
      }, graceMs);
      this.#server.close(() => {
        clearTimeout(timer);
        resolve();
      });
      for (const s of this.#sessions) s.close();
    });
  }
}
