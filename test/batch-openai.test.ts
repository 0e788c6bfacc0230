/**
 * The OpenAI Batch API through the official `openai` SDK, unmodified: files.create → batches.create → poll →
 * files.content, for embeddings (an ONNX encoder) and chat (the tiny GGUF model); outputs equal the online
 * endpoints' answers line for line. Validation failures as a failed batch with errors.data[]; bad lines in the
 * error file without failing the batch; cancel and expiry keep the committed chunks' output (a worker stalled
 * by the test hook holds the next chunk, so "partial" is exact; expiry runs on an injected clock).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import OpenAI, { toFile } from 'openai';
import { OpenAiLineRunner } from '../src/api/index.js';
import { BatchService } from '../src/batch/index.js';
import { createLogger } from '../src/server.js';
import { describeNeeding } from './registry-helpers.js';
import { LLAMA, llamaMissing } from './llama-runtime.js';
import { writeTinyLlama } from '../tools/gguf/tiny-llama.js';
import { encoder } from '../tools/onnx/zoo.js';
import { assertClose, startSwitchyard, type TestServer } from './helpers.js';

const ADMIN = 'batch-test-admin-key-0123456789';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface OutLine {
  id: string;
  custom_id: string;
  response: { status_code: number; request_id: string; body: Record<string, unknown> } | null;
  error: { code: string; message: string } | null;
}

const jsonl = (rows: unknown[]): string => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
const parseLines = (text: string): OutLine[] =>
  text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as OutLine);

describeNeeding('OpenAI Batch API (files + batches, official SDK)', LLAMA, await llamaMissing(), () => {
  let server: TestServer;
  let client: OpenAI;
  let work: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'switchyard-batch-'));
    const gguf = join(work, 'tiny.gguf');
    await writeTinyLlama(gguf);
    const cfg = join(work, 'llm.json');
    await writeFile(
      cfg,
      JSON.stringify({
        models: [
          { name: 'tiny-chat', backend: 'llama', path: gguf, contextSize: 256, sequences: 2, pricing: { promptPer1k: 1, completionPer1k: 2 } },
          { name: 'embed', backend: 'onnx-embeddings', model: 'encoder' },
        ],
      }),
    );
    server = await startSwitchyard(
      { encoder: { versions: { 1: encoder({ layers: 1, dModel: 32, heads: 2, seqLen: 32, ffn: 64, vocab: 300 }) } } },
      {
        listen: true,
        config: { adminKey: ADMIN, llmConfig: cfg, batchChunkLines: 3, batchWorkers: 2 },
      },
    );
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: ADMIN, maxRetries: 0 });
  });

  after(async () => {
    await server?.close();
    await rm(work, { recursive: true, force: true });
  });

  async function upload(text: string, name = 'input.jsonl'): Promise<string> {
    const f = await client.files.create({ file: await toFile(Buffer.from(text), name), purpose: 'batch' });
    assert.equal(f.object, 'file');
    assert.equal(f.purpose, 'batch');
    assert.equal(f.bytes, Buffer.byteLength(text));
    return f.id;
  }

  async function until(id: string, done: (b: OpenAI.Batches.Batch) => boolean): Promise<OpenAI.Batches.Batch> {
    for (;;) {
      const b = await client.batches.retrieve(id);
      if (done(b)) return b;
      await sleep(50);
    }
  }
  const ended = (b: OpenAI.Batches.Batch): boolean => ['completed', 'failed', 'expired', 'cancelled'].includes(b.status);

  it('embeddings: output lines equal /v1/embeddings; a bad line goes to the error file, the batch completes', async () => {
    const inputs = Array.from({ length: 7 }, (_, i) => `text number ${i} ${'✓'.repeat(i % 3)}`);
    const rows: unknown[] = inputs.map((input, i) => ({ custom_id: `e-${i}`, method: 'POST', url: '/v1/embeddings', body: { model: 'embed', input } }));
    rows.splice(3, 0, { custom_id: 'bad', method: 'POST', url: '/v1/embeddings', body: { model: 'embed', input: '' } });
    const fileId = await upload(jsonl(rows));
    assert.equal((await client.files.retrieve(fileId)).filename, 'input.jsonl');
    assert.equal(await (await client.files.content(fileId)).text(), jsonl(rows));

    const created = await client.batches.create({ input_file_id: fileId, endpoint: '/v1/embeddings', completion_window: '24h', metadata: { run: 'e' } });
    assert.equal(created.status, 'validating');
    assert.equal(created.object, 'batch');
    assert.deepEqual(created.metadata, { run: 'e' });
    assert.equal(created.expires_at, created.created_at + 86_400);
    const b = await until(created.id, ended);
    assert.equal(b.status, 'completed', JSON.stringify(b));
    assert.deepEqual(b.request_counts, { total: 8, completed: 7, failed: 1 });
    for (const k of ['in_progress_at', 'finalizing_at', 'completed_at'] as const) assert.equal(typeof b[k], 'number', k);
    assert.ok(b.created_at <= b.in_progress_at! && b.in_progress_at! <= b.finalizing_at! && b.finalizing_at! <= b.completed_at!);

    const out = parseLines(await (await client.files.content(b.output_file_id!)).text());
    assert.deepEqual(
      out.map((l) => l.custom_id),
      inputs.map((_, i) => `e-${i}`),
    );
    for (const [i, l] of out.entries()) {
      assert.match(l.id, /^batch_req_/);
      assert.equal(l.error, null);
      assert.equal(l.response!.status_code, 200);
      const online = await client.embeddings.create({ model: 'embed', input: inputs[i]! });
      const body = l.response!.body as unknown as OpenAI.Embeddings.CreateEmbeddingResponse;
      // Same model, same ids: equal up to float rounding (lines batch with others, in a different batch size).
      assertClose(body.data[0]!.embedding, online.data[0]!.embedding, 1e-5, `line ${i}`);
      assert.deepEqual(body.usage, online.usage);
    }
    const errs = parseLines(await (await client.files.content(b.error_file_id!)).text());
    assert.equal(errs.length, 1);
    assert.equal(errs[0]!.custom_id, 'bad');
    assert.equal(errs[0]!.response!.status_code, 400);
    assert.match(JSON.stringify(errs[0]!.response!.body), /input/);
    assert.ok(b.usage && b.usage.input_tokens > 0);

    const metrics = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
    const value = (re: RegExp): number => Number(re.exec(metrics)?.[1] ?? NaN);
    assert.ok(value(/^switchyard_batch_lines_total\{endpoint="\/v1\/embeddings",outcome="succeeded"\} (\d+)/m) >= 7, 'lines metric');
    assert.ok(value(/^switchyard_batch_lines_total\{endpoint="\/v1\/embeddings",outcome="failed"\} (\d+)/m) >= 1, 'failed lines metric');
    assert.ok(value(/^switchyard_batch_jobs_total\{status="completed"\} (\d+)/m) >= 1, 'jobs metric');
    assert.ok(value(/^switchyard_batch_chunks_total\{outcome="committed"\} (\d+)/m) >= 3, 'chunks metric');

    const listed = await client.batches.list({ limit: 10 });
    assert.ok(listed.data.some((x) => x.id === b.id));
    const files = await client.files.list();
    assert.ok(files.data.some((f) => f.id === b.output_file_id));
  });

  it('chat: output lines equal /v1/chat/completions (greedy) and usage is recorded for the tenant', async () => {
    const prompts = ['hello', 'switch the yard', 'a b c', 'tiny model'];
    const rows = prompts.map((p, i) => ({
      custom_id: `c-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'tiny-chat', messages: [{ role: 'user', content: p }], max_tokens: 5, temperature: 0 },
    }));
    const fileId = await upload(jsonl(rows));
    const b = await until((await client.batches.create({ input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' })).id, ended);
    assert.equal(b.status, 'completed', JSON.stringify(b));
    assert.deepEqual(b.request_counts, { total: 4, completed: 4, failed: 0 });
    assert.equal(b.error_file_id, null);
    const out = parseLines(await (await client.files.content(b.output_file_id!)).text());
    let tokens = 0;
    for (const [i, l] of out.entries()) {
      const body = l.response!.body as unknown as OpenAI.Chat.ChatCompletion;
      const online = await client.chat.completions.create({
        model: 'tiny-chat',
        messages: [{ role: 'user', content: prompts[i]! }],
        max_tokens: 5,
        temperature: 0,
      });
      assert.equal(body.object, 'chat.completion');
      assert.equal(body.model, 'tiny-chat');
      assert.equal(body.choices[0]!.message.content, online.choices[0]!.message.content, `line ${i}`);
      tokens += body.usage!.total_tokens;
    }
    assert.equal(b.usage!.total_tokens, tokens);
    const usage = await server.sy.llmUsage.query({ groupBy: 'total' });
    const chat = usage.find((r) => r.model === 'tiny-chat' && r.tenant === '');
    assert.ok(chat && chat.promptTokens + chat.completionTokens >= tokens);
  });

  it('a file that fails validation makes a failed batch naming each bad line', async () => {
    const good = { custom_id: 'a', method: 'POST', url: '/v1/embeddings', body: { model: 'embed', input: 'x' } };
    const text = [
      JSON.stringify(good),
      '{not json',
      JSON.stringify({ ...good }),
      JSON.stringify({ ...good, custom_id: 'b', url: '/v1/completions' }),
      JSON.stringify({ ...good, custom_id: 'c', body: { model: 'other', input: 'x' } }),
    ].join('\n');
    const b = await until((await client.batches.create({ input_file_id: await upload(text), endpoint: '/v1/embeddings', completion_window: '24h' })).id, ended);
    assert.equal(b.status, 'failed');
    assert.equal(typeof b.failed_at, 'number');
    assert.deepEqual(
      b.errors!.data!.map((e) => [e.code, e.line, e.param]),
      [
        ['invalid_json_line', 2, null],
        ['duplicate_custom_id', 3, 'custom_id'],
        ['url_mismatch', 4, 'url'],
        ['model_mismatch', 5, 'body.model'],
      ],
    );
    const empty = await until(
      (await client.batches.create({ input_file_id: await upload('\n'), endpoint: '/v1/embeddings', completion_window: '24h' })).id,
      ended,
    );
    assert.equal(empty.status, 'failed');
    assert.equal(empty.errors!.data![0]!.code, 'empty_file');
  });

  it('refuses bad requests with OpenAI-shaped 4xx', async () => {
    await assert.rejects(client.batches.retrieve('batch_nope'), (e: unknown) => e instanceof OpenAI.NotFoundError && /No such Batch/.test(e.message));
    await assert.rejects(client.files.retrieve('file-nope'), (e: unknown) => e instanceof OpenAI.NotFoundError);
    await assert.rejects(
      client.batches.create({ input_file_id: 'file-nope', endpoint: '/v1/embeddings', completion_window: '24h' }),
      (e: unknown) => e instanceof OpenAI.NotFoundError,
    );
    await assert.rejects(
      client.batches.create({ input_file_id: 'x', endpoint: '/v1/moderations' as '/v1/embeddings', completion_window: '24h' }),
      (e: unknown) => e instanceof OpenAI.BadRequestError,
    );
    await assert.rejects(
      client.files.create({ file: await toFile(Buffer.from('{}'), 'a.jsonl'), purpose: 'fine-tune' }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /purpose/.test(e.message),
    );
    const id = await upload('{}\n');
    assert.deepEqual(await client.files.delete(id), { id, object: 'file', deleted: true });
    await assert.rejects(client.files.content(id), (e: unknown) => e instanceof OpenAI.NotFoundError);
  });

  it('documents every route in the OpenAPI document', async () => {
    const doc = (await (await fetch(`${server.url}/docs/json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    for (const [path, method] of [
      ['/v1/files', 'post'],
      ['/v1/files', 'get'],
      ['/v1/files/{file_id}', 'get'],
      ['/v1/files/{file_id}', 'delete'],
      ['/v1/files/{file_id}/content', 'get'],
      ['/v1/batches', 'post'],
      ['/v1/batches', 'get'],
      ['/v1/batches/{batch_id}', 'get'],
      ['/v1/batches/{batch_id}/cancel', 'post'],
    ] as const) {
      assert.ok(doc.paths[path]?.[method], `${method.toUpperCase()} ${path} in /docs/json`);
    }
  });

  /** A second set of workers on the server's store: stalls (test hook) after `n` chunks, on the clock `now`. */
  async function stalledWorkers(n: number, now: () => number): Promise<BatchService> {
    return BatchService.create({
      database: server.sy.registry.database,
      logger: createLogger('silent'),
      usage: null,
      workers: 2,
      leaseMs: 60_000,
      chunkLines: 3,
      pollMs: 20,
      runner: new OpenAiLineRunner({ service: server.sy.llm, canSee: () => true }),
      now,
      stallAfterChunks: n,
    });
  }

  it("cancel keeps the committed chunks' output; expiry keeps it too and lists the rest as batch_expired", async () => {
    await server.sy.batch.close(); // the server's own workers stop: only the stalled set below runs chunks
    let clock = Date.now();
    const rows = Array.from({ length: 9 }, (_, i) => ({
      custom_id: `k-${i}`,
      method: 'POST',
      url: '/v1/embeddings',
      body: { model: 'embed', input: `line ${i}` },
    }));
    for (const end of ['cancel', 'expire'] as const) {
      const svc = await stalledWorkers(1, () => clock);
      try {
        const created = await client.batches.create({ input_file_id: await upload(jsonl(rows)), endpoint: '/v1/embeddings', completion_window: '24h' });
        await until(created.id, (b) => b.status === 'in_progress' && b.request_counts!.completed === 3);
        while (!svc.workers.stalled) await sleep(20);
        if (end === 'cancel') {
          const c = await client.batches.cancel(created.id);
          assert.equal(c.status, 'cancelling');
          assert.equal(typeof c.cancelling_at, 'number');
          svc.workers.wake();
        } else {
          clock += 25 * 3_600_000;
          svc.workers.wake();
        }
        const b = await until(created.id, ended);
        assert.equal(b.status, end === 'cancel' ? 'cancelled' : 'expired');
        assert.equal(typeof (end === 'cancel' ? b.cancelled_at : b.expired_at), 'number');
        const out = parseLines(await (await client.files.content(b.output_file_id!)).text());
        assert.deepEqual(
          out.map((l) => l.custom_id),
          ['k-0', 'k-1', 'k-2'],
        );
        if (end === 'cancel') {
          assert.deepEqual(b.request_counts, { total: 9, completed: 3, failed: 0 });
          assert.equal(b.error_file_id, null);
          await assert.rejects(client.batches.cancel(created.id), (e: unknown) => e instanceof OpenAI.APIError && e.status === 409);
        } else {
          assert.deepEqual(b.request_counts, { total: 9, completed: 3, failed: 6 });
          const errs = parseLines(await (await client.files.content(b.error_file_id!)).text());
          assert.deepEqual(
            errs.map((l) => [l.custom_id, l.error!.code, l.response]),
            rows.slice(3).map((r) => [r.custom_id, 'batch_expired', null]),
          );
        }
      } finally {
        await svc.close();
      }
    }
  });
});
