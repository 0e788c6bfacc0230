/**
 * `switchyard llm …` as the real binary (dist/src/cli/main.js, a child process) against one in-process server
 * (open mode) serving a tiny local GGUF model (tools/gguf/tiny-llama.ts; greedy decoding on random weights is
 * deterministic): models; chat, not streamed and streamed (the same text, usage on standard error); usage after a
 * flush; the server's errors (unknown model) and bad flags; a stream that fails with an error event or ends
 * without [DONE] (a fake SSE server); write-tiny-model and the config it prints; --help.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { loadLlmConfig } from '../src/config/llm-config.js';
import OpenAI from 'openai';
import { describeNeeding } from './registry-helpers.js';
import { LLAMA, llamaMissing } from './llama-runtime.js';
import { writeTinyLlama } from '../tools/gguf/tiny-llama.js';
import { startSwitchyard, type TestServer } from './helpers.js';
import { runCli, ok, fails, rows, type Run } from './cli-helpers.js';

const run = (args: string[], input?: string): Promise<Run> => runCli(args, { env: { SWITCHYARD_API_KEY: '' }, ...(input === undefined ? {} : { input }) });

/** A server that answers every request with these raw SSE events (a stream broken in some way). */
async function sseServer(events: string[]): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(events.join(''));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

const chunk = (content: string): string =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;

describeNeeding('switchyard llm CLI', LLAMA, await llamaMissing(), () => {
  let srv: TestServer;
  let work: string;
  let url: string[];
  const GEN = ['--max-tokens', '8', '--temperature', '0'];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'switchyard-cli-llm-'));
    const path = join(work, 'tiny.gguf');
    await writeTinyLlama(path);
    const llmConfig = join(work, 'llm.json');
    await writeFile(llmConfig, JSON.stringify({ models: [{ name: 'tiny-chat', backend: 'llama', path, contextSize: 256, sequences: 2 }] }));
    srv = await startSwitchyard({}, { listen: true, config: { llmConfig } });
    url = ['--url', srv.url];
  });
  after(async () => {
    await srv.close();
    await rm(work, { recursive: true, force: true });
  });

  it('--help documents every subcommand and its flags', async () => {
    const [top, llm, models, chat, usage, tiny] = (
      await Promise.all([
        run(['--help']),
        run(['llm', '--help']),
        run(['llm', 'models', '--help']),
        run(['llm', 'chat', '--help']),
        run(['llm', 'usage', '--help']),
        run(['llm', 'write-tiny-model', '--help']),
      ])
    ).map(ok) as [string, string, string, string, string, string];
    assert.match(top, /\bllm\b/);
    for (const sub of ['models', 'chat', 'usage', 'write-tiny-model']) assert.match(llm, new RegExp(`\\b${sub}\\b`));
    for (const h of [models, chat, usage]) for (const f of ['--url', '--api-key', '--json']) assert.ok(h.includes(f), `${f} in\n${h}`);
    assert.match(models, /GET \/v1\/models/);
    for (const f of ['<model>', '<message>', '--system', '--max-tokens', '--temperature', '--stream']) assert.ok(chat.includes(f), `${f} in\n${chat}`);
    assert.match(chat, /\[DONE\]/);
    for (const f of ['--tenant', '--model', '--since', '--until', '--group-by']) assert.ok(usage.includes(f), `${f} in\n${usage}`);
    assert.match(usage, /hour.*day.*total/s);
    for (const f of ['<file>', '--name', '--json']) assert.ok(tiny.includes(f), `${f} in\n${tiny}`);
  });

  it('models lists the configured model', async () => {
    const [table, json] = await Promise.all([run(['llm', 'models', ...url]), run(['llm', 'models', ...url, '--json'])]);
    assert.deepEqual(rows(ok(table)), [['tiny-chat', 'switchyard']]);
    const body = JSON.parse(ok(json)) as { object: string; data: Array<{ id: string }> };
    assert.equal(body.object, 'list');
    assert.deepEqual(
      body.data.map((m) => m.id),
      ['tiny-chat'],
    );
  });

  let text = '';

  it('chat prints the reply on standard output and the usage on standard error', async () => {
    const r = await run(['llm', 'chat', 'tiny-chat', 'hello world', ...GEN, '--system', 'be brief', ...url]);
    text = ok(r);
    assert.ok(text.trim().length > 0, 'some text');
    assert.ok(text.endsWith('\n'));
    assert.match(r.stderr, /^usage: \d+ prompt \+ 8 completion = \d+ tokens, finish_reason: length\n$/);
    // The same reply as the API gives (greedy decoding is deterministic).
    const api = await fetch(`${srv.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'tiny-chat',
        messages: [
          { role: 'system', content: 'be brief' },
          { role: 'user', content: 'hello world' },
        ],
        max_tokens: 8,
        temperature: 0,
      }),
    });
    const body = (await api.json()) as { choices: Array<{ message: { content: string } }> };
    assert.equal(text, `${body.choices[0]!.message.content}\n`);
  });

  it('chat --stream prints the same text as it arrives, and the usage', async () => {
    const r = await run(['llm', 'chat', 'tiny-chat', 'hello world', ...GEN, '--system', 'be brief', '--stream', ...url]);
    assert.equal(ok(r), text);
    assert.match(r.stderr, /^usage: \d+ prompt \+ 8 completion = \d+ tokens, finish_reason: length\n$/);
    // The message from standard input; --json prints one chunk per line, the usage chunk included.
    const j = await run(['llm', 'chat', 'tiny-chat', '-', ...GEN, '--stream', '--json', ...url], 'hello world');
    const chunks = ok(j)
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { object: string; choices: unknown[]; usage?: { completion_tokens: number } });
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
    assert.equal(chunks.at(-1)!.usage?.completion_tokens, 8);
  });

  it('usage shows the requests after a flush', async () => {
    await srv.sy.llmUsage.flush();
    const [table, json, none] = await Promise.all([
      run(['llm', 'usage', '--group-by', 'total', ...url]),
      run(['llm', 'usage', '--model', 'tiny-chat', '--since', '1h', ...url, '--json']),
      run(['llm', 'usage', '--model', 'other', ...url]),
    ]);
    const [row] = rows(ok(table));
    // One request through the API and three through the CLI.
    assert.deepEqual([row![0], row![1], row![3], row![4], row![6]], ['(none)', 'tiny-chat', '4', '0', '32']);
    const body = JSON.parse(ok(json)) as { usage: Array<{ tenant: string; model: string; requests: number; completionTokens: number; promptTokens: number }> };
    assert.equal(
      body.usage.reduce((n, u) => n + u.requests, 0),
      4,
    );
    assert.ok(body.usage.every((u) => u.tenant === '' && u.model === 'tiny-chat' && u.promptTokens > 0));
    assert.equal(ok(none).trim(), 'No LLM usage recorded.');
  });

  it('open mode: the official SDK, which always sends a bearer token, is served with any token', async () => {
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'sk-no-key-required', maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'tiny-chat', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
    assert.equal(r.usage?.completion_tokens, 2);
  });

  it("prints the server's error and exits 1", async () => {
    const [unknown, badFlag, badTime] = await Promise.all([
      run(['llm', 'chat', 'no-such-model', 'hi', ...url]),
      run(['llm', 'chat', 'tiny-chat', 'hi', '--temperature', '3', ...url]),
      run(['llm', 'usage', '--since', 'yesterday', ...url]),
    ]);
    fails(unknown, /^switchyard: 404 The model 'no-such-model' does not exist or you do not have access to it\.\n$/);
    const stream = await run(['llm', 'chat', 'no-such-model', 'hi', '--stream', ...url]);
    fails(stream, /404 The model 'no-such-model' does not exist/);
    fails(badFlag, /--temperature.*must be a number from 0 to 2/);
    fails(badTime, /--since.*ISO-8601/);
  });

  it('a stream that fails or ends without [DONE] exits 1 after the text it got', async () => {
    const failing = await sseServer([
      chunk('par'),
      chunk('tial'),
      `data: ${JSON.stringify({ error: { message: 'upstream went away', type: 'server_error', param: null, code: 'upstream_error' } })}\n\n`,
    ]);
    const cut = await sseServer([chunk('par'), chunk('tial')]);
    try {
      const [f, c] = await Promise.all([
        run(['llm', 'chat', 'm', 'hi', '--stream', '--url', failing.url]),
        run(['llm', 'chat', 'm', 'hi', '--stream', '--url', cut.url]),
      ]);
      fails(f, /^switchyard: the stream failed: upstream went away\n$/);
      assert.equal(f.stdout, 'partial\n');
      fails(c, /^switchyard: the stream ended without \[DONE\]/);
      assert.equal(c.stdout, 'partial\n');
    } finally {
      failing.server.close();
      cut.server.close();
    }
  });

  it('write-tiny-model writes a GGUF file and prints a config that serves it', async () => {
    const file = join(work, 'out', 'model.gguf');
    const r = await run(['llm', 'write-tiny-model', file, '--name', 'demo']);
    const out = ok(r);
    const bytes = await readFile(file);
    assert.equal(bytes.subarray(0, 4).toString('latin1'), 'GGUF');
    const yaml = out.slice(out.indexOf('models:'), out.indexOf('\n\n', out.indexOf('models:')));
    const cfgFile = join(work, 'printed.yaml');
    await writeFile(cfgFile, yaml);
    const cfg = await loadLlmConfig(cfgFile);
    assert.equal(cfg.models.length, 1);
    assert.deepEqual({ ...cfg.models[0] }, { ...cfg.models[0], name: 'demo', backend: 'llama', path: file });
    const j = JSON.parse(ok(await run(['llm', 'write-tiny-model', join(work, 'second.gguf'), '--json']))) as {
      path: string;
      bytes: number;
      config: { models: Array<{ name: string }> };
    };
    assert.equal(j.bytes, bytes.length);
    assert.equal(j.config.models[0]!.name, 'tiny-chat');
  });
});
