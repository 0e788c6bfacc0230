/**
 * Real tokenizers for ONNX embedding models: tokenizer.json files the test writes (WordPiece with BERT's
 * normalizer and [CLS]/[SEP] template, BPE with merges, Unigram with Metaspace) encode to the ids worked out by
 * hand here; /v1/embeddings through the official SDK gives, for a text, the vector of a direct onnxruntime run
 * on those hand-made ids, and the same vector for the token-id array; long inputs are refused or truncated
 * (special tokens kept) as configured.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import ort from 'onnxruntime-node';
import { OnnxEmbeddingModelSchema } from '../src/config/llm-config.js';
import { tokenize } from '../src/inference/embeddings.js';
import { loadTokenizer } from '../src/inference/tokenizer.js';
import { encoder } from '../tools/onnx/zoo.js';
import { bertWordPiece, special } from '../tools/tokenizers/wordpiece.js';
import { assertClose, referenceRun, startSwitchyard, type TestServer } from './helpers.js';

const WORDPIECE = bertWordPiece({ '[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3, hello: 4, ',': 5, world: 6, run: 7, '##ning': 8, '!': 9, cafe: 10, the: 11 });

const BPE = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [],
  normalizer: null,
  pre_tokenizer: { type: 'Whitespace' },
  post_processor: null,
  decoder: null,
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    vocab: { l: 0, o: 1, w: 2, e: 3, r: 4, lo: 5, low: 6, er: 7, n: 8, s: 9, t: 10 },
    merges: ['l o', 'lo w', 'e r'],
  },
};

const UNIGRAM = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [special(0, '<unk>')],
  normalizer: null,
  pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true },
  post_processor: null,
  decoder: null,
  model: {
    type: 'Unigram',
    unk_id: 0,
    vocab: [
      ['<unk>', 0],
      ['\u2581', -2],
      ['\u2581hello', -1],
      ['hel', -3],
      ['lo', -3],
      ['\u2581world', -1],
      ['h', -5],
      ['e', -5],
      ['l', -5],
      ['o', -5],
      ['w', -5],
      ['r', -5],
      ['d', -5],
    ],
  },
};

const SEQ = 16;
const D = 32;
const ENCODER = encoder({ layers: 1, dModel: D, heads: 2, seqLen: SEQ, ffn: 64, vocab: 300 });

describe('tokenizers for ONNX embedding models', () => {
  let work: string;
  let srv: TestServer;
  let client: OpenAI;
  const file = (name: string): string => join(work, name);
  const cfg = (over: Record<string, unknown>) => OnnxEmbeddingModelSchema.parse({ name: 'e', backend: 'onnx-embeddings', model: 'encoder', ...over });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'switchyard-tokenizers-'));
    await writeFile(file('wordpiece.json'), JSON.stringify(WORDPIECE));
    await writeFile(file('bpe.json'), JSON.stringify(BPE));
    await writeFile(file('unigram.json'), JSON.stringify(UNIGRAM));
    await writeFile(
      file('llm.json'),
      JSON.stringify({
        models: [
          { name: 'bert-like', backend: 'onnx-embeddings', model: 'encoder', tokenizer: { path: 'wordpiece.json' } },
          { name: 'bert-truncating', backend: 'onnx-embeddings', model: 'encoder', tokenizer: { path: 'wordpiece.json' }, truncate: true },
        ],
      }),
    );
    srv = await startSwitchyard({ encoder: { versions: { 1: ENCODER } } }, { listen: true, config: { llmConfig: file('llm.json') } });
    client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'sk-any', maxRetries: 0 });
  });
  after(async () => {
    await srv?.close();
    await rm(work, { recursive: true, force: true });
  });

  it('WordPiece (BERT normalizer, [CLS] … [SEP]), BPE (merges by rank) and Unigram (Viterbi) encode to the ids worked out by hand', () => {
    const ids = (tokenizer: string, text: string): readonly number[] =>
      tokenize([text], 64, loadTokenizer(cfg({ tokenizer: { path: file(tokenizer) } })), false)[0]!.ids;
    // lowercased, accents stripped, punctuation split, "running" = run ##ning, unknown word [UNK]
    assert.deepEqual(ids('wordpiece.json', 'Hello, WORLD running! Café zzz'), [2, 4, 5, 6, 7, 8, 9, 10, 1, 3]);
    // "lower" = l o w e r → lo → low, er; "lowest" = low e s t
    assert.deepEqual(ids('bpe.json', 'lower lowest'), [6, 7, 6, 3, 9, 10]);
    // "▁hello▁world"; "▁hellod" = ▁hello + d (score -6) beats ▁ hel lo d (-13)
    assert.deepEqual(ids('unigram.json', 'hello world'), [2, 5]);
    assert.deepEqual(ids('unigram.json', 'hellod'), [2, 12]);
    const t = loadTokenizer(cfg({ tokenizer: { path: file('wordpiece.json') } }));
    assert.equal(t.padId, 0, 'the [PAD] token');
    assert.equal(t.vocabSize, 12);
    assert.throws(() => loadTokenizer(cfg({ tokenizer: { path: file('missing.json') } })), /cannot read tokenizer file/);
  });

  it('/v1/embeddings: a text gives the vector of onnxruntime on the hand-made ids; a token-id array gives the same', async () => {
    const handIds = [2, 4, 5, 6, 7, 8, 3]; // "hello, world running"
    const padded = new BigInt64Array(SEQ);
    handIds.forEach((id, j) => {
      padded[j] = BigInt(id);
    });
    const out = (await referenceRun(ENCODER, { input_ids: new ort.Tensor('int64', padded, [1, SEQ]) }))['embedding']!.data as Float32Array;
    const norm = Math.hypot(...out);
    const reference = Array.from(out, (x) => x / norm);
    const byText = await client.embeddings.create({ model: 'bert-like', input: 'Hello, world running', encoding_format: 'float' });
    assertClose(byText.data[0]!.embedding, reference, 1e-5, 'text');
    assert.equal(byText.usage.prompt_tokens, handIds.length);
    const byIds = await client.embeddings.create({ model: 'bert-like', input: handIds, encoding_format: 'float' });
    assertClose(byIds.data[0]!.embedding, reference, 1e-5, 'token ids');
    const many = await client.embeddings.create({ model: 'bert-like', input: [handIds, [2, 11, 3]], encoding_format: 'float' });
    assert.equal(many.data.length, 2);
    await assert.rejects(
      client.embeddings.create({ model: 'bert-like', input: [2, 99, 3] }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'input' && /outside this model's vocabulary/.test(e.message),
    );
  });

  it('a long input is a 400 naming its length, or with truncate: true cut to the sequence length keeping [CLS] and [SEP]', async () => {
    const long = Array.from({ length: 20 }, () => 'hello').join(' '); // 22 tokens with [CLS] and [SEP]
    await assert.rejects(client.embeddings.create({ model: 'bert-like', input: long }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.code, 'context_length_exceeded');
      assert.match(e.message, /input\[0\] is 22 tokens; this model's maximum input length is 16 tokens/);
      return true;
    });
    const cut = [2, ...new Array<number>(SEQ - 2).fill(4), 3];
    const truncated = await client.embeddings.create({ model: 'bert-truncating', input: long, encoding_format: 'float' });
    const exact = await client.embeddings.create({ model: 'bert-like', input: cut, encoding_format: 'float' });
    assertClose(truncated.data[0]!.embedding, exact.data[0]!.embedding, 1e-6, 'truncated = [CLS] + 14 × hello + [SEP]');
    assert.equal(truncated.usage.prompt_tokens, SEQ);
  });
});
