/**
 * The llama backend behind the tenant-fair queue, with the tiny GGUF model the test writes: the catalog puts
 * every local model behind it (a stream that has produced its first chunk and is not read further holds its
 * sequence, so the order in which waiting requests start is observed, not timed), and the scheduler's metrics
 * are on /metrics after a generation (time to first token, time per output token, slots, occupancy, queue).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import OpenAI from 'openai';
import { describeNeeding } from './registry-helpers.js';
import { LLAMA, llamaMissing } from './llama-runtime.js';
import { writeTinyLlama } from '../tools/gguf/tiny-llama.js';
import { startSwitchyard, type TestServer } from './helpers.js';
import { generationRequest, parseCompletion } from '../src/api/openai/wire.js';
import { ClientSignal, type ChunkStream, type GenerationRequest } from '../src/runtimes/generation.js';

describeNeeding('llama backend behind the tenant-fair queue', LLAMA, await llamaMissing(), () => {
  let srv: TestServer;
  let work: string;
  let ids = 0;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'switchyard-llm-scheduler-'));
    const gguf = join(work, 'tiny.gguf');
    await writeTinyLlama(gguf, { context: 256 });
    const cfg = join(work, 'llm.json');
    await writeFile(
      cfg,
      JSON.stringify({ models: [{ name: 'tiny', backend: 'llama', path: gguf, contextSize: 256, sequences: 1, maxQueue: 16, threads: 1 }] }),
    );
    srv = await startSwitchyard({}, { listen: true, config: { llmConfig: cfg } });
  });

  after(async () => {
    await srv?.close();
    await rm(work, { recursive: true, force: true });
  });

  const request = (tenant: string, prompt: string): GenerationRequest =>
    generationRequest('completion', parseCompletion({ model: 'tiny', prompt, max_tokens: 8, temperature: 0 }), 'tiny', {}, new ClientSignal(), `r${++ids}`, {
      id: tenant,
      weight: 1,
    });
  const drain = async (s: ChunkStream): Promise<void> => {
    for await (const _ of s);
  };

  it("tenant A holds the one sequence with 4 more queued: B's request starts at A's first completion", async () => {
    const backend = srv.sy.llm.get('tiny')!.backend;
    const first = await backend.stream(request('A', 'a long story'));
    const started: string[] = [];
    const pending = new Map<string, Promise<ChunkStream>>();
    const ask = (who: string, tenant: string): void => {
      pending.set(
        who,
        backend.stream(request(tenant, `${who} says hello`)).then((s) => {
          started.push(who);
          return s;
        }),
      );
    };
    for (let i = 1; i <= 4; i++) ask(`A${i}`, 'A');
    ask('B', 'B');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(started, [], "the one sequence is held by A's open stream");
    assert.deepEqual(backend.load(), { active: 1, queued: 5, slots: 1 });
    await drain(first);
    const b = await pending.get('B')!;
    assert.deepEqual(started, ['B'], "B started next, ahead of A's four queued requests");
    await drain(b);
    for (let i = 1; i <= 4; i++) await drain(await pending.get(`A${i}`)!);
    assert.deepEqual(started, ['B', 'A1', 'A2', 'A3', 'A4']);
    assert.deepEqual(backend.load(), { active: 0, queued: 0, slots: 1 });
  });

  it('/metrics after a streamed generation: time to first token, time per output token, slots, occupancy, queue length', async () => {
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'sk-any', maxRetries: 0 });
    const chunks = [];
    const stream = await client.completions.create({
      model: 'tiny',
      prompt: 'count with me',
      max_tokens: 8,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const c of stream) chunks.push(c);
    const completion = chunks.at(-1)!.usage!.completion_tokens;
    assert.ok(completion >= 2, `two or more tokens (temperature 0 on this model gives ${completion})`);
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    const value = (series: string): number => {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      assert.ok(line !== undefined, `${series} in /metrics`);
      return Number(line.slice(series.length + 1));
    };
    assert.equal(value('switchyard_llm_time_to_first_token_seconds_count{model="tiny"}'), 1);
    assert.equal(value('switchyard_llm_time_per_output_token_seconds_count{model="tiny"}'), 1, 'one stream of two or more tokens');
    assert.ok(value('switchyard_llm_time_per_output_token_seconds_sum{model="tiny"}') > 0);
    assert.equal(value('switchyard_llm_time_per_output_token_seconds_bucket{le="+Inf",model="tiny"}'), 1);
    assert.equal(value('switchyard_llm_sequence_slots{model="tiny"}'), 1);
    assert.equal(value('switchyard_llm_slot_occupancy_ratio{model="tiny"}'), 0, 'nothing generating after the stream');
    assert.equal(value('switchyard_llm_active_sequences{model="tiny"}'), 0);
    assert.equal(value('switchyard_llm_queue_length{model="tiny"}'), 0);
    assert.match(text, /^# TYPE switchyard_llm_time_per_output_token_seconds histogram$/m);
    assert.match(text, /^# TYPE switchyard_llm_slot_occupancy_ratio gauge$/m);
  });
});
