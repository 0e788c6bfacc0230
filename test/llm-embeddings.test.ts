/**
 * The onnx-embeddings backend against a real Switchyard: vectors equal a direct onnxruntime run on the same
 * byte-tokenized, padded ids; concurrent requests batch together and split back right; token-level outputs
 * are pooled over the attention mask; bad requests and serving-core errors become OpenAI-shaped LlmErrors.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, before, describe, it } from 'node:test';
import ort from 'onnxruntime-node';
import { channels, type BatchEvent } from '../src/events.js';
import { OnnxEmbeddingBackend, poolRows } from '../src/inference/embeddings.js';
import { OnnxEmbeddingModelSchema } from '../src/config/llm-config.js';
import { LlmError, type EmbeddingRequest, type GenerationRequest } from '../src/runtimes/generation.js';
import { attr, GraphBuilder } from '../tools/onnx/graph.js';
import { OnnxType } from '../tools/onnx/proto.js';
import { encoder } from '../tools/onnx/zoo.js';
import { assertClose, referenceRun, startSwitchyard, type TestServer } from './helpers.js';

const SEQ = 16;
const D = 32;
const ENCODER = encoder({ layers: 1, dModel: D, heads: 2, seqLen: SEQ, ffn: 64, vocab: 300 });
const TOKEN_D = 4;

/** Token-level model with a dynamic sequence: hidden [N,T,4] = emb[input_ids] * attention_mask (padding zeroed). */
function tokenModel(): Uint8Array {
  const g = new GraphBuilder('token_model', 5);
  const ids = g.input({ name: 'input_ids', type: OnnxType.INT64, shape: ['batch', 'seq'] });
  const mask = g.input({ name: 'attention_mask', type: OnnxType.INT64, shape: ['batch', 'seq'] });
  const emb = g.op('Gather', [g.randomInit([300, TOKEN_D], 1, 'emb'), ids], { axis: attr.int(0) });
  const m = g.op('Reshape', [g.op('Cast', [mask], { to: attr.int(OnnxType.FLOAT) }), g.int64Init([3], [0, -1, 1])]);
  g.op('Mul', [emb, m], undefined, 'hidden');
  g.output({ name: 'hidden', type: OnnxType.FLOAT, shape: ['batch', 'seq', TOKEN_D] });
  return g.encode();
}
const TOKENS = tokenModel();

const config = (over: Record<string, unknown> = {}) =>
  OnnxEmbeddingModelSchema.parse({ name: 'text-embed', backend: 'onnx-embeddings', model: 'encoder', ...over });

const request = (input: string[], dimensions: number | null = null, signal = new AbortController().signal): EmbeddingRequest => ({
  model: 'text-embed',
  input,
  dimensions,
  body: {},
  signal,
  requestId: 'req-1',
});

function normalized(v: ArrayLike<number>): number[] {
  const norm = Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));
  return Array.from(v, (x) => x / norm);
}

/** Byte ids (byte + 3) padded with 0 to `seq`, as [N, seq] int64. */
function byteIds(texts: readonly string[], seq: number): { ids: ort.Tensor; mask: ort.Tensor } {
  const ids = new BigInt64Array(texts.length * seq);
  const mask = new BigInt64Array(texts.length * seq);
  texts.forEach((t, r) =>
    Buffer.from(t, 'utf8').forEach((b, j) => {
      ids[r * seq + j] = BigInt(b + 3);
      mask[r * seq + j] = 1n;
    }),
  );
  return { ids: new ort.Tensor('int64', ids, [texts.length, seq]), mask: new ort.Tensor('int64', mask, [texts.length, seq]) };
}

/** The encoder run directly with onnxruntime, each row L2-normalized (optionally after truncation). */
async function referenceVectors(texts: readonly string[], keep = D): Promise<number[][]> {
  const out = (await referenceRun(ENCODER, { input_ids: byteIds(texts, SEQ).ids }))['embedding']!;
  const data = out.data as Float32Array;
  return texts.map((_, r) => normalized(data.subarray(r * D, r * D + keep)));
}

async function rejects(p: Promise<unknown>, expect: { status: number; code?: string | null; param?: string | null; message?: RegExp }): Promise<LlmError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof LlmError, `an LlmError, got ${String(e)}`);
    assert.equal(e.status, expect.status, e.message);
    if (expect.code !== undefined) assert.equal(e.openaiCode, expect.code);
    if (expect.param !== undefined) assert.equal(e.param, expect.param);
    if (expect.message) assert.match(e.message, expect.message);
    return e;
  }
  assert.fail('expected a rejection');
}

const texts = (n: number, tag: string): string[] => Array.from({ length: n }, (_, i) => `${tag} ${i} ${'xyzé✓'.slice(0, i % 5)}`);

describe('onnx-embeddings backend (real onnxruntime through the serving core)', () => {
  let srv: TestServer;
  const batches: BatchEvent[] = [];
  const onBatch = (m: unknown): void => void batches.push(m as BatchEvent);
  before(async () => {
    srv = await startSwitchyard({
      encoder: { versions: { 1: ENCODER }, config: { instances: 1, max_batch_size: 64 } },
      encoder_b4: { versions: { 1: ENCODER }, config: { instances: 1, max_batch_size: 4 } },
      encoder_q1: { versions: { 1: ENCODER }, config: { instances: 1, max_batch_size: 64, max_queue_size: 1 } },
      tokens: { versions: { 1: TOKENS }, config: { instances: 1 } },
    });
    diagnostics.subscribe(channels.batch.name as string, onBatch);
  });
  after(async () => {
    diagnostics.unsubscribe(channels.batch.name as string, onBatch);
    await srv.close();
  });
  const backend = (over: Record<string, unknown> = {}): OnnxEmbeddingBackend =>
    new OnnxEmbeddingBackend(config(over), { inference: srv.sy.inference, logger: srv.sy.logger });

  it('vectors equal a direct onnxruntime run on the padded byte ids, L2-normalized, in input order', async () => {
    const b = backend();
    assert.deepEqual(b.capabilities, { chat: false, completions: false, embeddings: true });
    assert.equal(b.contextLength, SEQ);
    const input = texts(40, 'order');
    const res = await b.embed(request(input));
    const ref = await referenceVectors(input);
    assert.equal(res.vectors.length, input.length);
    res.vectors.forEach((v, i) => {
      assertClose(v, ref[i]!, 1e-5, `input ${i}`);
      assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5, `input ${i} has unit norm`);
    });
    const tokens = input.reduce((s, t) => s + Buffer.byteLength(t, 'utf8'), 0);
    assert.deepEqual(res.usage, { prompt_tokens: tokens, total_tokens: tokens });
    assert.deepEqual(b.load(), { active: 0, queued: 0, slots: null });
  });

  it('concurrent requests batch together and each gets its own vectors back', async () => {
    const b = backend();
    batches.length = 0;
    const inputs = Array.from({ length: 20 }, (_, i) => (i % 3 === 0 ? texts(3, `m${i}`) : [`concurrent ${i}`]));
    const pending = inputs.map((input) => b.embed(request(input)));
    const inFlight = b.load();
    assert.equal(inFlight.active + inFlight.queued, 20);
    const results = await Promise.all(pending);
    const ref = await referenceVectors(inputs.flat());
    let row = 0;
    results.forEach((res, i) => {
      assert.equal(res.vectors.length, inputs[i]!.length);
      for (const v of res.vectors) assertClose(v, ref[row]!, 1e-5, `request ${i} row ${row++}`);
    });
    const ours = batches.filter((e) => e.model === 'encoder');
    assert.ok(
      ours.some((e) => e.requests > 1),
      `some batch held several requests: ${JSON.stringify(ours.map((e) => e.requests))}`,
    );
    assert.equal(
      ours.reduce((s, e) => s + e.rows, 0),
      row,
      'every row ran exactly once',
    );
    assert.deepEqual(b.load(), { active: 0, queued: 0, slots: null });
  });

  it('splits a request into jobs of at most max_batch_size rows and joins them back in order', async () => {
    batches.length = 0;
    const input = texts(10, 'split');
    const res = await backend({ model: 'encoder_b4' }).embed(request(input));
    const ref = await referenceVectors(input);
    res.vectors.forEach((v, i) => assertClose(v, ref[i]!, 1e-5, `input ${i}`));
    const ours = batches.filter((e) => e.model === 'encoder_b4');
    assert.ok(
      ours.every((e) => e.rows <= 4),
      JSON.stringify(ours),
    );
    assert.equal(
      ours.reduce((s, e) => s + e.rows, 0),
      10,
    );
  });

  it('dimensions truncates, then re-normalizes; more than the model has is a 400 naming its size', async () => {
    const b = backend();
    const input = ['truncate me', 'and me'];
    const res = await b.embed(request(input, 8));
    const ref = await referenceVectors(input, 8);
    res.vectors.forEach((v, i) => {
      assert.equal(v.length, 8);
      assertClose(v, ref[i]!, 1e-5, `input ${i}`);
    });
    assert.equal((await b.embed(request(input, D))).vectors[0]!.length, D);
    await rejects(b.embed(request(input, D + 1)), { status: 400, param: 'dimensions', message: new RegExp(`between 1 and ${D}`) });
  });

  it('refuses too-long and empty inputs (400), naming the input, its token count and the limit', async () => {
    const b = backend();
    const long = 'a'.repeat(SEQ - 2) + 'éé'; // 18 bytes
    const e = await rejects(b.embed(request(['ok', 'fine', long])), { status: 400, code: 'context_length_exceeded', param: 'input' });
    assert.match(e.message, /input\[2\] is 18 tokens/);
    assert.match(e.message, new RegExp(`maximum input length is ${SEQ} tokens`));
    assert.equal((await b.embed(request(['a'.repeat(SEQ)]))).vectors.length, 1, 'exactly the limit fits');
    await rejects(b.embed(request(['x', ''])), { status: 400, param: 'input', message: /'\$\.input' is invalid: input\[1\]/ });
    await rejects(b.embed(request([])), { status: 400, param: 'input' });
  });

  it('pools [N,T,D] outputs over the unpadded tokens (mean) or the first token (cls), with the attention mask', async () => {
    const input = ['ab', 'hello world', 'z'];
    const maxLength = 12;
    const { ids, mask } = byteIds(input, maxLength);
    const hidden = (await referenceRun(TOKENS, { input_ids: ids, attention_mask: mask }))['hidden']!.data as Float32Array;
    const tokenRow = (r: number, t: number): Float32Array => hidden.subarray((r * maxLength + t) * TOKEN_D, (r * maxLength + t + 1) * TOKEN_D);
    const mean = backend({ model: 'tokens', maxLength });
    assert.equal(mean.contextLength, maxLength, 'dynamic sequence: maxLength');
    const res = await mean.embed(request(input));
    res.vectors.forEach((v, r) => {
      const n = Buffer.byteLength(input[r]!);
      const sum = new Array<number>(TOKEN_D).fill(0);
      for (let t = 0; t < n; t++) tokenRow(r, t).forEach((x, d) => (sum[d]! += x / n));
      assertClose(v, normalized(sum), 1e-5, `mean row ${r}`);
    });
    const cls = await backend({ model: 'tokens', maxLength, pooling: 'cls', normalize: false }).embed(request(input));
    cls.vectors.forEach((v, r) => assertClose(v, tokenRow(r, 0), 1e-6, `cls row ${r}`));
    await rejects(mean.embed(request(['x'.repeat(maxLength + 1)])), { status: 400, code: 'context_length_exceeded' });
  });

  it('generation calls are a 400 naming the embedding model', async () => {
    const b = backend();
    const gen = {} as GenerationRequest;
    for (const call of [b.estimate(gen), b.complete(gen), b.stream(gen)]) {
      await rejects(call, {
        status: 400,
        code: 'model_not_supported',
        param: 'model',
        message: /model "text-embed" is an embedding model; use \/v1\/embeddings/,
      });
    }
  });

  it('serving-core errors keep their status: unknown model 404, queue full 503 with retry-after, client gone 499', async () => {
    await rejects(backend({ model: 'nope' }).embed(request(['x'])), { status: 404, code: 'model_not_found' });
    await rejects(backend({ version: 7 }).embed(request(['x'])), { status: 404, code: 'model_not_found' });
    const q = backend({ model: 'encoder_q1' });
    const settled = await Promise.allSettled(Array.from({ length: 4 }, (_, i) => q.embed(request([`queue ${i}`]))));
    const full = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
    assert.ok(full.length > 0 && settled.some((s) => s.status === 'fulfilled'), 'some ran, some were refused');
    for (const f of full) {
      assert.ok(f.reason instanceof LlmError);
      assert.equal(f.reason.status, 503);
      assert.equal(f.reason.openaiCode, 'queue_full');
      assert.equal(f.reason.retryAfterMs, 1000);
    }
    const gone = new AbortController();
    gone.abort();
    await rejects(backend().embed(request(['x'], null, gone.signal)), { status: 499, code: 'client_closed' });
    const b = backend();
    const leaving = new AbortController();
    const busy = b.embed(request(texts(30, 'busy')));
    const queued = b.embed(request(['leaves'], null, leaving.signal));
    leaving.abort();
    await rejects(queued, { status: 499, code: 'client_closed' });
    assert.equal((await busy).vectors.length, 30);
    assert.deepEqual(b.load(), { active: 0, queued: 0, slots: null });
  });
});

describe('poolRows', () => {
  it('passes [N,D] rows through, means or takes the first token of [N,T,D], and refuses other ranks', () => {
    assert.deepEqual(
      poolRows([1, 2, 3, 4], [2, 2], [1, 1], 'mean')!.map((v) => [...v]),
      [
        [1, 2],
        [3, 4],
      ],
    );
    const tokens = [1, 2, 3, 4, 9, 9, /* row 1 */ 5, 6, 7, 8, 1, 0];
    assert.deepEqual(
      poolRows(tokens, [2, 3, 2], [2, 3], 'mean')!.map((v) => [...v]),
      [[2, 3], [13 / 3, 14 / 3].map(Math.fround)],
    );
    assert.deepEqual(
      poolRows(tokens, [2, 3, 2], [2, 3], 'cls')!.map((v) => [...v]),
      [
        [1, 2],
        [5, 6],
      ],
    );
    assert.equal(poolRows([1], [1], [1], 'mean'), null);
  });
});
