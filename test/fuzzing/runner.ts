/**
 * @module
 * Drives fuzz cases against a listening server over real sockets, a fixed number in flight, and tallies the
 * answers by status class. The server side is watched through node:http's own 'request' events, so the report
 * can say how many requests the server took and how many it still holds once every answer has come back.
 */
import type { Server } from 'node:http';
import { Pool } from 'undici';
import { fuzzCase, type FuzzCase } from './cases.js';

export interface FuzzReport {
  readonly sent: number;
  /** Answers per status class ('2xx', '4xx', '5xx', ...), plus 'reset' (the server closed the connection
   * before or while answering, e.g. after refusing a body it did not read) and 'hang' (no answer within the
   * liveness guard). */
  readonly classes: Record<string, number>;
  /** Answers per status code and error code (`413 SY_ERR_BODY_TOO_LARGE`). */
  readonly codes: Record<string, number>;
  /** The first few 5xx answers and hangs, to replay (seed + index); documented 5xx excepted (see `documented`). */
  readonly failures: { index: number; kind: string; path: string; status: number | string; body: string }[];
  /** Requests the server received / still held after the last answer. */
  readonly serverReceived: number;
  readonly serverHeld: number;
  readonly rssBefore: number;
  readonly rssAfter: number;
}

export interface FuzzOptions {
  readonly url: string;
  readonly server: Server;
  readonly seed: number;
  readonly count: number;
  /** Requests in flight at once. */
  readonly concurrency: number;
  readonly bombBytes: number;
  /** An answer not even started after this long counts as a hang (a liveness guard, not a speed check). */
  readonly hangMs: number;
  /** A 5xx that is documented behaviour for this case (not a failure). */
  readonly documented?: (c: FuzzCase, status: number, body: string) => boolean;
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  let received = 0;
  let held = 0;
  const onRequest = (_req: unknown, res: { once(e: 'close', f: () => void): void }): void => {
    received++;
    held++;
    res.once('close', () => held--);
  };
  o.server.on('request', onRequest);
  const pool = new Pool(o.url, { connections: o.concurrency, headersTimeout: o.hangMs, bodyTimeout: o.hangMs, keepAliveTimeout: 1000 });
  const classes: Record<string, number> = {};
  const codes: Record<string, number> = {};
  const failures: FuzzReport['failures'] = [];
  const rssBefore = process.memoryUsage().rss;
  let next = 0;
  const one = async (index: number, c: FuzzCase): Promise<void> => {
    let status: number | string;
    let text = '';
    try {
      const res = await pool.request({ method: c.method, path: c.path, headers: c.headers, body: c.body });
      status = res.statusCode;
      text = await res.body.text();
    } catch (e) {
      const code = (e as { code?: string }).code ?? '';
      status = /TIMEOUT/.test(code) ? 'hang' : 'reset';
    }
    const cls = typeof status === 'number' ? `${Math.floor(status / 100)}xx` : status;
    classes[cls] = (classes[cls] ?? 0) + 1;
    const code = typeof status === 'number' ? `${status} ${/"code":"(\w+)"|"code":\s*"?([\w]+)/.exec(text)?.slice(1).find(Boolean) ?? ''}`.trim() : status;
    codes[code] = (codes[code] ?? 0) + 1;
    if ((cls === 'hang' || (cls === '5xx' && !o.documented?.(c, status as number, text))) && failures.length < 20)
      failures.push({ index, kind: c.kind, path: c.path, status, body: text.slice(0, 300) });
  };
  const worker = async (): Promise<void> => {
    while (next < o.count) {
      const i = next++;
      await one(i, fuzzCase(o.seed, i, o.bombBytes));
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, worker));
  } finally {
    await pool.close();
  }
  // Every answer is in: the server's 'close' events follow within a few turns of the loop, unless it still holds
  // a request (a hang on its side). Bounded by iterations, then reported.
  for (let k = 0; k < 2000 && held > 0; k++) await new Promise((r) => setTimeout(r, 5));
  o.server.off('request', onRequest);
  return { sent: o.count, classes, codes, failures, serverReceived: received, serverHeld: held, rssBefore, rssAfter: process.memoryUsage().rss };
}
