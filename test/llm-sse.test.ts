import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { describe, it } from 'node:test';
import { SseWriter } from '../src/api/openai/sse-writer.js';
import { DONE, SseReader } from '../src/runtimes/remote/sse-reader.js';

/** A byte source that hands out the given reads one by one. */
function source(reads: (string | Buffer)[]): AsyncIterator<Buffer> {
  let i = 0;
  return {
    next: async () => (i < reads.length ? { done: false, value: Buffer.from(reads[i++]!) } : { done: true, value: undefined }),
  };
}

async function all(r: SseReader): Promise<(string | null)[]> {
  const out: (string | null)[] = [];
  for (;;) {
    const d = r.ready() ?? (await r.next());
    out.push(d);
    if (d === null) return out;
  }
}

describe('SseReader', () => {
  it('reads events split anywhere across reads: lines, CRLF, multi-line data, comments, UTF-8 characters', async () => {
    const euro = Buffer.from('data: {"t":"€"}\n\n');
    const cut = euro.indexOf(0xe2) + 1; // inside the 3-byte character
    const r = new SseReader(
      source([
        'data: {"a"',
        ':1}\n',
        '\n: a comment\r\ndata: line one\r\ndata: line two\r\n\r\n',
        euro.subarray(0, cut),
        euro.subarray(cut),
        'event: ignored\ndata: [DONE]\n\n',
      ]),
    );
    assert.deepEqual(await all(r), ['{"a":1}', 'line one\nline two', '{"t":"€"}', DONE, null]);
  });

  it('ready() hands out the events of one read without waiting, then says undefined', async () => {
    const r = new SseReader(source(['data: 1\n\ndata: 2\n\ndata: 3\n\n', 'data: 4\n\n']));
    assert.equal(r.ready(), undefined, 'nothing is read before next()');
    assert.equal(await r.next(), '1');
    assert.equal(r.ready(), '2');
    assert.equal(r.ready(), '3');
    assert.equal(r.ready(), undefined);
    assert.equal(await r.next(), '4');
    assert.equal(await r.next(), null);
  });

  it('counts an unterminated last event only when it is [DONE]', async () => {
    assert.deepEqual(await all(new SseReader(source(['data: x\n\ndata: [DONE]']))), ['x', DONE, null]);
    assert.deepEqual(await all(new SseReader(source(['data: x\n\ndata: {"cut']))), ['x', null]);
  });
});

/** The part of a ServerResponse the writer uses, recording writes. */
class FakeResponse {
  writes: string[] = [];
  ended: string | null = null;
  writableNeedDrain = false;
  destroyed = false;
  writableEnded = false;
  #listeners = new Map<string, (() => void)[]>();
  write(s: string): boolean {
    this.writes.push(s);
    return true;
  }
  end(s = ''): void {
    this.ended = s;
    this.writableEnded = true;
  }
  once(ev: string, f: () => void): this {
    this.#listeners.set(ev, [...(this.#listeners.get(ev) ?? []), f]);
    return this;
  }
  off(ev: string, f: () => void): this {
    this.#listeners.set(
      ev,
      (this.#listeners.get(ev) ?? []).filter((g) => g !== f),
    );
    return this;
  }
  emit(ev: string): void {
    for (const f of this.#listeners.get(ev) ?? []) f();
  }
}

describe('SseWriter', () => {
  it('sends the events of one tick in one write, and the rest with the end', async () => {
    const res = new FakeResponse();
    const w = new SseWriter(res as unknown as ServerResponse);
    assert.equal(w.event('{"n":1}'), undefined, 'no promise while the client keeps up');
    w.event('{"n":2}');
    await new Promise((r) => process.nextTick(r));
    assert.deepEqual(res.writes, ['data: {"n":1}\n\ndata: {"n":2}\n\n']);
    w.event('{"n":3}');
    w.end('data: [DONE]\n\n');
    assert.equal(res.ended, 'data: {"n":3}\n\ndata: [DONE]\n\n');
  });

  it('returns a promise under backpressure that resolves on drain (or close)', async () => {
    const res = new FakeResponse();
    const w = new SseWriter(res as unknown as ServerResponse);
    res.writableNeedDrain = true;
    const wait = w.event('x');
    assert.ok(wait instanceof Promise);
    let resolved = false;
    void wait.then(() => (resolved = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(resolved, false, 'waits while the client is behind');
    res.writableNeedDrain = false;
    res.emit('drain');
    await wait;
    const closing = w.event('y');
    assert.equal(closing, undefined);
    res.writableNeedDrain = true;
    const onClose = w.event('z')!;
    res.emit('close');
    await onClose;
  });
});
