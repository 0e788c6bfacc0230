/**
 * @module
 * Reading server-sent events (an upstream's stream, the CLI's), as OpenAI streams them: `data: <json>` events
 * separated by blank lines, ending with `[DONE]`. Writing them to a client is the transport's
 * (api/openai/sse-writer.ts).
 */
import type { Buffer } from 'node:buffer';
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
      while ((await this.next()) !== null);
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
