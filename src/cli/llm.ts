/**
 * @module
 * `switchyard llm …`: the OpenAI-compatible LLM API of a running server: the models it serves (`/v1/models`),
 * a chat completion from the command line (streamed or not), usage and spend per tenant and model
 * (`/api/v1/llm/usage`), and a tiny random-weight GGUF model to try the local backend without downloading one.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DONE, SseReader } from '../runtimes/index.js';
import type { Usage } from '../runtimes/index.js';
import { action, call, CliError, print, printJson, request, table, when, withConnection, type ConnFlags } from './client.js';
import { retiredOption, timeArg } from './args.js';
import { num } from './routing.js';

interface ModelJson {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
}

interface LlmUsageJson {
  usage: Array<{
    tenant: string;
    model: string;
    period: string;
    requests: number;
    errors: number;
    promptTokens: number;
    completionTokens: number;
    cost: number;
  }>;
}

interface ChatChoiceJson {
  index: number;
  message?: { content?: string | null };
  delta?: { content?: string | null };
  finish_reason?: string | null;
}
interface ChatJson {
  choices?: ChatChoiceJson[];
  usage?: Usage | null;
  error?: { message?: string; code?: string | null };
}

// ---- flag parsers ----

function positiveIntArg(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
  return n;
}

function temperatureArg(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > 2) throw new InvalidArgumentError('must be a number from 0 to 2 (0 = greedy)');
  return n;
}

// ---- commands ----

async function models(flags: ConnFlags): Promise<void> {
  const r = await call<{ object: 'list'; data: ModelJson[] }>(flags, 'GET', '/v1/models');
  if (flags.json) return printJson(r);
  if (r.data.length === 0) return print('No LLM models (start the server with --llm-config FILE).');
  print(
    table(
      ['ID', 'OWNED BY'],
      r.data.map((m) => [m.id, m.owned_by]),
    ),
  );
}

interface UsageFlags extends ConnFlags {
  tenant?: string;
  model?: string;
  since?: string;
  until?: string;
  groupBy?: string;
}

async function usage(flags: UsageFlags): Promise<void> {
  const q = new URLSearchParams();
  if (flags.tenant !== undefined) q.set('tenant', flags.tenant);
  if (flags.model !== undefined) q.set('model', flags.model);
  if (flags.since !== undefined) q.set('from', flags.since);
  if (flags.until !== undefined) q.set('to', flags.until);
  q.set('group_by', flags.groupBy ?? 'day');
  const qs = q.toString();
  const r = await call<LlmUsageJson>(flags, 'GET', `/api/v1/llm/usage${qs ? `?${qs}` : ''}`);
  if (flags.json) return printJson(r);
  if (r.usage.length === 0) return print('No LLM usage recorded.');
  print(
    table(
      ['TENANT', 'MODEL', 'PERIOD', 'REQUESTS', 'ERRORS', 'PROMPT TOKENS', 'COMPLETION TOKENS', 'COST'],
      r.usage.map((u) => [u.tenant || '(none)', u.model, when(u.period), u.requests, u.errors, u.promptTokens, u.completionTokens, num(u.cost)]),
    ),
  );
}

interface ChatFlags extends ConnFlags {
  system?: string;
  maxTokens?: number;
  temperature?: number;
  stream?: boolean;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const usageText = (u: Usage): string => `usage: ${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens} tokens`;

/** The usage line on standard error (the text alone stays on standard output, for pipes). */
function printUsage(u: Usage | null | undefined, finish: string | null | undefined): void {
  const parts = [u ? usageText(u) : 'usage: not reported'];
  if (finish) parts.push(`finish_reason: ${finish}`);
  process.stderr.write(`${parts.join(', ')}\n`);
}

async function write(s: string): Promise<void> {
  if (s !== '' && !process.stdout.write(s)) await new Promise((r) => process.stdout.once('drain', r));
}

async function streamChat(flags: ChatFlags, body: Record<string, unknown>): Promise<void> {
  const res = await request(flags, 'POST', '/v1/chat/completions', { json: body, headers: { accept: 'text/event-stream' } });
  if (res.body === null) throw new CliError('the server sent an empty response instead of an event stream');
  let text = '';
  let usage: Usage | null = null;
  let finish: string | null = null;
  let done = false;
  const endLine = (): Promise<void> => (text !== '' && !text.endsWith('\n') && !flags.json ? write('\n') : Promise.resolve());
  const events = new SseReader(Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>)[Symbol.asyncIterator]());
  try {
    for (let data = await events.next(); data !== null; data = await events.next()) {
      if (data === DONE) {
        done = true;
        break;
      }
      let chunk: ChatJson;
      try {
        chunk = JSON.parse(data) as ChatJson;
      } catch {
        await endLine();
        throw new CliError(`the server sent an event that is not JSON: ${data.slice(0, 200)}`);
      }
      if (flags.json) await write(`${JSON.stringify(chunk)}\n`);
      if (chunk.error !== undefined && chunk.error !== null) {
        await endLine();
        throw new CliError(`the stream failed: ${chunk.error.message ?? JSON.stringify(chunk.error)}`);
      }
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices?.[0];
      if (c?.finish_reason) finish = c.finish_reason;
      const delta = c?.delta?.content;
      if (typeof delta === 'string' && delta !== '') {
        text += delta;
        if (!flags.json) await write(delta);
      }
    }
  } catch (e) {
    if (e instanceof CliError) throw e;
    await endLine();
    throw new CliError(`the stream broke: ${(e as Error).message}`);
  }
  await endLine();
  if (!done) throw new CliError('the stream ended without [DONE]: the response is incomplete');
  if (!flags.json) printUsage(usage, finish);
}

async function chat(model: string, message: string, flags: ChatFlags): Promise<void> {
  const content = message === '-' ? await readStdin() : message;
  const messages: Array<{ role: string; content: string }> = [];
  if (flags.system !== undefined) messages.push({ role: 'system', content: flags.system });
  messages.push({ role: 'user', content });
  const body: Record<string, unknown> = { model, messages };
  if (flags.maxTokens !== undefined) body['max_tokens'] = flags.maxTokens;
  if (flags.temperature !== undefined) body['temperature'] = flags.temperature;
  if (flags.stream) return streamChat(flags, { ...body, stream: true, stream_options: { include_usage: true } });
  const r = await call<ChatJson>(flags, 'POST', '/v1/chat/completions', { json: body });
  if (flags.json) return printJson(r);
  const c = r.choices?.[0];
  print(c?.message?.content ?? '');
  printUsage(r.usage, c?.finish_reason);
}

async function writeTinyModel(file: string, flags: { name: string; json?: boolean }): Promise<void> {
  // Loaded only here: the writer is a tool compiled beside the CLI (dist/tools/gguf), with no dependencies.
  let tinyLlamaGguf: typeof import('../../tools/gguf/tiny-llama.js').tinyLlamaGguf;
  try {
    ({ tinyLlamaGguf } = await import('../../tools/gguf/tiny-llama.js'));
  } catch (e) {
    throw new CliError(`the tiny model writer (tools/gguf) cannot be loaded: ${(e as Error).message} (is dist/tools/gguf built? npm run build)`);
  }
  const path = resolve(file);
  const bytes = tinyLlamaGguf();
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, bytes);
  } catch (e) {
    throw new CliError(`cannot write ${file}: ${(e as Error).message}`);
  }
  const entry = { name: flags.name, backend: 'llama', path, contextSize: 256, sequences: 2 };
  if (flags.json) return printJson({ path, bytes: bytes.byteLength, config: { models: [entry] } });
  const yamlPath = /^[\w./-]+$/.test(path) ? path : JSON.stringify(path);
  print(`Wrote a tiny Llama model with random weights (${(bytes.byteLength / 1024).toFixed(0)} KiB, GGUF) to ${path}.`);
  print('It generates random words, deterministically with temperature 0: for tests and demos, not for answers.');
  print('');
  print('LLM config (save as llm.yaml, start with "switchyard serve --llm-config llm.yaml"):');
  print('');
  print(['models:', `  - name: ${flags.name}`, '    backend: llama', `    path: ${yamlPath}`, '    contextSize: 256', '    sequences: 2'].join('\n'));
  print('');
  print(`Then: switchyard llm chat ${flags.name} "hello" --max-tokens 16 --temperature 0`);
}

/** `switchyard llm`: the OpenAI-compatible API of a running server: models, chat, usage; a tiny test model. */
export function llmCommand(): Command {
  const llm = new Command('llm').description(
    'The OpenAI-compatible LLM API (/v1) of a running Switchyard server: list models, chat, usage and spend; write a tiny test model.',
  );

  withConnection(
    llm.command('models').description('List the LLM models the server serves (GET /v1/models): id (what clients send in "model") and owner.'),
  ).action(action(models));

  withConnection(
    llm
      .command('chat')
      .description(
        'Send one chat completion (POST /v1/chat/completions) and print the reply; the token usage and finish reason go to standard error. --stream prints the text as it is generated; a stream that fails or ends without [DONE] exits with status 1. --json prints the response (streamed: one chunk per line).',
      )
      .argument('<model>', 'LLM model id (see "switchyard llm models")')
      .argument('<message>', 'the user message ("-" = read it from standard input)')
      .option('--system <text>', 'a system message sent before the user message')
      .addOption(new Option('--max-tokens <n>', "most tokens to generate (default: the model's defaultMaxTokens)").argParser(positiveIntArg))
      .addOption(
        new Option('--temperature <t>', 'sampling temperature, 0 to 2; 0 = greedy, deterministic for local models (default: 1)').argParser(temperatureArg),
      )
      .option('--stream', 'stream the reply as server-sent events and print each piece of text as it arrives'),
  ).action(action(chat));

  withConnection(
    llm
      .command('usage')
      .description(
        "LLM API usage and spend per tenant, model and period (GET /api/v1/llm/usage): requests, errors, prompt and completion tokens, cost by the model catalog's prices. A tenant key sees its own tenant.",
      )
      .option('--tenant <name>', 'only this tenant')
      .option('--model <name>', 'only this model (the name clients send in "model")')
      .addOption(new Option('--since <time>', 'from this time, inclusive, in hour buckets: ISO-8601 or a duration ago (30m, 2h, 7d)').argParser(timeArg))
      .addOption(new Option('--until <time>', 'up to this time, exclusive: ISO-8601 or a duration ago').argParser(timeArg))
      .addOption(retiredOption('--from <time>', '--since <time>'))
      .addOption(retiredOption('--to <time>', '--until <time>'))
      .addOption(
        new Option('--group-by <period>', 'one row per hour, per UTC day, or one total per tenant and model (period = its first hour)')
          .choices(['hour', 'day', 'total'])
          .default('day'),
      ),
  ).action(action(usage));

  llm
    .command('write-tiny-model')
    .description(
      'Write a tiny Llama-architecture GGUF model with random weights (about 0.5 MB; nothing is downloaded) and print an LLM config that serves it with the local llama backend. For tests and demos: it generates random words.',
    )
    .argument('<file>', 'where to write the .gguf file (folders are created)')
    .option('--name <model>', 'model name in the printed config', 'tiny-chat')
    .option('--json', 'print {path, bytes, config} as JSON instead of the YAML snippet')
    .action(action(writeTinyModel));

  return llm;
}
