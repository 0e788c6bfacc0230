/**
 * Large exports never hold the event loop: slicedBody streams a generator's text in ~64 KiB chunks and gives
 * the loop a turn after each. Shown without a clock: an immediate that re-arms itself counts the loop's turns
 * while a 1 MiB body is read; every chunk after the first is preceded by at least one turn.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { slicedBody } from '../src/api/admin/sliced-body.js';

describe('slicedBody', () => {
  it('streams the pieces unchanged, in chunks, with an event-loop turn between chunks', async () => {
    const piece = (i: number): string => `${String(i).padStart(6, '0')}${'x'.repeat(94)}\n`;
    let produced = 0;
    function* pieces(): Generator<string> {
      for (let i = 0; i < 10_000; i++) {
        produced++;
        yield piece(i);
      }
    }
    let turns = 0;
    let done = false;
    const tick = (): void => {
      turns++;
      if (!done) setImmediate(tick);
    };
    const body = slicedBody(pieces());
    assert.equal(produced, 0, 'nothing is produced before the body is read');
    setImmediate(tick);
    const chunks: string[] = [];
    const turnsBefore: number[] = [];
    for await (const c of body) {
      turnsBefore.push(turns);
      chunks.push(String(c));
    }
    done = true;
    assert.equal(chunks.join(''), Array.from({ length: 10_000 }, (_, i) => piece(i)).join(''));
    assert.ok(chunks.length >= 15, `${chunks.length} chunks`);
    for (let i = 1; i < turnsBefore.length; i++) assert.ok(turnsBefore[i]! > turnsBefore[i - 1]!, `the loop turned before chunk ${i}`);
  });

  it('an empty generator is an empty body', async () => {
    const chunks: unknown[] = [];
    for await (const c of slicedBody([])) chunks.push(c);
    assert.deepEqual(chunks, []);
  });
});
