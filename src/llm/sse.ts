/**
 * @module
 * Server-sent events, both ways: reading an upstream's event stream (SseReader) and writing the client's
 * (SseWriter), as OpenAI streams them: `data: <json>` events separated by blank lines, ending with `[DONE]`.
 */
import type { Buffer } from 'node:buffer';
import type { ServerResponse } from 'node:http';
import { StringDecoder } from 'node:string_decoder';

/** The data of the event that ends an OpenAI stream. */
export const DONE = '[DONE]';

/**
 * Server-sent events from a byte stream: yields each event's data (its `data:` lines joined by "\n").
 * Lines end with "\n" or "\r\n"; lines and UTF-8 characters may be split across reads; comments (":") and
 * other fields are ignored.
 */
export class SseReader {
  readonly #source: AsyncIterator<Buffer>;
  readonly #decoder = new StringDecoder('utf8');
  /** The last line, not ended yet. */
  #rest = '';
  /** The data of the event being read, or null when it has none yet. */
  #data: string | null = null;
  readonly #ready: string[] = [];
  #head = 0;

  constructor(source: AsyncIterator<Buffer>) {
    this.#source = source;
  }

  /** The next event's data when one is already read (no await), else undefined: call next(). */
  ready(): string | undefined {
    return this.#head < this.#ready.length ? this.#ready[this.#head++] : undefined;
  }

  /** The next event's data, or null at the end of the body. */
  async next(): Promise<string | null> {
    while (this.#head === this.#ready.length) {
      this.#ready.length = 0;
      this.#head = 0;
      const r = await this.#source.next();
      if (r.done === true) {
        this.#end();
        if (this.#ready.length === 0) return null;
      } else {
        this.#feed(this.#decoder.write(r.value));
      }
    }
    return this.#ready[this.#head++]!;
  }

  /** Read the rest of the body, discarding it, in the background (so the connection goes back to the pool). */
  drain(): void {
    void (async () => {
      while (await this.next() !== null);
    })().catch(() => undefined);
  }

  #feed(text: string): void {
    const buf = this.#rest === '' ? text : this.#rest + text;
    let start = 0;
    for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n', start)) {
      this.#line(buf, start, nl > start && buf.charCodeAt(nl - 1) === 13 ? nl - 1 : nl);
      start = nl + 1;
    }
    this.#rest = start === 0 ? buf : buf.slice(start);
  }

  #line(buf: string, start: number, end: number): void {
    if (start === end) {
      if (this.#data !== null) this.#ready.push(this.#data);
      this.#data = null;
    } else if (buf.startsWith('data:', start)) {
      const from = buf.charCodeAt(start + 5) === 32 ? start + 6 : start + 5;
      const value = buf.slice(from, end);
      this.#data = this.#data === null ? value : `${this.#data}\n${value}`;
    }
  }

  /** The body ended: an unterminated last event counts only if it is [DONE] (a lenient server's). */
  #end(): void {
    if (this.#rest !== '') {
      const rest = this.#rest;
      this.#rest = '';
      this.#line(rest, 0, rest.charCodeAt(rest.length - 1) === 13 ? rest.length - 1 : rest.length);
    }
    if (this.#data === DONE) this.#ready.push(DONE);
    this.#data = null;
  }
}

/**
 * Server-sent events on a raw response. Events written in the same tick leave in one write (an upstream read
 * usually holds several chunks: one syscall and one HTTP chunk instead of one per token).
 */
export class SseWriter {
  readonly #res: ServerResponse;
  #buf = '';
  #scheduled = false;

  constructor(res: ServerResponse) {
    this.#res = res;
  }

  /**
   * Queue an event. Returns nothing when the client keeps up, else (backpressure) a promise that resolves once it
   * has taken what was already sent: `const wait = sse.event(x); if (wait) await wait;` costs no promise per event.
   */
  event(data: string): Promise<void> | undefined {
    this.#buf += `data: ${data}\n\n`;
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(() => this.#flush());
    }
    const res = this.#res;
    if (!res.writableNeedDrain || res.destroyed) return undefined;
    return new Promise<void>((resolve) => {
      const done = (): void => {
        res.off('drain', done);
        res.off('close', done);
        resolve();
      };
      res.once('drain', done);
      res.once('close', done);
    });
  }

  /** Send what is queued plus `last`, and end the response. */
  end(last = ''): void {
    const rest = this.#buf + last;
    this.#buf = '';
    if (rest) this.#res.end(rest);
    else this.#res.end();
  }

  #flush(): void {
    this.#scheduled = false;
    if (!this.#buf || this.#res.writableEnded) return;
    const b = this.#buf;
    this.#buf = '';
    this.#res.write(b);
  }
}
