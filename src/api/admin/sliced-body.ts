/**
 * @module
 * Large control-plane responses (prediction-log and feature exports) without holding the event loop: the
 * body is produced piece by piece from a synchronous generator, joined into chunks of about 64 KiB, and the
 * loop gets a turn (setImmediate) after every chunk, so inference and health probes wait at most one chunk's
 * work; and the response is streamed with backpressure, so its whole text is never built in memory.
 */
import { Readable } from 'node:stream';
import { setImmediate as turn } from 'node:timers/promises';

const CHUNK_CHARS = 64 * 1024;

/** A response body streamed from `pieces` in slices (see the module comment). */
export function slicedBody(pieces: Iterable<string>): Readable {
  return Readable.from(
    (async function* slices(): AsyncGenerator<string> {
      let chunk = '';
      for (const piece of pieces) {
        chunk += piece;
        if (chunk.length >= CHUNK_CHARS) {
          yield chunk;
          chunk = '';
          await turn();
        }
      }
      if (chunk.length > 0) yield chunk;
    })(),
    { objectMode: false },
  );
}
