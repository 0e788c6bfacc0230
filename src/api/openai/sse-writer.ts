/**
 * @module
 * Writing server-sent events to a client, as OpenAI streams them: `data: <json>` events separated by blank
 * lines, ending with `data: [DONE]`.
 */
import type { ServerResponse } from 'node:http';

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
