/**
 * Batch isolation: a request whose values make the model fail at run time (token ids beyond the encoder's
 * vocabulary) must not fail the requests it was batched with. The batch is rerun one request at a time; the
 * innocent ones get their outputs, the culprit a 400 that names no runtime internals. The batch is formed
 * deterministically: a gated runtime holds the only instance while the four requests queue.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { encoder } from '../tools/onnx/zoo.js';
import { gatedRuntime, until } from './gated-runtime.js';
import { startSwitchyard, type TestServer } from './helpers.js';

const SEQ = 4;
const VOCAB = 50;
const MODEL = encoder({ layers: 1, dModel: 8, heads: 2, seqLen: SEQ, ffn: 16, vocab: VOCAB, seed: 9 });
const gate = gatedRuntime([createHash('sha256').update(MODEL).digest('hex')]);

describe('batch isolation', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startSwitchyard(
      { enc: { versions: { 1: MODEL }, config: { instances: 1, max_batch_size: 8, max_queue_delay_us: 0 } } },
      { runtime: gate.runtime },
    );
  });
  after(async () => {
    gate.open();
    await srv.close();
  });

  const infer = (first: number) =>
    srv.sy.app.inject({
      method: 'POST',
      url: '/v2/models/enc/infer',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, SEQ], data: [first, 1, 2, 3] }] }),
    });

  it('a request with out-of-vocabulary ids fails alone with a 400; the requests batched with it succeed', async () => {
    const batcher = srv.sy.manager.resolve('enc').batcher!;
    gate.ran.length = 0;
    gate.close();
    const blocker = infer(7);
    await until(() => gate.ran.length === 1);
    const queued = [infer(10), infer(VOCAB + 1000), infer(11), infer(12)];
    await until(() => batcher.queued === 4);
    gate.open();
    assert.equal((await blocker).statusCode, 200);
    const [a, bad, b, c] = await Promise.all(queued);
    assert.deepEqual(gate.ran.slice(1, 5), [10, VOCAB + 1000, 11, 12], 'the four ran as one batch first');
    for (const ok of [a!, b!, c!]) assert.equal(ok.statusCode, 200, ok.body);
    assert.equal(bad!.statusCode, 400, bad!.body);
    assert.equal(bad!.json().code, 'SY_ERR_INPUT_REJECTED');
    assert.doesNotMatch(bad!.json().error, /Gather|node|onnxruntime/i, 'no runtime internals in the message');
    // The good requests' outputs equal what they get alone.
    gate.ran.length = 0;
    const alone = await infer(10);
    assert.deepEqual(alone.json().outputs, a!.json().outputs);
    const metrics = (await srv.sy.app.inject('/metrics')).body;
    assert.match(metrics, /switchyard_inference_failure_total\{model="enc",version="1",reason="invalid_input"\} 1/);
    assert.doesNotMatch(metrics, /switchyard_inference_failure_total\{model="enc",version="1",reason="runtime_error"\}/);
  });

  it('a failing request alone stays a runtime failure (500): nothing tells its input from the model', async () => {
    const r = await infer(VOCAB + 5);
    assert.equal(r.statusCode, 500, r.body);
    assert.equal(r.json().code, 'SY_ERR_INFERENCE_FAILED');
  });
});
