/**
 * @module
 * Progress bars for the CLI's long operations (model push, reference-profile upload, feature import and
 * export): one line on standard error, redrawn at most every 100 ms, drawn only when standard error is a
 * terminal, so pipes, logs and tests see nothing. Hand-written rather than a dependency: it is one line of
 * text, and the `batch --wait` bar (batch.ts) already draws the same way.
 */
import { humanBytes } from '../units.js';

export interface Progress {
  /** Count `n` more units done. */
  add(n: number): void;
  /** Clear the bar (nothing is left on the terminal; the command prints its own result). */
  done(): void;
}

const QUIET: Progress = { add: () => undefined, done: () => undefined };
const WIDTH = 30;
const REDRAW_MS = 100;

/**
 * A bar for `total` units (null: unknown, the count alone is shown) labelled `label`, in bytes or rows.
 * Returns a no-op when standard error is not a terminal (or `stream` is given and is not one).
 *
 * @example
 * const bar = progress('push model.onnx', size, 'bytes');
 * body = body.pipeThrough(countBytes(bar));
 */
export function progress(label: string, total: number | null, unit: 'bytes' | 'rows', stream: NodeJS.WriteStream = process.stderr): Progress {
  if (stream.isTTY !== true) return QUIET;
  let done = 0;
  let drawnAt = 0;
  const amount = (n: number): string => (unit === 'bytes' ? humanBytes(n) : `${n} rows`);
  const draw = (force: boolean): void => {
    const now = Date.now();
    if (!force && now - drawnAt < REDRAW_MS) return;
    drawnAt = now;
    let line: string;
    if (total !== null && total > 0) {
      const f = Math.min(1, done / total);
      const filled = Math.round(f * WIDTH);
      line = `${label} [${'#'.repeat(filled)}${'-'.repeat(WIDTH - filled)}] ${(f * 100).toFixed(0).padStart(3)}%  ${amount(done)} / ${amount(total)}`;
    } else {
      line = `${label} ${amount(done)}`;
    }
    stream.write(`\r\x1b[2K${line}`);
  };
  draw(true);
  return {
    add(n) {
      done += n;
      draw(false);
    },
    done() {
      stream.write('\r\x1b[2K');
    },
  };
}

/** A pass-through web stream that counts the bytes flowing through it into `bar`. */
export function countBytes(bar: Progress): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream({
    transform(chunk, controller) {
      bar.add(chunk.byteLength);
      controller.enqueue(chunk);
    },
  });
}
