/**
 * The local llama backend keeps every OpenAI parameter's promise, through the official `openai` SDK against the
 * tiny GGUF model the test writes (tools/gguf/tiny-llama.ts, random weights): structured outputs and tool
 * arguments hold because grammars enforce them (a random model would never produce them by chance), tool
 * calls come back as tool calls (streamed and not), logprobs have OpenAI's shapes, n choices, seeds, penalties,
 * logit bias; what it cannot do is a 400 naming the parameter.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import { describeNeeding } from './registry-helpers.js';
import { LLAMA, llamaMissing } from './llama-runtime.js';
import { tinyLlamaTokenId, writeTinyLlama } from '../tools/gguf/tiny-llama.js';
import { startSwitchyard, type TestServer } from './helpers.js';

const SCHEMA = {
  type: 'object',
  title: 'Person',
  properties: {
    name: { type: 'string', maxLength: 10, description: 'who' },
    ok: { type: 'boolean' },
    color: { enum: ['red', 'green', 'blue'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 4 }, maxItems: 2 },
    pet: { anyOf: [{ type: 'null' }, { type: 'object', properties: { kind: { const: 'cat' } }, required: ['kind'], additionalProperties: false }] },
  },
  required: ['name', 'ok', 'color', 'tags', 'pet'],
  additionalProperties: false,
} as const;

const WEATHER: OpenAI.ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'the weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    },
  },
};
const TIME: OpenAI.ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'get_time',
    parameters: { type: 'object', properties: { zone: { enum: ['utc', 'local'] } }, required: ['zone'], additionalProperties: false },
  },
};

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function badRequest(param: string, pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, param, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

describeNeeding('llama backend: OpenAI parameters', LLAMA, await llamaMissing(), () => {
  let srv: TestServer;
  let client: OpenAI;
  let work: string;
  const ajv = new Ajv({ strict: false });
  const user = (content: string): OpenAI.ChatCompletionMessageParam[] => [{ role: 'user', content }];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'switchyard-llm-features-'));
    const gguf = join(work, 'tiny.gguf');
    await writeTinyLlama(gguf, { context: 2048 }); // the chat template documents tools in the prompt: ~1000 byte-level tokens
    const cfg = join(work, 'llm.json');
    await writeFile(cfg, JSON.stringify({ models: [{ name: 'tiny', backend: 'llama', path: gguf, contextSize: 2048, sequences: 2, threads: 1 }] }));
    srv = await startSwitchyard({}, { listen: true, config: { llmConfig: cfg } });
    client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'sk-any', maxRetries: 0 });
  });

  after(async () => {
    await srv?.close();
    await rm(work, { recursive: true, force: true });
  });

  it('response_format json_schema: every sample parses and validates (grammar-enforced), streamed and not', async () => {
    const validate = ajv.compile(SCHEMA);
    const r = await client.chat.completions.create({
      model: 'tiny',
      messages: user('describe someone'),
      n: 6,
      temperature: 1,
      seed: 7,
      max_tokens: 200,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA, strict: true } },
    });
    assert.equal(r.choices.length, 6);
    const seen = new Set<string>();
    for (const c of r.choices) {
      assert.equal(c.finish_reason, 'stop', `complete JSON: ${c.message.content}`);
      const v = JSON.parse(c.message.content!) as unknown;
      assert.ok(validate(v), `${c.message.content}: ${JSON.stringify(validate.errors)}`);
      seen.add(c.message.content!.trim());
    }
    assert.ok(seen.size > 1, 'different samples (seed + choice index)');
    const chunks = await collect(
      await client.chat.completions.create({
        model: 'tiny',
        messages: user('stream someone'),
        temperature: 1,
        seed: 3,
        max_tokens: 200,
        stream: true,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA } },
      }),
    );
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    assert.ok(validate(JSON.parse(text)), text);
    // json_object: any JSON object.
    const o = await client.chat.completions.create({
      model: 'tiny',
      messages: user('json please'),
      max_tokens: 200,
      temperature: 0.7,
      seed: 1,
      response_format: { type: 'json_object' },
    });
    if (o.choices[0]!.finish_reason === 'stop') assert.equal(typeof JSON.parse(o.choices[0]!.message.content!), 'object');
    else assert.equal(o.usage!.completion_tokens, 200, 'only max_tokens may cut the JSON');
  });

  it('a schema keyword the grammar cannot enforce is a 400 naming where', async () => {
    await assert.rejects(
      client.chat.completions.create({
        model: 'tiny',
        messages: user('x'),
        response_format: {
          type: 'json_schema',
          json_schema: { name: 'p', schema: { type: 'object', properties: { a: { type: 'string', pattern: '^a+$' } } } },
        },
      }),
      badRequest('response_format.json_schema.schema', /'pattern' at '\/properties\/a'/),
    );
    await assert.rejects(
      client.chat.completions.create({
        model: 'tiny',
        messages: user('x'),
        tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { n: { type: 'integer', minimum: 3 } } } } }],
      }),
      badRequest('tools[0].function.parameters', /'minimum'/),
    );
  });

  it('tool_choice required and named: a tool call, with arguments that validate, streamed and not', async () => {
    const args = { get_weather: ajv.compile(WEATHER.function.parameters!), get_time: ajv.compile(TIME.function.parameters!) };
    for (const seed of [1, 2, 3]) {
      const r: OpenAI.ChatCompletion = await client.chat.completions.create({
        model: 'tiny',
        messages: user('weather in Paris?'),
        tools: [WEATHER, TIME],
        tool_choice: 'required',
        temperature: 1,
        seed,
        max_tokens: 100,
      });
      const c: OpenAI.ChatCompletion.Choice = r.choices[0]!;
      assert.equal(c.finish_reason, 'tool_calls');
      assert.equal(c.message.content, null);
      assert.equal(c.message.tool_calls?.length, 1);
      const call = c.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
      assert.equal(call.type, 'function');
      assert.match(call.id, /^call_/);
      const validate = args[call.function.name as keyof typeof args];
      assert.ok(validate, `a tool name: ${call.function.name}`);
      assert.ok(validate(JSON.parse(call.function.arguments)), call.function.arguments);
    }
    const named = await client.chat.completions.create({
      model: 'tiny',
      messages: user('time?'),
      tools: [WEATHER, TIME],
      tool_choice: { type: 'function', function: { name: 'get_time' } },
      max_tokens: 100,
    });
    const call = named.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    assert.equal(call.function.name, 'get_time');
    assert.ok(args.get_time(JSON.parse(call.function.arguments)));

    // Streamed: OpenAI's tool-call deltas (id, type and name first, then argument fragments); the SDK's helper assembles them.
    const stream = client.chat.completions.stream({
      model: 'tiny',
      messages: user('weather?'),
      tools: [WEATHER],
      tool_choice: 'required',
      temperature: 0,
      max_tokens: 100,
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    stream.on('chunk', (c) => chunks.push(c));
    const final = await stream.finalChatCompletion();
    const first = chunks.find((c) => c.choices[0]?.delta.tool_calls)!.choices[0]!.delta.tool_calls![0]!;
    assert.equal(first.index, 0);
    assert.match(first.id ?? '', /^call_/);
    assert.equal(first.function?.name, 'get_weather');
    assert.ok(chunks.filter((c) => c.choices[0]?.delta.tool_calls).length > 2, 'arguments arrive in fragments');
    assert.equal(chunks.at(-1)!.choices[0]!.finish_reason, 'tool_calls');
    const streamed = final.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    assert.ok(args.get_weather(JSON.parse(streamed.function.arguments)), streamed.function.arguments);
    const whole = await client.chat.completions.create({
      model: 'tiny',
      messages: user('weather?'),
      tools: [WEATHER],
      tool_choice: 'required',
      temperature: 0,
      max_tokens: 100,
    });
    assert.equal(
      streamed.function.arguments,
      (whole.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments,
      'the same call, streamed or not',
    );
  });

  it('tool results continue the conversation; auto and none answer in OpenAI shape', async () => {
    const r: OpenAI.ChatCompletion = await client.chat.completions.create({
      model: 'tiny',
      max_tokens: 8,
      tools: [WEATHER],
      messages: [
        { role: 'user', content: 'weather?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo","unit":"c"}' } }],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '-3 and snow' },
      ],
    });
    const c: OpenAI.ChatCompletion.Choice = r.choices[0]!;
    assert.ok(['stop', 'length', 'tool_calls'].includes(c.finish_reason));
    assert.ok(c.message.content !== null || c.message.tool_calls?.length === 1);
    const none = await client.chat.completions.create({ model: 'tiny', messages: user('hi'), tools: [WEATHER], tool_choice: 'none', max_tokens: 4 });
    assert.equal(none.choices[0]!.message.tool_calls, undefined);
    assert.equal(none.usage!.completion_tokens, 4);
    await assert.rejects(
      client.chat.completions.create({
        model: 'tiny',
        max_tokens: 4,
        messages: [
          { role: 'user', content: 'x' },
          { role: 'tool', tool_call_id: 'nope', content: 'r' },
        ],
      }),
      badRequest('messages[1].tool_call_id'),
    );
    await assert.rejects(
      client.chat.completions.create({ model: 'tiny', messages: user('x'), tools: [WEATHER], tool_choice: { type: 'function', function: { name: 'other' } } }),
      badRequest('tool_choice'),
    );
  });

  it('logprobs: chat content entries with top_logprobs, completions tokens/token_logprobs/top_logprobs/text_offset', async () => {
    const r = await client.chat.completions.create({ model: 'tiny', messages: user('log'), max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 });
    const c = r.choices[0]!;
    const content = c.logprobs!.content!;
    assert.equal(content.length, 6);
    assert.equal(content.map((l) => l.token).join(''), c.message.content);
    for (const l of content) {
      assert.ok(l.logprob <= 0);
      assert.deepEqual(l.bytes, [...Buffer.from(l.token)]);
      assert.equal(l.top_logprobs.length, 3);
      assert.equal(l.top_logprobs[0]!.token, l.token, 'greedy: the sampled token is the most likely');
      assert.ok(l.top_logprobs[0]!.logprob >= l.top_logprobs[1]!.logprob && l.top_logprobs[1]!.logprob >= l.top_logprobs[2]!.logprob);
    }
    const plain = await client.chat.completions.create({ model: 'tiny', messages: user('log'), max_tokens: 6, temperature: 0 });
    assert.equal(plain.choices[0]!.logprobs, null);
    assert.equal(plain.choices[0]!.message.content, c.message.content, 'logprobs change nothing sampled');
    const streamed = await collect(
      await client.chat.completions.create({ model: 'tiny', messages: user('log'), max_tokens: 6, temperature: 0, logprobs: true, stream: true }),
    );
    const streamedLogprobs = streamed.flatMap((ch) => ch.choices[0]?.logprobs?.content ?? []);
    assert.deepEqual(
      streamedLogprobs.map((l) => l.token),
      content.map((l) => l.token),
    );
    // The same up to float rounding (the stream reused the prompt's evaluation, in another batch).
    streamedLogprobs.forEach((l, i) => assert.ok(Math.abs(l.logprob - content[i]!.logprob) < 1e-4));

    const t = await client.completions.create({ model: 'tiny', prompt: 'The', max_tokens: 5, temperature: 0, logprobs: 2 });
    const lp = t.choices[0]!.logprobs!;
    assert.equal(lp.tokens!.length, 5);
    assert.equal(lp.tokens!.join(''), t.choices[0]!.text);
    assert.equal(lp.token_logprobs!.length, 5);
    assert.ok(lp.top_logprobs!.every((m) => Object.keys(m).length <= 2 && Object.keys(m).length >= 1));
    assert.deepEqual(
      lp.text_offset,
      lp.tokens!.map((_, i) => lp.tokens!.slice(0, i).join('').length),
    );
    await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: user('x'), logprobs: true, top_logprobs: 21 }), badRequest('top_logprobs'));
  });

  it('n, seed, max_completion_tokens, penalties and logit_bias', async () => {
    const three = await client.chat.completions.create({ model: 'tiny', messages: user('choices'), n: 3, temperature: 1, seed: 11, max_completion_tokens: 5 });
    assert.deepEqual(
      three.choices.map((c) => c.index),
      [0, 1, 2],
    );
    assert.ok(three.choices.every((c) => c.finish_reason === 'length'));
    assert.equal(three.usage!.completion_tokens, 15);
    const again = await client.chat.completions.create({ model: 'tiny', messages: user('choices'), n: 3, temperature: 1, seed: 11, max_completion_tokens: 5 });
    assert.deepEqual(
      again.choices.map((c) => c.message.content),
      three.choices.map((c) => c.message.content),
      'a seed repeats',
    );
    const streamed = await collect(
      await client.chat.completions.create({
        model: 'tiny',
        messages: user('choices'),
        n: 3,
        temperature: 1,
        seed: 11,
        max_completion_tokens: 5,
        stream: true,
      }),
    );
    for (let i = 0; i < 3; i++) {
      assert.equal(
        streamed
          .filter((c) => c.choices[0]?.index === i)
          .map((c) => c.choices[0]!.delta.content ?? '')
          .join(''),
        three.choices[i]!.message.content,
      );
    }
    const x = tinyLlamaTokenId('x');
    assert.ok(x > 0);
    const biased = await client.completions.create({ model: 'tiny', prompt: 'a', max_tokens: 5, temperature: 0, logit_bias: { [x]: 100 } });
    assert.equal(biased.choices[0]!.text, 'xxxxx');
    // A presence penalty (on every token already generated) forbids repeats that the bias alone would make.
    const penalized = await client.completions.create({
      model: 'tiny',
      prompt: 'a',
      max_tokens: 5,
      temperature: 0,
      logit_bias: { [x]: 1 },
      presence_penalty: 2,
    });
    const unpenalized = await client.completions.create({ model: 'tiny', prompt: 'a', max_tokens: 5, temperature: 0, logit_bias: { [x]: 1 } });
    assert.notEqual(penalized.choices[0]!.text, unpenalized.choices[0]!.text);
    assert.ok(new Set(penalized.choices[0]!.text).size >= new Set(unpenalized.choices[0]!.text).size);
    await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'a', logit_bias: { 2: 5 } }), badRequest('logit_bias', /ends generation/));
    await assert.rejects(
      client.completions.create({ model: 'tiny', prompt: 'a', logit_bias: { 99999: 5 } }),
      badRequest('logit_bias', /outside the vocabulary/),
    );
  });

  it('a request takes the sequence holding the longest prefix of its prompt: usage.prompt_tokens_details.cached_tokens', async () => {
    const system = 'You are a terse assistant. '.repeat(8);
    const ask = (content: string): Promise<OpenAI.ChatCompletion> =>
      client.chat.completions.create({
        model: 'tiny',
        messages: [
          { role: 'system', content: system },
          { role: 'user', content },
        ],
        max_tokens: 2,
        temperature: 0,
      });
    const other = (): Promise<OpenAI.ChatCompletion> =>
      client.chat.completions.create({ model: 'tiny', messages: user('something else entirely'), max_tokens: 2 });
    await ask('first');
    await other(); // the other sequence (the tiny model has 2): it shares nothing with the system prompt
    const again = await ask('second');
    const cached = again.usage!.prompt_tokens_details!.cached_tokens!;
    assert.ok(cached > system.length / 2, `the system prompt was reused: ${cached} of ${again.usage!.prompt_tokens} tokens`);
    assert.ok(cached < again.usage!.prompt_tokens);
  });

  it('parameters the runtime does not implement are a 400 naming them; the server keeps serving', async () => {
    const ask = (extra: Record<string, unknown>): Promise<unknown> =>
      client.chat.completions.create({ model: 'tiny', messages: user('x'), max_tokens: 2, ...extra } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    await assert.rejects(
      ask({ audio: { voice: 'alloy', format: 'mp3' }, modalities: ['text', 'audio'] }),
      badRequest('audio', /Unsupported parameter: 'audio'/),
    );
    await assert.rejects(ask({ prediction: { type: 'content', content: 'x' } }), badRequest('prediction'));
    await assert.rejects(ask({ store: true }), badRequest('store'));
    await assert.rejects(ask({ web_search_options: {} }), badRequest('web_search_options'));
    await assert.rejects(ask({ response_format: { type: 'json_object' }, tools: [WEATHER] }), badRequest('response_format'));
    await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'a', suffix: 'end' }), badRequest('suffix'));
    const ok = (await ask({ store: false, user: 'u-1', metadata: null })) as OpenAI.ChatCompletion;
    assert.equal(ok.usage!.completion_tokens, 2);
  });
});
